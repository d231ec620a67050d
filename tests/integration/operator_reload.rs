//! Reloads as an operator does them, on the real binary: `SIGHUP` to a running scheduler
//! applies a new objective (the route moves), a new admin token and log level, and refuses
//! a new `bind` with a log line while it keeps running; a node applies a new `log_level`
//! on reload; `--log-level` and `RUST_LOG` set the filter at start.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::process::{KillOnDrop, proxy};
use common::*;
use proxy::Node;
use proxy::emulator::{LinkEmulator, LinkProfile};

fn primary(node: &Node) -> Option<Vec<String>> {
    Some(node.instructions()?.routes.first()?.paths.first()?.relays.clone())
}

fn hangup(child: &KillOnDrop) {
    let pid = child.0.id().to_string();
    let status = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(status.success(), "kill -HUP {pid}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits (bounded) until the log file at `path` holds a line containing `text`.
async fn logged(path: &Path, text: &str) -> bool {
    eventually(Duration::from_secs(15), || read(path).contains(text)).await
}

/// GET `path` on the admin API at `addr`, with `token` as a bearer token: the status code
/// and the whole answer.
async fn admin_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin API");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    (answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), answer)
}

/// The loss the scheduler's `/api/links` answer shows for the link `x`-`y`.
fn link_loss(answer: &str, x: &str, y: &str) -> f64 {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let links: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
    links.iter().find(|l| l["a"] == x && l["b"] == y).and_then(|l| l["loss"].as_f64()).unwrap_or(0.0)
}

/// Sends `len` patterned bytes through a flow from `entry` to an echo server and checks
/// they come back whole.
async fn echo_bytes(entry: std::net::SocketAddr, seed: u64, len: usize) {
    let stream = connect(entry).await;
    let (mut r, mut w) = stream.into_split();
    let sent = tokio::spawn(async move {
        let hash = send_pattern(&mut w, seed, len).await.expect("send");
        tokio::io::AsyncWriteExt::shutdown(&mut w).await.expect("shutdown");
        hash
    });
    let (n, got) = tokio::time::timeout(Duration::from_secs(60), read_all_hash(&mut r))
        .await
        .expect("echo within 60 s")
        .expect("read");
    assert_eq!((n, got), (len, sent.await.expect("sender")), "the bytes came back whole");
}

async fn admin_status(addr: &str, path: &str, token: Option<&str>) -> u16 {
    admin_get(addr, path, token).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_routes_to_a_new_objective_and_refuses_a_new_bind() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    mesh.issue("scheduler", "scheduler");
    let log = mesh.path("scheduler.log");
    // Port 0 for both (a port picked by the test could be taken before the process binds
    // it); the real ones are in the start line.
    let config = |objective: &str, bind: &str, extra: &str| {
        format!(
            "bind: \"{bind}\"\nadmin_addr: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\n\
             objective: {objective}\nrecompute_interval: 200ms\nhysteresis: {{ margin: 0.1, hold: 400ms }}\n\
             node_dead_after: 3s\nlog_file: scheduler.log\n{extra}"
        )
    };
    let file = mesh.path("scheduler.yaml");
    std::fs::write(&file, config("latency", "127.0.0.1:0", "")).expect("write");
    let scheduler = KillOnDrop(
        proxy().args(["scheduler", "-c"]).arg(&file).stderr(Stdio::null()).spawn().expect("scheduler"),
    );
    assert!(logged(&log, "scheduler started").await, "{}", read(&log));
    let started = read(&log);
    let field = |name: &str| {
        started
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|a| a.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} in the start line: {started}"))
    };
    let (sched_addr, admin) = (field("addr="), field("admin="));

    // a reaches d directly over a fast link that loses 2% of its packets, and through b
    // over a slower, clean one: latency picks the direct link, loss picks b.
    let echo = echo_server().await;
    let mut d = NodeSpec::new("d");
    d.peers = vec![("a", String::new()), ("b", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    d.scheduler = Some(sched_addr.clone());
    let d = d.start(&mesh).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("d", d.mesh_addr().expect("addr").to_string())];
    b.scheduler = Some(sched_addr.clone());
    let b = b.start(&mesh).await;
    let to_d = LinkEmulator::start(d.mesh_addr().expect("addr"), 1).await.expect("emulator");
    to_d.set_both(LinkProfile { loss: 0.02, ..LinkProfile::delayed(Duration::from_millis(2)) });
    let to_b = LinkEmulator::start(b.mesh_addr().expect("addr"), 2).await.expect("emulator");
    to_b.set_both(LinkProfile::delayed(Duration::from_millis(30)));
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", to_b.addr().to_string()), ("d", to_d.addr().to_string())];
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.scheduler = Some(sched_addr.clone());
    let a = a.start(&mesh).await;
    for (n, p) in [(&a, "b"), (&a, "d"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await, "no link {p}");
    }
    let direct = eventually(Duration::from_secs(20), || primary(&a) == Some(vec![])).await;
    assert!(direct, "latency: the direct link; instructions {:?}", a.instructions());
    assert_eq!(admin_status(&admin, "/api/nodes", None).await, 200);
    // Loss is measured on data, not keepalives: carry some over the direct link until the
    // scheduler has a-d's loss (it keeps it while the link idles).
    let mut measured = false;
    for round in 0..10u64 {
        echo_bytes(listener_addr(&a, "in"), round, 4 << 20).await;
        let links = admin_get(&admin, "/api/links", None).await.1;
        if link_loss(&links, "a", "d") > 0.0 {
            measured = true;
            break;
        }
    }
    assert!(measured, "no loss measured on a-d: {}", admin_get(&admin, "/api/links", None).await.1);

    // New objective, an admin token and a debug log level; the scheduler stays up.
    let token = "0123456789abcdef-reloaded";
    std::fs::write(
        &file,
        config("loss", "127.0.0.1:0", &format!("admin_token: {token}\nlog_level: debug\n")),
    )
    .expect("write");
    hangup(&scheduler);
    assert!(logged(&log, "SIGHUP: config applied").await, "{}", read(&log));
    let text = read(&log);
    assert!(text.contains("objective latency -> loss") && text.contains("admin_token changed"), "{text}");
    assert!(text.contains("log_level info -> debug") && !text.contains(token), "{text}");
    let via_b = eventually(Duration::from_secs(20), || primary(&a) == Some(vec!["b".to_string()])).await;
    if !via_b {
        let links = admin_get(&admin, "/api/links", Some(token)).await.1;
        panic!(
            "loss: through b; instructions {:?}\nlinks {links:?}\npeers {:?}",
            a.instructions(),
            a.peers()
        );
    }
    let _flow = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    assert_eq!(b.stats().flows_relayed, 1, "the new flow takes the path through b");
    assert_eq!(admin_status(&admin, "/api/nodes", None).await, 401, "the new token is required");
    assert_eq!(admin_status(&admin, "/api/nodes", Some(token)).await, 200);
    assert!(logged(&log, "DEBUG").await, "debug lines after the reload");

    // A new bind needs a restart: refused whole, logged, and the process goes on.
    std::fs::write(&file, config("latency", "127.0.0.1:1", &format!("admin_token: {token}\n")))
        .expect("write");
    hangup(&scheduler);
    assert!(logged(&log, "need a restart: bind").await, "{}", read(&log));
    let mut scheduler = scheduler;
    assert!(scheduler.0.try_wait().expect("wait").is_none(), "the scheduler must stay up");
    assert_eq!(admin_status(&admin, "/healthz", Some(token)).await, 200);
    assert_eq!(primary(&a), Some(vec!["b".to_string()]), "the refused file changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_applies_a_new_log_level_on_reload_and_the_command_line_filter_at_start() {
    let mesh = Mesh::new(&["a"]);
    mesh.issue("scheduler", "scheduler");
    let yaml = "bind: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\n";
    let config = proxy::config::scheduler::parse(yaml, &mesh.dir).expect("config");
    let scheduler = proxy::Scheduler::start(config).await.expect("scheduler");
    let mut a = NodeSpec::new("a");
    a.scheduler = Some(scheduler.local_addr().expect("addr").to_string());
    let log = mesh.path("a.log");
    let with_level = |level: &str| {
        a.yaml().replace("  log_level: warn\n", &format!("  log_level: {level}\n  log_file: a.log\n"))
    };
    let file = mesh.path("a.yaml");
    std::fs::write(&file, with_level("info")).expect("write");
    let node =
        KillOnDrop(proxy().args(["run", "-c"]).arg(&file).stderr(Stdio::null()).spawn().expect("node"));
    assert!(logged(&log, "node started").await, "{}", read(&log));
    assert!(
        eventually(Duration::from_secs(10), || scheduler.nodes() == ["a"]).await,
        "the node registers with the scheduler"
    );
    assert!(!read(&log).contains("DEBUG"), "info hides debug lines:\n{}", read(&log));

    // debug for the admin API only: it logs each request at debug.
    let started = read(&log);
    let admin = started
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .map(|a| a.trim_matches('"').to_string())
        .expect("the admin address in the start line");
    std::fs::write(&file, with_level("\"info,proxy::admin=debug\"")).expect("write");
    hangup(&node);
    assert!(logged(&log, "log settings changed").await, "{}", read(&log));
    assert_eq!(admin_status(&admin, "/healthz", None).await, 200);
    assert!(logged(&log, "admin API request").await, "{}", read(&log));
    assert!(!read(&log).contains("registered with the scheduler"), "proxy::node stays at info");
    drop(node);

    // `--log-level` wins at start over the file's level; RUST_LOG does the same.
    std::fs::write(&file, with_level("warn")).expect("write");
    let _ = std::fs::remove_file(&log);
    let node = KillOnDrop(
        proxy()
            .args(["run", "--log-level", "info,proxy::node::control=debug", "-c"])
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .expect("node"),
    );
    assert!(logged(&log, "registered with the scheduler").await, "{}", read(&log));
    drop(node);
    let _ = std::fs::remove_file(&log);
    let node = KillOnDrop(
        proxy()
            .args(["run", "-c"])
            .arg(&file)
            .env("RUST_LOG", "proxy::node::control=debug")
            .stderr(Stdio::null())
            .spawn()
            .expect("node"),
    );
    assert!(logged(&log, "registered with the scheduler").await, "{}", read(&log));
    drop(node);
}

#[test]
fn a_bad_log_filter_is_refused_with_what_is_wrong() {
    let out =
        proxy().args(["run", "--log-level", "proxy=loud", "-c", "/nonexistent.yaml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown log level `loud`"), "{stderr}");
    // RUST_LOG may be meant for another program: a value that does not parse is ignored
    // with a warning by the commands that log, and not read at all by the others.
    let out =
        proxy().args(["run", "-c", "/nonexistent.yaml"]).env("RUST_LOG", "a b=debug").output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RUST_LOG is ignored") && stderr.contains("not a module path"), "{stderr}");
    let out = proxy().args(["completions", "bash"]).env("RUST_LOG", "a b=debug").output().expect("run");
    assert!(out.status.success() && out.stderr.is_empty());
}
