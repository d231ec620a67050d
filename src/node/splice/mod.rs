//! The splices: the loops that move one flow's bytes between two sockets, both ways at
//! once, and what they share (how a flow ends, the codes a stream is reset with).
//!
//! - [`tcp_stream`]: a TCP socket and a QUIC stream (an origin's client, an exit's
//!   target);
//! - [`streams`]: two QUIC streams (a relay, between the previous node and the next);
//! - [`tcp_pair`]: two TCP sockets (a route whose exit is this node);
//! - [`tcp_io`]: the TCP reads and writes they use;
//! - [`udp_stream`]: a UDP association (framed datagrams) and a QUIC stream.
//!
//! All keep the same invariants: a finish crosses as a finish, any failure resets both
//! sides, and each direction holds at most one chunk of its own (backpressure is the
//! stream window on one side and the socket buffer on the other).

pub(crate) mod relay_tap;
pub(crate) mod resealed;
pub(crate) mod sealing;
pub(crate) mod streams;
pub(crate) mod tcp_io;
pub(crate) mod tcp_pair;
pub(crate) mod tcp_stream;
pub(crate) mod udp_queue;
pub(crate) mod udp_stream;

use std::future::Future;
use std::sync::Arc;

use quinn::{ReadError, VarInt, WriteError};
use tokio::sync::watch;

use crate::core::wire::RefuseReason;
use crate::node::flow::timer::{Activity, FlowTimeouts};
use crate::node::link::send::LinkSend;
use crate::node::observe::stats::Counters;

/// Application error codes used when resetting or stopping flow streams.
pub(crate) mod codes {
    use quinn::VarInt;
    /// The TCP side was reset or failed.
    pub(crate) const TCP_RESET: VarInt = VarInt::from_u32(1);
    /// The flow timed out (idle or half-closed).
    pub(crate) const TIMEOUT: VarInt = VarInt::from_u32(2);
    /// The node is shutting down and the drain deadline passed.
    pub(crate) const SHUTDOWN: VarInt = VarInt::from_u32(3);
    /// The flow was refused; the reply says why.
    pub(crate) const REFUSED: VarInt = VarInt::from_u32(4);
    /// The far side reset the stream, passed on.
    pub(crate) const PEER_RESET: VarInt = VarInt::from_u32(5);
    /// A multipath subflow's path was lost; the flow goes on without it.
    pub(crate) const PATH_LOST: VarInt = VarInt::from_u32(6);
    /// A whole multipath flow ends in a reset (its TCP side was reset, it timed out, or no
    /// path was left); relays pass it on unchanged on every subflow.
    pub(crate) const FLOW_RESET: VarInt = VarInt::from_u32(7);
}

/// What a spliced flow runs under: its timeouts, the node's counters, the shutdown signal,
/// and the route whose byte count it adds to (origin side only).
pub(crate) struct FlowEnv {
    /// Idle, half-closed and reply timeouts.
    pub timeouts: FlowTimeouts,
    /// The node's counters.
    pub counters: Arc<Counters>,
    /// Turns true when the node's drain deadline passes.
    pub force: watch::Receiver<bool>,
    /// The route (config index) this flow belongs to, when this node originated it.
    pub route: Option<Arc<crate::node::observe::stats::RouteCounters>>,
    /// The flow's byte counter (its record in the node's flow registry).
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The node's buffer budget (multipath reorder buffers reserve from it).
    pub budget: Arc<crate::node::link::credit::BufferBudget>,
    /// A test's hostile-relay hook (see [`relay_tap`]); `None` in real use.
    pub tap: Option<relay_tap::RelayTap>,
    /// Given by an origin that wants to know, set by its splice when the exit's own answer
    /// came: its sealed reply on a sealed flow, `Opened` on an unsealed one (a refusal in
    /// the clear may be a relay's). `None` elsewhere, so other flows allocate nothing.
    pub answered: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// How a flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlowEnd {
    /// Both directions finished cleanly.
    Completed,
    /// The far end refused the flow.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// The node that refused.
        hop: String,
        /// Its detail text.
        detail: String,
    },
    /// The TCP side reset or failed.
    TcpReset,
    /// The far side reset or stopped the stream.
    PeerReset(u64),
    /// The peer link was lost.
    LinkLost(String),
    /// Idle, half-closed or reply timeout.
    TimedOut(&'static str),
    /// Forced shutdown.
    Aborted,
    /// The reply was malformed.
    BadReply(String),
    /// A relay passed back a refusal from further along the path.
    RefusedAhead,
    /// The peer broke the multipath protocol.
    Protocol(String),
    /// The node's buffer budget had no room for what the flow holds (a stalled reader, a
    /// reorder buffer): reset so the link's other flows keep their credit.
    OverBudget,
}

