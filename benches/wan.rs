//! WAN benchmark (issue 15): `cargo bench --bench wan`.
//!
//! Nodes run in this process; every WAN path is a [`proxy::emulator::LinkEmulator`] (a
//! user-space UDP relay with delay, random loss, a rate limit and a tail-drop queue on
//! each direction). Every figure is printed next to a baseline from the same run:
//!
//! 1. `ceiling`: what the emulator itself carries (bare quinn, fixed window, no delay or
//!    rate limit), against bare quinn without the emulator and the mesh through it; it
//!    sets the grid's top rate.
//! 2. `grid`: round trip x loss x rate; per case one mesh flow (TCP -> a -> b -> TCP sink,
//!    SHA-256 checked), bare quinn Cubic and BBR with the mesh's windows, and the path's
//!    ceiling (bare quinn with a fixed 1.25 BDP window that ignores loss): goodput, bytes
//!    resent, queueing delay added.
//! 3. `cold`: 8 MiB on a fresh link and again on the same link once warm.
//! 4. `relay`: a -> b -> c over two short lossy hops against a -> c over one long lossier one.
//! 5. `fair`: two origins through one shared bottleneck; per-second shares.
//! 6. `multipath`: one flow striped over two lossy paths against one path.
//! 7. `stalled`: 64 flows whose target never reads, next to a bulk flow and new flows.
//! 8. `newflow`: new flows over 80 ms, sealed end to end against unsealed, next to the
//!    path's round trip.
//!
//! Environment (all optional): `WAN_CASES` (sections, comma separated), `WAN_RTTS` (ms),
//! `WAN_LOSSES` (%), `WAN_RATES` (Mbit/s or `top`), `WAN_MIB` (fixed transfer size),
//! `WAN_SECS` (seconds at link rate per transfer, default 3), `WAN_TIMEOUT` (s per
//! transfer, default 12), `WAN_TOP` (top rate), `WAN_MESH_CC` (`mesh.congestion` values),
//! `WAN_MESH_EXTRA` (more `mesh:` keys), `WAN_BARE` (cubic,bbr; also model, newreno), `WAN_BUFFER_BDP`,
//! `WAN_FAIR_SECS`. A quick run:
//! `WAN_CASES=ceiling,grid WAN_RTTS=80 WAN_LOSSES=0.1 WAN_RATES=100 cargo bench --bench wan`.

#[path = "common/mod.rs"]
mod common;

#[path = "wan/bare.rs"]
mod bare;
#[path = "wan/ceiling.rs"]
mod ceiling;
#[path = "wan/cold.rs"]
mod cold;
#[path = "wan/fair.rs"]
mod fair;
#[path = "wan/grid.rs"]
mod grid;
#[path = "wan/mesh.rs"]
mod mesh;
#[path = "wan/multipath.rs"]
mod multipath;
#[path = "wan/net.rs"]
mod net;
#[path = "wan/newflow.rs"]
mod newflow;
#[path = "wan/opts.rs"]
mod opts;
#[path = "wan/relay.rs"]
mod relay;
#[path = "wan/report.rs"]
mod report;
#[path = "wan/stalled.rs"]
mod stalled;
#[path = "wan/traffic.rs"]
mod traffic;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use opts::Opts;

/// Node ids with certificates in the bench's mesh directory.
const NODES: [&str; 6] = ["a", "b", "c", "d", "a1", "a2"];

/// Aborts a task when dropped, so helpers never outlive their section.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every section needs.
pub struct Ctx {
    /// The mesh directory (CA, certificates).
    pub dir: PathBuf,
    /// What the environment chose.
    pub opts: Opts,
    /// A parsed node config with the bench's mesh keys: the windows bare quinn shares.
    pub mesh_cfg: proxy::config::Config,
    /// The emulator's own ceiling, Mbit/s, once measured.
    pub emu_ceiling: Option<f64>,
    /// The grid's top rate, Mbit/s.
    pub top: u64,
}

impl Ctx {
    fn new(dir: PathBuf, opts: Opts) -> Result<Ctx> {
        let yaml = common::yaml("a", "", &opts.mesh_keys(None));
        let mesh_cfg = proxy::config::parse(&yaml, &dir).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let top = opts.top.unwrap_or(500);
        let mut opts = opts;
        if opts.mesh_cc.is_empty() {
            opts.mesh_cc = vec![mesh_cfg.mesh.congestion.name().to_string()];
        }
        Ok(Ctx { dir, opts, mesh_cfg, emu_ceiling: None, top })
    }
}

async fn section(ctx: &mut Ctx, name: &str) -> Result<()> {
    match name {
        "ceiling" => ceiling::run(ctx).await,
        "grid" => grid::run(ctx).await,
        "cold" => cold::run(ctx).await,
        "relay" => relay::run(ctx).await,
        "fair" => fair::run(ctx).await,
        "multipath" => multipath::run(ctx).await,
        "stalled" => stalled::run(ctx).await,
        "newflow" => newflow::run(ctx).await,
        _ => Ok(()),
    }
}

async fn run(dir: PathBuf) -> Result<()> {
    let mut ctx = Ctx::new(dir, Opts::from_env()?)?;
    let w = &ctx.mesh_cfg.mesh;
    println!(
        "wan bench: mesh windows stream {} KiB, connection {} KiB, send {} KiB; mesh keys `{}`; mesh congestion {}; bare quinn {}; transfers cut at {:.0} s",
        w.stream_window / 1024,
        w.connection_window / 1024,
        w.send_window / 1024,
        ctx.opts.mesh_keys(None),
        ctx.opts.mesh_cc.join(", "),
        ctx.opts.bare.join(", "),
        ctx.opts.timeout.as_secs_f64()
    );
    let all = Instant::now();
    for name in opts::SECTIONS {
        if !ctx.opts.runs(name) {
            continue;
        }
        let start = Instant::now();
        println!();
        // One failing section is reported and the others still run.
        if let Err(e) = section(&mut ctx, name).await {
            println!("  {name}: FAILED: {e:#}");
        }
        println!("  ({name}: {:.0} s)", start.elapsed().as_secs_f64());
    }
    println!("\nwan bench: {:.0} s in all", all.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> Result<()> {
    let dir = common::make_mesh("wan", &NODES)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(run(dir.clone()));
    // Tasks of stopped nodes may still hold sockets; do not wait for them.
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
