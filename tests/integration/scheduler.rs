//! Measured routing: a scheduler and three nodes joined through link emulators. The
//! scheduler moves a route to the faster relay path, moves it back when that path
//! degrades, and the nodes keep routing when the scheduler is gone.

use crate::common;

use std::time::Duration;

use common::*;
use proxy::Node;
use proxy::config::scheduler as sched_config;
use proxy::emulator::{LinkEmulator, LinkProfile};
use proxy::scheduler::Scheduler;
use proxy::scheduler::state::LinkState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The admin API on a free port, so tests can run side by side.
const ADMIN: &str = "admin_addr: \"127.0.0.1:0\"\n";

fn primary(node: &Node) -> Option<Vec<String>> {
    let set = node.instructions()?;
    Some(set.routes.first()?.paths.first()?.relays.clone())
}

async fn wait_primary(node: &Node, want: &[&str], within: Duration) -> bool {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(within, || primary(node).as_ref() == Some(&want)).await
}

/// A scheduler on loopback for `mesh` (which gets its certificate), with `settings` added
/// to its config; returns it and the address nodes dial.
async fn scheduler_for(mesh: &Mesh, settings: &str) -> (Scheduler, String) {
    mesh.issue("scheduler", "scheduler");
    let yaml = format!("cert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\n{ADMIN}{settings}");
    let yaml = if settings.contains("bind:") { yaml } else { format!("bind: \"127.0.0.1:0\"\n{yaml}") };
    let scheduler =
        Scheduler::start(sched_config::parse(&yaml, &mesh.dir).expect("config")).await.expect("start");
    let addr = scheduler.local_addr().expect("addr").to_string();
    (scheduler, addr)
}

/// The exit `d`: allows loopback targets, accepts a and b.
async fn exit_d(mesh: &Mesh, scheduler: &str) -> Node {
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new()), ("b", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    d.scheduler = Some(scheduler.to_string());
    d.start(mesh).await
}

/// The relay `b`: accepts a, dials d.
async fn relay_b(mesh: &Mesh, d: &Node, scheduler: &str) -> Node {
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", d.mesh_addr().expect("addr").to_string())];
    b.scheduler = Some(scheduler.to_string());
    b.start(mesh).await
}

