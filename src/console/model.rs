//! What the console page shows, as JSON (`GET /api/console/state` and the live stream's
//! `state` messages), and the events a change between two states means. Pure.

use std::collections::HashMap;

use serde::Serialize;

use super::events::{Event, EventKind};

/// The whole view at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleState {
    /// `scheduler` (the whole mesh) or `node` (one node's own view).
    pub kind: &'static str,
    /// The node's own id on a node's console.
    pub self_id: Option<String>,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// Whether this console offers actions (the scheduler's).
    pub actions: bool,
    /// Nodes, by id.
    pub nodes: Vec<NodeRow>,
    /// Links, by pair (`a < b`).
    pub links: Vec<LinkRow>,
    /// Routes, by node and name.
    pub routes: Vec<RouteRow>,
    /// The busiest flows (a node's console only).
    pub flows: Vec<FlowRow>,
    /// The kept events, newest first (filled when served).
    pub events: Vec<Event>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// Region label.
    pub region: String,
    /// Mesh address, when known.
    pub address: Option<String>,
    /// `up` or `down`.
    pub state: &'static str,
    /// Seconds since it was heard from.
    pub last_seen_secs: Option<f64>,
    /// Its instruction set's version.
    pub instruction_version: Option<u64>,
    /// Whether paths may go through it.
    pub relay: Option<bool>,
    /// Flows: open now on a node's own row, opened per second on the scheduler's.
    pub flows: Option<f64>,
    /// Bytes per second its flows carried over the last sample interval.
    pub bytes_per_sec: Option<f64>,
}

/// One link between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRow {
    /// One end (the smaller id).
    pub a: String,
    /// The other end.
    pub b: String,
    /// `up`, `one_sided` (only one end reports it) or `dead`.
    pub state: &'static str,
    /// Round-trip time, when up.
    pub rtt_ms: Option<f64>,
    /// Loss ratio.
    pub loss: Option<f64>,
    /// Bytes per second sent over it.
    pub throughput_bytes_per_sec: Option<f64>,
    /// What it can carry, from the congestion controllers.
    pub capacity_bytes_per_sec: Option<f64>,
    /// `quic` or `tcp`.
    pub transport: String,
    /// Whether an issued path runs over it.
    pub used: bool,
}

/// One route of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteRow {
    /// The node the route starts at.
    pub node: String,
    /// Its name.
    pub route: String,
    /// Its exit node.
    pub exit: String,
    /// The objective its paths serve.
    pub objective: String,
    /// Whether an operator pinned its relays.
    pub pinned: bool,
    /// The instruction set's version carrying it.
    pub instruction_version: u64,
    /// Seconds since those instructions were issued.
    pub age_secs: Option<f64>,
    /// Whether the node runs on instructions past their TTL.
    pub stale: bool,
    /// The paths in use (several for multipath).
    pub paths: Vec<PathRow>,
    /// Other paths the route could take, best first.
    pub alternatives: Vec<PathRow>,
}

/// One path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathRow {
    /// Nodes from the route's node to its exit.
    pub hops: Vec<String>,
    /// Its share of a multipath route's flows.
    pub weight: Option<f64>,
    /// Sum of the links' round-trip times, when all are up.
    pub cost_ms: Option<f64>,
}

/// One flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    /// Flow id.
    pub id: String,
    /// The route it took.
    pub route: Option<String>,
    /// Bytes carried, both ways.
    pub bytes: u64,
    /// Bytes per second over its life.
    pub rate_bytes_per_sec: f64,
    /// Seconds since it opened.
    pub age_secs: f64,
    /// The nodes it crosses.
    pub path: Vec<String>,
}

impl ConsoleState {
    /// Whether `other` shows something different, ignoring the clock-driven fields (ages,
    /// last-seen times) so that a quiet mesh sends nothing.
    pub fn differs_from(&self, other: &ConsoleState) -> bool {
        self.clone().into_quiet() != other.clone().into_quiet()
    }

    /// The state without its clock-driven fields (ages, last-seen times, events): two
    /// quiet states are equal when the page would show nothing new.
    pub fn into_quiet(mut self) -> ConsoleState {
        self.generated_at_ms = 0;
        self.events.clear();
        self.nodes.iter_mut().for_each(|n| n.last_seen_secs = None);
        self.routes.iter_mut().for_each(|r| r.age_secs = None);
        self.flows.iter_mut().for_each(|f| f.age_secs = 0.0);
        self
    }

