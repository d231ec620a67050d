//! The windowed estimates a model-based controller keeps: the largest delivery rate of the
//! last few round trips (the bottleneck bandwidth) and the smallest round trip of the last
//! few seconds (the propagation delay).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The largest value seen over the last `rounds` round trips that were measured.
#[derive(Debug, Clone)]
pub struct MaxOverRounds {
    rounds: usize,
    /// Best value of each measured round, oldest first: (round, value).
    best: VecDeque<(u64, u64)>,
}

impl MaxOverRounds {
    /// A filter that remembers `rounds` measured round trips.
    pub fn new(rounds: usize) -> Self {
        Self { rounds: rounds.max(1), best: VecDeque::new() }
    }

    /// Offers `value`, measured in `round`.
    pub fn update(&mut self, round: u64, value: u64) {
        match self.best.back_mut() {
            Some((r, v)) if *r == round => *v = (*v).max(value),
            _ => {
                self.best.push_back((round, value));
                // Rounds with no measurement (an idle link) do not age the estimate: only
                // measured rounds count, so a warm link keeps what it learned.
                while self.best.len() > self.rounds {
                    self.best.pop_front();
                }
            }
        }
    }

    /// The largest value in the window, 0 before any.
    pub fn get(&self) -> u64 {
        self.best.iter().map(|&(_, v)| v).max().unwrap_or(0)
    }

    /// Forgets everything (the path changed).
    pub fn reset(&mut self) {
        self.best.clear();
    }
}

/// The smallest round trip seen, and when it was last confirmed.
#[derive(Debug, Clone, Copy)]
pub struct MinRtt {
    value: Option<Duration>,
    stamp: Instant,
    /// The smallest sample since `stamp`: what the path shows now, should the estimate
    /// expire.
    recent: Option<Duration>,
}

impl MinRtt {
    /// No sample yet.
    pub fn new(now: Instant) -> Self {
        Self { value: None, stamp: now, recent: None }
    }

    /// The estimate, if any sample was taken.
    pub fn get(&self) -> Option<Duration> {
        self.value
    }

    /// Offers a sample; an equal or smaller one confirms or lowers the estimate.
    pub fn update(&mut self, now: Instant, sample: Duration) {
        if self.value.is_none_or(|v| sample <= v) {
            self.value = Some(sample);
            self.stamp = now;
            self.recent = None;
        } else {
            self.recent = Some(self.recent.map_or(sample, |r| r.min(sample)));
        }
    }

    /// Whether the estimate went unconfirmed for longer than `window`, or for longer than
    /// `quick` while every sample since was more than twice as long: the path itself grew
    /// longer (a route change under the link), and waiting the whole window would leave
    /// the window sized for the old path.
    pub fn expired(&self, now: Instant, window: Duration, quick: Duration) -> bool {
        let age = now.saturating_duration_since(self.stamp);
        let grew = match (self.value, self.recent) {
            (Some(v), Some(r)) => r > v * 2 + Duration::from_millis(2),
            _ => false,
        };
        age > window || (grew && age > quick)
    }

    /// Replaces the estimate (after a probe measured the path afresh).
    pub fn set(&mut self, now: Instant, value: Duration) {
        self.value = Some(value);
        self.stamp = now;
        self.recent = None;
    }

    /// The smallest sample since the estimate was last confirmed.
    pub fn recent(&self) -> Option<Duration> {
        self.recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_ages_out_after_its_rounds_but_not_over_idle_time() {
        let mut f = MaxOverRounds::new(3);
        f.update(1, 100);
        f.update(2, 50);
        f.update(3, 60);
        assert_eq!(f.get(), 100);
        // Round 10 after an idle gap: only three measured rounds are kept.
        f.update(10, 70);
        assert_eq!(f.get(), 70);
        f.update(10, 90);
        assert_eq!(f.get(), 90);
    }

    #[test]
    fn the_min_rtt_expires_when_unconfirmed() {
        let t0 = Instant::now();
        let mut m = MinRtt::new(t0);
        m.update(t0, Duration::from_millis(80));
        m.update(t0 + Duration::from_secs(5), Duration::from_millis(90));
        assert_eq!(m.get(), Some(Duration::from_millis(80)));
        let (window, quick) = (Duration::from_secs(10), Duration::from_secs(1));
        assert!(!m.expired(t0 + Duration::from_secs(9), window, quick));
        assert!(m.expired(t0 + Duration::from_secs(11), window, quick));
        assert_eq!(m.recent(), Some(Duration::from_millis(90)));
    }

    #[test]
    fn a_path_that_grew_longer_expires_the_min_rtt_early() {
        let t0 = Instant::now();
        let mut m = MinRtt::new(t0);
        let (window, quick) = (Duration::from_secs(10), Duration::from_secs(1));
        m.update(t0, Duration::from_micros(50));
        m.update(t0 + Duration::from_millis(500), Duration::from_millis(80));
        assert!(!m.expired(t0 + Duration::from_millis(900), window, quick));
        assert!(m.expired(t0 + Duration::from_millis(1100), window, quick));
    }
}
