//! Multipath benchmark: `cargo bench --bench multipath`.
//!
//! Nodes a, b, c, d in this process. a reaches the relays b and c through the link
//! emulator, each link rate-limited (both directions) with 5 ms one-way delay; b and c
//! reach the exit d directly. Routes on a, all to a sink behind d that hashes what it
//! gets:
//! - `via-b`, `via-c`: one flow over one path (the single-path data plane);
//! - `mp`: one multipath flow over `[b]` and `[c]`.
//!
//! It prints, all measured in the same run:
//! 1. equal paths (R each): the multipath flow against the same flow over one path
//!    (aim: at least 1.8x);
//! 2. paths of 2:1 capacity (R and R/2): the multipath flow against the sum of what each
//!    path carries alone (aim: at least 90%);
//! 3. a 64 MiB multipath transfer with no path lost, and with the a–c link blackholed
//!    halfway: both completion times.
//!
//! `BENCH_MP_MBIT` sets R (default 100), `BENCH_MP_MIB` the size of runs 1 and 2
//! (default 32).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proxy::emulator::{LinkEmulator, LinkProfile};
use ring::digest::{Context as Digest, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;
/// Keepalive on every node, so a blackholed link is noticed within half a second.
const KEEPALIVE: &str = "keepalive_interval: \"200ms\"";

/// A sink that reads each connection to its end and answers with the SHA-256 of it.
async fn hashing_sink() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut hash = Digest::new(&SHA256);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => hash.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(hash.finish().as_ref()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Sends `len` bytes through `entry`, checks the sink's hash, returns the time taken.
/// `halfway` runs once half the bytes are written.
async fn upload(entry: SocketAddr, len: usize, halfway: impl FnOnce()) -> Result<Duration> {
    let mut halfway = Some(halfway);
    let mut c = TcpStream::connect(entry).await?;
    let start = Instant::now();
    let mut hash = Digest::new(&SHA256);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while sent < len {
        for b in chunk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let n = chunk.len().min(len - sent);
        c.write_all(&chunk[..n]).await?;
        hash.update(&chunk[..n]);
        sent += n;
        if sent >= len / 2
            && let Some(f) = halfway.take()
        {
            f();
        }
    }
    c.shutdown().await?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(answer == hash.finish().as_ref(), "the sink got different bytes");
    Ok(elapsed)
}

fn mbit(len: usize, d: Duration) -> f64 {
    len as f64 * 8.0 / d.as_secs_f64() / 1e6
}

fn shaped(mbit: u64) -> LinkProfile {
    LinkProfile {
        delay: Duration::from_millis(5),
        rate_bps: Some(mbit * 1_000_000),
        queue_limit: 4096,
        ..LinkProfile::ideal()
    }
}

async fn run(dir: &Path) -> Result<()> {
    let rate: u64 = std::env::var("BENCH_MP_MBIT").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let len = std::env::var("BENCH_MP_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(32) * MIB;
    let sink = hashing_sink().await?;
    let d_body = format!("peers: [ {{ name: b }}, {{ name: c }} ]\nexit_policy: {{ allow: [\"{sink}\"] }}");
    let d = common::node(dir, "d", &d_body, KEEPALIVE).await?;
    let relay = |id: &'static str| {
        let d_addr = d.mesh_addr();
        async move {
            common::node(
                dir,
                id,
                &format!("peers: [ {{ name: a }}, {{ name: d, address: \"{}\" }} ]", d_addr?),
                KEEPALIVE,
            )
            .await
        }
    };
    let b = relay("b").await?;
    let c = relay("c").await?;
    let ab = LinkEmulator::start(b.mesh_addr()?, 1).await?;
    let ac = LinkEmulator::start(c.mesh_addr()?, 2).await?;
    let route = |name: &str, extra: &str| {
        format!(
            "  - {{ name: {name}, match: {{ listener: {name} }}, target: \"{sink}\", exit: d, {extra} }}\n"
        )
    };
    let a_body = format!(
        "listeners:\n  - {{ name: via-b, bind: \"127.0.0.1:0\" }}\n  - {{ name: via-c, bind: \"127.0.0.1:0\" }}\n  - {{ name: mp, bind: \"127.0.0.1:0\" }}\npeers: [ {{ name: b, address: \"{}\" }}, {{ name: c, address: \"{}\" }} ]\nroutes:\n{}{}{}",
        ab.addr(),
        ac.addr(),
        route("via-b", "via: [b]"),
        route("via-c", "via: [c]"),
        route("mp", "paths: [[b], [c]], multipath: true"),
    );
    let a = common::node(dir, "a", &a_body, KEEPALIVE).await?;
    for (n, p) in [(&a, "b"), (&a, "c"), (&b, "d"), (&c, "d")] {
        anyhow::ensure!(n.wait_for_link(p, Duration::from_secs(10)).await, "link {} -> {p}", n.id());
    }
    let entry =
        |name: &str| a.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr).context("listener");
    let (via_b, via_c, mp) = (entry("via-b")?, entry("via-c")?, entry("mp")?);

    println!("multipath: one flow, a -> {{b | c}} -> d, a's links rate-limited, 5 ms one way");
    ab.set_both(shaped(rate));
    ac.set_both(shaped(rate));
    let one = upload(via_b, len, || {}).await?;
    let two = upload(mp, len, || {}).await?;
    println!(
        "  equal paths ({rate} + {rate} Mbit/s), {} MiB: one path {:.0} Mbit/s, multipath {:.0} Mbit/s: {:.2}x (aim >= 1.8x)",
        len / MIB,
        mbit(len, one),
        mbit(len, two),
        one.as_secs_f64() / two.as_secs_f64()
    );
    ac.set_both(shaped(rate / 2));
    let fast = upload(via_b, len, || {}).await?;
    let slow = upload(via_c, len, || {}).await?;
    let both = upload(mp, len, || {}).await?;
    let sum = mbit(len, fast) + mbit(len, slow);
    println!(
        "  2:1 paths ({rate} + {} Mbit/s): alone {:.0} + {:.0} = {sum:.0} Mbit/s, multipath {:.0} Mbit/s: {:.0}% of the sum (aim >= 90%)",
        rate / 2,
        mbit(len, fast),
        mbit(len, slow),
        mbit(len, both),
        100.0 * mbit(len, both) / sum
    );
    ac.set_both(shaped(rate));
    let big = 64 * MIB;
    let intact = upload(mp, big, || {}).await?;
    let cut = upload(mp, big, || ac.set_both(LinkProfile::blackholed())).await?;
    let stats = a.stats().multipath;
    println!(
        "  64 MiB, equal paths: no path lost {:.2} s, a-c blackholed halfway {:.2} s ({} subflows lost, {} KiB resent)",
        intact.as_secs_f64(),
        cut.as_secs_f64(),
        stats.subflows_lost,
        stats.bytes_resent / 1024
    );
    Ok(())
}

fn main() -> Result<()> {
    let dir = common::make_mesh("multipath", &["a", "b", "c", "d"])?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(run(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}
