//! Section 1: what the emulator itself carries on this machine, which bounds every figure
//! measured through it, and the grid's top rate derived from it.

use anyhow::Result;

use crate::Ctx;
use crate::bare::{Cc, fixed_window, run_once};
use crate::mesh::Pair;
use crate::net::Wan;
use crate::report::{Table, ratio};

/// The top rate: about 80% of the ceiling, in steps of 50 Mbit/s, at most 1000, and at
/// least 500 (tried even where the ceiling is lower, and then marked as limited by it).
pub fn top_rate(ceiling_mbit: f64) -> u64 {
    let r = ((ceiling_mbit * 0.8 / 50.0).floor() as u64) * 50;
    r.clamp(500, 1000)
}

/// Whether a figure at `mbit` is limited by the emulator rather than by the protocol.
pub fn limited(ctx: &Ctx, mbit: u64) -> bool {
    ctx.emu_ceiling.is_some_and(|c| mbit as f64 > 0.8 * c)
}

/// Measures, sets `ctx.emu_ceiling` and `ctx.top` (unless `WAN_TOP` fixes it), prints.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let len = ctx.opts.bulk_len(1000);
    let unlimited = Wan::unlimited();
    let cc = Cc::Fixed(fixed_window(unlimited));
    println!("1. ceiling: {} MiB in one stream, no delay, loss or rate limit ({})", len >> 20, cc.label());
    let t = Table::new(&[("path", 40), ("Mbit/s", 10), ("vs bare direct", 14)]);
    let direct = run_once(ctx, cc, None, len).await?;
    t.row(&["bare quinn, loopback".into(), direct.rate_cell(), "1.00x".into()]);
    let emu = run_once(ctx, cc, Some(unlimited), len).await?;
    t.row(&["bare quinn, through the emulator".into(), emu.rate_cell(), ratio(emu.mbit(), direct.mbit())]);
    for cc in ctx.opts.mesh_variants() {
        let pair = Pair::start(ctx, &cc, unlimited, &[]).await?;
        let mesh = pair.upload(len, ctx.opts.timeout).await;
        pair.close();
        let mesh = mesh?;
        t.row(&[
            format!("mesh {cc} a -> b, through the emulator"),
            mesh.rate_cell(),
            ratio(mesh.mbit(), direct.mbit()),
        ]);
    }
    ctx.emu_ceiling = Some(emu.mbit());
    if ctx.opts.top.is_none() {
        ctx.top = top_rate(emu.mbit());
    }
    let note = if limited(ctx, ctx.top) {
        "above 80% of the emulator's ceiling: figures at the top rate are marked * and measure this machine as much as the protocol"
    } else {
        "within 80% of the emulator's ceiling"
    };
    println!("  top rate for the grid: {} Mbit/s, {note}", ctx.top);
    println!(
        "  (the mesh row also carries TCP in and out, and its controller meets a path with no delay: where it is below the top rate, compare the grid's 20 ms top-rate row before reading it as CPU cost)"
    );
    Ok(())
}
