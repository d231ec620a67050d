//! Receive credit: how many unread bytes a link may hand this node, and the node-wide
//! budget all buffered flow data comes out of.
//!
//! quinn bounds what a peer may send us twice: per stream (`mesh.stream_window`, fixed for
//! a connection's life) and per connection (adjustable at any time). A flow whose reader
//! stops (a target that never reads, a client that went away without closing) keeps its
//! stream's unread bytes in quinn, and those count against the connection's window too:
//! with a fixed connection window, four stalled 4 MiB flows used to take a 16 MiB link
//! window whole, and no other flow on the link could even send its header.
//!
//! So the connection window is not fixed:
//! - a link's *base*, the window for the flows that read, starts at [`start_window`] (one
//!   stream window, at least [`START_WINDOW`], at most `mesh.connection_window`) and
//!   follows the path: at least twice
//!   what the link delivered in its last round trip, up to `mesh.connection_window`, and
//!   back to the start after `IDLE_RESET` (30 s) of needing no more. A long fat link gets the
//!   room it needs, and an idle one reserves little of the budget;
//! - a flow whose writer towards its reader has been blocked for [`STALL_AFTER`] is
//!   *stalled*: the link's window grows by one stream window for as long as it stays so,
//!   which is at most what the flow can hold, so the stalled flow never takes the others'
//!   credit, however many there are;
//! - the flow stops counting as stalled once it has read all quinn held for it (a read that
//!   had to wait), and the window shrinks back;
//! - every base and every stalled flow's window is reserved from [`BufferBudget`]
//!   (`limits.max_buffered_bytes`), as are multipath reorder buffers. A stalled flow that
//!   the budget cannot cover is reset (and counted): one stuck consumer must not cost the
//!   node its memory, nor the link its other flows. One link's window may take at most
//!   three quarters of the budget, so one peer cannot pin all of it.
//!
//! The worst case a node buffers for its peers is therefore the budget, plus at most one
//! stream window per link whose base the budget could not cover (a link always gets room
//! for one stream).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::VarInt;
use tokio::time::Instant;

/// How long a write towards a flow's reader may block before the flow counts as stalled.
/// Long enough that a reader which is merely slower than the link for a moment (a kernel
/// socket buffer filling) is not counted, short against any timeout.
pub(crate) const STALL_AFTER: Duration = Duration::from_millis(200);

/// The least base window a link starts with (when `mesh.connection_window` allows):
/// enough for a single flow at 1 Gbit/s up to a round trip of about 60 ms, so short links
/// never wait for it to grow.
pub(crate) const START_WINDOW: u64 = 8 * 1024 * 1024;

/// How long a link must need no more than its start window before it goes back to it.
const IDLE_RESET: Duration = Duration::from_secs(30);

/// How often [`follow_path`] measures what a link delivers.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);

/// A link's window may grow to at most three quarters of the node's budget: a peer whose
/// flows nobody reads cannot take the room other links' stalled flows need, while one
/// busy link still has room for 64 stalled flows at the default windows (64 x 16 MiB plus
/// its base, out of 2 GiB).
fn link_limit(budget: &BufferBudget) -> u64 {
    budget.limit / 4 * 3
}

/// Least time between two announcements of read credit forced on a link with stalled flows.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(2);

/// The node's budget for buffered flow data: link receive windows and multipath reorder
/// buffers.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    limit: u64,
    used: AtomicU64,
    /// Reservations refused since start.
    refusals: AtomicU64,
    /// Flows counted as stalled now, across all links.
    stalled: AtomicU64,
}

impl BufferBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        })
    }

    /// The limit, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reservations refused since start (each one a flow reset or refused).
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Flows counted as stalled now.
    pub(crate) fn stalled_flows(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they fit.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut r = Reservation { budget: self.clone(), bytes: 0 };
        r.resize(bytes).then_some(r)
    }

    /// A reservation of nothing, to grow later.
    pub(crate) fn empty(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }

    /// Reserves `bytes`, over the limit if need be (a link's floor of one stream window).
    fn reserve_anyway(self: &Arc<Self>, bytes: u64) -> Reservation {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Reservation { budget: self.clone(), bytes }
    }

    fn grow(&self, bytes: u64) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if !fits {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }
}

