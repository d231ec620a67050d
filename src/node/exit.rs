//! The far end of a flow stream: read and check the header, apply the exit policy, dial
//! the target, reply, then splice.
//!
//! A stream is refused (reply, finish, stop) rather than the connection closed, so one bad
//! stream never disturbs the other flows on the same link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::core::wire::{self, Decoded, FlowHeader, RefuseReason, Reply};
use crate::node::splice::{self, FlowEnd, Prelude, codes};
use crate::node::tcp_io;
use crate::node::{FlowGuard, Shared, log_escape};

/// Handles one stream opened by `peer`.
pub async fn handle_stream(shared: Arc<Shared>, peer: String, mut send: SendStream, mut recv: RecvStream) {
    // Draining first: while draining, shutdown takes every permit that comes free, so the
    // flow limit would otherwise hide the real reason.
    if *shared.draining.borrow() {
        refuse(&shared, &mut send, &mut recv, RefuseReason::Draining, "node is shutting down").await;
        return;
    }
    let Some(guard) = FlowGuard::try_new(&shared) else {
        refuse(&shared, &mut send, &mut recv, RefuseReason::Overloaded, "flow limit reached").await;
        return;
    };
    let (header, rest) = match read_header(&shared, &mut recv).await {
        Ok(h) => h,
        Err((reason, detail)) => {
            warn!(peer = %peer, %detail, "refused a flow stream: bad header");
            refuse(&shared, &mut send, &mut recv, reason, &detail).await;
            return;
        }
    };
    let span = info_span!("flow", id = header.flow_id, origin = %header.origin);
    exit_flow(shared, guard, header, rest, send, recv).instrument(span).await;
}

async fn exit_flow(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: FlowHeader,
    rest: Bytes,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    if !header.hops.is_empty() {
        // Relaying arrives with multi-hop source routing; until then this node only exits.
        let detail = format!("next hop `{}`: this node does not relay", header.hops[0]);
        refuse(&shared, &mut send, &mut recv, RefuseReason::RelayNotAllowed, &detail).await;
        return;
    }
    let tcp = match dial_target(&shared, &header.target).await {
        Ok(tcp) => tcp,
        Err((reason, detail)) => {
            info!(target = %log_escape(&header.target), reason = reason.as_str(), %detail, "refused flow");
            refuse(&shared, &mut send, &mut recv, reason, &detail).await;
            return;
        }
    };
    tcp_io::arm_reset_on_drop(&tcp);
    let opened = Bytes::from(wire::encode_reply(&Reply::Opened));
    let limit = shared.config.limits.connect_timeout;
    if !matches!(tokio::time::timeout(limit, send.write_chunk(opened)).await, Ok(Ok(()))) {
        splice::abort(tcp, &mut send, &mut recv, codes::TIMEOUT);
        guard.finish(&FlowEnd::TimedOut("reply"));
        return;
    }
    shared.counters.flows_exited.fetch_add(1, Ordering::Relaxed);
    debug!(target = %log_escape(&header.target), "flow opened");
    let end = splice::splice(
        tcp,
        send,
        recv,
        Prelude::WriteFirst(rest),
        shared.timeouts,
        shared.counters.clone(),
        shared.force.clone(),
    )
    .await;
    guard.finish(&end);
}

/// Reads the header within the deadline; returns it and the bytes that followed it.
async fn read_header(
    shared: &Shared,
    recv: &mut RecvStream,
) -> Result<(FlowHeader, Bytes), (RefuseReason, String)> {
    let limits = shared.header_limits;
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match wire::decode_header(&buf, &limits) {
                Ok(Decoded::Complete(h, used)) => return Ok((h, Bytes::copy_from_slice(&buf[used..]))),
                Ok(Decoded::NeedMore(_)) => {}
                Err(e) => return Err((RefuseReason::from(&e), e.to_string())),
            }
            let room = limits.max_header_bytes.saturating_sub(buf.len()).max(1);
            match recv.read_chunk(room, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err((RefuseReason::BadHeader, "stream ended inside the header".into())),
                Err(e) => {
                    return Err((RefuseReason::BadHeader, format!("stream failed inside the header: {e}")));
                }
            }
        }
    };
    match tokio::time::timeout(shared.config.limits.header_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err((RefuseReason::BadHeader, "header did not arrive in time".into())),
    }
}

/// Resolves the target, keeps the addresses the exit policy allows, and connects to the
/// first that answers, all within one `connect_timeout`. A name is resolved only when some
/// rule could allow it, so a deny-all node never looks up names peers send it.
async fn dial_target(shared: &Shared, target: &str) -> Result<TcpStream, (RefuseReason, String)> {
    let policy = &shared.config.exit_policy;
    let (host, port) = split_target(target);
    if !policy.may_allow(host, port) {
        return Err((RefuseReason::Policy, format!("exit policy does not allow {}", log_escape(target))));
    }
    let budget = shared.config.limits.connect_timeout;
    match tokio::time::timeout(budget, resolve_and_connect(shared, target, host)).await {
        Ok(r) => r,
        Err(_) => Err((RefuseReason::TargetUnreachable, format!("no connection within {budget:?}"))),
    }
}

fn split_target(target: &str) -> (&str, u16) {
    match target.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p.parse().unwrap_or(0)),
        None => (target, 0),
    }
}

async fn resolve_and_connect(
    shared: &Shared,
    target: &str,
    host: &str,
) -> Result<TcpStream, (RefuseReason, String)> {
    let resolved: Vec<SocketAddr> = match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err((RefuseReason::TargetUnreachable, format!("cannot resolve: {e}"))),
    };
    let allowed: Vec<SocketAddr> =
        resolved.iter().copied().filter(|a| shared.config.exit_policy.allows(host, *a)).collect();
    if allowed.is_empty() {
        let shown: Vec<String> = resolved.iter().map(ToString::to_string).collect();
        return Err((RefuseReason::Policy, format!("exit policy does not allow {}", shown.join(", "))));
    }
    let mut last = String::new();
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err((RefuseReason::TargetUnreachable, last))
}

/// Sends a refusal, finishes the stream and stops reading it.
async fn refuse(
    shared: &Shared,
    send: &mut SendStream,
    recv: &mut RecvStream,
    reason: RefuseReason,
    detail: &str,
) {
    shared.counters.refused_here(reason);
    let reply = wire::encode_reply(&Reply::refused(reason, &shared.config.common.node_id, detail));
    // The reply goes out before the stop, so an opener still uploading learns why.
    let write = async {
        send.write_all(&reply).await.ok()?;
        send.finish().ok()
    };
    // Bounded: a peer that never reads must not hold this task.
    let sent = tokio::time::timeout(shared.config.limits.header_timeout, write).await;
    let _ = recv.stop(codes::REFUSED);
    if !matches!(sent, Ok(Some(()))) {
        // Never leave a partial reply looking like a finished stream.
        let _ = send.reset(codes::REFUSED);
    }
}
