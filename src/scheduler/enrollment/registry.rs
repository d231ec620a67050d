//! The mesh's membership, pure: join tokens (hashed), the nodes enrolled or seen with
//! their certificates, the nodes removed, and the certificates revoked with them. The
//! store keeps it on disk; the scheduler and the `mesh` commands change it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::join_token::{JoinRefusal, JoinToken, TokenStore, hex, unhex};
use crate::tls::RevokedSet;

/// How long an expired token is remembered, seconds.
const EXPIRED_TOKENS_KEPT_SECS: u64 = 86_400;
/// Certificates kept per member, the latest to expire: a removal refuses all of a node's
/// earlier certificates by date (`issued_before`), so older ones need no record, and a
/// member that renews often cannot grow the registry.
pub const MAX_CERTS_PER_MEMBER: usize = 8;

/// One member of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Region it joined with (or registered with, for a node that came with a
    /// certificate made by `mesh init --nodes`).
    pub region: String,
    /// When it joined or was first seen, Unix seconds.
    pub since_unix: u64,
    /// Its certificates not yet expired: SHA-256 (hex) to not-after (Unix seconds).
    #[serde(default)]
    pub certs: BTreeMap<String, i64>,
    /// The groups its certificates name (from its join token), kept for renewals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// When it last renewed its certificate, Unix seconds (renewals are spaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewed_unix: Option<u64>,
    /// The join that enrolled it (SHA-256, hex, of the token's secret and the request's
    /// CSR): the same request sent again (its answer was lost with a scheduler) gets a
    /// certificate again instead of "already in the mesh".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_by: Option<String>,
}

/// Why a join was refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The token was refused.
    #[error("{0}")]
    Token(#[from] JoinRefusal),
    /// The id was removed, and the token is not bound to it.
    #[error(
        "node id `{0}` was removed from the mesh: enrolling it again needs a token made for it (`proxy mesh token create --node-id {0}`)"
    )]
    Removed(String),
    /// The id is taken by a member.
    #[error(
        "node id `{0}` is already in the mesh: choose another id, or remove it first with `proxy mesh remove {0}`"
    )]
    Taken(String),
}

/// Everything the mesh remembers about its members.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Join tokens, by hash of their secret.
    #[serde(default)]
    pub tokens: TokenStore,
    /// Members by node id.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// Removed node ids and when (Unix seconds); refused until they join again.
    #[serde(default)]
    pub removed: BTreeMap<String, u64>,
    /// Per node id ever removed, the last removal time (Unix seconds): certificates for
    /// the id that start before it stay refused after the id joins again, including those
    /// made by hand that the registry never saw.
    #[serde(default)]
    pub issued_before: BTreeMap<String, i64>,
    /// Revoked certificates: SHA-256 (hex) to not-after, kept until they would have
    /// expired anyway.
    #[serde(default)]
    pub revoked_certs: BTreeMap<String, i64>,
    /// Pins made at run time (the console), by `node/route`: shared by every scheduler
    /// of the mesh and kept across restarts. The config's `pins` stay in the config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, StoredPin>,
}

/// A pin made at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPin {
    /// The node whose route is pinned.
    pub node: String,
    /// The route.
    pub route: String,
    /// Its relays (empty: direct).
    pub relays: Vec<String>,
}

impl StoredPin {
    /// Its key in [`Registry::pins`] (node ids hold no `/`, so the first one splits).
    pub fn key(node: &str, route: &str) -> String {
        format!("{node}/{route}")
    }
}

impl Registry {
    /// Takes one use of `token` for `node_id`, unless the id is a member's or the token
    /// is refused. A refused id does not use the token up.
    /// A removed id may join again (its earlier certificates stay refused), but only with a
    /// token made for that id: whoever holds a general token must not take over a removed
    /// node's place in other nodes' configs (`exit: X`, static paths, pins).
    pub fn admit(&mut self, token: &JoinToken, node_id: &str, now_unix: u64) -> Result<(), JoinError> {
        self.tokens.check(token, node_id, now_unix)?;
        if self.members.contains_key(node_id) {
            return Err(JoinError::Taken(node_id.to_string()));
        }
        if self.removed.contains_key(node_id) && !self.tokens.is_bound_to(token, node_id) {
            return Err(JoinError::Removed(node_id.to_string()));
        }
        self.tokens.redeem(token, node_id, now_unix)?;
        self.removed.remove(node_id);
        Ok(())
    }

    /// Whether `join` (see [`Member::joined_by`]) is the request that enrolled `node_id`,
    /// still a member in good standing: a retry, answered without using the token again.
    pub fn is_repeated_join(&self, node_id: &str, join: &str) -> bool {
        !self.removed.contains_key(node_id)
            && self.members.get(node_id).is_some_and(|m| m.joined_by.as_deref() == Some(join))
    }

