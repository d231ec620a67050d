//! The exit of a UDP association: the exit policy checked on the UDP target as on a TCP
//! one, a connected UDP socket with the don't-fragment flag, the reply, then the splice.
//!
//! The socket is connected, so the kernel hands this association only the target's
//! datagrams (others sending to its port are not carried back), and a port unreachable
//! from the target shows as an error on the socket rather than silence.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use quinn::RecvStream;
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::core::policy::Requester;
use crate::core::wire::RefuseReason;
use crate::logging::log_escape;
use crate::node::flow::exit::{allowed_addresses, send_opened_or_reset};
use crate::node::flow::inbound::refuse_exit;
use crate::node::flow::seal::ExitSeal;
use crate::node::flow::timer::FlowTimeouts;
use crate::node::link::send::LinkSend;
use crate::node::observe::udp::{OpenAssociation, UdpCounters, UdpDrop};
use crate::node::splice::tcp_stream::Prelude;
use crate::node::splice::udp_queue::{self, QueueTx, Refused};
use crate::node::splice::udp_stream::{self, Datagrams, Outgoing, association_end};
use crate::node::{FlowGuard, Shared};

/// Receive buffer: the largest UDP payload, so no datagram is ever truncated.
pub(crate) const RECV_BUFFER: usize = 65_536;

/// Exits a flow whose header names a UDP `host:port` target.
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
    let socket = match connect_target(&shared, target, &who).await {
        Ok(socket) => Arc::new(socket),
        Err((reason, detail)) => {
            info!(target = %log_escape(target), reason = reason.as_str(), %detail, "refused UDP flow");
            refuse_exit(&shared, (&mut send, &mut recv), seal, reason, &detail).await;
            return;
        }
    };
    let seal = match send_opened_or_reset(&shared, (&mut send, &mut recv), seal).await {
        Ok(seal) => seal,
        Err(end) => return guard.finish(&end),
    };
    shared.counters.flows_exited.fetch_add(1, Ordering::Relaxed);
    let _open = OpenAssociation::new(&shared.counters.udp);
    debug!("UDP flow opened");
    let (tx, mut incoming) = udp_queue::queue();
    let reader = tokio::spawn(read_socket(
        socket.clone(),
        tx,
        shared.counters.clone(),
        shared.config.limits.max_datagram,
    ));
    let env = shared.flow_env(udp_timeouts(&shared, 1), None, &guard);
    let datagrams = Datagrams {
        incoming: &mut incoming,
        outgoing: Outgoing::Target(socket),
        draining: shared.draining.clone(),
    };
    let end = udp_stream::splice(send, recv, datagrams, Prelude::WriteFirst(rest), seal, env).await;
    reader.abort();
    guard.finish(&association_end(end));
}

/// The timeouts of a UDP flow: idle after `limits.udp_idle_timeout` (also once one side
/// finished: an association has no half-close worth waiting for), and the reply deadline
/// of a flow with `nodes_ahead` nodes after this one.
pub(crate) fn udp_timeouts(shared: &Shared, nodes_ahead: usize) -> FlowTimeouts {
    let idle = shared.config.limits.udp_idle_timeout;
    FlowTimeouts { idle, half_closed: idle, reply: shared.timeouts_for(nodes_ahead).reply }
}

/// Resolves `target`, keeps what the exit policy allows `who`, and makes a socket
/// connected to the first address, with the don't-fragment flag set.
async fn connect_target(
    shared: &Shared,
    target: &str,
    who: &Requester<'_>,
) -> Result<UdpSocket, (RefuseReason, String)> {
    let budget = shared.config.limits.connect_timeout;
    let allowed = match tokio::time::timeout(budget, allowed_addresses(shared, target, who)).await {
        Ok(r) => r?,
        Err(_) => return Err((RefuseReason::TargetUnreachable, format!("no address within {budget:?}"))),
    };
    let mut last = String::new();
    for addr in allowed {
        match connected_socket(addr).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err((RefuseReason::TargetUnreachable, last))
}

/// A UDP socket connected to `addr` that never fragments what it sends.
pub(crate) async fn connected_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await?;
    forbid_fragments(&socket, addr.is_ipv6())?;
    socket.connect(addr).await?;
    Ok(socket)
}

