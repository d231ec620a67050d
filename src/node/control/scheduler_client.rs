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
use crate::core::control::SCHEDULER_ID;
use crate::core::control::close_codes;
use crate::core::control::{
    self, FrameError, LinkCapacity, LinkReport, NodeIntro, Registration, RevocationList, RouteReport, ToNode,
    ToScheduler,
};
use crate::logging::log_escape;
use crate::node::link::renewal::Renewal;
use crate::node::{Shared, control::instruction_store};

/// Slow retry pace, as a multiple of `retry_interval`, after `max_retries` failures.
const SLOW_FACTOR: u32 = 10;
/// Longest pause between attempts.
const SLOWEST: Duration = Duration::from_secs(60);

/// Pause after every listed scheduler said it stands by: about an election's poll.
const STANDBY_PAUSE: Duration = Duration::from_millis(250);

/// A scheduler closed the session because it does not lead the mesh now.
#[derive(Debug, thiserror::Error)]
#[error("the scheduler stands by: another scheduler of the mesh leads it")]
struct StandbyScheduler;

/// Keeps a session with the scheduler until the node drains.
pub(crate) async fn run(shared: Arc<Shared>, cfg: SchedulerClientConfig) {
    // Intros cached on disk from an earlier run: keep links to them too.
    if let Some(set) = shared.instructions.read().ok().and_then(|c| c.set().cloned()) {
        meet(&shared, &set.nodes);
    }
    // Kept across sessions, so a reconnect does not report old traffic again.
    let mut meter = LinkMeter::default();
    let mut renewal = Renewal::default();
    let mut failures = 0u32;
    // Which of `cfg.addresses` the last session had.
    let mut preferred = 0usize;
    // Schedulers in a row that said they stand by.
    let mut standing_by = 0usize;
    let mut draining = shared.draining.clone();
    loop {
        if *draining.borrow() {
            return;
        }
        let mut connected = false;
        let outcome = session(&shared, &cfg, &mut preferred, &mut connected, &mut meter, &mut renewal).await;
        if connected {
            standing_by = 0;
        }
        match outcome {
            // Not the leader: the next one listed at once, and a short pause only once
            // every one of them said so (an election is under way).
            Err(e) if e.is::<StandbyScheduler>() => {
                info!(scheduler = %cfg.addresses[preferred], "that scheduler stands by; trying the next");
                preferred = (preferred + 1) % cfg.addresses.len();
                standing_by += 1;
                if standing_by < cfg.addresses.len() {
                    continue;
                }
                standing_by = 0;
                tokio::select! {
                    _ = tokio::time::sleep(STANDBY_PAUSE) => {}
                    _ = crate::shutdown::wait_true(&mut draining) => return,
                }
                continue;
            }
            Ok(()) => failures = 0,
            // A session that got through counts as a success, however it ended; the next
            // attempt starts with the next scheduler listed, not the one that just failed
            // (a dead one would cost a whole `connect_timeout` first).
            Err(_) if connected => {
                failures = 0;
                preferred = (preferred + 1) % cfg.addresses.len();
            }
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
            _ = crate::shutdown::wait_true(&mut draining) => return,
        }
    }
}

