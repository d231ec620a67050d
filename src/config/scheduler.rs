//! The scheduler's config: parsed with unknown keys denied, validated as a whole (every
//! problem reported), then typed.
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
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::raw::line_of;
use super::validate::check_admin_token;
use super::validate::logging::{RawLogKeys, check_log_keys};
use super::{ConfigError, ConfigErrors, LogConfig, parse_duration};
use crate::core::pathfind::Objective;
use crate::core::wire::is_valid_node_id;

/// The node id a scheduler's certificate names, and the server name nodes dial it by.
pub const SCHEDULER_ID: &str = "scheduler";

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    bind: Option<String>,
    cert: String,
    key: String,
    ca: String,
    objective: Option<String>,
    recompute_interval: Option<String>,
    hysteresis: Option<RawHysteresis>,
    instruction_ttl: Option<String>,
    max_paths: Option<u64>,
    node_dead_after: Option<String>,
    #[serde(default)]
    pins: Vec<RawPin>,
    log_level: Option<String>,
    log_file: Option<String>,
    log_format: Option<String>,
    log_max_bytes: Option<u64>,
    log_keep: Option<u64>,
    admin_addr: Option<String>,
    admin_token: Option<String>,
    ca_key: Option<String>,
    data_dir: Option<String>,
    node_cert_lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHysteresis {
    margin: Option<f64>,
    hold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    node: String,
    route: String,
    #[serde(default)]
    relays: Vec<String>,
}

/// Reads and validates a scheduler config; relative paths are relative to the file.
pub fn load(path: &Path) -> Result<SchedulerConfig, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |errors| ConfigErrors { file: file.clone(), errors };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![err("(file)", None, format!("cannot read: {e}"))]))?;
    parse(&text, path.parent().unwrap_or_else(|| Path::new("."))).map_err(fail)
}

/// Parses and validates scheduler config text.
pub fn parse(text: &str, base: &Path) -> Result<SchedulerConfig, Vec<ConfigError>> {
    let raw: Raw = serde_yaml::from_str(text)
        .map_err(|e| vec![err("(yaml)", e.location().map(|l| l.line()), e.to_string())])?;
    let mut errors = Vec::new();
    let mut duration = |key: &str, v: &Option<String>, default: u64| -> Duration {
        match v.as_deref().map(parse_duration) {
            None => Duration::from_millis(default),
            Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(30 * 86_400) => d,
            Some(Ok(_)) => {
                errors.push(err(key, None, "must be between 1ms and 30 days".into()));
                Duration::from_millis(default)
            }
            Some(Err(e)) => {
                errors.push(err(key, None, e));
                Duration::from_millis(default)
            }
        }
    };
    let recompute_interval = duration("recompute_interval", &raw.recompute_interval, 1_000);
    let hold = duration("hysteresis.hold", &raw.hysteresis.as_ref().and_then(|h| h.hold.clone()), 5_000);
    let instruction_ttl = duration("instruction_ttl", &raw.instruction_ttl, 300_000);
    let node_dead_after = duration("node_dead_after", &raw.node_dead_after, 15_000);
    let bind = raw.bind.as_deref().unwrap_or("0.0.0.0:7900").parse::<SocketAddr>().unwrap_or_else(|_| {
        errors.push(err("bind", None, "not an IP:port".into()));
        SocketAddr::from(([0, 0, 0, 0], 7900))
    });
    let objective = parse_objective(raw.objective.as_deref().unwrap_or("latency")).unwrap_or_else(|e| {
        errors.push(err("objective", None, e));
        Objective::Latency
    });
    let margin = raw.hysteresis.as_ref().and_then(|h| h.margin).unwrap_or(0.1);
    if !(0.0..1.0).contains(&margin) {
        errors.push(err("hysteresis.margin", None, "must be at least 0 and below 1".into()));
    }
    let max_paths = raw.max_paths.unwrap_or(3);
    if !(1..=4).contains(&max_paths) {
        errors.push(err("max_paths", None, "must be 1 to 4".into()));
    }
    let files: Vec<PathBuf> = [("cert", &raw.cert), ("key", &raw.key), ("ca", &raw.ca)]
        .iter()
        .map(|(key, p)| {
            let path = base.join(p);
            if !path.is_file() {
                errors.push(err(key, None, format!("{} does not exist", path.display())));
            }
            path
        })
        .collect();
    let ca_key = raw.ca_key.as_ref().map(|p| {
        let path = base.join(p);
        if !path.is_file() {
            errors.push(err("ca_key", None, format!("{} does not exist", path.display())));
        }
        path
    });
    let data_dir = base.join(raw.data_dir.as_deref().unwrap_or("state"));
    let node_cert_lifetime = match raw.node_cert_lifetime.as_deref().map(parse_duration) {
        None => MAX_NODE_CERT_LIFETIME,
        Some(Ok(d)) if d >= Duration::from_secs(10) && d <= MAX_NODE_CERT_LIFETIME => d,
        Some(Ok(_)) => {
            errors.push(err("node_cert_lifetime", None, "must be between 10s and 90 days".into()));
            MAX_NODE_CERT_LIFETIME
        }
        Some(Err(e)) => {
            errors.push(err("node_cert_lifetime", None, e));
            MAX_NODE_CERT_LIFETIME
        }
    };
    let pins = check_pins(&raw.pins, &mut errors);
    let (admin_addr, admin_token) =
        check_admin(raw.admin_addr.as_deref(), raw.admin_token.as_deref(), &mut errors);
    let keys = RawLogKeys {
        level: raw.log_level.as_deref(),
        file: raw.log_file.as_deref(),
        format: raw.log_format.as_deref(),
        max_bytes: raw.log_max_bytes,
        keep: raw.log_keep,
    };
    let log = check_log_keys(keys, base, &mut |key, message| errors.push(err(key, None, message)));
    let Some(log) = log.filter(|_| errors.is_empty()) else {
        for e in &mut errors {
            e.line = e.line.or_else(|| line_of(text, &e.key));
        }
        return Err(errors);
    };
    Ok(SchedulerConfig {
        bind,
        cert: files[0].clone(),
        key: files[1].clone(),
        ca: files[2].clone(),
        objective,
        recompute_interval,
        hysteresis_margin: margin,
        hysteresis_hold: hold,
        instruction_ttl,
        max_paths: max_paths as usize,
        node_dead_after,
        pins,
        log,
        admin_addr,
        admin_token,
        ca_key,
        data_dir,
        node_cert_lifetime,
    })
}

