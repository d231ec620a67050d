//! Checks a [`RawConfig`] field by field and across fields, and builds the typed
//! [`Config`].
//!
//! Every check runs even after one fails, so a single `proxy check` lists every problem
//! in the file. A section is built only from values that passed; the typed config is
//! returned only when nothing failed at all.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::logging::{RawLogKeys, check_log_keys};
use super::raw::{self, RawConfig, RawMatch, RawRoute, RawTargets};
use super::{
    CommonConfig, Config, ConfigError, ListenerConfig, ListenerProtocol, PeerConfig, PeerTransport,
    RouteConfig, RouteMatch, SchedulerClientConfig, parse_duration,
};

const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
const DEFAULT_MESH_BIND: &str = "0.0.0.0:7800";
const DEFAULT_DATA_DIR: &str = "data";
const MIB: u64 = 1024 * 1024;
/// Longest duration accepted anywhere: deadlines are computed by adding these to instants,
/// which must never overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);
/// Most concurrent flows per node: the flow semaphore and the shutdown drain count
/// permits in a `u32`.
const MAX_FLOWS: u64 = 1 << 24;
/// Largest UDP payload IPv4 can carry (65,535 less the IP and UDP headers): the top of
/// `limits.max_datagram`.
const MAX_UDP_PAYLOAD: u64 = 65_507;
/// Largest `limits.max_subflows` (an exit accepts no more per flow).
const MAX_SUBFLOWS: u64 = crate::core::multipath::MAX_SUBFLOWS as u64;
/// QUIC encodes flow-control windows as variable-length integers of at most 62 bits;
/// quinn refuses larger values when the endpoint is built, which is too late.
const QUIC_VARINT_MAX: u64 = (1 << 62) - 1;
/// Socket buffer sizes go to `setsockopt` as a C `int`.
const UDP_BUFFER_MAX: u64 = i32::MAX as u64;

/// Validates `raw` and builds the typed [`Config`]. Relative paths (`cert`, `key`, `ca`,
/// `data_dir`, `log_file`) are resolved against `base_dir`, and the certificate files
/// must exist. On failure returns every problem found, in file order.
pub(crate) fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut check = Checker { text: &raw.text, errors: Vec::new(), bad_route_match: false };
    let node_id = raw.common.node_id.as_deref().unwrap_or_default();
    let common = check.common(&raw.common, base_dir);
    let listeners = check.listeners(&raw.listeners);
    let scheduler = match &raw.scheduler {
        None => Some(None),
        Some(s) => check.scheduler(s).map(Some),
    };
    let peers = check.peers(&raw.peers, node_id);
    let routes = check.routes(&raw, node_id);
    check.unrouted_listeners(&raw);
    let mesh = check.mesh(&raw.mesh, base_dir);
    let limits = check.limits(raw.limits.as_ref());
    if let (Some(m), Some(l)) = (&mesh, &limits) {
        check.budget_fits_windows(m, l);
        check.sealed_headers_fit(m, l);
    }
    let exit_policy = check.exit_policy(raw.exit_policy.as_ref().map(|p| p.allow.as_slice()));
    let nameservers = check.nameservers(raw.exit_policy.as_ref().map(|p| p.nameservers.as_slice()));
    check.finish(|| {
        Some(Config {
            source: None,
            common: common?,
            listeners: listeners?,
            scheduler: scheduler?,
            peers: peers?,
            routes: routes?,
            mesh: mesh?,
            limits: limits?,
            exit_policy: exit_policy?,
            nameservers: nameservers?,
        })
    })
}

/// Collects errors while the checks run.
struct Checker<'a> {
    /// The config text, to find the line of a key.
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Some route's `match` was refused, so which listeners are routed is unknown.
    bad_route_match: bool,
}

