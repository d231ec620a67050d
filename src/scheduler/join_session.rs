//! The scheduler's side of a join: a connection without a client certificate that
//! negotiated ALPN `proxy-join/1` sends one [`JoinRequest`] and gets one [`JoinReply`].
//! Bounded: a few exchanges at once, a deadline for the whole exchange, a small frame.

use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, VarInt};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::enrollment::Enrollment;
use crate::core::control::{self, FrameError};
use crate::core::enroll::{JoinReply, JoinRequest, MAX_JOIN_FRAME};
use crate::node::unix_now;

/// The whole exchange, from the handshake to the reply.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// Serves one join connection, then closes it.
pub async fn serve(enrollment: &std::sync::Arc<Enrollment>, slots: &Semaphore, conn: Connection) {
    let Ok(_slot) = slots.try_acquire() else {
        conn.close(VarInt::from_u32(5), b"busy: too many joins at once; try again");
        return;
    };
    let from = conn.remote_address();
    match tokio::time::timeout(JOIN_DEADLINE, exchange(enrollment, &conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(from = %from, "join exchange failed: {e:#}"),
        Err(_) => debug!(from = %from, "join exchange timed out"),
    }
    // Give the reply time to arrive before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(VarInt::from_u32(0), b"done");
}

async fn exchange(enrollment: &std::sync::Arc<Enrollment>, conn: &Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let reply = match read_frame::<JoinRequest>(&mut recv, MAX_JOIN_FRAME).await {
        Ok(request) => {
            let (enrollment, from) = (enrollment.clone(), conn.remote_address().ip());
            let reply =
                tokio::task::spawn_blocking(move || enrollment.join(&request, from, unix_now())).await?;
            if let JoinReply::Refused { reason } = &reply {
                info!(from = %from, reason = %reason, "join refused");
            }
            reply
        }
        Err(e) => JoinReply::Refused { reason: format!("bad join request: {e}") },
    };
    send.write_chunk(Bytes::from(control::encode(&reply)?)).await?;
    send.finish()?;
    Ok(())
}

/// Reads exactly one frame (at most `max` bytes of body) from a stream that carries
/// nothing else.
pub async fn read_frame<T: bincode::Decode<()>>(recv: &mut RecvStream, max: usize) -> anyhow::Result<T> {
    let mut buf = Vec::new();
    loop {
        match control::decode::<T>(&buf, max) {
            Ok(Some((message, _))) => return Ok(message),
            Ok(None) => {}
            Err(FrameError::Malformed { message, .. }) => anyhow::bail!("malformed: {message}"),
            Err(e) => anyhow::bail!("{e}"),
        }
        match recv.read_chunk(max + control::FRAME_PREFIX_LEN - buf.len().min(max), true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => anyhow::bail!("the stream ended before a whole message"),
        }
    }
}
