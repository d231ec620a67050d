//! Enrollment on the scheduler's side: joins (`proxy mesh join`), renewals, and the
//! record of which certificates the mesh knows and which it has revoked.
//!
//! Every decision goes through the on-disk registry under its lock, so tokens made and
//! nodes removed by the `proxy mesh` commands, which write the same registry, count at
//! once.

pub mod listing;
pub mod presence;
pub mod registry;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::scheduler::{SCHEDULER_ID, SchedulerConfig};
use crate::core::enroll::{JoinReply, JoinRequest};
use crate::core::join_token::{FailureLimiter, JoinToken};
use crate::pki::MeshCa;
use registry::JoinError;
use store::RegistryStore;

/// Failed joins allowed per source address within [`FAILURE_WINDOW_SECS`].
const MAX_FAILURES: u32 = 5;
/// The window of the failure limit, seconds.
const FAILURE_WINDOW_SECS: u64 = 60;
/// Source addresses the failure limit tracks at most.
const FAILURE_TABLE: usize = 4096;

/// The scheduler's enrollment service.
pub struct Enrollment {
    /// The CA and its certificate, when the scheduler has `ca_key`.
    signer: Option<(MeshCa, String)>,
    store: RegistryStore,
    lifetime: Duration,
    limiter: Mutex<FailureLimiter>,
    last_renewal: Mutex<HashMap<String, Instant>>,
    /// Certificates already in the registry, so a reconnect does not touch the disk.
    recorded: Mutex<HashSet<[u8; 32]>>,
    /// Joins and renewals, for the console.
    events: std::sync::Arc<crate::console::events::EventLog>,
}

impl Enrollment {
    /// Opens the registry in `data_dir` and, with `ca_key`, loads the CA.
    pub fn open(config: &SchedulerConfig) -> anyhow::Result<Self> {
        let signer = match &config.ca_key {
            Some(key_path) => {
                crate::key_file::warn_if_exposed(key_path);
                let key = std::fs::read_to_string(key_path)
                    .with_context(|| format!("ca_key: cannot read {}", key_path.display()))?;
                let cert = std::fs::read_to_string(&config.ca)
                    .with_context(|| format!("ca: cannot read {}", config.ca.display()))?;
                let ca = MeshCa::from_pem(&cert, &key).with_context(|| {
                    format!("ca_key: {} does not sign for {}", key_path.display(), config.ca.display())
                })?;
                Some((ca, cert))
            }
            None => None,
        };
        let store = RegistryStore::open(config)?;
        store.load().context(if config.etcd.is_some() { "state.etcd" } else { "data_dir" })?;
        Ok(Self {
            signer,
            store,
            lifetime: config.node_cert_lifetime,
            limiter: Mutex::new(FailureLimiter::new(MAX_FAILURES, FAILURE_WINDOW_SECS, FAILURE_TABLE)),
            last_renewal: Mutex::new(HashMap::new()),
            recorded: Mutex::new(HashSet::new()),
            events: Default::default(),
        })
    }

    /// The console's event log, where joins and renewals are recorded.
    pub fn events(&self) -> &std::sync::Arc<crate::console::events::EventLog> {
        &self.events
    }

    /// The registry.
    pub fn store(&self) -> &RegistryStore {
        &self.store
    }

    /// Answers a join request from `from` (blocking: signs and writes the registry). Past
    /// `deadline` nothing is committed: the requester has given up, and its token keeps
    /// its use. `Err` means the registry could not be used: the joiner should send the
    /// same request again (to this scheduler or another), which is safe whether or not
    /// the join was committed.
    pub fn join(
        &self,
        request: &JoinRequest,
        from: IpAddr,
        now_unix: u64,
        deadline: Instant,
    ) -> Result<JoinReply, String> {
        let source = source_key(from);
        if !self.limiter.lock().unwrap_or_else(|p| p.into_inner()).allows(&source, now_unix) {
            return Ok(JoinReply::Refused { reason: Self::held_off_reason(from) });
        }
        match self.admit(request, now_unix, deadline) {
            Ok(reply) => {
                self.limiter.lock().unwrap_or_else(|p| p.into_inner()).succeeded(&source);
                Ok(reply)
            }
            Err(Refusal::Final(reason)) => {
                self.limiter.lock().unwrap_or_else(|p| p.into_inner()).failed(&source, now_unix);
                Ok(JoinReply::Refused { reason })
            }
            Err(Refusal::Retry(reason)) => Err(reason),
        }
    }

