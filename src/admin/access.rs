//! Who may talk to the admin API: the Host check, the bearer token, and the bind check.
//!
//! The rules are documented on [`AccessRules`]; the bind rule is
//! [`crate::config::admin_bind::check_bind`], checked when a config is loaded.

use std::net::SocketAddr;

use super::request::Request;
use super::response::Response;
use super::session::{SessionKeys, cookie_value};

/// Who a request comes from, as [`AccessRules`] established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token is configured and the Host header is one of this machine's names.
    Loopback,
    /// The request carried the configured bearer token.
    Bearer,
    /// A browser logged in with the token; the cookie's value.
    Session(String),
    /// Nothing shown, on one of the public paths (the console page and its login).
    Anonymous,
}

impl Caller {
    /// Whether the caller proved it holds the admin token (bearer or login), which
    /// state-changing actions require.
    pub fn holds_token(&self) -> bool {
        matches!(self, Caller::Bearer | Caller::Session(_))
    }

    /// When a session's login expires (Unix seconds); `None` for other callers.
    pub fn session_expiry(&self) -> Option<u64> {
        match self {
            Caller::Session(cookie) => super::session::expiry(cookie),
            _ => None,
        }
    }
}

/// Paths served to anyone who passes the Host check, token or not: the console's page and
/// assets (nothing secret in them), whether a login is needed, and the login itself.
pub fn is_public(method: &str, path: &str) -> bool {
    match method {
        "GET" | "HEAD" => {
            matches!(path, "/" | "/index.html" | "/favicon.ico" | "/api/console/session")
                || path.starts_with("/console/")
        }
        "POST" => path == "/console/login",
        _ => false,
    }
}

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
    /// Console sessions are not looked at: this is the rule for API clients.
    pub fn check(&self, request: &Request) -> Option<Response> {
        self.admit(request, None, 0).err()
    }

    /// Who `request` comes from, or the refusal to send (421 or 401): [`AccessRules::check`]
    /// plus console sessions (the keys that sign them, and the cookie's name) and the
    /// public paths.
    pub fn admit(
        &self,
        request: &Request,
        sessions: Option<(&SessionKeys, &str)>,
        now_unix: u64,
    ) -> Result<Caller, Response> {
        let host = request.header("host").and_then(host_part);
        let allowed = host.is_some_and(|h| self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
        // The Host check stops a web page that rebinds a name to a token-less loopback
        // API; with a token, a page cannot present it, and remote clients (a scraper, a
        // `proxy status` elsewhere) name the node however their DNS does.
        if !allowed && self.token.is_none() {
            return Err(Response::text(
                421,
                "this admin API answers only to its own host names (Host header refused)\n",
            ));
        }
        let Some(token) = &self.token else { return Ok(Caller::Loopback) };
        let presented = request.header("authorization").and_then(bearer_token).unwrap_or("");
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return Ok(Caller::Bearer);
        }
        if let Some((keys, name)) = sessions
            && let Some(cookie) = request.header("cookie").and_then(|c| cookie_value(c, name))
            && keys.valid(cookie, now_unix)
        {
            return Ok(Caller::Session(cookie.to_string()));
        }
        if sessions.is_some() && is_public(&request.method, &request.path) {
            return Ok(Caller::Anonymous);
        }
        Err(Response::text(401, "missing or wrong bearer token\n"))
    }

    /// Whether the token `presented` at a login is the configured one.
    pub fn token_matches(&self, presented: &str) -> bool {
        self.token.as_deref().is_some_and(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
    }
}

