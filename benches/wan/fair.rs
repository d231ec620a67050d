//! Section 5: two origins, a1 and a2, reach the exit b through one emulator. The emulator
//! keeps one pipe (one token bucket, one queue) per direction and admits the packets of
//! all its clients into it, so the two links share one bottleneck. a1's flow starts
//! first, a2's joins later; each second's goodput shows how the bottleneck is shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use proxy::Node;

use crate::Ctx;
use crate::mesh::{allow, entry, listeners_and_routes, node, wait_links};
use crate::net::{Wan, emulate};
use crate::report::{Table, pct};
use crate::traffic::{Sink, sink, tcp_stream_until};

const WAN: Wan = Wan { rtt_ms: 80, loss_pct: 0.0, mbit: Some(100) };

/// Runs the section, once per mesh congestion variant.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let secs = ctx.opts.fair_secs.max(4);
    println!(
        "5. fairness: a1 and a2 -> b through one shared bottleneck, {}; a1 from 0 s, a2 from {} s, {secs} s in all",
        WAN.label(),
        secs / 4
    );
    for cc in ctx.opts.mesh_variants() {
        variant(ctx, &cc, secs).await?;
    }
    Ok(())
}

async fn variant(ctx: &Ctx, cc: &str, secs: u64) -> Result<()> {
    let (s1, s2) = (sink().await?, sink().await?);
    let b = node(
        ctx,
        "b",
        cc,
        &format!("peers: [ {{ name: a1 }}, {{ name: a2 }} ]\n{}", allow(&[s1.addr, s2.addr])),
    )
    .await?;
    let emu = emulate(b.mesh_addr()?, WAN, ctx.opts.buffer_bdp).await?;
    let origin = |id: &'static str, s: &Sink| {
        let body = format!(
            "peers: [ {{ name: b, address: \"{}\" }} ]\n{}",
            emu.addr(),
            listeners_and_routes(&[("bulk", s.addr, "b", "")])
        );
        async move { node(ctx, id, cc, &body).await }
    };
    let a1 = origin("a1", &s1).await?;
    let a2 = origin("a2", &s2).await?;
    let result = measure(cc, secs, [&a1, &a2, &b], [&s1, &s2]).await;
    for n in [a1, a2, b] {
        n.abort();
    }
    result
}

async fn measure(cc: &str, secs: u64, [a1, a2, b]: [&Node; 3], sinks: [&Sink; 2]) -> Result<()> {
    wait_links(&[(a1, "b"), (a2, "b"), (b, "a1"), (b, "a2")]).await?;
    println!("  mesh {}:", cc);
    let stop = Arc::new(AtomicBool::new(false));
    let join = secs / 4;
    let mut flows = vec![tokio::spawn(tcp_stream_until(entry(a1, "bulk")?, stop.clone()))];
    let t = Table::new(&[
        ("second", 6),
        ("a1 Mbit/s", 9),
        ("a2 Mbit/s", 9),
        ("a1 share", 8),
        ("a2 share", 8),
        ("sum of link", 11),
    ]);
    let mut last = [0u64; 2];
    let mut shares = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for s in 1..=secs {
        if s - 1 == join {
            flows.push(tokio::spawn(tcp_stream_until(entry(a2, "bulk")?, stop.clone())));
        }
        tick.tick().await;
        let now = sinks.map(|k| k.received.load(Ordering::Relaxed));
        let rate = [0, 1].map(|i| (now[i] - last[i]) as f64 * 8.0 / 1e6);
        last = now;
        let sum = rate[0] + rate[1];
        t.row(&[
            format!("{s}"),
            format!("{:.1}", rate[0]),
            format!("{:.1}", rate[1]),
            pct(rate[0] / sum),
            pct(rate[1] / sum),
            pct(sum / 100.0),
        ]);
        if s > join {
            shares.push(rate[0] / sum.max(1e-9));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flows {
        // The stop leaves up to the send windows in flight; the hash check waits for them.
        match tokio::time::timeout(Duration::from_secs(30), f).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => println!("  a flow failed: {e:#}"),
            Ok(Err(e)) => println!("  a flow task failed: {e}"),
            Err(_) => println!("  a flow did not finish within 30 s of the stop"),
        }
    }
    println!("  {}", convergence(&shares));
    Ok(())
}

/// When both flows got within 20% of an equal share and stayed there to the end.
fn convergence(a1_shares: &[f64]) -> String {
    let fair = |s: &f64| (0.4..=0.6).contains(s);
    let settled = a1_shares.iter().rposition(|s| !fair(s)).map_or(0, |i| i + 1);
    let mean = a1_shares.iter().sum::<f64>() / a1_shares.len().max(1) as f64;
    let head = format!("while both ran: a1 had {} on average (equal: 50%)", pct(mean));
    if settled >= a1_shares.len() {
        format!("{head}; the shares were not within 20% of equal by the end")
    } else {
        format!("{head}; within 20% of equal from {settled} s after a2 joined, to the end")
    }
}
