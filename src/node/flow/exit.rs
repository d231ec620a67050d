//! The exit of a flow: apply the exit policy, dial the target, reply, then splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::RecvStream;
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::core::policy::{ExitPolicy, Requester};
use crate::core::wire::{self, RefuseReason, Reply};
use crate::logging::log_escape;
use crate::node::flow::inbound::refuse_exit;
use crate::node::flow::seal::ExitSeal;
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::tcp_io;
use crate::node::splice::tcp_stream::Prelude;
use crate::node::splice::{self, FlowEnd, codes};
use crate::node::{FlowGuard, Shared};

/// Exits a flow whose header names a `host:port` target.
pub(crate) async fn exit_flow(
    shared: Arc<Shared>,
    guard: FlowGuard,
    origin: String,
    target: &str,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    let who = ExitSeal::requester(seal.as_ref(), &origin);
    let tcp = match dial_target(&shared, target, &who).await {
        Ok(tcp) => tcp,
        Err((reason, detail)) => {
            info!(target = %log_escape(target), reason = reason.as_str(), %detail, "refused flow");
            refuse_exit(&shared, (&mut send, &mut recv), seal, reason, &detail).await;
            return;
        }
    };
    reply_and_splice(&shared, guard, tcp, rest, (send, recv), None, seal).await;
}

/// Sends `Opened` (sealed when `seal` is there) and splices the target connection with
/// the stream.
pub(crate) async fn reply_and_splice(
    shared: &Shared,
    guard: FlowGuard,
    tcp: TcpStream,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    route: Option<Arc<crate::node::observe::stats::RouteCounters>>,
    seal: Option<ExitSeal>,
) {
    tcp_io::arm_reset_on_drop(&tcp);
    let seal = match send_opened(shared, &mut send, seal).await {
        Ok(seal) => seal,
        Err((code, end)) => {
            splice::tcp_stream::abort(tcp, &mut send, &mut recv, code);
            guard.finish(&end);
            return;
        }
    };
    shared.counters.flows_exited.fetch_add(1, Ordering::Relaxed);
    debug!("flow opened");
    let env = shared.flow_env(shared.timeouts, route, &guard);
    let end = splice::tcp_stream::splice(tcp, send, recv, Prelude::WriteFirst(rest), seal, env).await;
    guard.finish(&end);
}

/// The `Opened` reply, sealed for a sealed flow, and the seal the splice then uses.
/// Sends `Opened` (sealed when `seal` is there) within `limits.connect_timeout`; on
/// failure, the code to reset the stream with and how the flow ended.
pub(crate) async fn send_opened(
    shared: &Shared,
    send: &mut LinkSend,
    seal: Option<ExitSeal>,
) -> Result<FlowSeal, (quinn::VarInt, FlowEnd)> {
    let (opened, seal) =
        opened_reply(seal).map_err(|detail| (codes::TCP_RESET, FlowEnd::Protocol(detail)))?;
    let limit = shared.config.limits.connect_timeout;
    match tokio::time::timeout(limit, send.write_first(&mut [opened])).await {
        Ok(Ok(())) => Ok(seal),
        _ => Err((codes::TIMEOUT, FlowEnd::TimedOut("reply"))),
    }
}

/// [`send_opened`] for an exit with no connection of its own to abort (UDP, echo): on
/// failure both directions of the stream are reset, and the flow's end is returned.
pub(crate) async fn send_opened_or_reset(
    shared: &Shared,
    (send, recv): (&mut LinkSend, &mut RecvStream),
    seal: Option<ExitSeal>,
) -> Result<FlowSeal, FlowEnd> {
    send_opened(shared, send, seal).await.map_err(|(code, end)| {
        let _ = send.reset(code);
        let _ = recv.stop(code);
        end
    })
}

pub(crate) fn opened_reply(seal: Option<ExitSeal>) -> Result<(Bytes, FlowSeal), String> {
    match seal {
        Some(seal) => seal.reply(&Reply::Opened),
        None => Ok((Bytes::from(wire::encode_reply(&Reply::Opened)), FlowSeal::Plain)),
    }
}

/// Resolves the target, keeps the addresses the exit policy allows `who`, and connects to
/// the first that answers, all within one `connect_timeout`. A name is resolved only when
/// some rule could allow it, so a deny-all node never looks up names peers send it.
pub(crate) async fn dial_target(
    shared: &Shared,
    target: &str,
    who: &Requester<'_>,
) -> Result<TcpStream, (RefuseReason, String)> {
    let budget = shared.config.limits.connect_timeout;
    let dial = async { connect_first(allowed_addresses(shared, target, who).await?).await };
    match tokio::time::timeout(budget, dial).await {
        Ok(r) => r,
        Err(_) => Err((RefuseReason::TargetUnreachable, format!("no connection within {budget:?}"))),
    }
}

