//! The demo's cluster, in this process: a mesh CA and certificates in a temp directory, a
//! scheduler, one node per region with a listener pair per route, a link emulator on
//! every pair of nodes with that pair's round trip, and an echo service behind the exit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::regions::{self, EXIT, LOSSY, MULTIPATH_ORIGIN, NODES};
use crate::Node;
use crate::config::Congestion;
use crate::emulator::{LinkEmulator, LinkProfile};
use crate::pki::{self, MeshCa};
use crate::scheduler::Scheduler;

/// The listener whose route the scheduler steers.
pub const STEERED: &str = "app";
/// The listener whose route is pinned to the direct path (the baseline).
pub const DIRECT: &str = "app-direct";
/// The listener of the multipath route.
pub const BULK: &str = "bulk";
/// The two nodes of a [`LossyPair`], dialer first (apart from the five regions: their
/// link is the only one each has).
pub const PAIR: [&str; 2] = ["lossy-a", "lossy-b"];

/// The cluster's directory (certificates, keys, configs), removed when dropped, also
/// when starting fails halfway.
struct Workspace(PathBuf);

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running demo cluster. [`Cluster::stop`] shuts it down; dropping it stops everything
/// too, less gracefully. Its directory is removed either way.
pub struct Cluster {
    /// The scheduler.
    pub scheduler: Scheduler,
    /// The nodes still running, by id.
    pub nodes: BTreeMap<&'static str, Node>,
    links: Vec<((&'static str, &'static str), LinkEmulator)>,
    backend: tokio::task::JoinHandle<()>,
    backend_addr: SocketAddr,
    /// The scheduler's admin token: the console's login, and `--admin-token` for
    /// `proxy status --scheduler`.
    pub console_token: String,
    /// Last field: dropped after the nodes, which may still write to it until they stop.
    workspace: Workspace,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.backend.abort();
        self.nodes.clear();
    }
}

