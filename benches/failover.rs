//! Failover benchmark: `cargo bench --bench failover`.
//!
//! Nodes a, b, d in this process; a's route to d prefers the relay b (static `via: [b]`,
//! direct to d as the fallback), and a reaches b through the link emulator. The emulator
//! blackholes a<->b, and the benchmark measures the time from the blackhole to the first
//! new flow that gets an echo back (attempts every 20 ms, each given 200 ms). Repeated
//! `BENCH_FAILOVER_ROUNDS` times (default 5), with the default keepalive (300 ms).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proxy::emulator::{LinkEmulator, LinkProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_flow(entry: SocketAddr) -> bool {
    let attempt = async {
        let mut c = TcpStream::connect(entry).await.ok()?;
        c.write_all(b"x").await.ok()?;
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_millis(200), attempt).await, Ok(Some(_)))
}

async fn failover_once(cut: &LinkEmulator, entry: SocketAddr) -> Result<Duration> {
    cut.set_both(LinkProfile::ideal());
    // Let the link recover and be heard again before cutting it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    anyhow::ensure!(one_flow(entry).await, "no flow before the blackhole");
    cut.set_both(LinkProfile::blackholed());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if one_flow(entry).await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no flow got through within 60 s")
}

async fn run(dir: &Path) -> Result<()> {
    let echo = common::echo_server().await?;
    let d = common::node(
        dir,
        "d",
        "peers: [ { name: a }, { name: b } ]\nexit_policy: { allow: [\"127.0.0.1/32\"] }",
        "",
    )
    .await?;
    let b = common::node(
        dir,
        "b",
        &format!("peers: [ {{ name: a }}, {{ name: d, address: \"{}\" }} ]", d.mesh_addr()?),
        "",
    )
    .await?;
    let cut = LinkEmulator::start(b.mesh_addr()?, 7).await?;
    let a_body = format!(
        "listeners: [ {{ name: in, bind: \"127.0.0.1:0\" }} ]\npeers: [ {{ name: b, address: \"{}\" }}, {{ name: d, address: \"{}\" }} ]\nroutes: [ {{ name: in, match: {{ listener: in }}, target: \"{echo}\", exit: d, via: [b] }} ]",
        cut.addr(),
        d.mesh_addr()?
    );
    let a = common::node(dir, "a", &a_body, "").await?;
    for (n, p) in [(&a, "b"), (&a, "d"), (&b, "d")] {
        anyhow::ensure!(n.wait_for_link(p, Duration::from_secs(10)).await, "link {} -> {p}", n.id());
    }
    let entry = a.listeners().first().map(|l| l.addr).context("listener")?;
    let rounds: usize = std::env::var("BENCH_FAILOVER_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(failover_once(&cut, entry).await?);
    }
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!("failover, blackholed relay -> first successful new flow ({rounds} rounds, keepalive 300 ms):");
    println!(
        "  median {:.0} ms, min {:.0} ms, max {:.0} ms (aim: under 1 s; RON: about 18 s)",
        ms(&times[times.len() / 2]),
        ms(&times[0]),
        ms(&times[times.len() - 1])
    );
    Ok(())
}

fn main() -> Result<()> {
    let dir = common::make_mesh("failover", &["a", "b", "d"])?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(run(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}
