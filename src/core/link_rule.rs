//! The rule that keeps exactly one connection per peer pair.
//!
//! Both nodes may dial each other at the same moment, so two connections can exist for
//! one pair. Each side applies the same pure rule to the same pair of connections and so
//! keeps the same one, whatever order they arrived in: the connection opened by the node
//! with the smaller id wins; between two opened by the same node (a restart), the newer
//! wins, because the older one belongs to a process that is gone.
//!
//! One more case: a node dials only while it holds no live link. So when a dial from the
//! peer completes although we have held the preferred link for longer than `settle`, the
//! peer has lost that link (it restarted, or its side timed out) and ours is stale, even
//! if our side has not noticed yet: the new connection wins. `settle` must be longer than
//! a dial can take (the connect timeout), or a dial that started before the link existed
//! and finished slowly would be mistaken for a lost link.

use std::time::Duration;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This node dialed.
    Local,
    /// The peer dialed.
    Remote,
}

/// What carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTransport {
    /// QUIC on UDP.
    Quic,
    /// QUIC packets inside TLS on TCP: the fallback where UDP is blocked.
    Tcp,
}

impl LinkTransport {
    /// The name the admin API, metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            LinkTransport::Quic => "quic",
            LinkTransport::Tcp => "tcp",
        }
    }
}

/// Between two live links over different transports, whether the new one replaces the
/// existing one: QUIC always wins, so both ends agree whatever order the links came in,
/// and a link that fell back to TCP gives way to QUIC once a probe gets through. `None`
/// when the transports are the same (the rest of the rule decides).
pub fn transport_decides(existing: LinkTransport, new: LinkTransport) -> Option<bool> {
    (existing != new).then_some(new == LinkTransport::Quic)
}

/// The link already held for a peer, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Existing {
    /// Who opened it.
    pub initiator: Initiator,
    /// Whether it is still open.
    pub alive: bool,
    /// How long ago it was established.
    pub age: Duration,
}

/// Whether a newly established connection opened by `new` should replace `existing`.
pub fn new_replaces_existing(
    local_id: &str,
    peer_id: &str,
    existing: Existing,
    new: Initiator,
    settle: Duration,
) -> bool {
    if !existing.alive || existing.initiator == new {
        return true;
    }
    let preferred = if local_id < peer_id { Initiator::Local } else { Initiator::Remote };
    if new == Initiator::Remote && existing.age > settle {
        // The peer dialed although we hold a settled link: it has lost that link.
        return true;
    }
    new == preferred
}

#[cfg(test)]
mod tests {
    use super::*;
    use Initiator::*;

    const SETTLE: Duration = Duration::from_secs(6);

    fn fresh(initiator: Initiator) -> Existing {
        Existing { initiator, alive: true, age: Duration::from_millis(5) }
    }

    #[test]
    fn quic_wins_over_tcp_whichever_came_first() {
        use LinkTransport::*;
        assert_eq!(transport_decides(Tcp, Quic), Some(true));
        assert_eq!(transport_decides(Quic, Tcp), Some(false));
        assert_eq!(transport_decides(Quic, Quic), None);
        assert_eq!(transport_decides(Tcp, Tcp), None);
    }

    #[test]
    fn both_sides_keep_the_connection_dialed_by_the_smaller_id() {
        // Connection X dialed by "a", Y dialed by "b". On a: X is Local, Y is Remote.
        // On b: X is Remote, Y is Local. Try both arrival orders on both sides.
        let keep_on = |me: &str, peer: &str, first: Initiator, second: Initiator| {
            if new_replaces_existing(me, peer, fresh(first), second, SETTLE) { second } else { first }
        };
        assert_eq!(keep_on("a", "b", Local, Remote), Local);
        assert_eq!(keep_on("a", "b", Remote, Local), Local);
        assert_eq!(keep_on("b", "a", Remote, Local), Remote);
        assert_eq!(keep_on("b", "a", Local, Remote), Remote);
    }

    #[test]
    fn same_initiator_or_dead_existing_means_the_new_one_wins() {
        assert!(new_replaces_existing("b", "a", fresh(Remote), Remote, SETTLE));
        let dead = Existing { alive: false, ..fresh(Local) };
        assert!(new_replaces_existing("a", "b", dead, Remote, SETTLE));
    }

    #[test]
    fn a_slow_dial_that_started_before_the_link_is_not_taken_for_a_loss() {
        // a's own link is 3 s old when b's slow dial (started earlier) completes: keep it.
        let young = Existing { age: Duration::from_secs(3), ..fresh(Local) };
        assert!(!new_replaces_existing("a", "b", young, Remote, SETTLE));
    }

    #[test]
    fn a_peer_that_redials_a_settled_link_has_lost_it() {
        let settled = Existing { age: SETTLE + Duration::from_millis(1), ..fresh(Local) };
        // a holds the link it dialed; b dials again: b lost it, so b's new link wins on a.
        assert!(new_replaces_existing("a", "b", settled, Remote, SETTLE));
        // Our own re-dial never displaces a settled preferred link we did not lose.
        let settled_remote = Existing { age: SETTLE * 2, ..fresh(Remote) };
        assert!(!new_replaces_existing("b", "a", settled_remote, Local, SETTLE));
    }
}
