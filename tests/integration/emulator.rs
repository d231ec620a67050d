//! The link emulator: plain UDP through it on loopback, and two nodes linked through it.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Mesh, echo_server, eventually, listener_addr, open_echoed_flow, pair_through_emulator, settled,
};
use proxy::emulator::{Direction, LinkEmulator, LinkProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

/// Every test ends within this, whatever goes wrong.
const TEST_BOUND: Duration = Duration::from_secs(60);

/// A loopback UDP socket with large buffers, so the test's own sockets drop nothing.
fn udp() -> UdpSocket {
    let s = proxy::quic::bind_udp("127.0.0.1:0".parse().expect("addr"), 4 << 20).expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    UdpSocket::from_std(s).expect("tokio socket")
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("addr")
}

/// The next datagram within `wait`, if any.
async fn recv(s: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = timeout(wait, s.recv_from(&mut buf)).await.ok()?.expect("recv");
    buf.truncate(n);
    Some((buf, from))
}

/// A client, an emulator and a target; returns the target's view of the emulator's back
/// socket, learned from one packet sent through.
async fn link(seed: u64) -> (UdpSocket, LinkEmulator, UdpSocket, SocketAddr) {
    let (a, b) = (udp(), udp());
    let emu = LinkEmulator::start(addr(&b), seed).await.expect("emulator");
    a.send_to(b"hello", emu.addr()).await.expect("send");
    let (got, back) = recv(&b, Duration::from_secs(5)).await.expect("hello through");
    assert_eq!(got, b"hello");
    // `forwarded` is bumped just after the send, so the target may be a moment ahead.
    assert_eq!(settled(1, || emu.stats().a_to_b.forwarded).await, 1);
    (a, emu, b, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ideal_profile_forwards_both_ways_byte_exact() {
    timeout(TEST_BOUND, async {
        let (a, emu, b, back) = link(1).await;
        for (i, len) in [1usize, 1200, 60_000].into_iter().enumerate() {
            let out: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
            a.send_to(&out, emu.addr()).await.expect("send a->b");
            assert_eq!(recv(&b, Duration::from_secs(5)).await.expect("a->b"), (out.clone(), back));
            let reply: Vec<u8> = out.iter().map(|x| !x).collect();
            b.send_to(&reply, back).await.expect("send b->a");
            assert_eq!(recv(&a, Duration::from_secs(5)).await.expect("b->a"), (reply, emu.addr()));
        }
        assert_eq!(settled(3, || emu.stats().b_to_a.forwarded).await, 3);
        let s = emu.stats();
        assert_eq!((s.a_to_b.received, s.a_to_b.forwarded, s.a_to_b.dropped()), (4, 4, 0));
        assert_eq!((s.b_to_a.received, s.b_to_a.forwarded, s.b_to_a.dropped()), (3, 3, 0));
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_get_their_own_replies() {
    timeout(TEST_BOUND, async {
        let (a1, a2, b) = (udp(), udp(), udp());
        let emu = LinkEmulator::start(addr(&b), 1).await.expect("emulator");
        a1.send_to(b"one", emu.addr()).await.expect("send");
        let (_, back1) = recv(&b, Duration::from_secs(5)).await.expect("one");
        a2.send_to(b"two", emu.addr()).await.expect("send");
        let (_, back2) = recv(&b, Duration::from_secs(5)).await.expect("two");
        assert_ne!(back1, back2, "two clients share a back socket");
        b.send_to(b"to two", back2).await.expect("send");
        b.send_to(b"to one", back1).await.expect("send");
        assert_eq!(recv(&a1, Duration::from_secs(5)).await.expect("reply 1").0, b"to one");
        assert_eq!(recv(&a2, Duration::from_secs(5)).await.expect("reply 2").0, b"to two");
        assert!(recv(&a1, Duration::from_millis(200)).await.is_none(), "client one got a stray reply");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_emulator_stops_forwarding() {
    timeout(TEST_BOUND, async {
        let (a, emu, b, _) = link(1).await;
        let front = emu.addr();
        drop(emu);
        // Aborted tasks release the front socket once the runtime drops them.
        let _ = a.send_to(b"after drop", front).await;
        assert!(recv(&b, Duration::from_millis(300)).await.is_none(), "forwarded after drop");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_each_packet_at_least_that_long() {
    timeout(TEST_BOUND, async {
        let (a, emu, b, back) = link(1).await;
        emu.set_both(LinkProfile::delayed(Duration::from_millis(50)));
        for _ in 0..5 {
            let start = Instant::now();
            a.send_to(b"ping", emu.addr()).await.expect("send");
            recv(&b, Duration::from_secs(5)).await.expect("ping through");
            let one_way = start.elapsed();
            b.send_to(b"pong", back).await.expect("send");
            recv(&a, Duration::from_secs(5)).await.expect("pong through");
            let round_trip = start.elapsed();
            assert!(one_way >= Duration::from_millis(50), "one way {one_way:?}");
            assert!(one_way < Duration::from_millis(500), "one way {one_way:?}");
            assert!(round_trip >= Duration::from_millis(100), "round trip {round_trip:?}");
        }
    })
    .await
    .expect("test bound");
}

/// Sends `n` numbered packets from `a` through `emu` to `b`, paced so no kernel buffer
/// overflows; returns the numbers that arrived.
async fn numbered_through(a: &UdpSocket, emu: &LinkEmulator, b: &UdpSocket, n: u32) -> BTreeSet<u32> {
    let before = emu.stats().a_to_b;
    for i in 0..n {
        a.send_to(&i.to_be_bytes(), emu.addr()).await.expect("send");
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let settled = eventually(Duration::from_secs(10), || {
        let s = emu.stats().a_to_b;
        s.forwarded + s.dropped() - before.forwarded - before.dropped() == u64::from(n)
    })
    .await;
    assert!(settled, "emulator did not account for every packet: {:?}", emu.stats());
    let expected = emu.stats().a_to_b.forwarded - before.forwarded;
    let mut got = BTreeSet::new();
    while (got.len() as u64) < expected {
        let (data, _) = recv(b, Duration::from_secs(5)).await.expect("forwarded packet");
        got.insert(u32::from_be_bytes(data[..4].try_into().expect("4 bytes")));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_loss_drops_about_half_and_the_same_packets_for_the_same_seed() {
    timeout(TEST_BOUND, async {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (a, emu, b, _) = link(42).await;
            emu.set(Direction::AtoB, LinkProfile::lossy(0.5));
            let got = numbered_through(&a, &emu, &b, 2000).await;
            let s = emu.stats().a_to_b;
            assert_eq!(s.lost as usize, 2000 - got.len(), "drops other than loss: {s:?}");
            assert!((600..=1400).contains(&s.lost), "lost {} of 2000 at p=0.5", s.lost);
            runs.push(got);
        }
        assert!(!runs[0].is_empty());
        assert_eq!(runs[0], runs[1], "same seed, different drops");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_silences_one_direction_until_lifted() {
    timeout(TEST_BOUND, async {
        let (a, emu, b, back) = link(1).await;
        emu.set(Direction::AtoB, LinkProfile::blackholed());
        for _ in 0..3 {
            a.send_to(b"into the void", emu.addr()).await.expect("send");
        }
        assert!(recv(&b, Duration::from_millis(300)).await.is_none(), "blackholed packet delivered");
        b.send_to(b"still open", back).await.expect("send");
        assert_eq!(recv(&a, Duration::from_secs(5)).await.expect("b->a works").0, b"still open");
        assert_eq!(settled(3, || emu.stats().a_to_b.blackholed).await, 3);

        emu.set(Direction::AtoB, LinkProfile::ideal());
        a.send_to(b"back again", emu.addr()).await.expect("send");
        assert_eq!(recv(&b, Duration::from_secs(5)).await.expect("a->b restored").0, b"back again");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_queues_a_burst_to_the_link_rate() {
    timeout(TEST_BOUND, async {
        let (a, emu, b, _) = link(1).await;
        emu.set(Direction::AtoB, LinkProfile::rate_limited(8_000_000));
        let packet = vec![0x5a; 1024];
        let start = Instant::now();
        for _ in 0..1024 {
            a.send_to(&packet, emu.addr()).await.expect("send");
        }
        for i in 0..1024 {
            let (data, _) = recv(&b, Duration::from_secs(10)).await.unwrap_or_else(|| panic!("packet {i}"));
            assert_eq!(data, packet);
        }
        // 1 MiB at 8 Mbit/s is 1.05 s; the 16 KiB burst saves 16 ms of it.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "1 MiB took only {took:?}");
        assert_eq!(settled(1025, || emu.stats().a_to_b.forwarded).await, 1025);
        assert_eq!(emu.stats().a_to_b.dropped(), 0);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_linked_through_the_emulator_carry_a_flow_and_see_its_delay() {
    timeout(TEST_BOUND, async {
        let mesh = Mesh::new(&["a", "b"]);
        let echo = echo_server().await;
        let (a, _b, emu) =
            pair_through_emulator(&mesh, echo, LinkProfile::delayed(Duration::from_millis(20)), &[]).await;

        let mut flow = open_echoed_flow(listener_addr(&a, "in"), 7).await;
        let out: Vec<u8> = (0..64 * 1024).map(|k| (k % 251) as u8).collect();
        flow.write_all(&out).await.expect("write");
        let mut back = vec![0u8; out.len()];
        flow.read_exact(&mut back).await.expect("echo");
        assert_eq!(back, out);

        let peer = a.peers().into_iter().find(|p| p.id == "b").expect("peer b");
        let rtt = peer.rtt_ms.expect("rtt of a live link");
        assert!(rtt >= 40.0, "rtt {rtt} ms through two 20 ms delays");
        let s = emu.stats();
        assert!(s.a_to_b.forwarded > 0 && s.b_to_a.forwarded > 0, "{s:?}");
    })
    .await
    .expect("test bound");
}
