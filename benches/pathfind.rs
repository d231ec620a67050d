//! Path computation benchmark: `cargo bench --bench pathfind`.
//!
//! Random meshes of 100, 1,000 and 5,000 nodes where every node measures links to 16
//! others (both directions, random RTT, loss and throughput). For each: a full recompute
//! (best path from every node to every node, latency objective), the recompute after one
//! link change (only the affected sources), and disjoint alternatives for one pair.
//! Environment: `BENCH_MESH_SIZES` (default `100,1000,5000`), `BENCH_DEGREE` (default 16).

use std::time::{Duration, Instant};

use proxy::core::pathfind::{LinkMetrics, MeshGraph, Objective};

mod common;

use common::rng::Rng;

/// Random link metrics: RTT 1-300 ms, loss under 5%, 10-1000 Mbit/s.
fn metrics(rng: &mut Rng) -> LinkMetrics {
    LinkMetrics {
        rtt_ms: 1.0 + rng.below(300) as f64,
        loss: rng.below(50) as f64 / 1000.0,
        bandwidth_mbps: 10.0 + rng.below(990) as f64,
    }
}

fn mesh(n: usize, degree: usize, rng: &mut Rng) -> MeshGraph {
    let mut g = MeshGraph::new();
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    for name in &names {
        g.node(name);
    }
    for i in 0..n {
        // A ring keeps the mesh connected; the rest are random.
        let mut peers = vec![(i + 1) % n];
        while peers.len() < degree.min(n - 1) {
            let j = rng.below(n as u64) as usize;
            if j != i && !peers.contains(&j) {
                peers.push(j);
            }
        }
        for j in peers {
            let m = metrics(rng);
            g.set_link(&names[i], &names[j], m);
            g.set_link(&names[j], &names[i], m);
        }
    }
    g
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_MESH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000]);
    let degree: usize = std::env::var("BENCH_DEGREE").ok().and_then(|d| d.parse().ok()).unwrap_or(16);
    println!("path computation, latency objective, {degree} measured links per node");
    println!(
        "{:>6} {:>9} {:>16} {:>22} {:>20}",
        "nodes", "links", "full recompute", "one link change (avg)", "4 disjoint, 1 pair"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for n in sizes {
        let mut g = mesh(n, degree, &mut rng);
        let links = n * degree * 2;
        let t = Instant::now();
        let mut tables = g.all_trees(Objective::Latency);
        let full = t.elapsed();
        let changes = 20;
        let mut recomputed = 0;
        let t = Instant::now();
        for _ in 0..changes {
            let (i, j) = (rng.below(n as u64) as usize, (rng.below(n as u64) as usize + 1) % n);
            let (a, b) = (format!("n{i}"), format!("n{j}"));
            let m = metrics(&mut rng);
            g.set_link(&a, &b, m);
            recomputed += tables.link_changed(&g, &a, &b);
        }
        let change = t.elapsed() / changes as u32;
        let t = Instant::now();
        let alternatives = g.disjoint_paths("n0", &format!("n{}", n / 2), Objective::Latency, 4);
        let disjoint = t.elapsed();
        println!(
            "{n:>6} {links:>9} {:>13.1} ms {:>13.2} ms ({:>4} of {n} sources) {:>14.2} ms ({} paths)",
            ms(full),
            ms(change),
            recomputed / changes,
            ms(disjoint),
            alternatives.len()
        );
    }
    println!("aim: full recompute for 1,000 nodes under 1 s; one link change far faster");
}
