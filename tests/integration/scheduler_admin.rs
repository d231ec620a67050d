//! The scheduler's admin API, live: a scheduler and three nodes (a, b, d; links a-b, b-d,
//! a-d; a's route `in` exits at d) until paths are computed, then every endpoint's JSON,
//! `/metrics` through a Prometheus parser, `proxy status --scheduler` against it, the
//! token, and the API going away with the scheduler.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxy::Node;
use proxy::admin::http::get;
use proxy::config::scheduler as sched_config;
use proxy::scheduler::Scheduler;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(5);

/// A scheduler on loopback, its admin API on a free port, with `extra` config lines.
async fn start_scheduler(mesh: &Mesh, extra: &str) -> Scheduler {
    mesh.issue("scheduler", "scheduler");
    let yaml = format!(
        "bind: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nadmin_addr: \"127.0.0.1:0\"\nrecompute_interval: \"200ms\"\n{extra}"
    );
    Scheduler::start(sched_config::parse(&yaml, &mesh.dir).expect("config")).await.expect("start")
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(&addr.to_string(), path, None, T).await.expect("admin answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Polls `path` until `ready` holds for its JSON, for at most `within`; the last answer.
async fn json_when(addr: SocketAddr, path: &str, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = json(addr, path).await;
        if ready(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The three nodes, all on `scheduler`, in region `test`.
async fn three_nodes(mesh: &Mesh, scheduler: &Scheduler) -> (Node, Node, Node) {
    scheduled_triangle(mesh, &scheduler.local_addr().expect("addr").to_string(), ["test"; 3]).await
}

/// Waits until the scheduler counts the three links and has issued a's route two paths.
async fn wait_computed(admin: SocketAddr) {
    let links = json_when(admin, "/api/links", Duration::from_secs(20), |l| {
        l.as_array().is_some_and(|l| l.len() == 3 && l.iter().all(|l| l["state"] == "counted"))
    })
    .await;
    assert_eq!(links.as_array().map(Vec::len), Some(3), "{links}");
    let routes = json_when(admin, "/api/routes", Duration::from_secs(20), |r| {
        r[0]["paths"].as_array().is_some_and(|p| p.len() == 2)
    })
    .await;
    assert_eq!(routes[0]["paths"].as_array().map(Vec::len), Some(2), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_its_fields() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let scheduler = start_scheduler(&mesh, "").await;
    let admin = scheduler.admin_addr();
    assert_ne!(admin.port(), 0, "the bound port is reported");
    let (a, _b, d) = three_nodes(&mesh, &scheduler).await;
    wait_computed(admin).await;
    // Some traffic on a's route, so a link has a measured throughput.
    let flow = open_echoed_flow(listener_addr(&a, "in"), 1).await;

    let nodes = json(admin, "/api/nodes").await;
    let ids: Vec<&str> = nodes.as_array().expect("array").iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "d"]);
    for n in nodes.as_array().expect("array") {
        assert_eq!((n["connected"].as_bool(), n["alive"].as_bool()), (Some(true), Some(true)), "{n}");
        assert_eq!(n["region"], "test");
        for key in ["last_seen_secs", "last_report_secs", "peers", "listeners", "routes", "links"] {
            assert!(n[key].is_number(), "/api/nodes lacks {key}: {n}");
        }
        assert!(n["instruction_version"].as_u64().is_some_and(|v| v > 0), "{n}");
        assert!(n["last_report_secs"].as_f64().is_some_and(|s| s < 5.0), "{n}");
    }
    let node_a = &nodes[0];
    assert_eq!(node_a["mesh_address"], a.mesh_addr().expect("addr").to_string());
    assert_eq!(
        (node_a["peers"].as_u64(), node_a["listeners"].as_u64(), node_a["routes"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(nodes[2]["mesh_address"], d.mesh_addr().expect("addr").to_string());
    assert_eq!((nodes[2]["routes"].as_u64(), nodes[2]["links"].as_u64()), (Some(0), Some(2)));

    let links = json(admin, "/api/links").await;
    let pairs: Vec<(String, String)> = links
        .as_array()
        .expect("array")
        .iter()
        .map(|l| (l["a"].as_str().unwrap_or("?").to_string(), l["b"].as_str().unwrap_or("?").to_string()))
        .collect();
    let want: Vec<(String, String)> =
        [("a", "b"), ("a", "d"), ("b", "d")].iter().map(|(x, y)| (x.to_string(), y.to_string())).collect();
    assert_eq!(pairs, want);
    for l in links.as_array().expect("array") {
        assert_eq!(l["state"], "counted", "{l}");
        assert_eq!(l["reported_by"], serde_json::json!([l["a"], l["b"]]), "{l}");
        assert!(l["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{l}");
        // Idle loopback links: lost keepalives are not data loss, so exactly 0.
        assert_eq!(l["loss"].as_f64(), Some(0.0), "{l}");
        assert!(l["age_secs"].is_number() && l.get("throughput_bytes_per_sec").is_some(), "{l}");
        assert!(l.get("capacity_bytes_per_sec").is_some() && l["bandwidth_mbps"].is_number(), "{l}");
        // a's two paths, a>d and a>b>d, run over all three links.
        assert_eq!(l["used"], true, "{l}");
    }
    let measured = json_when(admin, "/api/links", Duration::from_secs(5), |l| {
        l.as_array()
            .is_some_and(|l| l.iter().any(|l| l["throughput_bytes_per_sec"].as_u64().is_some_and(|t| t > 0)))
    })
    .await;
    assert!(
        measured.as_array().is_some_and(|l| l.iter().any(|l| l["throughput_bytes_per_sec"].is_u64())),
        "no link measured the flow's traffic: {measured}"
    );
    drop(flow);

    let routes = json(admin, "/api/routes").await;
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "only a originates a route: {routes}");
    let r = &routes[0];
    assert_eq!(
        (r["node"].as_str(), r["route"].as_str(), r["exit"].as_str()),
        (Some("a"), Some("in"), Some("d"))
    );
    assert_eq!((r["objective"].as_str(), r["pinned"].as_bool()), (Some("latency"), Some(false)));
    assert_eq!(r["instruction_version"], node_a["instruction_version"]);
    assert!(r["issued_at_unix"].as_u64().is_some_and(|t| t > 1_600_000_000), "{r}");
    let mut hops: Vec<String> = r["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| {
            let hops: Vec<&str> =
                p["hops"].as_array().expect("hops").iter().filter_map(Value::as_str).collect();
            assert_eq!(p["relays"].as_array().map(Vec::len), Some(hops.len() - 2), "{p}");
            assert!(p["weight"].as_f64().is_some_and(|w| w > 0.0 && w <= 1.0), "{p}");
            assert!(p["cost"].as_f64().is_some_and(|c| c > 0.0), "{p}");
            hops.join(">")
        })
        .collect();
    hops.sort();
    assert_eq!(hops, vec!["a>b>d", "a>d"]);
    let weights: f64 =
        r["paths"].as_array().expect("paths").iter().filter_map(|p| p["weight"].as_f64()).sum();
    assert!((weights - 1.0).abs() < 1e-6, "{r}");

    let (status, body) = get(&admin.to_string(), "/healthz", None, T).await.expect("healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = get(&admin.to_string(), "/api/stats", None, T).await.expect("404");
    assert_eq!(status, 404, "the node's routes are not the scheduler's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_the_promised_series() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let scheduler = start_scheduler(&mesh, "").await;
    let admin = scheduler.admin_addr();
    let (_a, _b, _d) = three_nodes(&mesh, &scheduler).await;
    wait_computed(admin).await;
    let (status, body) = get(&admin.to_string(), "/metrics", None, T).await.expect("metrics");
    assert_eq!(status, 200);
    let scrape = scrape(&body);
    let value = |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels);
    assert_eq!(value("proxy_scheduler_nodes", &[]), 3.0);
    assert_eq!(value("proxy_scheduler_nodes_connected", &[]), 3.0);
    assert_eq!(value("proxy_scheduler_nodes_alive", &[]), 3.0);
    assert_eq!(value("proxy_scheduler_node_connected", &[("node", "b")]), 1.0);
    assert!(value("proxy_scheduler_node_last_seen_seconds", &[("node", "a")]) < 5.0);
    assert_eq!(value("proxy_scheduler_links", &[("state", "counted")]), 3.0);
    assert_eq!(value("proxy_scheduler_links", &[("state", "one_sided")]), 0.0);
    for (x, y) in [("a", "b"), ("a", "d"), ("b", "d")] {
        let pair = [("a", x), ("b", y)];
        assert!(value("proxy_scheduler_link_rtt_seconds", &pair) > 0.0, "{x}-{y}");
        assert!(value("proxy_scheduler_link_loss_ratio", &pair) >= 0.0, "{x}-{y}");
        assert_eq!(value("proxy_scheduler_link_counted", &pair), 1.0, "{x}-{y}");
        assert_eq!(value("proxy_scheduler_link_used", &pair), 1.0, "{x}-{y}");
    }
    assert_eq!(value("proxy_scheduler_routes", &[]), 1.0);
    assert!(value("proxy_scheduler_instruction_version", &[("node", "a")]) > 0.0);
    assert!(value("proxy_scheduler_recomputes_total", &[]) >= 1.0);
    assert!(value("proxy_scheduler_recompute_duration_seconds", &[]) >= 0.0);
    assert!(value("proxy_scheduler_instruction_sets_total", &[]) >= 3.0, "one set per node at least");
    let kind = |name: &str| scrape.samples.iter().find(|s| s.metric == name).map(|s| s.value.clone());
    assert!(matches!(kind("proxy_scheduler_recomputes_total"), Some(prometheus_parse::Value::Counter(_))));
    assert!(matches!(kind("proxy_scheduler_nodes"), Some(prometheus_parse::Value::Gauge(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_prints_the_schedulers_tables() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let scheduler = start_scheduler(&mesh, "").await;
    let admin = scheduler.admin_addr().to_string();
    let (_a, _b, _d) = three_nodes(&mesh, &scheduler).await;
    wait_computed(scheduler.admin_addr()).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_proxy")).args(args).output()
        })
    };
    let out =
        run(vec!["status".into(), "--scheduler".into(), admin.clone()]).await.expect("join").expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in
        ["scheduler  nodes 3 (3 connected)  links 3 counted", "objective latency", "NODES", "LINKS", "ROUTES"]
    {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let section = |name: &str| -> Vec<String> {
        text.split(&format!("\n{name}\n"))
            .nth(1)
            .unwrap_or_default()
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let nodes = section("NODES");
    assert_eq!(nodes.len(), 4, "a header and three nodes:\n{text}");
    assert!(nodes[1].starts_with("a ") && nodes[1].contains("yes"), "{text}");
    let links = section("LINKS");
    assert_eq!(links.len(), 4, "a header and three links:\n{text}");
    assert!(links.iter().skip(1).all(|l| l.contains("counted") && l.contains(" ms")), "{text}");
    let routes = section("ROUTES");
    assert_eq!(routes.len(), 3, "a header and a row per path:\n{text}");
    assert!(routes[1].starts_with("a ") && routes[1].contains(" in ") && routes[1].contains('%'), "{text}");
    assert!(
        routes.iter().any(|r| r.contains("a>b>d")) && routes.iter().any(|r| r.contains("a>d ")),
        "{text}"
    );
    // A scheduler that is not there: exit 1 and a message naming the address.
    let gone = run(vec!["status".into(), "--scheduler".into(), "127.0.0.1:9".into()])
        .await
        .expect("join")
        .expect("run");
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("127.0.0.1:9"));
    // --admin and --scheduler name different things: asking both is bad usage.
    let both = run(vec!["status".into(), "--admin".into(), admin.clone(), "--scheduler".into(), admin])
        .await
        .expect("join")
        .expect("run");
    assert_eq!(both.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_once_configured_and_the_api_stops_with_the_scheduler() {
    let mesh = Mesh::new(&[]);
    let token = "s3cret-sched-token-0123";
    let scheduler = start_scheduler(&mesh, &format!("admin_token: {token}\n")).await;
    let addr = scheduler.admin_addr().to_string();
    assert_eq!(get(&addr, "/api/nodes", None, T).await.expect("answer").0, 401);
    assert_eq!(get(&addr, "/healthz", Some("wrong-token-wrong-token"), T).await.expect("answer").0, 401);
    let (status, body) = get(&addr, "/api/nodes", Some(token), T).await.expect("answer");
    assert_eq!((status, body.trim()), (200, "[]"));
    // proxy status takes the token from PROXY_ADMIN_TOKEN too.
    let status_addr = addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .args(["status", "--scheduler", &status_addr])
            .env("PROXY_ADMIN_TOKEN", token)
            .output()
    })
    .await
    .expect("join")
    .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("scheduler  nodes 0 (0 connected)"));

    // ...and from a file, which keeps it out of the process list; `--token` still works,
    // with a warning.
    let token_file = mesh.path("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token file");
    let by_file = ["--token-file".to_string(), token_file.display().to_string()];
    let (code, stdout, stderr) = proxy_status(&addr, &by_file).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("scheduler  nodes 0 (0 connected)") && stderr.is_empty(), "{stderr}");
    let (code, stdout, stderr) = proxy_status(&addr, &["--token".into(), token.into()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("scheduler  nodes 0 (0 connected)"));
    assert!(
        stderr.contains("warning: --token shows the token") && stderr.contains("--token-file"),
        "{stderr}"
    );
    let missing = ["--token-file".to_string(), mesh.path("no-such-file").display().to_string()];
    let (code, _, stderr) = proxy_status(&addr, &missing).await;
    assert_eq!(code, Some(2), "an unreadable token file is bad usage");
    assert!(stderr.contains("no-such-file"), "{stderr}");

    drop(scheduler);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let closed = loop {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(closed, "the admin API still accepts connections after the scheduler stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_address_without_a_token_is_refused() {
    let mesh = Mesh::new(&[]);
    mesh.issue("scheduler", "scheduler");
    let yaml = "bind: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nadmin_addr: \"0.0.0.0:0\"\n";
    let errors = sched_config::parse(yaml, &mesh.dir).expect_err("refused by validation");
    assert!(errors.iter().any(|e| e.key == "admin_addr" && e.message.contains("admin_token")), "{errors:?}");
    // A config built in code gets the same answer from the scheduler itself.
    let mut config =
        sched_config::parse(&yaml.replace("0.0.0.0:0", "127.0.0.1:0"), &mesh.dir).expect("config");
    config.admin_addr = "0.0.0.0:0".parse().expect("addr");
    let refused = Scheduler::start(config).await.err().expect("a public admin without a token is refused");
    assert!(refused.to_string().contains("admin_token"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_carried_a_load_both_ways_reports_its_capacity_and_the_scheduler_counts_it() {
    let mesh = Mesh::new(&["a", "b", "d"]);
    let scheduler = start_scheduler(&mesh, "").await;
    let admin = scheduler.admin_addr();
    let (a, _b, _d) = three_nodes(&mesh, &scheduler).await;
    wait_computed(admin).await;
    // Idle so far: no link has a capacity (keepalives prove nothing) and no loss.
    let idle = json(admin, "/api/links").await;
    for l in idle.as_array().expect("array") {
        assert_eq!((l["loss"].as_f64(), l["capacity_bytes_per_sec"].as_u64()), (Some(0.0), None), "{l}");
    }
    // 32 MiB echoed: every link on the path is loaded in both directions.
    let len = 32 * 1024 * 1024;
    let (mut r, mut w) = connect(listener_addr(&a, "in")).await.into_split();
    let writer = tokio::spawn(async move {
        let h = send_pattern(&mut w, 7, len).await.expect("send");
        w.shutdown().await.expect("shutdown");
        h
    });
    let (got_len, got) = read_all_hash(&mut r).await.expect("read");
    assert!(got_len == len && got == writer.await.expect("join"), "echo intact");
    let counted = |l: &Value| {
        l["capacity_bytes_per_sec"].as_u64().is_some_and(|c| {
            l["bandwidth_mbps"].as_f64().is_some_and(|b| (b - c as f64 * 8.0 / 1e6).abs() < 1e-6)
        })
    };
    let links = json_when(admin, "/api/links", Duration::from_secs(10), |l| {
        l.as_array().is_some_and(|l| l.iter().any(counted))
    })
    .await;
    assert!(links.as_array().is_some_and(|l| l.iter().any(counted)), "no capacity counted: {links}");
}

/// `proxy status --scheduler ADDR ARGS...` without `PROXY_ADMIN_TOKEN`: exit code, stdout,
/// stderr.
async fn proxy_status(addr: &str, args: &[String]) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"));
    command.args(["status", "--scheduler", addr]).args(args).env_remove("PROXY_ADMIN_TOKEN");
    let out = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}
