//! The scheduler's view of the mesh and its decisions, without I/O: registrations, link
//! reports with their age, and the per-route choices (with hysteresis and pins) that become
//! versioned instruction sets.
//!
//! Invariants: a link counts only while the node that reports it has reported within
//! `node_dead_after`, and only between registered nodes; a node's instruction version
//! grows each time its instructions change, and never otherwise; it is at least the issue
//! time in Unix milliseconds, so it also grows across scheduler restarts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::scheduler::{Pin, SchedulerConfig};
use crate::core::control::{
    InstructedPath, InstructionSet, LinkReport, NodeIntro, Registration, RouteInstruction, RouteReport,
};
use crate::core::hysteresis::{Hysteresis, RouteChoice};
use crate::core::pathfind::{LinkMetrics, MeshGraph, Objective};

/// What the scheduler knows about one node.
#[derive(Debug)]
struct NodeState {
    registration: Registration,
    last_seen: Instant,
    links: Vec<(LinkReport, Instant)>,
    version: u64,
    sent: Option<Vec<RouteInstruction>>,
    choices: HashMap<String, RouteChoice<Vec<String>>>,
    /// Flows and bytes per route, summed over reports.
    route_totals: HashMap<String, (u64, u64)>,
}

/// Settings the computation needs.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Objective.
    pub objective: Objective,
    /// Paths per route.
    pub max_paths: usize,
    /// Switching rule.
    pub hysteresis: Hysteresis,
    /// Freshness of instructions.
    pub ttl: Duration,
    /// Silence after which a node's links are dead.
    pub dead_after: Duration,
    /// Operator pins.
    pub pins: Vec<Pin>,
}

impl From<&SchedulerConfig> for Policy {
    fn from(c: &SchedulerConfig) -> Self {
        Policy {
            objective: c.objective,
            max_paths: c.max_paths,
            hysteresis: Hysteresis { margin: c.hysteresis_margin, hold: c.hysteresis_hold },
            ttl: c.instruction_ttl,
            dead_after: c.node_dead_after,
            pins: c.pins.clone(),
        }
    }
}

/// The mesh as the scheduler sees it.
#[derive(Debug)]
pub struct MeshState {
    policy: Policy,
    epoch: Instant,
    nodes: HashMap<String, NodeState>,
}

impl MeshState {
    /// An empty mesh; `epoch` anchors the hysteresis clock.
    pub fn new(policy: Policy, epoch: Instant) -> Self {
        Self { policy, epoch, nodes: HashMap::new() }
    }

    /// A node (re-)registered. Its past choices are kept, so a reconnect changes nothing.
    pub fn register(&mut self, registration: Registration, now: Instant) {
        let id = registration.node_id.clone();
        match self.nodes.get_mut(&id) {
            Some(n) => {
                n.registration = registration;
                n.last_seen = now;
                // It may have lost its cache: make sure it gets the current set again.
                n.sent = None;
            }
            None => {
                let state = NodeState {
                    registration,
                    last_seen: now,
                    links: Vec::new(),
                    version: 0,
                    sent: None,
                    choices: HashMap::new(),
                    route_totals: HashMap::new(),
                };
                self.nodes.insert(id, state);
            }
        }
    }

