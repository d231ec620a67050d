//! Several schedulers, one mesh (`state.etcd`): a real 3-member etcd cluster on loopback,
//! two schedulers and a few nodes. A killed leader is replaced and route updates resume;
//! joins in flight when it dies complete or fail cleanly, with every token use accounted
//! for; a killed etcd member changes nothing; a leader cut off from etcd steps down
//! without two schedulers ever leading at once; nodes keep their flows throughout.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::etcd::{EtcdCluster, TcpRelay};
use common::process::{KillOnDrop, proxy};
use common::*;
use proxy::Scheduler;
use proxy::config::scheduler as sched_config;
use proxy::scheduler::enrollment::store::RegistryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A scheduler config for `mesh` sharing `endpoints`, named `name`, on `port`.
fn scheduler_yaml(name: &str, port: u16, admin: u16, endpoints: &[String]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "bind: \"127.0.0.1:{port}\"\nadmin_addr: \"127.0.0.1:{admin}\"\ncert: scheduler.crt\nkey: scheduler.key\n\
         ca: ca.crt\nca_key: ca.key\nrecompute_interval: \"200ms\"\ndata_dir: state-{name}\n\
         state:\n  etcd: [{}]\n  prefix: /proxy/test\n  lease: \"2s\"\n  name: {name}\n",
        list.join(", ")
    )
}

fn ha_mesh(nodes: &[&str]) -> Mesh {
    let mesh = Mesh::new(nodes);
    mesh.issue("scheduler", "scheduler");
    std::fs::write(mesh.path("ca.key"), mesh.ca.key_pem()).expect("ca key");
    mesh
}

/// `proxy_scheduler_leader` from the admin API at `admin`; `None` while it does not answer.
async fn leads(admin: SocketAddr) -> Option<bool> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(admin))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await.ok()?.ok()?;
    body.lines().find_map(|l| l.strip_prefix("proxy_scheduler_leader ")).map(|v| v.trim() == "1")
}

async fn wait_leads(admin: SocketAddr, want: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if leads(admin).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A scheduler process on its config; killed (SIGKILL) when dropped.
fn spawn_scheduler(mesh: &Mesh, name: &str, yaml: &str) -> KillOnDrop {
    let path = mesh.path(&format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write config");
    let log = std::fs::File::create(mesh.path(&format!("{name}.log"))).expect("log");
    KillOnDrop(
        proxy()
            .args(["scheduler", "-c"])
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start scheduler"),
    )
}

/// Two scheduler processes on a 3-member etcd cluster: the first leads, the second stands
/// by and turns nodes away to it. SIGKILL the leader: the standby takes over and route
/// updates resume, with versions above every one the nodes held, and an open flow goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_route_updates_resume() {
    let Some(cluster) = EtcdCluster::start_or_skip(3, "failover").await else { return };
    let mesh = ha_mesh(&["a", "b", "c"]);
    let (p1, p2) = (common::process::free_port(true), common::process::free_port(true));
    let (a1, a2) = (common::process::free_port(false), common::process::free_port(false));
    let admin1: SocketAddr = format!("127.0.0.1:{a1}").parse().expect("addr");
    let admin2: SocketAddr = format!("127.0.0.1:{a2}").parse().expect("addr");
    let mut s1 = spawn_scheduler(&mesh, "s1", &scheduler_yaml("s1", p1, a1, &cluster.endpoints()));
    assert!(wait_leads(admin1, true, Duration::from_secs(20)).await, "s1 never led");
    let _s2 = spawn_scheduler(&mesh, "s2", &scheduler_yaml("s2", p2, a2, &cluster.endpoints()));
    assert!(wait_leads(admin2, false, Duration::from_secs(20)).await, "s2 did not stand by");

    let echo = echo_server().await;
    // c lists the standby first: it is turned away and moves on to the leader.
    let mut c = NodeSpec::new("c");
    c.peers = vec![("a", String::new()), ("b", String::new())];
    c.allow = vec![echo.to_string()];
    c.scheduler = Some(format!("127.0.0.1:{p2},127.0.0.1:{p1}"));
    let c = c.start(&mesh).await;
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new()), ("c", c.mesh_addr().expect("addr").to_string())];
    b.scheduler = Some(format!("127.0.0.1:{p1},127.0.0.1:{p2}"));
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![
        ("b", b.mesh_addr().expect("addr").to_string()),
        ("c", c.mesh_addr().expect("addr").to_string()),
    ];
    a.routes = vec![("in", echo.to_string(), Some("c"))];
    a.scheduler = Some(format!("127.0.0.1:{p1},127.0.0.1:{p2}"));
    let a = a.start(&mesh).await;
    for node in [&a, &c] {
        assert!(
            eventually(Duration::from_secs(20), || node.instructions().is_some()).await,
            "no instructions"
        );
    }
    let mut flow = connect(listener_addr(&a, "in")).await;
    flow.write_all(b"before").await.expect("write");
    let mut got = [0u8; 6];
    flow.read_exact(&mut got).await.expect("echo before");
    let held = [&a, &c].map(|n| n.instructions().map_or(0, |s| s.version));

    // SIGKILL: no close to the nodes, no lease given back.
    let killed = Instant::now();
    let _ = s1.0.kill();
    let _ = s1.0.wait();
    assert!(wait_leads(admin2, true, Duration::from_secs(20)).await, "s2 never took over");
    let took_over = killed.elapsed();
    let resumed = eventually(Duration::from_secs(20), || {
        [&a, &c].iter().zip(held).all(|(n, v)| n.instructions().is_some_and(|s| s.version > v))
    })
    .await;
    assert!(resumed, "route updates did not resume from the new leader");
    eprintln!(
        "failover: s2 led {} ms after s1 was killed; both nodes had new instructions at {} ms",
        took_over.as_millis(),
        killed.elapsed().as_millis()
    );
    flow.write_all(b"after!").await.expect("write after the failover");
    flow.read_exact(&mut got).await.expect("echo after the failover");
    assert_eq!(&got, b"after!");
    drop(cluster);
}

