//! Keeps peer links up: one dial loop per peer with an address (exponential backoff with
//! full jitter) and one accept loop for the endpoint; each link's flow streams are served
//! by [`crate::node::flow::inbound::serve_streams`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tracing::{debug, info, warn};

use crate::core::backoff::Backoff;
use crate::core::control::SCHEDULER_ID;
use crate::core::link_rule::Initiator;
use crate::node::Shared;
use crate::node::flow::inbound;
use crate::node::link::credit::{LinkCredit, follow_path};
use crate::node::link::peers::LINK_UNKNOWN_PEER;
use crate::node::link::send::LinkTurns;
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
        if let Some(conn) = shared.pool.current(&peer) {
            let since = Instant::now();
            tokio::select! {
                _ = conn.closed() => {}
                _ = crate::shutdown::wait_true(&mut draining) => return,
            }
            if since.elapsed() >= STABLE_LINK {
                backoff.reset();
                continue;
            }
        } else {
            match dial(&shared, &peer, &address).await {
                Ok(conn) => {
                    info!(peer = %peer, addr = %conn.remote_address(), "link up (dialed)");
                    let turns = Arc::new(LinkTurns::new(&conn, link_credit(&shared, &conn)));
                    if shared.pool.install(&peer, conn.clone(), turns.clone(), Initiator::Local)
                        && !revoked_since(&shared, &conn)
                    {
                        tokio::spawn(watch_health(shared.clone(), peer.clone()));
                        tokio::spawn(inbound::serve_streams(shared.clone(), peer.clone(), conn, turns));
                        continue;
                    }
                    // Not taken (the peer was removed, or a tie-break kept the other link):
                    // wait before trying again rather than dialing in a tight loop.
                }
                Err(e) => {
                    warn!(peer = %peer, %address, error = %e, attempt = backoff.failures() + 1, "dial failed")
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

async fn dial(shared: &Shared, peer: &str, address: &str) -> anyhow::Result<Connection> {
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
    // webpki already checked the server name; this guards against a multi-name certificate.
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
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "incoming handshake failed");
                    return;
                }
            };
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
            info!(peer = %id, %remote, "link up (accepted)");
            let turns = Arc::new(LinkTurns::new(&conn, link_credit(&shared, &conn)));
            if shared.pool.install(&id, conn.clone(), turns.clone(), Initiator::Remote)
                && !revoked_since(&shared, &conn)
            {
                tokio::spawn(watch_health(shared.clone(), id.clone()));
                inbound::serve_streams(shared, id, conn, turns).await;
            }
        });
    }
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