async fn session(
    shared: &Arc<Shared>,
    cfg: &SchedulerClientConfig,
    preferred: &mut usize,
    connected: &mut bool,
    meter: &mut LinkMeter,
    renewal: &mut Renewal,
) -> anyhow::Result<()> {
    let conn = connect(shared, cfg, preferred).await?;
    let result = registered_session(shared, cfg, &conn, connected, meter, renewal).await;
    if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason()
        && close.error_code == quinn::VarInt::from_u32(close_codes::STANDBY)
    {
        return Err(StandbyScheduler.into());
    }
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
    shared.pool.hold_retirements(SESSION_SETTLE);
    write(&mut send, &ToScheduler::Register(registration(shared)), cfg).await?;
    write(&mut send, &ToScheduler::Subscribe { since_version: shared.instruction_version() }, cfg).await?;
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    let mut buf: Vec<u8> = Vec::new();
    // What the scheduler said it understands (its `Welcome.version`): capacity goes only to
    // one that reads it.
    let mut features = 0u64;
    let mut draining = shared.draining.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let version = shared.instruction_version();
                write(&mut send, &ToScheduler::Heartbeat { instructions_version: version }, cfg).await?;
                let links = meter.sample(&shared.pool.live_links());
                let routes = meter.routes(shared);
                write(&mut send, &ToScheduler::Report { links, routes }, cfg).await?;
                if features >= control::FEATURE_CAPACITY {
                    send_capacities(shared, &mut send, cfg).await?;
                }
                // Taken whatever the scheduler reads, so they do not pile up for one that
                // does not.
                let paths = shared.path_outcomes.take();
                if features >= control::FEATURE_OUTCOMES {
                    write(&mut send, &ToScheduler::Outcomes { relay: shared.config.mesh.relay, paths }, cfg).await?;
                }
                if features >= control::FEATURE_TRANSPORTS {
                    let tcp = shared.pool.peers_over(crate::core::link_rule::LinkTransport::Tcp);
                    write(&mut send, &ToScheduler::Transports { tcp }, cfg).await?;
                }
                // Links left for flows that were still on them.
                if let Some(listed) = shared.instructions.read().ok().and_then(|c| c.set().map(|s| s.nodes.clone())) {
                    retire_unlisted(shared, &listed);
                }
                let now_unix = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
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
                let before = features;
                read_frames(shared, &mut buf, renewal, &mut features).await?;
                // The first report went before the welcome: send capacity now rather than a
                // heartbeat later (it is a level, not a count since the last report).
                if before < control::FEATURE_CAPACITY && features >= control::FEATURE_CAPACITY {
                    send_capacities(shared, &mut send, cfg).await?;
                }
                // Whether it relays counts for path choice at once, not a report later.
                if before < control::FEATURE_OUTCOMES && features >= control::FEATURE_OUTCOMES {
                    let relay = shared.config.mesh.relay;
                    write(&mut send, &ToScheduler::Outcomes { relay, paths: Vec::new() }, cfg).await?;
                }
            }
            _ = crate::shutdown::wait_true(&mut draining) => {
                conn.close(quinn::VarInt::from_u32(close_codes::SHUTTING_DOWN), b"node shutting down");
                return Ok(());
            }
            // A reload changed listeners, routes or peers: register them anew.
            _ = shared.config_changed.notified() => {
                conn.close(quinn::VarInt::from_u32(close_codes::DONE), b"config reloaded");
                return Ok(());
            }
        }
    }
}

