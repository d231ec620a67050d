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

use super::raw::{self, RawConfig, RawMatch, RawRoute, RawTargets};
use super::{
    CommonConfig, Config, ConfigError, Limits, ListenerConfig, LogLevel, MeshConfig, PeerConfig,
    PeerTransport, RouteConfig, RouteMatch, SchedulerClientConfig, parse_duration,
};
use crate::core::policy::ExitPolicy;

const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
const DEFAULT_MESH_BIND: &str = "0.0.0.0:7800";
const DEFAULT_DATA_DIR: &str = "data";
const MIB: u64 = 1024 * 1024;
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
    let exit_policy = check.exit_policy(raw.exit_policy.as_ref().map(|p| p.allow.as_slice()));
    let mut errors = check.errors;
    if !errors.is_empty() {
        // Stable: errors without a line, or on the same line, keep the order of checks.
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        return Err(errors);
    }
    let config = (|| {
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
        })
    })();
    // Every `None` above comes with an error, so this cannot fail; say so rather than
    // panic if a future check forgets to report.
    config.ok_or_else(|| {
        vec![ConfigError {
            key: "(config)".into(),
            line: None,
            message: "internal error: a section failed without saying why".into(),
        }]
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
        let parsed = parse_duration(value)
            .and_then(|d| if d.is_zero() { Err("must be greater than zero".to_owned()) } else { Ok(d) });
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
        let log_level =
            self.check("common.log_level", parse_log_level(raw.log_level.as_deref().unwrap_or("info")));
        let log_file = match raw.log_file.as_deref() {
            None => Some(None),
            Some(file) => self.required("common.log_file", Some(file)).map(|f| Some(base.join(f))),
        };
        let admin_addr = self.socket_addr("common.admin_addr", raw.admin_addr.as_deref(), DEFAULT_ADMIN_ADDR);
        Some(CommonConfig {
            node_id: node_id?.to_owned(),
            region: region?.to_owned(),
            log_level: log_level?,
            log_file: log_file?,
            admin_addr: admin_addr?,
        })
    }

    fn listeners(&mut self, raw: &[raw::RawListener]) -> Option<Vec<ListenerConfig>> {
        self.duplicates("listeners", raw.iter().map(|l| l.name.as_deref()));
        let mut out = Vec::new();
        let mut bound: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, listener) in raw.iter().enumerate() {
            let name = self.required(format!("listeners[{i}].name"), listener.name.as_deref());
            let key = format!("listeners[{i}].bind");
            let bind = match self.required(key.clone(), listener.bind.as_deref()) {
                Some(b) => self.socket_addr(key.clone(), Some(b), ""),
                None => None,
            };
            if let Some(addr) = bind.filter(|a| a.port() != 0) {
                // Two listeners on one address would fail at bind time; say so now.
                match bound.get(&addr) {
                    Some(first) => {
                        self.error(key, format!("address {addr} is already bound by listeners[{first}]"))
                    }
                    None => {
                        bound.insert(addr, i);
                    }
                }
            }
            if let (Some(name), Some(bind)) = (name, bind) {
                out.push(ListenerConfig { name: name.to_owned(), bind });
            }
        }
        (out.len() == raw.len()).then_some(out)
    }

    fn scheduler(&mut self, raw: &raw::RawScheduler) -> Option<SchedulerClientConfig> {
        let address = self.required("scheduler.address", raw.address.as_deref());
        let address = address.and_then(|a| self.host_port("scheduler.address", Some(a))).flatten();
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
            address: address?,
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
            let region = match peer.region.as_deref() {
                None => Some(None),
                Some(r) => self.required(format!("peers[{i}].region"), Some(r)).map(|r| Some(r.to_owned())),
            };
            if let (Some(name), Some(address), Some(transport), Some(region)) =
                (name, address, transport, region)
            {
                out.push(PeerConfig { name: name.to_owned(), address, transport, region });
            }
        }
        (out.len() == raw.len()).then_some(out)
    }
}