/// Bytes held out of the budget until dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds `bytes` instead; returns false (and keeps what it held) when growing would
    /// pass the limit.
    pub(crate) fn resize(&mut self, bytes: u64) -> bool {
        if bytes > self.bytes {
            if !self.budget.grow(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.used.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a connection's receive window can be set to.
trait Window: Send + Sync {
    fn set(&self, bytes: u64);

    /// Announces the credit freed by reads now (a MAX_DATA frame).
    fn announce(&self, bytes: u64);
}

impl Window for quinn::Connection {
    fn set(&self, bytes: u64) {
        self.set_receive_window(VarInt::from_u64(bytes).unwrap_or(VarInt::MAX));
    }

    fn announce(&self, bytes: u64) {
        // quinn announces read credit only once it reaches an eighth of the window. With
        // most of the window held by stalled flows, the flows that read could free less
        // than that and wait forever for credit. Widening the window by one byte makes
        // quinn send MAX_DATA at once (with all credit freed so far); narrowing it again
        // takes that byte back out of the next read.
        self.set(bytes + 1);
        self.set(bytes);
    }
}

/// One link's receive credit.
pub(crate) struct LinkCredit {
    window: Box<dyn Window>,
    stream_window: u64,
    /// The base a link starts with and falls back to.
    start_base: u64,
    /// The most the base grows to (`mesh.connection_window`).
    max_base: u64,
    budget: Arc<BufferBudget>,
    state: Mutex<CreditState>,
}

struct CreditState {
    base: Reservation,
    stalled: u64,
    /// When read credit was last announced by hand (see [`Window::announce`]).
    announced: Option<Instant>,
    /// A read since then freed credit that is not announced yet.
    owed: bool,
    /// A deferred announcement is scheduled for the owed credit.
    deferred: bool,
}

impl std::fmt::Debug for LinkCredit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCredit").field("stream_window", &self.stream_window).finish_non_exhaustive()
    }
}

/// The budget had no room for a stalled flow's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node's buffer budget (limits.max_buffered_bytes, at most three quarters of it per link) has no room for another stalled flow"
)]
pub(crate) struct OverBudget;

impl LinkCredit {
    /// Credit for `conn`: a base of [`start_window`] from `budget` (at least one stream
    /// window or that start, even past the budget, so a link can always carry a flow),
    /// which may grow to `connection_window`.
    pub(crate) fn new(
        conn: quinn::Connection,
        budget: Arc<BufferBudget>,
        connection_window: u64,
        stream_window: u64,
    ) -> Self {
        Self::with_window(Box::new(conn), budget, connection_window, stream_window)
    }

    fn with_window(
        window: Box<dyn Window>,
        budget: Arc<BufferBudget>,
        max_base: u64,
        stream_window: u64,
    ) -> Self {
        let start_base = start_window(max_base, stream_window);
        let base = budget
            .reserve(start_base)
            .unwrap_or_else(|| budget.reserve_anyway(stream_window.min(start_base)));
        window.set(base.bytes());
        Self {
            window,
            stream_window,
            start_base,
            max_base,
            budget,
            state: Mutex::new(CreditState {
                base,
                stalled: 0,
                announced: None,
                owed: false,
                deferred: false,
            }),
        }
    }

    /// Flows counted as stalled on this link now.
    #[cfg(test)]
    pub(crate) fn stalled(&self) -> u64 {
        self.lock().stalled
    }

    /// The connection window in force.
    #[cfg(test)]
    pub(crate) fn window(&self) -> u64 {
        self.window_of(&self.lock())
    }

    /// The connection window `st` makes: the base plus one stream window per stalled flow.
    fn window_of(&self, st: &CreditState) -> u64 {
        st.base.bytes() + st.stalled * self.stream_window
    }

    /// How much more this link's window may take before it passes [`link_limit`].
    fn share_left(&self, st: &CreditState) -> u64 {
        link_limit(&self.budget).saturating_sub(self.window_of(st))
    }

    /// Follows the path: the base becomes at least twice what the link delivered in its
    /// last round trip (room for the sender to grow into), up to `mesh.connection_window`,
    /// as far as the budget allows. Never shrinks it: see [`Self::rest`].
    pub(crate) fn follow(&self, delivered_per_rtt: u64) {
        let wanted = delivered_per_rtt.saturating_mul(2).clamp(self.start_base, self.max_base);
        let mut st = self.lock();
        let wanted = wanted.min(st.base.bytes() + self.share_left(&st));
        if wanted > st.base.bytes() && st.base.resize(wanted) {
            self.apply(&st);
        }
    }

