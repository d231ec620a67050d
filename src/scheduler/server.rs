//! The scheduler's QUIC side: accepts nodes (mutual TLS against the mesh CA; the node id
//! comes from the certificate), reads each node's control stream into the state, and on
//! every recompute pushes the instruction sets that changed to the nodes subscribed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use quinn::{Connection, SendStream, TransportConfig, VarInt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::enrollment::Enrollment;
use super::enrollment::registry::StoredPin;
use super::enrollment::store::{RegistryStore, StoreError};
use super::etcd::leadership::{self, Role};
use super::state::{LinkSnapshot, MeshState, NodeSnapshot, Policy, RouteSnapshot};
use crate::clock::unix_now;
use crate::config::scheduler::{SCHEDULER_ID, SchedulerConfig};
use crate::core::control::close_codes;
use crate::core::control::{self, FrameError, InstructionSet, ToNode, ToScheduler};
use crate::logging::log_escape;
use crate::quic;
use crate::tls::{self, Revocations, TlsIdentity};

/// A running scheduler.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("proxy-doc-scheduler-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # struct Cleanup(std::path::PathBuf);
/// # impl Drop for Cleanup { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _cleanup = Cleanup(dir.clone());
/// proxy::pki::init_mesh(&dir, &[])?; // scheduler.crt and scheduler.key among them
/// let yaml = "bind: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\n\
///             cert: scheduler.crt\nkey: scheduler.key\nca: ca.crt\nobjective: latency\n";
/// let config = proxy::config::scheduler::parse(yaml, &dir).map_err(|e| format!("{e:?}"))?;
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let scheduler = proxy::Scheduler::start(config).await?;
///     assert!(scheduler.local_addr()?.port() != 0);
///     assert!(scheduler.nodes().is_empty());
///     Ok::<_, anyhow::Error>(()) // dropping it stops it
/// })?;
/// # Ok(())
/// # }
/// ```
pub struct Scheduler {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    admin_addr: SocketAddr,
    /// The config in force (a reload compares against it).
    config: Mutex<SchedulerConfig>,
}

/// How the recompute loop has been doing, for the admin API's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RecomputeStats {
    /// Recomputes since start.
    pub recomputes: u64,
    /// Time the last recompute took, in seconds (`None` before the first).
    pub last_duration_secs: Option<f64>,
    /// Time all recomputes took, in seconds.
    pub total_duration_secs: f64,
    /// Instruction sets issued (one per node whose paths changed, per recompute).
    pub instruction_sets: u64,
}

/// Everything the admin API shows, read at one instant under one lock of the state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Registered nodes.
    pub nodes: Vec<NodeSnapshot>,
    /// Reported links.
    pub links: Vec<LinkSnapshot>,
    /// Issued paths per route.
    pub routes: Vec<RouteSnapshot>,
    /// The recompute loop's figures.
    pub recompute: RecomputeStats,
    /// Whether this scheduler leads the mesh, and in which term.
    pub role: Role,
    /// Validity of its certificate and the CA's.
    pub certs: CertValidity,
}

/// A read-only handle on a running scheduler's state, for the admin API. It holds the
/// state's lock only while it copies what it returns.
#[derive(Clone)]
pub struct SchedulerView {
    shared: Arc<Shared>,
}

impl SchedulerView {
    /// Registered nodes, by id, with whether their session is open.
    pub fn nodes(&self) -> Vec<NodeSnapshot> {
        let connected = self.shared.connected();
        self.shared.with_state(|s| s.node_snapshots(Instant::now(), |id| connected.contains(id)))
    }

    /// Every reported link, by pair.
    pub fn links(&self) -> Vec<LinkSnapshot> {
        self.shared.with_state(|s| s.link_snapshots(Instant::now()))
    }

    /// The issued paths per route, by node and route.
    pub fn routes(&self) -> Vec<RouteSnapshot> {
        self.shared.with_state(|s| s.route_snapshots(Instant::now()))
    }

    /// Whether this scheduler leads the mesh now (always, without `state.etcd`).
    pub fn role(&self) -> Role {
        self.shared.role.borrow().clone()
    }

