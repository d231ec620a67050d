//! Route selection: which route an accepted connection takes, which of its targets, and
//! which path to its exit.
//!
//! Built once from the validated config; lookups take no locks. Targets of a route are
//! balanced round robin with an atomic cursor. Path choice is a pure function of which
//! peer links are up: the first static path whose first relay is reachable, else a direct
//! link to the exit, else the first path (its link may come up while the flow waits).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::core::wire::RefuseReason;

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique route name.
    pub name: String,
    /// Which accepted connections the route applies to.
    pub matcher: RouteMatch,
    /// `host:port` targets dialed by the exit node; several are balanced round robin.
    /// Empty for a proxy chain.
    pub targets: Vec<String>,
    /// The node that dials the target; `None` means this node.
    pub exit: Option<String>,
    /// Static relay paths to the exit (the nodes between this node and the exit), tried in
    /// order; empty means straight to the exit. `via: [..]` is one path.
    pub paths: Vec<Vec<String>>,
    /// The seed's proxy chain (`target: <peer>`): the flow goes to this peer, which routes
    /// it by its own route for the same port.
    pub chain: Option<String>,
    /// Whether each flow is striped over several paths at once (`multipath: true`).
    pub multipath: bool,
}

/// How a route selects connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// Connections accepted on the listener bound to this port.
    Port(u16),
    /// Connections accepted on the listener with this name.
    Listener(String),
}

/// Where a route's flows leave the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// This node dials the target itself.
    Local,
    /// Another node dials the target, reached directly or through relays.
    Remote {
        /// The exit node.
        exit: String,
        /// Static relay paths (nodes between this node and the exit), in order of preference.
        paths: Vec<Vec<String>>,
    },
    /// The seed's proxy chain: the peer routes the flow by its own route for the port.
    Chain(String),
}

/// The path a new flow takes: the peer to open the stream to, and the hops the header
/// names after it (the last is the exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenPath {
    /// The peer this node opens the stream to.
    pub first_hop: String,
    /// The nodes after the first hop; empty when the first hop is the exit.
    pub hops: Vec<String>,
}

/// Picks the path to `exit` among `candidates` (relay lists in order of preference; an
/// empty list is the direct link): the first whose first hop `is_up`, else the first.
pub fn choose_path(exit: &str, candidates: &[Vec<String>], is_up: impl Fn(&str) -> bool) -> ChosenPath {
    path_via(exit, &pick_relays(exit, candidates, is_up))
}

/// The relay list [`choose_path`] takes: the first candidate whose first hop `is_up`,
/// else the first candidate, else direct.
pub fn pick_relays(exit: &str, candidates: &[Vec<String>], is_up: impl Fn(&str) -> bool) -> Vec<String> {
    candidates
        .iter()
        .find(|c| is_up(first_hop(exit, c)))
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_default()
}

/// The first node a path through `relays` to `exit` goes to.
pub fn first_hop<'a>(exit: &'a str, relays: &'a [String]) -> &'a str {
    relays.first().map_or(exit, String::as_str)
}

/// The path to `exit` through `relays` (empty: direct).
pub fn path_via(exit: &str, relays: &[String]) -> ChosenPath {
    match relays.split_first() {
        Some((first, rest)) => {
            let mut hops = rest.to_vec();
            hops.push(exit.to_string());
            ChosenPath { first_hop: first.clone(), hops }
        }
        None => ChosenPath { first_hop: exit.to_string(), hops: Vec::new() },
    }
}

/// The candidates of a route without instructions: its static paths, then direct.
pub fn static_candidates(paths: &[Vec<String>]) -> Vec<Vec<String>> {
    paths.iter().filter(|p| !p.is_empty()).cloned().chain([Vec::new()]).collect()
}

/// Counters of one route; they live as long as a route of that name does, across
/// reloads.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Connections the route matched.
    pub matches: AtomicU64,
    /// Bytes carried by the route's flows, both directions, counted when a flow ends.
    pub bytes: AtomicU64,
    /// Refusals of the route's flows, by reason.
    pub refusals: [AtomicU64; RefuseReason::ALL.len()],
}

/// One route, ready for lookups.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// Where its flows exit.
    pub exit: Exit,
    /// Whether its flows are striped over several paths (remote exits only).
    pub multipath: bool,
    /// Its counters (kept across reloads for a route of the same name).
    pub counters: Arc<RouteCounters>,
    targets: Vec<String>,
    cursor: AtomicUsize,
}

impl Route {
    /// The next target, round robin.
    pub fn next_target(&self) -> &str {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.targets.len().max(1);
        self.targets.get(i).map_or("", String::as_str)
    }

