//! Delivery-rate samples: how fast the path delivered data over the interval a packet was
//! in flight, the bandwidth signal of a model-based controller.
//!
//! Each send remembers how much had been delivered when it left; its acknowledgement then
//! yields `delivered now - delivered then` over the longer of the send and ack intervals.
//! Taking the longer interval keeps a burst of compressed acknowledgements from reading as
//! a rate the path never carried.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Sends remembered at most; beyond it the oldest are forgotten (their acknowledgements then
/// give no sample). A window of 64 MiB in 1200-byte packets fits.
const MAX_RECORDS: usize = 65_536;

/// What the sampler knew when a batch of packets was sent.
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    sent: Instant,
    /// Bytes delivered when this batch was sent.
    delivered: u64,
    /// When that many bytes had been delivered.
    delivered_at: Instant,
    /// Send time of the packet most recently delivered when this batch was sent.
    first_sent: Instant,
}

/// One delivery-rate measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    /// Bytes per second delivered over the sample's interval.
    pub bytes_per_sec: u64,
    /// Bytes that had been delivered when the acknowledged packet was sent (round counting).
    pub delivered_at_send: u64,
}

/// Turns sends and acknowledgements into delivery-rate samples.
#[derive(Debug, Clone)]
pub struct DeliveryRate {
    records: VecDeque<SendRecord>,
    delivered: u64,
    delivered_at: Instant,
    first_sent: Instant,
}

impl DeliveryRate {
    /// A sampler with nothing sent yet.
    pub fn new(now: Instant) -> Self {
        Self { records: VecDeque::new(), delivered: 0, delivered_at: now, first_sent: now }
    }

    /// Bytes acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Packets left at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        if self.records.back().is_some_and(|r| r.sent == now) {
            // Same batch: the record already holds what this send would.
            return;
        }
        if self.records.is_empty() {
            // The pipe was empty: the interval starts now, not at the last delivery.
            self.delivered_at = now;
            self.first_sent = now;
        }
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(SendRecord {
            sent: now,
            delivered: self.delivered,
            delivered_at: self.delivered_at,
            first_sent: self.first_sent,
        });
    }

    /// A packet sent at `sent` carrying `bytes` was acknowledged at `now`. Returns a sample
    /// when the send is still known and the interval is long enough to mean something.
    pub fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        min_interval: Duration,
    ) -> Option<RateSample> {
        self.delivered += bytes;
        self.delivered_at = now;
        // Sends older than this one were acknowledged or lost already.
        while self.records.front().is_some_and(|r| r.sent < sent) {
            self.records.pop_front();
        }
        let record = *self.records.front().filter(|r| r.sent == sent)?;
        self.first_sent = sent;
        let send_interval = sent.saturating_duration_since(record.first_sent);
        let ack_interval = now.saturating_duration_since(record.delivered_at);
        let interval = send_interval.max(ack_interval);
        if interval < min_interval || interval.is_zero() {
            return None;
        }
        let bytes = self.delivered - record.delivered;
        let rate = bytes as f64 / interval.as_secs_f64();
        Some(RateSample { bytes_per_sec: rate as u64, delivered_at_send: record.delivered })
    }

    /// Everything in flight was declared lost: nothing is left to sample.
    pub fn forget(&mut self) {
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_samples_its_own_rate() {
        let t0 = Instant::now();
        let mut d = DeliveryRate::new(t0);
        let ms = Duration::from_millis;
        // 1200 bytes every ms, each acked 50 ms later: 1.2 MB/s.
        let mut last = None;
        for i in 0..200u64 {
            let now = t0 + ms(i);
            d.on_sent(now);
            if i >= 50 {
                last = d.on_ack(now, t0 + ms(i - 50), 1200, ms(10)).or(last);
            }
        }
        let rate = last.expect("samples").bytes_per_sec;
        assert!((1_150_000..=1_250_000).contains(&rate), "{rate}");
    }

    #[test]
    fn compressed_acks_do_not_read_as_a_faster_path() {
        let t0 = Instant::now();
        let mut d = DeliveryRate::new(t0);
        let ms = Duration::from_millis;
        for i in 0..100u64 {
            d.on_sent(t0 + ms(i));
        }
        // All 100 acknowledged within 1 ms, 100 ms after the first send.
        let mut best = 0;
        for i in 0..100u64 {
            if let Some(s) = d.on_ack(t0 + ms(100), t0 + ms(i), 1200, ms(1)) {
                best = best.max(s.bytes_per_sec);
            }
        }
        // Sent at 1.2 MB/s: the send interval bounds the sample, not the 1 ms ack burst.
        assert!(best <= 1_300_000, "{best}");
    }
}
