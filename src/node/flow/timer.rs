//! When a flow last made progress, and the watchdog that resets it when it makes none.
//!
//! Two limits: `idle` (no progress either way) and `half_closed` (after one direction
//! finished, no progress for this long). Progress is any byte of the flow moving anywhere
//! on its path that this node can see:
//! - read from or written to a socket or stream here;
//! - taken into a stream's QUIC send buffer (quinn takes bytes only when the far end has
//!   granted credit or the link has acknowledged earlier bytes: both are delivery);
//! - still queued in the send buffer of a *finished* stream while that stream's link
//!   keeps acknowledging packets (see [`crate::node::link::delivery`] for why the link's
//!   acknowledgements stand for this stream's bytes), and the moment all of it is
//!   acknowledged;
//! - acknowledged by the far end of a multipath flow (its own `Ack` frames).
//!
//! So a slow transfer is not cut while its bytes are being delivered, and a flow whose
//! bytes stand still everywhere (nothing read, written or acknowledged) is cut at its
//! limit. Limit: bytes an *open* stream handed to QUIC are invisible once its writer goes
//! quiet, because quinn reports acknowledgement per stream only for finished streams; they
//! are at most one stream window, and the writes that queued them counted as progress.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::node::link::delivery::LinkDelivery;

/// Timeouts that apply to a spliced flow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowTimeouts {
    /// No progress either way for this long resets the flow.
    pub idle: Duration,
    /// Once one direction finished, no progress for this long resets the flow.
    pub half_closed: Duration,
    /// The opener waits this long for the reply.
    pub reply: Duration,
}

/// While bytes are in delivery, the watchdog asks the link this many times per limit, so
/// an acknowledgement is dated at most this fraction of the limit late.
const SAMPLES_PER_LIMIT: u32 = 8;
/// The closest samples of a link get, however short the limit.
const MIN_SAMPLE_GAP: Duration = Duration::from_millis(20);

/// A finished stream whose bytes are not all acknowledged yet.
struct InDelivery {
    /// Completes when the far end acknowledged everything (or stopped the stream, or the
    /// link closed): either way nothing more of it will move.
    settled: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The link it travels on.
    link: Arc<LinkDelivery>,
}

