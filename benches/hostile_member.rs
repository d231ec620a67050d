//! A hostile member against the scheduler's CPU and an exit's name resolution:
//! `cargo bench --bench hostile_member`.
//!
//! **Scheduler.** A mesh of `BENCH_NODES` (default 100) registered nodes, each reporting a link to every
//! other (the full mesh the scheduler introduces) and originating 4 routes. Per interval
//! every node reports with fresh RTTs and the scheduler recomputes. Then one member attacks
//! each interval: a 256 KiB-class report of 20,000 names nobody registered plus 20,000
//! copies of a real peer, and a registration with the most routes allowed (256), to every
//! other node as exit. The table shows the recompute time per interval (median of
//! `BENCH_INTERVALS`, default 15) with and without the attack in the same run, and what
//! taking in the hostile report costs (it runs under the same state lock).
//!
//! **Exit name resolution.** An exit whose DNS server (a harness on loopback) answers
//! `*.fast.test` at once and never answers `*.slow.test`. An honest member (a node, its
//! flows sealed) opens flows to `BENCH_LOOKUPS` (default 200) distinct fast names one after
//! another (each a real query: no cache hit) and times each (connect, a byte, its echo),
//! first alone, then while another member, speaking the wire by hand, keeps 64 flows at a
//! time to distinct slow names going; and, as the control, while the same flood goes to
//! addresses the exit policy refuses before any lookup (its CPU alone). The table shows
//! the honest median and 99th percentile each way, and what the floods got.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proxy::core::control::{LinkReport, Registration};
use proxy::core::wire::{self, Destination, FlowHeader, RefuseReason, Reply};
use proxy::scheduler::state::MeshState;

mod common;
#[path = "../tests/integration/common/dns.rs"]
mod dns;
#[path = "../tests/integration/common/raw_flow.rs"]
mod raw_flow;

use common::rng::Rng;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn name(i: usize) -> String {
    format!("n{i:05}")
}

fn registration(id: &str, routes: Vec<(String, Option<String>)>) -> Registration {
    Registration {
        node_id: id.to_string(),
        region: "r".into(),
        mesh_address: format!("{id}.example:7800"),
        peers: Vec::new(),
        listeners: Vec::new(),
        routes,
    }
}

fn link(peer: String, rtt_us: u64) -> LinkReport {
    LinkReport { peer, rtt_us, loss_ppm: 0, throughput_bps: 1_000 }
}

/// One interval: every honest node reports, the attacker (if any) sends its report; then a
/// recompute. Returns (recompute time, time taken by the hostile report).
fn interval(m: &mut MeshState, n: usize, attacker: bool, rng: &mut Rng, at: Instant) -> (Duration, Duration) {
    for i in 0..n {
        let links = (0..n).filter(|&j| j != i).map(|j| link(name(j), 1_000 + rng.below(100_000))).collect();
        m.report(&name(i), links, Vec::new(), at);
    }
    let mut ingest = Duration::ZERO;
    if attacker {
        let mut links: Vec<LinkReport> = (0..20_000).map(|k| link(format!("ghost{k:05}"), 10)).collect();
        links.extend((0..20_000).map(|_| link(name(1), 10)));
        let t = Instant::now();
        m.report("mallory", links, Vec::new(), at);
        ingest = t.elapsed();
    }
    let t = Instant::now();
    let _ = m.recompute(at, 1_000);
    (t.elapsed(), ingest)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    scheduler_under_report_attack();
    println!();
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => {
            if let Err(e) = rt.block_on(lookups_under_slow_name_flood()) {
                println!("exit name resolution: failed: {e:#}");
            }
        }
        Err(e) => println!("exit name resolution: no runtime: {e}"),
    }
}

