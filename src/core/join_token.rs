//! Join tokens (`proxy mesh join`), pure: the token's text form,
//! the scheduler's store of token hashes with expiry, uses and node binding, the key
//! joiners are counted by (an address, or an IPv6 /64), and a limiter of failed attempts
//! per such key.
//!
//! A token carries a 32-byte secret and the SHA-256 fingerprint of the mesh CA, so the
//! joining machine can check the scheduler's certificate chain before it sends anything.
//! The scheduler keeps only the secret's SHA-256: a copy of its store cannot be used to
//! join. Text form: `pxj1-<64 hex: secret>-<64 hex: CA fingerprint>`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ring::digest::{SHA256, digest};

/// Prefix and version of the text form.
const PREFIX: &str = "pxj1";

/// A join token as a user copies it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The secret the scheduler checks.
    pub secret: [u8; 32],
    /// SHA-256 of the mesh CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &hex(&self.ca_fingerprint))
            .finish_non_exhaustive()
    }
}

/// Why a token's text is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Not `pxj1-<hex>-<hex>`.
    #[error("not a join token (expected pxj1-<64 hex digits>-<64 hex digits>)")]
    Malformed,
}

impl JoinToken {
    /// The text form.
    pub fn encode(&self) -> String {
        format!("{PREFIX}-{}-{}", hex(&self.secret), hex(&self.ca_fingerprint))
    }

    /// Parses the text form (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let mut parts = text.trim().split('-');
        let (Some(PREFIX), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenFormatError::Malformed);
        };
        Ok(Self { secret: unhex(secret)?, ca_fingerprint: unhex(fp)? })
    }

    /// The hash the scheduler stores and looks the token up by.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.secret)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits as 32 bytes.
pub fn unhex(text: &str) -> Result<[u8; 32], TokenFormatError> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenFormatError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| TokenFormatError::Malformed)?;
    }
    Ok(out)
}

/// What the scheduler keeps of one token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// SHA-256 of the secret.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
    /// The only node id it may enroll, when bound.
    pub node_id: Option<String>,
    /// Unix time after which it is refused.
    pub expires_unix: u64,
    /// Enrollments it still allows.
    pub uses_left: u32,
    /// Groups the certificates it enrolls name (`mesh token create --groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Unix time it was made (absent in tokens made by releases before `mesh token list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix: Option<u64>,
    /// Enrollments it allowed when made (absent, as above, in older tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_total: Option<u32>,
    /// Unix time it was revoked (`mesh token revoke`): refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix: Option<u64>,
}

/// How many hex digits of a token's hash make its id.
pub const TOKEN_ID_LEN: usize = 12;
/// The fewest hex digits `mesh token revoke` takes as an id prefix.
pub const TOKEN_ID_MIN: usize = 8;

impl TokenRecord {
    /// The token's id, safe to print: the first [`TOKEN_ID_LEN`] hex digits of the hash of
    /// its secret (the hash itself is stored; a prefix of it tells nothing of the secret).
    pub fn id(&self) -> String {
        hex(&self.hash)[..TOKEN_ID_LEN].to_string()
    }
}

/// Why an id given to `mesh token revoke` names no single token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenIdError {
    /// Not 8 to 64 hex digits.
    #[error("`{0}` is not a token id: give the id `mesh token list` shows ({TOKEN_ID_LEN} hex digits)")]
    Malformed(String),
    /// No token has it.
    #[error(
        "no token has the id `{0}` (see `proxy mesh token list`; expired tokens are forgotten a day after)"
    )]
    Unknown(String),
    /// Several tokens start with it.
    #[error("`{0}` names several tokens: give more of the id")]
    Ambiguous(String),
}