    /// The recompute loop's figures.
    pub fn recompute_stats(&self) -> RecomputeStats {
        *self.shared.recompute.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For each (node, exit), up to `max` relay-disjoint paths in the current graph.
    pub fn alternatives(&self, routes: &[(String, String)], max: usize) -> Vec<Vec<Vec<String>>> {
        self.shared.with_state(|s| s.alternatives(routes, max, Instant::now()))
    }

    /// Pins a route's relays (blocking: written to the registry, so every scheduler of
    /// the mesh has it and it outlasts a restart), in force here at once.
    pub fn pin(&self, pin: crate::config::scheduler::Pin) -> Result<(), StoreError> {
        let stored =
            StoredPin { node: pin.node.clone(), route: pin.route.clone(), relays: pin.relays.clone() };
        let key = StoredPin::key(&pin.node, &pin.route);
        self.registry().update(|r| (r.pins.insert(key.clone(), stored.clone()), true))?;
        self.shared.with_state(|s| s.pin(pin));
        Ok(())
    }

    /// Removes a route's run-time pin (blocking, from the registry, so from every
    /// scheduler); `false` when it had none. A pin in the config is changed in the config.
    pub fn unpin(&self, node: &str, route: &str) -> Result<bool, StoreError> {
        let key = StoredPin::key(node, route);
        let stored = self.registry().update(|r| {
            let had = r.pins.remove(&key).is_some();
            (had, had)
        })?;
        if stored {
            self.shared.with_state(|s| s.unpin(node, route));
        }
        Ok(stored)
    }

    /// The registry this scheduler uses (a file, or etcd).
    pub fn registry(&self) -> RegistryStore {
        self.shared.enrollment.store().clone()
    }

    /// Per node, the flows and bytes its routes carried since it started (one lock).
    pub fn node_totals(&self) -> std::collections::HashMap<String, (u64, u64)> {
        self.shared.with_state(|s| s.node_totals())
    }

    /// Whether the admin API requires a token now (`admin_token`, as last reloaded).
    pub fn admin_token_set(&self) -> bool {
        self.shared.admin_rules.borrow().token.is_some()
    }

    /// How long issued instructions stay valid.
    pub fn instruction_ttl(&self) -> Duration {
        self.shared.with_state(|s| s.instruction_ttl())
    }

    /// The console's event log (joins, renewals, removals, actions, changes).
    pub fn events(&self) -> Arc<crate::console::events::EventLog> {
        self.shared.enrollment.events().clone()
    }

    /// Nodes, links and routes at one instant, with the recompute figures.
    pub fn snapshot(&self) -> Snapshot {
        let connected = self.shared.connected();
        let now = Instant::now();
        let (nodes, links, routes) = self.shared.with_state(|s| {
            (
                s.node_snapshots(now, |id| connected.contains(id)),
                s.link_snapshots(now),
                s.route_snapshots(now),
            )
        });
        Snapshot {
            nodes,
            links,
            routes,
            recompute: self.recompute_stats(),
            role: self.role(),
            certs: self.shared.cert_validity,
        }
    }
}

struct Shared {
    state: Mutex<MeshState>,
    /// The one live session per node: a newer connection from the same node replaces it.
    sessions: Mutex<HashMap<String, Connection>>,
    /// The latest instruction set per node; sessions watch their node's entry.
    outboxes: Mutex<HashMap<String, watch::Sender<Option<InstructionSet>>>>,
    /// The recompute loop's figures.
    recompute: Mutex<RecomputeStats>,
    /// Joins, renewals and the registry.
    enrollment: Arc<Enrollment>,
    /// What the mesh refuses, as the handshakes of this endpoint check it.
    revocations: Arc<Revocations>,
    /// Bumped whenever the revocations change; sessions then send the new list.
    revocations_changed: watch::Sender<u64>,
    /// Admission to the join service (machines without a certificate).
    join_gate: super::join_session::JoinGate,
    /// Whether this scheduler leads the mesh (always, without `state.etcd`): only the
    /// leader keeps node sessions and issues instructions.
    role: watch::Receiver<Role>,
    /// Who the admin API answers (a reload may change `admin_token`).
    admin_rules: watch::Sender<crate::admin::http::AccessRules>,
    /// How often paths are recomputed (a reload may change `recompute_interval`).
    recompute_every: watch::Sender<Duration>,
    /// Sessions starting and ending, for the presence record (`mesh nodes`).
    presence: Arc<super::presence::Tracker>,
    /// Validity (Unix seconds) of this scheduler's certificate and of the CA, for
    /// `proxy_cert_expiry_seconds`.
    cert_validity: CertValidity,
}

/// Validity (not before, not after; Unix seconds) of the certificates a scheduler holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertValidity {
    /// Its own.
    pub scheduler: Option<(i64, i64)>,
    /// The mesh CA's.
    pub ca: Option<(i64, i64)>,
}

