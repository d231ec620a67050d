//! Attacks from a peer that holds a valid certificate (or none), each with the outcome it
//! must have: targets the policy must not reach, stalled headers, a peer that never
//! reads, hostile strings in headers, and a flood of handshakes with foreign certificates.
//! Honest flows beside them must keep working.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dns::TestDns;
use common::*;
use proxy::core::wire::{self, Decoded, RefuseReason, Reply};

/// Opens a stream with `bytes` as its start and returns what came back: the reply, or
/// `None` when the stream was reset or closed without one.
async fn send_header(conn: &quinn::Connection, bytes: &[u8]) -> Option<Reply> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    send.write_all(bytes).await.ok()?;
    let buf = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4096))
        .await
        .expect("answered")
        .ok()?;
    match wire::decode_reply(&buf) {
        Ok(Decoded::Complete(r, _)) => Some(r),
        _ => None,
    }
}

/// An exit `b` with `allow` as its policy and `limits`, a normal origin `a` with route
/// `in` to `target` through it, and a raw QUIC link to `b` from a peer `x` (a valid
/// certificate: the attacker is a member of the mesh).
async fn exit_under_attack(
    allow: &[String],
    limits: &[&str],
    target: SocketAddr,
) -> (Mesh, proxy::Node, proxy::Node, quinn::Endpoint, quinn::Connection) {
    exit_under_attack_tuned(allow, limits, target, |_| {}).await
}

/// As [`exit_under_attack`], with `tune` applied to b's spec last, and a's route to a
/// target given as text (a name).
async fn exit_under_attack_tuned(
    allow: &[String],
    limits: &[&str],
    target: impl ToString,
    tune: impl FnOnce(&mut NodeSpec),
) -> (Mesh, proxy::Node, proxy::Node, quinn::Endpoint, quinn::Connection) {
    let mesh = Mesh::new(&["a", "b", "x"]);
    let mut b = NodeSpec::new("b");
    // The attacker speaks the unsealed (version 1) header by hand: b accepts it.
    b.mesh_extra = vec!["e2e: preferred".into()];
    b.peers = vec![("a", String::new()), ("x", String::new())];
    b.allow = allow.to_vec();
    b.limits = limits.iter().map(|s| s.to_string()).collect();
    tune(&mut b);
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", target.to_string(), Some("b"))];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
    let ep = raw_client(&mesh.path("x.crt"), &mesh.path("x.key"), &mesh.path("ca.crt"));
    let conn = ep.connect(b.mesh_addr().expect("addr"), "b").expect("connect").await.expect("handshake");
    (mesh, a, b, ep, conn)
}

