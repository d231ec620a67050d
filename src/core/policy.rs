//! Exit policy: which `host:port` targets this node dials for flows that arrive from the
//! mesh. The default is to deny everything, so a node is never an open relay.
//!
//! The check runs on the address actually dialed, after name resolution: an IP rule
//! (`10.0.0.0/8`, `192.0.2.7:443`) is matched against the resolved address, and a name
//! rule (`db.internal:5432`, `*.svc.local:*`) against the name the flow asked for. Port 0
//! and unspecified addresses (`0.0.0.0`, `::`) are refused whatever the rules say, and an
//! IPv4-mapped IPv6 address is matched as the IPv4 address it carries.
//!
//! Loopback (`127.0.0.0/8`, `::1`) and link-local addresses (`169.254.0.0/16`, where cloud
//! metadata services answer, and `fe80::/10`) are reached only by an IP rule at least as
//! narrow as their block (`127.0.0.1/32`, `169.254.169.254`): a broad rule such as
//! `0.0.0.0/0` does not cover them, and a name rule never does, whatever the name resolves
//! to (a name whose DNS answer points at loopback cannot reach the node's own services).
//! The IPv6 metadata address and the IPv6 forms that carry an IPv4 address (NAT64,
//! IPv4-compatible) are guarded the same way (see `guarded_block`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The set of allow rules; an address is allowed when any rule matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    rules: Vec<AllowRule>,
}

/// One allow rule: a host part and a port range, and optionally who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: HostPattern,
    ports: PortRange,
    /// `None`: any origin; else only these (node ids, `group:` names).
    from: Option<Vec<Principal>>,
}

/// Who a rule is for: a node id, or a group its certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `fra-1`.
    Node(String),
    /// `group:backend`.
    Group(String),
}

impl Principal {
    /// Parses `node-id` or `group:name`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid = crate::core::wire::is_valid_node_id;
        match s.strip_prefix("group:") {
            Some(g) if valid(g) => Ok(Self::Group(g.to_string())),
            Some(_) => Err(format!("`{s}`: not a group name (1-63 of a-z, 0-9, '-')")),
            None if valid(s) => Ok(Self::Node(s.to_string())),
            None => Err(format!("`{s}`: not a node id or `group:NAME`")),
        }
    }

    fn admits(&self, who: &Requester<'_>) -> bool {
        who.authenticated
            && match self {
                Self::Node(n) => n == who.node,
                Self::Group(g) => who.groups.iter().any(|h| h == g),
            }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(n) => write!(f, "{n}"),
            Self::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// Who asks the exit for a flow.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The origin's node id.
    pub node: &'a str,
    /// The groups its certificate names.
    pub groups: &'a [String],
    /// Whether the exit checked who it is (a sealed flow); rules with `from` never admit
    /// a claimed, unchecked origin.
    pub authenticated: bool,
}

impl Requester<'_> {
    /// Nobody in particular: only rules without `from` apply.
    pub const ANYONE: Requester<'static> = Requester { node: "", groups: &[], authenticated: false };
}

/// One `exit_policy.allow` entry as written: the pattern and, optionally, who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// The `host:port` pattern.
    pub to: String,
    /// `from`: node ids and `group:` names; `None` means any origin.
    pub from: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Cidr(Cidr),
    /// A lower-case DNS name, exact.
    Name(String),
    /// `*.suffix`: any name that ends in `.suffix` (lower-case, without the dot).
    Suffix(String),
}

/// An IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// An inclusive port range; `1..=65535` means any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortRange {
    low: u16,
    high: u16,
}

const ANY_PORT: PortRange = PortRange { low: 1, high: u16::MAX };

impl ExitPolicy {
    /// A policy that allows nothing (the default).
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Parses allow patterns; on failure returns `(index, message)` for every bad one.
    pub fn parse(patterns: &[String]) -> Result<Self, Vec<(usize, String)>> {
        let entries: Vec<AllowEntry> =
            patterns.iter().map(|p| AllowEntry { to: p.clone(), from: None }).collect();
        Self::parse_entries(&entries)
    }

