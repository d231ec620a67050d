//! Multipath groundwork (issue 5), pure: one flow's bytes as sequence-numbered chunks over
//! several subflows, reassembled in order at the far end.
//!
//! - [`Reassembly`]: the receiver's bounded reorder buffer. Chunks arrive in any order and
//!   possibly twice (a resend after a lost subflow); bytes leave exactly once, in order.
//!   Bytes waiting for a gap never exceed the bound: such a chunk that does not fit is
//!   refused, and the sender holds it until there is room (flow control, not loss). A
//!   chunk that continues the stream is always taken, since it leaves at the next `pop`.
//! - [`SendBuffer`]: the sender's bounded record of what is not yet acknowledged, by
//!   subflow, so a dead subflow's chunks can be sent again on the others.
//! - [`pick_subflow`]: the lowest-RTT subflow that has room, as MPTCP's default scheduler.
//!
//! Offsets are byte offsets in the flow (`u64`), so chunks of any size can be resent on any
//! subflow, split differently, and still line up.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// Most subflows one flow may have open at once; an exit refuses more.
pub const MAX_SUBFLOWS: usize = 16;
/// Bytes of one direction of a multipath flow that may be unacknowledged. It is also the
/// receiver's reorder bound: a sender never sends past what the receiver delivered plus
/// this window, so the receiver never holds more (a fixed protocol constant, so both
/// ends agree without negotiating).
pub const FLOW_WINDOW: usize = 8 * 1024 * 1024;
/// Most subflow indices one flow may use over its life (the wire index is a `u8`).
pub const MAX_SUBFLOW_INDEX: u8 = u8::MAX;
/// Most unacknowledged chunks a sender keeps: with the byte window, it bounds how many
/// pieces the receiver may have to hold, whatever sizes the application writes in.
pub const MAX_CHUNKS_IN_FLIGHT: usize = 8192;
/// Most separate pieces a reorder buffer holds (a resend may split a chunk in two around
/// bytes already held); a peer that needs more breaks the protocol.
pub const MAX_PENDING_PIECES: usize = 2 * MAX_CHUNKS_IN_FLIGHT;
/// Send-buffer tag of chunks that wait for a subflow (theirs was lost, or none had room).
pub const UNASSIGNED: usize = usize::MAX;

/// Why a chunk was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Taking it would exceed the buffer bound; offer it again after `pop`.
    Full,
}

/// The receiver's reorder buffer.
#[derive(Debug)]
pub struct Reassembly {
    /// Next offset to deliver.
    next: u64,
    /// Out-of-order chunks by offset, trimmed to start at or after `next`.
    pending: BTreeMap<u64, Bytes>,
    held: usize,
    bound: usize,
}

impl Reassembly {
    /// A buffer holding at most `bound` bytes out of order.
    pub fn new(bound: usize) -> Self {
        Self { next: 0, pending: BTreeMap::new(), held: 0, bound }
    }

    /// Offers the chunk at `offset`. Bytes already delivered or already held are dropped
    /// (duplicates); new bytes are kept unless that would exceed the bound.
    pub fn insert(&mut self, offset: u64, data: Bytes) -> Result<(), Refused> {
        let end = offset + data.len() as u64;
        if end <= self.next {
            return Ok(());
        }
        let skip = self.next.saturating_sub(offset) as usize;
        let (offset, data) = (offset.max(self.next), data.slice(skip..));
        // Bytes that continue the stream are always taken (they leave at the next `pop`);
        // the bound is on bytes waiting for a gap to fill.
        let new_bytes = self.uncovered(offset, data.len() as u64);
        if offset > self.next && self.held + new_bytes as usize > self.bound {
            return Err(Refused::Full);
        }
        // Keep only the parts not already held, so every byte is held at most once.
        let pieces = self.gaps(offset, &data);
        if self.pending.len() + pieces.len() > MAX_PENDING_PIECES {
            return Err(Refused::Full);
        }
        for (at, piece) in pieces {
            self.held += piece.len();
            self.pending.insert(at, piece);
        }
        Ok(())
    }

    /// The next bytes in order, if any have arrived.
    pub fn pop(&mut self) -> Option<Bytes> {
        let (&at, _) = self.pending.iter().next()?;
        if at != self.next {
            return None;
        }
        let data = self.pending.remove(&at)?;
        self.held -= data.len();
        self.next += data.len() as u64;
        Some(data)
    }

    /// Bytes delivered so far: what the receiver acknowledges.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// Bytes held out of order.
    pub fn held(&self) -> usize {
        self.held
    }

    /// How many bytes of `[offset, offset+len)` are not held yet.
    fn uncovered(&self, offset: u64, len: u64) -> u64 {
        let covered: u64 = self
            .pending
            .range(..offset + len)
            .map(|(&at, d)| {
                let (s, e) = (at.max(offset), (at + d.len() as u64).min(offset + len));
                e.saturating_sub(s)
            })
            .sum();
        len - covered
    }

