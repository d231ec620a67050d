//! The registry in etcd: one key per token, member, removal, refusal floor and revoked
//! certificate under `<prefix>/registry/`, and a version key `<prefix>/registry.version`
//! that every change rewrites.
//!
//! A change is optimistic: read everything and the version key at one revision, apply the
//! change, and commit the keys that differ in one transaction that holds only while the
//! version key is still the one read. Two schedulers redeeming the last use of a token
//! cannot both commit; the loser reads again and is refused by the registry's own rules.
//! So every decision a file-store scheduler makes under its lock is made here under
//! etcd's serialisation, and nothing is written half.

use std::collections::BTreeMap;
use std::time::Duration;

use etcdv3client::pb;

use super::{Etcd, EtcdError, delete_op, get_op, prefix_end, put_op, version_is};
use crate::core::join_token::{TokenRecord, TokenStore, hex};
use crate::scheduler::enrollment::presence::Presence;
use crate::scheduler::enrollment::registry::{Member, Registry};

/// etcd refuses transactions of more than 128 operations by default (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 120;
/// Keys read per range request (bounded answers, whatever the registry's size).
const PAGE: i64 = 500;
/// Attempts of one change that keeps losing to other writers before it gives up.
const MAX_ATTEMPTS: u32 = 32;

/// Why the registry in etcd could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdRegistryError {
    /// etcd failed the call.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A key holds what no release writes.
    #[error("registry in etcd: key `{key}` is not valid: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// Other writers won every attempt.
    #[error("registry in etcd: {MAX_ATTEMPTS} attempts lost to concurrent changes; try again")]
    Contended,
    /// The change touches more keys than one transaction may.
    #[error(
        "registry in etcd: one change would write {0} keys, more than a transaction takes ({MAX_TXN_OPS})"
    )]
    TooLarge(usize),
}

/// The registry kept in etcd.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    etcd: Etcd,
}

/// What one read saw: the registry, and the version key's version (0: never written).
struct Read {
    registry: Registry,
    version: i64,
}

impl EtcdRegistry {
    /// The registry of the mesh `etcd`'s prefix names.
    pub fn new(etcd: Etcd) -> Self {
        Self { etcd }
    }

    /// The connection it uses (leadership shares it).
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    fn version_key(&self) -> Vec<u8> {
        self.etcd.key("registry.version")
    }

    fn entries_prefix(&self) -> Vec<u8> {
        self.etcd.key("registry/")
    }

    /// The version key's modification revision: changes whenever the registry does.
    pub fn stamp(&self) -> Result<i64, EtcdRegistryError> {
        let key = self.version_key();
        let answer = read_retried(|| {
            let key = key.clone();
            self.etcd.call_blocking(move |mut c| async move {
                c.kv.range(pb::RangeRequest { key, keys_only: true, ..Default::default() }).await
            })
        })?;
        Ok(answer.kvs.first().map_or(0, |kv| kv.mod_revision))
    }

    fn presence_key(&self) -> Vec<u8> {
        self.etcd.key("presence")
    }