    /// Parses allow entries (patterns with optional `from`); on failure returns
    /// `(index, message)` for every bad one.
    pub fn parse_entries(entries: &[AllowEntry]) -> Result<Self, Vec<(usize, String)>> {
        let mut rules = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let from = match &e.from {
                None => Ok(None),
                Some(list) if list.is_empty() => {
                    Err("`from` is empty: leave it out to allow any origin".to_string())
                }
                Some(list) => {
                    list.iter().map(|p| Principal::parse(p)).collect::<Result<Vec<_>, _>>().map(Some)
                }
            };
            match (AllowRule::parse(&e.to), from) {
                (Ok(rule), Ok(from)) => rules.push(AllowRule { from, ..rule }),
                (Err(message), _) | (_, Err(message)) => errors.push((i, message)),
            }
        }
        if errors.is_empty() { Ok(Self { rules }) } else { Err(errors) }
    }

    /// True when the policy has no rules (denies everything).
    pub fn is_deny_all(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule could allow `host:port` before it is resolved: an IP literal is
    /// checked exactly; a name only needs a name rule that matches it or an IP rule for the
    /// port. Used to avoid resolving names that no rule could ever allow.
    pub fn may_allow(&self, host: &str, port: u16) -> bool {
        self.may_allow_for(&Requester::ANYONE, host, port)
    }

    /// [`Self::may_allow`] for `who`: only rules that admit it count.
    pub fn may_allow_for(&self, who: &Requester<'_>, host: &str, port: u16) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.allows_for(who, host, SocketAddr::new(ip, port));
        }
        let name = normalize_name(host);
        port != 0
            && self.rules.iter().filter(|r| r.admits(who)).any(|r| match r.host {
                HostPattern::Cidr(_) => r.ports.contains(port),
                _ => r.matches(&name, IpAddr::from([0, 0, 0, 0]), port),
            })
    }

    /// Whether this node may dial `addr`, reached by resolving `requested_host`, for
    /// anyone (rules without `from`).
    pub fn allows(&self, requested_host: &str, addr: SocketAddr) -> bool {
        self.allows_for(&Requester::ANYONE, requested_host, addr)
    }

    /// Whether this node may dial `addr`, reached by resolving `requested_host`, for `who`.
    pub fn allows_for(&self, who: &Requester<'_>, requested_host: &str, addr: SocketAddr) -> bool {
        self.allows_for_at(who, requested_host, addr, &[])
    }

    /// [`Self::allows_for`] on a host whose own interface addresses are `own`: those are
    /// guarded like loopback, reached only by an IP rule naming the address itself (a
    /// broad rule would let a flow reach the exit's own services bound to all addresses,
    /// or loop back into the mesh).
    pub fn allows_for_at(
        &self,
        who: &Requester<'_>,
        requested_host: &str,
        addr: SocketAddr,
        own: &[IpAddr],
    ) -> bool {
        self.matching(requested_host, addr, own).any(|(_, r)| r.admits(who))
    }

    /// The first rule that covers the target but not `who`, by index: what a refusal may
    /// name (the rule's place, not its contents) when the target is allowed to others.
    pub fn closest_for(&self, who: &Requester<'_>, requested_host: &str, addr: SocketAddr) -> Option<usize> {
        self.closest_for_at(who, requested_host, addr, &[])
    }

    /// [`Self::closest_for`] on a host whose own interface addresses are `own`.
    pub fn closest_for_at(
        &self,
        who: &Requester<'_>,
        requested_host: &str,
        addr: SocketAddr,
        own: &[IpAddr],
    ) -> Option<usize> {
        self.matching(requested_host, addr, own).find(|(_, r)| !r.admits(who)).map(|(i, _)| i)
    }

    /// [`Self::closest_for`] before resolution (a name checked against name rules, an IP
    /// literal exactly).
    pub fn closest_before_resolving(&self, who: &Requester<'_>, host: &str, port: u16) -> Option<usize> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.closest_for(who, host, SocketAddr::new(ip, port));
        }
        let name = normalize_name(host);
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| !r.admits(who) && r.matches(&name, IpAddr::from([0, 0, 0, 0]), port))
            .map(|(i, _)| i)
    }

    /// The rules that cover dialing `addr` for `requested_host`, whoever asks.
    fn matching<'p>(
        &'p self,
        requested_host: &str,
        addr: SocketAddr,
        own: &[IpAddr],
    ) -> impl Iterator<Item = (usize, &'p AllowRule)> + 'p {
        let ip = addr.ip().to_canonical();
        let refused = addr.port() == 0 || ip.is_unspecified() || ip.is_multicast();
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let block = guarded_block(ip).or_else(|| own.iter().any(|o| o.to_canonical() == ip).then_some(full));
        let name = normalize_name(requested_host);
        let port = addr.port();
        self.rules.iter().enumerate().filter(move |(_, r)| {
            !refused
                && match block {
                    Some(block) => {
                        matches!(r.host, HostPattern::Cidr(c) if c.prefix >= block && c.contains(ip))
                            && r.ports.contains(port)
                    }
                    None => r.matches(&name, ip, port),
                }
        })
    }

    /// The rule at `index`, for logs.
    pub fn rule(&self, index: usize) -> Option<&AllowRule> {
        self.rules.get(index)
    }
}

