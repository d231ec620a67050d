//! The state one multipath flow keeps under its lock: the send buffer, the reorder buffer,
//! and each subflow's queue and measurements. Every method runs under the lock and does
//! no I/O; the tasks in `subflow.rs` and `engine.rs` carry out what it decides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::core::multipath::{FLOW_WINDOW, Reassembly, SendBuffer, SubflowState, pick_subflow};
use crate::core::subflow_frame::Frame;
use crate::core::subflow_meter::{INITIAL_WINDOW, SubflowMeter};

/// Send-buffer tag of chunks whose subflow died while no other could take them.
pub(crate) const UNASSIGNED: usize = usize::MAX;
/// Payload bytes a subflow receives before it acknowledges at once.
const ACK_EVERY: u64 = 32 * 1024;
/// Longest an acknowledgement waits for more bytes to share it.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(2);

/// One subflow as the flow sees it.
pub(crate) struct Sub {
    /// Its wire index.
    pub(crate) index: u8,
    /// The relays it goes through (origin side; empty at the exit).
    pub(crate) path: Vec<String>,
    /// Not lost.
    pub(crate) alive: bool,
    /// May carry new data (its reply arrived, or it is the primary).
    pub(crate) ready: bool,
    /// What it carries and how fast.
    pub(crate) meter: SubflowMeter,
    /// Frames waiting for its writer.
    pub(crate) queue: VecDeque<Frame>,
    /// Payload bytes received on it.
    pub(crate) received: u64,
    /// `received` as last acknowledged.
    pub(crate) received_acked: u64,
    /// An acknowledgement is owed since then.
    pub(crate) ack_due: Option<Instant>,
    /// The flow completed: the writer finishes the stream once its queue is empty.
    pub(crate) finishing: bool,
    /// Wakes its writer.
    pub(crate) wake: Arc<Notify>,
}

impl Sub {
    /// A new live subflow.
    pub(crate) fn new(index: u8, path: Vec<String>, ready: bool, now: Instant) -> Self {
        Self {
            index,
            path,
            alive: true,
            ready,
            meter: SubflowMeter::new(now, INITIAL_WINDOW),
            queue: VecDeque::new(),
            received: 0,
            received_acked: 0,
            ack_due: None,
            finishing: false,
            wake: Arc::new(Notify::new()),
        }
    }
}

/// What the writer of a subflow does next.
pub(crate) enum WriterStep {
    /// Write this frame.
    Send(Frame),
    /// Finish the stream: the flow is complete.
    Finish,
    /// Stop: the subflow was lost.
    Stop,
    /// Wait for a wake, or until this instant (an acknowledgement falls due).
    Wait(Option<Instant>),
}

/// A peer broke the protocol; the flow is reset.
#[derive(Debug)]
pub(crate) struct Violation(pub String);

/// The flow's state.
pub(crate) struct State {
    /// Our outgoing bytes not yet delivered by the peer.
    pub(crate) send: SendBuffer,
    /// Incoming bytes waiting for their turn.
    pub(crate) recv: Reassembly,
    /// Subflows by slot, in the order they were added.
    pub(crate) subs: Vec<Sub>,
    /// Our direction ended (TCP end of stream) at this offset.
    pub(crate) fin_out: Option<u64>,
    /// The peer's direction ends at this offset.
    pub(crate) fin_in: Option<u64>,
    /// Bytes the peer wrote to its TCP socket.
    pub(crate) peer_delivered: u64,
    /// Bytes we wrote to our TCP socket.
    pub(crate) written: u64,
    /// `written` as last acknowledged.
    pub(crate) written_acked: u64,
    /// Resent bytes, for the counters.
    pub(crate) resent: u64,
}

impl State {
    /// Fresh state.
    pub(crate) fn new() -> Self {
        Self {
            send: SendBuffer::new(FLOW_WINDOW),
            recv: Reassembly::new(FLOW_WINDOW),
            subs: Vec::new(),
            fin_out: None,
            fin_in: None,
            peer_delivered: 0,
            written: 0,
            written_acked: 0,
            resent: 0,
        }
    }

    /// Live subflows.
    pub(crate) fn alive(&self) -> usize {
        self.subs.iter().filter(|s| s.alive).count()
    }

