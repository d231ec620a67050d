//! What a config reload changes, worked out before anything is touched: which listeners,
//! peers and routes to add, change or remove, whether the exit policy changes, and which
//! changed settings only a restart can apply (then nothing is applied).

use crate::config::{Config, ListenerConfig, PeerConfig};

/// The changes a reload makes to a running node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigDiff {
    /// Listeners to open.
    pub listeners_added: Vec<ListenerConfig>,
    /// Listeners to close, by name.
    pub listeners_removed: Vec<String>,
    /// Listeners whose address changes (opened anew, then the old one closed).
    pub listeners_rebound: Vec<ListenerConfig>,
    /// Peers to add.
    pub peers_added: Vec<PeerConfig>,
    /// Peers to remove (their links are closed), by name.
    pub peers_removed: Vec<String>,
    /// Peers whose address or region changes.
    pub peers_changed: Vec<PeerConfig>,
    /// Routes added, removed or changed, by name (the route table is rebuilt when any is).
    pub routes_changed: Vec<String>,
    /// Whether the exit policy changes.
    pub exit_policy_changed: bool,
    /// Whether `common.log_*` changes. The process's logger applies it (`proxy run` does;
    /// a program embedding a node owns its logger and applies it itself).
    pub log_changed: bool,
    /// Whether `common.admin_token` changes (the admin API checks the new one at once).
    pub admin_token_changed: bool,
}

impl ConfigDiff {
    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }

    /// Whether the node's registration with the scheduler (listeners, peers, routes)
    /// changes.
    pub fn changes_registration(&self) -> bool {
        !(self.listeners_added.is_empty()
            && self.listeners_removed.is_empty()
            && self.listeners_rebound.is_empty()
            && self.peers_added.is_empty()
            && self.peers_removed.is_empty()
            && self.peers_changed.is_empty()
            && self.routes_changed.is_empty())
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let names = |v: &[String]| v.join(",");
        let listeners = |v: &[ListenerConfig]| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>().join(",");
        let peers = |v: &[PeerConfig]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(",");
        let mut parts = Vec::new();
        let mut push = |label: &str, list: String| {
            if !list.is_empty() {
                parts.push(format!("{label} [{list}]"));
            }
        };
        push("listeners added", listeners(&self.listeners_added));
        push("listeners removed", names(&self.listeners_removed));
        push("listeners rebound", listeners(&self.listeners_rebound));
        push("peers added", peers(&self.peers_added));
        push("peers removed", names(&self.peers_removed));
        push("peers changed", peers(&self.peers_changed));
        push("routes changed", names(&self.routes_changed));
        if self.exit_policy_changed {
            parts.push("exit policy changed".into());
        }
        if self.log_changed {
            parts.push("log settings changed".into());
        }
        if self.admin_token_changed {
            parts.push("admin token changed".into());
        }
        if parts.is_empty() { "no change".into() } else { parts.join("; ") }
    }
}

/// The changes from `old` to `new`, or the settings that changed and need a restart.
pub fn diff(old: &Config, new: &Config) -> Result<ConfigDiff, Vec<&'static str>> {
    let mut restart = Vec::new();
    // Of `common`, the log settings and the admin token change live.
    let live = crate::config::CommonConfig {
        log: old.common.log.clone(),
        admin_token: old.common.admin_token.clone(),
        ..new.common.clone()
    };
    if old.common != live {
        restart.push("common");
    }
    if old.mesh != new.mesh {
        restart.push("mesh");
    }
    if old.limits != new.limits {
        restart.push("limits");
    }
    if old.nameservers != new.nameservers {
        restart.push("exit_policy.nameservers");
    }
    if old.scheduler != new.scheduler {
        restart.push("scheduler");
    }
    if !restart.is_empty() {
        return Err(restart);
    }
    let mut d = ConfigDiff {
        log_changed: old.common.log != new.common.log,
        admin_token_changed: old.common.admin_token != new.common.admin_token,
        ..ConfigDiff::default()
    };
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => d.listeners_added.push(l.clone()),
            // A new protocol is a new socket, bound like a new address.
            Some(o) if o.bind != l.bind || o.protocol != l.protocol => d.listeners_rebound.push(l.clone()),
            Some(_) => {}
        }
    }
    d.listeners_removed = removed(&old.listeners, &new.listeners, |l| &l.name);
    for p in &new.peers {
        match old.peers.iter().find(|o| o.name == p.name) {
            None => d.peers_added.push(p.clone()),
            Some(o) if o != p => d.peers_changed.push(p.clone()),
            Some(_) => {}
        }
    }
    d.peers_removed = removed(&old.peers, &new.peers, |p| &p.name);
    for r in &new.routes {
        if old.routes.iter().find(|o| o.name == r.name) != Some(r) {
            d.routes_changed.push(r.name.clone());
        }
    }
    d.routes_changed.extend(removed(&old.routes, &new.routes, |r| &r.name));
    // Route order decides which route a listener takes; a reordering is a change too.
    let order = |c: &Config| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    if d.routes_changed.is_empty() && order(old) != order(new) {
        d.routes_changed = order(new);
    }
    d.exit_policy_changed = old.exit_policy != new.exit_policy;
    Ok(d)
}

/// Names in `old` that `new` no longer has.
fn removed<T>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> Vec<String> {
    old.iter().filter(|o| !new.iter().any(|n| name(n) == name(o))).map(|o| name(o).clone()).collect()
}

#[cfg(test)]
mod tests;
