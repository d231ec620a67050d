//! Exponential backoff with full jitter for re-dialing lost peer links.
//!
//! The ceiling doubles from `min` per failed attempt up to `max`; each delay is drawn
//! uniformly from zero to the ceiling (full jitter), so nodes that lost the same peer at
//! the same moment do not re-dial in lock step. The randomness is passed in, so the
//! sequence is exact under test.

use std::time::Duration;

/// Backoff state for one peer link.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff from `min` up to `max` (a `max` below `min` is raised to `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), failures: 0 }
    }

    /// The current ceiling: `min * 2^failures`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.min.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// Records a failure and returns the delay before the next attempt; `unit` is a
    /// uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Forgets past failures (after a link stayed up).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_min_and_stops_at_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let ceilings: Vec<u128> = (0..12)
            .map(|_| {
                let c = b.ceiling().as_millis();
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
    }

    #[test]
    fn delay_is_the_random_fraction_of_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(100));
        assert_eq!(b.next_delay(2.0), Duration::from_millis(400));
    }

    #[test]
    fn many_failures_do_not_overflow_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_delay(0.999) <= Duration::from_secs(30));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