    /// The sum of the round-trip times along `hops`, when every link on it is up.
    pub fn rtt_along(&self, hops: &[String]) -> Option<f64> {
        hops.windows(2).map(|w| self.link(&w[0], &w[1]).filter(|l| l.state == "up")?.rtt_ms).sum()
    }

    /// The link between `x` and `y`, whichever way round.
    pub fn link(&self, x: &str, y: &str) -> Option<&LinkRow> {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        self.links.iter().find(|l| l.a == a && l.b == b)
    }
}

/// What changed from `old` to `new`, as events (kind, text).
pub fn changes(old: &ConsoleState, new: &ConsoleState) -> Vec<(EventKind, String)> {
    let mut out = Vec::new();
    let old_nodes: HashMap<&str, &NodeRow> = old.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for n in &new.nodes {
        match old_nodes.get(n.id.as_str()).map(|o| o.state) {
            Some(before) if before == n.state => {}
            None if n.state == "down" => {}
            _ if n.state == "up" => out.push((EventKind::NodeUp, format!("node {} is up", n.id))),
            _ => out.push((EventKind::NodeDown, format!("node {} is down", n.id))),
        }
    }
    let old_links: HashMap<(&str, &str), &LinkRow> =
        old.links.iter().map(|l| ((l.a.as_str(), l.b.as_str()), l)).collect();
    for l in &new.links {
        let before = old_links.get(&(l.a.as_str(), l.b.as_str())).map(|o| o.state);
        let (was_up, is_up) = (before == Some("up"), l.state == "up");
        if is_up && !was_up {
            let rtt = l.rtt_ms.map(|r| format!(" ({r:.1} ms)")).unwrap_or_default();
            out.push((EventKind::LinkUp, format!("link {}–{} is up{rtt}", l.a, l.b)));
        } else if was_up && !is_up {
            out.push((EventKind::LinkDown, format!("link {}–{} is {}", l.a, l.b, l.state.replace('_', "-"))));
        }
    }
    let new_pairs: std::collections::HashSet<(&str, &str)> =
        new.links.iter().map(|l| (l.a.as_str(), l.b.as_str())).collect();
    for l in
        old.links.iter().filter(|l| l.state == "up" && !new_pairs.contains(&(l.a.as_str(), l.b.as_str())))
    {
        out.push((EventKind::LinkDown, format!("link {}–{} is gone", l.a, l.b)));
    }
    let old_routes: HashMap<(&str, &str), &RouteRow> =
        old.routes.iter().map(|r| ((r.node.as_str(), r.route.as_str()), r)).collect();
    for r in &new.routes {
        let Some(before) = old_routes.get(&(r.node.as_str(), r.route.as_str())) else { continue };
        // Paths as a set: a multipath route whose paths only change order has not moved.
        let hops =
            |r: &RouteRow| r.paths.iter().map(|p| p.hops.clone()).collect::<std::collections::BTreeSet<_>>();
        if hops(before) == hops(r) {
            continue;
        }
        if r.paths.is_empty() {
            out.push((EventKind::RouteMoved, format!("route {} of {} has no path now", r.route, r.node)));
            continue;
        }
        let show = |r: &RouteRow| r.paths.iter().map(|p| p.hops.join(" → ")).collect::<Vec<_>>().join(" + ");
        let from = if before.paths.is_empty() { "no path".to_string() } else { show(before) };
        out.push((
            EventKind::RouteMoved,
            format!(
                "route {} of {} moved from {from} to {}: {}",
                r.route,
                r.node,
                show(r),
                why(before, r, new)
            ),
        ));
    }
    out
}

