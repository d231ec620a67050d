//! Flow streams opened by a peer: each link's stream server, and for each stream, read and
//! check its header, then hand it to the relay, the proxy chain or the exit.
//!
//! A stream is refused (reply, finish, stop) rather than the connection closed, so one bad
//! stream never disturbs the other flows on the same link.

use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, RecvStream};
use tracing::{Instrument, info, info_span, warn};

use crate::config::E2eMode;
use crate::core::wire::{self, AnyHeader, Decoded, Destination, FlowHeader, RefuseReason, Reply};
use crate::logging::log_escape;
use crate::node::flow::seal::{self, ExitSeal};
use crate::node::link::send::{LinkSend, LinkTurns};
use crate::node::observe::flow_registry::FlowRole;
use crate::node::splice::codes;
use crate::node::{FlowGuard, Shared, flow::echo, flow::exit, flow::relay, flow::udp_exit, multipath};

/// Handles one stream opened by `peer`.
pub(crate) async fn handle_stream(
    shared: Arc<Shared>,
    peer: String,
    mut send: LinkSend,
    mut recv: RecvStream,
) {
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
            warn!(peer = %peer, detail = %log_escape(&detail), "refused a flow stream: bad header");
            refuse(&shared, &mut send, &mut recv, reason, &detail).await;
            return;
        }
    };
    if let Err((reason, detail)) = check_routing(&shared, &peer, &header) {
        refuse(&shared, &mut send, &mut recv, reason, &detail).await;
        return;
    }
    // `%`: a string in JSON logs, since a random u64 is past what jq or JavaScript hold exactly.
    let span = info_span!("flow", id = %header.flow_id(), origin = tracing::field::Empty);
    let flow = async move {
        let (header, seal) = match header {
            AnyHeader::Plain(h) => {
                shared.counters.flows_unsealed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !h.hops.is_empty() {
                    describe(&guard, &h.origin, &h, shared.id());
                    return relay::forward(shared, guard, AnyHeader::Plain(h), rest, send, recv).await;
                }
                (h, None)
            }
            AnyHeader::Sealed(h) if !h.hops.is_empty() => {
                // A relay does not know the origin unless the origin is its neighbour.
                let origin = if h.passed.is_empty() { peer.clone() } else { SEALED_ORIGIN.into() };
                let shown = FlowHeader {
                    flow_id: h.flow_id,
                    origin: origin.clone(),
                    passed: h.passed.clone(),
                    hops: h.hops.clone(),
                    destination: Destination::Target(SEALED_ORIGIN.into()),
                    subflow: None,
                };
                describe(&guard, &origin, &shown, shared.id());
                return relay::forward(shared, guard, AnyHeader::Sealed(h), rest, send, recv).await;
            }
            AnyHeader::Sealed(h) => match seal::open_header(&shared, &peer, &h) {
                Ok(unsealed) => (unsealed.header, Some((unsealed.seal, unsealed.before))),
                Err((reason, detail)) => {
                    warn!(peer = %peer, detail = %log_escape(&detail), "refused a sealed flow");
                    refuse(&shared, &mut send, &mut recv, reason, &detail).await;
                    return;
                }
            },
        };
        if header.names(shared.id()) {
            let detail = format!("`{}` is already on this flow's path", shared.id());
            refuse(&shared, &mut send, &mut recv, RefuseReason::Loop, &detail).await;
            return;
        }
        describe(&guard, &header.origin, &header, shared.id());
        tracing::Span::current().record("origin", tracing::field::display(&header.origin));
        let (seal, before) = match seal {
            Some((seal, before)) => (Some(seal), before),
            None => (None, Vec::new()),
        };
        match &header.destination {
            Destination::Target(target) => {
                let target = target.clone();
                match header.subflow {
                    Some(sub) => {
                        multipath::exit::subflow_arrived(
                            shared,
                            guard,
                            header,
                            sub,
                            &target,
                            rest,
                            (send, recv),
                            seal,
                        )
                        .await
                    }
                    None => {
                        let origin = header.origin.clone();
                        exit::exit_flow(shared, guard, origin, &target, rest, (send, recv), seal).await
                    }
                }
            }
            Destination::RouteByPort(port) => {
                let port = *port;
                relay::chain(shared, guard, header, before, port, rest, (send, recv), seal).await
            }
            // The header check refuses subflows of UDP flows.
            Destination::UdpTarget(target) => {
                let (target, origin) = (target.clone(), header.origin.clone());
                udp_exit::exit_flow(shared, guard, origin, &target, rest, (send, recv), seal).await
            }
            Destination::Echo => {
                // The fair share goes by who surely sent the flow: a sealed origin is
                // authenticated by its seal, a plain one only when it is the neighbour,
                // so a relayed plain probe counts against the relay that handed it on.
                let accountable = if seal.is_some() { header.origin.clone() } else { peer.clone() };
                echo::answer(shared, guard, &accountable, rest, (send, recv), seal).await
            }
        }
    };
    flow.instrument(span).await;
}

