//! The node shell: owns the sockets and tasks, and carries out what the core decides.
//!
//! How it fits together:
//!
//! - `link`: the QUIC links to peers: the endpoint, dialing and accepting, the pool of
//!   live links, certificates, congestion control, receive credit and the send side;
//! - `flow`: how a flow travels through this node, as origin, relay or exit (the map
//!   is in its overview);
//! - `splice`: the loops that move a flow's bytes once its path is open (TCP to
//!   stream, stream to stream, TCP to TCP);
//! - `multipath`: flows striped over several paths at once;
//! - `control`: the scheduler session, the instruction cache on disk, config reloads;
//! - `observe`: counters, open flows, routes, metrics;
//! - `probe`: `proxy ping` and `proxy trace`, probe flows along the path to a node;
//! - `Shared` is what every task holds; [`NodeView`] is what the admin API and
//!   embedders call; [`Node`] starts and stops it all.
//!
//! One QUIC endpoint (peer links, both directions), one TCP or UDP socket per configured
//! listener, one dial loop per peer with an address. Every flow is a task holding a
//! `FlowGuard`, which holds a permit of the node's flow semaphore: the number of flows
//! is bounded, and shutdown waits for the permits to come back.

mod admin_api;
mod console;
pub(crate) mod control;
pub(crate) mod flow;
pub(crate) mod link;
pub(crate) mod multipath;
pub(crate) mod observe;
pub mod probe;
mod shared;
pub(crate) mod splice;
mod view;

pub use control::reload::{ReloadError, ReloadReport};
pub use link::peers::PeerInfo;
pub use observe::flow_registry::{FlowInfo, FlowRole};
pub use observe::route_view::RouteInfo;
pub use observe::stats::{BufferStats, MultipathStats, Stats};
pub use observe::udp::UdpStats;

// For the crate's benches and tests, not the embedding API: the QUIC transport and the
// congestion controllers a node's links use (benches compare bare quinn with the same
// settings), the instruction cache on disk (tests seed it before a node starts), and the
// node's own TCP listener and abortive close (test servers and clients use the same).
#[doc(hidden)]
pub use control::instruction_store;
#[doc(hidden)]
pub use flow::listener::bind as bind_listener;
#[doc(hidden)]
pub use link::congestion::factory as congestion_factory;
#[doc(hidden)]
pub use link::endpoint::transport_config;
#[doc(hidden)]
pub use splice::relay_tap::{RelayTap, TapAction, TapDirection};
#[doc(hidden)]
pub use splice::tcp_io::reset_tcp;

use shared::reply_deadline;
pub(crate) use shared::{FlowGuard, Shared};
pub use view::NodeView;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::core::instructions::InstructionCache;
use crate::core::route::RouteTable;
use crate::core::wire::HeaderLimits;
use crate::tls::TlsIdentity;
use flow::timer::FlowTimeouts;
use link::peers::PeerPool;
use observe::flow_registry::FlowRegistry;
use observe::stats::Counters;