impl Shared {
    fn outbox(&self, node: &str) -> watch::Receiver<Option<InstructionSet>> {
        let mut boxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.entry(node.to_string()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    fn publish(&self, node: &str, set: InstructionSet) {
        let mut boxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.entry(node.to_string()).or_insert_with(|| watch::channel(None).0).send_replace(Some(set));
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut MeshState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The nodes whose latest session is still open.
    fn connected(&self) -> HashSet<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().filter(|(_, c)| c.close_reason().is_none()).map(|(id, _)| id.clone()).collect()
    }
}

impl Scheduler {
    /// Binds the endpoint and the admin API, and starts accepting nodes, recomputing
    /// paths and answering admin requests. A non-loopback `admin_addr` without a token is
    /// refused.
    pub async fn start(config: SchedulerConfig) -> anyhow::Result<Scheduler> {
        let enrollment = Arc::new(Enrollment::open(&config)?);
        let registry = enrollment.store().load()?;
        let revocations = Revocations::new(registry.revoked());
        let identity = TlsIdentity::load(&config.cert, &config.key, &config.ca, SCHEDULER_ID)?
            .with_revocations(revocations.clone());
        let cert_validity = CertValidity { scheduler: identity.validity(), ca: identity.ca_validity() };
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(4))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(Duration::from_secs(5)))
            .max_idle_timeout(Duration::from_secs(30).try_into().ok());
        let socket = quic::bind_udp(config.bind, 4 * 1024 * 1024)?;
        let admin = bind_admin(&config)?;
        let admin_addr = admin.local_addr()?;
        let endpoint = quic::build_scheduler(&identity, Arc::new(transport), socket)?;
        let (stop, stopped) = watch::channel(false);
        let role = match (&config.etcd, enrollment.store()) {
            (Some(etcd), RegistryStore::Etcd(registry)) => {
                leadership::start(registry.etcd().clone(), etcd.name.clone(), etcd.lease, stopped.clone())
            }
            _ => watch::channel(Role::Leader { term: 0, until: None }).1,
        };
        enrollment.remember_all(&registry);
        let mut state = MeshState::new(Policy::from(&config), Instant::now());
        state.set_shared_pins(shared_pins(&registry));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            sessions: Mutex::new(HashMap::new()),
            outboxes: Mutex::new(HashMap::new()),
            recompute: Mutex::new(RecomputeStats::default()),
            enrollment,
            revocations,
            revocations_changed: watch::Sender::new(0),
            join_gate: super::join_session::JoinGate::default(),
            role: role.clone(),
            presence: Arc::default(),
            cert_validity,
            admin_rules: watch::Sender::new(crate::admin::http::AccessRules {
                token: config.admin_token.clone(),
                allowed_hosts: crate::admin::http::default_allowed_hosts(admin_addr),
            }),
            recompute_every: watch::Sender::new(config.recompute_interval),
        });
        tokio::spawn(super::presence::write_loop(
            shared.presence.clone(),
            shared.enrollment.store().clone(),
            role,
            stopped.clone(),
        ));
        tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        tokio::spawn(follow_role(shared.clone(), stopped.clone()));
        tokio::spawn(watch_registry(shared.clone(), stopped.clone()));
        tokio::spawn(recompute_loop(shared.clone(), stopped.clone()));
        let rules = shared.admin_rules.subscribe();
        let view = SchedulerView { shared: shared.clone() };
        let console = super::console::start(view.clone(), stopped.clone(), shared.admin_rules.subscribe());
        let handler = super::admin::scheduler_handler(view, console, Arc::new(config.clone()));
        tokio::spawn(crate::admin::http::serve(admin, rules, handler, stopped));
        info!(addr = %endpoint.local_addr()?, admin = %admin_addr, "scheduler started");
        Ok(Scheduler { endpoint, shared, stop, admin_addr, config: Mutex::new(config) })
    }

    /// Applies a reloaded config: the objective, hysteresis, paths, pins, intervals and
    /// the admin token change at once (routes are searched anew at the next recompute);
    /// a change to anything built at start (the endpoint, identity, admin address,
    /// signer, registry) refuses the whole reload and changes nothing. Returns what
    /// changed, one `key old -> new` each. The log keys are the caller's: the process's
    /// logger is not the scheduler's.
    pub fn reload(&self, new: SchedulerConfig) -> Result<Vec<String>, super::reload::NeedsRestart> {
        let mut config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let changes = super::reload::changes(&config, &new)?;
        if !changes.is_empty() {
            self.shared.with_state(|s| s.set_policy(Policy::from(&new)));
            self.shared.recompute_every.send_if_modified(|every| {
                std::mem::replace(every, new.recompute_interval) != new.recompute_interval
            });
            let token = new.admin_token.clone();
            self.shared
                .admin_rules
                .send_if_modified(|rules| std::mem::replace(&mut rules.token, token) != new.admin_token);
            info!(changes = %changes.join("; "), "config reloaded");
        }
        *config = new;
        Ok(changes)
    }

    /// Where the admin API answers (`admin_addr`, with the real port when it said 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A read-only view of the state, as the admin API shows it.
    pub fn view(&self) -> SchedulerView {
        SchedulerView { shared: self.shared.clone() }
    }

    /// The UDP address nodes dial.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Flows and bytes per route that `node` has reported.
    pub fn route_totals(&self, node: &str) -> Vec<(String, u64, u64)> {
        self.shared.with_state(|s| s.route_totals(node))
    }

    /// Registered node ids.
    pub fn nodes(&self) -> Vec<String> {
        self.shared.with_state(|s| s.node_ids())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.endpoint.close(VarInt::from_u32(close_codes::SHUTTING_DOWN), b"scheduler stopped");
    }
}

