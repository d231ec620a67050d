//! Path computation over the mesh graph: pure, deterministic, no I/O.
//!
//! The graph is directed (a link's metrics can differ per direction) and holds, per link,
//! the measured round-trip time, loss rate and bandwidth (the scheduler fills it with the
//! link's capacity where both ends report one, else with its throughput). For an objective, every link
//! gets a cost; the best path minimises the sum of costs (`latency`, `loss`, `balanced`) or
//! maximises the narrowest link and then minimises latency (`bandwidth`). Alternatives share no relay with the best
//! path or with each other: each is the best path once the relays already used are
//! removed. Ties are broken by node index, so the same graph always gives the same paths.
//!
//! Cost: one Dijkstra per source gives the best path to every destination
//! (O(E log V)); alternatives are computed only for the (source, exit) pairs routes use.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Measured quality of one directed link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkMetrics {
    /// Smoothed round-trip time, in milliseconds.
    pub rtt_ms: f64,
    /// Packet loss rate, 0.0 to 1.0.
    pub loss: f64,
    /// What the link can carry, in Mbit/s (its capacity, or as a fallback what it carried).
    pub bandwidth_mbps: f64,
}

/// What "best" means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Lowest sum of round-trip times.
    Latency,
    /// Highest delivery probability (product of per-link delivery rates).
    Loss,
    /// Widest path: the highest bottleneck bandwidth; ties by latency.
    Bandwidth,
    /// A weighted sum of latency (per ms), loss (per 1% of loss, as `-ln(1-loss)` x 100)
    /// and narrowness (per `100 / Mbit/s`).
    Balanced {
        /// Weight of the latency term.
        latency: f64,
        /// Weight of the loss term.
        loss: f64,
        /// Weight of the bandwidth term.
        bandwidth: f64,
    },
}

impl Objective {
    /// The additive cost of a link, or `None` when it is unusable (total loss, no capacity).
    fn link_cost(&self, m: &LinkMetrics) -> Option<f64> {
        if !(0.0..1.0).contains(&m.loss) || m.bandwidth_mbps <= 0.0 || !m.rtt_ms.is_finite() || m.rtt_ms < 0.0
        {
            return None;
        }
        // `ln` only where the objective needs it: it dominates a search otherwise.
        let loss_cost = || -(1.0 - m.loss).ln();
        Some(match *self {
            Objective::Latency | Objective::Bandwidth => m.rtt_ms,
            Objective::Loss => loss_cost(),
            Objective::Balanced { latency, loss, bandwidth } => {
                latency * m.rtt_ms + loss * 100.0 * loss_cost() + bandwidth * 100.0 / m.bandwidth_mbps
            }
        })
    }
}

/// The mesh as a directed graph of node ids and measured links.
#[derive(Debug, Clone, Default)]
pub struct MeshGraph {
    names: Vec<String>,
    index: HashMap<String, usize>,
    links: Vec<Vec<(usize, LinkMetrics)>>,
}

/// A path from a source to an exit, both included, with its quality.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Node ids from the source to the exit.
    pub nodes: Vec<String>,
    /// Sum of link costs (for `bandwidth`: the path's latency).
    pub cost: f64,
    /// The narrowest link on the path, in Mbit/s.
    pub bottleneck_mbps: f64,
}

/// A path with its share of the traffic, for multipath.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedPath {
    /// The path.
    pub path: Path,
    /// Its share, all shares summing to 1.
    pub weight: f64,
}

