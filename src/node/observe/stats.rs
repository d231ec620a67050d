//! A node's counters: lock-free atomics updated on the data path, read as snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub(crate) use crate::core::route::RouteCounters;
use crate::core::wire::RefuseReason;

/// Live counters of one node.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Flows open now (any role).
    pub flows_current: AtomicU64,
    /// Flows accepted from local applications since start.
    pub flows_originated: AtomicU64,
    /// Flows that arrived from the mesh and exited here.
    pub flows_exited: AtomicU64,
    /// Flows from local applications that exited here (plain TCP proxy).
    pub flows_local: AtomicU64,
    /// Flows this node relayed (or handed on along a proxy chain).
    pub flows_relayed: AtomicU64,
    /// Bytes this node relayed between streams, both directions.
    pub bytes_relayed: AtomicU64,
    /// Flow streams this node opened sealed end to end (as origin or chain node).
    pub flows_sealed: AtomicU64,
    /// Unsealed (wire version 1) flow streams this node opened or accepted
    /// (`mesh.e2e: preferred`).
    pub flows_unsealed: AtomicU64,
    /// Bytes read from TCP sockets (applications and targets).
    pub bytes_in: AtomicU64,
    /// Bytes written to TCP sockets (applications and targets).
    pub bytes_out: AtomicU64,
    /// Flows this node originated that were refused, by reason (any hop refused).
    pub refused_at_origin: [AtomicU64; RefuseReason::ALL.len()],
    /// Flows arriving from the mesh that this node refused, by reason.
    pub refused_inbound: [AtomicU64; RefuseReason::ALL.len()],
    /// Links dialed over TCP because no QUIC handshake completed in time (`type: auto`).
    pub link_fallbacks: AtomicU64,
    /// Links that fell back to TCP and moved to QUIC when a probe got through.
    pub links_back_to_quic: AtomicU64,
    /// Flows that ended with a reset or timeout instead of a clean close.
    pub flows_reset: AtomicU64,
    /// Multipath flows started here (origin or exit).
    pub multipath_flows: AtomicU64,
    /// Subflows taken into multipath flows.
    pub subflows_opened: AtomicU64,
    /// Subflows lost (path failed, reset, stalled).
    pub subflows_lost: AtomicU64,
    /// Subflows opened to replace lost ones.
    pub subflows_replaced: AtomicU64,
    /// Bytes sent again after their subflow was lost.
    pub bytes_resent: AtomicU64,
    /// Most bytes one multipath flow held in its reorder buffer.
    pub multipath_reorder_peak: AtomicU64,
    /// Most unacknowledged bytes one multipath flow held for resending.
    pub multipath_unacked_peak: AtomicU64,
    /// UDP associations, datagrams and drops.
    pub udp: super::udp::UdpCounters,
    /// Probe flows (`proxy ping`, `proxy trace`) opened here.
    pub probes_sent: AtomicU64,
    /// Probe flows answered here (this node was their exit).
    pub probes_answered: AtomicU64,
}

impl Counters {
    /// Fresh counters.
    pub(crate) fn new() -> Self {
        Self {
            flows_current: AtomicU64::new(0),
            flows_originated: AtomicU64::new(0),
            flows_exited: AtomicU64::new(0),
            flows_local: AtomicU64::new(0),
            flows_relayed: AtomicU64::new(0),
            bytes_relayed: AtomicU64::new(0),
            flows_sealed: AtomicU64::new(0),
            flows_unsealed: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            probes_answered: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            refused_at_origin: Default::default(),
            refused_inbound: Default::default(),
            flows_reset: AtomicU64::new(0),
            link_fallbacks: AtomicU64::new(0),
            links_back_to_quic: AtomicU64::new(0),
            multipath_flows: AtomicU64::new(0),
            subflows_opened: AtomicU64::new(0),
            subflows_lost: AtomicU64::new(0),
            subflows_replaced: AtomicU64::new(0),
            bytes_resent: AtomicU64::new(0),
            multipath_reorder_peak: AtomicU64::new(0),
            multipath_unacked_peak: AtomicU64::new(0),
            udp: Default::default(),
        }
    }

