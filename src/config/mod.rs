//! Node configuration: YAML parsed with unknown keys denied, then validated across
//! fields, then turned into the typed [`Config`] the node runs on.
//!
//! Invariant: a [`Config`] value has passed every check (names unique, addresses and
//! durations parsed, routes refer to known listeners and peers, certificate files exist),
//! so the node can bind sockets without re-checking anything here.

pub mod admin_bind;
pub mod diff;
mod duration;
mod log_filter;
mod raw;
pub mod scheduler;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::policy::ExitPolicy;

pub use crate::core::route::{RouteConfig, RouteMatch};
pub use duration::parse_duration;
pub use log_filter::LogFilter;

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the config was read from (for messages); `None` when built in code.
    pub source: Option<PathBuf>,
    /// This node's identity and logging settings (`common`).
    pub common: CommonConfig,
    /// TCP listeners that accept application connections.
    pub listeners: Vec<ListenerConfig>,
    /// The scheduler client's settings, when a scheduler is configured.
    pub scheduler: Option<SchedulerClientConfig>,
    /// Peer nodes this node links to.
    pub peers: Vec<PeerConfig>,
    /// Routes that map an accepted connection to its target and exit node.
    pub routes: Vec<RouteConfig>,
    /// This node's QUIC endpoint and its certificates.
    pub mesh: MeshConfig,
    /// Resource limits and timeouts for flows.
    pub limits: Limits,
    /// What this node will dial for flows that arrive from the mesh.
    pub exit_policy: ExitPolicy,
    /// `exit_policy.nameservers`: the DNS servers asked for target names of flows that
    /// exit here (empty: those of `/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// The `common` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    /// This node's id; must match the id in its certificate.
    pub node_id: String,
    /// Free-form region label, e.g. `eu-central`.
    pub region: String,
    /// Logging (`common.log_level`, `log_file`, `log_format`, `log_max_bytes`, `log_keep`).
    pub log: LogConfig,
    /// Admin HTTP address (loopback by default).
    pub admin_addr: SocketAddr,
    /// Bearer token the admin API requires (needed for a non-loopback `admin_addr`).
    pub admin_token: Option<String>,
}

/// Where and how a process logs: the node's `common.log_*` keys, the scheduler's `log_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Least severe level written, for everything or per module (`log_level`).
    pub level: LogFilter,
    /// Append to this file (rotated by size); `None` writes to standard error.
    pub file: Option<PathBuf>,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A file is rotated before a write would take it past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept; the oldest beyond this is deleted.
    pub keep: u32,
}

impl Default for LogConfig {
    /// The defaults of the config keys: `info`, standard error, text, 64 MiB, 5 files.
    fn default() -> Self {
        Self {
            level: LogFilter::from(LogLevel::Info),
            file: None,
            format: LogFormat::Text,
            max_bytes: DEFAULT_LOG_MAX_BYTES,
            keep: DEFAULT_LOG_KEEP,
        }
    }
}

/// Default `log_max_bytes`: 64 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;
/// Default `log_keep`.
pub const DEFAULT_LOG_KEEP: u32 = 5;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (no colours in a file).
    Text,
    /// One JSON object per line, with the current span's fields (a flow's id).
    Json,
}

/// The log levels: the seed's five, and `trace` for a module's finest detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Finer than debug: libraries' protocol detail (`quinn=trace`).
    Trace,
    /// Nothing at all (`hyper=off`).
    Off,
    /// Everything, including per-flow detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off but the node carries on.
    Warn,
    /// A flow or link failed.
    Error,
    /// Only what stops the node.
    Fatal,
}

/// One listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique listener name; routes match on it.
    pub name: String,
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// What it accepts: TCP connections or UDP datagrams.
    pub protocol: ListenerProtocol,
}

/// What a listener accepts (`listeners[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// TCP connections, each one flow (`tcp`, the default).
    #[default]
    Tcp,
    /// UDP datagrams; each client address is one association, carried as one flow (`udp`).
    Udp,
}

impl ListenerProtocol {
    /// The config's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// The `scheduler` section (used from the scheduler issue on; validated now).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerClientConfig {
    /// `host:port` of each scheduler's QUIC endpoint (`address`, or `addresses` when the
    /// mesh runs several): the node keeps one session, with the first that answers, and
    /// moves to the next when it fails.
    pub addresses: Vec<String>,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
    /// Time allowed for one request.
    pub request_timeout: Duration,
    /// Pause between failed attempts.
    pub retry_interval: Duration,
    /// Attempts at the fast pace before slowing down.
    pub max_retries: u32,
    /// Interval between heartbeats.
    pub heartbeat_interval: Duration,
}