/// `admin_addr` and `admin_token`, with the node's rules: a token is 16 to 256 visible
/// ASCII characters, and an address off loopback needs one.
fn check_admin(
    addr: Option<&str>,
    token: Option<&str>,
    errors: &mut Vec<ConfigError>,
) -> (SocketAddr, Option<String>) {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 9900));
    let value = addr.unwrap_or(DEFAULT_ADMIN_ADDR);
    let parsed = value.parse::<SocketAddr>().map_err(|_| {
        errors.push(err(
            "admin_addr",
            None,
            format!("`{value}` is not an IP:port address (write e.g. \"127.0.0.1:9900\" or \"[::1]:9900\")"),
        ))
    });
    let token = match token.map(|t| check_admin_token(t).map(|()| t.to_owned())) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(e)) => {
            errors.push(err("admin_token", None, e));
            Err(())
        }
    };
    if let (Ok(addr), Ok(token)) = (parsed, &token)
        && let Err(e) =
            crate::config::admin_bind::check_bind_keys(addr, token.as_deref(), "admin_addr", "admin_token")
    {
        errors.push(err("admin_addr", None, e));
    }
    (parsed.unwrap_or(fallback), token.unwrap_or_default())
}

fn check_pins(raw: &[RawPin], errors: &mut Vec<ConfigError>) -> Vec<Pin> {
    let mut pins = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let ids_ok = std::iter::once(&p.node).chain(&p.relays).all(|n| is_valid_node_id(n));
        let unique = p.relays.iter().enumerate().all(|(j, r)| *r != p.node && !p.relays[..j].contains(r));
        if !ids_ok || !unique || p.route.is_empty() {
            errors.push(err(
                &format!("pins[{i}]"),
                None,
                "needs a node id, a route and distinct relays".into(),
            ));
            continue;
        }
        pins.push(Pin { node: p.node.clone(), route: p.route.clone(), relays: p.relays.clone() });
    }
    pins
}

fn parse_objective(s: &str) -> Result<Objective, String> {
    match s {
        "latency" => Ok(Objective::Latency),
        "loss" => Ok(Objective::Loss),
        "bandwidth" => Ok(Objective::Bandwidth),
        "balanced" => Ok(Objective::Balanced { latency: 1.0, loss: 1.0, bandwidth: 1.0 }),
        other => Err(format!("`{other}` is not one of latency, loss, bandwidth, balanced")),
    }
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
            (LogLevel::Info, LogFormat::Text, 64 << 20, 5)
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
            (LogLevel::Debug, LogFormat::Json, 2 << 20, 9)
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
