//! The scheduler's side of a join: a connection without a client certificate that
//! negotiated ALPN `proxy-join/1` sends one [`JoinRequest`] and gets one [`JoinReply`].
//!
//! Bounded, because anyone who can reach the scheduler may connect: a few exchanges at
//! once and fewer per source (an IPv4 address or an IPv6 /64, see [`SourcePrefix`]); a
//! short deadline for the first byte of the request and a longer one for the whole
//! exchange; a small frame. An attempt that never becomes a readable request (silent,
//! too slow, cut off, malformed) counts as a failed join of its source, and a source with
//! too many failures is closed before it gets a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tracing::{debug, info};

use super::enrollment::Enrollment;
use crate::clock::unix_now;
use crate::core::control;
use crate::core::control::close_codes;
use crate::core::enroll::{JoinReply, JoinRequest, MAX_JOIN_FRAME};
use crate::core::join_token::SourcePrefix;

/// The whole exchange, from the handshake to the reply.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// From the handshake to the request's first byte. A joiner sends its request as soon as
/// the handshake is done, so a few seconds cover a slow path; a connection that stays
/// silent longer is holding a slot, not joining.
pub const FIRST_BYTE_DEADLINE: Duration = Duration::from_secs(3);
/// Join exchanges served at once.
const MAX_JOINS_AT_ONCE: usize = 16;
/// Join exchanges served at once for one source (address or /64).
const MAX_JOINS_PER_SOURCE: usize = 2;
/// Join exchanges served at once for one IPv6 /48 (a site's usual allocation): whoever
/// holds one has 65,536 /64s, which must not add up to every slot.
const MAX_JOINS_PER_SITE: usize = 4;

/// Admission to the join service: a few exchanges at once, fewer per source, so
/// connections that send nothing cannot hold every slot from one machine (nor from one
/// IPv6 /64, which one machine usually has to itself).
#[derive(Default)]
pub struct JoinGate {
    open: Mutex<HashMap<SourcePrefix, usize>>,
}

/// A place in the [`JoinGate`], given back when dropped.
struct GateSlot<'a> {
    gate: &'a JoinGate,
    source: SourcePrefix,
}

/// The IPv6 /48 a /64 is in (`None` for IPv4, counted by address alone).
fn site(source: &SourcePrefix) -> Option<[u16; 3]> {
    match source {
        SourcePrefix::V6(p) => Some([p[0], p[1], p[2]]),
        SourcePrefix::V4(_) => None,
    }
}

