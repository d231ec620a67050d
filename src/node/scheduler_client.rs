//! The node's scheduler session: register, subscribe, heartbeat and report link metrics;
//! take instruction updates into the cache (memory and disk).
//!
//! The scheduler is never required: while it is unreachable the node keeps routing by its
//! cached instructions and static routes, and keeps trying, `max_retries` times at
//! `retry_interval`, then at a slower pace for good (it says so once in the log).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, SendStream};
use tracing::{debug, info, warn};

use crate::config::SchedulerClientConfig;
use crate::config::scheduler::SCHEDULER_ID;
use crate::core::control::{
    self, FrameError, LinkReport, NodeIntro, Registration, RevocationList, RouteReport, ToNode, ToScheduler,
};
use crate::node::renewal::Renewal;
use crate::node::{Shared, instruction_store, log_escape};

/// Slow retry pace, as a multiple of `retry_interval`, after `max_retries` failures.
const SLOW_FACTOR: u32 = 10;
/// Longest pause between attempts.
const SLOWEST: Duration = Duration::from_secs(60);

/// Keeps a session with the scheduler until the node drains.
pub async fn run(shared: Arc<Shared>, cfg: SchedulerClientConfig) {
    // Intros cached on disk from an earlier run: keep links to them too.
    if let Some(set) = shared.instructions.read().ok().and_then(|c| c.set().cloned()) {
        meet(&shared, &set.nodes);
    }
    // Kept across sessions, so a reconnect does not report old traffic again.
    let mut meter = LinkMeter::default();
    let mut renewal = Renewal::default();
    let mut failures = 0u32;
    let mut draining = shared.draining.clone();
    loop {
        if *draining.borrow() {
            return;
        }
        let mut connected = false;
        match session(&shared, &cfg, &mut connected, &mut meter, &mut renewal).await {
            Ok(()) => failures = 0,
            // A session that got through counts as a success, however it ended.
            Err(_) if connected => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures <= cfg.max_retries {
                    warn!(attempt = failures, error = %e, "scheduler unreachable; routing by cached instructions");
                } else if failures == cfg.max_retries + 1 {
                    warn!(error = %e, "scheduler still unreachable after {} attempts; retrying at a slower pace for good", cfg.max_retries);
                }
            }
        }
        let pause = if failures > cfg.max_retries {
            cfg.retry_interval.saturating_mul(SLOW_FACTOR).min(SLOWEST)
        } else {
            cfg.retry_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = crate::node::wait_true(&mut draining) => return,
        }
    }
}

async fn session(
    shared: &Arc<Shared>,
    cfg: &SchedulerClientConfig,
    connected: &mut bool,
    meter: &mut LinkMeter,
    renewal: &mut Renewal,
) -> anyhow::Result<()> {
    let conn = connect(shared, cfg).await?;
    let result = registered_session(shared, cfg, &conn, connected, meter, renewal).await;
    // TLS 1.3 lets the client finish its handshake before the server has checked the
    // client's certificate: a refusal shows as the connection's close.
    if conn.close_reason().is_some_and(|r| r.to_string().contains("Revoked")) {
        anyhow::bail!(
            "the scheduler refused this node's certificate as revoked: the node was removed from the mesh (`proxy mesh remove`); enroll it again with `proxy mesh join`"
        );
    }
    result
}

async fn registered_session(
    shared: &Arc<Shared>,
    cfg: &SchedulerClientConfig,
    conn: &Connection,
    connected: &mut bool,
    meter: &mut LinkMeter,
    renewal: &mut Renewal,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write(&mut send, &ToScheduler::Register(registration(shared)), cfg).await?;
    write(&mut send, &ToScheduler::Subscribe { since_version: shared.instruction_version() }, cfg).await?;
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    let mut buf: Vec<u8> = Vec::new();
    let mut draining = shared.draining.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let version = shared.instruction_version();
                write(&mut send, &ToScheduler::Heartbeat { instructions_version: version }, cfg).await?;
                let links = meter.sample(&shared.pool.live_links());
                let routes = meter.routes(shared);
                write(&mut send, &ToScheduler::Report { links, routes }, cfg).await?;
                let now_unix = i64::try_from(crate::node::unix_now()).unwrap_or(i64::MAX);
                if let Some(csr) = renewal.due(shared, now_unix) {
                    info!("asking the scheduler to renew this node's certificate");
                    write(&mut send, &ToScheduler::Renew { csr }, cfg).await?;
                }
            }
            chunk = recv.read_chunk(64 * 1024, true) => {
                let Some(chunk) = chunk? else { return Ok(()) };
                // The session counts once the scheduler has answered.
                if !*connected {
                    *connected = true;
                    info!(scheduler = %conn.remote_address(), "connected to the scheduler");
                }
                buf.extend_from_slice(&chunk.bytes);
                read_frames(shared, &mut buf, renewal).await?;
            }
            _ = crate::node::wait_true(&mut draining) => {
                conn.close(quinn::VarInt::from_u32(3), b"node shutting down");
                return Ok(());
            }
            // A reload changed listeners, routes or peers: register them anew.
            _ = shared.config_changed.notified() => {
                conn.close(quinn::VarInt::from_u32(0), b"config reloaded");
                return Ok(());
            }
        }
    }
}