/// A bound listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerInfo {
    /// The listener's name.
    pub name: String,
    /// The address it is bound to (the real port when the config said 0).
    pub addr: SocketAddr,
    /// What it accepts: `tcp` or `udp`.
    pub protocol: crate::config::ListenerProtocol,
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
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("proxy-doc-node-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # struct Cleanup(std::path::PathBuf);
/// # impl Drop for Cleanup { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _cleanup = Cleanup(dir.clone());
/// proxy::pki::init_mesh(&dir, &["a".to_string()])?;
/// let yaml = "common: { node_id: a, region: eu, admin_addr: \"127.0.0.1:0\" }\n\
///             listeners: [ { name: app, bind: \"127.0.0.1:0\" } ]\n\
///             routes: [ { name: app, match: { listener: app }, target: \"127.0.0.1:9\" } ]\n\
///             mesh: { bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }\n";
/// let config = proxy::config::parse(yaml, &dir).map_err(|e| format!("{e:?}"))?;
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let node = proxy::Node::start(config).await?;
///     assert_eq!(node.id(), "a");
///     assert_eq!(node.listeners()[0].name, "app");
///     assert_eq!(node.stats().flows_current, 0);
///     let report = node.shutdown().await;
///     assert_eq!(report.open_at_start, 0);
///     Ok::<_, anyhow::Error>(())
/// })?;
/// # Ok(())
/// # }
/// ```
pub struct Node {
    view: NodeView,
    draining_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
}

/// Most sealed openings an exit remembers at once (each for about two minutes): some 8,000
/// new sealed streams a second, an eighth of that per origin, about 100 MB at most; beyond
/// it new sealed streams are refused `overloaded` until entries expire.
const REPLAY_MEMORY: usize = 1 << 20;

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
        let transport = Arc::new(link::endpoint::transport_config(&config.mesh, &config.limits));
        let (socket, tcp_links) = link::tcp::bind_pair(&config.mesh)?;
        let identity = identity.with_revocations(load_revocations(&config)?);
        let endpoint = crate::quic::build(&identity, transport.clone(), socket)?;
        // The sealing key comes from the TLS key, so it survives restarts unchanged and
        // cards other nodes hold stay good.
        let seal_keys = crate::core::seal::StaticKeys::derive(&identity.key_fingerprint_input());
        let own_card = identity
            .card(&config.common.node_id, seal_keys.public())
            .context("cannot sign this node's seal card with its certificate key")?;
        let cards = link::cards::CardStore::default();
        cards.set_own(own_card);
        let tcp_transport = Arc::new(link::endpoint::tcp_transport_config(&config.mesh, &config.limits));
        let tls = link::identity::NodeTls::new(identity, transport, tcp_transport)?;
        let mut bound: Vec<(String, flow::listener::Bound, crate::config::ListenerProtocol)> = Vec::new();
        for l in &config.listeners {
            let socket = flow::listener::Bound::bind(l).with_context(|| {
                format!("listeners.{}: cannot bind {} {}", l.name, l.protocol.as_str().to_uppercase(), l.bind)
            })?;
            bound.push((l.name.clone(), socket, l.protocol));
        }
        let listeners: Vec<ListenerInfo> = bound
            .iter()
            .map(|(name, l, protocol)| {
                Ok(ListenerInfo { name: name.clone(), addr: l.local_addr()?, protocol: *protocol })
            })
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
            tcp_links_addr: tcp_links.as_ref().and_then(|l| l.local_addr().ok()),
            tls,
            counters: Arc::new(Counters::new()),
            budget: link::credit::BufferBudget::new(limits.max_buffered_bytes),
            flow_permits: Arc::new(Semaphore::new(limits.max_flows)),
            draining,
            force,
            header_limits: HeaderLimits { max_header_bytes: limits.max_header_bytes, max_hops: 16 },
            timeouts: FlowTimeouts {
                idle: limits.idle_timeout,
                half_closed: limits.half_closed_timeout,
                reply: reply_deadline(limits, 1),
            },
            instructions: std::sync::RwLock::new(instructions),
            sessions: multipath::exit::Sessions::default(),
            flows: Arc::new(FlowRegistry::default()),
            path_outcomes: Default::default(),
            own_addresses: flow::own_addresses::OwnAddresses::new(config.mesh.advertise.as_deref()),
            resolver: flow::resolve::TargetResolver::new(
                &config.nameservers,
                config.limits.connect_timeout,
                config.limits.max_lookups,
                config.limits.max_lookups_per_origin,
            ),
            config_version: AtomicU64::new(1),
            exit_policy: std::sync::RwLock::new(Arc::new(config.exit_policy.clone())),
            running: std::sync::Mutex::new(control::reload::Running {
                config: config.clone(),
                listeners: Vec::new(),
                dialers: std::collections::HashMap::new(),
            }),
            admin_addr,
            admin_rules: watch::Sender::new(crate::admin::http::AccessRules {
                token: config.common.admin_token.clone(),
                allowed_hosts: crate::admin::http::default_allowed_hosts(admin_addr),
            }),
            seal_keys,
            cards,
            relay_tap: Default::default(),
            events: Default::default(),
            replay: std::sync::Mutex::new(crate::core::seal::replay::ReplayGuard::new(
                REPLAY_MEMORY,
                crate::clock::unix_millis(),
            )),
            config_changed: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::current(),
            udp_associations: Default::default(),
            echo_slots: Arc::default(),
            probe_runs: Arc::new(Semaphore::new(probe::MAX_RUNS)),
            config,
        });
        tokio::spawn(link::connect::accept_loop(shared.clone()));
        if let Some(listener) = tcp_links {
            link::tcp::announce(&listener);
            tokio::spawn(link::tcp::accept_loop(shared.clone(), listener));
        }
        if let Some(cfg) = shared.config.scheduler.clone() {
            tokio::spawn(control::scheduler_client::run(shared.clone(), cfg));
        }
        {
            let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
            for (peer, address) in shared.pool.dialable() {
                let task = tokio::spawn(link::connect::dial_loop(shared.clone(), peer.clone(), address));
                running.dialers.insert(peer, task.abort_handle());
            }
            for ((name, socket, _), info) in bound.into_iter().zip(&listeners) {
                let task = tokio::spawn(socket.serve(shared.clone(), name));
                running.listeners.push((info.clone(), task.abort_handle()));
            }
        }
        let view = NodeView { shared: shared.clone() };
        let rules = shared.admin_rules.subscribe();
        let console = console::start(view.clone(), shared.force.clone(), shared.admin_rules.subscribe());
        tokio::spawn(crate::admin::http::serve(
            admin,
            rules,
            admin_api::node_handler(view, console),
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
        self.view.shared.endpoint.close(link::peers::LINK_SHUTDOWN, b"shutdown");
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

/// Dropping a node stops it at once (as [`Node::abort`]); [`Node::shutdown`] drains first.
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.draining_tx.send(true);
        let _ = self.force_tx.send(true);
        self.shared.endpoint.close(link::peers::LINK_SHUTDOWN, b"stopped");
    }
}

