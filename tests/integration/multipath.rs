//! Multipath flows over two disjoint paths, A→B→D and A→C→D, each link through the link
//! emulator: striping, the loss of a path (blackholed link, killed relay), paths of very
//! different RTT, the loss of every path, and the buffer bounds.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxy::Node;
use proxy::emulator::{LinkEmulator, LinkProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// Four nodes and an emulated link on each hop: A–B, A–C, B–D, C–D.
struct TwoPaths {
    a: Node,
    b: Option<Node>,
    c: Option<Node>,
    d: Node,
    ab: LinkEmulator,
    ac: LinkEmulator,
    bd: LinkEmulator,
    cd: LinkEmulator,
    entry: SocketAddr,
    _mesh: Mesh,
}

/// Starts the mesh with the given profiles on A–B and A–C (both directions), route `mp`
/// on A to `target` at D over paths `[b]` and `[c]`, multipath.
async fn two_paths(target: SocketAddr, ab_profile: LinkProfile, ac_profile: LinkProfile) -> TwoPaths {
    mesh_of(target, ab_profile, ac_profile, false).await
}

/// Like [`two_paths`]; with `direct`, A also has a direct link to D (a third path) and
/// keeps at most two subflows, so the direct path is the spare.
async fn mesh_of(
    target: SocketAddr,
    ab_profile: LinkProfile,
    ac_profile: LinkProfile,
    direct: bool,
) -> TwoPaths {
    mesh_over(target, ab_profile, ac_profile, direct, None).await
}

/// Like [`mesh_of`]; with a transport, every link runs over it, and over TCP the links
/// go direct (the emulators are UDP relays: they and their profiles are left out).
async fn mesh_over(
    target: SocketAddr,
    ab_profile: LinkProfile,
    ac_profile: LinkProfile,
    direct: bool,
    transport: Option<Transport>,
) -> TwoPaths {
    let over_tcp = transport == Some(Transport::Tcp);
    let via = |emulator: &LinkEmulator, node: &Node| {
        if over_tcp { link_addr(node, Transport::Tcp) } else { emulator.addr().to_string() }
    };
    let mesh = Mesh::new(&["a", "b", "c", "d"]);
    let mut d = NodeSpec::new("d");
    d.peers = vec![("b", String::new()), ("c", String::new())];
    if direct {
        d.peers.push(("a", String::new()));
    }
    d.allow = vec![target.to_string()];
    d.keepalive = "200ms";
    d.transport = transport;
    let d = d.start(&mesh).await;
    let bd = LinkEmulator::start(d.mesh_addr().expect("addr"), 11).await.expect("emulator");
    let cd = LinkEmulator::start(d.mesh_addr().expect("addr"), 12).await.expect("emulator");
    let relay = |id: &'static str, to_d: &LinkEmulator| {
        let mut spec = NodeSpec::new(id);
        spec.peers = vec![("a", String::new()), ("d", via(to_d, &d))];
        spec.keepalive = "200ms";
        spec.transport = transport;
        spec
    };
    let b = relay("b", &bd).start(&mesh).await;
    let c = relay("c", &cd).start(&mesh).await;
    let ab = LinkEmulator::start(b.mesh_addr().expect("addr"), 13).await.expect("emulator");
    let ac = LinkEmulator::start(c.mesh_addr().expect("addr"), 14).await.expect("emulator");
    ab.set_both(ab_profile);
    ac.set_both(ac_profile);
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", via(&ab, &b)), ("c", via(&ac, &c))];
    a.transport = transport;
    a.routes = vec![("mp", target.to_string(), Some("d"))];
    a.route_extra = vec!["paths: [[b], [c]]".into(), "multipath: true".into()];
    a.keepalive = "200ms";
    if direct {
        a.peers.push(("d", link_addr(&d, transport.unwrap_or(Transport::Quic))));
        a.limits = vec!["max_subflows: 2".into()];
    }
    let a = a.start(&mesh).await;
    if direct {
        assert!(a.wait_for_link("d", Duration::from_secs(10)).await);
    }
    for (node, peer) in [(&a, "b"), (&a, "c"), (&b, "d"), (&c, "d")] {
        assert!(node.wait_for_link(peer, Duration::from_secs(10)).await, "{} to {peer}", node.id());
        if let Some(t) = transport {
            assert_link_transport(node, peer, t);
        }
    }
    let entry = listener_addr(&a, "mp");
    TwoPaths { a, b: Some(b), c: Some(c), d, ab, ac, bd, cd, entry, _mesh: mesh }
}

/// A path rate-limited to `mbit` Mbit/s each way with `delay` one way.
fn shaped(mbit: u64, delay: Duration) -> LinkProfile {
    LinkProfile { delay, rate_bps: Some(mbit * 1_000_000), queue_limit: 4096, ..LinkProfile::ideal() }
}

fn relayed(node: &Option<Node>) -> u64 {
    node.as_ref().map_or(0, |n| n.stats().bytes_relayed)
}