/// What a relay shows for what it cannot read.
const SEALED_ORIGIN: &str = "(sealed)";

/// The checks on a header before anything else: its version against `mesh.e2e`, the
/// sender (the header must name the peer that sent it as the last node passed, or as the
/// origin, so no peer can hide itself to bounce a flow back to itself), and this node
/// not being on the path already.
fn check_routing(shared: &Shared, peer: &str, header: &AnyHeader) -> Result<(), (RefuseReason, String)> {
    let bad = |detail: String| (RefuseReason::BadHeader, detail);
    if let AnyHeader::Plain(h) = header {
        if shared.config.mesh.e2e == E2eMode::Required {
            return Err(bad(format!(
                "wire version {} (unsealed flows) is refused: this node speaks version {} and requires sealed flows (mesh.e2e: required)",
                wire::VERSION,
                wire::SEALED_VERSION
            )));
        }
        let sender = h.passed.last().unwrap_or(&h.origin);
        if sender != peer {
            return Err(bad(format!(
                "header names `{}` as its sender, but `{peer}` sent it",
                log_escape(sender)
            )));
        }
    }
    if let AnyHeader::Sealed(h) = header {
        // The origin is sealed; when nothing is passed, the sender is the origin, which
        // the exit checks. A sender that is also ahead would bounce the flow to itself.
        match h.passed.last() {
            Some(sender) if sender != peer => {
                return Err(bad(format!(
                    "header names `{}` as its sender, but `{peer}` sent it",
                    log_escape(sender)
                )));
            }
            None if h.hops.iter().any(|n| n == peer) => {
                return Err((RefuseReason::Loop, format!("`{peer}` is ahead on the path it sent")));
            }
            _ => {}
        }
    }
    let me = shared.id();
    if header.passed().iter().chain(header.hops()).any(|n| n == me) {
        return Err((RefuseReason::Loop, format!("`{me}` is already on this flow's path")));
    }
    Ok(())
}

/// Records what an inbound flow is, for the admin API.
fn describe(guard: &FlowGuard, origin: &str, header: &FlowHeader, me: &str) {
    guard.describe(|m| {
        m.flow_id = header.flow_id;
        m.origin = origin.to_string();
        m.role = match (&header.destination, header.hops.is_empty(), header.subflow) {
            (_, false, _) | (Destination::RouteByPort(_), true, _) => FlowRole::Relay,
            (Destination::Target(_), true, Some(sub)) if !sub.opens() => FlowRole::Subflow,
            (Destination::Target(_) | Destination::UdpTarget(_) | Destination::Echo, true, _) => {
                FlowRole::Exit
            }
        };
        m.path = header
            .passed
            .iter()
            .cloned()
            .chain([me.to_string()])
            .chain(header.hops.iter().cloned())
            .collect();
        m.destination = match &header.destination {
            Destination::Target(t) => t.clone(),
            Destination::RouteByPort(p) => format!("port {p}"),
            Destination::UdpTarget(t) => format!("udp:{t}"),
            Destination::Echo => "echo (probe)".into(),
        };
    });
}