    /// Counts a refusal learned at the origin, for route `route` when known.
    pub(crate) fn refused_origin(&self, reason: RefuseReason, route: Option<&RouteCounters>) {
        self.refused_at_origin[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(route) = route {
            route.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal of an inbound flow.
    pub(crate) fn refused_here(&self, reason: RefuseReason) {
        self.refused_inbound[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// A point-in-time copy of a node's counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// This node's id.
    pub node_id: String,
    /// Flows open now.
    pub flows_current: u64,
    /// Flows accepted from local applications since start.
    pub flows_originated: u64,
    /// Flows from the mesh that exited here.
    pub flows_exited: u64,
    /// Local flows that exited here.
    pub flows_local: u64,
    /// Flows relayed or handed on along a proxy chain.
    pub flows_relayed: u64,
    /// Bytes relayed between streams.
    pub bytes_relayed: u64,
    /// Flow streams opened sealed end to end.
    pub flows_sealed: u64,
    /// Probe flows (`proxy ping`, `proxy trace`) opened here.
    pub probes_sent: u64,
    /// Probe flows answered here.
    pub probes_answered: u64,
    /// Unsealed flow streams opened or accepted.
    pub flows_unsealed: u64,
    /// Bytes read from TCP sockets.
    pub bytes_in: u64,
    /// Bytes written to TCP sockets.
    pub bytes_out: u64,
    /// Flows ended by a reset or timeout.
    pub flows_reset: u64,
    /// Links dialed over TCP because QUIC did not answer in time.
    pub link_fallbacks: u64,
    /// Links that fell back to TCP and moved back to QUIC.
    pub links_back_to_quic: u64,
    /// Refusals of flows this node originated, by reason name (only non-zero ones).
    pub refused_at_origin: Vec<(String, u64)>,
    /// Refusals of inbound flows, by reason name (only non-zero ones).
    pub refused_inbound: Vec<(String, u64)>,
    /// Matches per route name.
    pub route_matches: Vec<(String, u64)>,
    /// Refusals per route name, by reason name (only non-zero ones).
    pub route_refusals: Vec<(String, Vec<(String, u64)>)>,
    /// Multipath flows and their subflows.
    pub multipath: MultipathStats,
    /// Buffered flow data against the node's budget.
    pub buffers: BufferStats,
    /// UDP associations, datagrams and drops.
    pub udp: super::udp::UdpStats,
}

/// The node's buffer budget (`limits.max_buffered_bytes`) and what holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BufferStats {
    /// The budget.
    pub limit_bytes: u64,
    /// Reserved now: link receive windows and multipath reorder buffers.
    pub used_bytes: u64,
    /// Flows whose reader stalled, each holding one stream window of its link.
    pub stalled_flows: u64,
    /// Reservations the budget refused (each a flow reset) since start.
    pub refusals: u64,
}

/// Multipath counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MultipathStats {
    /// Multipath flows started here (origin or exit).
    pub flows: u64,
    /// Subflows taken into multipath flows.
    pub subflows_opened: u64,
    /// Subflows lost (path failed, reset, stalled).
    pub subflows_lost: u64,
    /// Subflows opened to replace lost ones.
    pub subflows_replaced: u64,
    /// Bytes sent again after their subflow was lost.
    pub bytes_resent: u64,
    /// Most bytes one flow held in its reorder buffer.
    pub reorder_peak_bytes: u64,
    /// Most unacknowledged bytes one flow held for resending.
    pub unacked_peak_bytes: u64,
    /// The bound on both of the above, per flow and direction.
    pub window_bytes: u64,
}

impl Stats {
    /// Refusals at the origin for `reason`.
    pub fn refused_at_origin(&self, reason: RefuseReason) -> u64 {
        lookup(&self.refused_at_origin, reason.as_str())
    }

    /// Inbound refusals for `reason`.
    pub fn refused_inbound(&self, reason: RefuseReason) -> u64 {
        lookup(&self.refused_inbound, reason.as_str())
    }
}

fn lookup(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// Takes a snapshot; `routes` in config order.
pub(crate) fn snapshot(
    node_id: &str,
    c: &Counters,
    routes: &[(String, Arc<RouteCounters>)],
    budget: &crate::node::link::credit::BufferBudget,
) -> Stats {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let by_reason = |arr: &[AtomicU64]| -> Vec<(String, u64)> {
        RefuseReason::ALL
            .iter()
            .zip(arr)
            .filter(|(_, v)| load(v) > 0)
            .map(|(r, v)| (r.as_str().to_string(), load(v)))
            .collect()
    };
    Stats {
        node_id: node_id.to_string(),
        flows_current: load(&c.flows_current),
        flows_originated: load(&c.flows_originated),
        flows_exited: load(&c.flows_exited),
        flows_local: load(&c.flows_local),
        flows_relayed: load(&c.flows_relayed),
        bytes_relayed: load(&c.bytes_relayed),
        flows_sealed: load(&c.flows_sealed),
        probes_sent: load(&c.probes_sent),
        probes_answered: load(&c.probes_answered),
        flows_unsealed: load(&c.flows_unsealed),
        bytes_in: load(&c.bytes_in),
        bytes_out: load(&c.bytes_out),
        flows_reset: load(&c.flows_reset),
        link_fallbacks: load(&c.link_fallbacks),
        links_back_to_quic: load(&c.links_back_to_quic),
        refused_at_origin: by_reason(&c.refused_at_origin),
        refused_inbound: by_reason(&c.refused_inbound),
        route_matches: routes.iter().map(|(name, r)| (name.clone(), load(&r.matches))).collect(),
        route_refusals: routes.iter().map(|(name, r)| (name.clone(), by_reason(&r.refusals))).collect(),
        multipath: MultipathStats {
            flows: load(&c.multipath_flows),
            subflows_opened: load(&c.subflows_opened),
            subflows_lost: load(&c.subflows_lost),
            subflows_replaced: load(&c.subflows_replaced),
            bytes_resent: load(&c.bytes_resent),
            reorder_peak_bytes: load(&c.multipath_reorder_peak),
            unacked_peak_bytes: load(&c.multipath_unacked_peak),
            window_bytes: crate::core::multipath::FLOW_WINDOW as u64,
        },
        buffers: BufferStats {
            limit_bytes: budget.limit(),
            used_bytes: budget.used(),
            stalled_flows: budget.stalled_flows(),
            refusals: budget.refusals(),
        },
        udp: c.udp.snapshot(),
    }
}
