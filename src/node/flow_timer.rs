//! When a flow last moved bytes, and the watchdog that resets it when it stays silent.
//!
//! Two limits: `idle` (no byte either way) and `half_closed` (after one direction finished,
//! no byte for this long). Both count from the last byte moved, so a half-closed flow that
//! keeps downloading is never cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Timeouts that apply to a spliced flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowTimeouts {
    /// No bytes either way for this long resets the flow.
    pub idle: Duration,
    /// Once one direction finished, no bytes for this long resets the flow.
    pub half_closed: Duration,
    /// The opener waits this long for the reply.
    pub reply: Duration,
}

/// Activity of one flow, shared by its two copy directions and its watchdog.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    half_closed: AtomicU64,
    /// Bytes moved, both directions (for per-route statistics).
    bytes: Arc<AtomicU64>,
    /// Wakes the watchdog when a half-close brings its deadline forward.
    became_half_closed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A flow that starts now.
    pub fn new() -> Self {
        Self::counting(Arc::new(AtomicU64::new(0)))
    }

    /// A flow that starts now and adds the bytes it moves to `bytes` (the flow's record).
    pub fn counting(bytes: Arc<AtomicU64>) -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            half_closed: AtomicU64::new(0),
            bytes,
            became_half_closed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that bytes moved.
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Records that `n` bytes moved.
    pub fn moved(&self, n: u64) {
        self.touch();
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records that one direction finished.
    pub fn half_close(&self) {
        self.touch();
        if self.half_closed.swap(1, Ordering::Relaxed) == 0 {
            self.became_half_closed.notify_one();
        }
    }

    /// The next deadline and what it is for.
    fn deadline(&self, t: &FlowTimeouts) -> (Instant, &'static str) {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let (limit, reason) = if self.half_closed.load(Ordering::Relaxed) == 1 && t.half_closed < t.idle {
            (t.half_closed, "half-closed")
        } else {
            (t.idle, "idle")
        };
        // Validation caps timeouts far below this; saturate rather than panic regardless.
        let far = last + Duration::from_secs(86_400 * 365);
        (last.checked_add(limit).unwrap_or(far), reason)
    }

    /// Completes when the flow has been silent past its limit; returns which limit.
    pub async fn watchdog(&self, t: &FlowTimeouts) -> &'static str {
        loop {
            let (deadline, reason) = self.deadline(t);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.became_half_closed.notified() => continue,
            }
            if self.deadline(t).0 <= Instant::now() {
                return reason;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: FlowTimeouts = FlowTimeouts {
        idle: Duration::from_secs(10),
        half_closed: Duration::from_secs(2),
        reply: Duration::ZERO,
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_flow_times_out_after_the_idle_limit() {
        let a = Activity::new();
        let started = Instant::now();
        assert_eq!(a.watchdog(&T).await, "idle");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn half_closed_limit_counts_from_the_last_byte() {
        let a = Activity::new();
        let started = Instant::now();
        let driver = async {
            a.half_close();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                a.touch();
            }
        };
        let (reason, ()) = tokio::join!(a.watchdog(&T), driver);
        assert_eq!(reason, "half-closed");
        // Bytes moved every second for 5 s, then 2 s of silence.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_close_wakes_a_watchdog_sleeping_on_the_idle_limit() {
        let a = Activity::new();
        let started = Instant::now();
        let driver = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.half_close();
        };
        let (reason, ()) = tokio::join!(a.watchdog(&T), driver);
        assert_eq!((reason, started.elapsed()), ("half-closed", Duration::from_secs(3)));
    }
}
