//! [`NodeView`]: a running node's state and operations, what the admin API and embedders
//! call (peers, routes, flows, stats, reload, instructions).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::unix_now;
use crate::config::Config;
use crate::node::link::peers::PeerInfo;
use crate::node::observe::stats::Stats;
use crate::node::{ListenerInfo, Shared, control, observe};

/// A running node's state and operations, cheap to clone: what `Node` offers besides
/// starting and stopping (the admin server holds one).
#[derive(Clone)]
pub struct NodeView {
    pub(in crate::node) shared: Arc<Shared>,
}

impl NodeView {
    /// This node's id.
    pub fn id(&self) -> &str {
        self.shared.id()
    }

    /// Where the admin API answers (`common.admin_addr`, with the real port when it said 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.admin_addr
    }

    /// The UDP address of the QUIC endpoint.
    pub fn mesh_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Where links over TLS on TCP are accepted (`mesh.tcp_bind`), if anywhere.
    pub fn tcp_links_addr(&self) -> Option<SocketAddr> {
        self.shared.tcp_links_addr
    }

    /// The bound listeners.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let running = self.shared.running.lock().unwrap_or_else(|p| p.into_inner());
        running.listeners.iter().map(|(l, _)| l.clone()).collect()
    }

    /// Applies a new config while the node runs: listeners, peers, routes and the exit
    /// policy change; flows the change does not concern are not touched. A config whose
    /// other settings differ, or whose new listeners cannot be bound, is refused and
    /// nothing changes.
    pub fn reload(
        &self,
        config: Config,
    ) -> Result<control::reload::ReloadReport, control::reload::ReloadError> {
        self.recorded(control::reload::apply(&self.shared, config))
    }

    /// `result` of a reload, recorded as an event for the console.
    fn recorded(
        &self,
        result: Result<control::reload::ReloadReport, control::reload::ReloadError>,
    ) -> Result<control::reload::ReloadReport, control::reload::ReloadError> {
        use crate::console::events::EventKind;
        match &result {
            Ok(r) => self.shared.events.push(
                EventKind::ReloadApplied,
                format!("config version {} applied: {}", r.version, r.summary),
            ),
            Err(e) => {
                self.shared.events.push(EventKind::ReloadRefused, format!("config reload refused: {e}"))
            }
        }
        result
    }

    /// The console's event log.
    pub(crate) fn events(&self) -> std::sync::Arc<crate::console::events::EventLog> {
        self.shared.events.clone()
    }

    /// The node's region label.
    pub(crate) fn region(&self) -> String {
        self.shared.config.common.region.clone()
    }

    /// Reads, validates and applies the config file at `path` (see [`NodeView::reload`]).
    pub fn reload_file(
        &self,
        path: &std::path::Path,
    ) -> Result<control::reload::ReloadReport, control::reload::ReloadError> {
        match crate::config::load(path) {
            Ok(config) => self.reload(config),
            Err(e) => self.recorded(Err(control::reload::ReloadError::Invalid(e))),
        }
    }

    /// Makes this node a hostile relay for tests: `tap` sees, and may change, drop, repeat
    /// or cut, every chunk it relays from now on (`None` restores honest relaying).
    #[doc(hidden)]
    pub fn set_relay_tap(&self, tap: Option<crate::node::splice::relay_tap::RelayTap>) {
        self.shared.relay_tap.set(tap);
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> Stats {
        observe::stats::snapshot(
            self.shared.id(),
            &self.shared.counters,
            &self.shared.routes().counters(),
            &self.shared.budget,
        )
    }

    /// A snapshot of every configured peer and its link.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut peers = self.shared.pool.snapshot();
        for p in &mut peers {
            p.healthy = self.shared.link_usable(&p.id);
        }
        peers
    }

    /// The running config's version: 1 at start, +1 per applied reload.
    pub fn config_version(&self) -> u64 {
        self.shared.config_version.load(Ordering::Relaxed)
    }

    /// Every metric, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let (stats, peers, routes, by_role) =
            (self.stats(), self.peers(), self.routes(), self.flows_by_role());
        observe::metrics::render(&observe::metrics::MetricsInput {
            stats: &stats,
            peers: &peers,
            routes: &routes,
            flows_by_role: &by_role,
            config_version: self.config_version(),
            instruction_version: self.shared.instruction_version(),
            instructions_stale: self.instructions_stale(),
            certs: {
                let identity = self.shared.tls.identity();
                [("node", identity.validity()), ("ca", identity.ca_validity())]
            },
        })
    }

    /// The flows open on this node, busiest first.
    pub fn flows(&self) -> Vec<observe::flow_registry::FlowInfo> {
        self.shared.flows.snapshot(usize::MAX)
    }

    /// The `limit` busiest flows open on this node.
    pub fn busiest_flows(&self, limit: usize) -> Vec<observe::flow_registry::FlowInfo> {
        self.shared.flows.snapshot(limit)
    }

    /// Open flows by role (`origin`, `relay`, `exit`, ...).
    pub fn flows_by_role(&self) -> Vec<(observe::flow_registry::FlowRole, u64)> {
        self.shared.flows.count_by_role()
    }

    /// Every route with the path a new flow takes now and its alternatives.
    pub fn routes(&self) -> Vec<observe::route_view::RouteInfo> {
        let shared = &self.shared;
        let (version, stale) = (shared.instruction_version(), self.instructions_stale());
        shared
            .routes()
            .routes()
            .iter()
            .map(|route| {
                let (candidates, instructed) = match &route.exit {
                    crate::core::route::Exit::Remote { exit, paths } => {
                        let instructed = shared
                            .instructions
                            .read()
                            .is_ok_and(|c| c.route(&route.name).is_some_and(|r| r.exit == *exit));
                        (shared.candidates(&route.name, exit, paths), instructed)
                    }
                    _ => (Vec::new(), false),
                };
                let ctx = observe::route_view::RouteContext {
                    me: shared.id(),
                    candidates,
                    instructed,
                    version,
                    stale,
                    counts: (
                        route.counters.matches.load(Ordering::Relaxed),
                        route.counters.bytes.load(Ordering::Relaxed),
                    ),
                };
                observe::route_view::route_info(route, ctx, |n| shared.link_usable(n))
            })
            .collect()
    }

    /// The scheduler's instructions this node holds (from the scheduler or its disk cache).
    pub fn instructions(&self) -> Option<crate::core::control::InstructionSet> {
        self.shared.instructions.read().ok().and_then(|c| c.set().cloned())
    }

    /// The version of the instructions held (0: none).
    pub fn instruction_version(&self) -> u64 {
        self.shared.instruction_version()
    }

    /// Whether the instructions held are past their TTL (still used while nothing newer
    /// exists).
    pub fn instructions_stale(&self) -> bool {
        self.shared.instructions.read().is_ok_and(|c| c.is_stale(unix_now()))
    }

    /// Runs a ping or a trace (see [`crate::node::probe`]): real probe flows along the
    /// path a new flow to the node takes now. Takes at most about `count` times the
    /// interval per hop, plus bounded waits for each flow to open and end.
    pub async fn probe(
        &self,
        request: &crate::node::probe::ProbeRequest,
    ) -> Result<crate::node::probe::ProbeReport, crate::node::probe::ProbeError> {
        crate::node::probe::run(self.shared.clone(), request).await
    }

    /// Starts a ping or a trace on the node's runtime and returns its steps as they
    /// happen, the full report last; what is wrong with the request is known at once.
    /// Dropping the receiver stops the run (its flows end, its slot is free again).
    pub fn probe_streamed(
        &self,
        request: &crate::node::probe::ProbeRequest,
    ) -> Result<
        tokio::sync::mpsc::UnboundedReceiver<crate::node::probe::ProbeEvent>,
        crate::node::probe::ProbeError,
    > {
        use crate::node::probe::{Progress, plan};
        let planned = plan(self.shared.clone(), request)?;
        let (progress, events) = Progress::channel();
        let reader = progress.clone();
        self.shared.runtime.spawn(async move {
            tokio::select! {
                _ = planned.run(progress) => {}
                () = reader.reader_gone() => {}
            }
        });
        Ok(events)
    }

    /// Waits until a live link to `peer` exists; false on timeout or unknown peer.
    pub async fn wait_for_link(&self, peer: &str, timeout: Duration) -> bool {
        self.shared.pool.connection(peer, timeout).await.is_ok()
    }
}
