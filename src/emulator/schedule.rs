//! The timing decisions of one emulated direction, without I/O: loss and jitter draws,
//! the token-bucket bottleneck and FIFO delivery times. Takes `now`; exact under test.

use std::time::{Duration, Instant};

use super::{LinkProfile, RATE_BURST_BYTES};

/// SplitMix64: tiny, seedable and good enough to draw losses and jitter.
#[derive(Debug, Clone)]
pub(super) struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Deliver(Instant),
    Lost,
    Blackholed,
    Overflowed,
}

/// The timing decisions of one direction, without I/O: takes `now`, returns when (or
/// whether) a packet leaves.
#[derive(Debug)]
pub(super) struct Schedule {
    /// Loss and jitter draw from separate streams, so turning jitter on does not change
    /// which packets are lost.
    loss_rng: SplitMix,
    jitter_rng: SplitMix,
    /// Token bucket as a virtual time: the bucket holds `rate * (t - empty_at)` bytes,
    /// capped at the burst. A FIFO bottleneck, so departures never go backwards.
    empty_at: Option<Instant>,
    /// Latest delivery time handed out, to keep FIFO order when there is no jitter.
    last_due: Option<Instant>,
}

impl Schedule {
    pub(super) fn new(seed: u64) -> Self {
        let mut root = SplitMix(seed);
        Schedule {
            loss_rng: SplitMix(root.next_u64()),
            jitter_rng: SplitMix(root.next_u64()),
            empty_at: None,
            last_due: None,
        }
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now` with `queued`
    /// packets already held.
    pub(super) fn admit(&mut self, p: &LinkProfile, len: usize, queued: usize, now: Instant) -> Verdict {
        // Drawn for every packet, so the pattern depends only on the packet's index.
        let draw = self.loss_rng.next_f64();
        if p.blackhole || p.rate_bps == Some(0) {
            return Verdict::Blackholed;
        }
        if draw < p.loss.clamp(0.0, 1.0) {
            return Verdict::Lost;
        }
        if queued >= p.queue_limit {
            return Verdict::Overflowed;
        }
        let departs = match p.rate_bps {
            Some(rate) => self.bottleneck(rate, len as u64, now),
            None => now,
        };
        let mut due = departs + p.delay;
        if p.jitter.is_zero() {
            due = self.last_due.map_or(due, |last| due.max(last));
        } else {
            due += p.jitter.mul_f64(self.jitter_rng.next_f64());
        }
        self.last_due = Some(self.last_due.map_or(due, |last| last.max(due)));
        Verdict::Deliver(due)
    }

    /// When a packet of `len` bytes gets through the token bucket.
    fn bottleneck(&mut self, rate: u64, len: u64, now: Instant) -> Instant {
        let span =
            |bytes: u64| Duration::from_nanos((u128::from(bytes) * 8_000_000_000 / u128::from(rate)) as u64);
        // An idle bucket refills only up to the burst.
        let full_at = now.checked_sub(span(RATE_BURST_BYTES)).unwrap_or(now);
        let empty_at = self.empty_at.map_or(full_at, |e| e.max(full_at));
        let after = empty_at + span(len);
        self.empty_at = Some(after);
        after.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_at(v: Verdict) -> Instant {
        match v {
            Verdict::Deliver(t) => t,
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    #[test]
    fn equal_seeds_lose_the_same_packets_and_jitter_does_not_change_which() {
        let now = Instant::now();
        let lossy = LinkProfile::lossy(0.3);
        let jittery = LinkProfile { jitter: Duration::from_millis(5), ..lossy.clone() };
        let (mut a, mut b, mut c) = (Schedule::new(7), Schedule::new(7), Schedule::new(8));
        let pattern = |s: &mut Schedule, p: &LinkProfile| -> Vec<bool> {
            (0..1000).map(|_| s.admit(p, 100, 0, now) == Verdict::Lost).collect()
        };
        let pa = pattern(&mut a, &lossy);
        assert_eq!(pa, pattern(&mut b, &jittery));
        assert_ne!(pa, pattern(&mut c, &lossy));
        let lost = pa.iter().filter(|l| **l).count();
        assert!((200..400).contains(&lost), "lost {lost} of 1000 at p=0.3");
    }

    #[test]
    fn a_rate_limit_spaces_packets_after_the_burst() {
        let now = Instant::now();
        let mut s = Schedule::new(1);
        let p = LinkProfile::rate_limited(8_000_000); // 1 byte per microsecond
        let dues: Vec<Instant> = (0..32).map(|_| deliver_at(s.admit(&p, 1000, 0, now))).collect();
        // The first 16 KiB go at once; the rest one per millisecond.
        assert_eq!(dues[0], now);
        assert_eq!(dues[15], now);
        assert_eq!(dues[31] - dues[30], Duration::from_millis(1));
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
        // Idle for a second refills the bucket only up to the burst.
        let later = now + Duration::from_secs(1);
        assert_eq!(deliver_at(s.admit(&p, 1000, 0, later)), later);
    }

    #[test]
    fn without_jitter_a_shorter_delay_never_overtakes_queued_packets() {
        let now = Instant::now();
        let mut s = Schedule::new(1);
        let slow = deliver_at(s.admit(&LinkProfile::delayed(Duration::from_millis(100)), 10, 0, now));
        let fast = deliver_at(s.admit(&LinkProfile::ideal(), 10, 1, now));
        assert_eq!(fast, slow);
    }

    #[test]
    fn blackhole_zero_rate_and_full_queue_drop() {
        let now = Instant::now();
        let mut s = Schedule::new(1);
        assert_eq!(s.admit(&LinkProfile::blackholed(), 10, 0, now), Verdict::Blackholed);
        assert_eq!(s.admit(&LinkProfile::rate_limited(0), 10, 0, now), Verdict::Blackholed);
        let small = LinkProfile { queue_limit: 2, ..LinkProfile::ideal() };
        assert_eq!(s.admit(&small, 10, 2, now), Verdict::Overflowed);
        assert_eq!(s.admit(&small, 10, 1, now), Verdict::Deliver(now));
    }
}
