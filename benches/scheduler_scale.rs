//! The scheduler at scale, by simulation: `cargo bench --bench scheduler_scale`.
//!
//! Drives the scheduler's state machine (`MeshState`, the code the server runs on every
//! registration, report and recompute; no sockets) with synthetic nodes spread over ten
//! cities on the globe. RTT between two nodes is their great-circle distance at 2/3 of
//! the speed of light, times 1.5 for the cable's detours, plus 1 ms. Every node has one
//! route to a random exit. Each simulated second every node reports the links the
//! scheduler has it keep (the partial mesh: what it introduced, as if dialed at once and
//! retired at once), with their true RTT, and the scheduler recomputes.
//!
//! Printed per mesh size: recompute time per interval (median and worst of the measured
//! seconds), instruction bytes per node per minute, heap held, links per node, how far
//! the issued paths are from the best path of the full mesh, and the recompute that moves
//! routes after a link fails and after a relay fails.
//! Environment: `BENCH_SCALE_SIZES` (default `100,1000,5000`), `BENCH_SCALE_WARM` (warm-up
//! seconds, default 40), `BENCH_SCALE_SECONDS` (measured seconds, default 20),
//! `BENCH_SCALE_MAX_LINKS` (default 32).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proxy::core::control::{self, LinkReport, Registration, ToNode};
use proxy::scheduler::state::{MeshState, Policy};

#[global_allocator]
static ALLOCATOR: common::heap::CountingAllocator = common::heap::CountingAllocator;

/// Ten cities (latitude, longitude): where the synthetic nodes are.
const CITIES: [(f64, f64); 10] = [
    (50.1, 8.7),    // Frankfurt
    (51.5, -0.1),   // London
    (40.7, -74.0),  // New York
    (37.4, -122.1), // San Jose
    (-23.5, -46.6), // São Paulo
    (1.3, 103.8),   // Singapore
    (35.7, 139.7),  // Tokyo
    (-33.9, 151.2), // Sydney
    (19.1, 72.9),   // Mumbai
    (25.2, 55.3),   // Dubai
];

use common::rng::Rng;

/// A synthetic mesh: node ids, positions and routes.
struct World {
    ids: Vec<String>,
    position: Vec<(f64, f64)>,
    exit_of: Vec<usize>,
    index: HashMap<String, usize>,
}

impl World {
    fn new(n: usize, rng: &mut Rng) -> World {
        let ids: Vec<String> = (0..n).map(|i| format!("n{i:05}")).collect();
        let position = (0..n)
            .map(|_| {
                let (lat, lon) = CITIES[(rng.next() % CITIES.len() as u64) as usize];
                // Spread within about 300 km of the city.
                (lat + (rng.unit() - 0.5) * 5.0, lon + (rng.unit() - 0.5) * 5.0)
            })
            .collect();
        let exit_of = (0..n)
            .map(|i| {
                let e = (rng.next() % n as u64) as usize;
                if e == i { (e + 1) % n } else { e }
            })
            .collect();
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        World { ids, position, exit_of, index }
    }

    /// True RTT between nodes `a` and `b`, ms.
    fn rtt(&self, a: usize, b: usize) -> f64 {
        let (la, lo) = self.position[a];
        let (lb, lob) = self.position[b];
        let (p1, p2) = (la.to_radians(), lb.to_radians());
        let dp = p2 - p1;
        let dl = (lob - lo).to_radians();
        let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        let km = 2.0 * 6371.0 * h.sqrt().asin();
        // Light in fibre: 200 km/ms one way; there and back; 1.5 for detours; 1 ms for hops.
        1.0 + 1.5 * 2.0 * km / 200.0
    }

    fn registration(&self, i: usize) -> Registration {
        Registration {
            node_id: self.ids[i].clone(),
            region: format!("city-{}", i % CITIES.len()),
            mesh_address: format!("10.{}.{}.{}:7800", i >> 16, (i >> 8) & 255, i & 255),
            peers: Vec::new(),
            listeners: vec!["in".into()],
            routes: vec![("r".into(), Some(self.ids[self.exit_of[i]].clone()))],
        }
    }
}

