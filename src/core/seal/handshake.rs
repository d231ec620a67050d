//! The key agreement that opens a sealed flow (see `docs/wire.md`, sealed flows).
//!
//! Notation as in Noise: `e`/`s` are the origin's ephemeral and static keys, `re`/`rs`
//! the exit's. A chaining key `ck` absorbs every Diffie-Hellman result through HKDF, and
//! a transcript hash `h` over everything sent is the associated data of each handshake
//! ciphertext, so nothing in either message can be changed or moved.
//!
//! First message (origin to exit), `e || len(c_card) u16 || c_card || c_inner`:
//! - `es`: `c_card` seals the origin's card (its certificate and static key): only the
//!   exit can read who the origin is;
//! - `ss`: `c_inner` seals the flow's inner header under a key that also needs the
//!   origin's static secret: opening it authenticates the origin;
//! - the origin's early records (its first bytes) use a key from the same state.
//!
//! Reply (exit to origin), `re || c_reply`: `ee` and `se` make the final keys, one per
//! direction, that only these two ephemeral keys could make (forward secrecy); the reply
//! is the first record under the exit's final key, and opening it proves the exit holds
//! its static secret (it took part in `es`).

use super::record::{DirectionKey, Opener, Sealer};
use super::{Len, SealError, StaticKeys};

/// Names the protocol in the first hash, so keys from another protocol never match.
const PROTOCOL: &[u8] = b"proxy-seal-v2 X25519 AES256GCM SHA256";
/// Nonce of a handshake ciphertext: each handshake key seals exactly one message.
const HANDSHAKE_NONCE: u64 = 0;

/// The running state both sides keep while the handshake goes on.
#[derive(Clone)]
struct Transcript {
    ck: [u8; 32],
    h: [u8; 32],
}

impl Transcript {
    fn start(flow_id: u64, exit_static: &[u8; 32]) -> Self {
        let ck = sha256(&[PROTOCOL]);
        let h = sha256(&[&ck, &flow_id.to_be_bytes(), exit_static]);
        Self { ck, h }
    }

    fn absorb(&mut self, bytes: &[u8]) {
        self.h = sha256(&[&self.h, bytes]);
    }

