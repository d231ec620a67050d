//! Source-routed flows over a chain A -> B -> C -> D: bytes, half-close, resets, a relay
//! dying, refusals with the hop that refused, bounded relay buffering, proxy chains.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxy::Node;
use proxy::core::wire::{self, Decoded, Destination, FlowHeader, RefuseReason, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// A chain A -> B -> C -> D; A's route `in` goes to `target` via B and C, exiting at D.
struct Chain {
    _mesh: Mesh,
    a: Node,
    b: Node,
    c: Node,
    d: Node,
}

async fn chain(target: SocketAddr, limits: &[&str], mesh_extra: &[&str], c_relays: bool) -> Chain {
    chain_with_exit_limits(target, limits, mesh_extra, c_relays, &[]).await
}

/// The chain with every link over `transport`.
async fn chain_over(target: SocketAddr, transport: Transport) -> Chain {
    chain_of(target, &[], &[], true, &[], Some(transport)).await
}

async fn chain_with_exit_limits(
    target: SocketAddr,
    limits: &[&str],
    mesh_extra: &[&str],
    c_relays: bool,
    exit_limits: &[&str],
) -> Chain {
    chain_of(target, limits, mesh_extra, c_relays, exit_limits, None).await
}

async fn chain_of(
    target: SocketAddr,
    limits: &[&str],
    mesh_extra: &[&str],
    c_relays: bool,
    exit_limits: &[&str],
    transport: Option<Transport>,
) -> Chain {
    // "e" is a probe: a peer of b that only the tests' raw streams use.
    let mesh = Mesh::new(&["a", "b", "c", "d", "e"]);
    let lim: Vec<String> = limits.iter().map(|s| s.to_string()).collect();
    let extra: Vec<String> = mesh_extra.iter().map(|s| s.to_string()).collect();
    let spec = |id, peers: Vec<(&'static str, String)>| {
        let mut s = NodeSpec::new(id);
        s.peers = peers;
        s.limits = lim.clone();
        s.mesh_extra = extra.clone();
        s.transport = transport;
        s
    };
    let addr = |n: &Node| link_addr(n, transport.unwrap_or(Transport::Quic));
    let mut d = spec("d", vec![("c", String::new())]);
    d.allow = vec!["127.0.0.1/32".into()];
    d.limits.extend(exit_limits.iter().map(|s| s.to_string()));
    let d = d.start(&mesh).await;
    let mut c = spec("c", vec![("b", String::new()), ("d", addr(&d))]);
    if !c_relays {
        c.mesh_extra.push("relay: false".into());
    }
    let c = c.start(&mesh).await;
    let b_peers = vec![("a", String::new()), ("c", addr(&c)), ("e", String::new())];
    let b = spec("b", b_peers);
    let b = b.start(&mesh).await;
    let mut a = spec("a", vec![("b", addr(&b))]);
    a.routes = vec![("in", target.to_string(), Some("d"))];
    a.via = vec!["b", "c"];
    let a = a.start(&mesh).await;
    for (node, peer) in [(&a, "b"), (&b, "c"), (&c, "d")] {
        assert!(node.wait_for_link(peer, Duration::from_secs(10)).await, "{} -> {peer} link", node.id());
        if let Some(t) = transport {
            assert_link_transport(node, peer, t);
        }
    }
    Chain { _mesh: mesh, a, b, c, d }
}

// Relaying holds over both link transports.
over_both_transports!(
    sixty_four_mib_each_way_cross_three_hops_byte_exact,
    half_close_crosses_every_hop_both_ways,
    resets_cross_every_hop_both_ways,
);

async fn sixty_four_mib_each_way_cross_three_hops_byte_exact(transport: Transport) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ch = chain_over(server.local_addr().expect("addr"), transport).await;
    exchange_both_ways(listener_addr(&ch.a, "in"), server, 64 * MIB).await;
    assert_eq!(
        (ch.b.stats().flows_relayed, ch.c.stats().flows_relayed, ch.d.stats().flows_exited),
        (1, 1, 1)
    );
    // Both directions' bytes, plus the exit's reply.
    let both_ways = 2 * 64 * MIB as u64;
    let relayed = eventually(Duration::from_secs(5), || ch.b.stats().bytes_relayed >= both_ways).await;
    assert!(relayed, "{:?}", ch.b.stats());
    assert_eq!(ch.a.stats().flows_reset + ch.b.stats().flows_reset + ch.d.stats().flows_reset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_flows_cross_three_hops_byte_exact() {
    let echo = echo_server().await;
    let ch = chain(echo, &[], &[], true).await;
    many_echo_flows(listener_addr(&ch.a, "in"), 1000).await;
    assert_eq!(ch.c.stats().flows_relayed, 1000);
    assert_eq!(ch.d.stats().flows_exited, 1000);
}

async fn half_close_crosses_every_hop_both_ways(transport: Transport) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ch = chain_over(server.local_addr().expect("addr"), transport).await;
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.expect("accept");
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.expect("request to eof");
        s.write_all(&sha256(&req)).await.expect("reply");
        s.shutdown().await.expect("fin");
    });
    let mut c = connect(listener_addr(&ch.a, "in")).await;
    let request = vec![3u8; 300_000];
    c.write_all(&request).await.expect("write");
    c.shutdown().await.expect("half-close");
    assert_eq!(read_to_end_or_error(&mut c).await.expect("clean end"), sha256(&request));
}