/// Sets the don't-fragment flag (`IP_PMTUDISC_DO` / `IPV6_PMTUDISC_DO`): a datagram larger
/// than the route's MTU then fails with `EMSGSIZE` and is counted `too_large`, rather than
/// being cut into IP fragments that a lossy path or a firewall would lose whole.
#[cfg(target_os = "linux")]
fn forbid_fragments(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};
    let set = if v6 {
        sockopt::set_ipv6_mtu_discover(socket, Ipv6PathMtuDiscovery::DO)
    } else {
        sockopt::set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::DO)
    };
    set.map_err(io::Error::from)
}

/// Outside Linux the kernel's default applies (documented in `docs/wire.md`).
#[cfg(not(target_os = "linux"))]
fn forbid_fragments(_: &UdpSocket, _: bool) -> io::Result<()> {
    Ok(())
}

/// Reads datagrams from a socket into an association's queue until the queue closes:
/// too large ones (past `max_datagram`) and those that find the queue full are dropped
/// and counted.
pub(crate) async fn read_socket(
    socket: Arc<UdpSocket>,
    tx: QueueTx,
    counters: Arc<crate::node::observe::stats::Counters>,
    max_datagram: usize,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let received = tokio::select! {
            r = socket.recv(&mut buf) => r,
            _ = tx.closed() => return,
        };
        match received {
            Ok(n) => {
                if !queue(&tx, &buf[..n], &counters.udp, max_datagram) {
                    return;
                }
            }
            // A connected socket reports the target's ICMP errors (port unreachable) on
            // a later call; the datagram they answer is gone, the association goes on.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                counters.udp.drop_one(UdpDrop::SendFailed)
            }
            // Anything else: back off rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Counts a received datagram and queues it for the stream, or drops it (too large, or
/// the queue full); `false` when the queue is closed.
pub(crate) fn queue(tx: &QueueTx, datagram: &[u8], udp: &UdpCounters, max_datagram: usize) -> bool {
    udp.received(datagram.len());
    if datagram.len() > max_datagram {
        udp.drop_one(UdpDrop::TooLarge);
        return true;
    }
    match tx.try_send(Bytes::copy_from_slice(datagram)) {
        Ok(()) => true,
        Err(Refused::Full) => {
            udp.drop_one(UdpDrop::Congested);
            true
        }
        Err(Refused::Closed) => false,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};

    #[tokio::test]
    async fn an_exit_socket_never_fragments() {
        let socket = connected_socket("127.0.0.1:9".parse().expect("addr")).await.expect("socket");
        assert_eq!(sockopt::ip_mtu_discover(&socket).expect("get"), Ipv4PathMtuDiscovery::DO);
        // Past the largest UDP payload the send fails with EMSGSIZE, read as `too_large`.
        let err = socket.send(&vec![0u8; 65_507 + 1]).await.expect_err("too large for UDP");
        assert!(crate::node::splice::udp_stream::is_too_large(&err), "{err}");
        if let Ok(v6) = connected_socket("[::1]:9".parse().expect("addr")).await {
            assert_eq!(sockopt::ipv6_mtu_discover(&v6).expect("get"), Ipv6PathMtuDiscovery::DO);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_a_large_datagram_never_queues() {
        let (tx, mut rx) = udp_queue::bounded(1, 100);
        let udp = UdpCounters::default();
        assert!(queue(&tx, b"first", &udp, 10));
        assert!(queue(&tx, b"second", &udp, 10));
        assert!(queue(&tx, b"far too large", &udp, 10));
        let s = udp.snapshot();
        assert_eq!((s.datagrams_in, s.dropped("congested"), s.dropped("too_large")), (3, 1, 1));
        assert_eq!(rx.try_recv().expect("queued"), Bytes::from_static(b"first"));
        drop(rx);
        assert!(!queue(&tx, b"x", &udp, 10), "a closed queue ends the reader");
    }
}