/// The prefix length of the guarded block `ip` is in, if any: only an IP rule at least
/// that narrow reaches it. Loopback and link-local; the IPv6 cloud metadata address
/// (`fd00:ec2::254`); and the IPv6 forms that carry an IPv4 address a translator or the
/// stack may turn into any IPv4 address, loopback and metadata included: NAT64
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) and IPv4-compatible (`::a.b.c.d`).
fn guarded_block(ip: IpAddr) -> Option<u8> {
    const METADATA_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(8),
        IpAddr::V4(v4) if v4.is_link_local() => Some(16),
        IpAddr::V6(v6) if v6.is_loopback() || v6 == METADATA_V6 => Some(128),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(10),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            match s {
                [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(96),
                [0x64, 0xff9b, 1, ..] => Some(48),
                // `::a.b.c.d` (deprecated IPv4-compatible): `::` and `::1` are handled above.
                [0, 0, 0, 0, 0, 0, _, _] => Some(96),
                _ => None,
            }
        }
        _ => None,
    }
}

impl AllowRule {
    /// Parses one pattern: `CIDR`, `IP`, `CIDR:PORTS`, `[V6CIDR]:PORTS`, `NAME:PORTS`,
    /// `*.NAME:PORTS`, where PORTS is a port, `LOW-HIGH` or `*`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim();
        if p.is_empty() {
            return Err("empty pattern".into());
        }
        let (host, port) = split_host_port(p);
        let ports = match port {
            Some(s) => parse_ports(s)?,
            None => ANY_PORT,
        };
        if let Some(cidr) = parse_cidr(host)? {
            return Ok(Self { host: HostPattern::Cidr(cidr), ports, from: None });
        }
        if port.is_none() {
            return Err(format!("`{p}`: a name needs a port (`{p}:443` or `{p}:*`)"));
        }
        let name = normalize_name(host);
        if let Some(suffix) = name.strip_prefix("*.") {
            check_name(suffix, p)?;
            return Ok(Self { host: HostPattern::Suffix(suffix.to_string()), ports, from: None });
        }
        check_name(&name, p)?;
        Ok(Self { host: HostPattern::Name(name), ports, from: None })
    }

    /// Whether `who` may use this rule.
    fn admits(&self, who: &Requester<'_>) -> bool {
        self.from.as_ref().is_none_or(|from| from.iter().any(|p| p.admits(who)))
    }

    fn matches(&self, name: &str, ip: IpAddr, port: u16) -> bool {
        if !self.ports.contains(port) {
            return false;
        }
        match &self.host {
            HostPattern::Cidr(c) => c.contains(ip),
            HostPattern::Name(n) => n == name,
            HostPattern::Suffix(s) => {
                name.len() > s.len() + 1 && name.ends_with(s.as_str()) && {
                    let dot = name.len() - s.len() - 1;
                    name.as_bytes()[dot] == b'.'
                }
            }
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Cidr(c) => write!(f, "{}/{}", c.addr, c.prefix)?,
            HostPattern::Name(n) => write!(f, "{n}")?,
            HostPattern::Suffix(s) => write!(f, "*.{s}")?,
        }
        if self.ports == ANY_PORT {
            write!(f, ":*")?;
        } else if self.ports.low == self.ports.high {
            write!(f, ":{}", self.ports.low)?;
        } else {
            write!(f, ":{}-{}", self.ports.low, self.ports.high)?;
        }
        if let Some(from) = &self.from {
            let names: Vec<String> = from.iter().map(ToString::to_string).collect();
            write!(f, " from [{}]", names.join(", "))?;
        }
        Ok(())
    }
}

