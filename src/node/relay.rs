//! Flows that do not exit here go on to the next node: relayed by the header's hop list
//! (source routing, no routing state of our own), or handed on along the seed's proxy
//! chain by this node's own route for the flow's port.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tracing::info;

use crate::core::route::{Exit, choose_path};
use crate::core::wire::{Destination, FlowHeader, RefuseReason};
use crate::node::inbound::refuse;
use crate::node::stream_splice::{StreamPair, splice_streams};
use crate::node::{FlowGuard, Shared, exit, log_escape, onward};

/// Relays a flow to `header.hops[0]`, which must be a peer of this node.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: FlowHeader,
    rest: Bytes,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    if !shared.config.mesh.relay {
        let detail = "this node does not relay (mesh.relay: false)";
        refuse(&shared, &mut send, &mut recv, RefuseReason::RelayNotAllowed, detail).await;
        return;
    }
    let next = header.hops[0].clone();
    if !shared.pool.is_known(&next) {
        let detail = format!("unknown next hop `{}`", log_escape(&next));
        refuse(&shared, &mut send, &mut recv, RefuseReason::NoRoute, &detail).await;
        return;
    }
    let onward = header.onward(shared.id());
    hand_on(shared, guard, &next, onward, rest, StreamPair { send, recv }).await;
}

/// A proxy-chain flow: route it by this node's own route for `port`.
pub(crate) async fn chain(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: FlowHeader,
    port: u16,
    rest: Bytes,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let Some((index, route)) = shared.routes.for_port(port) else {
        let detail = format!("no route for port {port}");
        refuse(&shared, &mut send, &mut recv, RefuseReason::NoRoute, &detail).await;
        return;
    };
    shared.counters.route_matches[index].fetch_add(1, Ordering::Relaxed);
    let target = route.next_target().to_string();
    let mut onward = header.onward(shared.id());
    let next = match &route.exit {
        Exit::Local => {
            // This node's own route names the target, so the exit policy (which governs
            // targets that others name) does not apply.
            let limit = shared.config.limits.connect_timeout;
            match tokio::time::timeout(limit, TcpStream::connect(target.as_str())).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    exit::reply_and_splice(&shared, guard, tcp, rest, send, recv).await;
                }
                _ => {
                    let detail = format!("{target}: not reachable");
                    refuse(&shared, &mut send, &mut recv, RefuseReason::TargetUnreachable, &detail).await;
                }
            }
            return;
        }
        Exit::Remote { exit, paths } => {
            let path = choose_path(exit, paths, |n| shared.pool.current(n).is_some());
            onward.hops = path.hops;
            onward.destination = Destination::Target(target);
            path.first_hop
        }
        Exit::Chain(peer) => peer.clone(),
    };
    if !shared.config.mesh.relay {
        let detail = "this node does not relay (mesh.relay: false)";
        refuse(&shared, &mut send, &mut recv, RefuseReason::RelayNotAllowed, detail).await;
        return;
    }
    hand_on(shared, guard, &next, onward, rest, StreamPair { send, recv }).await;
}

/// Opens the stream to `next` and relays between it and `back`.
async fn hand_on(
    shared: Arc<Shared>,
    guard: FlowGuard,
    next: &str,
    header: FlowHeader,
    rest: Bytes,
    mut back: StreamPair,
) {
    match onward::open_stream(&shared, next, &header, rest).await {
        Ok((send, recv)) => {
            shared.counters.flows_relayed.fetch_add(1, Ordering::Relaxed);
            let ahead = StreamPair { send, recv };
            let end =
                splice_streams(back, ahead, shared.timeouts, shared.counters.clone(), shared.force.clone())
                    .await;
            guard.finish(&end);
        }
        Err((reason, detail)) => {
            info!(next = %log_escape(next), reason = reason.as_str(), %detail, "refused to relay");
            refuse(&shared, &mut back.send, &mut back.recv, reason, &detail).await;
        }
    }
}