    /// Counts an attempt that never became a readable request (malformed, or not sent
    /// within its deadline) as a failure of its source.
    pub fn failed_attempt(&self, from: IpAddr, now_unix: u64) {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).failed(&source_key(from), now_unix);
    }

    /// Whether `from` may try to join now, or is held off for too many failures: checked
    /// before a join slot is given, so a held-off source cannot even hold one.
    pub fn admits_attempts_from(&self, from: IpAddr, now_unix: u64) -> bool {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).allows(&source_key(from), now_unix)
    }

    /// Why `from` is held off, as the joiner is told.
    pub fn held_off_reason(from: IpAddr) -> String {
        format!(
            "too many failed join attempts from {}; wait {FAILURE_WINDOW_SECS}s and check the token",
            source_key(from)
        )
    }

    fn admit(&self, request: &JoinRequest, now_unix: u64, deadline: Instant) -> Result<JoinReply, Refusal> {
        let id = &request.node_id;
        if !crate::core::wire::is_valid_node_id(id) || id == SCHEDULER_ID {
            return Err(format!(
                "`{}` is not a usable node id: use 1-63 of a-z, 0-9 and '-', not `{SCHEDULER_ID}`",
                crate::logging::log_escape(id)
            )
            .into());
        }
        if !crate::core::enroll::is_valid_region(&request.region) {
            return Err("the region must be 1-63 of letters, digits, '-', '_' and '.'".into());
        }
        let Some((ca, ca_pem)) = &self.signer else {
            return Err("this scheduler does not enroll nodes: its config has no `ca_key`".into());
        };
        let registry_error = |e: store::StoreError| {
            tracing::error!("registry: {e}");
            Refusal::Retry("the scheduler cannot read or write its registry now; try again".to_string())
        };
        let token = JoinToken { secret: request.secret, ca_fingerprint: [0; 32] };
        let registry = self.store.load().map_err(registry_error)?;
        // A certificate for an id removed before must start after the removal.
        let floor = registry.not_before_floor(id);
        // The token says which groups the node is in; the joiner cannot ask for more.
        let groups = registry.tokens.groups_of(&token);
        // Signing first: a bad request must not use the token up.
        let cert_pem = ca
            .sign_request_with_groups(&request.csr, id, &groups, self.lifetime, floor)
            .map_err(|e| e.to_string())?;
        let (fingerprint, not_after) = cert_facts(&cert_pem)?;
        let join = crate::core::join_token::hex(&crate::core::join_token::sha256(
            &[&request.secret[..], &request.csr[..]].concat(),
        ));
        let admitted = self
            .store
            .update(|r| {
                // The same request again: its first answer was lost (a scheduler died
                // after committing). The token was used once, by this join.
                if r.is_repeated_join(id, &join) {
                    r.record_cert(id, &request.region, fingerprint, not_after, now_unix);
                    return (Ok(()), true);
                }
                if Instant::now() > deadline {
                    return (
                        Err("the join took too long; the token was not used, try again".to_string()),
                        false,
                    );
                }
                r.purge(now_unix);
                let outcome = r.admit(&token, id, now_unix);
                if outcome.is_ok() {
                    r.record_cert(id, &request.region, fingerprint, not_after, now_unix);
                    if let Some(member) = r.members.get_mut(id.as_str()) {
                        member.groups = groups.clone();
                        member.joined_by = Some(join.clone());
                    }
                }
                (outcome.map_err(|e: JoinError| e.to_string()), true)
            })
            .map_err(registry_error)?;
        admitted.map_err(Refusal::Final)?;
        self.remember(fingerprint);
        tracing::info!(node = %id, region = %crate::logging::log_escape(&request.region), "node joined the mesh");
        Ok(JoinReply::Accepted { cert_pem, ca_pem: ca_pem.clone() })
    }

    /// Signs a renewed certificate for `node_id`'s key (blocking); `current` is the
    /// certificate (DER) its session was made with. Refused when the scheduler has no CA
    /// key, when the node renewed moments ago, and when it is not a member in good
    /// standing (removed, or its certificate revoked, even if its session is still up).
    pub fn renew(
        &self,
        node_id: &str,
        region: &str,
        current: &[u8],
        csr: &[u8],
        now_unix: u64,
    ) -> Result<String, String> {
        let Some((ca, _)) = &self.signer else {
            return Err("this scheduler does not sign certificates: its config has no `ca_key`".into());
        };
        let spacing = (self.lifetime / 4).min(Duration::from_secs(60));
        {
            let mut last = self.last_renewal.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(node_id).is_some_and(|t| t.elapsed() < spacing) {
                return Err(format!("renewed less than {spacing:?} ago"));
            }
            last.insert(node_id.to_string(), Instant::now());
        }
        let held = crate::core::join_token::sha256(current);
        let registry =
            self.store.load().map_err(|e| format!("the scheduler cannot read its registry: {e}"))?;
        registry.may_renew(node_id, &held)?;
        let last = registry.members.get(node_id).and_then(|m| m.last_renewed_unix);
        renewal_due(crate::pki::validity_der(current), last, self.lifetime, now_unix)?;
        let floor = registry.not_before_floor(node_id);
        let groups = registry.members.get(node_id).map(|m| m.groups.clone()).unwrap_or_default();
        let cert_pem = ca
            .sign_request_with_groups(csr, node_id, &groups, self.lifetime, floor)
            .map_err(|e| e.to_string())?;
        let (fingerprint, not_after) = cert_facts(&cert_pem)?;
        // Checked again under the lock: a removal may have landed since.
        self.store
            .update(|r| match r.may_renew(node_id, &held) {
                Ok(()) => {
                    r.record_cert(node_id, region, fingerprint, not_after, now_unix);
                    r.renewed(node_id, now_unix);
                    (Ok(()), true)
                }
                Err(e) => (Err(e), false),
            })
            .map_err(|e| format!("the scheduler cannot write its registry: {e}"))??;
        self.remember(fingerprint);
        tracing::info!(node = %node_id, "certificate renewed");
        Ok(cert_pem)
    }

    /// Records the certificate a node connected with, so `mesh remove` can revoke it even
    /// when the node was not enrolled by `mesh join` (blocking, only the first time).
    pub fn seen(&self, node_id: &str, region: &str, cert_der: &[u8], now_unix: u64) {
        let fingerprint = crate::core::join_token::sha256(cert_der);
        if self.recorded.lock().unwrap_or_else(|p| p.into_inner()).contains(&fingerprint) {
            return;
        }
        let not_after = crate::pki::validity_der(cert_der).map_or(i64::MAX, |(_, end)| end);
        let written = self.store.update(|r| {
            if r.knows_cert(node_id, &fingerprint) {
                return ((), false);
            }
            r.record_cert(node_id, region, fingerprint, not_after, now_unix);
            ((), true)
        });
        match written {
            Ok(()) => self.remember(fingerprint),
            Err(e) => tracing::warn!("registry: {e}"),
        }
    }

    /// Notes every certificate `registry` holds, so nodes reconnecting to this scheduler
    /// (after a restart or a failover) are not each looked up in the registry.
    pub fn remember_all(&self, registry: &registry::Registry) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        for member in registry.members.values() {
            recorded.extend(member.certs.keys().filter_map(|fp| crate::core::join_token::unhex(fp).ok()));
        }
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).insert(fingerprint);
    }
}

