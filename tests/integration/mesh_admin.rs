//! Operating a live mesh from where its scheduler runs, with the real binary: `mesh token
//! list` and `revoke` (a revoked token is refused at join while another still works),
//! `mesh nodes` (address, certificate expiry, last seen, removal), `status --json` against
//! a node and the scheduler, and `proxy_cert_expiry_seconds` following a renewal. The same
//! commands on a registry in etcd when etcd is installed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::process::proxy;
use common::*;
use proxy::Node;
use proxy::config::scheduler::{self as sched_config, SchedulerConfig};
use proxy::join::{JoinOptions, Joined};
use proxy::scheduler::Scheduler;
use serde_json::Value;

/// A mesh made by `mesh init`, its scheduler running in this process on loopback.
struct LiveMesh {
    dir: PathBuf,
    yaml: PathBuf,
    scheduler: Scheduler,
    addr: String,
}

impl LiveMesh {
    async fn start(tag: &str, settings: &str) -> LiveMesh {
        let dir = common::process::temp(tag);
        let init = proxy().args(["mesh", "init", "--dir"]).arg(dir.join("mesh")).output().expect("run");
        assert!(init.status.success(), "mesh init: {}", text(&init.stderr));
        let yaml = dir.join("mesh/scheduler.yaml");
        let original = std::fs::read_to_string(&yaml).expect("read");
        let changed = common::scheduler_config::with_settings(&original, settings);
        std::fs::write(&yaml, changed).expect("write");
        let config = sched_config::load(&yaml).expect("scheduler config");
        let scheduler = Scheduler::start(config).await.expect("scheduler");
        let addr = scheduler.local_addr().expect("addr").to_string();
        LiveMesh { dir, yaml, scheduler, addr }
    }

    /// `proxy ARGS -c scheduler.yaml`.
    fn run(&self, args: &[&str]) -> Output {
        let output = proxy().args(args).arg("-c").arg(&self.yaml).output().expect("run proxy");
        eprintln!("proxy {args:?}: {}\n{}{}", output.status, text(&output.stdout), text(&output.stderr));
        output
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        assert!(output.status.success(), "{args:?} failed");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
    }

    fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["mesh", "token", "create", "--ttl", "1h"];
        args.extend_from_slice(extra);
        let output = self.run(&args);
        assert!(output.status.success());
        text(&output.stdout).trim().to_string()
    }

    async fn join(&self, id: &str, token: &str) -> Result<Joined, proxy::join::JoinError> {
        proxy::join::join(&JoinOptions {
            scheduler: self.addr.clone(),
            token: token.to_string(),
            node_id: id.to_string(),
            region: format!("region-{id}"),
            dir: self.dir.join(id),
            state_dir: None,
            bind: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
        })
        .await
    }

    async fn start_node(joined: &Joined) -> Node {
        let text = std::fs::read_to_string(&joined.config).expect("read config");
        let text = text.replace(
            "scheduler:\n",
            "scheduler:\n  heartbeat_interval: \"1s\"\n  retry_interval: \"200ms\"\n",
        );
        std::fs::write(&joined.config, text).expect("write config");
        Node::start(proxy::config::load(&joined.config).expect("config")).await.expect("start")
    }
}

impl Drop for LiveMesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The id `mesh token list` gives the token `text`: the start of the SHA-256 of its secret.
fn token_id(text: &str) -> String {
    let token = proxy::core::join_token::JoinToken::parse(text).expect("a token");
    proxy::core::join_token::hex(&token.hash())[..12].to_string()
}

fn find<'a>(list: &'a Value, key: &str, field: &str, want: &str) -> &'a Value {
    list[key]
        .as_array()
        .and_then(|l| l.iter().find(|t| t[field] == want))
        .unwrap_or_else(|| panic!("no {field} = {want} in {list}"))
}