    /// Reads the presence record, one key outside the registry's (empty when none yet).
    pub fn load_presence(&self) -> Result<Presence, EtcdRegistryError> {
        let key = self.presence_key();
        let answer = read_retried(|| {
            let key = key.clone();
            self.etcd.call_blocking(move |mut c| async move {
                c.kv.range(pb::RangeRequest { key, ..Default::default() }).await
            })
        })?;
        match answer.kvs.first() {
            Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| EtcdRegistryError::Corrupt {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                message: e.to_string(),
            }),
            None => Ok(Presence::default()),
        }
    }

    /// Replaces the presence record: a plain put, outside the registry's transactions and
    /// its version key, so it wakes no scheduler's registry poll.
    pub fn save_presence(&self, presence: &Presence) -> Result<(), EtcdRegistryError> {
        // Plain data (strings, numbers, maps of them) always serialises.
        let value = serde_json::to_vec(presence).unwrap_or_default();
        let request = pb::PutRequest { key: self.presence_key(), value, ..Default::default() };
        self.etcd.call_blocking(move |mut c| async move { c.kv.put(request).await })?;
        Ok(())
    }

    /// Reads the registry (empty when none was ever written).
    pub fn load(&self) -> Result<Registry, EtcdRegistryError> {
        Ok(self.read()?.registry)
    }

    /// Changes the registry: `change` may run more than once (again after another writer
    /// won), each time on the registry as it is then; its last result is returned.
    pub fn update<R>(
        &self,
        mut change: impl FnMut(&mut Registry) -> (R, bool),
    ) -> Result<R, EtcdRegistryError> {
        let mut purged = false;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
            }
            let (version, (result, changed), ops) = self.apply(&mut change)?;
            if !changed {
                return Ok(result);
            }
            if ops.len() > MAX_TXN_OPS {
                // Almost always a purge that was due long ago: commit it on its own, in
                // pieces (it only drops what has expired, so any order is safe), then retry.
                if purged {
                    return Err(EtcdRegistryError::TooLarge(ops.len()));
                }
                self.purge_in_pieces()?;
                purged = true;
                continue;
            }
            if self.commit(version, ops)? {
                return Ok(result);
            }
        }
        Err(EtcdRegistryError::Contended)
    }

    /// Commits `ops` if the version key is still at `version`; `false` when another writer
    /// was first. An answer lost on the way (a member died mid-call) is settled by
    /// [`EtcdRegistry::landed`]. A commit etcd applies after even that read (still in
    /// flight) is harmless: the caller retries, its CAS fails, and the change runs again
    /// on the registry that holds it (every change the scheduler makes is idempotent:
    /// a join sent again is recognised, a token or removal written again is the same).
    fn commit(&self, version: i64, mut ops: Vec<pb::RequestOp>) -> Result<bool, EtcdRegistryError> {
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce);
        let stamp = format!("{} {}", version + 1, hex(&nonce)).into_bytes();
        ops.push(put_op(self.version_key(), stamp.clone(), 0));
        let txn = pb::TxnRequest {
            compare: vec![version_is(self.version_key(), version)],
            success: ops,
            failure: Vec::new(),
        };
        match self.etcd.call_blocking(move |mut c| async move { c.kv.txn(txn).await }) {
            Ok(answer) => Ok(answer.succeeded),
            Err(lost) => self.landed(version + 1, &stamp).map_err(|_| lost.into()),
        }
    }

    /// Whether the commit that wrote `stamp` as version `count` of the version key landed:
    /// the key's history is walked back (each value names its count) to the value of that
    /// count, which is this commit's only if it landed (one commit per count, by the CAS).
    fn landed(&self, count: i64, stamp: &[u8]) -> Result<bool, EtcdRegistryError> {
        let mut revision = 0;
        for _ in 0..64 {
            let key = self.version_key();
            let answer = read_retried(|| {
                let request = pb::RangeRequest { key: key.clone(), revision, ..Default::default() };
                self.etcd.call_blocking(move |mut c| async move { c.kv.range(request).await })
            })?;
            let Some(kv) = answer.kvs.first() else { return Ok(false) };
            if kv.value == stamp {
                return Ok(true);
            }
            let seen: i64 = std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|v| v.split(' ').next()?.parse().ok())
                .unwrap_or(0);
            if seen <= count {
                return Ok(false);
            }
            revision = kv.mod_revision - 1;
        }
        Err(EtcdError::Call("could not tell whether a commit landed: too many commits since".into()).into())
    }

    /// Drops what has expired, in transactions small enough for etcd.
    fn purge_in_pieces(&self) -> Result<(), EtcdRegistryError> {
        let now = crate::clock::unix_now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
            }
            let (mut version, (), mut ops) = self.apply(&mut |r: &mut Registry| r.purge(now))?;
            let mut lost = false;
            while !ops.is_empty() {
                let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
                if !self.commit(version, std::mem::replace(&mut ops, rest))? {
                    lost = true;
                    break;
                }
                version += 1;
            }
            if !lost {
                return Ok(());
            }
        }
        Err(EtcdRegistryError::Contended)
    }

    /// Reads the registry, applies `change` to it, and returns the version read, the
    /// change's result and the operations that would commit it.
    fn apply<R>(
        &self,
        change: &mut impl FnMut(&mut Registry) -> R,
    ) -> Result<(i64, R, Vec<pb::RequestOp>), EtcdRegistryError> {
        let read = self.read()?;
        let before = entries(&read.registry);
        let mut registry = read.registry;
        let result = change(&mut registry);
        Ok((read.version, result, diff(&self.entries_prefix(), &before, &entries(&registry))))
    }

    /// Everything under the registry prefix and the version key, at one revision.
    fn read(&self) -> Result<Read, EtcdRegistryError> {
        let prefix = self.entries_prefix();
        let end = prefix_end(&prefix);
        let first = pb::TxnRequest {
            compare: Vec::new(),
            success: vec![
                get_op(self.version_key()),
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                        key: prefix.clone(),
                        range_end: end.clone(),
                        limit: PAGE,
                        ..Default::default()
                    })),
                },
            ],
            failure: Vec::new(),
        };
        let answer = read_retried(|| {
            let first = first.clone();
            self.etcd.call_blocking(move |mut c| async move { c.kv.txn(first).await })
        })?;
        let revision = answer.header.as_ref().map_or(0, |h| h.revision);
        let mut ranges = answer.responses.into_iter().filter_map(|r| match r.response {
            Some(pb::response_op::Response::ResponseRange(range)) => Some(range),
            _ => None,
        });
        let (Some(version), Some(mut page)) = (ranges.next(), ranges.next()) else {
            return Err(EtcdError::Call("a read transaction answered without its ranges".into()).into());
        };
        let version = version.kvs.first().map_or(0, |kv| kv.version);
        let mut kvs = Vec::new();
        loop {
            let more = page.more;
            let next = page.kvs.last().map(|kv| {
                let mut k = kv.key.clone();
                k.push(0);
                k
            });
            kvs.extend(page.kvs);
            let (true, Some(key)) = (more, next) else { break };
            // The later pages at the first page's revision: one consistent registry.
            page = read_retried(|| {
                let request = pb::RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: PAGE,
                    revision,
                    ..Default::default()
                };
                self.etcd.call_blocking(move |mut c| async move { c.kv.range(request).await })
            })?;
        }
        let registry = from_entries(&prefix, kvs)?;
        Ok(Read { registry, version })
    }
}