/// What a route may refer to: the names and ports the rest of the file defines.
struct RouteContext<'a> {
    node_id: &'a str,
    listener_names: HashSet<&'a str>,
    listener_ports: HashSet<u16>,
    peer_names: HashSet<&'a str>,
}

impl<'a> RouteContext<'a> {
    fn new(raw: &'a RawConfig, node_id: &'a str) -> Self {
        Self {
            node_id,
            listener_names: raw.listeners.iter().filter_map(|l| l.name.as_deref()).collect(),
            listener_ports: listener_ports(raw).collect(),
            peer_names: raw.peers.iter().filter_map(|p| p.name.as_deref()).collect(),
        }
    }
}

/// The nonzero ports of listeners whose bind address parses.
fn listener_ports(raw: &RawConfig) -> impl Iterator<Item = u16> + '_ {
    raw.listeners
        .iter()
        .filter_map(|l| l.bind.as_deref()?.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|&p| p != 0)
}

impl Checker<'_> {
    fn routes(&mut self, raw: &RawConfig, node_id: &str) -> Option<Vec<RouteConfig>> {
        self.duplicates("routes", raw.routes.iter().map(|r| r.name.as_deref()));
        let ctx = RouteContext::new(raw, node_id);
        let out: Vec<RouteConfig> =
            raw.routes.iter().enumerate().filter_map(|(i, r)| self.route(i, r, &ctx)).collect();
        (out.len() == raw.routes.len()).then_some(out)
    }

    fn route(&mut self, i: usize, raw: &RawRoute, ctx: &RouteContext<'_>) -> Option<RouteConfig> {
        let name = self.required(format!("routes[{i}].name"), raw.name.as_deref());
        let matcher = self.route_match(i, raw.matcher.as_ref(), ctx);
        self.bad_route_match |= matcher.is_none();
        let targets = self.route_targets(i, raw.target.as_ref(), ctx);
        let exit = match raw.exit.as_deref() {
            // Naming this node as the exit is the same as leaving `exit` out.
            Some(exit) if exit == ctx.node_id => Some(None),
            Some(exit) if ctx.peer_names.contains(exit) => Some(Some(exit.to_owned())),
            Some(exit) => self.check(
                format!("routes[{i}].exit"),
                Err(format!("`{exit}` is neither this node (`{}`) nor a configured peer", ctx.node_id)),
            ),
            None => Some(None),
        };
        self.route_unsupported(i, raw)?;
        Some(RouteConfig { name: name?.to_owned(), matcher: matcher?, targets: targets?, exit: exit? })
    }

    fn route_match(
        &mut self,
        i: usize,
        raw: Option<&RawMatch>,
        ctx: &RouteContext<'_>,
    ) -> Option<RouteMatch> {
        let key = format!("routes[{i}].match");
        match raw.map(|m| (m.port, m.listener.as_deref())) {
            None | Some((None, None)) => self.check(key, Err("give one of `port` or `listener`".into())),
            Some((Some(_), Some(_))) => {
                self.check(key, Err("give exactly one of `port` or `listener`, not both".into()))
            }
            Some((Some(port), None)) => {
                let port = u16::try_from(port).ok().filter(|&p| p != 0);
                let port = self.check(
                    format!("{key}.port"),
                    port.ok_or_else(|| "port must be in 1..65535".to_owned()),
                )?;
                let known = ctx.listener_ports.contains(&port);
                let known = known.then_some(port).ok_or_else(|| format!("no listener binds port {port}"));
                self.check(format!("{key}.port"), known).map(RouteMatch::Port)
            }
            Some((None, Some(name))) => {
                let known = ctx.listener_names.contains(name);
                let known =
                    known.then(|| name.to_owned()).ok_or_else(|| format!("no listener named `{name}`"));
                self.check(format!("{key}.listener"), known).map(RouteMatch::Listener)
            }
        }
    }

    fn route_targets(
        &mut self,
        i: usize,
        raw: Option<&RawTargets>,
        ctx: &RouteContext<'_>,
    ) -> Option<Vec<String>> {
        let key = format!("routes[{i}].target");
        let keyed: Vec<(String, &String)> = match raw {
            None => return self.check(key, Err("is required".into())),
            Some(RawTargets::One(target)) => vec![(key, target)],
            Some(RawTargets::Many(targets)) if targets.is_empty() => {
                return self.check(key, Err("must list at least one host:port".into()));
            }
            Some(RawTargets::Many(targets)) => {
                targets.iter().enumerate().map(|(j, t)| (format!("{key}[{j}]"), t)).collect()
            }
        };
        let mut out = Vec::new();
        for (key, target) in keyed {
            let checked = if !target.contains(':') && ctx.peer_names.contains(target.as_str()) {
                Err("proxy-chain targets (`target: <peer>`) are not supported by this version yet; \
                     use `exit: <peer>` with a host:port target"
                    .to_owned())
            } else {
                check_host_port(target)
            };
            out.extend(self.check(key, checked).map(|()| target.clone()));
        }
        (out.len() == raw.map_or(0, RawTargets::len)).then_some(out)
    }

    /// Refuses the parts of the route contract this version does not carry out yet, so
    /// that a config that asks for them fails loudly instead of being half obeyed.
    fn route_unsupported(&mut self, i: usize, raw: &RawRoute) -> Option<()> {
        let mut ok = Some(());
        if raw.via.as_ref().is_some_and(|v| !v.is_empty()) {
            ok = self.check(
                format!("routes[{i}].via"),
                Err("multi-hop `via` is not supported by this version yet".into()),
            );
        }
        if raw.paths.as_ref().is_some_and(|p| !p.is_empty()) {
            ok = self.check(
                format!("routes[{i}].paths"),
                Err("`paths` is not supported by this version yet".into()),
            );
        }
        if raw.multipath == Some(true) {
            ok = self.check(
                format!("routes[{i}].multipath"),
                Err("`multipath: true` is not supported by this version yet".into()),
            );
        }
        ok
    }

    /// A listener no route matches would accept connections only to refuse them.
    /// Checked only when every route's `match` is valid.
    fn unrouted_listeners(&mut self, raw: &RawConfig) {
        if self.bad_route_match {
            // A broken `match` already has its error; blaming the listener it was
            // probably meant for as well would only be noise.
            return;
        }
        for (i, listener) in raw.listeners.iter().enumerate() {
            let port = listener.bind.as_deref().and_then(|b| b.parse::<SocketAddr>().ok()).map(|a| a.port());
            let matched = raw.routes.iter().filter_map(|r| r.matcher.as_ref()).any(|m| match m {
                RawMatch { listener: Some(name), port: None } => {
                    listener.name.as_deref() == Some(name.as_str())
                }
                RawMatch { port: Some(p), listener: None } => {
                    port.is_some_and(|lp| lp != 0 && i64::from(lp) == *p)
                }
                _ => false,
            });
            if !matched {
                self.error(format!("listeners[{i}]"), "no route matches this listener");
            }
        }
    }
}

