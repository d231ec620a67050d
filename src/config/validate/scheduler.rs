//! Checks a scheduler config as written ([`RawSchedulerConfig`]) and builds the typed
//! [`SchedulerConfig`], with the node config's checks and error quality: every problem
//! at once, each with its key and line.

use std::path::Path;
use std::time::Duration;

use super::Checker;
use super::logging::RawLogKeys;
use crate::config::raw::{RawPin, RawSchedulerConfig, RawState};
use crate::config::scheduler::{
    DEFAULT_ADMIN_ADDR, EtcdConfig, MAX_NODE_CERT_LIFETIME, Pin, SchedulerConfig,
};
use crate::config::{ConfigError, parse_duration};
use crate::core::pathfind::Objective;
use crate::core::wire::is_valid_node_id;

const DEFAULT_BIND: &str = "0.0.0.0:7900";
const DEFAULT_DATA_DIR: &str = "state";
/// Shortest `node_cert_lifetime`: renewal starts at two thirds of a lifetime and retries
/// every twentieth, which needs seconds to mean anything.
const MIN_NODE_CERT_LIFETIME: Duration = Duration::from_secs(10);

/// Validates `raw`; relative paths are resolved against `base_dir`. On failure returns
/// every problem found, in file order.
pub(crate) fn validate_scheduler(
    raw: RawSchedulerConfig,
    base_dir: &Path,
) -> Result<SchedulerConfig, Vec<ConfigError>> {
    let mut check = Checker { text: &raw.text, errors: Vec::new(), bad_route_match: false };
    let bind = check.socket_addr("bind", raw.bind.as_deref(), DEFAULT_BIND);
    let cert = check.existing_file("cert", raw.cert.as_deref(), base_dir);
    let key = check.existing_file("key", raw.key.as_deref(), base_dir);
    let ca = check.existing_file("ca", raw.ca.as_deref(), base_dir);
    let objective = check.check("objective", parse_objective(raw.objective.as_deref().unwrap_or("latency")));
    let recompute_interval =
        check.duration("recompute_interval", raw.recompute_interval.as_deref(), Duration::from_secs(1));
    let hysteresis = raw.hysteresis.as_ref();
    let margin = check.check("hysteresis.margin", margin(hysteresis.and_then(|h| h.margin)));
    let hold =
        check.duration("hysteresis.hold", hysteresis.and_then(|h| h.hold.as_deref()), Duration::from_secs(5));
    let instruction_ttl =
        check.duration("instruction_ttl", raw.instruction_ttl.as_deref(), Duration::from_secs(300));
    let max_paths = check.count("max_paths", raw.max_paths, 3, (1, 4));
    let node_dead_after =
        check.duration("node_dead_after", raw.node_dead_after.as_deref(), Duration::from_secs(15));
    let max_links = check.count("max_links", raw.max_links, 32, (2, 1024));
    let pins = check.pins(&raw.pins);
    let log = check.scheduler_log(&raw, base_dir);
    let (admin_addr, admin_token) =
        check.admin_api("", raw.admin_addr.as_deref(), raw.admin_token.as_deref(), DEFAULT_ADMIN_ADDR);
    let ca_key = match raw.ca_key.as_deref() {
        None => Some(None),
        Some(p) => check.existing_file("ca_key", Some(p), base_dir).map(Some),
    };
    let data_dir = base_dir.join(raw.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR));
    let node_cert_lifetime =
        check.check("node_cert_lifetime", node_cert_lifetime(raw.node_cert_lifetime.as_deref()));
    let etcd = match &raw.state {
        None => Some(None),
        Some(state) => check.etcd(state).map(Some),
    };
    check.finish(|| {
        Some(SchedulerConfig {
            bind: bind?,
            cert: cert?,
            key: key?,
            ca: ca?,
            objective: objective?,
            recompute_interval: recompute_interval?,
            hysteresis_margin: margin?,
            hysteresis_hold: hold?,
            instruction_ttl: instruction_ttl?,
            max_paths: usize::try_from(max_paths?).ok()?,
            node_dead_after: node_dead_after?,
            max_links: usize::try_from(max_links?).ok()?,
            pins: pins?,
            log: log?,
            admin_addr: admin_addr?,
            admin_token: admin_token?,
            ca_key: ca_key?,
            data_dir,
            node_cert_lifetime: node_cert_lifetime?,
            etcd: etcd?,
        })
    })
}

