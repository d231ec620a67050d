//! The config file as written: serde structs that mirror the YAML one to one, with
//! unknown keys denied everywhere.
//!
//! Values whose checks need context (addresses, durations, names, cross references) stay
//! strings or options here, so that validation can report every problem with its key
//! path; serde stops at the first error it meets, and a user fixing a file one error per
//! run is a user having a bad day. Only what serde can reject cleanly (syntax, unknown
//! keys, wrong types) is rejected here.
//!
//! This module also maps a key path back to a line of the text ([`line_of`]), so that
//! validation errors carry a line too.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of sections (`common`, `mesh`, `listeners`, ...)")]
pub(crate) struct RawConfig {
    /// `common`: identity and logging (required).
    pub(crate) common: RawCommon,
    /// `listeners`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) listeners: Vec<RawListener>,
    /// `scheduler`, when present.
    #[serde(default)]
    pub(crate) scheduler: Option<RawScheduler>,
    /// `peers`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) peers: Vec<RawPeer>,
    /// `routes`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) routes: Vec<RawRoute>,
    /// `mesh` (required: a node without a QUIC endpoint is not a node).
    pub(crate) mesh: RawMesh,
    /// `limits`, when present.
    #[serde(default)]
    pub(crate) limits: Option<RawLimits>,
    /// `exit_policy`, when present.
    #[serde(default)]
    pub(crate) exit_policy: Option<RawExitPolicy>,
    /// The text this was parsed from, kept so validation can give line numbers.
    #[serde(skip)]
    pub(crate) text: String,
}

/// `common`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawCommon {
    /// `node_id`.
    pub(crate) node_id: Option<String>,
    /// `region`.
    pub(crate) region: Option<String>,
    /// `log_level`.
    pub(crate) log_level: Option<String>,
    /// `log_file`.
    pub(crate) log_file: Option<String>,
    /// `log_format`.
    pub(crate) log_format: Option<String>,
    /// `log_max_bytes`.
    pub(crate) log_max_bytes: Option<u64>,
    /// `log_keep`.
    pub(crate) log_keep: Option<u64>,
    /// `admin_addr`.
    pub(crate) admin_addr: Option<String>,
    /// `admin_token`.
    pub(crate) admin_token: Option<String>,
}

/// One entry of `listeners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawListener {
    /// `name`.
    pub(crate) name: Option<String>,
    /// `bind`.
    pub(crate) bind: Option<String>,
    /// `protocol`: `tcp` (the default) or `udp`.
    pub(crate) protocol: Option<String>,
}

/// `scheduler`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawScheduler {
    /// `address`.
    pub(crate) address: Option<String>,
    /// `addresses`.
    pub(crate) addresses: Option<Vec<String>>,
    /// `connect_timeout`.
    pub(crate) connect_timeout: Option<String>,
    /// `request_timeout`.
    pub(crate) request_timeout: Option<String>,
    /// `retry_interval`.
    pub(crate) retry_interval: Option<String>,
    /// `max_retries`.
    pub(crate) max_retries: Option<u32>,
    /// `heartbeat_interval`.
    pub(crate) heartbeat_interval: Option<String>,
}

/// One entry of `peers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawPeer {
    /// `name`.
    pub(crate) name: Option<String>,
    /// `address`.
    pub(crate) address: Option<String>,
    /// `type`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// `tcp_address`.
    pub(crate) tcp_address: Option<String>,
    /// `region`.
    pub(crate) region: Option<String>,
}

/// One entry of `routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawRoute {
    /// `name`.
    pub(crate) name: Option<String>,
    /// `match`.
    #[serde(rename = "match")]
    pub(crate) matcher: Option<RawMatch>,
    /// `target`.
    pub(crate) target: Option<RawTargets>,
    /// `exit`.
    pub(crate) exit: Option<String>,
    /// `via`: one static relay path.
    pub(crate) via: Option<Vec<String>>,
    /// `paths`: static relay paths, tried in order.
    pub(crate) paths: Option<Vec<Vec<String>>>,
    /// `multipath`.
    pub(crate) multipath: Option<bool>,
}