    /// All targets, in config order.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

/// All routes of a node, indexed for listener lookups.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_listener: Vec<(String, usize)>,
    /// Bound port of each listener.
    by_port: Vec<(u16, String)>,
    /// Routes that match by port, with their index.
    port_matches: Vec<(u16, usize)>,
}

impl RouteTable {
    /// Builds the table: for each listener, the first route that names it, else the first
    /// that matches its bound port. Routes named as in `previous` keep their counters.
    pub fn new(
        local: &str,
        configured: &[RouteConfig],
        listener_ports: &[(String, u16)],
        previous: Option<&RouteTable>,
    ) -> Self {
        let routes: Vec<Route> = configured
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                exit: match (&r.chain, &r.exit) {
                    (Some(peer), _) => Exit::Chain(peer.clone()),
                    (None, Some(e)) if e != local => Exit::Remote { exit: e.clone(), paths: r.paths.clone() },
                    _ => Exit::Local,
                },
                multipath: r.multipath,
                counters: previous
                    .and_then(|t| t.routes.iter().find(|old| old.name == r.name))
                    .map_or_else(Default::default, |old| old.counters.clone()),
                targets: r.targets.clone(),
                cursor: AtomicUsize::new(0),
            })
            .collect();
        let port_matches = configured
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.matcher {
                RouteMatch::Port(p) => Some((p, i)),
                RouteMatch::Listener(_) => None,
            })
            .collect();
        let by_listener = listener_ports
            .iter()
            .filter_map(|(name, port)| {
                let by_name = configured.iter().position(|r| r.matcher == RouteMatch::Listener(name.clone()));
                let by_port = || configured.iter().position(|r| r.matcher == RouteMatch::Port(*port));
                by_name.or_else(by_port).map(|i| (name.clone(), i))
            })
            .collect();
        let by_port = listener_ports.iter().map(|(name, port)| (*port, name.clone())).collect();
        Self { routes, by_listener, by_port, port_matches }
    }

    /// The route for a proxy-chain flow asking for `port`: the route of the listener bound
    /// to that port, else a route that matches the port.
    pub fn for_port(&self, port: u16) -> Option<(usize, &Route)> {
        if let Some((_, listener)) = self.by_port.iter().find(|(p, _)| *p == port) {
            return self.for_listener(listener);
        }
        let i = self.port_matches.iter().find(|(p, _)| *p == port).map(|(_, i)| *i)?;
        self.routes.get(i).map(|r| (i, r))
    }

    /// The route for connections accepted on `listener`, with its index.
    pub fn for_listener(&self, listener: &str) -> Option<(usize, &Route)> {
        let (_, i) = self.by_listener.iter().find(|(n, _)| n == listener)?;
        self.routes.get(*i).map(|r| (*i, r))
    }

    /// All routes, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Each route's name and counters, in config order.
    pub fn counters(&self) -> Vec<(String, Arc<RouteCounters>)> {
        self.routes.iter().map(|r| (r.name.clone(), r.counters.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &[&[&str]]) -> Vec<Vec<String>> {
        p.iter().map(|path| path.iter().map(|s| s.to_string()).collect()).collect()
    }

    fn chosen(first: &str, hops: &[&str]) -> ChosenPath {
        ChosenPath { first_hop: first.into(), hops: hops.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn the_first_path_with_a_live_first_relay_wins() {
        let p = paths(&[&["b", "c"], &["e"]]);
        assert_eq!(choose_path("d", &static_candidates(&p), |n| n != "b"), chosen("e", &["d"]));
        assert_eq!(choose_path("d", &static_candidates(&p), |_| true), chosen("b", &["c", "d"]));
    }

    #[test]
    fn a_direct_link_is_the_fallback_then_the_first_path() {
        let p = paths(&[&["b", "c"]]);
        assert_eq!(choose_path("d", &static_candidates(&p), |n| n == "d"), chosen("d", &[]));
        assert_eq!(choose_path("d", &static_candidates(&p), |_| false), chosen("b", &["c", "d"]));
        assert_eq!(choose_path("d", &static_candidates(&[]), |_| false), chosen("d", &[]));
    }

    #[test]
    fn a_chosen_path_never_names_a_node_twice_when_the_config_did_not() {
        let p = paths(&[&["b", "c", "e"]]);
        let c = choose_path("d", &static_candidates(&p), |_| true);
        let mut all = vec![c.first_hop.clone()];
        all.extend(c.hops.iter().cloned());
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(all.len(), dedup.len());
        assert_eq!(c.hops.last().map(String::as_str), Some("d"));
    }
}
