//! The node shell: owns the sockets and tasks, and carries out what the core decides.
//!
//! One QUIC endpoint (peer links, both directions), one TCP listener per configured
//! listener, one dial loop per peer with an address. Every flow is a task holding a
//! [`FlowGuard`], which holds a permit of the node's flow semaphore: the number of flows
//! is bounded, and shutdown waits for the permits to come back.

pub mod congestion;
pub mod endpoint;
pub mod exit;
pub mod flow_registry;
pub mod flow_timer;
pub mod identity;
pub mod inbound;
pub mod instruction_store;
pub mod link_credit;
pub mod link_delivery;
pub mod link_send;
pub mod links;
pub mod listener;
pub mod local_splice;
pub mod metrics;
pub mod multipath;
pub mod onward;
pub mod origin;
pub mod peers;
pub mod relay;
pub mod reload;
pub mod renewal;
pub mod route_view;
pub mod scheduler_client;
pub mod splice;
pub mod stats;
pub mod stream_splice;
pub mod tcp_io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::clock::unix_now;
use crate::config::Config;
use crate::core::instructions::InstructionCache;
use crate::core::route::RouteTable;
use crate::core::wire::HeaderLimits;
use crate::tls::TlsIdentity;
use flow_registry::{FlowMeta, FlowRecord, FlowRegistry};
use flow_timer::FlowTimeouts;
use peers::{PeerInfo, PeerPool};
use splice::FlowEnd;
use stats::{Counters, Stats};

