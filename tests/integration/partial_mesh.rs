//! A partial mesh: twelve nodes in one process under a scheduler with `max_links: 4`. The
//! nodes keep only the links the scheduler chose (at most `max_links` each, checked on the
//! nodes themselves), every pair still has a path, flows cross the mesh through relays,
//! and killing a relay on a route's path moves the route and new flows get through.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use proxy::Scheduler;
use proxy::config::scheduler as sched_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_LINKS: usize = 4;

fn ids() -> Vec<String> {
    (0..12).map(|i| format!("n{i:02}")).collect()
}

/// Live links per node, as the nodes see them; with `kept`, only those the scheduler
/// still lists (not those waiting to be retired).
fn live_links_of(nodes: &HashMap<String, proxy::Node>, kept: bool) -> HashMap<String, BTreeSet<String>> {
    nodes
        .iter()
        .map(|(id, n)| {
            let live = n.peers().into_iter().filter(|p| p.connected && !(kept && p.retiring));
            (id.clone(), live.map(|p| p.id).collect())
        })
        .collect()
}

fn live_links(nodes: &HashMap<String, proxy::Node>) -> HashMap<String, BTreeSet<String>> {
    live_links_of(nodes, false)
}

fn connected(links: &HashMap<String, BTreeSet<String>>) -> bool {
    let Some(start) = links.keys().next() else { return true };
    let mut seen = BTreeSet::from([start.clone()]);
    let mut todo = vec![start.clone()];
    while let Some(n) = todo.pop() {
        for p in links.get(&n).into_iter().flatten() {
            if seen.insert(p.clone()) {
                todo.push(p.clone());
            }
        }
    }
    seen.len() == links.len()
}

/// Whether an echo flow through `entry` gets `payload` back within about 10 s of tries.
async fn echo_eventually(entry: std::net::SocketAddr, payload: &[u8]) -> bool {
    for _ in 0..40 {
        if echo_once(entry, payload).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn echo_once(entry: std::net::SocketAddr, payload: &[u8]) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(entry)).await
    else {
        return false;
    };
    if s.write_all(payload).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; payload.len()];
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await, Ok(Ok(_)))
        && got == payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_nodes_keep_at_most_max_links_and_every_pair_a_path() {
    let names = ids();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mesh = Mesh::new(&refs);
    mesh.issue("scheduler", "scheduler");
    let yaml = format!(
        "bind: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\n\
         recompute_interval: \"200ms\"\nnode_dead_after: \"3s\"\nmax_links: {MAX_LINKS}\n"
    );
    let scheduler =
        Scheduler::start(sched_config::parse(&yaml, &mesh.dir).expect("config")).await.expect("start");
    let addr = scheduler.local_addr().expect("addr").to_string();
    let echo = echo_server().await;
    let mut nodes = HashMap::new();
    for id in &names {
        let mut spec = NodeSpec::new(id);
        spec.allow = vec![echo.to_string()];
        spec.scheduler = Some(addr.clone());
        if id == "n00" {
            spec.routes = vec![("in", echo.to_string(), Some("n11"))];
        }
        nodes.insert(id.clone(), spec.start(&mesh).await);
    }
    assert!(eventually(Duration::from_secs(30), || scheduler.nodes().len() == 12).await, "all registered");

    // Settled: within the cap on every node (links the scheduler no longer lists are
    // retired once idle, a little later), and one connected mesh.
    let settled = eventually(Duration::from_secs(60), || {
        let links = live_links_of(&nodes, true);
        links.values().all(|l| !l.is_empty() && l.len() <= MAX_LINKS) && connected(&live_links(&nodes))
    })
    .await;
    let links = live_links_of(&nodes, true);
    let degrees: Vec<usize> = links.values().map(BTreeSet::len).collect();
    assert!(settled, "links per node {degrees:?}: {links:?}");
    eprintln!("partial mesh of 12 with max_links {MAX_LINKS}: links per node {degrees:?}");

    // A flow from n00 to the exit n11 across the partial mesh.
    let entry = listener_addr(&nodes["n00"], "in");
    assert!(
        eventually(Duration::from_secs(20), || nodes["n00"]
            .instructions()
            .is_some_and(|s| !s.routes.is_empty()))
        .await
    );
    assert!(echo_eventually(entry, b"across the partial mesh").await, "no flow across the partial mesh");

    // Kill a relay of the route's paths (the primary's if it has one, else an
    // alternative's): every path of the route moves off it and new flows get through.
    let relays_of = |nodes: &HashMap<String, proxy::Node>| {
        nodes["n00"].instructions().map(|s| {
            s.routes
                .first()
                .map(|r| r.paths.iter().flat_map(|p| p.relays.clone()).collect::<Vec<String>>())
                .unwrap_or_default()
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || relays_of(&nodes).is_some_and(|r| !r.is_empty())).await,
        "no relayed path"
    );
    let relays = relays_of(&nodes).unwrap_or_default();
    let victim = relays[0].clone();
    eprintln!("route n00 -> n11, relays of its paths {relays:?}; killing {victim}");
    drop(nodes.remove(&victim));
    let moved =
        eventually(Duration::from_secs(30), || relays_of(&nodes).is_some_and(|r| !r.contains(&victim))).await;
    assert!(moved, "the route still names the dead relay {victim}");
    assert!(echo_eventually(entry, b"after the relay died").await, "no flow after the relay died");
    let after = live_links(&nodes);
    assert!(eventually(Duration::from_secs(30), || connected(&live_links(&nodes))).await, "{after:?}");
}