    /// Mixes a Diffie-Hellman result into the chaining key; returns a one-message key.
    fn mix(&mut self, dh: &[u8; 32]) -> [u8; 32] {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &self.ck).extract(dh);
        let mut out = [0u8; 64];
        // 64 bytes is within HKDF-SHA256's limit, so these cannot fail.
        if let Ok(okm) = prk.expand(&[b"mix"], Len(64)) {
            let _ = okm.fill(&mut out);
        }
        self.ck.copy_from_slice(&out[..32]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&out[32..]);
        key
    }

    /// A key for `label` from the current state.
    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &self.ck).extract(&self.h);
        let mut key = [0u8; 32];
        if let Ok(okm) = prk.expand(&[label], Len(32)) {
            let _ = okm.fill(&mut key);
        }
        key
    }

    fn seal(&mut self, key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = plain.to_vec();
        DirectionKey::new(key, HANDSHAKE_NONCE).seal_in_place(&self.h, &mut buf)?;
        self.absorb(&buf);
        Ok(buf)
    }

    fn open(&mut self, key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = sealed.to_vec();
        let len = DirectionKey::new(key, HANDSHAKE_NONCE).open_in_place(&self.h, &mut buf)?;
        self.absorb(sealed);
        buf.truncate(len);
        Ok(buf)
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

const EARLY: &[u8] = b"early origin to exit";
const FINAL_O2X: &[u8] = b"final origin to exit";
const FINAL_X2O: &[u8] = b"final exit to origin";

/// The origin's side after sending the first message, waiting for the reply.
pub struct Initiator {
    t: Transcript,
    ephemeral: StaticKeys,
    origin: StaticKeys,
}

/// What the origin sends first, and the state to finish with.
pub struct Initiated {
    /// The first message, for the flow header.
    pub message: Vec<u8>,
    /// Seals the origin's bytes until the reply comes (then switched to the final key).
    pub early: Sealer,
    /// Finishes the handshake with the exit's reply.
    pub initiator: Initiator,
}

/// Starts a sealed flow to the exit whose static public key is `exit_static`.
pub fn initiate(
    origin: &StaticKeys,
    exit_static: &[u8; 32],
    flow_id: u64,
    card: &[u8],
    inner: &[u8],
) -> Result<Initiated, SealError> {
    let ephemeral = StaticKeys::random();
    let mut t = Transcript::start(flow_id, exit_static);
    let e = ephemeral.public();
    t.absorb(&e);
    let k_card = t.mix(&ephemeral.agree(exit_static)?);
    let c_card = t.seal(&k_card, card)?;
    let k_inner = t.mix(&origin.agree_static(exit_static)?);
    let c_inner = t.seal(&k_inner, inner)?;
    let card_len = u16::try_from(c_card.len()).map_err(|_| SealError::Malformed)?;
    let mut message = Vec::with_capacity(32 + 2 + c_card.len() + c_inner.len());
    message.extend_from_slice(&e);
    message.extend_from_slice(&card_len.to_be_bytes());
    message.extend_from_slice(&c_card);
    message.extend_from_slice(&c_inner);
    let early = Sealer::new(DirectionKey::new(&t.derive(EARLY), 0));
    Ok(Initiated { message, early, initiator: Initiator { t, ephemeral, origin: origin.clone() } })
}

/// What the origin has once the exit's reply opened.
pub struct Finished {
    /// The reply's plaintext.
    pub reply: Vec<u8>,
    /// The final key for the origin's direction (hand to [`Sealer::switch_to`]).
    pub origin_to_exit: [u8; 32],
    /// Opens the exit's records after the reply.
    pub opener: Opener,
}

impl Initiator {
    /// Opens the exit's reply `message` (`re || c_reply`).
    pub fn finish(mut self, message: &[u8]) -> Result<Finished, SealError> {
        if message.len() < 32 {
            return Err(SealError::Malformed);
        }
        let (re, c_reply) = message.split_at(32);
        let re: [u8; 32] = re.try_into().map_err(|_| SealError::Malformed)?;
        self.t.absorb(&re);
        self.t.mix(&self.ephemeral.agree(&re)?);
        self.t.mix(&self.origin.agree(&re)?);
        let (o2x, x2o) = (self.t.derive(FINAL_O2X), self.t.derive(FINAL_X2O));
        let mut reply = c_reply.to_vec();
        // The reply is record 0 of the exit's direction; its associated data is the
        // transcript, which binds it to both messages.
        let len = DirectionKey::new(&x2o, 0).open_in_place(&self.t.h, &mut reply)?;
        reply.truncate(len);
        Ok(Finished { reply, origin_to_exit: o2x, opener: Opener::new(DirectionKey::new(&x2o, 1)) })
    }
}

/// The exit's side after reading who the origin claims to be, before believing it.
pub struct Received {
    /// The origin's card as sealed in the message: check it, then call [`Self::authenticate`].
    pub card: Vec<u8>,
    /// The origin's ephemeral key: the exit remembers it to refuse a replayed message.
    pub ephemeral: [u8; 32],
    t: Transcript,
    c_inner: Vec<u8>,
    exit: StaticKeys,
}

/// Opens a first message addressed to `exit`, as far as the origin's card.
pub fn receive(exit: &StaticKeys, flow_id: u64, message: &[u8]) -> Result<Received, SealError> {
    if message.len() < 34 {
        return Err(SealError::Malformed);
    }
    let (e, rest) = message.split_at(32);
    let e: [u8; 32] = e.try_into().map_err(|_| SealError::Malformed)?;
    let card_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() < card_len {
        return Err(SealError::Malformed);
    }
    let (c_card, c_inner) = rest.split_at(card_len);
    let mut t = Transcript::start(flow_id, &exit.public());
    t.absorb(&e);
    let k_card = t.mix(&exit.agree(&e)?);
    let card = t.open(&k_card, c_card)?;
    Ok(Received { card, ephemeral: e, t, c_inner: c_inner.to_vec(), exit: exit.clone() })
}

/// The exit's side once the origin is authenticated, ready to reply.
pub struct Responder {
    t: Transcript,
    origin_static: [u8; 32],
    ephemeral: [u8; 32],
}

impl Received {
    /// Opens the inner header with the static key from the (checked) card: success proves
    /// the sender holds that key's secret.
    pub fn authenticate(mut self, origin_static: &[u8; 32]) -> Result<(Vec<u8>, Responder), SealError> {
        let k_inner = self.t.mix(&self.exit.agree_static(origin_static)?);
        let inner = self.t.open(&k_inner, &self.c_inner)?;
        let responder = Responder { t: self.t, origin_static: *origin_static, ephemeral: self.ephemeral };
        Ok((inner, responder))
    }
}

/// What the exit sends back, and its keys for the rest of the flow.
pub struct Replied {
    /// The reply message (`re || c_reply`).
    pub message: Vec<u8>,
    /// Seals the exit's records after the reply.
    pub sealer: Sealer,
    /// Opens the origin's records: early ones, then final ones after the switch.
    pub opener: Opener,
}

impl Responder {
    /// Seals `reply` (the reply's plaintext) and makes the final keys.
    pub fn reply(self, reply: &[u8]) -> Result<Replied, SealError> {
        let (pending, sealer, opener) = self.accept()?;
        Ok(Replied { message: pending.seal(reply)?, sealer, opener })
    }

    /// Makes the final keys before the reply is known (a proxy-chain node opens the origin's
    /// early bytes at once and replies when the next leg has answered): the reply to seal
    /// later, the sealer for the exit's records after it, and the opener for the origin's.
    pub fn accept(mut self) -> Result<(PendingReply, Sealer, Opener), SealError> {
        let early = self.t.derive(EARLY);
        let ours = StaticKeys::random();
        let re = ours.public();
        self.t.absorb(&re);
        self.t.mix(&ours.agree(&self.ephemeral)?);
        self.t.mix(&ours.agree(&self.origin_static)?);
        let (o2x, x2o) = (self.t.derive(FINAL_O2X), self.t.derive(FINAL_X2O));
        Ok((
            PendingReply { re, h: self.t.h, key: x2o },
            Sealer::new(DirectionKey::new(&x2o, 1)),
            Opener::with_early(DirectionKey::new(&early, 0), o2x),
        ))
    }
}

/// The exit's reply, still to be sealed: record 0 of the exit's direction.
pub struct PendingReply {
    re: [u8; 32],
    h: [u8; 32],
    key: [u8; 32],
}

impl PendingReply {
    /// The reply message (`re || c_reply`) for plaintext `reply`.
    pub fn seal(self, reply: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut sealed = reply.to_vec();
        DirectionKey::new(&self.key, 0).seal_in_place(&self.h, &mut sealed)?;
        let mut message = Vec::with_capacity(32 + sealed.len());
        message.extend_from_slice(&self.re);
        message.extend_from_slice(&sealed);
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_all(opener: &mut Opener, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        opener.open(bytes, &mut out)?;
        Ok(out.concat())
    }

    #[test]
    fn a_flow_opens_and_carries_bytes_both_ways_with_early_data() {
        let (origin, exit) = (StaticKeys::random(), StaticKeys::random());
        let Initiated { message, mut early, initiator } =
            initiate(&origin, &exit.public(), 42, b"card", b"inner").unwrap();
        let early_bytes = early.seal(b"GET / HTTP/1.1\r\n").unwrap();

        let received = receive(&exit, 42, &message).unwrap();
        assert_eq!(received.card, b"card");
        let (inner, responder) = received.authenticate(&origin.public()).unwrap();
        assert_eq!(inner, b"inner");
        let Replied { message: reply, sealer: mut exit_sealer, opener: mut exit_opener } =
            responder.reply(b"opened").unwrap();
        assert_eq!(open_all(&mut exit_opener, &early_bytes).unwrap(), b"GET / HTTP/1.1\r\n");

        let Finished { reply: plain, origin_to_exit, opener: mut origin_opener } =
            initiator.finish(&reply).unwrap();
        assert_eq!(plain, b"opened");
        early.switch_to(origin_to_exit);
        let late = [early.seal(b"more").unwrap(), early.fin().unwrap()].concat();
        assert_eq!(open_all(&mut exit_opener, &late).unwrap(), b"more");
        assert!(exit_opener.check_end().is_ok());

        let back = [exit_sealer.seal(b"200 OK").unwrap(), exit_sealer.fin().unwrap()].concat();
        assert_eq!(open_all(&mut origin_opener, &back).unwrap(), b"200 OK");
        assert!(origin_opener.check_end().is_ok());
    }

    #[test]
    fn only_the_exit_reads_the_first_message() {
        let (origin, exit, other) = (StaticKeys::random(), StaticKeys::random(), StaticKeys::random());
        let m = initiate(&origin, &exit.public(), 1, b"card", b"inner").unwrap().message;
        assert!(receive(&other, 1, &m).is_err());
        // The flow id is bound too: a relay cannot move the message to another flow.
        assert!(receive(&exit, 2, &m).is_err());
    }

    #[test]
    fn a_card_that_names_another_key_does_not_authenticate() {
        let (origin, exit, victim) = (StaticKeys::random(), StaticKeys::random(), StaticKeys::random());
        let m = initiate(&origin, &exit.public(), 1, b"victim's card", b"inner").unwrap().message;
        let received = receive(&exit, 1, &m).unwrap();
        assert!(received.authenticate(&victim.public()).is_err());
    }

    #[test]
    fn any_flipped_bit_in_either_message_is_refused() {
        let (origin, exit) = (StaticKeys::random(), StaticKeys::random());
        let Initiated { message, initiator, .. } =
            initiate(&origin, &exit.public(), 9, b"card", b"inner").unwrap();
        for i in 0..message.len() {
            let mut m = message.clone();
            m[i] ^= 0x10;
            let ok = receive(&exit, 9, &m).and_then(|r| r.authenticate(&origin.public()));
            assert!(ok.is_err(), "flip at byte {i} was accepted");
        }
        let (_, responder) = receive(&exit, 9, &message).unwrap().authenticate(&origin.public()).unwrap();
        let mut reply = responder.reply(b"ok").unwrap().message;
        reply[40] ^= 1;
        assert!(initiator.finish(&reply).is_err());
    }

    #[test]
    fn a_reply_from_anyone_but_the_exit_is_refused() {
        let (origin, exit, relay) = (StaticKeys::random(), StaticKeys::random(), StaticKeys::random());
        let Initiated { message, initiator, .. } = initiate(&origin, &exit.public(), 3, b"c", b"i").unwrap();
        // The relay does not have the exit's secret: it can only make up its own keys.
        let fake = Responder {
            t: Transcript::start(3, &exit.public()),
            origin_static: origin.public(),
            ephemeral: message[..32].try_into().unwrap(),
        };
        let forged = fake.reply(b"opened").unwrap().message;
        assert!(initiator.finish(&forged).is_err());
        let _ = relay;
    }
}
