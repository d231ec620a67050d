//! The path a new flow to a node takes now, as ping and trace see it: the active path of
//! the first route (in config order) whose exit is the node, as a new flow on that route
//! would take it (the scheduler's instruction, else static paths, else direct, skipping
//! candidates whose first link is down); else the direct link when the node is a peer
//! (configured or introduced by the scheduler).

use crate::core::route::{Exit, path_via, pick_relays};
use crate::node::Shared;

/// The path chosen to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// The route whose path this is; `None` for the direct link.
    pub route: Option<String>,
    /// The nodes after this one, the node last.
    pub path: Vec<String>,
}

/// Why no path was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoPath {
    /// The node is this node.
    Itself,
    /// The node is named nowhere this node knows of.
    Unknown,
    /// The node is a relay on the paths of route `.0`, but no route exits there and it is
    /// not a peer.
    RelayOnly(String),
}

/// The path to `node` (see the module's text).
pub(crate) fn to(shared: &Shared, node: &str) -> Result<Chosen, NoPath> {
    if node == shared.id() {
        return Err(NoPath::Itself);
    }
    let routes = shared.routes();
    let remote = routes.routes().iter().filter_map(|r| match &r.exit {
        Exit::Remote { exit, paths } => Some((r, exit, paths)),
        Exit::Local | Exit::Chain(_) => None,
    });
    let mut relay_on = None;
    for (route, exit, paths) in remote {
        let candidates = shared.candidates(&route.name, exit, paths);
        if exit == node {
            let p = path_via(exit, &pick_relays(exit, &candidates, |n| shared.link_usable(n)));
            let path = std::iter::once(p.first_hop).chain(p.hops).collect();
            return Ok(Chosen { route: Some(route.name.clone()), path });
        }
        if relay_on.is_none() && candidates.iter().flatten().any(|n| n == node) {
            relay_on = Some(route.name.clone());
        }
    }
    if shared.pool.is_known(node) {
        return Ok(Chosen { route: None, path: vec![node.to_string()] });
    }
    Err(relay_on.map_or(NoPath::Unknown, NoPath::RelayOnly))
}
