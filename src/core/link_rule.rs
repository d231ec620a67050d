//! The rule that keeps exactly one connection per peer pair.
//!
//! Both nodes may dial each other at the same moment, so two connections can exist for
//! one pair. Each side applies the same pure rule to the same pair of connections and so
//! keeps the same one, whatever order they arrived in: the connection opened by the node
//! with the smaller id wins; between two opened by the same node (a restart), the newer
//! wins, because the older one belongs to a process that is gone.

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This node dialed.
    Local,
    /// The peer dialed.
    Remote,
}

/// Whether a newly established connection should replace the one already held.
/// `existing_alive` is false when the held connection has already closed.
pub fn new_replaces_existing(
    local_id: &str,
    peer_id: &str,
    existing: Initiator,
    existing_alive: bool,
    new: Initiator,
) -> bool {
    if !existing_alive || existing == new {
        return true;
    }
    let preferred = if local_id < peer_id { Initiator::Local } else { Initiator::Remote };
    new == preferred
}

#[cfg(test)]
mod tests {
    use super::*;
    use Initiator::*;

    #[test]
    fn both_sides_keep_the_connection_dialed_by_the_smaller_id() {
        // Connection X dialed by "a", Y dialed by "b". On a: X is Local, Y is Remote.
        // On b: X is Remote, Y is Local. Try both arrival orders on both sides.
        let keep_on = |me: &str, peer: &str, first: Initiator, second: Initiator| {
            if new_replaces_existing(me, peer, first, true, second) { second } else { first }
        };
        assert_eq!(keep_on("a", "b", Local, Remote), Local);
        assert_eq!(keep_on("a", "b", Remote, Local), Local);
        assert_eq!(keep_on("b", "a", Remote, Local), Remote);
        assert_eq!(keep_on("b", "a", Local, Remote), Remote);
    }

    #[test]
    fn same_initiator_or_dead_existing_means_the_new_one_wins() {
        assert!(new_replaces_existing("b", "a", Remote, true, Remote));
        assert!(new_replaces_existing("a", "b", Local, false, Remote));
    }
}
