//! The scheduler's config: the same path as the node's: parsed as written with unknown
//! keys denied (`raw`), checked as a whole with every problem reported with its key and
//! line (`validate::scheduler`), then typed.
//!
//! ```yaml
//! bind: "0.0.0.0:7900"          # UDP address of the scheduler's QUIC endpoint
//! cert: scheduler.crt            # names `scheduler`; signed by the mesh CA
//! key: scheduler.key
//! ca: ca.crt
//! objective: latency             # latency | loss | bandwidth | balanced
//! recompute_interval: "1s"
//! hysteresis: { margin: 0.1, hold: "5s" }
//! instruction_ttl: "5m"
//! max_paths: 3                   # primary plus alternatives per route
//! node_dead_after: "15s"         # no report for this long: the node's links are dead
//! max_links: 32                  # links a node keeps; a partial mesh past 33 nodes
//! pins: [ { node: a, route: web, relays: [b] } ]
//! log_level: info                # the node's `common.log_*` keys, at the top level
//! log_file: scheduler.log        # default: standard error
//! log_format: text               # text | json
//! log_max_bytes: 67108864        # rotate before the file passes this
//! log_keep: 5                    # rotated files kept
//! admin_addr: "127.0.0.1:9900"   # the scheduler's admin API (HTTP)
//! admin_token: ...               # 16-256 visible ASCII; required off loopback
//! ca_key: ca.key                 # the mesh CA's key: signs `mesh join` and renewals
//! data_dir: state                # the registry: join tokens, members, removals
//! node_cert_lifetime: "90d"      # certificates it signs; at most 90 days
//! state:                         # several schedulers, one mesh (default: the file store)
//!   etcd: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
//!   prefix: /proxy               # keys live under it; one prefix per mesh
//!   lease: "3s"                  # leadership lease: a dead leader is replaced after this
//!   name: sched-a                # this scheduler, as the others see it (default: random)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, ConfigErrors, LogConfig};
use crate::core::pathfind::Objective;

pub use crate::core::control::SCHEDULER_ID;

/// Where the scheduler's admin API answers unless `admin_addr` says otherwise.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9900";

/// A validated scheduler config.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// UDP address of the QUIC endpoint.
    pub bind: SocketAddr,
    /// PEM certificate naming [`SCHEDULER_ID`].
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The mesh CA.
    pub ca: PathBuf,
    /// What "best path" means.
    pub objective: Objective,
    /// How often paths are recomputed.
    pub recompute_interval: Duration,
    /// A route moves only to a path better by this fraction...
    pub hysteresis_margin: f64,
    /// ...for this long.
    pub hysteresis_hold: Duration,
    /// How long instructions are fresh.
    pub instruction_ttl: Duration,
    /// Paths per route: the primary and up to `max_paths - 1` alternatives.
    pub max_paths: usize,
    /// A node that has not reported for this long has no live links.
    pub node_dead_after: Duration,
    /// Operator pins: these routes use these relays, whatever the measurements say.
    pub pins: Vec<Pin>,
    /// Logging (`log_level`, `log_file`, `log_format`, `log_max_bytes`, `log_keep`).
    pub log: LogConfig,
    /// TCP address of the admin API (`admin_addr`; port 0 picks a free port).
    pub admin_addr: SocketAddr,
    /// Bearer token the admin API requires (`admin_token`; needed off loopback).
    pub admin_token: Option<String>,
    /// The mesh CA's key (`ca_key`): with it the scheduler signs certificates for joining
    /// and renewing nodes; without it, it enrolls no one.
    pub ca_key: Option<PathBuf>,
    /// Where the registry lives (`data_dir`, default `state` next to the config file).
    pub data_dir: PathBuf,
    /// Lifetime of the certificates it signs (`node_cert_lifetime`, at most 90 days).
    pub node_cert_lifetime: Duration,
    /// The most links the scheduler has a node keep (`max_links`): past `max_links + 1`
    /// nodes the mesh is partial (near peers, a few long-range ones, and what paths use).
    pub max_links: usize,
    /// Shared state and leadership in etcd (`state.etcd`); `None`: the registry file in
    /// `data_dir`, and this scheduler always leads.
    pub etcd: Option<EtcdConfig>,
}