/// Why a join was not answered with a certificate.
enum Refusal {
    /// Refused: the joiner is told why, and counts a failure.
    Final(String),
    /// The registry could not be used: the joiner sends the same request again.
    Retry(String),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Final(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Final(reason.to_string())
    }
}

/// Whether a member may renew now: the certificate it holds (its validity, Unix seconds)
/// has passed half its lifetime (nodes renew at two thirds), and its last renewal is a
/// quarter of a certificate lifetime ago (the shorter of the held certificate's and the
/// configured one, so raising `node_cert_lifetime` never leaves a node with a short
/// certificate waiting past its expiry). A node that lost the certificate it was just
/// given can still renew before its old one expires (two thirds plus a quarter is under
/// one); a member cannot renew every minute and fill the registry.
fn renewal_due(
    held: Option<(i64, i64)>,
    last_renewed_unix: Option<u64>,
    lifetime: Duration,
    now_unix: u64,
) -> Result<(), String> {
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    if let Some((from, until)) = held {
        let opens = from.saturating_add(until.saturating_sub(from) / 2);
        if now < opens {
            return Err(format!(
                "the certificate in use is in the first half of its lifetime: renewal opens in {} s",
                opens - now
            ));
        }
    }
    let held_lifetime =
        held.map_or(u64::MAX, |(from, until)| u64::try_from(until.saturating_sub(from)).unwrap_or(0));
    let spacing = (lifetime.as_secs().min(held_lifetime) / 4).max(1);
    if let Some(last) = last_renewed_unix
        && now_unix < last.saturating_add(spacing)
    {
        let opens_in = last.saturating_add(spacing) - now_unix;
        return Err(format!(
            "renewed {} s ago: the next renewal opens in {opens_in} s",
            now_unix.saturating_sub(last)
        ));
    }
    Ok(())
}