fn scheduler_under_report_attack() {
    let n = env("BENCH_NODES", 100).max(3);
    let intervals = env("BENCH_INTERVALS", 15).max(1);
    // The scheduler's defaults.
    let policy = common::scheduler_policy();
    let start = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut m = MeshState::new(policy, start);
    for i in 0..n {
        let routes = (0..4).map(|r| (format!("r{r}"), Some(name(rng.below(n as u64) as usize)))).collect();
        m.register(registration(&name(i), routes), start);
    }
    let mut run = |m: &mut MeshState, attacker: bool, from: usize| {
        let (mut recompute, mut ingest) = (Vec::new(), Vec::new());
        for k in 0..intervals {
            let at = start + Duration::from_millis((from + k) as u64 * 1000);
            let (r, i) = interval(m, n, attacker, &mut rng, at);
            recompute.push(r);
            ingest.push(i);
        }
        (median(recompute), median(ingest))
    };
    let (honest, _) = run(&mut m, false, 0);
    let routes = (0..256).map(|r| (format!("r{r}"), Some(name(r % n)))).collect();
    m.register(registration("mallory", routes), start + Duration::from_secs(intervals as u64));
    let (attacked, ingest) = run(&mut m, true, intervals);
    println!(
        "scheduler recompute under a report attack, {n} nodes, full mesh, median of {intervals} intervals"
    );
    println!("{:<44} {:>12} {:>8}", "case", "per interval", "ratio");
    println!("{:<44} {:>9.2} ms {:>8}", "honest reports (baseline)", ms(honest), "1.00x");
    println!(
        "{:<44} {:>9.2} ms {:>7.2}x",
        "+ one member: 40,000-entry report, 256 routes",
        ms(attacked),
        ms(attacked) / ms(honest)
    );
    println!("{:<44} {:>9.2} ms", "taking in the hostile report (same lock)", ms(ingest));
    println!("aim: the attack costs about what one more honest node costs (ratio near (n+1)/n)");
}

/// A version 1 header from `origin` to `target` (the exit accepts them with
/// `mesh.e2e: preferred`; a member speaking the wire by hand sends these).
fn header(origin: &str, target: &str) -> anyhow::Result<Vec<u8>> {
    let h = FlowHeader {
        flow_id: rand_id(),
        origin: origin.into(),
        passed: vec![],
        hops: vec![],
        destination: Destination::Target(target.into()),
        subflow: None,
    };
    Ok(wire::encode_header(&h)?)
}

fn rand_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A raw QUIC link to `exit` from member `id` of the mesh in `dir`.
async fn raw_link(dir: &std::path::Path, id: &str, exit: &proxy::Node) -> anyhow::Result<quinn::Connection> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let identity = proxy::tls::TlsIdentity::from_pem(
        &read(&format!("{id}.crt"))?,
        &read(&format!("{id}.key"))?,
        &read("ca.crt")?,
    )?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(identity.quic_client_config()?)));
    let addr = exit.mesh_addr()?;
    Ok(ep.connect(addr, "b")?.await?)
}

/// Times one honest flow per listener of `a` (each routed to its own fresh name, so each
/// is a real query): connect, one byte out, the echo back.
async fn honest_round(a: &proxy::Node, round: &str) -> anyhow::Result<Vec<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut took = Vec::new();
    for l in a.listeners().into_iter().filter(|l| l.name.starts_with(round)) {
        let started = Instant::now();
        let mut c = tokio::net::TcpStream::connect(l.addr).await?;
        c.write_all(&[7]).await?;
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await?;
        took.push(started.elapsed());
    }
    took.sort();
    Ok(took)
}

