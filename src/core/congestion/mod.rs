//! The mesh's own congestion controller, as a pure model: it takes sends, acknowledgements
//! and losses with the time they happened, and answers how many bytes may be in flight.
//! `node::link::congestion` adapts it to quinn's `Controller` trait (quinn paces at 1.25 times
//! that window per smoothed round trip, so the window is also the pacing knob).
//!
//! Why a model and not a loss-driven window: cross-region paths lose packets at random
//! (0.1-1% is common), and CUBIC or NewReno halve their window on each loss, so one flow on
//! an 80 ms path with 1% loss carries a few Mbit/s of a 100 Mbit/s link. The model instead
//! estimates what the path can carry:
//! - the bottleneck bandwidth, the largest delivery rate of the last [`BW_ROUNDS`] measured
//!   round trips;
//! - the propagation round trip, the smallest round trip of the last [`MIN_RTT_WINDOW`];
//!
//! and keeps about their product (the bandwidth-delay product, BDP) in flight:
//! - **startup**: the window grows by what is acknowledged (doubling per round trip), capped
//!   at [`STARTUP_GAIN`] x BDP, until the bandwidth stops growing for three rounds or a round
//!   loses more than [`LOSS_THRESHOLD`];
//! - **drain**: the window is one BDP until the queue startup built has left;
//! - **cruise**: cycles of one min-RTT per phase through the gains of [`CYCLE`] on top of
//!   a [`HEADROOM`] of a quarter BDP (room for delayed and aggregated acknowledgements): one
//!   phase probes for more bandwidth, the next drains what the probe queued, six cruise;
//! - **probe RTT**: when a busy link has not confirmed its min RTT for [`MIN_RTT_WINDOW`],
//!   the window drops to half a BDP for [`PROBE_RTT_TIME`] so the queue empties and the
//!   true round trip shows again (an idle link takes the smallest round trip it saw lately
//!   instead: it builds no queue of its own).
//!
//! Loss: random loss does not shrink the window. A round that loses more than
//! [`LOSS_THRESHOLD`] of what it sent (well above random loss on a usable path) means the
//! model's window overflows a queue: the window is capped at [`LOSS_BACKOFF`] of what it
//! was, never below one BDP, and the cap is raised again by an eighth each cycle without
//! such a round. So the queue a link builds stays within a quarter BDP in cruise and its
//! self-caused loss at a shallow tail-drop queue stays near the threshold.

use std::time::{Duration, Instant};

pub mod delivery;
pub mod filter;
#[cfg(test)]
mod sim;

use delivery::DeliveryRate;
use filter::{MaxOverRounds, MinRtt};

/// Measured round trips the bandwidth estimate remembers.
pub const BW_ROUNDS: usize = 10;
/// How long a min-RTT estimate holds without being confirmed.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How soon a min RTT expires when every round trip since was more than twice as long.
pub const MIN_RTT_QUICK_EXPIRY: Duration = Duration::from_secs(1);
/// How long probe RTT holds the window low.
pub const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Startup's cap on the window, in BDPs (2/ln 2, the gain that doubles delivery each round).
pub const STARTUP_GAIN: f64 = 2.885;
/// Extra window above the phase gain in cruise, in BDPs.
pub const HEADROOM: f64 = 0.25;
/// Cruise phase gains, one min RTT each: probe up, drain, six cruise.
pub const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Share of a round's bytes lost above which the loss is read as congestion.
pub const LOSS_THRESHOLD: f64 = 0.02;
/// Fewest packets lost in a round for its loss to count as congestion (one loss in a short
/// round is not a trend).
const LOSS_MIN_PACKETS: u64 = 8;
/// What the window is cut to when a round's loss reads as congestion.
pub const LOSS_BACKOFF: f64 = 0.85;
/// The first window, in packets: a link is long-lived, so a bigger start than a web
/// connection's pays off once and costs little.
const INITIAL_PACKETS: u64 = 32;
/// The smallest window, in packets.
const MIN_PACKETS: u64 = 4;
/// Rounds without bandwidth growth of [`GROWTH`] that end startup.
const FULL_BW_ROUNDS: u32 = 3;
/// Growth per round that means startup is still finding bandwidth.
const GROWTH: f64 = 1.25;

