//! Read-only snapshots of the mesh state for the admin API: the nodes, the links with the
//! metrics the computation sees, and the paths issued per route. Pure: they read the state
//! at `now` and change nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::{MeshState, capacity_of, metrics_of, path_is_simple, throughput_of};
use crate::core::control::LinkReport;
use crate::core::pathfind::Objective;

/// A registered node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSnapshot {
    /// Node id (from its certificate).
    pub id: String,
    /// Region label it registered with.
    pub region: String,
    /// `host:port` other nodes dial it at.
    pub mesh_address: String,
    /// Whether its control session is open (the state does not know; the caller says).
    pub connected: bool,
    /// Whether it was heard from within `node_dead_after`, so its links count.
    pub alive: bool,
    /// Seconds since it was last heard from (any message, heartbeats included).
    pub last_seen_secs: f64,
    /// Seconds since its last report of links and routes; `None` before the first.
    pub last_report_secs: Option<f64>,
    /// Peers in its config.
    pub peers: usize,
    /// Listeners in its config.
    pub listeners: usize,
    /// Routes it originates.
    pub routes: usize,
    /// Links in its last report.
    pub links: usize,
    /// Version of the last instruction set issued to it (0: none yet).
    pub instruction_version: u64,
    /// Whether paths may go through it (its `mesh.relay`).
    pub relay: bool,
    /// Relays its own routes avoid for now, because they failed its flows; sorted.
    pub avoided_relays: Vec<String>,
}

/// How the computation treats a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Both ends are alive and report it freshly: paths may use it.
    Counted,
    /// Only one end reports it: not used.
    OneSided,
    /// Both ends report it, but a report or an end is older than `node_dead_after`.
    Stale,
}

impl LinkState {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Counted => "counted",
            LinkState::OneSided => "one_sided",
            LinkState::Stale => "stale",
        }
    }
}

/// A link between two nodes, as reported by either end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkSnapshot {
    /// One end (the lower id).
    pub a: String,
    /// The other end.
    pub b: String,
    /// Whether the computation counts it.
    pub state: LinkState,
    /// The ends that report it (one or both), in id order.
    pub reported_by: Vec<String>,
    /// Round-trip time in milliseconds: the higher of the reports.
    pub rtt_ms: f64,
    /// Loss ratio (0 to 1): the higher of the reports.
    pub loss: f64,
    /// Bytes per second sent over it: the lower of the reports that measured traffic;
    /// `None` when idle.
    pub throughput_bytes_per_sec: Option<u64>,
    /// What it can carry, bytes per second: the lower of the ends' capacity claims (their
    /// congestion controllers' bottleneck estimates); `None` when neither end claims one.
    /// The computation uses it when both ends claim one; one claim alone only lowers the
    /// throughput figure.
    pub capacity_bytes_per_sec: Option<u64>,
    /// The width the `bandwidth` and `balanced` objectives count for it, Mbit/s.
    pub bandwidth_mbps: f64,
    /// What carries it: `tcp` when an end says its link runs over TLS on TCP, else
    /// `quic`. Measured and counted like any other link.
    pub transport: &'static str,
    /// Whether an issued path runs over it.
    pub used: bool,
    /// Age in seconds of the older report.
    pub age_secs: f64,
}

/// One path of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathSnapshot {
    /// Relays in order (empty: direct).
    pub relays: Vec<String>,
    /// Every node on the path: the route's node, the relays, the exit.
    pub hops: Vec<String>,
    /// Its share of the traffic (0 to 1).
    pub weight: f64,
    /// Its cost under the objective with the links as counted now (for `bandwidth`: its
    /// latency); `None` when a link on it is not counted.
    pub cost: Option<f64>,
}

/// The paths issued for one route of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSnapshot {
    /// The node the route starts at.
    pub node: String,
    /// The route's name on that node.
    pub route: String,
    /// The exit node.
    pub exit: String,
    /// What "best" means: `latency`, `loss`, `bandwidth` or `balanced`.
    pub objective: &'static str,
    /// Whether an operator pin decided the path rather than the computation.
    pub pinned: bool,
    /// Version of the instruction set that carries it.
    pub instruction_version: u64,
    /// When that set was issued, Unix seconds.
    pub issued_at_unix: u64,
    /// The paths, primary first.
    pub paths: Vec<PathSnapshot>,
}

/// The name of an objective, as the config spells it.
fn objective_name(objective: Objective) -> &'static str {
    match objective {
        Objective::Latency => "latency",
        Objective::Loss => "loss",
        Objective::Bandwidth => "bandwidth",
        Objective::Balanced { .. } => "balanced",
    }
}

/// One end's report of a link: who reported it, what, and when.
type Report<'a> = (&'a str, &'a LinkReport, Instant);

/// `node -> relays -> exit` as a list of hops.
fn hops(node: &str, relays: &[String], exit: &str) -> Vec<String> {
    let mut hops = Vec::with_capacity(relays.len() + 2);
    hops.push(node.to_string());
    hops.extend(relays.iter().cloned());
    hops.push(exit.to_string());
    hops
}

/// An unordered pair of node ids, lower first.
fn pair(x: &str, y: &str) -> (String, String) {
    if x <= y { (x.to_string(), y.to_string()) } else { (y.to_string(), x.to_string()) }
}