/// Checks the per-flow bounds through the counters of both ends.
fn assert_bounds(t: &TwoPaths) {
    for node in [&t.a, &t.d] {
        let m = node.stats().multipath;
        assert!(m.reorder_peak_bytes <= m.window_bytes, "{}: reorder peak {m:?}", node.id());
        assert!(m.unacked_peak_bytes <= m.window_bytes, "{}: unacked peak {m:?}", node.id());
    }
}

/// Starts a 2-way exchange of `len` bytes in the background; returns its task.
fn exchange(t: &TwoPaths, server: TcpListener, len: usize) -> tokio::task::JoinHandle<()> {
    let entry = t.entry;
    tokio::spawn(async move { exchange_both_ways(entry, server, len).await })
}

/// Waits until D wrote at least `bytes` to its TCP sockets.
async fn until_exit_wrote(t: &TwoPaths, bytes: u64) {
    assert!(eventually(Duration::from_secs(60), || t.d.stats().bytes_out >= bytes).await, "transfer stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_64_mib_each_way_over_both_paths() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ms5 = Duration::from_millis(5);
    let t = two_paths(server.local_addr().expect("addr"), shaped(200, ms5), shaped(200, ms5)).await;
    tokio::time::timeout(Duration::from_secs(120), exchange(&t, server, 64 * MIB))
        .await
        .expect("in time")
        .expect("exchange");
    let (via_b, via_c) = (relayed(&t.b), relayed(&t.c));
    let total = (via_b + via_c) as f64;
    assert!(via_b as f64 > 0.2 * total && via_c as f64 > 0.2 * total, "b {via_b} c {via_c}");
    let m = t.a.stats().multipath;
    assert_eq!((m.flows, m.subflows_opened, m.subflows_lost), (1, 2, 0), "{m:?}");
    assert_eq!(settled(0, || t.a.stats().flows_reset).await, 0);
    assert_bounds(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_blackholed_halfway_still_completes_byte_exact() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ms5 = Duration::from_millis(5);
    let t = two_paths(server.local_addr().expect("addr"), shaped(100, ms5), shaped(100, ms5)).await;
    let len = 32 * MIB;
    let run = exchange(&t, server, len);
    until_exit_wrote(&t, (len / 2) as u64).await;
    t.bd.set_both(LinkProfile::blackholed());
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("in time").expect("exchange");
    let m = t.a.stats().multipath;
    assert!(m.subflows_lost >= 1, "{m:?}");
    assert_eq!(settled(0, || t.a.stats().flows_reset).await, 0);
    assert_bounds(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_halfway_still_completes_byte_exact() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ms5 = Duration::from_millis(5);
    let mut t = two_paths(server.local_addr().expect("addr"), shaped(100, ms5), shaped(100, ms5)).await;
    let len = 32 * MIB;
    let run = exchange(&t, server, len);
    until_exit_wrote(&t, (len / 2) as u64).await;
    if let Some(b) = t.b.take() {
        b.abort();
    }
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("in time").expect("exchange");
    let m = t.a.stats().multipath;
    assert!(m.subflows_lost >= 1, "{m:?}");
    assert!(t.d.stats().multipath.subflows_lost >= 1);
    assert_bounds(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_path_is_replaced_by_a_spare_one() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ms5 = Duration::from_millis(5);
    let mut t = mesh_of(server.local_addr().expect("addr"), shaped(100, ms5), shaped(100, ms5), true).await;
    let len = 32 * MIB;
    let run = exchange(&t, server, len);
    until_exit_wrote(&t, (len / 2) as u64).await;
    let direct = |t: &TwoPaths| {
        let peer = t.a.peers().into_iter().find(|p| p.id == "d");
        peer.and_then(|p| p.bytes_sent.zip(p.bytes_received)).map_or(0, |(s, r)| s + r)
    };
    let direct_before = direct(&t);
    if let Some(b) = t.b.take() {
        b.abort();
    }
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("in time").expect("exchange");
    let m = t.a.stats().multipath;
    assert!(m.subflows_opened >= 3 && m.subflows_lost >= 1 && m.subflows_replaced >= 1, "{m:?}");
    assert!(direct(&t) > direct_before + 1024 * 1024, "the replacement (direct a-d) carried bytes");
    assert_bounds(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_of_10_and_120_ms_deliver_in_order_without_duplicates() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // One-way delays on the A side; the B/C–D hops are ideal.
    let fast = shaped(100, Duration::from_millis(5));
    let slow = shaped(100, Duration::from_millis(60));
    let t = two_paths(server.local_addr().expect("addr"), fast, slow).await;
    tokio::time::timeout(Duration::from_secs(120), exchange(&t, server, 16 * MIB))
        .await
        .expect("in time")
        .expect("exchange");
    let m = t.a.stats().multipath;
    assert_eq!((m.subflows_opened, m.subflows_lost, m.bytes_resent), (2, 0, 0), "{m:?}");
    assert_bounds(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_path_resets_the_application() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ideal = LinkProfile::ideal();
    let mut t = two_paths(server.local_addr().expect("addr"), ideal.clone(), ideal).await;
    let mut client = connect(t.entry).await;
    client.write_all(b"hello").await.expect("write");
    let (mut upstream, _) = server.accept().await.expect("accept");
    let mut got = [0u8; 5];
    upstream.read_exact(&mut got).await.expect("read");
    for relay in [t.b.take(), t.c.take()].into_iter().flatten() {
        relay.abort();
    }
    let client_end = tokio::time::timeout(Duration::from_secs(30), read_to_end_or_error(&mut client))
        .await
        .expect("in time");
    assert_eq!(client_end, Err(std::io::ErrorKind::ConnectionReset), "the origin resets, never closes");
    let server_end = tokio::time::timeout(Duration::from_secs(30), read_to_end_or_error(&mut upstream))
        .await
        .expect("in time");
    assert_eq!(server_end, Err(std::io::ErrorKind::ConnectionReset), "the exit resets, never closes");
    drop((t.ab, t.ac, t.bd, t.cd));
}

// Multipath subflows work over both link transports.
over_both_transports!(half_close_and_reset_cross_a_multipath_flow);

async fn half_close_and_reset_cross_a_multipath_flow(transport: Transport) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ideal = LinkProfile::ideal();
    let t = mesh_over(server.local_addr().expect("addr"), ideal.clone(), ideal, false, Some(transport)).await;
    // Half-close: the request ends with a FIN, the reply still flows back.
    let mut client = connect(t.entry).await;
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let (mut upstream, _) = server.accept().await.expect("accept");
    assert_eq!(read_to_end_or_error(&mut upstream).await, Ok(b"request".to_vec()));
    upstream.write_all(b"reply").await.expect("reply");
    upstream.shutdown().await.expect("shutdown");
    assert_eq!(read_to_end_or_error(&mut client).await, Ok(b"reply".to_vec()));
    drop(upstream);
    // Reset: the application's RST reaches the target as an RST.
    let mut client = connect(t.entry).await;
    client.write_all(b"x").await.expect("write");
    let (mut upstream, _) = server.accept().await.expect("accept");
    let mut one = [0u8; 1];
    upstream.read_exact(&mut one).await.expect("read");
    reset(client);
    let end = tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut upstream))
        .await
        .expect("in time");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    assert_eq!(
        settled(0, || t.a.stats().multipath.subflows_lost).await,
        0,
        "a flow reset is not a path loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_flow_keeps_its_subflows() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ms5 = Duration::from_millis(5);
    let t = two_paths(
        server.local_addr().expect("addr"),
        shaped(100, ms5),
        shaped(100, Duration::from_millis(20)),
    )
    .await;
    let mut client = connect(t.entry).await;
    client.write_all(b"0").await.expect("write");
    let (mut upstream, _) = server.accept().await.expect("accept");
    upstream.read_exact(&mut [0u8; 1]).await.expect("read");
    // One-way bursts larger than one subflow's first window (so both carry bytes), each
    // followed by a pause longer than the stall timeout. Nothing flows back, so each
    // subflow must acknowledge its last bytes on its own, or the pause counts as a stall.
    for round in 0..3u8 {
        let msg = vec![round; 1024 * 1024 + 77];
        let mut got = vec![0u8; msg.len()];
        let (sent, read) = tokio::join!(client.write_all(&msg), upstream.read_exact(&mut got));
        sent.expect("write");
        read.expect("read");
        assert!(got == msg, "round {round} arrived different");
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    let m = t.a.stats().multipath;
    assert_eq!((m.subflows_opened, m.subflows_lost), (2, 0), "{m:?}");
    assert!(relayed(&t.b) > 0 && relayed(&t.c) > 0, "both paths carried bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_slower_than_the_stall_timeout_still_open_flows() {
    let echo = echo_server().await;
    // 1.2 s round trips: longer than the shortest stall timeout, before any RTT is known.
    let slow = LinkProfile::delayed(Duration::from_millis(600));
    let t = two_paths(echo, slow.clone(), slow).await;
    let mut client = connect(t.entry).await;
    client.write_all(b"client speaks first").await.expect("write");
    let mut back = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("echo");
    assert_eq!(&back, b"client speaks first");
    // Then a burst that keeps bytes in flight on both subflows across a full round trip.
    let (mut r, mut w) = client.split();
    let burst = vec![7u8; 768 * 1024];
    let mut echoed = vec![0u8; burst.len()];
    let (sent, got) = tokio::join!(w.write_all(&burst), r.read_exact(&mut echoed));
    sent.expect("write");
    got.expect("echo");
    assert!(echoed == burst);
    let m = t.a.stats().multipath;
    assert_eq!(m.subflows_lost, 0, "{m:?}");
}
