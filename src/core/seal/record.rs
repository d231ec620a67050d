//! The record layer: every byte of a sealed flow after the first message travels in
//! records `len (u16, big endian) || AES-256-GCM(kind || data)`, nonces counting up from
//! a per-key start, so a record that is altered, dropped, repeated or moved fails to open.
//! A sealed stream ends only with a sealed `Fin` record: a stream that ends without one
//! was cut.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::SealError;

/// Most plaintext bytes in one record (the length field is a u16 over the sealed body).
pub const MAX_RECORD_DATA: usize = u16::MAX as usize - 1 - TAG_LEN;
/// The AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes a record adds to its data: length, kind and tag.
pub const RECORD_OVERHEAD: usize = RECORD_HEAD + TAG_LEN;
/// Bytes before a record's data: length and kind.
pub const RECORD_HEAD: usize = 2 + 1;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Flow bytes.
    Data = 0,
    /// The sender's direction ended cleanly; nothing may follow.
    Fin = 1,
    /// The origin's last record under the early key: the next is under the final key.
    EndOfEarly = 2,
}

/// One direction's key and next nonce.
pub struct DirectionKey {
    key: LessSafeKey,
    next: u64,
}

impl DirectionKey {
    /// A key whose first record uses nonce `first`.
    pub fn new(bytes: &[u8; 32], first: u64) -> Self {
        // 32 bytes is AES-256's key length, so this cannot fail.
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("AES-256 key length"));
        Self { key: LessSafeKey::new(unbound), next: first }
    }

    fn nonce(&mut self) -> Result<Nonce, SealError> {
        let n = self.next;
        // 2^64 records never happen; refuse rather than wrap.
        self.next = n.checked_add(1).ok_or(SealError::Malformed)?;
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Ok(Nonce::assume_unique_for_key(bytes))
    }

    /// Seals `buf` in place with associated data `ad`; returns the tag.
    fn seal_separate(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<ring::aead::Tag, SealError> {
        let nonce = self.nonce()?;
        self.key.seal_in_place_separate_tag(nonce, Aad::from(ad), buf).map_err(|_| SealError::Malformed)
    }

    /// Seals `plain` in place with associated data `ad` (the tag is appended).
    pub fn seal_in_place(&mut self, ad: &[u8], plain: &mut Vec<u8>) -> Result<(), SealError> {
        let nonce = self.nonce()?;
        self.key.seal_in_place_append_tag(nonce, Aad::from(ad), plain).map_err(|_| SealError::Malformed)
    }

    /// Opens `sealed` in place; returns the plaintext's length.
    pub fn open_in_place(&mut self, ad: &[u8], sealed: &mut [u8]) -> Result<usize, SealError> {
        let nonce = self.nonce()?;
        self.key.open_in_place(nonce, Aad::from(ad), sealed).map(|p| p.len()).map_err(|_| SealError::Forged)
    }
}

/// Seals one direction's bytes into records.
pub struct Sealer {
    key: DirectionKey,
    /// The key that replaces `key` after an `EndOfEarly` record (the origin's side), kept
    /// as bytes until used: an expanded AES key is half a kilobyte per idle flow.
    next: Option<[u8; 32]>,
}

impl Sealer {
    /// Seals under `key`.
    pub fn new(key: DirectionKey) -> Self {
        Self { key, next: None }
    }

    /// From the next record on, seal under `key` (from nonce 0); an `EndOfEarly` record
    /// under the old key goes first (see [`Self::seal`]).
    pub fn switch_to(&mut self, key: [u8; 32]) {
        self.next = Some(key);
    }

    /// Seals `data` as one or more records (each at most [`MAX_RECORD_DATA`]).
    pub fn seal(&mut self, data: &[u8]) -> Result<Bytes, SealError> {
        let records = data.len().div_ceil(MAX_RECORD_DATA).max(1);
        let mut out = BytesMut::with_capacity(data.len() + (records + 1) * RECORD_OVERHEAD);
        self.pending_switch(&mut out)?;
        for piece in data.chunks(MAX_RECORD_DATA) {
            self.record(&mut out, Kind::Data, piece)?;
        }
        Ok(out.freeze())
    }

