//! Section 3: the same 8 MiB on a link just made and on the same link right after it
//! carried traffic, against the path's ceiling (a fixed window needs no warming).

use anyhow::{Context, Result};
use proxy::config::Congestion;

use crate::Ctx;
use crate::bare::{Cc, fixed_window, run_once};
use crate::mesh::Pair;
use crate::net::Wan;
use crate::report::{Table, pct};

/// The transfer size.
const LEN: u64 = 8 << 20;
/// The path: 80 ms, 0.1% loss, 100 Mbit/s.
const WAN: Wan = Wan { rtt_ms: 80, loss_pct: 0.1, mbit: Some(100) };

/// Runs the section.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("3. cold vs warm: 8 MiB, {}, fresh link then the same link again", WAN.label());
    let t = Table::new(&[("run", 28), ("Mbit/s", 10), ("secs", 6), ("of ceiling", 10)]);
    let ceiling = run_once(ctx, Cc::Fixed(fixed_window(WAN)), Some(WAN), LEN).await?;
    let row = |label: String, run: &crate::report::Run| {
        t.row(&[
            label,
            run.rate_cell(),
            format!("{:.2}", run.t.elapsed.as_secs_f64()),
            pct(run.mbit() / ceiling.mbit()),
        ])
    };
    row("ceiling (fixed, fresh)".into(), &ceiling);
    for cc in ctx.opts.mesh_variants() {
        let name = cc.clone();
        let pair = Pair::start(ctx, &cc, WAN, &[]).await?;
        let cold = pair.upload(LEN, ctx.opts.timeout).await;
        let warm = pair.upload(LEN, ctx.opts.timeout).await;
        pair.close();
        row(format!("mesh {name}, cold"), &cold?);
        row(format!("mesh {name}, warm"), &warm?);
    }
    for name in &ctx.opts.bare {
        let cc = Cc::Quinn(Congestion::from_name(name).context("unknown controller")?);
        let run = run_once(ctx, cc, Some(WAN), LEN).await?;
        row(format!("{}, fresh", cc.label()), &run);
    }
    Ok(())
}
