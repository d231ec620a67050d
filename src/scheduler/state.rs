//! The scheduler's view of the mesh and its decisions, without I/O: registrations, link
//! reports with their age, and the per-route choices (with hysteresis and pins) that become
//! versioned instruction sets.
//!
//! Invariants: a link counts only while the node that reports it has reported within
//! `node_dead_after`, and only between registered nodes; a node's instruction version
//! grows each time its instructions change, and never otherwise; it is at least the issue
//! time in Unix seconds times 1000, so it also grows across scheduler restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::scheduler::{Pin, SchedulerConfig};
use crate::core::control::{
    InstructedPath, InstructionSet, LinkCapacity, LinkReport, NodeIntro, PathOutcome, Registration,
    RouteInstruction, RouteReport,
};
use crate::core::hysteresis::{Hysteresis, RouteChoice};
use crate::core::pathfind::{LinkMetrics, MeshGraph, Objective, WeightedPath};

/// What the scheduler knows about one node.
#[derive(Debug)]
struct NodeState {
    registration: Registration,
    last_seen: Instant,
    /// Its last report's links, one per peer (ordered, so path ties break the same way
    /// on every run).
    links: BTreeMap<String, (LinkReport, Instant)>,
    /// Whether paths may go through it (`mesh.relay` of its config; true until it says).
    relay: bool,
    /// Relays that failed its flows lately: its own routes avoid them (one origin's
    /// reports change only its own paths).
    suspects: Suspects,
    /// Its last capacity claims (bytes per second, by peer) and when they came. Kept apart
    /// from `links`: they come in their own message, from nodes that have an estimate.
    capacities: (HashMap<String, u64>, Instant),
    /// Peers of its reported links whose link runs over TCP (its last `Transports`).
    over_tcp: std::collections::BTreeSet<String>,
    version: u64,
    sent: Option<Vec<RouteInstruction>>,
    /// The nodes introduced in the last set sent.
    sent_intros: Vec<NodeIntro>,
    choices: HashMap<(String, String), RouteChoice<Vec<String>>>,
    /// Flows and bytes per route, summed over reports.
    route_totals: HashMap<String, (u64, u64)>,
    /// When its last report (links and routes) came; heartbeats do not count.
    last_report: Option<Instant>,
    /// The last instruction set issued to it, kept for the admin API (`sent` is cleared
    /// when the node must be sent its set again; this is not).
    issued: Option<Issued>,
    /// Peers it has measured a link to, with the last RTT (ms): kept after the link is
    /// retired, so the partial mesh knows who is near.
    measured: HashMap<String, f64>,
    /// Per route, the primary path's cost when it was last searched.
    primary_costs: HashMap<String, f64>,
    /// Its routes must be searched at the next recompute (a pin changed).
    dirty: bool,
}

/// An instruction set as issued, for the admin API.
#[derive(Debug, Clone)]
struct Issued {
    version: u64,
    issued_at_unix: u64,
    routes: Vec<RouteInstruction>,
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
    /// The most links a node keeps (`max_links`): a partial mesh past `max_links + 1`
    /// nodes.
    pub max_links: usize,
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
            max_links: c.max_links,
        }
    }
}

/// The mesh as the scheduler sees it.
#[derive(Debug)]
pub struct MeshState {
    policy: Policy,
    epoch: Instant,
    nodes: HashMap<String, NodeState>,
    /// The links each node keeps, as last chosen.
    topology: topology::Links,
    /// Recomputes so far (the topology is chosen again every few).
    recomputes: u64,
    /// The config's pins; `policy.pins` holds them with the registry's (run-time) pins.
    config_pins: Vec<Pin>,
    /// The registry's (run-time) pins, as last set.
    shared_pins: Vec<Pin>,
}