/// Where the controller is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Finding the bandwidth.
    Startup,
    /// Emptying the queue startup built.
    Drain,
    /// Steady state: phase `index` of [`CYCLE`], entered at `since`.
    Cruise {
        /// Index into [`CYCLE`].
        index: usize,
        /// When this phase began.
        since: Instant,
    },
    /// Holding the window low to measure the propagation round trip.
    ProbeRtt {
        /// When the low window has drained the pipe and the hold ends (`None`: not yet).
        until: Option<Instant>,
        /// Smallest round trip seen during the probe.
        seen: Option<Duration>,
    },
}

/// Bytes sent and lost during the current round trip.
#[derive(Debug, Default, Clone, Copy)]
struct RoundLoss {
    sent: u64,
    lost: u64,
}

/// The model-based controller's state.
#[derive(Debug, Clone)]
pub struct PathModel {
    mtu: u64,
    phase: Phase,
    window: u64,
    delivery: DeliveryRate,
    bandwidth: MaxOverRounds,
    min_rtt: MinRtt,
    /// Round trips counted by delivery: a round ends when a packet sent after its start is
    /// acknowledged.
    round: u64,
    next_round_delivered: u64,
    round_app_limited: bool,
    loss: RoundLoss,
    /// Startup's plateau detector.
    full_bw: u64,
    full_bw_rounds: u32,
    /// A window cap learned from rounds with congestive loss.
    loss_cap: Option<u64>,
    in_flight: u64,
    app_limited: bool,
    /// Bytes acknowledged since the last batch ended.
    acked_batch: u64,
    /// The current acknowledgement epoch: since when acknowledgements ran ahead of the
    /// bandwidth estimate, and how much they acknowledged.
    ack_epoch: Option<(Instant, u64)>,
    /// The most acknowledgements ran ahead of the estimate, over recent rounds.
    extra_acked: MaxOverRounds,
    /// Whether a round trip since the last restart had the sender never short of data, so
    /// the bandwidth estimate was measured against the path and not only against what an
    /// idle sender offered (keepalives, handshake): see [`PathModel::probed`].
    probed: bool,
}

impl PathModel {
    /// A model for a new path at `now`, with datagrams of `mtu` bytes.
    pub fn new(now: Instant, mtu: u16) -> Self {
        let mtu = u64::from(mtu).max(1);
        Self {
            mtu,
            phase: Phase::Startup,
            window: INITIAL_PACKETS * mtu,
            delivery: DeliveryRate::new(now),
            bandwidth: MaxOverRounds::new(BW_ROUNDS),
            min_rtt: MinRtt::new(now),
            round: 0,
            next_round_delivered: 0,
            round_app_limited: false,
            loss: RoundLoss::default(),
            full_bw: 0,
            full_bw_rounds: 0,
            loss_cap: None,
            in_flight: 0,
            app_limited: false,
            acked_batch: 0,
            ack_epoch: None,
            extra_acked: MaxOverRounds::new(BW_ROUNDS),
            probed: false,
        }
    }

    /// Bytes that may be in flight now.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The window a new path starts with.
    pub fn initial_window(&self) -> u64 {
        INITIAL_PACKETS * self.mtu
    }

    /// The bottleneck-bandwidth estimate in bytes per second, once measured.
    pub fn bandwidth(&self) -> Option<u64> {
        Some(self.bandwidth.get()).filter(|&b| b > 0)
    }

