//! Links where UDP is blocked: a peer of `type: auto` falls back to TLS on TCP when QUIC
//! does not answer, carries flows there, and moves new flows back to QUIC once a probe
//! gets through, while flows already on TCP finish there.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use proxy::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Node `b` (exit to `target`, TCP links on a port of their own) and node `a` whose route
/// `in` exits at `b`, dialing `b`'s QUIC endpoint through `relay` (blackholed by the
/// caller) with `b`'s TCP address as the fallback.
async fn behind_a_relay(mesh: &Mesh, target: std::net::SocketAddr) -> (Node, Node, UdpRelay) {
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.mesh_extra = vec!["tcp_bind: \"127.0.0.1:0\"".into()];
    let b = b.start(mesh).await;
    let relay = UdpRelay::start(b.mesh_addr().expect("addr")).await;
    relay.set_blackhole(true);
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", relay.addr.to_string())];
    a.peer_extra = vec![format!("tcp_address: \"{}\"", link_addr(&b, Transport::Tcp))];
    a.routes = vec![("in", target.to_string(), Some("b"))];
    a.mesh_extra = vec!["fallback_after: \"300ms\"".into(), "quic_probe_interval: \"300ms\"".into()];
    let a = a.start(mesh).await;
    (a, b, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_dropped_flows_go_over_tcp_and_new_ones_return_to_quic_when_udp_does() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let started = Instant::now();
    let (a, b, relay) = behind_a_relay(&mesh, echo).await;
    let entry = listener_addr(&a, "in");

    // UDP is dropped: the first flow still gets through, over TCP.
    let mut on_tcp = open_echoed_flow(entry, 1).await;
    println!("first flow answered {:?} after the node started", started.elapsed());
    assert_link_transport(&a, "b", Transport::Tcp);
    assert_link_transport(&b, "a", Transport::Tcp);
    assert_eq!(a.stats().link_fallbacks, 1);
    let metrics = a.metrics();
    assert!(metrics.contains("proxy_peer_transport{peer=\"b\",transport=\"tcp\"} 1"), "{metrics}");

    // UDP comes back: a probe moves the link to QUIC on both ends.
    relay.set_blackhole(false);
    let on_quic = |n: &Node, peer: &str| {
        n.peers().iter().any(|p| p.id == peer && p.transport == Some("quic") && p.connected)
    };
    assert!(
        eventually(Duration::from_secs(10), || on_quic(&a, "b") && on_quic(&b, "a")).await,
        "no move to QUIC"
    );
    assert_eq!(a.stats().links_back_to_quic, 1);
    let draining =
        |n: &Node, peer: &str| n.peers().iter().find(|p| p.id == peer).map_or(0, |p| p.draining_links);
    assert_eq!((draining(&a, "b"), draining(&b, "a")), (1, 1), "the TCP link stays for its flow");

    // The flow opened over TCP goes on there, byte exact, and new flows work.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    on_tcp.write_all(&payload).await.expect("write on the old flow");
    let mut back = vec![0u8; payload.len()];
    on_tcp.read_exact(&mut back).await.expect("echo on the old flow");
    assert_eq!(back, payload, "the flow that started over TCP kept its bytes");
    let mut new = open_echoed_flow(entry, 2).await;
    new.write_all(b"after").await.expect("write");
    let mut after = [0u8; 5];
    new.read_exact(&mut after).await.expect("echo");
    assert_eq!(&after, b"after");
    drop(on_tcp);
    drop(new);
    // Its flow ended: the TCP link closes on both ends, and no flow was cut.
    let closed =
        eventually(Duration::from_secs(10), || draining(&a, "b") == 0 && draining(&b, "a") == 0).await;
    assert!(closed, "the superseded TCP link did not close");
    assert!(on_quic(&a, "b") && on_quic(&b, "a"), "the QUIC link stays");
    assert_eq!(
        settled(0, || a.stats().flows_reset + b.stats().flows_reset).await,
        0,
        "no flow was cut by the move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_type_quic_does_not_fall_back() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.mesh_extra = vec!["tcp_bind: \"127.0.0.1:0\"".into()];
    let b = b.start(&mesh).await;
    let relay = UdpRelay::start(b.mesh_addr().expect("addr")).await;
    relay.set_blackhole(true);
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", relay.addr.to_string())];
    a.transport = Some(Transport::Quic);
    a.routes = vec![("in", echo.to_string(), Some("b"))];
    a.mesh_extra = vec!["fallback_after: \"100ms\"".into()];
    a.limits = vec!["connect_timeout: \"500ms\"".into()];
    let a = a.start(&mesh).await;
    assert!(!a.wait_for_link("b", Duration::from_secs(2)).await, "a QUIC-only peer linked with UDP dropped");
    assert_eq!(a.stats().link_fallbacks, 0);
    relay.set_blackhole(false);
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "no link once UDP passes");
    assert_link_transport(&a, "b", Transport::Quic);
}

/// Connects from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("addr")).expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// Whether the node closes `s` within 3 s (it reads EOF or an error).
async fn closed_soon(s: &mut tokio::net::TcpStream) -> bool {
    let mut one = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(3), s.read(&mut one)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_on_the_tcp_link_port_get_nothing_and_cannot_hold_it() {
    let mesh = Mesh::new(&["a", "b"]);
    let rogue = Mesh::new(&["a"]);
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.mesh_extra = vec!["tcp_bind: \"127.0.0.1:0\"".into()];
    // Handshakes that never finish hold their slots for this long: longer than the test.
    b.limits = vec!["connect_timeout: 60s".into()];
    let b = b.start(&mesh).await;
    let addr = b.tcp_links_addr().expect("TCP links accepted");

    // Not TLS at all: dropped at the handshake.
    let mut junk = tokio::net::TcpStream::connect(addr).await.expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.expect("write");
    junk.write_all(&[0u8; 4096]).await.expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut rest))
        .await
        .expect("closed in time");

    // TLS with a certificate from another CA, under a node id b knows: refused by the
    // outer TLS itself, before any QUIC.
    let identity =
        proxy::tls::TlsIdentity::load(&rogue.path("a.crt"), &rogue.path("a.key"), &mesh.path("ca.crt"), "a")
            .expect("rogue identity");
    let connector = tokio_rustls::TlsConnector::from(identity.tcp_client_config().expect("config"));
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("b").expect("name");
    let outcome = match connector.connect(name, stream).await {
        Err(e) => e.to_string(),
        Ok(mut tls) => match tls.read(&mut [0u8; 1]).await {
            Err(e) => e.to_string(),
            Ok(n) => format!("read {n} bytes"),
        },
    };
    assert!(outcome.contains("alert"), "the outer TLS refuses a foreign certificate: {outcome}");

    // Idle connections from one address hold at most 4 handshake slots; the rest are
    // closed at once, and a member from elsewhere still links.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from("127.0.0.2", addr).await);
    }
    let mut checks = tokio::task::JoinSet::new();
    for mut s in idle {
        checks.spawn(async move { (closed_soon(&mut s).await, s) });
    }
    let (mut refused, mut idle) = (0, Vec::new());
    while let Some(Ok((closed, s))) = checks.join_next().await {
        refused += usize::from(closed);
        idle.push(s);
    }
    assert_eq!(refused, 6, "one address holds at most 4 handshakes");
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", addr.to_string())];
    a.transport = Some(Transport::Tcp);
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "a member links while outsiders wait");
    assert_link_transport(&a, "b", Transport::Tcp);
    drop(idle);
}
