//! How this node's flows fared per path since the last scheduler report: flows opened and
//! those the path failed. The scheduler moves this node's routes away from relays that fail
//! them (a relay that refuses or silently drops flows is otherwise still chosen, since its
//! links measure fine).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::control::PathOutcome;
use crate::core::wire::RefuseReason;
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
    /// Counts one flow on `relays` of `route` to `exit` that ended with `end`, `answer`
    /// saying what came back from the exit.
    pub(crate) fn record(&self, route: &str, relays: &[String], exit: &str, end: &FlowEnd, answer: Answer) {
        let failed = path_failed(end, exit, answer);
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

/// What the origin got from the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Answer {
    /// The flow was sealed: only a sealed reply is the exit's.
    pub(crate) sealed: bool,
    /// The exit's own answer came (its sealed reply; `Opened` on an unsealed flow).
    pub(crate) answered: bool,
}

/// Whether the path, rather than the exit, the target or the application, failed the flow.
///
/// Before the exit's own answer, any end but the application's own is the path's: a relay
/// can drop the flow (no reply), reset its stream, stall the header, refuse it, or forge a
/// refusal in the exit's name, and none of those must let it escape the count. Only an
/// unsealed flow's refusal naming the exit is taken at its word (nothing can tell it from
/// the exit's), and a header this node could not encode is its own. After the answer, only
/// what breaks the seal (tampered or forged bytes) is the path's; resets and timeouts then
/// say nothing about who caused them.
fn path_failed(end: &FlowEnd, exit: &str, answer: Answer) -> bool {
    match end {
        FlowEnd::Completed | FlowEnd::TcpReset | FlowEnd::Aborted | FlowEnd::OverBudget => false,
        _ if answer.answered => matches!(end, FlowEnd::BadReply(_) | FlowEnd::Protocol(_)),
        FlowEnd::Refused { reason: RefuseReason::BadHeader, .. } => false,
        FlowEnd::Refused { hop, .. } => answer.sealed || hop != exit,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(hop: &str) -> FlowEnd {
        FlowEnd::Refused { reason: RefuseReason::NoRoute, hop: hop.into(), detail: String::new() }
    }

    const SEALED_NO_ANSWER: Answer = Answer { sealed: true, answered: false };
    const SEALED_ANSWERED: Answer = Answer { sealed: true, answered: true };
    const CLEAR: Answer = Answer { sealed: false, answered: false };

    #[test]
    fn before_the_exit_answers_every_end_but_the_application_s_counts_against_the_path() {
        for end in [
            FlowEnd::TimedOut("reply"),
            FlowEnd::PeerReset(5),
            FlowEnd::LinkLost("b".into()),
            FlowEnd::BadReply("forged".into()),
            refused("b"),
            refused("a"),
            refused("d"),
        ] {
            assert!(path_failed(&end, "d", SEALED_NO_ANSWER), "{end:?}");
        }
        let own =
            FlowEnd::Refused { reason: RefuseReason::BadHeader, hop: "a".into(), detail: String::new() };
        for end in [FlowEnd::Completed, FlowEnd::TcpReset, FlowEnd::Aborted, own] {
            assert!(!path_failed(&end, "d", SEALED_NO_ANSWER), "{end:?}");
        }
        assert!(
            !path_failed(&refused("d"), "d", CLEAR),
            "an unsealed refusal naming the exit is taken at its word"
        );
        assert!(path_failed(&refused("b"), "d", CLEAR));
    }

    #[test]
    fn after_the_exit_answers_only_a_broken_seal_counts() {
        assert!(!path_failed(&refused("d"), "d", SEALED_ANSWERED), "the exit's own sealed refusal");
        for end in [FlowEnd::PeerReset(5), FlowEnd::TimedOut("idle"), FlowEnd::LinkLost("b".into())] {
            assert!(!path_failed(&end, "d", SEALED_ANSWERED), "{end:?}");
        }
        assert!(path_failed(&FlowEnd::Protocol("sealed stream: bad record".into()), "d", SEALED_ANSWERED));
    }

    #[test]
    fn counts_are_per_path_and_start_over_after_each_report() {
        let o = PathOutcomes::default();
        let relays = vec!["b".to_string()];
        o.record("in", &relays, "d", &FlowEnd::TimedOut("reply"), SEALED_NO_ANSWER);
        o.record("in", &relays, "d", &FlowEnd::Completed, SEALED_ANSWERED);
        o.record("in", &[], "d", &FlowEnd::TimedOut("idle"), SEALED_ANSWERED);
        let mut got = o.take();
        got.sort_by(|x, y| x.relays.cmp(&y.relays));
        assert_eq!(
            got,
            vec![
                PathOutcome { route: "in".into(), relays: vec![], flows: 1, failed: 0 },
                PathOutcome { route: "in".into(), relays, flows: 2, failed: 1 },
            ]
        );
        assert!(o.take().is_empty());
    }
}
