//! `proxy ping` and `proxy trace`: the real binary against a node's admin API, probe flows
//! through a three-node chain whose links run through the link emulator, and the failure
//! paths (unknown node, no path, a dead hop, bad usage, a hostile probe flow).

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::process::proxy;
use common::{Mesh, NodeSpec, raw_client};
use proxy::Node;
use proxy::core::wire::{self, Decoded, Destination, FlowHeader, Reply};
use proxy::emulator::{LinkEmulator, LinkProfile};
use quinn::SendStream;
use serde_json::Value;
use tokio::time::timeout;

/// Every test ends within this, whatever goes wrong.
const TEST_BOUND: Duration = Duration::from_secs(120);
/// One-way delays of the emulated links A-B and B-C.
const AB_ONE_WAY: Duration = Duration::from_millis(25);
const BC_ONE_WAY: Duration = Duration::from_millis(40);

/// A -> B -> C: A's route `to-c` exits at C through B (A has no link to C); B is a plain
/// relay. `far` is a second route of A, to `d` through `e`, nodes that do not exist: it
/// names `e` as a relay only (after b). The links run through emulators with the delays above.
struct Chain {
    _mesh: Mesh,
    a: Node,
    b: Option<Node>,
    c: Node,
    _emulators: (LinkEmulator, LinkEmulator),
}

async fn chain(mesh_extra: &[&str]) -> Chain {
    // e to h: members that speak the wire by hand to C (the hostile-probe tests).
    let mesh = Mesh::new(&["a", "b", "c", "e", "f", "g", "h"]);
    let extra: Vec<String> = mesh_extra.iter().map(|s| s.to_string()).collect();
    let mut c = NodeSpec::new("c");
    c.peers = ["b", "e", "f", "g", "h"].map(|p| (p, String::new())).to_vec();
    c.mesh_extra = extra.clone();
    let c = c.start(&mesh).await;
    let bc = LinkEmulator::start(c.mesh_addr().expect("addr"), 1).await.expect("emulator");
    bc.set_both(LinkProfile::delayed(BC_ONE_WAY));
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("c", bc.addr().to_string())];
    b.mesh_extra = extra.clone();
    let b = b.start(&mesh).await;
    let ab = LinkEmulator::start(b.mesh_addr().expect("addr"), 2).await.expect("emulator");
    ab.set_both(LinkProfile::delayed(AB_ONE_WAY));
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", ab.addr().to_string())];
    a.mesh_extra = extra;
    a.limits = vec!["connect_timeout: \"2s\"".into()];
    a.routes = vec![("to-c", "127.0.0.1:9".into(), Some("c"))];
    a.via = vec!["b"];
    let mut y = a.yaml();
    // A second route, to a node that does not exist through one that does not either.
    y = y.replace("listeners:\n", "listeners:\n  - name: far\n    bind: \"127.0.0.1:0\"\n");
    y = y.replace(
        "mesh:\n",
        "  - name: far\n    match: { listener: far }\n    target: \"127.0.0.1:9\"\n    exit: d\n    via: [b, e]\nmesh:\n",
    );
    let path = mesh.path("a-probe.yaml");
    std::fs::write(&path, &y).expect("write config");
    let config = proxy::config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}\n{y}"));
    let a = Node::start(config).await.expect("start a");
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a-b");
    assert!(b.wait_for_link("c", Duration::from_secs(10)).await, "link b-c");
    Chain { _mesh: mesh, a, b: Some(b), c, _emulators: (ab, bc) }
}

/// Runs the `proxy` binary with `args` (off the runtime, which serves the nodes).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || proxy().args(&args).output().expect("run proxy")).await.expect("join")
}

fn args(node: &Node, list: &[&str]) -> Vec<String> {
    let admin = node.admin_addr().to_string();
    list.iter().map(|s| s.to_string()).chain(["--admin".to_string(), admin]).collect()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(out)))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `measured` is within 20% of `expected` (milliseconds).