/// A session with the first scheduler that answers, trying `cfg.addresses` in turn from
/// `*preferred` (the one the last session had, so a node stays with its scheduler while it
/// answers); on success `*preferred` names the one that did.
async fn connect(
    shared: &Shared,
    cfg: &SchedulerClientConfig,
    preferred: &mut usize,
) -> anyhow::Result<Connection> {
    let n = cfg.addresses.len();
    let mut failures = Vec::new();
    for i in (0..n).map(|k| (*preferred + k) % n) {
        let address = &cfg.addresses[i];
        match connect_to(shared, cfg, address).await {
            Ok(conn) => {
                if i != *preferred {
                    info!(scheduler = %address, "moving to the next scheduler listed");
                }
                *preferred = i;
                return Ok(conn);
            }
            Err(e) => failures.push(format!("{address}: {e:#}")),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

async fn connect_to(
    shared: &Shared,
    cfg: &SchedulerClientConfig,
    address: &str,
) -> anyhow::Result<Connection> {
    let addr = crate::node::link::connect::resolve_reachable(shared, address, cfg.connect_timeout)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{address} resolves to no usable address"))?;
    let connecting = shared.tls.connect_scheduler(&shared.endpoint, addr)?;
    Ok(tokio::time::timeout(cfg.connect_timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("handshake timed out"))??)
}

/// Handles every complete frame in `buf`.
async fn read_frames(
    shared: &Arc<Shared>,
    buf: &mut Vec<u8>,
    renewal: &mut Renewal,
    features: &mut u64,
) -> anyhow::Result<()> {
    loop {
        match control::decode::<ToNode>(buf, control::MAX_FRAME_BODY) {
            Ok(None) => return Ok(()),
            Ok(Some((message, used))) => {
                buf.drain(..used);
                if let ToNode::Welcome { version } = &message {
                    *features = *version;
                }
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
            retire_unlisted(shared, &set.nodes);
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
    shared.cards.drop_revoked(&revocations);
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
            tokio::spawn(crate::node::link::connect::dial_loop(
                shared.clone(),
                intro.node_id.clone(),
                intro.mesh_address.clone(),
            ));
        }
    }
}

/// How long a peer must stay out of the instructions before its link is retired: a path's
/// new link is listed at the scheduler's next choice of links.
const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// No link is retired within this long of a new scheduler session: a scheduler that just
/// started or took over lists only the nodes that have reconnected so far.
const SESSION_SETTLE: Duration = Duration::from_secs(30);

/// Retires the links this node dialed for the scheduler that its instructions have not
/// listed for [`RETIRE_AFTER`], past [`SESSION_SETTLE`] of the session (the scheduler keeps
/// a partial mesh): peers with a higher
/// id (those it is introduced to), not in its config, dialed by it, idle. A link that
/// still carries flows is retired at a later heartbeat, once they have ended.
fn retire_unlisted(shared: &Arc<Shared>, listed: &[NodeIntro]) {
    if shared.pool.retirements_held() {
        return;
    }
    let config = shared.running.lock().unwrap_or_else(|p| p.into_inner()).config.clone();
    let me = config.common.node_id.as_str();
    for peer in shared.pool.ids() {
        // Only links this node dialed: one a peer dialed (its static `peers`, say) is
        // the peer's to keep.
        let dialed_by_me = peer.as_str() > me
            && shared
                .pool
                .current_link(&peer)
                .is_none_or(|(_, _, initiator)| initiator == crate::core::link_rule::Initiator::Local);
        let configured = config.peers.iter().any(|p| p.name == peer);
        let kept = !dialed_by_me || configured || listed.iter().any(|n| n.node_id == peer);
        if shared.pool.unlisted_for(&peer, kept) >= RETIRE_AFTER && shared.pool.retire_if_idle(&peer) {
            info!(peer = %peer, "link retired: the scheduler no longer has this pair linked");
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

/// Turns QUIC connection statistics into per-report link metrics (loss, throughput and
/// capacity; see [`LossEstimate`] for why loss is not simply lost over sent).
#[derive(Default)]
struct LinkMeter {
    /// Per peer: the connection last sampled and its counters then.
    previous: HashMap<String, Sampled>,
    /// Flow and byte counts per route at the previous report.
    routes_before: HashMap<String, (u64, u64)>,
}

/// What the meter remembers of one peer link between reports.
struct Sampled {
    /// `Connection::stable_id` of the connection sampled: a link replaced by a new
    /// connection starts its counters from zero.
    conn: usize,
    counters: Counters,
    at: Instant,
    loss: LossEstimate,
}

/// The connection counters the link metrics come from, cumulative or as a delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    /// Packets sent, every kind (data, acknowledgements, keepalive PINGs).
    sent_packets: u64,
    /// Packets declared lost (quinn leaves MTU probes out).
    lost_packets: u64,
    /// STREAM and DATAGRAM frames sent: the data the link carried, as opposed to
    /// keepalives and acknowledgements.
    data_frames: u64,
    /// UDP payload bytes sent.
    tx_bytes: u64,
}

impl Counters {
    fn of(stats: &quinn::ConnectionStats) -> Self {
        Counters {
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            data_frames: stats.frame_tx.stream.saturating_add(stats.frame_tx.datagram),
            tx_bytes: stats.udp_tx.bytes,
        }
    }

    /// `self - before`, each counter saturating at 0.
    fn since(self, before: Counters) -> Counters {
        Counters {
            sent_packets: self.sent_packets.saturating_sub(before.sent_packets),
            lost_packets: self.lost_packets.saturating_sub(before.lost_packets),
            data_frames: self.data_frames.saturating_sub(before.data_frames),
            tx_bytes: self.tx_bytes.saturating_sub(before.tx_bytes),
        }
    }
}

/// Data packets a report interval must have sent for its loss to be measured.
const LOSS_MIN_DATA_PACKETS: u64 = 256;
/// Share of the past a measured interval keeps (memory of about four measured intervals).
const LOSS_DECAY: f64 = 0.75;

/// The loss of a link's data traffic, in parts per million, for the scheduler.
///
/// Lost over sent packets per report interval misleads in two ways. An idle link sends only
/// keepalive PINGs and acknowledgements, a few dozen packets per interval, and quinn counts
/// a PING it gave up on (or declared lost spuriously) like any packet: one in 68 read as
/// 1.47% loss on an idle loopback link. And a small sample makes a big percentage of a
/// single loss, which the scheduler would then route around. So an interval counts only
/// when it carried at least [`LOSS_MIN_DATA_PACKETS`] data packets (so one loss is at most
/// 0.4%, and keepalives, which quinn sends only when the link is otherwise quiet, are a
/// negligible share); its lost and sent packets go into sums that decay by
/// [`LOSS_DECAY`] per counted interval, so a busy interval weighs more than a light one and
/// the figure follows a change within a few intervals. An interval with too little data
/// leaves the estimate as it was: an idle link keeps the loss it showed when it last
/// carried traffic (0 if it never did), since keepalives say nothing about data loss.
#[derive(Debug, Clone, Copy, Default)]
struct LossEstimate {
    lost: f64,
    sent: f64,
}

impl LossEstimate {
    /// Takes one interval's counter deltas; returns the estimate, parts per million.
    fn update(&mut self, delta: Counters) -> u32 {
        // Frames and packets differ (several frames may share a packet, PINGs and
        // acknowledgements carry none): the smaller bounds the data packets from above.
        let data_packets = delta.data_frames.min(delta.sent_packets);
        if data_packets >= LOSS_MIN_DATA_PACKETS {
            // Losses are declared a round trip or more after the send, so an interval may
            // count losses of the one before: cap its ratio at 1.
            let lost = delta.lost_packets.min(delta.sent_packets);
            self.lost = self.lost * LOSS_DECAY + lost as f64;
            self.sent = self.sent * LOSS_DECAY + delta.sent_packets as f64;
        }
        self.ppm()
    }

    /// The estimate, parts per million (0 before any measured interval).
    fn ppm(&self) -> u32 {
        if self.sent <= 0.0 {
            return 0;
        }
        (self.lost / self.sent * 1e6).round().clamp(0.0, 1e6) as u32
    }
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
        // Links gone since the last report are forgotten.
        self.previous.retain(|peer, _| links.iter().any(|(p, _)| p == peer));
        links
            .iter()
            .map(|(peer, conn)| {
                let counters = Counters::of(&conn.stats());
                let id = conn.stable_id();
                let (delta, secs, mut loss) = match self.previous.get(peer) {
                    Some(p) => {
                        // A new connection for the same peer counts from its own start.
                        let before = if p.conn == id { p.counters } else { Counters::default() };
                        (counters.since(before), now.duration_since(p.at).as_secs_f64(), p.loss)
                    }
                    // First sight: loss from the connection's start, no throughput yet.
                    None => (counters, 0.0, LossEstimate::default()),
                };
                let loss_ppm = loss.update(delta);
                self.previous.insert(peer.clone(), Sampled { conn: id, counters, at: now, loss });
                LinkReport {
                    peer: peer.clone(),
                    rtt_us: u64::try_from(conn.rtt().as_micros()).unwrap_or(u64::MAX),
                    loss_ppm,
                    throughput_bps: if secs > 0.0 { (delta.tx_bytes as f64 / secs) as u64 } else { 0 },
                }
            })
            .collect()
    }
}

/// Sends the scheduler the [`capacities`] of this node's live links.
async fn send_capacities(
    shared: &Shared,
    send: &mut SendStream,
    cfg: &SchedulerClientConfig,
) -> anyhow::Result<()> {
    let links = capacities(&shared.pool.live_links());
    write(send, &ToScheduler::Capacity { links }, cfg).await
}

/// The capacity of each link whose congestion controller has measured one (the model
/// controller, once a round trip had the sender never short of data; see
/// [`crate::node::link::congestion::PathEstimate::probed`]). Before that its bandwidth estimate is
/// what keepalives were seen to deliver, far below capacity: such links are left out and the
/// scheduler falls back to throughput for them.
fn capacities(links: &[(String, Connection)]) -> Vec<LinkCapacity> {
    links
        .iter()
        .filter_map(|(peer, conn)| {
            let estimate = crate::node::link::congestion::estimate(conn).filter(|e| e.probed)?;
            Some(LinkCapacity { peer: peer.clone(), capacity_bps: estimate.bandwidth })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(sent: u64, lost: u64, data: u64) -> Counters {
        Counters { sent_packets: sent, lost_packets: lost, data_frames: data, tx_bytes: sent * 1200 }
    }

    #[test]
    fn lost_keepalives_on_an_idle_link_are_not_loss() {
        let mut e = LossEstimate::default();
        // 68 packets, one lost PING, no data: the 1.47% once shown for an idle loopback link.
        for _ in 0..100 {
            assert_eq!(e.update(interval(68, 1, 0)), 0);
        }
        // A trickle of data (a few requests) is still too little to measure.
        assert_eq!(e.update(interval(200, 2, 150)), 0);
    }

    #[test]
    fn loss_of_a_busy_link_is_measured_and_kept_through_idle_intervals() {
        let mut e = LossEstimate::default();
        assert_eq!(e.update(interval(10_000, 100, 9_900)), 10_000, "1%");
        // Idle: keepalives say nothing about data loss; the figure stays.
        assert_eq!(e.update(interval(60, 3, 0)), 10_000);
        // Busy again without loss: the old loss fades.
        let mut last = u32::MAX;
        for _ in 0..10 {
            let now = e.update(interval(10_000, 0, 10_000));
            assert!(now < last, "{now} after {last}");
            last = now;
        }
        assert!(last < 1_000, "{last}");
    }

    #[test]
    fn busy_intervals_weigh_by_their_packets_and_the_ratio_is_capped() {
        let mut e = LossEstimate::default();
        e.update(interval(100_000, 0, 100_000));
        // A light interval with one loss barely moves the estimate of a busy link.
        assert!(e.update(interval(300, 1, 300)) < 20, "{}", e.ppm());
        // Losses declared late cannot make more than everything lost.
        let mut f = LossEstimate::default();
        assert_eq!(f.update(interval(300, 900, 300)), 1_000_000);
    }

    #[test]
    fn counter_deltas_saturate() {
        let before = interval(10, 5, 10);
        assert_eq!(
            interval(4, 6, 12).since(before),
            Counters { sent_packets: 0, lost_packets: 1, data_frames: 2, tx_bytes: 0 }
        );
    }
}