impl Cluster {
    /// Makes and starts the whole cluster in a new directory under `parent`.
    pub async fn start(parent: &Path) -> anyhow::Result<Cluster> {
        let dir = parent.join(format!("proxy-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let workspace = Workspace(dir.clone());
        let (backend_addr, backend) = super::probe::echo_service().await?;
        make_certificates(&dir)?;
        let mut secret = [0u8; 16];
        rand::fill(&mut secret);
        let console_token = crate::core::join_token::hex(&secret);
        let scheduler = Scheduler::start(
            crate::config::scheduler::parse(&scheduler_yaml(&console_token), &dir)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        )
        .await?;
        let scheduler_addr = scheduler.local_addr()?.to_string();
        // Each pair is dialed by the first node through an emulator in front of the
        // second, so nodes start last first: a node's peers to dial are running by then.
        let mut nodes = BTreeMap::new();
        let mut links = Vec::new();
        for (i, id) in NODES.iter().enumerate().rev() {
            let mut dial = Vec::new();
            for (j, other) in NODES.iter().enumerate().skip(i + 1) {
                let target = nodes.get(other).map(|n: &Node| n.mesh_addr()).context("node order")??;
                let emulator = LinkEmulator::start(target, (i * 10 + j) as u64).await?;
                let one_way = Duration::from_millis(regions::rtt_ms(id, other) / 2);
                emulator.set_both(LinkProfile::delayed(one_way));
                dial.push((*other, emulator.addr()));
                links.push(((*id, *other), emulator));
            }
            let yaml = node_yaml(id, &dial, &scheduler_addr, backend_addr);
            let path = dir.join(format!("{id}.yaml"));
            std::fs::write(&path, yaml)?;
            let config = crate::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            nodes.insert(*id, Node::start(config).await.with_context(|| format!("starting {id}"))?);
        }
        Ok(Cluster { scheduler, nodes, links, backend, backend_addr, console_token, workspace })
    }

    /// Stops every node at once (each closes its links and flows), then the rest.
    pub async fn stop(mut self) {
        let mut stopping = tokio::task::JoinSet::new();
        for (_, node) in std::mem::take(&mut self.nodes) {
            stopping.spawn(node.shutdown());
        }
        while stopping.join_next().await.is_some() {}
    }

    /// Where `node`'s listener `name` accepts connections.
    pub fn listener(&self, node: &str, name: &str) -> Option<SocketAddr> {
        self.nodes.get(node)?.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr)
    }

    /// Whether every pair of running nodes has its link up.
    pub fn all_linked(&self) -> bool {
        self.nodes.iter().all(|(id, node)| {
            let peers = node.peers();
            self.nodes.keys().filter(|o| *o != id).all(|o| peers.iter().any(|p| p.id == *o && p.connected))
        })
    }

    /// Adds `extra_ms` to the round trip of the link between `a` and `b`.
    pub fn degrade(&self, a: &str, b: &str, extra_ms: u64) {
        for ((x, y), emulator) in &self.links {
            if (*x == a && *y == b) || (*x == b && *y == a) {
                let one_way = Duration::from_millis((regions::rtt_ms(a, b) + extra_ms) / 2);
                emulator.set_both(LinkProfile::delayed(one_way));
            }
        }
    }

    /// Starts two more nodes, linked only to each other across an emulator with the
    /// [`LOSSY`] profile on both directions and using `congestion` on that link, with a
    /// route from the first node's [`BULK`] listener to the echo service behind the
    /// second; returns once the link is up. Pairs with different controllers see the same
    /// emulated path (same profile, same loss seed), so their transfers compare.
    pub async fn lossy_pair(&self, congestion: Congestion) -> anyhow::Result<LossyPair> {
        let [a, b] = PAIR;
        let cc = congestion.name();
        let backend = self.backend_addr;
        let mesh = |id: &str| {
            format!(
                "common: {{ node_id: {id}, region: {id}, log_level: error, admin_addr: \"127.0.0.1:0\" }}\n\
                 mesh: {{ bind: \"127.0.0.1:0\", cert: {id}.crt, key: {id}.key, ca: ca.crt, \
                 data_dir: data-{id}-{cc}, congestion: {cc} }}\n"
            )
        };
        let exit = self
            .start_node(
                b,
                cc,
                &format!("{}peers:\n  - {{ name: {a} }}\nexit_policy:\n  allow: [\"{backend}\"]\n", mesh(b)),
            )
            .await?;
        let emulator = LinkEmulator::start(exit.mesh_addr()?, 15).await?;
        emulator.set_both(lossy_profile());
        let origin = self
            .start_node(
                a,
                cc,
                &format!(
                    "{}peers:\n  - {{ name: {b}, address: \"{}\" }}\nlisteners:\n  - {{ name: {BULK}, bind: \"127.0.0.1:0\" }}\n\
                     routes:\n  - {{ name: {BULK}, match: {{ listener: {BULK} }}, target: \"{backend}\", exit: {b} }}\n",
                    mesh(a),
                    emulator.addr()
                ),
            )
            .await?;
        // Lost handshake packets are resent after a second or more: a generous wait.
        let linked = origin.wait_for_link(b, Duration::from_secs(15)).await;
        anyhow::ensure!(linked, "the {cc} pair's link did not come up");
        let entry =
            origin.listeners().into_iter().find(|l| l.name == BULK).map(|l| l.addr).context("no listener")?;
        Ok(LossyPair { entry, _nodes: [origin, exit], _emulator: emulator })
    }

    async fn start_node(&self, id: &str, cc: &str, yaml: &str) -> anyhow::Result<Node> {
        let path = self.workspace.0.join(format!("{id}-{cc}.yaml"));
        std::fs::write(&path, yaml)?;
        let config = crate::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        Node::start(config).await.with_context(|| format!("starting {id} ({cc})"))
    }

    /// Kills `node` as a power cut would for its peers: its links go silent first (nothing
    /// it sends reaches them, not even a goodbye), then it stops. (Its scheduler session,
    /// which runs outside the emulators, is closed normally.)
    pub fn kill(&mut self, node: &str) {
        for ((x, y), emulator) in &self.links {
            if *x == node || *y == node {
                emulator.set_both(LinkProfile::blackholed());
            }
        }
        self.nodes.remove(node);
    }
}

/// Two nodes across the lossy link, from [`Cluster::lossy_pair`]; dropping it stops both
/// at once (a transfer given up on is not waited for).
pub struct LossyPair {
    /// Where a flow enters the pair: the first node's listener, routed to the echo service
    /// behind the second.
    pub entry: SocketAddr,
    _nodes: [Node; 2],
    _emulator: LinkEmulator,
}

/// Each direction of the lossy link: half the round trip, the loss, the rate, and a
/// bottleneck queue of one bandwidth-delay product (the classic buffer; the limit counts
/// the packets on the delay line too).
pub fn lossy_profile() -> LinkProfile {
    let bdp = LOSSY.mbit * 1_000_000 / 8 * LOSSY.rtt_ms / 1000;
    let queued = bdp / 2 + bdp;
    LinkProfile {
        delay: Duration::from_millis(LOSSY.rtt_ms / 2),
        loss: LOSSY.loss_pct / 100.0,
        rate_bps: Some(LOSSY.mbit * 1_000_000),
        // Packets of about 1250 bytes.
        queue_limit: (queued / 1250).max(64) as usize,
        ..LinkProfile::ideal()
    }
}

fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let ca = MeshCa::generate("proxy demo CA")?;
    let mut written = Vec::new();
    pki::write_file(&dir.join("ca.crt"), &ca.cert_pem(), false, &mut written)?;
    // The scheduler signs joins, so a token made in the console enrolls a machine.
    pki::write_file(&dir.join("ca.key"), &ca.key_pem(), true, &mut written)?;
    for id in NODES.iter().copied().chain(PAIR).chain([crate::core::control::SCHEDULER_ID]) {
        let cert = ca.issue_node_cert(id, 1)?;
        pki::write_file(&dir.join(format!("{id}.crt")), &cert.cert_pem, false, &mut written)?;
        pki::write_file(&dir.join(format!("{id}.key")), &cert.key_pem, true, &mut written)?;
    }
    Ok(())
}