    /// The link has needed no more than its start for a while: back to it, giving the
    /// rest to the budget.
    pub(crate) fn rest(&self) {
        let mut st = self.lock();
        if st.base.bytes() > self.start_base {
            st.base.resize(self.start_base);
            self.apply(&st);
        }
    }

    /// The base window a link starts with.
    pub(crate) fn start_base(&self) -> u64 {
        self.start_base
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, st: &CreditState) {
        self.window.set(self.window_of(st));
    }

    /// A flow read from the link: while stalled flows hold most of the window, announce
    /// the freed credit at once, at most every [`ANNOUNCE_EVERY`]. A read that falls inside
    /// that interval is announced when it ends: if it were left to quinn, whose threshold
    /// is an eighth of a window mostly held by stalled flows, the sender could be waiting
    /// for that very credit while no further read comes to announce it, and the link's
    /// reading flows would stop for good.
    fn after_read(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.stalled == 0 && !st.owed {
            return;
        }
        let now = Instant::now();
        match st.announced {
            Some(last) if now.duration_since(last) < ANNOUNCE_EVERY => {
                st.owed = true;
                if !std::mem::replace(&mut st.deferred, true) {
                    let link = Arc::downgrade(self);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(last + ANNOUNCE_EVERY).await;
                        if let Some(link) = link.upgrade() {
                            link.announce_owed();
                        }
                    });
                }
            }
            _ => self.announce(&mut st, now),
        }
    }

    /// The deferred announcement of [`Self::after_read`].
    fn announce_owed(&self) {
        let mut st = self.lock();
        st.deferred = false;
        if st.owed {
            self.announce(&mut st, Instant::now());
        }
    }

    fn announce(&self, st: &mut CreditState, now: Instant) {
        st.announced = Some(now);
        st.owed = false;
        self.window.announce(self.window_of(st));
    }

    /// Counts one more stalled flow; its stream window comes out of the budget. One link
    /// may hold at most three quarters of the budget ([`link_limit`]), so a peer that feeds flows
    /// nobody reads cannot take the room other links' stalled flows need.
    fn stall(self: &Arc<Self>) -> Result<StallGuard, OverBudget> {
        let mut st = self.lock();
        if self.share_left(&st) < self.stream_window {
            self.budget.refusals.fetch_add(1, Ordering::Relaxed);
            return Err(OverBudget);
        }
        let reservation = self.budget.reserve(self.stream_window).ok_or(OverBudget)?;
        st.stalled += 1;
        self.apply(&st);
        self.budget.stalled.fetch_add(1, Ordering::Relaxed);
        Ok(StallGuard { link: self.clone(), _reservation: reservation })
    }
}

/// The base window a link starts with, given `mesh.connection_window` (`max_base`) and
/// `mesh.stream_window`; also the window quinn announces in the handshake. At least one
/// stream window: below it, a single flow was limited by its link before its own window
/// (through a relay on loopback, 8 MiB against 16 MiB streams carried a third of the
/// bulk rate of 16 MiB).
pub(crate) fn start_window(max_base: u64, stream_window: u64) -> u64 {
    max_base.min(START_WINDOW.max(stream_window))
}

/// Keeps `credit` following what `conn` delivers (see [`LinkCredit::follow`]) until the
/// connection closes.
pub(crate) async fn follow_path(conn: quinn::Connection, credit: Arc<LinkCredit>) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_bytes, mut last_at, mut needed_at) =
        (conn.stats().udp_rx.bytes, Instant::now(), Instant::now());
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tick.tick() => {}
        }
        let (bytes, now) = (conn.stats().udp_rx.bytes, Instant::now());
        let per_rtt = delivered_per_rtt(bytes.saturating_sub(last_bytes), now - last_at, conn.rtt());
        (last_bytes, last_at) = (bytes, now);
        credit.follow(per_rtt);
        if per_rtt.saturating_mul(2) > credit.start_base() {
            needed_at = now;
        } else if now - needed_at >= IDLE_RESET {
            credit.rest();
        }
    }
}

