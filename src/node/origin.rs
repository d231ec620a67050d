//! The origin of a flow: an application connection accepted on a listener, routed to
//! its exit, either this node (a plain TCP proxy) or a peer (a flow stream).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::net::TcpStream;
use tracing::{Instrument, info, info_span, warn};

use crate::core::route::Exit;
use crate::core::wire::{self, FlowHeader, RefuseReason};
use crate::node::local_splice::splice_tcp;
use crate::node::splice::{self, FlowEnd, Prelude};
use crate::node::tcp_io::{self, reset_tcp};
use crate::node::{FlowGuard, Shared};

/// Routes and carries one accepted application connection.
pub async fn handle_connection(shared: Arc<Shared>, listener: String, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    // From here on, any way this task ends short of completion closes with an RST.
    tcp_io::arm_reset_on_drop(&tcp);
    let Some(guard) = FlowGuard::try_new(&shared) else {
        shared.counters.refused_origin(RefuseReason::Overloaded);
        warn!(listener = %listener, "refused a connection: flow limit reached");
        reset_tcp(tcp);
        return;
    };
    let Some((index, route)) = shared.routes.for_listener(&listener) else {
        shared.counters.refused_origin(RefuseReason::NoRoute);
        warn!(listener = %listener, "refused a connection: no route");
        reset_tcp(tcp);
        return;
    };
    let c = &shared.counters;
    c.route_matches[index].fetch_add(1, Ordering::Relaxed);
    c.flows_originated.fetch_add(1, Ordering::Relaxed);
    let flow_id = shared.new_flow_id();
    let target = route.next_target().to_string();
    let span = info_span!("flow", id = flow_id, route = %route.name);
    let end = match &route.exit {
        Exit::Local => local_exit(&shared, tcp, &target).instrument(span.clone()).await,
        Exit::Peer(peer) => {
            let peer = peer.clone();
            via_peer(&shared, tcp, &peer, target, flow_id).instrument(span.clone()).await
        }
    };
    let _enter = span.enter();
    if let FlowEnd::Refused { reason, hop, detail } = &end {
        shared.counters.refused_origin(*reason);
        info!(reason = reason.as_str(), hop = %crate::node::log_escape(hop), detail = %crate::node::log_escape(detail), "flow refused");
    }
    guard.finish(&end);
}

/// Opens a stream to `peer`, writes the header and splices without waiting for the reply.
async fn via_peer(shared: &Shared, tcp: TcpStream, peer: &str, target: String, flow_id: u64) -> FlowEnd {
    let limits = &shared.config.limits;
    let refused = |reason, detail: String| FlowEnd::Refused { reason, hop: shared.id().to_string(), detail };
    let conn = match shared.pool.connection(peer, limits.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            reset_tcp(tcp);
            return refused(RefuseReason::NoRoute, e.to_string());
        }
    };
    let (mut send, mut recv) = match tokio::time::timeout(limits.connect_timeout, conn.open_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            reset_tcp(tcp);
            return refused(RefuseReason::NoRoute, format!("link to `{peer}` failed: {e}"));
        }
        Err(_) => {
            reset_tcp(tcp);
            return refused(RefuseReason::Overloaded, format!("no stream to `{peer}` available in time"));
        }
    };
    let header =
        FlowHeader { flow_id, origin: shared.id().to_string(), hops: Vec::new(), target, subflow: None };
    let bytes = match wire::encode_header(&header) {
        Ok(b) => b,
        Err(e) => {
            splice::abort(tcp, &mut send, &mut recv, splice::codes::REFUSED);
            return refused(RefuseReason::BadHeader, e.to_string());
        }
    };
    // The header normally fits the stream window at once; a link whose window is used up by
    // stalled flows must not hold this flow forever.
    match tokio::time::timeout(limits.connect_timeout, send.write_chunk(Bytes::from(bytes))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            splice::abort(tcp, &mut send, &mut recv, splice::codes::PEER_RESET);
            return FlowEnd::LinkLost(e.to_string());
        }
        Err(_) => {
            splice::abort(tcp, &mut send, &mut recv, splice::codes::TIMEOUT);
            return refused(RefuseReason::Overloaded, format!("link to `{peer}` has no send window"));
        }
    }
    splice::splice(
        tcp,
        send,
        recv,
        Prelude::ExpectReply,
        shared.timeouts,
        shared.counters.clone(),
        shared.force.clone(),
    )
    .await
}

/// This node is the exit: a plain TCP proxy to the target.
async fn local_exit(shared: &Shared, tcp: TcpStream, target: &str) -> FlowEnd {
    let timeout = shared.config.limits.connect_timeout;
    let detail = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            shared.counters.flows_local.fetch_add(1, Ordering::Relaxed);
            return splice_tcp(tcp, upstream, shared.timeouts, shared.counters.clone(), shared.force.clone())
                .await;
        }
        Ok(Err(e)) => format!("{target}: {e}"),
        Err(_) => format!("{target}: connect timed out"),
    };
    reset_tcp(tcp);
    FlowEnd::Refused { reason: RefuseReason::TargetUnreachable, hop: shared.id().to_string(), detail }
}