impl JoinGate {
    fn enter(&self, from: IpAddr) -> Option<GateSlot<'_>> {
        let source = SourcePrefix::of(from);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&source).copied().unwrap_or(0);
        // At most 16 sources hold slots, so this walk is short.
        let my_site: usize = site(&source)
            .map_or(0, |s| open.iter().filter(|(k, _)| site(k) == Some(s)).map(|(_, n)| n).sum());
        if total >= MAX_JOINS_AT_ONCE || mine >= MAX_JOINS_PER_SOURCE || my_site >= MAX_JOINS_PER_SITE {
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
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Why a join connection brought no request the scheduler could read.
enum NoRequest {
    /// Nothing within [`FIRST_BYTE_DEADLINE`].
    Silent,
    /// Not the whole request within [`JOIN_DEADLINE`].
    TooSlow,
    /// The stream or connection ended first.
    Lost(String),
    /// A request that does not decode; it is answered on `send`.
    Malformed(SendStream, String),
}

/// Serves one join connection, then closes it.
pub async fn serve(enrollment: &Arc<Enrollment>, gate: &JoinGate, conn: Connection) {
    let from = conn.remote_address().ip();
    if !enrollment.admits_attempts_from(from, unix_now()) {
        let reason = Enrollment::held_off_reason(from);
        conn.close(VarInt::from_u32(close_codes::HELD_OFF), reason.as_bytes());
        return;
    }
    let Some(_slot) = gate.enter(from) else {
        conn.close(VarInt::from_u32(close_codes::BUSY), b"busy: too many joins at once; try again");
        return;
    };
    let deadline = Instant::now() + JOIN_DEADLINE;
    match read_request(&conn, deadline).await {
        Ok((send, request)) => answer(enrollment, &conn, send, request, deadline).await,
        Err(no_request) => {
            enrollment.failed_attempt(from, unix_now());
            match no_request {
                NoRequest::Silent => {
                    debug!(from = %from, "join connection sent nothing in time: closed, counted as a failure");
                    let reason = format!("no join request within {FIRST_BYTE_DEADLINE:?}");
                    conn.close(VarInt::from_u32(close_codes::TIMED_OUT), reason.as_bytes());
                    return;
                }
                NoRequest::TooSlow => {
                    debug!(from = %from, "join request too slow: closed, counted as a failure");
                    let reason = format!("the join request did not arrive within {JOIN_DEADLINE:?}");
                    conn.close(VarInt::from_u32(close_codes::TIMED_OUT), reason.as_bytes());
                    return;
                }
                NoRequest::Lost(e) => debug!(from = %from, "join connection ended before a request: {e}"),
                NoRequest::Malformed(mut send, e) => {
                    let reply = JoinReply::Refused { reason: format!("bad join request: {e}") };
                    if let Err(e) =
                        tokio::time::timeout(Duration::from_secs(2), write_reply(&mut send, &reply)).await
                    {
                        debug!(from = %from, "could not answer a bad join request: {e}");
                    }
                }
            }
        }
    }
    // Give the reply time to arrive before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(VarInt::from_u32(close_codes::DONE), b"done");
}

/// Reads the one request: its first byte within [`FIRST_BYTE_DEADLINE`], the whole of it
/// by `deadline`.
async fn read_request(conn: &Connection, deadline: Instant) -> Result<(SendStream, JoinRequest), NoRequest> {
    let (send, mut recv, first) = tokio::time::timeout(FIRST_BYTE_DEADLINE, first_bytes(conn))
        .await
        .map_err(|_| NoRequest::Silent)??;
    let rest = crate::quic::read_frame_after::<JoinRequest>(&mut recv, MAX_JOIN_FRAME, first);
    match tokio::time::timeout_at(deadline.into(), rest).await {
        Ok(Ok(request)) => Ok((send, request)),
        Ok(Err(e)) => Err(NoRequest::Malformed(send, e.to_string())),
        Err(_) => Err(NoRequest::TooSlow),
    }
}

/// The request stream and the first bytes on it.
async fn first_bytes(conn: &Connection) -> Result<(SendStream, RecvStream, Vec<u8>), NoRequest> {
    let (send, mut recv) = conn.accept_bi().await.map_err(|e| NoRequest::Lost(e.to_string()))?;
    match recv.read_chunk(MAX_JOIN_FRAME + control::FRAME_PREFIX_LEN, true).await {
        Ok(Some(chunk)) => Ok((send, recv, chunk.bytes.to_vec())),
        Ok(None) => Err(NoRequest::Malformed(send, "the stream ended before a whole message".into())),
        Err(e) => Err(NoRequest::Lost(e.to_string())),
    }
}

/// Decides on a readable request and sends the reply, by `deadline`. Running out of time
/// here is the scheduler's doing (a busy registry), so it is not counted against the
/// joiner.
async fn answer(
    enrollment: &Arc<Enrollment>,
    conn: &Connection,
    mut send: SendStream,
    request: JoinRequest,
    deadline: Instant,
) {
    let from = conn.remote_address().ip();
    let enrollment = enrollment.clone();
    let closer = conn.clone();
    let exchange = async move {
        let (node, region) = (request.node_id.clone(), request.region.clone());
        let events = enrollment.events().clone();
        let answer =
            tokio::task::spawn_blocking(move || enrollment.join(&request, from, unix_now(), deadline))
                .await?;
        let reply = match answer {
            Ok(reply) => reply,
            // Safe to send again whether or not it was committed: the joiner does so.
            Err(reason) => {
                info!(from = %from, reason = %reason, "join deferred: registry unavailable");
                closer.close(VarInt::from_u32(close_codes::BUSY), reason.as_bytes());
                return Ok(());
            }
        };
        match &reply {
            JoinReply::Refused { reason } => info!(from = %from, reason = %reason, "join refused"),
            JoinReply::Accepted { .. } => events.push(
                crate::console::events::EventKind::NodeJoined,
                format!("node {node} joined the mesh (region {region}, from {from})"),
            ),
        }
        write_reply(&mut send, &reply).await
    };
    match tokio::time::timeout_at(deadline.into(), exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(from = %from, "join exchange failed: {e:#}"),
        Err(_) => debug!(from = %from, "join exchange timed out"),
    }
}

async fn write_reply(send: &mut SendStream, reply: &JoinReply) -> anyhow::Result<()> {
    send.write_chunk(Bytes::from(control::encode(reply)?)).await?;
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

    #[test]
    fn addresses_of_one_ipv6_64_share_its_places_and_another_64_still_gets_in() {
        let gate = JoinGate::default();
        // One machine rotating through its /64: every address is new, the prefix is not.
        let held: Vec<_> =
            (1..=64u16).filter_map(|i| gate.enter(format!("2001:db8:5:6::{i:x}").parse().unwrap())).collect();
        assert_eq!(held.len(), MAX_JOINS_PER_SOURCE, "one /64 holds at most its share");
        assert!(gate.enter("2001:db8:5:6:ffff::1".parse().unwrap()).is_none());
        assert!(gate.enter("2001:db8:5:7::1".parse().unwrap()).is_some(), "the next /64 is another source");
        assert!(gate.enter("192.0.2.7".parse().unwrap()).is_some(), "and so is an IPv4 joiner");
    }

    #[test]
    fn the_64s_of_one_48_together_hold_a_few_places_and_leave_the_rest() {
        let gate = JoinGate::default();
        // One site rotating through its /64s: each is a new source, the /48 is not.
        let held: Vec<_> = (1..=200u16)
            .filter_map(|i| gate.enter(format!("2001:db8:5:{i:x}::1").parse().unwrap()))
            .collect();
        assert_eq!(held.len(), MAX_JOINS_PER_SITE);
        let others: Vec<_> =
            (1..=20u16).filter_map(|i| gate.enter(format!("2001:db8:{i:x}::1").parse().unwrap())).collect();
        assert_eq!(others.len(), MAX_JOINS_AT_ONCE - MAX_JOINS_PER_SITE, "the other sites get the rest");
    }
}
