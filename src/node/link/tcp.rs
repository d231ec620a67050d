//! Links over TLS on TCP, for where UDP is blocked.
//!
//! A link over TCP is a QUIC connection whose packets travel inside one TLS 1.3
//! connection ([`StreamSocket`]), on a QUIC endpoint of its own. So the rest of the node
//! gets the same `quinn::Connection` whichever transport carries a link: one stream per
//! flow with its own flow control, half-close and resets, the fair turns at the send
//! buffer, stalled-flow isolation and seal cards all work unchanged. The choice against a
//! stream multiplexer (yamux, HTTP/2) over TLS: those would need a second implementation
//! of everything the data plane does with QUIC streams, and still lack QUIC's per-stream
//! resets with codes, stream priorities and datagrams.
//!
//! Both layers authenticate with the node's identity: the outer TLS runs the same
//! verifiers as QUIC (mesh CA, revocations, TLS 1.3 only, no resumption), so a TCP
//! connection from outside the mesh never reaches a QUIC endpoint; the QUIC handshake
//! inside then names the peer, as on UDP. The kernel's TCP congestion control governs the
//! path (`bbr` when the link runs a model-based controller, else the one named alike);
//! QUIC's own controller above it sees no loss, only TCP's queue.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use quinn::Connection;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::{Congestion, TcpBind};
use crate::core::link_rule::LinkTransport;
use crate::node::Shared;
use crate::node::link::connect::{admit, expect_peer};
use crate::node::link::endpoint::tcp_endpoint_config;
use crate::node::link::peers::LINK_TRANSPORT_LOST;
use crate::node::link::stream_socket::{StreamEnded, StreamSocket};

/// TCP connections in their handshakes at once; more are closed at once. Keeps a flood of
/// connections from outside the mesh from costing more than this many TLS handshakes at a
/// time.
const HANDSHAKES: usize = 64;
/// Handshakes at once from one source address, so one host cannot hold every slot.
const HANDSHAKES_PER_SOURCE: usize = 4;
/// Unsent bytes the kernel keeps queued per link beyond what is in flight: a new flow's
/// opening, which QUIC puts first, waits behind at most this much.
const NOT_SENT_LOW_WATER: u32 = 128 * 1024;
/// How long a closed link's endpoint may take to tell the peer before its TCP connection
/// is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Attempts at drawing an ephemeral port free on both UDP and TCP.
const PAIR_ATTEMPTS: usize = 16;

/// The mesh's UDP socket (at `mesh.bind`) and the TCP listener for links (see [`bind`]).
/// With an ephemeral port (`:0`) and the default `tcp_bind`, the pair is drawn again when
/// the UDP port's number is taken on TCP, so such a node always accepts links over TCP.
pub(crate) fn bind_pair(
    mesh: &crate::config::MeshConfig,
) -> anyhow::Result<(std::net::UdpSocket, Option<TcpListener>)> {
    let redraw = mesh.bind.port() == 0 && matches!(mesh.tcp_bind, TcpBind::SameAsQuic);
    for _ in 1..PAIR_ATTEMPTS {
        let socket = bind_udp(mesh)?;
        let quic = socket.local_addr()?;
        if !redraw {
            return Ok((socket, bind(mesh.tcp_bind, quic)?));
        }
        if let Ok(listener) = crate::node::flow::listener::bind(quic) {
            return Ok((socket, Some(listener)));
        }
        debug!(port = quic.port(), "the mesh's UDP port is taken on TCP: drawing another");
    }
    let socket = bind_udp(mesh)?;
    let quic = socket.local_addr()?;
    Ok((socket, bind(mesh.tcp_bind, quic)?))
}

fn bind_udp(mesh: &crate::config::MeshConfig) -> anyhow::Result<std::net::UdpSocket> {
    crate::quic::bind_udp(mesh.bind, mesh.udp_buffer)
        .with_context(|| format!("mesh.bind: cannot bind UDP {}", mesh.bind))
}

/// Binds the listener for links over TCP (`mesh.tcp_bind`); `quic` is the address the
/// QUIC endpoint got. `None` with `off`, or when the default port is taken (said in the
/// log: only an explicit address must bind).
pub(crate) fn bind(tcp_bind: TcpBind, quic: SocketAddr) -> anyhow::Result<Option<TcpListener>> {
    let addr = match tcp_bind {
        TcpBind::Off => return Ok(None),
        TcpBind::At(addr) => {
            let listener = crate::node::flow::listener::bind(addr)
                .with_context(|| format!("mesh.tcp_bind: cannot bind TCP {addr}"))?;
            return Ok(Some(listener));
        }
        TcpBind::SameAsQuic => quic,
    };
    match crate::node::flow::listener::bind(addr) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) => {
            warn!(%addr, error = %e, "no links over TCP accepted: the QUIC port is taken on TCP (set mesh.tcp_bind)");
            Ok(None)
        }
    }
}

