//! Route selection: which route an accepted connection takes, and which of its targets.
//!
//! Built once from the validated config; lookups take no locks. Targets of a route are
//! balanced round robin with an atomic cursor.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Config, RouteMatch};

/// Where a route's flows leave the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// This node dials the target itself.
    Local,
    /// The named peer dials the target.
    Peer(String),
}

/// One route, ready for lookups.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// Where its flows exit.
    pub exit: Exit,
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
}

impl RouteTable {
    /// Builds the table: for each listener, the first route that names it, else the first
    /// that matches its bound port.
    pub fn new(config: &Config, listener_ports: &[(String, u16)]) -> Self {
        let local = &config.common.node_id;
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                exit: match &r.exit {
                    Some(e) if e != local => Exit::Peer(e.clone()),
                    _ => Exit::Local,
                },
                targets: r.targets.clone(),
                cursor: AtomicUsize::new(0),
            })
            .collect();
        let by_listener = listener_ports
            .iter()
            .filter_map(|(name, port)| {
                let by_name =
                    config.routes.iter().position(|r| r.matcher == RouteMatch::Listener(name.clone()));
                let by_port = || config.routes.iter().position(|r| r.matcher == RouteMatch::Port(*port));
                by_name.or_else(by_port).map(|i| (name.clone(), i))
            })
            .collect();
        Self { routes, by_listener }
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
}