/// `state`: the etcd cluster several schedulers of one mesh share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix (no trailing slash).
    pub prefix: String,
    /// The leader's lease: a leader that stops renewing it is replaced this long after.
    pub lease: Duration,
    /// This scheduler's name in the leader record.
    pub name: String,
}

/// The longest a certificate the scheduler signs may live.
pub const MAX_NODE_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// An operator's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The node whose route is pinned.
    pub node: String,
    /// The route.
    pub route: String,
    /// The relays to use (empty: direct).
    pub relays: Vec<String>,
}

/// Reads and validates a scheduler config; relative paths are relative to the file.
pub fn load(path: &Path) -> Result<SchedulerConfig, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |errors| ConfigErrors { file: file.clone(), errors };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![err("(file)", None, format!("cannot read: {e}"))]))?;
    parse(&text, path.parent().unwrap_or_else(|| Path::new("."))).map_err(fail)
}

/// Parses and validates scheduler config text; relative paths are resolved against
/// `base`. On failure returns every problem, each with its key and line.
pub fn parse(text: &str, base: &Path) -> Result<SchedulerConfig, Vec<ConfigError>> {
    let raw = super::raw::parse_scheduler(text)?;
    super::validate::scheduler::validate_scheduler(raw, base)
}

fn err(key: &str, line: Option<usize>, message: String) -> ConfigError {
    ConfigError { key: key.to_string(), line, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogLevel};

    fn base() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    const FILES: &str =
        "cert: certs/node-cert.placeholder\nkey: certs/node-key.placeholder\nca: certs/ca-cert.placeholder\n";

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = parse(FILES, &base()).expect("valid");
        assert_eq!(
            (c.objective, c.max_paths, c.recompute_interval),
            (Objective::Latency, 3, Duration::from_secs(1))
        );
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(
            (c.log.level, c.log.format, c.log.max_bytes, c.log.keep),
            (LogLevel::Info.into(), LogFormat::Text, 64 << 20, 5)
        );
        assert_eq!(c.log.file, None);
    }

    #[test]
    fn the_logging_keys_are_the_nodes() {
        let text = format!(
            "{FILES}log_level: debug\nlog_file: scheduler.log\nlog_format: json\nlog_max_bytes: 2097152\nlog_keep: 9\n"
        );
        let c = parse(&text, &base()).expect("valid");
        let log = c.log;
        assert_eq!(
            (log.level, log.format, log.max_bytes, log.keep),
            (LogLevel::Debug.into(), LogFormat::Json, 2 << 20, 9)
        );
        assert_eq!(log.file, Some(base().join("scheduler.log")));
    }

    #[test]
    fn bad_logging_keys_are_reported_with_key_and_line() {
        let text = format!(
            "{FILES}log_level: loud\nlog_file: no-such-dir/s.log\nlog_format: xml\nlog_max_bytes: 5\nlog_keep: 1000\n"
        );
        let errors = parse(&text, &base()).expect_err("invalid");
        let found: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            found,
            vec![
                ("log_level", Some(4)),
                ("log_file", Some(5)),
                ("log_format", Some(6)),
                ("log_max_bytes", Some(7)),
                ("log_keep", Some(8)),
            ]
        );
        assert!(errors[0].message.contains("unknown log level `loud`"), "{errors:?}");
        assert!(errors[1].message.contains("does not exist"), "{errors:?}");
        assert!(errors[4].message.contains("1 to 100"), "{errors:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = format!(
            "{FILES}bind: nowhere\nobjective: fastest\nmax_paths: 9\nhysteresis: {{ margin: 2, hold: \"0s\" }}\npins: [ {{ node: a, route: r, relays: [a] }} ]\n"
        );
        let errors = parse(&text, &base()).expect_err("invalid");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in ["bind", "objective", "max_paths", "hysteresis.margin", "hysteresis.hold", "pins[0]"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert!(errors.iter().all(|e| e.line.is_some()), "an error without a line: {errors:?}");
        let unknown = parse(&format!("{FILES}colour: blue\n"), &base()).expect_err("unknown key");
        assert!(unknown[0].message.contains("colour"), "{unknown:?}");
    }

    #[test]
    fn missing_and_unreadable_keys_are_all_named_with_their_lines() {
        let text = "key: certs/node-key.placeholder\nca: certs/no-such.pem\npins:\n  - { node: a }\n";
        let errors = parse(text, &base()).expect_err("invalid");
        let found: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(found, vec![("ca", Some(2)), ("pins[0].route", Some(4)), ("cert", None)], "{errors:?}");
        assert!(errors[0].message.contains("file not found"), "{errors:?}");
        assert!(errors[2].message.contains("is required"), "{errors:?}");
        let empty = parse("# nothing\n", &base()).expect_err("empty");
        assert!(empty[0].message.contains("scheduler config needs"), "{empty:?}");
    }

    #[test]
    fn the_etcd_state_and_max_links_are_checked_with_their_keys() {
        let c = parse(FILES, &base()).expect("valid");
        assert_eq!((c.etcd, c.max_links), (None, 32), "the file store and 32 links by default");
        let ok = format!(
            "{FILES}max_links: 8\nstate:\n  etcd: [\"10.0.0.1:2379\", \"http://10.0.0.2:2379/\"]\n  name: s1\n"
        );
        let c = parse(&ok, &base()).expect("valid");
        let etcd = c.etcd.expect("etcd");
        assert_eq!(etcd.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(
            (etcd.prefix.as_str(), etcd.lease, etcd.name.as_str(), c.max_links),
            ("/proxy", Duration::from_secs(3), "s1", 8)
        );
        let bad = format!(
            "{FILES}max_links: 1\nstate:\n  etcd: [\"https://a:2379\", \"b:2379\", \"http://b:2379\", \"nohost\"]\n  prefix: proxy/\n  lease: 1500ms\n  name: \"has space\"\n"
        );
        let errors = parse(&bad, &base()).expect_err("invalid");
        let found: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "max_links",
            "state.etcd[0]",
            "state.etcd[2]",
            "state.etcd[3]",
            "state.prefix",
            "state.lease",
            "state.name",
        ] {
            assert!(found.contains(&key), "{key} missing from {errors:?}");
        }
        assert!(errors.iter().any(|e| e.message.contains("not supported")), "{errors:?}");
        assert!(errors.iter().any(|e| e.message.contains("listed twice")), "{errors:?}");
        let empty = parse(&format!("{FILES}state: {{ etcd: [] }}\n"), &base()).expect_err("no endpoint");
        assert_eq!(empty[0].key, "state.etcd");
    }

    #[test]
    fn the_admin_api_defaults_to_loopback_without_a_token() {
        let c = parse(FILES, &base()).expect("valid");
        assert_eq!(c.admin_addr, DEFAULT_ADMIN_ADDR.parse().expect("addr"));
        assert_eq!(c.admin_token, None);
        let c = parse(&format!("{FILES}admin_addr: \"127.0.0.1:0\"\n"), &base()).expect("valid");
        assert_eq!(c.admin_addr.port(), 0);
    }

    #[test]
    fn a_public_admin_address_needs_a_token_of_fair_length() {
        let first = |text: &str| {
            let errors = parse(text, &base()).expect_err("invalid");
            (errors[0].key.clone(), errors[0].line, errors[0].message.clone())
        };
        let (key, line, message) = first(&format!("{FILES}admin_addr: \"0.0.0.0:9900\"\n"));
        assert_eq!((key.as_str(), line), ("admin_addr", Some(4)));
        assert!(message.contains("admin_token") && !message.contains("common."), "{message}");
        let (key, line, message) = first(&format!("{FILES}admin_token: short\n"));
        assert_eq!((key.as_str(), line), ("admin_token", Some(4)));
        assert!(message.contains("16 to 256"), "{message}");
        let (key, _, message) = first(&format!("{FILES}admin_token: \"{}\"\n", "spaced out token x"));
        assert!(key == "admin_token" && message.contains("visible ASCII"), "{message}");
        let (key, _, message) = first(&format!("{FILES}admin_addr: localhost:9900\n"));
        assert!(key == "admin_addr" && message.contains("not an IP:port"), "{message}");
        let token = "0123456789abcdef0123";
        let c = parse(&format!("{FILES}admin_addr: \"0.0.0.0:9900\"\nadmin_token: {token}\n"), &base())
            .expect("valid");
        assert_eq!((c.admin_addr.port(), c.admin_token.as_deref()), (9900, Some(token)));
    }
}