/// Binds the admin API's listener; a non-loopback address needs a token.
fn bind_admin(config: &SchedulerConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = config.admin_addr;
    crate::config::admin_bind::check_bind_keys(
        addr,
        config.admin_token.as_deref(),
        "admin_addr",
        "admin_token",
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let std_listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("admin_addr: cannot bind TCP {addr}"))?;
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}

/// How often the registry file is checked for changes made by `proxy mesh remove`.
const REGISTRY_POLL: Duration = Duration::from_millis(500);

/// Largest frame a node may send: registrations and reports are small; this bounds what a
/// session can make the scheduler buffer.
const MAX_FROM_NODE: usize = 256 * 1024;
/// Most peers, listeners or routes in one registration, and the longest name in it.
const MAX_ITEMS: usize = 1024;
/// Routes a node may register: each distinct exit costs a path search per recompute.
const MAX_ROUTES: usize = 256;
/// Path outcomes per report: a node has at most `max_paths` paths per route.
const MAX_OUTCOMES: usize = 1024;
const MAX_NAME: usize = 255;

/// Within the limits, and every name made of characters that are safe to show: node ids
/// as node ids, addresses as visible ASCII, and the region (a free-form label in the node's
/// config), listener and route names without control characters. The scheduler shows all
/// of them to operators (`proxy status --scheduler`, `/api/*`), so a member must not be
/// able to send escape sequences.
fn registration_within_limits(r: &crate::core::control::Registration) -> bool {
    let label = |s: &String| !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control);
    let address = |s: &String| label(s) && s.bytes().all(|b| b.is_ascii_graphic());
    let node = |s: &String| crate::core::wire::is_valid_node_id(s);
    r.peers.len() <= MAX_ITEMS
        && r.listeners.len() <= MAX_ITEMS
        && r.routes.len() <= MAX_ROUTES
        && label(&r.region)
        && address(&r.mesh_address)
        && r.peers.iter().all(|(p, a)| node(p) && a.as_ref().is_none_or(address))
        && r.listeners.iter().all(label)
        && r.routes.iter().all(|(n, e)| label(n) && e.as_ref().is_none_or(node))
}

