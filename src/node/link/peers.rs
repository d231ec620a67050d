//! The peer pool: at most one live QUIC connection per configured peer.
//!
//! Invariant: a slot holds the one connection this node uses for new flows to that peer.
//! When a second connection for the same peer appears (both sides dialed at once, or the
//! peer restarted), [`crate::core::link_rule`] decides which one stays, the same way on
//! both nodes, and the other is closed with [`LINK_DUPLICATE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quinn::{Connection, VarInt};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{PeerConfig, PeerTransport};
use crate::core::link_health::Liveness;
use crate::core::link_rule::{self, Existing, Initiator, LinkTransport};
use crate::node::link::send::LinkTurns;

/// Connection close code: a duplicate link lost the tie-break.
pub(crate) const LINK_DUPLICATE: VarInt = VarInt::from_u32(1);
/// Connection close code: the peer is not one of this node's peers.
pub(crate) const LINK_UNKNOWN_PEER: VarInt = VarInt::from_u32(2);
/// Connection close code: the node is shutting down.
pub(crate) const LINK_SHUTDOWN: VarInt = VarInt::from_u32(3);
/// Connection close code: the peer's certificate was revoked (it left the mesh).
pub(crate) const LINK_REVOKED: VarInt = VarInt::from_u32(4);
/// Connection close code: a link over TCP whose flows all ended after a QUIC link took
/// its place.
pub(crate) const LINK_SUPERSEDED: VarInt = VarInt::from_u32(5);
/// Connection close code: the TCP connection under a link ended.
pub(crate) const LINK_TRANSPORT_LOST: VarInt = VarInt::from_u32(6);
/// Connection close code: the scheduler no longer has this pair linked (a partial mesh),
/// and no flow was left on the link.
pub(crate) const LINK_RETIRED: VarInt = VarInt::from_u32(7);

/// How often a superseded link is checked for flows still on it.
const DRAIN_CHECK: Duration = Duration::from_millis(500);

/// The certificate the peer presented on `conn`.
pub(crate) fn peer_certificate(conn: &Connection) -> Option<rustls::pki_types::CertificateDer<'static>> {
    let chain = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

#[derive(Clone)]
struct Link {
    conn: Connection,
    initiator: Initiator,
    transport: LinkTransport,
    since: Instant,
    /// When a datagram last arrived on this link, sampled by [`PeerPool::watch_health`].
    heard: Arc<Mutex<Liveness>>,
    /// Who goes next into the connection's send buffer.
    turns: Arc<LinkTurns>,
}

/// A live link to a peer: its connection and the turns of its send buffer.
#[derive(Clone)]
pub(crate) struct PooledLink {
    /// The QUIC connection.
    pub conn: Connection,
    /// Every stream sent on `conn` writes through these.
    pub turns: Arc<LinkTurns>,
}

struct Slot {
    /// Where to dial; learned from the scheduler for a peer that only dialed in so far.
    address: RwLock<Option<String>>,
    /// How to dial: the transport, and the TCP address when it differs from `address`.
    dialing: RwLock<(PeerTransport, Option<String>)>,
    region: Option<String>,
    link: watch::Sender<Option<Link>>,
    /// Links over TCP a QUIC link replaced, open until their flows end: removal,
    /// revocation and shutdown close them with the current link.
    superseded: Mutex<Vec<Connection>>,
}

/// Why no connection to a peer is available.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// The peer is not configured.
    #[error("`{0}` is not a known peer")]
    Unknown(String),
    /// No live connection appeared within the wait.
    #[error("no link to `{0}`")]
    Down(String),
}

/// What the admin API and `Node::peers()` show for one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// The peer's node id.
    pub id: String,
    /// Its configured address, if any.
    pub address: Option<String>,
    /// Its region, if configured.
    pub region: Option<String>,
    /// Whether a live connection exists.
    pub connected: bool,
    /// Whether new flows may use the link: connected and heard from within two keepalive
    /// intervals (filled in by `Node::peers`).
    pub healthy: bool,
    /// `local` when this node dialed the connection, `remote` when the peer did.
    pub initiator: Option<&'static str>,
    /// What carries the link: `quic`, or `tcp` (TLS on TCP, where UDP is blocked).
    pub transport: Option<&'static str>,
    /// Links over TCP a QUIC link replaced that still carry flows started on them.
    pub draining_links: usize,
    /// The scheduler no longer lists this peer: its link is retired once idle.
    pub retiring: bool,
    /// Smoothed round-trip time, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Packets lost over packets sent on the connection.
    pub loss: Option<f64>,
    /// Seconds since the connection was established.
    pub connected_secs: Option<u64>,
    /// The peer's address as seen on the connection.
    pub remote_addr: Option<String>,
    /// UDP payload bytes sent on the current connection.
    pub bytes_sent: Option<u64>,
    /// UDP payload bytes received on the current connection.
    pub bytes_received: Option<u64>,
}

