//! Keeps peer links up: one dial loop per peer with an address (exponential backoff with
//! full jitter), over the peer's transport (`peers[].type`: QUIC, TLS on TCP, or QUIC
//! falling back to TCP and probing QUIC again), and one accept loop for the endpoint
//! (links over TCP are accepted by [`crate::node::link::tcp`]); each link's flow streams
//! are served by [`crate::node::flow::inbound::serve_streams`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tracing::{debug, info, warn};

use crate::config::PeerTransport;
use crate::core::backoff::Backoff;
use crate::core::control::SCHEDULER_ID;
use crate::core::link_rule::{Initiator, LinkTransport};
use crate::node::Shared;
use crate::node::flow::inbound;
use crate::node::link::credit::{LinkCredit, follow_path};
use crate::node::link::peers::LINK_UNKNOWN_PEER;
use crate::node::link::send::LinkTurns;
use crate::node::link::tcp;
use crate::tls;

/// A link that lived shorter than this counts as a failed attempt for the backoff, so a
/// peer that accepts and then closes at once is not hammered.
const STABLE_LINK: Duration = Duration::from_secs(5);

/// Dials `peer` at `address` whenever no live link exists, until shutdown.
pub(crate) async fn dial_loop(shared: Arc<Shared>, peer: String, address: String) {
    let mesh = &shared.config.mesh;
    let mut backoff = Backoff::new(mesh.redial_min, mesh.redial_max);
    let mut draining = shared.draining.clone();
    loop {
        // A peer a reload removed is not dialed again, whoever started this loop.
        if *draining.borrow() || !shared.pool.is_known(&peer) {
            return;
        }
        let (kind, tcp_address) = shared.pool.dialing(&peer).unwrap_or_default();
        if let Some((conn, transport, initiator)) = shared.pool.current_link(&peer) {
            let since = Instant::now();
            // A link this node dialed that fell back to TCP tries QUIC again every probe
            // interval (the side that dialed probes: `type` says how a node dials).
            let probing = kind == PeerTransport::Auto
                && transport == LinkTransport::Tcp
                && initiator == Initiator::Local;
            tokio::select! {
                _ = conn.closed() => {}
                _ = crate::shutdown::wait_true(&mut draining) => return,
                _ = tokio::time::sleep(mesh.quic_probe_interval), if probing => {
                    // A link that dies meanwhile is redialed at once, not after the probe.
                    tokio::select! {
                        _ = probe_quic(&shared, &peer, &address) => {}
                        _ = conn.closed() => {}
                        _ = crate::shutdown::wait_true(&mut draining) => return,
                    }
                    continue;
                }
            }
            if since.elapsed() >= STABLE_LINK {
                backoff.reset();
                continue;
            }
        } else {
            let tcp_address = tcp_address.as_deref().unwrap_or(&address);
            match dial(&shared, &peer, &address, kind, tcp_address).await {
                Ok((conn, transport)) => {
                    if establish(&shared, &peer, conn, transport, Initiator::Local) {
                        continue;
                    }
                    // Not taken (the peer was removed, or a tie-break kept the other link):
                    // wait before trying again rather than dialing in a tight loop.
                }
                Err(e) => {
                    warn!(peer = %peer, %address, error = %format!("{e:#}"), attempt = backoff.failures() + 1, "dial failed")
                }
            }
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        debug!(peer = %peer, ?delay, "re-dial after backoff");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::shutdown::wait_true(&mut draining) => return,
        }
    }
}

/// Offers a new link to the pool and, when it is taken, starts serving it; returns
/// whether it was taken.
fn establish(
    shared: &Arc<Shared>,
    peer: &str,
    conn: Connection,
    transport: LinkTransport,
    initiator: Initiator,
) -> bool {
    let how = if initiator == Initiator::Local { "dialed" } else { "accepted" };
    info!(peer = %peer, addr = %conn.remote_address(), transport = transport.name(), "link up ({how})");
    let turns = Arc::new(LinkTurns::new(&conn, link_credit(shared, &conn)));
    if shared.pool.install(peer, conn.clone(), turns.clone(), initiator, transport)
        && !revoked_since(shared, &conn)
    {
        tokio::spawn(watch_health(shared.clone(), peer.to_string()));
        tokio::spawn(inbound::serve_streams(shared.clone(), peer.to_string(), conn, turns));
        return true;
    }
    false
}