/// Why a route's paths changed, as far as the two states tell.
fn why(before: &RouteRow, after: &RouteRow, now: &ConsoleState) -> String {
    if after.pinned && !before.pinned {
        return "pinned by an operator".into();
    }
    if before.pinned && !after.pinned {
        return "unpinned".into();
    }
    for path in &before.paths {
        for w in path.hops.windows(2) {
            let state = now.link(&w[0], &w[1]).map_or("gone", |l| l.state);
            if state != "up" {
                return format!("link {}–{} is {}", w[0], w[1], state.replace('_', "-"));
            }
        }
    }
    if before.paths.first().map(|p| &p.hops) == after.paths.first().map(|p| &p.hops) {
        let (was, is) = (before.paths.len(), after.paths.len());
        return format!("the best path stays; {was} path(s) before, {is} now");
    }
    let best = |r: &RouteRow| r.paths.iter().filter_map(|p| now.rtt_along(&p.hops)).reduce(f64::min);
    match (best(after), best(before)) {
        (Some(new), Some(old)) => format!("{new:.1} ms round trip against {old:.1} ms on the old path"),
        _ => format!("instructions version {}", after.instruction_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(links: &[(&str, &str, &'static str, f64)], route: &[&str]) -> ConsoleState {
        ConsoleState {
            kind: "scheduler",
            self_id: None,
            generated_at_ms: 1,
            actions: false,
            nodes: ["a", "b", "c"]
                .iter()
                .map(|id| NodeRow {
                    id: id.to_string(),
                    region: "r".into(),
                    address: None,
                    state: "up",
                    last_seen_secs: Some(0.1),
                    instruction_version: Some(1),
                    relay: Some(true),
                    flows: None,
                    bytes_per_sec: None,
                })
                .collect(),
            links: links
                .iter()
                .map(|(a, b, state, rtt)| LinkRow {
                    a: a.to_string(),
                    b: b.to_string(),
                    state,
                    rtt_ms: Some(*rtt),
                    loss: Some(0.0),
                    throughput_bytes_per_sec: None,
                    capacity_bytes_per_sec: None,
                    transport: "quic".into(),
                    used: false,
                })
                .collect(),
            routes: vec![RouteRow {
                node: "a".into(),
                route: "web".into(),
                exit: "c".into(),
                objective: "latency".into(),
                pinned: false,
                instruction_version: 2,
                age_secs: Some(1.0),
                stale: false,
                paths: vec![PathRow {
                    hops: route.iter().map(|s| s.to_string()).collect(),
                    weight: Some(1.0),
                    cost_ms: None,
                }],
                alternatives: vec![],
            }],
            flows: vec![],
            events: vec![],
        }
    }

    #[test]
    fn a_dead_link_and_the_route_that_left_it_become_events_with_the_reason() {
        let before = state(
            &[("a", "b", "up", 10.0), ("b", "c", "up", 10.0), ("a", "c", "up", 50.0)],
            &["a", "b", "c"],
        );
        let after =
            state(&[("a", "b", "up", 10.0), ("b", "c", "dead", 10.0), ("a", "c", "up", 50.0)], &["a", "c"]);
        let events = changes(&before, &after);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], (EventKind::LinkDown, "link b–c is dead".to_string()));
        assert_eq!(events[1].0, EventKind::RouteMoved);
        assert!(events[1].1.contains("from a → b → c to a → c: link b–c is dead"), "{}", events[1].1);
        assert!(changes(&after, &after).is_empty());
        let mut none = after.clone();
        none.routes[0].paths.clear();
        assert_eq!(
            changes(&after, &none),
            vec![(EventKind::RouteMoved, "route web of a has no path now".to_string())]
        );
        let mut two = after.clone();
        two.routes[0].paths.push(PathRow {
            hops: vec!["a".into(), "b".into(), "c".into()],
            weight: None,
            cost_ms: None,
        });
        let mut swapped = two.clone();
        swapped.routes[0].paths.reverse();
        assert!(changes(&two, &swapped).is_empty(), "the same paths in another order");
    }

    #[test]
    fn a_cheaper_path_is_the_reason_when_nothing_died() {
        let before =
            state(&[("a", "b", "up", 10.0), ("b", "c", "up", 10.0), ("a", "c", "up", 50.0)], &["a", "c"]);
        let after = state(
            &[("a", "b", "up", 10.0), ("b", "c", "up", 10.0), ("a", "c", "up", 50.0)],
            &["a", "b", "c"],
        );
        let events = changes(&before, &after);
        assert!(events[0].1.ends_with("20.0 ms round trip against 50.0 ms on the old path"), "{events:?}");
    }

    #[test]
    fn ages_alone_are_no_change() {
        let a = state(&[("a", "b", "up", 10.0)], &["a", "b"]);
        let mut b = a.clone();
        b.generated_at_ms = 99;
        b.nodes[0].last_seen_secs = Some(4.0);
        assert!(!a.differs_from(&b));
        b.links[0].rtt_ms = Some(11.0);
        assert!(a.differs_from(&b));
        b.links[0].rtt_ms = Some(10.0);
        b.nodes[1].state = "down";
        assert!(a.differs_from(&b));
        assert_eq!(changes(&a, &b), vec![(EventKind::NodeDown, "node b is down".to_string())]);
    }
}