async fn resets_cross_every_hop_both_ways(transport: Transport) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ch = chain_over(server.local_addr().expect("addr"), transport).await;
    // Client resets: the server sees a reset.
    let mut c = connect(listener_addr(&ch.a, "in")).await;
    c.write_all(b"one").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.expect("read");
    reset(c);
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut s)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    // Server resets: the client sees a reset.
    let mut c = connect(listener_addr(&ch.a, "in")).await;
    c.write_all(b"two").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    s.read_exact(&mut buf).await.expect("read");
    s.write_all(b"partial").await.expect("write");
    reset(s);
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_flow_resets_both_ends() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ch = chain(server.local_addr().expect("addr"), &[], &[], true).await;
    let c = connect(listener_addr(&ch.a, "in")).await;
    let (mut s, _) = {
        let (_, mut w) = c.into_split();
        let writer = tokio::spawn(async move {
            // Keep sending until the path breaks.
            let chunk = vec![1u8; 16 * 1024];
            loop {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let accepted = server.accept().await.expect("accept");
        drop(writer);
        accepted
    };
    let mut some = vec![0u8; 64 * 1024];
    s.read_exact(&mut some).await.expect("bytes flowing");
    let Chain { b, .. } = ch;
    b.abort();
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut s)).await.expect("in time");
    assert_eq!(r.map(|_| ()), Err(std::io::ErrorKind::ConnectionReset), "the exit side must see a reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_flow_resets_the_client_too() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ch = chain(server.local_addr().expect("addr"), &[], &[], true).await;
    let mut c = connect(listener_addr(&ch.a, "in")).await;
    c.write_all(b"hello").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut five = [0u8; 5];
    s.read_exact(&mut five).await.expect("read");
    s.write_all(&vec![2u8; 100_000]).await.expect("write");
    let Chain { a, c: node_c, .. } = ch;
    node_c.abort();
    let r =
        tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c)).await.expect("in time");
    assert_eq!(r.map(|_| ()), Err(std::io::ErrorKind::ConnectionReset), "the client must see a reset");
    assert_eq!(settled(1, || a.stats().flows_reset).await, 1);
}

/// Opens a raw stream to `node` as the probe peer "e" with a hand-made header; returns
/// the reply. (Posing as a real node would replace that node's own link.)
async fn raw_reply(mesh_dir: &std::path::Path, node: &Node, hops: &[&str], target: &str) -> Reply {
    raw_reply_as(mesh_dir, "e", node, hops, target).await
}