/// Dials `peer` over its transport: QUIC at `address`, TLS on TCP at `tcp_address`, or
/// (`auto`) QUIC first and TCP as well once QUIC has not answered within
/// `mesh.fallback_after`, keeping whichever link is up first.
async fn dial(
    shared: &Shared,
    peer: &str,
    address: &str,
    kind: PeerTransport,
    tcp_address: &str,
) -> anyhow::Result<(Connection, LinkTransport)> {
    match kind {
        PeerTransport::Quic => Ok((dial_quic(shared, peer, address).await?, LinkTransport::Quic)),
        PeerTransport::Tcp => Ok((tcp::dial(shared, peer, address).await?, LinkTransport::Tcp)),
        PeerTransport::Auto => dial_auto(shared, peer, address, tcp_address).await,
    }
}

async fn dial_auto(
    shared: &Shared,
    peer: &str,
    address: &str,
    tcp_address: &str,
) -> anyhow::Result<(Connection, LinkTransport)> {
    let quic = dial_quic(shared, peer, address);
    tokio::pin!(quic);
    let quic_failed = tokio::select! {
        r = &mut quic => match r {
            Ok(conn) => return Ok((conn, LinkTransport::Quic)),
            Err(e) => Some(e),
        },
        _ = tokio::time::sleep(shared.config.mesh.fallback_after) => None,
    };
    let tcp = tcp::dial(shared, peer, tcp_address);
    tokio::pin!(tcp);
    let fell_back = |conn: Connection| {
        shared.counters.link_fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(peer = %peer, "no QUIC handshake within {:?}: link over TCP instead", shared.config.mesh.fallback_after);
        Ok((conn, LinkTransport::Tcp))
    };
    let both_failed = |q: anyhow::Error, t: anyhow::Error| anyhow::anyhow!("QUIC: {q:#}; TCP: {t:#}");
    if let Some(q) = quic_failed {
        return match tcp.await {
            Ok(conn) => fell_back(conn),
            Err(t) => Err(both_failed(q, t)),
        };
    }
    // Biased: when both finish in one poll, QUIC is kept (the peer may have installed it
    // already, and a dropped connection would leave it a dead link).
    tokio::select! {
        biased;
        r = &mut quic => match r {
            Ok(conn) => Ok((conn, LinkTransport::Quic)),
            Err(q) => match tcp.await {
                Ok(conn) => fell_back(conn),
                Err(t) => Err(both_failed(q, t)),
            },
        },
        r = &mut tcp => match r {
            Ok(conn) => fell_back(conn),
            Err(t) => match quic.await {
                Ok(conn) => Ok((conn, LinkTransport::Quic)),
                Err(q) => Err(both_failed(q, t)),
            },
        },
    }
}

/// Tries QUIC to a peer held over TCP; a QUIC link that comes up takes the new flows
/// (the pool lets the TCP link's flows finish on it).
async fn probe_quic(shared: &Arc<Shared>, peer: &str, address: &str) {
    match dial_quic(shared, peer, address).await {
        Ok(conn) => {
            if establish(shared, peer, conn, LinkTransport::Quic, Initiator::Local) {
                shared.counters.links_back_to_quic.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(peer = %peer, "QUIC works again: new flows take the QUIC link");
            }
        }
        Err(e) => debug!(peer = %peer, error = %format!("{e:#}"), "QUIC probe failed; staying on TCP"),
    }
}

/// Resolves `address` (within `timeout`) to the addresses this node's endpoint can reach:
/// one bound to IPv4 cannot reach IPv6 addresses (a `[::]` bind reaches both).
pub(crate) async fn resolve_reachable(
    shared: &Shared,
    address: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| anyhow::anyhow!("resolving {address} timed out"))??;
    let local = shared.endpoint.local_addr()?;
    Ok(resolved.filter(|a| local.is_ipv6() || a.is_ipv4()).collect())
}