    /// The earliest a new certificate for `node_id` may start, so that it is not caught
    /// by the id's last removal (Unix seconds).
    pub fn not_before_floor(&self, node_id: &str) -> Option<i64> {
        self.issued_before.get(node_id).map(|t| t + 1)
    }

    /// Whether `node_id` may renew the certificate `fingerprint` it holds: a member, not
    /// removed, with a certificate not revoked.
    pub fn may_renew(&self, node_id: &str, fingerprint: &[u8; 32]) -> Result<(), String> {
        if self.removed.contains_key(node_id) || self.revoked_certs.contains_key(&hex(fingerprint)) {
            return Err(format!("`{node_id}` was removed from the mesh"));
        }
        if !self.members.contains_key(node_id) {
            return Err(format!("`{node_id}` is not a member of the mesh"));
        }
        Ok(())
    }

    /// Records a certificate issued to or presented by `node_id`, a member from now on
    /// (a removed id is left removed: only a join brings it back).
    pub fn record_cert(
        &mut self,
        node_id: &str,
        region: &str,
        fingerprint: [u8; 32],
        not_after: i64,
        now_unix: u64,
    ) {
        if self.removed.contains_key(node_id) {
            return;
        }
        let member = self.members.entry(node_id.to_string()).or_insert_with(|| Member {
            region: region.to_string(),
            since_unix: now_unix,
            certs: BTreeMap::new(),
            groups: Vec::new(),
            last_renewed_unix: None,
            joined_by: None,
        });
        member.certs.insert(hex(&fingerprint), not_after);
        while member.certs.len() > MAX_CERTS_PER_MEMBER {
            let Some(first) = member.certs.iter().min_by_key(|(_, t)| **t).map(|(fp, _)| fp.clone()) else {
                break;
            };
            member.certs.remove(&first);
        }
    }

    /// Whether `node_id` is a member that already has the certificate `fingerprint`.
    pub fn knows_cert(&self, node_id: &str, fingerprint: &[u8; 32]) -> bool {
        self.members.get(node_id).is_some_and(|m| m.certs.contains_key(&hex(fingerprint)))
    }

    /// Removes `node_id`: the id is refused, and so is every certificate it had, known
    /// to the registry or not. Returns the member, or `None` when the registry had no
    /// member by that id (the id is refused all the same).
    ///
    /// The certificates are refused by date (`issued_before`), one entry per id, not by
    /// listing their fingerprints: the revocation list every node is sent then grows with
    /// removals, not with how often the removed nodes renewed.
    pub fn remove(&mut self, node_id: &str, now_unix: u64) -> Option<Member> {
        let member = self.members.remove(node_id);
        // Its routes' pins go with it: the id may be enrolled again for another machine.
        self.pins.retain(|_, p| p.node != node_id);
        self.removed.insert(node_id.to_string(), now_unix);
        self.issued_before.insert(node_id.to_string(), i64::try_from(now_unix).unwrap_or(i64::MAX));
        member
    }

    /// Notes that `node_id` renewed at `now_unix`.
    pub fn renewed(&mut self, node_id: &str, now_unix: u64) {
        if let Some(m) = self.members.get_mut(node_id) {
            m.last_renewed_unix = Some(now_unix);
        }
    }

    /// Forgets expired tokens and certificates (an expired certificate is refused by its
    /// date already).
    pub fn purge(&mut self, now_unix: u64) {
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        // Expired tokens are kept a day, so using one says "expired", not "unknown".
        self.tokens.purge(now_unix.saturating_sub(EXPIRED_TOKENS_KEPT_SECS));
        self.revoked_certs.retain(|_, not_after| *not_after >= now);
        for m in self.members.values_mut() {
            m.certs.retain(|_, not_after| *not_after >= now);
        }
    }