impl MeshState {
    /// An empty mesh; `epoch` anchors the hysteresis clock.
    pub fn new(policy: Policy, epoch: Instant) -> Self {
        let config_pins = policy.pins.clone();
        Self {
            policy,
            epoch,
            nodes: HashMap::new(),
            topology: topology::Links::new(),
            recomputes: 0,
            config_pins,
            shared_pins: Vec::new(),
        }
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
                    links: BTreeMap::new(),
                    relay: true,
                    suspects: Suspects::default(),
                    capacities: (HashMap::new(), now),
                    over_tcp: Default::default(),
                    version: 0,
                    sent: None,
                    sent_intros: Vec::new(),
                    choices: HashMap::new(),
                    route_totals: HashMap::new(),
                    last_report: None,
                    issued: None,
                    measured: HashMap::new(),
                    primary_costs: HashMap::new(),
                    dirty: true,
                };
                self.nodes.insert(id, state);
            }
        }
    }

    /// A node subscribed holding `since` (from its cache). If that is not below what this
    /// scheduler issued (a clock step, a cache from elsewhere), the next set goes above it.
    pub fn subscribed(&mut self, node: &str, since: u64) {
        if let Some(n) = self.nodes.get_mut(node)
            && since >= n.version
        {
            n.version = since;
            n.sent = None;
        }
    }

    /// A node is alive.
    pub fn heartbeat(&mut self, node: &str, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
        }
    }

    /// A node's link measurements and per-route flow statistics.
    ///
    /// A report is cut down to what the computation can use before it is kept: one entry
    /// per peer, registered peers (and a few others, for the admin view) only, and routes
    /// the node registered; so a hostile member's report costs the recompute no more than
    /// an honest one.
    pub fn report(&mut self, node: &str, links: Vec<LinkReport>, routes: Vec<RouteReport>, now: Instant) {
        let mut kept = BTreeMap::new();
        let mut unregistered = 0;
        for l in links {
            if l.peer == node || kept.contains_key(&l.peer) {
                continue;
            }
            if !self.nodes.contains_key(&l.peer) {
                if unregistered >= MAX_UNREGISTERED_PEERS {
                    continue;
                }
                unregistered += 1;
            }
            kept.insert(l.peer.clone(), (l, now));
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
            n.last_report = Some(now);
            for (peer, (l, _)) in &kept {
                n.measured.insert(peer.clone(), (l.rtt_us as f64 / 1000.0).max(0.01));
            }
            if n.measured.len() > MAX_MEASURED {
                // The farthest are forgotten first: the nearest are what the mesh keeps.
                let mut by_rtt: Vec<(String, f64)> = n.measured.drain().collect();
                by_rtt.sort_by(|x, y| x.1.total_cmp(&y.1));
                by_rtt.truncate(MAX_MEASURED / 2);
                n.measured = by_rtt.into_iter().collect();
            }
            n.links = kept;
            // Only routes the node registered, once each: names in reports cannot grow the
            // state.
            let mut pending: std::collections::HashSet<&str> =
                n.registration.routes.iter().map(|(name, _)| name.as_str()).collect();
            for r in routes {
                if !pending.remove(r.route.as_str()) {
                    continue;
                }
                let total = n.route_totals.entry(r.route).or_default();
                *total = (total.0.saturating_add(r.flows), total.1.saturating_add(r.bytes));
            }
        }
    }

    /// A node's capacity claims for its links; they replace its previous claims. Only peers
    /// of its last report are kept (it sends them right after the report), so the claims
    /// cannot grow the state beyond its links.
    pub fn capacity(&mut self, node: &str, links: Vec<LinkCapacity>, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
            let claims = links
                .into_iter()
                .filter(|c| n.links.contains_key(&c.peer))
                .map(|c| (c.peer, c.capacity_bps))
                .collect();
            n.capacities = (claims, now);
        }
    }

    /// Which of a node's reported links run over TCP; replaces its previous list. Peers
    /// outside its last report are dropped, so the list cannot outgrow its links.
    pub fn transports(&mut self, node: &str, tcp: Vec<String>, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_seen = now;
            n.over_tcp = tcp.into_iter().filter(|p| n.links.contains_key(p)).collect();
        }
    }

    /// A node's standing as a relay and how its flows fared per path. Each relay of a
    /// path of a registered route is tallied, towards the route's exit, with the path's
    /// flows and failures; a relay whose (decaying) tally shows at least
    /// [`suspects::MIN_FAILED_FLOWS`] failures, and at least half its flows, is avoided by
    /// that node's routes to that exit for [`suspects::SUSPECT_FOR`] while another path
    /// exists. Only its own routes, so a member that reports lies can only make its own
    /// paths worse. The work is linear in the message: paths naming more relays than a
    /// header may hold, or a node twice, are skipped.
    pub fn outcomes(&mut self, node: &str, relay: bool, paths: Vec<PathOutcome>, now: Instant) {
        let Some(n) = self.nodes.get(node) else { return };
        let exits: HashMap<&str, &str> = n
            .registration
            .routes
            .iter()
            .filter_map(|(name, exit)| Some((name.as_str(), exit.as_deref()?)))
            .collect();
        let mut counted: Vec<(String, String, u64, u64)> = Vec::new();
        for p in &paths {
            let Some(exit) = exits.get(p.route.as_str()) else { continue };
            if p.relays.len() > MAX_PATH_RELAYS || !path_is_simple(node, &p.relays, exit) {
                continue;
            }
            for r in p.relays.iter().filter(|r| self.nodes.contains_key(r.as_str())) {
                counted.push((exit.to_string(), r.clone(), p.flows, p.failed));
            }
        }
        let Some(n) = self.nodes.get_mut(node) else { return };
        n.last_seen = now;
        n.relay = relay;
        n.suspects.begin_report(now);
        for (exit, r, flows, failed) in counted {
            n.suspects.count(&exit, &r, flows, failed);
        }
        n.suspects.end_report(now);
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

    /// Forgets a node (removed from the mesh): it is no longer introduced, and no path
    /// goes through it from the next recompute on.
    pub fn remove(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// Registered node ids.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether `id` is registered and has been heard from within `node_dead_after`.
    fn alive(&self, id: &str, now: Instant) -> bool {
        self.nodes.get(id).is_some_and(|n| now.duration_since(n.last_seen) <= self.policy.dead_after)
    }

    /// `id`'s report of its link to `peer`, whatever its age, with when it came.
    fn report_of(&self, id: &str, peer: &str) -> Option<&(LinkReport, Instant)> {
        self.nodes.get(id)?.links.get(peer)
    }

    /// `id`'s report of its link to `peer` when it is within `node_dead_after`.
    fn fresh_report(&self, id: &str, peer: &str, now: Instant) -> Option<&LinkReport> {
        self.report_of(id, peer)
            .filter(|(_, at)| now.duration_since(*at) <= self.policy.dead_after)
            .map(|(l, _)| l)
    }

    /// `id`'s claim of its link's capacity to `peer`, bytes per second, when it is within
    /// `node_dead_after`.
    fn capacity_claim(&self, id: &str, peer: &str, now: Instant) -> Option<u64> {
        let (claims, at) = &self.nodes.get(id)?.capacities;
        claims.get(peer).copied().filter(|_| now.duration_since(*at) <= self.policy.dead_after)
    }

    /// The link `a - b` as the computation counts it: both ends alive and both reporting
    /// it freshly, at the worse of the two reports (one node cannot make itself look close
    /// to everyone).
    fn counted_link(&self, a: &str, b: &str, now: Instant) -> Option<LinkMetrics> {
        if a == b || !self.alive(a, now) || !self.alive(b, now) {
            return None;
        }
        let claims = (self.capacity_claim(a, b, now), self.capacity_claim(b, a, now));
        Some(metrics_of(self.fresh_report(a, b, now)?, self.fresh_report(b, a, now)?, claims))
    }

    /// The graph of fresh links between live registered nodes.
    pub fn graph(&self, now: Instant) -> MeshGraph {
        let mut g = MeshGraph::new();
        for (id, n) in &self.nodes {
            g.node(id);
            for peer in n.links.keys() {
                if let Some(metrics) = self.counted_link(id, peer, now) {
                    g.set_link(id, peer, metrics);
                }
            }
        }
        g
    }

    /// For each (node, exit), up to `max` paths under the mesh's objective that share no
    /// relay, best first, as the console shows a route's alternatives (one graph for all).
    pub fn alternatives(
        &self,
        routes: &[(String, String)],
        max: usize,
        now: Instant,
    ) -> Vec<Vec<Vec<String>>> {
        let graph = self.graph(now);
        // As the recompute searches: never through a node that does not relay.
        let no_relay = |n: &str| self.nodes.get(n).is_some_and(|x| !x.relay);
        let paths = |(node, exit): &(String, String)| {
            let found = graph.disjoint_paths_avoiding(node, exit, self.policy.objective, max, no_relay);
            found.into_iter().map(|p| p.path.nodes).collect()
        };
        routes.iter().map(paths).collect()
    }

    /// Per node, the flows and bytes its routes carried since it started, as reported.
    pub fn node_totals(&self) -> HashMap<String, (u64, u64)> {
        let sum = |n: &NodeState| n.route_totals.values().fold((0, 0), |(f, b), (rf, rb)| (f + rf, b + rb));
        self.nodes.iter().map(|(id, n)| (id.clone(), sum(n))).collect()
    }

    /// Pins `pin.route` of `pin.node` to `pin.relays` from the next recompute on, replacing
    /// any pin of that route (an operator's action, which the registry keeps too, see
    /// [`MeshState::set_shared_pins`]).
    pub fn pin(&mut self, pin: Pin) {
        if let Some(n) = self.nodes.get_mut(&pin.node) {
            n.dirty = true;
        }
        self.policy.pins.retain(|p| !(p.node == pin.node && p.route == pin.route));
        self.policy.pins.push(pin);
    }

    /// Puts the registry's run-time pins in force with the config's (a run-time pin of a
    /// route replaces the config's); returns whether anything changed.
    pub fn set_shared_pins(&mut self, shared: Vec<Pin>) -> bool {
        self.shared_pins = shared;
        let pins = self.pins_in_force();
        if pins == self.policy.pins {
            return false;
        }
        for p in self.policy.pins.iter().chain(pins.iter()) {
            if let Some(n) = self.nodes.get_mut(&p.node) {
                n.dirty = true;
            }
        }
        self.policy.pins = pins;
        true
    }

    /// The config's pins, less those a run-time pin replaces, then the run-time pins.
    fn pins_in_force(&self) -> Vec<Pin> {
        let shared = &self.shared_pins;
        let mut pins: Vec<Pin> = self
            .config_pins
            .iter()
            .filter(|c| !shared.iter().any(|s| s.node == c.node && s.route == c.route))
            .cloned()
            .collect();
        pins.extend(shared.iter().cloned());
        pins
    }

    /// Puts a reloaded config's policy in force (objective, hysteresis, paths, pins, ...).
    /// Run-time pins stay over the new config's; every node's routes are searched anew at
    /// the next recompute, under the new rules.
    pub fn set_policy(&mut self, policy: Policy) {
        self.config_pins = policy.pins.clone();
        self.policy = policy;
        self.policy.pins = self.pins_in_force();
        for node in self.nodes.values_mut() {
            node.dirty = true;
        }
    }

    /// Removes the pin of `route` of `node`; `false` when there was none.
    pub fn unpin(&mut self, node: &str, route: &str) -> bool {
        if let Some(n) = self.nodes.get_mut(node) {
            n.dirty = true;
        }
        let before = self.policy.pins.len();
        self.policy.pins.retain(|p| !(p.node == node && p.route == route));
        self.policy.pins.len() != before
    }

    /// How long issued instructions stay valid on the nodes.
    pub fn instruction_ttl(&self) -> std::time::Duration {
        self.policy.ttl
    }

    /// Recomputes every route; returns the instruction sets that changed, by node.
    pub fn recompute(&mut self, now: Instant, now_unix: u64) -> Vec<(String, InstructionSet)> {
        let graph = self.graph(now);
        let clock = now.duration_since(self.epoch);
        let policy = self.policy.clone();
        let no_relay: HashSet<String> =
            self.nodes.iter().filter(|(_, n)| !n.relay).map(|(id, _)| id.clone()).collect();
        // Every registered node is introduced to those it keeps a link with (all of them
        // up to `max_links + 1` nodes) that do not have it in their config: a node that
        // joined with no peers configured gets links, hence measurements, hence paths,
        // within one recompute. Liveness is left out, so a node that flaps does not
        // re-version every other node's set.
        self.choose_topology();
        let mut all_nodes: Vec<NodeIntro> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeIntro {
                node_id: id.clone(),
                region: n.registration.region.clone(),
                mesh_address: n.registration.mesh_address.clone(),
            })
            .collect();
        all_nodes.sort_by(|x, y| x.node_id.cmp(&y.node_id));
        let mut changed = Vec::new();
        let sliced = self.nodes.len() > FULL_SEARCH_UP_TO;
        let round = self.recomputes;
        for (id, node) in self.nodes.iter_mut() {
            let due = !sliced
                || node.dirty
                || (topology::hash_id(id).wrapping_add(round)).is_multiple_of(SEARCH_SLICES)
                || !paths_hold(id, node, &graph, &policy, &no_relay, now);
            let routes = if due {
                node.dirty = false;
                let routes = route_instructions(id, node, &graph, &policy, &no_relay, clock, now);
                node.primary_costs = routes
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.route.clone(),
                            graph.path_cost(&hops(id, r, r.paths.first()?), policy.objective)?,
                        ))
                    })
                    .collect();
                routes
            } else {
                node.sent.clone().unwrap_or_default()
            };
            let known: Vec<&String> = node.registration.peers.iter().map(|(p, _)| p).collect();
            // A pair is introduced only to its node with the lower id, so it dials once. The
            // link rule keeps the connection the lower id opened anyway: a dial from the
            // other side would only make a second link, and when the tie-break closes it,
            // the flows already on it go down with it. The other node meets the pair when it
            // is dialed (with a scheduler, a node accepts any node of the mesh).
            let kept = self.topology.get(id);
            let nodes: Vec<NodeIntro> = all_nodes
                .iter()
                .filter(|n| n.node_id.as_str() > id.as_str() && !known.contains(&&n.node_id))
                .filter(|n| kept.is_some_and(|k| k.contains(&n.node_id)))
                .cloned()
                .collect();
            // Weights move with every measurement; only a change of paths or nodes is news.
            if node.sent.as_ref().is_some_and(|sent| same_paths(sent, &routes)) && node.sent_intros == nodes {
                continue;
            }
            // Versions carry the time, so a restarted scheduler (which starts from nothing)
            // still issues versions above what the nodes cached from its previous run.
            node.version = (node.version + 1).max(now_unix.saturating_mul(1000));
            node.sent = Some(routes.clone());
            node.sent_intros = nodes.clone();
            node.issued =
                Some(Issued { version: node.version, issued_at_unix: now_unix, routes: routes.clone() });
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

