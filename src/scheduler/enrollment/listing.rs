//! What `proxy mesh token list` and `proxy mesh nodes` show, from the registry and the
//! presence record. The structs are the commands' `--json` documents: their field names
//! are stable (new fields may be added; none is renamed or removed).

use serde::{Deserialize, Serialize};

use super::presence::{Presence, STALE_AFTER_SECS};
use super::registry::Registry;
use crate::core::join_token::TokenRecord;

/// `mesh token list --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token the registry holds (expired ones for a day), the soonest to expire first.
    pub tokens: Vec<TokenEntry>,
}

/// Whether a token would enroll a machine now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// It would.
    Usable,
    /// Every use taken.
    UsedUp,
    /// Past its expiry.
    Expired,
    /// Revoked by `mesh token revoke`.
    Revoked,
}

impl TokenState {
    /// The word tables show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::UsedUp => "used-up",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// One token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Its id: the first 12 hex digits of the SHA-256 of its secret (what `revoke` takes).
    pub id: String,
    /// The only node id it enrolls, when bound.
    pub node_id: Option<String>,
    /// The groups it grants.
    pub groups: Vec<String>,
    /// Enrollments left.
    pub uses_left: u32,
    /// Enrollments it allowed when made (`null` for tokens made before this was kept).
    pub uses_total: Option<u32>,
    /// When it was made, Unix seconds (`null`, as above).
    pub created_unix: Option<u64>,
    /// When it expires, Unix seconds.
    pub expires_unix: u64,
    /// When it was revoked, Unix seconds.
    pub revoked_unix: Option<u64>,
    /// Whether it would enroll a machine now.
    pub state: TokenState,
}

impl TokenEntry {
    fn of(record: &TokenRecord, now_unix: u64) -> Self {
        let state = if record.revoked_unix.is_some() {
            TokenState::Revoked
        } else if now_unix > record.expires_unix {
            TokenState::Expired
        } else if record.uses_left == 0 {
            TokenState::UsedUp
        } else {
            TokenState::Usable
        };
        Self {
            id: record.id(),
            node_id: record.node_id.clone(),
            groups: record.groups.clone(),
            uses_left: record.uses_left,
            uses_total: record.uses_total,
            created_unix: record.created_unix,
            expires_unix: record.expires_unix,
            revoked_unix: record.revoked_unix,
            state,
        }
    }
}

/// The tokens of `registry` at `now_unix`.
pub fn tokens(registry: &Registry, now_unix: u64) -> TokenList {
    TokenList { tokens: registry.tokens.records().iter().map(|r| TokenEntry::of(r, now_unix)).collect() }
}

/// `mesh nodes --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    /// Members and removed nodes, by id.
    pub nodes: Vec<NodeEntry>,
}

/// One node the mesh knows: a member, or a removed one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node id.
    pub id: String,
    /// The region it joined or registered with (empty if never known).
    pub region: String,
    /// The mesh address it last registered with (`null` if never seen by a scheduler).
    pub address: Option<String>,
    /// When its latest certificate the registry knows expires, Unix seconds (`null`:
    /// none unexpired, or removed).
    pub cert_expires_unix: Option<i64>,
    /// When the leading scheduler last saw its session open (or end), Unix seconds; up to
    /// a minute old for a connected node.
    pub last_seen_unix: Option<u64>,
    /// Whether its session with the leading scheduler was open when last noted (and that
    /// note is recent).
    pub connected: bool,
    /// When it joined or was first seen, Unix seconds (`null` for a removed node).
    pub joined_unix: Option<u64>,
    /// The groups its certificates name.
    pub groups: Vec<String>,
    /// When it was removed, Unix seconds (`null`: a member).
    pub removed_unix: Option<u64>,
}

