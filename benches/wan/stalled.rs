//! Section 7: on one link, 64 flows whose target accepts and never reads, beside a bulk
//! flow and new flows. A stalled flow should hold its own credit, never the link's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::Ctx;
use crate::common;
use crate::mesh::{Pair, entry};
use crate::net::Wan;
use crate::report::{Table, ms, pct, ratio};
use crate::traffic::{median, open_time, staller, write_counted};

/// No rate limit: the stalled flows fill what they can at the machine's speed (at
/// 100 Mbit/s, 64 stream windows of 4 MiB would take over 20 s).
const WAN: Wan = Wan { rtt_ms: 20, loss_pct: 0.0, mbit: None };
/// Longest wait for the stalled flows to stop moving.
const FILL_LIMIT: Duration = Duration::from_secs(40);
/// Stalled flows.
const STALLED: usize = 64;
/// Opens timed per median.
const OPENS: usize = 7;

/// Runs the section, once per mesh congestion variant.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!(
        "7. stalled flows: {STALLED} flows whose target never reads, on one link ({}), beside a bulk flow and new flows",
        WAN.label()
    );
    let t = Table::new(&[("measure", 34), ("alone", 12), ("with stalled", 12), ("ratio", 7)]);
    for cc in ctx.opts.mesh_variants() {
        let (stall, echo) = (staller().await?, common::echo_server().await?);
        let pair = Pair::start(ctx, &cc, WAN, &[("stall", stall), ("echo", echo)]).await?;
        let result = measure(ctx, &t, &cc, &pair).await;
        pair.close();
        result?;
    }
    Ok(())
}

/// New flows opened one after another: the median time of those that got their echo,
/// and the first error of those that did not.
struct Opens {
    median: Option<Duration>,
    failed: usize,
    error: Option<String>,
}

impl Opens {
    fn cell(&self) -> String {
        match (self.median, &self.error) {
            (Some(m), None) => ms(m),
            (Some(m), Some(_)) => format!("{} ({} failed)", ms(m), self.failed),
            (None, _) => "all failed".into(),
        }
    }

    fn secs(&self) -> f64 {
        self.median.map_or(f64::NAN, |m| m.as_secs_f64())
    }
}

/// Times [`OPENS`] new flows (connect, one byte out, its echo back).
async fn opens(entry: SocketAddr) -> Opens {
    let (mut times, mut failed, mut error) = (Vec::new(), 0, None);
    for _ in 0..OPENS {
        match tokio::time::timeout(Duration::from_secs(10), open_time(entry)).await {
            Ok(Ok(d)) => times.push(d.as_secs_f64()),
            Ok(Err(e)) => {
                failed += 1;
                error.get_or_insert(format!("{e:#}"));
            }
            Err(_) => {
                failed += 1;
                error.get_or_insert("no echo within 10 s".to_string());
            }
        }
    }
    let median = (!times.is_empty()).then(|| Duration::from_secs_f64(median(times)));
    Opens { median, failed, error }
}

/// Opens the stalled flows: each writes until its target's buffers, the exit's and the
/// stream's credit are full, then waits forever (aborted when dropped).
async fn stall(entry: SocketAddr, written: &Arc<AtomicU64>) -> Result<Vec<crate::AbortOnDrop>> {
    let mut tasks = Vec::new();
    for _ in 0..STALLED {
        let mut c = tokio::net::TcpStream::connect(entry).await?;
        let written = written.clone();
        tasks.push(crate::AbortOnDrop(tokio::spawn(async move {
            let _ = write_counted(&mut c, &AtomicBool::new(false), &written).await;
        })));
    }
    Ok(tasks)
}

/// Waits until the stalled flows have stopped taking bytes (less than 256 KiB in a
/// second), at most [`FILL_LIMIT`]; returns the time it took and whether they stopped.
async fn wait_stalled(written: &AtomicU64) -> (Duration, bool) {
    let start = Instant::now();
    let mut last = written.load(Ordering::Relaxed);
    while start.elapsed() < FILL_LIMIT {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written.load(Ordering::Relaxed);
        if now - last < 256 * 1024 {
            return (start.elapsed(), true);
        }
        last = now;
    }
    (start.elapsed(), false)
}

async fn measure(ctx: &Ctx, t: &Table, cc: &str, pair: &Pair) -> Result<()> {
    // No rate limit: sized as at the top rate.
    let len = ctx.opts.bulk_len(ctx.top);
    let echo = entry(&pair.a, "echo")?;
    let opens_alone = opens(echo).await;
    let bulk_alone = pair.upload(len, ctx.opts.timeout).await?;
    let written = Arc::new(AtomicU64::new(0));
    let stalled = stall(entry(&pair.a, "stall")?, &written).await?;
    let (took, stopped) = wait_stalled(&written).await;
    let state = if stopped { "stopped" } else { "were still moving" };
    println!(
        "  mesh {cc}: the stalled flows took {:.1} MiB and {state} after {:.0} s",
        written.load(Ordering::Relaxed) as f64 / 1048576.0,
        took.as_secs_f64()
    );
    let open_loaded = opens(echo).await;
    let bulk_loaded = pair.upload(len, ctx.opts.timeout).await;
    drop(stalled);
    let open_alone = opens_alone;
    let (loaded_cell, share) = match &bulk_loaded {
        Ok(r) => (r.rate_cell(), pct(r.mbit() / bulk_alone.mbit())),
        Err(_) => ("failed".to_string(), "-".to_string()),
    };
    t.row(&[format!("mesh {cc}: bulk Mbit/s"), bulk_alone.rate_cell(), loaded_cell, share]);
    t.row(&[
        format!("mesh {cc}: open + first echo"),
        open_alone.cell(),
        open_loaded.cell(),
        ratio(open_loaded.secs(), open_alone.secs()),
    ]);
    if let Err(e) = bulk_loaded {
        println!("  mesh {cc}: the bulk flow beside the stalled ones failed: {e:#}");
    }
    if let Some(e) = open_loaded.error {
        println!(
            "  mesh {cc}: {} of {OPENS} new flows failed beside the stalled ones, first: {e}",
            open_loaded.failed
        );
    }
    for n in [&pair.a, &pair.b] {
        let s = n.stats();
        println!(
            "  node {}: refused at origin {:?}, refused inbound {:?}, flows reset {}",
            n.id(),
            s.refused_at_origin,
            s.refused_inbound,
            s.flows_reset
        );
    }
    Ok(())
}