/// Up to this many nodes every route is searched at every recompute.
const FULL_SEARCH_UP_TO: usize = 200;
/// Past [`FULL_SEARCH_UP_TO`] nodes, a node's routes are searched every this many
/// recomputes (nodes take turns), and at once when its paths no longer hold.
const SEARCH_SLICES: u64 = 5;

/// The nodes of `path` of route `r` from `id`.
fn hops(id: &str, r: &RouteInstruction, path: &InstructedPath) -> Vec<String> {
    std::iter::once(id.to_string())
        .chain(path.relays.iter().cloned())
        .chain(std::iter::once(r.exit.clone()))
        .collect()
}

/// Whether the paths last issued to a node still stand, so its routes can wait for their
/// turn to be searched: every link of every path is up, no relay stopped relaying or
/// failed its flows, and no primary costs more than the hysteresis margin above what it
/// cost when chosen. A better path appearing waits for the node's turn (a few
/// recomputes, about the hysteresis hold); a worse one is acted on at once.
fn paths_hold(
    id: &str,
    node: &NodeState,
    graph: &MeshGraph,
    policy: &Policy,
    no_relay: &HashSet<String>,
    now: Instant,
) -> bool {
    let Some(sent) = &node.sent else { return false };
    sent.iter().all(|r| {
        if policy.pins.iter().any(|p| p.node == id && p.route == r.route) {
            return true;
        }
        r.paths.iter().enumerate().all(|(k, p)| {
            if p.relays.iter().any(|x| no_relay.contains(x) || node.suspects.avoids(&r.exit, x, now)) {
                return false;
            }
            let Some(cost) = graph.path_cost(&hops(id, r, p), policy.objective) else { return false };
            k > 0
                || node
                    .primary_costs
                    .get(&r.route)
                    .is_some_and(|c| cost <= c * (1.0 + policy.hysteresis.margin))
        })
    })
}

