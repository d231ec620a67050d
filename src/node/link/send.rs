//! A flow stream's sending half, and its fair turn at its link's send buffer.
//!
//! quinn admits bytes to a connection's send buffer in no set order: when room frees up,
//! every writer blocked on the connection is woken, and whichever task runs first takes all
//! of it. Under load the same writers win every round: in the soak, flows on a busy link sat
//! at zero bytes for over a minute, and a new flow's header (a few hundred bytes) waited
//! past its deadline, so the flow was refused. So writers on one link take turns:
//! - only the writer at the head of the link's queue writes to quinn, for one attempt;
//! - the queue is ordered by bytes served (start-time fair queueing): a writer's tag grows
//!   by what it wrote, and a writer that comes (back) starts at the link's current virtual
//!   time, so no one banks credit while idle;
//! - a stream's first bytes (header, reply, subflow preamble) are an *opening* with tag 0:
//!   they go before any flow data, and are sent ahead of data already buffered;
//! - a writer quinn reports blocked leaves the queue until quinn wakes it. The wake marks it
//!   ready at once, inside quinn's wake-up pass, so every writer woken by the same room is
//!   queued before any of them writes: the order is the tags', not the task scheduler's.
//!
//! No one holds a turn across an await, so a stream blocked by its own flow control (a slow
//! reader) never holds up the others.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use quinn::{SendStream, WriteError, Written};

use crate::node::flow::timer::Activity;
use crate::node::link::credit::{LinkCredit, StallWatch};
use crate::node::link::delivery::LinkDelivery;

/// Largest slice of flow data in one write to quinn.
const SLICE: usize = 64 * 1024;
/// Send priority of an opening (flow data runs at 0).
const OPENING_PRIORITY: i32 = 1;
/// The tag of an opening: ahead of all flow data.
const OPENING_TAG: u64 = 0;

/// One link's (one QUIC connection's) queue of writers, and its delivery clock.
#[derive(Debug)]
pub(crate) struct LinkTurns {
    state: Mutex<Turns>,
    /// When the link last acknowledged packets: the progress of bytes already queued.
    delivery: Arc<LinkDelivery>,
    credit: Arc<LinkCredit>,
}

impl LinkTurns {
    /// The queue of the link `conn`.
    pub(crate) fn new(conn: &quinn::Connection, credit: Arc<LinkCredit>) -> Self {
        Self::with_delivery(Arc::new(LinkDelivery::of_connection(conn.clone())), credit)
    }

    /// A queue whose link delivers as `delivery` says.
    pub(crate) fn with_delivery(delivery: Arc<LinkDelivery>, credit: Arc<LinkCredit>) -> Self {
        Self { state: Mutex::new(Turns::default()), delivery, credit }
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flow streams with a send side on this link now (each flow on a link has one).
    pub(crate) fn streams_open(&self) -> usize {
        self.lock().writers.len()
    }
}

/// The queue: pure bookkeeping, no I/O (so it is tested on its own).
#[derive(Debug)]
struct Turns {
    writers: HashMap<u64, Writer>,
    /// Writers that may write, by (tag, id): the first is the head.
    ready: BTreeSet<(u64, u64)>,
    /// The start tag of the last write served: where a (re)arriving writer starts.
    clock: u64,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Writer {
    tag: u64,
    /// The tag it holds in `ready`, if queued.
    queued: Option<u64>,
    /// Whether its current write is an opening.
    opening: bool,
    /// Whether quinn reported it blocked and holds its waker: only then may that waker
    /// queue it (a stale waker from an earlier write must not).
    blocked: bool,
    /// Whether it is the head polling quinn right now, and whether quinn woke it meanwhile
    /// (then a blocked attempt is retried at once instead of waiting for a wake that came).
    attempting: bool,
    woken: bool,
    /// Its task, woken when it becomes the head.
    task: Option<Waker>,
}

impl Default for Turns {
    fn default() -> Self {
        Self { writers: HashMap::new(), ready: BTreeSet::new(), clock: OPENING_TAG + 1, next_id: 0 }
    }
}

impl Turns {
    fn register(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.writers.insert(id, Writer::default());
        id
    }

    fn head(&self) -> Option<u64> {
        self.ready.first().map(|&(_, id)| id)
    }

    /// Queues `id` (no-op if queued); returns the task to wake if the head changed.
    fn enqueue(&mut self, id: u64) -> Option<Waker> {
        let before = self.head();
        let clock = self.clock;
        let w = self.writers.get_mut(&id)?;
        if w.queued.is_some() {
            return None;
        }
        let tag = if w.opening { OPENING_TAG } else { w.tag.max(clock) };
        w.queued = Some(tag);
        self.ready.insert((tag, id));
        self.woken_head(before)
    }