async fn recompute_loop(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut every = shared.recompute_every.subscribe();
    let mut tick = tokio::time::interval(*every.borrow_and_update());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = every.changed() => {
                tick = tokio::time::interval(*every.borrow_and_update());
                continue;
            }
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
        // A standby issues nothing: two schedulers must never instruct the same mesh.
        if !shared.role.borrow().is_leader() {
            continue;
        }
        let started = Instant::now();
        let changed = shared.with_state(|s| s.recompute(started, unix_now()));
        {
            let took = started.elapsed().as_secs_f64();
            let mut stats = shared.recompute.lock().unwrap_or_else(|p| p.into_inner());
            stats.recomputes += 1;
            stats.last_duration_secs = Some(took);
            stats.total_duration_secs += took;
            stats.instruction_sets += changed.len() as u64;
            tracing::debug!(took_ms = took * 1e3, changed = changed.len(), "recompute");
        }
        for (node, set) in changed {
            info!(node = %node, version = set.version, routes = set.routes.len(), "new instructions");
            shared.publish(&node, set);
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            if tls::negotiated_alpn(&conn).as_deref() == Some(tls::ALPN_JOIN) {
                super::join_session::serve(&shared.enrollment, &shared.join_gate, conn).await;
                return;
            }
            let Some(node) = tls::peer_node_id(&conn).filter(|n| n != SCHEDULER_ID) else {
                conn.close(VarInt::from_u32(close_codes::NO_NODE_ID), b"no node id");
                return;
            };
            let older =
                shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone(), conn.clone());
            if let Some(older) = older {
                older.close(VarInt::from_u32(close_codes::REPLACED), b"replaced by a newer session");
            }
            // Checked after the session is listed, where a step-down would find it.
            if !shared.role.borrow().is_leader() {
                shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
                conn.close(VarInt::from_u32(close_codes::STANDBY), b"standby scheduler: try the next one");
                return;
            }
            // The handshake may have been checked against revocations that changed before
            // the session was listed (where a change would have found it): check again.
            if peer_certificate(&conn).is_some_and(|c| shared.revocations.refuses(&c.into())) {
                shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
                conn.close(VarInt::from_u32(close_codes::REMOVED), b"removed from the mesh");
                return;
            }
            if let Err(e) = session(&shared, &node, &conn).await {
                info!(node = %node, reason = %e, "node session ended");
            }
            // A session replaced by a newer one of the same node has not ended for it.
            let current =
                shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&node).map(|c| c.stable_id());
            if current.is_none_or(|id| id == conn.stable_id()) {
                shared.presence.ended(&node);
            }
        });
    }
}