/// The origin `a`: reaches b and d through emulated links, routes `in` to `echo` at d;
/// `limits` are lines for its `limits` section.
async fn origin_a(
    mesh: &Mesh,
    to_b: &LinkEmulator,
    to_d: &LinkEmulator,
    echo: std::net::SocketAddr,
    scheduler: &str,
    limits: &[&str],
) -> Node {
    let mut a = NodeSpec::new("a");
    a.limits = limits.iter().map(|l| l.to_string()).collect();
    a.peers = vec![("b", to_b.addr().to_string()), ("d", to_d.addr().to_string())];
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.scheduler = Some(scheduler.to_string());
    let a = a.start(mesh).await;
    assert!(a.wait_for_link("d", Duration::from_secs(10)).await);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_follow_the_measured_best_path_and_survive_the_scheduler() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let settings = "recompute_interval: \"200ms\"\nhysteresis: { margin: 0.1, hold: \"600ms\" }\nnode_dead_after: \"3s\"\n";
    let (scheduler, sched_addr) = scheduler_for(&mesh, settings).await;
    let echo = echo_server().await;
    let d = exit_d(&mesh, &sched_addr).await;
    let b = relay_b(&mesh, &d, &sched_addr).await;
    // a reaches d over a slow link (80 ms round trip) and b over a fast one (10 ms).
    let to_d = LinkEmulator::start(d.mesh_addr().expect("addr"), 1).await.expect("emulator");
    to_d.set_both(LinkProfile::delayed(Duration::from_millis(40)));
    let to_b = LinkEmulator::start(b.mesh_addr().expect("addr"), 2).await.expect("emulator");
    to_b.set_both(LinkProfile::delayed(Duration::from_millis(5)));
    let a = origin_a(&mesh, &to_b, &to_d, echo, &sched_addr, &[]).await;
    for (n, p) in [(&a, "b"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await);
    }

    // Measured: a-b-d (about 10 ms) beats a-d (80 ms).
    assert!(wait_primary(&a, &["b"], Duration::from_secs(15)).await, "instructions: {:?}", a.instructions());
    let via_b = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    assert_eq!(b.stats().flows_relayed, 1, "the flow must take the path through b");

    // a-b degrades to 200 ms: new flows go direct within a few report intervals.
    to_b.set_both(LinkProfile::delayed(Duration::from_millis(100)));
    assert!(wait_primary(&a, &[], Duration::from_secs(15)).await, "instructions: {:?}", a.instructions());
    let direct = open_echoed_flow(listener_addr(&a, "in"), 2).await;
    assert_eq!((b.stats().flows_relayed, d.stats().flows_exited), (1, 2));

    // a reports its route's traffic: the two flows so far, with their bytes (counted when
    // a flow ends).
    drop((via_b, direct));
    let reported = eventually(Duration::from_secs(5), || {
        scheduler
            .route_totals("a")
            .first()
            .is_some_and(|(r, flows, bytes)| r == "in" && *flows == 2 && *bytes >= 4)
    })
    .await;
    assert!(reported, "{:?}", scheduler.route_totals("a"));
    // The scheduler dies: 100 new flows still start, on the cached instructions.
    drop(scheduler);
    for i in 0..100u8 {
        let _f = open_echoed_flow(listener_addr(&a, "in"), i).await;
    }
    assert_eq!(d.stats().flows_exited, 102);
    // a restarts while the scheduler is still gone: it routes by its disk cache.
    let cached = a.instructions().expect("instructions");
    drop(a);
    let mut a2 = NodeSpec::new("a");
    a2.peers = vec![("b", to_b.addr().to_string()), ("d", to_d.addr().to_string())];
    a2.routes = vec![("in", echo.to_string(), Some("d"))];
    a2.scheduler = Some("127.0.0.1:9".into());
    let a2 = a2.start(&mesh).await;
    assert_eq!(a2.instructions().map(|s| s.version), Some(cached.version), "loaded from disk");
    assert!(a2.wait_for_link("d", Duration::from_secs(10)).await);
    let _after_restart = open_echoed_flow(listener_addr(&a2, "in"), 7).await;
    assert_eq!(d.stats().flows_exited, 103);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_only_the_scheduler_is_introduced_to_its_exit() {
    let mesh = Mesh::new(&["a", "d"]);
    mesh.issue("scheduler", "scheduler");
    let sched_yaml = "bind: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nadmin_addr: \"127.0.0.1:0\"\nrecompute_interval: \"200ms\"\n";
    let scheduler =
        Scheduler::start(sched_config::parse(sched_yaml, &mesh.dir).expect("config")).await.expect("start");
    let sched_addr = scheduler.local_addr().expect("addr").to_string();
    let echo = echo_server().await;
    let mut d = NodeSpec::new("d");
    d.allow = vec!["127.0.0.1/32".into()];
    d.scheduler = Some(sched_addr.clone());
    let d = d.start(&mesh).await;
    // a's config: its identity, the scheduler, and a route to an exit it has no address for.
    let mut a = NodeSpec::new("a");
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.scheduler = Some(sched_addr);
    let a = a.start(&mesh).await;
    let linked =
        eventually(Duration::from_secs(15), || a.peers().iter().any(|p| p.id == "d" && p.connected)).await;
    assert!(linked, "a never linked to d: {:?}", a.peers());
    let _flow = open_echoed_flow(listener_addr(&a, "in"), 9).await;
    assert_eq!(d.stats().flows_exited, 1);
    assert!(d.peers().iter().any(|p| p.id == "a"), "d accepted a as a discovered peer");
}

/// `scheduler.addresses`: a node takes the first scheduler listed that answers, stays with
/// it, and moves to the next when it goes away, keeping its flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moves_to_the_next_scheduler_listed_when_its_own_goes_away() {
    let mesh = Mesh::new(&["a", "b"]);
    let (first, first_addr) = scheduler_for(&mesh, "").await;
    let (second, second_addr) = scheduler_for(&mesh, "").await;
    // Nothing answers at the head of b's list: it goes on to the next.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let echo = echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec![echo.to_string()];
    b.scheduler = Some(format!("{silent_addr},{second_addr}"));
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", echo.to_string(), Some("b"))];
    a.scheduler = Some(format!("{first_addr},{second_addr}"));
    let a = a.start(&mesh).await;
    let has = |s: &Scheduler, id: &str| s.nodes().contains(&id.to_string());
    assert!(eventually(Duration::from_secs(15), || has(&second, "b")).await, "b skipped the silent address");
    assert!(eventually(Duration::from_secs(15), || has(&first, "a")).await, "a took the first listed");
    assert!(!has(&second, "a"), "a stays with its scheduler while it answers");
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);

    // A flow open across the move.
    let entry = listener_addr(&a, "in");
    let mut flow = connect(entry).await;
    flow.write_all(b"before").await.expect("write");
    let mut got = [0u8; 6];
    flow.read_exact(&mut got).await.expect("echo");
    drop(first);
    assert!(
        eventually(Duration::from_secs(15), || has(&second, "a")).await,
        "a moved to the second scheduler"
    );
    flow.write_all(b"after!").await.expect("write after the move");
    flow.read_exact(&mut got).await.expect("echo after the move");
    assert_eq!(&got, b"after!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_is_rejoined_without_disturbing_open_flows() {
    let mesh = Mesh::new(&["a", "d"]);
    mesh.issue("scheduler", "scheduler");
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let sched_yaml = format!(
        "bind: \"127.0.0.1:{port}\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nadmin_addr: \"127.0.0.1:0\"\nrecompute_interval: \"200ms\"\n"
    );
    let config = sched_config::parse(&sched_yaml, &mesh.dir).expect("config");
    let scheduler = Scheduler::start(config.clone()).await.expect("start");
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    d.scheduler = Some(format!("127.0.0.1:{port}"));
    let d = d.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("d", d.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", server.local_addr().expect("addr").to_string(), Some("d"))];
    a.scheduler = Some(format!("127.0.0.1:{port}"));
    let a = a.start(&mesh).await;
    assert!(eventually(Duration::from_secs(10), || a.instructions().is_some()).await);
    assert!(!a.instructions_stale());
    let version = a.instructions().map(|s| s.version);
    // A flow is open across the scheduler's restart.
    let mut client = connect(listener_addr(&a, "in")).await;
    let (mut s, _) = {
        tokio::io::AsyncWriteExt::write_all(&mut client, b"before").await.expect("write");
        server.accept().await.expect("accept")
    };
    drop(scheduler);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scheduler = Scheduler::start(config).await.expect("restart on the same port");
    let rejoined = eventually(Duration::from_secs(15), || scheduler.nodes().len() == 2).await;
    assert!(rejoined, "nodes did not re-register: {:?}", scheduler.nodes());
    assert!(
        eventually(Duration::from_secs(10), || a.instructions().map(|s| s.version) > version).await,
        "no resync"
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, b" after").await.expect("write");
    tokio::io::AsyncWriteExt::shutdown(&mut client).await.expect("fin");
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got).await.expect("the open flow was not disturbed");
    assert_eq!(got, b"before after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_paths_within_the_hysteresis_margin_never_trade_places() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let settings = "recompute_interval: \"100ms\"\nhysteresis: { margin: 0.25, hold: \"300ms\" }\n";
    let (_scheduler, sched_addr) = scheduler_for(&mesh, settings).await;
    let echo = echo_server().await;
    let d = exit_d(&mesh, &sched_addr).await;
    // a-d: 20 ms round trip; a-b-d: 10 + 10 ms. Equal within measurement noise.
    let to_d = LinkEmulator::start(d.mesh_addr().expect("addr"), 4).await.expect("emulator");
    let to_d_from_b = LinkEmulator::start(d.mesh_addr().expect("addr"), 6).await.expect("emulator");
    to_d.set_both(LinkProfile::delayed(Duration::from_millis(10)));
    to_d_from_b.set_both(LinkProfile::delayed(Duration::from_millis(5)));
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", to_d_from_b.addr().to_string())];
    b.scheduler = Some(sched_addr.clone());
    let b = b.start(&mesh).await;
    let to_b = LinkEmulator::start(b.mesh_addr().expect("addr"), 7).await.expect("emulator");
    to_b.set_both(LinkProfile::delayed(Duration::from_millis(5)));
    let a = origin_a(&mesh, &to_b, &to_d, echo, &sched_addr, &[]).await;
    for (n, p) in [(&a, "b"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await);
    }
    // Once both paths are measured, the route settles on one of them and stays.
    assert!(
        eventually(Duration::from_secs(10), || a
            .instructions()
            .is_some_and(|s| s.routes.first().is_some_and(|r| r.paths.len() == 2)))
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = primary(&a);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(primary(&a), settled, "the route flapped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_control_message_gets_an_error_and_the_session_goes_on() {
    use proxy::core::control::{self, Registration, ToNode, ToScheduler};
    let mesh = Mesh::new(&["a"]);
    mesh.issue("scheduler", "scheduler");
    let sched_yaml = "bind: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nadmin_addr: \"127.0.0.1:0\"\n";
    let scheduler =
        Scheduler::start(sched_config::parse(sched_yaml, &mesh.dir).expect("config")).await.expect("start");
    let ep = raw_client(&mesh.path("a.crt"), &mesh.path("a.key"), &mesh.path("ca.crt"));
    let conn = ep
        .connect(scheduler.local_addr().expect("addr"), "scheduler")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    // A frame of a future version, then one whose body is not a message, then a good one.
    let mut future = control::encode(&ToScheduler::Heartbeat { instructions_version: 1 }).expect("encode");
    future[4] = 99;
    let mut garbage = control::encode(&ToScheduler::Heartbeat { instructions_version: 1 }).expect("encode");
    let body = control::FRAME_PREFIX_LEN;
    garbage[body] = 0x7f;
    let register = ToScheduler::Register(Registration {
        node_id: "a".into(),
        region: "t".into(),
        mesh_address: "127.0.0.1:1".into(),
        peers: vec![],
        listeners: vec![],
        routes: vec![],
    });
    for frame in [future, garbage, control::encode(&register).expect("encode")] {
        send.write_all(&frame).await.expect("write");
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while got.len() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), recv.read_chunk(4096, true))
            .await
            .expect("reply in time")
            .expect("read")
            .expect("stream open");
        buf.extend_from_slice(&chunk.bytes);
        while let Ok(Some((m, used))) = control::decode::<ToNode>(&buf, control::MAX_FRAME_BODY) {
            buf.drain(..used);
            got.push(m);
        }
    }
    assert!(matches!(got[0], ToNode::Error { .. }) && matches!(got[1], ToNode::Error { .. }), "{got:?}");
    assert_eq!(got[2], ToNode::Welcome { version: control::SCHEDULER_FEATURES });
    assert_eq!(scheduler.nodes(), vec!["a".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipath_route_stripes_over_the_paths_the_scheduler_computed() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let (_scheduler, sched_addr) = scheduler_for(&mesh, "recompute_interval: \"200ms\"\n").await;
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let d = exit_d(&mesh, &sched_addr).await;
    let b = relay_b(&mesh, &d, &sched_addr).await;
    let to_d = LinkEmulator::start(d.mesh_addr().expect("addr"), 1).await.expect("emulator");
    let to_b = LinkEmulator::start(b.mesh_addr().expect("addr"), 2).await.expect("emulator");
    for link in [&to_d, &to_b] {
        link.set_both(LinkProfile { rate_bps: Some(100_000_000), queue_limit: 4096, ..LinkProfile::ideal() });
    }
    // No static paths: the route relies on the scheduler for them.
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", to_b.addr().to_string()), ("d", to_d.addr().to_string())];
    a.routes = vec![("in", target.to_string(), Some("d"))];
    a.route_extra = vec!["multipath: true".into()];
    a.scheduler = Some(sched_addr.clone());
    let a = a.start(&mesh).await;
    assert!(b.wait_for_link("d", Duration::from_secs(10)).await);
    let two_paths = || a.instructions().and_then(|s| s.routes.first().map(|r| r.paths.len())) == Some(2);
    assert!(eventually(Duration::from_secs(15), two_paths).await, "instructions: {:?}", a.instructions());
    exchange_both_ways(listener_addr(&a, "in"), server, 16 * 1024 * 1024).await;
    let m = a.stats().multipath;
    assert_eq!((m.flows, m.subflows_opened, m.subflows_lost), (1, 2, 0), "{m:?}");
    assert!(b.stats().bytes_relayed > 1024 * 1024, "the path through b carried part of the flow");
}

/// The mesh of the first test (a-d 80 ms, a-b-d about 10 ms), with `b_extra` lines in b's
/// `mesh` section and `a_limits` in a's `limits`; returns it once a and b have their links.
async fn fast_relay_mesh(
    mesh: &Mesh,
    sched_addr: &str,
    b_extra: &[&str],
    a_limits: &[&str],
) -> (Node, Node, Node, LinkEmulator, LinkEmulator) {
    let echo = echo_server().await;
    let d = exit_d(mesh, sched_addr).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", d.mesh_addr().expect("addr").to_string())];
    b.scheduler = Some(sched_addr.to_string());
    b.mesh_extra = b_extra.iter().map(|l| l.to_string()).collect();
    let b = b.start(mesh).await;
    let to_d = LinkEmulator::start(d.mesh_addr().expect("addr"), 1).await.expect("emulator");
    to_d.set_both(LinkProfile::delayed(Duration::from_millis(40)));
    let to_b = LinkEmulator::start(b.mesh_addr().expect("addr"), 2).await.expect("emulator");
    to_b.set_both(LinkProfile::delayed(Duration::from_millis(5)));
    let a = origin_a(mesh, &to_b, &to_d, echo, sched_addr, a_limits).await;
    for (n, p) in [(&a, "b"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await);
    }
    (a, b, d, to_b, to_d)
}

/// Flows from a's listener that `b`, turned hostile with `tap`, keeps from ever echoing:
/// rounds of 3 at once, until a's route leaves b (at most 5 rounds; failures add up over
/// reports). Returns whether it left.
async fn fail_flows_until_the_route_moves(a: &Node, b: &Node, tap: proxy::node::RelayTap) -> bool {
    b.set_relay_tap(Some(tap));
    let entry = listener_addr(a, "in");
    for _ in 0..5 {
        let mut failing = tokio::task::JoinSet::new();
        for i in 0..3u8 {
            failing.spawn(async move {
                let mut c = connect(entry).await;
                let _ = c.write_all(&[i]).await;
                // The origin gives up on the flow and resets the connection.
                let got = tokio::time::timeout(Duration::from_secs(30), read_to_end_or_error(&mut c)).await;
                let got = got.expect("the origin never gave up on the flow");
                assert!(got.map_or(true, |echoed| echoed.is_empty()), "a failed flow echoed");
            });
        }
        while let Some(done) = failing.join_next().await {
            done.expect("flow task");
        }
        // Two heartbeats carry the outcomes; a recompute follows.
        if wait_primary(a, &[], Duration::from_secs(3)).await {
            return true;
        }
    }
    false
}

/// A member turned hostile relays nothing: it keeps its links (which measure fine) and
/// makes the flows it is given fail, by `tap`. The origin's failed flows reach the
/// scheduler, which moves that origin's route off the relay; a new flow then goes direct.
async fn a_hostile_relay_loses_the_origin_s_route(tap: proxy::node::RelayTap) {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let settings = "recompute_interval: \"200ms\"\nhysteresis: { margin: 0.1, hold: \"600ms\" }\n";
    let (scheduler, sched_addr) = scheduler_for(&mesh, settings).await;
    // Short deadlines, so a flow without a reply fails within seconds (about 5.6 s here).
    let limits = ["header_timeout: \"200ms\"", "connect_timeout: \"200ms\""];
    let (a, b, d, _to_b, _to_d) = fast_relay_mesh(&mesh, &sched_addr, &[], &limits).await;
    assert!(wait_primary(&a, &["b"], Duration::from_secs(15)).await, "instructions: {:?}", a.instructions());
    let _honest = open_echoed_flow(listener_addr(&a, "in"), 1).await;

    // a's route leaves b, though b's links still measure as the faster path.
    assert!(fail_flows_until_the_route_moves(&a, &b, tap).await, "instructions: {:?}", a.instructions());
    let avoided = scheduler.view().nodes().into_iter().find(|n| n.id == "a").map(|n| n.avoided_relays);
    assert_eq!(avoided, Some(vec!["b".to_string()]));
    let exited = d.stats().flows_exited;
    let _direct = open_echoed_flow(listener_addr(&a, "in"), 9).await;
    assert_eq!(d.stats().flows_exited, exited + 1, "a new flow goes direct and arrives");
}

/// The relay drops every byte both ways: the origin never gets the exit's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_silently_drops_flows_loses_the_origin_s_route() {
    use proxy::node::TapAction;
    a_hostile_relay_loses_the_origin_s_route(std::sync::Arc::new(|_, _| TapAction::Send(Vec::new()))).await;
}

/// The relay answers for the exit: a refusal in the clear naming the exit, which only the
/// exit's seal could make true. It still counts against the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_forges_the_exit_s_refusal_loses_the_origin_s_route() {
    use proxy::core::wire::{self, RefuseReason, Reply};
    use proxy::node::{TapAction, TapDirection};
    let forged = bytes::Bytes::from(wire::encode_reply(&Reply::Refused {
        reason: RefuseReason::Policy,
        hop: "d".into(),
        detail: "exit policy does not allow it".into(),
    }));
    let tap: proxy::node::RelayTap = std::sync::Arc::new(move |direction, _| match direction {
        TapDirection::Backward => TapAction::Send(vec![forged.clone()]),
        TapDirection::Forward => TapAction::Send(Vec::new()),
    });
    a_hostile_relay_loses_the_origin_s_route(tap).await;
}

/// `mesh.relay: false` reaches the scheduler: no path goes through that node, though its
/// links are measured and faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_relay_off_is_never_on_a_computed_path() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let settings = "recompute_interval: \"100ms\"\n";
    let (scheduler, sched_addr) = scheduler_for(&mesh, settings).await;
    let (a, b, _d, _to_b, _to_d) = fast_relay_mesh(&mesh, &sched_addr, &["relay: false"], &[]).await;
    let view = scheduler.view();
    // Every link of a-b-d counted, then two recomputes more.
    let counted = |x: &str, y: &str| {
        view.links().iter().any(|l| (l.a.as_str(), l.b.as_str()) == (x, y) && l.state == LinkState::Counted)
    };
    assert!(
        eventually(Duration::from_secs(15), || counted("a", "b") && counted("b", "d") && counted("a", "d"))
            .await,
        "links: {:?}",
        view.links()
    );
    let after = view.recompute_stats().recomputes + 2;
    assert!(eventually(Duration::from_secs(5), || view.recompute_stats().recomputes >= after).await);
    assert_eq!(view.nodes().iter().find(|n| n.id == "b").map(|n| n.relay), Some(false));
    let set = a.instructions().expect("instructions");
    let paths: Vec<Vec<String>> = set.routes[0].paths.iter().map(|p| p.relays.clone()).collect();
    assert_eq!(paths, vec![Vec::<String>::new()], "only the direct path, no alternative through b");
    let _direct = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    assert_eq!(b.stats().flows_relayed, 0);
}

/// The scheduler learns which links run over TLS on TCP, and measures and counts them like
/// any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_over_tcp_is_counted_and_shown_as_tcp() {
    let mesh = Mesh::new(&["a", "d"]);
    let (scheduler, sched_addr) = scheduler_for(&mesh, "recompute_interval: \"100ms\"\n").await;
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new())];
    d.scheduler = Some(sched_addr.clone());
    d.transport = Some(Transport::Tcp);
    let d = d.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("d", link_addr(&d, Transport::Tcp))];
    a.scheduler = Some(sched_addr);
    a.transport = Some(Transport::Tcp);
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("d", Duration::from_secs(10)).await);
    let view = scheduler.view();
    let over_tcp = || {
        view.links().iter().any(|l| {
            (l.a.as_str(), l.b.as_str()) == ("a", "d")
                && l.state == LinkState::Counted
                && l.transport == "tcp"
        })
    };
    assert!(eventually(Duration::from_secs(15), over_tcp).await, "links: {:?}", view.links());
}
