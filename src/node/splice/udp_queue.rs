//! The queue in front of one UDP association's stream, bounded in datagrams and in bytes.
//!
//! The socket's reader puts datagrams in with [`QueueTx::try_send`], which never waits:
//! a datagram that does not fit is refused (the caller drops and counts it `congested`).
//! Bounded by count so a burst of small datagrams (a millisecond of a fast sender) fits,
//! and by bytes so large ones cannot make one association hold more than
//! [`QUEUE_BYTES`]: the node's worst case is `limits.max_udp_associations` times that.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Most datagrams one association queues.
pub(crate) const QUEUE_DATAGRAMS: usize = 1024;

/// Most payload bytes one association queues.
pub(crate) const QUEUE_BYTES: usize = 128 * 1024;

/// Why a datagram was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is full (in datagrams or bytes).
    Full,
    /// The association is gone.
    Closed,
}

/// The sending side (the socket's reader).
#[derive(Debug)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side (the association's splice).
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

/// A queue with the default bounds.
pub(crate) fn queue() -> (QueueTx, QueueRx) {
    bounded(QUEUE_DATAGRAMS, QUEUE_BYTES)
}

/// A queue of at most `datagrams` datagrams and `max_bytes` payload bytes.
pub(crate) fn bounded(datagrams: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(datagrams.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (QueueTx { tx, bytes: bytes.clone(), max_bytes }, QueueRx { rx, bytes })
}

impl QueueTx {
    /// Queues `datagram` if it fits now.
    pub(crate) fn try_send(&self, datagram: Bytes) -> Result<(), Refused> {
        let len = datagram.len();
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.tx.try_send(datagram).map_err(|e| {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Completes when the receiving side is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

impl QueueRx {
    /// The next datagram; `None` once the sending side is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let d = self.rx.recv().await?;
        self.bytes.fetch_sub(d.len(), Ordering::Relaxed);
        Some(d)
    }

    /// The next datagram if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        let d = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(d.len(), Ordering::Relaxed);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_datagrams_and_in_bytes() {
        let (tx, mut rx) = bounded(3, 10);
        assert_eq!(tx.try_send(Bytes::from_static(b"12345678")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"123")), Err(Refused::Full), "past the bytes");
        assert_eq!(tx.try_send(Bytes::from_static(b"")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"")), Err(Refused::Full), "past the count");
        assert_eq!(rx.try_recv().as_deref(), Some(&b"12345678"[..]));
        assert_eq!(tx.try_send(Bytes::from_static(b"0123456789")), Ok(()), "the bytes came back");
        drop(rx);
        assert_eq!(tx.try_send(Bytes::from_static(b"x")), Err(Refused::Closed));
    }
}