/// State shared by every task of a node.
pub struct Shared {
    config: Config,
    routes: std::sync::RwLock<Arc<RouteTable>>,
    pool: PeerPool,
    endpoint: quinn::Endpoint,
    /// The certificate in force (renewed in place) and the revocations handshakes check.
    tls: identity::NodeTls,
    counters: Arc<Counters>,
    /// Buffered flow data, node-wide (`limits.max_buffered_bytes`).
    budget: Arc<link_credit::BufferBudget>,
    flow_permits: Arc<Semaphore>,
    draining: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    flow_ids: AtomicU64,
    header_limits: HeaderLimits,
    timeouts: FlowTimeouts,
    instructions: std::sync::RwLock<InstructionCache>,
    sessions: multipath::exit::Sessions,
    flows: Arc<FlowRegistry>,
    /// 1 at start, +1 per applied reload.
    config_version: AtomicU64,
    /// The exit policy in force (replaced whole by a reload).
    exit_policy: std::sync::RwLock<Arc<crate::core::policy::ExitPolicy>>,
    /// The config in force and the tasks that serve it.
    running: std::sync::Mutex<reload::Running>,
    /// Where the admin API answers.
    admin_addr: SocketAddr,
    /// Woken by every applied reload (the scheduler session registers anew).
    config_changed: tokio::sync::Notify,
    /// The node's runtime, so a reload called from any thread starts its tasks there.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn id(&self) -> &str {
        &self.config.common.node_id
    }

    /// The exit policy in force.
    fn exit_policy(&self) -> Arc<crate::core::policy::ExitPolicy> {
        self.exit_policy.read().map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// The route table in force (replaced whole by a reload).
    fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// Timeouts for a flow this node opens with `nodes_ahead` nodes after it: each may
    /// take up to `connect_timeout` to open the next stream or dial the target, so the
    /// reply deadline grows with the path.
    fn timeouts_for(&self, nodes_ahead: usize) -> FlowTimeouts {
        FlowTimeouts { reply: reply_deadline(&self.config.limits, nodes_ahead), ..self.timeouts }
    }

    /// Paths a new flow on `route` tries, in order: the scheduler's instructions (held in
    /// memory and on disk), the route's static paths, direct.
    fn candidates(&self, route: &str, exit: &str, static_paths: &[Vec<String>]) -> Vec<Vec<String>> {
        match self.instructions.read() {
            Ok(cache) => cache.candidates(self.id(), route, exit, static_paths),
            Err(_) => crate::core::route::static_candidates(static_paths),
        }
    }

    /// The instruction version held (0: none).
    fn instruction_version(&self) -> u64 {
        self.instructions.read().map_or(0, |c| c.version())
    }

    /// Takes a newer instruction set; returns whether it was newer.
    fn apply_instructions(&self, set: crate::core::control::InstructionSet) -> bool {
        self.instructions.write().is_ok_and(|mut c| c.apply(set))
    }

    /// Whether new flows may start on the link to `peer`: it is up and has not gone silent
    /// for longer than two keepalive intervals.
    fn link_usable(&self, peer: &str) -> bool {
        let quiet =
            self.config.mesh.keepalive_interval.saturating_mul(2).saturating_add(Duration::from_millis(100));
        self.pool.is_healthy(peer, quiet)
    }

    /// The environment a flow is spliced in; its bytes count on `guard`'s record.
    fn flow_env(
        &self,
        timeouts: FlowTimeouts,
        route: Option<Arc<stats::RouteCounters>>,
        guard: &FlowGuard,
    ) -> splice::FlowEnv {
        splice::FlowEnv {
            timeouts,
            counters: self.counters.clone(),
            force: self.force.clone(),
            route,
            bytes: guard.record.bytes(),
            budget: self.budget.clone(),
        }
    }

    fn new_flow_id(&self) -> u64 {
        self.flow_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Held by every flow task: counts the flow as open, holds its permit, and keeps its
/// record in the node's flow registry.
pub struct FlowGuard {
    counters: Arc<Counters>,
    _permit: OwnedSemaphorePermit,
    registry: Arc<FlowRegistry>,
    record: Arc<FlowRecord>,
}

impl FlowGuard {
    /// A guard, or `None` when the node is at its flow limit.
    pub(crate) fn try_new(shared: &Shared) -> Option<Self> {
        let permit = shared.flow_permits.clone().try_acquire_owned().ok()?;
        shared.counters.flows_current.fetch_add(1, Ordering::Relaxed);
        let record = shared.flows.register();
        Some(Self {
            counters: shared.counters.clone(),
            _permit: permit,
            registry: shared.flows.clone(),
            record,
        })
    }

    /// Says what the flow is, for the admin API.
    pub(crate) fn describe(&self, f: impl FnOnce(&mut FlowMeta)) {
        self.record.describe(f);
    }

    /// Counts how the flow ended.
    pub(crate) fn finish(self, end: &FlowEnd) {
        match end {
            FlowEnd::Completed => debug!("flow completed"),
            FlowEnd::Refused { .. } | FlowEnd::RefusedAhead => {}
            other => {
                self.counters.flows_reset.fetch_add(1, Ordering::Relaxed);
                debug!(end = ?other, "flow reset");
            }
        }
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.counters.flows_current.fetch_sub(1, Ordering::Relaxed);
        self.registry.remove(&self.record);
    }
}

/// A bound listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerInfo {
    /// The listener's name.
    pub name: String,
    /// The address it is bound to (the real port when the config said 0).
    pub addr: SocketAddr,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Flows open when shutdown began.
    pub open_at_start: u64,
    /// Flows that were still open at the deadline and were reset.
    pub reset_at_deadline: u64,
}

/// A running node.
pub struct Node {
    view: NodeView,
    draining_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
}

impl Node {
    /// Starts a node: loads its certificates, binds the endpoint and listeners, starts
    /// dialing peers. Fails before serving anything if a socket or file is unusable.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let m = &config.mesh;
        let identity = TlsIdentity::load(&m.cert, &m.key, &m.ca, &config.common.node_id)?;
        Self::start_with_identity(config, identity).await
    }

    /// Starts a node with an identity already in memory.
    pub async fn start_with_identity(config: Config, identity: TlsIdentity) -> anyhow::Result<Node> {
        let transport = Arc::new(endpoint::transport_config(&config.mesh, &config.limits));
        let socket = crate::quic::bind_udp(config.mesh.bind, config.mesh.udp_buffer)
            .with_context(|| format!("mesh.bind: cannot bind UDP {}", config.mesh.bind))?;
        let identity = identity.with_revocations(load_revocations(&config));
        let endpoint = crate::quic::build(&identity, transport.clone(), socket)?;
        let tls = identity::NodeTls::new(identity, transport)?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            let tcp = listener::bind(l.bind)
                .with_context(|| format!("listeners.{}: cannot bind TCP {}", l.name, l.bind))?;
            bound.push((l.name.clone(), tcp));
        }
        let listeners: Vec<ListenerInfo> = bound
            .iter()
            .map(|(name, l)| Ok(ListenerInfo { name: name.clone(), addr: l.local_addr()? }))
            .collect::<std::io::Result<_>>()?;
        let ports: Vec<(String, u16)> = listeners.iter().map(|l| (l.name.clone(), l.addr.port())).collect();
        let instructions = load_instructions(&config);
        let admin = bind_admin(&config)?;
        let admin_addr = admin.local_addr()?;
        let (draining_tx, draining) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        let limits = &config.limits;
        let shared = Arc::new(Shared {
            routes: std::sync::RwLock::new(Arc::new(RouteTable::new(
                &config.common.node_id,
                &config.routes,
                &ports,
                None,
            ))),
            pool: PeerPool::new(
                &config.common.node_id,
                &config.peers,
                limits.connect_timeout.saturating_add(Duration::from_secs(1)),
            ),
            endpoint,
            tls,
            counters: Arc::new(Counters::new()),
            budget: link_credit::BufferBudget::new(limits.max_buffered_bytes),
            flow_permits: Arc::new(Semaphore::new(limits.max_flows)),
            draining,
            force,
            flow_ids: AtomicU64::new(rand::random::<u64>() >> 1),
            header_limits: HeaderLimits { max_header_bytes: limits.max_header_bytes, max_hops: 16 },
            timeouts: FlowTimeouts {
                idle: limits.idle_timeout,
                half_closed: limits.half_closed_timeout,
                reply: reply_deadline(limits, 1),
            },
            instructions: std::sync::RwLock::new(instructions),
            sessions: multipath::exit::Sessions::default(),
            flows: Arc::new(FlowRegistry::default()),
            config_version: AtomicU64::new(1),
            exit_policy: std::sync::RwLock::new(Arc::new(config.exit_policy.clone())),
            running: std::sync::Mutex::new(reload::Running {
                config: config.clone(),
                listeners: Vec::new(),
                dialers: std::collections::HashMap::new(),
            }),
            admin_addr,
            config_changed: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::current(),
            config,
        });
        tokio::spawn(links::accept_loop(shared.clone()));
        if let Some(cfg) = shared.config.scheduler.clone() {
            tokio::spawn(scheduler_client::run(shared.clone(), cfg));
        }
        {
            let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
            for (peer, address) in shared.pool.dialable() {
                let task = tokio::spawn(links::dial_loop(shared.clone(), peer.clone(), address));
                running.dialers.insert(peer, task.abort_handle());
            }
            for ((name, tcp), info) in bound.into_iter().zip(&listeners) {
                let task = tokio::spawn(listener::accept_loop(shared.clone(), name, tcp));
                running.listeners.push((info.clone(), task.abort_handle()));
            }
        }
        let view = NodeView { shared: shared.clone() };
        let rules = crate::admin::http::AccessRules {
            token: shared.config.common.admin_token.clone(),
            allowed_hosts: crate::admin::http::default_allowed_hosts(admin_addr),
        };
        tokio::spawn(crate::admin::http::serve(
            admin,
            rules,
            crate::admin::api::node_handler(view),
            shared.force.clone(),
        ));
        info!(node = %shared.id(), mesh = %shared.endpoint.local_addr()?, admin = %admin_addr, "node started");
        Ok(Node { view: NodeView { shared }, draining_tx, force_tx })
    }

    /// Graceful shutdown: stop accepting, let open flows finish until the drain deadline,
    /// reset the rest, close the links.
    pub async fn shutdown(self) -> ShutdownReport {
        let max = self.view.shared.config.limits.max_flows as u32;
        let open_at_start = self.view.shared.counters.flows_current.load(Ordering::Relaxed);
        let _ = self.draining_tx.send(true);
        info!(open = open_at_start, "draining");
        let deadline = self.view.shared.config.limits.drain_timeout;
        let drained = tokio::time::timeout(deadline, self.view.shared.flow_permits.acquire_many(max)).await;
        let mut reset_at_deadline = 0;
        if drained.is_err() {
            reset_at_deadline = self.view.shared.counters.flows_current.load(Ordering::Relaxed);
            warn!(open = reset_at_deadline, "drain deadline passed; resetting open flows");
            let _ = self.force_tx.send(true);
            // Give the resets a moment to reach the peers before the links close.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.view.shared.flow_permits.acquire_many(max))
                    .await;
        }
        self.view.shared.pool.close_all();
        self.view.shared.endpoint.close(peers::LINK_SHUTDOWN, b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.view.shared.endpoint.wait_idle()).await;
        info!("stopped");
        ShutdownReport { open_at_start, reset_at_deadline }
    }

    /// Stops at once without draining: listeners close, flows are reset, links close.
    pub fn abort(self) {
        drop(self);
    }
}

