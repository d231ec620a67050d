//! What one multipath subflow can carry, learned from the receiver's per-subflow acks.
//!
//! The sender counts payload bytes it put on the subflow; the receiver acks the payload
//! bytes it got on it. From that come:
//! - the RTT (time from sending a byte to its ack), smoothed and minimum;
//! - the delivery rate (acked bytes per interval of about one RTT, the recent maximum);
//! - the window: about twice the path's bandwidth-delay product, so the path stays busy
//!   while the queue it builds stays near one BDP. A slow path thus holds few bytes in
//!   flight, and the reorder buffer at the far end stays small;
//! - a stall: bytes in flight and nothing heard on the subflow (no ack progress, no frame)
//!   for longer than the stall timeout means the path is gone (a blackholed link shows no
//!   error until QUIC's idle timeout). Frames from the peer count as signs of life
//!   because its acks may wait behind its own data on the same stream; a path that works
//!   only towards us is caught by the peer, whose bytes then go unacknowledged.
//!
//! Time is passed in, so the logic is tested without clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window of a subflow before it has any measurement.
pub const INITIAL_WINDOW: u64 = 256 * 1024;
/// Smallest window: enough for a few frames on any path.
pub const MIN_WINDOW: u64 = 128 * 1024;
/// The shortest stall that declares a path dead.
pub const MIN_STALL: Duration = Duration::from_secs(1);
/// The stall that declares a path dead before its RTT is known (a slow path must not be
/// taken for a dead one on its first round trip).
pub const FIRST_STALL: Duration = Duration::from_secs(3);
/// Send marks kept for RTT samples (older ones are dropped, losing only samples).
const MAX_MARKS: usize = 256;
/// Bytes between two send marks.
const MARK_EVERY: u64 = 16 * 1024;
/// Rate samples kept for the windowed maximum.
const RATE_SAMPLES: usize = 8;

/// Measurements of one subflow.
#[derive(Debug, Clone)]
pub struct SubflowMeter {
    sent: u64,
    acked: u64,
    marks: VecDeque<(u64, Instant)>,
    srtt: Option<Duration>,
    min_rtt: Option<Duration>,
    rates: VecDeque<f64>,
    interval_start: (u64, Instant),
    last_progress: Instant,
    initial_window: u64,
}

impl SubflowMeter {
    /// A meter for a subflow opened at `now`, starting with `initial_window`.
    pub fn new(now: Instant, initial_window: u64) -> Self {
        Self {
            sent: 0,
            acked: 0,
            marks: VecDeque::new(),
            srtt: None,
            min_rtt: None,
            rates: VecDeque::new(),
            interval_start: (0, now),
            last_progress: now,
            initial_window: initial_window.max(MIN_WINDOW),
        }
    }

