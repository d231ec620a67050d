//! The scheduler's side of a join: a connection without a client certificate that
//! negotiated ALPN `proxy-join/1` sends one [`JoinRequest`] and gets one [`JoinReply`].
//! Bounded: a few exchanges at once, a deadline for the whole exchange, a small frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, VarInt};
use tracing::{debug, info};

use super::enrollment::Enrollment;
use crate::clock::unix_now;
use crate::core::control;
use crate::core::control::close_codes;
use crate::core::enroll::{JoinReply, JoinRequest, MAX_JOIN_FRAME};

/// The whole exchange, from the handshake to the reply.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// Join exchanges served at once.
const MAX_JOINS_AT_ONCE: usize = 16;
/// Join exchanges served at once for one source address.
const MAX_JOINS_PER_SOURCE: usize = 2;

/// Admission to the join service: a few exchanges at once, fewer per source address, so
/// connections that send nothing cannot hold every slot from one machine.
#[derive(Default)]
pub struct JoinGate {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A place in the [`JoinGate`], given back when dropped.
struct GateSlot<'a> {
    gate: &'a JoinGate,
    source: IpAddr,
}

impl JoinGate {
    fn enter(&self, source: IpAddr) -> Option<GateSlot<'_>> {
        let source = source.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&source).copied().unwrap_or(0);
        if total >= MAX_JOINS_AT_ONCE || mine >= MAX_JOINS_PER_SOURCE {
            return None;
        }
        open.insert(source, mine + 1);
        Some(GateSlot { gate: self, source })
    }
}

impl Drop for GateSlot<'_> {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Serves one join connection, then closes it.
pub async fn serve(enrollment: &std::sync::Arc<Enrollment>, gate: &JoinGate, conn: Connection) {
    let from = conn.remote_address();
    let Some(_slot) = gate.enter(from.ip()) else {
        conn.close(VarInt::from_u32(close_codes::BUSY), b"busy: too many joins at once; try again");
        return;
    };
    let deadline = Instant::now() + JOIN_DEADLINE;
    match tokio::time::timeout(JOIN_DEADLINE, exchange(enrollment, &conn, deadline)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(from = %from, "join exchange failed: {e:#}"),
        Err(_) => debug!(from = %from, "join exchange timed out"),
    }
    // Give the reply time to arrive before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(VarInt::from_u32(close_codes::DONE), b"done");
}

async fn exchange(
    enrollment: &std::sync::Arc<Enrollment>,
    conn: &Connection,
    deadline: Instant,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let from = conn.remote_address().ip();
    let reply = match crate::quic::read_frame::<JoinRequest>(&mut recv, MAX_JOIN_FRAME).await {
        Ok(request) => {
            let enrollment = enrollment.clone();
            let reply =
                tokio::task::spawn_blocking(move || enrollment.join(&request, from, unix_now(), deadline))
                    .await?;
            if let JoinReply::Refused { reason } = &reply {
                info!(from = %from, reason = %reason, "join refused");
            }
            reply
        }
        Err(e) => {
            enrollment.malformed(from, unix_now());
            JoinReply::Refused { reason: format!("bad join request: {e}") }
        }
    };
    send.write_chunk(Bytes::from(control::encode(&reply)?)).await?;
    send.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_a_few_per_source_and_gives_places_back() {
        let gate = JoinGate::default();
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::ffff:10.0.0.1".parse().unwrap());
        let a = gate.enter(one);
        let b = gate.enter(two);
        assert!(a.is_some() && b.is_some());
        assert!(gate.enter(one).is_none(), "the mapped form counts as the same source");
        let others: Vec<_> =
            (2..16).filter_map(|i| gate.enter(format!("10.0.0.{i}").parse().unwrap())).collect();
        assert_eq!(others.len(), MAX_JOINS_AT_ONCE - 2);
        assert!(gate.enter("10.0.0.99".parse().unwrap()).is_none(), "full");
        drop(a);
        assert!(gate.enter(one).is_some(), "a place given back is free again");
    }
}