/// Follows this scheduler's role: on stepping down it closes every node session (with
/// [`close_codes::STANDBY`], so the nodes move on to the leader) and forgets the mesh's
/// state, which the leader now keeps; on becoming the leader it starts from the nodes
/// that connect to it, whose subscriptions carry the versions they hold.
async fn follow_role(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut role = shared.role.clone();
    let mut led = role.borrow().term();
    loop {
        tokio::select! {
            changed = role.changed() => if changed.is_err() { return },
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
        let term = role.borrow_and_update().term();
        // Renewals within one term change nothing; a new term after a step-down the
        // channel folded away (standby, then leader again) starts afresh all the same.
        let same_term = term.is_some() && term == led;
        let first_term = led.is_none() && term.is_some();
        led = term;
        if same_term || first_term {
            continue;
        }
        let sessions: Vec<(String, Connection)> =
            shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for (_, conn) in &sessions {
            conn.close(
                VarInt::from_u32(close_codes::STANDBY),
                b"no longer the leader: try the next scheduler",
            );
        }
        shared.with_state(|s| {
            for id in s.node_ids() {
                s.remove(&id);
            }
        });
        shared.outboxes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        shared.presence.all_ended();
        info!(sessions = sessions.len(), "standing by: node sessions closed");
    }
}

/// The registry's run-time pins, as the computation takes them.
fn shared_pins(registry: &super::enrollment::registry::Registry) -> Vec<crate::config::scheduler::Pin> {
    registry
        .pins
        .values()
        .map(|p| crate::config::scheduler::Pin {
            node: p.node.clone(),
            route: p.route.clone(),
            relays: p.relays.clone(),
        })
        .collect()
}

/// What a session knows of its node beyond the id.
struct SessionState {
    /// The instruction version the node holds, once it subscribed.
    subscribed_from: Option<u64>,
    /// The region it registered with.
    region: Option<String>,
    /// Where its connection comes from (stands in for an unspecified advertised IP).
    remote: SocketAddr,
}

/// What handling a frame asks the session to do.
enum Action {
    /// Send this.
    Reply(ToNode),
    /// The node registered: send the revocations, record its certificate.
    Registered,
    /// Sign a renewed certificate for this request.
    Renew(Vec<u8>),
}

/// One node's control stream: frames in, instruction pushes out.
async fn session(shared: &Shared, node: &str, conn: &Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut outbox = shared.outbox(node);
    let mut revocations_changed = shared.revocations_changed.subscribe();
    let mut buf: Vec<u8> = Vec::new();
    let mut state = SessionState { subscribed_from: None, region: None, remote: conn.remote_address() };
    loop {
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => {
                let Some(chunk) = chunk? else { return Ok(()) };
                buf.extend_from_slice(&chunk.bytes);
                for action in handle_frames(shared, node, &mut buf, &mut state)? {
                    act(shared, node, conn, &mut send, &state, action).await?;
                }
                if let Some(since) = state.subscribed_from {
                    push_if_newer(&mut send, &outbox, since, &mut state.subscribed_from).await?;
                }
            }
            changed = outbox.changed() => {
                changed?;
                if let Some(since) = state.subscribed_from {
                    push_if_newer(&mut send, &outbox, since, &mut state.subscribed_from).await?;
                }
            }
            changed = revocations_changed.changed() => {
                changed?;
                if state.region.is_some() {
                    write(&mut send, &ToNode::Revocations(shared.revocations.snapshot().to_list())).await?;
                }
            }
        }
    }
}

async fn act(
    shared: &Shared,
    node: &str,
    conn: &Connection,
    send: &mut SendStream,
    state: &SessionState,
    action: Action,
) -> anyhow::Result<()> {
    let region = state.region.clone().unwrap_or_default();
    match action {
        Action::Reply(reply) => write(send, &reply).await,
        Action::Registered => {
            write(send, &ToNode::Welcome { version: control::SCHEDULER_FEATURES }).await?;
            write(send, &ToNode::Revocations(shared.revocations.snapshot().to_list())).await?;
            if let Some(cert) = peer_certificate(conn) {
                let (enrollment, node) = (shared.enrollment.clone(), node.to_string());
                tokio::task::spawn_blocking(move || enrollment.seen(&node, &region, &cert, unix_now()));
            }
            Ok(())
        }
        Action::Renew(csr) => {
            let (enrollment, id) = (shared.enrollment.clone(), node.to_string());
            let current = peer_certificate(conn).unwrap_or_default();
            let signed = tokio::task::spawn_blocking(move || {
                enrollment.renew(&id, &region, &current, &csr, unix_now())
            })
            .await?;
            let reply = match signed {
                Ok(cert_pem) => {
                    shared.enrollment.events().push(
                        crate::console::events::EventKind::CertRenewed,
                        format!("certificate of node {node} renewed"),
                    );
                    ToNode::Renewed { cert_pem }
                }
                Err(reason) => {
                    warn!(node = %node, reason = %reason, "renewal refused");
                    ToNode::RenewRefused { reason }
                }
            };
            write(send, &reply).await
        }
    }
}

/// The certificate (DER) a node connected with.
fn peer_certificate(conn: &Connection) -> Option<Vec<u8>> {
    let chain = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    chain.first().map(|c| c.as_ref().to_vec())
}