    /// Seals, where it lies, the record whose data follows [`RECORD_HEAD`] reserved bytes
    /// in `record` (at most [`MAX_RECORD_DATA`] of it): fills the head in and appends the
    /// tag, so data read straight into the buffer is never copied. Returns the
    /// `EndOfEarly` record to send before it, when a key switch was due.
    pub fn seal_reserved(&mut self, record: &mut BytesMut) -> Result<Option<Bytes>, SealError> {
        let data = record.len().checked_sub(RECORD_HEAD).filter(|n| *n <= MAX_RECORD_DATA);
        let data = data.ok_or(SealError::Malformed)?;
        let mut before = None;
        if self.next.is_some() {
            let mut out = BytesMut::with_capacity(RECORD_OVERHEAD);
            self.pending_switch(&mut out)?;
            before = Some(out.freeze());
        }
        let len = u16::try_from(1 + data + TAG_LEN).map_err(|_| SealError::Malformed)?;
        record[..2].copy_from_slice(&len.to_be_bytes());
        record[2] = Kind::Data as u8;
        let tag = self.key.seal_separate(&[], &mut record[2..])?;
        record.extend_from_slice(tag.as_ref());
        Ok(before)
    }

    /// The record that ends this direction cleanly.
    pub fn fin(&mut self) -> Result<Bytes, SealError> {
        let mut out = BytesMut::with_capacity(2 * RECORD_OVERHEAD);
        self.pending_switch(&mut out)?;
        self.record(&mut out, Kind::Fin, &[])?;
        Ok(out.freeze())
    }

    fn pending_switch(&mut self, out: &mut BytesMut) -> Result<(), SealError> {
        if let Some(next) = self.next.take() {
            self.record(out, Kind::EndOfEarly, &[])?;
            self.key = DirectionKey::new(&next, 0);
        }
        Ok(())
    }

    /// Appends one record, sealed where it lies (one copy of the data, into `out`).
    fn record(&mut self, out: &mut BytesMut, kind: Kind, data: &[u8]) -> Result<(), SealError> {
        let len = u16::try_from(1 + data.len() + TAG_LEN).map_err(|_| SealError::Malformed)?;
        out.put_u16(len);
        let start = out.len();
        out.put_u8(kind as u8);
        out.put_slice(data);
        let tag = self.key.seal_separate(&[], &mut out[start..])?;
        out.put_slice(tag.as_ref());
        Ok(())
    }
}

/// Opens one direction's records as they arrive, in pieces of any size.
pub struct Opener {
    key: DirectionKey,
    /// The key that follows an `EndOfEarly` record (the exit's side), as bytes until used.
    next: Option<[u8; 32]>,
    buf: BytesMut,
    finished: bool,
}

impl Opener {
    /// Opens records sealed under `key`.
    pub fn new(key: DirectionKey) -> Self {
        Self { key, next: None, buf: BytesMut::new(), finished: false }
    }

    /// Opens records under `early` until an `EndOfEarly` record, then under `then` (from
    /// nonce 0).
    pub fn with_early(early: DirectionKey, then: [u8; 32]) -> Self {
        Self { next: Some(then), ..Self::new(early) }
    }

    /// Takes `bytes` off the stream and appends the data of every complete record to
    /// `out`. Anything after a `Fin` record is an error.
    pub fn open(&mut self, bytes: &[u8], out: &mut Vec<Bytes>) -> Result<(), SealError> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= 2 {
            if self.finished {
                return Err(SealError::Malformed);
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if len < 1 + TAG_LEN {
                return Err(SealError::Malformed);
            }
            if self.buf.len() < 2 + len {
                break;
            }
            self.buf.advance(2);
            let mut body = self.buf.split_to(len);
            let plain = self.key.open_in_place(&[], &mut body)?;
            body.truncate(plain);
            let kind = body[0];
            body.advance(1);
            match kind {
                k if k == Kind::Data as u8 => {
                    if !body.is_empty() {
                        out.push(body.freeze());
                    }
                }
                k if k == Kind::Fin as u8 && body.is_empty() => self.finished = true,
                k if k == Kind::EndOfEarly as u8 && body.is_empty() => {
                    self.key = DirectionKey::new(&self.next.take().ok_or(SealError::Malformed)?, 0);
                }
                _ => return Err(SealError::Malformed),
            }
        }
        Ok(())
    }

