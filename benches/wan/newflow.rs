//! Section 8: new flows over an 80 ms path, sealed end to end (`mesh.e2e: required`)
//! against unsealed (`off`), next to the path's round trip measured on a flow already
//! open: a sealed flow must add no round trip (its first bytes leave with the header).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Ctx;
use crate::mesh::{Pair, entry};
use crate::net::Wan;
use crate::report::Table;

/// The path: 80 ms round trip, no loss (a lost packet would show as a retransmission
/// timeout, not as the handshake's cost), 100 Mbit/s.
const WAN: Wan = Wan { rtt_ms: 80, loss_pct: 0.0, mbit: Some(100) };
/// New flows per mode.
const FLOWS: usize = 40;
/// Round trips measured on one open flow.
const ROUND_TRIPS: usize = 20;

/// Runs the section.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("8. new flows: connect + 64 B + first echoed byte, {}", WAN.label());
    let echo = crate::common::echo_server().await?;
    let t = Table::new(&[
        ("mesh.e2e", 10),
        ("path rtt p50", 12),
        ("new flow p50", 12),
        ("p90", 10),
        ("flow - rtt", 10),
    ]);
    let mut p50s = Vec::new();
    for mode in ["required", "off"] {
        let pair = Pair::start_with(ctx, "model", WAN, &[("echo", echo)], &format!("e2e: {mode}")).await?;
        let at = entry(&pair.a, "echo")?;
        let rtt = open_flow_round_trip(at).await;
        let flows = new_flows(at).await;
        pair.close();
        let (rtt, mut flows) = (rtt?, flows?);
        flows.sort();
        let p50 = flows[flows.len() / 2];
        let p90 = flows[flows.len() * 9 / 10];
        t.row(&[mode.into(), ms(rtt), ms(p50), ms(p90), ms(p50.saturating_sub(rtt))]);
        p50s.push((p50, rtt));
    }
    if let [(sealed, rtt), (unsealed, _)] = p50s[..] {
        let extra = sealed.as_secs_f64() - unsealed.as_secs_f64();
        println!(
            "  sealed - unsealed new flow p50: {:+.2} ms = {:+.1}% of the path's round trip (aim: within 5%)",
            extra * 1e3,
            extra / rtt.as_secs_f64() * 100.0
        );
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The p50 of 64-byte round trips on one flow that is already open.
async fn open_flow_round_trip(at: SocketAddr) -> Result<Duration> {
    let mut s = TcpStream::connect(at).await.context("connect")?;
    s.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    let mut buf = [0u8; 64];
    for i in 0..=ROUND_TRIPS {
        let start = Instant::now();
        s.write_all(&[i as u8; 64]).await?;
        s.read_exact(&mut buf).await?;
        // The first exchange opens the flow.
        if i > 0 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Each new flow's time from connect to its first echoed byte.
async fn new_flows(at: SocketAddr) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let start = Instant::now();
        let mut s = TcpStream::connect(at).await.context("connect")?;
        s.set_nodelay(true)?;
        s.write_all(&[i as u8; 64]).await?;
        let mut one = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut one))
            .await
            .context("no echo in 5 s")??;
        out.push(start.elapsed());
    }
    Ok(out)
}