/// The instructions saved in `mesh.data_dir` by an earlier run, if any: a node restarted
/// while the scheduler is away keeps routing by them. A corrupt file is reported and
/// ignored (static routes apply).
fn load_instructions(config: &Config) -> InstructionCache {
    let mut cache = InstructionCache::new();
    match control::instruction_store::load(&config.mesh.data_dir) {
        Ok(Some(set)) => {
            info!(version = set.version, "loaded cached instructions");
            cache.apply(set);
        }
        Ok(None) => {}
        Err(e) => warn!("cached instructions ignored: {e}"),
    }
    cache
}

/// The revocations saved in `mesh.data_dir` by an earlier run: a removed node stays
/// refused across restarts, even while the scheduler is away.
///
/// A file that cannot be read or decoded stops the start. Starting with no revocations
/// would let every removed node back in until the scheduler sends the list (never, on a
/// node without one), and falling back to an older copy could miss the very removal the
/// lost file recorded; only the operator can tell which risk to take, so the error names
/// the file and the two ways on.
fn load_revocations(config: &Config) -> anyhow::Result<Arc<crate::tls::Revocations>> {
    let set = match control::instruction_store::load_revocations(&config.mesh.data_dir) {
        Ok(Some(list)) => crate::tls::RevokedSet::from(&list),
        Ok(None) => crate::tls::RevokedSet::default(),
        Err(e) => anyhow::bail!(
            "mesh.data_dir: cannot use the saved revocations ({e}); the node does not start without \
             them, or removed nodes could connect: restore the file from a backup, or delete it to \
             start with none until the scheduler sends its list"
        ),
    };
    Ok(crate::tls::Revocations::new(set))
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