/// Why a token was refused; each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// No such token (never made, or removed after its last use or expiry).
    #[error("unknown join token: create one with `proxy mesh token create`")]
    Unknown,
    /// Past its expiry.
    #[error("the join token expired: create a new one")]
    Expired,
    /// Every use taken.
    #[error("the join token was already used: create a new one")]
    UsedUp,
    /// Bound to another node id.
    #[error("the join token is for node `{0}`, not this one")]
    WrongNode(String),
    /// Revoked by `mesh token revoke`.
    #[error("the join token was revoked: ask the mesh's operator for a new one")]
    Revoked,
}

/// The scheduler's tokens, by hash (stored as a list of records).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<TokenRecord>", into = "Vec<TokenRecord>")]
pub struct TokenStore {
    records: HashMap<[u8; 32], TokenRecord>,
}

impl From<Vec<TokenRecord>> for TokenStore {
    fn from(list: Vec<TokenRecord>) -> Self {
        Self { records: list.into_iter().map(|r| (r.hash, r)).collect() }
    }
}

impl From<TokenStore> for Vec<TokenRecord> {
    fn from(store: TokenStore) -> Self {
        let mut list: Vec<TokenRecord> = store.records.into_values().collect();
        list.sort_by_key(|r| (r.expires_unix, r.hash));
        list
    }
}

/// 32 bytes as 64 hex digits in serde formats.
pub mod hex32 {
    /// Writes the hex form.
    pub fn serialize<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    /// Reads the hex form.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        super::unhex(&text).map_err(|_| serde::de::Error::custom("expected 64 hex digits"))
    }
}

impl TokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token valid for `ttl_secs` from `now_unix`, for `uses` enrollments, bound to
    /// `node_id` when given.
    pub fn add(
        &mut self,
        token: &JoinToken,
        node_id: Option<String>,
        ttl_secs: u64,
        uses: u32,
        now_unix: u64,
    ) {
        let record = TokenRecord {
            hash: token.hash(),
            node_id,
            expires_unix: now_unix.saturating_add(ttl_secs),
            uses_left: uses,
            groups: Vec::new(),
            created_unix: Some(now_unix),
            uses_total: Some(uses),
            revoked_unix: None,
        };
        self.records.insert(record.hash, record);
    }

    /// Makes `token` grant `groups` to the nodes it enrolls.
    pub fn grant_groups(&mut self, token: &JoinToken, groups: Vec<String>) {
        if let Some(record) = self.records.get_mut(&token.hash()) {
            record.groups = groups;
        }
    }

    /// Whether `token` is bound to `node_id` (made with `--node-id` for it).
    pub fn is_bound_to(&self, token: &JoinToken, node_id: &str) -> bool {
        self.records.get(&token.hash()).is_some_and(|r| r.node_id.as_deref() == Some(node_id))
    }

    /// The groups `token` grants (none for an unknown token).
    pub fn groups_of(&self, token: &JoinToken) -> Vec<String> {
        self.records.get(&token.hash()).map(|r| r.groups.clone()).unwrap_or_default()
    }

    /// Says whether `token` would enroll `node_id` at `now_unix`, without taking a use.
    /// Used-up and expired tokens are kept until purged, so their refusals say why.
    pub fn check(&self, token: &JoinToken, node_id: &str, now_unix: u64) -> Result<(), JoinRefusal> {
        let record = self.records.get(&token.hash()).ok_or(JoinRefusal::Unknown)?;
        if record.revoked_unix.is_some() {
            return Err(JoinRefusal::Revoked);
        }
        if now_unix > record.expires_unix {
            return Err(JoinRefusal::Expired);
        }
        if record.uses_left == 0 {
            return Err(JoinRefusal::UsedUp);
        }
        match &record.node_id {
            Some(bound) if bound != node_id => Err(JoinRefusal::WrongNode(bound.clone())),
            _ => Ok(()),
        }
    }

    /// Takes one use of `token` for `node_id` at `now_unix`, or says why not.
    pub fn redeem(&mut self, token: &JoinToken, node_id: &str, now_unix: u64) -> Result<(), JoinRefusal> {
        self.check(token, node_id, now_unix)?;
        if let Some(record) = self.records.get_mut(&token.hash()) {
            record.uses_left -= 1;
        }
        Ok(())
    }

    /// Forgets expired tokens; returns how many.
    pub fn purge(&mut self, now_unix: u64) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| r.expires_unix >= now_unix);
        before - self.records.len()
    }

    /// Every token held, the soonest to expire first.
    pub fn records(&self) -> Vec<TokenRecord> {
        Vec::from(self.clone())
    }

    /// The hash of the one token whose id (see [`TokenRecord::id`]) starts with `id`.
    pub fn find(&self, id: &str) -> Result<[u8; 32], TokenIdError> {
        let id = id.trim().to_ascii_lowercase();
        if !(TOKEN_ID_MIN..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenIdError::Malformed(id));
        }
        let mut found = self.records.keys().filter(|h| hex(&h[..]).starts_with(&id));
        match (found.next(), found.next()) {
            (Some(hash), None) => Ok(*hash),
            (None, _) => Err(TokenIdError::Unknown(id)),
            (Some(_), Some(_)) => Err(TokenIdError::Ambiguous(id)),
        }
    }

    /// Revokes the token with `hash` at `now_unix`; returns its record, and whether it was
    /// revoked already (then its first revocation time stays).
    pub fn revoke(&mut self, hash: &[u8; 32], now_unix: u64) -> Option<(TokenRecord, bool)> {
        let record = self.records.get_mut(hash)?;
        let before = record.revoked_unix.is_some();
        record.revoked_unix.get_or_insert(now_unix);
        Some((record.clone(), before))
    }

    /// Whether a token's secret hashes to a held record (no use taken).
    pub fn contains(&self, token: &JoinToken) -> bool {
        self.records.contains_key(&token.hash())
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Who a join attempt is counted against: an IPv4 address, or the /64 an IPv6 address is
/// in. One IPv6 host usually gets a whole /64 and may rotate through it at will, so
/// counting exact IPv6 addresses would let one machine take every join slot and every
/// failure allowance; an IPv4 address is scarce enough to count alone. IPv4-mapped IPv6
/// counts as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourcePrefix {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6([u16; 4]),
}

