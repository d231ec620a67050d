//! What every task of a node shares ([`Shared`]), and the guard each flow task holds
//! ([`FlowGuard`]).
//!
//! Fields are visible to the whole `node` module: its tasks read the config, the peer pool
//! and the counters directly; only the node's own modules may.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::debug;

use crate::config::Config;
use crate::core::instructions::InstructionCache;
use crate::core::route::RouteTable;
use crate::core::wire::HeaderLimits;
use crate::node::flow::timer::FlowTimeouts;
use crate::node::link::peers::PeerPool;
use crate::node::observe::flow_registry::{FlowMeta, FlowRecord, FlowRegistry};
use crate::node::observe::stats::Counters;
use crate::node::splice::FlowEnd;
use crate::node::{control, link, multipath, observe, splice};

/// State shared by every task of a node.
pub(crate) struct Shared {
    pub(in crate::node) config: Config,
    pub(in crate::node) routes: std::sync::RwLock<Arc<RouteTable>>,
    pub(in crate::node) pool: PeerPool,
    pub(in crate::node) endpoint: quinn::Endpoint,
    /// Where links over TLS on TCP are accepted, if anywhere.
    pub(in crate::node) tcp_links_addr: Option<SocketAddr>,
    /// The certificate in force (renewed in place) and the revocations handshakes check.
    pub(in crate::node) tls: link::identity::NodeTls,
    pub(in crate::node) counters: Arc<Counters>,
    /// Buffered flow data, node-wide (`limits.max_buffered_bytes`).
    pub(in crate::node) budget: Arc<link::credit::BufferBudget>,
    pub(in crate::node) flow_permits: Arc<Semaphore>,
    pub(in crate::node) draining: watch::Receiver<bool>,
    pub(in crate::node) force: watch::Receiver<bool>,
    pub(in crate::node) header_limits: HeaderLimits,
    pub(in crate::node) timeouts: FlowTimeouts,
    pub(in crate::node) instructions: std::sync::RwLock<InstructionCache>,
    pub(in crate::node) sessions: multipath::exit::Sessions,
    pub(in crate::node) flows: Arc<FlowRegistry>,
    /// This host's interface addresses, guarded by the exit policy.
    pub(in crate::node) own_addresses: crate::node::flow::own_addresses::OwnAddresses,
    /// Looks up the target names of flows that exit here, within caps.
    pub(in crate::node) resolver: crate::node::flow::resolve::TargetResolver,
    /// How flows fared per path since the last scheduler report.
    pub(in crate::node) path_outcomes: crate::node::observe::path_outcomes::PathOutcomes,
    /// 1 at start, +1 per applied reload.
    pub(in crate::node) config_version: AtomicU64,
    /// The exit policy in force (replaced whole by a reload).
    pub(in crate::node) exit_policy: std::sync::RwLock<Arc<crate::core::policy::ExitPolicy>>,
    /// The config in force and the tasks that serve it.
    pub(in crate::node) running: std::sync::Mutex<control::reload::Running>,
    /// Where the admin API answers.
    pub(in crate::node) admin_addr: SocketAddr,
    /// Who the admin API answers (a reload may change `common.admin_token`).
    pub(in crate::node) admin_rules: tokio::sync::watch::Sender<crate::admin::http::AccessRules>,
    /// This node's static sealing key (end-to-end flows).
    pub(in crate::node) seal_keys: crate::core::seal::StaticKeys,
    /// The seal cards known: this node's and other members'.
    pub(in crate::node) cards: link::cards::CardStore,
    /// A test's hostile-relay hook.
    pub(in crate::node) relay_tap: splice::relay_tap::TapSlot,
    /// Sealed openings seen lately (an exit refuses a replayed one).
    pub(in crate::node) replay: std::sync::Mutex<crate::core::seal::replay::ReplayGuard>,
    /// Woken by a reload that changes the registration (the scheduler session registers anew).
    pub(in crate::node) config_changed: tokio::sync::Notify,
    /// The node's runtime, so a reload called from any thread starts its tasks there.
    pub(in crate::node) runtime: tokio::runtime::Handle,
    /// UDP associations open at this node's UDP listeners (`limits.max_udp_associations`).
    pub(in crate::node) udp_associations: crate::node::flow::udp_origin::OriginAssociations,
    /// Reloads, renewals and changes, for the console.
    pub(in crate::node) events: Arc<crate::console::events::EventLog>,
    /// Probe flows this node may answer at once (`flow::echo`).
    pub(in crate::node) echo_slots: Arc<crate::node::flow::echo::EchoSlots>,
    /// Pings and traces this node may run at once for its admin API (`probe`).
    pub(in crate::node) probe_runs: Arc<Semaphore>,
}