fn near(measured: f64, expected: f64, what: &str) {
    assert!(
        (measured - expected).abs() <= expected * 0.2,
        "{what}: measured {measured:.1} ms, emulated {expected:.1} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_ping_report_the_emulated_round_trips_through_the_mesh() {
    timeout(TEST_BOUND, async {
        let chain = chain(&[]).await;
        let (ab, bc) = (millis(AB_ONE_WAY * 2), millis(BC_ONE_WAY * 2));

        // Ten probes per hop: the best of them is the path's own round trip even when a busy
        // machine delays some.
        let out = run(args(&chain.a, &["trace", "c", "-c", "10", "-i", "50ms", "--json"])).await;
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let report = json(&out);
        println!("trace c: {report}");
        assert_eq!(report["path"], serde_json::json!(["b", "c"]));
        assert_eq!(report["route"], "to-c");
        assert_eq!(report["reached"], true);
        let hops = report["hops"].as_array().expect("hops");
        assert_eq!(hops.len(), 2);
        let f = |hop: &Value, key: &str| hop[key].as_f64().unwrap_or_else(|| panic!("{key} in {hop}"));
        for hop in hops {
            assert_eq!((hop["sent"].as_u64(), hop["received"].as_u64()), (Some(10), Some(10)), "{hop}");
            assert_eq!(hop["sealed"], true, "flows are sealed by default: {hop}");
        }
        // The best round trip is the path's own; later ones may wait on a busy machine.
        near(f(&hops[0], "min_ms"), ab, "hop 1 (b)");
        near(f(&hops[1], "min_ms"), ab + bc, "hop 2 (c), end to end");
        near(f(&hops[1], "min_ms") - f(&hops[0], "min_ms"), bc, "b to c");
        assert!(hops[1]["delta_ms"].is_number(), "{}", hops[1]);

        let out = run(args(&chain.a, &["trace", "c", "-i", "50ms"])).await;
        let (stdout, stderr) = text(&out);
        println!("{stdout}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stdout.starts_with("TRACE c over b -> c (route to-c, sealed)\n"), "{stdout}");
        assert!(stdout.contains("HOP  NODE  SENT  RECV  RTT MS  DELTA MS  BEST"), "{stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("1    b     3     3")), "{stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("2    c     3     3")), "{stdout}");
        assert!(stdout.contains("end to end: "), "{stdout}");

        let out = run(args(&chain.a, &["ping", "c", "-c", "3", "-i", "100ms"])).await;
        let (stdout, stderr) = text(&out);
        println!("{stdout}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stdout.starts_with("PING c over b -> c (route to-c, sealed)\n"), "{stdout}");
        for seq in 1..=3 {
            let line =
                stdout.lines().find(|l| l.starts_with(&format!("seq={seq} rtt="))).expect("probe line");
            let rtt: f64 = line
                .trim_start_matches(&format!("seq={seq} rtt="))
                .trim_end_matches(" ms")
                .parse()
                .expect("rtt");
            assert!(rtt >= ab + bc, "an echo cannot beat the emulated delay: {line}");
        }
        assert!(stdout.contains("--- c: 3 sent, 3 received, 0% loss; rtt min/avg/max = "), "{stdout}");

        // B is a peer of A: the direct link.
        let out = run(args(&chain.a, &["ping", "b", "-c", "3", "-i", "50ms", "--json"])).await;
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let report = json(&out);
        assert_eq!(
            (report["route"].clone(), report["path"].clone()),
            (Value::Null, serde_json::json!(["b"]))
        );
        near(report["hops"][0]["min_ms"].as_f64().expect("min"), ab, "ping b");

        // Probes are counted where they start and where they are answered.
        let (a_stats, c_stats) = (chain.a.stats(), chain.c.stats());
        assert!(a_stats.probes_sent >= 5, "{a_stats:?}");
        assert!(c_stats.probes_answered >= 3, "{c_stats:?}");
        let scrape = common::scrape(&chain.c.metrics());
        assert!(common::sample(&scrape, "proxy_probe_flows_total", &[("role", "exit")]) >= 3.0);
        assert!(chain.b.as_ref().expect("b").stats().flows_relayed >= 3);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealed_probe_flows_work_too() {
    timeout(TEST_BOUND, async {
        let chain = chain(&["e2e: off"]).await;
        let out = run(args(&chain.a, &["ping", "c", "-c", "2", "-i", "20ms", "--json"])).await;
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let report = json(&out);
        assert_eq!(report["hops"][0]["sealed"], false, "{report}");
        assert_eq!(report["hops"][0]["received"], 2, "{report}");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_unknown_nodes_and_no_path_exit_with_a_clear_error() {
    timeout(TEST_BOUND, async {
        let chain = chain(&[]).await;
        let a = &chain.a;
        for (list, code, says) in [
            (vec!["ping", "c", "-c", "0"], 2, "0 is not in 1..=50"),
            (vec!["ping", "c", "-c", "51"], 2, "51 is not in 1..=50"),
            (vec!["ping", "c", "-c", "many"], 2, "invalid value 'many'"),
            (vec!["trace", "c", "-i", "5s"], 2, "must be 10ms to 1000ms"),
            (vec!["ping", "No_Such"], 2, "is not a node id"),
            (vec!["ping"], 2, "required"),
            (vec!["ping", "a"], 2, "`a` is this node"),
            (vec!["ping", "zz"], 1, "unknown node `zz`"),
            (vec!["trace", "zz"], 1, "unknown node `zz`"),
            (vec!["trace", "e"], 1, "no path to `e`: it is only a relay on route `far`"),
        ] {
            let out = run(args(a, &list)).await;
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(code), "{list:?}: {stdout} {stderr}");
            assert!(stderr.contains(says), "{list:?}: {stderr}");
        }
        // The path to d goes through e, which does not exist: the trace stops there and says why.
        let out = run(args(a, &["trace", "d", "-i", "20ms"])).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
        assert!(stdout.starts_with("TRACE d over b -> e -> d (route far, sealed)\n"), "{stdout}");
        assert!(stdout.contains("stopped at hop 2 (e): refused by "), "{stdout}");
        // Nothing listens there: a runtime failure.
        let out = run(vec!["ping".into(), "c".into(), "--admin".into(), "127.0.0.1:1".into()]).await;
        assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
        assert!(text(&out).1.contains("cannot connect to admin"), "{:?}", text(&out));
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_a_post_with_the_csrf_token_never_a_get() {
    timeout(TEST_BOUND, async {
        let chain = chain(&[]).await;
        let addr = chain.a.admin_addr().to_string();
        let body = r#"{"node":"b","mode":"ping","count":1}"#;
        let wait = Duration::from_secs(30);
        let (status, _) = proxy::admin::http::get(&addr, "/api/probe", None, wait).await.expect("get");
        assert_eq!(status, 405, "a GET (a cross-site link, an <img>) sends no probe");
        let (status, text) =
            proxy::admin::http::post(&addr, "/api/probe", None, (body, None), wait).await.expect("post");
        assert_eq!(status, 403, "a POST without the session's CSRF token is refused: {text}");
        let (_, session) =
            proxy::admin::http::get(&addr, "/api/console/session", None, wait).await.expect("session");
        let session: Value = serde_json::from_str(&session).expect("json");
        let csrf = session["csrf"].as_str().expect("csrf");
        let (status, text) = proxy::admin::http::post(&addr, "/api/probe", None, (body, Some(csrf)), wait)
            .await
            .expect("post");
        assert_eq!(status, 200, "{text}");
        let bad = r#"{"node":"b","mode":"ping","count":1,"extra":1}"#;
        let (status, text) =
            proxy::admin::http::post(&addr, "/api/probe", None, (bad, Some(csrf)), wait).await.expect("post");
        assert_eq!(status, 400, "{text}");
        assert_eq!(chain.a.stats().probes_sent, 1, "only the good request sent a probe");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hop_stops_the_trace_there_without_hanging() {
    timeout(TEST_BOUND, async {
        let mut chain = chain(&[]).await;
        let b_addr = chain.b.as_ref().and_then(|b| b.mesh_addr().ok()).expect("b's address");
        drop(chain.b.take());
        let out = run(args(&chain.a, &["trace", "c", "-i", "20ms"])).await;
        let (stdout, stderr) = text(&out);
        println!("{stdout}{stderr}");
        assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
        assert!(stdout.contains("stopped at hop 1 (b): "), "{stdout}");
        // The link is named as gone, or as lost when its close is still on its way.
        let named = stdout.contains("no link to next hop `b`") || stdout.contains("link lost");
        assert!(named && !stdout.contains("seal card"), "the dead link is named: {stdout}");
        let out = run(args(&chain.a, &["ping", "c", "-c", "1", "--json"])).await;
        assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
        let report = json(&out);
        assert_eq!(report["reached"], false);
        assert!(report["hops"][0]["error"].is_string(), "{report}");

        // A node that never had a link to b has no card for c either: still, the dead
        // link is what it names, not the card it could not get.
        let mut e = NodeSpec::new("e");
        e.peers = vec![("b", b_addr.to_string())];
        e.routes = vec![("to-c", "127.0.0.1:9".into(), Some("c"))];
        e.via = vec!["b"];
        e.limits = vec!["connect_timeout: \"1s\"".into()];
        let e = e.start(&chain._mesh).await;
        let out = run(args(&e, &["ping", "c", "-c", "1"])).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
        assert!(stdout.contains("no link to next hop `b`") && !stdout.contains("seal card"), "{stdout}");
    })
    .await
    .expect("test bound");
}

/// A hostile member's probe flow (here "e", a peer of C speaking the wire by hand) that
/// sends past the exit's bound is reset, after echoes of no more than it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_flow_past_its_bounds_is_closed() {
    timeout(TEST_BOUND, async {
        let chain = chain(&["e2e: preferred"]).await;
        let (_ep, conn) = raw_member(&chain, "e").await;
        let (mut send, mut recv, reply) = raw_echo_flow((&conn, "e"), 7).await;
        assert_eq!(reply, Reply::Opened);
        // Within the bound: the whole of it comes back.
        send.write_all(&[1u8; 1000]).await.expect("write");
        let mut echoed = 0usize;
        let echo = async {
            while echoed < 1000 {
                echoed +=
                    recv.read_chunk(65_536, true).await.expect("read").expect("open stream").bytes.len();
            }
        };
        timeout(Duration::from_secs(10), echo).await.expect("echo in time");
        assert_eq!(echoed, 1000);
        // Past it: the flow is reset, whatever more is sent.
        let _ = send.write_all(&[2u8; 16 * 1024]).await;
        let mut more = 0usize;
        let end = timeout(Duration::from_secs(10), async {
            loop {
                match recv.read_chunk(65_536, true).await {
                    Ok(Some(chunk)) => more += chunk.bytes.len(),
                    other => return other.map(|_| ()),
                }
            }
        })
        .await
        .expect("closed in time");
        assert!(matches!(end, Err(quinn::ReadError::Reset(_))), "{end:?}");
        assert!(1000 + more <= 8 * 1024, "echoed {} bytes", 1000 + more);
        assert_eq!(chain.c.stats().probes_answered, 1);
    })
    .await
    .expect("test bound");
}

/// Connects to C as member `id`, by hand (the endpoint is kept with its connection).
async fn raw_member(chain: &Chain, id: &str) -> (quinn::Endpoint, quinn::Connection) {
    let dir = &chain._mesh.dir;
    let ep = raw_client(&dir.join(format!("{id}.crt")), &dir.join(format!("{id}.key")), &dir.join("ca.crt"));
    let c_addr = chain.c.mesh_addr().expect("addr");
    let conn = ep.connect(c_addr, "c").expect("connect").await.expect("handshake");
    (ep, conn)
}

/// Opens a plain probe flow from member `origin`'s raw connection and reads the exit's
/// reply.
async fn raw_echo_flow(
    (conn, origin): (&quinn::Connection, &str),
    flow_id: u64,
) -> (quinn::SendStream, quinn::RecvStream, Reply) {
    let header = FlowHeader {
        flow_id,
        origin: origin.into(),
        passed: vec![],
        hops: vec![],
        destination: Destination::Echo,
        subflow: None,
    };
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    send.write_all(&wire::encode_header(&header).expect("encode")).await.expect("header");
    let mut got = Vec::new();
    let reply = loop {
        let chunk = recv.read_chunk(65_536, true).await.expect("read").expect("open stream");
        got.extend_from_slice(&chunk.bytes);
        if let Ok(Decoded::Complete(reply, _)) = wire::decode_reply(&got) {
            break reply;
        }
    };
    (send, recv, reply)
}

/// A hostile member ("e", by hand) that opens probe flows and sends nothing: it gets its
/// share of the exit's slots and no more, pings from others still get through, and its
/// silent flows are reset once idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_s_silent_probe_flows_are_capped_and_reset_when_idle() {
    timeout(TEST_BOUND, async {
        let chain = chain(&["e2e: preferred"]).await;
        let (_ep, conn) = raw_member(&chain, "e").await;
        let mut silent = Vec::new();
        for id in 1..=4 {
            let (send, recv, reply) = raw_echo_flow((&conn, "e"), id).await;
            assert_eq!(reply, Reply::Opened, "flow {id} is within e's share");
            silent.push((send, recv));
        }
        let (_, _, fifth) = raw_echo_flow((&conn, "e"), 5).await;
        assert!(
            matches!(&fifth, Reply::Refused { reason: wire::RefuseReason::Overloaded, .. }),
            "past its share: {fifth:?}"
        );
        let out = run(args(&chain.a, &["ping", "c", "-c", "2", "-i", "10ms"])).await;
        assert_eq!(out.status.code(), Some(0), "a's ping gets through: {:?}", text(&out));
        // Echo's idle limit is 10 s; the test bound is well past it.
        for (_send, mut recv) in silent {
            let end = loop {
                match recv.read_chunk(65_536, true).await {
                    Ok(Some(_)) => continue,
                    other => break other.map(|_| ()),
                }
            };
            // 2: the flow timed out.
            assert!(matches!(end, Err(quinn::ReadError::Reset(code)) if code.into_inner() == 2), "{end:?}");
        }
        let (_, _, again) = raw_echo_flow((&conn, "e"), 6).await;
        assert_eq!(again, Reply::Opened, "the idle flows gave their slots back");
    })
    .await
    .expect("test bound");
}

/// `proxy ping` prints each probe as its echo comes, not at the end: once the first line
/// is out, the path is cut, and a later probe of the same run shows as lost (a ping that
/// printed at its end would have had every echo before anything was read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_prints_each_probe_while_the_run_goes_on() {
    use std::io::BufRead;
    timeout(TEST_BOUND, async {
        let chain = chain(&[]).await;
        let mut child = common::process::KillOnDrop(
            proxy()
                .args(args(&chain.a, &["ping", "c", "-c", "10", "-i", "1s"]))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run proxy"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut seen = Vec::new();
        while let Some(line) = lines.recv().await {
            let first = line.starts_with("seq=1 ");
            seen.push(line);
            if first {
                break;
            }
        }
        assert!(seen.last().is_some_and(|l| l.starts_with("seq=1 rtt=")), "{seen:?}");
        // The run has nine more probes, a second apart (this test has 9 s to act, and the
        // run ends sooner once the path is cut): cut it now.
        chain._emulators.1.set_both(LinkProfile::blackholed());
        while let Some(line) = lines.recv().await {
            seen.push(line);
        }
        let status = tokio::task::spawn_blocking(move || child.0.wait()).await.expect("join").expect("wait");
        println!("{}", seen.join("\n"));
        // The cut loses the probes after it, or ends the flow (its link lost) before them.
        let summary = seen.iter().find_map(|l| l.strip_prefix("--- c: ")).expect("a summary");
        let counts: Vec<u32> = summary.split([' ', ',']).filter_map(|w| w.parse().ok()).take(2).collect();
        assert!(matches!(counts[..], [sent, received] if received >= 1 && received < sent), "{seen:?}");
        assert_eq!(status.code(), Some(0), "c answered before the cut");
    })
    .await
    .expect("test bound");
}

/// Four members that fill the exit with probe flows they keep alive cannot keep a fifth
/// origin's ping out: it takes one of their slots (without the fair share it would be
/// refused `overloaded`, and the ping would exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_fill_an_exit_with_probe_flows_give_way_to_another_origin() {
    timeout(TEST_BOUND, async {
        let chain = chain(&["e2e: preferred"]).await;
        let mut members = Vec::new();
        let mut held: Vec<SendStream> = Vec::new();
        let mut readers = Vec::new();
        for id in ["e", "f", "g", "h"] {
            let (ep, conn) = raw_member(&chain, id).await;
            for flow in 1..=4 {
                let (send, recv, reply) = raw_echo_flow((&conn, id), flow).await;
                assert_eq!(reply, Reply::Opened, "{id}'s flow {flow}");
                held.push(send);
                readers.push(recv);
            }
            members.push((ep, conn));
        }
        let (_, _, refused) = raw_echo_flow((&members[0].1, "e"), 5).await;
        assert!(matches!(refused, Reply::Refused { .. }), "e is at its own share: {refused:?}");
        // Each held flow sends a little every second, so no slot frees itself by idling.
        let keep_alive = tokio::spawn(async move {
            loop {
                for send in &mut held {
                    let _ = send.write_all(&[0u8; 16]).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let out = run(args(&chain.a, &["ping", "c", "-c", "1", "-i", "10ms"])).await;
        keep_alive.abort();
        assert_eq!(out.status.code(), Some(0), "a's ping got a slot: {:?}", text(&out));
        drop(readers);
    })
    .await
    .expect("test bound");
}