fn refused_by_policy(reply: Option<Reply>) -> bool {
    matches!(reply, Some(Reply::Refused { reason: RefuseReason::Policy, .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_policy_are_refused_even_under_broad_rules() {
    let echo = echo_server().await;
    let other = echo.port().wrapping_add(1).max(1);
    // Broad rules, and one narrow rule for the honest service.
    let allow = ["0.0.0.0/0:*", "::/0", "localhost:*"].map(String::from).to_vec();
    let allow = [allow, vec![format!("127.0.0.1/32:{}", echo.port())]].concat();
    let (_mesh, a, _b, _ep, conn) = exit_under_attack(&allow, &[], echo).await;
    for target in [
        format!("127.0.0.1:{other}"),
        format!("[::ffff:127.0.0.1]:{other}"),
        format!("2130706433:{other}"),
        format!("0.0.0.0:{}", echo.port()),
        "169.254.169.254:80".to_string(),
        format!("localhost:{other}"),
        "127.0.0.1:0".to_string(),
        format!("[::1]:{}", echo.port()),
    ] {
        let reply = send_header(&conn, &exit_header("x", &target)).await;
        assert!(
            refused_by_policy(reply.clone()) || matches!(reply, Some(Reply::Refused { .. })),
            "{target}: {reply:?}"
        );
        assert!(!matches!(reply, Some(Reply::Opened)), "{target} was dialed");
    }
    many_echo_flows(listener_addr(&a, "in"), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_cannot_reach_the_exit_nodes_own_admin_or_mesh_port() {
    let echo = echo_server().await;
    // Even a policy that allows all of loopback.
    let (_mesh, a, b, _ep, conn) = exit_under_attack(&["127.0.0.0/8".to_string()], &[], echo).await;
    let admin = b.admin_addr();
    let mesh = b.mesh_addr().expect("addr");
    for target in [admin.to_string(), format!("localhost:{}", admin.port()), mesh.to_string()] {
        let reply = send_header(&conn, &exit_header("x", &target)).await;
        assert!(refused_by_policy(reply.clone()), "{target}: {reply:?}");
    }
    many_echo_flows(listener_addr(&a, "in"), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_headers_are_reset_by_the_deadline_while_honest_flows_go_on() {
    let echo = echo_server().await;
    let limits = ["header_timeout: \"1s\""];
    let (_mesh, a, b, _ep, conn) = exit_under_attack(&["127.0.0.1/32".to_string()], &limits, echo).await;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..1000 {
        let (mut send, recv) = conn.open_bi().await.expect("open");
        send.write_all(&wire::MAGIC[..3]).await.expect("three bytes");
        stalled.push((send, recv));
    }
    // 100 honest flows from another peer while the stalled streams wait.
    many_echo_flows(listener_addr(&a, "in"), 100).await;
    let mut ended_unopened = 0;
    for (_send, mut recv) in stalled {
        let ended = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4096))
            .await
            .expect("ended in time");
        // Reset, or refused with a reply: never opened.
        let opened =
            ended.is_ok_and(|b| matches!(wire::decode_reply(&b), Ok(Decoded::Complete(Reply::Opened, _))));
        if !opened {
            ended_unopened += 1;
        }
    }
    assert_eq!(ended_unopened, 1000, "every stalled stream ended, none opened");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(settled(0, || b.stats().flows_current).await, 0, "nothing is left open at the exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_streams_up_to_the_limit_and_never_reads_does_not_hurt_others() {
    let echo = echo_server().await;
    let limits = ["max_streams_per_peer: 64", "idle_timeout: \"30s\""];
    let (_mesh, a, b, _ep, conn) = exit_under_attack(&["127.0.0.1/32".to_string()], &limits, echo).await;
    // Every stream the limit allows, each carrying more than its echo can hand back
    // before the hog's unread receive window fills.
    let mut hogs = Vec::new();
    let chunk = vec![0x5au8; 64 * 1024];
    for _ in 0..64 {
        let opened = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await;
        let Ok(Ok((mut send, recv))) = opened else { break };
        let _ = tokio::time::timeout(Duration::from_millis(50), async {
            send.write_all(&exit_header("x", &echo.to_string())).await.ok()?;
            for _ in 0..16 {
                send.write_all(&chunk).await.ok()?;
            }
            Some(())
        })
        .await;
        hogs.push((send, recv));
    }
    assert_eq!(hogs.len(), 64, "the hog opened every stream the limit allows");
    let held = eventually(Duration::from_secs(10), || b.stats().flows_current >= 60).await;
    assert!(held, "the hog holds its streams open ({})", b.stats().flows_current);
    // The honest peer's flows are not held up by the hog's.
    many_echo_flows(listener_addr(&a, "in"), 50).await;
    drop(hogs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_in_headers_are_refused() {
    let echo = echo_server().await;
    let (_mesh, a, _b, _ep, conn) = exit_under_attack(&["127.0.0.1/32".to_string()], &[], echo).await;
    let long = "x".repeat(10 * 1024);
    for (origin, target) in [
        ("x\nb", echo.to_string()),
        ("x\x1b[31m", echo.to_string()),
        ("x", "evil\n.example:80".to_string()),
        ("x", "\x1b]0;pwned\x07:80".to_string()),
        ("x", format!("{long}:80")),
        (long.as_str(), echo.to_string()),
    ] {
        let reply = send_header(&conn, &exit_header(origin, &target)).await;
        assert!(!matches!(reply, Some(Reply::Opened)), "{:?}: {reply:?}", &target[..target.len().min(40)]);
    }
    many_echo_flows(listener_addr(&a, "in"), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshakes_with_foreign_certificates_is_refused() {
    let echo = echo_server().await;
    let (_mesh, a, b, _ep, _conn) = exit_under_attack(&["127.0.0.1/32".to_string()], &[], echo).await;
    let foreign = Mesh::new(&["a"]);
    let ep = raw_client(&foreign.path("a.crt"), &foreign.path("a.key"), &mesh_ca_of(&foreign));
    let target = b.mesh_addr().expect("addr");
    let mut attempts = Vec::new();
    for _ in 0..200 {
        let connecting = ep.connect(target, "b").expect("connect");
        attempts.push(tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), connecting).await {
                Ok(Ok(conn)) => {
                    // The client may finish first (TLS 1.3): the refusal is the close.
                    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
                    reason.is_ok()
                }
                Ok(Err(_)) => true,
                Err(_) => false,
            }
        }));
    }
    for attempt in attempts {
        assert!(attempt.await.expect("join"), "every foreign handshake is refused in time");
    }
    assert!(b.peers().iter().all(|p| p.id == "a" || p.id == "x"), "no foreign peer was admitted");
    assert!(b.peers().iter().any(|p| p.id == "a" && p.connected), "the real peer keeps its link");
    many_echo_flows(listener_addr(&a, "in"), 10).await;
}

/// The CA of another mesh, so its certificates do not chain to ours.
fn mesh_ca_of(foreign: &Mesh) -> std::path::PathBuf {
    foreign.path("ca.crt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_deadline_runs_from_a_streams_first_byte_not_from_its_implicit_opening() {
    let echo = echo_server().await;
    let limits = ["header_timeout: \"700ms\""];
    let (_mesh, _a, _b, _ep, conn) = exit_under_attack(&["127.0.0.1/32".to_string()], &limits, echo).await;
    // The first stream stays silent (its header "queued" behind other data); the second one
    // sends at once, which opens the first at the exit too, implicitly.
    let (mut late_send, mut late_recv) = conn.open_bi().await.expect("open");
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    send.write_all(&exit_header("x", &echo.to_string())).await.expect("header");
    send.write_all(b"ping").await.expect("data");
    let mut reply_and_echo = vec![0u8; wire::encode_reply(&Reply::Opened).len() + 4];
    tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut reply_and_echo))
        .await
        .expect("in time")
        .expect("read");
    // Well past the header deadline since the exit saw the silent stream, its header comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    late_send.write_all(&exit_header("x", &echo.to_string())).await.expect("header");
    late_send.write_all(b"late").await.expect("data");
    let mut got = vec![0u8; reply_and_echo.len()];
    tokio::time::timeout(Duration::from_secs(5), late_recv.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    let reply_len = got.len() - 4;
    assert!(matches!(wire::decode_reply(&got[..reply_len]), Ok(Decoded::Complete(Reply::Opened, _))));
    assert_eq!(&got[reply_len..], b"late", "the late stream was opened and echoed");
}

/// A member floods the exit with target names whose DNS never answers. Its lookups are
/// capped per origin and end at the deadline, failed names are answered from memory, and
/// another origin's flows to a name keep resolving and carrying bytes throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_names_that_never_resolve_leaves_other_origins_lookups_alone() {
    let dns = TestDns::start().await;
    let echo = echo_server().await;
    let allow = vec!["127.0.0.1/32".to_string()];
    // A deadline far beyond the time the flood takes to arrive, so all of it meets the cap.
    let limits = ["max_lookups_per_origin: 4", "max_lookups: 16", "connect_timeout: \"5s\""];
    let nameserver = dns.addr;
    let honest_target = format!("echo.fast.test:{}", echo.port());
    let (_mesh, a, _b, _ep, conn) = exit_under_attack_tuned(&allow, &limits, &honest_target, |b| {
        b.policy =
            Some(format!("exit_policy:\n  allow: [\"127.0.0.1/32\"]\n  nameservers: [\"{nameserver}\"]\n"));
    })
    .await;
    let _ = open_echoed_flow(listener_addr(&a, "in"), 1).await;

    // 40 flows at once from x, each to its own name that never resolves.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(
                async move { send_header(&conn, &exit_header("x", &format!("n{i}.slow.test:80"))).await },
            )
        })
        .collect();
    // Meanwhile a's flows resolve their name and carry bytes.
    let mut honest = Vec::new();
    for i in 0..10u8 {
        let started = Instant::now();
        let _ = open_echoed_flow(listener_addr(&a, "in"), i).await;
        honest.push(started.elapsed());
    }
    let mut overloaded = 0;
    for f in flood {
        match f.await.expect("flood task") {
            Some(Reply::Refused { reason: RefuseReason::Overloaded, .. }) => overloaded += 1,
            Some(Reply::Refused { reason: RefuseReason::TargetUnreachable, .. }) => {}
            other => panic!("a name that never resolves got {other:?}"),
        }
    }
    eprintln!("honest flows (lookup, connect, echo) during the flood: {honest:?}");
    // Only 4 of x's lookups ran at once; the rest were refused without one.
    assert_eq!((overloaded, dns.slow_names()), (36, 4), "refused as overloaded, names asked");
    // A failed name is answered from memory: the server is not asked again.
    let failed = dns.slow_names.lock().expect("names").first().cloned().expect("a name");
    let again = send_header(&conn, &exit_header("x", &format!("{failed}:80"))).await;
    assert!(
        matches!(&again, Some(Reply::Refused { reason: RefuseReason::TargetUnreachable, detail, .. }) if detail.contains("within the last")),
        "{again:?}"
    );
}

/// An echo server on every address of this host (as services often bind).
async fn echo_on_all_addresses() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// The exit's own non-loopback addresses are guarded like loopback: a broad rule does not
/// reach a service bound to all of them; a rule naming the address does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_s_own_addresses_need_a_rule_naming_them() {
    let own = if_addrs::get_if_addrs()
        .expect("interfaces")
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| matches!(ip, std::net::IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local()));
    let Some(own) = own else {
        eprintln!("this host has no non-loopback IPv4 address: nothing to check");
        return;
    };
    let (hidden, named) = (echo_on_all_addresses().await, echo_on_all_addresses().await);
    let allow = vec!["0.0.0.0/0:*".to_string(), "::/0".to_string(), format!("{own}/32:{}", named.port())];
    let echo = echo_server().await;
    let (_mesh, _a, _b, _ep, conn) = exit_under_attack(&allow, &[], echo).await;
    let refused = send_header(&conn, &exit_header("x", &format!("{own}:{}", hidden.port()))).await;
    assert!(refused_by_policy(refused.clone()), "{own}:{} under 0.0.0.0/0: {refused:?}", hidden.port());
    let opened =
        common::raw_flow::open_raw_flow(&conn, &exit_header("x", &format!("{own}:{}", named.port()))).await;
    assert!(matches!(opened, Some(Reply::Opened)), "{own}:{} named by a rule: {opened:?}", named.port());
}