/// Peers a node's RTT memory holds at most (then it keeps the nearest half).
const MAX_MEASURED: usize = 256;
/// Recomputes between two choices of the partial mesh (and at once when nodes come or go).
const TOPOLOGY_EVERY: u64 = 5;

impl MeshState {
    /// Chooses the links each node keeps, every [`TOPOLOGY_EVERY`] recomputes or when the
    /// set of nodes changed: static peers and the links of issued paths always, then near,
    /// long-range and unexplored peers up to `max_links` (see [`topology`]).
    fn choose_topology(&mut self) {
        self.recomputes += 1;
        let same_nodes = self.topology.len() == self.nodes.len()
            && self.nodes.keys().all(|id| self.topology.contains_key(id));
        if same_nodes && !self.recomputes.is_multiple_of(TOPOLOGY_EVERY) {
            return;
        }
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        ids.sort();
        let mut must = Vec::new();
        let mut wanted = Vec::new();
        for (id, n) in &self.nodes {
            wanted.extend(
                n.registration.routes.iter().filter_map(|(_, exit)| Some((id.clone(), exit.clone()?))),
            );
            for (peer, _) in &n.registration.peers {
                must.push((id.clone(), peer.clone()));
            }
            for route in n.sent.iter().flatten() {
                for path in &route.paths {
                    let hops: Vec<&String> = std::iter::once(id)
                        .chain(path.relays.iter())
                        .chain(std::iter::once(&route.exit))
                        .collect();
                    must.extend(hops.windows(2).map(|w| (w[0].clone(), w[1].clone())));
                }
            }
        }
        let nodes = &self.nodes;
        let measured = |id: &str| nodes.get(id).map(|n| &n.measured);
        let input = topology::TopologyInput {
            ids: &ids,
            measured: &measured,
            must: &must,
            wanted: &wanted,
            current: &self.topology,
            max_links: self.policy.max_links,
            round: self.recomputes / topology::ROUND,
        };
        self.topology = topology::choose(&input);
    }

