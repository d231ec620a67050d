//! Applying a new config to a running node: listeners, peers, routes and the exit policy
//! change in place; flows the change does not concern go on untouched. Everything that
//! can fail (validation, settings that need a restart, binding new listeners) happens
//! before anything is changed, so a refused reload leaves the old config running.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::AbortHandle;
use tracing::info;

use crate::config::diff::{self as config_diff, ConfigDiff};
use crate::config::{Config, ConfigErrors};
use crate::core::route::RouteTable;
use crate::node::{ListenerInfo, Shared, flow::listener, link::connect};

/// What the node runs now: the config last applied and the tasks it started for it.
pub(crate) struct Running {
    /// The config in force.
    pub(crate) config: Config,
    /// Each open listener and its accept task.
    pub(crate) listeners: Vec<(ListenerInfo, AbortHandle)>,
    /// Each dialed peer's dial task.
    pub(crate) dialers: HashMap<String, AbortHandle>,
}

/// Why a reload was refused; the old config keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config does not validate.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// Settings changed that only a restart can apply.
    #[error("changed settings need a restart: {0}; nothing was applied")]
    NeedsRestart(String),
    /// A new listener could not be bound.
    #[error("listeners.{name}: cannot bind {protocol} {addr}: {error}; nothing was applied")]
    Bind {
        /// The listener.
        name: String,
        /// Its protocol (`TCP` or `UDP`).
        protocol: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// What an applied reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The config version now running.
    pub version: u64,
    /// The changes, in one line.
    pub summary: String,
}

/// Applies `new` to the running node, or refuses it and changes nothing.
pub(crate) fn apply(shared: &Arc<Shared>, new: Config) -> Result<ReloadReport, ReloadError> {
    let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
    let diff = config_diff::diff(&running.config, &new)
        .map_err(|keys| ReloadError::NeedsRestart(keys.join(", ")))?;
    if diff.is_empty() {
        running.config = new;
        let version = shared.config_version.load(Ordering::Relaxed);
        return Ok(ReloadReport { version, summary: diff.summary() });
    }
    // Everything that can fail first: new listeners are bound before any old one closes.
    let mut bound = Vec::new();
    for l in diff.listeners_added.iter().chain(&diff.listeners_rebound) {
        let failed = |error| ReloadError::Bind {
            name: l.name.clone(),
            protocol: if l.protocol == crate::config::ListenerProtocol::Udp { "UDP" } else { "TCP" },
            addr: l.bind,
            error,
        };
        let socket = listener::Bound::bind(l).map_err(failed)?;
        let addr = socket.local_addr().map_err(failed)?;
        bound.push((ListenerInfo { name: l.name.clone(), addr, protocol: l.protocol }, socket));
    }
    // The route table first, covering the new listeners (their sockets are bound, so the
    // kernel queues connections until their accept loops start), then the listeners.
    let closing = closing_listeners(&diff);
    let ports: Vec<(String, u16)> = running
        .listeners
        .iter()
        .map(|(l, _)| l)
        .filter(|l| !closing.contains(&&l.name))
        .chain(bound.iter().map(|(l, _)| l))
        .map(|l| (l.name.clone(), l.addr.port()))
        .collect();
    let old_table = shared.routes();
    let table = Arc::new(RouteTable::new(&new.common.node_id, &new.routes, &ports, Some(&old_table)));
    *shared.routes.write().unwrap_or_else(|p| p.into_inner()) = table;
    apply_listeners(shared, &mut running, &closing, bound, &new.listeners);
    apply_peers(shared, &mut running, &diff);
    if diff.exit_policy_changed {
        *shared.exit_policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new.exit_policy.clone());
    }
    if diff.admin_token_changed {
        let token = new.common.admin_token.clone();
        shared.admin_rules.send_modify(|rules| rules.token = token);
    }
    running.config = new;
    let version = shared.config_version.fetch_add(1, Ordering::Relaxed) + 1;
    // The scheduler session registers anew only for what its registration names. One
    // waiter (the session): `notify_one` keeps the wakeup if it is busy writing a report.
    if diff.changes_registration() {
        shared.config_changed.notify_one();
    }
    let summary = diff.summary();
    info!(version, changes = %summary, "config reloaded");
    Ok(ReloadReport { version, summary })
}

/// Listeners a reload closes: the removed ones and the old sockets of rebound ones.
fn closing_listeners(diff: &ConfigDiff) -> Vec<&String> {
    diff.listeners_removed.iter().chain(diff.listeners_rebound.iter().map(|l| &l.name)).collect()
}

fn apply_listeners(
    shared: &Arc<Shared>,
    running: &mut Running,
    closing: &[&String],
    bound: Vec<(ListenerInfo, listener::Bound)>,
    order: &[crate::config::ListenerConfig],
) {
    // Closing a listener stops new connections only; its open flows are their own tasks.
    running.listeners.retain(|(l, task)| {
        let close = closing.contains(&&l.name);
        if close {
            task.abort();
        }
        !close
    });
    for (info, socket) in bound {
        let task = shared.runtime.spawn(socket.serve(shared.clone(), info.name.clone()));
        running.listeners.push((info, task.abort_handle()));
    }
    running.listeners.sort_by_key(|(l, _)| order.iter().position(|n| n.name == l.name).unwrap_or(usize::MAX));
}

fn apply_peers(shared: &Arc<Shared>, running: &mut Running, diff: &ConfigDiff) {
    for name in &diff.peers_removed {
        if let Some(task) = running.dialers.remove(name) {
            task.abort();
        }
        shared.pool.remove(name);
    }
    for peer in diff.peers_added.iter().chain(&diff.peers_changed) {
        if let Some(task) = running.dialers.remove(&peer.name) {
            task.abort();
        }
        shared.pool.configure(peer);
        if let Some(address) = &peer.address {
            let task =
                shared.runtime.spawn(connect::dial_loop(shared.clone(), peer.name.clone(), address.clone()));
            running.dialers.insert(peer.name.clone(), task.abort_handle());
        }
    }
}