fn cert_facts(cert_pem: &str) -> Result<([u8; 32], i64), String> {
    let fingerprint = crate::pki::fingerprint(cert_pem).ok_or("signed an unreadable certificate")?;
    let (_, not_after) = crate::pki::validity(cert_pem).ok_or("signed an unreadable certificate")?;
    Ok((fingerprint, not_after))
}

/// The key the failure limit counts a source by: an IPv4 address, or an IPv6 /64.
fn source_key(from: IpAddr) -> String {
    crate::core::join_token::SourcePrefix::of(from).to_string()
}

/// A new join token for the mesh of `config` (`proxy mesh token create`): valid for
/// `ttl`, for `uses` joins, for `node_id` only when given, granting `groups` to the nodes
/// it enrolls. Only its hash is stored.
pub fn create_token(
    config: &SchedulerConfig,
    node_id: Option<String>,
    groups: Vec<String>,
    ttl: Duration,
    uses: u32,
) -> anyhow::Result<JoinToken> {
    create_token_in(&RegistryStore::open(config)?, config, node_id, groups, ttl, uses)
}

/// [`create_token`] in an open `store` (a running scheduler's).
pub fn create_token_in(
    store: &RegistryStore,
    config: &SchedulerConfig,
    node_id: Option<String>,
    groups: Vec<String>,
    ttl: Duration,
    uses: u32,
) -> anyhow::Result<JoinToken> {
    let ca_pem = std::fs::read_to_string(&config.ca)
        .with_context(|| format!("ca: cannot read {}", config.ca.display()))?;
    let ca_fingerprint = crate::pki::fingerprint(&ca_pem)
        .ok_or_else(|| anyhow::anyhow!("ca: {} holds no certificate", config.ca.display()))?;
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let token = JoinToken { secret, ca_fingerprint };
    let now = crate::clock::unix_now();
    store.update(|r| {
        r.purge(now);
        r.tokens.add(&token, node_id.clone(), ttl.as_secs().max(1), uses, now);
        r.tokens.grant_groups(&token, groups.clone());
        ((), true)
    })?;
    Ok(token)
}

/// Removes `node_id` from the mesh of `config` (`proxy mesh remove`): its id and every
/// certificate made for it so far are refused from now on; a running scheduler applies it
/// within a second. Returns the member, or `None` when the registry had no member by that
/// id (the id is refused all the same: it may hold a certificate made by hand).
pub fn remove_node(config: &SchedulerConfig, node_id: &str) -> anyhow::Result<Option<registry::Member>> {
    remove_node_in(&RegistryStore::open(config)?, node_id)
}