/// The refusal of a state-changing request (POST) that a page of another origin could have
/// made the browser send, or `None`:
///
/// - an `Origin` header (browsers send one on every POST) must name the same host and port
///   as the `Host` header (over HTTP, or HTTPS through a TLS proxy);
/// - a browser's request must carry the CSRF token of its session (or, with no token
///   configured, of loopback callers) in `X-CSRF-Token`; the login itself needs none, and
///   a bearer token cannot be attached by another page, so bearer callers need none.
pub fn check_post(request: &Request, caller: &Caller, keys: &SessionKeys) -> Option<Response> {
    if let Some(origin) = request.header("origin") {
        let host = request.header("host").unwrap_or("");
        // https too: behind a TLS reverse proxy that passes `Host` through, the page's
        // origin is https while this port speaks plain HTTP.
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Some(Response::text(403, "cross-origin request refused (Origin does not match Host)\n"));
        }
    }
    if request.path == "/console/login" {
        return None;
    }
    let expected = match caller {
        Caller::Bearer => return None,
        Caller::Session(cookie) => keys.csrf(Some(cookie)),
        Caller::Loopback => keys.csrf(None),
        Caller::Anonymous => return Some(Response::text(401, "log in first\n")),
    };
    let presented = request.header("x-csrf-token").unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        None
    } else {
        Some(Response::text(403, "missing or wrong CSRF token (X-CSRF-Token)\n"))
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
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
            body: Default::default(),
            peer: None,
        }
    }

    use super::super::session::COOKIE;

    fn post(path: &str, headers: &[(&str, &str)]) -> Request {
        Request { method: "POST".into(), path: path.into(), ..request(headers) }
    }

    #[test]
    fn a_login_cookie_admits_and_public_paths_need_nothing() {
        let rules = loopback_rules(Some("s3cret"));
        let keys = SessionKeys::random();
        let cookie = keys.issue(100);
        let with_cookie = request(&[("Host", "localhost"), ("Cookie", &format!("{COOKIE}={cookie}"))]);
        let api = Request { path: "/api/nodes".into(), ..with_cookie.clone() };
        assert_eq!(
            rules.admit(&api, Some((&keys, COOKIE)), 100).map_err(|r| r.status),
            Ok(Caller::Session(cookie.clone()))
        );
        assert_eq!(
            rules
                .admit(&api, Some((&keys, COOKIE)), 100 + super::super::session::SESSION_SECS)
                .map_err(|r| r.status),
            Err(401)
        );
        assert_eq!(
            rules.admit(&api, None, 100).map_err(|r| r.status),
            Err(401),
            "API clients get no sessions"
        );
        let page = request(&[("Host", "localhost")]);
        assert_eq!(
            rules.admit(&page, Some((&keys, COOKIE)), 100).map_err(|r| r.status),
            Ok(Caller::Anonymous)
        );
        let nodes = Request { path: "/api/nodes".into(), ..page };
        assert_eq!(rules.admit(&nodes, Some((&keys, COOKIE)), 100).map_err(|r| r.status), Err(401));
        assert!(rules.token_matches("s3cret") && !rules.token_matches("s3cre"));
        assert!(!loopback_rules(None).token_matches(""));
    }

    #[test]
    fn posts_need_the_same_origin_and_the_session_csrf_token() {
        let keys = SessionKeys::random();
        let cookie = keys.issue(1);
        let session = Caller::Session(cookie.clone());
        let csrf = keys.csrf(Some(&cookie));
        let code = |r: Option<Response>| r.map_or(200, |r| r.status);
        let host = ("Host", "127.0.0.1:9901");
        let ok = post("/api/x", &[host, ("Origin", "http://127.0.0.1:9901"), ("X-CSRF-Token", &csrf)]);
        assert_eq!(code(check_post(&ok, &session, &keys)), 200);
        let foreign = post("/api/x", &[host, ("Origin", "http://evil.example"), ("X-CSRF-Token", &csrf)]);
        assert_eq!(code(check_post(&foreign, &session, &keys)), 403);
        let proxied = post("/api/x", &[host, ("Origin", "https://127.0.0.1:9901"), ("X-CSRF-Token", &csrf)]);
        assert_eq!(code(check_post(&proxied, &session, &keys)), 200);
        let other_port =
            post("/api/x", &[host, ("Origin", "http://127.0.0.1:9902"), ("X-CSRF-Token", &csrf)]);
        assert_eq!(code(check_post(&other_port, &session, &keys)), 403);
        let null = post("/api/x", &[host, ("Origin", "null"), ("X-CSRF-Token", &csrf)]);
        assert_eq!(code(check_post(&null, &session, &keys)), 403);
        let no_token = post("/api/x", &[host, ("Origin", "http://127.0.0.1:9901")]);
        assert_eq!(code(check_post(&no_token, &session, &keys)), 403);
        let other = post("/api/x", &[host, ("X-CSRF-Token", &keys.csrf(None))]);
        assert_eq!(code(check_post(&other, &session, &keys)), 403, "loopback's token is not a session's");
        assert_eq!(code(check_post(&other, &Caller::Loopback, &keys)), 200);
        assert_eq!(code(check_post(&post("/api/x", &[host]), &Caller::Bearer, &keys)), 200);
        assert_eq!(code(check_post(&post("/console/login", &[host]), &Caller::Anonymous, &keys)), 200);
        let foreign_login = post("/console/login", &[host, ("Origin", "http://evil.example")]);
        assert_eq!(code(check_post(&foreign_login, &Caller::Anonymous, &keys)), 403);
        assert_eq!(code(check_post(&post("/api/x", &[host]), &Caller::Anonymous, &keys)), 401);
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