impl PortRange {
    fn contains(&self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Splits `host:port`, `[v6]:port`, a bare v6 address (no port) or a bare host.
fn split_host_port(p: &str) -> (&str, Option<&str>) {
    if let Some(rest) = p.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').or(Some(tail)).filter(|s| !s.is_empty())),
            None => (p, None),
        };
    }
    if p.matches(':').count() > 1 {
        return (p, None);
    }
    match p.rsplit_once(':') {
        Some((h, port)) => (h, Some(port)),
        None => (p, None),
    }
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    if s == "*" {
        return Ok(ANY_PORT);
    }
    let parse_one = |t: &str| -> Result<u16, String> {
        match t.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{s}` is not a port (1-65535, `LOW-HIGH` or `*`)")),
            Ok(n) => Ok(n),
        }
    };
    let (low, high) = match s.split_once('-') {
        Some((l, h)) => (parse_one(l)?, parse_one(h)?),
        None => {
            let n = parse_one(s)?;
            (n, n)
        }
    };
    if low > high {
        return Err(format!("port range `{s}` is empty"));
    }
    Ok(PortRange { low, high })
}

/// `Ok(None)` when `host` is not an IP or CIDR at all (so it may be a name).
fn parse_cidr(host: &str) -> Result<Option<Cidr>, String> {
    let (addr, prefix) = match host.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (host, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return match prefix {
            Some(_) => Err(format!("`{host}` is not a CIDR")),
            None => Ok(None),
        };
    };
    let addr = addr.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("`{host}`: prefix must be 0-{max}")),
        },
    };
    Ok(Some(Cidr { addr, prefix }))
}

fn check_name(name: &str, pattern: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok { Ok(()) } else { Err(format!("`{pattern}` is neither an IP, a CIDR nor a host name")) }
}

fn normalize_name(host: &str) -> String {
    let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &[&str]) -> ExitPolicy {
        ExitPolicy::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket addr")
    }

    #[test]
    fn default_policy_denies_everything() {
        let p = ExitPolicy::deny_all();
        assert!(!p.allows("10.0.0.1", sa("10.0.0.1:80")));
        assert!(!p.allows("127.0.0.1", sa("127.0.0.1:80")));
    }

    #[test]
    fn cidr_rule_matches_resolved_address_and_port() {
        let p = policy(&["10.0.0.0/8:443", "192.168.1.7"]);
        assert!(p.allows("x", sa("10.200.3.4:443")));
        assert!(!p.allows("x", sa("10.200.3.4:80")));
        assert!(!p.allows("x", sa("11.0.0.1:443")));
        assert!(p.allows("x", sa("192.168.1.7:22")));
        assert!(!p.allows("x", sa("192.168.1.8:22")));
    }

    #[test]
    fn mapped_ipv6_is_checked_as_ipv4() {
        let p = policy(&["10.0.0.0/8"]);
        assert!(p.allows("x", sa("[::ffff:10.1.2.3]:80")));
        assert!(!policy(&["192.0.2.0/24"]).allows("x", sa("[::ffff:127.0.0.1]:80")));
    }

    #[test]
    fn loopback_and_link_local_need_a_narrow_ip_rule() {
        let broad = policy(&["0.0.0.0/0:*", "::/0", "*.example.com:*", "localhost:*"]);
        for target in ["127.0.0.1:80", "127.5.6.7:22", "169.254.169.254:80", "[::1]:80", "[fe80::1]:80"] {
            assert!(!broad.allows("x", sa(target)), "{target} is not reached by a broad rule");
        }
        assert!(!broad.allows("localhost", sa("127.0.0.1:80")), "nor by a name, whatever it resolves to");
        assert!(!broad.allows("evil.example.com", sa("127.0.0.1:80")));
        assert!(!broad.allows("x", sa("[::ffff:127.0.0.1]:80")), "mapped loopback is loopback");
        assert!(broad.allows("x", sa("192.0.2.7:80")), "other addresses still are");
        let narrow = policy(&["127.0.0.1/32:9000", "169.254.169.254:80", "[::1]:9000"]);
        assert!(narrow.allows("x", sa("127.0.0.1:9000")) && narrow.allows("x", sa("[::1]:9000")));
        assert!(narrow.allows("x", sa("169.254.169.254:80")));
        assert!(!narrow.allows("x", sa("127.0.0.1:9001")) && !narrow.allows("x", sa("127.0.0.2:9000")));
        assert!(policy(&["127.0.0.0/8"]).allows("x", sa("127.9.9.9:1")), "the whole block, named as such");
    }

    #[test]
    fn the_exit_s_own_addresses_need_a_rule_naming_the_address() {
        let own: Vec<IpAddr> = vec!["192.0.2.2".parse().expect("ip"), "fd00::2".parse().expect("ip")];
        let who = Requester::ANYONE;
        let broad = policy(&["0.0.0.0/0:*", "::/0", "192.0.2.0/24:*"]);
        for target in ["192.0.2.2:22", "[::ffff:192.0.2.2]:22", "[fd00::2]:8080"] {
            assert!(
                !broad.allows_for_at(&who, "x", sa(target), &own),
                "{target} is not reached by a broad rule"
            );
            assert!(broad.allows_for(&who, "x", sa(target)), "{target}: only as an own address");
        }
        assert!(broad.allows_for_at(&who, "x", sa("192.0.2.3:22"), &own), "a neighbour still is");
        let narrow = policy(&["192.0.2.2/32:22", "[fd00::2]:8080"]);
        assert!(narrow.allows_for_at(&who, "x", sa("192.0.2.2:22"), &own));
        assert!(narrow.allows_for_at(&who, "x", sa("[fd00::2]:8080"), &own));
        assert!(!narrow.allows_for_at(&who, "x", sa("192.0.2.2:23"), &own), "and only on its ports");
    }

    #[test]
    fn ipv6_forms_that_reach_ipv4_and_the_v6_metadata_address_need_a_narrow_rule() {
        let broad = policy(&["::/0", "0.0.0.0/0", "2000::/3", "fd00::/8"]);
        for target in [
            "[fd00:ec2::254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[64:ff9b::7f00:1]:80",
            "[64:ff9b:1::a9fe:a9fe]:80",
            "[::a9fe:a9fe]:80",
            "[::7f00:1]:80",
        ] {
            assert!(!broad.allows("x", sa(target)), "{target} is not reached by a broad rule");
        }
        let narrow = policy(&["[fd00:ec2::254]:80", "[64:ff9b::/96]:443", "[::c000:207]:22"]);
        assert!(narrow.allows("x", sa("[fd00:ec2::254]:80")));
        assert!(narrow.allows("x", sa("[64:ff9b::c000:207]:443")), "a NAT64 rule names the prefix");
        assert!(narrow.allows("x", sa("[::c000:207]:22")));
        assert!(broad.allows("x", sa("[2001:db8::1]:80")), "other IPv6 addresses still are");
    }

    #[test]
    fn port_zero_and_unspecified_are_always_refused() {
        let p = policy(&["0.0.0.0/0", "::/0"]);
        assert!(!p.allows("x", sa("1.2.3.4:0")));
        assert!(!p.allows("x", sa("0.0.0.0:80")));
        assert!(!p.allows("x", sa("[::]:80")));
        assert!(p.allows("x", sa("1.2.3.4:80")));
    }

    #[test]
    fn name_rules_match_the_requested_name() {
        let p = policy(&["db.internal:5432", "*.svc.local:8000-8100"]);
        assert!(p.allows("DB.internal.", sa("10.0.0.1:5432")));
        assert!(!p.allows("db.internal", sa("10.0.0.1:5433")));
        assert!(p.allows("a.svc.local", sa("10.0.0.1:8050")));
        assert!(!p.allows("svc.local", sa("10.0.0.1:8050")));
        assert!(!p.allows("asvc.local", sa("10.0.0.1:8050")));
    }

    #[test]
    fn names_are_only_worth_resolving_when_a_rule_could_allow_them() {
        assert!(!ExitPolicy::deny_all().may_allow("db.internal", 5432));
        let p = policy(&["db.internal:5432", "10.0.0.0/8:443"]);
        assert!(p.may_allow("db.internal", 5432));
        assert!(!p.may_allow("other.internal", 5432));
        assert!(p.may_allow("other.internal", 443), "may resolve into 10/8");
        assert!(p.may_allow("10.1.1.1", 443));
        assert!(!p.may_allow("127.0.0.1", 443));
        assert!(!p.may_allow("db.internal", 0));
    }

    #[test]
    fn ipv6_rules_parse_with_and_without_brackets() {
        let p = policy(&["[2001:db8::/32]:443", "fd00::/8"]);
        assert!(p.allows("x", sa("[2001:db8::1]:443")));
        assert!(!p.allows("x", sa("[2001:db9::1]:443")));
        assert!(p.allows("x", sa("[fd12::1]:1")));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_index() {
        let bad: Vec<String> = ["10.0.0.0/8", "10.0.0.0/33", "host", "h:0", "h:9-3", "a b:1", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errs = ExitPolicy::parse(&bad).expect_err("invalid");
        let idx: Vec<usize> = errs.iter().map(|e| e.0).collect();
        assert_eq!(idx, vec![1, 2, 3, 4, 5, 6]);
    }
}