/// The set of peer connections of one node.
pub(crate) struct PeerPool {
    local_id: String,
    /// Longer than any dial can take: see `core::link_rule`.
    settle: Duration,
    /// Configured peers, plus nodes the scheduler introduced (removed only by a reload).
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    /// Peers a reload removed: discovery does not bring them back until the config does.
    removed: RwLock<std::collections::HashSet<String>>,
    /// Since when each peer has been left out of the scheduler's instructions.
    unlisted: Mutex<HashMap<String, Instant>>,
    /// No link is retired before this (a new scheduler session is settling).
    retire_from: Mutex<Option<Instant>>,
}

impl Slot {
    fn address(&self) -> Option<String> {
        self.address.read().ok().and_then(|a| a.clone())
    }

    /// The current link's connection and the superseded ones still open.
    fn connections(&self) -> Vec<Connection> {
        let mut all: Vec<Connection> =
            self.link.borrow().as_ref().map(|l| l.conn.clone()).into_iter().collect();
        if let Ok(superseded) = self.superseded.lock() {
            all.extend(superseded.iter().filter(|c| c.close_reason().is_none()).cloned());
        }
        all
    }

    /// Closes the current link and the superseded ones.
    fn close(&self, code: VarInt, reason: &[u8]) {
        for conn in self.connections() {
            conn.close(code, reason);
        }
    }

    /// Keeps `conn`, replaced by a QUIC link, within reach until it closes.
    fn supersede(&self, conn: Connection) {
        if let Ok(mut superseded) = self.superseded.lock() {
            superseded.retain(|c| c.close_reason().is_none());
            superseded.push(conn);
        }
    }
}

impl PeerPool {
    /// A pool for the configured peers, none connected yet.
    pub(crate) fn new(local_id: &str, peers: &[PeerConfig], settle: Duration) -> Self {
        let slots = peers
            .iter()
            .map(|p| {
                let slot = Slot {
                    address: RwLock::new(p.address.clone()),
                    dialing: RwLock::new((p.transport, p.tcp_address.clone())),
                    region: p.region.clone(),
                    link: watch::Sender::new(None),
                    superseded: Mutex::default(),
                };
                (p.name.clone(), Arc::new(slot))
            })
            .collect();
        Self {
            local_id: local_id.to_string(),
            settle,
            slots: RwLock::new(slots),
            removed: RwLock::default(),
            unlisted: Mutex::default(),
            retire_from: Mutex::default(),
        }
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.get(id).cloned()
    }

    fn all(&self) -> Vec<(String, Arc<Slot>)> {
        self.slots.read().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }

    /// Adds a node the scheduler introduced, unless it is already known (an address in the
    /// node's own config wins over a discovered one). Returns whether it was new.
    pub(crate) fn add_discovered(&self, id: &str, address: Option<String>, region: &str) -> bool {
        if id == self.local_id || self.removed.read().is_ok_and(|r| r.contains(id)) {
            return false;
        }
        let Ok(mut slots) = self.slots.write() else { return false };
        if slots.contains_key(id) {
            return false;
        }
        let slot = Slot {
            address: RwLock::new(address),
            dialing: RwLock::new((PeerTransport::Auto, None)),
            region: Some(region.to_string()),
            link: watch::Sender::new(None),
            superseded: Mutex::default(),
        };
        slots.insert(id.to_string(), Arc::new(slot));
        true
    }

    /// Adds or updates a configured peer (a reload): its address and region are the
    /// config's from now on. An existing link is kept.
    pub(crate) fn configure(&self, peer: &PeerConfig) {
        if peer.name == self.local_id {
            return;
        }
        if let Ok(mut removed) = self.removed.write() {
            removed.remove(&peer.name);
        }
        let Ok(mut slots) = self.slots.write() else { return };
        match slots.get(&peer.name) {
            Some(slot) => {
                if let Ok(mut a) = slot.address.write() {
                    a.clone_from(&peer.address);
                }
                if let Ok(mut d) = slot.dialing.write() {
                    *d = (peer.transport, peer.tcp_address.clone());
                }
            }
            None => {
                let slot = Slot {
                    address: RwLock::new(peer.address.clone()),
                    dialing: RwLock::new((peer.transport, peer.tcp_address.clone())),
                    region: peer.region.clone(),
                    link: watch::Sender::new(None),
                    superseded: Mutex::default(),
                };
                slots.insert(peer.name.clone(), Arc::new(slot));
            }
        }
    }

