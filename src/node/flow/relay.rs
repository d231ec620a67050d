//! Flows that do not exit here go on to the next node: relayed by the header's hop list
//! (source routing, no routing state of our own), or handed on along the seed's proxy
//! chain by this node's own route for the flow's port.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::RecvStream;
use tracing::info;

use crate::core::route::{Exit, choose_path, static_candidates};
use crate::core::wire::{AnyHeader, Destination, FlowHeader, RefuseReason, Reply};
use crate::logging::log_escape;
use crate::node::flow::inbound::{refuse, refuse_as, refuse_exit, send_refusal};
use crate::node::flow::seal::{self, ExitSeal};
use crate::node::link::send::LinkSend;
use crate::node::observe::flow_registry::FlowRole;
use crate::node::observe::stats::RouteCounters;
use crate::node::splice::relay_tap::{TapAction, TapDirection};
use crate::node::splice::resealed::{Leg, splice_resealed};
use crate::node::splice::streams::{StreamPair, splice_streams};
use crate::node::splice::{FlowEnd, codes};
use crate::node::{FlowGuard, Shared, flow::exit, flow::onward};

/// Relays a flow to `header.hops[0]`, which must be a peer of this node.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: AnyHeader,
    rest: Bytes,
    mut send: LinkSend,
    mut recv: RecvStream,
) {
    if !shared.config.mesh.relay {
        let detail = "this node does not relay (mesh.relay: false)";
        refuse(&shared, &mut send, &mut recv, RefuseReason::RelayNotAllowed, detail).await;
        return;
    }
    let next = header.hops()[0].clone();
    if !shared.pool.is_known(&next) {
        let detail = format!("unknown next hop `{}`", log_escape(&next));
        refuse(&shared, &mut send, &mut recv, RefuseReason::NoRoute, &detail).await;
        return;
    }
    let onward = header.onward(shared.id());
    hand_on(shared, guard, &next, onward, rest, StreamPair { send, recv }, None).await;
}

/// A proxy-chain flow: route it by this node's own route for `port`. A sealed flow
/// (`seal`) ends its leg here and goes on as a new sealed leg from this node, with
/// `before` (the earlier legs' nodes) carried on for the loop and hop checks.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn chain(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: FlowHeader,
    before: Vec<String>,
    port: u16,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    let routes = shared.routes();
    let Some((_, route)) = routes.for_port(port) else {
        let detail = format!("no route for port {port}");
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::NoRoute, &detail).await;
        return;
    };
    route.counters.matches.fetch_add(1, Ordering::Relaxed);
    guard.describe(|m| m.route = Some(route.name.clone()));
    let counters = Some(route.counters.clone());
    let target = route.next_target().to_string();
    let mut onward = header.onward(shared.id());
    let next = match &route.exit {
        Exit::Local => {
            // Flows from the mesh are held to the exit policy, chain or not: a node is
            // never an open relay. The detail does not name the route's target.
            let who = ExitSeal::requester(seal.as_ref(), &header.origin);
            match exit::dial_target(&shared, &target, &who).await {
                Ok(tcp) => {
                    guard.describe(|m| m.role = FlowRole::Exit);
                    exit::reply_and_splice(&shared, guard, tcp, rest, (send, recv), counters, seal).await
                }
                Err((reason, _)) => {
                    let detail = format!("route `{}` for port {port}: {}", route.name, reason.as_str());
                    refuse_exit(&shared, (&mut send, &mut recv), seal, reason, &detail).await;
                }
            }
            return;
        }
        Exit::Remote { exit, paths } => {
            if header.names(exit) {
                let detail = format!("exit `{exit}` is already on this flow's path");
                refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::Loop, &detail).await;
                return;
            }
            // Skip paths through nodes the flow already crossed: they would only be refused.
            let fresh: Vec<Vec<String>> =
                paths.iter().filter(|p| !p.iter().any(|n| header.names(n))).cloned().collect();
            let path = choose_path(exit, &static_candidates(&fresh), |n| shared.link_usable(n));
            onward.hops = path.hops;
            onward.destination = Destination::Target(target);
            path.first_hop
        }
        Exit::Chain(peer) => peer.clone(),
    };
    if !shared.config.mesh.relay {
        let detail = "this node does not relay (mesh.relay: false)";
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::RelayNotAllowed, detail).await;
        return;
    }
    match seal {
        None => {
            hand_on(shared, guard, &next, AnyHeader::Plain(onward), rest, StreamPair { send, recv }, counters)
                .await
        }
        Some(seal) => {
            // This node originates the next leg: its own id, a fresh flow id, the nodes so far.
            let leg_passed = header.passed.get(before.len()..).unwrap_or_default().to_vec();
            let mut before = before;
            before.push(header.origin.clone());
            before.extend(leg_passed);
            let leg = FlowHeader {
                flow_id: shared.new_flow_id(),
                origin: shared.id().to_string(),
                passed: Vec::new(),
                ..onward
            };
            reseal(shared, guard, &next, leg, before, rest, (send, recv, seal), counters).await
        }
    }
}

