//! The exit's defence against a replayed first message: a relay that recorded a flow's
//! opening could otherwise send it again and have the exit dial the target and deliver
//! the origin's first bytes twice. A first message carries the time it was made
//! (milliseconds); the exit takes it only within [`WINDOW_MS`] of its own clock, only once
//! (its ephemeral key is remembered until the window has passed), and never when it was
//! made before this exit started: the memory is not kept across restarts, so an opening
//! from before a restart could otherwise be replayed to the new process.

use std::collections::{HashMap, HashSet, VecDeque};

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
    /// This origin has its share of the memory: refused, so that one member opening flows
    /// as fast as it can cannot fill the memory and lock every other origin out.
    #[error("too many new flows from this origin")]
    OriginFull,
}

/// Ephemeral keys seen within the window, oldest first.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    /// (forget after, key, origin), in the order taken: the expiry only grows (see `admit`).
    order: VecDeque<(u64, [u8; 32], std::sync::Arc<str>)>,
    /// Openings remembered per origin.
    per_origin: HashMap<std::sync::Arc<str>, usize>,
    capacity: usize,
    started_ms: u64,
}

/// The share of the memory one origin may hold: one eighth.
const ORIGIN_SHARE: usize = 8;

impl ReplayGuard {
    /// Remembers at most `capacity` openings at a time; refuses openings made before
    /// `started_ms` (Unix milliseconds: when this process started).
    pub fn new(capacity: usize, started_ms: u64) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            per_origin: HashMap::new(),
            capacity,
            started_ms,
        }
    }

    /// Takes a first message from `origin` with ephemeral key `ephemeral` made at
    /// `sent_ms`, seen at `now_ms` (Unix milliseconds). One origin holds at most an eighth
    /// of the memory.
    pub fn admit(
        &mut self,
        origin: &str,
        ephemeral: [u8; 32],
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        let skew = sent_ms.abs_diff(now_ms);
        if skew > WINDOW_MS {
            return Err(ReplayError::OutsideWindow(skew));
        }
        if sent_ms < self.started_ms {
            return Err(ReplayError::BeforeStart);
        }
        while self.order.front().is_some_and(|(forget_after, ..)| *forget_after <= now_ms) {
            let Some((_, key, from)) = self.order.pop_front() else { break };
            self.seen.remove(&key);
            if let Some(n) = self.per_origin.get_mut(&from) {
                *n -= 1;
                if *n == 0 {
                    self.per_origin.remove(&from);
                }
            }
        }
        if self.seen.contains(&ephemeral) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let held = self.per_origin.get(origin).copied().unwrap_or(0);
        if held >= (self.capacity / ORIGIN_SHARE).max(1) {
            return Err(ReplayError::OriginFull);
        }
        self.seen.insert(ephemeral);
        let from: std::sync::Arc<str> = match self.per_origin.get_key_value(origin) {
            Some((k, _)) => k.clone(),
            None => origin.into(),
        };
        *self.per_origin.entry(from.clone()).or_insert(0) += 1;
        // A message is stale (refused by the window) one window after it was made: keep its
        // key that long. Never shorter than the entry before, so the oldest is always first
        // (a message made ahead of time makes later ones wait with it: longer is safe).
        let forget_after = (sent_ms + WINDOW_MS + 1).max(self.order.back().map_or(0, |b| b.0));
        self.order.push_back((forget_after, ephemeral, from));
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
        let mut g = ReplayGuard::new(64, 0);
        assert_eq!(g.admit("a", [1; 32], T, T), Ok(()));
        assert_eq!(g.admit("a", [1; 32], T, T + 10), Err(ReplayError::Replayed));
        assert_eq!(g.admit("a", [2; 32], T, T + 10), Ok(()));
    }

    #[test]
    fn old_future_and_before_start_messages_are_refused() {
        let mut g = ReplayGuard::new(64, T);
        assert!(matches!(g.admit("a", [1; 32], T, T + WINDOW_MS + 1), Err(ReplayError::OutsideWindow(_))));
        assert!(matches!(g.admit("a", [1; 32], T + WINDOW_MS + 1, T), Err(ReplayError::OutsideWindow(_))));
        assert!(matches!(g.admit("a", [1; 32], u64::MAX, T), Err(ReplayError::OutsideWindow(_))));
        // Within the window, but made before this node started: it may have been taken by
        // the node's previous run.
        assert_eq!(g.admit("a", [1; 32], T - 1, T + 5), Err(ReplayError::BeforeStart));
        assert_eq!(g.admit("a", [1; 32], T, T + 5), Ok(()));
    }

    #[test]
    fn keys_are_forgotten_only_once_their_messages_are_stale() {
        let mut g = ReplayGuard::new(64, 0);
        // Made a full window ahead: still remembered when that time has come and gone.
        g.admit("a", [1; 32], T + WINDOW_MS, T).unwrap();
        assert_eq!(g.admit("a", [1; 32], T + WINDOW_MS, T + 2 * WINDOW_MS), Err(ReplayError::Replayed));
        // Past both windows: forgotten, and the message itself is refused as too old anyway.
        g.admit("a", [2; 32], T + 3 * WINDOW_MS, T + 3 * WINDOW_MS).unwrap();
        assert_eq!(g.len(), 1);
        assert!(matches!(
            g.admit("a", [1; 32], T + WINDOW_MS, T + 3 * WINDOW_MS),
            Err(ReplayError::OutsideWindow(_))
        ));
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let mut g = ReplayGuard::new(16, 0);
        for (i, origin) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            g.admit(origin, [i as u8; 32], T, T).unwrap();
            g.admit(origin, [100 + i as u8; 32], T, T).unwrap();
        }
        assert_eq!(g.admit("i", [200; 32], T, T), Err(ReplayError::Full));
        assert_eq!(g.admit("a", [0; 32], T, T), Err(ReplayError::Replayed));
    }

    #[test]
    fn one_origin_cannot_take_the_whole_memory() {
        let mut g = ReplayGuard::new(16, 0);
        g.admit("mallory", [1; 32], T, T).unwrap();
        g.admit("mallory", [2; 32], T, T).unwrap();
        assert_eq!(g.admit("mallory", [3; 32], T, T), Err(ReplayError::OriginFull));
        assert_eq!(g.admit("alice", [3; 32], T, T), Ok(()));
        // Its share comes back as its openings expire.
        assert_eq!(g.admit("mallory", [4; 32], T + 3 * WINDOW_MS, T + 3 * WINDOW_MS), Ok(()));
    }
}
