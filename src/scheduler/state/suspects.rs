//! The relays an origin's flows failed through, by exit: decaying tallies of the flows it
//! sent through each relay towards each exit and of those that failed, and the relays its
//! routes to that exit avoid for a while. Per origin, so a member that reports lies can
//! only make its own paths worse; per exit, so an exit that fails flows itself costs the
//! relays in front of it nothing on the way to other exits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Share of a tally kept at each report: failures spread over several reports add up
/// (about five reports' worth at steady state), and old ones fade.
const DECAY: f64 = 0.8;
/// Failed flows (decayed) through one relay towards one exit that make it a suspect, when
/// they are also at least half of the flows.
pub const MIN_FAILED_FLOWS: f64 = 3.0;
/// How long a suspect stays out of the origin's paths to that exit.
pub const SUSPECT_FOR: Duration = Duration::from_secs(600);
/// (exit, relay) pairs tallied per origin; more are not counted until some fade.
const MAX_TALLIES: usize = 4096;
/// A tally this small is forgotten.
const FADED: f64 = 0.05;

/// An exit and a relay on the way to it.
type Pair = (String, String);

/// One origin's view of the relays its flows went through.
#[derive(Debug, Default)]
pub(super) struct Suspects {
    /// Per pair: flows and failed flows, decayed.
    tallies: HashMap<Pair, (f64, f64)>,
    /// Per exit, per relay: until when the origin's routes to the exit avoid the relay.
    /// Nested so the path search, which asks about every node, looks up by `&str`.
    until: HashMap<String, HashMap<String, Instant>>,
}

impl Suspects {
    /// Starts a report: older tallies fade, expired suspicions end.
    pub(super) fn begin_report(&mut self, now: Instant) {
        for t in self.tallies.values_mut() {
            t.0 *= DECAY;
            t.1 *= DECAY;
        }
        self.tallies.retain(|_, t| t.0 >= FADED);
        for relays in self.until.values_mut() {
            relays.retain(|_, until| *until > now);
        }
        self.until.retain(|_, relays| !relays.is_empty());
    }

    /// Counts `flows` through `relay` towards `exit`, `failed` of them failed.
    pub(super) fn count(&mut self, exit: &str, relay: &str, flows: u64, failed: u64) {
        let key = (exit.to_string(), relay.to_string());
        if self.tallies.len() >= MAX_TALLIES && !self.tallies.contains_key(&key) {
            return;
        }
        let t = self.tallies.entry(key).or_default();
        t.0 += flows as f64;
        t.1 += failed.min(flows) as f64;
    }

    /// Ends a report: relays whose tally shows they fail the flows become suspects.
    pub(super) fn end_report(&mut self, now: Instant) {
        for ((exit, relay), (flows, failed)) in &self.tallies {
            if *failed >= MIN_FAILED_FLOWS && failed * 2.0 >= *flows {
                self.until.entry(exit.clone()).or_default().insert(relay.clone(), now + SUSPECT_FOR);
            }
        }
    }

    /// Whether routes to `exit` avoid `relay` now.
    pub(super) fn avoids(&self, exit: &str, relay: &str, now: Instant) -> bool {
        self.until.get(exit).and_then(|relays| relays.get(relay)).is_some_and(|until| *until > now)
    }

    /// The relays avoided now, on the way to any exit, sorted, each once.
    pub(super) fn avoided(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .until
            .values()
            .flat_map(|relays| relays.iter())
            .filter(|(_, until)| **until > now)
            .map(|(relay, _)| relay.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_spread_over_reports_add_up_and_fade() {
        let t = Instant::now();
        let mut s = Suspects::default();
        // One flow per report, and it fails: the tally reaches 3 in the fifth report.
        for i in 0..5 {
            s.begin_report(t);
            s.count("d", "b", 1, 1);
            s.end_report(t);
            assert_eq!(s.avoids("d", "b", t), i == 4, "report {i}");
        }
        assert!(!s.avoids("e", "b", t), "only on the way to that exit");
        assert_eq!(s.avoided(t), vec!["b".to_string()]);
        // Mostly good flows through c never make it a suspect.
        s.begin_report(t);
        s.count("d", "c", 100, 10);
        s.end_report(t);
        assert!(!s.avoids("d", "c", t));
        let later = t + SUSPECT_FOR + Duration::from_secs(1);
        for _ in 0..40 {
            s.begin_report(later);
            s.end_report(later);
        }
        assert!(!s.avoids("d", "b", later) && s.tallies.is_empty(), "suspicion ends, tallies fade");
    }
}
