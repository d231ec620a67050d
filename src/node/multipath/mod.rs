//! Multipath flows: one TCP flow striped over several subflow streams, each on its own
//! path to the same exit, surviving the loss of any path while one is left.
//!
//! How it fits together:
//! - The origin opens the primary subflow (index 0) on the route's first usable path;
//!   the exit dials the target and registers the flow under `(origin, flow id)`. Once the
//!   primary is open, the origin joins further subflows on the other paths, up to
//!   `limits.max_subflows` (see `origin.rs` and `exit.rs`).
//! - Both ends then run the same engine (`engine.rs`): bytes read from TCP become
//!   sequence-numbered `Data` frames on the subflow with room and the lowest RTT; the far
//!   end reassembles them in order and acknowledges what it wrote to TCP (`Ack`). The
//!   sender keeps what is unacknowledged, within [`FLOW_WINDOW`], which is also the far
//!   end's reorder bound.
//! - A subflow that fails (reset, link lost, or bytes unacknowledged past its stall
//!   timeout) is reset, its unacknowledged bytes go out again on the others, and the
//!   origin opens a replacement on an unused path. The flow fails only when no subflow
//!   is left, and then with a reset on every side.
//! - A flow-level reset travels as [`FLOW_RESET`] on every subflow (relays pass codes on
//!   unchanged); any other reset of a subflow is the loss of that path only.
//!
//! [`FLOW_WINDOW`]: crate::core::multipath::FLOW_WINDOW

pub(crate) mod engine;
pub(crate) mod exit;
pub(crate) mod origin;
mod state;
mod subflow;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{RecvStream, VarInt};
use tokio::sync::{Notify, mpsc};

use crate::core::subflow_frame::{Frame, FrameDecoder};
use crate::core::wire::RefuseReason;
use crate::node::FlowGuard;
use crate::node::flow::timer::Activity;
use crate::node::link::credit::{BufferBudget, Reservation};
use crate::node::link::send::LinkSend;
use crate::node::observe::stats::Counters;
use state::State;

pub(crate) use crate::node::splice::codes::{FLOW_RESET, PATH_LOST};

/// Whether a reset or stop code ends the whole flow rather than one subflow.
fn codes_for_flow(code: VarInt) -> bool {
    code == FLOW_RESET
}

/// A subflow stream ready to join a flow's engine.
pub(crate) struct NewSubflow {
    /// Its wire index.
    pub(crate) index: u8,
    /// Relays it goes through (origin side; empty at the exit).
    pub(crate) path: Vec<String>,
    /// The peer the stream goes to (origin side), for link health.
    pub(crate) first_hop: Option<String>,
    /// The stream.
    pub(crate) send: LinkSend,
    /// The stream.
    pub(crate) recv: RecvStream,
    /// Its end-to-end seal (each subflow has its own).
    pub(crate) seal: crate::node::splice::sealing::FlowSeal,
    /// Bytes to write before any frame (the exit's reply).
    pub(crate) preamble: Bytes,
    /// Bytes already read behind its header (exit side).
    pub(crate) leading: Bytes,
    /// This end opened it at this instant and waits for the reply for this long.
    pub(crate) awaits_reply: Option<(tokio::time::Instant, Duration)>,
    /// It may carry data before its reply (the primary: bytes ride behind the header).
    pub(crate) ready: bool,
    /// It replaces a lost subflow.
    pub(crate) replacement: bool,
    /// The flow permit of a joining stream at the exit, held while it lives.
    pub(crate) guard: Option<FlowGuard>,
}

/// What subflow tasks tell the flow's engine.
#[derive(Debug)]
pub(crate) enum Event {
    /// The subflow's reply said opened, after this round trip.
    Opened(usize, Duration),
    /// The subflow was refused.
    Refused {
        /// Slot.
        slot: usize,
        /// Why.
        reason: RefuseReason,
        /// Which node.
        hop: String,
        /// Detail.
        detail: String,
    },
    /// The subflow's path failed.
    Lost(usize, String),
    /// The peer finished the subflow cleanly: it counts the flow complete.
    PeerFinished,
    /// The peer reset the whole flow.
    FlowReset(u64),
    /// The peer broke the protocol.
    Violation(String),
    /// The peer acknowledged the last byte of our direction.
    OutDelivered,
}