/// Members and removed nodes of `registry`, with what `presence` noted, at `now_unix`.
pub fn nodes(registry: &Registry, presence: &Presence, now_unix: u64) -> NodeList {
    let mut ids: Vec<&String> = registry.members.keys().chain(registry.removed.keys()).collect();
    ids.sort();
    ids.dedup();
    let nodes = ids
        .into_iter()
        .map(|id| {
            let member = registry.members.get(id);
            let seen = presence.nodes.get(id);
            let region = member
                .map(|m| m.region.clone())
                .filter(|r| !r.is_empty())
                .or_else(|| seen.map(|s| s.region.clone()))
                .unwrap_or_default();
            NodeEntry {
                id: id.clone(),
                region,
                address: seen.map(|s| s.address.clone()),
                cert_expires_unix: member.and_then(|m| m.certs.values().max().copied()),
                last_seen_unix: seen.map(|s| s.last_seen_unix),
                connected: member.is_some()
                    && seen.is_some_and(|s| {
                        s.session_open && now_unix.saturating_sub(s.last_seen_unix) <= STALE_AFTER_SECS
                    }),
                joined_unix: member.map(|m| m.since_unix),
                groups: member.map(|m| m.groups.clone()).unwrap_or_default(),
                removed_unix: registry.removed.get(id).copied(),
            }
        })
        .collect();
    NodeList { nodes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::join_token::JoinToken;
    use crate::scheduler::enrollment::presence::Seen;

    #[test]
    fn tokens_show_their_state_and_nodes_join_the_registry_with_presence() {
        let mut r = Registry::default();
        let token = |seed| JoinToken { secret: [seed; 32], ca_fingerprint: [0; 32] };
        r.tokens.add(&token(1), None, 100, 2, 1_000);
        r.tokens.add(&token(2), Some("b".into()), 10, 1, 1_000);
        r.tokens.add(&token(3), None, 100, 1, 1_000);
        r.admit(&token(3), "a", 1_001).expect("admitted");
        let id = |seed| crate::core::join_token::hex(&token(seed).hash())[..12].to_string();
        let hash = r.tokens.find(&id(1)).expect("found by its id");
        assert_eq!(hash, token(1).hash());
        r.tokens.revoke(&hash, 1_002).expect("revoked");
        assert_eq!(
            r.admit(&token(1), "z", 1_003),
            Err(super::super::registry::JoinError::Token(crate::core::join_token::JoinRefusal::Revoked)),
            "a revoked token is refused though it has a use left"
        );
        assert_eq!(
            r.tokens.revoke(&hash, 1_004).map(|(t, again)| (t.revoked_unix, again)),
            Some((Some(1_002), true))
        );
        let list = tokens(&r, 1_050);
        let state = |seed| list.tokens.iter().find(|t| t.id == id(seed)).map(|t| t.state);
        assert_eq!(
            [state(1), state(2), state(3)],
            [Some(TokenState::Revoked), Some(TokenState::Expired), Some(TokenState::UsedUp)]
        );
        let revoked = list.tokens.iter().find(|t| t.id == id(1)).expect("listed");
        assert_eq!(
            (revoked.uses_total, revoked.created_unix, revoked.revoked_unix),
            (Some(2), Some(1_000), Some(1_002))
        );
        assert_eq!(list.tokens[0].node_id.as_deref(), Some("b"), "the soonest to expire first");
        assert_eq!(r.tokens.find("zz"), Err(crate::core::join_token::TokenIdError::Malformed("zz".into())));
        assert!(matches!(r.tokens.find("00000000"), Err(crate::core::join_token::TokenIdError::Unknown(_))));

        r.record_cert("a", "eu", [1; 32], 5_000, 1_001);
        r.record_cert("a", "eu", [2; 32], 9_000, 1_001);
        r.record_cert("c", "", [3; 32], 5_000, 1_001);
        r.remove("c", 1_100);
        let mut p = Presence::default();
        p.note(
            "a",
            Seen {
                last_seen_unix: 1_000,
                session_open: true,
                address: "10.0.0.1:7800".into(),
                region: "eu".into(),
            },
        );
        p.note(
            "c",
            Seen {
                last_seen_unix: 1_090,
                session_open: false,
                address: "10.0.0.3:7800".into(),
                region: "us".into(),
            },
        );
        let list = nodes(&r, &p, 1_010);
        assert_eq!(list.nodes.len(), 2);
        let (a, c) = (&list.nodes[0], &list.nodes[1]);
        assert_eq!((a.cert_expires_unix, a.connected, a.removed_unix), (Some(9_000), true, None));
        assert_eq!((c.region.as_str(), c.removed_unix, c.connected), ("us", Some(1_100), false));
        assert!(
            !nodes(&r, &p, 1_000 + STALE_AFTER_SECS + 1).nodes[0].connected,
            "an old note is not a session"
        );
    }
}