/// Bytes delivered per round trip at the rate of `bytes` in `over`.
fn delivered_per_rtt(bytes: u64, over: Duration, rtt: Duration) -> u64 {
    if over.is_zero() {
        return 0;
    }
    (bytes as f64 * rtt.as_secs_f64() / over.as_secs_f64()) as u64
}

/// One stalled flow's share of its link's window; dropping it shrinks the window back.
#[derive(Debug)]
pub(crate) struct StallGuard {
    link: Arc<LinkCredit>,
    _reservation: Reservation,
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        let mut st = self.link.lock();
        st.stalled = st.stalled.saturating_sub(1);
        self.link.apply(&st);
        self.link.budget.stalled.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Watches one flow direction that reads from a link and writes towards a reader, and
/// counts it as stalled on that link while its reader holds it up.
#[derive(Debug)]
pub(crate) struct StallWatch {
    link: Arc<LinkCredit>,
    guard: Option<StallGuard>,
}

impl StallWatch {
    /// A watch over a direction that reads from `link`.
    pub(crate) fn new(link: Arc<LinkCredit>) -> Self {
        Self { link, guard: None }
    }

    /// Whether the flow counts as stalled now.
    #[cfg(test)]
    pub(crate) fn is_stalled(&self) -> bool {
        self.guard.is_some()
    }

    /// Runs a read from the link; one that had to wait means quinn holds nothing more for
    /// this flow, so it no longer counts as stalled.
    pub(crate) async fn read<T>(&mut self, read: impl Future<Output = T>) -> T {
        let mut read = pin!(read);
        let mut first = true;
        let guard = &mut self.guard;
        let out = poll_fn(|cx| {
            let polled = read.as_mut().poll(cx);
            if std::mem::take(&mut first) && polled.is_pending() {
                *guard = None;
            }
            polled
        })
        .await;
        self.link.after_read();
        out
    }

    /// Runs a write towards the reader; if it is still blocked after [`STALL_AFTER`], the
    /// flow counts as stalled (its link's window grows by a stream window) until a later
    /// read finds nothing waiting. Fails when the budget has no room for that.
    pub(crate) async fn write<T>(&mut self, write: impl Future<Output = T>) -> Result<T, OverBudget> {
        let mut write = pin!(write);
        if self.guard.is_none() {
            match tokio::time::timeout(STALL_AFTER, write.as_mut()).await {
                Ok(done) => return Ok(done),
                Err(_) => self.guard = Some(self.link.stall()?),
            }
        }
        Ok(write.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<u64>>, AtomicU64);

    impl Window for Arc<Recorded> {
        fn set(&self, bytes: u64) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(bytes);
        }

        fn announce(&self, bytes: u64) {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.set(bytes);
        }
    }

    fn announced(r: &Arc<Recorded>) -> u64 {
        r.1.load(Ordering::Relaxed)
    }

    fn last(r: &Arc<Recorded>) -> u64 {
        *r.0.lock().unwrap_or_else(|p| p.into_inner()).last().unwrap_or(&0)
    }