    /// Takes `id` out of the queue; returns the task to wake if the head changed.
    fn dequeue(&mut self, id: u64) -> Option<Waker> {
        let before = self.head();
        if let Some(tag) = self.writers.get_mut(&id).and_then(|w| w.queued.take()) {
            self.ready.remove(&(tag, id));
        }
        self.woken_head(before)
    }

    /// Records that `id`, the head, wrote `bytes`, and takes it out of the queue.
    fn served(&mut self, id: u64, bytes: usize) -> Option<Waker> {
        if let Some(w) = self.writers.get_mut(&id) {
            (w.attempting, w.woken, w.task) = (false, false, None);
            if let Some(start) = w.queued
                && !w.opening
            {
                w.tag = start + bytes as u64;
                self.clock = self.clock.max(start);
            }
        }
        self.dequeue(id)
    }

    /// `id`, the head, is about to poll quinn.
    fn attempt(&mut self, id: u64) {
        if let Some(w) = self.writers.get_mut(&id) {
            (w.attempting, w.woken) = (true, false);
        }
    }

    /// quinn reported `id` blocked: out of the queue until quinn wakes it, unless it
    /// already did during the attempt (then it stays queued and tries again).
    fn blocked(&mut self, id: u64) -> Option<Waker> {
        let w = self.writers.get_mut(&id)?;
        w.attempting = false;
        if std::mem::take(&mut w.woken) {
            return None;
        }
        w.blocked = true;
        self.dequeue(id)
    }

    /// quinn woke `id`: queued again if it was blocked.
    fn unblocked(&mut self, id: u64) -> Option<Waker> {
        match self.writers.get_mut(&id) {
            Some(w) if w.attempting => {
                w.woken = true;
                None
            }
            Some(w) if w.blocked => {
                w.blocked = false;
                self.enqueue(id)
            }
            _ => None,
        }
    }

    /// Ends `id`'s write: out of the queue, and no longer waiting on quinn.
    fn leave(&mut self, id: u64) -> Option<Waker> {
        if let Some(w) = self.writers.get_mut(&id) {
            (w.blocked, w.attempting, w.woken, w.task) = (false, false, false, None);
        }
        self.dequeue(id)
    }

    fn remove(&mut self, id: u64) -> Option<Waker> {
        let wake = self.dequeue(id);
        self.writers.remove(&id);
        wake
    }

    fn woken_head(&mut self, before: Option<u64>) -> Option<Waker> {
        let now = self.head()?;
        if Some(now) == before {
            return None;
        }
        self.writers.get_mut(&now).and_then(|w| w.task.take())
    }
}

/// The waker quinn holds for a blocked writer: queues the writer the moment quinn wakes
/// it, then wakes its task if it became the head.
struct QueueOnWake {
    link: Arc<LinkTurns>,
    id: u64,
}

impl Wake for QueueOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wake = self.link.lock().unblocked(self.id);
        if let Some(task) = wake {
            task.wake();
        }
    }
}

/// A flow stream's sending half, with its place in its link's queue. Derefs to the quinn
/// stream for everything but writing: write with [`LinkSend::write_first`] and
/// [`LinkSend::write_data`].
#[derive(Debug)]
pub(crate) struct LinkSend {
    stream: SendStream,
    link: Arc<LinkTurns>,
    id: u64,
    /// The waker quinn gets for this writer (one per stream: its id never changes).
    on_wake: Waker,
}

impl LinkSend {
    /// `stream`, sent over the link whose queue is `link`.
    pub(crate) fn new(stream: SendStream, link: Arc<LinkTurns>) -> Self {
        let id = link.lock().register();
        let on_wake = Waker::from(Arc::new(QueueOnWake { link: link.clone(), id }));
        Self { stream, link, id, on_wake }
    }

    /// A stall watch for the stream this one pairs with: it reads from the same link.
    pub(crate) fn stall_watch(&self) -> StallWatch {
        StallWatch::new(self.link.credit.clone())
    }

    /// Writes a stream's first bytes (all of `chunks`) ahead of the link's flow data.
    pub(crate) async fn write_first(&mut self, chunks: &mut [Bytes]) -> Result<(), WriteError> {
        let _ = self.stream.set_priority(OPENING_PRIORITY);
        self.write_all_turns(chunks, true).await?;
        // What is already queued keeps its place; later data queues as flow data.
        let _ = self.stream.set_priority(0);
        Ok(())
    }

