//! Who may talk to the admin API: the Host check, the bearer token, and the bind check.
//!
//! The rules are documented on [`AccessRules`]; the bind rule is
//! [`crate::config::admin_bind::check_bind`], checked when a config is loaded.

use std::net::SocketAddr;

use super::request::Request;
use super::response::Response;

/// What a request must show to be served:
///
/// - **Host.** A page on `evil.example` whose name is made to resolve to 127.0.0.1 (DNS
///   rebinding) can make a browser send requests to a loopback admin port, but the browser
///   still sends `Host: evil.example`. So the host part of the Host header must be one of
///   [`AccessRules::allowed_hosts`]; otherwise, or with no Host header at all, the answer is
///   421. This holds for every path, `/healthz` included, as long as no token is set: a
///   page cannot present a token, and remote clients of a token-protected API name the
///   node however their DNS does, so with a token the Host header is not checked.
/// - **Token.** When a token is configured, `Authorization: Bearer <token>` must carry it
///   (compared in constant time); otherwise 401.
/// - **Bind.** [`crate::config::admin_bind::check_bind`] refuses to serve a non-loopback address without a token, so an
///   unauthenticated admin API is reachable from this machine only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The host names and addresses accepted in the Host header (port not included;
    /// compared case-insensitively; IPv6 without brackets, e.g. `::1`).
    pub allowed_hosts: Vec<String>,
}

impl AccessRules {
    /// `None` when `request` may be served; otherwise the refusal to send (421 or 401).
    pub fn check(&self, request: &Request) -> Option<Response> {
        let host = request.header("host").and_then(host_part);
        let allowed = host.is_some_and(|h| self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
        // The Host check stops a web page that rebinds a name to a token-less loopback
        // API; with a token, a page cannot present it, and remote clients (a scraper, a
        // `proxy status` elsewhere) name the node however their DNS does.
        if !allowed && self.token.is_none() {
            return Some(Response::text(
                421,
                "this admin API answers only to its own host names (Host header refused)\n",
            ));
        }
        if let Some(token) = &self.token {
            let presented = request.header("authorization").and_then(bearer_token).unwrap_or("");
            if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                return Some(Response::text(401, "missing or wrong bearer token\n"));
            }
        }
        None
    }
}

/// The hosts accepted by default: `localhost`, `127.0.0.1`, `::1`, and `bind`'s address
/// unless it is unspecified (0.0.0.0 or ::).
pub fn default_allowed_hosts(bind: SocketAddr) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let ip = bind.ip().to_canonical();
    let own = ip.to_string();
    if !ip.is_unspecified() && !hosts.contains(&own) {
        hosts.push(own);
    }
    hosts
}

/// The host of a Host header value, without the port and, for IPv6, without brackets:
/// `[::1]:9901` gives `::1`, `Localhost:80` gives `Localhost`. `None` when malformed.
fn host_part(value: &str) -> Option<&str> {
    let (host, rest) = match value.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']')?,
        None => value.split_at(value.find(':').unwrap_or(value.len())),
    };
    let port_ok =
        rest.is_empty() || rest.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !host.is_empty()).then_some(host)
}

/// `Authorization: Bearer <token>`: the token (scheme compared case-insensitively).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

/// Compares two byte strings in time that depends on their lengths only, not on where
/// they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    fn status(rules: &AccessRules, headers: &[(&str, &str)]) -> u16 {
        rules.check(&request(headers)).map_or(200, |r| r.status)
    }

    fn loopback_rules(token: Option<&str>) -> AccessRules {
        AccessRules {
            token: token.map(String::from),
            allowed_hosts: default_allowed_hosts("127.0.0.1:9901".parse().expect("addr")),
        }
    }

    #[test]
    fn host_part_strips_ports_and_brackets() {
        assert_eq!(host_part("localhost:9901"), Some("localhost"));
        assert_eq!(host_part("localhost"), Some("localhost"));
        assert_eq!(host_part("127.0.0.1:"), Some("127.0.0.1"));
        assert_eq!(host_part("[::1]:9901"), Some("::1"));
        assert_eq!(host_part("[::1]"), Some("::1"));
        assert_eq!(host_part("::1"), None);
        assert_eq!(host_part("a:b:c"), None);
        assert_eq!(host_part("localhost:99x"), None);
        assert_eq!(host_part("[::1]x"), None);
        assert_eq!(host_part(":9901"), None);
        assert_eq!(host_part(""), None);
    }

    #[test]
    fn only_allowed_hosts_pass_whatever_their_case_or_port() {
        let rules = loopback_rules(None);
        for ok in ["localhost", "LocalHost:9901", "127.0.0.1:9901", "[::1]:9901", "[::1]"] {
            assert_eq!(status(&rules, &[("Host", ok)]), 200, "{ok}");
        }
        for bad in ["evil.example", "evil.example:9901", "localhost.evil.example", "127.0.0.2", "::1", ""] {
            assert_eq!(status(&rules, &[("Host", bad)]), 421, "{bad}");
        }
    }

    #[test]
    fn a_request_without_host_is_refused_with_421_unless_a_token_guards_the_api() {
        assert_eq!(status(&loopback_rules(None), &[]), 421);
        let token = ("Authorization", "Bearer s3cret");
        assert_eq!(status(&loopback_rules(Some("s3cret")), &[token]), 200);
        assert_eq!(status(&loopback_rules(Some("s3cret")), &[token, ("Host", "node-a.example:9901")]), 200);
        assert_eq!(status(&loopback_rules(Some("s3cret")), &[("Host", "node-a.example:9901")]), 401);
    }

    #[test]
    fn the_token_must_match_exactly() {
        let rules = loopback_rules(Some("s3cret"));
        let host = ("Host", "localhost");
        assert_eq!(status(&rules, &[host]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "Bearer wrong")]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "Bearer s3cre")]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "Bearer s3cret2")]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "Basic s3cret")]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "s3cret")]), 401);
        assert_eq!(status(&rules, &[host, ("Authorization", "Bearer s3cret")]), 200);
        assert_eq!(status(&rules, &[host, ("authorization", "bearer s3cret")]), 200);
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn default_hosts_add_the_bind_address_unless_unspecified() {
        let base = ["localhost", "127.0.0.1", "::1"];
        assert_eq!(default_allowed_hosts("127.0.0.1:9901".parse().expect("addr")), base);
        assert_eq!(default_allowed_hosts("0.0.0.0:9901".parse().expect("addr")), base);
        assert_eq!(default_allowed_hosts("[::]:9901".parse().expect("addr")), base);
        let mut with_own = base.map(String::from).to_vec();
        with_own.push("10.1.2.3".into());
        assert_eq!(default_allowed_hosts("10.1.2.3:9901".parse().expect("addr")), with_own);
        with_own[3] = "fd00::7".into();
        assert_eq!(default_allowed_hosts("[fd00::7]:9901".parse().expect("addr")), with_own);
    }
}