    /// Forgets a peer (a reload removed it): its link is closed and it is refused from now
    /// on.
    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut removed) = self.removed.write() {
            removed.insert(id.to_string());
        }
        let removed = self.slots.write().ok().and_then(|mut s| s.remove(id));
        if let Some(slot) = removed {
            slot.close(LINK_UNKNOWN_PEER, b"peer removed");
        }
    }

    /// Closes every link whose peer certificate is now revoked, and forgets the removed
    /// node ids (without refusing them for good: if one joins the mesh again, the
    /// scheduler introduces it anew). Returns the peers cut off.
    pub(crate) fn cut_off_revoked(&self, revocations: &crate::tls::Revocations) -> Vec<String> {
        let removed = revocations.snapshot().node_ids;
        let mut cut = Vec::new();
        for (id, slot) in self.all() {
            let refused =
                slot.connections().iter().filter_map(peer_certificate).any(|c| revocations.refuses(&c));
            if refused {
                slot.close(LINK_REVOKED, b"certificate revoked");
            }
            if removed.contains(&id) {
                if let Ok(mut slots) = self.slots.write() {
                    slots.remove(&id);
                }
                slot.close(LINK_REVOKED, b"node removed from the mesh");
            }
            if refused || removed.contains(&id) {
                cut.push(id);
            }
        }
        cut
    }

    /// Gives a known peer that had no address (it only dialed in) the address the scheduler
    /// introduced; returns whether it did (the caller then starts dialing it). A configured
    /// address is never replaced.
    pub(crate) fn learn_address(&self, id: &str, address: &str) -> bool {
        let Some(slot) = self.slot(id) else { return false };
        let Ok(mut current) = slot.address.write() else { return false };
        if current.is_some() {
            return false;
        }
        *current = Some(address.to_string());
        true
    }

    /// How to dial `id`: its transport, and its TCP address when it differs from its
    /// address. `None` for an unknown peer.
    pub(crate) fn dialing(&self, id: &str) -> Option<(PeerTransport, Option<String>)> {
        let slot = self.slot(id)?;
        let dialing = slot.dialing.read().ok()?;
        Some(dialing.clone())
    }

    /// Retires the link to `id` if no flow stream is open on it: the slot is dropped (its
    /// dial loop ends; unlike [`PeerPool::remove`] the peer is not refused, and the
    /// scheduler may introduce it again) and the link closed. `false` while it carries
    /// flows: the caller tries again later.
    pub(crate) fn retire_if_idle(&self, id: &str) -> bool {
        let Some(slot) = self.slot(id) else { return true };
        let busy = slot.link.borrow().as_ref().is_some_and(|l| l.turns.streams_open() > 0)
            || slot.superseded.lock().is_ok_and(|s| s.iter().any(|c| c.close_reason().is_none()));
        if busy {
            return false;
        }
        if let Ok(mut slots) = self.slots.write() {
            slots.remove(id);
        }
        if let Ok(mut unlisted) = self.unlisted.lock() {
            unlisted.remove(id);
        }
        slot.close(LINK_RETIRED, b"not in this node's share of the mesh");
        true
    }

    /// Holds retirements for `settle` from now: a scheduler that just started, or just
    /// took over, lists only the nodes that have reconnected so far.
    pub(crate) fn hold_retirements(&self, settle: Duration) {
        if let Ok(mut from) = self.retire_from.lock() {
            *from = Some(Instant::now() + settle);
        }
    }

    /// Whether retirements are held now.
    pub(crate) fn retirements_held(&self) -> bool {
        self.retire_from.lock().is_ok_and(|f| f.is_some_and(|t| Instant::now() < t))
    }

    /// How long `id` has been left out of the instructions (counted from now when it was
    /// listed until now); `listed` clears it.
    pub(crate) fn unlisted_for(&self, id: &str, listed: bool) -> Duration {
        let Ok(mut unlisted) = self.unlisted.lock() else { return Duration::ZERO };
        if listed {
            unlisted.remove(id);
            return Duration::ZERO;
        }
        unlisted.entry(id.to_string()).or_insert_with(Instant::now).elapsed()
    }

    /// Every peer id in the pool.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.all().into_iter().map(|(id, _)| id).collect()
    }

    /// Whether `id` is a configured peer.
    pub(crate) fn is_known(&self, id: &str) -> bool {
        self.slot(id).is_some()
    }

    /// Configured peers that have an address to dial.
    pub(crate) fn dialable(&self) -> Vec<(String, String)> {
        self.all().into_iter().filter_map(|(id, s)| s.address().map(|a| (id, a))).collect()
    }

    /// The live connection to `id`, if any.
    pub(crate) fn current(&self, id: &str) -> Option<Connection> {
        self.current_with_transport(id).map(|(conn, _)| conn)
    }

    /// The live connection to `id` and what carries it, if any.
    pub(crate) fn current_with_transport(&self, id: &str) -> Option<(Connection, LinkTransport)> {
        self.current_link(id).map(|(conn, transport, _)| (conn, transport))
    }

    /// The live connection to `id`, what carries it and who dialed it, if any.
    pub(crate) fn current_link(&self, id: &str) -> Option<(Connection, LinkTransport, Initiator)> {
        let slot = self.slot(id)?;
        let link = slot.link.borrow();
        link.as_ref()
            .filter(|l| l.conn.close_reason().is_none())
            .map(|l| (l.conn.clone(), l.transport, l.initiator))
    }

    /// The live connection to `id`, waiting up to `wait` for one to come up.
    pub(crate) async fn connection(&self, id: &str, wait: Duration) -> Result<PooledLink, PeerError> {
        let slot = self.slot(id).ok_or_else(|| PeerError::Unknown(id.to_string()))?;
        let live = |l: &Option<Link>| l.as_ref().is_some_and(|l| l.conn.close_reason().is_none());
        let pooled = |l: &Option<Link>| {
            l.as_ref().map(|l| PooledLink { conn: l.conn.clone(), turns: l.turns.clone() })
        };
        {
            let current = slot.link.borrow();
            if live(&current) {
                return pooled(&current).ok_or_else(|| PeerError::Down(id.to_string()));
            }
        }
        let mut rx = slot.link.subscribe();
        match tokio::time::timeout(wait, rx.wait_for(live)).await {
            Ok(Ok(link)) => pooled(&link).ok_or_else(|| PeerError::Down(id.to_string())),
            _ => Err(PeerError::Down(id.to_string())),
        }
    }

    /// Offers a newly established connection; returns whether it is now the peer's link.
    /// The losing connection (new or old) is closed, except a link over TCP that a QUIC
    /// link replaced: new flows take the QUIC link, and the old one closes once the flows
    /// still on it have ended.
    pub(crate) fn install(
        &self,
        peer: &str,
        conn: Connection,
        turns: Arc<LinkTurns>,
        initiator: Initiator,
        transport: LinkTransport,
    ) -> bool {
        let Some(slot) = self.slot(peer) else {
            conn.close(LINK_UNKNOWN_PEER, b"unknown node");
            return false;
        };
        // A handshake that finished after its connection died must not displace a live one.
        if conn.close_reason().is_some() {
            return false;
        }
        let mut replaced = None;
        let installed = slot.link.send_if_modified(|cur| {
            let replace = match cur {
                None => true,
                Some(l) => {
                    let alive = l.conn.close_reason().is_none();
                    let existing = Existing { initiator: l.initiator, alive, age: l.since.elapsed() };
                    let by_transport = link_rule::transport_decides(l.transport, transport).filter(|_| alive);
                    by_transport.unwrap_or_else(|| {
                        link_rule::new_replaces_existing(
                            &self.local_id,
                            peer,
                            existing,
                            initiator,
                            self.settle,
                        )
                    })
                }
            };
            if replace {
                let heard =
                    Arc::new(Mutex::new(Liveness::new(conn.stats().udp_rx.datagrams, Instant::now())));
                replaced = cur.replace(Link {
                    conn: conn.clone(),
                    initiator,
                    transport,
                    since: Instant::now(),
                    heard,
                    turns: turns.clone(),
                });
            }
            replace
        });
        if let Some(old) = replaced {
            if old.transport != transport && old.conn.close_reason().is_none() {
                slot.supersede(old.conn.clone());
                tokio::spawn(close_when_drained(old.conn, old.turns));
            } else {
                old.conn.close(LINK_DUPLICATE, b"duplicate link");
            }
        }
        if !installed {
            conn.close(LINK_DUPLICATE, b"duplicate link");
        }
        installed
    }

    /// Whether the link to `id` is live and has carried a datagram within `quiet`: a link
    /// that keepalives should keep busy but that has gone silent is skipped by new flows
    /// at once, long before its idle timeout closes it.
    pub(crate) fn is_healthy(&self, id: &str, quiet: Duration) -> bool {
        let Some(slot) = self.slot(id) else { return false };
        let link = slot.link.borrow();
        link.as_ref()
            .filter(|l| l.conn.close_reason().is_none())
            .is_some_and(|l| l.heard.lock().map_or(true, |h| h.is_live(Instant::now(), quiet)))
    }

    /// Samples the link to `id` every `every` until it closes, recording when datagrams
    /// arrive (quinn counts them; a rising count is a sign of life).
    pub(crate) async fn watch_health(&self, id: &str, every: Duration) {
        let Some(slot) = self.slot(id) else { return };
        let Some((conn, heard)) = slot.link.borrow().as_ref().map(|l| (l.conn.clone(), l.heard.clone()))
        else {
            return;
        };
        while conn.close_reason().is_none() {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = conn.closed() => return,
            }
            let datagrams = conn.stats().udp_rx.datagrams;
            if let Ok(mut h) = heard.lock() {
                h.sample(datagrams, Instant::now());
            }
        }
    }

    /// Every live link, by peer id.
    pub(crate) fn live_links(&self) -> Vec<(String, Connection)> {
        let mut out: Vec<(String, Connection)> =
            self.all().into_iter().filter_map(|(id, _)| self.current(&id).map(|c| (id, c))).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Peers whose live link runs over `transport`, sorted.
    pub(crate) fn peers_over(&self, transport: LinkTransport) -> Vec<String> {
        let mut out: Vec<String> = self
            .all()
            .into_iter()
            .filter(|(id, _)| self.current_with_transport(id).is_some_and(|(_, t)| t == transport))
            .map(|(id, _)| id)
            .collect();
        out.sort();
        out
    }

    /// Closes every link (shutdown).
    pub(crate) fn close_all(&self) {
        for (_, slot) in self.all() {
            slot.close(LINK_SHUTDOWN, b"shutdown");
        }
    }

    /// A snapshot of every peer, sorted by id.
    pub(crate) fn snapshot(&self) -> Vec<PeerInfo> {
        let unlisted: std::collections::HashSet<String> =
            self.unlisted.lock().map(|u| u.keys().cloned().collect()).unwrap_or_default();
        let mut out: Vec<PeerInfo> = self
            .all()
            .iter()
            .map(|(id, slot)| PeerInfo { retiring: unlisted.contains(id), ..peer_info(id, slot) })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Closes a superseded link once, for two checks in a row, no flow stream is left on it
/// and no stream data arrived (both ends run this; the first to find its side quiet closes
/// the link). Stream data arriving covers a flow the peer opened just before it moved to
/// QUIC whose first bytes were still on their way; the second check leaves time for the
/// last bytes a finished stream sent to be acknowledged.
async fn close_when_drained(conn: Connection, turns: Arc<LinkTurns>) {
    let mut empty_checks = 0;
    let mut heard = conn.stats().frame_rx.stream;
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(DRAIN_CHECK) => {}
        }
        let now_heard = conn.stats().frame_rx.stream;
        let quiet = turns.streams_open() == 0 && now_heard == heard;
        heard = now_heard;
        empty_checks = if quiet { empty_checks + 1 } else { 0 };
        if empty_checks >= 2 {
            conn.close(LINK_SUPERSEDED, b"superseded by a QUIC link");
            return;
        }
    }
}

fn peer_info(id: &str, slot: &Slot) -> PeerInfo {
    let link = slot.link.borrow();
    let live = link.as_ref().filter(|l| l.conn.close_reason().is_none());
    let stats = live.map(|l| l.conn.stats());
    PeerInfo {
        id: id.to_string(),
        address: slot.address(),
        region: slot.region.clone(),
        connected: live.is_some(),
        healthy: false,
        initiator: live.map(|l| match l.initiator {
            Initiator::Local => "local",
            Initiator::Remote => "remote",
        }),
        transport: live.map(|l| l.transport.name()),
        draining_links: slot
            .superseded
            .lock()
            .map_or(0, |s| s.iter().filter(|c| c.close_reason().is_none()).count()),
        retiring: false,
        rtt_ms: live.map(|l| l.conn.rtt().as_secs_f64() * 1000.0),
        loss: stats.map(|s| s.path.lost_packets as f64 / s.path.sent_packets.max(1) as f64),
        connected_secs: live.map(|l| l.since.elapsed().as_secs()),
        remote_addr: live.map(|l| l.conn.remote_address().to_string()),
        bytes_sent: stats.map(|s| s.udp_tx.bytes),
        bytes_received: stats.map(|s| s.udp_rx.bytes),
    }
}
