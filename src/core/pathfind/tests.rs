use super::*;

fn link(rtt_ms: f64, loss: f64, bandwidth_mbps: f64) -> LinkMetrics {
    LinkMetrics { rtt_ms, loss, bandwidth_mbps }
}

fn both_ways(g: &mut MeshGraph, a: &str, b: &str, m: LinkMetrics) {
    g.set_link(a, b, m);
    g.set_link(b, a, m);
}

fn names(p: &Path) -> Vec<&str> {
    p.nodes.iter().map(String::as_str).collect()
}

const BALANCED: Objective = Objective::Balanced { latency: 1.0, loss: 1.0, bandwidth: 1.0 };
const OBJECTIVES: [Objective; 4] = [Objective::Latency, Objective::Loss, Objective::Bandwidth, BALANCED];

#[test]
fn latency_prefers_two_short_hops_over_one_long_link() {
    let mut g = MeshGraph::new();
    both_ways(&mut g, "a", "d", link(80.0, 0.0, 100.0));
    both_ways(&mut g, "a", "b", link(10.0, 0.0, 100.0));
    both_ways(&mut g, "b", "d", link(10.0, 0.0, 100.0));
    let p = g.best_path("a", "d", Objective::Latency).expect("path");
    assert_eq!((names(&p), p.cost), (vec!["a", "b", "d"], 20.0));
    // Degrade a-b: the direct link wins again.
    both_ways(&mut g, "a", "b", link(200.0, 0.0, 100.0));
    assert_eq!(names(&g.best_path("a", "d", Objective::Latency).expect("path")), vec!["a", "d"]);
}

#[test]
fn loss_and_bandwidth_objectives_pick_their_own_best() {
    let mut g = MeshGraph::new();
    both_ways(&mut g, "a", "d", link(10.0, 0.05, 10.0));
    both_ways(&mut g, "a", "b", link(30.0, 0.0, 1000.0));
    both_ways(&mut g, "b", "d", link(30.0, 0.001, 500.0));
    assert_eq!(names(&g.best_path("a", "d", Objective::Latency).expect("p")), vec!["a", "d"]);
    assert_eq!(names(&g.best_path("a", "d", Objective::Loss).expect("p")), vec!["a", "b", "d"]);
    let wide = g.best_path("a", "d", Objective::Bandwidth).expect("p");
    assert_eq!((names(&wide), wide.bottleneck_mbps), (vec!["a", "b", "d"], 500.0));
}

#[test]
fn dead_and_unusable_links_are_never_used() {
    let mut g = MeshGraph::new();
    both_ways(&mut g, "a", "b", link(1.0, 1.0, 100.0));
    both_ways(&mut g, "b", "c", link(1.0, 0.0, 100.0));
    assert!(g.best_path("a", "c", Objective::Latency).is_none());
    both_ways(&mut g, "a", "b", link(1.0, 0.0, 100.0));
    assert!(g.best_path("a", "c", Objective::Latency).is_some());
    g.remove_link("a", "b");
    assert!(g.best_path("a", "c", Objective::Latency).is_none());
    assert!(g.best_path("a", "a", Objective::Latency).is_none());
    assert!(g.best_path("a", "nobody", Objective::Latency).is_none());
}

#[test]
fn disjoint_paths_share_no_relay_and_weights_sum_to_one() {
    let mut g = MeshGraph::new();
    for relay in ["b", "c", "e"] {
        both_ways(&mut g, "a", relay, link(10.0, 0.0, 100.0));
        both_ways(&mut g, relay, "d", link(10.0, 0.0, 100.0));
    }
    both_ways(&mut g, "b", "c", link(1.0, 0.0, 100.0));
    let paths = g.disjoint_paths("a", "d", Objective::Latency, 4);
    assert_eq!(paths.len(), 3);
    let total: f64 = paths.iter().map(|p| p.weight).sum();
    assert!((total - 1.0).abs() < 1e-9);
    let relays: Vec<&String> = paths.iter().flat_map(|p| &p.path.nodes[1..p.path.nodes.len() - 1]).collect();
    let mut unique = relays.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(relays.len(), unique.len(), "{paths:?}");
}

