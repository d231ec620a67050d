//! UDP listeners: one socket per listener, and per client address one association,
//! carried through the mesh as one flow (see [`crate::node::splice::udp_stream`]).
//!
//! The listener's task reads every datagram and hands it to its client's association
//! through that association's bounded queue (a full queue drops it, `congested`). A new
//! client address opens an association, a task that routes it like a TCP connection
//! (the same route table, path choice, header, seal and refusals) with a
//! `Destination::UdpTarget`. Associations are capped node-wide
//! (`limits.max_udp_associations`): past the cap a new client's datagrams are dropped and
//! counted (`association_cap`), with a warning at most every ten seconds. An association
//! leaves the table when its task ends (idle past `limits.udp_idle_timeout`, refused, or
//! failed); the client's next datagram opens a new one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{Instrument, info, info_span, warn};

use crate::core::datagram::{AssociationTable, Lookup};
use crate::core::route::Exit;
use crate::core::wire::{Destination, RefuseReason};
use crate::node::flow::origin::{new_header, single_path};
use crate::node::flow::seal;
use crate::node::flow::udp_exit::{RECV_BUFFER, connected_socket, queue, udp_timeouts};
use crate::node::observe::flow_registry::FlowRole;
use crate::node::observe::path_outcomes::Answer;
use crate::node::observe::udp::{OpenAssociation, UdpDrop};
use crate::node::splice::FlowEnd;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::tcp_stream::Prelude;
use crate::node::splice::udp_queue::{self, QueueRx, QueueTx};
use crate::node::splice::udp_stream::{self, Datagrams, Outgoing, association_end};
use crate::node::{FlowGuard, Shared};

/// How long a refused association keeps dropping its client's datagrams (counted
/// `refused`) before the next one may open a new flow: a client that keeps sending to a
/// refused target costs the mesh one flow per this interval, not one per datagram.
const REFUSED_HOLD: Duration = Duration::from_secs(1);

/// One listener's table: client address to its association's queue.
type Table = Mutex<AssociationTable<QueueTx>>;

/// Associations this node's UDP listeners hold open (the cap's count).
#[derive(Debug, Default)]
pub(crate) struct OriginAssociations(AtomicUsize);

/// Receive buffer asked for a UDP listener's socket: a burst from many clients waits in
/// the kernel while the listener's task hands datagrams on, rather than being dropped
/// unseen (the kernel may grant less; what it drops is not counted here).
const LISTENER_RECV_BUFFER: usize = 4 << 20;