/// One peer node.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The peer's node id (its certificate must name it).
    pub name: String,
    /// `host:port` to dial (UDP for QUIC, TCP for `type: tcp`); `None` for a peer that
    /// only dials in.
    pub address: Option<String>,
    /// How the link is carried (`type`).
    pub transport: PeerTransport,
    /// `host:port` of the peer's TCP links, for `type: auto` when it differs from
    /// `address` (by default the same host and port, over TCP).
    pub tcp_address: Option<String>,
    /// The peer's region label, when known.
    pub region: Option<String>,
}

/// How a peer link is carried (`peers[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerTransport {
    /// QUIC first; TLS on TCP when no QUIC handshake completes within
    /// `mesh.fallback_after`, back to QUIC when a probe succeeds (`auto`).
    #[default]
    Auto,
    /// QUIC only (`quic`).
    Quic,
    /// TLS on TCP only (`tcp`).
    Tcp,
}

impl PeerTransport {
    /// The config names, in order.
    pub const NAMES: [&'static str; 3] = ["auto", "quic", "tcp"];
}

/// Where a node accepts links over TCP (`mesh.tcp_bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpBind {
    /// The IP of `mesh.bind` and the UDP port its endpoint got, over TCP: peers that
    /// know the QUIC address know the TCP one. If that port is taken the node runs
    /// without TCP links and says so.
    #[default]
    SameAsQuic,
    /// No TCP links accepted (`off`).
    Off,
    /// This address; failing to bind it fails the start.
    At(SocketAddr),
}

/// A link's congestion controller (`mesh.congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// The mesh's own model-based controller: paced at the measured bottleneck bandwidth,
    /// in-flight bounded near the bandwidth-delay product, random loss not read as
    /// congestion (`model`).
    #[default]
    Model,
    /// quinn's BBR (`bbr`).
    Bbr,
    /// quinn's CUBIC (`cubic`).
    Cubic,
    /// quinn's NewReno (`newreno`).
    NewReno,
}

impl Congestion {
    /// Every accepted name, for messages and completions.
    pub const NAMES: &'static [&'static str] = &["model", "bbr", "cubic", "newreno"];

    /// The controller named `name` in a config.
    pub fn from_name(name: &str) -> Option<Congestion> {
        match name {
            "model" => Some(Congestion::Model),
            "bbr" => Some(Congestion::Bbr),
            "cubic" => Some(Congestion::Cubic),
            "newreno" => Some(Congestion::NewReno),
            _ => None,
        }
    }

    /// The name a config uses for this controller.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Model => "model",
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
        }
    }
}

/// The `mesh` section: this node's QUIC endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// UDP address of the QUIC endpoint.
    pub bind: SocketAddr,
    /// Where links over TLS on TCP are accepted.
    pub tcp_bind: TcpBind,
    /// How long a `type: auto` dial waits for QUIC before it also tries TCP.
    pub fallback_after: Duration,
    /// How often a link that fell back to TCP tries QUIC again.
    pub quic_probe_interval: Duration,
    /// Address other nodes should dial, when it differs from `bind`.
    pub advertise: Option<String>,
    /// PEM certificate chain naming this node.
    pub cert: PathBuf,
    /// PEM private key for `cert`.
    pub key: PathBuf,
    /// PEM certificate of the mesh CA.
    pub ca: PathBuf,
    /// Directory for state (instruction cache and the like).
    pub data_dir: PathBuf,
    /// QUIC keepalive interval on peer links.
    pub keepalive_interval: Duration,
    /// A peer link with no traffic (keepalives included) for this long is dead.
    pub link_idle_timeout: Duration,
    /// First re-dial delay after a lost link (grows exponentially, full jitter).
    pub redial_min: Duration,
    /// Largest re-dial delay.
    pub redial_max: Duration,
    /// QUIC receive window per stream, in bytes: the most one flow may have in flight
    /// towards this node, and the most a stalled flow holds here.
    pub stream_window: u64,
    /// QUIC receive window per connection for flows that read, in bytes; it grows by one
    /// stream window per stalled flow (see `node::link::credit`).
    pub connection_window: u64,
    /// QUIC send window per connection, in bytes: unacknowledged data a link may hold.
    pub send_window: u64,
    /// UDP socket send and receive buffer size, in bytes.
    pub udp_buffer: usize,
    /// Congestion controller of every peer link.
    pub congestion: Congestion,
    /// Whether this node relays flows for others (it always accepts flows that exit here).
    pub relay: bool,
    /// Whether flows must be sealed end to end (`mesh.e2e`).
    pub e2e: E2eMode,
}

/// `mesh.e2e`: how this node treats flows that are not sealed end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum E2eMode {
    /// Every flow this node originates is sealed (it waits up to `connect_timeout` for the
    /// exit's card), and it refuses unsealed (wire version 1) flows, to relay or exit.
    #[default]
    Required,
    /// Seal when the exit's card is known, else send the unsealed header; accept unsealed
    /// flows. For a mesh part-way through an upgrade; unsealed flows are counted.
    Preferred,
    /// Never seal; accept unsealed flows (sealed ones too, as an exit). Relays then see what
    /// they forward: only for a mesh whose every node is trusted, or to measure what
    /// sealing costs.
    Off,
}