    /// What the mesh refuses.
    pub fn revoked(&self) -> RevokedSet {
        RevokedSet {
            node_ids: self.removed.keys().cloned().collect(),
            certs: self.revoked_certs.keys().filter_map(|fp| unhex(fp).ok()).collect(),
            issued_before: self.issued_before.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::join_token::sha256;

    fn token(seed: u8) -> JoinToken {
        JoinToken { secret: [seed; 32], ca_fingerprint: sha256(b"ca") }
    }

    #[test]
    fn a_member_that_renews_often_keeps_a_bounded_record_and_revocation_list() {
        let mut r = Registry::default();
        // 130,000 renewals, as one a minute for 90 days would make.
        for i in 0..130_000u32 {
            let mut fp = [0u8; 32];
            fp[..4].copy_from_slice(&i.to_be_bytes());
            r.record_cert("a", "eu", fp, 1_000_000 + i64::from(i), u64::from(i));
        }
        let certs = &r.members["a"].certs;
        assert_eq!(certs.len(), MAX_CERTS_PER_MEMBER);
        assert!(
            certs.values().all(|t| *t >= 1_000_000 + 130_000 - MAX_CERTS_PER_MEMBER as i64),
            "the latest kept"
        );
        r.remove("a", 200_000);
        let list = r.revoked().to_list();
        assert!(list.cert_fingerprints.is_empty());
        let frame =
            crate::core::control::encode(&crate::core::control::ToNode::Revocations(list)).expect("encode");
        assert!(frame.len() < 100, "one removal, {} bytes", frame.len());
    }

    #[test]
    fn a_member_id_is_refused_without_using_the_token_up() {
        let mut r = Registry::default();
        r.tokens.add(&token(1), None, 3600, 1, 0);
        r.record_cert("a", "eu", [1; 32], 1000, 0);
        assert_eq!(r.admit(&token(1), "a", 10), Err(JoinError::Taken("a".into())));
        r.tokens.add(&token(2), Some("p".into()), 3600, 1, 0);
        assert_eq!(
            r.admit(&token(2), "a", 10),
            Err(JoinError::Token(JoinRefusal::WrongNode("p".into()))),
            "the token's own refusal comes first"
        );
        assert_eq!(r.admit(&token(1), "b", 10), Ok(()), "the token still has its use");
        assert_eq!(r.admit(&token(1), "c", 10), Err(JoinError::Token(JoinRefusal::UsedUp)));
    }

    #[test]
    fn removing_a_member_revokes_its_id_and_certificates_until_it_joins_again() {
        let mut r = Registry::default();
        r.record_cert("a", "eu", [1; 32], 1000, 0);
        r.record_cert("a", "eu", [2; 32], 2000, 0);
        let pin = StoredPin { node: "a".into(), route: "web".into(), relays: vec![] };
        r.pins.insert(StoredPin::key("a", "web"), pin.clone());
        r.pins.insert(StoredPin::key("b", "web"), StoredPin { node: "b".into(), ..pin });
        assert!(r.remove("x", 5).is_none(), "an id the registry never saw is refused too");
        assert!(r.remove("a", 5).is_some());
        assert_eq!(r.pins.keys().collect::<Vec<_>>(), ["b/web"], "its pins go with it");
        let revoked = r.revoked();
        assert!(revoked.node_ids.contains("a") && revoked.node_ids.contains("x"));
        assert!(revoked.certs.is_empty(), "refused by date, not listed one by one");
        assert_eq!(revoked.issued_before.get("a"), Some(&5));
        assert_eq!(r.may_renew("a", &[2; 32]), Err("`a` was removed from the mesh".into()));
        r.record_cert("a", "eu", [9; 32], 3000, 6);
        assert!(!r.members.contains_key("a"), "a removed node's session cannot make it a member again");
        r.tokens.add(&token(5), None, 60, 1, 10);
        assert_eq!(
            r.admit(&token(5), "a", 11),
            Err(JoinError::Removed("a".into())),
            "not with a general token"
        );
        assert_eq!(r.admit(&token(5), "e", 11), Ok(()), "which kept its use");
        r.tokens.add(&token(3), Some("a".into()), 60, 1, 10);
        assert_eq!(r.admit(&token(3), "a", 11), Ok(()), "a removed id may join again");
        assert_eq!(r.not_before_floor("a"), Some(6));
        r.record_cert("a", "eu", [3; 32], 3000, 11);
        let revoked = r.revoked();
        assert!(!revoked.node_ids.contains("a"), "the new certificate is accepted");
        assert_eq!(revoked.issued_before.get("a"), Some(&5), "the old ones stay refused, by date");
        assert_eq!(r.may_renew("a", &[3; 32]), Ok(()));
        r.revoked_certs.insert(hex(&[7; 32]), 1000);
        r.purge(1500);
        assert!(r.revoked().certs.is_empty(), "an expired certificate need not be listed");
        r.tokens.add(&token(4), None, 10, 1, 1500);
        r.purge(1600);
        assert_eq!(
            r.admit(&token(4), "d", 1600),
            Err(JoinError::Token(JoinRefusal::Expired)),
            "an expired token is remembered for a while"
        );
    }

    #[test]
    fn the_registry_round_trips_through_json_without_secrets() {
        let mut r = Registry::default();
        r.tokens.add(&token(9), Some("z".into()), 60, 2, 0);
        r.record_cert("a", "eu", [1; 32], 1000, 0);
        let text = serde_json::to_string(&r).expect("json");
        assert!(!text.contains(&hex(&token(9).secret)));
        let back: Registry = serde_json::from_str(&text).expect("parse");
        assert!(back.tokens.contains(&token(9)));
        assert_eq!(back.members, r.members);
    }
}