    /// Whether the sealed `Fin` arrived: the stream's end is then a clean one.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Checks the stream's end: clean only after a `Fin` record and with nothing left over.
    pub fn check_end(&self) -> Result<(), SealError> {
        if self.finished && self.buf.is_empty() { Ok(()) } else { Err(SealError::Truncated) }
    }

    /// Bytes held waiting for the rest of a record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        (Sealer::new(DirectionKey::new(&[7; 32], 1)), Opener::new(DirectionKey::new(&[7; 32], 1)))
    }

    fn open_all(opener: &mut Opener, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        // Fed in odd pieces, as QUIC delivers them.
        for piece in bytes.chunks(1000) {
            opener.open(piece, &mut out)?;
        }
        Ok(out.concat())
    }

    #[test]
    fn data_and_fin_round_trip_in_any_pieces() {
        let (mut s, mut o) = pair();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = s.seal(&data).unwrap().to_vec();
        wire.extend_from_slice(&s.fin().unwrap());
        assert_eq!(open_all(&mut o, &wire).unwrap(), data);
        assert!(o.check_end().is_ok());
    }

    #[test]
    fn a_record_sealed_in_place_opens_like_any_other() {
        let (mut s, mut o) = pair();
        let mut record = BytesMut::from(&[0u8; RECORD_HEAD][..]);
        record.extend_from_slice(b"read straight into the buffer");
        assert_eq!(s.seal_reserved(&mut record).unwrap(), None);
        let wire = [record.freeze(), s.seal(b", then more").unwrap(), s.fin().unwrap()].concat();
        assert_eq!(open_all(&mut o, &wire).unwrap(), b"read straight into the buffer, then more");
        assert!(o.check_end().is_ok());
        let mut too_long = BytesMut::zeroed(RECORD_HEAD + MAX_RECORD_DATA + 1);
        assert_eq!(s.seal_reserved(&mut too_long), Err(SealError::Malformed));
    }

    #[test]
    fn a_flipped_bit_fails() {
        let (mut s, mut o) = pair();
        let mut wire = s.seal(b"hello").unwrap().to_vec();
        wire[5] ^= 1;
        assert_eq!(open_all(&mut o, &wire), Err(SealError::Forged));
    }

    #[test]
    fn a_dropped_repeated_or_swapped_record_fails() {
        let (mut s, _) = pair();
        let a = s.seal(b"first").unwrap();
        let b = s.seal(b"second").unwrap();
        let c = s.seal(b"third").unwrap();
        for wire in [
            [a.clone(), c.clone()].concat(),
            [a.clone(), a.clone()].concat(),
            [b.clone(), a.clone()].concat(),
        ] {
            let (_, mut o) = pair();
            assert_eq!(open_all(&mut o, &wire), Err(SealError::Forged));
        }
        let (_, mut o) = pair();
        assert!(open_all(&mut o, &[a, b, c].concat()).is_ok());
    }

    #[test]
    fn an_end_without_fin_is_truncated() {
        let (mut s, mut o) = pair();
        let wire = s.seal(b"all of it").unwrap();
        open_all(&mut o, &wire[..wire.len() - 3]).unwrap();
        assert_eq!(o.check_end(), Err(SealError::Truncated));
        let (_, mut o) = pair();
        open_all(&mut o, &wire).unwrap();
        assert_eq!(o.check_end(), Err(SealError::Truncated));
    }

    #[test]
    fn bytes_after_fin_fail() {
        let (mut s, mut o) = pair();
        let mut wire = s.fin().unwrap().to_vec();
        wire.extend_from_slice(&s.seal(b"late").unwrap());
        assert!(open_all(&mut o, &wire).is_err());
    }

    #[test]
    fn the_early_key_switch_is_authenticated() {
        let early = || DirectionKey::new(&[1; 32], 1);
        let last = || [2; 32];
        let mut s = Sealer::new(early());
        let mut wire = s.seal(b"early").unwrap().to_vec();
        s.switch_to(last());
        wire.extend_from_slice(&s.seal(b"late").unwrap());
        wire.extend_from_slice(&s.fin().unwrap());
        let mut o = Opener::with_early(early(), last());
        assert_eq!(open_all(&mut o, &wire).unwrap(), b"earlylate");
        assert!(o.check_end().is_ok());
        // An opener that was not told of a switch refuses one.
        let mut o = Opener::new(early());
        assert!(open_all(&mut o, &wire).is_err());
    }
}
