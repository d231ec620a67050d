//! Limits, timeouts, backpressure and graceful shutdown.

use crate::common;

use std::time::Duration;

use common::*;
use proxy::core::wire::RefuseReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A client that sends `request` through `a` and half-closes, and the server's side of it.
async fn half_closed_request(
    a: &proxy::Node,
    server: &TcpListener,
    request: &[u8],
) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let mut c = connect(listener_addr(a, "in")).await;
    c.write_all(request).await.expect("write");
    c.shutdown().await.expect("half-close");
    let (s, _) = server.accept().await.expect("accept");
    (c, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_beyond_the_exit_limit_are_refused_as_overloaded() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.limits = vec!["max_flows: 2".into()];
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", echo.to_string(), Some("b"))];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    let entry = listener_addr(&a, "in");
    let mut open = vec![open_echoed_flow(entry, 1).await, open_echoed_flow(entry, 2).await];
    expect_refused(entry, b"third").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Overloaded)).await, 1);
    assert_eq!(settled(1, || b.stats().refused_inbound(RefuseReason::Overloaded)).await, 1);
    // Closing one frees a slot.
    drop(open.pop());
    let freed = eventually(Duration::from_secs(5), || b.stats().flows_current == 1).await;
    assert!(freed, "{:?}", b.stats());
    open.push(open_echoed_flow(entry, 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_beyond_the_per_peer_stream_limit_wait_then_are_refused() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let limits = ["max_streams_per_peer: 2", "connect_timeout: \"500ms\""];
    let (a, _b) = two_nodes(&mesh, echo, "127.0.0.1/32", &limits).await;
    let entry = listener_addr(&a, "in");
    let _open = [open_echoed_flow(entry, 1).await, open_echoed_flow(entry, 2).await];
    expect_refused(entry, b"third").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Overloaded)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flow_is_reset_after_the_idle_timeout() {
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server(&["idle_timeout: \"1s\""]).await;
    let mut c = connect(listener_addr(&a, "in")).await;
    c.write_all(b"hi").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut s)).await.expect("in time");
    assert!(matches!(r, Err(std::io::ErrorKind::ConnectionReset)), "server side: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_flow_is_reset_after_the_half_closed_timeout() {
    let mesh = Mesh::new(&["a", "b"]);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let limits = ["half_closed_timeout: \"1s\"", "idle_timeout: \"60s\""];
    let (a, _b) = two_nodes(&mesh, target, "127.0.0.1/32", &limits).await;
    let mut c = connect(listener_addr(&a, "in")).await;
    c.write_all(b"request").await.expect("write");
    c.shutdown().await.expect("half-close");
    let (_s, _) = server.accept().await.expect("accept");
    // The server never answers and never closes.
    let started = std::time::Instant::now();
    let r =
        tokio::time::timeout(Duration::from_secs(20), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    assert!(started.elapsed() < Duration::from_secs(15), "reset came from the half-closed timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_stops_the_sender_and_buffering_stays_bounded() {
    let PairWithServer { server, a, b, mesh: _mesh } = pair_with_server(&[]).await;
    let c = connect(listener_addr(&a, "in")).await;
    let (mut s, _) = server.accept().await.expect("accept");
    let (_r, mut w) = c.into_split();
    // The server is not reading.
    let written = write_until_stalled(&mut w).await;
    // Kernel socket buffers on four sockets plus the 16 MiB QUIC stream window: far below
    // 64 MiB. Without backpressure the sender would have run on.
    assert!(written < 64 * 1024 * 1024, "{written} bytes buffered");
    // Between the nodes: the stream window, plus the one 256 KiB chunk each node may hold
    // on its way (read from its socket or stream, not yet written on).
    let in_flight = a.stats().bytes_in - b.stats().bytes_out;
    assert!(in_flight <= (16 << 20) + 2 * (256 << 10), "{in_flight} bytes held between the nodes");
    // The reader catches up and every byte arrives.
    read_exactly(&mut s, written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_lets_flows_finish_then_resets_the_rest() {
    let PairWithServer { server, a, b: _b, mesh: _mesh } =
        pair_with_server(&["drain_timeout: \"1500ms\""]).await;
    let entry = listener_addr(&a, "in");
    // Flow 1 finishes during the drain; flow 2 never does.
    let mut finishing = connect(entry).await;
    finishing.write_all(b"one").await.expect("write");
    let (mut s1, _) = server.accept().await.expect("accept 1");
    let mut stuck = connect(entry).await;
    stuck.write_all(b"two").await.expect("write");
    let (_s2, _) = server.accept().await.expect("accept 2");
    let shutdown = tokio::spawn(a.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(entry).await.is_err(), "listener still accepting while draining");
    let mut one = [0u8; 3];
    s1.read_exact(&mut one).await.expect("read");
    s1.write_all(b"reply during drain").await.expect("write");
    s1.shutdown().await.expect("shutdown");
    finishing.shutdown().await.expect("client half-close");
    let got = read_to_end_or_error(&mut finishing).await.expect("flow 1 completes cleanly");
    assert_eq!(got, b"reply during drain");
    let r = tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut stuck))
        .await
        .expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset), "the unfinished flow must be reset");
    let report =
        tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("in time").expect("join");
    assert_eq!((report.open_at_start, report.reset_at_deadline), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_flow_that_keeps_downloading_is_not_cut() {
    let limits = ["half_closed_timeout: \"1s\""];
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server(&limits).await;
    let (mut c, mut s) = half_closed_request(&a, &server, b"GET /slow").await;
    tokio::spawn(async move {
        // 2.5 s of trickle: longer than the half-closed timeout, never silent for 1 s.
        for i in 0..10u8 {
            s.write_all(&[i; 100]).await.expect("trickle");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        s.shutdown().await.expect("fin");
    });
    let got = read_to_end_or_error(&mut c).await.expect("clean end");
    assert_eq!(got.len(), 1000);
    assert!(got.chunks(100).enumerate().all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_a_half_close_reaches_the_server_at_once() {
    let limits = ["half_closed_timeout: \"60s\""];
    let PairWithServer { server, a, b: _b, mesh: _mesh } = pair_with_server(&limits).await;
    let (c, mut s) = half_closed_request(&a, &server, b"request").await;
    let mut req = Vec::new();
    s.read_to_end(&mut req).await.expect("request to eof");
    assert_eq!(req, b"request");
    // The client gives up: nobody is reading or writing its socket on the node right now.
    reset(c);
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // Writing is what makes the server notice a reset peer.
            if let Err(e) = s.write_all(b"late").await {
                return e.kind();
            }
            if let Err(e) =
                tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await.unwrap_or(Ok(0))
            {
                return e.kind();
            }
        }
    })
    .await
    .expect("the reset must arrive long before the half-closed timeout");
    assert!(matches!(r, std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_exit_flow_is_reset_after_the_idle_timeout() {
    let mesh = Mesh::new(&["a"]);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let yaml = format!(
        "common: {{ node_id: a, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: in, bind: \"127.0.0.1:0\" }} ]\nroutes: [ {{ name: r, match: {{ listener: in }}, target: \"{target}\" }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\nlimits: {{ idle_timeout: \"1s\" }}\n"
    );
    let a = proxy::Node::start(proxy::config::parse(&yaml, &mesh.dir).expect("config")).await.expect("start");
    let mut c = connect(listener_addr(&a, "in")).await;
    let (mut s, _) = server.accept().await.expect("accept");
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut s)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    assert_eq!(settled(1, || a.stats().flows_reset).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_exit_refuses_new_flows_as_draining() {
    let limits = ["drain_timeout: \"10s\""];
    let PairWithServer { server, a, b, mesh: _mesh } = pair_with_server(&limits).await;
    let entry = listener_addr(&a, "in");
    // One open flow keeps b draining.
    let mut open = connect(entry).await;
    open.write_all(b"x").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut x = [0u8; 1];
    s.read_exact(&mut x).await.expect("x");
    let draining = tokio::spawn(b.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    expect_refused(entry, b"during drain").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Draining)).await, 1);
    // The open flow still completes, then the drain ends early.
    s.write_all(b"bye").await.expect("write");
    s.shutdown().await.expect("fin");
    open.shutdown().await.expect("fin");
    assert_eq!(read_to_end_or_error(&mut open).await.expect("clean"), b"bye");
    drop(s);
    let report =
        tokio::time::timeout(Duration::from_secs(8), draining).await.expect("drained early").expect("join");
    assert_eq!(report.reset_at_deadline, 0);
}
