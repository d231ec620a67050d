//! Bare quinn over the same emulated path as the mesh: the baselines. The transport is
//! the mesh's own (`proxy::node::transport_config`, same windows) with only the
//! congestion controller swapped; the path ceiling uses a fixed window that ignores loss.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proxy::config::Congestion;
use proxy::emulator::LinkEmulator;
use proxy::tls::TlsIdentity;
use quinn::congestion::{Controller, ControllerFactory};
use quinn::{TransportConfig, VarInt};

use crate::Ctx;
use crate::net::{Wan, emulate};
use crate::report::Run;
use crate::traffic::{hash_to_end, quic_upload, sampled, timed};

/// The congestion controller of a bare run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cc {
    /// A controller the mesh offers (`mesh.congestion`), on bare quinn.
    Quinn(Congestion),
    /// A fixed window of this many bytes that ignores loss: what the path can carry.
    Fixed(u64),
}

impl Cc {
    /// A row label.
    pub fn label(&self) -> String {
        match self {
            Cc::Quinn(c) => format!("quinn {}", c.name()),
            Cc::Fixed(w) => format!("fixed {:.1} MiB", *w as f64 / 1048576.0),
        }
    }
}

/// 1.25 BDP: enough to keep the bottleneck busy through the delay, while the queue it
/// builds stays at a quarter of a round trip. A path without a rate limit gets 4 MiB,
/// so that only the CPU limits it.
pub fn fixed_window(wan: Wan) -> u64 {
    match wan.bdp() {
        0 => 4 << 20,
        bdp => (bdp * 5 / 4).max(64 * 1024),
    }
}

/// A congestion "controller" with a constant window: it ignores loss, so what it gets is
/// the path's capacity less the random loss. Pacing (quinn's, from window and RTT) still
/// applies.
#[derive(Debug, Clone)]
struct FixedWindow(u64);

impl Controller for FixedWindow {
    fn on_congestion_event(&mut self, _: Instant, _: Instant, _: bool, _: u64) {}
    fn on_mtu_update(&mut self, _: u16) {}
    fn window(&self) -> u64 {
        self.0
    }
    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }
    fn initial_window(&self) -> u64 {
        self.0
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl ControllerFactory for FixedWindow {
    fn build(self: Arc<Self>, _: Instant, _: u16) -> Box<dyn Controller> {
        Box::new((*self).clone())
    }
}

/// The mesh's transport with `cc`. A fixed window also gets flow-control windows of
/// twice its size, so that only the path limits it.
fn transport(mesh: &proxy::config::Config, cc: Cc) -> TransportConfig {
    let mut t = proxy::node::transport_config(&mesh.mesh, &mesh.limits);
    match cc {
        Cc::Quinn(c) => t.congestion_controller_factory(proxy::node::congestion_factory(c)),
        Cc::Fixed(w) => {
            let window = (2 * w).max(16 << 20);
            let v = VarInt::from_u64(window).unwrap_or(VarInt::MAX);
            t.stream_receive_window(v).receive_window(v).send_window(window);
            t.congestion_controller_factory(Arc::new(FixedWindow(w)))
        }
    };
    t
}

/// A client and a server endpoint (certificates of nodes `a` and `b`), connected through
/// an emulator, or directly.
pub struct BarePair {
    conn: quinn::Connection,
    received: Arc<AtomicU64>,
    base_rtt_ms: f64,
    // Kept for their lifetime: dropping them closes the path.
    _client: quinn::Endpoint,
    _server: quinn::Endpoint,
    _emu: Option<LinkEmulator>,
}

fn identity(dir: &Path, id: &str) -> Result<TlsIdentity> {
    let f = |ext: &str| dir.join(format!("{id}.{ext}"));
    Ok(TlsIdentity::load(&f("crt"), &f("key"), &dir.join("ca.crt"), id)?)
}

fn endpoint(dir: &Path, id: &str, mesh: &proxy::config::Config, cc: Cc) -> Result<quinn::Endpoint> {
    let socket = proxy::quic::bind_udp("127.0.0.1:0".parse()?, mesh.mesh.udp_buffer)?;
    proxy::quic::build(&identity(dir, id)?, Arc::new(transport(mesh, cc)), socket)
}

/// Answers each stream of each connection with the SHA-256 of what it carried.
fn serve(server: quinn::Endpoint, received: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    if let Ok(h) = hash_to_end(&mut recv, &received).await {
                        let _ = send.write_all(&h).await;
                        let _ = send.finish();
                    }
                }
            });
        }
    });
}

impl BarePair {
    /// Endpoints with `cc`, connected through a fresh emulator with `wan` (`None`: directly).
    pub async fn connect(
        dir: &Path,
        mesh: &proxy::config::Config,
        cc: Cc,
        wan: Option<Wan>,
        buffer_bdp: f64,
    ) -> Result<BarePair> {
        let server = endpoint(dir, "b", mesh, cc)?;
        let client = endpoint(dir, "a", mesh, cc)?;
        let emu = match wan {
            Some(wan) => Some(emulate(server.local_addr()?, wan, buffer_bdp).await?),
            None => None,
        };
        let to = emu.as_ref().map_or(server.local_addr()?, |e| e.addr());
        let received = Arc::new(AtomicU64::new(0));
        serve(server.clone(), received.clone());
        let conn = tokio::time::timeout(Duration::from_secs(10), client.connect(to, "b")?)
            .await
            .context("bare handshake timed out")??;
        let base_rtt_ms = wan.map_or(0.0, |w| w.rtt_ms as f64);
        Ok(BarePair { conn, received, base_rtt_ms, _client: client, _server: server, _emu: emu })
    }

    /// One stream of `len` bytes, checked by hash, cut at `limit`.
    pub async fn upload(&self, len: u64, limit: Duration) -> Result<Run> {
        let before = self.conn.stats();
        let transfer = timed(quic_upload(&self.conn, len), len, &self.received, limit);
        let (t, rtt_ms) = sampled(transfer, || Some(self.conn.rtt().as_secs_f64() * 1000.0)).await;
        let after = self.conn.stats();
        Ok(Run {
            t: t?,
            resent: after.path.lost_bytes - before.path.lost_bytes,
            wire: after.udp_tx.bytes - before.udp_tx.bytes,
            rtt_ms,
            base_rtt_ms: self.base_rtt_ms,
        })
    }
}

/// Connects, transfers `len` bytes once, closes: one bare run on a fresh path (`None`:
/// without an emulator).
pub async fn run_once(ctx: &Ctx, cc: Cc, wan: Option<Wan>, len: u64) -> Result<Run> {
    let pair = BarePair::connect(&ctx.dir, &ctx.mesh_cfg, cc, wan, ctx.opts.buffer_bdp).await?;
    let limit = ctx.opts.timeout;
    let run = pair.upload(len, limit).await;
    pair.conn.close(0u32.into(), b"done");
    run
}
