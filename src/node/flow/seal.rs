//! Sealing flows end to end, as the node does it: the origin seals a new flow's opening
//! to its exit's card, and the exit opens it, checks the origin's card and answers with
//! the sealed reply (see [`crate::core::seal`] for the protocol).
//!
//! `mesh.e2e: required` (the default) seals every flow and refuses unsealed ones;
//! `preferred` seals when the exit's card is known and otherwise sends (and accepts) the
//! unsealed version-1 header, for a mesh part-way through an upgrade; `off` never seals.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::RecvStream;

use crate::config::E2eMode;
use crate::core::policy::Requester;
use crate::core::seal::handshake::{self, Responder};
use crate::core::seal::replay::ReplayError;
use crate::core::wire::{self, AnyHeader, FlowHeader, InnerHeader, RefuseReason, Reply, SealedHeader};
use crate::logging::log_escape;
use crate::node::Shared;
use crate::node::flow::onward::{self, OpenError};
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::FlowSeal;
use crate::tls::card;

/// Opens a flow stream to `first_hop` for `header` (its `hops` after `first_hop`, the
/// last of them, or `first_hop` itself, the exit), sealed to the exit when the mode and
/// the exit's card allow. `before` lists the nodes of earlier proxy-chain legs.
pub(crate) async fn open_stream(
    shared: &Shared,
    first_hop: &str,
    header: &FlowHeader,
    before: Vec<String>,
) -> Result<(LinkSend, RecvStream, FlowSeal), OpenError> {
    let exit = header.hops.last().map_or(first_hop, String::as_str);
    let (wire_header, seal) = seal_header(shared, (first_hop, exit), header, before).await?;
    let (send, recv) = onward::open_stream(shared, first_hop, &wire_header, Bytes::new()).await?;
    Ok((send, recv, seal))
}

async fn seal_header(
    shared: &Shared,
    (first_hop, exit): (&str, &str),
    header: &FlowHeader,
    before: Vec<String>,
) -> Result<(AnyHeader, FlowSeal), OpenError> {
    let mode = shared.config.mesh.e2e;
    // During an upgrade, a node without a card speaks only version 1 and would refuse a
    // sealed header it has to relay: seal only when every node ahead has a card.
    let path_upgraded = || {
        std::iter::once(first_hop)
            .chain(header.hops.iter().map(String::as_str))
            .all(|n| shared.cards.get(n).is_some())
    };
    if mode == E2eMode::Preferred && !path_upgraded() {
        shared.counters.flows_unsealed.fetch_add(1, Ordering::Relaxed);
        return Ok((AnyHeader::Plain(header.clone()), FlowSeal::Plain));
    }
    // Waiting for a card only makes sense when the flow cannot go without one.
    let wait = match mode {
        E2eMode::Required => shared.config.limits.connect_timeout,
        E2eMode::Preferred | E2eMode::Off => std::time::Duration::ZERO,
    };
    let card = match shared.cards.get(exit) {
        _ if mode == E2eMode::Off => None,
        Some(card) => Some(card),
        None if wait.is_zero() => None,
        None => {
            // With no link to the first hop the card cannot come, nor could the flow go:
            // the link is what to name, not the card.
            let started = tokio::time::Instant::now();
            if let Err(e) = shared.pool.connection(first_hop, wait).await {
                return Err(onward::no_link(first_hop, e));
            }
            shared.cards.wait_for(exit, wait.saturating_sub(started.elapsed())).await
        }
    };
    let Some(card) = card else {
        if mode == E2eMode::Required {
            // A link that went down while the card was awaited is the cause to name.
            if shared.pool.current_link(first_hop).is_none() {
                return Err(onward::no_link(first_hop, "it went down"));
            }
            return Err(OpenError::here(
                RefuseReason::NoRoute,
                format!("no seal card for exit `{}` (it has not been seen on any link)", log_escape(exit)),
            ));
        }
        shared.counters.flows_unsealed.fetch_add(1, Ordering::Relaxed);
        return Ok((AnyHeader::Plain(header.clone()), FlowSeal::Plain));
    };
    let own = shared.cards.own_encoded();
    let inner = InnerHeader {
        origin: header.origin.clone(),
        destination: header.destination.clone(),
        subflow: header.subflow,
        sent_at: crate::clock::unix_millis(),
        before,
    };
    let started = handshake::initiate(
        &shared.seal_keys,
        &card.seal_key,
        header.flow_id,
        &own,
        &wire::encode_inner(&inner),
    )
    .map_err(|e| OpenError::here(RefuseReason::BadHeader, format!("cannot seal to `{exit}`: {e}")))?;
    let sealed = SealedHeader {
        flow_id: header.flow_id,
        passed: header.passed.clone(),
        hops: header.hops.clone(),
        opening: started.message,
    };
    shared.counters.flows_sealed.fetch_add(1, Ordering::Relaxed);
    Ok((
        AnyHeader::Sealed(sealed),
        FlowSeal::Origin { early: Box::new(started.early), initiator: Box::new(started.initiator) },
    ))
}

