//! The state one multipath flow keeps under its lock: the send buffer, the reorder buffer,
//! and each subflow's queue and measurements. Every method runs under the lock and does
//! no I/O; the tasks in `subflow.rs` and `engine.rs` carry out what it decides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::core::multipath::{FLOW_WINDOW, Reassembly, SendBuffer, SubflowState, UNASSIGNED, pick_subflow};
use crate::core::subflow_frame::Frame;
use crate::core::subflow_meter::{INITIAL_WINDOW, SubflowMeter};

/// Payload bytes a subflow receives before it acknowledges at once.
const ACK_EVERY: u64 = 32 * 1024;
/// Longest an acknowledgement waits for more bytes to share it.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(2);
/// A subflow that sent nothing for this long sends an `Ack`, so relays on its path do not
/// take it for idle while the flow's other subflows carry the bytes.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Data frames smaller than this are copied out of the read buffer rather than pinning it.
const SMALL_FRAME: usize = 4 * 1024;

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
    /// Its reply arrived (or it needs none): from then on a silence counts as a stall.
    pub(crate) replied: bool,
    /// When its writer last sent a frame.
    pub(crate) last_sent: Instant,
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
    /// A new live subflow; `replied` is false while this end waits for its reply.
    pub(crate) fn new(index: u8, path: Vec<String>, ready: bool, replied: bool, now: Instant) -> Self {
        Self {
            index,
            path,
            alive: true,
            ready,
            replied,
            last_sent: now,
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
        // Runs for every chunk read from TCP: no allocation.
        let view = self.subs.iter().map(|s| SubflowState {
            alive: s.alive && s.ready && !s.finishing,
            rtt_us: s.meter.srtt().map_or(u64::MAX / 2, |d| d.as_micros() as u64),
            room: s.meter.room() as usize,
        });
        pick_subflow(view, 1)
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

    /// Queues new bytes read from TCP on `slot` (from [`State::pick`]), or keeps them
    /// waiting for a subflow (`None`). False if the send window had no room.
    pub(crate) fn push_data(&mut self, slot: Option<usize>, data: Bytes, now: Instant) -> bool {
        let len = data.len() as u64;
        let Ok(offset) = self.send.push(data.clone(), slot.unwrap_or(UNASSIGNED)) else { return false };
        if let Some(sub) = slot.and_then(|s| self.subs.get_mut(s)) {
            sub.meter.on_send(len, now);
            sub.queue.push_back(Frame::Data { offset, data });
            sub.wake.notify_one();
        }
        true
    }

    /// Whether new bytes may be read from TCP: the window has room, no older bytes wait
    /// for a subflow, and a subflow has room. Returns how many.
    pub(crate) fn tcp_room(&self, chunk: usize) -> usize {
        if self.send.has_waiting() || self.pick().is_none() { 0 } else { self.send.room().min(chunk) }
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

    /// The chunks of lost subflow `from` wait to be sent again (see
    /// [`State::assign_waiting`]); returns their bytes.
    pub(crate) fn resend(&mut self, from: usize) -> u64 {
        let moved = self.send.reassign(from, UNASSIGNED);
        moved.iter().map(|c| c.data.len() as u64).sum()
    }

    /// Sends waiting chunks, oldest first, on subflows with room (lowest RTT first), ahead
    /// of new bytes. Returns the bytes assigned.
    pub(crate) fn assign_waiting(&mut self, now: Instant) -> u64 {
        let mut bytes = 0;
        while self.send.has_waiting() {
            let Some(slot) = self.pick() else { break };
            let Some(chunk) = self.send.take_waiting(slot) else { break };
            let sub = &mut self.subs[slot];
            let len = chunk.data.len() as u64;
            sub.meter.on_send(len, now);
            sub.queue.push_back(Frame::Data { offset: chunk.offset, data: chunk.data });
            sub.wake.notify_one();
            bytes += len;
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
        let data = if data.len() < SMALL_FRAME { Bytes::copy_from_slice(&data) } else { data };
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
        let owed = sub.ack_due.is_some_and(|due| {
            sub.received - sub.received_acked >= ACK_EVERY || now >= due + ACK_DELAY || sub.finishing
        });
        let step = if owed || now >= sub.last_sent + KEEPALIVE {
            sub.ack_due = None;
            sub.received_acked = sub.received;
            self.written_acked = self.written_acked.max(written);
            WriterStep::Send(Frame::Ack { delivered: written, received: sub.received })
        } else {
            match sub.queue.pop_front() {
                Some(frame) => WriterStep::Send(frame),
                None if sub.finishing => WriterStep::Finish,
                None => {
                    let keepalive = sub.last_sent + KEEPALIVE;
                    return WriterStep::Wait(Some(
                        sub.ack_due.map_or(keepalive, |d| (d + ACK_DELAY).min(keepalive)),
                    ));
                }
            }
        };
        sub.last_sent = now;
        step
    }

    /// The flow completed: every live subflow's writer finishes its stream.
    pub(crate) fn finish_all(&mut self) {
        for s in self.subs.iter_mut().filter(|s| s.alive) {
            s.finishing = true;
            s.wake.notify_one();
        }
    }
}
