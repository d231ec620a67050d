//! The scheduler's QUIC side: accepts nodes (mutual TLS against the mesh CA; the node id
//! comes from the certificate), reads each node's control stream into the state, and on
//! every recompute pushes the instruction sets that changed to the nodes subscribed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, SendStream, TransportConfig, VarInt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::state::{MeshState, Policy};
use crate::config::scheduler::{SCHEDULER_ID, SchedulerConfig};
use crate::core::control::{self, FrameError, InstructionSet, ToNode, ToScheduler};
use crate::node::{endpoint, log_escape, unix_now};
use crate::tls::{self, TlsIdentity};

/// A running scheduler.
pub struct Scheduler {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

struct Shared {
    state: Mutex<MeshState>,
    /// The one live session per node: a newer connection from the same node replaces it.
    sessions: Mutex<HashMap<String, Connection>>,
    /// The latest instruction set per node; sessions watch their node's entry.
    outboxes: Mutex<HashMap<String, watch::Sender<Option<InstructionSet>>>>,
}

impl Shared {
    fn outbox(&self, node: &str) -> watch::Receiver<Option<InstructionSet>> {
        let mut boxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.entry(node.to_string()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    fn publish(&self, node: &str, set: InstructionSet) {
        let mut boxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.entry(node.to_string()).or_insert_with(|| watch::channel(None).0).send_replace(Some(set));
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut MeshState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Scheduler {
    /// Binds the endpoint and starts accepting nodes and recomputing paths.
    pub async fn start(config: SchedulerConfig) -> anyhow::Result<Scheduler> {
        let identity = TlsIdentity::load(&config.cert, &config.key, &config.ca, SCHEDULER_ID)?;
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(4))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(Duration::from_secs(5)))
            .max_idle_timeout(Duration::from_secs(30).try_into().ok());
        let socket = endpoint::bind_udp(config.bind, 4 * 1024 * 1024)?;
        let endpoint = endpoint::build(&identity, Arc::new(transport), socket)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(MeshState::new(Policy::from(&config), Instant::now())),
            sessions: Mutex::new(HashMap::new()),
            outboxes: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        tokio::spawn(recompute_loop(shared.clone(), config.recompute_interval, stopped));
        info!(addr = %endpoint.local_addr()?, "scheduler started");
        Ok(Scheduler { endpoint, shared, stop })
    }

    /// The UDP address nodes dial.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Flows and bytes per route that `node` has reported.
    pub fn route_totals(&self, node: &str) -> Vec<(String, u64, u64)> {
        self.shared.with_state(|s| s.route_totals(node))
    }

    /// Registered node ids.
    pub fn nodes(&self) -> Vec<String> {
        self.shared.with_state(|s| s.node_ids())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.endpoint.close(VarInt::from_u32(3), b"scheduler stopped");
    }
}

/// Largest frame a node may send: registrations and reports are small; this bounds what a
/// session can make the scheduler buffer.
const MAX_FROM_NODE: usize = 256 * 1024;
/// Most peers, listeners or routes in one registration, and the longest name in it.
const MAX_ITEMS: usize = 1024;
const MAX_NAME: usize = 255;

fn registration_within_limits(r: &crate::core::control::Registration) -> bool {
    let short = |s: &String| s.len() <= MAX_NAME;
    r.peers.len() <= MAX_ITEMS
        && r.listeners.len() <= MAX_ITEMS
        && r.routes.len() <= MAX_ITEMS
        && short(&r.region)
        && short(&r.mesh_address)
        && r.peers.iter().all(|(p, a)| short(p) && a.as_ref().is_none_or(short))
        && r.listeners.iter().all(short)
        && r.routes.iter().all(|(n, e)| short(n) && e.as_ref().is_none_or(short))
}

async fn recompute_loop(shared: Arc<Shared>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::node::wait_true(&mut stopped) => return,
        }
        let changed = shared.with_state(|s| s.recompute(Instant::now(), unix_now()));
        for (node, set) in changed {
            info!(node = %node, version = set.version, routes = set.routes.len(), "new instructions");
            shared.publish(&node, set);
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Some(node) = tls::peer_node_id(&conn).filter(|n| n != SCHEDULER_ID) else {
                conn.close(VarInt::from_u32(2), b"no node id");
                return;
            };
            let older =
                shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone(), conn.clone());
            if let Some(older) = older {
                older.close(VarInt::from_u32(1), b"replaced by a newer session");
            }
            if let Err(e) = session(&shared, &node, &conn).await {
                info!(node = %node, reason = %e, "node session ended");
            }
        });
    }
}