/// A route's `match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawMatch {
    /// `port`; signed and wide so that validation, not serde, reports a bad port.
    pub(crate) port: Option<i64>,
    /// `listener`.
    pub(crate) listener: Option<String>,
}

/// A route's `target`: one `host:port` or a list of them.
#[derive(Debug)]
pub(crate) enum RawTargets {
    /// `target: "host:port"`.
    One(String),
    /// `target: ["host:port", ...]`.
    Many(Vec<String>),
}

// Written by hand rather than `#[serde(untagged)]`: untagged buffers the value, which
// loses the key path and the line from the error a user sees.
impl<'de> Deserialize<'de> for RawTargets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetsVisitor)
    }
}

struct TargetsVisitor;

impl<'de> Visitor<'de> for TargetsVisitor {
    type Value = RawTargets;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a \"host:port\" string or a list of them")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTargets, E> {
        Ok(RawTargets::One(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTargets, A::Error> {
        let mut targets = Vec::new();
        while let Some(target) = seq.next_element::<String>()? {
            targets.push(target);
        }
        Ok(RawTargets::Many(targets))
    }
}

/// `mesh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawMesh {
    /// `bind`.
    pub(crate) bind: Option<String>,
    /// `tcp_bind`.
    pub(crate) tcp_bind: Option<String>,
    /// `fallback_after`.
    pub(crate) fallback_after: Option<String>,
    /// `quic_probe_interval`.
    pub(crate) quic_probe_interval: Option<String>,
    /// `advertise`.
    pub(crate) advertise: Option<String>,
    /// `cert`.
    pub(crate) cert: Option<String>,
    /// `key`.
    pub(crate) key: Option<String>,
    /// `ca`.
    pub(crate) ca: Option<String>,
    /// `data_dir`.
    pub(crate) data_dir: Option<String>,
    /// `keepalive_interval`.
    pub(crate) keepalive_interval: Option<String>,
    /// `link_idle_timeout`.
    pub(crate) link_idle_timeout: Option<String>,
    /// `redial_min`.
    pub(crate) redial_min: Option<String>,
    /// `redial_max`.
    pub(crate) redial_max: Option<String>,
    /// `stream_window`.
    pub(crate) stream_window: Option<u64>,
    /// `connection_window`.
    pub(crate) connection_window: Option<u64>,
    /// `send_window`.
    pub(crate) send_window: Option<u64>,
    /// `udp_buffer`.
    pub(crate) udp_buffer: Option<u64>,
    /// `congestion`.
    pub(crate) congestion: Option<String>,
    /// `relay`.
    pub(crate) relay: Option<bool>,
    /// `e2e`.
    pub(crate) e2e: Option<String>,
}

/// `limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawLimits {
    /// `max_header_bytes`.
    pub(crate) max_header_bytes: Option<u64>,
    /// `header_timeout`.
    pub(crate) header_timeout: Option<String>,
    /// `max_streams_per_peer`.
    pub(crate) max_streams_per_peer: Option<u64>,
    /// `max_flows`.
    pub(crate) max_flows: Option<u64>,
    /// `connect_timeout`.
    pub(crate) connect_timeout: Option<String>,
    /// `idle_timeout`.
    pub(crate) idle_timeout: Option<String>,
    /// `half_closed_timeout`.
    pub(crate) half_closed_timeout: Option<String>,
    /// `drain_timeout`.
    pub(crate) drain_timeout: Option<String>,
    /// `max_subflows`.
    pub(crate) max_subflows: Option<u64>,
    /// `max_buffered_bytes`.
    pub(crate) max_buffered_bytes: Option<u64>,
    /// `max_lookups`.
    pub(crate) max_lookups: Option<u64>,
    /// `max_lookups_per_origin`.
    pub(crate) max_lookups_per_origin: Option<u64>,
    /// `udp_idle_timeout`.
    pub(crate) udp_idle_timeout: Option<String>,
    /// `max_udp_associations`.
    pub(crate) max_udp_associations: Option<u64>,
    /// `max_datagram`.
    pub(crate) max_datagram: Option<u64>,
}