impl SourcePrefix {
    /// The key `from` is counted by.
    pub fn of(from: IpAddr) -> Self {
        match from.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Self::V6([s[0], s[1], s[2], s[3]])
            }
        }
    }
}

impl std::fmt::Display for SourcePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6(p) => {
                let prefix = std::net::Ipv6Addr::new(p[0], p[1], p[2], p[3], 0, 0, 0, 0);
                write!(f, "{prefix}/64")
            }
        }
    }
}

/// Limits failed join attempts per source address: after `max_failures` within
/// `window_secs`, the address is refused until the window has passed since its last
/// failure.
#[derive(Debug, Clone)]
pub struct FailureLimiter {
    max_failures: u32,
    window_secs: u64,
    /// Failures counted and the time of the last one, per address.
    failures: HashMap<String, (u32, u64)>,
    /// Addresses tracked at most (the oldest entries go first), so a flood of sources
    /// cannot grow the table without bound.
    capacity: usize,
}

impl FailureLimiter {
    /// A limiter allowing `max_failures` per `window_secs`, tracking up to `capacity`
    /// addresses.
    pub fn new(max_failures: u32, window_secs: u64, capacity: usize) -> Self {
        Self { max_failures, window_secs, failures: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Whether `addr` may try now.
    pub fn allows(&self, addr: &str, now_unix: u64) -> bool {
        match self.failures.get(addr) {
            Some(&(count, last)) => {
                count < self.max_failures || now_unix >= last.saturating_add(self.window_secs)
            }
            None => true,
        }
    }

    /// Records a failed attempt from `addr`.
    pub fn failed(&mut self, addr: &str, now_unix: u64) {
        if !self.failures.contains_key(addr) && self.failures.len() >= self.capacity {
            let oldest = self.failures.iter().min_by_key(|(_, (_, last))| *last).map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(addr.to_string()).or_insert((0, now_unix));
        if now_unix >= entry.1.saturating_add(self.window_secs) {
            *entry = (0, now_unix);
        }
        entry.0 += 1;
        entry.1 = now_unix;
    }

    /// A successful attempt clears `addr`'s failures.
    pub fn succeeded(&mut self, addr: &str) {
        self.failures.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64_and_ipv4_by_address() {
        let key = |s: &str| SourcePrefix::of(s.parse().expect("address"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "one /64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"), "the next /64");
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"), "IPv4 counts each address");
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"), "a mapped address is the IPv4 one");
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(key("::1").to_string(), "::/64");
    }

    fn token(seed: u8) -> JoinToken {
        JoinToken { secret: [seed; 32], ca_fingerprint: sha256(b"ca") }
    }

    #[test]
    fn the_text_form_round_trips_and_bad_text_is_refused() {
        let t = token(7);
        let text = t.encode();
        assert!(text.starts_with("pxj1-") && text.len() == 4 + 1 + 64 + 1 + 64);
        assert_eq!(JoinToken::parse(&format!("  {text}\n")), Ok(t.clone()));
        for bad in [
            "",
            "pxj1",
            &text[..text.len() - 1],
            &text.replace("pxj1", "pxj2"),
            &format!("{text}-00"),
            &text.replace('0', "g"),
        ] {
            assert_eq!(JoinToken::parse(bad), Err(TokenFormatError::Malformed), "{bad}");
        }
        assert!(!format!("{t:?}").contains(&hex(&t.secret)), "Debug never shows the secret");
    }

    #[test]
    fn a_token_is_refused_when_unknown_expired_used_up_or_for_another_node() {
        let mut store = TokenStore::new();
        let (one_use, bound) = (token(1), token(2));
        store.add(&one_use, None, 3600, 1, 1000);
        store.add(&bound, Some("c".into()), 60, 5, 1000);
        assert_eq!(store.redeem(&token(9), "a", 1000), Err(JoinRefusal::Unknown));
        assert_eq!(store.redeem(&one_use, "a", 1001), Ok(()));
        assert_eq!(store.redeem(&one_use, "b", 1002), Err(JoinRefusal::UsedUp));
        assert_eq!(store.redeem(&one_use, "b", 1003), Err(JoinRefusal::UsedUp), "kept, so it says why");
        assert_eq!(store.redeem(&bound, "d", 1010), Err(JoinRefusal::WrongNode("c".into())));
        assert_eq!(store.redeem(&bound, "c", 1010), Ok(()));
        assert_eq!(store.redeem(&bound, "c", 1061), Err(JoinRefusal::Expired));
        assert_eq!(store.purge(1061), 1, "purging forgets what expired");
    }

    #[test]
    fn the_store_keeps_hashes_only_and_purges_expired_tokens() {
        let mut store = TokenStore::new();
        store.add(&token(1), None, 10, 1, 0);
        store.add(&token(2), None, 100, 1, 0);
        let text = format!("{store:?}");
        assert!(!text.contains(&hex(&token(1).secret)), "the secret is not stored");
        assert_eq!(store.purge(50), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn repeated_failures_from_one_address_are_held_off_for_the_window() {
        let mut l = FailureLimiter::new(3, 60, 2);
        for t in 0..3 {
            assert!(l.allows("10.0.0.1", t));
            l.failed("10.0.0.1", t);
        }
        assert!(!l.allows("10.0.0.1", 30), "three failures within the window");
        assert!(l.allows("10.0.0.2", 30), "other addresses are not affected");
        assert!(l.allows("10.0.0.1", 62), "the window passed since the last failure");
        l.failed("10.0.0.2", 70);
        l.failed("10.0.0.3", 71);
        assert!(l.allows("10.0.0.1", 72) && l.failures.len() == 2, "the table stays within its capacity");
        l.succeeded("10.0.0.3");
        assert!(!l.failures.contains_key("10.0.0.3"));
    }
}