impl E2eMode {
    /// The config names, in order.
    pub const NAMES: [&'static str; 3] = ["required", "preferred", "off"];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Preferred => "preferred",
            Self::Off => "off",
        }
    }
}

/// Limits and timeouts for flows.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest stream header accepted, in bytes.
    pub max_header_bytes: usize,
    /// A header must arrive completely within this time.
    pub header_timeout: Duration,
    /// Concurrent flow streams a peer may open to this node.
    pub max_streams_per_peer: u32,
    /// Concurrent flows on this node; beyond it flows are refused as `overloaded`.
    pub max_flows: usize,
    /// Time allowed to connect to a target.
    pub connect_timeout: Duration,
    /// A flow with no bytes either way for this long is reset.
    pub idle_timeout: Duration,
    /// After one direction finishes, the other must finish within this time.
    pub half_closed_timeout: Duration,
    /// On shutdown, flows may finish for this long before they are reset.
    pub drain_timeout: Duration,
    /// Subflows a multipath flow keeps open at once (replacements included).
    pub max_subflows: usize,
    /// Node-wide bound on buffered flow data: link receive windows (a base per link, one
    /// stream window per stalled flow) and multipath reorder buffers.
    pub max_buffered_bytes: u64,
    /// Target name lookups in flight at once on this node; beyond it flows that need one
    /// are refused as `overloaded`.
    pub max_lookups: usize,
    /// Target name lookups in flight at once for any one origin.
    pub max_lookups_per_origin: usize,
    /// A UDP association with no datagram either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// UDP associations open at once on this node (all UDP listeners); past it datagrams
    /// from new client addresses are dropped and counted (`association_cap`).
    pub max_udp_associations: usize,
    /// Largest UDP datagram payload carried; larger ones are dropped and counted
    /// (`too_large`).
    pub max_datagram: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 4096,
            header_timeout: Duration::from_secs(5),
            max_streams_per_peer: 4096,
            max_flows: 65_536,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            half_closed_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_subflows: 4,
            max_buffered_bytes: 2 << 30,
            max_lookups: 64,
            max_lookups_per_origin: 8,
            udp_idle_timeout: Duration::from_secs(60),
            max_udp_associations: 1024,
            // A 9000-byte jumbo frame's IPv4 UDP payload: anything an ordinary (1500) or
            // jumbo route can carry unfragmented; larger datagrams need IP fragmentation,
            // which the exit never does (see docs/wire.md).
            max_datagram: 8972,
        }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `routes[1].match.listener`.
    pub key: String,
    /// 1-based line, where the parser gives one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file, in file order where known.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about.
    pub file: String,
    /// The problems; never empty.
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, e.key, e.message)?,
                None => write!(f, "{}: {}: {}", self.file, e.key, e.message)?,
            }
        }
        Ok(())
    }
}

/// Reads, parses and validates a node config file. Relative paths inside it are taken
/// relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError { key: "(file)".into(), line: None, message: format!("cannot read: {e}") }],
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut config = parse(&text, base).map_err(|errors| ConfigErrors { file, errors })?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses and validates config text; relative paths are resolved against `base_dir`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("proxy-doc-parse-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # struct Cleanup(std::path::PathBuf);
/// # impl Drop for Cleanup { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _cleanup = Cleanup(dir.clone());
/// proxy::pki::init_mesh(&dir, &["a".to_string()])?; // ca.crt, a.crt, a.key, ...
/// let yaml = "common: { node_id: a, region: eu }\n\
///             mesh: { cert: a.crt, key: a.key, ca: ca.crt }\n";
/// let config = proxy::config::parse(yaml, &dir).map_err(|e| format!("{e:?}"))?;
/// assert_eq!(config.common.node_id, "a");
///
/// // A bad file: every problem at once, each with its key and line.
/// let bad = "common: { node_id: a, region: eu }\n\
///            mesh: { bind: nowhere, cert: a.crt, key: a.key, ca: missing.crt }\n";
/// let errors = proxy::config::parse(bad, &dir).expect_err("two problems");
/// let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
/// assert_eq!(keys, ["mesh.bind", "mesh.ca"]);
/// assert_eq!(errors[0].line, Some(2));
/// # Ok(())
/// # }
/// ```
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let raw = raw::parse(text)?;
    validate::validate(raw, base_dir)
}

/// Whether `text` looks like a scheduler config (a mapping without `common`), so that
/// `proxy check` can validate either kind of file.
pub fn is_scheduler_config(text: &str) -> bool {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Mapping(m)) => !m.contains_key("common") && m.contains_key("cert"),
        _ => false,
    }
}