impl Checker<'_> {
    fn mesh(&mut self, raw: &raw::RawMesh, base: &Path) -> Option<MeshConfig> {
        let bind = self.socket_addr("mesh.bind", raw.bind.as_deref(), DEFAULT_MESH_BIND);
        let advertise = self.host_port("mesh.advertise", raw.advertise.as_deref());
        let cert = self.existing_file("mesh.cert", raw.cert.as_deref(), base);
        let key = self.existing_file("mesh.key", raw.key.as_deref(), base);
        let ca = self.existing_file("mesh.ca", raw.ca.as_deref(), base);
        let data_dir =
            self.required("mesh.data_dir", Some(raw.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)));
        let timers = self.mesh_timers(raw);
        let windows = self.mesh_windows(raw);
        let (keepalive_interval, link_idle_timeout, redial_min, redial_max) = timers?;
        let (stream_window, connection_window, send_window, udp_buffer) = windows?;
        Some(MeshConfig {
            bind: bind?,
            advertise: advertise?,
            cert: cert?,
            key: key?,
            ca: ca?,
            data_dir: base.join(data_dir?),
            keepalive_interval,
            link_idle_timeout,
            redial_min,
            redial_max,
            stream_window,
            connection_window,
            send_window,
            udp_buffer,
        })
    }

    fn mesh_timers(&mut self, raw: &raw::RawMesh) -> Option<(Duration, Duration, Duration, Duration)> {
        let keepalive = self.duration(
            "mesh.keepalive_interval",
            raw.keepalive_interval.as_deref(),
            Duration::from_secs(5),
        );
        let idle = self.duration(
            "mesh.link_idle_timeout",
            raw.link_idle_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let redial_min =
            self.duration("mesh.redial_min", raw.redial_min.as_deref(), Duration::from_millis(100));
        let redial_max = self.duration("mesh.redial_max", raw.redial_max.as_deref(), Duration::from_secs(30));
        let (keepalive, idle, redial_min, redial_max) = (keepalive?, idle?, redial_min?, redial_max?);
        let mut ok = Some(());
        if idle <= keepalive {
            // Otherwise a quiet but healthy link is declared dead between two keepalives.
            ok = self.check(
                "mesh.link_idle_timeout",
                Err(format!("must be longer than mesh.keepalive_interval ({keepalive:?}), is {idle:?}")),
            );
        }
        if redial_min > redial_max {
            ok = self.check(
                "mesh.redial_min",
                Err(format!("must not exceed mesh.redial_max ({redial_max:?}), is {redial_min:?}")),
            );
        }
        ok.map(|()| (keepalive, idle, redial_min, redial_max))
    }

    fn mesh_windows(&mut self, raw: &raw::RawMesh) -> Option<(u64, u64, u64, usize)> {
        let window = (1, QUIC_VARINT_MAX);
        let stream = self.count("mesh.stream_window", raw.stream_window, 4 * MIB, window);
        let connection = self.count("mesh.connection_window", raw.connection_window, 16 * MIB, window);
        let send = self.count("mesh.send_window", raw.send_window, 16 * MIB, window);
        let udp = self.count("mesh.udp_buffer", raw.udp_buffer, 4 * MIB, (1, UDP_BUFFER_MAX));
        let (stream, connection) = (stream?, connection?);
        if stream > connection {
            // One stream could never use its window: the connection's would stop it first.
            return self.check(
                "mesh.stream_window",
                Err(format!("must not exceed mesh.connection_window ({connection}), is {stream}")),
            );
        }
        let (send, udp) = (send?, udp?);
        let udp = self.check(
            "mesh.udp_buffer",
            usize::try_from(udp).map_err(|_| "too large for this platform".to_owned()),
        )?;
        Some((stream, connection, send, udp))
    }

    fn limits(&mut self, raw: Option<&raw::RawLimits>) -> Option<Limits> {
        let d = Limits::default();
        let Some(raw) = raw else { return Some(d) };
        let max_header_bytes = self.count(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            d.max_header_bytes as u64,
            (64, 65_535),
        );
        let header_timeout =
            self.duration("limits.header_timeout", raw.header_timeout.as_deref(), d.header_timeout);
        let max_streams = self.count(
            "limits.max_streams_per_peer",
            raw.max_streams_per_peer,
            d.max_streams_per_peer.into(),
            (1, u32::MAX.into()),
        );
        let max_flows =
            self.count("limits.max_flows", raw.max_flows, d.max_flows as u64, (1, usize::MAX as u64));
        let connect_timeout =
            self.duration("limits.connect_timeout", raw.connect_timeout.as_deref(), d.connect_timeout);
        let idle_timeout = self.duration("limits.idle_timeout", raw.idle_timeout.as_deref(), d.idle_timeout);
        let half_closed_timeout = self.duration(
            "limits.half_closed_timeout",
            raw.half_closed_timeout.as_deref(),
            d.half_closed_timeout,
        );
        let drain_timeout =
            self.duration("limits.drain_timeout", raw.drain_timeout.as_deref(), d.drain_timeout);
        Some(Limits {
            // The ranges checked above make these conversions lossless.
            max_header_bytes: usize::try_from(max_header_bytes?).ok()?,
            header_timeout: header_timeout?,
            max_streams_per_peer: u32::try_from(max_streams?).ok()?,
            max_flows: usize::try_from(max_flows?).ok()?,
            connect_timeout: connect_timeout?,
            idle_timeout: idle_timeout?,
            half_closed_timeout: half_closed_timeout?,
            drain_timeout: drain_timeout?,
        })
    }

    fn exit_policy(&mut self, allow: Option<&[String]>) -> Option<ExitPolicy> {
        let allow = allow.unwrap_or_default();
        if allow.is_empty() {
            return Some(ExitPolicy::deny_all());
        }
        match ExitPolicy::parse(allow) {
            Ok(policy) => Some(policy),
            Err(problems) => {
                for (i, message) in problems {
                    self.error(format!("exit_policy.allow[{i}]"), message);
                }
                None
            }
        }
    }
}

