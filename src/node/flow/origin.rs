//! The origin of a flow: an application connection accepted on a listener, routed to
//! its exit, either this node (a plain TCP proxy) or a peer (a flow stream).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tracing::{Instrument, info, info_span, warn};

use crate::core::route::{ChosenPath, Exit, path_via, pick_relays};
use crate::core::wire::{self, Destination, FlowHeader, RefuseReason};
use crate::node::observe::flow_registry::FlowRole;
use crate::node::observe::path_outcomes::Answer;
use crate::node::observe::stats::RouteCounters;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::tcp_io::{self, reset_tcp};
use crate::node::splice::tcp_pair::splice_tcp;
use crate::node::splice::tcp_stream::Prelude;
use crate::node::splice::{self, FlowEnd};
use crate::node::{FlowGuard, Shared, flow::seal, multipath};

/// Routes and carries one accepted application connection.
pub(crate) async fn handle_connection(shared: Arc<Shared>, listener: String, port: u16, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    // From here on, any way this task ends short of completion closes with an RST.
    tcp_io::arm_reset_on_drop(&tcp);
    let routes = shared.routes();
    let Some((_, route)) = routes.for_listener(&listener) else {
        shared.counters.refused_origin(RefuseReason::NoRoute, None);
        warn!(listener = %listener, "refused a connection: no route");
        reset_tcp(tcp);
        return;
    };
    let Some(guard) = FlowGuard::try_new(&shared) else {
        shared.counters.refused_origin(RefuseReason::Overloaded, Some(&route.counters));
        warn!(listener = %listener, "refused a connection: flow limit reached");
        reset_tcp(tcp);
        return;
    };
    let c = &shared.counters;
    route.counters.matches.fetch_add(1, Ordering::Relaxed);
    let index = route.counters.clone();
    c.flows_originated.fetch_add(1, Ordering::Relaxed);
    let flow_id = shared.new_flow_id();
    let target = route.next_target().to_string();
    // `%`: a string in JSON logs, since a random u64 is past what jq or JavaScript hold exactly.
    let span = info_span!("flow", id = %flow_id, route = %route.name);
    let me = shared.id().to_string();
    let header = |hops: Vec<String>, destination| new_header(&shared, flow_id, hops, destination);
    guard.describe(|m| {
        m.flow_id = flow_id;
        m.origin = me.clone();
        m.role = if route.exit == Exit::Local { FlowRole::Local } else { FlowRole::Origin };
        m.route = Some(route.name.clone());
        m.destination = match route.exit {
            Exit::Chain(_) => format!("port {port}"),
            _ => target.clone(),
        };
    });
    let end = match &route.exit {
        Exit::Local => {
            local_exit(&shared, &guard, tcp, &target, index.clone()).instrument(span.clone()).await
        }
        Exit::Remote { exit, paths } if route.multipath => {
            let candidates = shared.candidates(&route.name, exit, paths);
            guard.describe(|m| m.path = vec![exit.clone()]);
            let h = header(Vec::new(), Destination::Target(target));
            multipath::origin::open_flow(&shared, &guard, tcp, h, exit, candidates, index.clone())
                .instrument(span.clone())
                .await
        }
        Exit::Remote { exit, paths } => {
            let (relays, path) = single_path(&shared, &guard, &route.name, exit, paths);
            let h = header(path.hops, Destination::Target(target));
            let (end, answer) = open_flow(&shared, &guard, tcp, &path.first_hop, h, index.clone())
                .instrument(span.clone())
                .await;
            shared.path_outcomes.record(&route.name, &relays, exit, &end, answer);
            end
        }
        Exit::Chain(peer) => {
            guard.describe(|m| m.path = vec![peer.clone()]);
            let h = header(Vec::new(), Destination::RouteByPort(port));
            open_flow(&shared, &guard, tcp, peer, h, index).instrument(span.clone()).await.0
        }
    };
    let _enter = span.enter();
    if let FlowEnd::Refused { reason, hop, detail } = &end {
        shared.counters.refused_origin(*reason, Some(&route.counters));
        info!(reason = reason.as_str(), hop = %crate::logging::log_escape(hop), detail = %crate::logging::log_escape(detail), "flow refused");
    }
    guard.finish(&end);
}

