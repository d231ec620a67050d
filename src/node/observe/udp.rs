//! UDP counters: associations, datagrams and bytes each way, and datagrams dropped by
//! reason. Updated on the data path with relaxed atomics, read as a [`UdpStats`] snapshot
//! (in `/api/stats` under `udp`, alone at `/api/udp`, and in `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpDrop {
    /// Its association's stream could not take it now (the queue in front of it was full):
    /// UDP is not buffered without bound.
    Congested,
    /// A new client address past `limits.max_udp_associations`.
    AssociationCap,
    /// Larger than `limits.max_datagram` (origin), or than the route to the target allows
    /// with the don't-fragment flag set (exit, `EMSGSIZE`).
    TooLarge,
    /// Its association's flow was refused (route, exit policy, flow limit, any hop).
    Refused,
    /// The socket would not send it (the target's port unreachable, no route, ...).
    SendFailed,
}

impl UdpDrop {
    /// Every reason, in counter order.
    pub(crate) const ALL: [UdpDrop; 5] =
        [Self::Congested, Self::AssociationCap, Self::TooLarge, Self::Refused, Self::SendFailed];

    /// The name in the API and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Congested => "congested",
            Self::AssociationCap => "association_cap",
            Self::TooLarge => "too_large",
            Self::Refused => "refused",
            Self::SendFailed => "send_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A node's UDP counters. "In" is what UDP sockets here received (from clients at an
/// origin, from targets at an exit) and carried into the mesh; "out" is what they sent.
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    /// Associations open now (origin and exit sides).
    pub associations_open: AtomicU64,
    /// Associations opened since start (origin and exit sides).
    pub associations_total: AtomicU64,
    /// Datagrams received on UDP sockets.
    pub datagrams_in: AtomicU64,
    /// Their payload bytes.
    pub bytes_in: AtomicU64,
    /// Datagrams sent on UDP sockets.
    pub datagrams_out: AtomicU64,
    /// Their payload bytes.
    pub bytes_out: AtomicU64,
    /// Datagrams dropped, by [`UdpDrop`].
    pub dropped: [AtomicU64; UdpDrop::ALL.len()],
}

impl UdpCounters {
    /// Counts one datagram dropped for `reason`.
    pub(crate) fn drop_one(&self, reason: UdpDrop) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` datagrams dropped for `reason`.
    pub(crate) fn dropped_n(&self, reason: UdpDrop, n: u64) {
        self.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a datagram received.
    pub(crate) fn received(&self, len: usize) {
        self.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts a datagram sent.
    pub(crate) fn sent(&self, len: usize) {
        self.datagrams_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self) -> UdpStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UdpStats {
            associations_open: load(&self.associations_open),
            associations_total: load(&self.associations_total),
            datagrams_in: load(&self.datagrams_in),
            bytes_in: load(&self.bytes_in),
            datagrams_out: load(&self.datagrams_out),
            bytes_out: load(&self.bytes_out),
            dropped: UdpDrop::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), load(&self.dropped[r.index()])))
                .collect(),
        }
    }
}

/// An association open on this node: counted while it lives.
pub(crate) struct OpenAssociation<'a>(&'a UdpCounters);

impl<'a> OpenAssociation<'a> {
    /// Counts a new association as open until the returned value is dropped.
    pub(crate) fn new(counters: &'a UdpCounters) -> Self {
        counters.associations_open.fetch_add(1, Ordering::Relaxed);
        counters.associations_total.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenAssociation<'_> {
    fn drop(&mut self) {
        self.0.associations_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A point-in-time copy of a node's UDP counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UdpStats {
    /// Associations open now (origin and exit sides).
    pub associations_open: u64,
    /// Associations opened since start.
    pub associations_total: u64,
    /// Datagrams received on UDP sockets (from clients or targets).
    pub datagrams_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// Datagrams sent on UDP sockets (to clients or targets).
    pub datagrams_out: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Datagrams dropped, by reason (`congested`, `association_cap`, `too_large`,
    /// `refused`, `send_failed`), every reason listed.
    pub dropped: Vec<(String, u64)>,
}

impl UdpStats {
    /// Datagrams dropped for `reason` (a name as in [`UdpStats::dropped`]).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_associations_while_open() {
        let c = UdpCounters::default();
        c.drop_one(UdpDrop::TooLarge);
        c.drop_one(UdpDrop::TooLarge);
        c.drop_one(UdpDrop::AssociationCap);
        {
            let _a = OpenAssociation::new(&c);
            assert_eq!(c.snapshot().associations_open, 1);
        }
        let s = c.snapshot();
        assert_eq!((s.associations_open, s.associations_total), (0, 1));
        assert_eq!(s.dropped("too_large"), 2);
        assert_eq!(s.dropped("association_cap"), 1);
        assert_eq!(s.dropped("congested"), 0);
        assert_eq!(s.dropped.len(), UdpDrop::ALL.len());
    }
}
