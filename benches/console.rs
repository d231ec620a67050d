//! Console benchmark: `cargo bench --bench console`.
//!
//! Two in-process nodes on loopback (a: origin, b: exit). On a's admin port, 20 live
//! streams (`/api/console/live`, what 20 open browsers hold) while flows open and close
//! through a at a paced rate (default 1,000 a second). Measured in the same run:
//!
//! - the process's resident memory: before the streams, with them idle, and at each
//!   interval of the load, as a ratio against the idle baseline (aim: flat, bounded);
//! - per stream: `state` messages per second (coalesced: at most 2 a second whatever the
//!   flow rate) and bytes per second;
//! - the flow rate achieved, against direct TCP to the same echo service;
//! - the embedded assets' size.
//!
//! Environment: `BENCH_CONSOLE_SECONDS` (load duration, default 30),
//! `BENCH_CONSOLE_FLOWS` (flows a second, default 1000), `BENCH_CONSOLE_STREAMS` (default 20).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory of this process, in MiB (from /proc/self/statm).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// What one stream received.
#[derive(Default)]
struct StreamCount {
    states: AtomicU64,
    bytes: AtomicU64,
}

async fn subscribe(admin: SocketAddr, count: Arc<StreamCount>) -> Result<tokio::task::JoinHandle<()>> {
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(b"GET /api/console/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry = String::new();
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            count.bytes.fetch_add(n as u64, Ordering::Relaxed);
            carry.push_str(&String::from_utf8_lossy(&buf[..n]));
            let complete = carry.rfind('\n').map_or(0, |i| i + 1);
            let lines: String = carry.drain(..complete).collect();
            let states = lines.lines().filter(|l| *l == "event: state").count() as u64;
            count.states.fetch_add(states, Ordering::Relaxed);
        }
    }))
}

async fn short_flow(entry: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(entry).await else { return false };
    if s.write_all(b"ping").await.is_err() || s.shutdown().await.is_err() {
        return false;
    }
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.is_ok() && back == b"ping"
}

/// Opens `per_second` flows a second to `entry` for `seconds`; calls `tick` each second.
async fn paced_flows(
    entry: SocketAddr,
    per_second: usize,
    seconds: u64,
    mut tick: impl FnMut(u64),
) -> (u64, u64) {
    let mut flows = tokio::task::JoinSet::new();
    let mut batch = tokio::time::interval(Duration::from_millis(100));
    let started = Instant::now();
    let (mut ok, mut total) = (0u64, 0u64);
    let mut second = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        batch.tick().await;
        for _ in 0..per_second / 10 {
            flows.spawn(short_flow(entry));
        }
        while let Some(done) = flows.try_join_next() {
            total += 1;
            ok += u64::from(done.unwrap_or(false));
        }
        let now = started.elapsed().as_secs();
        if now > second {
            second = now;
            tick(second);
        }
    }
    while let Some(done) = flows.join_next().await {
        total += 1;
        ok += u64::from(done.unwrap_or(false));
    }
    (ok, total)
}

async fn run(dir: &std::path::Path) -> Result<()> {
    let seconds = common::env_usize("BENCH_CONSOLE_SECONDS", 30) as u64;
    let per_second = common::env_usize("BENCH_CONSOLE_FLOWS", 1000);
    let streams = common::env_usize("BENCH_CONSOLE_STREAMS", 20);
    let echo = common::echo_server().await?;
    let b = common::node(dir, "b", "peers: [ { name: a } ]\nexit_policy: { allow: [\"127.0.0.1/32\"] }", "")
        .await?;
    let body = format!(
        "listeners: [ {{ name: in, bind: \"127.0.0.1:0\" }} ]\npeers: [ {{ name: b, address: \"{}\" }} ]\n\
         routes: [ {{ name: in, match: {{ listener: in }}, target: \"{echo}\", exit: b }} ]",
        b.mesh_addr()?
    );
    let a = common::node(dir, "a", &body, "").await?;
    anyhow::ensure!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a -> b");
    let entry = a.listeners().into_iter().find(|l| l.name == "in").map(|l| l.addr).expect("listener");

    // Direct flows first: what the machine does without the mesh, at the same pace.
    let (direct_ok, direct_total) = paced_flows(echo, per_second, 3, |_| {}).await;
    let before = rss_mib();
    let counts: Vec<Arc<StreamCount>> = (0..streams).map(|_| Arc::default()).collect();
    let mut readers = Vec::new();
    for c in &counts {
        readers.push(subscribe(a.admin_addr(), c.clone()).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_mib();
    let start_counts: Vec<(u64, u64)> =
        counts.iter().map(|c| (c.states.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed))).collect();

    println!(
        "console under load: {streams} live streams on node a, {per_second} flows/s through a for {seconds} s"
    );
    println!("{:>8}  {:>10}  {:>16}", "second", "RSS MiB", "vs idle streams");
    let mut peak: f64 = idle;
    let started = Instant::now();
    let (ok, total) = paced_flows(entry, per_second, seconds, |s| {
        if s % 5 == 0 {
            let rss = rss_mib();
            peak = peak.max(rss);
            println!("{s:>8}  {rss:>10.1}  {:>15.2}x", rss / idle);
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = rss_mib();
    let (mut states, mut bytes) = (0u64, 0u64);
    for (c, (s0, b0)) in counts.iter().zip(&start_counts) {
        states += c.states.load(Ordering::Relaxed) - s0;
        bytes += c.bytes.load(Ordering::Relaxed) - b0;
    }
    let per_stream = |v: u64| v as f64 / streams as f64 / elapsed;
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| flows through a | {total} in {elapsed:.1} s ({:.0}/s), {ok} echoed |",
        total as f64 / elapsed
    );
    println!(
        "| direct flows (baseline) | {direct_total} in 3 s ({:.0}/s), {direct_ok} echoed |",
        direct_total as f64 / 3.0
    );
    println!(
        "| RSS: nodes up / 20 streams idle / peak under load / after | {before:.1} / {idle:.1} / {peak:.1} / {after:.1} MiB |"
    );
    println!("| peak under load vs idle streams | {:.2}x |", peak / idle);
    println!("| state messages per stream | {:.2}/s (coalescing bound: 2/s) |", per_stream(states));
    println!("| bytes per stream | {:.1} KiB/s |", per_stream(bytes) / 1024.0);
    println!("| embedded console assets | {} bytes |", proxy::admin::assets::embedded_bytes());
    for r in readers {
        r.abort();
    }
    drop(a);
    drop(b);
    Ok(())
}

fn main() -> Result<()> {
    let dir = common::make_mesh("console-bench", &["a", "b"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}