/// The header of a new flow that this node originates.
pub(crate) fn new_header(
    shared: &Shared,
    flow_id: u64,
    hops: Vec<String>,
    destination: Destination,
) -> FlowHeader {
    FlowHeader {
        flow_id,
        origin: shared.id().to_string(),
        passed: Vec::new(),
        hops,
        destination,
        subflow: None,
    }
}

/// The path a new single-path flow of route `route` takes to `exit`: the relays chosen
/// (for the route's path outcomes) and the path, which `guard` records.
pub(crate) fn single_path(
    shared: &Shared,
    guard: &FlowGuard,
    route: &str,
    exit: &str,
    paths: &[Vec<String>],
) -> (Vec<String>, ChosenPath) {
    let candidates = shared.candidates(route, exit, paths);
    let relays = pick_relays(exit, &candidates, |n| shared.link_usable(n));
    let path = path_via(exit, &relays);
    guard.describe(|m| m.path = std::iter::once(path.first_hop.clone()).chain(path.hops.clone()).collect());
    (relays, path)
}

/// Opens the flow's stream to `first_hop`, writes the header and splices without waiting
/// for the reply; returns how the flow ended and what the exit answered.
async fn open_flow(
    shared: &Shared,
    guard: &FlowGuard,
    tcp: TcpStream,
    first_hop: &str,
    header: FlowHeader,
    route: Arc<RouteCounters>,
) -> (FlowEnd, Answer) {
    // A proxy chain may go on for as long as the hop limit allows.
    let nodes_ahead = match header.destination {
        Destination::RouteByPort(_) => wire::HeaderLimits::default().max_hops - 1,
        Destination::Target(_) | Destination::UdpTarget(_) | Destination::Echo => header.hops.len() + 1,
    };
    match seal::open_stream(shared, first_hop, &header, Vec::new()).await {
        Ok((send, recv, seal)) => {
            let mut env = shared.flow_env(shared.timeouts_for(nodes_ahead), Some(route), guard);
            let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
            env.answered = Some(answered.clone());
            let sealed = !matches!(seal, FlowSeal::Plain);
            let end = splice::tcp_stream::splice(tcp, send, recv, Prelude::ExpectReply, seal, env).await;
            (end, Answer { sealed, answered: answered.load(Ordering::Relaxed) })
        }
        Err(e) => {
            reset_tcp(tcp);
            let end = FlowEnd::Refused {
                reason: e.reason,
                hop: e.hop.unwrap_or_else(|| shared.id().to_string()),
                detail: e.detail,
            };
            // No stream, so no answer; a refusal from further on came in the clear.
            (end, Answer { sealed: shared.config.mesh.e2e != crate::config::E2eMode::Off, answered: false })
        }
    }
}

/// This node is the exit: a plain TCP proxy to the target.
async fn local_exit(
    shared: &Shared,
    guard: &FlowGuard,
    tcp: TcpStream,
    target: &str,
    route: Arc<RouteCounters>,
) -> FlowEnd {
    let timeout = shared.config.limits.connect_timeout;
    let detail = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            shared.counters.flows_local.fetch_add(1, Ordering::Relaxed);
            return splice_tcp(tcp, upstream, shared.flow_env(shared.timeouts, Some(route), guard)).await;
        }
        Ok(Err(e)) => format!("{target}: {e}"),
        Err(_) => format!("{target}: connect timed out"),
    };
    reset_tcp(tcp);
    FlowEnd::Refused { reason: RefuseReason::TargetUnreachable, hop: shared.id().to_string(), detail }
}
