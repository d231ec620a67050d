//! UDP listeners through the mesh: each client address one association, carried as one
//! flow of framed datagrams. Echo through two and three nodes, the exit policy, the
//! association cap, the datagram limit, the idle timeout, and real programs: `dig`
//! against `dnsmasq`, and `iperf3 -u`. Every socket is on loopback.

use crate::common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::process::{KillOnDrop, free_port};
use common::*;
use proxy::Node;
use proxy::core::wire::RefuseReason;
use tokio::net::UdpSocket;

/// How long one datagram's echo may take: generous, loopback answers in microseconds.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// A UDP echo server on loopback; returns its address and the count of datagrams it got.
async fn udp_echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            counted.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, seen)
}

/// A client socket on `ip`, connected to `entry`.
async fn client(ip: [u8; 4], entry: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).await.expect("bind client");
    socket.connect(entry).await.expect("connect");
    socket
}

/// Sends `payload` and expects exactly it back, as one datagram.
async fn echo(socket: &UdpSocket, payload: &[u8]) {
    socket.send(payload).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let n =
        tokio::time::timeout(ECHO_WAIT, socket.recv(&mut buf)).await.expect("echo in time").expect("recv");
    assert_eq!(n, payload.len(), "a datagram came back with another length");
    assert_eq!(&buf[..n], payload, "a datagram came back changed");
}

/// A payload of `len` bytes that says which client and which datagram it is.
fn payload(client: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    Pattern::new(u64::from(client) << 32 | u64::from(seq)).fill(&mut p);
    p
}

/// Exit `b` (allowing `allow`) and origin `a` whose UDP listener `in` goes to `target`
/// through `b`.
async fn udp_pair(
    mesh: &Mesh,
    target: SocketAddr,
    allow: &str,
    a_limits: &[&str],
    b_limits: &[&str],
) -> (Node, Node) {
    udp_pair_over(mesh, target, allow, a_limits, b_limits, None).await
}

/// [`udp_pair`] with the link over `transport` (`None`: the default).
async fn udp_pair_over(
    mesh: &Mesh,
    target: SocketAddr,
    allow: &str,
    a_limits: &[&str],
    b_limits: &[&str],
    transport: Option<Transport>,
) -> (Node, Node) {
    let routes = |a: &mut NodeSpec| a.udp_routes = vec![("in", target.to_string(), Some("b"))];
    linked_pair(mesh, allow, (a_limits, b_limits), transport, routes).await
}

const SIZES: [usize; 7] = [0, 1, 64, 512, 1200, 1472, 8000];

// UDP associations ride flow streams, so they work over both link transports.
over_both_transports!(datagrams_of_every_size_echo_through_two_nodes_whole_and_to_the_right_client);

