//! Which links each node keeps (a partial mesh), decided by the scheduler: pure, no I/O.
//!
//! Up to `max_links + 1` nodes every pair is linked, as always. Past that each node
//! proposes its [`NEAREST`] lowest-RTT peers among those it has measured (the ones it keeps
//! now count a fifth nearer, so near-equal peers do not trade places every round),
//! [`LONG_RANGE`] random peers (short paths across the mesh, in the manner of a
//! small-world graph) and [`EXPLORE`] random peers it has never measured, so every node's
//! view of who is near fills in over time. The links current paths use and the static
//! `peers` of node configs are kept whatever they cost, and each node's link to the exits
//! of its routes is proposed first. Proposals are taken in that order
//! while neither end has `max_links`; then every part of the mesh left apart is joined to
//! the rest, so every pair has a path.
//!
//! The random picks change every [`ROUND`] recomputes only, from a seed of the node id
//! and the round: the same inputs give the same links, on any scheduler.

use std::collections::{BTreeSet, HashMap};

/// Lowest-RTT peers each node proposes.
pub const NEAREST: usize = 12;
/// Random peers each node proposes, for short paths across regions.
pub const LONG_RANGE: usize = 4;
/// Random unmeasured peers each node proposes, to measure them.
pub const EXPLORE: usize = 2;
/// Recomputes between changes of the random picks.
pub const ROUND: u64 = 30;
/// A kept peer's RTT counts this much when ranked against others (stickiness).
const KEPT_BONUS: f64 = 0.8;

/// Who links to whom: for each node, the peers it keeps a link with (symmetric).
pub type Links = HashMap<String, BTreeSet<String>>;

/// What the choice starts from.
pub struct TopologyInput<'a> {
    /// Every node, sorted.
    pub ids: &'a [String],
    /// Per node, the peers it has measured and their RTT in ms.
    pub measured: &'a dyn Fn(&str) -> Option<&'a HashMap<String, f64>>,
    /// Pairs that stay linked whatever they cost (static peers, current paths).
    pub must: &'a [(String, String)],
    /// Pairs proposed before any other within the cap: a node and the exits of its
    /// routes, so the direct path is there to be measured and chosen.
    pub wanted: &'a [(String, String)],
    /// The links kept now.
    pub current: &'a Links,
    /// The most links a node keeps (the `must` pairs may exceed it).
    pub max_links: usize,
    /// Which round of random picks.
    pub round: u64,
}

/// The links each node keeps.
pub fn choose(input: &TopologyInput<'_>) -> Links {
    let ids = input.ids;
    let mut links: Links = ids.iter().map(|id| (id.clone(), BTreeSet::new())).collect();
    if ids.len() <= input.max_links + 1 {
        for a in ids {
            for b in ids {
                if a != b {
                    links.entry(a.clone()).or_default().insert(b.clone());
                }
            }
        }
        return links;
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    // (priority, cost, a, b): lower first.
    let mut proposals: Vec<(u32, f64, usize, usize)> = Vec::new();
    for (a, b) in input.must {
        if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
            proposals.push((0, 0.0, i, j));
        }
    }
    for (a, b) in input.wanted {
        if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
            proposals.push((1, 0.0, i, j));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let kept = input.current.get(id);
        let measured = (input.measured)(id);
        let mut near: Vec<(f64, usize)> = measured
            .into_iter()
            .flatten()
            .filter_map(|(peer, rtt)| {
                let j = *index.get(peer.as_str())?;
                let bonus = if kept.is_some_and(|k| k.contains(peer)) { KEPT_BONUS } else { 1.0 };
                Some((rtt * bonus, j))
            })
            .collect();
        near.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for (rank, (cost, j)) in near.into_iter().take(NEAREST).enumerate() {
            proposals.push((2 + rank as u32, cost, i, j));
        }
        let mut seed = mix(hash_id(id) ^ input.round);
        for _ in 0..LONG_RANGE {
            seed = mix(seed);
            proposals.push((100, 0.0, i, (seed % ids.len() as u64) as usize));
        }
        let mut explored = 0;
        for _ in 0..EXPLORE * 4 {
            if explored == EXPLORE {
                break;
            }
            seed = mix(seed);
            let j = (seed % ids.len() as u64) as usize;
            if measured.is_none_or(|m| !m.contains_key(&ids[j])) {
                proposals.push((200, 0.0, i, j));
                explored += 1;
            }
        }
    }
    proposals.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)).then((x.2, x.3).cmp(&(y.2, y.3))));
    let mut degree = vec![0usize; ids.len()];
    let mut sets: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ids.len()];
    for (priority, _, i, j) in proposals {
        if i == j || sets[i].contains(&j) {
            continue;
        }
        if priority > 0 && (degree[i] >= input.max_links || degree[j] >= input.max_links) {
            continue;
        }
        sets[i].insert(j);
        sets[j].insert(i);
        degree[i] += 1;
        degree[j] += 1;
    }
    join_apart(&mut sets, &degree);
    for (i, peers) in sets.iter().enumerate() {
        links.insert(ids[i].clone(), peers.iter().map(|&j| ids[j].clone()).collect());
    }
    links
}

