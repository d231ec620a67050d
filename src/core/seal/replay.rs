//! The exit's defence against a replayed first message: a relay that recorded a flow's
//! opening could otherwise send it again and have the exit dial the target and deliver
//! the origin's first bytes twice. A first message carries the time it was made; the exit
//! takes it only within [`WINDOW_SECS`] of its own clock and only once (its ephemeral key
//! is remembered until the window has passed).

use std::collections::{HashSet, VecDeque};

/// How far a first message's time may be from the exit's clock, either way.
pub const WINDOW_SECS: i64 = 120;

/// Why a first message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Made too long ago or too far ahead: a replay, or clocks that disagree.
    #[error("first message is {0} s away from this node's clock (at most {WINDOW_SECS} s allowed)")]
    OutsideWindow(i64),
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
    order: VecDeque<(i64, [u8; 32])>,
    capacity: usize,
}

impl ReplayGuard {
    /// Remembers at most `capacity` openings at a time.
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashSet::new(), order: VecDeque::new(), capacity }
    }

    /// Takes a first message with ephemeral key `ephemeral` made at `sent_at` (Unix
    /// seconds), seen at `now`.
    pub fn admit(&mut self, ephemeral: [u8; 32], sent_at: i64, now: i64) -> Result<(), ReplayError> {
        let skew = sent_at.saturating_sub(now);
        if skew.abs() > WINDOW_SECS {
            return Err(ReplayError::OutsideWindow(skew));
        }
        // A key is kept until no message made with it could still be in the window.
        while let Some((expires, key)) = self.order.front().copied() {
            if expires > now {
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
        // Expiry: the later of its own window end and now's, so the queue stays ordered
        // closely enough (an entry kept a little longer is only safer).
        let expires = sent_at.max(now) + WINDOW_SECS + 1;
        self.order.push_back((expires, ephemeral));
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

    #[test]
    fn a_message_is_taken_once() {
        let mut g = ReplayGuard::new(10);
        assert_eq!(g.admit([1; 32], 1000, 1000), Ok(()));
        assert_eq!(g.admit([1; 32], 1000, 1010), Err(ReplayError::Replayed));
        assert_eq!(g.admit([2; 32], 1000, 1010), Ok(()));
    }

    #[test]
    fn old_and_future_messages_are_refused() {
        let mut g = ReplayGuard::new(10);
        assert!(matches!(g.admit([1; 32], 1000, 1000 + WINDOW_SECS + 1), Err(ReplayError::OutsideWindow(_))));
        assert!(matches!(g.admit([1; 32], 1000 + WINDOW_SECS + 1, 1000), Err(ReplayError::OutsideWindow(_))));
    }

    #[test]
    fn keys_are_forgotten_only_once_their_messages_are_stale() {
        let mut g = ReplayGuard::new(10);
        g.admit([1; 32], 1000, 1000).unwrap();
        // Still within the window: remembered.
        assert_eq!(g.admit([1; 32], 1000, 1000 + WINDOW_SECS), Err(ReplayError::Replayed));
        // Past it: forgotten, and the message itself is refused as too old anyway.
        assert!(matches!(g.admit([1; 32], 1000, 1000 + 2 * WINDOW_SECS), Err(ReplayError::OutsideWindow(_))));
        g.admit([2; 32], 1000 + 2 * WINDOW_SECS, 1000 + 2 * WINDOW_SECS).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let mut g = ReplayGuard::new(2);
        g.admit([1; 32], 1000, 1000).unwrap();
        g.admit([2; 32], 1000, 1000).unwrap();
        assert_eq!(g.admit([3; 32], 1000, 1000), Err(ReplayError::Full));
        assert_eq!(g.admit([1; 32], 1000, 1000), Err(ReplayError::Replayed));
    }
}