/// A small deterministic generator for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn metrics(&mut self) -> LinkMetrics {
        let loss = [0.0, 0.0, 0.001, 0.01, 0.1, 1.0][self.below(6) as usize];
        link(1.0 + self.below(100) as f64, loss, [10.0, 50.0, 100.0, 1000.0][self.below(4) as usize])
    }
}

fn random_graph(rng: &mut Rng) -> MeshGraph {
    let n = 2 + rng.below(6) as usize;
    let mut g = MeshGraph::new();
    for i in 0..n {
        g.node(&format!("n{i}"));
    }
    for i in 0..n {
        for j in 0..n {
            if i != j && rng.below(100) < 45 {
                let m = rng.metrics();
                g.set_link(&format!("n{i}"), &format!("n{j}"), m);
            }
        }
    }
    g
}

/// Every simple path from `s` to `e`, by brute force.
fn all_paths(g: &MeshGraph, s: usize, e: usize) -> Vec<Vec<usize>> {
    fn walk(g: &MeshGraph, at: usize, e: usize, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if at == e {
            out.push(path.clone());
            return;
        }
        for &(v, _) in &g.links[at] {
            if !path.contains(&v) {
                path.push(v);
                walk(g, v, e, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(g, s, e, &mut vec![s], &mut out);
    out
}

/// (bottleneck, cost) of a path, or `None` when a link is unusable.
fn evaluate(g: &MeshGraph, path: &[usize], objective: Objective) -> Option<(f64, f64)> {
    let mut cost = 0.0;
    let mut width = f64::INFINITY;
    for w in path.windows(2) {
        let m = g.links[w[0]].iter().find(|(v, _)| *v == w[1]).map(|(_, m)| m)?;
        cost += objective.link_cost(m)?;
        width = width.min(m.bandwidth_mbps);
    }
    Some((width, cost))
}

#[test]
fn on_random_graphs_the_chosen_path_is_optimal_and_loop_free() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut checked = 0;
    for _ in 0..400 {
        let g = random_graph(&mut rng);
        let (s, e) = (0, g.len() - 1);
        for objective in OBJECTIVES {
            let best = all_paths(&g, s, e).iter().filter_map(|p| evaluate(&g, p, objective)).fold(
                None,
                |acc: Option<(f64, f64)>, x| {
                    Some(match acc {
                        None => x,
                        Some(a) if objective == Objective::Bandwidth => {
                            if x.0 > a.0 || (x.0 == a.0 && x.1 < a.1) { x } else { a }
                        }
                        Some(a) => {
                            if x.1 < a.1 {
                                x
                            } else {
                                a
                            }
                        }
                    })
                },
            );
            let found = g.best_path(&g.names[s], &g.names[e], objective);
            match (best, found) {
                (None, None) => {}
                (Some((w, c)), Some(p)) => {
                    let mut seen = p.nodes.clone();
                    seen.sort();
                    seen.dedup();
                    assert_eq!(seen.len(), p.nodes.len(), "loop in {:?}", p.nodes);
                    if objective == Objective::Bandwidth {
                        assert_eq!(p.bottleneck_mbps, w, "{objective:?}");
                    }
                    assert!((p.cost - c).abs() < 1e-9, "{objective:?}: found {} brute force {c}", p.cost);
                    checked += 1;
                }
                (b, f) => panic!("{objective:?}: brute force {b:?}, found {f:?}"),
            }
        }
    }
    assert!(checked > 300, "only {checked} graphs had a path");
}

#[test]
fn on_random_graphs_alternatives_are_loop_free_and_share_no_relay() {
    let mut rng = Rng(0x5eed_9876_0000_0002);
    for _ in 0..300 {
        let g = random_graph(&mut rng);
        let (s, e) = (g.names[0].clone(), g.names[g.len() - 1].clone());
        for objective in OBJECTIVES {
            let paths = g.disjoint_paths(&s, &e, objective, 4);
            let mut relays = Vec::new();
            for p in &paths {
                assert_eq!((p.path.nodes.first(), p.path.nodes.last()), (Some(&s), Some(&e)));
                let inner = &p.path.nodes[1..p.path.nodes.len() - 1];
                assert!(inner.iter().all(|n| *n != s && *n != e));
                relays.extend(inner.iter().cloned());
            }
            let count = relays.len();
            relays.sort();
            relays.dedup();
            assert_eq!(count, relays.len(), "{objective:?}: {paths:?}");
        }
    }
}

#[test]
fn the_same_graph_always_gives_the_same_paths() {
    let mut g = MeshGraph::new();
    for relay in ["b", "c"] {
        both_ways(&mut g, "a", relay, link(10.0, 0.0, 100.0));
        both_ways(&mut g, relay, "d", link(10.0, 0.0, 100.0));
    }
    let first = g.best_path("a", "d", Objective::Latency).expect("p");
    for _ in 0..10 {
        assert_eq!(g.best_path("a", "d", Objective::Latency).expect("p"), first);
    }
    assert_eq!(names(&first), vec!["a", "b", "d"], "ties go to the lower node index");
}

#[test]
fn one_search_from_a_source_agrees_with_each_single_path() {
    let mut rng = Rng(0x5eed_4242_0000_0003);
    for _ in 0..200 {
        let g = random_graph(&mut rng);
        let s = g.names[0].clone();
        for objective in OBJECTIVES {
            let all = g.best_paths_from(&s, objective);
            for p in &all {
                let exit = p.nodes.last().expect("exit");
                let single = g.best_path(&s, exit, objective).expect("reachable");
                assert!((single.cost - p.cost).abs() < 1e-9 && single.bottleneck_mbps == p.bottleneck_mbps);
            }
            let reachable =
                (1..g.len()).filter(|&e| g.best_path(&s, &g.names[e], objective).is_some()).count();
            assert_eq!(all.len(), reachable, "{objective:?}");
        }
    }
}

#[test]
fn after_a_link_change_the_tables_match_a_full_recompute() {
    let mut rng = Rng(0x5eed_7777_0000_0004);
    for _ in 0..150 {
        let mut g = random_graph(&mut rng);
        let mut tables = g.all_trees(Objective::Latency);
        for _ in 0..5 {
            let (i, j) = (rng.below(g.len() as u64) as usize, rng.below(g.len() as u64) as usize);
            if i == j {
                continue;
            }
            let (a, b) = (g.names[i].clone(), g.names[j].clone());
            if rng.below(4) == 0 {
                g.remove_link(&a, &b);
            } else {
                let m = rng.metrics();
                g.set_link(&a, &b, m);
            }
            tables.link_changed(&g, &a, &b);
            let fresh = g.all_trees(Objective::Latency);
            for s in &g.names {
                for e in &g.names {
                    let (x, y) = (tables.path(&g, s, e), fresh.path(&g, s, e));
                    assert_eq!(x.map(|p| p.cost), y.map(|p| p.cost), "{s} -> {e}");
                }
            }
        }
    }
}

#[test]
fn a_best_direct_link_still_gets_relayed_alternatives() {
    let mut g = MeshGraph::new();
    both_ways(&mut g, "a", "d", link(5.0, 0.0, 100.0));
    both_ways(&mut g, "a", "b", link(10.0, 0.0, 100.0));
    both_ways(&mut g, "b", "d", link(10.0, 0.0, 100.0));
    let paths = g.disjoint_paths("a", "d", Objective::Latency, 3);
    let all: Vec<Vec<&str>> = paths.iter().map(|p| names(&p.path)).collect();
    assert_eq!(all, vec![vec!["a", "d"], vec!["a", "b", "d"]]);
}
