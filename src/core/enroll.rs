//! The join exchange's messages (`proxy mesh join`): one request, one reply, on a
//! bidirectional stream of a connection that negotiated ALPN `proxy-join/1`. Framed like
//! the scheduler protocol (`core::control::encode`/`decode`), with a small cap.

use bincode::{Decode, Encode};

/// Largest join frame body either side accepts: a request holds a key's certificate
/// request and a few names; a reply two certificates.
pub const MAX_JOIN_FRAME: usize = 16 * 1024;

/// A region label a joining node may give: short, and safe to show and log.
pub fn is_valid_region(region: &str) -> bool {
    (1..=63).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A machine asking to join.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct JoinRequest {
    /// The token's secret (the connection is already authenticated to the mesh CA).
    pub secret: [u8; 32],
    /// The node id it asks for.
    pub node_id: String,
    /// Its region label.
    pub region: String,
    /// A PKCS#10 certificate request (DER) signed with the key it made.
    pub csr: Vec<u8>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinRequest")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("csr_len", &self.csr.len())
            .finish_non_exhaustive()
    }
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum JoinReply {
    /// Enrolled: the node's certificate and the mesh CA, PEM.
    Accepted {
        /// The node's certificate.
        cert_pem: String,
        /// The mesh CA's certificate.
        ca_pem: String,
    },
    /// Refused, with a reason meant for the operator.
    Refused {
        /// Why, and what to do about it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::control::{decode, encode};

    #[test]
    fn join_messages_round_trip_and_the_secret_is_never_printed() {
        let request =
            JoinRequest { secret: [0xab; 32], node_id: "a".into(), region: "eu".into(), csr: vec![1, 2, 3] };
        let frame = encode(&request).expect("encode");
        let (back, used) = decode::<JoinRequest>(&frame, MAX_JOIN_FRAME).expect("decode").expect("complete");
        assert_eq!((back.clone(), used), (request, frame.len()));
        assert!(!format!("{back:?}").contains("171"), "no secret byte in Debug");
        let reply = JoinReply::Refused { reason: "no".into() };
        let frame = encode(&reply).expect("encode");
        assert_eq!(decode::<JoinReply>(&frame, MAX_JOIN_FRAME).expect("decode"), Some((reply, frame.len())));
    }

    #[test]
    fn an_oversized_request_is_refused_before_its_body_arrives() {
        let big = JoinRequest {
            secret: [0; 32],
            node_id: "a".into(),
            region: "r".into(),
            csr: vec![0; MAX_JOIN_FRAME],
        };
        let frame = encode(&big).expect("encode");
        assert!(decode::<JoinRequest>(&frame[..16], MAX_JOIN_FRAME).is_err());
    }

    #[test]
    fn a_small_request_cannot_make_the_decoder_allocate_megabytes() {
        let small = JoinRequest { secret: [0; 32], node_id: "a".into(), region: "r".into(), csr: vec![] };
        let valid = encode(&small).expect("encode");
        // The same body, but the certificate request's length claims 15 MiB.
        let mut body = valid[crate::core::control::FRAME_PREFIX_LEN..valid.len() - 1].to_vec();
        body.extend_from_slice(&[0xfc, 0x00, 0xf0, 0x00, 0x00, 1, 2, 3]);
        let mut frame = valid[..5].to_vec();
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        match decode::<JoinRequest>(&frame, MAX_JOIN_FRAME) {
            Err(crate::core::control::FrameError::Malformed { message, .. }) => {
                assert!(
                    message.to_lowercase().contains("limit"),
                    "refused by the cap, not by a short read: {message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