impl std::ops::Deref for Node {
    type Target = NodeView;

    fn deref(&self) -> &NodeView {
        &self.view
    }
}

/// A running node's state and operations, cheap to clone: what `Node` offers besides
/// starting and stopping (the admin server holds one).
#[derive(Clone)]
pub struct NodeView {
    shared: Arc<Shared>,
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

    /// The bound listeners.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let running = self.shared.running.lock().unwrap_or_else(|p| p.into_inner());
        running.listeners.iter().map(|(l, _)| l.clone()).collect()
    }

    /// Applies a new config while the node runs: listeners, peers, routes and the exit
    /// policy change; flows the change does not concern are not touched. A config whose
    /// other settings differ, or whose new listeners cannot be bound, is refused and
    /// nothing changes.
    pub fn reload(&self, config: Config) -> Result<reload::ReloadReport, reload::ReloadError> {
        reload::apply(&self.shared, config)
    }

    /// Reads, validates and applies the config file at `path` (see [`Node::reload`]).
    pub fn reload_file(&self, path: &std::path::Path) -> Result<reload::ReloadReport, reload::ReloadError> {
        let config = crate::config::load(path).map_err(reload::ReloadError::Invalid)?;
        self.reload(config)
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> Stats {
        stats::snapshot(
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
        metrics::render(&metrics::MetricsInput {
            stats: &stats,
            peers: &peers,
            routes: &routes,
            flows_by_role: &by_role,
            config_version: self.config_version(),
            instruction_version: self.shared.instruction_version(),
            instructions_stale: self.instructions_stale(),
        })
    }

    /// The flows open on this node, busiest first.
    pub fn flows(&self) -> Vec<flow_registry::FlowInfo> {
        self.shared.flows.snapshot(usize::MAX)
    }

    /// The `limit` busiest flows open on this node.
    pub fn busiest_flows(&self, limit: usize) -> Vec<flow_registry::FlowInfo> {
        self.shared.flows.snapshot(limit)
    }

    /// Open flows by role (`origin`, `relay`, `exit`, ...).
    pub fn flows_by_role(&self) -> Vec<(flow_registry::FlowRole, u64)> {
        self.shared.flows.count_by_role()
    }

    /// Every route with the path a new flow takes now and its alternatives.
    pub fn routes(&self) -> Vec<route_view::RouteInfo> {
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
                let ctx = route_view::RouteContext {
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
                route_view::route_info(route, ctx, |n| shared.link_usable(n))
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

    /// Waits until a live link to `peer` exists; false on timeout or unknown peer.
    pub async fn wait_for_link(&self, peer: &str, timeout: Duration) -> bool {
        self.shared.pool.connection(peer, timeout).await.is_ok()
    }
}

/// Dropping a node stops it at once (as [`Node::abort`]); [`Node::shutdown`] drains first.
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.draining_tx.send(true);
        let _ = self.force_tx.send(true);
        self.shared.endpoint.close(peers::LINK_SHUTDOWN, b"stopped");
    }
}

/// The instructions saved in `mesh.data_dir` by an earlier run, if any: a node restarted
/// while the scheduler is away keeps routing by them. A corrupt file is reported and
/// ignored (static routes apply).
fn load_instructions(config: &Config) -> InstructionCache {
    let mut cache = InstructionCache::new();
    match instruction_store::load(&config.mesh.data_dir) {
        Ok(Some(set)) => {
            info!(version = set.version, "loaded cached instructions");
            cache.apply(set);
        }
        Ok(None) => {}
        Err(e) => warn!("{e}"),
    }
    cache
}

/// The revocations saved in `mesh.data_dir` by an earlier run: a removed node stays
/// refused across restarts, even while the scheduler is away.
fn load_revocations(config: &Config) -> Arc<crate::tls::Revocations> {
    let set = match instruction_store::load_revocations(&config.mesh.data_dir) {
        Ok(Some(list)) => crate::tls::RevokedSet::from(&list),
        Ok(None) => crate::tls::RevokedSet::default(),
        Err(e) => {
            warn!("{e}");
            crate::tls::RevokedSet::default()
        }
    };
    crate::tls::Revocations::new(set)
}

/// Binds the admin API's listener; a non-loopback address needs a token.
fn bind_admin(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = config.common.admin_addr;
    crate::config::admin_bind::check_bind(addr, config.common.admin_token.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("common.admin_addr: cannot bind TCP {addr}"))?;
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}

/// How long an opener waits for its reply with `nodes_ahead` nodes after it: the exit
/// has `header_timeout` to read the header, and each node may take up to `connect_timeout`
/// to open the next stream or dial the target; the margin covers round trips.
fn reply_deadline(limits: &crate::config::Limits, nodes_ahead: usize) -> Duration {
    let per_node = limits.connect_timeout.saturating_mul(u32::try_from(nodes_ahead).unwrap_or(u32::MAX));
    limits.header_timeout.saturating_add(per_node).saturating_add(Duration::from_secs(5))
}
