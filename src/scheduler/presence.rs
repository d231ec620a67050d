//! The leading scheduler's notes of which nodes it sees (`proxy mesh nodes`' "last
//! seen"): sessions starting and ending are collected here, and one task writes them to
//! the presence record (see `enrollment::presence`) at most every [`MIN_SPACING`], plus
//! every open session once per [`SWEEP_SECS`] — never per report or heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::warn;

use super::enrollment::presence::{SWEEP_SECS, Seen};
use super::enrollment::store::RegistryStore;
use super::etcd::leadership::Role;
use crate::clock::unix_now;

/// The shortest time between two writes: a burst of sessions (a leader change brings
/// every node at once) is one write.
pub const MIN_SPACING: Duration = Duration::from_secs(2);

/// A node whose session is open here.
#[derive(Debug, Clone)]
struct Open {
    address: String,
    region: String,
}

/// Sessions seen since the last write.
#[derive(Debug, Default)]
struct Pending {
    /// Open sessions, by node.
    open: HashMap<String, Open>,
    /// Sessions that ended (node, what it registered with, when) not yet written.
    ended: Vec<(String, Open, u64)>,
}

/// What the scheduler's sessions tell the presence writer.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: Mutex<Pending>,
    changed: Notify,
}

impl Tracker {
    /// `node`'s session registered, from `address` in `region`.
    pub fn started(&self, node: &str, address: &str, region: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.open.insert(node.to_string(), Open { address: address.to_string(), region: region.to_string() });
        p.ended.retain(|(n, _, _)| n != node);
        drop(p);
        self.changed.notify_one();
    }

    /// `node`'s session ended (not replaced by a newer one).
    pub fn ended(&self, node: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = p.open.remove(node) {
            p.ended.push((node.to_string(), open, unix_now()));
        }
        drop(p);
        self.changed.notify_one();
    }

    /// Forgets every open session (this scheduler stopped leading and closed them), noting
    /// their end.
    pub fn all_ended(&self) {
        let now = unix_now();
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let open: Vec<(String, Open)> = p.open.drain().collect();
        p.ended.extend(open.into_iter().map(|(n, o)| (n, o, now)));
        drop(p);
        self.changed.notify_one();
    }
}

/// Writes the notes: promptly (after [`MIN_SPACING`]) when a session started or ended,
/// and every open session each [`SWEEP_SECS`] while this scheduler leads.
pub async fn write_loop(
    tracker: Arc<Tracker>,
    store: RegistryStore,
    role: watch::Receiver<Role>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(SWEEP_SECS));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tracker.changed.notified() => {}
            _ = sweep.tick() => {}
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
        let (open, ended) = {
            let mut p = tracker.pending.lock().unwrap_or_else(|p| p.into_inner());
            (p.open.clone(), std::mem::take(&mut p.ended))
        };
        // A standby has no sessions of its own; it still writes the ends it saw.
        if ended.is_empty() && (open.is_empty() || !role.borrow().is_leader()) {
            continue;
        }
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let now = unix_now();
            let mut presence = store.load_presence()?;
            for (node, o) in open {
                presence.note(
                    &node,
                    Seen { last_seen_unix: now, session_open: true, address: o.address, region: o.region },
                );
            }
            for (node, o, at) in ended {
                presence.note(
                    &node,
                    Seen { last_seen_unix: at, session_open: false, address: o.address, region: o.region },
                );
            }
            presence.forget_old(now);
            store.save_presence(&presence)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!("presence record: {e}; `mesh nodes` shows older sightings until the next write")
            }
            Err(e) => warn!("presence record: the write task failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(MIN_SPACING) => {}
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
    }
}
