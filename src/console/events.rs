//! The console's event log: the last few hundred things that happened, newest last, each
//! with a sequence number so a live stream sends each event once.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::unix_millis;

/// Events kept; older ones are dropped.
pub const KEPT: usize = 300;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A route's path changed.
    RouteMoved,
    /// A link came up.
    LinkUp,
    /// A link went down.
    LinkDown,
    /// A node's session opened (or it was heard from again).
    NodeUp,
    /// A node's session closed, or it fell silent.
    NodeDown,
    /// A machine joined the mesh with a token.
    NodeJoined,
    /// A node was removed from the mesh.
    NodeRemoved,
    /// A node's certificate was renewed.
    CertRenewed,
    /// A config reload was applied.
    ReloadApplied,
    /// A config reload was refused.
    ReloadRefused,
    /// An operator acted through the console or the API.
    Action,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// A sentence for people.
    pub text: String,
}

/// The bounded log; cheap to share (`Arc`).
pub struct EventLog {
    events: Mutex<VecDeque<Event>>,
    /// The newest event's `seq`: live streams wait on it.
    newest: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog { events: Mutex::new(VecDeque::with_capacity(KEPT)), newest: watch::Sender::new(0) }
    }
}

impl EventLog {
    /// Records an event now.
    pub fn push(&self, kind: EventKind, text: impl Into<String>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let seq = events.back().map_or(1, |e| e.seq + 1);
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(Event { seq, at_ms: unix_millis(), kind, text: text.into() });
        drop(events);
        self.newest.send_replace(seq);
    }

    /// Events after `seq`, oldest first (at most [`KEPT`]).
    pub fn since(&self, seq: u64) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    /// All kept events, newest first.
    pub fn newest_first(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().rev().cloned().collect()
    }

    /// A receiver that changes whenever an event is pushed (its value: the newest `seq`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_and_numbers_them() {
        let log = EventLog::default();
        for i in 0..KEPT + 5 {
            log.push(EventKind::Action, format!("e{i}"));
        }
        let all = log.newest_first();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].text, format!("e{}", KEPT + 4));
        assert_eq!(all[0].seq, (KEPT + 5) as u64);
        assert_eq!(log.since(all[1].seq).len(), 1);
        assert_eq!(*log.subscribe().borrow(), (KEPT + 5) as u64);
    }
}