async fn dial_quic(shared: &Shared, peer: &str, address: &str) -> anyhow::Result<Connection> {
    let usable = resolve_reachable(shared, address, shared.config.limits.connect_timeout).await?;
    let mut last = anyhow::anyhow!("resolves to no usable address");
    for addr in usable {
        match dial_addr(shared, peer, addr).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e.context(addr.to_string()),
        }
    }
    Err(last)
}

async fn dial_addr(shared: &Shared, peer: &str, addr: std::net::SocketAddr) -> anyhow::Result<Connection> {
    let timeout = shared.config.limits.connect_timeout;
    let connecting = shared.tls.connect(&shared.endpoint, addr, peer)?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("handshake timed out"))??;
    expect_peer(conn, peer)
}

/// `conn` if its certificate names `peer`; webpki already checked the server name, this
/// guards against a multi-name certificate.
pub(crate) fn expect_peer(conn: Connection, peer: &str) -> anyhow::Result<Connection> {
    match tls::peer_node_id(&conn) {
        Some(id) if id == peer => Ok(conn),
        other => {
            conn.close(LINK_UNKNOWN_PEER, b"wrong node id");
            anyhow::bail!("peer certificate names {other:?}, expected `{peer}`")
        }
    }
}

/// Whether the peer's certificate was revoked after its handshake was checked (a link
/// installed after the revocations were applied to the links then up): if so the link is
/// closed.
fn revoked_since(shared: &Shared, conn: &Connection) -> bool {
    let revoked = crate::node::link::peers::peer_certificate(conn)
        .is_some_and(|c| shared.tls.revocations().refuses(&c));
    if revoked {
        conn.close(crate::node::link::peers::LINK_REVOKED, b"certificate revoked");
    }
    revoked
}

/// Accepts incoming links until the endpoint closes.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if *shared.draining.borrow() {
            incoming.refuse();
            continue;
        }
        tokio::spawn(accept_incoming(shared.clone(), incoming, LinkTransport::Quic));
    }
}

/// Completes an incoming link's handshake, then [`admit`]s it.
async fn accept_incoming(shared: Arc<Shared>, incoming: quinn::Incoming, transport: LinkTransport) {
    let remote = incoming.remote_address();
    match incoming.await {
        Ok(conn) => admit(&shared, conn, transport),
        Err(e) => debug!(%remote, error = %e, "incoming handshake failed"),
    }
}

/// Takes a link a peer dialed, when that peer may link, and serves it.
pub(crate) fn admit(shared: &Arc<Shared>, conn: Connection, transport: LinkTransport) {
    let remote = conn.remote_address();
    // With a scheduler, any node the mesh CA vouches for may link: the scheduler
    // introduces nodes to the side that dials, not always to the side that accepts.
    let discovering = shared.config.scheduler.is_some();
    let id = match tls::peer_node_id(&conn) {
        Some(id) if id != shared.config.common.node_id && shared.pool.is_known(&id) => id,
        Some(id) if id != shared.config.common.node_id && discovering && id != SCHEDULER_ID => {
            shared.pool.add_discovered(&id, None, "");
            id
        }
        other => {
            warn!(%remote, node = ?other.map(|s| crate::logging::log_escape(&s)), "refused link from an unknown node");
            conn.close(LINK_UNKNOWN_PEER, b"unknown node");
            return;
        }
    };
    establish(shared, &id, conn, transport, Initiator::Remote);
}

/// Records signs of life on the link to `peer` (see `PeerPool::is_healthy`).
async fn watch_health(shared: Arc<Shared>, peer: String) {
    shared.pool.watch_health(&peer, HEALTH_SAMPLE).await;
}

/// How often link health is sampled.
const HEALTH_SAMPLE: Duration = Duration::from_millis(50);

/// Receive credit for a new link, out of the node's buffer budget.
/// Its base window follows the path for as long as the connection lives.
fn link_credit(shared: &Shared, conn: &quinn::Connection) -> Arc<LinkCredit> {
    let mesh = &shared.config.mesh;
    let credit = Arc::new(LinkCredit::new(
        conn.clone(),
        shared.budget.clone(),
        mesh.connection_window,
        mesh.stream_window,
    ));
    tokio::spawn(follow_path(conn.clone(), credit.clone()));
    credit
}