/// Activity of one flow, shared by its two copy directions and its watchdog.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    half_closed: AtomicU64,
    /// Bytes moved, both directions (for per-route statistics).
    bytes: Arc<AtomicU64>,
    /// Wakes the watchdog when a half-close brings its deadline forward, or a stream in
    /// delivery is added (it then samples its link more often).
    changed: Notify,
    /// Finished streams with bytes still queued or unacknowledged.
    in_delivery: Mutex<Vec<InDelivery>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A flow that starts now.
    pub(crate) fn new() -> Self {
        Self::counting(Arc::new(AtomicU64::new(0)))
    }

    /// A flow that starts now and adds the bytes it moves to `bytes` (the flow's record).
    pub(crate) fn counting(bytes: Arc<AtomicU64>) -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            half_closed: AtomicU64::new(0),
            bytes,
            changed: Notify::new(),
            in_delivery: Mutex::new(Vec::new()),
        }
    }

    fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn deliveries(&self) -> MutexGuard<'_, Vec<InDelivery>> {
        self.in_delivery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that bytes moved.
    pub(crate) fn touch(&self) {
        self.last_ms.fetch_max(self.ms_at(Instant::now()), Ordering::Relaxed);
    }

    /// Records that `n` bytes moved.
    pub(crate) fn moved(&self, n: u64) {
        self.touch();
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved so far, both directions.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records that one direction finished.
    pub(crate) fn half_close(&self) {
        self.touch();
        if self.half_closed.swap(1, Ordering::Relaxed) == 0 {
            self.changed.notify_one();
        }
    }

    /// Records a finished stream whose bytes may still be on their way over `link`:
    /// `settled` completes once the far end acknowledged all of them (or nothing more can
    /// move). Until then the link's acknowledgements count as this flow's progress.
    pub(crate) fn delivering(
        &self,
        settled: impl Future<Output = ()> + Send + 'static,
        link: Arc<LinkDelivery>,
    ) {
        self.touch();
        self.deliveries().push(InDelivery { settled: Box::pin(settled), link });
        self.changed.notify_one();
    }

    /// Drops streams whose bytes all arrived (that is progress too); ready when one did.
    fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut list = self.deliveries();
        let before = list.len();
        list.retain_mut(|d| d.settled.as_mut().poll(cx).is_pending());
        if list.len() == before {
            return Poll::Pending;
        }
        drop(list);
        self.touch();
        Poll::Ready(())
    }

    /// Counts acknowledgements on the links of streams in delivery as progress; returns
    /// whether any stream is in delivery.
    fn credit_deliveries(&self) -> bool {
        let list = self.deliveries();
        for d in list.iter() {
            self.last_ms.fetch_max(self.ms_at(d.link.last_ack()), Ordering::Relaxed);
        }
        !list.is_empty()
    }

    /// The next deadline, what it is for, and its limit.
    fn deadline(&self, t: &FlowTimeouts) -> (Instant, &'static str, Duration) {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let (limit, reason) = if self.half_closed.load(Ordering::Relaxed) == 1 && t.half_closed < t.idle {
            (t.half_closed, "half-closed")
        } else {
            (t.idle, "idle")
        };
        // Validation caps timeouts far below this; saturate rather than panic regardless.
        let far = last + Duration::from_secs(86_400 * 365);
        (last.checked_add(limit).unwrap_or(far), reason, limit)
    }

    /// Completes when the flow has made no progress past its limit; returns which limit.
    pub(crate) async fn watchdog(&self, t: &FlowTimeouts) -> &'static str {
        loop {
            let delivering = self.credit_deliveries();
            let (deadline, reason, limit) = self.deadline(t);
            let now = Instant::now();
            if deadline <= now {
                return reason;
            }
            // With bytes in delivery the link is asked often, so its acknowledgements are
            // dated closely; otherwise nothing can move the deadline but this flow's own
            // bytes, and sleeping until it is enough.
            let wake = if delivering {
                deadline.min(now + (limit / SAMPLES_PER_LIMIT).max(MIN_SAMPLE_GAP))
            } else {
                deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.changed.notified() => {}
                _ = std::future::poll_fn(|cx| self.poll_settled(cx)) => {}
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

    fn link(acks: &Arc<AtomicU64>) -> Arc<LinkDelivery> {
        let acks = acks.clone();
        Arc::new(LinkDelivery::counting(Box::new(move || acks.load(Ordering::SeqCst))))
    }

    /// The far end acknowledges once a second, `n` times.
    async fn acknowledge(acks: &AtomicU64, n: usize) {
        for _ in 0..n {
            tokio::time::sleep(Duration::from_secs(1)).await;
            acks.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_stream_in_delivery_keeps_the_flow_while_its_link_acknowledges() {
        let a = Activity::new();
        let acks = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        a.half_close();
        a.delivering(std::future::pending(), link(&acks));
        let (reason, ()) = tokio::join!(a.watchdog(&T), acknowledge(&acks, 10));
        assert_eq!(reason, "half-closed");
        // Acknowledged for 10 s (five limits), then silent: cut one limit after the last
        // acknowledgement, dated at most an eighth of the limit late.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(12) && elapsed <= Duration::from_millis(12_250),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_in_delivery_on_a_silent_link_is_cut_at_the_limit() {
        let a = Activity::new();
        let acks = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        a.half_close();
        a.delivering(std::future::pending(), link(&acks));
        assert_eq!(a.watchdog(&T).await, "half-closed");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn once_all_its_bytes_are_acknowledged_the_links_acknowledgements_no_longer_count() {
        let a = Activity::new();
        let acks = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        a.half_close();
        let (all_acked, settled) = tokio::sync::oneshot::channel::<()>();
        a.delivering(
            async move {
                let _ = settled.await;
            },
            link(&acks),
        );
        let driver = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = all_acked.send(());
            // Other flows keep the link busy.
            acknowledge(&acks, 10).await;
        };
        let watch = async { (a.watchdog(&T).await, started.elapsed()) };
        let (cut, ()) = tokio::join!(watch, driver);
        // The last byte acknowledged at 1 s was progress; the link's later ones are not.
        assert_eq!(cut, ("half-closed", Duration::from_secs(3)));
    }
}