async fn datagrams_of_every_size_echo_through_two_nodes_whole_and_to_the_right_client(transport: Transport) {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, seen) = udp_echo_server().await;
    let (a, b) = udp_pair_over(&mesh, server, "127.0.0.1/32", &[], &[], Some(transport)).await;
    let entry = listener_addr(&a, "in");
    // Two clients at once, each checking every reply is its own, byte for byte.
    let run = |id: u8| async move {
        let socket = client([127, 0, 0, 1], entry).await;
        for round in 0..3u32 {
            for (i, len) in SIZES.iter().enumerate() {
                echo(&socket, &payload(id, round * 100 + i as u32, *len)).await;
            }
        }
    };
    tokio::join!(run(1), run(2));
    let per_client = 3 * SIZES.len() as u64;
    assert_eq!(seen.load(Ordering::Relaxed), 2 * per_client, "the server saw each datagram once");
    let (sa, sb) = (a.stats().udp, b.stats().udp);
    assert_eq!(sa.associations_total, 2, "one association per client address: {sa:?}");
    assert_eq!(sb.associations_total, 2, "{sb:?}");
    assert_eq!((sa.datagrams_in, sa.datagrams_out), (2 * per_client, 2 * per_client), "{sa:?}");
    assert_eq!((sb.datagrams_in, sb.datagrams_out), (2 * per_client, 2 * per_client), "{sb:?}");
    let bytes: u64 = 2 * 3 * SIZES.iter().sum::<usize>() as u64;
    assert_eq!((sa.bytes_in, sa.bytes_out), (bytes, bytes));
    assert!(sa.dropped.iter().all(|(_, n)| *n == 0), "{sa:?}");
    assert_eq!(a.stats().flows_originated, 2);
    assert_eq!(a.stats().flows_sealed, 2, "associations are sealed end to end by default");
    assert_eq!(b.stats().flows_exited, 2);
    // The admin API and the metrics say the same.
    let metrics = a.metrics();
    assert!(metrics.contains("proxy_udp_associations_total 2"), "{metrics}");
    assert!(metrics.contains(&format!("proxy_udp_datagrams_total{{direction=\"in\"}} {}", 2 * per_client)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_cross_a_relay_whole() {
    let mesh = Mesh::new(&["a", "r", "b"]);
    let (server, _) = udp_echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("r", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    let b = b.start(&mesh).await;
    let mut r = NodeSpec::new("r");
    r.peers = vec![("a", String::new()), ("b", b.mesh_addr().expect("addr").to_string())];
    let r = r.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("r", r.mesh_addr().expect("addr").to_string())];
    a.udp_routes = vec![("in", server.to_string(), Some("b"))];
    a.via = vec!["r"];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("r", Duration::from_secs(10)).await, "a -> r");
    assert!(r.wait_for_link("b", Duration::from_secs(10)).await, "r -> b");
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    for (i, len) in SIZES.iter().enumerate() {
        echo(&socket, &payload(7, i as u32, *len)).await;
    }
    assert_eq!(r.stats().flows_relayed, 1, "the association crossed the relay as one flow");
    assert_eq!(b.stats().udp.datagrams_out, SIZES.len() as u64);
    assert_eq!(r.stats().udp.associations_total, 0, "a relay splices bytes; it holds no UDP socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_policy_refuses_a_udp_target_it_does_not_allow_and_nothing_reaches_it() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, seen) = udp_echo_server().await;
    // Another port on loopback is allowed; the server's is not.
    let other = if server.port() == 1 { 2 } else { 1 };
    let (a, b) = udp_pair(&mesh, server, &format!("127.0.0.1/32:{other}"), &[], &[]).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    socket.send(b"let me through").await.expect("send");
    let refused =
        eventually(Duration::from_secs(10), || a.stats().refused_at_origin(RefuseReason::Policy) == 1).await;
    assert!(refused, "{:?}", a.stats());
    assert_eq!(b.stats().refused_inbound(RefuseReason::Policy), 1);
    // The datagram that opened the association is dropped as refused.
    let dropped = eventually(Duration::from_secs(10), || a.stats().udp.dropped("refused") >= 1).await;
    assert!(dropped, "{:?}", a.stats().udp);
    assert_eq!(seen.load(Ordering::Relaxed), 0, "a refused datagram reached the target");
    assert_eq!(b.stats().udp.associations_total, 0);
    let mut buf = [0u8; 16];
    assert!(socket.try_recv(&mut buf).is_err(), "no reply to a refused datagram");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_addresses_hits_the_association_cap_and_is_counted() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, _) = udp_echo_server().await;
    const CAP: usize = 4;
    const CLIENTS: u8 = 24;
    let cap = format!("max_udp_associations: {CAP}");
    let (a, _b) = udp_pair(&mesh, server, "127.0.0.1/32", &[&cap], &[]).await;
    let entry = listener_addr(&a, "in");
    // The first CAP clients get their associations and their echoes.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(client([127, 0, 0, 2 + i], entry).await);
    }
    for (i, c) in clients.iter().take(CAP).enumerate() {
        echo(c, &payload(i as u8, 0, 100)).await;
    }
    // The rest are new addresses past the cap: dropped, counted, never carried.
    for c in &clients[CAP..] {
        c.send(b"flood").await.expect("send");
    }
    let past_cap = u64::from(CLIENTS) - CAP as u64;
    let counted =
        eventually(Duration::from_secs(10), || a.stats().udp.dropped("association_cap") == past_cap).await;
    assert!(counted, "{:?}", a.stats().udp);
    assert_eq!(a.stats().udp.associations_open, CAP as u64);
    assert_eq!(a.stats().flows_originated, CAP as u64);
    let metrics = a.metrics();
    let line = format!("proxy_udp_dropped_total{{reason=\"association_cap\"}} {past_cap}");
    assert!(metrics.contains(&line), "{metrics}");
    // Known clients are not affected by the cap.
    echo(&clients[0], &payload(0, 1, 100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_over_max_datagram_is_dropped_and_counted_and_the_association_goes_on() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, seen) = udp_echo_server().await;
    let (a, _b) = udp_pair(&mesh, server, "127.0.0.1/32", &["max_datagram: 1000"], &[]).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    echo(&socket, &payload(1, 0, 1000)).await;
    socket.send(&payload(1, 1, 1001)).await.expect("send");
    let counted = eventually(Duration::from_secs(10), || a.stats().udp.dropped("too_large") == 1).await;
    assert!(counted, "{:?}", a.stats().udp);
    echo(&socket, &payload(1, 2, 1000)).await;
    assert_eq!(seen.load(Ordering::Relaxed), 2, "the large datagram never reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_association_closes_at_both_ends_and_the_client_gets_a_new_one() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, _) = udp_echo_server().await;
    let idle = ["udp_idle_timeout: \"300ms\""];
    let (a, b) = udp_pair(&mesh, server, "127.0.0.1/32", &idle, &idle).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    echo(&socket, b"first").await;
    let closed = eventually(Duration::from_secs(10), || {
        a.stats().udp.associations_open == 0 && b.stats().udp.associations_open == 0
    })
    .await;
    assert!(closed, "{:?} {:?}", a.stats().udp, b.stats().udp);
    assert_eq!(a.stats().flows_current, 0);
    // An idle end is how UDP associations end: not a reset.
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0);
    echo(&socket, b"second").await;
    assert_eq!(a.stats().udp.associations_total, 2);
}

/// Whether `program` is on the PATH; outside CI a missing one skips its test loudly, in
/// CI (where `.ci/run` installs it) it fails the test.
fn have(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var("CI").is_err(), "`{program}` is missing in CI: .ci/run installs {package}");
        eprintln!("SKIPPED: `{program}` is not installed (apt-get install {package}); this test did not run");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_through_the_mesh_gets_dnsmasqs_answer() {
    if !have("dnsmasq", "dnsmasq-base") || !have("dig", "bind9-dnsutils") {
        return;
    }
    let port = free_port(true);
    let _dns = KillOnDrop(
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                &format!("--port={port}"),
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--address=/example.test/192.0.2.7",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    );
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let dig = |port: u16| {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "example.test",
                "A",
                "+short",
                "+time=2",
                "+tries=2",
            ])
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // dnsmasq answers directly first (bounded wait for it to start).
    let mut direct = String::new();
    for _ in 0..50 {
        direct = tokio::task::spawn_blocking(move || dig(port)).await.expect("dig");
        if direct == "192.0.2.7" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(direct, "192.0.2.7", "dnsmasq did not answer on 127.0.0.1:{port}");
    let mesh = Mesh::new(&["a", "b"]);
    let (a, b) = udp_pair(&mesh, server, "127.0.0.1/32", &[], &[]).await;
    let entry = listener_addr(&a, "in").port();
    let answer = tokio::task::spawn_blocking(move || dig(entry)).await.expect("dig");
    assert_eq!(answer, "192.0.2.7", "dig through the mesh");
    assert!(b.stats().udp.datagrams_in >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iperf3_udp_through_the_mesh_completes_with_little_loss() {
    if !have("iperf3", "iperf3") {
        return;
    }
    // iperf3 runs its control connection over TCP and its test over UDP, both to the same
    // port: node a listens on one port for both, each routed to the server.
    let server_port = free_port(false);
    let _server = KillOnDrop(
        Command::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &server_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server"),
    );
    let target = format!("127.0.0.1:{server_port}");
    let mesh = Mesh::new(&["a", "b"]);
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    let b = b.start(&mesh).await;
    let entry = loop {
        let port = free_port(false);
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("ctl", target.clone(), Some("b"))];
    a.udp_routes = vec![("data", target, Some("b"))];
    a.listen_port = entry;
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    // Wait for the server to listen (bounded).
    let mut up = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", server_port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "iperf3 server did not listen");
    // (The probe's connection has no iperf3 cookie: the server drops it and keeps
    // listening, which is why it runs without `-1` and is killed at the end.)
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "60",
                "iperf3",
                "-u",
                "-c",
                "127.0.0.1",
                "-p",
                &entry.to_string(),
                "-t",
                "2",
                "-b",
                "20M",
                "-l",
                "1200",
                "-J",
            ])
            .output()
            .expect("run iperf3 client")
    });
    let out = run.await.expect("iperf3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&text).expect("iperf3 JSON");
    let sum = &report["end"]["sum"];
    let (lost, packets, percent) =
        (sum["lost_packets"].as_u64(), sum["packets"].as_u64(), sum["lost_percent"].as_f64());
    println!("iperf3 -u through the mesh: {packets:?} datagrams, {lost:?} lost ({percent:?} %)");
    let percent = percent.expect("lost_percent in the report");
    assert!(packets.unwrap_or(0) > 0, "no datagrams counted: {text}");
    assert!(percent < 20.0, "iperf3 reports {percent} % loss through the mesh");
    assert!(a.stats().udp.datagrams_in > 0 && b.stats().udp.datagrams_out > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_udp_listener_and_its_route_which_then_carry_datagrams() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, _) = udp_echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    let b = b.start(&mesh).await;
    let mut spec = NodeSpec::new("a");
    spec.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    spec.udp_routes = vec![("in", server.to_string(), Some("b"))];
    let a = spec.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    spec.udp_routes.push(("more", server.to_string(), Some("b")));
    let path = mesh.path("a-reloaded.yaml");
    std::fs::write(&path, spec.yaml()).expect("write config");
    let report = a.reload_file(&path).expect("reload");
    assert!(report.summary.contains("listeners added [more]"), "{}", report.summary);
    let listeners = a.listeners();
    assert_eq!(listeners.len(), 2);
    assert!(listeners.iter().all(|l| l.protocol == proxy::config::ListenerProtocol::Udp));
    let socket = client([127, 0, 0, 1], listener_addr(&a, "more")).await;
    echo(&socket, b"through the new listener").await;
    let first = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    echo(&first, b"and the old one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_ends_its_udp_associations_without_waiting_for_the_deadline() {
    let mesh = Mesh::new(&["a", "b"]);
    let (server, _) = udp_echo_server().await;
    let (a, b) = udp_pair(&mesh, server, "127.0.0.1/32", &["drain_timeout: \"30s\""], &[]).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    echo(&socket, b"open").await;
    let report = a.shutdown().await;
    assert_eq!(report.open_at_start, 1, "the association is a flow");
    assert_eq!(report.reset_at_deadline, 0, "UDP has no close to wait for: drained at once");
    let closed = eventually(Duration::from_secs(10), || b.stats().udp.associations_open == 0).await;
    assert!(closed, "{:?}", b.stats().udp);
    assert_eq!(b.stats().flows_reset, 0, "the exit took the origin's end as the association's end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_route_that_exits_at_its_own_node_echoes_whole_datagrams() {
    let mesh = Mesh::new(&["a"]);
    let (server, seen) = udp_echo_server().await;
    let mut a = NodeSpec::new("a");
    a.udp_routes = vec![("in", server.to_string(), None)];
    let a = a.start(&mesh).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    for (i, len) in SIZES.iter().enumerate() {
        echo(&socket, &payload(3, i as u32, *len)).await;
    }
    assert_eq!(seen.load(Ordering::Relaxed), SIZES.len() as u64);
    let s = a.stats();
    assert_eq!((s.flows_local, s.udp.associations_total), (1, 1));
    assert_eq!((s.udp.datagrams_in, s.udp.datagrams_out), (2 * SIZES.len() as u64, 2 * SIZES.len() as u64));
}

/// Set in the child that runs [`inner_a_datagram_too_large_for_the_exit_route`] inside a
/// network namespace.
const IN_NETNS: &str = "PROXY_TEST_IN_NETNS";

#[test]
fn a_datagram_too_large_for_the_route_to_the_target_is_dropped_and_counted_not_fragmented() {
    // The exit's route must have a smaller MTU than the datagram: a fresh network
    // namespace whose loopback has a 1500-byte MTU, with this test binary run inside it.
    if !have("unshare", "util-linux") || !have("ip", "iproute2") {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args([
            "--exact",
            "udp_flows::inner_a_datagram_too_large_for_the_exit_route",
            "--ignored",
            "--nocapture",
        ])
        .env(IN_NETNS, "1")
        .output()
        .expect("run unshare");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && text.contains("unshare failed") {
        assert!(std::env::var("CI").is_err(), "no network namespaces in CI: {text}");
        eprintln!("SKIPPED: cannot make a network namespace here (unshare -n): {text}");
        return;
    }
    assert!(out.status.success(), "the test in the namespace failed:\n{text}");
    assert!(text.contains("1 passed"), "the test in the namespace did not run:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside a network namespace, started by the test above"]
async fn inner_a_datagram_too_large_for_the_exit_route() {
    if std::env::var(IN_NETNS).is_err() {
        // It changes loopback's MTU: only ever inside the namespace its outer test made.
        eprintln!("not run: this test runs only inside the network namespace its outer test makes");
        return;
    }
    let up = Command::new("ip").args(["link", "set", "lo", "up", "mtu", "1500"]).status().expect("ip");
    assert!(up.success(), "cannot set up loopback in the namespace");
    let mesh = Mesh::new(&["a", "b"]);
    let (server, seen) = udp_echo_server().await;
    let (a, b) = udp_pair(&mesh, server, "127.0.0.1/32", &[], &[]).await;
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    // 1472 bytes fill a 1500-byte MTU exactly (IPv4 and UDP headers): carried.
    echo(&socket, &payload(1, 0, 1472)).await;
    // 2000 bytes reach node a (the client's own stack may fragment on loopback) and cross
    // the mesh, but the exit sends with the don't-fragment flag: dropped and counted.
    socket.send(&payload(1, 1, 2000)).await.expect("send");
    let counted = eventually(Duration::from_secs(10), || b.stats().udp.dropped("too_large") == 1).await;
    assert!(counted, "{:?}", b.stats().udp);
    assert_eq!(seen.load(Ordering::Relaxed), 1, "the large datagram reached the target");
    echo(&socket, &payload(1, 2, 1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealed_flows_carry_datagrams_whole_too() {
    // `mesh.e2e: off`: frames go on the stream as they are, not inside sealed records.
    let mesh = Mesh::new(&["a", "b"]);
    let (server, _) = udp_echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.mesh_extra = vec!["e2e: \"off\"".into()];
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    a.udp_routes = vec![("in", server.to_string(), Some("b"))];
    a.mesh_extra = vec!["e2e: \"off\"".into()];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    let socket = client([127, 0, 0, 1], listener_addr(&a, "in")).await;
    for (i, len) in SIZES.iter().enumerate() {
        echo(&socket, &payload(9, i as u32, *len)).await;
    }
    assert_eq!(a.stats().flows_sealed, 0, "the flow was not sealed");
    assert_eq!(b.stats().udp.datagrams_out, SIZES.len() as u64);
}