impl Shared {
    pub(in crate::node) fn id(&self) -> &str {
        &self.config.common.node_id
    }

    /// The exit policy in force.
    pub(in crate::node) fn exit_policy(&self) -> Arc<crate::core::policy::ExitPolicy> {
        self.exit_policy.read().map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// The route table in force (replaced whole by a reload).
    pub(in crate::node) fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// Timeouts for a flow this node opens with `nodes_ahead` nodes after it: each may
    /// take up to `connect_timeout` to open the next stream or dial the target, so the
    /// reply deadline grows with the path.
    pub(in crate::node) fn timeouts_for(&self, nodes_ahead: usize) -> FlowTimeouts {
        FlowTimeouts { reply: reply_deadline(&self.config.limits, nodes_ahead), ..self.timeouts }
    }

    /// Paths a new flow on `route` tries, in order: the scheduler's instructions (held in
    /// memory and on disk), the route's static paths, direct.
    pub(in crate::node) fn candidates(
        &self,
        route: &str,
        exit: &str,
        static_paths: &[Vec<String>],
    ) -> Vec<Vec<String>> {
        match self.instructions.read() {
            Ok(cache) => cache.candidates(self.id(), route, exit, static_paths),
            Err(_) => crate::core::route::static_candidates(static_paths),
        }
    }

    /// The instruction version held (0: none).
    pub(in crate::node) fn instruction_version(&self) -> u64 {
        self.instructions.read().map_or(0, |c| c.version())
    }

    /// Takes a newer instruction set; returns whether it was newer.
    pub(in crate::node) fn apply_instructions(&self, set: crate::core::control::InstructionSet) -> bool {
        self.instructions.write().is_ok_and(|mut c| c.apply(set))
    }

    /// Whether new flows may start on the link to `peer`: it is up and has not gone silent
    /// for longer than two keepalive intervals.
    pub(in crate::node) fn link_usable(&self, peer: &str) -> bool {
        let quiet =
            self.config.mesh.keepalive_interval.saturating_mul(2).saturating_add(Duration::from_millis(100));
        self.pool.is_healthy(peer, quiet)
    }

    /// The environment a flow is spliced in; its bytes count on `guard`'s record.
    pub(in crate::node) fn flow_env(
        &self,
        timeouts: FlowTimeouts,
        route: Option<Arc<observe::stats::RouteCounters>>,
        guard: &FlowGuard,
    ) -> splice::FlowEnv {
        splice::FlowEnv {
            timeouts,
            counters: self.counters.clone(),
            force: self.force.clone(),
            route,
            bytes: guard.record.bytes(),
            budget: self.budget.clone(),
            tap: self.relay_tap.get(),
            answered: None,
        }
    }

    /// A new flow's id: random, not counted up, so a member that saw some of this node's
    /// flows cannot predict the next ones and open multipath flows under them at other
    /// exits first (an exit refuses a second flow with the same origin and id). Ids need
    /// only be unique per origin; two of 2^64 coincide with negligible odds.
    pub(in crate::node) fn new_flow_id(&self) -> u64 {
        rand::random::<u64>()
    }
}

/// Held by every flow task: counts the flow as open, holds its permit, and keeps its
/// record in the node's flow registry.
pub(crate) struct FlowGuard {
    pub(in crate::node) counters: Arc<Counters>,
    pub(in crate::node) _permit: OwnedSemaphorePermit,
    pub(in crate::node) registry: Arc<FlowRegistry>,
    pub(in crate::node) record: Arc<FlowRecord>,
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

/// How long an opener waits for its reply with `nodes_ahead` nodes after it: the exit
/// has `header_timeout` to read the header, and each node may take up to `connect_timeout`
/// to open the next stream or dial the target; the margin covers round trips.
pub(in crate::node) fn reply_deadline(limits: &crate::config::Limits, nodes_ahead: usize) -> Duration {
    let per_node = limits.connect_timeout.saturating_mul(u32::try_from(nodes_ahead).unwrap_or(u32::MAX));
    limits.header_timeout.saturating_add(per_node).saturating_add(Duration::from_secs(5))
}
