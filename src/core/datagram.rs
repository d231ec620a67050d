//! UDP datagrams on a flow stream, and the table of a UDP listener's associations.
//!
//! A UDP association (one client address on one UDP listener) is carried as one ordinary
//! flow stream. On that stream each datagram is a frame: its length as 2 bytes, big
//! endian, then the payload. A byte stream may deliver frames cut anywhere; the
//! [`Deframer`] puts them back together, so datagrams are never merged or split. A frame
//! of length 0 is a valid empty datagram.
//!
//! The [`AssociationTable`] is the origin's map from client address to the association
//! carrying it, with the node-wide cap on associations and a warning rate limit. Both are
//! pure: no sockets, the time comes in as an argument.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in front of each datagram on the stream.
pub const FRAME_HEAD: usize = 2;

/// The largest payload a frame can carry (the length field's range); IPv4's own limit for
/// a UDP payload (65,507) is below it.
pub const MAX_FRAME_PAYLOAD: usize = u16::MAX as usize;

/// Appends `payload` to `out` as one frame. `payload` must be at most
/// [`MAX_FRAME_PAYLOAD`] bytes; callers check it against `limits.max_datagram` first.
pub fn put_frame(out: &mut BytesMut, payload: &[u8]) -> Result<(), FrameError> {
    let len = u16::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    out.reserve(FRAME_HEAD + payload.len());
    out.put_u16(len);
    out.put_slice(payload);
    Ok(())
}

/// A frame that could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload does not fit a frame's length field.
    #[error("a {0}-byte datagram does not fit a frame (at most {MAX_FRAME_PAYLOAD})")]
    TooLarge(usize),
    /// A frame declares more than the reader accepts.
    #[error("a frame declares {0} bytes, more than the {1} accepted")]
    OverLimit(usize, usize),
}

/// Reassembles frames from stream bytes cut anywhere. Holds at most one partial frame
/// (its declared length is checked against `max` before any of it is kept), so its memory
/// is bounded by `max` whatever the peer sends.
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    max: usize,
}