/// A node id is used as a DNS name in certificates: 1 to 63 characters of `[a-z0-9-]`,
/// not starting or ending with `-`.
fn check_node_id(id: &str) -> Result<&str, String> {
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

fn parse_log_level(level: &str) -> Result<LogLevel, String> {
    match level {
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        "fatal" => Ok(LogLevel::Fatal),
        other => Err(format!("unknown log level `{other}` (expected debug, info, warn, error or fatal)")),
    }
}

fn parse_transport(kind: Option<&str>) -> Result<PeerTransport, String> {
    match kind {
        // `tcp` is the seed's name; it means the same link until a TCP fallback exists.
        None | Some("quic") | Some("tcp") => Ok(PeerTransport::Quic),
        Some(other) => {
            Err(format!("unknown peer type `{other}` (expected quic; tcp is accepted as an alias)"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixtures directory: its `certs/` holds placeholder files, enough for
    /// validation, which only checks that certificate files exist.
    fn base() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    const VALID: &str = "\
common:
  node_id: a
  region: eu
listeners:
  - name: web
    bind: \"127.0.0.1:8080\"
peers:
  - name: b
    address: \"10.0.0.2:7800\"
routes:
  - name: r1
    match: { listener: web }
    target: \"10.0.0.5:80\"
    exit: b
mesh:
  cert: certs/node-cert.placeholder
  key: certs/node-key.placeholder
  ca: certs/ca-cert.placeholder
";

    fn run(text: &str) -> Result<Config, Vec<ConfigError>> {
        validate(raw::parse(text)?, &base())
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match run(text) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(errors) => errors,
        }
    }

    /// Asserts that some error has `key` and a message containing `needle`.
    fn assert_has(errors: &[ConfigError], key: &str, needle: &str) {
        assert!(
            errors.iter().any(|e| e.key == key && e.message.contains(needle)),
            "no error `{key}: ...{needle}...` in {errors:#?}"
        );
    }

    /// `VALID` with its first occurrence of `from` replaced.
    fn with(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "`{from}` is not in VALID");
        VALID.replacen(from, to, 1)
    }

    #[test]
    fn a_valid_config_gets_every_default() {
        let config = run(VALID).expect("VALID is valid");
        assert_eq!(config.common.log_level, LogLevel::Info);
        assert_eq!(config.common.admin_addr, "127.0.0.1:9901".parse().expect("addr"));
        assert_eq!(config.mesh.bind, "0.0.0.0:7800".parse().expect("addr"));
        assert_eq!(config.mesh.data_dir, base().join("data"));
        assert_eq!(config.mesh.cert, base().join("certs/node-cert.placeholder"));
        assert_eq!(config.mesh.keepalive_interval, Duration::from_secs(5));
        assert_eq!(config.mesh.link_idle_timeout, Duration::from_secs(30));
        assert_eq!(config.mesh.redial_min, Duration::from_millis(100));
        assert_eq!(config.mesh.redial_max, Duration::from_secs(30));
        assert_eq!((config.mesh.stream_window, config.mesh.connection_window), (4 * MIB, 16 * MIB));
        assert_eq!((config.mesh.send_window, config.mesh.udp_buffer), (16 * MIB, 4 << 20));
        assert_eq!(config.limits.max_header_bytes, Limits::default().max_header_bytes);
        assert!(config.scheduler.is_none());
        assert_eq!(config.peers[0].transport, PeerTransport::Quic);
        assert_eq!(config.routes[0].matcher, RouteMatch::Listener("web".into()));
        assert_eq!(config.routes[0].targets, vec!["10.0.0.5:80".to_owned()]);
        assert_eq!(config.routes[0].exit.as_deref(), Some("b"));
    }

    #[test]
    fn paths_resolve_against_the_base_unless_absolute() {
        let ca = base().join("certs/ca-cert.placeholder");
        let text = with("ca: certs/ca-cert.placeholder", &format!("ca: {}\n  data_dir: state", ca.display()))
            .replacen("  region: eu", "  region: eu\n  log_file: logs/a.log", 1);
        let config = run(&text).expect("valid");
        assert_eq!(config.mesh.ca, ca);
        assert_eq!(config.mesh.data_dir, base().join("state"));
        assert_eq!(config.common.log_file, Some(base().join("logs/a.log")));
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = with("node_id: a", "node_id: A_1\n  log_level: loud").replacen("exit: b", "exit: z", 1);
        let errors = errors(&text);
        assert_has(&errors, "common.node_id", "contains `A`");
        assert_has(&errors, "common.log_level", "unknown log level `loud`");
        assert_has(&errors, "routes[0].exit", "neither this node");
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(15)]);
    }

    #[test]
    fn node_ids_follow_dns_label_rules() {
        for good in ["a", "node-1", "0", &"x".repeat(63)] {
            assert!(check_node_id(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a_b", "a.b", "-a", "a-", &"x".repeat(64)] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn common_requires_id_and_region_and_a_valid_admin_addr() {
        let text = with("  node_id: a\n  region: eu", "  region: \" \"\n  admin_addr: localhost:9901");
        let errors = errors(&text);
        assert_has(&errors, "common.node_id", "is required");
        assert_has(&errors, "common.region", "must not be empty");
        assert_has(&errors, "common.admin_addr", "not an IP:port");
    }

    #[test]
    fn peers_are_checked_for_names_types_and_addresses() {
        let peers = "  - name: b\n    type: tcp\n  - name: b\n  - name: a\n  - name: c\n    type: udp\n    address: c:0\n";
        let text = with("  - name: b\n    address: \"10.0.0.2:7800\"\n", peers);
        let errors = errors(&text);
        assert_has(&errors, "peers[1].name", "duplicate name `b` (also peers[0])");
        assert_has(&errors, "peers[2].name", "this node's own id");
        assert_has(&errors, "peers[3].type", "unknown peer type `udp`");
        assert_has(&errors, "peers[3].address", "not in 1..65535");
        assert!(!errors.iter().any(|e| e.key == "peers[0].type"), "tcp is an alias: {errors:#?}");
    }

    #[test]
    fn a_route_match_needs_exactly_one_known_selector() {
        let both = errors(&with("{ listener: web }", "{ listener: web, port: 8080 }"));
        assert_has(&both, "routes[0].match", "not both");
        let neither = errors(&with("{ listener: web }", "{}"));
        assert_has(&neither, "routes[0].match", "give one of");
        let unknown = errors(&with("{ listener: web }", "{ listener: api }"));
        assert_has(&unknown, "routes[0].match.listener", "no listener named `api`");
        let unbound = errors(&with("{ listener: web }", "{ port: 9090 }"));
        assert_has(&unbound, "routes[0].match.port", "no listener binds port 9090");
        let zero = errors(&with("{ listener: web }", "{ port: 0 }"));
        assert_has(&zero, "routes[0].match.port", "1..65535");
        assert!(run(&with("{ listener: web }", "{ port: 8080 }")).is_ok());
    }

    #[test]
    fn route_targets_are_host_port_strings() {
        let list = run(&with("\"10.0.0.5:80\"", "[\"10.0.0.5:80\", \"db.internal:5432\", \"[::1]:80\"]"));
        assert_eq!(list.expect("valid").routes[0].targets.len(), 3);
        let bad = errors(&with("\"10.0.0.5:80\"", "[\"10.0.0.5:80\", \"10.0.0.256:80\", \"::1:80\"]"));
        assert_has(&bad, "routes[0].target[1]", "not a valid host name");
        assert_has(&bad, "routes[0].target[2]", "brackets");
        assert_has(&errors(&with("\"10.0.0.5:80\"", "[]")), "routes[0].target", "at least one");
        assert_has(&errors(&with("\"10.0.0.5:80\"", "example.com")), "routes[0].target", "port is missing");
        assert_has(&errors(&with("    target: \"10.0.0.5:80\"\n", "")), "routes[0].target", "is required");
    }

    #[test]
    fn a_peer_name_as_target_is_the_unsupported_proxy_chain() {
        let errors = errors(&with("\"10.0.0.5:80\"", "b"));
        assert_has(&errors, "routes[0].target", "proxy-chain targets (`target: <peer>`) are not supported");
    }

    #[test]
    fn exit_is_this_node_or_a_peer() {
        let config = run(&with("exit: b", "exit: a")).expect("own id is a valid exit");
        assert_eq!(config.routes[0].exit, None);
        assert_has(
            &errors(&with("exit: b", "exit: c")),
            "routes[0].exit",
            "neither this node (`a`) nor a configured peer",
        );
    }

    #[test]
    fn multi_hop_and_multipath_are_refused_for_now() {
        let text = with("exit: b", "exit: b\n    via: [b]\n    paths: [[b]]\n    multipath: true");
        let errors = errors(&text);
        assert_has(&errors, "routes[0].via", "multi-hop `via` is not supported by this version yet");
        assert_has(&errors, "routes[0].paths", "`paths` is not supported");
        assert_has(&errors, "routes[0].multipath", "not supported");
        assert!(run(&with("exit: b", "exit: b\n    via: []\n    multipath: false")).is_ok());
    }

    #[test]
    fn listeners_need_unique_names_addresses_and_a_route() {
        let listeners = "  - name: web\n    bind: \"127.0.0.1:8080\"\n  - name: web\n    bind: \"127.0.0.1:8080\"\n  - name: api\n    bind: \"127.0.0.1:80800\"\n";
        let text = with("  - name: web\n    bind: \"127.0.0.1:8080\"\n", listeners);
        let errors = errors(&text);
        assert_has(&errors, "listeners[1].name", "duplicate name `web`");
        assert_has(&errors, "listeners[1].bind", "already bound by listeners[0]");
        assert_has(&errors, "listeners[2].bind", "not an IP:port");
        assert_has(&errors, "listeners[2]", "no route matches this listener");
    }

    #[test]
    fn a_broken_match_does_not_also_blame_its_listener() {
        let errors = errors(&with("{ listener: web }", "{ listener: wbe }"));
        assert_has(&errors, "routes[0].match.listener", "no listener named `wbe`");
        assert!(!errors.iter().any(|e| e.key == "listeners[0]"), "{errors:#?}");
    }

    #[test]
    fn route_names_are_unique() {
        let route = "  - name: r1\n    match: { port: 8080 }\n    target: \"x:1\"\nmesh:";
        assert_has(&errors(&with("mesh:", route)), "routes[1].name", "duplicate name `r1` (also routes[0])");
    }

    #[test]
    fn mesh_certificates_must_exist() {
        let errors = errors(&with("key: certs/node-key.placeholder", "key: certs/missing.key").replacen(
            "  ca: certs/ca-cert.placeholder\n",
            "",
            1,
        ));
        assert_has(&errors, "mesh.key", "file not found");
        assert_has(&errors, "mesh.ca", "is required");
        assert_has(
            &self::errors(&with("cert: certs/node-cert.placeholder", "cert: certs")),
            "mesh.cert",
            "is not a file",
        );
    }

    #[test]
    fn mesh_timers_and_windows_are_consistent() {
        let extra = "ca: certs/ca-cert.placeholder\n  keepalive_interval: 30s\n  redial_min: 1m\n  stream_window: 32000000\n  send_window: 0\n  udp_buffer: 4294967296\n  advertise: nohost";
        let errors = errors(&with("ca: certs/ca-cert.placeholder", extra));
        assert_has(&errors, "mesh.link_idle_timeout", "must be longer than mesh.keepalive_interval");
        assert_has(&errors, "mesh.redial_min", "must not exceed mesh.redial_max");
        assert_has(&errors, "mesh.stream_window", "must not exceed mesh.connection_window");
        assert_has(&errors, "mesh.send_window", "greater than zero");
        assert_has(&errors, "mesh.udp_buffer", "must be at most");
        assert_has(&errors, "mesh.advertise", "port is missing");
        assert!(!errors.iter().any(|e| e.key == "mesh.ca"), "{errors:#?}");
    }

    #[test]
    fn durations_must_parse_and_be_positive() {
        let limits = "limits:\n  idle_timeout: 0s\n  drain_timeout: 30\n  header_timeout: 1.5s\nmesh:";
        let errors = errors(&with("mesh:", limits));
        assert_has(&errors, "limits.idle_timeout", "greater than zero");
        assert_has(&errors, "limits.drain_timeout", "no unit");
        assert!(!errors.iter().any(|e| e.key == "limits.header_timeout"), "{errors:#?}");
    }

    #[test]
    fn limits_are_range_checked_and_default_per_field() {
        let limits =
            "limits:\n  max_header_bytes: 10\n  max_flows: 0\n  max_streams_per_peer: 5000000000\nmesh:";
        let errors = errors(&with("mesh:", limits));
        assert_has(&errors, "limits.max_header_bytes", "at least 64");
        assert_has(&errors, "limits.max_flows", "greater than zero");
        assert_has(&errors, "limits.max_streams_per_peer", "at most");
        let config = run(&with("mesh:", "limits:\n  max_flows: 10\nmesh:")).expect("valid");
        assert_eq!(config.limits.max_flows, 10);
        assert_eq!(config.limits.drain_timeout, Limits::default().drain_timeout);
    }

    #[test]
    fn the_scheduler_section_needs_an_address() {
        let text = with("mesh:", "scheduler:\n  heartbeat_interval: 1s\nmesh:");
        assert_has(&errors(&text), "scheduler.address", "is required");
        let text = with("mesh:", "scheduler:\n  address: sched.example:7900\n  max_retries: 0\nmesh:");
        let scheduler = run(&text).expect("valid").scheduler.expect("present");
        assert_eq!(scheduler.address, "sched.example:7900");
        assert_eq!(scheduler.max_retries, 0);
        assert_eq!(scheduler.connect_timeout, Duration::from_secs(5));
        assert_eq!(scheduler.heartbeat_interval, Duration::from_secs(10));
    }

    #[test]
    fn exit_policy_errors_name_the_pattern_index() {
        let text = with("mesh:", "exit_policy:\n  allow: [\"10.0.0.0/8\", \"10.0.0.0/99\"]\nmesh:");
        let errors = errors(&text);
        assert!(errors.iter().any(|e| e.key == "exit_policy.allow[1]"), "{errors:#?}");
        assert!(!errors.iter().any(|e| e.key == "exit_policy.allow[0]"), "{errors:#?}");
    }

    #[test]
    fn validation_errors_carry_the_line_of_their_key() {
        let errors = errors(&with("{ listener: web }", "\n      listener: api"));
        let error = errors.iter().find(|e| e.key == "routes[0].match.listener").expect("reported");
        assert_eq!(error.line, Some(13));
    }

    #[test]
    fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
        for good in ["a:1", "db.internal:5432", "10.0.0.1:65535", "[::1]:80", "under_score.example:80"] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in
            ["a", ":80", "a:", "a:0", "a:65536", "[::1]80", "[zz]:80", "-a:1", "a..b:1", "1.2.3.4.5:80"]
        {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
