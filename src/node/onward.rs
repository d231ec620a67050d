//! Opening a flow stream to the next node: used by the origin, by relays and by
//! proxy-chain nodes alike.

use bytes::Bytes;
use quinn::{RecvStream, SendStream};

use crate::core::wire::{self, FlowHeader, RefuseReason};
use crate::node::Shared;
use crate::node::splice::codes;

/// Why the stream could not be opened, as the reason this node reports.
pub type OpenError = (RefuseReason, String);

/// Opens a stream to `next`, writes `header` and then `leading` (bytes that arrived behind
/// an inbound header), without waiting for any reply. Each wait is bounded by
/// `limits.connect_timeout`.
pub async fn open_stream(
    shared: &Shared,
    next: &str,
    header: &FlowHeader,
    leading: Bytes,
) -> Result<(SendStream, RecvStream), OpenError> {
    let limit = shared.config.limits.connect_timeout;
    let conn = shared
        .pool
        .connection(next, limit)
        .await
        .map_err(|e| (RefuseReason::NoRoute, format!("no link to next hop `{next}`: {e}")))?;
    let (mut send, recv) = match tokio::time::timeout(limit, conn.open_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err((RefuseReason::NoRoute, format!("link to `{next}` failed: {e}"))),
        Err(_) => return Err((RefuseReason::Overloaded, format!("no stream to `{next}` available in time"))),
    };
    let encoded = wire::encode_header(header).map_err(|e| (RefuseReason::BadHeader, e.to_string()))?;
    let mut chunks = [Bytes::from(encoded), leading];
    // The header normally fits the stream window at once; a link whose window is used up
    // by stalled flows must not hold this flow forever.
    let written = async {
        let mut rest: &mut [Bytes] = &mut chunks;
        while rest.iter().any(|c| !c.is_empty()) {
            let w = send.write_chunks(rest).await?;
            rest = &mut rest[w.chunks..];
        }
        Ok::<(), quinn::WriteError>(())
    };
    match tokio::time::timeout(limit, written).await {
        Ok(Ok(())) => Ok((send, recv)),
        Ok(Err(e)) => {
            let _ = send.reset(codes::PEER_RESET);
            Err((RefuseReason::NoRoute, format!("link to `{next}` failed: {e}")))
        }
        Err(_) => {
            let _ = send.reset(codes::TIMEOUT);
            Err((RefuseReason::Overloaded, format!("link to `{next}` has no send window")))
        }
    }
}