    /// The links each node keeps (the partial mesh), by node.
    pub fn kept_links(&self) -> &topology::Links {
        &self.topology
    }
}

/// What the computation assumes of a link that measured nothing: not the bottleneck.
const UNMEASURED_MBPS: f64 = 1000.0;
/// The most a link is believed to carry, bytes per second (100 Gbit/s): a larger claim or
/// throughput is a lie or an error, and counts as this.
const MAX_PLAUSIBLE_BPS: u64 = 12_500_000_000;
/// Peers outside the registry kept per report (they show in the admin API only).
const MAX_UNREGISTERED_PEERS: usize = 16;
/// Relays a path may name in a report (a header holds at most 16 hops).
const MAX_PATH_RELAYS: usize = 16;

/// Link metrics from the two ends' reports and capacity claims: the higher RTT and loss;
/// for bandwidth, the capacity when both ends claim one (the lower claim), else the lower
/// throughput, which a single claim may lower but never raise.
fn metrics_of(a: &LinkReport, b: &LinkReport, claims: (Option<u64>, Option<u64>)) -> LinkMetrics {
    LinkMetrics {
        // A floor, so no link is ever free.
        rtt_ms: (a.rtt_us.max(b.rtt_us) as f64 / 1000.0).max(0.01),
        loss: f64::from(a.loss_ppm.max(b.loss_ppm).min(999_999)) / 1e6,
        bandwidth_mbps: bandwidth_mbps(a, b, claims),
    }
}

