//! Hot reload: listeners, routes and peers change while the node runs; flows the change
//! does not concern go on byte-exact; a bad or restart-only config changes nothing.

use crate::common;

use std::time::Duration;

use common::*;
use proxy::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node with local-exit routes, one per `(listener, target)`, written as a config file.
fn yaml(mesh: &Mesh, routes: &[(&str, std::net::SocketAddr)]) -> String {
    let mut y = String::from(
        "common: { node_id: a, region: test, admin_addr: \"127.0.0.1:0\", log_level: warn }\nlisteners:\n",
    );
    for (name, _) in routes {
        y += &format!("  - {{ name: {name}, bind: \"127.0.0.1:0\" }}\n");
    }
    y += "routes:\n";
    for (name, target) in routes {
        y += &format!("  - {{ name: {name}, match: {{ listener: {name} }}, target: \"{target}\" }}\n");
    }
    y += &format!(
        "mesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt, data_dir: {} }}\n",
        path_str(&mesh.path("data-a"))
    );
    y
}

fn write(mesh: &Mesh, text: &str) -> std::path::PathBuf {
    let path = mesh.path("a.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

async fn echo_once(node: &Node, listener: &str, byte: u8) {
    let mut c = connect(listener_addr(node, listener)).await;
    c.write_all(&[byte; 100]).await.expect("write");
    let mut back = [0u8; 100];
    c.read_exact(&mut back).await.expect("echo");
    assert_eq!(back, [byte; 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_listeners_while_a_flow_on_a_third_goes_on() {
    let mesh = Mesh::new(&["a"]);
    let echo = echo_server().await;
    let path = write(&mesh, &yaml(&mesh, &[("keep", echo), ("old", echo)]));
    let node = Node::start(proxy::config::load(&path).expect("config")).await.expect("start");
    let old_addr = listener_addr(&node, "old");
    // A flow on `keep`, open across the reload, checked byte for byte.
    let (mut r, mut w) = connect(listener_addr(&node, "keep")).await.into_split();
    let mut pattern = Pattern::new(9);
    let mut sent = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    pattern.fill(&mut chunk);
    w.write_all(&chunk).await.expect("write");
    sent.extend_from_slice(&chunk);

    let report =
        node.reload_file(&write(&mesh, &yaml(&mesh, &[("keep", echo), ("new", echo)]))).expect("reload");
    assert_eq!(report.version, 2);
    assert!(
        report.summary.contains("listeners added [new]")
            && report.summary.contains("listeners removed [old]")
    );
    assert_eq!(node.config_version(), 2);
    let names: Vec<String> = node.listeners().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["keep", "new"]);
    echo_once(&node, "new", 7).await;
    assert!(tokio::net::TcpStream::connect(old_addr).await.is_err(), "the removed listener is closed");

    pattern.fill(&mut chunk);
    w.write_all(&chunk).await.expect("write after the reload");
    sent.extend_from_slice(&chunk);
    w.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read");
    assert!(got == sent, "the flow on `keep` lost or changed bytes across the reload");
    assert_eq!(node.stats().route_matches.iter().find(|(n, _)| n == "keep").map(|(_, m)| *m), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_restart_only_reload_changes_nothing() {
    let mesh = Mesh::new(&["a"]);
    let echo = echo_server().await;
    let good = yaml(&mesh, &[("web", echo)]);
    let path = write(&mesh, &good);
    let node = Node::start(proxy::config::load(&path).expect("config")).await.expect("start");
    let before = node.listeners();

    let invalid = node.reload_file(&write(&mesh, &good.replace("listener: web", "listener: nosuch")));
    let message = invalid.expect_err("an invalid config is refused").to_string();
    assert!(message.contains("routes[0].match"), "{message}");
    let restart = node.reload_file(&write(&mesh, &good.replace("region: test", "region: elsewhere")));
    assert!(restart.expect_err("refused").to_string().contains("need a restart: common"));
    // A listener that cannot be bound (the port is taken) refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port_taken = taken.local_addr().expect("addr");
    let text = yaml(&mesh, &[("web", echo), ("api", echo)])
        .replace("{ name: api, bind: \"127.0.0.1:0\" }", &format!("{{ name: api, bind: \"{port_taken}\" }}"));
    let bind = node.reload_file(&write(&mesh, &text));
    assert!(bind.expect_err("refused").to_string().contains("listeners.api"));

    assert_eq!(node.config_version(), 1);
    assert_eq!(node.listeners(), before);
    echo_once(&node, "web", 3).await;

    // Each refusal is an event on the node's console, with its reason.
    let (status, body) = proxy::admin::http::get(
        &node.admin_addr().to_string(),
        "/api/console/state",
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("console state");
    assert_eq!(status, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).expect("json");
    let refused: Vec<&str> = state["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "reload_refused")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().any(|t| t.contains("need a restart: common")), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_peer_and_a_route_through_it() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec![echo.to_string()];
    let b = b.start(&mesh).await;
    let path = write(&mesh, &yaml(&mesh, &[("local", echo)]));
    let a = Node::start(proxy::config::load(&path).expect("config")).await.expect("start");
    let text = yaml(&mesh, &[("local", echo), ("remote", echo)])
        .replace(
            &format!("{{ name: remote, match: {{ listener: remote }}, target: \"{echo}\" }}"),
            &format!("{{ name: remote, match: {{ listener: remote }}, target: \"{echo}\", exit: b }}"),
        )
        .replace(
            "routes:\n",
            &format!("peers:\n  - {{ name: b, address: \"{}\" }}\nroutes:\n", b.mesh_addr().expect("addr")),
        );
    a.reload_file(&write(&mesh, &text)).expect("reload");
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "the new peer is dialed");
    echo_once(&a, "remote", 5).await;
    assert_eq!(b.stats().flows_exited, 1);
    // Removing the peer again closes its link.
    a.reload_file(&write(&mesh, &yaml(&mesh, &[("local", echo)]))).expect("reload");
    assert!(eventually(Duration::from_secs(5), || !a.peers().iter().any(|p| p.id == "b")).await);
    assert!(eventually(Duration::from_secs(5), || b.peers().iter().all(|p| !p.connected)).await);
    // And it stays gone: no dial loop survives the removal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!a.peers().iter().any(|p| p.id == "b") && b.peers().iter().all(|p| !p.connected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_admin_token_and_the_log_settings_live() {
    let mesh = Mesh::new(&["a"]);
    let echo = echo_server().await;
    let good = yaml(&mesh, &[("web", echo)]);
    let node = Node::start(proxy::config::load(&write(&mesh, &good)).expect("config")).await.expect("start");
    let admin = node.admin_addr().to_string();
    let status = |token: Option<&'static str>| {
        let admin = admin.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&admin).await.expect("admin API");
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let request =
                format!("GET /api/stats HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.expect("write");
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.expect("read");
            answer.split_whitespace().nth(1).unwrap_or_default().to_string()
        }
    };
    assert_eq!(status(None).await, "200");
    // A console live stream opened under the old rules ends when they change.
    let mut live = tokio::net::TcpStream::connect(&admin).await.expect("admin API");
    let request = format!("GET /api/console/live HTTP/1.1\r\nHost: {admin}\r\n\r\n");
    live.write_all(request.as_bytes()).await.expect("write");
    let mut first = vec![0u8; 4096];
    let n = live.read(&mut first).await.expect("the stream's first bytes");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let token = "a-new-admin-token-0123";
    let with_token = good.replace(
        "log_level: warn }",
        &format!("log_level: \"warn,proxy::node=debug\", admin_token: {token} }}"),
    );
    let report = node.reload_file(&write(&mesh, &with_token)).expect("applied");
    assert!(report.summary.contains("admin token changed"), "{}", report.summary);
    assert!(report.summary.contains("log settings changed"), "{}", report.summary);
    assert_eq!(status(None).await, "401", "the new token is required at once");
    assert_eq!(status(Some(token)).await, "200");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), live.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the live stream must end when the token changes");
    echo_once(&node, "web", 3).await;
}