impl From<crate::node::link::credit::OverBudget> for FlowEnd {
    fn from(_: crate::node::link::credit::OverBudget) -> Self {
        FlowEnd::OverBudget
    }
}

impl FlowEnd {
    pub(crate) fn reset_code(&self) -> VarInt {
        match self {
            Self::Completed
            | Self::TcpReset
            | Self::LinkLost(_)
            | Self::BadReply(_)
            | Self::Protocol(_)
            | Self::OverBudget => codes::TCP_RESET,
            Self::Refused { .. } | Self::RefusedAhead => codes::REFUSED,
            Self::PeerReset(_) => codes::PEER_RESET,
            Self::TimedOut(_) => codes::TIMEOUT,
            Self::Aborted => codes::SHUTDOWN,
        }
    }
}

/// Waits until the peer acknowledged all of a finished flow's streams (`stopped`, see
/// [`stop_code`]); returns the stop code when the peer stopped one instead, which means
/// bytes were not all delivered. The wait lasts while the flow makes progress (the
/// streams were handed to `activity` at their finish, so a link that keeps acknowledging
/// keeps it going), and ends after the flow's limit without any.
pub(crate) async fn acknowledged(
    stopped: impl Future<Output = Option<u64>>,
    activity: &Activity,
    timeouts: FlowTimeouts,
    mut force: watch::Receiver<bool>,
) -> Option<u64> {
    tokio::select! {
        code = stopped => code,
        _ = activity.watchdog(&timeouts) => None,
        _ = crate::shutdown::wait_true(&mut force) => None,
    }
}

/// How a flow between two streams (a relay, a proxy-chain node) ends once both directions
/// stopped: a completed one is held until both neighbours acknowledged everything (one that
/// stopped a finished stream instead did not get all of it); a refusal from ahead until it
/// reached the side behind.
pub(crate) async fn settle_between(
    end: FlowEnd,
    (back, ahead): (&LinkSend, &LinkSend),
    activity: &Activity,
    timeouts: FlowTimeouts,
    force: watch::Receiver<bool>,
) -> FlowEnd {
    match end {
        FlowEnd::Completed => {
            let (back_stop, ahead_stop) = (stop_code(back), stop_code(ahead));
            let both = async {
                let (back_stop, ahead_stop) = tokio::join!(back_stop, ahead_stop);
                back_stop.or(ahead_stop)
            };
            acknowledged(both, activity, timeouts, force).await.map_or(FlowEnd::Completed, FlowEnd::PeerReset)
        }
        FlowEnd::RefusedAhead => {
            let _ = acknowledged(stop_code(back), activity, timeouts, force).await;
            FlowEnd::RefusedAhead
        }
        other => other,
    }
}

/// Completes when the peer acknowledged all of finished `send` (`None`, also when the link
/// is gone) or stopped it (its code).
pub(crate) fn stop_code(send: &LinkSend) -> impl Future<Output = Option<u64>> + Send + 'static {
    let stopped = send.stopped();
    async move {
        match stopped.await {
            Ok(Some(code)) => Some(code.into_inner()),
            _ => None,
        }
    }
}

/// How a failed stream read ends a flow.
pub(crate) fn read_error(e: ReadError) -> FlowEnd {
    match e {
        ReadError::Reset(code) => FlowEnd::PeerReset(code.into_inner()),
        ReadError::ConnectionLost(c) => FlowEnd::LinkLost(c.to_string()),
        other => FlowEnd::LinkLost(other.to_string()),
    }
}

/// How a failed stream write ends a flow.
pub(crate) fn write_error(e: WriteError) -> FlowEnd {
    match e {
        WriteError::Stopped(code) => FlowEnd::PeerReset(code.into_inner()),
        WriteError::ConnectionLost(c) => FlowEnd::LinkLost(c.to_string()),
        other => FlowEnd::LinkLost(other.to_string()),
    }
}
