//! Emulated WAN links: a round trip, random loss and a rate, turned into a profile for
//! both directions of a [`LinkEmulator`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use proxy::emulator::{LinkEmulator, LinkProfile};

/// Bytes of a full-size QUIC packet, near enough, for turning bytes into packets.
const PACKET: f64 = 1250.0;

/// A WAN path as the bench describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wan {
    /// Round trip added by the emulator (half each way).
    pub rtt_ms: u64,
    /// Random loss, in percent, on each direction.
    pub loss_pct: f64,
    /// Bottleneck rate, each direction; `None` is unlimited.
    pub mbit: Option<u64>,
}

impl Wan {
    /// A path with all three set.
    pub fn new(rtt_ms: u64, loss_pct: f64, mbit: u64) -> Wan {
        Wan { rtt_ms, loss_pct, mbit: Some(mbit) }
    }

    /// No delay, no loss, no rate limit: what the emulator itself carries.
    pub fn unlimited() -> Wan {
        Wan { rtt_ms: 0, loss_pct: 0.0, mbit: None }
    }

    /// The configured round trip.
    pub fn rtt(&self) -> Duration {
        Duration::from_millis(self.rtt_ms)
    }

    /// Bandwidth-delay product in bytes (0 when unlimited).
    pub fn bdp(&self) -> u64 {
        self.mbit.map_or(0, |m| m * 1_000_000 / 8 * self.rtt_ms / 1000)
    }

    /// The profile of each direction. The queue limit counts packets in flight on the
    /// delay line as well as those waiting for the rate, so it is the one-way BDP plus a
    /// bottleneck buffer of `buffer_bdp` round-trip BDPs (the classic rule of thumb at 1).
    pub fn profile(&self, buffer_bdp: f64) -> LinkProfile {
        let queue_limit = match self.mbit {
            Some(_) => {
                let bytes = self.bdp() as f64 / 2.0 + self.bdp() as f64 * buffer_bdp;
                ((bytes / PACKET) as usize).max(64)
            }
            None => 100_000,
        };
        LinkProfile {
            delay: self.rtt() / 2,
            loss: self.loss_pct / 100.0,
            rate_bps: self.mbit.map(|m| m * 1_000_000),
            queue_limit,
            ..LinkProfile::ideal()
        }
    }

    /// A short label: `80ms 0.1% 100M`.
    pub fn label(&self) -> String {
        let rate = self.mbit.map_or("unlim".to_string(), |m| format!("{m}M"));
        format!("{}ms {}% {rate}", self.rtt_ms, self.loss_pct)
    }
}

/// An emulator in front of `target` with `wan` on both directions. The seed is the same
/// for every case, so runs over equal paths see equal loss patterns.
pub async fn emulate(target: SocketAddr, wan: Wan, buffer_bdp: f64) -> Result<LinkEmulator> {
    let emu = LinkEmulator::start(target, 15).await?;
    emu.set_both(wan.profile(buffer_bdp));
    Ok(emu)
}

/// Mbit/s of `bytes` in `d`.
pub fn mbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e6
}
