//! End-to-end sealing of a flow between its origin and its exit (wire version 2): a
//! one-message key agreement in the style of Noise IK, then authenticated records both
//! ways. Relays forward the sealed bytes without the keys.
//!
//! Pure: no I/O. The node supplies the keys (its static X25519 key, derived from its TLS
//! key), checks the origin's card (its certificate) between the two steps of opening the
//! first message, and moves the bytes.
//!
//! - [`handshake`]: the first message (origin to exit) and the reply (exit to origin);
//! - [`record`]: the record layer that carries every byte after them;
//! - [`replay`]: the exit's memory of first messages it has seen.
//!
//! Why not a Noise library: Noise IK lets the origin send data only inside its first
//! message, and the first application bytes often arrive after it left (the header goes
//! out as soon as the connection is accepted). This protocol keeps sending them, under a
//! key that already authenticates both static keys, until the exit's reply brings the
//! forward-secret keys, like TLS 1.3 early data. The primitives are ring's (HKDF-SHA256,
//! AES-256-GCM) and x25519-dalek's (ring has no static X25519).

pub mod handshake;
pub mod record;
pub mod replay;

/// Why sealed bytes were rejected. Deliberately without detail: the bytes were altered,
/// replayed, cut or sealed under other keys, and which of these is not worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Authentication failed: altered, reordered, dropped, replayed or foreign bytes.
    #[error("sealed bytes failed authentication")]
    Forged,
    /// Malformed framing (a length out of range, a message too short).
    #[error("malformed sealed message")]
    Malformed,
    /// The stream ended without the sealed end-of-stream record: truncated.
    #[error("sealed stream cut short")]
    Truncated,
}

/// A node's static key pair for sealing: X25519, derived from its TLS private key so it
/// stays the same across restarts without being stored.
#[derive(Clone)]
pub struct StaticKeys {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
    /// Agreements with other static keys: the same for every flow between two nodes, and
    /// an X25519 agreement costs about 40 µs, a tenth of a new flow's sealing work.
    with_static: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], [u8; 32]>>>,
}

/// Most static agreements kept (peers' keys); the memory is cleared when full.
const STATIC_AGREEMENTS: usize = 4096;

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").field("public", &self.public).finish_non_exhaustive()
    }
}

impl StaticKeys {
    /// Derives the key pair from secret `seed` bytes (the node's private key).
    pub fn derive(seed: &[u8]) -> Self {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"proxy seal static key v2");
        let mut bytes = [0u8; 32];
        let prk = salt.extract(seed);
        // Expanding 32 bytes of SHA-256 output cannot fail.
        if let Ok(okm) = prk.expand(&[b"x25519"], Len(32)) {
            let _ = okm.fill(&mut bytes);
        }
        Self::from_secret(bytes)
    }

    /// A fresh random key pair (ephemeral keys, tests).
    pub fn random() -> Self {
        Self::from_secret(rand::random())
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, public, with_static: Default::default() }
    }

    /// The public half.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// X25519 with another node's static key `peer`, remembered.
    fn agree_static(&self, peer: &[u8; 32]) -> Result<[u8; 32], SealError> {
        let mut known = self.with_static.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = known.get(peer) {
            return Ok(*shared);
        }
        let shared = self.agree(peer)?;
        if known.len() >= STATIC_AGREEMENTS {
            known.clear();
        }
        known.insert(*peer, shared);
        Ok(shared)
    }

    /// X25519 with `peer`'s public key. An all-zero result (a low-order point, which only
    /// a forger sends) is refused.
    fn agree(&self, peer: &[u8; 32]) -> Result<[u8; 32], SealError> {
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(SealError::Forged);
        }
        Ok(shared.to_bytes())
    }
}

/// An HKDF output length, for ring.
struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}