/// Reorder-buffer bytes reserved at a time.
const REORDER_GRAIN: u64 = 256 * 1024;

/// What a flow's tasks share.
pub(crate) struct FlowCore {
    state: Mutex<State>,
    /// Wakes the TCP reader: room opened up.
    room: Notify,
    /// Wakes the TCP writer: in-order bytes or the end arrived.
    data: Notify,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
    /// Code a subflow half is reset with when dropped unfinished.
    fail_code: AtomicU64,
    /// The flow's progress, for its idle and half-closed timeouts: bytes moved on its TCP
    /// socket, and the far end acknowledging that it wrote more of our bytes to its own.
    activity: Activity,
    /// What the reorder buffer holds, out of the node's buffer budget: a peer that opens
    /// many flows and leaves a gap at offset 0 in each fills them all, so each flow's
    /// bound alone does not bound the node.
    reorder: Mutex<Reservation>,
}

impl FlowCore {
    fn new(
        counters: Arc<Counters>,
        bytes: Arc<AtomicU64>,
        budget: Arc<BufferBudget>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let reorder = Mutex::new(budget.empty());
        let (events, rx) = mpsc::unbounded_channel();
        let core = Self {
            state: Mutex::new(State::new()),
            room: Notify::new(),
            data: Notify::new(),
            events,
            counters,
            fail_code: AtomicU64::new(PATH_LOST.into_inner()),
            activity: Activity::counting(bytes),
            reorder,
        };
        (Arc::new(core), rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters; carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the reorder buffer's reservation at what it holds, rounded up to
    /// [`REORDER_GRAIN`] so that not every frame touches the shared counter.
    fn reserve_reorder(&self, held: u64) -> Result<(), String> {
        let mut r = self.reorder.lock().unwrap_or_else(|p| p.into_inner());
        let want = held.div_ceil(REORDER_GRAIN) * REORDER_GRAIN;
        let resize = want > r.bytes() || want + 2 * REORDER_GRAIN < r.bytes();
        if resize && !r.resize(want) {
            return Err(
                "the node's buffer budget (limits.max_buffered_bytes) has no room for this flow's reorder buffer".into()
            );
        }
        Ok(())
    }

    fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Sends chunks that wait for a subflow where there is room now.
    fn assign_waiting(&self, st: &mut State) {
        let bytes = st.assign_waiting(Instant::now());
        self.counters.bytes_resent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes every complete frame from `decoder` for `slot`; returns whether one was a
    /// `Fin` (every subflow of a completing flow carries one before it is finished).
    fn take_frames(&self, slot: usize, decoder: &mut FrameDecoder) -> Result<bool, String> {
        let now = Instant::now();
        let mut st = self.lock();
        let (mut in_order, mut acked, mut fin) = (false, false, false);
        let delivered_before = st.out_delivered();
        let peer_delivered_before = st.peer_delivered;
        if let Some(sub) = st.subs.get_mut(slot)
            && decoder.buffered() > 0
        {
            sub.meter.heard(now);
        }
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            match frame {
                Frame::Data { offset, data } => {
                    in_order |= st.on_data(slot, offset, data, now).map_err(|v| v.0)?
                }
                Frame::Ack { delivered, received } => {
                    st.on_ack(slot, delivered, received, now);
                    acked = true;
                }
                Frame::Fin { offset } => {
                    st.on_fin(offset).map_err(|v| v.0)?;
                    in_order = true;
                    fin = true;
                }
            }
        }
        if acked {
            self.assign_waiting(&mut st);
        }
        let held = st.recv.held() as u64;
        self.counters.multipath_reorder_peak.fetch_max(held, Ordering::Relaxed);
        self.reserve_reorder(held)?;
        let newly_delivered = !delivered_before && st.out_delivered();
        // The far end wrote more of our bytes to its socket: the flow is being delivered,
        // even while nothing moves on our own socket (a finished upload crossing a slow path).
        let peer_progress = st.peer_delivered > peer_delivered_before;
        drop(st);
        if peer_progress {
            self.activity.touch();
        }
        if in_order {
            self.data.notify_one();
        }
        if acked {
            self.room.notify_one();
        }
        if newly_delivered {
            self.report(Event::OutDelivered);
        }
        Ok(fin)
    }
}
