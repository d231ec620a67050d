//! Opening a flow stream to the next node: used by the origin, by relays and by
//! proxy-chain nodes alike.

use bytes::Bytes;
use quinn::{RecvStream, WriteError};

use crate::core::wire::{self, AnyHeader, Decoded, RefuseReason, Reply};
use crate::node::Shared;
use crate::node::link::send::LinkSend;
use crate::node::splice::codes;

/// Why the stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenError {
    /// The reason to report.
    pub reason: RefuseReason,
    /// The node that refused: `None` for this node, or the next node when it refused
    /// before our header was even in (flow limit, draining).
    pub hop: Option<String>,
    /// Detail for the log.
    pub detail: String,
}

impl OpenError {
    /// A refusal by this node.
    pub(crate) fn here(reason: RefuseReason, detail: String) -> Self {
        Self { reason, hop: None, detail }
    }
}

/// The refusal for a flow whose next hop has no link.
pub(crate) fn no_link(next: &str, why: impl std::fmt::Display) -> OpenError {
    OpenError::here(RefuseReason::NoRoute, format!("no link to next hop `{next}`: {why}"))
}

/// Opens a stream to `next`, writes `header` and then `leading` (bytes that arrived behind
/// an inbound header), without waiting for any reply. The whole of it is bounded by one
/// `limits.connect_timeout`, so each node on a path adds at most that to the time an
/// origin waits for its reply.
pub(crate) async fn open_stream(
    shared: &Shared,
    next: &str,
    header: &AnyHeader,
    leading: Bytes,
) -> Result<(LinkSend, RecvStream), OpenError> {
    let late = || OpenError::here(RefuseReason::Overloaded, format!("no stream to `{next}` in time"));
    // One deadline for all of it; the write has its own timeout (not an outer one) so a
    // stream that runs out of time is reset, never dropped (which would finish it).
    let limit = shared.config.limits.connect_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let link = shared.pool.connection(next, limit).await.map_err(|e| no_link(next, e))?;
    let (send, mut recv) = match tokio::time::timeout_at(deadline, link.conn.open_bi()).await {
        Ok(opened) => opened.map_err(|e| no_link(next, e))?,
        Err(_) => return Err(late()),
    };
    let mut send = LinkSend::new(send, link.turns);
    let encoded = match header.encode() {
        Ok(e) => e,
        Err(e) => {
            let _ = send.reset(codes::REFUSED);
            return Err(OpenError::here(RefuseReason::BadHeader, e.to_string()));
        }
    };
    let write = async {
        send.write_first(&mut [Bytes::from(encoded)]).await?;
        // Bytes that came behind an inbound header are flow data: they wait their turn.
        send.write_data(leading).await
    };
    let written = tokio::time::timeout_at(deadline, write).await;
    match written {
        Ok(Ok(())) => Ok((send, recv)),
        Ok(Err(WriteError::Stopped(code))) if code == codes::REFUSED => {
            // The next node refused before reading our header: pass its reason on.
            match tokio::time::timeout_at(deadline, relayed_refusal(&mut recv, next)).await {
                Ok(refusal) => Err(refusal),
                Err(_) => Err(late()),
            }
        }
        Ok(Err(e)) => {
            let _ = send.reset(codes::PEER_RESET);
            Err(no_link(next, e))
        }
        Err(_) => {
            // Reset, not finish (which dropping the stream would do): the next node must
            // not take a cut header for a stream that ended.
            let _ = send.reset(codes::PEER_RESET);
            Err(late())
        }
    }
}

/// Reads the refusal the next node sent; falls back to a refusal of our own.
async fn relayed_refusal(recv: &mut RecvStream, next: &str) -> OpenError {
    if let Ok(buf) = recv.read_to_end(wire::MAX_REPLY_BODY + wire::REPLY_PREFIX_LEN).await
        && let Ok(Decoded::Complete(Reply::Refused { reason, hop, detail }, _)) = wire::decode_reply(&buf)
    {
        return OpenError { reason, hop: Some(hop), detail };
    }
    OpenError::here(RefuseReason::NoRoute, format!("`{next}` refused the stream without a reason"))
}