    /// The parts of `data` (at `offset`) that no held chunk covers.
    fn gaps(&self, offset: u64, data: &Bytes) -> Vec<(u64, Bytes)> {
        let end = offset + data.len() as u64;
        let mut out = Vec::new();
        let mut cursor = offset;
        for (&at, d) in self.pending.range(..end) {
            let held_end = at + d.len() as u64;
            if held_end <= cursor {
                continue;
            }
            if at > cursor {
                out.push((cursor, data.slice((cursor - offset) as usize..(at - offset) as usize)));
            }
            cursor = cursor.max(held_end);
        }
        if cursor < end {
            out.push((cursor, data.slice((cursor - offset) as usize..)));
        }
        out
    }
}

/// A chunk in flight: where it starts, its bytes, and the subflow it went out on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Offset in the flow.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Subflow index it was last sent on.
    pub subflow: usize,
}

/// The sender's record of unacknowledged chunks, bounded in bytes.
#[derive(Debug)]
pub struct SendBuffer {
    chunks: VecDeque<InFlight>,
    held: usize,
    bound: usize,
    next_offset: u64,
    /// Chunks tagged [`UNASSIGNED`].
    waiting: usize,
}

impl SendBuffer {
    /// A buffer holding at most `bound` unacknowledged bytes.
    pub fn new(bound: usize) -> Self {
        Self { chunks: VecDeque::new(), held: 0, bound, next_offset: 0, waiting: 0 }
    }

    /// Whether `len` more bytes fit (in bytes, and in chunks).
    pub fn has_room(&self, len: usize) -> bool {
        self.held + len <= self.bound && self.chunks.len() < MAX_CHUNKS_IN_FLIGHT
    }

    /// Bytes that may still be pushed.
    pub fn room(&self) -> usize {
        if self.chunks.len() < MAX_CHUNKS_IN_FLIGHT { self.bound.saturating_sub(self.held) } else { 0 }
    }

    /// Records new bytes sent on `subflow`; returns their offset, or `Full`.
    pub fn push(&mut self, data: Bytes, subflow: usize) -> Result<u64, Refused> {
        if !self.has_room(data.len()) {
            return Err(Refused::Full);
        }
        let offset = self.next_offset;
        self.next_offset += data.len() as u64;
        self.held += data.len();
        self.waiting += usize::from(subflow == UNASSIGNED);
        self.chunks.push_back(InFlight { offset, data, subflow });
        Ok(offset)
    }

    /// The receiver has delivered everything below `upto`: forget it.
    pub fn ack(&mut self, upto: u64) {
        while let Some(front) = self.chunks.front() {
            let end = front.offset + front.data.len() as u64;
            if end > upto {
                break;
            }
            self.held -= front.data.len();
            self.waiting -= usize::from(front.subflow == UNASSIGNED);
            self.chunks.pop_front();
        }
    }

    /// `subflow` died: its unacknowledged chunks, to send again on `to` (they are recorded
    /// as on `to` from now on).
    pub fn reassign(&mut self, subflow: usize, to: usize) -> Vec<InFlight> {
        let moved: Vec<InFlight> = self
            .chunks
            .iter_mut()
            .filter(|c| c.subflow == subflow)
            .map(|c| {
                c.subflow = to;
                c.clone()
            })
            .collect();
        if subflow != to {
            self.waiting += if to == UNASSIGNED { moved.len() } else { 0 };
            self.waiting -= if subflow == UNASSIGNED { moved.len() } else { 0 };
        }
        moved
    }

    /// Whether chunks wait for a subflow.
    pub fn has_waiting(&self) -> bool {
        self.waiting > 0
    }

    /// The oldest chunk waiting for a subflow, now recorded as on `to`.
    pub fn take_waiting(&mut self, to: usize) -> Option<InFlight> {
        if self.waiting == 0 || to == UNASSIGNED {
            return None;
        }
        let chunk = self.chunks.iter_mut().find(|c| c.subflow == UNASSIGNED)?;
        chunk.subflow = to;
        self.waiting -= 1;
        Some(chunk.clone())
    }

    /// Unacknowledged bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Offset of the next byte to be pushed.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

/// A subflow as the chunk scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubflowState {
    /// Whether it is usable.
    pub alive: bool,
    /// Its smoothed RTT, in microseconds.
    pub rtt_us: u64,
    /// Bytes it may take now (congestion and flow-control room).
    pub room: usize,
}

/// The subflow for the next chunk of `len` bytes: the live one with room and the lowest
/// RTT (ties: the lower index), as MPTCP's default scheduler does.
pub fn pick_subflow<I>(subflows: I, len: usize) -> Option<usize>
where
    I: IntoIterator,
    I::Item: std::borrow::Borrow<SubflowState>,
{
    use std::borrow::Borrow;
    subflows
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.borrow().alive && s.borrow().room >= len)
        .min_by_key(|(i, s)| (s.borrow().rtt_us, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests;