/// Opens a raw stream to `node` as peer `me` (the header's origin) and returns the reply.
async fn raw_reply_as(
    mesh_dir: &std::path::Path,
    me: &str,
    node: &Node,
    hops: &[&str],
    target: &str,
) -> Reply {
    let file = |ext: &str| mesh_dir.join(format!("{me}.{ext}"));
    let ep = raw_client(&file("crt"), &file("key"), &mesh_dir.join("ca.crt"));
    let conn =
        ep.connect(node.mesh_addr().expect("addr"), node.id()).expect("connect").await.expect("handshake");
    let h = FlowHeader {
        flow_id: 1,
        origin: me.into(),
        passed: vec![],
        hops: hops.iter().map(|s| s.to_string()).collect(),
        destination: Destination::Target(target.into()),
        subflow: None,
    };
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(&wire::encode_header(&h).expect("encode")).await.expect("write");
    let buf = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(4096))
        .await
        .expect("in time")
        .expect("read");
    match wire::decode_reply(&buf).expect("reply") {
        Decoded::Complete(reply, _) => reply,
        other => panic!("{other:?}"),
    }
}

fn refused(reply: Reply) -> (RefuseReason, String) {
    match reply {
        Reply::Refused { reason, hop, .. } => (reason, hop),
        Reply::Opened | Reply::Sealed(_) => panic!("opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_refused_with_the_reason_and_the_hop_that_refused() {
    let echo = echo_server().await;
    // Unsealed (version 1) headers written by hand: the nodes accept them.
    let ch = chain(echo, &[], &["e2e: preferred"], false).await;
    let dir = ch._mesh.dir.clone();
    let target = echo.to_string();
    // Into b, as if from a.
    let cases: Vec<(Vec<&str>, RefuseReason, &str)> = vec![
        (vec!["c", "d", "c"], RefuseReason::Loop, "b"),
        (vec!["c", "b", "d"], RefuseReason::Loop, "b"),
        (vec!["x", "d"], RefuseReason::NoRoute, "b"),
        ((0..15).map(|_| "n").collect(), RefuseReason::HopLimit, "b"),
        // c has relaying disabled: b relays, c refuses.
        (vec!["c", "d"], RefuseReason::RelayNotAllowed, "c"),
    ];
    for (hops, reason, hop) in cases {
        let got = refused(raw_reply(&dir, &ch.b, &hops, &target).await);
        assert_eq!(got, (reason, hop.to_string()), "hops {hops:?}");
    }
    // c still exits flows that end at it, even with relaying off... it has no exit policy,
    // so the refusal is a policy one, from c.
    assert_eq!(
        refused(raw_reply(&dir, &ch.b, &["c"], &target).await),
        (RefuseReason::Policy, "c".to_string())
    );
    // A refusal by the exit travels back through both relays.
    let lone = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let ch2 = chain(lone, &[], &["e2e: preferred"], true).await;
    let got = refused(raw_reply(&ch2._mesh.dir, &ch2.b, &["c", "d"], "10.9.9.9:80").await);
    assert_eq!(got, (RefuseReason::Policy, "d".to_string()));
    // And an origin learns the refusal, counted per route.
    expect_refused(listener_addr(&ch.a, "in"), b"x").await;
    assert_eq!(settled(1, || ch.a.stats().refused_at_origin(RefuseReason::RelayNotAllowed)).await, 1);
    let per_route = ch.a.stats().route_refusals;
    assert_eq!(per_route, vec![("in".to_string(), vec![("relay_not_allowed".to_string(), 1)])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_exit_reader_bounds_what_the_relays_hold() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let window = 256 * 1024;
    let mesh_extra = [format!("stream_window: {window}")];
    let extra: Vec<&str> = mesh_extra.iter().map(String::as_str).collect();
    let ch = chain(server.local_addr().expect("addr"), &[], &extra, true).await;
    let (_r, mut w) = connect(listener_addr(&ch.a, "in")).await.into_split();
    let (mut s, _) = {
        let first = w.write_all(b"start").await;
        first.expect("write");
        server.accept().await.expect("accept")
    };
    let written = write_until_stalled(&mut w).await;
    // Between what the origin read from its application and what the exit wrote to the
    // target sit three stream windows and a chunk per relay: nothing grows with the
    // amount sent.
    let held = ch.a.stats().bytes_in - ch.d.stats().bytes_out;
    assert!(held <= 3 * window as u64 + 4 * 256 * 1024, "{held} bytes held inside the mesh");
    let relayed_b = ch.b.stats().bytes_relayed;
    let relayed_c = ch.c.stats().bytes_relayed;
    assert!(relayed_b.abs_diff(relayed_c) <= 2 * window as u64, "b {relayed_b} vs c {relayed_c}");
    // The reader catches up: every byte arrives.
    read_exactly(&mut s, written + 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_chain_target_hands_the_flow_to_the_peer_and_its_route_for_the_port() {
    let mesh = Mesh::new(&["a", "b", "c"]);
    let echo = echo_server().await;
    // a and b listen on the same port (on 127.0.0.1 and 127.0.0.2): the chain carries the
    // port, and b routes it by its own route for that port, exiting at c.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut c = NodeSpec::new("c");
    c.peers = vec![("b", String::new())];
    c.allow = vec!["127.0.0.1/32".into()];
    let c = c.start(&mesh).await;
    let b_yaml = format!(
        "common: {{ node_id: b, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: web, bind: \"127.0.0.2:{port}\" }} ]\npeers: [ {{ name: a }}, {{ name: c, address: \"{}\" }} ]\nroutes: [ {{ name: web-via-c, match: {{ port: {port} }}, target: \"{echo}\", exit: c }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: b.crt, key: b.key, ca: ca.crt }}\n",
        c.mesh_addr().expect("addr")
    );
    let b = Node::start(proxy::config::parse(&b_yaml, &mesh.dir).expect("b config")).await.expect("b");
    let a_yaml = format!(
        "common: {{ node_id: a, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: web, bind: \"127.0.0.1:{port}\" }} ]\npeers: [ {{ name: b, address: \"{}\" }} ]\nroutes: [ {{ name: to-b, match: {{ listener: web }}, target: b }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\n",
        b.mesh_addr().expect("addr")
    );
    let a = Node::start(proxy::config::parse(&a_yaml, &mesh.dir).expect("a config")).await.expect("a");
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    assert!(b.wait_for_link("c", Duration::from_secs(10)).await);
    let (mut r, mut w) = connect(listener_addr(&a, "web")).await.into_split();
    let sent = send_pattern(&mut w, 9, MIB).await.expect("send");
    w.shutdown().await.expect("fin");
    let (n, got) = read_all_hash(&mut r).await.expect("read");
    assert_eq!((n, got), (MIB, sent));
    assert_eq!(b.stats().route_matches, vec![("web-via-c".to_string(), 1)]);
    assert_eq!((b.stats().flows_relayed, c.stats().flows_exited), (1, 1));
    // The chain node counts the flow's bytes on its route too (when the flow ends).
    let route_bytes = || b.routes().first().map_or(0, |r| r.bytes);
    assert!(
        eventually(Duration::from_secs(5), || route_bytes() >= 2 * MIB as u64).await,
        "{}",
        route_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_cut_link_resets_both_ends_within_the_link_idle_timeout() {
    let mesh = Mesh::new(&["a", "b", "c"]);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let mut c = NodeSpec::new("c");
    c.peers = vec![("b", String::new())];
    c.allow = vec!["127.0.0.1/32".into()];
    let c = c.start(&mesh).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("c", c.mesh_addr().expect("addr").to_string())];
    let b = b.start(&mesh).await;
    // a reaches b through a UDP relay that can drop everything.
    let cut = UdpRelay::start(b.mesh_addr().expect("addr")).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", cut.addr.to_string())];
    a.routes = vec![("in", target.to_string(), Some("c"))];
    a.via = vec!["b"];
    a.link_idle = "2s";
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    assert!(b.wait_for_link("c", Duration::from_secs(10)).await);
    let mut client = connect(listener_addr(&a, "in")).await;
    client.write_all(b"before the cut").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut buf = [0u8; 14];
    s.read_exact(&mut buf).await.expect("read");
    cut.set_blackhole(true);
    let started = std::time::Instant::now();
    let (client_end, server_end) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), read_to_end_or_error(&mut client)),
        tokio::time::timeout(Duration::from_secs(15), read_to_end_or_error(&mut s)),
    );
    assert_eq!(client_end.expect("client in time"), Err(std::io::ErrorKind::ConnectionReset));
    assert_eq!(server_end.expect("server in time"), Err(std::io::ErrorKind::ConnectionReset));
    // a's link idles out after 2 s, b's after its 5 s: both well inside the bound.
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_header_is_read_comes_back_with_the_refusing_hop() {
    let echo = echo_server().await;
    let ch = chain_with_exit_limits(echo, &[], &["e2e: preferred"], true, &["max_flows: 1"]).await;
    // d's one flow slot is taken: the next flow is refused at d before d reads its header,
    // and the refusal must come back through c and b naming d.
    let _held = open_echoed_flow(listener_addr(&ch.a, "in"), 7).await;
    let reply = raw_reply(&ch._mesh.dir, &ch.b, &["c", "d"], &echo.to_string()).await;
    assert_eq!(refused(reply), (RefuseReason::Overloaded, "d".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_chain_that_exits_at_the_peer_is_held_to_its_exit_policy() {
    let mesh = Mesh::new(&["a", "b"]);
    let (allowed, denied) = (echo_server().await, echo_server().await);
    let free =
        || std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    // Both nodes need listeners on the same ports: a port picked free may be taken by a
    // test running alongside before the node binds it, so pick again then.
    let mut attempt = 0;
    let (a, b) = loop {
        attempt += 1;
        let (p1, p2) = (free(), free());
        let b_yaml = format!(
            "common: {{ node_id: b, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: ok, bind: \"127.0.0.2:{p1}\" }}, {{ name: no, bind: \"127.0.0.2:{p2}\" }} ]\npeers: [ {{ name: a }} ]\nroutes: [ {{ name: ok, match: {{ port: {p1} }}, target: \"{allowed}\" }}, {{ name: no, match: {{ port: {p2} }}, target: \"{denied}\" }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: b.crt, key: b.key, ca: ca.crt }}\nexit_policy: {{ allow: [\"{allowed}\"] }}\n"
        );
        let Ok(b) = Node::start(proxy::config::parse(&b_yaml, &mesh.dir).expect("b config")).await else {
            assert!(attempt < 5, "no free ports for b after {attempt} attempts");
            continue;
        };
        let a_yaml = format!(
            "common: {{ node_id: a, region: t, admin_addr: \"127.0.0.1:0\" }}\nlisteners: [ {{ name: ok, bind: \"127.0.0.1:{p1}\" }}, {{ name: no, bind: \"127.0.0.1:{p2}\" }} ]\npeers: [ {{ name: b, address: \"{}\" }} ]\nroutes: [ {{ name: ok, match: {{ listener: ok }}, target: b }}, {{ name: no, match: {{ listener: no }}, target: b }} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\n",
            b.mesh_addr().expect("addr")
        );
        match Node::start(proxy::config::parse(&a_yaml, &mesh.dir).expect("a config")).await {
            Ok(a) => break (a, b),
            Err(e) => assert!(attempt < 5, "no free ports for a after {attempt} attempts: {e}"),
        }
    };
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    let _ok = open_echoed_flow(listener_addr(&a, "ok"), 1).await;
    expect_refused(listener_addr(&a, "no"), b"x").await;
    assert_eq!(settled(1, || a.stats().refused_at_origin(RefuseReason::Policy)).await, 1);
    assert_eq!(b.stats().refused_inbound(RefuseReason::Policy), 1);
}