    /// Takes one RTT sample from outside the acks (the open round trip).
    pub fn sample_rtt(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            Some(s) => (s * 7 + rtt) / 8,
            None => rtt,
        });
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// Counts silence from `now` on (bytes sent so far waited for something else, such as
    /// the subflow's reply). RTT marks keep their send times: a sample from them is too
    /// long, never too short, so the minimum RTT (and the window) stays honest.
    pub fn restart_stall_clock(&mut self, now: Instant) {
        self.last_progress = now;
        self.interval_start = (self.acked, now);
    }

    /// The peer sent something on the subflow at `now`: the path is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_progress = self.last_progress.max(now);
    }

    /// Records `len` payload bytes put on the subflow at `now`.
    pub fn on_send(&mut self, len: u64, now: Instant) {
        if self.in_flight() == 0 {
            // Idle until now: the stall clock starts with this send.
            self.last_progress = now;
            self.interval_start = (self.acked, now);
        }
        let before = self.sent;
        self.sent += len;
        if before / MARK_EVERY != self.sent / MARK_EVERY || self.marks.is_empty() {
            if self.marks.len() == MAX_MARKS {
                self.marks.pop_front();
            }
            self.marks.push_back((self.sent, now));
        }
    }

    /// The receiver acknowledged `received` payload bytes in total, at `now`.
    pub fn on_ack(&mut self, received: u64, now: Instant) {
        let received = received.min(self.sent);
        if received <= self.acked {
            return;
        }
        self.acked = received;
        self.last_progress = now;
        let mut newest = None;
        while let Some(&(mark, at)) = self.marks.front() {
            if mark > received {
                break;
            }
            newest = Some(at);
            self.marks.pop_front();
        }
        if let Some(at) = newest {
            self.sample_rtt(now.saturating_duration_since(at));
        }
        let (start_bytes, start_at) = self.interval_start;
        let elapsed = now.saturating_duration_since(start_at);
        let interval = self.min_rtt.unwrap_or(Duration::from_millis(10)).max(Duration::from_millis(5));
        if elapsed >= interval {
            let rate = (received - start_bytes) as f64 / elapsed.as_secs_f64();
            if self.rates.len() == RATE_SAMPLES {
                self.rates.pop_front();
            }
            self.rates.push_back(rate);
            self.interval_start = (received, now);
        }
    }

    /// Payload bytes sent and not yet acknowledged by the receiver.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.acked
    }

    /// Payload bytes sent in total.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Bytes the subflow may have in flight: about twice its bandwidth-delay product.
    pub fn window(&self) -> u64 {
        let rate = self.rates.iter().copied().fold(0.0, f64::max);
        match self.min_rtt {
            Some(rtt) if rate > 0.0 => ((2.0 * rate * rtt.as_secs_f64()) as u64).max(MIN_WINDOW),
            _ => self.initial_window,
        }
    }

    /// Bytes that may be put on the subflow now.
    pub fn room(&self) -> u64 {
        self.window().saturating_sub(self.in_flight())
    }

    /// How long bytes may wait for an ack before the path counts as dead.
    pub fn stall_timeout(&self) -> Duration {
        self.srtt.map_or(FIRST_STALL, |srtt| (srtt * 4).max(MIN_STALL))
    }

    /// How long nothing has been heard on the subflow (ack progress or any frame).
    pub fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_progress)
    }

    /// Whether bytes are in flight and no ack has come for longer than the stall timeout.
    pub fn stalled(&self, now: Instant) -> bool {
        self.in_flight() > 0 && now.saturating_duration_since(self.last_progress) > self.stall_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a meter over a path served at `rate` bytes/s whose acks come back `rtt`
    /// after the bytes were served, always sending what the window allows, in 1 ms steps.
    fn drive(rate: f64, rtt: Duration, steps: u32) -> SubflowMeter {
        let t0 = Instant::now();
        let mut m = SubflowMeter::new(t0, INITIAL_WINDOW);
        let lag = rtt.as_millis() as usize;
        let mut served = 0.0f64;
        let mut history = Vec::new();
        for step in 0..steps as usize {
            let now = t0 + MS * step as u32;
            served = (served + rate / 1000.0).min(m.sent() as f64);
            history.push(served);
            if step >= lag {
                m.on_ack(history[step - lag] as u64, now);
            }
            let room = m.room();
            if room > 0 {
                m.on_send(room, now);
            }
        }
        m
    }

    #[test]
    fn the_window_settles_near_twice_the_bandwidth_delay_product() {
        let rate = 5_000_000.0; // 40 Mbit/s
        let rtt = 40 * MS;
        let m = drive(rate, rtt, 3000);
        let bdp = rate * rtt.as_secs_f64();
        let w = m.window() as f64;
        assert!(w >= bdp && w <= 4.0 * bdp, "window {w} against BDP {bdp}");
    }

    #[test]
    fn a_slow_path_gets_a_smaller_window_than_a_fast_one() {
        let slow = drive(1_000_000.0, 120 * MS, 3000);
        let fast = drive(10_000_000.0, 10 * MS, 3000);
        assert!(slow.window() < fast.window(), "slow {} fast {}", slow.window(), fast.window());
    }

    #[test]
    fn a_subflow_stalls_only_with_bytes_in_flight_and_no_acks() {
        let t0 = Instant::now();
        let mut m = SubflowMeter::new(t0, INITIAL_WINDOW);
        assert!(!m.stalled(t0 + Duration::from_secs(60)), "idle is not stalled");
        m.on_send(1000, t0);
        assert!(!m.stalled(t0 + 2900 * MS), "no RTT known yet: patient");
        assert!(m.stalled(t0 + 3100 * MS));
        m.sample_rtt(10 * MS);
        assert!(!m.stalled(t0 + 900 * MS));
        assert!(m.stalled(t0 + 1100 * MS), "a known short RTT: one second");
        m.on_send(10, t0 + 1100 * MS);
        m.heard(t0 + 2000 * MS);
        assert!(!m.stalled(t0 + 2900 * MS), "a frame from the peer is a sign of life");
        m.on_ack(1010, t0 + 3000 * MS);
        assert!(!m.stalled(t0 + 5000 * MS), "everything acked");
        m.on_send(10, t0 + 10_000 * MS);
        assert!(!m.stalled(t0 + 10_500 * MS), "the stall clock starts at the send after idling");
    }

    #[test]
    fn restarting_the_stall_clock_never_shortens_an_rtt_sample() {
        let t0 = Instant::now();
        let mut m = SubflowMeter::new(t0, INITIAL_WINDOW);
        m.on_send(1000, t0);
        m.restart_stall_clock(t0 + 50 * MS);
        m.on_ack(1000, t0 + 60 * MS);
        assert_eq!(m.srtt(), Some(60 * MS), "measured from the send, not from the restart");
    }

    #[test]
    fn acks_beyond_what_was_sent_are_clamped() {
        let t0 = Instant::now();
        let mut m = SubflowMeter::new(t0, INITIAL_WINDOW);
        m.on_send(100, t0);
        m.on_ack(1_000_000, t0 + MS);
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.room(), INITIAL_WINDOW);
    }
}