impl MeshGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `node`, adding it when new.
    pub fn node(&mut self, node: &str) -> usize {
        if let Some(&i) = self.index.get(node) {
            return i;
        }
        let i = self.names.len();
        self.names.push(node.to_string());
        self.index.insert(node.to_string(), i);
        self.links.push(Vec::new());
        i
    }

    /// Sets (or replaces) the metrics of the directed link `from -> to`.
    pub fn set_link(&mut self, from: &str, to: &str, metrics: LinkMetrics) {
        let (f, t) = (self.node(from), self.node(to));
        let out = &mut self.links[f];
        match out.iter_mut().find(|(n, _)| *n == t) {
            Some(entry) => entry.1 = metrics,
            None => out.push((t, metrics)),
        }
    }

    /// Removes the directed link `from -> to` (a dead link).
    pub fn remove_link(&mut self, from: &str, to: &str) {
        if let (Some(&f), Some(&t)) = (self.index.get(from), self.index.get(to)) {
            self.links[f].retain(|(n, _)| *n != t);
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The cost of following `nodes` under `objective` in this graph, or `None` when a link
    /// on it is missing or unusable (for `bandwidth`: its latency).
    pub fn path_cost(&self, nodes: &[String], objective: Objective) -> Option<f64> {
        let mut cost = 0.0;
        for w in nodes.windows(2) {
            let (u, v) = (*self.index.get(&w[0])?, *self.index.get(&w[1])?);
            let m = self.links[u].iter().find(|(n, _)| *n == v).map(|(_, m)| m)?;
            cost += objective.link_cost(m)?;
        }
        Some(cost)
    }

    /// The best path from `source` to `exit` for `objective`.
    pub fn best_path(&self, source: &str, exit: &str, objective: Objective) -> Option<Path> {
        let (s, e) = (*self.index.get(source)?, *self.index.get(exit)?);
        self.path_avoiding(s, e, objective, &vec![false; self.len()], None)
    }

    /// Best paths from `source` to every reachable node. One search for additive
    /// objectives; for `bandwidth`, one per distinct bottleneck width.
    pub fn best_paths_from(&self, source: &str, objective: Objective) -> Vec<Path> {
        let Some(&s) = self.index.get(source) else { return Vec::new() };
        let none = vec![false; self.len()];
        if objective != Objective::Bandwidth {
            let tree = self.search(s, objective, &none, 0.0);
            return (0..self.len()).filter(|&e| e != s).filter_map(|e| self.path_to(&tree, s, e)).collect();
        }
        let widths = self.widest(s, &none, None);
        let mut out = Vec::new();
        let mut levels: Vec<f64> = widths.iter().copied().filter(|w| *w > 0.0 && w.is_finite()).collect();
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        for level in levels {
            let tree = self.search(s, objective, &none, level);
            let at_level = (0..self.len()).filter(|&e| e != s && widths[e] == level);
            out.extend(at_level.filter_map(|e| self.path_to(&tree, s, e)));
        }
        out
    }

    /// Up to `max` paths from `source` to `exit` that share no relay, best first, with
    /// weights: by bottleneck throughput for `bandwidth`, else by inverse cost.
    pub fn disjoint_paths(
        &self,
        source: &str,
        exit: &str,
        objective: Objective,
        max: usize,
    ) -> Vec<WeightedPath> {
        self.disjoint_paths_avoiding(source, exit, objective, max, |_| false)
    }

    /// As [`Self::disjoint_paths`], never relaying through a node for which `no_relay`
    /// holds (it may still be the source or the exit).
    pub fn disjoint_paths_avoiding(
        &self,
        source: &str,
        exit: &str,
        objective: Objective,
        max: usize,
        no_relay: impl Fn(&str) -> bool,
    ) -> Vec<WeightedPath> {
        let (Some(&s), Some(&e)) = (self.index.get(source), self.index.get(exit)) else { return Vec::new() };
        let mut banned: Vec<bool> = self.names.iter().map(|n| no_relay(n)).collect();
        let mut direct_used = false;
        let mut paths = Vec::new();
        while paths.len() < max {
            let skip = direct_used.then_some((s, e));
            let Some(path) = self.path_avoiding(s, e, objective, &banned, skip) else { break };
            let relays: Vec<usize> =
                path.nodes[1..path.nodes.len() - 1].iter().map(|n| self.index[n]).collect();
            // The direct link may serve once; later searches leave it out and look for
            // relayed alternatives.
            direct_used |= relays.is_empty();
            relays.into_iter().for_each(|r| banned[r] = true);
            paths.push(path);
        }
        weigh(paths, objective)
    }

    /// The best path avoiding `banned` relays. For `bandwidth`: first the widest
    /// bottleneck, then the lowest latency among paths that keep it (a single search on
    /// the pair (width, latency) would be wrong: a narrower but faster prefix can still
    /// be best once the rest of the path is narrower than both).
    fn path_avoiding(
        &self,
        s: usize,
        e: usize,
        objective: Objective,
        banned: &[bool],
        skip: Option<(usize, usize)>,
    ) -> Option<Path> {
        let min_width = if objective == Objective::Bandwidth {
            let w = self.widest(s, banned, skip)[e];
            if w <= 0.0 {
                return None;
            }
            w
        } else {
            0.0
        };
        let tree = self.search_skipping(s, objective, banned, min_width, skip, Some(e));
        self.path_to(&tree, s, e)
    }

    fn path_to(&self, tree: &Tree, s: usize, e: usize) -> Option<Path> {
        if s == e || tree.prev[e] == NONE {
            return None;
        }
        let mut nodes = vec![e];
        let mut at = e;
        while tree.prev[at] != NONE {
            at = tree.prev[at] as usize;
            nodes.push(at);
        }
        nodes.reverse();
        let bottleneck_mbps = nodes
            .windows(2)
            .filter_map(|w| self.links[w[0]].iter().find(|(v, _)| *v == w[1]).map(|(_, m)| m.bandwidth_mbps))
            .fold(f64::INFINITY, f64::min);
        Some(Path {
            nodes: nodes.iter().map(|&i| self.names[i].clone()).collect(),
            cost: tree.cost[e],
            bottleneck_mbps,
        })
    }

    /// Dijkstra on the objective's additive cost over links at least `min_width` wide,
    /// never relaying through `banned` nodes.
    fn search(&self, s: usize, objective: Objective, banned: &[bool], min_width: f64) -> Tree {
        self.search_skipping(s, objective, banned, min_width, None, None)
    }

    /// As [`Self::search`], never using the link `skip`; with a `target`, it stops once
    /// the target's cost is final (the tree is then complete only up to it).
    fn search_skipping(
        &self,
        s: usize,
        objective: Objective,
        banned: &[bool],
        min_width: f64,
        skip: Option<(usize, usize)>,
        target: Option<usize>,
    ) -> Tree {
        let n = self.len();
        let mut tree = Tree { cost: vec![f64::INFINITY; n], prev: vec![NONE; n] };
        let mut done = vec![false; n];
        tree.cost[s] = 0.0;
        let mut heap = BinaryHeap::new();
        heap.push(Entry { key: -0.0, node: s });
        while let Some(Entry { node: u, .. }) = heap.pop() {
            if std::mem::replace(&mut done[u], true) {
                continue;
            }
            if Some(u) == target {
                break;
            }
            if u != s && banned[u] {
                // A banned node may end a path (the exit) but never relay one.
                continue;
            }
            for &(v, ref m) in &self.links[u] {
                if skip == Some((u, v)) {
                    continue;
                }
                let Some(c) = objective.link_cost(m).filter(|_| m.bandwidth_mbps >= min_width) else {
                    continue;
                };
                let cost = tree.cost[u] + c;
                if cost < tree.cost[v] && !done[v] {
                    tree.cost[v] = cost;
                    tree.prev[v] = u as u32;
                    heap.push(Entry { key: -cost, node: v });
                }
            }
        }
        tree
    }

    /// The widest bottleneck from `s` to every node (max-min Dijkstra).
    fn widest(&self, s: usize, banned: &[bool], skip: Option<(usize, usize)>) -> Vec<f64> {
        let n = self.len();
        let mut width = vec![0.0; n];
        let mut done = vec![false; n];
        width[s] = f64::INFINITY;
        let mut heap = BinaryHeap::new();
        heap.push(Entry { key: f64::INFINITY, node: s });
        while let Some(Entry { node: u, .. }) = heap.pop() {
            if std::mem::replace(&mut done[u], true) || (u != s && banned[u]) {
                continue;
            }
            for &(v, ref m) in &self.links[u] {
                if skip == Some((u, v)) || Objective::Latency.link_cost(m).is_none() {
                    continue;
                }
                let w = width[u].min(m.bandwidth_mbps);
                if w > width[v] && !done[v] {
                    width[v] = w;
                    heap.push(Entry { key: w, node: v });
                }
            }
        }
        width
    }
}

/// Best paths from every source, kept so that one link change only recomputes the
/// sources it can affect.
#[derive(Debug, Clone)]
pub struct PathTables {
    objective: Objective,
    trees: Vec<Tree>,
}

impl MeshGraph {
    /// One search per source: the best path between every pair, for additive objectives
    /// (`latency`, `loss`, `balanced`). For `bandwidth` use [`MeshGraph::best_paths_from`].
    pub fn all_trees(&self, objective: Objective) -> PathTables {
        let none = vec![false; self.len()];
        PathTables {
            objective,
            trees: (0..self.len()).map(|s| self.search(s, objective, &none, 0.0)).collect(),
        }
    }
}

impl PathTables {
    /// The best path from `source` to `exit`, from the tables.
    pub fn path(&self, graph: &MeshGraph, source: &str, exit: &str) -> Option<Path> {
        let (s, e) = (*graph.index.get(source)?, *graph.index.get(exit)?);
        let tree = self.trees.get(s).filter(|t| t.prev.len() == graph.len())?;
        graph.path_to(tree, s, e)
    }

    /// After the link `from -> to` changed in `graph` (new metrics, or removed), recomputes
    /// the trees it can affect: those whose best path to `to` used it, and those it now
    /// offers a cheaper way to `to`. Returns how many trees were recomputed. Nodes added
    /// since the tables were built are given trees of their own.
    pub fn link_changed(&mut self, graph: &MeshGraph, from: &str, to: &str) -> usize {
        let (Some(&u), Some(&v)) = (graph.index.get(from), graph.index.get(to)) else { return 0 };
        let none = vec![false; graph.len()];
        let new_cost =
            graph.links[u].iter().find(|(n, _)| *n == v).and_then(|(_, m)| self.objective.link_cost(m));
        let stale = self.trees.len() != graph.len() || self.trees.iter().any(|t| t.cost.len() != graph.len());
        let mut recomputed = 0;
        for s in 0..graph.len() {
            let affected = stale
                || self.trees[s].prev[v] == u as u32
                || new_cost.is_some_and(|c| self.trees[s].cost[u] + c < self.trees[s].cost[v]);
            if affected {
                let tree = graph.search(s, self.objective, &none, 0.0);
                match self.trees.get_mut(s) {
                    Some(t) => *t = tree,
                    None => self.trees.push(tree),
                }
                recomputed += 1;
            }
        }
        recomputed
    }
}

/// Shares: proportional to bottleneck throughput for `bandwidth`, else to `1 / cost`.
fn weigh(paths: Vec<Path>, objective: Objective) -> Vec<WeightedPath> {
    let score = |p: &Path| match objective {
        Objective::Bandwidth => p.bottleneck_mbps,
        _ => 1.0 / p.cost.max(1e-9),
    };
    let total: f64 = paths.iter().map(score).sum();
    paths
        .into_iter()
        .map(|path| {
            let weight = if total > 0.0 && total.is_finite() { score(&path) / total } else { 0.0 };
            WeightedPath { path, weight }
        })
        .collect()
}

/// One source's best-path tree: cost to each node and the node before it (`NONE`: none).
#[derive(Debug, Clone)]
struct Tree {
    cost: Vec<f64>,
    prev: Vec<u32>,
}

const NONE: u32 = u32::MAX;

/// Heap entry: the largest key comes out first (costs are pushed negated); the lower node
/// index breaks ties so results are deterministic.
#[derive(Clone, Copy, PartialEq)]
struct Entry {
    key: f64,
    node: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.total_cmp(&other.key).then(other.node.cmp(&self.node))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests;