/// The exit's side of a sealed flow, between reading the header and replying.
pub(crate) struct ExitSeal {
    responder: Responder,
    /// The groups the origin's certificate names (for the exit policy).
    pub groups: Vec<String>,
}

/// An opened sealed header: the flow as the exit knows it (the origin authenticated),
/// the nodes of earlier chain legs, and the state to reply with.
pub(crate) struct Unsealed {
    /// The flow; `origin` is the authenticated one.
    pub header: FlowHeader,
    /// Earlier proxy-chain legs (first origin first).
    pub before: Vec<String>,
    /// Replies to the origin.
    pub seal: ExitSeal,
}

/// Opens `outer` (which arrived from `peer`): the opening must be sealed to this node's
/// key, carry a card the mesh CA vouches for, prove the card's key, name the card's node
/// as origin, be fresh, and (with nothing passed) come from the origin itself.
pub(crate) fn open_header(
    shared: &Shared,
    peer: &str,
    outer: &SealedHeader,
) -> Result<Unsealed, (RefuseReason, String)> {
    let bad = |detail: String| (RefuseReason::BadHeader, detail);
    let received = handshake::receive(&shared.seal_keys, outer.flow_id, &outer.opening)
        .map_err(|_| bad("sealed opening does not open with this node's key (a stale card?)".into()))?;
    let origin_card = card::decode(&received.card).ok_or_else(|| bad("malformed origin card".into()))?;
    // A card the exit holds costs no signature check; a new one is checked in full.
    if let Err(e) = shared.cards.learn(shared, origin_card.clone()) {
        return Err(bad(format!("origin card of `{}` refused: {e}", log_escape(&origin_card.node_id))));
    }
    let ephemeral = received.ephemeral;
    let (inner, responder) = received.authenticate(&origin_card.seal_key).map_err(|_| {
        bad(format!("opening not made by the holder of `{}`'s key", log_escape(&origin_card.node_id)))
    })?;
    let inner = wire::decode_inner(&inner, outer, &shared.header_limits)
        .map_err(|e| (RefuseReason::from(&e), e.to_string()))?;
    if inner.origin != origin_card.node_id {
        return Err(bad(format!(
            "opening names `{}` as origin but carries the card of `{}`",
            log_escape(&inner.origin),
            origin_card.node_id
        )));
    }
    let sender = outer.passed.last().unwrap_or(&inner.origin);
    if sender != peer {
        return Err(bad(format!(
            "header names `{}` as its sender, but `{peer}` sent it",
            log_escape(sender)
        )));
    }
    let now = crate::clock::unix_millis();
    shared
        .replay
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(&inner.origin, ephemeral, inner.sent_at, now)
        .map_err(|e| match e {
            ReplayError::Full | ReplayError::OriginFull => (RefuseReason::Overloaded, e.to_string()),
            _ => bad(format!("opening refused: {e}")),
        })?;
    let header = FlowHeader {
        flow_id: outer.flow_id,
        origin: inner.origin,
        passed: inner.before.iter().chain(&outer.passed).cloned().collect(),
        hops: Vec::new(),
        destination: inner.destination,
        subflow: inner.subflow,
    };
    let groups = crate::pki::groups_in_cert(&origin_card.cert);
    Ok(Unsealed { header, before: inner.before, seal: ExitSeal { responder, groups } })
}

/// A sealed reply still to be written (see [`ExitSeal::accept`]).
pub(crate) struct PendingReply(handshake::PendingReply);

impl PendingReply {
    /// The encoded reply for `reply`.
    pub(crate) fn seal(self, reply: &Reply) -> Result<Bytes, String> {
        let message = self.0.seal(&wire::encode_reply(reply)).map_err(|e| e.to_string())?;
        Ok(Bytes::from(wire::encode_reply(&Reply::Sealed(message))))
    }
}

impl ExitSeal {
    /// Who asks for `origin`'s flow, for the exit policy: the authenticated origin and its
    /// certificate's groups when `seal` is there, else the claimed origin (which rules
    /// with `from` never admit).
    pub(crate) fn requester<'a>(seal: Option<&'a ExitSeal>, origin: &'a str) -> Requester<'a> {
        Requester {
            node: origin,
            groups: seal.map_or(&[], |s| s.groups.as_slice()),
            authenticated: seal.is_some(),
        }
    }

    /// The flow's keys now, the reply later (a proxy-chain node).
    pub(crate) fn accept(self) -> Result<(PendingReply, FlowSeal), String> {
        let (pending, sealer, opener) = self.responder.accept().map_err(|e| e.to_string())?;
        Ok((PendingReply(pending), FlowSeal::Exit { sealer: Box::new(sealer), opener: Box::new(opener) }))
    }

    /// The reply bytes for `reply`, sealed, and the flow's seal for the splice.
    pub(crate) fn reply(self, reply: &Reply) -> Result<(Bytes, FlowSeal), String> {
        let replied = self.responder.reply(&wire::encode_reply(reply)).map_err(|e| e.to_string())?;
        let bytes = wire::encode_reply(&Reply::Sealed(replied.message));
        Ok((
            Bytes::from(bytes),
            FlowSeal::Exit { sealer: Box::new(replied.sealer), opener: Box::new(replied.opener) },
        ))
    }
}