impl Checker<'_> {
    /// The operator's pins: a node id, a route, and distinct relays other than the node.
    fn pins(&mut self, raw: &[RawPin]) -> Option<Vec<Pin>> {
        let mut pins = Some(Vec::new());
        for (i, p) in raw.iter().enumerate() {
            let node = self.required(format!("pins[{i}].node"), p.node.as_deref());
            let route = self.required(format!("pins[{i}].route"), p.route.as_deref());
            let ids_ok = node.into_iter().chain(p.relays.iter().map(String::as_str)).all(is_valid_node_id);
            let unique = p
                .relays
                .iter()
                .enumerate()
                .all(|(j, r)| Some(r.as_str()) != node && !p.relays[..j].contains(r));
            let (Some(node), Some(route)) = (node, route) else {
                // Already reported under the missing key.
                pins = None;
                continue;
            };
            let checked = if ids_ok && unique {
                Ok(Pin { node: node.to_owned(), route: route.to_owned(), relays: p.relays.clone() })
            } else {
                Err("needs a valid node id and distinct relay ids, none of them the node itself".to_owned())
            };
            match (self.check(format!("pins[{i}]"), checked), pins.as_mut()) {
                (Some(pin), Some(list)) => list.push(pin),
                _ => pins = None,
            }
        }
        pins
    }

    /// `state`: endpoints as URLs (`http://` added to a bare `host:port`), a prefix of
    /// path segments, a lease etcd can keep (2 s to 60 s), a name fit for a log line.
    fn etcd(&mut self, raw: &RawState) -> Option<EtcdConfig> {
        let mut endpoints = Some(Vec::new());
        if raw.etcd.is_empty() {
            self.check::<()>("state.etcd", Err("needs at least one endpoint (`http://host:2379`)".into()));
            endpoints = None;
        }
        // Every valid URL, so a repeat is found even after an error elsewhere in the list.
        let mut seen: Vec<String> = Vec::new();
        for (i, e) in raw.etcd.iter().enumerate() {
            let url = etcd_endpoint(e);
            let checked = url.and_then(|u| {
                if seen.contains(&u) {
                    Err("is listed twice".into())
                } else {
                    seen.push(u.clone());
                    Ok(u)
                }
            });
            match (self.check(format!("state.etcd[{i}]"), checked), endpoints.as_mut()) {
                (Some(u), Some(list)) => list.push(u),
                _ => endpoints = None,
            }
        }
        let prefix = self.check("state.prefix", etcd_prefix(raw.prefix.as_deref().unwrap_or("/proxy")));
        let lease =
            self.duration("state.lease", raw.lease.as_deref(), Duration::from_secs(3)).and_then(|d| {
                let ok =
                    (Duration::from_secs(2)..=Duration::from_secs(60)).contains(&d) && d.subsec_nanos() == 0;
                self.check(
                    "state.lease",
                    if ok { Ok(d) } else { Err("must be whole seconds, 2s to 60s".into()) },
                )
            });
        let name = match raw.name.as_deref() {
            Some(n) => self.check(
                "state.name",
                if !n.is_empty() && n.len() <= 63 && n.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(n.to_owned())
                } else {
                    Err("must be 1-63 visible ASCII characters".into())
                },
            ),
            None => {
                let mut bytes = [0u8; 4];
                rand::fill(&mut bytes);
                Some(format!("scheduler-{}", crate::core::join_token::hex(&bytes)))
            }
        };
        Some(EtcdConfig { endpoints: endpoints?, prefix: prefix?, lease: lease?, name: name? })
    }

    /// The logging keys, at the top level of a scheduler config.
    fn scheduler_log(&mut self, raw: &RawSchedulerConfig, base: &Path) -> Option<crate::config::LogConfig> {
        let keys = RawLogKeys {
            level: raw.log_level.as_deref(),
            file: raw.log_file.as_deref(),
            format: raw.log_format.as_deref(),
            max_bytes: raw.log_max_bytes,
            keep: raw.log_keep,
        };
        self.log_keys("", keys, base)
    }
}

/// An etcd client URL: `http://host:port` (a bare `host:port` gets `http://`). TLS to
/// etcd is not supported yet, so `https://` is refused rather than ignored.
fn etcd_endpoint(value: &str) -> Result<String, String> {
    let rest = match value.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "`{scheme}://` is not supported: give `http://host:port` (etcd over TLS is not yet)"
            ));
        }
        None => value,
    };
    let rest = rest.trim_end_matches('/');
    super::check_host_port(rest).map_err(|e| format!("`{value}`: {e}"))?;
    Ok(format!("http://{rest}"))
}

/// `state.prefix`: `/` and then segments of letters, digits, `-`, `_`, `.`; no trailing `/`.
fn etcd_prefix(value: &str) -> Result<String, String> {
    let segments_ok = value.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|s| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
    });
    if segments_ok && value.len() <= 128 {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a key prefix: write `/` then segments of letters, digits, `-`, `_`, `.` (e.g. `/proxy/prod`)"
        ))
    }
}

/// `hysteresis.margin`: a fraction in `[0, 1)`, 0.1 when absent.
fn margin(value: Option<f64>) -> Result<f64, String> {
    let margin = value.unwrap_or(0.1);
    if (0.0..1.0).contains(&margin) { Ok(margin) } else { Err("must be at least 0 and below 1".into()) }
}

/// `node_cert_lifetime`: 10 s to 90 days, 90 days when absent.
fn node_cert_lifetime(value: Option<&str>) -> Result<Duration, String> {
    let Some(value) = value else { return Ok(MAX_NODE_CERT_LIFETIME) };
    let d = parse_duration(value)?;
    if (MIN_NODE_CERT_LIFETIME..=MAX_NODE_CERT_LIFETIME).contains(&d) {
        Ok(d)
    } else {
        Err("must be between 10s and 90 days".into())
    }
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