    #[test]
    fn each_stalled_flow_widens_its_link_by_a_stream_window_within_the_budget() {
        let budget = BufferBudget::new(200);
        let rec = Arc::new(Recorded::default());
        let link = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 40, 20));
        let other = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 60, 20));
        let multipath = budget.reserve(40).expect("a reorder buffer");
        assert_eq!(budget.used(), 140);
        let a = link.stall().expect("room for one");
        let b = link.stall().expect("room for two");
        assert_eq!((link.window(), budget.used(), budget.stalled_flows()), (80, 180, 2));
        let c = other.stall().expect("room for a third");
        assert_eq!(link.stall().err(), Some(OverBudget), "the budget is full");
        assert_eq!(budget.refusals(), 1);
        drop(a);
        assert_eq!((link.window(), budget.used(), link.stalled()), (60, 180, 1));
        drop((b, c, other, multipath));
        drop(link);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn one_link_may_widen_to_three_quarters_of_the_budget_at_most() {
        let budget = BufferBudget::new(1000);
        let rec = Arc::new(Recorded::default());
        let link = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 100, 100));
        let held: Vec<_> = (0..6).map(|_| link.stall().expect("within three quarters")).collect();
        assert_eq!(link.window(), 700);
        assert_eq!(link.stall().err(), Some(OverBudget), "a seventh would pass three quarters");
        assert_eq!((budget.used(), budget.refusals()), (700, 1));
        drop(held);
        assert_eq!(link.window(), 100);
    }

    #[test]
    fn a_link_the_budget_cannot_cover_still_gets_one_stream_window() {
        let budget = BufferBudget::new(10);
        let rec = Arc::new(Recorded::default());
        let _link = LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 40, 20);
        assert_eq!((last(&rec), budget.used()), (20, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_stalls_the_flow_until_a_read_finds_nothing_waiting() {
        let budget = BufferBudget::new(1000);
        let rec = Arc::new(Recorded::default());
        let link = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 100, 50));
        let mut watch = StallWatch::new(link.clone());
        // A quick write does not count.
        watch.write(tokio::time::sleep(STALL_AFTER / 2)).await.expect("budget");
        assert!(!watch.is_stalled());
        watch.write(tokio::time::sleep(STALL_AFTER * 3)).await.expect("budget");
        assert!(watch.is_stalled());
        assert_eq!(last(&rec), 150);
        // A read with bytes waiting keeps the stall; one that waits ends it.
        watch.read(std::future::ready(())).await;
        assert!(watch.is_stalled());
        watch.read(tokio::time::sleep(Duration::from_millis(1))).await;
        assert!(!watch.is_stalled());
        assert_eq!((last(&rec), budget.used()), (100, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn credit_freed_inside_the_announce_interval_is_announced_when_it_ends() {
        let budget = BufferBudget::new(1000);
        let rec = Arc::new(Recorded::default());
        let link = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), budget, 100, 50));
        let mut stalled = StallWatch::new(link.clone());
        stalled.write(tokio::time::sleep(STALL_AFTER * 2)).await.expect("budget");
        let mut reading = StallWatch::new(link.clone());
        // The first read is announced at once; the next, right after, is held back...
        reading.read(std::future::ready(())).await;
        reading.read(std::future::ready(())).await;
        assert_eq!(announced(&rec), 1);
        // ...and announced when the interval ends, with no further read to trigger it
        // (the sender may be waiting for exactly that credit).
        tokio::time::sleep(ANNOUNCE_EVERY * 2).await;
        assert_eq!(announced(&rec), 2);
        tokio::time::sleep(ANNOUNCE_EVERY * 2).await;
        assert_eq!(announced(&rec), 2, "nothing more was owed");
    }

    #[test]
    fn a_link_window_follows_what_the_link_delivers_within_its_maximum_and_the_budget() {
        let budget = BufferBudget::new(64 * MIB);
        let rec = Arc::new(Recorded::default());
        let link = LinkCredit::with_window(Box::new(rec.clone()), budget.clone(), 20 * MIB, MIB);
        assert_eq!(
            (link.window(), budget.used()),
            (START_WINDOW, START_WINDOW),
            "an idle link reserves its start"
        );
        link.follow(MIB);
        assert_eq!(link.window(), START_WINDOW, "a light load needs no more");
        link.follow(6 * MIB);
        assert_eq!((link.window(), budget.used()), (12 * MIB, 12 * MIB), "twice a round trip's delivery");
        link.follow(100 * MIB);
        assert_eq!(link.window(), 20 * MIB, "up to mesh.connection_window");
        link.follow(MIB);
        assert_eq!(link.window(), 20 * MIB, "a quiet moment keeps the room");
        link.rest();
        assert_eq!((link.window(), budget.used()), (START_WINDOW, START_WINDOW));

        // Never past three quarters of the budget, stalled flows included.
        let small = BufferBudget::new(32 * MIB);
        let link = Arc::new(LinkCredit::with_window(Box::new(rec.clone()), small.clone(), 64 * MIB, MIB));
        let _stalled = link.stall().expect("room");
        link.follow(64 * MIB);
        assert_eq!(link.window(), 24 * MIB);
    }

    #[test]
    fn delivery_per_round_trip_scales_the_measured_rate_by_the_round_trip() {
        let per_rtt = delivered_per_rtt(10 * MIB, Duration::from_millis(50), Duration::from_millis(200));
        assert_eq!(per_rtt, 40 * MIB);
        assert_eq!(delivered_per_rtt(MIB, Duration::ZERO, Duration::from_millis(1)), 0);
    }
}