impl Checker<'_> {
    /// The errors in file order, or what `build` makes of the values that passed. Every
    /// check that fails reports, so `build` cannot fail when none did; should a future
    /// check forget to, this says so rather than panic.
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<ConfigError>> {
        let mut errors = self.errors;
        if !errors.is_empty() {
            // Stable: errors without a line, or on the same line, keep the order of checks.
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(errors);
        }
        build().ok_or_else(|| {
            vec![ConfigError {
                key: "(config)".into(),
                line: None,
                message: "internal error: a check failed without saying why".into(),
            }]
        })
    }

    /// The logging keys under `prefix` (`common.` for a node, nothing for the scheduler).
    fn log_keys(&mut self, prefix: &str, keys: RawLogKeys<'_>, base: &Path) -> Option<super::LogConfig> {
        check_log_keys(keys, base, &mut |key, message| self.error(format!("{prefix}{key}"), message))
    }

    /// `admin_addr` and `admin_token` under `prefix`: the address (`default` when absent),
    /// the token (`Some(None)` when absent), and the rule that an address off loopback needs
    /// a token. `None` where a key failed.
    fn admin_api(
        &mut self,
        prefix: &str,
        addr: Option<&str>,
        token: Option<&str>,
        default: &str,
    ) -> (Option<SocketAddr>, Option<Option<String>>) {
        let (addr_key, token_key) = (format!("{prefix}admin_addr"), format!("{prefix}admin_token"));
        let addr = self.socket_addr(addr_key.clone(), addr, default);
        let token = match token {
            None => Some(None),
            Some(t) => self.check(token_key.clone(), check_admin_token(t).map(|()| Some(t.to_owned()))),
        };
        if let (Some(a), Some(t)) = (addr, &token) {
            let rule = crate::config::admin_bind::check_bind_keys(a, t.as_deref(), &addr_key, &token_key);
            self.check(addr_key, rule);
        }
        (addr, token)
    }

    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let line = raw::line_of(self.text, &key);
        self.errors.push(ConfigError { key, line, message: message.into() });
    }

    /// Records `result`'s error under `key`; the value when it passed.
    fn check<T>(&mut self, key: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(key, message)).ok()
    }

    /// A required, non-blank string.
    fn required<'v>(&mut self, key: impl Into<String>, value: Option<&'v str>) -> Option<&'v str> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            Some(_) => self.check(key, Err("must not be empty".into())),
            None => self.check(key, Err("is required".into())),
        }
    }

    /// An optional socket address (`IP:port`), `default` when absent.
    fn socket_addr(
        &mut self,
        key: impl Into<String>,
        value: Option<&str>,
        default: &str,
    ) -> Option<SocketAddr> {
        let value = value.unwrap_or(default);
        let parsed = value.parse::<SocketAddr>().map_err(|_| {
            format!("`{value}` is not an IP:port address (write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")")
        });
        self.check(key, parsed)
    }

    /// An optional `host:port`: `Some(None)` when absent, `None` when invalid.
    fn host_port(&mut self, key: impl Into<String>, value: Option<&str>) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(v) => self.check(key, check_host_port(v).map(|()| Some(v.to_owned()))),
        }
    }

    /// An optional positive duration, `default` when absent.
    fn duration(
        &mut self,
        key: impl Into<String>,
        value: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let parsed = parse_duration(value).and_then(|d| {
            if d.is_zero() {
                Err("must be greater than zero".to_owned())
            } else if d > MAX_DURATION {
                Err("must be at most 30 days".to_owned())
            } else {
                Ok(d)
            }
        });
        self.check(key, parsed)
    }

    /// An optional count in `min..=max`, `default` when absent.
    fn count(
        &mut self,
        key: impl Into<String>,
        value: Option<u64>,
        default: u64,
        (min, max): (u64, u64),
    ) -> Option<u64> {
        let value = value.unwrap_or(default);
        let checked = if value < min {
            Err(if min == 1 {
                "must be greater than zero".to_owned()
            } else {
                format!("must be at least {min}")
            })
        } else if value > max {
            Err(format!("must be at most {max}"))
        } else {
            Ok(value)
        };
        self.check(key, checked)
    }

    /// A required path to an existing file, resolved against `base`.
    fn existing_file(&mut self, key: &str, value: Option<&str>, base: &Path) -> Option<PathBuf> {
        let path = base.join(self.required(key, value)?);
        if path.is_file() {
            Some(path)
        } else if path.exists() {
            self.check(key, Err(format!("`{}` is not a file", path.display())))
        } else {
            self.check(key, Err(format!("file not found: `{}`", path.display())))
        }
    }

    /// Reports every name used more than once in a list section.
    fn duplicates<'n>(&mut self, section: &str, names: impl Iterator<Item = Option<&'n str>>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let Some(name) = name else { continue };
            if let Some(first) = seen.get(name) {
                self.error(
                    format!("{section}[{i}].name"),
                    format!("duplicate name `{name}` (also {section}[{first}])"),
                );
            } else {
                seen.insert(name, i);
            }
        }
    }
}

