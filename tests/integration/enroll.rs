//! Mesh enrollment end to end: a fresh mesh made by `mesh init`, machines enrolled with
//! `mesh join` (each with its own directory and its own key), flows through them, every
//! refusal, removal with revocation, and renewal under a live flow.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use proxy::Node;
use proxy::config::scheduler::{self as sched_config, SchedulerConfig};
use proxy::join::{JoinError, JoinOptions, Joined};
use proxy::scheduler::Scheduler;
use proxy::scheduler::enrollment::{create_token, remove_node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A mesh made by `mesh init` in a temporary directory, with its scheduler running.
struct FreshMesh {
    dir: PathBuf,
    config: SchedulerConfig,
    scheduler: Scheduler,
    addr: String,
}

impl FreshMesh {
    /// `mesh init`, then the scheduler on loopback with `settings` added to its config.
    async fn start(settings: &str) -> FreshMesh {
        let dir = std::env::temp_dir().join(format!("proxy-enroll-{}-{}", std::process::id(), rand_suffix()));
        proxy::pki::init_mesh(&dir.join("mesh"), &[]).expect("mesh init");
        let yaml_path = dir.join("mesh/scheduler.yaml");
        let original = std::fs::read_to_string(&yaml_path).expect("read");
        let yaml = common::scheduler_config::with_settings(&original, settings);
        std::fs::write(&yaml_path, yaml).expect("write");
        let config = sched_config::load(&yaml_path).expect("scheduler config");
        let scheduler = Scheduler::start(config.clone()).await.expect("scheduler");
        let addr = scheduler.local_addr().expect("addr").to_string();
        FreshMesh { dir, config, scheduler, addr }
    }

    fn token(&self, node_id: Option<&str>, ttl: Duration, uses: u32) -> String {
        create_token(&self.config, node_id.map(str::to_string), Vec::new(), ttl, uses)
            .expect("token")
            .encode()
    }

    fn token_with_groups(&self, groups: &[&str]) -> String {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        create_token(&self.config, None, groups, Duration::from_secs(600), 1).expect("token").encode()
    }

    fn options(&self, id: &str, token: &str, dir: &str) -> JoinOptions {
        JoinOptions {
            scheduler: self.addr.clone(),
            token: token.to_string(),
            node_id: id.to_string(),
            region: format!("region-{id}"),
            dir: self.dir.join(dir),
            state_dir: None,
            bind: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
        }
    }

    async fn join(&self, id: &str, token: &str) -> Result<Joined, JoinError> {
        proxy::join::join(&self.options(id, token, id)).await
    }

    /// Starts the node a join wrote, with `extra` YAML appended and `allow` as its exit
    /// policy, heartbeats every `heartbeat`.
    async fn start_node(&self, joined: &Joined, extra: &str, allow: &str, heartbeat: &str) -> Node {
        let text = std::fs::read_to_string(&joined.config).expect("read config");
        let text = text.replace("allow: []", &format!("allow: [{allow}]")).replace(
            "scheduler:\n",
            &format!("scheduler:\n  heartbeat_interval: \"{heartbeat}\"\n  retry_interval: \"200ms\"\n"),
        );
        std::fs::write(&joined.config, format!("{text}{extra}")).expect("write config");
        let config = proxy::config::load(&joined.config).expect("the written config is valid");
        Node::start(config).await.expect("start")
    }
}

impl Drop for FreshMesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Whether `node` comes to hold a live link to `peer` (introduced by the scheduler: the
/// node may not know the peer yet when this is called).
async fn meets(node: &Node, peer: &str) -> bool {
    eventually(Duration::from_secs(15), || node.peers().iter().any(|p| p.id == peer && p.connected)).await
}

fn refusal(result: Result<Joined, JoinError>) -> String {
    match result {
        Err(JoinError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_machines_join_a_fresh_mesh_and_carry_a_flow_through_the_middle_one() {
    // The operator pins the route through b: the measured best path is the direct one.
    let mesh = FreshMesh::start("pins: [ { node: a, route: to-c, relays: [b] } ]\n").await;
    let token = mesh.token(None, HOUR, 3);
    let (ja, jb, jc) = (
        mesh.join("a", &token).await.expect("a joins"),
        mesh.join("b", &token).await.expect("b joins"),
        mesh.join("c", &token).await.expect("c joins"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(mesh.dir.join("a/node.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let cert = std::fs::read_to_string(mesh.dir.join("b/node.crt")).expect("cert");
    let (from, to) = proxy::pki::validity(&cert).expect("validity");
    assert!(to - from <= 90 * 86_400 + 600, "lifetime at most 90 days");
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let c = mesh.start_node(&jc, "", "\"127.0.0.1/32\"", "1s").await;
    let b = mesh.start_node(&jb, "", "", "1s").await;
    let route = format!(
        "listeners:\n  - name: in\n    bind: \"127.0.0.1:0\"\nroutes:\n  - name: to-c\n    match: {{ listener: in }}\n    target: \"{target}\"\n    exit: c\n    via: [b]\n"
    );
    let a = mesh.start_node(&ja, &route, "", "1s").await;
    // No node has a peer in its config: the scheduler introduces them to each other.
    assert!(meets(&a, "b").await, "a meets b");
    assert!(meets(&b, "c").await, "b meets c");
    let mut nodes = mesh.scheduler.nodes();
    nodes.sort();
    assert_eq!(nodes, ["a", "b", "c"]);
    exchange_both_ways(listener_addr(&a, "in"), server, 4 << 20).await;
    assert_eq!(b.stats().flows_relayed, 1, "the flow went through b");
    assert_eq!(settled(1, || c.stats().flows_exited).await, 1, "and exited at c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_join_says_why_and_writes_nothing() {
    let mesh = FreshMesh::start("").await;
    let one_use = mesh.token(None, HOUR, 1);
    mesh.join("x", &one_use).await.expect("x joins");

    let unknown = {
        let fp = one_use.rsplit('-').next().expect("fingerprint");
        format!("pxj1-{}-{fp}", "ab".repeat(32))
    };
    assert!(refusal(mesh.join("y", &unknown).await).contains("unknown join token"));
    assert!(refusal(mesh.join("y", &one_use).await).contains("already used"));
    let bound = mesh.token(Some("p"), HOUR, 1);
    assert!(refusal(mesh.join("q", &bound).await).contains("is for node `p`"));
    let fresh = mesh.token(None, HOUR, 1);
    let taken = refusal(proxy::join::join(&mesh.options("x", &fresh, "x-again")).await);
    assert!(taken.contains("already in the mesh") && taken.contains("proxy mesh remove x"), "{taken}");
    mesh.join("p", &bound).await.expect("the bound token still enrolls its node");
    mesh.join("z", &fresh).await.expect("a refused id did not use the token up");

    let short = mesh.token(None, Duration::from_secs(1), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(refusal(mesh.join("w", &short).await).contains("expired"));

    // A token of another mesh: the scheduler's certificate does not chain to the CA the
    // token names, so the secret is never sent.
    let other = FreshMesh::start("").await;
    let foreign = other.token(None, HOUR, 1);
    match mesh.join("v", &foreign).await {
        Err(JoinError::Failed(e)) => {
            assert!(format!("{e:#}").contains("cannot reach the scheduler"), "{e:#}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(matches!(mesh.join("v", "pxj1-nonsense").await, Err(JoinError::Usage(_))));
    assert!(matches!(mesh.join("Bad_Id", &fresh).await, Err(JoinError::Usage(_))));
    assert!(matches!(mesh.join("scheduler", &fresh).await, Err(JoinError::Usage(_))));
    for refused in ["y", "q", "w", "v"] {
        assert_eq!(files_in(&mesh.dir.join(refused)), 0, "nothing written for refused `{refused}`");
    }
    // A directory that holds a node already is not overwritten.
    let again = mesh.token(None, HOUR, 1);
    let mut options = mesh.options("n", &again, "x");
    options.node_id = "n".into();
    assert!(
        matches!(proxy::join::join(&options).await, Err(JoinError::Usage(m)) if m.contains("already exists"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_from_one_address_are_held_off() {
    let mesh = FreshMesh::start("").await;
    let good = mesh.token(None, HOUR, 1);
    let fp = good.rsplit('-').next().expect("fingerprint").to_string();
    for i in 0..5u8 {
        let guess = format!("pxj1-{}-{fp}", format!("{i:02x}").repeat(32));
        assert!(refusal(mesh.join("g", &guess).await).contains("unknown join token"));
    }
    let held = refusal(mesh.join("g", &good).await);
    assert!(held.contains("too many failed join attempts"), "{held}");
}

/// A join connection from `local` (a loopback address) to the mesh's scheduler that
/// completes the handshake and then sends nothing.
async fn silent_join(scheduler: &str, token: &str, local: &str) -> (quinn::Endpoint, quinn::Connection) {
    let ca_fingerprint = proxy::core::join_token::JoinToken::parse(token).expect("token").ca_fingerprint;
    let crypto = proxy::tls::join_client_config(ca_fingerprint).expect("client config");
    let mut endpoint = quinn::Endpoint::client(format!("{local}:0").parse().expect("addr")).expect("bind");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = endpoint
        .connect(scheduler.parse().expect("addr"), "scheduler")
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, conn)
}

/// The close code the scheduler closed `conn` with, once it has.
async fn close_code(conn: &quinn::Connection) -> u64 {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("expected the scheduler to close the connection, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_source_do_not_keep_another_from_joining() {
    use proxy::core::control::close_codes::{BUSY, TIMED_OUT};
    let mesh = FreshMesh::start("").await;
    let token = mesh.token(None, HOUR, 1);
    // 127.0.0.2 opens ten connections at once and sends nothing: it gets its share of the
    // slots (two), the rest are turned away at once. At once, so all ten are in well
    // within the first-byte deadline (3 s) that frees the two.
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (addr, token) = (mesh.addr.clone(), token.clone());
        opening.spawn(async move { silent_join(&addr, &token, "127.0.0.2").await });
    }
    let mut silent = Vec::new();
    while let Some(opened) = opening.join_next().await {
        silent.push(opened.expect("handshake task"));
    }
    let closed = |silent: &[(quinn::Endpoint, quinn::Connection)]| {
        silent.iter().filter(|(_, c)| c.close_reason().is_some()).count()
    };
    assert!(
        eventually(Duration::from_secs(2), || closed(&silent) >= 8).await,
        "the extra ones are turned away"
    );
    let (turned_away, held): (Vec<_>, Vec<_>) = silent.iter().partition(|(_, c)| c.close_reason().is_some());
    assert_eq!(held.len(), 2, "one source holds two slots");
    for (_, conn) in turned_away {
        assert_eq!(close_code(conn).await, u64::from(BUSY));
    }
    // Another source joins while they are held.
    mesh.join("x", &token).await.expect("a join from 127.0.0.1 is served");
    for (_, conn) in held {
        assert_eq!(close_code(conn).await, u64::from(TIMED_OUT), "a silent connection is timed out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_join_connection_is_closed_within_the_deadline_and_counts_as_a_failure() {
    use proxy::core::control::close_codes::TIMED_OUT;
    use proxy::scheduler::join_session::FIRST_BYTE_DEADLINE;
    let mesh = FreshMesh::start("").await;
    let good = mesh.token(None, HOUR, 1);
    let fp = good.rsplit('-').next().expect("fingerprint").to_string();
    // Four failures of five allowed...
    for i in 0..4u8 {
        let guess = format!("pxj1-{}-{fp}", format!("{i:02x}").repeat(32));
        assert!(refusal(mesh.join("g", &guess).await).contains("unknown join token"));
    }
    // ...and a connection that never sends its request is the fifth.
    let (_endpoint, conn) = silent_join(&mesh.addr, &good, "127.0.0.1").await;
    let opened = std::time::Instant::now();
    assert_eq!(close_code(&conn).await, u64::from(TIMED_OUT));
    let waited = opened.elapsed();
    // Not before the deadline; well before anything else would close it (the upper bound
    // is loose: a loaded machine may be slow to run the close).
    assert!(
        waited >= FIRST_BYTE_DEADLINE - Duration::from_millis(500) && waited < FIRST_BYTE_DEADLINE * 4,
        "closed after {waited:?}, the deadline is {FIRST_BYTE_DEADLINE:?}"
    );
    let held = refusal(mesh.join("g", &good).await);
    assert!(held.contains("too many failed join attempts from 127.0.0.1"), "{held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_cut_off_within_a_heartbeat_and_cannot_come_back() {
    let mesh = FreshMesh::start("").await;
    let token = mesh.token(None, HOUR, 3);
    let heartbeat = Duration::from_secs(3);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let joined = mesh.join(id, &token).await.expect("join");
        nodes.push(mesh.start_node(&joined, "", "", "3s").await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert!(meets(a, "c").await);
    assert!(meets(b, "c").await);
    assert!(meets(a, "b").await);

    let removed = remove_node(&mesh.config, "c").expect("remove").expect("c was a member");
    assert_eq!(removed.certs.len(), 1);
    assert!(remove_node(&mesh.config, "nobody").expect("remove").is_none());
    let linked_to_c = |n: &Node| n.peers().iter().any(|p| p.id == "c" && p.connected);
    let cut = eventually(heartbeat, || !linked_to_c(a) && !linked_to_c(b)).await;
    assert!(cut, "a and b dropped c within one heartbeat ({heartbeat:?})");
    assert!(eventually(heartbeat, || !mesh.scheduler.nodes().contains(&"c".to_string())).await);

    // c keeps trying, with its certificate, and gets nowhere; a and b keep their link.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!linked_to_c(a) && !linked_to_c(b));
    assert!(c.peers().iter().all(|p| !p.connected), "c has no link left");
    assert!(a.peers().iter().any(|p| p.id == "b" && p.connected));
    let client =
        raw_client(&mesh.dir.join("c/node.crt"), &mesh.dir.join("c/node.key"), &mesh.dir.join("c/ca.crt"));
    let dial = client.connect(a.mesh_addr().expect("addr"), "a").expect("connect");
    // The client side of TLS 1.3 finishes before the server has checked its certificate:
    // the refusal arrives as the connection's close.
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        match dial.await {
            Err(e) => e.to_string(),
            Ok(conn) => conn.closed().await.to_string(),
        }
    })
    .await
    .expect("answered");
    assert!(outcome.contains("Revoked"), "a refuses c's certificate in the handshake: {outcome}");
    // Links over TCP check the same revocations, in their outer TLS handshake.
    let tcp = a.tcp_links_addr().expect("a accepts links over TCP on its QUIC port number");
    let c_identity = proxy::tls::TlsIdentity::load(
        &mesh.dir.join("c/node.crt"),
        &mesh.dir.join("c/node.key"),
        &mesh.dir.join("c/ca.crt"),
        "c",
    )
    .expect("c's identity");
    let connector = tokio_rustls::TlsConnector::from(c_identity.tcp_client_config().expect("config"));
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let stream = tokio::net::TcpStream::connect(tcp).await.expect("tcp connect");
        let name = rustls::pki_types::ServerName::try_from("a").expect("name");
        match connector.connect(name, stream).await {
            Err(e) => e.to_string(),
            // TLS 1.3 again: the server's refusal is the first thing read.
            Ok(mut tls) => match tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await {
                Err(e) => e.to_string(),
                Ok(n) => format!("read {n} bytes"),
            },
        }
    })
    .await
    .expect("answered");
    assert!(outcome.contains("Revoked"), "a refuses c's certificate on a TCP link: {outcome}");
    assert!(mesh.dir.join("a/data/revocations.bin").is_file(), "a keeps the revocations across restarts");

    // Whoever holds a general token cannot take the removed id (and its place in other
    // nodes' routes); the refusal says what the operator does instead, and the token keeps
    // its use.
    let general = mesh.token(None, HOUR, 1);
    let taken = proxy::join::join(&mesh.options("c", &general, "c-squat")).await;
    let Err(JoinError::Refused(reason)) = taken else {
        panic!("a general token took a removed id: {taken:?}")
    };
    assert!(reason.contains("token create --node-id c"), "{reason}");
    proxy::join::join(&mesh.options("d", &general, "d")).await.expect("the general token kept its use");
    // The operator may enroll the id again, with a token made for it and a new key.
    let again = mesh.token(Some("c"), HOUR, 1);
    proxy::join::join(&mesh.options("c", &again, "c-again")).await.expect("c joins again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renews_its_certificate_without_dropping_a_flow() {
    let mesh = FreshMesh::start("node_cert_lifetime: \"12s\"\n").await;
    let token = mesh.token(None, HOUR, 1);
    let echo = echo_server().await;
    let jc = mesh.join("c", &token).await.expect("c joins");
    // a's token puts it in two groups: its certificate says so, and renewals keep them.
    let ja = mesh.join("a", &mesh.token_with_groups(&["backend", "eu"])).await.expect("a joins");
    let c = mesh.start_node(&jc, "", "\"127.0.0.1/32\"", "1s").await;
    let route = format!(
        "listeners:\n  - name: in\n    bind: \"127.0.0.1:0\"\nroutes:\n  - name: to-c\n    match: {{ listener: in }}\n    target: \"{echo}\"\n    exit: c\n"
    );
    let a = mesh.start_node(&ja, &route, "", "1s").await;
    assert!(meets(&a, "c").await);
    let first = std::fs::read_to_string(ja.config.with_file_name("node.crt")).expect("cert");
    assert_eq!(groups(&first), ["backend", "eu"]);
    let c_cert = std::fs::read_to_string(jc.config.with_file_name("node.crt")).expect("cert");
    assert!(groups(&c_cert).is_empty(), "a token without groups grants none");

    // One flow, echoing a chunk every 100 ms for 15 s: past the renewals (every 4 s after
    // the first 8 s) and past the first certificate's expiry.
    let mut flow = connect(listener_addr(&a, "in")).await;
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let mut pattern = Pattern::new(7);
    for _ in 0..150 {
        let mut chunk = vec![0u8; 1024];
        pattern.fill(&mut chunk);
        flow.write_all(&chunk).await.expect("write");
        let mut back = vec![0u8; 1024];
        tokio::time::timeout(Duration::from_secs(5), flow.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        sent.extend_from_slice(&chunk);
        got.extend_from_slice(&back);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sha256(&sent), sha256(&got), "the flow carried every byte across the renewals");
    let now = std::fs::read_to_string(ja.config.with_file_name("node.crt")).expect("cert");
    assert_ne!(first, now, "the certificate on disk was renewed");
    assert_eq!(groups(&now), ["backend", "eu"], "the renewed certificate keeps the groups");
    let (_, not_after) = proxy::pki::validity(&now).expect("validity");
    assert!(
        not_after
            > std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
                as i64,
        "the one on disk is valid now"
    );

    // A restart presents the renewed certificate, and c accepts it.
    drop(flow);
    a.shutdown().await;
    let config = proxy::config::load(&ja.config).expect("config");
    let a = Node::start(config).await.expect("restart with the renewed certificate");
    assert!(meets(&a, "c").await);
    drop(c);
}

/// The groups a PEM certificate names.
fn groups(cert_pem: &str) -> Vec<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    proxy::pki::groups_in_cert(&der)
}

/// `mesh join --state-dir`: the config directory gets only what the operator owns (the
/// key, the CA, the config); the certificate the node renews in place and its data
/// directory are in the state directory, so the config directory can be read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joined_with_a_state_dir_renews_its_certificate_there_and_writes_nothing_in_its_config_dir() {
    let mesh = FreshMesh::start("node_cert_lifetime: \"12s\"\n").await;
    let token = mesh.token(None, HOUR, 1);
    let (etc, state) = (mesh.dir.join("etc-s"), mesh.dir.join("state-s"));
    let options = JoinOptions { state_dir: Some(state.clone()), ..mesh.options("s", &token, "etc-s") };
    let joined = proxy::join::join(&options).await.expect("s joins");
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&etc), ["ca.crt", "config.yaml", "node.key"]);
    assert_eq!(listing(&state), ["node.crt"]);
    let config = proxy::config::load(&joined.config).expect("the written config is valid");
    let state = std::fs::canonicalize(&state).expect("canonical");
    assert_eq!(config.mesh.cert, state.join("node.crt"));
    assert_eq!(config.mesh.data_dir, state.join("data"));

    let first = std::fs::read_to_string(state.join("node.crt")).expect("cert");
    let node = mesh.start_node(&joined, "", "", "1s").await;
    // Renewal is due after two thirds of the 12 s lifetime.
    let renewed = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("node.crt")).is_ok_and(|now| now != first)
    })
    .await;
    assert!(renewed, "the certificate in the state directory was not renewed");
    assert_eq!(
        listing(&etc),
        ["ca.crt", "config.yaml", "node.key"],
        "the node wrote in its config directory"
    );
    node.shutdown().await;
}
