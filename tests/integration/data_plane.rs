//! Flows through two nodes on loopback: bytes, half-close, reset, concurrency, refusals.

use crate::common;

use std::time::Duration;

use common::*;
use proxy::core::wire::RefuseReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

// The data-plane guarantees hold over both link transports: QUIC, and TLS on TCP.
over_both_transports!(
    sixty_four_mib_each_way_at_once_arrive_byte_exact,
    half_close_from_client_then_server_replies_after_eof,
    server_that_speaks_first_and_half_closes_reaches_the_client,
    client_reset_reaches_the_server_as_a_reset,
    server_reset_reaches_the_client_as_a_reset,
    thousand_concurrent_flows_each_arrive_byte_exact,
    exit_policy_refusal_closes_the_client_and_is_counted,
    unreachable_target_is_refused_with_its_reason,
);

async fn sixty_four_mib_each_way_at_once_arrive_byte_exact(transport: Transport) {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server_over(&[], Some(transport)).await;
    exchange_both_ways(listener_addr(&a, "in"), server, 64 * MIB).await;
    let stats = a.stats();
    assert_eq!(stats.flows_originated, 1);
    assert_eq!(stats.flows_reset, 0);
}

async fn half_close_from_client_then_server_replies_after_eof(transport: Transport) {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server_over(&[], Some(transport)).await;
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.expect("accept");
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.expect("read to eof");
        let reply = format!("got {} bytes, sha {:02x?}", req.len(), &sha256(&req)[..4]);
        s.write_all(reply.as_bytes()).await.expect("reply");
        s.shutdown().await.expect("shutdown");
    });
    let mut c = connect(listener_addr(&a, "in")).await;
    let request = vec![7u8; 100_000];
    c.write_all(&request).await.expect("write");
    c.shutdown().await.expect("half-close");
    let reply = read_to_end_or_error(&mut c).await.expect("clean eof");
    let expected = format!("got 100000 bytes, sha {:02x?}", &sha256(&request)[..4]);
    assert_eq!(String::from_utf8_lossy(&reply), expected);
}

async fn server_that_speaks_first_and_half_closes_reaches_the_client(transport: Transport) {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server_over(&[], Some(transport)).await;
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.expect("accept");
        s.write_all(b"220 banner\r\n").await.expect("banner");
        s.shutdown().await.expect("server half-close");
        // The server's read side stays open: the client can still talk after our FIN.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"QUIT\r\n");
    });
    let mut c = connect(listener_addr(&a, "in")).await;
    let mut banner = [0u8; 12];
    c.read_exact(&mut banner).await.expect("banner");
    assert_eq!(&banner, b"220 banner\r\n");
    let mut eof = [0u8; 1];
    assert_eq!(c.read(&mut eof).await.expect("eof"), 0, "server FIN must arrive as EOF");
    c.write_all(b"QUIT\r\n").await.expect("write after peer half-close");
    c.shutdown().await.expect("shutdown");
}

async fn client_reset_reaches_the_server_as_a_reset(transport: Transport) {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server_over(&[], Some(transport)).await;
    let c = connect(listener_addr(&a, "in")).await;
    let (mut s, _) = server.accept().await.expect("accept");
    let mut c = c;
    c.write_all(b"hello").await.expect("write");
    let mut hello = [0u8; 5];
    s.read_exact(&mut hello).await.expect("hello");
    reset(c);
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut s)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset), "server must see a reset, not a clean EOF");
}

async fn server_reset_reaches_the_client_as_a_reset(transport: Transport) {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server_over(&[], Some(transport)).await;
    let mut c = connect(listener_addr(&a, "in")).await;
    c.write_all(b"hello").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut hello = [0u8; 5];
    s.read_exact(&mut hello).await.expect("hello");
    s.write_all(b"partial answer").await.expect("partial");
    reset(s);
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset), "client must see a reset, not a clean EOF");
    assert_eq!(settled(1, || a.stats().flows_reset).await, 1);
}

async fn thousand_concurrent_flows_each_arrive_byte_exact(transport: Transport) {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let (a, b) = two_nodes_over(&mesh, echo, "127.0.0.1/32", &[], Some(transport)).await;
    many_echo_flows(listener_addr(&a, "in"), 1000).await;
    assert_eq!(a.stats().flows_originated, 1000);
    assert_eq!(b.stats().flows_exited, 1000);
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0);
}

async fn exit_policy_refusal_closes_the_client_and_is_counted(transport: Transport) {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    // b allows only another address, so the echo server's address is refused.
    let (a, b) = two_nodes_over(&mesh, echo, "10.0.0.0/8", &[], Some(transport)).await;
    expect_refused(listener_addr(&a, "in"), b"must not arrive").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Policy)).await, 1);
    assert_eq!(settled(1, || b.stats().refused_inbound(RefuseReason::Policy)).await, 1);
    assert_eq!(b.stats().flows_exited, 0);
}

async fn unreachable_target_is_refused_with_its_reason(transport: Transport) {
    let mesh = Mesh::new(&["a", "b"]);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let (a, b) = two_nodes_over(&mesh, closed, "127.0.0.1/32", &[], Some(transport)).await;
    expect_refused(listener_addr(&a, "in"), b"").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::TargetUnreachable)).await, 1);
    assert_eq!(settled(1, || b.stats().refused_inbound(RefuseReason::TargetUnreachable)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_exit_balances_flows_round_robin_over_its_targets() {
    let mesh = Mesh::new(&["a"]);
    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let (t1, t2) = (l1.local_addr().expect("addr"), l2.local_addr().expect("addr"));
    // Each target names itself, so the client sees which one it reached.
    for (l, name) in [(l1, b"one".as_slice()), (l2, b"two".as_slice())] {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name).await;
            }
        });
    }
    let yaml = format!(
        "common: {{ node_id: a, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: in, bind: \"127.0.0.1:0\" }} ]\nroutes: [ {{ name: lb, match: {{ listener: in }}, target: [\"{t1}\", \"{t2}\"] }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\n"
    );
    let config = proxy::config::parse(&yaml, &mesh.dir).expect("config");
    let a = proxy::Node::start(config).await.expect("start");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut c = connect(listener_addr(&a, "in")).await;
        c.shutdown().await.expect("shutdown");
        seen.push(String::from_utf8(read_to_end_or_error(&mut c).await.expect("read")).expect("utf8"));
    }
    assert_eq!(seen, ["one", "two", "one", "two"]);
    assert_eq!(a.stats().flows_local, 4);
    assert_eq!(a.stats().route_matches, vec![("lb".to_string(), 4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_the_origin_even_while_it_uploads() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let (a, b) = two_nodes(&mesh, echo, "10.0.0.0/8", &[]).await;
    // A refusal may even reset the connection before connect() returns.
    let Ok(c) = tokio::net::TcpStream::connect(listener_addr(&a, "in")).await else {
        assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Policy)).await, 1);
        return;
    };
    let (mut r, mut w) = c.into_split();
    // Upload far more than the windows hold, so writes are in flight when the refusal lands.
    let upload = tokio::spawn(async move { send_pattern(&mut w, 5, 32 * MIB).await });
    let got = tokio::time::timeout(Duration::from_secs(10), read_all_hash(&mut r)).await.expect("in time");
    assert!(got.map_or(true, |(n, _)| n == 0), "refused flow delivered data");
    assert!(upload.await.expect("join").is_err(), "the upload must fail, not complete");
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Policy)).await, 1, "{:?}", a.stats());
    assert_eq!(settled(1, || b.stats().refused_inbound(RefuseReason::Policy)).await, 1);
}