impl Checker<'_> {
    fn common(&mut self, raw: &raw::RawCommon, base: &Path) -> Option<CommonConfig> {
        let node_id = self.required("common.node_id", raw.node_id.as_deref());
        let node_id = node_id.and_then(|id| self.check("common.node_id", check_node_id(id)));
        let region = self.required("common.region", raw.region.as_deref());
        let keys = RawLogKeys {
            level: raw.log_level.as_deref(),
            file: raw.log_file.as_deref(),
            format: raw.log_format.as_deref(),
            max_bytes: raw.log_max_bytes,
            keep: raw.log_keep,
        };
        let log = self.log_keys("common.", keys, base);
        let (admin_addr, admin_token) = self.admin_api(
            "common.",
            raw.admin_addr.as_deref(),
            raw.admin_token.as_deref(),
            DEFAULT_ADMIN_ADDR,
        );
        let log = log?;
        Some(CommonConfig {
            node_id: node_id?.to_owned(),
            region: region?.to_owned(),
            log,
            admin_addr: admin_addr?,
            admin_token: admin_token?,
        })
    }

    fn listeners(&mut self, raw: &[raw::RawListener]) -> Option<Vec<ListenerConfig>> {
        self.duplicates("listeners", raw.iter().map(|l| l.name.as_deref()));
        let mut out = Vec::new();
        // TCP and UDP ports are separate: one address may have a listener of each.
        let mut bound: HashMap<(SocketAddr, ListenerProtocol), usize> = HashMap::new();
        for (i, listener) in raw.iter().enumerate() {
            let name = self.required(format!("listeners[{i}].name"), listener.name.as_deref());
            let protocol =
                self.check(format!("listeners[{i}].protocol"), parse_protocol(listener.protocol.as_deref()));
            let key = format!("listeners[{i}].bind");
            let bind = match self.required(key.clone(), listener.bind.as_deref()) {
                Some(b) => self.socket_addr(key.clone(), Some(b), ""),
                None => None,
            };
            if let Some(addr) = bind.filter(|a| a.port() != 0) {
                // Two listeners on one address would fail at bind time; say so now.
                let protocol = protocol.unwrap_or_default();
                match bound.get(&(addr, protocol)) {
                    Some(first) => self.error(
                        key,
                        format!(
                            "{} address {addr} is already bound by listeners[{first}]",
                            protocol.as_str()
                        ),
                    ),
                    None => {
                        bound.insert((addr, protocol), i);
                    }
                }
            }
            if let (Some(name), Some(bind), Some(protocol)) = (name, bind, protocol) {
                out.push(ListenerConfig { name: name.to_owned(), bind, protocol });
            }
        }
        (out.len() == raw.len()).then_some(out)
    }

    fn scheduler(&mut self, raw: &raw::RawScheduler) -> Option<SchedulerClientConfig> {
        let addresses = match (&raw.address, &raw.addresses) {
            (Some(_), Some(_)) => self.check(
                "scheduler.addresses",
                Err::<Vec<String>, _>("give `address` or `addresses`, not both".into()),
            ),
            (_, Some(list)) if list.is_empty() => self.check(
                "scheduler.addresses",
                Err::<Vec<String>, _>("must name at least one scheduler".into()),
            ),
            (_, Some(list)) => {
                let mut out = Vec::new();
                for (i, a) in list.iter().enumerate() {
                    let key = format!("scheduler.addresses[{i}]");
                    if let Some(Some(a)) = self.host_port(key.clone(), Some(a)) {
                        if out.contains(&a) {
                            self.error(key, format!("`{a}` is listed twice"));
                        }
                        out.push(a);
                    }
                }
                (out.len() == list.len()).then_some(out)
            }
            (address, None) => {
                let address = self.required("scheduler.address", address.as_deref());
                address.and_then(|a| self.host_port("scheduler.address", Some(a))).flatten().map(|a| vec![a])
            }
        };
        let connect_timeout = self.duration(
            "scheduler.connect_timeout",
            raw.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let request_timeout = self.duration(
            "scheduler.request_timeout",
            raw.request_timeout.as_deref(),
            Duration::from_secs(10),
        );
        let retry_interval =
            self.duration("scheduler.retry_interval", raw.retry_interval.as_deref(), Duration::from_secs(2));
        let heartbeat_interval = self.duration(
            "scheduler.heartbeat_interval",
            raw.heartbeat_interval.as_deref(),
            Duration::from_secs(10),
        );
        Some(SchedulerClientConfig {
            addresses: addresses?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            retry_interval: retry_interval?,
            max_retries: raw.max_retries.unwrap_or(5),
            heartbeat_interval: heartbeat_interval?,
        })
    }

    fn peers(&mut self, raw: &[raw::RawPeer], node_id: &str) -> Option<Vec<PeerConfig>> {
        self.duplicates("peers", raw.iter().map(|p| p.name.as_deref()));
        let mut out = Vec::new();
        for (i, peer) in raw.iter().enumerate() {
            let key = format!("peers[{i}].name");
            let name = self.required(key.clone(), peer.name.as_deref());
            let name = name.and_then(|n| self.check(key.clone(), check_node_id(n)));
            if name.is_some_and(|n| n == node_id) {
                self.error(key, format!("`{node_id}` is this node's own id; a node is not its own peer"));
            }
            let address = self.host_port(format!("peers[{i}].address"), peer.address.as_deref());
            let transport = self.check(format!("peers[{i}].type"), parse_transport(peer.kind.as_deref()));
            let tcp_address = self.host_port(format!("peers[{i}].tcp_address"), peer.tcp_address.as_deref());
            if peer.address.is_none() && peer.kind.is_some() {
                self.error(
                    format!("peers[{i}].type"),
                    "applies to dialing the peer, and this peer has no `address` (it only dials in)"
                        .to_owned(),
                );
            }
            if peer.address.is_none() && peer.tcp_address.is_some() {
                self.error(
                    format!("peers[{i}].tcp_address"),
                    "applies to dialing the peer, and this peer has no `address` (it only dials in)"
                        .to_owned(),
                );
            } else if peer.tcp_address.is_some() && transport.is_some_and(|t| t != PeerTransport::Auto) {
                self.error(
                    format!("peers[{i}].tcp_address"),
                    "is only for `type: auto` (with `type: tcp`, `address` is the TCP address)".to_owned(),
                );
            }
            let region = match peer.region.as_deref() {
                None => Some(None),
                Some(r) => self.required(format!("peers[{i}].region"), Some(r)).map(|r| Some(r.to_owned())),
            };
            if let (Some(name), Some(address), Some(transport), Some(tcp_address), Some(region)) =
                (name, address, transport, tcp_address, region)
            {
                out.push(PeerConfig { name: name.to_owned(), address, transport, tcp_address, region });
            }
        }
        (out.len() == raw.len()).then_some(out)
    }
}