/// Opens the next sealed leg of a chain from this node and splices the two legs.
#[allow(clippy::too_many_arguments)]
async fn reseal(
    shared: Arc<Shared>,
    guard: FlowGuard,
    next: &str,
    leg: FlowHeader,
    before: Vec<String>,
    rest: Bytes,
    (mut send, mut recv, seal): (LinkSend, RecvStream, ExitSeal),
    route: Option<Arc<RouteCounters>>,
) {
    let nodes_ahead = match leg.destination {
        Destination::RouteByPort(_) => crate::core::wire::HeaderLimits::default().max_hops - 1,
        Destination::Target(_) | Destination::UdpTarget(_) | Destination::Echo => leg.hops.len() + 1,
    };
    match seal::open_stream(&shared, next, &leg, before).await {
        Ok((mut ahead_send, ahead_recv, ahead_seal)) => {
            let (reply, back_seal) = match seal.accept() {
                Ok(r) => r,
                Err(detail) => {
                    let _ = ahead_send.reset(codes::PEER_RESET);
                    let _ = send.reset(codes::PEER_RESET);
                    let _ = recv.stop(codes::PEER_RESET);
                    guard.finish(&FlowEnd::Protocol(detail));
                    return;
                }
            };
            shared.counters.flows_relayed.fetch_add(1, Ordering::Relaxed);
            let back = Leg { send, recv, seal: back_seal };
            let ahead = Leg { send: ahead_send, recv: ahead_recv, seal: ahead_seal };
            let env = shared.flow_env(shared.timeouts_for(nodes_ahead), route, &guard);
            let end = splice_resealed(back, rest, reply, ahead, env).await;
            guard.finish(&end);
        }
        Err(e) => {
            info!(next = %log_escape(next), reason = e.reason.as_str(), detail = %log_escape(&e.detail), "refused to go on");
            let hop = e.hop.as_deref().unwrap_or(shared.id()).to_string();
            match seal.accept().and_then(|(reply, _)| reply.seal(&Reply::refused(e.reason, &hop, &e.detail)))
            {
                Ok(bytes) => {
                    shared.counters.refused_here(e.reason);
                    send_refusal(&shared, &mut send, &mut recv, bytes).await;
                }
                Err(_) => refuse_as(&shared, &mut send, &mut recv, e.reason, &hop, &e.detail).await,
            }
        }
    }
}

/// Opens the stream to `next` and relays between it and `back`.
async fn hand_on(
    shared: Arc<Shared>,
    guard: FlowGuard,
    next: &str,
    header: AnyHeader,
    rest: Bytes,
    mut back: StreamPair,
    route: Option<Arc<RouteCounters>>,
) {
    // A test's hostile relay sees the bytes that came behind the header too.
    let rest = match shared.relay_tap.get().map(|tap| tap(TapDirection::Forward, rest.clone())) {
        Some(TapAction::Send(chunks)) => Bytes::from(chunks.concat()),
        _ => rest,
    };
    let leading = rest.len() as u64;
    match onward::open_stream(&shared, next, &header, rest).await {
        Ok((send, recv)) => {
            shared.counters.flows_relayed.fetch_add(1, Ordering::Relaxed);
            shared.counters.bytes_relayed.fetch_add(leading, Ordering::Relaxed);
            let ahead = StreamPair { send, recv };
            let env = shared.flow_env(shared.timeouts, route, &guard);
            // The bytes that came behind the header went out with it: they count too.
            env.bytes.fetch_add(leading, Ordering::Relaxed);
            let end = splice_streams(back, ahead, env).await;
            guard.finish(&end);
        }
        Err(e) => {
            info!(next = %log_escape(next), reason = e.reason.as_str(), detail = %log_escape(&e.detail), "refused to relay");
            let hop = e.hop.as_deref().unwrap_or(shared.id()).to_string();
            refuse_as(&shared, &mut back.send, &mut back.recv, e.reason, &hop, &e.detail).await;
        }
    }
}