/// Joins in flight while the leading scheduler is killed, and while an etcd member is
/// killed: each completes or fails cleanly, and the registry accounts for every token use
/// (members enrolled = uses taken). A removal made through the survivor reaches the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_survive_a_killed_scheduler_and_a_killed_etcd_member() {
    let Some(mut cluster) = EtcdCluster::start_or_skip(3, "joins").await else { return };
    let mesh = ha_mesh(&[]);
    let (p1, p2) = (common::process::free_port(true), common::process::free_port(true));
    let (a1, a2) = (common::process::free_port(false), common::process::free_port(false));
    let admin1: SocketAddr = format!("127.0.0.1:{a1}").parse().expect("addr");
    let yaml1 = scheduler_yaml("s1", p1, a1, &cluster.endpoints());
    let mut s1 = spawn_scheduler(&mesh, "s1", &yaml1);
    assert!(wait_leads(admin1, true, Duration::from_secs(20)).await, "s1 never led");
    let _s2 = spawn_scheduler(&mesh, "s2", &scheduler_yaml("s2", p2, a2, &cluster.endpoints()));
    let config = sched_config::parse(&yaml1, &mesh.dir).expect("config");
    const USES: u32 = 12;
    let token =
        proxy::scheduler::enrollment::create_token(&config, None, Vec::new(), Duration::from_secs(600), USES)
            .expect("token in etcd")
            .encode();

    let join = |i: usize| {
        let options = proxy::join::JoinOptions {
            scheduler: format!("127.0.0.1:{p1},127.0.0.1:{p2}"),
            token: token.clone(),
            node_id: format!("j{i}"),
            region: "eu".into(),
            dir: mesh.path(&format!("join-{i}")),
            state_dir: None,
            bind: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
        };
        tokio::spawn(async move { proxy::join::join(&options).await.map(|_| ()).map_err(|e| e.to_string()) })
    };
    // A first wave, then the leader dies while a second wave is in flight.
    let mut joins: Vec<_> = (0..4).map(join).collect();
    joins.extend((4..8).map(join));
    let _ = s1.0.kill();
    let _ = s1.0.wait();
    joins.extend((8..10).map(join));
    // A member of etcd dies too: the other two are a majority.
    cluster.kill(0);
    joins.extend((10..12).map(join));
    let mut outcomes = Vec::new();
    for j in joins {
        outcomes.push(j.await.expect("join task"));
    }

    let store = RegistryStore::open(&config).expect("store");
    let registry = tokio::task::spawn_blocking(move || store.load()).await.expect("task").expect("registry");
    let joined: Vec<usize> = (0..outcomes.len()).filter(|i| outcomes[*i].is_ok()).collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        let member = registry.members.contains_key(&format!("j{i}"));
        match outcome {
            Ok(()) => assert!(member, "j{i} got a certificate but is not a member"),
            Err(e) => assert!(!member, "j{i} failed ({e}) yet is a member: half-committed"),
        }
    }
    let records: Vec<proxy::core::join_token::TokenRecord> = registry.tokens.clone().into();
    let uses_left = records.first().map(|r| r.uses_left).expect("the token");
    assert_eq!(
        uses_left as usize,
        USES as usize - joined.len(),
        "a token use was lost or taken twice: {outcomes:?}"
    );
    assert!(joined.len() >= 10, "most joins go through a failover: {outcomes:?}");
    eprintln!("joins across the failover: {} of {} completed", joined.len(), outcomes.len());

    // A removal through the survivor's store is in force for the mesh.
    let removed =
        proxy::scheduler::enrollment::remove_node(&config, "j0").expect("remove with a member down");
    assert!(removed.is_some());
    let store = RegistryStore::open(&config).expect("store");
    let registry = tokio::task::spawn_blocking(move || store.load()).await.expect("task").expect("registry");
    assert!(registry.removed.contains_key("j0"));
}