/// `exit_policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawExitPolicy {
    /// `allow`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) allow: Vec<RawAllow>,
    /// `nameservers`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) nameservers: Vec<String>,
}

/// One `exit_policy.allow` entry: a pattern, or a pattern with the origins it is for.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a pattern such as \"10.0.0.0/8:443\", or a mapping { to: PATTERN, from: [NODE or group:NAME, ...] }"
)]
pub(crate) enum RawAllow {
    /// `"10.0.0.0/8:443"`.
    Pattern(String),
    /// `{ to: "10.0.0.0/8:443", from: [fra-1, group:backend] }`.
    Rule(RawAllowRule),
}

/// `{ to, from }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllowRule {
    /// `to`.
    pub(crate) to: String,
    /// `from`.
    pub(crate) from: Vec<String>,
}

/// A scheduler config file (see `config::scheduler` for the keys).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of the scheduler's keys (`bind`, `cert`, `key`, `ca`, ...)"
)]
pub(crate) struct RawSchedulerConfig {
    /// `bind`.
    pub(crate) bind: Option<String>,
    /// `cert`.
    pub(crate) cert: Option<String>,
    /// `key`.
    pub(crate) key: Option<String>,
    /// `ca`.
    pub(crate) ca: Option<String>,
    /// `objective`.
    pub(crate) objective: Option<String>,
    /// `recompute_interval`.
    pub(crate) recompute_interval: Option<String>,
    /// `hysteresis`.
    pub(crate) hysteresis: Option<RawHysteresis>,
    /// `instruction_ttl`.
    pub(crate) instruction_ttl: Option<String>,
    /// `max_paths`.
    pub(crate) max_paths: Option<u64>,
    /// `node_dead_after`.
    pub(crate) node_dead_after: Option<String>,
    /// `max_links`.
    pub(crate) max_links: Option<u64>,
    /// `pins`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) pins: Vec<RawPin>,
    /// `log_level`.
    pub(crate) log_level: Option<String>,
    /// `log_file`.
    pub(crate) log_file: Option<String>,
    /// `log_format`.
    pub(crate) log_format: Option<String>,
    /// `log_max_bytes`.
    pub(crate) log_max_bytes: Option<u64>,
    /// `log_keep`.
    pub(crate) log_keep: Option<u64>,
    /// `admin_addr`.
    pub(crate) admin_addr: Option<String>,
    /// `admin_token`.
    pub(crate) admin_token: Option<String>,
    /// `ca_key`.
    pub(crate) ca_key: Option<String>,
    /// `data_dir`.
    pub(crate) data_dir: Option<String>,
    /// `node_cert_lifetime`.
    pub(crate) node_cert_lifetime: Option<String>,
    /// `state`.
    pub(crate) state: Option<RawState>,
    /// The text this was parsed from, kept so validation can give line numbers.
    #[serde(skip)]
    pub(crate) text: String,
}

/// The scheduler's `state`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `etcd` (a list of endpoints)")]
pub(crate) struct RawState {
    /// `etcd`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) etcd: Vec<String>,
    /// `prefix`.
    pub(crate) prefix: Option<String>,
    /// `lease`.
    pub(crate) lease: Option<String>,
    /// `name`.
    pub(crate) name: Option<String>,
}

/// The scheduler's `hysteresis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawHysteresis {
    /// `margin`.
    pub(crate) margin: Option<f64>,
    /// `hold`.
    pub(crate) hold: Option<String>,
}

/// One of the scheduler's `pins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawPin {
    /// `node`.
    pub(crate) node: Option<String>,
    /// `route`.
    pub(crate) route: Option<String>,
    /// `relays`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) relays: Vec<String>,
}

/// Reads a key written with no value (`peers:` followed by nothing) as the default, the
/// way an operator who commented out every entry expects.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Parses config text into [`RawConfig`]. Fails with one error (serde stops at the
/// first) that carries the line and, where serde knows it, the key path.
pub(crate) fn parse(text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    let mut raw: RawConfig =
        parse_yaml(text, "the file is empty: a node config needs at least `common` and `mesh`")?;
    raw.text = text.to_owned();
    Ok(raw)
}

