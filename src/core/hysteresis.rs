//! Route hysteresis: a route moves to a new path only when that path is better by a
//! margin, and stays better for a hold time, so near-equal paths do not flap.
//!
//! Pure: the caller passes the time (`now`, any monotonic clock as a `Duration`) and the
//! fresh costs; the state machine answers which path the route uses.

use std::time::Duration;

/// The switching rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// How much better (as a fraction of the current cost) a path must be, e.g. 0.1.
    pub margin: f64,
    /// How long it must stay that much better.
    pub hold: Duration,
}

/// The path a route uses, and the challenger being timed.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChoice<P> {
    current: Option<P>,
    challenger: Option<(P, Duration)>,
}

impl<P> Default for RouteChoice<P> {
    fn default() -> Self {
        Self { current: None, challenger: None }
    }
}

impl<P: Clone + PartialEq> RouteChoice<P> {
    /// No path chosen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The path in use.
    pub fn current(&self) -> Option<&P> {
        self.current.as_ref()
    }

    /// Feeds the latest computation: `best` with its cost, and the current path's cost
    /// under the same metrics (`None` when the current path no longer exists). Returns
    /// true when the route switched to `best`.
    pub fn update(
        &mut self,
        rule: Hysteresis,
        best: P,
        best_cost: f64,
        current_cost: Option<f64>,
        now: Duration,
    ) -> bool {
        let Some(current) = &self.current else { return self.switch(best) };
        if *current == best {
            self.challenger = None;
            return false;
        }
        let Some(current_cost) = current_cost else { return self.switch(best) };
        if best_cost >= current_cost * (1.0 - rule.margin) {
            // Not better by the margin: whoever was challenging starts over.
            self.challenger = None;
            return false;
        }
        match &self.challenger {
            Some((p, since)) if *p == best => {
                if now.saturating_sub(*since) >= rule.hold {
                    return self.switch(best);
                }
                false
            }
            _ if rule.hold.is_zero() => self.switch(best),
            _ => {
                self.challenger = Some((best, now));
                false
            }
        }
    }

    fn switch(&mut self, best: P) -> bool {
        self.current = Some(best);
        self.challenger = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Hysteresis = Hysteresis { margin: 0.1, hold: Duration::from_secs(10) };

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_first_path_is_taken_at_once() {
        let mut r = RouteChoice::new();
        assert!(r.update(RULE, "direct", 80.0, None, s(0)));
        assert_eq!(r.current(), Some(&"direct"));
    }

    #[test]
    fn near_equal_paths_never_flap() {
        let mut r = RouteChoice::new();
        r.update(RULE, "x", 20.0, None, s(0));
        // y is 5% better, then x is 5% better, over and over for an hour: no switch.
        for t in 1..3600 {
            let (best, cost, cur) = if t % 2 == 0 { ("y", 19.0, 20.0) } else { ("x", 20.0, 20.0) };
            assert!(!r.update(RULE, best, cost, Some(cur), s(t)));
        }
        assert_eq!(r.current(), Some(&"x"));
    }

    #[test]
    fn a_clearly_better_path_wins_after_the_hold_time() {
        let mut r = RouteChoice::new();
        r.update(RULE, "direct", 80.0, None, s(0));
        assert!(!r.update(RULE, "via-b", 20.0, Some(80.0), s(1)));
        assert!(!r.update(RULE, "via-b", 20.0, Some(80.0), s(10)));
        assert!(r.update(RULE, "via-b", 20.0, Some(80.0), s(11)));
        assert_eq!(r.current(), Some(&"via-b"));
    }

    #[test]
    fn a_challenger_that_stops_being_better_starts_over() {
        let mut r = RouteChoice::new();
        r.update(RULE, "a", 50.0, None, s(0));
        assert!(!r.update(RULE, "b", 10.0, Some(50.0), s(1)));
        assert!(!r.update(RULE, "b", 49.0, Some(50.0), s(5)));
        assert!(!r.update(RULE, "b", 10.0, Some(50.0), s(6)));
        assert!(!r.update(RULE, "b", 10.0, Some(50.0), s(15)));
        assert!(r.update(RULE, "b", 10.0, Some(50.0), s(16)));
    }

    #[test]
    fn a_dead_current_path_is_replaced_at_once() {
        let mut r = RouteChoice::new();
        r.update(RULE, "a", 10.0, None, s(0));
        assert!(r.update(RULE, "b", 90.0, None, s(1)));
        assert_eq!(r.current(), Some(&"b"));
    }
}