/// A node id is used as a DNS name in certificates: 1 to 63 characters of `[a-z0-9-]`,
/// not starting or ending with `-`.
fn check_node_id(id: &str) -> Result<&str, String> {
    if id == crate::core::control::SCHEDULER_ID {
        return Err("`scheduler` is reserved for the scheduler's certificate".to_owned());
    }
    if id.is_empty() || id.len() > 63 {
        return Err(format!("`{id}` must be 1 to 63 characters long"));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("`{id}` contains `{bad}`; a node id uses only a-z, 0-9 and `-`"));
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(format!("`{id}` must not start or end with `-`"));
    }
    Ok(id)
}

/// `listeners[].protocol`.
fn parse_protocol(protocol: Option<&str>) -> Result<ListenerProtocol, String> {
    match protocol {
        None | Some("tcp") => Ok(ListenerProtocol::Tcp),
        Some("udp") => Ok(ListenerProtocol::Udp),
        Some(other) => Err(format!("unknown listener protocol `{other}` (expected tcp or udp)")),
    }
}

fn parse_transport(kind: Option<&str>) -> Result<PeerTransport, String> {
    match kind {
        None | Some("auto") => Ok(PeerTransport::Auto),
        Some("quic") => Ok(PeerTransport::Quic),
        Some("tcp") => Ok(PeerTransport::Tcp),
        Some(other) => {
            Err(format!("unknown peer type `{other}` (expected one of: {})", PeerTransport::NAMES.join(", ")))
        }
    }
}

/// Checks `host:port` where host is a hostname, an IPv4 address or a bracketed IPv6
/// address, and port is in 1..65535.
fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:").ok_or_else(|| format!("`{s}` is not [IPv6]:port"))?;
        v6.parse::<Ipv6Addr>().map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        (None, port)
    } else {
        let (host, port) =
            s.rsplit_once(':').ok_or_else(|| format!("`{s}` is not host:port (the port is missing)"))?;
        if host.contains(':') {
            return Err(format!("`{s}`: write an IPv6 address in brackets, as [addr]:port"));
        }
        (Some(host), port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(format!("`{s}`: port `{port}` is not in 1..65535")),
    }
    host.map_or(Ok(()), |h| check_host(h).map_err(|e| format!("`{s}`: {e}")))
}

/// A hostname (labels of letters, digits, `-` and `_`) or an IPv4 address. A name whose
/// last label is all digits is neither (it is a mistyped address such as `10.0.0.256`).
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let last_numeric = host.rsplit('.').next().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if !host.split('.').all(label_ok) || last_numeric {
        return Err(format!("`{host}` is not a valid host name or IPv4 address"));
    }
    Ok(())
}

impl RawTargets {
    fn len(&self) -> usize {
        match self {
            RawTargets::One(_) => 1,
            RawTargets::Many(v) => v.len(),
        }
    }
}

pub(crate) mod logging;
mod mesh;
mod routes;
pub(crate) mod scheduler;
#[cfg(test)]
mod tests;

/// An admin token: 16 to 256 visible ASCII characters (it travels in an HTTP header).
pub(crate) fn check_admin_token(token: &str) -> Result<(), String> {
    if !(16..=256).contains(&token.len()) {
        return Err("must be 16 to 256 characters".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters without spaces".into());
    }
    Ok(())
}
