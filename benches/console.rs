//! Console benchmark: `cargo bench --bench console`.
//!
//! Two in-process nodes on loopback (a: origin, b: exit); flows open and close through a
//! at a paced rate (default 1,000 a second), first without live streams until the data
//! plane's memory settles (past the exit's 120 s replay window), then with 20 live
//! streams on a's admin port (`/api/console/live`, what 20 open browsers hold). Measured
//! in the same run:
//!
//! - the heap held (a counting allocator) and resident memory every 10 s, and what the
//!   streams add to the settled figures (aim: flat, bounded);
//! - per stream: `state` messages per second (coalesced: at most 2 a second whatever the
//!   flow rate) and bytes per second;
//! - the flow rate achieved, against direct TCP to the same echo service;
//! - the embedded assets' size.
//!
//! Environment: `BENCH_CONSOLE_WARM_SECONDS` (without streams, default 150),
//! `BENCH_CONSOLE_SECONDS` (with streams, default 60),
//! `BENCH_CONSOLE_FLOWS` (flows a second, default 1000), `BENCH_CONSOLE_STREAMS` (default 20).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: common::heap::CountingAllocator = common::heap::CountingAllocator;

use common::heap::heap_mib;

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
    let seconds = common::env_usize("BENCH_CONSOLE_SECONDS", 60) as u64;
    let warm = common::env_usize("BENCH_CONSOLE_WARM_SECONDS", 150) as u64;
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

    // Phase 1, no streams: the data plane's own memory settles (the exit remembers each
    // sealed flow's key for the replay window, 120 s, so the heap grows until then).
    println!(
        "console under load: {per_second} flows/s through node a; {warm} s without live streams, then {seconds} s with {streams}"
    );
    println!("{:>8}  {:>8}  {:>10}  {:>10}", "second", "streams", "RSS MiB", "heap MiB");
    let print = |phase: u64, open: usize| {
        move |s: u64| {
            if s.is_multiple_of(10) {
                println!("{:>8}  {open:>8}  {:>10.1}  {:>10.1}", phase + s, rss_mib(), heap_mib());
            }
        }
    };
    let (ok1, total1) = paced_flows(entry, per_second, warm, print(0, 0)).await;
    let (settled, heap_settled) = (rss_mib(), heap_mib());

    // Phase 2: the same load with the live streams open.
    let counts: Vec<Arc<StreamCount>> = (0..streams).map(|_| Arc::default()).collect();
    let mut readers = Vec::new();
    for c in &counts {
        readers.push(subscribe(a.admin_addr(), c.clone()).await?);
    }
    let started = Instant::now();
    let (ok2, total2) = paced_flows(entry, per_second, seconds, print(warm, streams)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (after, heap_after) = (rss_mib(), heap_mib());
    let (states, bytes) = counts.iter().fold((0u64, 0u64), |(s, b), c| {
        (s + c.states.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed))
    });
    let per_stream = |v: u64| v as f64 / streams.max(1) as f64 / elapsed;
    let (ok, total) = (ok1 + ok2, total1 + total2);
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| flows through a | {total} in {} s ({per_second}/s paced), {ok} echoed |", warm + seconds);
    println!(
        "| direct flows (baseline) | {direct_total} in 3 s ({:.0}/s), {direct_ok} echoed |",
        direct_total as f64 / 3.0
    );
    println!(
        "| heap: settled without streams / with {streams} streams after {seconds} s | {heap_settled:.1} / {heap_after:.1} MiB ({:+.1} MiB) |",
        heap_after - heap_settled
    );
    println!(
        "| RSS: settled without streams / with streams | {settled:.1} / {after:.1} MiB ({:.2}x) |",
        after / settled
    );
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
