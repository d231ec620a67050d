//! How this node's flows fared per path since the last scheduler report: flows opened and
//! those the path failed. The scheduler moves this node's routes away from relays that fail
//! them (a relay that refuses or silently drops flows is otherwise still chosen, since its
//! links measure fine).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::control::PathOutcome;
use crate::node::splice::FlowEnd;

/// Paths remembered between two reports; more are not counted (a node has a few paths
/// per route, so this is only reached with thousands of routes).
const MAX_PATHS: usize = 1024;

/// A path of a route: the route's name and the relays.
type PathKey = (String, Vec<String>);

/// Per path: flows opened and failed.
#[derive(Debug, Default)]
pub(crate) struct PathOutcomes {
    paths: Mutex<HashMap<PathKey, (u64, u64)>>,
}

impl PathOutcomes {
    /// Counts one flow on `relays` of `route` that ended with `end`.
    pub(crate) fn record(&self, route: &str, relays: &[String], exit: &str, me: &str, end: &FlowEnd) {
        let failed = path_failed(end, exit, me);
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        let key = (route.to_string(), relays.to_vec());
        if paths.len() >= MAX_PATHS && !paths.contains_key(&key) {
            return;
        }
        let entry = paths.entry(key).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }

    /// The counts since the last call, which start over.
    pub(crate) fn take(&self) -> Vec<PathOutcome> {
        let paths = std::mem::take(&mut *self.paths.lock().unwrap_or_else(|p| p.into_inner()));
        paths
            .into_iter()
            .map(|((route, relays), (flows, failed))| PathOutcome { route, relays, flows, failed })
            .collect()
    }
}

/// Whether the path, rather than the exit, the target or this node, failed the flow: a
/// node other than the exit and this one refused it, the exit's reply never came (what a
/// relay that drops flows looks like from here), or what came back was malformed or did
/// not open under the flow's seal (what a relay that forges or tampers looks like).
fn path_failed(end: &FlowEnd, exit: &str, me: &str) -> bool {
    match end {
        FlowEnd::Refused { hop, .. } => hop != exit && hop != me,
        FlowEnd::TimedOut(reason) => *reason == "reply",
        FlowEnd::BadReply(_) | FlowEnd::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::RefuseReason;

    fn refused(hop: &str) -> FlowEnd {
        FlowEnd::Refused { reason: RefuseReason::NoRoute, hop: hop.into(), detail: String::new() }
    }

    #[test]
    fn relay_refusals_missing_and_forged_replies_count_against_the_path_exit_refusals_do_not() {
        let o = PathOutcomes::default();
        let relays = vec!["b".to_string()];
        let forged = FlowEnd::BadReply("forged".into());
        for end in
            [refused("b"), FlowEnd::TimedOut("reply"), forged, refused("d"), refused("a"), FlowEnd::Completed]
        {
            o.record("in", &relays, "d", "a", &end);
        }
        o.record("in", &[], "d", "a", &FlowEnd::TimedOut("idle"));
        let mut got = o.take();
        got.sort_by(|x, y| x.relays.cmp(&y.relays));
        assert_eq!(
            got,
            vec![
                PathOutcome { route: "in".into(), relays: vec![], flows: 1, failed: 0 },
                PathOutcome { route: "in".into(), relays, flows: 6, failed: 3 },
            ]
        );
        assert!(o.take().is_empty(), "counts start over after each report");
    }
}