/// `mesh nodes --json`, polled until `ready` holds for it (the presence record is written
/// within seconds of a session starting or ending), at most 15 s.
async fn nodes_when(mesh: &LiveMesh, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = mesh.json(&["mesh", "nodes", "--json"]);
        if ready(&nodes) || tokio::time::Instant::now() >= deadline {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn not_after(cert: &Path) -> i64 {
    proxy::pki::validity(&std::fs::read_to_string(cert).expect("cert")).expect("validity").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_and_nodes_listed_with_expiry_and_last_seen() {
    let mesh = LiveMesh::start("mesh-admin", "").await;
    let shared = mesh.token(&["--uses", "2", "--groups", "backend"]);
    let other = mesh.token(&["--node-id", "b"]);
    let (shared_id, other_id) = (token_id(&shared), token_id(&other));

    let list = mesh.json(&["mesh", "token", "list", "--json"]);
    let entry = find(&list, "tokens", "id", &shared_id);
    assert_eq!(entry["state"], "usable");
    assert_eq!((entry["uses_left"].as_u64(), entry["uses_total"].as_u64()), (Some(2), Some(2)));
    assert_eq!(entry["groups"], serde_json::json!(["backend"]));
    assert_eq!(entry["node_id"], Value::Null);
    let expires = entry["expires_unix"].as_i64().expect("expiry");
    assert!((expires - now() - 3600).abs() < 60, "{entry}");
    assert!((entry["created_unix"].as_i64().expect("created") - now()).abs() < 60);
    assert_eq!(find(&list, "tokens", "id", &other_id)["node_id"], "b");
    let table = text(&mesh.run(&["mesh", "token", "list"]).stdout);
    assert!(table.starts_with("ID ") && table.contains(&shared_id) && table.contains("2/2"), "{table}");

    // One use of the shared token, then it is revoked: the next join with it is refused.
    let joined_a = mesh.join("a", &shared).await.expect("a joins");
    let list = mesh.json(&["mesh", "token", "list", "--json"]);
    assert_eq!(find(&list, "tokens", "id", &shared_id)["uses_left"], 1);
    let revoke = mesh.run(&["mesh", "token", "revoke", &shared_id]);
    assert!(revoke.status.success());
    assert!(text(&revoke.stdout).contains(&format!("revoked token {shared_id}")));
    let list = mesh.json(&["mesh", "token", "list", "--json"]);
    let entry = find(&list, "tokens", "id", &shared_id);
    assert_eq!(entry["state"], "revoked");
    assert!(entry["revoked_unix"].as_i64().is_some());
    let again = mesh.run(&["mesh", "token", "revoke", &shared_id]);
    assert!(again.status.success() && text(&again.stdout).contains("revoked already"));

    // The user's view of the refusal: the binary's join, exit 1, says why.
    let refused = proxy()
        .args(["mesh", "join", "--no-start", "--scheduler", &mesh.addr, "--node-id", "c", "--region", "eu"])
        .args(["--bind", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--dir"])
        .arg(mesh.dir.join("c"))
        .env("PROXY_JOIN_TOKEN", &shared)
        .output()
        .expect("run join");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("the join token was revoked"), "{}", text(&refused.stderr));
    // Another token still works.
    let joined_b = mesh.join("b", &other).await.expect("b joins with its own token");

    // Bad input: exit 2 with the reason.
    for (args, says) in [
        (&["mesh", "token", "revoke", "0123456789ab"][..], "no token has the id `0123456789ab`"),
        (&["mesh", "token", "revoke", "xyz"][..], "is not a token id"),
        (&["mesh", "token", "list", "--bogus"][..], "--bogus"),
        (&["mesh", "nodes", "--json", "extra"][..], "extra"),
    ] {
        let output = mesh.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(text(&output.stderr).contains(says), "{args:?}: {}", text(&output.stderr));
    }
    let missing =
        proxy().args(["mesh", "nodes", "-c"]).arg(mesh.dir.join("none.yaml")).output().expect("run");
    assert_eq!(missing.status.code(), Some(2), "a config that is not there: {}", text(&missing.stderr));

    // Both nodes run: `mesh nodes` lists them with address, expiry and last seen.
    let a = LiveMesh::start_node(&joined_a).await;
    let b = LiveMesh::start_node(&joined_b).await;
    let nodes = nodes_when(&mesh, |n| {
        n["nodes"].as_array().is_some_and(|l| l.len() == 2 && l.iter().all(|n| n["connected"] == true))
    })
    .await;
    let node_a = find(&nodes, "nodes", "id", "a");
    assert_eq!(node_a["region"], "region-a");
    assert!(node_a["address"].as_str().is_some_and(|x| x.starts_with("127.0.0.1:")), "{nodes}");
    assert_eq!(node_a["groups"], serde_json::json!(["backend"]));
    assert_eq!(
        node_a["cert_expires_unix"].as_i64(),
        Some(not_after(&joined_a.config.with_file_name("node.crt")))
    );
    assert!((node_a["last_seen_unix"].as_i64().expect("seen") - now()).abs() < 60, "{nodes}");
    assert_eq!(node_a["removed_unix"], Value::Null);
    let table = text(&mesh.run(&["mesh", "nodes"]).stdout);
    assert!(
        table.starts_with("ID ") && table.contains("CERT EXPIRES") && table.contains("connected"),
        "{table}"
    );

    // `status --json` against a live node and the live scheduler.
    let status =
        proxy().args(["status", "--json", "--admin"]).arg(a.admin_addr().to_string()).output().expect("run");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let doc: Value = serde_json::from_slice(&status.stdout).expect("status --json is JSON");
    assert_eq!((doc["format"].as_u64(), doc["node_id"].as_str()), (Some(1), Some("a")));
    assert!(
        doc["config_version"].as_u64().is_some()
            && doc["peers"].is_array()
            && doc["busiest_flows"].is_array()
    );
    let admin = mesh.scheduler.admin_addr().to_string();
    let doc = nodes_of_scheduler(&admin).await;
    assert_eq!(doc["format"], 1);
    let ids: Vec<&str> =
        doc["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["id"].as_str()).collect();
    assert!(ids.contains(&"a") && ids.contains(&"b"), "{doc}");
    assert!(doc["links"].is_array() && doc["routes"].is_array());
    let bad = proxy().args(["status", "--json", "--admin", "127.0.0.1:1"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(1), "no node there: a runtime failure");

    // The certificate metrics of the node and the scheduler.
    let node_metrics = scrape(&a.metrics());
    let left = sample(&node_metrics, "proxy_cert_expiry_seconds", &[("cert", "node")]);
    let expected = not_after(&joined_a.config.with_file_name("node.crt")) - now();
    assert!((left - expected as f64).abs() <= 5.0, "node: {left} against {expected}");
    assert!(sample(&node_metrics, "proxy_cert_expiry_seconds", &[("cert", "ca")]) > left);
    let (status, body) =
        proxy::admin::http::get(&admin, "/metrics", None, Duration::from_secs(5)).await.expect("metrics");
    assert_eq!(status, 200);
    let scheduler_metrics = scrape(&body);
    let left = sample(&scheduler_metrics, "proxy_cert_expiry_seconds", &[("cert", "scheduler")]);
    let expected = not_after(&mesh.dir.join("mesh/scheduler.crt")) - now();
    assert!((left - expected as f64).abs() <= 5.0, "scheduler: {left} against {expected}");

    // b is removed: listed as removed, its session cut, its last sighting kept.
    assert!(mesh.run(&["mesh", "remove", "b"]).status.success());
    let nodes = nodes_when(&mesh, |n| {
        n["nodes"].as_array().is_some_and(|l| l.iter().any(|n| n["id"] == "b" && n["connected"] == false))
    })
    .await;
    let node_b = find(&nodes, "nodes", "id", "b");
    assert!(node_b["removed_unix"].as_i64().is_some(), "{nodes}");
    assert_eq!(node_b["cert_expires_unix"], Value::Null);
    assert!(node_b["last_seen_unix"].as_i64().is_some() && node_b["address"].is_string(), "{nodes}");
    let table = text(&mesh.run(&["mesh", "nodes"]).stdout);
    let row_b = table.lines().find(|l| l.starts_with("b ")).expect("b listed");
    assert!(row_b.trim_end().ends_with('Z'), "the removal time, in UTC: {table}");
    drop((a, b));
}

async fn nodes_of_scheduler(admin: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = proxy().args(["status", "--json", "--scheduler", admin]).output().expect("run");
        assert!(status.status.success(), "{}", text(&status.stderr));
        let doc: Value = serde_json::from_slice(&status.stdout).expect("status --scheduler --json is JSON");
        if doc["nodes"].as_array().is_some_and(|n| n.len() == 2) || tokio::time::Instant::now() >= deadline {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node's `proxy_cert_expiry_seconds{cert="node"}` follows its renewed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_expiry_metric_follows_a_renewal() {
    let mesh = LiveMesh::start("mesh-admin-renew", "node_cert_lifetime: \"12s\"\n").await;
    let token = mesh.token(&[]);
    let joined = mesh.join("a", &token).await.expect("joins");
    let cert = joined.config.with_file_name("node.crt");
    let first = std::fs::read_to_string(&cert).expect("cert");
    let a = LiveMesh::start_node(&joined).await;
    let left = sample(&scrape(&a.metrics()), "proxy_cert_expiry_seconds", &[("cert", "node")]);
    assert!((left - (not_after(&cert) - now()) as f64).abs() <= 2.0, "{left}");
    // Renewal at two thirds of 12 s; the renewed certificate is put in force, then written.
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(&cert).is_ok_and(|c| c != first))
            .await,
        "the certificate was renewed"
    );
    let renewed = not_after(&cert);
    assert!(renewed > proxy::pki::validity(&first).expect("validity").1);
    let left = sample(&scrape(&a.metrics()), "proxy_cert_expiry_seconds", &[("cert", "node")]);
    assert!((left - (renewed - now()) as f64).abs() <= 2.0, "{left} against the renewed {}", renewed - now());
    drop(a);
}

/// The same commands against a registry in etcd (skipped where etcd is not installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_list_revoke_and_nodes_work_on_a_registry_in_etcd() {
    let Some(cluster) = common::etcd::EtcdCluster::start_or_skip(1, "mesh-admin").await else { return };
    let list: Vec<String> = cluster.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    let settings = format!(
        "state:\n  etcd: [{}]\n  prefix: /proxy/mesh-admin\n  lease: \"2s\"\n  name: s1\n",
        list.join(", ")
    );
    let mesh = LiveMesh::start("mesh-admin-etcd", &settings).await;
    let config: SchedulerConfig = sched_config::load(&mesh.yaml).expect("config");
    assert!(config.etcd.is_some());
    let first = mesh.token(&[]);
    let second = mesh.token(&[]);
    let list = mesh.json(&["mesh", "token", "list", "--json"]);
    assert_eq!(find(&list, "tokens", "id", &token_id(&first))["state"], "usable");
    assert!(mesh.run(&["mesh", "token", "revoke", &token_id(&first)]).status.success());
    let refusal = match mesh.join("a", &first).await {
        Err(proxy::join::JoinError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refusal.contains("revoked"), "{refusal}");
    let joined = mesh.join("b", &second).await.expect("b joins with the other token");
    let b = LiveMesh::start_node(&joined).await;
    let nodes = nodes_when(&mesh, |n| find_node(n, "b").is_some_and(|b| b["connected"] == true)).await;
    let node_b = find(&nodes, "nodes", "id", "b");
    assert!(node_b["address"].as_str().is_some_and(|x| x.starts_with("127.0.0.1:")), "{nodes}");
    assert!(node_b["cert_expires_unix"].as_i64().is_some_and(|t| t > now()));
    drop(b);
}

fn find_node<'a>(nodes: &'a Value, id: &str) -> Option<&'a Value> {
    nodes["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}