/// [`remove_node`] in an open `store` (a running scheduler's).
pub fn remove_node_in(store: &RegistryStore, node_id: &str) -> anyhow::Result<Option<registry::Member>> {
    let now = crate::clock::unix_now();
    Ok(store.update(|r| (r.remove(node_id, now), true))?)
}

/// Revokes the token whose id starts with `id` (`proxy mesh token revoke`): every join
/// with it is refused from now on, by a running scheduler too (a join reads the registry).
/// The outer `Err` is a registry failure; the inner one says `id` names no single token.
/// Returns the token and whether it was revoked already.
pub fn revoke_token(
    config: &SchedulerConfig,
    id: &str,
) -> anyhow::Result<Result<(crate::core::join_token::TokenRecord, bool), crate::core::join_token::TokenIdError>>
{
    let now = crate::clock::unix_now();
    Ok(RegistryStore::open(config)?.update(|r| match r.tokens.find(id) {
        Ok(hash) => match r.tokens.revoke(&hash, now) {
            Some((record, already)) => (Ok((record, already)), !already),
            None => (Err(crate::core::join_token::TokenIdError::Unknown(id.to_string())), false),
        },
        Err(e) => (Err(e), false),
    })?)
}

/// The registry and the presence record of the mesh of `config`, as `mesh token list`
/// and `mesh nodes` read them (the registry under its lock, or at one etcd revision).
pub fn read_state(config: &SchedulerConfig) -> anyhow::Result<(registry::Registry, presence::Presence)> {
    let store = RegistryStore::open(config)?;
    let registry = store.load()?;
    let presence = store.load_presence()?;
    Ok((registry, presence))
}

/// Records a certificate made by hand (`mesh init --nodes`) as a member's, so the
/// registry knows the node before it first connects.
pub fn record_certificate(config: &SchedulerConfig, node_id: &str, cert_pem: &str) -> anyhow::Result<()> {
    let (fingerprint, not_after) = cert_facts(cert_pem).map_err(|e| anyhow::anyhow!(e))?;
    let now = crate::clock::unix_now();
    RegistryStore::open(config)?.update(|r| {
        r.record_cert(node_id, "", fingerprint, not_after, now);
        ((), true)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn renewals_open_at_half_the_lifetime_and_are_spaced_by_a_quarter() {
        let life = Duration::from_secs(90 * DAY);
        let held = Some((0, (90 * DAY) as i64));
        assert!(renewal_due(held, None, life, 44 * DAY).is_err_and(|e| e.contains("first half")));
        assert_eq!(renewal_due(held, None, life, 60 * DAY), Ok(()), "a node renews at two thirds");
        // It renewed at day 60; a member that kept the old certificate cannot renew again
        // with it until day 82.5, nor with the new one (day 60 to 150) before day 105.
        let last = Some(60 * DAY);
        assert!(renewal_due(held, last, life, 61 * DAY).is_err_and(|e| e.contains("next renewal opens")));
        assert_eq!(renewal_due(held, last, life, 83 * DAY), Ok(()), "before the old one expires at day 90");
        let new = Some(((60 * DAY) as i64, (150 * DAY) as i64));
        assert!(renewal_due(new, last, life, 100 * DAY).is_err());
        assert_eq!(renewal_due(new, last, life, 105 * DAY), Ok(()));
        // At most one renewal per 22.5 days: about 4 per 90 days instead of 130,000.
        // The lifetime raised from 1 day to 90: a node on a 1-day certificate renewed
        // at hour 16 renews again 6 hours later, not 22.5 days.
        let hour = 3600;
        let short = Some(((16 * hour) as i64, (40 * hour) as i64));
        assert_eq!(renewal_due(short, Some(16 * hour), life, 32 * hour), Ok(()));
        assert!(renewal_due(short, Some(16 * hour), life, 21 * hour).is_err());
        // A clock that stepped back is refused with a message, not a panic.
        assert!(
            renewal_due(held, Some(70 * DAY), life, 60 * DAY).is_err_and(|e| e.contains("renewed 0 s ago"))
        );
    }
}