/// Attempts of a read: a call can fail on a member that just died, before the client
/// stops sending to it, and a read is safe to repeat.
const READ_ATTEMPTS: u32 = 4;

/// `read`, repeated after a failure up to [`READ_ATTEMPTS`] times.
fn read_retried<T>(mut read: impl FnMut() -> Result<T, EtcdError>) -> Result<T, EtcdError> {
    let mut attempt = 1;
    loop {
        match read() {
            Err(_) if attempt < READ_ATTEMPTS => {
                backoff(attempt);
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A short pause between attempts, longer with each and jittered so two writers part.
fn backoff(attempt: u32) {
    let base = 5u64 << attempt.min(5);
    let jitter = rand::random_range(0..base);
    std::thread::sleep(Duration::from_millis(base + jitter));
}

/// The registry as etcd keys (relative to the registry prefix) and JSON values.
fn entries(registry: &Registry) -> BTreeMap<String, Vec<u8>> {
    fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
        // Plain data (strings, numbers, maps of them) always serialises.
        serde_json::to_vec(value).unwrap_or_default()
    }
    let mut out = BTreeMap::new();
    for token in Vec::<TokenRecord>::from(registry.tokens.clone()) {
        out.insert(format!("tokens/{}", hex(&token.hash)), json(&token));
    }
    for (id, member) in &registry.members {
        out.insert(format!("members/{id}"), json(member));
    }
    for (id, at) in &registry.removed {
        out.insert(format!("removed/{id}"), json(at));
    }
    for (id, at) in &registry.issued_before {
        out.insert(format!("issued_before/{id}"), json(at));
    }
    for (fingerprint, not_after) in &registry.revoked_certs {
        out.insert(format!("revoked_certs/{fingerprint}"), json(not_after));
    }
    for (key, pin) in &registry.pins {
        out.insert(format!("pins/{key}"), json(pin));
    }
    out
}

/// Reads the registry back from its keys.
fn from_entries(prefix: &[u8], kvs: Vec<etcdv3client::pb::KeyValue>) -> Result<Registry, EtcdRegistryError> {
    let mut registry = Registry::default();
    let mut tokens = Vec::new();
    for kv in kvs {
        let full = String::from_utf8_lossy(&kv.key).into_owned();
        let corrupt = |message: String| EtcdRegistryError::Corrupt { key: full.clone(), message };
        let relative = kv.key.strip_prefix(prefix).and_then(|k| std::str::from_utf8(k).ok());
        let Some((section, name)) = relative.and_then(|k| k.split_once('/')) else {
            return Err(corrupt("not a registry key".into()));
        };
        let value = &kv.value;
        let bad = |e: serde_json::Error| corrupt(e.to_string());
        match section {
            "tokens" => tokens.push(serde_json::from_slice::<TokenRecord>(value).map_err(bad)?),
            "members" => {
                registry
                    .members
                    .insert(name.to_owned(), serde_json::from_slice::<Member>(value).map_err(bad)?);
            }
            "removed" => {
                registry.removed.insert(name.to_owned(), serde_json::from_slice(value).map_err(bad)?);
            }
            "issued_before" => {
                registry.issued_before.insert(name.to_owned(), serde_json::from_slice(value).map_err(bad)?);
            }
            "revoked_certs" => {
                registry.revoked_certs.insert(name.to_owned(), serde_json::from_slice(value).map_err(bad)?);
            }
            "pins" => {
                registry.pins.insert(name.to_owned(), serde_json::from_slice(value).map_err(bad)?);
            }
            other => return Err(corrupt(format!("unknown section `{other}` (written by a newer release?)"))),
        }
    }
    registry.tokens = TokenStore::from(tokens);
    Ok(registry)
}

/// The operations that turn `before` into `after`, keys under `prefix`.
fn diff(
    prefix: &[u8],
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<pb::RequestOp> {
    let key = |k: &str| [prefix, k.as_bytes()].concat();
    let mut ops: Vec<pb::RequestOp> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| put_op(key(k), v.clone(), 0))
        .collect();
    ops.extend(before.keys().filter(|k| !after.contains_key(*k)).map(|k| delete_op(key(k))));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::join_token::JoinToken;

    #[test]
    fn a_registry_survives_its_keys_and_a_change_writes_only_what_differs() {
        let mut r = Registry::default();
        let token = JoinToken { secret: [7; 32], ca_fingerprint: [0; 32] };
        r.tokens.add(&token, Some("a".into()), 600, 2, 1_000);
        r.record_cert("a", "eu", [1; 32], 5_000, 1_000);
        r.record_cert("b", "us", [2; 32], 5_000, 1_000);
        r.remove("b", 1_100);
        let before = entries(&r);
        let prefix = b"/p/registry/".to_vec();
        let kvs = before
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: [&prefix[..], k.as_bytes()].concat(),
                value: v.clone(),
                ..Default::default()
            })
            .collect();
        let back = from_entries(&prefix, kvs).expect("read back");
        assert_eq!(entries(&back), before, "every section round-trips");

        let mut changed = back.clone();
        changed.admit(&token, "a2", 1_200).expect_err("bound to `a`");
        changed.record_cert("c", "ap", [3; 32], 5_000, 1_200);
        let ops = diff(&prefix, &before, &entries(&changed));
        assert_eq!(ops.len(), 1, "one new member, nothing else rewritten");

        let junk = vec![pb::KeyValue {
            key: b"/p/registry/routes/x".to_vec(),
            value: b"{}".to_vec(),
            ..Default::default()
        }];
        assert!(matches!(from_entries(&prefix, junk), Err(EtcdRegistryError::Corrupt { .. })));
        let bad = vec![pb::KeyValue {
            key: b"/p/registry/members/x".to_vec(),
            value: b"{".to_vec(),
            ..Default::default()
        }];
        assert!(matches!(from_entries(&prefix, bad), Err(EtcdRegistryError::Corrupt { .. })));
    }
}
