//! `cargo run --release --example enrollment`: how long enrollment takes, measured.
//!
//! On loopback, with the shipped scheduler settings (recompute every 1 s) and the nodes'
//! default heartbeat (10 s): `mesh init`, then three machines join with `mesh join`
//! (each with its own directory and key). It prints, for each join, the time of the
//! exchange (key, request, signature, files) and the time until the new node holds a link
//! to every other; then removes one node and prints how long until every other node has
//! dropped it. Exits non-zero if any step does not happen within 30 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proxy::Node;
use proxy::join::JoinOptions;
use proxy::scheduler::Scheduler;
use proxy::scheduler::enrollment::{create_token, remove_node};

const WITHIN: Duration = Duration::from_secs(30);

/// A temp directory, removed when dropped (also when the example fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_max_level(tracing::Level::ERROR).with_target(false).init();
    let path = std::env::temp_dir().join(format!("proxy-enrollment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let dir = TempDir(path);
    run(&dir.0).await
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    proxy::pki::init_mesh(&dir.join("mesh"), &[])?;
    let yaml = dir.join("mesh/scheduler.yaml");
    let text = std::fs::read_to_string(&yaml)?
        .replace("0.0.0.0:7900", "127.0.0.1:0")
        .replace("127.0.0.1:9900", "127.0.0.1:0");
    std::fs::write(&yaml, text)?;
    let config = proxy::config::scheduler::load(&yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let scheduler = Scheduler::start(config.clone()).await?;
    let address = scheduler.local_addr()?.to_string();
    let token = create_token(&config, None, Vec::new(), Duration::from_secs(3600), 3)?.encode();

    let ids = ["a", "b", "c"];
    let mut nodes: Vec<Node> = Vec::new();
    println!("{:<6} {:>14} {:>22}", "node", "join (ms)", "linked to all (ms)");
    for id in ids {
        let options = JoinOptions {
            scheduler: address.clone(),
            token: token.clone(),
            node_id: id.to_string(),
            region: format!("region-{id}"),
            dir: dir.join(id),
            state_dir: None,
            bind: "127.0.0.1:0".parse()?,
            advertise: None,
            admin_addr: "127.0.0.1:0".parse()?,
        };
        let started = Instant::now();
        let joined = proxy::join::join(&options).await.with_context(|| format!("{id} joins"))?;
        let join_ms = started.elapsed().as_secs_f64() * 1000.0;
        let node =
            Node::start(proxy::config::load(&joined.config).map_err(|e| anyhow::anyhow!("{e}"))?).await?;
        nodes.push(node);
        let others: Vec<&str> = ids.iter().copied().filter(|o| *o != id).take(nodes.len() - 1).collect();
        let linked = wait(|| others.iter().all(|o| linked(&nodes[nodes.len() - 1], o))).await;
        let Some(linked) = linked else { bail!("{id} did not link to {others:?} within {WITHIN:?}") };
        let linked =
            if others.is_empty() { "-".to_string() } else { format!("{:.0}", linked.as_secs_f64() * 1000.0) };
        println!("{id:<6} {join_ms:>14.1} {linked:>22}");
    }

    remove_node(&config, "c")?;
    let Some(cut) = wait(|| !linked(&nodes[0], "c") && !linked(&nodes[1], "c")).await else {
        bail!("a and b still linked to c after {WITHIN:?}");
    };
    println!("removal of c: a and b dropped it after {:.0} ms", cut.as_secs_f64() * 1000.0);
    println!("(the scheduler checks its registry every 500 ms; it introduces nodes at each 1 s recompute)");
    for node in nodes {
        node.shutdown().await;
    }
    drop(scheduler);
    Ok(())
}

fn linked(node: &Node, peer: &str) -> bool {
    node.peers().iter().any(|p| p.id == peer && p.connected)
}

/// Polls `done` until it holds; returns how long that took, or `None` after [`WITHIN`].
async fn wait(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < WITHIN {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