/// Parses a scheduler config file as written.
pub(crate) fn parse_scheduler(text: &str) -> Result<RawSchedulerConfig, Vec<ConfigError>> {
    let mut raw: RawSchedulerConfig =
        parse_yaml(text, "the file is empty: a scheduler config needs at least `cert`, `key` and `ca`")?;
    raw.text = text.to_owned();
    Ok(raw)
}

/// Either kind of file: an empty one is refused with `empty`, serde's errors carry their
/// key path and line.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, empty: &str) -> Result<T, Vec<ConfigError>> {
    if text.trim().is_empty() || is_only_comments(text) {
        return Err(vec![ConfigError { key: "(yaml)".into(), line: None, message: empty.into() }]);
    }
    serde_yaml::from_str::<T>(text).map_err(|err| vec![serde_error(&err)])
}

fn is_only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

/// Turns a serde_yaml error into a [`ConfigError`]. serde_yaml writes the key path (when
/// it has one) as a `path: ` prefix and the position as an ` at line L column C` suffix;
/// the path becomes the key, the position the line, and the rest the message.
fn serde_error(err: &serde_yaml::Error) -> ConfigError {
    let line = err.location().map(|l| l.line());
    let mut text = err.to_string();
    if let Some(loc) = err.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_owned();
        }
    }
    let (path, message) = split_path_prefix(&text);
    let key = match (path, field_named(message)) {
        (Some(p), Some(field)) => format!("{p}.{field}"),
        (None, Some(field)) => field.to_owned(),
        (Some(p), None) => p.to_owned(),
        (None, None) => "(yaml)".to_owned(),
    };
    ConfigError { key, line, message: message.to_owned() }
}

/// Splits `routes[0].match: message` into the path and the message. A prefix only counts
/// as a path when it looks like one (no spaces), so a message that merely contains `: `
/// is left whole.
fn split_path_prefix(text: &str) -> (Option<&str>, &str) {
    if let Some((prefix, rest)) = text.split_once(": ") {
        let is_path =
            !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]?".contains(c));
        if is_path {
            return (Some(prefix), rest);
        }
    }
    (None, text)
}

/// The field that serde's "unknown field `x`, expected ...", "duplicate field `x`" or
/// "missing field `x`" message is about.
fn field_named(message: &str) -> Option<&str> {
    let rest = ["unknown field `", "duplicate field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))?;
    rest.split_once('`').map(|(field, _)| field)
}

/// One step of a key path: a map key or a list index.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `routes[2].target[0]` into `routes`, `2`, `target`, `0`. `None` for a key
/// that is not a path (like `(yaml)`).
fn segments(key: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut indexes) = part.split_once('[').map_or((part, ""), |(n, i)| (n, i));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        out.push(Segment::Key(name));
        while !indexes.is_empty() {
            let (index, tail) = indexes.split_once(']')?;
            out.push(Segment::Index(index.parse().ok()?));
            indexes = tail.strip_prefix('[').unwrap_or(tail);
        }
    }
    Some(out)
}

/// A non-blank, non-comment line, reduced to what finding a key needs.
#[derive(Debug)]
struct Shape<'a> {
    /// 1-based line number.
    number: usize,
    /// Column of the first character (the `-` for a list item).
    indent: usize,
    /// Whether the line starts a list item.
    dash: bool,
    /// The map key the line starts, with its column, if it starts one.
    key: Option<(usize, &'a str)>,
}

fn shapes(text: &str) -> Vec<Shape<'_>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let rest = line.trim_start_matches(' ');
        if rest.trim().is_empty() || rest.starts_with('#') {
            continue;
        }
        let indent = line.len() - rest.len();
        let dash = rest == "-" || rest.starts_with("- ");
        let body = if dash { rest[1..].trim_start() } else { rest };
        let key_col = line.len() - body.len();
        out.push(Shape { number: i + 1, indent, dash, key: leading_key(body).map(|k| (key_col, k)) });
    }
    out
}

