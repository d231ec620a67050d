//! What a reloaded scheduler config changes (`SIGHUP`), worked out before anything is
//! applied: the keys that change live, or the keys that need a restart (then nothing is
//! applied, as with the node).

use crate::config::scheduler::SchedulerConfig;

/// Why a scheduler reload was refused; the running config stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changed settings need a restart: {}; nothing was applied", .0.join(", "))]
pub struct NeedsRestart(pub Vec<&'static str>);

/// The live changes from `old` to `new`, each as `key old -> new` for the log, or the
/// changed keys only a restart can apply. The log keys are listed by the logger itself.
pub fn changes(old: &SchedulerConfig, new: &SchedulerConfig) -> Result<Vec<String>, NeedsRestart> {
    let mut restart = Vec::new();
    let mut fixed = |key: &'static str, same: bool| {
        if !same {
            restart.push(key);
        }
    };
    // The endpoint and its identity, the admin listener, the signer and where the
    // registry lives are built once at start.
    fixed("bind", old.bind == new.bind);
    fixed("cert", old.cert == new.cert);
    fixed("key", old.key == new.key);
    fixed("ca", old.ca == new.ca);
    fixed("admin_addr", old.admin_addr == new.admin_addr);
    fixed("ca_key", old.ca_key == new.ca_key);
    fixed("data_dir", old.data_dir == new.data_dir);
    fixed("node_cert_lifetime", old.node_cert_lifetime == new.node_cert_lifetime);
    fixed("state", old.etcd == new.etcd);
    if !restart.is_empty() {
        return Err(NeedsRestart(restart));
    }
    let mut live = Vec::new();
    let mut changed = |key: &str, old: String, new: String| {
        if old != new {
            live.push(format!("{key} {old} -> {new}"));
        }
    };
    changed(
        "objective",
        format!("{:?}", old.objective).to_lowercase(),
        format!("{:?}", new.objective).to_lowercase(),
    );
    changed(
        "recompute_interval",
        format!("{:?}", old.recompute_interval),
        format!("{:?}", new.recompute_interval),
    );
    changed("hysteresis.margin", old.hysteresis_margin.to_string(), new.hysteresis_margin.to_string());
    changed("hysteresis.hold", format!("{:?}", old.hysteresis_hold), format!("{:?}", new.hysteresis_hold));
    changed("instruction_ttl", format!("{:?}", old.instruction_ttl), format!("{:?}", new.instruction_ttl));
    changed("max_paths", old.max_paths.to_string(), new.max_paths.to_string());
    changed("node_dead_after", format!("{:?}", old.node_dead_after), format!("{:?}", new.node_dead_after));
    changed("max_links", old.max_links.to_string(), new.max_links.to_string());
    if old.pins != new.pins {
        live.push(format!("pins: {} -> {}", old.pins.len(), new.pins.len()));
    }
    if old.admin_token != new.admin_token {
        // Never the token itself: logs are read by more people than the config.
        live.push("admin_token changed".into());
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> SchedulerConfig {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let files = "cert: certs/node-cert.placeholder\nkey: certs/node-key.placeholder\nca: certs/ca-cert.placeholder\n";
        crate::config::scheduler::parse(&format!("{files}{extra}"), &base).expect("valid")
    }

    #[test]
    fn routing_keys_and_the_admin_token_change_live() {
        let old = config("objective: latency\n");
        let new = config(
            "objective: loss\nrecompute_interval: 2s\nhysteresis: { margin: 0.2, hold: 1s }\n\
             pins: [ { node: a, route: r, relays: [b] } ]\nadmin_token: 0123456789abcdef\n",
        );
        let live = changes(&old, &new).expect("live");
        assert_eq!(
            live,
            [
                "objective latency -> loss",
                "recompute_interval 1s -> 2s",
                "hysteresis.margin 0.1 -> 0.2",
                "hysteresis.hold 5s -> 1s",
                "pins: 0 -> 1",
                "admin_token changed",
            ]
        );
        assert!(changes(&old, &old).expect("same").is_empty());
    }

    #[test]
    fn the_endpoint_and_identity_need_a_restart() {
        let old = config("");
        let new = config("bind: \"127.0.0.1:7999\"\nadmin_addr: \"127.0.0.1:9999\"\nobjective: loss\n");
        let refused = changes(&old, &new).expect_err("restart");
        assert_eq!(refused.0, ["bind", "admin_addr"]);
        assert_eq!(
            refused.to_string(),
            "changed settings need a restart: bind, admin_addr; nothing was applied"
        );
    }
}