/// Decodes every complete frame in `buf`; returns what to do about them.
fn handle_frames(
    shared: &Shared,
    node: &str,
    buf: &mut Vec<u8>,
    state: &mut SessionState,
) -> anyhow::Result<Vec<Action>> {
    let mut actions = Vec::new();
    loop {
        match control::decode::<ToScheduler>(buf, MAX_FROM_NODE) {
            Ok(None) => return Ok(actions),
            Ok(Some((message, used))) => {
                buf.drain(..used);
                actions.extend(handle(shared, node, message, state)?);
            }
            Err(FrameError::UnsupportedVersion { skip, .. } | FrameError::Malformed { skip, .. })
                if skip <= buf.len() =>
            {
                warn!(node = %node, "skipped a control message it could not read");
                buf.drain(..skip);
                actions
                    .push(Action::Reply(ToNode::Error { message: "message not understood; skipped".into() }));
            }
            // The rest of the bad frame has not arrived yet: wait for it, then skip it.
            Err(FrameError::UnsupportedVersion { .. } | FrameError::Malformed { .. }) => return Ok(actions),
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

fn handle(
    shared: &Shared,
    node: &str,
    message: ToScheduler,
    state: &mut SessionState,
) -> anyhow::Result<Option<Action>> {
    let now = Instant::now();
    Ok(match message {
        ToScheduler::Register(mut registration) => {
            if !registration_within_limits(&registration) {
                anyhow::bail!(
                    "registration from `{node}` exceeds the limits ({MAX_ITEMS} peers or listeners, {MAX_ROUTES} routes, {MAX_NAME}-byte names without control characters, node ids, addresses of visible ASCII)"
                );
            }
            if registration.node_id != node {
                anyhow::bail!(
                    "registered as `{}` with a certificate for `{node}`",
                    log_escape(&registration.node_id)
                );
            }
            registration.mesh_address = reachable_address(&registration.mesh_address, state.remote);
            info!(node = %node, region = %log_escape(&registration.region), address = %log_escape(&registration.mesh_address), "node registered");
            state.region = Some(registration.region.clone());
            shared.presence.started(node, &registration.mesh_address, &registration.region);
            shared.with_state(|s| s.register(registration, now));
            Some(Action::Registered)
        }
        ToScheduler::Heartbeat { .. } => {
            shared.with_state(|s| s.heartbeat(node, now));
            None
        }
        ToScheduler::Report { links, routes } => {
            shared.with_state(|s| s.report(node, links, routes, now));
            None
        }
        ToScheduler::Capacity { links } => {
            shared.with_state(|s| s.capacity(node, links, now));
            None
        }
        ToScheduler::Outcomes { relay, mut paths } => {
            paths.truncate(MAX_OUTCOMES);
            shared.with_state(|s| s.outcomes(node, relay, paths, now));
            None
        }
        ToScheduler::Transports { tcp } => {
            shared.with_state(|s| s.transports(node, tcp, now));
            None
        }
        ToScheduler::Subscribe { since_version } => {
            shared.with_state(|s| s.subscribed(node, since_version));
            state.subscribed_from = Some(since_version);
            None
        }
        ToScheduler::Renew { csr } => Some(Action::Renew(csr)),
    })
}

/// A node bound to an unspecified address (`0.0.0.0:7800`) advertises that; other nodes
/// reach it at the address its scheduler connection comes from, on the same port.
fn reachable_address(advertised: &str, remote: SocketAddr) -> String {
    match advertised.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => SocketAddr::new(remote.ip().to_canonical(), a.port()).to_string(),
        _ => advertised.to_string(),
    }
}

/// Applies changes others made to the registry (`proxy mesh remove`): the revoked
/// certificates are refused from now on, the sessions of removed nodes are closed and
/// they are dropped from the mesh, and every session sends the new list to its node.
async fn watch_registry(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut seen = None;
    let mut tick = tokio::time::interval(REGISTRY_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
        let store = shared.enrollment.store().clone();
        let known = seen.clone();
        // Blocking: a file's metadata, or a call to etcd.
        let read = tokio::task::spawn_blocking(move || {
            let stamp = store.stamp()?;
            if known.as_ref() == Some(&stamp) {
                return Ok(None);
            }
            store.load().map(|registry| Some((stamp, registry)))
        });
        let registry = match read.await {
            Ok(Ok(Some((stamp, registry)))) => {
                seen = Some(stamp);
                registry
            }
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                warn!("registry: {e}; keeping the revocations in force");
                continue;
            }
            Err(_) => continue,
        };
        shared.enrollment.remember_all(&registry);
        if shared.with_state(|s| s.set_shared_pins(shared_pins(&registry))) {
            info!(pins = registry.pins.len(), "run-time pins updated from the registry");
        }
        let revoked = registry.revoked();
        let before = shared.revocations.snapshot().node_ids;
        if !shared.revocations.replace(revoked.clone()) {
            continue;
        }
        for id in revoked.node_ids.iter().filter(|id| !before.contains(*id)) {
            shared.enrollment.events().push(
                crate::console::events::EventKind::NodeRemoved,
                format!("node {id} removed from the mesh: its certificates are refused"),
            );
        }
        let cut: Vec<String> = {
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let cut: Vec<String> = sessions
                .iter()
                .filter(|(id, conn)| {
                    revoked.node_ids.contains(*id)
                        || peer_certificate(conn).is_some_and(|c| shared.revocations.refuses(&c.into()))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &cut {
                if let Some(conn) = sessions.remove(id) {
                    conn.close(VarInt::from_u32(close_codes::REMOVED), b"removed from the mesh");
                }
            }
            cut
        };
        shared.with_state(|s| {
            for id in &revoked.node_ids {
                s.remove(id);
            }
        });
        for id in &cut {
            info!(node = %id, "removed from the mesh: session closed");
        }
        info!(nodes = revoked.node_ids.len(), certificates = revoked.certs.len(), "revocations updated");
        shared.revocations_changed.send_modify(|v| *v += 1);
    }
}

async fn push_if_newer(
    send: &mut SendStream,
    outbox: &watch::Receiver<Option<InstructionSet>>,
    since: u64,
    subscribed_from: &mut Option<u64>,
) -> anyhow::Result<()> {
    let set = outbox.borrow().clone();
    if let Some(set) = set.filter(|s| s.version > since) {
        *subscribed_from = Some(set.version);
        write(send, &ToNode::Instructions(set)).await?;
    }
    Ok(())
}

async fn write(send: &mut SendStream, message: &ToNode) -> anyhow::Result<()> {
    let frame = control::encode(message)?;
    tokio::time::timeout(Duration::from_secs(10), send.write_chunk(Bytes::from(frame))).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::control::Registration;

    fn reg() -> Registration {
        Registration {
            node_id: "a".into(),
            region: "r".into(),
            mesh_address: "10.0.0.1:7800".into(),
            peers: vec![("b".into(), None)],
            listeners: vec!["web".into()],
            routes: vec![("web".into(), Some("b".into()))],
        }
    }

    #[test]
    fn oversized_registrations_are_refused() {
        assert!(registration_within_limits(&reg()));
        let many =
            Registration { routes: (0..=MAX_ITEMS).map(|i| (format!("r{i}"), None)).collect(), ..reg() };
        assert!(!registration_within_limits(&many));
        let long = Registration { region: "x".repeat(MAX_NAME + 1), ..reg() };
        assert!(!registration_within_limits(&long));
        let long_exit =
            Registration { routes: vec![("web".into(), Some("y".repeat(MAX_NAME + 1)))], ..reg() };
        assert!(!registration_within_limits(&long_exit));
    }

    #[test]
    fn registrations_with_characters_unsafe_to_show_are_refused() {
        let escape = "\u{1b}[2J";
        for bad in [
            Registration { region: format!("eu{escape}"), ..reg() },
            Registration { mesh_address: format!("10.0.0.1:7800{escape}"), ..reg() },
            Registration { listeners: vec![format!("web\n{escape}")], ..reg() },
            Registration { routes: vec![(format!("r{escape}"), None)], ..reg() },
            Registration { routes: vec![("web".into(), Some("Not A Node".into()))], ..reg() },
            Registration { peers: vec![("b\u{7}".into(), None)], ..reg() },
            Registration { region: String::new(), ..reg() },
            Registration { mesh_address: "10.0.0.1 :7800".into(), ..reg() },
        ] {
            assert!(!registration_within_limits(&bad), "{bad:?}");
        }
        let free_form = Registration { region: "EU Central (Frankfurt) – zone b".into(), ..reg() };
        assert!(registration_within_limits(&free_form), "a region is a free-form label");
    }
}
