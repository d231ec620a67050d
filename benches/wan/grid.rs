//! Section 2: round trip x loss x rate. Per case, on fresh paths with the same loss seed:
//! the path's ceiling (fixed window), one mesh flow per congestion variant, and bare quinn
//! Cubic and BBR with the mesh's windows.

use anyhow::{Context, Result};
use proxy::config::Congestion;

use crate::Ctx;
use crate::bare::{Cc, fixed_window, run_once};
use crate::ceiling::limited;
use crate::mesh::Pair;
use crate::net::Wan;
use crate::opts::GridRate;
use crate::report::{Run, Table, pct, ratio};

/// The detail table: one row per run.
fn detail_table() -> Table {
    Table::new(&[
        ("case", 18),
        ("run", 18),
        ("Mbit/s", 10),
        ("of link", 7),
        ("of ceil", 7),
        ("resent MiB (%)", 15),
        ("queue ms avg/max", 16),
        ("secs", 5),
    ])
}

fn detail_row(t: &Table, case: &str, label: &str, run: &Run, wan: Wan, ceiling: f64) {
    let link = wan.mbit.unwrap_or(1) as f64;
    t.row(&[
        case.into(),
        label.into(),
        run.rate_cell(),
        pct(run.mbit() / link),
        pct(run.mbit() / ceiling),
        run.resent_cell(),
        run.queue_cell(),
        format!("{:.1}", run.t.elapsed.as_secs_f64()),
    ]);
}

/// What the summary keeps of one case.
struct Summary {
    case: String,
    mesh: Vec<(String, f64, String)>,
    ceiling: f64,
    /// Bare quinn goodput per controller name.
    others: Vec<(&'static str, f64)>,
    link: f64,
    window_cap: f64,
    /// What caps the case besides the protocol: `window` (the stream window cannot cover
    /// the BDP), `emulator` (the rate is above 80% of the emulator's ceiling).
    limits: String,
}

/// The cases, rates resolved.
fn cases(ctx: &Ctx) -> Vec<Wan> {
    let mut out = Vec::new();
    for &rate in &ctx.opts.rates {
        let mbit = match rate {
            GridRate::Fixed(m) => m,
            GridRate::Top => ctx.top,
        };
        for &rtt in &ctx.opts.rtts_ms {
            for &loss in &ctx.opts.losses_pct {
                out.push(Wan::new(rtt, loss, mbit));
            }
        }
    }
    out
}

/// Runs one case, printing its rows.
async fn case(ctx: &Ctx, t: &Table, wan: Wan) -> Result<Summary> {
    let mbit = wan.mbit.unwrap_or(0);
    let len = ctx.opts.bulk_len(mbit);
    let star = if limited(ctx, mbit) { "*" } else { "" };
    let name = format!("{}{star}", wan.label());
    let ceiling = run_once(ctx, Cc::Fixed(fixed_window(wan)), Some(wan), len).await?;
    detail_row(t, &name, "ceiling (fixed)", &ceiling, wan, ceiling.mbit());
    let mut mesh = Vec::new();
    for cc in ctx.opts.mesh_variants() {
        let pair = Pair::start(ctx, &cc, wan, &[]).await?;
        let run = pair.upload(len, ctx.opts.timeout).await;
        pair.close();
        let run = run?;
        let label = format!("mesh {}", cc);
        detail_row(t, &name, &label, &run, wan, ceiling.mbit());
        mesh.push((label, run.mbit(), run.queue_cell()));
    }
    let (name_ref, ceiling_mbit) = (&name, ceiling.mbit());
    let bare = |cc: Cc| async move {
        let run = run_once(ctx, cc, Some(wan), len).await?;
        detail_row(t, name_ref, &cc.label(), &run, wan, ceiling_mbit);
        anyhow::Ok(run.mbit())
    };
    let mut others = Vec::new();
    for name in &ctx.opts.bare {
        let cc = Congestion::from_name(name).context("unknown controller")?;
        others.push((cc.name(), bare(Cc::Quinn(cc)).await?));
    }
    let w = &ctx.mesh_cfg.mesh;
    let window_cap =
        w.stream_window.min(w.connection_window) as f64 * 8.0 / 1e6 / (wan.rtt_ms as f64 / 1000.0);
    let mut limits = Vec::new();
    if window_cap < mbit as f64 {
        limits.push("window");
    }
    if limited(ctx, mbit) {
        limits.push("emulator");
    }
    let limits = if limits.is_empty() { "-".to_string() } else { limits.join(", ") };
    Ok(Summary { case: name, mesh, ceiling: ceiling.mbit(), others, link: mbit as f64, window_cap, limits })
}

fn summary(ctx: &Ctx, rows: &[Summary]) {
    println!("\n  grid summary (mesh against the baselines of its own case)");
    let vs: Vec<String> = ctx.opts.bare.iter().map(|b| format!("vs {b}")).collect();
    let mut columns = vec![("case", 18), ("mesh", 12), ("of link", 7), ("of ceil", 7)];
    columns.extend(vs.iter().map(|v| (v.as_str(), 8)));
    columns.extend([("queue ms", 9), ("window cap Mbit/s", 17), ("limited by", 10)]);
    let t = Table::new(&columns);
    for s in rows {
        for (label, m, q) in &s.mesh {
            let mut cells = vec![s.case.clone(), label.clone(), pct(m / s.link), pct(m / s.ceiling)];
            cells.extend(s.others.iter().map(|(_, o)| ratio(*m, *o)));
            cells.extend([q.clone(), format!("{:.0}", s.window_cap), s.limits.clone()]);
            t.row(&cells);
        }
    }
}

/// Runs the grid.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let cases = cases(ctx);
    println!(
        "2. grid: {} cases; one flow per run, max(16 MiB, {} s at link rate), cut at {:.0} s; loss on both directions; bottleneck buffer {} BDP; * = above 80% of the emulator's ceiling",
        cases.len(),
        ctx.opts.secs_at_rate,
        ctx.opts.timeout.as_secs_f64(),
        ctx.opts.buffer_bdp
    );
    println!(
        "   queue = smoothed RTT during the transfer above the configured RTT; window cap = min(stream, connection window) / RTT"
    );
    let t = detail_table();
    let mut rows = Vec::new();
    for wan in cases {
        match case(ctx, &t, wan).await {
            Ok(s) => rows.push(s),
            Err(e) => t.row(&[wan.label(), format!("FAILED: {e:#}")]),
        }
    }
    summary(ctx, &rows);
    Ok(())
}
