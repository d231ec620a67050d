//! When the mesh last saw each node, for `proxy mesh nodes`: kept apart from the
//! registry on purpose. The registry is what joins, renewals and removals decide on, under
//! its lock or etcd transaction, and a change to it wakes every scheduler's poll; presence
//! is a coarse note the leading scheduler writes whole, at most every few seconds (a
//! session starting or ending) and once a minute (every open session), never per report.
//! A lost write costs a minute of accuracy, nothing else, so it takes no lock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How often the leading scheduler notes every open session, seconds.
pub const SWEEP_SECS: u64 = 60;
/// A note of an open session older than this is not taken to mean the node is connected
/// (the scheduler that wrote it stopped leading without noting the end).
pub const STALE_AFTER_SECS: u64 = 3 * SWEEP_SECS;
/// Nodes not seen for this long are forgotten (a removed node's entry outlives its
/// removal by as much).
pub const FORGET_AFTER_SECS: u64 = 90 * 86_400;

/// What the leading scheduler last noted of each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// By node id.
    #[serde(default)]
    pub nodes: BTreeMap<String, Seen>,
}

/// One node's last sighting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// When its session was last seen open (or when it ended), Unix seconds.
    pub last_seen_unix: u64,
    /// Whether its session was open at that time.
    pub session_open: bool,
    /// The mesh address it registered with (as other nodes dial it).
    pub address: String,
    /// The region it registered with.
    pub region: String,
}

impl Presence {
    /// Notes what was seen of `node`, unless a later sighting is recorded already (a
    /// scheduler that stepped down may write late; its older note must not win).
    pub fn note(&mut self, node: &str, seen: Seen) {
        match self.nodes.get(node) {
            Some(known) if known.last_seen_unix > seen.last_seen_unix => {}
            _ => {
                self.nodes.insert(node.to_string(), seen);
            }
        }
    }

    /// Forgets nodes not seen within [`FORGET_AFTER_SECS`] of `now_unix`.
    pub fn forget_old(&mut self, now_unix: u64) {
        self.nodes.retain(|_, s| s.last_seen_unix.saturating_add(FORGET_AFTER_SECS) >= now_unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_not_seen_for_long_are_forgotten() {
        let mut p = Presence::default();
        let seen =
            |t| Seen { last_seen_unix: t, session_open: true, address: "a:1".into(), region: "eu".into() };
        p.note("a", seen(100));
        p.note("b", seen(10));
        p.forget_old(10 + FORGET_AFTER_SECS + 1);
        assert_eq!(p.nodes.keys().collect::<Vec<_>>(), ["a"]);
        let text = serde_json::to_string(&p).expect("json");
        assert_eq!(serde_json::from_str::<Presence>(&text).expect("parse"), p);
    }

    #[test]
    fn an_older_sighting_does_not_replace_a_newer_one() {
        let seen = |at, open| Seen {
            last_seen_unix: at,
            session_open: open,
            address: "a:1".into(),
            region: "r".into(),
        };
        let mut p = Presence::default();
        p.note("a", seen(200, true));
        p.note("a", seen(100, false));
        assert_eq!(p.nodes["a"], seen(200, true));
        p.note("a", seen(200, false));
        assert_eq!(p.nodes["a"], seen(200, false), "the same second: the later write wins");
    }
}