/// Sends every node's report of the links it keeps now; `down` are failed pairs and
/// `dead` a failed node (its peers stop reporting it; it reports nothing).
fn report_all(
    state: &mut MeshState,
    world: &World,
    now: Instant,
    down: &[(usize, usize)],
    dead: Option<usize>,
) {
    let kept = state.kept_links().clone();
    for (i, id) in world.ids.iter().enumerate() {
        if Some(i) == dead {
            continue;
        }
        let links = kept
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|peer| {
                let j = *world.index.get(peer)?;
                let failed = down.iter().any(|&(a, b)| (a, b) == (i, j) || (a, b) == (j, i));
                (!failed && Some(j) != dead).then(|| LinkReport {
                    peer: peer.clone(),
                    rtt_us: (world.rtt(i, j) * 1000.0) as u64,
                    loss_ppm: 0,
                    throughput_bps: 0,
                })
            })
            .collect();
        state.report(id, links, Vec::new(), now);
    }
}

/// Issued primary paths by node, with their true latency (ms) against the best path
/// of the full mesh (the direct RTT: it is a metric plus a per-hop constant).
fn stretch(state: &MeshState, world: &World) -> Vec<f64> {
    state
        .route_snapshots(Instant::now())
        .iter()
        .filter_map(|r| {
            let path = r.paths.first()?;
            let hops: Vec<usize> = path.hops.iter().filter_map(|h| world.index.get(h).copied()).collect();
            let latency: f64 = hops.windows(2).map(|w| world.rtt(w[0], w[1])).sum();
            let (a, b) = (*hops.first()?, *hops.last()?);
            Some(latency / world.rtt(a, b))
        })
        .collect()
}

struct Figures {
    nodes: usize,
    recompute_median: Duration,
    recompute_worst: Duration,
    bytes_per_node_minute: f64,
    heap_mib: f64,
    links_mean: f64,
    links_max: usize,
    within_10: f64,
    stretch_p95: f64,
    link_failure: (Duration, usize),
    node_failure: (Duration, usize),
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}

