//! Which of a mesh's schedulers leads: the one whose lease holds `<prefix>/leader`.
//!
//! Every scheduler campaigns: it takes a lease of `state.lease` and tries to create the
//! leader key under it, which only succeeds while the key does not exist. The winner
//! leads until its lease lapses; the others stand by and try again every
//! [`CAMPAIGN_EVERY`]. A leader renews its lease every third of its length and counts its
//! own deadline from the moment it *sent* the last renewal that was answered, so it stops
//! leading no later than etcd lets the lease (and the key) expire: a leader cut off from
//! etcd steps down before anyone else can be elected, and two never lead at once.
//!
//! The term is the leader key's creation revision: it only grows, across every
//! scheduler, so it orders leaders in the logs.

use std::time::{Duration, Instant};

use etcdv3client::pb;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Etcd, created_at, get_op, put_op, version_is};

/// A gRPC status as the client's error.
fn etcd_status(status: tonic::Status) -> etcdv3client::Error {
    etcdv3client::Error::new(etcdv3client::ErrKind::LeaseRequestFailed, status)
}

/// How often a standby tries to become the leader.
pub const CAMPAIGN_EVERY: Duration = Duration::from_millis(250);
/// How much sooner than its lease a leader stops, for clocks that run at slightly
/// different rates.
const SAFETY_MARGIN: Duration = Duration::from_millis(250);

/// What this scheduler does in its mesh now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It leads: computes paths and sends instructions, in this term, until `until`
    /// (when its lease could lapse; `None`: for good, a scheduler without etcd).
    Leader {
        /// The leader key's creation revision.
        term: i64,
        /// When it must stop leading unless the lease was renewed by then.
        until: Option<Instant>,
    },
    /// It does not lead; `leader` names the scheduler that does, when known.
    Standby {
        /// The leader's `state.name`.
        leader: Option<String>,
    },
}

impl Role {
    /// Whether it leads now: checked against the lease's deadline, so a scheduler whose
    /// runtime stalled past it issues nothing before its campaign task notices.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { until, .. } if until.is_none_or(|t| Instant::now() < t))
    }

    /// Its term while it leads.
    pub fn term(&self) -> Option<i64> {
        match self {
            Role::Leader { term, .. } => Some(*term),
            Role::Standby { .. } => None,
        }
    }
}

/// Starts campaigning as `name`; the role is published on the returned channel. The
/// campaign stops, and a held lease is given back so another scheduler takes over at
/// once, when `stopped` turns true.
pub fn start(
    etcd: Etcd,
    name: String,
    lease: Duration,
    stopped: watch::Receiver<bool>,
) -> watch::Receiver<Role> {
    let (role, watcher) = watch::channel(Role::Standby { leader: None });
    tokio::spawn(campaign(etcd, name, lease, role, stopped));
    watcher
}