    /// Writes flow data, a slice per turn.
    pub(crate) async fn write_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.write_data_moving(data, None).await
    }

    /// Writes flow data, a slice per turn, and records every slice quinn takes as progress
    /// of `activity`: quinn takes bytes only when the far end granted credit or the link
    /// acknowledged earlier bytes, so a write that goes in is delivery, even when it had to
    /// wait a long time for room.
    pub(crate) async fn write_data_moving(
        &mut self,
        mut data: Bytes,
        activity: Option<&Activity>,
    ) -> Result<(), WriteError> {
        while !data.is_empty() {
            let mut slice = [data.slice(..data.len().min(SLICE))];
            let written = self.write_turn(&mut slice, false).await?;
            data.advance(written.bytes);
            if let Some(a) = activity {
                a.touch();
            }
        }
        Ok(())
    }

    /// Finishes the stream and hands its delivery to `activity`: until the far end has
    /// acknowledged every byte, the link's acknowledgements count as the flow's progress.
    pub(crate) fn finish_delivering(&mut self, activity: &Activity) -> Result<(), quinn::ClosedStream> {
        self.stream.finish()?;
        let stopped = self.stream.stopped();
        activity.delivering(
            async move {
                let _ = stopped.await;
            },
            self.link.delivery.clone(),
        );
        Ok(())
    }

    /// Writes `chunks` as flow data in as few turns as quinn allows (for small framed
    /// writes whose parts belong together; large data goes through [`Self::write_data`]).
    pub(crate) async fn write_data_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), WriteError> {
        self.write_all_turns(chunks, false).await
    }

    /// Writes all of `chunks`, a turn at a time.
    async fn write_all_turns(&mut self, chunks: &mut [Bytes], opening: bool) -> Result<(), WriteError> {
        let mut rest: &mut [Bytes] = chunks;
        while rest.iter().any(|c| !c.is_empty()) {
            let written = self.write_turn(rest, opening).await?;
            rest = &mut rest[written.chunks..];
        }
        Ok(())
    }

    /// Waits for this writer's turn and writes what quinn takes then (at least one byte).
    async fn write_turn(&mut self, chunks: &mut [Bytes], opening: bool) -> Result<Written, WriteError> {
        let (link, id) = (self.link.clone(), self.id);
        {
            let mut turns = link.lock();
            if let Some(w) = turns.writers.get_mut(&id) {
                w.opening = opening;
            }
            let wake = turns.enqueue(id);
            drop(turns);
            wake.into_iter().for_each(Waker::wake);
        }
        // Leaves the queue however this ends (also when the caller gives up).
        let _leave = Leave { link: &link, id };
        loop {
            std::future::poll_fn(|cx| {
                let mut turns = link.lock();
                if turns.head() == Some(id) {
                    return Poll::Ready(());
                }
                if let Some(w) = turns.writers.get_mut(&id) {
                    w.task = Some(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
            // The head's one attempt. quinn's lock is never taken under ours: its wake-up
            // pass takes ours (QueueOnWake).
            link.lock().attempt(id);
            let attempt = {
                let mut write = pin!(self.stream.write_chunks(chunks));
                write.as_mut().poll(&mut Context::from_waker(&self.on_wake))
            };
            let wake = match &attempt {
                Poll::Ready(Ok(written)) => link.lock().served(id, written.bytes),
                // Blocked: out of the queue until quinn wakes `on_wake`.
                Poll::Ready(Err(_)) => link.lock().leave(id),
                Poll::Pending => link.lock().blocked(id),
            };
            wake.into_iter().for_each(Waker::wake);
            if let Poll::Ready(result) = attempt {
                return result;
            }
        }
    }
}

/// Takes a writer out of its link's queue when its write ends or is dropped.
struct Leave<'a> {
    link: &'a LinkTurns,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let wake = self.link.lock().leave(self.id);
        wake.into_iter().for_each(Waker::wake);
    }
}

impl Drop for LinkSend {
    fn drop(&mut self) {
        let wake = self.link.lock().remove(self.id);
        wake.into_iter().for_each(Waker::wake);
    }
}

impl Deref for LinkSend {
    type Target = SendStream;

    fn deref(&self) -> &SendStream {
        &self.stream
    }
}

impl DerefMut for LinkSend {
    fn deref_mut(&mut self) -> &mut SendStream {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers(turns: &mut Turns, n: usize) -> Vec<u64> {
        (0..n).map(|_| turns.register()).collect()
    }

    #[test]
    fn the_least_served_writer_goes_first() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 3);
        ids.iter().for_each(|&id| drop(t.enqueue(id)));
        // First come first served while tags tie.
        assert_eq!(t.head(), Some(ids[0]));
        t.served(ids[0], 64 * 1024);
        t.enqueue(ids[0]);
        assert_eq!(t.head(), Some(ids[1]), "a writer just served went behind the others");
        t.served(ids[1], 64 * 1024);
        t.enqueue(ids[1]);
        assert_eq!(t.head(), Some(ids[2]));
    }

    #[test]
    fn round_robin_over_many_rounds_gives_equal_shares() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 5);
        let mut served: HashMap<u64, usize> = HashMap::new();
        ids.iter().for_each(|&id| drop(t.enqueue(id)));
        for round in 0..1000 {
            let head = t.head().expect("someone is queued");
            // Partial writes of varying size, as quinn admits them.
            let bytes = 1000 + (round * 7919) % 60_000;
            *served.entry(head).or_default() += bytes;
            t.served(head, bytes);
            t.enqueue(head);
        }
        let (min, max) = (served.values().min().copied(), served.values().max().copied());
        let (min, max) = (min.unwrap_or(0), max.unwrap_or(0));
        assert!(max - min <= 64 * 1024, "shares differ by more than a slice: {served:?}");
    }

    #[test]
    fn an_opening_goes_before_flow_data_queued_earlier() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 3);
        t.enqueue(ids[0]);
        t.enqueue(ids[1]);
        if let Some(w) = t.writers.get_mut(&ids[2]) {
            w.opening = true;
        }
        t.enqueue(ids[2]);
        assert_eq!(t.head(), Some(ids[2]));
        t.served(ids[2], 300);
        assert_eq!(t.head(), Some(ids[0]), "an opening changed the data order");
    }

    #[test]
    fn a_writer_back_from_idle_starts_at_the_clock_not_with_banked_credit() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 2);
        t.enqueue(ids[0]);
        for _ in 0..100 {
            t.served(ids[0], SLICE);
            t.enqueue(ids[0]);
        }
        // ids[1] arrives late: it shares from now on, it does not get 100 slices in a row.
        t.enqueue(ids[1]);
        let mut order = Vec::new();
        for _ in 0..6 {
            let head = t.head().expect("queued");
            order.push(head);
            t.served(head, SLICE);
            t.enqueue(head);
        }
        let late = order.iter().filter(|&&id| id == ids[1]).count();
        assert!((2..=4).contains(&late), "late writer got {late} of 6 turns: {order:?}");
    }

    #[test]
    fn the_new_head_is_woken_when_the_head_leaves_or_is_dropped() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 3);
        ids.iter().for_each(|&id| drop(t.enqueue(id)));
        let flag = Arc::new(Flag::default());
        if let Some(w) = t.writers.get_mut(&ids[1]) {
            w.task = Some(Waker::from(flag.clone()));
        }
        t.dequeue(ids[0]).into_iter().for_each(Waker::wake);
        assert!(flag.is_set(), "the next head was not woken");
        assert_eq!(t.head(), Some(ids[1]));
        t.remove(ids[1]);
        assert_eq!(t.head(), Some(ids[2]));
        assert!(!t.writers.contains_key(&ids[1]));
        assert!(t.dequeue(ids[1]).is_none(), "a removed writer is ignored");
        assert!(t.unblocked(ids[1]).is_none());
    }

    #[test]
    fn only_a_blocked_writer_is_queued_by_its_waker() {
        let mut t = Turns::default();
        let ids = writers(&mut t, 2);
        t.enqueue(ids[0]);
        t.blocked(ids[0]);
        assert_eq!(t.head(), None);
        t.unblocked(ids[0]);
        assert_eq!(t.head(), Some(ids[0]), "quinn's wake did not queue the blocked writer");
        // A wake that comes while the head polls quinn is kept: no lost wake-up.
        t.attempt(ids[0]);
        t.unblocked(ids[0]);
        t.blocked(ids[0]);
        assert_eq!(t.head(), Some(ids[0]), "a wake during the attempt was lost");
        t.leave(ids[0]);
        // A stale waker of a write that ended must not queue a writer no task polls.
        t.unblocked(ids[0]);
        t.unblocked(ids[1]);
        assert_eq!(t.head(), None);
    }

    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl Flag {
        fn is_set(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