/// One node's control stream: frames in, instruction pushes out.
async fn session(shared: &Shared, node: &str, conn: &Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut outbox = shared.outbox(node);
    let mut buf: Vec<u8> = Vec::new();
    let mut subscribed_from: Option<u64> = None;
    loop {
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => {
                let Some(chunk) = chunk? else { return Ok(()) };
                buf.extend_from_slice(&chunk.bytes);
                let pending = handle_frames(shared, node, &mut buf, &mut subscribed_from)?;
                for reply in pending {
                    write(&mut send, &reply).await?;
                }
                if let Some(since) = subscribed_from {
                    push_if_newer(&mut send, &outbox, since, &mut subscribed_from).await?;
                }
            }
            changed = outbox.changed() => {
                changed?;
                if let Some(since) = subscribed_from {
                    push_if_newer(&mut send, &outbox, since, &mut subscribed_from).await?;
                }
            }
        }
    }
}

/// Decodes every complete frame in `buf`; returns replies to send.
fn handle_frames(
    shared: &Shared,
    node: &str,
    buf: &mut Vec<u8>,
    subscribed_from: &mut Option<u64>,
) -> anyhow::Result<Vec<ToNode>> {
    let mut replies = Vec::new();
    loop {
        match control::decode::<ToScheduler>(buf, MAX_FROM_NODE) {
            Ok(None) => return Ok(replies),
            Ok(Some((message, used))) => {
                buf.drain(..used);
                replies.extend(handle(shared, node, message, subscribed_from)?);
            }
            Err(FrameError::UnsupportedVersion { skip, .. } | FrameError::Malformed { skip, .. })
                if skip <= buf.len() =>
            {
                warn!(node = %node, "skipped a control message it could not read");
                buf.drain(..skip);
                replies.push(ToNode::Error { message: "message not understood; skipped".into() });
            }
            // The rest of the bad frame has not arrived yet: wait for it, then skip it.
            Err(FrameError::UnsupportedVersion { .. } | FrameError::Malformed { .. }) => return Ok(replies),
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

fn handle(
    shared: &Shared,
    node: &str,
    message: ToScheduler,
    subscribed_from: &mut Option<u64>,
) -> anyhow::Result<Option<ToNode>> {
    let now = Instant::now();
    Ok(match message {
        ToScheduler::Register(registration) => {
            if !registration_within_limits(&registration) {
                anyhow::bail!(
                    "registration from `{node}` exceeds the limits ({MAX_ITEMS} items, {MAX_NAME}-byte names)"
                );
            }
            if registration.node_id != node {
                anyhow::bail!(
                    "registered as `{}` with a certificate for `{node}`",
                    log_escape(&registration.node_id)
                );
            }
            info!(node = %node, region = %log_escape(&registration.region), "node registered");
            shared.with_state(|s| s.register(registration, now));
            Some(ToNode::Welcome { version: 0 })
        }
        ToScheduler::Heartbeat { .. } => {
            shared.with_state(|s| s.heartbeat(node, now));
            None
        }
        ToScheduler::Report { links, routes } => {
            shared.with_state(|s| s.report(node, links, routes, now));
            None
        }
        ToScheduler::Subscribe { since_version } => {
            shared.with_state(|s| s.subscribed(node, since_version));
            *subscribed_from = Some(since_version);
            None
        }
    })
}

async fn push_if_newer(
    send: &mut SendStream,
    outbox: &watch::Receiver<Option<InstructionSet>>,
    since: u64,
    subscribed_from: &mut Option<u64>,
) -> anyhow::Result<()> {
    let set = outbox.borrow().clone();
    if let Some(set) = set.filter(|s| s.version > since) {
        *subscribed_from = Some(set.version);
        write(send, &ToNode::Instructions(set)).await?;
    }
    Ok(())
}

async fn write(send: &mut SendStream, message: &ToNode) -> anyhow::Result<()> {
    let frame = control::encode(message)?;
    tokio::time::timeout(Duration::from_secs(10), send.write_chunk(Bytes::from(frame))).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::control::Registration;

    fn reg() -> Registration {
        Registration {
            node_id: "a".into(),
            region: "r".into(),
            mesh_address: "10.0.0.1:7800".into(),
            peers: vec![("b".into(), None)],
            listeners: vec!["web".into()],
            routes: vec![("web".into(), Some("b".into()))],
        }
    }

    #[test]
    fn oversized_registrations_are_refused() {
        assert!(registration_within_limits(&reg()));
        let many =
            Registration { routes: (0..=MAX_ITEMS).map(|i| (format!("r{i}"), None)).collect(), ..reg() };
        assert!(!registration_within_limits(&many));
        let long = Registration { region: "x".repeat(MAX_NAME + 1), ..reg() };
        assert!(!registration_within_limits(&long));
        let long_exit =
            Registration { routes: vec![("web".into(), Some("y".repeat(MAX_NAME + 1)))], ..reg() };
        assert!(!registration_within_limits(&long_exit));
    }
}