/// Two writers redeeming one token from two connections: etcd's transactions let exactly
/// `uses` of them through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_uses_are_transactions_across_schedulers() {
    let Some(cluster) = EtcdCluster::start_or_skip(1, "txn").await else { return };
    let mesh = ha_mesh(&[]);
    let yaml = scheduler_yaml("t", 1, 2, &cluster.endpoints());
    let config = sched_config::parse(&yaml, &mesh.dir).expect("config");
    let token =
        proxy::scheduler::enrollment::create_token(&config, None, Vec::new(), Duration::from_secs(600), 5)
            .expect("token");
    let stores = [RegistryStore::open(&config).expect("one"), RegistryStore::open(&config).expect("two")];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let redeemers: Vec<_> = (0..12)
        .map(|i| {
            let store = stores[i % 2].clone();
            let token = proxy::core::join_token::JoinToken { secret: token.secret, ca_fingerprint: [0; 32] };
            std::thread::spawn(move || {
                store
                    .update(|r| {
                        let ok = r.admit(&token, &format!("n{i}"), now).is_ok();
                        if ok {
                            r.record_cert(&format!("n{i}"), "eu", [i as u8; 32], i64::MAX, 0);
                        }
                        (ok, ok)
                    })
                    .expect("update")
            })
        })
        .collect();
    let admitted = redeemers.into_iter().map(|t| t.join().expect("thread")).filter(|ok| *ok).count();
    assert_eq!(admitted, 5, "exactly the token's uses");
    let registry = stores[0].load().expect("load");
    assert_eq!(registry.members.len(), 5);
}