/// Accepts flow streams the peer opens on `conn` until the connection closes; their
/// replies go through the link's `turns`.
pub(crate) async fn serve_streams(
    shared: Arc<Shared>,
    peer: String,
    conn: Connection,
    turns: Arc<LinkTurns>,
) {
    tokio::spawn(crate::node::link::cards::exchange(shared.clone(), peer.clone(), conn.clone()));
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let send = LinkSend::new(send, turns.clone());
                tokio::spawn(handle_stream(shared.clone(), peer.clone(), send, recv));
            }
            Err(e) => {
                info!(peer = %peer, reason = %e, "link closed");
                return;
            }
        }
    }
}

/// Reads the header within the deadline; returns it and the bytes that followed it.
async fn read_header(
    shared: &Shared,
    recv: &mut RecvStream,
) -> Result<(AnyHeader, Bytes), (RefuseReason, String)> {
    let limits = shared.header_limits;
    // QUIC opens every lower-numbered stream implicitly when a higher one arrives, so a
    // stream can exist here before its opener has sent anything (its header still queued
    // behind other flows' data on a busy link). The header deadline runs from the first
    // byte; before that, the longer `FIRST_BYTE_DEADLINE` applies.
    let first = tokio::time::timeout(
        FIRST_BYTE_DEADLINE.max(shared.config.limits.header_timeout),
        recv.read_chunk(limits.max_header_bytes, true),
    )
    .await;
    let first = match first {
        Ok(Ok(Some(chunk))) => chunk.bytes,
        Ok(Ok(None)) => return Err((RefuseReason::BadHeader, "stream ended before its header".into())),
        Ok(Err(e)) => return Err((RefuseReason::BadHeader, format!("stream failed before its header: {e}"))),
        Err(_) => return Err((RefuseReason::BadHeader, "no header byte arrived in time".into())),
    };
    let read = async move {
        let mut buf: Vec<u8> = first.to_vec();
        loop {
            match wire::decode_any_header(&buf, &limits) {
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

/// How long a stream may exist before its first byte (see `read_header`).
const FIRST_BYTE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Refuses a flow this node exits: sealed to the origin when the flow is sealed, so
/// relays learn neither the reason nor the detail.
pub(crate) async fn refuse_exit(
    shared: &Shared,
    (send, recv): (&mut LinkSend, &mut RecvStream),
    seal: Option<ExitSeal>,
    reason: RefuseReason,
    detail: &str,
) {
    let Some(seal) = seal else { return refuse(shared, send, recv, reason, detail).await };
    match seal.reply(&Reply::refused(reason, shared.id(), detail)) {
        Ok((bytes, _)) => {
            shared.counters.refused_here(reason);
            send_refusal(shared, send, recv, bytes).await;
        }
        Err(_) => refuse(shared, send, recv, reason, detail).await,
    }
}

/// Sends a refusal from this node, finishes the stream and stops reading it.
pub(crate) async fn refuse(
    shared: &Shared,
    send: &mut LinkSend,
    recv: &mut RecvStream,
    reason: RefuseReason,
    detail: &str,
) {
    refuse_as(shared, send, recv, reason, shared.id(), detail).await;
}

/// Sends a refusal naming `hop` as the refusing node (this node, or one further along
/// the path whose refusal this node passes back).
pub(crate) async fn refuse_as(
    shared: &Shared,
    send: &mut LinkSend,
    recv: &mut RecvStream,
    reason: RefuseReason,
    hop: &str,
    detail: &str,
) {
    shared.counters.refused_here(reason);
    let reply = wire::encode_reply(&Reply::refused(reason, hop, detail));
    send_refusal(shared, send, recv, Bytes::from(reply)).await;
}

/// Writes an encoded refusal, finishes and stops.
pub(crate) async fn send_refusal(shared: &Shared, send: &mut LinkSend, recv: &mut RecvStream, reply: Bytes) {
    // The reply goes out before the stop, so an opener still uploading learns why.
    let write = async {
        send.write_first(&mut [reply]).await.ok()?;
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