/// The addresses of `target` the exit policy allows `who` to reach, resolved by the
/// node's resolver (TCP and UDP targets alike); the caller bounds the time. A name is
/// resolved only when some rule could allow it.
pub(crate) async fn allowed_addresses(
    shared: &Shared,
    target: &str,
    who: &Requester<'_>,
) -> Result<Vec<SocketAddr>, (RefuseReason, String)> {
    let policy = shared.exit_policy();
    let (host, port) = split_target(target);
    if !policy.may_allow_for(who, host, port) {
        let closest = policy.closest_before_resolving(who, host, port);
        return Err((RefuseReason::Policy, policy_refusal(&policy, target, who, closest)));
    }
    let budget = shared.config.limits.connect_timeout;
    let own = Own { services: own_services(shared), addresses: shared.own_addresses.current() };
    // An unsealed flow's origin is a claim anyone on the path can make: such flows share
    // one origin's quota of lookups, so rotating claimed names cannot take the node's.
    let asker = if who.authenticated { who.node } else { "(unsealed flows)" };
    let resolved = shared.resolver.lookup(asker, host, port, budget);
    allowed_of(&policy, who, &own, resolved, host).await
}

fn split_target(target: &str) -> (&str, u16) {
    match target.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p.parse().unwrap_or(0)),
        None => (target, 0),
    }
}

/// What of this host a flow must not reach by a broad rule.
struct Own {
    /// The node's own services: never dialed for a flow.
    services: Vec<SocketAddr>,
    /// The host's addresses (interfaces, `mesh.advertise`): reached only by a rule naming
    /// the address.
    addresses: Arc<[std::net::IpAddr]>,
}

/// This node's own service addresses (the admin API, the mesh endpoint, the port of links
/// over TCP): never dialed for a flow, whatever the policy says, so a flow cannot reach
/// the admin API from inside.
fn own_services(shared: &Shared) -> Vec<SocketAddr> {
    let mut own = vec![shared.admin_addr];
    own.extend(shared.endpoint.local_addr().ok());
    own.extend(shared.tcp_links_addr);
    own
}

/// Whether `addr` is one of `own` services: the same port on the same address, on
/// loopback, or on any address when the service listens on all of them.
fn is_own_service(own: &[SocketAddr], addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    own.iter().any(|o| {
        o.port() == addr.port()
            && (o.ip().to_canonical() == ip || o.ip().is_unspecified() || ip.is_loopback())
    })
}

/// The refusal detail: the target, and, when a rule covers it for other origins only,
/// that rule's place in `exit_policy.allow` (not its contents: the requester learns no more
/// of the policy than that). The exit's log names the rule in full.
fn policy_refusal(policy: &ExitPolicy, shown: &str, who: &Requester<'_>, closest: Option<usize>) -> String {
    match closest.and_then(|i| policy.rule(i).map(|r| (i, r))) {
        Some((i, rule)) => {
            info!(origin = %log_escape(who.node), authenticated = who.authenticated, rule = %rule, "exit policy rule is for other origins");
            format!(
                "exit policy does not allow {} for `{}`: the closest rule, allow[{i}], is for other origins",
                log_escape(shown),
                log_escape(who.node)
            )
        }
        None => format!("exit policy does not allow {}", log_escape(shown)),
    }
}

async fn allowed_of(
    policy: &ExitPolicy,
    who: &Requester<'_>,
    own: &Own,
    resolved: impl std::future::Future<Output = Result<Vec<SocketAddr>, (RefuseReason, String)>>,
    host: &str,
) -> Result<Vec<SocketAddr>, (RefuseReason, String)> {
    let resolved = resolved.await?;
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| policy.allows_for_at(who, host, *a, &own.addresses) && !is_own_service(&own.services, *a))
        .collect();
    if allowed.is_empty() {
        let shown: Vec<String> = resolved.iter().map(ToString::to_string).collect();
        let closest = resolved.iter().find_map(|a| policy.closest_for_at(who, host, *a, &own.addresses));
        return Err((RefuseReason::Policy, policy_refusal(policy, &shown.join(", "), who, closest)));
    }
    Ok(allowed)
}

/// Connects to the first of `allowed` that answers.
async fn connect_first(allowed: Vec<SocketAddr>) -> Result<TcpStream, (RefuseReason, String)> {
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