/// The leader loses etcd (its connections go silent): it steps down within its lease and
/// closes its sessions; the other scheduler leads; the nodes move to it and keep their
/// flow. Sampled all along, the two never lead at once, and the one cut off issues nothing
/// more. With etcd back it stays a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_without_a_split_brain() {
    let Some(cluster) = EtcdCluster::start_or_skip(3, "partition").await else { return };
    let mesh = ha_mesh(&["a", "c"]);
    let mut relays = Vec::new();
    for i in 0..3 {
        relays.push(TcpRelay::start(cluster.client_addr(i)).await);
    }
    let through: Vec<String> = relays.iter().map(TcpRelay::url).collect();
    let (p1, p2) = (common::process::free_port(true), common::process::free_port(true));
    let s1 = Scheduler::start(
        sched_config::parse(&scheduler_yaml("s1", p1, 0, &through), &mesh.dir).expect("config"),
    )
    .await
    .expect("s1");
    assert!(eventually(Duration::from_secs(20), || s1.view().role().is_leader()).await, "s1 never led");
    let s2 = Scheduler::start(
        sched_config::parse(&scheduler_yaml("s2", p2, 0, &cluster.endpoints()), &mesh.dir).expect("config"),
    )
    .await
    .expect("s2");

    let echo = echo_server().await;
    let mut c = NodeSpec::new("c");
    c.peers = vec![("a", String::new())];
    c.allow = vec![echo.to_string()];
    c.scheduler = Some(format!("127.0.0.1:{p1},127.0.0.1:{p2}"));
    let c = c.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("c", c.mesh_addr().expect("addr").to_string())];
    a.routes = vec![("in", echo.to_string(), Some("c"))];
    a.scheduler = Some(format!("127.0.0.1:{p1},127.0.0.1:{p2}"));
    let a = a.start(&mesh).await;
    assert!(eventually(Duration::from_secs(20), || s1.nodes().len() == 2).await, "nodes on s1");
    assert!(eventually(Duration::from_secs(20), || a.instructions().is_some()).await, "instructions");
    let mut flow = connect(listener_addr(&a, "in")).await;
    flow.write_all(b"before").await.expect("write");
    let mut got = [0u8; 6];
    flow.read_exact(&mut got).await.expect("echo");
    // A pin made on the leader (as the console makes it) is in the shared registry.
    let pin = proxy::config::scheduler::Pin { node: "a".into(), route: "in".into(), relays: Vec::new() };
    let view = s1.view();
    tokio::task::spawn_blocking(move || view.pin(pin)).await.expect("task").expect("pin");

    for r in &relays {
        r.set_cut(true);
    }
    let cut = Instant::now();
    let (v1, v2) = (s1.view(), s2.view());
    let mut stepped_down = None;
    let mut issued_after = None;
    // The last set s1 issued to a while it led (its state is gone once it steps down).
    let issued_to_a = |v: &proxy::scheduler::SchedulerView| {
        v.nodes().iter().find(|n| n.id == "a").map_or(0, |n| n.instruction_version)
    };
    let mut s1_issued = issued_to_a(&v1);
    while cut.elapsed() < Duration::from_secs(30) {
        let (l1, l2) = (v1.role().is_leader(), v2.role().is_leader());
        if l1 {
            s1_issued = s1_issued.max(issued_to_a(&v1));
        }
        assert!(!(l1 && l2), "both schedulers led at once, {} ms after the cut", cut.elapsed().as_millis());
        if !l1 && stepped_down.is_none() {
            stepped_down = Some(cut.elapsed());
            issued_after = Some(v1.recompute_stats().recomputes);
        }
        if stepped_down.is_some() && l2 && s2.nodes().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stepped_down = stepped_down.expect("s1 never stepped down");
    assert!(v2.role().is_leader(), "s2 never led");
    assert!(eventually(Duration::from_secs(20), || s2.nodes().len() == 2).await, "nodes moved to s2");
    // Above the last set s1 issued to a: a set only s2 can have sent (a's own version
    // cannot be the mark: s2 may have reached a already).
    assert!(s1_issued > 0, "s1 had issued a set to a");
    assert!(
        eventually(Duration::from_secs(20), || a.instructions().is_some_and(|s| s.version > s1_issued)).await,
        "a got instructions from s2"
    );
    eprintln!("partition: s1 stepped down {} ms after the cut (lease 2 s)", stepped_down.as_millis());
    let pinned = |v: &proxy::scheduler::SchedulerView| {
        v.routes().iter().any(|r| r.node == "a" && r.route == "in" && r.pinned)
    };
    assert!(
        eventually(Duration::from_secs(10), || pinned(&v2)).await,
        "the new leader has the pin made on the old"
    );
    assert_eq!(Some(v1.recompute_stats().recomputes), issued_after, "the cut-off scheduler kept computing");
    flow.write_all(b"after!").await.expect("write after");
    flow.read_exact(&mut got).await.expect("echo after");
    assert_eq!(&got, b"after!");

    // Healed: s2 keeps the lead, s1 stands by.
    for r in &relays {
        r.set_cut(false);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!v1.role().is_leader() && v2.role().is_leader(), "the lead moved back after the heal");
    assert_eq!(s1.nodes().len(), 0, "a standby keeps no node sessions");
}