async fn connect(shared: &Shared, cfg: &SchedulerClientConfig) -> anyhow::Result<Connection> {
    let addr = crate::node::links::resolve_reachable(shared, &cfg.address, cfg.connect_timeout)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} resolves to no usable address", cfg.address))?;
    let connecting = shared.tls.connect(&shared.endpoint, addr, SCHEDULER_ID)?;
    Ok(tokio::time::timeout(cfg.connect_timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("handshake timed out"))??)
}

/// Handles every complete frame in `buf`.
async fn read_frames(shared: &Arc<Shared>, buf: &mut Vec<u8>, renewal: &mut Renewal) -> anyhow::Result<()> {
    loop {
        match control::decode::<ToNode>(buf, control::MAX_FRAME_BODY) {
            Ok(None) => return Ok(()),
            Ok(Some((message, used))) => {
                buf.drain(..used);
                handle(shared, message, renewal).await;
            }
            Err(FrameError::UnsupportedVersion { skip, .. } | FrameError::Malformed { skip, .. })
                if skip <= buf.len() =>
            {
                warn!("skipped a scheduler message it could not read");
                buf.drain(..skip);
            }
            Err(FrameError::UnsupportedVersion { .. } | FrameError::Malformed { .. }) => return Ok(()),
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

async fn handle(shared: &Arc<Shared>, message: ToNode, renewal: &mut Renewal) {
    match message {
        ToNode::Revocations(list) => apply_revocations(shared, list).await,
        ToNode::Renewed { cert_pem } => renewal.renewed(shared, cert_pem).await,
        ToNode::RenewRefused { reason } => renewal.refused(shared, &reason),
        ToNode::Welcome { .. } => debug!("registered with the scheduler"),
        ToNode::Error { message } => {
            warn!(message = %log_escape(&message), "the scheduler did not understand a message")
        }
        ToNode::Instructions(set) => {
            let version = set.version;
            if !shared.apply_instructions(set.clone()) {
                return;
            }
            meet(shared, &set.nodes);
            info!(version, routes = set.routes.len(), "new instructions");
            let dir = shared.config.mesh.data_dir.clone();
            match tokio::task::spawn_blocking(move || instruction_store::save(&dir, &set)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("{e}"),
                Err(e) => warn!("saving instructions: {e}"),
            }
        }
    }
}

/// The scheduler's list of removed nodes and revoked certificates: refused in every
/// handshake from now on, links to them closed at once, and kept on disk across restarts.
async fn apply_revocations(shared: &Arc<Shared>, list: RevocationList) {
    let revocations = shared.tls.revocations();
    if !revocations.replace(crate::tls::RevokedSet::from(&list)) {
        return;
    }
    for peer in shared.pool.cut_off_revoked(&revocations) {
        info!(peer = %peer, "removed from the mesh: link closed, certificate refused");
    }
    info!(nodes = list.node_ids.len(), certificates = list.cert_fingerprints.len(), "revocations updated");
    let dir = shared.config.mesh.data_dir.clone();
    match tokio::task::spawn_blocking(move || instruction_store::save_revocations(&dir, &list)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("{e}"),
        Err(e) => warn!("saving revocations: {e}"),
    }
}

/// Peer discovery: starts keeping links to introduced nodes this node did not know (an
/// address in its own config wins: known peers are left as they are).
fn meet(shared: &Arc<Shared>, nodes: &[NodeIntro]) {
    for intro in nodes {
        if !crate::core::wire::is_valid_node_id(&intro.node_id) || intro.node_id == SCHEDULER_ID {
            continue;
        }
        if shared.pool.add_discovered(&intro.node_id, Some(intro.mesh_address.clone()), &intro.region)
            || shared.pool.learn_address(&intro.node_id, &intro.mesh_address)
        {
            info!(peer = %intro.node_id, address = %log_escape(&intro.mesh_address), "introduced by the scheduler");
            tokio::spawn(crate::node::links::dial_loop(
                shared.clone(),
                intro.node_id.clone(),
                intro.mesh_address.clone(),
            ));
        }
    }
}

fn registration(shared: &Shared) -> Registration {
    // The config in force: listeners, routes and peers change with reloads.
    let c = &shared.running.lock().unwrap_or_else(|p| p.into_inner()).config.clone();
    let mesh_address = c.mesh.advertise.clone().unwrap_or_else(|| {
        shared.endpoint.local_addr().map_or_else(|_| c.mesh.bind.to_string(), |a| a.to_string())
    });
    Registration {
        node_id: c.common.node_id.clone(),
        region: c.common.region.clone(),
        mesh_address,
        peers: c.peers.iter().map(|p| (p.name.clone(), p.address.clone())).collect(),
        listeners: c.listeners.iter().map(|l| l.name.clone()).collect(),
        routes: c
            .routes
            .iter()
            .map(|r| (r.name.clone(), if r.chain.is_some() { None } else { r.exit.clone() }))
            .collect(),
    }
}

async fn write(
    send: &mut SendStream,
    message: &ToScheduler,
    cfg: &SchedulerClientConfig,
) -> anyhow::Result<()> {
    let frame = control::encode(message)?;
    tokio::time::timeout(cfg.request_timeout, send.write_chunk(Bytes::from(frame))).await.map_err(
        |_| anyhow::anyhow!("scheduler did not take a message within {:?}", cfg.request_timeout),
    )??;
    Ok(())
}

/// Turns QUIC connection statistics into per-report link metrics (loss and throughput
/// since the previous report).
#[derive(Default)]
struct LinkMeter {
    previous: HashMap<String, (u64, u64, u64, Instant)>,
    /// Flow and byte counts per route at the previous report.
    routes_before: HashMap<String, (u64, u64)>,
}

impl LinkMeter {
    /// Flows started and bytes carried per route since the previous report (routes with
    /// no traffic are left out).
    fn routes(&mut self, shared: &Shared) -> Vec<RouteReport> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = Vec::new();
        for (name, c) in shared.routes().counters() {
            let (flows, bytes) = (c.matches.load(Relaxed), c.bytes.load(Relaxed));
            let (f0, b0) = self.routes_before.insert(name.clone(), (flows, bytes)).unwrap_or((0, 0));
            if flows > f0 || bytes > b0 {
                out.push(RouteReport {
                    route: name.clone(),
                    flows: flows - f0,
                    bytes: bytes.saturating_sub(b0),
                });
            }
        }
        out
    }

    fn sample(&mut self, links: &[(String, Connection)]) -> Vec<LinkReport> {
        let now = Instant::now();
        links
            .iter()
            .map(|(peer, conn)| {
                let stats = conn.stats();
                let (lost, sent, bytes) =
                    (stats.path.lost_packets, stats.path.sent_packets, stats.udp_tx.bytes);
                let (lost0, sent0, bytes0, at0) = self.previous.get(peer).copied().unwrap_or((0, 0, 0, now));
                self.previous.insert(peer.clone(), (lost, sent, bytes, now));
                let sent_delta = sent.saturating_sub(sent0).max(1);
                let secs = now.duration_since(at0).as_secs_f64();
                LinkReport {
                    peer: peer.clone(),
                    rtt_us: u64::try_from(conn.rtt().as_micros()).unwrap_or(u64::MAX),
                    loss_ppm: u32::try_from(lost.saturating_sub(lost0) * 1_000_000 / sent_delta)
                        .unwrap_or(u32::MAX),
                    throughput_bps: if secs > 0.0 {
                        (bytes.saturating_sub(bytes0) as f64 / secs) as u64
                    } else {
                        0
                    },
                }
            })
            .collect()
    }
}