/// The scheduler: fast enough to follow the demo (recompute every 500 ms, a route moves
/// after 2 s of a better path), the direct routes pinned as the baseline; its admin token
/// is the console's login.
fn scheduler_yaml(admin_token: &str) -> String {
    let pins: Vec<String> = regions::origins()
        .map(|o| format!("  - {{ node: {o}, route: backend-direct, relays: [] }}"))
        .collect();
    format!(
        "bind: \"127.0.0.1:0\"\ncert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\n\
         objective: latency\nrecompute_interval: \"500ms\"\nhysteresis: {{ margin: 0.1, hold: \"2s\" }}\n\
         node_dead_after: \"4s\"\nmax_paths: 3\nadmin_addr: \"127.0.0.1:0\"\nlog_level: error\n\
         data_dir: state\nca_key: ca.key\nadmin_token: \"{admin_token}\"\npins:\n{}\n",
        pins.join("\n")
    )
}

/// A node's config: every other node a peer (dialed through its emulator when `dial`
/// names it), and, on an origin, the steered and the direct route to the backend.
fn node_yaml(id: &str, dial: &[(&str, SocketAddr)], scheduler: &str, backend: SocketAddr) -> String {
    let mut y = format!(
        "common:\n  node_id: {id}\n  region: {id}\n  log_level: error\n  admin_addr: \"127.0.0.1:0\"\n\
         mesh:\n  bind: \"127.0.0.1:0\"\n  cert: {id}.crt\n  key: {id}.key\n  ca: ca.crt\n  data_dir: data-{id}\n\
         scheduler:\n  address: \"{scheduler}\"\n  heartbeat_interval: \"1s\"\n  retry_interval: \"500ms\"\n\
         peers:\n"
    );
    for other in NODES.iter().filter(|o| **o != id) {
        match dial.iter().find(|(n, _)| n == other) {
            Some((_, addr)) => {
                y.push_str(&format!("  - {{ name: {other}, region: {other}, address: \"{addr}\" }}\n"))
            }
            None => y.push_str(&format!("  - {{ name: {other}, region: {other} }}\n")),
        }
    }
    if id == EXIT {
        y.push_str(&format!("exit_policy:\n  allow: [\"{backend}\"]\n"));
        return y;
    }
    let mut listeners = vec![STEERED, DIRECT];
    let mut routes = vec![
        format!(
            "  - {{ name: backend, match: {{ listener: {STEERED} }}, target: \"{backend}\", exit: {EXIT} }}"
        ),
        format!(
            "  - {{ name: backend-direct, match: {{ listener: {DIRECT} }}, target: \"{backend}\", exit: {EXIT} }}"
        ),
    ];
    if id == MULTIPATH_ORIGIN {
        listeners.push(BULK);
        routes.push(format!(
            "  - {{ name: bulk, match: {{ listener: {BULK} }}, target: \"{backend}\", exit: {EXIT}, multipath: true }}"
        ));
    }
    y.push_str("listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - {{ name: {l}, bind: \"127.0.0.1:0\" }}\n"));
    }
    y.push_str(&format!("routes:\n{}\n", routes.join("\n")));
    y
}