/// Bytes per second to Mbit/s.
fn mbps(bytes_per_sec: u64) -> f64 {
    bytes_per_sec.min(MAX_PLAUSIBLE_BPS) as f64 * 8.0 / 1e6
}

/// The link's width for the `bandwidth` and `balanced` objectives, Mbit/s.
///
/// Capacity (what the link could carry) is what those objectives mean; throughput (what it
/// happened to carry) is the fallback for links whose ends have no capacity estimate (a
/// controller without one, an older node, a link never loaded). Each end's controller
/// measures its own sending direction, and either end could lie, so a capacity counts
/// only when both ends claim one, at the lower claim. One end's claim alone may lower the
/// fallback (a node can always make its own link worse by dropping traffic), never raise it.
fn bandwidth_mbps(a: &LinkReport, b: &LinkReport, claims: (Option<u64>, Option<u64>)) -> f64 {
    // An idle link has measured nothing: assume it is not the bottleneck.
    let fallback = throughput_of(a, b).map_or(UNMEASURED_MBPS, mbps);
    match claims {
        (Some(x), Some(y)) => mbps(x.min(y)),
        (Some(x), None) | (None, Some(x)) => mbps(x).min(fallback),
        (None, None) => fallback,
    }
}

/// The lower of the capacity claims present, bytes per second (what the admin API shows).
fn capacity_of(claims: (Option<u64>, Option<u64>)) -> Option<u64> {
    match claims {
        (Some(x), Some(y)) => Some(x.min(y).min(MAX_PLAUSIBLE_BPS)),
        (x, y) => x.or(y).map(|c| c.min(MAX_PLAUSIBLE_BPS)),
    }
}

