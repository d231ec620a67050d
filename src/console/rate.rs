//! Rates from cumulative counters, measured over at least a span so counters that move in
//! steps (reports arriving between samples) do not make the rate jump.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How fast each counter grew from `from` to `to` over `elapsed`.
fn per_second<const N: usize>(from: [u64; N], to: [u64; N], elapsed: Duration) -> [f64; N] {
    let secs = elapsed.as_secs_f64();
    std::array::from_fn(|i| to[i].saturating_sub(from[i]) as f64 / secs)
}

/// One key's last measure: when, the counters then, and the rates it gave.
type Measure<const N: usize> = (Instant, [u64; N], Option<[f64; N]>);

/// Per key, the counters at the last measure and the rates that measure gave.
#[derive(Debug)]
pub struct RateMeter<const N: usize> {
    span: Duration,
    last: HashMap<String, Measure<N>>,
}

impl<const N: usize> RateMeter<N> {
    /// A meter that measures over at least `span`.
    pub fn new(span: Duration) -> Self {
        RateMeter { span, last: HashMap::new() }
    }

    /// The per-second rates of `counters` for `key`: the last measure's, renewed once
    /// `span` has passed since it; `None` until the first span has passed.
    pub fn rates(&mut self, key: &str, counters: [u64; N], now: Instant) -> Option<[f64; N]> {
        let entry = self.last.entry(key.to_string()).or_insert((now, counters, None));
        let elapsed = now.duration_since(entry.0);
        if elapsed >= self.span {
            *entry = (now, counters, Some(per_second(entry.1, counters, elapsed)));
        }
        entry.2
    }

    /// Rates of counters that move in steps (totals reported every few seconds): renewed
    /// when the counters change, over the time since they last changed (at least `span`);
    /// zero once they have not changed for `idle`.
    pub fn rates_on_change(
        &mut self,
        key: &str,
        counters: [u64; N],
        now: Instant,
        idle: Duration,
    ) -> Option<[f64; N]> {
        let entry = self.last.entry(key.to_string()).or_insert((now, counters, None));
        let elapsed = now.duration_since(entry.0);
        if counters != entry.1 && elapsed >= self.span {
            *entry = (now, counters, Some(per_second(entry.1, counters, elapsed)));
        } else if counters == entry.1 && elapsed >= idle {
            entry.2 = Some([0.0; N]);
        }
        entry.2
    }

    /// Forgets every key for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_measured_over_the_span_and_kept_between() {
        let span = Duration::from_secs(5);
        let mut m = RateMeter::new(span);
        let t0 = Instant::now();
        assert_eq!(m.rates("a", [10, 1000], t0), None);
        assert_eq!(m.rates("a", [12, 3000], t0 + Duration::from_secs(1)), None, "too soon to say");
        assert_eq!(m.rates("a", [20, 11_000], t0 + span), Some([2.0, 2000.0]));
        assert_eq!(m.rates("a", [25, 12_000], t0 + span + Duration::from_secs(1)), Some([2.0, 2000.0]));
        m.retain(|k| k != "a");
        assert_eq!(m.rates("a", [0, 0], t0 + span * 3), None, "forgotten");
    }

    #[test]
    fn stepped_counters_give_the_rate_between_steps_and_zero_when_idle() {
        let (span, idle) = (Duration::from_secs(1), Duration::from_secs(25));
        let mut m = RateMeter::new(span);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.rates_on_change("n", [0, 0], t0, idle), None);
        // A report every 10 s: the rate holds between reports instead of dropping to 0.
        assert_eq!(m.rates_on_change("n", [10, 1000], at(10), idle), Some([1.0, 100.0]));
        assert_eq!(m.rates_on_change("n", [10, 1000], at(15), idle), Some([1.0, 100.0]));
        assert_eq!(m.rates_on_change("n", [30, 3000], at(20), idle), Some([2.0, 200.0]));
        assert_eq!(m.rates_on_change("n", [30, 3000], at(46), idle), Some([0.0, 0.0]));
        assert_eq!(m.rates("a", [0, 0], t0 + span * 3), None, "forgotten");
    }
}
