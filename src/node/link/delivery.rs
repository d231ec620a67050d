//! Whether a link is delivering: the evidence a flow's timeouts use for bytes this node
//! already handed to QUIC and that the far end has not acknowledged yet.
//!
//! Why a link-wide signal is sound for one flow's queued bytes: quinn takes a byte into a
//! stream's send buffer only within the peer's flow-control credit for that stream and for
//! the connection (see quinn-proto's `write_limit` and the stream's `max_data` budget). So
//! a byte that sits in the buffer waits for nothing the far application does: only for the
//! link (congestion window, pacing, loss and retransmission). quinn serves the streams that
//! have data to send round-robin, so while the link delivers, every stream's queued bytes
//! move. The far end acknowledging our packets is the sign that the link delivers.
//!
//! quinn does not report per-stream acknowledged offsets; the per-connection count of ACK
//! frames received is the signal. ACK frames come only in reply to packets of ours that
//! arrived; while a stream has data queued the link is busy sending it, so keepalive pings
//! are not sent and the acknowledgements are for data.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Samples closer together than this reuse the last one: many flows may ask at once, and
/// `Connection::stats` takes the connection's lock.
const MIN_SAMPLE: Duration = Duration::from_millis(20);

/// Reads the link's running count of acknowledgements received.
type AckCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// One link's delivery clock: when the far end was last seen acknowledging our packets.
pub(crate) struct LinkDelivery {
    acks: AckCount,
    sample: Mutex<Sample>,
}

struct Sample {
    acks: u64,
    taken: Instant,
    /// The first sample that saw the count move: an acknowledgement arrived at or before it.
    acked: Instant,
}

impl std::fmt::Debug for LinkDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkDelivery").finish_non_exhaustive()
    }
}

impl LinkDelivery {
    /// The delivery clock of `conn`: ACK frames the peer sent us.
    pub(crate) fn of_connection(conn: quinn::Connection) -> Self {
        Self::counting(Box::new(move || conn.stats().frame_rx.acks))
    }

    /// A clock over any running count of acknowledgements (tests drive one by hand).
    pub(crate) fn counting(acks: AckCount) -> Self {
        let now = Instant::now();
        let first = acks();
        Self { acks, sample: Mutex::new(Sample { acks: first, taken: now, acked: now }) }
    }

    /// The latest instant at which the link was seen receiving acknowledgements. An
    /// acknowledgement is dated by the sample that first saw it, so the answer is late by
    /// at most the gap between samples (callers that depend on it sample often).
    pub(crate) fn last_ack(&self) -> Instant {
        let now = Instant::now();
        let mut s = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(s.taken) >= MIN_SAMPLE {
            let acks = (self.acks)();
            if acks != s.acks {
                s.acks = acks;
                s.acked = now;
            }
            s.taken = now;
        }
        s.acked
    }
}