impl MeshState {
    /// Every registered node, by id. `connected` says whether a node's session is open.
    pub fn node_snapshots(&self, now: Instant, connected: impl Fn(&str) -> bool) -> Vec<NodeSnapshot> {
        let mut out: Vec<NodeSnapshot> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeSnapshot {
                id: id.clone(),
                region: n.registration.region.clone(),
                mesh_address: n.registration.mesh_address.clone(),
                connected: connected(id),
                alive: self.alive(id, now),
                last_seen_secs: now.saturating_duration_since(n.last_seen).as_secs_f64(),
                last_report_secs: n.last_report.map(|at| now.saturating_duration_since(at).as_secs_f64()),
                peers: n.registration.peers.len(),
                listeners: n.registration.listeners.len(),
                routes: n.registration.routes.len(),
                links: n.links.len(),
                instruction_version: n.issued.as_ref().map_or(0, |i| i.version),
                relay: n.relay,
                avoided_relays: n.suspects.avoided(now),
            })
            .collect();
        out.sort_by(|x, y| x.id.cmp(&y.id));
        out
    }

    /// Every link some node reports (to another node, registered or not), by pair.
    pub fn link_snapshots(&self, now: Instant) -> Vec<LinkSnapshot> {
        let used = self.used_pairs();
        // Each unordered pair once, with the reports of its ends.
        let mut reports: BTreeMap<(String, String), Vec<Report<'_>>> = BTreeMap::new();
        for (id, n) in &self.nodes {
            // Reports are kept one per peer, never naming the node itself.
            for (l, at) in n.links.values() {
                reports.entry(pair(id, &l.peer)).or_default().push((id.as_str(), l, *at));
            }
        }
        reports
            .into_iter()
            .map(|((a, b), mut by)| {
                by.sort_by(|x, y| x.0.cmp(y.0));
                let (first, second) = (by[0].1, by.get(1).map_or(by[0].1, |r| r.1));
                // Claims count as the computation counts them: fresh, from both ends.
                let claim = |x: &str, y: &str| self.capacity_claim(x, y, now);
                let claims = if by.len() == 2 {
                    (claim(&a, &b), claim(&b, &a))
                } else {
                    (claim(by[0].0, &by[0].1.peer), None)
                };
                let state = if self.counted_link(&a, &b, now).is_some() {
                    LinkState::Counted
                } else if by.len() == 2 {
                    LinkState::Stale
                } else {
                    LinkState::OneSided
                };
                let oldest = by.iter().map(|r| r.2).min().unwrap_or(now);
                let over_tcp =
                    by.iter().any(|r| self.nodes.get(r.0).is_some_and(|n| n.over_tcp.contains(&r.1.peer)));
                let worse = metrics_of(first, second, claims);
                LinkSnapshot {
                    state,
                    reported_by: by.iter().map(|r| r.0.to_string()).collect(),
                    rtt_ms: first.rtt_us.max(second.rtt_us) as f64 / 1000.0,
                    loss: worse.loss,
                    throughput_bytes_per_sec: throughput_of(first, second),
                    capacity_bytes_per_sec: capacity_of(claims),
                    bandwidth_mbps: worse.bandwidth_mbps,
                    transport: if over_tcp { "tcp" } else { "quic" },
                    used: used.contains(&(a.clone(), b.clone())),
                    age_secs: now.saturating_duration_since(oldest).as_secs_f64(),
                    a,
                    b,
                }
            })
            .collect()
    }

    /// The paths issued per route, by node then route.
    pub fn route_snapshots(&self, now: Instant) -> Vec<RouteSnapshot> {
        let graph = self.graph(now);
        let objective = self.policy.objective;
        let mut out = Vec::new();
        for (id, n) in &self.nodes {
            let Some(issued) = &n.issued else { continue };
            for r in &issued.routes {
                let pinned =
                    self.policy.pins.iter().any(|p| {
                        p.node == *id && p.route == r.route && path_is_simple(id, &p.relays, &r.exit)
                    });
                let paths = r
                    .paths
                    .iter()
                    .map(|p| {
                        let hops = hops(id, &p.relays, &r.exit);
                        PathSnapshot {
                            relays: p.relays.clone(),
                            cost: graph.path_cost(&hops, objective),
                            hops,
                            weight: p.weight,
                        }
                    })
                    .collect();
                out.push(RouteSnapshot {
                    node: id.clone(),
                    route: r.route.clone(),
                    exit: r.exit.clone(),
                    objective: objective_name(objective),
                    pinned,
                    instruction_version: issued.version,
                    issued_at_unix: issued.issued_at_unix,
                    paths,
                });
            }
        }
        out.sort_by(|x, y| (&x.node, &x.route).cmp(&(&y.node, &y.route)));
        out
    }

    /// The links (as unordered pairs) that some issued path runs over.
    fn used_pairs(&self) -> HashSet<(String, String)> {
        let mut used = HashSet::new();
        for (id, n) in &self.nodes {
            for r in n.issued.iter().flat_map(|i| &i.routes) {
                for p in &r.paths {
                    for w in hops(id, &p.relays, &r.exit).windows(2) {
                        used.insert(pair(&w[0], &w[1]));
                    }
                }
            }
        }
        used
    }
}
