//! The admin API of live nodes: every endpoint's JSON, `/metrics` through a Prometheus
//! parser, `proxy status` against a running node, and the access rules (Host header,
//! token, no public address without a token).

use crate::common;

use std::time::Duration;

use common::*;
use proxy::admin::http::get;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);

async fn json(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Value {
    let (status, body) = get(&addr.to_string(), path, token, T).await.expect("admin answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Origin `a` and exit `b` with one open flow through them.
async fn pair_with_open_flow() -> (Mesh, proxy::Node, proxy::Node, tokio::net::TcpStream) {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let (a, b) = two_nodes(&mesh, echo, "127.0.0.1/32", &[]).await;
    let flow = open_echoed_flow(listener_addr(&a, "in"), 1).await;
    (mesh, a, b, flow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_its_fields() {
    let (_mesh, a, b, _flow) = pair_with_open_flow().await;
    let admin = a.admin_addr();
    let stats = json(admin, "/api/stats", None).await;
    for key in [
        "node_id",
        "flows_current",
        "flows_originated",
        "bytes_in",
        "bytes_out",
        "config_version",
        "instruction_version",
        "multipath",
    ] {
        assert!(!stats[key].is_null(), "/api/stats lacks {key}: {stats}");
    }
    assert_eq!(stats["node_id"], "a");
    assert_eq!(stats["flows_current"], 1);
    let listeners = json(admin, "/api/listeners", None).await;
    assert_eq!(listeners[0]["name"], "in");
    assert_eq!(listeners[0]["addr"], listener_addr(&a, "in").to_string());
    assert_eq!(listeners[0]["protocol"], "tcp");
    let udp = json(admin, "/api/udp", None).await;
    assert_eq!(
        (udp["associations_open"].as_u64(), udp["datagrams_in"].as_u64()),
        (Some(0), Some(0)),
        "{udp}"
    );
    assert_eq!(stats["udp"], udp, "/api/stats carries the same UDP counters");
    let peers = json(admin, "/api/peers", None).await;
    let peer = &peers[0];
    assert_eq!(
        (peer["id"].as_str(), peer["connected"].as_bool(), peer["healthy"].as_bool()),
        (Some("b"), Some(true), Some(true))
    );
    for key in ["rtt_ms", "loss", "connected_secs", "bytes_sent", "bytes_received"] {
        assert!(peer[key].is_number(), "/api/peers lacks {key}: {peer}");
    }
    let flows = json(admin, "/api/flows", None).await;
    let flow = &flows[0];
    assert_eq!((flow["role"].as_str(), flow["route"].as_str()), (Some("origin"), Some("in")));
    assert_eq!(flow["path"], serde_json::json!(["b"]));
    assert!(flow["bytes"].as_u64().is_some_and(|n| n >= 2) && flow["age_secs"].is_number(), "{flow}");
    let exit_flows = json(b.admin_addr(), "/api/flows", None).await;
    assert_eq!(exit_flows[0]["role"], "exit");
    let routes = json(admin, "/api/routes", None).await;
    let route = &routes[0];
    assert_eq!(
        (route["name"].as_str(), route["kind"].as_str(), route["exit"].as_str()),
        (Some("in"), Some("remote"), Some("b"))
    );
    assert_eq!(route["active_path"], serde_json::json!(["b"]));
    assert_eq!(route["matches"], 1);
    for key in ["alternatives", "instruction_version", "stale", "instructed"] {
        assert!(!route[key].is_null(), "/api/routes lacks {key}: {route}");
    }
    let (status, body) = get(&admin.to_string(), "/healthz", None, T).await.expect("healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = get(&admin.to_string(), "/api/nothing", None, T).await.expect("404");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_the_promised_series() {
    let (_mesh, a, _b, _flow) = pair_with_open_flow().await;
    let (status, body) = get(&a.admin_addr().to_string(), "/metrics", None, T).await.expect("metrics");
    assert_eq!(status, 200);
    let scrape = scrape(&body);
    let value = |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels);
    assert_eq!(value("proxy_flows_current", &[]), 1.0);
    assert_eq!(value("proxy_flows_open", &[("role", "origin")]), 1.0);
    assert_eq!(value("proxy_flows_total", &[("role", "origin")]), 1.0);
    assert!(value("proxy_bytes_total", &[("direction", "in")]) >= 1.0);
    assert_eq!(value("proxy_peer_up", &[("peer", "b")]), 1.0);
    assert_eq!(value("proxy_peer_healthy", &[("peer", "b")]), 1.0);
    assert!(value("proxy_peer_rtt_seconds", &[("peer", "b")]) > 0.0);
    assert_eq!(value("proxy_peer_loss_ratio", &[("peer", "b")]), 0.0);
    assert_eq!(value("proxy_route_matches_total", &[("route", "in")]), 1.0);
    assert_eq!(value("proxy_refusals_total", &[("side", "origin"), ("reason", "policy")]), 0.0);
    assert_eq!(value("proxy_config_version", &[]), 1.0);
    // Types come through: counters are counters, gauges gauges.
    let kind = |name: &str| scrape.samples.iter().find(|s| s.metric == name).map(|s| s.value.clone());
    assert!(matches!(kind("proxy_flows_total"), Some(prometheus_parse::Value::Counter(_))));
    assert!(matches!(kind("proxy_flows_current"), Some(prometheus_parse::Value::Gauge(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_prints_tables_for_a_live_node() {
    let (_mesh, a, _b, _flow) = pair_with_open_flow().await;
    let admin = a.admin_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_proxy")).args(["status", "--admin", &admin]).output()
    })
    .await
    .expect("join")
    .expect("run proxy status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in
        ["node a  config v1", "PEERS", "LISTENERS", "ROUTES", "BUSIEST FLOWS (1 of 1 open)", "origin"]
    {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let peers = text.split("LISTENERS").next().unwrap_or_default();
    assert!(peers.lines().any(|l| l.starts_with("b ") && l.contains("yes")), "{text}");
    // A node that is not there: exit 1 and a message naming the address.
    let gone = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["status", "--admin", "127.0.0.1:9"])
        .output()
        .expect("run");
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("127.0.0.1:9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused() {
    let (_mesh, a, _b, _flow) = pair_with_open_flow().await;
    let mut s = tokio::net::TcpStream::connect(a.admin_addr()).await.expect("connect");
    s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: attacker.example\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(!answer.contains("node_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_once_configured_and_a_public_address_needs_one() {
    let mesh = Mesh::new(&["a"]);
    let token = "s3cret-admin-token-0123";
    let mut spec = NodeSpec::new("a");
    let yaml = spec.yaml().replace(
        "admin_addr: \"127.0.0.1:0\"",
        &format!("admin_addr: \"127.0.0.1:0\"\n  admin_token: {token}"),
    );
    let path = mesh.path("a.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let node = proxy::Node::start(proxy::config::load(&path).expect("config")).await.expect("start");
    let addr = node.admin_addr().to_string();
    assert_eq!(get(&addr, "/api/stats", None, T).await.expect("answer").0, 401);
    assert_eq!(get(&addr, "/api/stats", Some("wrong-token-wrong-token"), T).await.expect("answer").0, 401);
    assert_eq!(get(&addr, "/api/stats", Some(token), T).await.expect("answer").0, 200);

    // Every address without a token: refused by validation, and by the node itself when
    // a config is built in code.
    spec.mesh_extra = vec![];
    let public = spec.yaml().replace("admin_addr: \"127.0.0.1:0\"", "admin_addr: \"0.0.0.0:0\"");
    std::fs::write(&path, &public).expect("write");
    let errors = proxy::config::load(&path).expect_err("refused");
    assert!(errors.to_string().contains("common.admin_token"), "{errors}");
    std::fs::write(&path, spec.yaml()).expect("write");
    let mut config = proxy::config::load(&path).expect("config");
    config.common.admin_addr = "0.0.0.0:0".parse().expect("addr");
    let refused = proxy::Node::start(config).await.err().expect("a public admin without a token is refused");
    assert!(refused.to_string().contains("common.admin_token"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_ids_are_random_not_counted_up() {
    // A member that saw some of a node's flows must not be able to predict the next ids
    // (and squat them at other exits). Counted-up ids would make these four consecutive.
    let (_mesh, a, b, first) = pair_with_open_flow().await;
    let mut open = vec![first];
    for byte in 2..=4u8 {
        open.push(open_echoed_flow(listener_addr(&a, "in"), byte).await);
    }
    let mut ids: Vec<u64> = a.flows().iter().map(|f| f.id).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 4, "{ids:?}");
    let consecutive = ids.windows(2).filter(|w| w[1] - w[0] == 1).count();
    assert_eq!(consecutive, 0, "flow ids counted up: {ids:?}");
    // The id travels with the flow: the exit holds the same ones.
    let settled = eventually(T, || b.flows().len() == 4).await;
    assert!(settled, "the exit holds {} flows", b.flows().len());
    let mut at_exit: Vec<u64> = b.flows().iter().map(|f| f.id).collect();
    at_exit.sort_unstable();
    assert_eq!(at_exit, ids);
    drop(open);
}
