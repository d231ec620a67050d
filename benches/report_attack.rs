//! A hostile member against the scheduler's CPU: `cargo bench --bench report_attack`.
//!
//! A mesh of `BENCH_NODES` (default 100) registered nodes, each reporting a link to every
//! other (the full mesh the scheduler introduces) and originating 4 routes. Per interval
//! every node reports with fresh RTTs and the scheduler recomputes. Then one member attacks
//! each interval: a 256 KiB-class report of 20,000 names nobody registered plus 20,000
//! copies of a real peer, and a registration with the most routes allowed (256), to every
//! other node as exit. The table shows the recompute time per interval (median of
//! `BENCH_INTERVALS`, default 15) with and without the attack in the same run, and what
//! taking in the hostile report costs (it runs under the same state lock).

use std::time::{Duration, Instant};

use proxy::core::control::{LinkReport, Registration};
use proxy::core::hysteresis::Hysteresis;
use proxy::core::pathfind::Objective;
use proxy::scheduler::state::{MeshState, Policy};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

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
    let n = env("BENCH_NODES", 100).max(3);
    let intervals = env("BENCH_INTERVALS", 15).max(1);
    // The scheduler's defaults.
    let policy = Policy {
        objective: Objective::Latency,
        max_paths: 3,
        hysteresis: Hysteresis { margin: 0.1, hold: Duration::from_secs(5) },
        ttl: Duration::from_secs(300),
        dead_after: Duration::from_secs(15),
        pins: Vec::new(),
    };
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