impl Deframer {
    /// A deframer that accepts payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buf: BytesMut::new(), max: max.min(MAX_FRAME_PAYLOAD) }
    }

    /// Adds stream bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole datagram, `Ok(None)` when more bytes are needed, or an error for a
    /// frame longer than the limit (the stream is then unusable: frame boundaries are lost).
    pub fn next_datagram(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < FRAME_HEAD {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        if len > self.max {
            return Err(FrameError::OverLimit(len, self.max));
        }
        if self.buf.len() < FRAME_HEAD + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEAD);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes of a partial frame held.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// What the table says about a datagram from a client address.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, H> {
    /// The address has an association: hand the datagram to it.
    Known(&'a H),
    /// A new address, and the node has room: open an association (then [`AssociationTable::insert`]).
    Open,
    /// A new address past the cap: drop the datagram. `warn` is `Some(suppressed)` when a
    /// warning is due now (at most one per [`CAP_WARN_EVERY`]), with the number of drops
    /// since the last one.
    Full {
        /// Whether to log now, and how many drops went unlogged before this one.
        warn: Option<u64>,
    },
}

/// How often at most the cap warning is logged.
pub const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// A UDP listener's associations: client address to handle (`H`: a sender to the
/// association's task and its id), bounded by a cap shared with other tables through
/// the count the caller passes.
#[derive(Debug)]
pub struct AssociationTable<H> {
    map: HashMap<SocketAddr, (u64, H)>,
    next_id: u64,
    last_warn: Option<Instant>,
    unwarned: u64,
}

impl<H> Default for AssociationTable<H> {
    fn default() -> Self {
        Self { map: HashMap::new(), next_id: 1, last_warn: None, unwarned: 0 }
    }
}

impl<H> AssociationTable<H> {
    /// What to do with a datagram from `client`, given the node's `open` associations and
    /// its `cap`, at `now`.
    pub fn lookup(&mut self, client: SocketAddr, open: usize, cap: usize, now: Instant) -> Lookup<'_, H> {
        if self.map.contains_key(&client) {
            return match self.map.get(&client) {
                Some((_, h)) => Lookup::Known(h),
                None => Lookup::Open,
            };
        }
        if open < cap {
            return Lookup::Open;
        }
        self.unwarned += 1;
        let due = self.last_warn.is_none_or(|t| now.saturating_duration_since(t) >= CAP_WARN_EVERY);
        if due {
            self.last_warn = Some(now);
            let n = std::mem::take(&mut self.unwarned);
            Lookup::Full { warn: Some(n) }
        } else {
            Lookup::Full { warn: None }
        }
    }

    /// Records `client`'s new association; returns its id (for [`Self::remove`]). Replaces
    /// an association that ended but was not removed yet.
    pub fn insert(&mut self, client: SocketAddr, handle: H) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.map.insert(client, (id, handle));
        id
    }

    /// Removes `client`'s association if it is still the one with `id` (a newer one for
    /// the same address stays).
    pub fn remove(&mut self, client: SocketAddr, id: u64) -> bool {
        match self.map.get(&client) {
            Some((current, _)) if *current == id => {
                self.map.remove(&client);
                true
            }
            _ => false,
        }
    }

    /// Associations in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in payloads {
            put_frame(&mut out, p).expect("fits");
        }
        out.to_vec()
    }

    #[test]
    fn frames_cut_at_every_byte_come_back_whole_and_in_order() {
        let big = vec![0xab; 1400];
        let payloads: [&[u8]; 4] = [b"one", b"", &big, b"last"];
        let stream = framed(&payloads);
        for cut in 0..stream.len() {
            let mut d = Deframer::new(65_507);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                d.push(part);
                while let Some(dg) = d.next_datagram().expect("valid") {
                    got.push(dg.to_vec());
                }
            }
            assert_eq!(got, payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_frame_is_its_length_big_endian_then_the_payload() {
        assert_eq!(framed(&[b"hi"]), vec![0, 2, b'h', b'i']);
        assert_eq!(framed(&[&[7u8; 258]])[..3], [1, 2, 7]);
    }

    #[test]
    fn a_payload_past_the_length_field_is_refused() {
        let mut out = BytesMut::new();
        assert_eq!(put_frame(&mut out, &vec![0; 65_536]), Err(FrameError::TooLarge(65_536)));
        assert!(out.is_empty());
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_it_is_buffered() {
        let mut d = Deframer::new(100);
        d.push(&[0, 101]);
        assert_eq!(d.next_datagram(), Err(FrameError::OverLimit(101, 100)));
        let mut d = Deframer::new(100);
        d.push(&[0, 100]);
        assert_eq!(d.next_datagram(), Ok(None));
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_known_client_finds_its_association_and_a_new_one_opens_below_the_cap() {
        let now = Instant::now();
        let mut t = AssociationTable::default();
        assert_eq!(t.lookup(addr(1), 0, 2, now), Lookup::Open);
        let id = t.insert(addr(1), "first");
        assert_eq!(t.lookup(addr(1), 1, 2, now), Lookup::Known(&"first"));
        assert_eq!(t.lookup(addr(2), 1, 2, now), Lookup::Open);
        assert!(!t.remove(addr(1), id + 1), "another id leaves the entry");
        assert!(t.remove(addr(1), id));
        assert!(t.is_empty());
    }

    #[test]
    fn past_the_cap_new_clients_are_refused_and_warned_about_once_per_interval() {
        let start = Instant::now();
        let mut t = AssociationTable::default();
        t.insert(addr(1), ());
        assert_eq!(t.lookup(addr(1), 1, 1, start), Lookup::Known(&()), "known clients still pass");
        assert_eq!(t.lookup(addr(2), 1, 1, start), Lookup::Full { warn: Some(1) });
        for port in 3..10 {
            assert_eq!(
                t.lookup(addr(port), 1, 1, start + Duration::from_secs(1)),
                Lookup::Full { warn: None }
            );
        }
        assert_eq!(t.lookup(addr(10), 1, 1, start + CAP_WARN_EVERY), Lookup::Full { warn: Some(8) });
    }

    #[test]
    fn a_newer_association_for_the_same_client_survives_the_old_ones_removal() {
        let mut t = AssociationTable::default();
        let old = t.insert(addr(1), 1);
        let new = t.insert(addr(1), 2);
        assert!(!t.remove(addr(1), old));
        assert_eq!(t.len(), 1);
        assert!(t.remove(addr(1), new));
    }
}