/// Joins every connected part of the mesh to the one holding node 0: its node with the
/// fewest links to the main part's node with the fewest at that moment, so the joins
/// spread over the main part instead of piling on one node.
fn join_apart(sets: &mut [BTreeSet<usize>], degree: &[usize]) {
    let mut degree = degree.to_vec();
    let n = sets.len();
    let mut part = vec![usize::MAX; n];
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if part[start] != usize::MAX {
            continue;
        }
        let id = parts.len();
        let mut members = vec![start];
        part[start] = id;
        let mut k = 0;
        while k < members.len() {
            let node = members[k];
            k += 1;
            for &peer in &sets[node] {
                if part[peer] == usize::MAX {
                    part[peer] = id;
                    members.push(peer);
                }
            }
        }
        parts.push(members);
    }
    let Some((main, rest)) = parts.split_first() else { return };
    for other in rest {
        let (Some(&hub), Some(&node)) =
            (main.iter().min_by_key(|&&i| (degree[i], i)), other.iter().min_by_key(|&&i| (degree[i], i)))
        else {
            continue;
        };
        sets[node].insert(hub);
        sets[hub].insert(node);
        degree[node] += 1;
        degree[hub] += 1;
    }
}

/// A stable hash of a node id (FNV-1a): the same on every scheduler and release.
pub(crate) fn hash_id(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One step of SplitMix64: well-spread values from a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("n{i:04}")).collect();
        v.sort();
        v
    }

    /// Nodes on a line, RTT their distance: everyone has measured everyone.
    fn line(ids: &[String]) -> HashMap<String, HashMap<String, f64>> {
        ids.iter()
            .enumerate()
            .map(|(i, a)| {
                let row = ids
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, b)| (b.clone(), (i as f64 - j as f64).abs()));
                (a.clone(), row.collect())
            })
            .collect()
    }

    fn connected(links: &Links) -> bool {
        let Some(start) = links.keys().next() else { return true };
        let mut seen = BTreeSet::from([start.clone()]);
        let mut todo = vec![start.clone()];
        while let Some(n) = todo.pop() {
            for p in &links[&n] {
                if seen.insert(p.clone()) {
                    todo.push(p.clone());
                }
            }
        }
        seen.len() == links.len()
    }

    /// The links of `ids` when nothing has been measured yet.
    fn unmeasured(ids: &[String], max_links: usize, round: u64) -> Links {
        choose(&TopologyInput {
            ids,
            measured: &|_| None,
            must: &[],
            wanted: &[],
            current: &Links::new(),
            max_links,
            round,
        })
    }

    #[test]
    fn a_small_mesh_is_a_full_mesh() {
        let links = unmeasured(&ids(5), 4, 0);
        assert!(links.values().all(|p| p.len() == 4));
    }

    #[test]
    fn a_large_mesh_keeps_near_peers_within_the_cap_and_stays_connected() {
        let ids = ids(300);
        let measured = line(&ids);
        let must = vec![(ids[0].clone(), ids[299].clone())];
        let lookup = |id: &str| measured.get(id);
        let input = TopologyInput {
            ids: &ids,
            measured: &lookup,
            must: &must,
            wanted: &[],
            current: &Links::new(),
            max_links: 16,
            round: 1,
        };
        let links = choose(&input);
        assert!(connected(&links), "every pair has a path");
        assert!(links[&ids[0]].contains(&ids[299]), "a must pair is kept");
        let over: Vec<usize> = links.values().map(BTreeSet::len).filter(|&d| d > 17).collect();
        assert!(over.is_empty(), "degrees past the cap: {over:?}");
        // The nearest neighbours are among the links.
        assert!(links[&ids[150]].contains(&ids[149]) && links[&ids[150]].contains(&ids[151]));
        // Same inputs, same links; a kept link survives a near-equal newcomer.
        assert_eq!(choose(&input), links);
    }

    #[test]
    fn unmeasured_nodes_are_explored_and_long_range_links_shorten_paths() {
        let links = unmeasured(&ids(200), 8, 3);
        assert!(connected(&links));
        assert!(
            links.values().all(|p| !p.is_empty() && p.len() <= 9),
            "{:?}",
            links.values().map(BTreeSet::len).collect::<Vec<_>>()
        );
    }
}
