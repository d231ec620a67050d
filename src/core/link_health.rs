//! Whether a link is alive, from the datagrams it receives: keepalives keep an idle link
//! receiving, so a count that stops rising for longer than a couple of keepalive
//! intervals means the path went silent, long before QUIC's idle timeout closes the
//! connection. New flows skip such a link at once.
//!
//! Pure: the caller samples the link's received-datagram count and passes the time.

use std::time::{Duration, Instant};

/// A link's last sign of life.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Datagrams received as of the last sample.
    seen: u64,
    /// When the count last rose (or the link came up).
    heard: Instant,
}

impl Liveness {
    /// A link that came up at `now` having received `datagrams`.
    pub fn new(datagrams: u64, now: Instant) -> Self {
        Self { seen: datagrams, heard: now }
    }

    /// Takes a sample: a count above the last one is a sign of life at `now`.
    pub fn sample(&mut self, datagrams: u64, now: Instant) {
        if datagrams != self.seen {
            self.seen = datagrams;
            self.heard = now;
        }
    }

    /// Whether the link was heard from within `quiet` of `now`.
    pub fn is_live(&self, now: Instant, quiet: Duration) -> bool {
        now.saturating_duration_since(self.heard) <= quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_link_is_live_while_datagrams_keep_arriving() {
        let t0 = Instant::now();
        let quiet = 700 * MS;
        let mut l = Liveness::new(10, t0);
        assert!(l.is_live(t0 + 700 * MS, quiet));
        // A keepalive every 300 ms keeps it live indefinitely.
        for i in 1..=20u32 {
            l.sample(10 + u64::from(i), t0 + 300 * MS * i);
            assert!(l.is_live(t0 + 300 * MS * i + 650 * MS, quiet), "sample {i}");
        }
    }

    #[test]
    fn a_count_that_stops_rising_goes_quiet_after_the_limit_not_before() {
        let t0 = Instant::now();
        let quiet = 700 * MS;
        let mut l = Liveness::new(5, t0);
        l.sample(6, t0 + 100 * MS);
        // Samples that see no new datagram are no sign of life.
        for ms in [200, 400, 600, 800] {
            l.sample(6, t0 + ms * MS);
        }
        assert!(l.is_live(t0 + 800 * MS, quiet), "exactly at the limit it is still live");
        assert!(!l.is_live(t0 + 801 * MS, quiet), "past it, the link is quiet");
        // One datagram brings it back.
        l.sample(7, t0 + 2000 * MS);
        assert!(l.is_live(t0 + 2000 * MS, quiet));
    }
}
