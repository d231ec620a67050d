//! Links where UDP is blocked: a peer of `type: auto` falls back to TLS on TCP when QUIC
//! does not answer, carries flows there, and moves new flows back to QUIC once a probe
//! gets through, while flows already on TCP finish there.

mod common;

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
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0, "no flow was cut by the move");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_from_outside_the_mesh_gets_no_link() {
    let mesh = Mesh::new(&["b"]);
    let mut b = NodeSpec::new("b");
    b.mesh_extra = vec!["tcp_bind: \"127.0.0.1:0\"".into()];
    let b = b.start(&mesh).await;
    let addr = b.tcp_links_addr().expect("TCP links accepted");
    // Not TLS at all: the node drops it at the handshake, and keeps serving.
    let mut junk = tokio::net::TcpStream::connect(addr).await.expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.expect("write");
    junk.write_all(&[0u8; 4096]).await.expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(b.peers().iter().all(|p| !p.connected));
}