async fn campaign(
    etcd: Etcd,
    name: String,
    lease: Duration,
    role: watch::Sender<Role>,
    mut stopped: watch::Receiver<bool>,
) {
    let key = etcd.key("leader");
    let ttl = i64::try_from(lease.as_secs()).unwrap_or(60);
    let mut warned = false;
    loop {
        if *stopped.borrow() {
            return;
        }
        match try_to_lead(&etcd, &key, &name, ttl).await {
            Ok(Attempt::Won { lease_id, term, deadline }) => {
                warned = false;
                info!(term, name = %name, "this scheduler now leads the mesh");
                role.send_replace(Role::Leader { term, until: Some(stop_time(deadline)) });
                let outcome = lead(&etcd, &key, lease_id, term, deadline, lease, &role, &mut stopped).await;
                role.send_replace(Role::Standby { leader: None });
                // Given back so a standby takes over without waiting out the lease; when
                // etcd is out of reach this fails and the lease lapses instead.
                revoke(&etcd, lease_id).await;
                match outcome {
                    Stepped::Stopped => return,
                    Stepped::Lost(why) => {
                        warn!(term, reason = %why, "this scheduler no longer leads the mesh")
                    }
                }
            }
            Ok(Attempt::Lost { leader }) => {
                warned = false;
                let now = Role::Standby { leader };
                role.send_if_modified(|r| {
                    let changed = *r != now;
                    *r = now.clone();
                    changed
                });
            }
            Err(e) => {
                if !warned {
                    warn!(error = %e, "cannot reach etcd: standing by (instructions are not issued until a leader is elected)");
                    warned = true;
                }
                role.send_if_modified(|r| {
                    let changed = r.is_leader();
                    if changed {
                        *r = Role::Standby { leader: None };
                    }
                    changed
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CAMPAIGN_EVERY) => {}
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
    }
}

/// Gives a lease back (best effort: when etcd is out of reach the lease lapses instead).
async fn revoke(etcd: &Etcd, lease_id: i64) {
    let _ = etcd
        .call(move |mut c| async move { c.lease.lease_revoke(pb::LeaseRevokeRequest { id: lease_id }).await })
        .await;
}

enum Attempt {
    Won { lease_id: i64, term: i64, deadline: Instant },
    Lost { leader: Option<String> },
}

/// One try: a fresh lease, and the leader key under it if nobody holds the key.
async fn try_to_lead(etcd: &Etcd, key: &[u8], name: &str, ttl: i64) -> Result<Attempt, super::EtcdError> {
    // A cheap read first: a standby polling a held key takes no lease each time.
    let read_key = key.to_vec();
    let held = etcd
        .call(move |mut c| async move {
            c.kv.range(pb::RangeRequest { key: read_key, ..Default::default() }).await
        })
        .await?;
    if let Some(kv) = held.kvs.first() {
        return Ok(Attempt::Lost { leader: Some(String::from_utf8_lossy(&kv.value).into_owned()) });
    }
    let sent = Instant::now();
    let granted = etcd
        .call(move |mut c| async move { c.lease.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }).await })
        .await?;
    let lease_id = granted.id;
    let txn = pb::TxnRequest {
        compare: vec![version_is(key.to_vec(), 0)],
        success: vec![put_op(key.to_vec(), name.as_bytes().to_vec(), lease_id)],
        failure: vec![get_op(key.to_vec())],
    };
    let answer = match etcd.call(move |mut c| async move { c.kv.txn(txn).await }).await {
        Ok(a) => a,
        Err(e) => {
            revoke(etcd, lease_id).await;
            return Err(e);
        }
    };
    if answer.succeeded {
        let term = answer.header.as_ref().map_or(0, |h| h.revision);
        let granted_for = Duration::from_secs(u64::try_from(granted.ttl).unwrap_or(0));
        let deadline = sent + granted_for;
        // Won, but so late that the lease may lapse before it could lead: give it back.
        if Instant::now() >= stop_time(deadline) {
            revoke(etcd, lease_id).await;
            return Ok(Attempt::Lost { leader: None });
        }
        return Ok(Attempt::Won { lease_id, term, deadline });
    }
    revoke(etcd, lease_id).await;
    let leader = answer.responses.into_iter().find_map(|r| match r.response {
        Some(pb::response_op::Response::ResponseRange(range)) => {
            range.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        }
        _ => None,
    });
    Ok(Attempt::Lost { leader })
}

enum Stepped {
    Stopped,
    Lost(String),
}

/// When a leader whose lease lapses at `deadline` stops leading.
fn stop_time(deadline: Instant) -> Instant {
    deadline.checked_sub(SAFETY_MARGIN).unwrap_or(deadline)
}

/// Leads until the lease cannot be kept (or the key is no longer this term's), or until
/// `stopped`; each renewal moves the role's deadline on.
#[allow(clippy::too_many_arguments)]
async fn lead(
    etcd: &Etcd,
    key: &[u8],
    lease_id: i64,
    term: i64,
    mut deadline: Instant,
    lease: Duration,
    role: &watch::Sender<Role>,
    stopped: &mut watch::Receiver<bool>,
) -> Stepped {
    let renew_every = lease / 3;
    loop {
        let stop_at = stop_time(deadline);
        tokio::select! {
            _ = tokio::time::sleep(renew_every) => {}
            _ = tokio::time::sleep_until(stop_at.into()) => {
                return Stepped::Lost(format!("its lease could not be renewed within {lease:?}"));
            }
            _ = crate::shutdown::wait_true(stopped) => return Stepped::Stopped,
        }
        let sent = Instant::now();
        let renewal = tokio::time::timeout_at(stop_at.into(), renew(etcd, key, lease_id, term));
        match renewal.await {
            Ok(Ok(Some(granted))) => {
                deadline = sent + granted;
                role.send_replace(Role::Leader { term, until: Some(stop_time(deadline)) });
            }
            Ok(Ok(None)) => return Stepped::Lost("its lease or leader key is gone".into()),
            // Not answered: tried again next round, until the deadline.
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// Renews the lease once and checks the leader key is still this term's; `None` when
/// the lease or the key is gone.
async fn renew(
    etcd: &Etcd,
    key: &[u8],
    lease_id: i64,
    term: i64,
) -> Result<Option<Duration>, super::EtcdError> {
    let ttl = etcd
        .call(move |mut c| async move {
            // A stream of one renewal each time: each goes to a member that answers now.
            let one = tokio_stream::iter([pb::LeaseKeepAliveRequest { id: lease_id }]);
            let mut answers = c.lease.lease_keep_alive(one).await?;
            Ok(answers.message().await.map_err(etcd_status)?.map_or(0, |m| m.ttl))
        })
        .await?;
    if ttl <= 0 {
        return Ok(None);
    }
    let check =
        pb::TxnRequest { compare: vec![created_at(key.to_vec(), term)], success: vec![], failure: vec![] };
    let still = etcd.call(move |mut c| async move { c.kv.txn(check).await }).await?;
    Ok(still.succeeded.then(|| Duration::from_secs(u64::try_from(ttl).unwrap_or(0))))
}