/// Bytes per second over the link from two reports: the lower of the two when both ends
/// measured something; `None` when neither did (an idle link). One end's figure alone
/// counts only up to what an unmeasured link is assumed to carry: it may lower the
/// assumption (so an honest end's measurement still counts when the other reports 0),
/// never raise it (so one member cannot claim any width for its links).
fn throughput_of(a: &LinkReport, b: &LinkReport) -> Option<u64> {
    const UNMEASURED_BPS: u64 = (UNMEASURED_MBPS * 1e6 / 8.0) as u64;
    match (a.throughput_bps, b.throughput_bps) {
        (0, 0) => None,
        (0, x) | (x, 0) => Some(x.min(UNMEASURED_BPS)),
        (x, y) => Some(x.min(y).min(MAX_PLAUSIBLE_BPS)),
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

/// Whether `source -> relays -> exit` names no node twice.
fn path_is_simple(source: &str, relays: &[String], exit: &str) -> bool {
    relays.iter().enumerate().all(|(i, r)| r != source && r != exit && !relays[..i].contains(r))
}

/// The chosen path first, then computed alternatives that share no relay with it or with
/// each other, up to `max`; weights from the computation (the chosen path keeps its own
/// when it was computed, else an equal share).
fn with_alternatives(chosen: &[String], found: &[WeightedPath], max: usize) -> Vec<InstructedPath> {
    let relays = |p: &WeightedPath| p.path.nodes[1..p.path.nodes.len() - 1].to_vec();
    let own =
        found.iter().find(|p| relays(p) == chosen).map_or(1.0 / found.len().max(1) as f64, |p| p.weight);
    let mut paths = vec![InstructedPath { relays: chosen.to_vec(), weight: own }];
    let mut used: Vec<String> = chosen.to_vec();
    for alt in found {
        let r = relays(alt);
        if paths.len() >= max || r == chosen || r.iter().any(|n| used.contains(n)) {
            continue;
        }
        used.extend(r.iter().cloned());
        paths.push(InstructedPath { relays: r, weight: alt.weight });
    }
    paths
}

/// The instructions for every route of one node.
fn route_instructions(
    id: &str,
    node: &mut NodeState,
    graph: &MeshGraph,
    policy: &Policy,
    no_relay: &HashSet<String>,
    clock: Duration,
    now: Instant,
) -> Vec<RouteInstruction> {
    let mut out = Vec::new();
    let mut kept = HashMap::new();
    // Paths depend on the exit only: routes that share an exit share one search, so the
    // cost of a recompute grows with the exits a node uses, not with its routes.
    let mut searched: HashMap<&str, Vec<WeightedPath>> = HashMap::new();
    let suspects = &node.suspects;
    for (route, exit) in &node.registration.routes {
        let Some(exit) = exit.as_ref().filter(|e| *e != id) else { continue };
        let simple = |relays: &[String]| path_is_simple(id, relays, exit);
        // Operator pins are kept as written: the operator chose those relays.
        if let Some(pin) = policy.pins.iter().find(|p| p.node == id && p.route == *route && simple(&p.relays))
        {
            let paths = vec![InstructedPath { relays: pin.relays.clone(), weight: 1.0 }];
            out.push(RouteInstruction { route: route.clone(), exit: exit.clone(), paths });
            continue;
        }
        let avoided = |n: &str| no_relay.contains(n) || suspects.avoids(exit, n, now);
        let found = searched.entry(exit.as_str()).or_insert_with(|| {
            let clean = graph.disjoint_paths_avoiding(id, exit, policy.objective, policy.max_paths, avoided);
            // A relay to avoid is still better than no route at all.
            if clean.is_empty() {
                graph.disjoint_paths_avoiding(id, exit, policy.objective, policy.max_paths, |n| {
                    no_relay.contains(n)
                })
            } else {
                clean
            }
        });
        let usable = |relays: &[String]| simple(relays) && !relays.iter().any(|r| avoided(r));
        let Some(best) = found.first() else {
            // Nothing measured yet (a node that just joined): go direct, so the link gets
            // made and measured.
            let paths = vec![InstructedPath { relays: Vec::new(), weight: 1.0 }];
            out.push(RouteInstruction { route: route.clone(), exit: exit.clone(), paths });
            continue;
        };
        let relays = |nodes: &[String]| nodes[1..nodes.len() - 1].to_vec();
        // Keyed by route and exit: a route whose exit changed starts over.
        let key = (route.clone(), exit.clone());
        let mut choice = node.choices.remove(&key).unwrap_or_default();
        let current_cost = choice.current().filter(|cur| usable(cur)).and_then(|cur| {
            let mut nodes = vec![id.to_string()];
            nodes.extend(cur.iter().cloned());
            nodes.push(exit.clone());
            graph.path_cost(&nodes, policy.objective)
        });
        choice.update(policy.hysteresis, relays(&best.path.nodes), best.path.cost, current_cost, clock);
        let chosen = choice.current().cloned().unwrap_or_default();
        kept.insert(key, choice);
        out.push(RouteInstruction {
            route: route.clone(),
            exit: exit.clone(),
            paths: with_alternatives(&chosen, found, policy.max_paths),
        });
    }
    // Choices for routes the node no longer has are dropped.
    node.choices = kept;
    out
}

mod snapshot;
pub mod suspects;
#[cfg(test)]
mod tests;
pub mod topology;

use suspects::Suspects;

pub use snapshot::{LinkSnapshot, LinkState, NodeSnapshot, PathSnapshot, RouteSnapshot};