fn simulate(n: usize, warm: u64, seconds: u64, max_links: usize) -> Figures {
    let heap_before = common::heap::heap_mib();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let world = World::new(n, &mut rng);
    let epoch = Instant::now();
    let policy = Policy { max_links, ..common::scheduler_policy() };
    let mut state = MeshState::new(policy, epoch);
    for i in 0..n {
        state.register(world.registration(i), epoch);
    }
    let mut second = 0u64;
    let mut tick = |state: &mut MeshState, down: &[(usize, usize)], dead: Option<usize>| {
        second += 1;
        let now = epoch + Duration::from_secs(second);
        report_all(state, &world, now, down, dead);
        let started = Instant::now();
        let sets = state.recompute(now, 1_700_000_000 + second);
        let took = started.elapsed();
        let bytes: usize = sets
            .into_iter()
            .map(|(_, set)| control::encode(&ToNode::Instructions(set)).map_or(0, |f| f.len()))
            .sum();
        (took, bytes)
    };
    for _ in 0..warm {
        tick(&mut state, &[], None);
    }
    let mut times = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..seconds {
        let (took, b) = tick(&mut state, &[], None);
        times.push(took);
        bytes += b;
    }
    times.sort();
    let degrees: Vec<usize> = state.kept_links().values().map(|p| p.len()).collect();
    let stretches = stretch(&state, &world);
    let within = stretches.iter().filter(|s| **s <= 1.1).count() as f64 / stretches.len().max(1) as f64;
    let heap = common::heap::heap_mib() - heap_before;

    // The link most issued paths run over fails: both ends stop reporting it.
    let mut use_count: HashMap<(usize, usize), usize> = HashMap::new();
    for r in state.route_snapshots(Instant::now()) {
        for path in &r.paths {
            let hops: Vec<usize> = path.hops.iter().filter_map(|h| world.index.get(h).copied()).collect();
            for w in hops.windows(2) {
                *use_count.entry((w[0].min(w[1]), w[0].max(w[1]))).or_default() += 1;
            }
        }
    }
    let busiest = use_count.iter().max_by_key(|(_, c)| **c).map(|(l, _)| *l).unwrap_or((0, 1));
    let uses = |state: &MeshState, pair: (usize, usize)| {
        state
            .route_snapshots(Instant::now())
            .iter()
            .filter(|r| {
                r.paths.iter().any(|p| {
                    let hops: Vec<usize> =
                        p.hops.iter().filter_map(|h| world.index.get(h).copied()).collect();
                    hops.windows(2).any(|w| (w[0].min(w[1]), w[0].max(w[1])) == pair)
                })
            })
            .count()
    };
    let before = uses(&state, busiest);
    let (took, _) = tick(&mut state, &[busiest], None);
    let left = uses(&state, busiest);
    let link_failure = (took, before.saturating_sub(left));

    // The relay the most paths cross fails: its peers stop reporting links to it.
    let mut relay_count: HashMap<usize, usize> = HashMap::new();
    for r in state.route_snapshots(Instant::now()) {
        for path in &r.paths {
            let hops: Vec<usize> = path.hops.iter().filter_map(|h| world.index.get(h).copied()).collect();
            for &h in hops.iter().skip(1).take(hops.len().saturating_sub(2)) {
                *relay_count.entry(h).or_default() += 1;
            }
        }
    }
    let relay = relay_count.iter().max_by_key(|(_, c)| **c).map(|(r, _)| *r).unwrap_or(0);
    let crossing = |state: &MeshState| {
        state
            .route_snapshots(Instant::now())
            .iter()
            .filter(|r| {
                r.node != world.ids[relay]
                    && r.paths.iter().any(|p| p.hops[1..p.hops.len() - 1].contains(&world.ids[relay]))
            })
            .count()
    };
    let before = crossing(&state);
    let (took, _) = tick(&mut state, &[busiest], Some(relay));
    let node_failure = (took, before.saturating_sub(crossing(&state)));

    Figures {
        nodes: n,
        recompute_median: times[times.len() / 2],
        recompute_worst: times[times.len() - 1],
        bytes_per_node_minute: bytes as f64 / n as f64 / (seconds as f64 / 60.0),
        heap_mib: heap,
        links_mean: degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64,
        links_max: degrees.iter().copied().max().unwrap_or(0),
        within_10: within,
        stretch_p95: percentile(stretches, 0.95),
        link_failure,
        node_failure,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let warm = common::env_usize("BENCH_SCALE_WARM", 40) as u64;
    let seconds = common::env_usize("BENCH_SCALE_SECONDS", 20) as u64;
    let max_links = common::env_usize("BENCH_SCALE_MAX_LINKS", 32);
    println!(
        "scheduler at scale: MeshState driven directly, {warm} s warm-up then {seconds} s measured, one route per node, max_links {max_links}"
    );
    println!(
        "| nodes | recompute median | recompute worst | instructions B/node/min | heap MiB | links/node mean (max) | paths within 10% of best | stretch p95 | link failure: recompute, routes moved | relay failure: recompute, routes moved |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let f = simulate(n, warm, seconds, max_links);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.0} | {:.1} | {:.1} ({}) | {:.1}% | {:.2} | {:.1} ms, {} | {:.1} ms, {} |",
            f.nodes,
            f.recompute_median.as_secs_f64() * 1000.0,
            f.recompute_worst.as_secs_f64() * 1000.0,
            f.bytes_per_node_minute,
            f.heap_mib,
            f.links_mean,
            f.links_max,
            f.within_10 * 100.0,
            f.stretch_p95,
            f.link_failure.0.as_secs_f64() * 1000.0,
            f.link_failure.1,
            f.node_failure.0.as_secs_f64() * 1000.0,
            f.node_failure.1,
        );
    }
}
