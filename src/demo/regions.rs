//! The demo's world, pure: five regions, one node each, and the round-trip times between
//! them. The matrix follows public inter-region figures, with the two detours the
//! internet is known for: Europe to Tokyo is faster through Mumbai than on the direct
//! route, and the US east coast reaches Tokyo faster through the west coast.

/// The nodes, one per region; the node id is the region name.
pub const NODES: [&str; 5] = ["us-east", "us-west", "eu-central", "ap-south", "ap-northeast"];

/// The node the backend service sits behind (the exit of every demo route).
pub const EXIT: &str = "ap-northeast";

/// The relay the demo kills.
pub const RELAY_KILLED: &str = "us-west";

/// The link the demo degrades, and by how much it adds to the round trip (ms).
pub const DEGRADED: (&str, &str, u64) = ("eu-central", "ap-south", 300);

/// The origin of the multipath flow.
pub const MULTIPATH_ORIGIN: &str = "us-east";

/// The lossy intercontinental link of the bulk-transfer step: the demo's us-east <->
/// eu-central round trip, with the random loss and the bottleneck of a long,
/// transatlantic path. Loss that is not congestion is what a loss-based controller
/// (CUBIC, as plain TCP) cannot tell from a full queue, so it shows the difference the
/// link's congestion controller makes.
pub const LOSSY: LossyLink =
    LossyLink { a: "us-east", b: "eu-central", rtt_ms: 90, loss_pct: 1.0, mbit: 100 };

/// An emulated long-distance link with random loss and a bottleneck rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossyLink {
    /// The end that dials (and where the transfer starts).
    pub a: &'static str,
    /// The other end (where the transfer's service is).
    pub b: &'static str,
    /// Round trip, milliseconds (half each way).
    pub rtt_ms: u64,
    /// Random loss on each direction, percent.
    pub loss_pct: f64,
    /// Bottleneck rate of each direction, Mbit/s.
    pub mbit: u64,
}

/// Round-trip times between regions, milliseconds, each pair once.
const RTT_MS: [(&str, &str, u64); 10] = [
    ("us-east", "us-west", 65),
    ("us-east", "eu-central", 90),
    ("us-east", "ap-south", 190),
    ("us-east", "ap-northeast", 200),
    ("us-west", "eu-central", 150),
    ("us-west", "ap-south", 220),
    ("us-west", "ap-northeast", 105),
    ("eu-central", "ap-south", 120),
    ("eu-central", "ap-northeast", 240),
    ("ap-south", "ap-northeast", 70),
];

/// The round trip between two nodes, milliseconds (0 for a node with itself).
pub fn rtt_ms(a: &str, b: &str) -> u64 {
    RTT_MS.iter().find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a)).map_or(0, |(_, _, ms)| *ms)
}

/// Every pair of nodes once, in `NODES` order (the first dials the second).
pub fn pairs() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (i, a) in NODES.iter().enumerate() {
        for b in &NODES[i + 1..] {
            out.push((*a, *b));
        }
    }
    out
}

/// The round trip of a path (origin, relays..., exit), milliseconds.
pub fn path_rtt_ms(nodes: &[&str]) -> u64 {
    nodes.windows(2).map(|w| rtt_ms(w[0], w[1])).sum()
}

/// The origins of the demo's routes: every node but the exit.
pub fn origins() -> impl Iterator<Item = &'static str> {
    NODES.iter().copied().filter(|n| *n != EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_has_a_round_trip_and_the_matrix_has_detours_worth_taking() {
        assert_eq!(pairs().len(), RTT_MS.len());
        assert!(pairs().iter().all(|(a, b)| rtt_ms(a, b) > 0 && rtt_ms(a, b) == rtt_ms(b, a)));
        // The detours the demo shows, each better than direct by more than the scheduler's
        // 10% hysteresis margin.
        let eu = path_rtt_ms(&["eu-central", "ap-south", "ap-northeast"]);
        assert!(eu * 10 < rtt_ms("eu-central", "ap-northeast") * 9, "{eu}");
        let us = path_rtt_ms(&["us-east", "us-west", "ap-northeast"]);
        assert!(us * 10 < rtt_ms("us-east", "ap-northeast") * 9, "{us}");
        assert!(NODES.contains(&EXIT) && NODES.contains(&RELAY_KILLED) && RELAY_KILLED != EXIT);
        // The lossy link is a copy of one of the matrix's links, with loss.
        assert_eq!(rtt_ms(LOSSY.a, LOSSY.b), LOSSY.rtt_ms);
        const { assert!(LOSSY.loss_pct > 0.0) };
    }
}