/// Accepts links over TCP until the node drains.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut draining = shared.draining.clone();
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "TCP link accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::wait_true(&mut draining) => return,
        };
        // Over either cap the connection is closed at once rather than queued: waiting
        // connections would hold the slots as well as handshaking ones.
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            debug!(%remote, "TCP link refused: {HANDSHAKES} handshakes in progress");
            continue;
        };
        let Some(source) = SourceSlot::take(&per_source, remote.ip()) else {
            debug!(%remote, "TCP link refused: {HANDSHAKES_PER_SOURCE} handshakes in progress from this address");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let deadline = shared.config.limits.connect_timeout;
            let accepted = tokio::time::timeout(deadline, accept(&shared, tcp, remote)).await;
            drop((permit, source));
            match accepted {
                Ok(Ok(conn)) if *shared.draining.borrow() => {
                    conn.close(crate::node::link::peers::LINK_SHUTDOWN, b"shutdown");
                }
                Ok(Ok(conn)) => admit(&shared, conn, LinkTransport::Tcp),
                Ok(Err(e)) => debug!(%remote, error = %format!("{e:#}"), "incoming TCP link failed"),
                Err(_) => debug!(%remote, "incoming TCP link timed out in its handshake"),
            }
        });
    }
}

/// The outer TLS handshake of an accepted TCP connection, then the QUIC handshake inside.
async fn accept(shared: &Shared, tcp: TcpStream, remote: SocketAddr) -> anyhow::Result<Connection> {
    prepare(&tcp, shared.config.mesh.congestion);
    let local = tcp.local_addr()?;
    let configs = shared.tls.tcp();
    let tls = tokio_rustls::TlsAcceptor::from(configs.tls_server).accept(tcp).await?;
    let (socket, ended) = StreamSocket::new(tls, local, remote);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        tcp_endpoint_config(),
        Some(configs.quic_server),
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )?;
    let incoming = endpoint.accept().await.context("the endpoint closed")?;
    // One link per TCP connection: a second QUIC connection inside it is refused.
    endpoint.set_server_config(None);
    let conn = incoming.await?;
    tokio::spawn(supervise_endpoint(endpoint, socket, ended));
    Ok(conn)
}

/// Dials `peer` at `address` over TLS on TCP and returns the QUIC connection inside.
pub(crate) async fn dial(shared: &Shared, peer: &str, address: &str) -> anyhow::Result<Connection> {
    let timeout = shared.config.limits.connect_timeout;
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| anyhow::anyhow!("resolving {address} timed out"))??;
    let mut last = anyhow::anyhow!("{address} resolves to no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, dial_addr(shared, peer, addr)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => last = e.context(format!("TCP {addr}")),
            Err(_) => last = anyhow::anyhow!("TCP {addr}: no link within {timeout:?}"),
        }
    }
    Err(last)
}

async fn dial_addr(shared: &Shared, peer: &str, addr: SocketAddr) -> anyhow::Result<Connection> {
    let tcp = TcpStream::connect(addr).await?;
    prepare(&tcp, shared.config.mesh.congestion);
    let local = tcp.local_addr()?;
    let configs = shared.tls.tcp();
    let name = ServerName::try_from(peer.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(configs.tls_client).connect(name, tcp).await?;
    let (socket, ended) = StreamSocket::new(tls, local, addr);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        tcp_endpoint_config(),
        None,
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )?;
    let conn = endpoint.connect_with(configs.quic_client, addr, peer)?.await?;
    let conn = expect_peer(conn, peer)?;
    tokio::spawn(supervise_endpoint(endpoint, socket, ended));
    Ok(conn)
}

/// Ties a link's QUIC endpoint to its TCP connection: when the TCP connection ends, the
/// QUIC connection is closed at once (rather than after the idle timeout); when the QUIC
/// connection ends, the TCP connection is dropped once the close has been sent.
async fn supervise_endpoint(endpoint: quinn::Endpoint, socket: Arc<StreamSocket>, mut ended: StreamEnded) {
    tokio::select! {
        _ = ended.wait_for(|e| *e) => {
            endpoint.close(LINK_TRANSPORT_LOST, b"TCP connection lost");
            debug!("TCP connection under a link ended");
        }
        _ = endpoint.wait_idle() => {}
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    socket.close();
}

/// One source address's share of the handshake slots, given back when dropped.
struct SourceSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= HANDSHAKES_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(Self { counts: counts.clone(), ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Socket options of a link's TCP connection: no Nagle delay (QUIC batches already), a
/// small unsent queue in the kernel (so QUIC's priorities still decide what goes next),
/// and the kernel congestion controller of the link's family, logged (it is the one that
/// governs the path).
fn prepare(tcp: &TcpStream, congestion: Congestion) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let _ = socket.set_tcp_notsent_lowat(NOT_SENT_LOW_WATER);
    let name: &[u8] = match congestion {
        Congestion::Model | Congestion::Bbr => b"bbr",
        Congestion::Cubic => b"cubic",
        Congestion::NewReno => b"reno",
    };
    let wanted = String::from_utf8_lossy(name);
    let set = socket.set_tcp_congestion(name);
    let in_force =
        socket.tcp_congestion().map(|c| String::from_utf8_lossy(&c).trim_end_matches('\0').to_string());
    match (set, in_force) {
        (Ok(()), Ok(c)) => debug!(controller = %c, "kernel TCP congestion control of a link"),
        (Err(e), in_force) => {
            let in_force = in_force.unwrap_or_else(|_| "unknown".into());
            warn!(error = %e, %wanted, %in_force, "link over TCP: kernel congestion control not set; the kernel's is in force")
        }
        (Ok(()), Err(_)) => {}
    }
}

/// Logs where links over TCP are accepted.
pub(crate) fn announce(listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "links over TLS on TCP accepted");
    }
}
