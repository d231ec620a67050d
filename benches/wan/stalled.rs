//! Section 7: on one link, 64 flows whose target accepts and never reads, beside a bulk
//! flow and new flows. A stalled flow should hold its own credit, never the link's.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use crate::Ctx;
use crate::common;
use crate::mesh::{Pair, entry};
use crate::net::Wan;
use crate::report::{Run, Table, ms, pct, ratio};
use crate::traffic::{median, open_time, staller, write_until};

const WAN: Wan = Wan { rtt_ms: 20, loss_pct: 0.0, mbit: Some(100) };
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

/// Median time to open a flow and get one byte echoed.
async fn opens(entry: SocketAddr) -> Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..OPENS {
        v.push(tokio::time::timeout(Duration::from_secs(10), open_time(entry)).await??.as_secs_f64());
    }
    Ok(Duration::from_secs_f64(median(v)))
}

/// Opens the stalled flows: each writes until its target's buffers, the exit's and the
/// stream's credit are full, then waits forever (aborted when dropped).
async fn stall(entry: SocketAddr) -> Result<Vec<crate::AbortOnDrop>> {
    let mut tasks = Vec::new();
    for _ in 0..STALLED {
        let mut c = tokio::net::TcpStream::connect(entry).await?;
        let never = std::sync::atomic::AtomicBool::new(false);
        tasks.push(crate::AbortOnDrop(tokio::spawn(async move {
            let _ = write_until(&mut c, &never).await;
        })));
    }
    Ok(tasks)
}

async fn measure(ctx: &Ctx, t: &Table, cc: &str, pair: &Pair) -> Result<()> {
    let len = ctx.opts.bulk_len(100);
    let echo = entry(&pair.a, "echo")?;
    let open_alone = opens(echo).await?;
    let bulk_alone = pair.upload(len, ctx.opts.timeout).await?;
    let stalled = stall(entry(&pair.a, "stall")?).await?;
    // Time for the stalled flows to fill every buffer on their way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open_loaded = opens(echo).await;
    let bulk_loaded = pair.upload(len, ctx.opts.timeout).await;
    drop(stalled);
    let (open_loaded, bulk_loaded) = (open_loaded?, bulk_loaded?);
    let name = cc;
    let rate = |r: &Run| r.rate_cell();
    t.row(&[
        format!("mesh {name}: bulk Mbit/s"),
        rate(&bulk_alone),
        rate(&bulk_loaded),
        pct(bulk_loaded.mbit() / bulk_alone.mbit()),
    ]);
    t.row(&[
        format!("mesh {name}: open + first echo"),
        ms(open_alone),
        ms(open_loaded),
        ratio(open_loaded.as_secs_f64(), open_alone.as_secs_f64()),
    ]);
    Ok(())
}