/// The key of `name: value` or `name:`, for plain (unquoted) keys.
fn leading_key(body: &str) -> Option<&str> {
    let (name, after) = body.split_once(':')?;
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain && (after.is_empty() || after.starts_with(' '))).then_some(name)
}

/// The 1-based line that best matches a key path such as `routes[2].match.listener`:
/// the line of the deepest part of the path found in the text. This reads block-style
/// YAML by indentation only; for flow style (`match: { port: 1 }`) it stops at the
/// enclosing key, which is close enough for a human reading the message.
pub(crate) fn line_of(text: &str, key: &str) -> Option<usize> {
    let segments = segments(key)?;
    let shapes = shapes(text);
    let (mut start, mut end) = (0, shapes.len());
    let mut found = None;
    for segment in segments {
        let hit = match segment {
            Segment::Key(name) => find_key(&shapes, start, end, name),
            Segment::Index(index) => find_item(&shapes, start, end, index),
        };
        let Some((at, block_start, block_end)) = hit else {
            break;
        };
        found = Some(shapes[at].number);
        (start, end) = (block_start, block_end);
    }
    found
}

/// Finds key `name` among the keys of the mapping in `shapes[start..end]`; returns its
/// index and the extent of its value's block.
fn find_key(shapes: &[Shape<'_>], start: usize, end: usize, name: &str) -> Option<(usize, usize, usize)> {
    let block = &shapes[start..end];
    let column = block.iter().filter_map(|s| s.key.map(|(c, _)| c)).min()?;
    let at = start + block.iter().position(|s| s.key == Some((column, name)))?;
    // The value's block runs until a line that is a sibling or belongs to an outer
    // level. A list item may sit at the key's own column (`routes:\n- name: a`).
    let block_end = (at + 1..end)
        .find(|&i| shapes[i].indent < column || (shapes[i].indent == column && !shapes[i].dash))
        .unwrap_or(end);
    Some((at, at + 1, block_end))
}

/// Finds list item `index` in `shapes[start..end]`; returns its index and the extent of
/// the item (which starts on the item's own line, where its first key is).
fn find_item(shapes: &[Shape<'_>], start: usize, end: usize, index: usize) -> Option<(usize, usize, usize)> {
    let column = shapes[start..end].iter().find(|s| s.dash)?.indent;
    let at = (start..end).filter(|&i| shapes[i].dash && shapes[i].indent == column).nth(index)?;
    let item_end = (at + 1..end)
        .find(|&i| shapes[i].indent < column || (shapes[i].indent == column && shapes[i].dash))
        .unwrap_or(end);
    Some((at, at, item_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "common:\n  node_id: a\nmesh:\n  cert: c\n";

    #[test]
    fn parses_a_minimal_file() {
        let raw = parse(MINIMAL).expect("minimal config parses");
        assert_eq!(raw.common.node_id.as_deref(), Some("a"));
        assert!(raw.listeners.is_empty());
        assert_eq!(raw.text, MINIMAL);
    }

    #[test]
    fn an_empty_section_list_is_empty() {
        let raw = parse(&format!("{MINIMAL}peers:\nroutes:\n")).expect("parses");
        assert!(raw.peers.is_empty() && raw.routes.is_empty());
    }

    #[test]
    fn unknown_key_names_its_full_path_and_line() {
        let text = format!("{MINIMAL}routes:\n  - name: r\n    match:\n      prot: 80\n");
        let errors = parse(&text).expect_err("unknown key is refused");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "routes[0].match.prot");
        assert_eq!(errors[0].line, Some(8));
        assert!(errors[0].message.contains("unknown field `prot`"), "{}", errors[0].message);
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let errors = parse(&format!("{MINIMAL}meshh: {{}}\n")).expect_err("refused");
        assert_eq!(errors[0].key, "meshh");
        assert_eq!(errors[0].line, Some(5));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = format!("{MINIMAL}scheduler:\n  max_retries: lots\n");
        let errors = parse(&text).expect_err("refused");
        assert_eq!(errors[0].key, "scheduler.max_retries");
        assert_eq!(errors[0].line, Some(6));
        assert!(!errors[0].message.contains(" at line "), "{}", errors[0].message);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errors = parse("common:\n  node_id: a\n   region: x\nmesh: {}\n").expect_err("refused");
        assert_eq!(errors[0].key, "(yaml)");
        assert_eq!(errors[0].line, Some(3));
    }

    #[test]
    fn missing_and_duplicate_sections_are_named() {
        let errors = parse("common: {}\n").expect_err("refused");
        assert_eq!(errors[0].key, "mesh");
        assert!(errors[0].message.contains("missing field"), "{}", errors[0].message);
        let errors = parse(&format!("{MINIMAL}common: {{}}\n")).expect_err("refused");
        assert_eq!(errors[0].key, "common");
        assert!(errors[0].message.contains("duplicate field"), "{}", errors[0].message);
    }

    #[test]
    fn a_target_of_the_wrong_type_names_the_target() {
        let text = format!("{MINIMAL}routes:\n  - name: r\n    target: {{a: 1}}\n");
        let errors = parse(&text).expect_err("refused");
        assert_eq!(errors[0].key, "routes[0].target");
        assert_eq!(errors[0].line, Some(7));
        assert!(errors[0].message.contains("host:port"), "{}", errors[0].message);
    }

    #[test]
    fn a_section_of_the_wrong_type_says_a_mapping_is_expected() {
        let errors = parse("common: yes\nmesh: {}\n").expect_err("refused");
        assert_eq!(errors[0].key, "common");
        assert!(errors[0].message.contains("expected a mapping"), "{}", errors[0].message);
    }

    #[test]
    fn empty_text_is_refused_plainly() {
        let errors = parse("# nothing\n\n").expect_err("refused");
        assert!(errors[0].message.contains("empty"));
    }

    #[test]
    fn targets_take_one_or_many() {
        let text = format!("{MINIMAL}routes:\n  - target: a:1\n  - target: [a:1, b:2]\n");
        let raw = parse(&text).expect("parses");
        assert!(matches!(raw.routes[0].target, Some(RawTargets::One(_))));
        assert!(matches!(&raw.routes[1].target, Some(RawTargets::Many(v)) if v.len() == 2));
    }

    #[test]
    fn segments_split_keys_and_indexes() {
        use Segment::{Index, Key};
        assert_eq!(
            segments("routes[2].target[0]"),
            Some(vec![Key("routes"), Index(2), Key("target"), Index(0)])
        );
        assert_eq!(segments("(yaml)"), None);
    }

    const LOCATE: &str = "\
common:
  node_id: a
listeners:
  - name: web
    bind: 1.2.3.4:80
  # a comment
  - name: api
    bind: 1.2.3.4:81
routes:
- name: r1
  match: { port: 80 }
- name: r2
  match:
    listener: api
  target:
    - x:1
    - y:2
exit_policy:
  allow: [\"a:1\"]
";

    #[test]
    fn line_of_follows_indexes_and_nested_keys() {
        assert_eq!(line_of(LOCATE, "common.node_id"), Some(2));
        assert_eq!(line_of(LOCATE, "listeners[1]"), Some(7));
        assert_eq!(line_of(LOCATE, "listeners[1].bind"), Some(8));
        assert_eq!(line_of(LOCATE, "routes[1].match.listener"), Some(14));
        assert_eq!(line_of(LOCATE, "routes[1].target[1]"), Some(17));
    }

    #[test]
    fn line_of_falls_back_to_the_deepest_key_found() {
        assert_eq!(line_of(LOCATE, "routes[0].match.port"), Some(11));
        assert_eq!(line_of(LOCATE, "exit_policy.allow[0]"), Some(19));
        assert_eq!(line_of(LOCATE, "routes[0].exit"), Some(10));
        assert_eq!(line_of(LOCATE, "mesh.cert"), None);
        assert_eq!(line_of(LOCATE, "(yaml)"), None);
    }
}
