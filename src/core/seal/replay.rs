//! The exit's defence against a replayed first message: a relay that recorded a flow's
//! opening could otherwise send it again and have the exit dial the target and deliver
//! the origin's first bytes twice. A first message carries the time it was made
//! (milliseconds); the exit takes it only within [`WINDOW_MS`] of its own clock, only once
//! (its ephemeral key is remembered until the window has passed), and never when it was
//! made before this exit started: the memory is not kept across restarts, so an opening
//! from before a restart could otherwise be replayed to the new process.

use std::collections::{HashSet, VecDeque};

/// How far a first message's time may be from the exit's clock, either way.
pub const WINDOW_MS: u64 = 120_000;

/// Why a first message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Made too long ago or too far ahead: a replay, or clocks that disagree.
    #[error("first message is {0} ms away from this node's clock (at most {WINDOW_MS} ms allowed)")]
    OutsideWindow(u64),
    /// Made before this node started (it cannot know whether it saw it then).
    #[error("first message made before this node started")]
    BeforeStart,
    /// Seen before.
    #[error("first message replayed")]
    Replayed,
    /// The memory is full of recent openings: refuse rather than forget one.
    #[error("too many new flows to remember")]
    Full,
}

/// Ephemeral keys seen within the window, oldest first.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    /// (forget after, key), in the order taken: the expiry only grows (see `admit`).
    order: VecDeque<(u64, [u8; 32])>,
    capacity: usize,
    started_ms: u64,
}

impl ReplayGuard {
    /// Remembers at most `capacity` openings at a time; refuses openings made before
    /// `started_ms` (Unix milliseconds: when this process started).
    pub fn new(capacity: usize, started_ms: u64) -> Self {
        Self { seen: HashSet::new(), order: VecDeque::new(), capacity, started_ms }
    }

    /// Takes a first message with ephemeral key `ephemeral` made at `sent_ms`, seen at
    /// `now_ms` (Unix milliseconds).
    pub fn admit(&mut self, ephemeral: [u8; 32], sent_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        let skew = sent_ms.abs_diff(now_ms);
        if skew > WINDOW_MS {
            return Err(ReplayError::OutsideWindow(skew));
        }
        if sent_ms < self.started_ms {
            return Err(ReplayError::BeforeStart);
        }
        while let Some((forget_after, key)) = self.order.front().copied() {
            if forget_after > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        if self.seen.contains(&ephemeral) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        self.seen.insert(ephemeral);
        // A message taken now was made at most one window ahead, so it is stale (refused
        // by the window) two windows from now: keep it that long. Counted from `now`, the
        // expiry grows with every entry, so the oldest is always first.
        self.order
            .push_back((now_ms.max(self.order.back().map_or(0, |b| b.0)) + 2 * WINDOW_MS + 1, ephemeral));
        Ok(())
    }

    /// Openings remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000;

    #[test]
    fn a_message_is_taken_once() {
        let mut g = ReplayGuard::new(10, 0);
        assert_eq!(g.admit([1; 32], T, T), Ok(()));
        assert_eq!(g.admit([1; 32], T, T + 10), Err(ReplayError::Replayed));
        assert_eq!(g.admit([2; 32], T, T + 10), Ok(()));
    }

    #[test]
    fn old_future_and_before_start_messages_are_refused() {
        let mut g = ReplayGuard::new(10, T);
        assert!(matches!(g.admit([1; 32], T, T + WINDOW_MS + 1), Err(ReplayError::OutsideWindow(_))));
        assert!(matches!(g.admit([1; 32], T + WINDOW_MS + 1, T), Err(ReplayError::OutsideWindow(_))));
        assert!(matches!(g.admit([1; 32], u64::MAX, T), Err(ReplayError::OutsideWindow(_))));
        // Within the window, but made before this node started: it may have been taken by
        // the node's previous run.
        assert_eq!(g.admit([1; 32], T - 1, T + 5), Err(ReplayError::BeforeStart));
        assert_eq!(g.admit([1; 32], T, T + 5), Ok(()));
    }

    #[test]
    fn keys_are_forgotten_only_once_their_messages_are_stale() {
        let mut g = ReplayGuard::new(10, 0);
        // Made a full window ahead: still remembered when that time has come and gone.
        g.admit([1; 32], T + WINDOW_MS, T).unwrap();
        assert_eq!(g.admit([1; 32], T + WINDOW_MS, T + 2 * WINDOW_MS), Err(ReplayError::Replayed));
        // Past both windows: forgotten, and the message itself is refused as too old anyway.
        g.admit([2; 32], T + 3 * WINDOW_MS, T + 3 * WINDOW_MS).unwrap();
        assert_eq!(g.len(), 1);
        assert!(matches!(
            g.admit([1; 32], T + WINDOW_MS, T + 3 * WINDOW_MS),
            Err(ReplayError::OutsideWindow(_))
        ));
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let mut g = ReplayGuard::new(2, 0);
        g.admit([1; 32], T, T).unwrap();
        g.admit([2; 32], T, T).unwrap();
        assert_eq!(g.admit([3; 32], T, T), Err(ReplayError::Full));
        assert_eq!(g.admit([1; 32], T, T), Err(ReplayError::Replayed));
    }
}
