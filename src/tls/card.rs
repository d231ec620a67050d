//! A node's seal card: its certificate, its static sealing key and a signature over the
//! key made with the certificate's key. Whoever holds a card can check, with the mesh CA
//! alone, that the sealing key belongs to the node the CA certified, so cards may travel
//! through any node (links pass them on; origins send theirs inside sealed flows) without
//! being trusted on the way.

use bincode::{Decode, Encode};
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::TlsIdentity;

/// What the signature covers, before the node id and the key.
const CONTEXT: &[u8] = b"proxy seal card v2\0";

/// A node's certified sealing key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Card {
    /// The node the card is for.
    pub node_id: String,
    /// Its certificate (DER), signed by the mesh CA.
    pub cert: Vec<u8>,
    /// Its static X25519 sealing key.
    pub seal_key: [u8; 32],
    /// The TLS signature scheme of `signature`.
    pub scheme: u16,
    /// The certificate key's signature over the context, node id and sealing key.
    pub signature: Vec<u8>,
}

/// Why a card was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The certificate does not chain to the mesh CA, or has expired.
    #[error("certificate not valid for the mesh: {0}")]
    Certificate(String),
    /// The certificate is revoked.
    #[error("certificate revoked")]
    Revoked,
    /// The certificate does not name exactly the card's node id.
    #[error("certificate does not name node `{0}`")]
    WrongNode(String),
    /// The signature over the sealing key does not verify.
    #[error("sealing key not signed by the certificate's key")]
    BadSignature,
    /// A card with a newer certificate for the node is known.
    #[error("a newer card for this node is known")]
    Older,
    /// This node's key cannot sign.
    #[error("cannot sign the card: {0}")]
    Signing(String),
}

fn signed_message(node_id: &str, seal_key: &[u8; 32]) -> Vec<u8> {
    [CONTEXT, node_id.as_bytes(), b"\0", seal_key].concat()
}

impl TlsIdentity {
    /// This node's card for `seal_key`.
    pub fn card(&self, node_id: &str, seal_key: [u8; 32]) -> Result<Card, CardError> {
        let cert = self.certificate().ok_or_else(|| CardError::Signing("no certificate".into()))?;
        let provider = rustls::crypto::ring::default_provider();
        let key = provider
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| CardError::Signing(e.to_string()))?;
        let schemes = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let signer =
            key.choose_scheme(&schemes).ok_or_else(|| CardError::Signing("no usable scheme".into()))?;
        let signature = signer
            .sign(&signed_message(node_id, &seal_key))
            .map_err(|e| CardError::Signing(e.to_string()))?;
        Ok(Card {
            node_id: node_id.to_string(),
            cert: cert.to_vec(),
            seal_key,
            scheme: u16::from(signer.scheme()),
            signature,
        })
    }

    /// Checks `card` against the mesh CA and this node's revocations.
    pub fn verify_card(&self, card: &Card) -> Result<(), CardError> {
        let der = CertificateDer::from(card.cert.as_slice());
        if self.revocations.refuses(&der) {
            return Err(CardError::Revoked);
        }
        let provider = rustls::crypto::ring::default_provider();
        let algorithms = provider.signature_verification_algorithms;
        let cert =
            webpki::EndEntityCert::try_from(&der).map_err(|e| CardError::Certificate(e.to_string()))?;
        cert.verify_for_usage(
            algorithms.all,
            &self.roots.roots,
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| CardError::Certificate(e.to_string()))?;
        if super::node_ids_in_cert(&der) != [card.node_id.clone()] {
            return Err(CardError::WrongNode(card.node_id.clone()));
        }
        let scheme = SignatureScheme::from(card.scheme);
        let algs = algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, algs)| *algs)
            .ok_or(CardError::BadSignature)?;
        let message = signed_message(&card.node_id, &card.seal_key);
        algs.iter()
            .find(|alg| cert.verify_signature(**alg, &message, &card.signature).is_ok())
            .map(|_| ())
            .ok_or(CardError::BadSignature)
    }
}

/// bincode for cards: the same settings as the flow header, with a hard cap.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_limit::<16_384>()
}

/// Encodes a card.
pub fn encode(card: &Card) -> Vec<u8> {
    bincode::encode_to_vec(card, config()).unwrap_or_default()
}

/// Decodes a card (exactly `bytes`, nothing after it).
pub fn decode(bytes: &[u8]) -> Option<Card> {
    match bincode::decode_from_slice::<Card, _>(bytes, config()) {
        Ok((card, used)) if used == bytes.len() => Some(card),
        _ => None,
    }
}

/// Largest encoded batch of cards one stream carries.
pub const MAX_BATCH_BYTES: usize = 1 << 22;
/// Most cards one batch carries (a link sends more as several batches).
pub const MAX_BATCH_CARDS: usize = 256;

/// Encodes a batch of cards (what a link carries): at most [`MAX_BATCH_CARDS`].
pub fn encode_batch(cards: &[Card]) -> Vec<u8> {
    let cards = &cards[..cards.len().min(MAX_BATCH_CARDS)];
    bincode::encode_to_vec(
        cards,
        bincode::config::standard().with_big_endian().with_limit::<MAX_BATCH_BYTES>(),
    )
    .unwrap_or_default()
}

/// Decodes a batch of cards (at most [`MAX_BATCH_CARDS`]).
pub fn decode_batch(bytes: &[u8]) -> Option<Vec<Card>> {
    let config = bincode::config::standard().with_big_endian().with_limit::<MAX_BATCH_BYTES>();
    match bincode::decode_from_slice::<Vec<Card>, _>(bytes, config) {
        Ok((cards, used)) if used == bytes.len() && cards.len() <= MAX_BATCH_CARDS => Some(cards),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::MeshCa;

    fn identity(ca: &MeshCa, id: &str) -> TlsIdentity {
        let issued = ca.issue_node_cert(id, 30).unwrap();
        TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem, &ca.cert_pem()).unwrap()
    }

    #[test]
    fn a_card_verifies_and_any_change_breaks_it() {
        let ca = MeshCa::generate("test mesh").unwrap();
        let a = identity(&ca, "a");
        let b = identity(&ca, "b");
        let card = a.card("a", [5; 32]).unwrap();
        assert_eq!(b.verify_card(&card), Ok(()));
        assert_eq!(decode(&encode(&card)), Some(card.clone()));

        let mut other_key = card.clone();
        other_key.seal_key[0] ^= 1;
        assert_eq!(b.verify_card(&other_key), Err(CardError::BadSignature));
        let mut other_node = card.clone();
        other_node.node_id = "b".into();
        assert_eq!(b.verify_card(&other_node), Err(CardError::WrongNode("b".into())));
        // b's certificate with a's signature: b cannot pass a's key as its own.
        let mut borrowed = b.card("b", [5; 32]).unwrap();
        borrowed.signature = card.signature.clone();
        assert_eq!(b.verify_card(&borrowed), Err(CardError::BadSignature));
    }

    #[test]
    fn a_card_from_another_ca_is_refused() {
        let (ca, foreign) = (MeshCa::generate("test mesh").unwrap(), MeshCa::generate("test mesh").unwrap());
        let card = identity(&foreign, "a").card("a", [5; 32]).unwrap();
        assert!(matches!(identity(&ca, "b").verify_card(&card), Err(CardError::Certificate(_))));
    }
}