/// Binds a UDP listener's socket.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(LISTENER_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Reads datagrams on `socket` until the node starts draining, and hands each to its
/// client's association.
pub(crate) async fn serve(shared: Arc<Shared>, name: String, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let table: Arc<Table> = Default::default();
    let mut draining = shared.draining.clone();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = crate::shutdown::wait_true(&mut draining) => return,
        };
        match received {
            Ok((n, client)) => dispatch(&shared, &name, (&socket, &table), client, &buf[..n]),
            Err(e) => {
                // An unconnected socket reports little (no ICMP errors); whatever it is,
                // back off rather than spin.
                warn!(listener = %name, error = %e, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Hands one datagram from `client` to its association, opening one when the node has
/// room.
fn dispatch(
    shared: &Arc<Shared>,
    name: &str,
    (socket, table): (&Arc<UdpSocket>, &Arc<Table>),
    client: SocketAddr,
    datagram: &[u8],
) {
    let udp = &shared.counters.udp;
    let limits = &shared.config.limits;
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let open = shared.udp_associations.0.load(Ordering::Relaxed);
    match t.lookup(client, open, limits.max_udp_associations, Instant::now()) {
        Lookup::Known(tx) => {
            if queue(tx, datagram, udp, limits.max_datagram) {
                return;
            }
            // Its association ended and is on its way out of the table: open a new one.
        }
        Lookup::Open => {}
        Lookup::Full { warn } => {
            udp.received(datagram.len());
            udp.drop_one(UdpDrop::AssociationCap);
            if let Some(unlogged) = warn {
                warn!(
                    listener = %name,
                    cap = limits.max_udp_associations,
                    dropped_since_last_warning = unlogged,
                    "UDP association cap reached (limits.max_udp_associations): datagrams from new client addresses are dropped"
                );
            }
            return;
        }
    }
    let (tx, rx) = udp_queue::queue();
    if !queue(&tx, datagram, udp, limits.max_datagram) {
        return;
    }
    let id = t.insert(client, tx);
    shared.udp_associations.0.fetch_add(1, Ordering::Relaxed);
    let entry = Entry { table: table.clone(), client, id, shared: shared.clone() };
    tokio::spawn(association(entry, name.to_string(), socket.clone(), rx));
}

/// An association's place in its table and in the node's count, given back on drop.
struct Entry {
    table: Arc<Table>,
    client: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).remove(self.client, self.id);
        self.shared.udp_associations.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One association: routed like a TCP connection, then spliced until it is idle.
async fn association(entry: Entry, listener: String, socket: Arc<UdpSocket>, mut rx: QueueRx) {
    let shared = entry.shared.clone();
    let _open = OpenAssociation::new(&shared.counters.udp);
    let routes = shared.routes();
    let Some((_, route)) = routes.for_listener(&listener) else {
        shared.counters.refused_origin(RefuseReason::NoRoute, None);
        warn!(listener = %listener, "refused a UDP association: no route");
        return hold_refused(&shared, &mut rx).await;
    };
    let Some(guard) = FlowGuard::try_new(&shared) else {
        shared.counters.refused_origin(RefuseReason::Overloaded, Some(&route.counters));
        warn!(listener = %listener, "refused a UDP association: flow limit reached");
        return hold_refused(&shared, &mut rx).await;
    };
    route.counters.matches.fetch_add(1, Ordering::Relaxed);
    shared.counters.flows_originated.fetch_add(1, Ordering::Relaxed);
    let flow_id = shared.new_flow_id();
    let target = route.next_target().to_string();
    let span = info_span!("flow", id = %flow_id, route = %route.name, udp_client = %entry.client);
    guard.describe(|m| {
        m.flow_id = flow_id;
        m.origin = shared.id().to_string();
        m.role = if route.exit == Exit::Local { FlowRole::Local } else { FlowRole::Origin };
        m.route = Some(route.name.clone());
        m.destination = format!("udp:{target}");
    });
    let outgoing = Outgoing::Client(socket, entry.client);
    let end = match &route.exit {
        Exit::Remote { exit, paths } if !route.multipath => {
            let (relays, path) = single_path(&shared, &guard, &route.name, exit, paths);
            let header = new_header(&shared, flow_id, path.hops, Destination::UdpTarget(target));
            let datagrams = Datagrams { incoming: &mut rx, outgoing, draining: shared.draining.clone() };
            let (end, answer) =
                remote(&shared, &guard, &path.first_hop, header, datagrams, route.counters.clone())
                    .instrument(span.clone())
                    .await;
            shared.path_outcomes.record(&route.name, &relays, exit, &end, answer);
            end
        }
        Exit::Local => local(&shared, &mut rx, outgoing, &target).instrument(span.clone()).await,
        // `proxy check` refuses UDP routes that are multipath or proxy chains.
        Exit::Remote { .. } | Exit::Chain(_) => FlowEnd::Refused {
            reason: RefuseReason::NoRoute,
            hop: shared.id().to_string(),
            detail: "a UDP route cannot be multipath or a proxy chain".into(),
        },
    };
    let _enter = span.enter();
    if let FlowEnd::Refused { reason, hop, detail } = &end {
        shared.counters.refused_origin(*reason, Some(&route.counters));
        info!(reason = reason.as_str(), hop = %crate::logging::log_escape(hop), detail = %crate::logging::log_escape(detail), "UDP flow refused");
        drop(_enter);
        guard.finish(&end);
        return hold_refused(&shared, &mut rx).await;
    }
    guard.finish(&association_end(end));
}

/// Opens the association's stream to `first_hop` and splices it; returns how it ended
/// and what the exit answered.
async fn remote(
    shared: &Shared,
    guard: &FlowGuard,
    first_hop: &str,
    header: crate::core::wire::FlowHeader,
    datagrams: Datagrams<'_>,
    route: Arc<crate::node::observe::stats::RouteCounters>,
) -> (FlowEnd, Answer) {
    let nodes_ahead = header.hops.len() + 1;
    match seal::open_stream(shared, first_hop, &header, Vec::new()).await {
        Ok((send, recv, seal)) => {
            let mut env = shared.flow_env(udp_timeouts(shared, nodes_ahead), Some(route), guard);
            let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
            env.answered = Some(answered.clone());
            let sealed = !matches!(seal, FlowSeal::Plain);
            let end = udp_stream::splice(send, recv, datagrams, Prelude::ExpectReply, seal, env).await;
            (end, Answer { sealed, answered: answered.load(Ordering::Relaxed) })
        }
        Err(e) => {
            let end = FlowEnd::Refused {
                reason: e.reason,
                hop: e.hop.unwrap_or_else(|| shared.id().to_string()),
                detail: e.detail,
            };
            // No stream, so no answer; a refusal from further on came in the clear.
            let sealed = shared.config.mesh.e2e != crate::config::E2eMode::Off;
            (end, Answer { sealed, answered: false })
        }
    }
}

/// This node is the exit: datagrams go straight to the target from a socket connected
/// to it, until the association is idle.
async fn local(shared: &Shared, rx: &mut QueueRx, back: Outgoing, target: &str) -> FlowEnd {
    let udp = &shared.counters.udp;
    let limits = &shared.config.limits;
    let connect = async {
        let addr = tokio::net::lookup_host(target)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        connected_socket(addr).await
    };
    let target_socket = match tokio::time::timeout(limits.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable_here(shared, format!("{target}: {e}")),
        Err(_) => return unreachable_here(shared, format!("{target}: no address in time")),
    };
    shared.counters.flows_local.fetch_add(1, Ordering::Relaxed);
    let socket = Arc::new(target_socket);
    let to_target = Outgoing::Target(socket.clone());
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut force = shared.force.clone();
    let mut draining = shared.draining.clone();
    loop {
        let idle = tokio::time::sleep(limits.udp_idle_timeout);
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => to_target.send(&d, udp).await,
                None => return FlowEnd::Completed,
            },
            r = socket.recv(&mut buf) => match r {
                Ok(n) if n > limits.max_datagram => {
                    udp.received(n);
                    udp.drop_one(UdpDrop::TooLarge);
                }
                Ok(n) => {
                    udp.received(n);
                    back.send(&buf[..n], udp).await;
                }
                Err(_) => udp.drop_one(UdpDrop::SendFailed),
            },
            _ = idle => return FlowEnd::TimedOut("idle"),
            _ = crate::shutdown::wait_true(&mut draining) => return FlowEnd::TimedOut("draining"),
            _ = crate::shutdown::wait_true(&mut force) => return FlowEnd::Aborted,
        }
    }
}

fn unreachable_here(shared: &Shared, detail: String) -> FlowEnd {
    FlowEnd::Refused { reason: RefuseReason::TargetUnreachable, hop: shared.id().to_string(), detail }
}

/// After a refusal: drops (and counts) what the client sends for [`REFUSED_HOLD`], then
/// lets the association leave the table.
async fn hold_refused(shared: &Shared, rx: &mut QueueRx) {
    let udp = &shared.counters.udp;
    // What was queued while the flow was being opened is lost with it.
    while rx.try_recv().is_some() {
        udp.drop_one(UdpDrop::Refused);
    }
    let until = tokio::time::Instant::now() + REFUSED_HOLD;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, rx.recv()).await {
        udp.drop_one(UdpDrop::Refused);
    }
}