    /// Whether the bandwidth estimate is a capacity figure: some round trip since the path
    /// was (re)learned had the sender never short of data. Until then the estimate is only
    /// the fastest the link was seen to deliver what little it was offered (on an idle link,
    /// keepalives), a lower bound that can be orders of magnitude below the path's capacity.
    /// Samples taken while idle enter the estimate only when they beat it, so once probed
    /// the estimate stays at or above a measured figure.
    pub fn probed(&self) -> bool {
        self.probed
    }

    /// The propagation round-trip estimate, once measured.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Bandwidth times propagation delay, once both are measured.
    pub fn bdp(&self) -> Option<u64> {
        let bw = self.bandwidth()?;
        let rtt = self.min_rtt()?;
        Some((bw as f64 * rtt.as_secs_f64()) as u64)
    }

    /// `bytes` left in packets at `now`.
    pub fn on_sent(&mut self, now: Instant, bytes: u64) {
        self.delivery.on_sent(now);
        self.loss.sent += bytes;
    }

    /// A packet of `bytes` sent at `sent` was acknowledged at `now`; `app_limited` is
    /// whether the sender had run out of data to send before this acknowledgement.
    pub fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        let rtt = now.saturating_duration_since(sent);
        self.min_rtt.update(now, rtt);
        if let Phase::ProbeRtt { seen, .. } = &mut self.phase {
            *seen = Some(seen.map_or(rtt, |s| s.min(rtt)));
        }
        let min_interval = self.min_rtt().unwrap_or_default() / 2;
        let sample = self.delivery.on_ack(now, sent, bytes, min_interval);
        self.round_app_limited |= app_limited;
        if let Some(sample) = sample {
            if sample.delivered_at_send >= self.next_round_delivered {
                self.end_round();
            }
            if !app_limited || sample.bytes_per_sec > self.bandwidth.get() {
                self.bandwidth.update(self.round, sample.bytes_per_sec);
            }
        }
        if self.phase == Phase::Startup {
            self.window = self.window.saturating_add(bytes);
        }
        self.acked_batch += bytes;
    }

    /// A batch of acknowledgements was handled; `in_flight` bytes remain unacknowledged.
    pub fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool) {
        self.in_flight = in_flight;
        self.app_limited = app_limited;
        self.measure_aggregation(now);
        self.advance(now);
        self.window = self.target_window();
    }

    /// Packets of `lost_bytes` were declared lost, the newest sent at `sent`. `persistent`:
    /// everything sent over several probe timeouts was lost (an outage or a new path).
    pub fn on_loss(&mut self, now: Instant, persistent: bool, lost_bytes: u64) {
        self.loss.lost += lost_bytes;
        if persistent {
            // The path is not the one measured: learn it again, from a small window.
            self.restart();
            self.window = MIN_PACKETS * self.mtu;
            self.min_rtt = MinRtt::new(now);
        }
    }

    /// Takes `rtt`, measured afresh, as the propagation round trip; when it more than
    /// doubled, the path changed and the model starts over.
    fn adopt_min_rtt(&mut self, now: Instant, rtt: Duration) {
        let grew = self.min_rtt().is_some_and(|before| rtt > before * 2 + Duration::from_millis(2));
        self.min_rtt.set(now, rtt);
        if grew {
            self.restart();
        }
    }

    /// Forgets the bandwidth and starts finding it again: the path changed (its round trip
    /// more than doubled, or everything in flight was lost), so what was measured on the
    /// old one says nothing. Startup finds the new rate in a few round trips, where cruise
    /// would take a probe cycle per 25%.
    fn restart(&mut self) {
        self.bandwidth.reset();
        self.delivery.forget();
        self.full_bw = 0;
        self.full_bw_rounds = 0;
        self.loss_cap = None;
        self.probed = false;
        self.extra_acked.reset();
        self.ack_epoch = None;
        self.phase = Phase::Startup;
        self.window = self.window.max(self.initial_window());
    }

    /// The path's datagram size changed.
    pub fn on_mtu(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu).max(1);
        self.window = self.window.max(MIN_PACKETS * self.mtu);
    }

    fn end_round(&mut self) {
        self.round += 1;
        // The first rounds carry the handshake, whose flags say little about the path.
        if !self.round_app_limited && self.round > 2 {
            self.probed = true;
        }
        self.next_round_delivered = self.delivery.delivered();
        let congested = self.loss.lost >= LOSS_MIN_PACKETS * self.mtu
            && self.loss.lost as f64 > LOSS_THRESHOLD * self.loss.sent.max(1) as f64;
        if congested {
            let floor = self.bdp().unwrap_or(0);
            let cap = ((self.window as f64 * LOSS_BACKOFF) as u64).max(floor);
            self.loss_cap = Some(self.loss_cap.map_or(cap, |c| c.min(cap)).max(floor));
        }
        if self.phase == Phase::Startup {
            self.check_full_pipe(congested);
        }
        self.loss = RoundLoss::default();
        self.round_app_limited = false;
    }

    fn check_full_pipe(&mut self, congested: bool) {
        if congested {
            self.phase = Phase::Drain;
            return;
        }
        if self.round_app_limited {
            return;
        }
        let bw = self.bandwidth.get();
        if bw as f64 >= self.full_bw as f64 * GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
        } else {
            self.full_bw_rounds += 1;
            if self.full_bw_rounds >= FULL_BW_ROUNDS {
                self.phase = Phase::Drain;
            }
        }
    }

    fn advance(&mut self, now: Instant) {
        let bdp = self.bdp();
        let min_rtt = self.min_rtt().unwrap_or(Duration::from_millis(100));
        match self.phase {
            Phase::Startup => {}
            Phase::Drain => {
                if bdp.is_none_or(|b| self.in_flight <= b) {
                    self.phase = Phase::Cruise { index: 2, since: now };
                }
            }
            Phase::Cruise { index, since } => {
                if self.min_rtt.expired(now, MIN_RTT_WINDOW, MIN_RTT_QUICK_EXPIRY) {
                    match self.min_rtt.recent() {
                        // An idle link queues nothing of its own: what it saw lately is the
                        // path (a route that grew longer under the link shows here).
                        Some(recent) if self.app_limited => self.adopt_min_rtt(now, recent),
                        _ => self.phase = Phase::ProbeRtt { until: None, seen: None },
                    }
                } else if now.saturating_duration_since(since) >= min_rtt {
                    let next = (index + 1) % CYCLE.len();
                    if next == 0 {
                        // A whole cycle without congestive loss: allow more in flight.
                        // Saturating: on a short path cycles come thousands of times a
                        // second, and an overflowing cap killed the link (a panic in
                        // the connection driver) or, in a release build, wrapped to a
                        // window of almost nothing.
                        self.loss_cap = self.loss_cap.map(|c| c.saturating_add(c / 8));
                    }
                    self.phase = Phase::Cruise { index: next, since: now };
                }
            }
            Phase::ProbeRtt { until, seen } => match until {
                None if self.in_flight <= self.probe_rtt_window() => {
                    let hold = PROBE_RTT_TIME.max(min_rtt);
                    self.phase = Phase::ProbeRtt { until: Some(now + hold), seen };
                }
                Some(until) if now >= until => {
                    self.phase = Phase::Cruise { index: 2, since: now };
                    if let Some(seen) = seen {
                        self.adopt_min_rtt(now, seen);
                    }
                }
                _ => {}
            },
        }
    }

    /// How far acknowledgements run ahead of the bandwidth estimate: receivers and
    /// network stacks acknowledge in bursts (delayed acks, batched receive), and a window
    /// of one BDP then sits idle between bursts. On loopback, where a BDP is a few
    /// packets, that halved throughput; the window keeps the largest recent excess as
    /// extra room, as BBR does.
    fn measure_aggregation(&mut self, now: Instant) {
        let batch = std::mem::take(&mut self.acked_batch);
        let bw = self.bandwidth.get();
        if batch == 0 || bw == 0 {
            return;
        }
        let (start, acked) = self.ack_epoch.unwrap_or((now, 0));
        let expected = (bw as f64 * now.saturating_duration_since(start).as_secs_f64()) as u64;
        let (start, acked) = if acked <= expected { (now, batch) } else { (start, acked + batch) };
        let expected = (bw as f64 * now.saturating_duration_since(start).as_secs_f64()) as u64;
        self.ack_epoch = Some((start, acked));
        let extra = acked.saturating_sub(expected).min(self.window);
        self.extra_acked.update(self.round, extra);
    }

    fn probe_rtt_window(&self) -> u64 {
        (self.bdp().unwrap_or(0) / 2).max(MIN_PACKETS * self.mtu)
    }

    fn target_window(&self) -> u64 {
        let min = MIN_PACKETS * self.mtu;
        let Some(bdp) = self.bdp() else { return self.window.max(min) };
        let scaled = |gain: f64| (bdp as f64 * gain) as u64;
        let target = match self.phase {
            Phase::Startup => self.window.min(scaled(STARTUP_GAIN).max(self.initial_window())),
            Phase::Drain => bdp.saturating_add(self.extra_acked.get()),
            Phase::Cruise { index, .. } => {
                scaled(CYCLE[index] + HEADROOM).saturating_add(self.extra_acked.get())
            }
            Phase::ProbeRtt { .. } => return self.probe_rtt_window(),
        };
        let capped = match self.loss_cap {
            Some(cap) if self.phase != Phase::Startup => target.min(cap),
            _ => target,
        };
        capped.max(min)
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// Rounds of `per_round` 1200-byte packets, each sent 1 ms apart and acknowledged 10 ms
    /// later, all with the given app-limited flag.
    fn rounds(m: &mut PathModel, start: Instant, rounds: u32, per_round: u32, app_limited: bool) -> Instant {
        let mut t = start;
        for _ in 0..rounds {
            let sends: Vec<Instant> =
                (0..per_round).map(|i| t + Duration::from_millis(u64::from(i))).collect();
            for &s in &sends {
                m.on_sent(s, 1200);
            }
            for &s in &sends {
                let at = s + Duration::from_millis(10);
                m.on_ack(at, s, 1200, app_limited);
                m.on_end_acks(at, 0, app_limited);
            }
            t += Duration::from_millis(u64::from(per_round) + 11);
        }
        t
    }

    #[test]
    fn a_loss_cap_that_keeps_growing_through_cruise_cycles_saturates() {
        let t0 = Instant::now();
        let mut m = PathModel::new(t0, 1200);
        let t = rounds(&mut m, t0, 30, 20, false);
        assert!(matches!(m.phase, Phase::Cruise { .. }), "in cruise: {:?}", m.phase);
        // Near the top after many loss-free cycles; the next cycles must not overflow.
        m.loss_cap = Some(u64::MAX - 1);
        rounds(&mut m, t, 30, 20, false);
        assert_eq!(m.loss_cap, Some(u64::MAX));
    }

    #[test]
    fn only_a_round_with_the_sender_never_short_of_data_makes_the_estimate_a_capacity() {
        let t0 = Instant::now();
        let mut m = PathModel::new(t0, 1200);
        // An idle link: keepalives, one small packet per round, all app-limited.
        let t = rounds(&mut m, t0, 20, 1, true);
        assert!(m.bandwidth().is_some(), "it measured something");
        assert!(!m.probed(), "but only what an idle sender offered");
        rounds(&mut m, t, 5, 20, false);
        assert!(m.probed());
        // Persistent loss: the path is learned again, and so is whether it was probed.
        m.on_loss(t + Duration::from_secs(5), true, 1200);
        assert!(!m.probed());
    }
}
