//! What the admin API shows of a route: where it exits, the path a new flow takes now, the
//! alternatives, and the instruction behind them.

use serde::Serialize;

use crate::core::route::{Exit, Route, path_via, pick_relays};

/// One route as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// `local` (this node dials), `remote` (another node exits) or `chain` (proxy chain).
    pub kind: &'static str,
    /// The exit node (this node for `local`; the next node for `chain`).
    pub exit: String,
    /// The targets, round robin.
    pub targets: Vec<String>,
    /// Whether flows stripe over several paths.
    pub multipath: bool,
    /// The nodes a new flow goes through now, after this node, the exit last.
    pub active_path: Vec<String>,
    /// Every candidate path in the order they are tried (the active one included).
    pub alternatives: Vec<Vec<String>>,
    /// Whether the scheduler's instruction covers this route.
    pub instructed: bool,
    /// Version of the instruction set held (0: none).
    pub instruction_version: u64,
    /// Whether that instruction set is past its TTL.
    pub stale: bool,
    /// Connections matched since start.
    pub matches: u64,
    /// Bytes of the route's finished flows, both directions.
    pub bytes: u64,
}

/// What the view needs besides the route itself.
pub(crate) struct RouteContext<'a> {
    /// This node's id.
    pub me: &'a str,
    /// Candidate relay lists for the route (instructed, static, direct), remote routes only.
    pub candidates: Vec<Vec<String>>,
    /// Whether an instruction covers the route.
    pub instructed: bool,
    /// The instruction set's version.
    pub version: u64,
    /// Whether it is stale.
    pub stale: bool,
    /// Matches and bytes.
    pub counts: (u64, u64),
}

/// Builds the view of `route`; `is_up` says whether a link can take new flows.
pub(crate) fn route_info(route: &Route, ctx: RouteContext<'_>, is_up: impl Fn(&str) -> bool) -> RouteInfo {
    let full = |exit: &str, relays: &[String]| {
        let p = path_via(exit, relays);
        std::iter::once(p.first_hop).chain(p.hops).collect::<Vec<String>>()
    };
    let (kind, exit, active_path, alternatives) = match &route.exit {
        Exit::Local => ("local", ctx.me.to_string(), Vec::new(), Vec::new()),
        Exit::Chain(peer) => ("chain", peer.clone(), vec![peer.clone()], vec![vec![peer.clone()]]),
        Exit::Remote { exit, .. } => {
            let active = full(exit, &pick_relays(exit, &ctx.candidates, is_up));
            let all = ctx.candidates.iter().map(|c| full(exit, c)).collect();
            ("remote", exit.clone(), active, all)
        }
    };
    RouteInfo {
        name: route.name.clone(),
        kind,
        exit,
        targets: route.targets().to_vec(),
        multipath: route.multipath,
        active_path,
        alternatives,
        instructed: ctx.instructed,
        instruction_version: ctx.version,
        stale: ctx.stale,
        matches: ctx.counts.0,
        bytes: ctx.counts.1,
    }
}
