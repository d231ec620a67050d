//! Routing by the scheduler's instructions as cached on disk: a node started while no
//! scheduler is reachable routes by the instructions of its last run.

use crate::common;

use std::time::Duration;

use common::*;
use proxy::core::control::{InstructedPath, InstructionSet, RouteInstruction};
use proxy::node::instruction_store;

/// a -> d directly by config; the cached instructions say "through b".
async fn start(mesh: &Mesh, echo: std::net::SocketAddr) -> (proxy::Node, proxy::Node, proxy::Node) {
    start_with(mesh, echo, &[]).await
}

/// As [`start`], with `a_limits` in a's `limits`.
async fn start_with(
    mesh: &Mesh,
    echo: std::net::SocketAddr,
    a_limits: &[&str],
) -> (proxy::Node, proxy::Node, proxy::Node) {
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new()), ("b", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    let d = d.start(mesh).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", d.mesh_addr().expect("addr").to_string())];
    let b = b.start(mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![
        ("b", b.mesh_addr().expect("addr").to_string()),
        ("d", d.mesh_addr().expect("addr").to_string()),
    ];
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.limits = a_limits.iter().map(|l| l.to_string()).collect();
    let a = a.start(mesh).await;
    for (n, p) in [(&a, "b"), (&a, "d"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await);
    }
    (a, b, d)
}

fn via_b(version: u64) -> InstructionSet {
    InstructionSet {
        version,
        issued_at_unix: 0,
        ttl_secs: 1,
        routes: vec![RouteInstruction {
            route: "in".into(),
            exit: "d".into(),
            paths: vec![InstructedPath { relays: vec!["b".into()], weight: 1.0 }],
        }],
        nodes: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_a_scheduler_routes_by_its_cached_instructions() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let echo = echo_server().await;
    // Stale (issued at the epoch, 1 s TTL) but nothing newer exists: still used.
    instruction_store::save(&mesh.path("data-a"), &via_b(4)).expect("save");
    let (a, b, _d) = start(&mesh, echo).await;
    let _flow = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    assert_eq!(b.stats().flows_relayed, 1, "the flow must take the instructed path through b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_instructions_or_with_a_corrupt_file_the_static_route_applies() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let echo = echo_server().await;
    std::fs::create_dir_all(mesh.path("data-a")).expect("mkdir");
    std::fs::write(mesh.path("data-a").join("instructions.bin"), b"PXSC\x01\x00\x00\x00\x05torn")
        .expect("write");
    let (a, b, d) = start(&mesh, echo).await;
    let _flow = open_echoed_flow(listener_addr(&a, "in"), 2).await;
    assert_eq!((b.stats().flows_relayed, d.stats().flows_exited), (0, 1), "direct, as configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_hop_of_the_instructed_path_is_skipped_at_once() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let echo = echo_server().await;
    instruction_store::save(&mesh.path("data-a"), &via_b(1)).expect("save");
    // Waiting for the dead hop would take the connect timeout: a long one tells skipping
    // from waiting apart by a wide margin, whatever the machine's load.
    let (a, b, d) = start_with(&mesh, echo, &["connect_timeout: \"30s\""]).await;
    b.abort();
    assert!(eventually(Duration::from_secs(10), || !a.peers()[0].connected).await);
    // No scheduler, no wait: the next candidate (direct to d) is used for the next flow.
    let started = std::time::Instant::now();
    let _flow = open_echoed_flow(listener_addr(&a, "in"), 3).await;
    assert!(started.elapsed() < Duration::from_secs(10), "waited for the dead hop: {:?}", started.elapsed());
    assert_eq!(d.stats().flows_exited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_first_relay_is_routed_around_within_a_second() {
    use proxy::emulator::{LinkEmulator, LinkProfile};
    let mesh = Mesh::new(&["a", "b", "d"]);
    let echo = echo_server().await;
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new()), ("b", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    d.keepalive = "200ms";
    let d = d.start(&mesh).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", d.mesh_addr().expect("addr").to_string())];
    b.keepalive = "200ms";
    let b = b.start(&mesh).await;
    let cut = LinkEmulator::start(b.mesh_addr().expect("addr"), 3).await.expect("emulator");
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", cut.addr().to_string()), ("d", d.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.via = vec!["b"];
    a.keepalive = "200ms";
    a.link_idle = "30s";
    let a = a.start(&mesh).await;
    for (n, p) in [(&a, "b"), (&a, "d"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await);
    }
    let _through_b = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    assert_eq!(b.stats().flows_relayed, 1);
    cut.set_both(LinkProfile::blackholed());
    let started = std::time::Instant::now();
    let mut succeeded = None;
    while started.elapsed() < Duration::from_secs(10) {
        let attempt = tokio::time::timeout(Duration::from_millis(300), async {
            let mut c = tokio::net::TcpStream::connect(listener_addr(&a, "in")).await.ok()?;
            tokio::io::AsyncWriteExt::write_all(&mut c, b"x").await.ok()?;
            let mut one = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut c, &mut one).await.ok()
        });
        if let Ok(Some(_)) = attempt.await {
            succeeded = Some(started.elapsed());
            break;
        }
    }
    let took = succeeded.expect("no flow got through after the blackhole");
    // Detection takes two keepalive intervals (400 ms) plus sampling; well inside 1.5 s
    // even on a busy machine. The link's idle timeout (30 s) plays no part.
    assert!(took < Duration::from_millis(1500), "first new flow after {took:?}");
    assert_eq!(d.stats().flows_exited, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_revocations_file_stops_the_node_from_starting_and_names_the_file() {
    let mesh = Mesh::new(&["a"]);
    let spec = NodeSpec::new("a");
    let config_path = mesh.path("a.yaml");
    std::fs::write(&config_path, spec.yaml()).expect("write config");
    let revocations = mesh.path("data-a/revocations.bin");
    std::fs::create_dir_all(mesh.path("data-a")).expect("data dir");
    std::fs::write(&revocations, b"PXSC\x01 not a revocation list").expect("write");

    let config = proxy::config::load(&config_path).expect("config");
    let error = match proxy::Node::start(config.clone()).await {
        Ok(_) => panic!("a node started without its revocations"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains(&revocations.display().to_string()), "{error}");
    assert!(error.contains("restore the file") && error.contains("delete it"), "{error}");

    // The operator's way on: without the file the node starts (with no revocations until
    // its scheduler sends them).
    std::fs::remove_file(&revocations).expect("remove");
    let node = proxy::Node::start(config).await.expect("starts without the file");
    drop(node);
}
