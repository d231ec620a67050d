//! The flows open on a node, for the admin API and `Node::flows()`: each flow task holds a
//! record (through its [`crate::node::FlowGuard`]) that says what the flow is and counts
//! its bytes; the record leaves the registry when the task ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// What a node does for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowRole {
    /// Not known yet (the header is being read).
    #[default]
    Pending,
    /// An application connected here; the flow goes into the mesh.
    Origin,
    /// An application connected here and this node dials the target itself.
    Local,
    /// Bytes pass through on their way to the next node.
    Relay,
    /// This node dials the target for a flow from the mesh.
    Exit,
    /// One extra subflow of a multipath flow exiting here (its bytes count on the flow).
    Subflow,
}

impl FlowRole {
    /// Every role.
    pub const ALL: [FlowRole; 6] =
        [Self::Pending, Self::Origin, Self::Local, Self::Relay, Self::Exit, Self::Subflow];

    /// Stable name, as in the JSON and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Origin => "origin",
            Self::Local => "local",
            Self::Relay => "relay",
            Self::Exit => "exit",
            Self::Subflow => "subflow",
        }
    }
}

/// What is known of a flow.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowMeta {
    /// The flow id (chosen by the origin).
    pub flow_id: u64,
    /// The origin node.
    pub origin: String,
    /// This node's part.
    pub role: FlowRole,
    /// The route, at the origin (or at a proxy-chain node).
    pub route: Option<String>,
    /// The nodes of the path after the origin, the exit last.
    pub path: Vec<String>,
    /// The target (`host:port`), or `port N` for a proxy chain.
    pub destination: String,
}

/// One open flow's record.
#[derive(Debug)]
pub(crate) struct FlowRecord {
    key: u64,
    started: Instant,
    bytes: Arc<AtomicU64>,
    meta: Mutex<FlowMeta>,
}

impl FlowRecord {
    /// The counter the flow's splice adds its bytes to (both directions).
    pub(crate) fn bytes(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    /// Updates what is known of the flow.
    pub(crate) fn describe(&self, f: impl FnOnce(&mut FlowMeta)) {
        let mut meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut meta);
    }
}

/// A flow as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowInfo {
    /// The flow id.
    pub id: u64,
    /// The origin node.
    pub origin: String,
    /// This node's part (`origin`, `relay`, `exit`, ...).
    pub role: FlowRole,
    /// The route, where this node knows it.
    pub route: Option<String>,
    /// The path after the origin, the exit last.
    pub path: Vec<String>,
    /// Target or proxy-chain port.
    pub destination: String,
    /// Bytes moved so far, both directions.
    pub bytes: u64,
    /// Seconds since the flow started here.
    pub age_secs: f64,
}

/// The open flows of one node.
#[derive(Debug, Default)]
pub(crate) struct FlowRegistry {
    flows: Mutex<HashMap<u64, Arc<FlowRecord>>>,
    next_key: AtomicU64,
}

impl FlowRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<FlowRecord>>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new flow.
    pub(crate) fn register(&self) -> Arc<FlowRecord> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(FlowRecord {
            key,
            started: Instant::now(),
            bytes: Arc::new(AtomicU64::new(0)),
            meta: Mutex::new(FlowMeta::default()),
        });
        self.lock().insert(key, record.clone());
        record
    }

    /// Forgets a flow.
    pub(crate) fn remove(&self, record: &FlowRecord) {
        self.lock().remove(&record.key);
    }

    /// The open flows, busiest first, at most `limit` of them.
    pub(crate) fn snapshot(&self, limit: usize) -> Vec<FlowInfo> {
        // Copy the records out first: flows starting and ending wait on this lock.
        let mut records: Vec<Arc<FlowRecord>> = self.lock().values().cloned().collect();
        let bytes = |r: &Arc<FlowRecord>| r.bytes.load(Ordering::Relaxed);
        if records.len() > limit {
            records.select_nth_unstable_by(limit, |a, b| bytes(b).cmp(&bytes(a)));
            records.truncate(limit);
        }
        let mut out: Vec<FlowInfo> = records
            .iter()
            .map(|r| {
                let meta = r.meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
                FlowInfo {
                    id: meta.flow_id,
                    origin: meta.origin,
                    role: meta.role,
                    route: meta.route,
                    path: meta.path,
                    destination: meta.destination,
                    bytes: r.bytes.load(Ordering::Relaxed),
                    age_secs: r.started.elapsed().as_secs_f64(),
                }
            })
            .collect();
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.id.cmp(&b.id)));
        out
    }

    /// Open flows by role, every role listed (zero included).
    pub(crate) fn count_by_role(&self) -> Vec<(FlowRole, u64)> {
        let records: Vec<Arc<FlowRecord>> = self.lock().values().cloned().collect();
        let mut counts: HashMap<FlowRole, u64> = FlowRole::ALL.iter().map(|r| (*r, 0)).collect();
        for r in &records {
            let role = r.meta.lock().unwrap_or_else(|p| p.into_inner()).role;
            *counts.entry(role).or_default() += 1;
        }
        let mut out: Vec<(FlowRole, u64)> = counts.into_iter().collect();
        out.sort_by_key(|(role, _)| role.as_str());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go_and_list_busiest_first() {
        let reg = FlowRegistry::default();
        let a = reg.register();
        let b = reg.register();
        a.describe(|m| {
            m.flow_id = 1;
            m.role = FlowRole::Origin;
        });
        b.describe(|m| {
            m.flow_id = 2;
            m.role = FlowRole::Relay;
        });
        b.bytes().fetch_add(10, Ordering::Relaxed);
        let ids: Vec<u64> = reg.snapshot(usize::MAX).iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(reg.snapshot(1).iter().map(|f| f.id).collect::<Vec<_>>(), vec![2], "the busiest only");
        let by_role = reg.count_by_role();
        assert_eq!(by_role.len(), FlowRole::ALL.len(), "every role, zero included");
        assert!(by_role.contains(&(FlowRole::Origin, 1)) && by_role.contains(&(FlowRole::Exit, 0)));
        reg.remove(&a);
        assert_eq!(reg.snapshot(usize::MAX).len(), 1);
    }
}