/// Times the honest flows of `round` while `hostile` keeps 64 flows at a time to the
/// targets `target(task, i)` going; returns the timings and the flood's (overloaded,
/// other) answers.
async fn flooded_round(
    a: &proxy::Node,
    hostile: &quinn::Connection,
    round: &str,
    target: fn(u64, u64) -> String,
) -> anyhow::Result<(Vec<Duration>, (u64, u64))> {
    let stop = Arc::new(AtomicBool::new(false));
    let (overloaded, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for t in 0..64 {
        let (conn, stop, overloaded, other) =
            (hostile.clone(), stop.clone(), overloaded.clone(), other.clone());
        flood.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded: it stops with the honest round, and after 1,000,000 flows at most.
            while !stop.load(Ordering::Relaxed) && i < 1_000_000 / 64 {
                let Ok(h) = header("x", &target(t, i)) else { break };
                match raw_flow::open_raw_flow(&conn, &h).await {
                    Some(Reply::Refused { reason: RefuseReason::Overloaded, .. }) => {
                        overloaded.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A flooder that backs off a little after each answer, at the same pace
                // in both floods, so they compare.
                tokio::time::sleep(Duration::from_millis(1)).await;
                i += 1;
            }
        }));
    }
    // Let the flood fill the hostile member's lookup slots first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = honest_round(a, round).await?;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    Ok((took, (overloaded.load(Ordering::Relaxed), other.load(Ordering::Relaxed))))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn lookups_under_slow_name_flood() -> anyhow::Result<()> {
    let count = env("BENCH_LOOKUPS", 200).max(10);
    let dir = common::make_mesh("hostile-member", &["a", "b", "x"])?;
    let dns = dns::TestDns::start().await;
    let echo = common::echo_server().await?;
    let body = format!(
        "peers: [ {{ name: a }}, {{ name: x }} ]\nexit_policy: {{ allow: [\"127.0.0.1/32\"], nameservers: [\"{}\"] }}",
        dns.addr
    );
    let exit = common::node(&dir, "b", &body, "e2e: preferred").await?;
    // The honest member: a node whose flows are sealed, one route per fresh name.
    let exit_addr = exit.mesh_addr()?;
    let mut listeners = String::new();
    let mut routes = String::new();
    for round in ["warm", "alone", "control", "flooded"] {
        let count = if round == "warm" { 1 } else { count };
        for i in 0..count {
            listeners += &format!("  - {{ name: {round}{i}, bind: \"127.0.0.1:0\" }}\n");
            routes += &format!(
                "  - {{ name: {round}{i}, match: {{ listener: {round}{i} }}, target: \"h{i}.{round}.fast.test:{}\", exit: b }}\n",
                echo.port()
            );
        }
    }
    let body = format!(
        "listeners:\n{listeners}peers: [ {{ name: b, address: \"{exit_addr}\" }} ]\nroutes:\n{routes}"
    );
    let a = common::node(&dir, "a", &body, "").await?;
    let hostile = raw_link(&dir, "x", &exit).await?;
    // The first flow waits for the link and the exit's seal card: not timed.
    honest_round(&a, "warm").await?;
    let alone = honest_round(&a, "alone").await?;

    // The same flood refused by the exit policy before any lookup: what the flood's CPU
    // alone costs the honest flows, to compare with.
    let (control, control_flood) =
        flooded_round(&a, &hostile, "control", |t, i| format!("10.{t}.{}.{}:80", i / 250 % 250, i % 250))
            .await?;
    let (flooded, slow_flood) =
        flooded_round(&a, &hostile, "flooded", |t, i| format!("t{t}n{i}.slow.test:80")).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "exit name resolution under a slow-name flood, {count} honest flows to distinct names, one at a time"
    );
    println!("{:<52} {:>10} {:>10}", "case", "median", "p99");
    let row = |case: &str, took: &[Duration]| {
        println!(
            "{case:<52} {:>7.2} ms {:>7.2} ms   {:.2}x median",
            ms(pct(took, 0.5)),
            ms(pct(took, 0.99)),
            ms(pct(took, 0.5)) / ms(pct(&alone, 0.5))
        )
    };
    row("honest flows alone (baseline)", &alone);
    row("+ a member's flood the policy refuses (CPU only)", &control);
    row("+ a member flooding names that never answer", &flooded);
    println!(
        "control flood: {} flows refused; slow-name flood: {} refused at once (overloaded), {} ran to the deadline or memory; {} slow names reached the DNS server",
        control_flood.0 + control_flood.1,
        slow_flood.0,
        slow_flood.1,
        dns.slow_names()
    );
    println!(
        "aim: the slow-name flood costs honest flows no more than the same flood refused without a lookup"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