    /// A node is alive.
    pub fn heartbeat(&mut self, node: &str, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
        }
    }

    /// A node's link measurements and per-route flow statistics.
    pub fn report(&mut self, node: &str, links: Vec<LinkReport>, routes: Vec<RouteReport>, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
            n.links = links.into_iter().map(|l| (l, now)).collect();
            for r in routes {
                let total = n.route_totals.entry(r.route).or_default();
                *total = (total.0.saturating_add(r.flows), total.1.saturating_add(r.bytes));
            }
        }
    }

    /// Flows and bytes reported per route by `node`, sorted by route.
    pub fn route_totals(&self, node: &str) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> = self
            .nodes
            .get(node)
            .map(|n| n.route_totals.iter().map(|(r, (f, b))| (r.clone(), *f, *b)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Registered node ids.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The graph of fresh links between live registered nodes.
    pub fn graph(&self, now: Instant) -> MeshGraph {
        let mut g = MeshGraph::new();
        let alive = |id: &str| {
            self.nodes.get(id).is_some_and(|n| now.duration_since(n.last_seen) <= self.policy.dead_after)
        };
        for (id, n) in &self.nodes {
            g.node(id);
            if !alive(id) {
                continue;
            }
            for (l, at) in &n.links {
                if now.duration_since(*at) <= self.policy.dead_after && alive(&l.peer) {
                    let metrics = LinkMetrics {
                        rtt_ms: l.rtt_us as f64 / 1000.0,
                        loss: f64::from(l.loss_ppm.min(999_999)) / 1e6,
                        // An idle link has measured nothing: assume it is not the bottleneck.
                        bandwidth_mbps: if l.throughput_bps == 0 {
                            1000.0
                        } else {
                            l.throughput_bps as f64 * 8.0 / 1e6
                        },
                    };
                    g.set_link(id, &l.peer, metrics);
                }
            }
        }
        g
    }

    /// Recomputes every route; returns the instruction sets that changed, by node.
    pub fn recompute(&mut self, now: Instant, now_unix: u64) -> Vec<(String, InstructionSet)> {
        let graph = self.graph(now);
        let clock = now.duration_since(self.epoch);
        let policy = self.policy.clone();
        let all_nodes: Vec<(String, String, String)> = self
            .nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.registration.region.clone(), n.registration.mesh_address.clone()))
            .collect();
        let mut changed = Vec::new();
        for (id, node) in self.nodes.iter_mut() {
            let routes = route_instructions(id, node, &graph, &policy, clock);
            // Weights move with every measurement; only a change of paths is news.
            if node.sent.as_ref().is_some_and(|sent| same_paths(sent, &routes)) {
                continue;
            }
            // Versions carry the time, so a restarted scheduler (which starts from nothing)
            // still issues versions above what the nodes cached from its previous run.
            node.version = (node.version + 1).max(now_unix.saturating_mul(1000));
            node.sent = Some(routes.clone());
            let known: Vec<&String> = node.registration.peers.iter().map(|(p, _)| p).collect();
            let nodes: Vec<NodeIntro> = all_nodes
                .iter()
                .filter(|(n, _, _)| n != id && !known.contains(&n))
                .filter(|(n, _, _)| {
                    routes.iter().any(|r| r.paths.iter().any(|p| p.relays.first().unwrap_or(&r.exit) == n))
                })
                .map(|(n, region, addr)| NodeIntro {
                    node_id: n.clone(),
                    region: region.clone(),
                    mesh_address: addr.clone(),
                })
                .collect();
            let mut nodes: Vec<NodeIntro> = nodes;
            nodes.sort_by(|x, y| x.node_id.cmp(&y.node_id));
            let set = InstructionSet {
                version: node.version,
                issued_at_unix: now_unix,
                ttl_secs: policy.ttl.as_secs(),
                routes,
                nodes,
            };
            changed.push((id.clone(), set));
        }
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        changed
    }
}

fn same_paths(a: &[RouteInstruction], b: &[RouteInstruction]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.route == y.route
                && x.exit == y.exit
                && x.paths.len() == y.paths.len()
                && x.paths.iter().zip(&y.paths).all(|(p, q)| p.relays == q.relays)
        })
}

/// The instructions for every route of one node.
fn route_instructions(
    id: &str,
    node: &mut NodeState,
    graph: &MeshGraph,
    policy: &Policy,
    clock: Duration,
) -> Vec<RouteInstruction> {
    let mut out = Vec::new();
    for (route, exit) in &node.registration.routes {
        let Some(exit) = exit.as_ref().filter(|e| *e != id) else { continue };
        if let Some(pin) = policy.pins.iter().find(|p| p.node == id && p.route == *route) {
            let paths = vec![InstructedPath { relays: pin.relays.clone(), weight: 1.0 }];
            out.push(RouteInstruction { route: route.clone(), exit: exit.clone(), paths });
            continue;
        }
        let found = graph.disjoint_paths(id, exit, policy.objective, policy.max_paths);
        let Some(best) = found.first() else {
            // Nothing measured yet (a node that just joined): go direct, so the link gets
            // made and measured.
            let paths = vec![InstructedPath { relays: Vec::new(), weight: 1.0 }];
            out.push(RouteInstruction { route: route.clone(), exit: exit.clone(), paths });
            continue;
        };
        let relays = |nodes: &[String]| nodes[1..nodes.len() - 1].to_vec();
        let choice = node.choices.entry(route.clone()).or_default();
        let current_cost = choice.current().and_then(|cur| {
            let mut nodes = vec![id.to_string()];
            nodes.extend(cur.iter().cloned());
            nodes.push(exit.clone());
            graph.path_cost(&nodes, policy.objective)
        });
        choice.update(policy.hysteresis, relays(&best.path.nodes), best.path.cost, current_cost, clock);
        let chosen = choice.current().cloned().unwrap_or_default();
        let mut paths = vec![InstructedPath { relays: chosen.clone(), weight: best.weight }];
        for alt in &found {
            let r = relays(&alt.path.nodes);
            if r != chosen {
                paths.push(InstructedPath { relays: r, weight: alt.weight });
            }
        }
        paths.truncate(policy.max_paths);
        out.push(RouteInstruction { route: route.clone(), exit: exit.clone(), paths });
    }
    out
}

#[cfg(test)]
mod tests;