    /// Adds a subflow; returns its slot. A finished direction is announced on it at once.
    pub(crate) fn add(&mut self, sub: Sub) -> usize {
        self.subs.push(sub);
        let slot = self.subs.len() - 1;
        if let Some(offset) = self.fin_out {
            self.subs[slot].queue.push_back(Frame::Fin { offset });
        }
        slot
    }

    /// The subflow for new data: live, ready, with room, lowest RTT first.
    pub(crate) fn pick(&self) -> Option<usize> {
        let view: Vec<SubflowState> = self
            .subs
            .iter()
            .map(|s| SubflowState {
                alive: s.alive && s.ready && !s.finishing,
                rtt_us: s.meter.srtt().map_or(u64::MAX / 2, |d| d.as_micros() as u64),
                room: s.meter.room() as usize,
            })
            .collect();
        pick_subflow(&view, 1)
    }

    /// The live, ready subflow with the lowest RTT, room or not (for resends and acks).
    pub(crate) fn best(&self) -> Option<usize> {
        self.subs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive && s.ready)
            .min_by_key(|(i, s)| (s.meter.srtt().unwrap_or(Duration::MAX), *i))
            .map(|(i, _)| i)
    }

    /// Queues new bytes read from TCP on `slot` (from [`State::pick`]).
    pub(crate) fn push_data(&mut self, slot: usize, data: Bytes, now: Instant) {
        let len = data.len() as u64;
        // The caller checked the room; the window is the send buffer's bound.
        let Ok(offset) = self.send.push(data.clone(), slot) else { return };
        let sub = &mut self.subs[slot];
        sub.meter.on_send(len, now);
        sub.queue.push_back(Frame::Data { offset, data });
        sub.wake.notify_one();
    }

    /// Keeps new bytes read from TCP while no subflow can take them.
    pub(crate) fn push_unassigned(&mut self, data: Bytes) {
        let _ = self.send.push(data, UNASSIGNED);
    }

    /// Our TCP side ended: announce the final offset on every live subflow.
    pub(crate) fn finish_out(&mut self) {
        let offset = self.send.next_offset();
        self.fin_out = Some(offset);
        for s in self.subs.iter_mut().filter(|s| s.alive) {
            s.queue.push_back(Frame::Fin { offset });
            s.wake.notify_one();
        }
    }

    /// Moves every unacknowledged chunk tagged `from` to the best live subflow (or to
    /// [`UNASSIGNED`] when none is up), queued ahead of new data so the gap at the far
    /// end closes first. Returns the bytes moved.
    pub(crate) fn resend(&mut self, from: usize, now: Instant) -> u64 {
        let to = self.best().filter(|&t| t != from);
        let moved = self.send.reassign(from, to.unwrap_or(UNASSIGNED));
        let bytes: u64 = moved.iter().map(|c| c.data.len() as u64).sum();
        if let Some(t) = to {
            let sub = &mut self.subs[t];
            for chunk in moved.into_iter().rev() {
                sub.meter.on_send(chunk.data.len() as u64, now);
                sub.queue.push_front(Frame::Data { offset: chunk.offset, data: chunk.data });
            }
            sub.wake.notify_one();
            self.resent += bytes;
        }
        bytes
    }

    /// Marks a subflow lost; returns whether it was alive.
    pub(crate) fn lose(&mut self, slot: usize) -> bool {
        let Some(sub) = self.subs.get_mut(slot) else { return false };
        let was = sub.alive;
        sub.alive = false;
        sub.queue.clear();
        sub.wake.notify_one();
        was
    }

    /// Takes a `Data` frame that arrived on `slot`; returns whether in-order bytes are
    /// now ready for TCP.
    pub(crate) fn on_data(
        &mut self,
        slot: usize,
        offset: u64,
        data: Bytes,
        now: Instant,
    ) -> Result<bool, Violation> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.recv.delivered() + FLOW_WINDOW as u64 {
            return Err(Violation(format!("data up to {end} beyond the flow window")));
        }
        if self.fin_in.is_some_and(|fin| end > fin) {
            return Err(Violation(format!("data up to {end} past the end of the flow")));
        }
        let len = data.len() as u64;
        let before = self.recv.delivered();
        self.recv.insert(offset, data).map_err(|_| Violation("reorder buffer overrun".into()))?;
        if let Some(sub) = self.subs.get_mut(slot) {
            sub.received += len;
            // The writer learns of a newly owed ack (to arm its short timer) and of a full
            // one (to send it now).
            let first_owed = sub.ack_due.is_none();
            sub.ack_due.get_or_insert(now);
            if first_owed || sub.received - sub.received_acked >= ACK_EVERY {
                sub.wake.notify_one();
            }
        }
        Ok(offset <= before)
    }

    /// Takes an `Ack` that arrived on `slot`.
    pub(crate) fn on_ack(&mut self, slot: usize, delivered: u64, received: u64, now: Instant) {
        let delivered = delivered.min(self.send.next_offset());
        if delivered > self.peer_delivered {
            self.peer_delivered = delivered;
            self.send.ack(delivered);
        }
        if let Some(sub) = self.subs.get_mut(slot) {
            sub.meter.on_ack(received, now);
        }
    }

    /// Takes a `Fin` from the peer.
    pub(crate) fn on_fin(&mut self, offset: u64) -> Result<(), Violation> {
        match self.fin_in {
            Some(known) if known != offset => {
                Err(Violation(format!("end of flow moved from {known} to {offset}")))
            }
            _ if offset < self.recv.delivered() => {
                Err(Violation("end of flow before bytes already delivered".into()))
            }
            _ => {
                self.fin_in = Some(offset);
                Ok(())
            }
        }
    }

    /// Whether the peer has delivered everything we will ever send.
    pub(crate) fn out_delivered(&self) -> bool {
        self.fin_out.is_some_and(|fin| self.peer_delivered >= fin)
    }

    /// Owes an acknowledgement of what we wrote to TCP, on the best subflow.
    pub(crate) fn ack_written(&mut self, now: Instant, urgent: bool) {
        if let Some(slot) = self.best() {
            let sub = &mut self.subs[slot];
            let due = if urgent { now.checked_sub(ACK_DELAY).unwrap_or(now) } else { now };
            sub.ack_due = Some(sub.ack_due.map_or(due, |d| d.min(due)));
            sub.wake.notify_one();
        }
    }

    /// The next step of the writer of `slot`.
    pub(crate) fn writer_step(&mut self, slot: usize, now: Instant) -> WriterStep {
        let written = self.written;
        let Some(sub) = self.subs.get_mut(slot) else { return WriterStep::Stop };
        if !sub.alive {
            return WriterStep::Stop;
        }
        if let Some(due) = sub.ack_due {
            let owed = sub.received - sub.received_acked;
            if owed >= ACK_EVERY || now >= due + ACK_DELAY || sub.finishing {
                sub.ack_due = None;
                sub.received_acked = sub.received;
                self.written_acked = written;
                return WriterStep::Send(Frame::Ack { delivered: written, received: sub.received });
            }
        }
        match sub.queue.pop_front() {
            Some(frame) => WriterStep::Send(frame),
            None if sub.finishing => WriterStep::Finish,
            None => WriterStep::Wait(sub.ack_due.map(|d| d + ACK_DELAY)),
        }
    }

    /// The flow completed: every live subflow's writer finishes its stream.
    pub(crate) fn finish_all(&mut self) {
        for s in self.subs.iter_mut().filter(|s| s.alive) {
            s.finishing = true;
            s.wake.notify_one();
        }
    }

    /// Chunks waiting for a subflow go to `slot`, which just became ready.
    pub(crate) fn adopt_unassigned(&mut self, slot: usize, now: Instant) {
        if self.subs.get(slot).is_some_and(|s| s.alive && s.ready) {
            let moved = self.send.reassign(UNASSIGNED, slot);
            let sub = &mut self.subs[slot];
            for chunk in moved.into_iter().rev() {
                sub.meter.on_send(chunk.data.len() as u64, now);
                self.resent += chunk.data.len() as u64;
                sub.queue.push_front(Frame::Data { offset: chunk.offset, data: chunk.data });
            }
            sub.wake.notify_one();
        }
    }
}
