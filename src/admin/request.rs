//! Parsing an HTTP/1.1 request head: pure, no I/O, length-capped.
//!
//! The accepted subset is documented on [`parse_request`], where rustdoc shows it.

/// The most bytes a request head may take, the terminating blank line included.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive: `get` is not `GET`).
    pub method: String,
    /// The path part of the target, starting with `/`, not percent-decoded.
    pub path: String,
    /// What follows the first `?` of the target, without the `?`; empty when there is none.
    pub query: String,
    /// The header fields in order, names as sent, values trimmed of surrounding blanks.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header field named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The head is longer than [`MAX_HEAD_BYTES`].
    #[error("request head longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The head has more than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The head is not valid UTF-8.
    #[error("request head is not UTF-8")]
    NotUtf8,
    /// A line ends in a bare LF or holds a bare CR.
    #[error("line not terminated by CRLF")]
    BareLineFeed,
    /// The request line is not `METHOD SP target SP version`.
    #[error("malformed request line")]
    BadRequestLine,
    /// The method is empty or holds characters a method may not.
    #[error("malformed method")]
    BadMethod,
    /// The target is not origin-form (`/path?query`), or holds forbidden characters.
    #[error("request target must be a path starting with '/'")]
    BadTarget,
    /// The version is missing or is not `HTTP/x.y`.
    #[error("malformed HTTP version")]
    BadVersion,
    /// The version is `HTTP/x.y` but neither 1.0 nor 1.1.
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// A header line is malformed (no colon, bad name, folding, control characters).
    #[error("malformed header field")]
    BadHeader,
    /// The request carries two Host fields.
    #[error("more than one Host header")]
    DuplicateHost,
    /// The request announces a body, which no admin route accepts.
    #[error("request bodies are not accepted")]
    BodyNotAccepted,
}

impl ParseError {
    /// The status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::UnsupportedVersion => 505,
            _ => 400,
        }
    }
}

/// Parses a request head: the bytes up to and including the blank line that ends it
/// (a missing final blank line is tolerated; the server finds it before calling).
///
/// What is accepted is deliberately narrow, because the only clients are `proxy status`,
/// curl, browsers and metrics scrapers; every refusal maps to a status by
/// [`ParseError::status`]:
///
/// - Lines end in CRLF. A bare LF is refused (400): RFC 9112 lets a server accept it, but
///   nothing we serve needs it and a strict reading leaves no room for two parsers to see
///   different heads.
/// - The request target must be in origin-form (`/path?query`). The absolute-form
///   (`http://host/path`, sent to proxies) and the asterisk-form are refused (400): the
///   absolute-form would carry a second host beside the Host header, and the host check is
///   what keeps DNS-rebinding pages out. A fragment (`#`) is refused too. No
///   percent-decoding is done; routes match the raw path.
/// - The version is `HTTP/1.1` or `HTTP/1.0`; any other `HTTP/x.y` gets 505, anything else
///   (or nothing) 400.
/// - At most [`MAX_HEADERS`] header fields and [`MAX_HEAD_BYTES`] bytes (431). Obsolete line
///   folding, whitespace before the colon, control characters and non-UTF-8 bytes are
///   refused (400). Two Host fields are refused (400).
/// - No body: a `Content-Length` other than 0 or any `Transfer-Encoding` is refused (400),
///   since every admin route is a GET.
pub fn parse_request(head: &[u8]) -> Result<Request, ParseError> {
    if head.len() > MAX_HEAD_BYTES {
        return Err(ParseError::HeadTooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    let text = text.strip_suffix("\r\n\r\n").or_else(|| text.strip_suffix("\r\n")).unwrap_or(text);
    let mut lines = text.split("\r\n");
    // A bare CR or LF left inside a line means the line breaks were not CRLF.
    let checked =
        |line: &str| if line.contains(['\r', '\n']) { Err(ParseError::BareLineFeed) } else { Ok(()) };

    let request_line = lines.next().unwrap_or_default();
    checked(request_line)?;
    let (method, path, query) = parse_request_line(request_line)?;

    let mut headers = Vec::new();
    for line in lines {
        checked(line)?;
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push(parse_header(line)?);
    }

    let request = Request { method, path, query, headers };
    check_framing(&request)?;
    Ok(request)
}

fn parse_request_line(line: &str) -> Result<(String, String, String), ParseError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let (method, target, version) = match parts.as_slice() {
        [method, target, version] => (*method, *target, *version),
        [_, _] => return Err(ParseError::BadVersion),
        _ => return Err(ParseError::BadRequestLine),
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseError::BadMethod);
    }
    parse_version(version)?;
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(ParseError::BadTarget);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok((method.to_string(), path.to_string(), query.to_string()))
}

fn parse_version(version: &str) -> Result<(), ParseError> {
    match version {
        "HTTP/1.1" | "HTTP/1.0" => Ok(()),
        _ => {
            let digits = version.strip_prefix("HTTP/").and_then(|v| v.split_once('.'));
            let is_digit = |s: &str| s.len() == 1 && s.bytes().all(|b| b.is_ascii_digit());
            match digits {
                Some((major, minor)) if is_digit(major) && is_digit(minor) => {
                    Err(ParseError::UnsupportedVersion)
                }
                _ => Err(ParseError::BadVersion),
            }
        }
    }
}

fn parse_header(line: &str) -> Result<(String, String), ParseError> {
    // A line starting with a blank is obsolete folding (RFC 9112 section 5.2): refused.
    let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(ParseError::BadHeader);
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(ParseError::BadHeader);
    }
    Ok((name.to_string(), value.to_string()))
}

/// Refuses what a GET-only server must not half-read: bodies, and ambiguous Host fields.
fn check_framing(request: &Request) -> Result<(), ParseError> {
    let named =
        |name: &'static str| request.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name));
    if named("host").count() > 1 {
        return Err(ParseError::DuplicateHost);
    }
    if named("transfer-encoding").next().is_some() {
        return Err(ParseError::BodyNotAccepted);
    }
    if named("content-length").any(|(_, v)| !v.bytes().all(|b| b == b'0') || v.is_empty()) {
        return Err(ParseError::BodyNotAccepted);
    }
    Ok(())
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Request, ParseError> {
        parse_request(head.as_bytes())
    }

    #[test]
    fn a_plain_get_is_parsed_into_method_path_query_and_headers() {
        let r =
            parse("GET /v1/routes?name=web&x=1 HTTP/1.1\r\nHost: localhost:9901\r\nAccept:  */* \r\n\r\n")
                .expect("valid request");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1/routes");
        assert_eq!(r.query, "name=web&x=1");
        assert_eq!(
            r.headers,
            vec![("Host".to_string(), "localhost:9901".to_string()), ("Accept".into(), "*/*".into())]
        );
    }

    #[test]
    fn header_lookup_ignores_case_and_returns_the_first() {
        let r = parse("GET / HTTP/1.1\r\nX-A: one\r\nx-a: two\r\n\r\n").expect("valid request");
        assert_eq!(r.header("X-a"), Some("one"));
        assert_eq!(r.header("x-b"), None);
        assert_eq!(r.query, "");
    }

    #[test]
    fn http_1_0_is_accepted_and_other_versions_are_not() {
        assert!(parse("GET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(parse("GET / HTTP/2.0\r\n\r\n"), Err(ParseError::UnsupportedVersion));
        assert_eq!(ParseError::UnsupportedVersion.status(), 505);
        assert_eq!(parse("GET / HTTP/1.10\r\n\r\n"), Err(ParseError::BadVersion));
        assert_eq!(parse("GET / http/1.1\r\n\r\n"), Err(ParseError::BadVersion));
    }

    #[test]
    fn a_missing_version_is_refused() {
        assert_eq!(parse("GET /\r\n\r\n"), Err(ParseError::BadVersion));
        assert_eq!(parse("GET\r\n\r\n"), Err(ParseError::BadRequestLine));
        assert_eq!(parse("\r\n\r\n"), Err(ParseError::BadRequestLine));
        assert_eq!(parse("GET  / HTTP/1.1\r\n\r\n"), Err(ParseError::BadRequestLine));
        assert_eq!(parse("GET / HTTP/1.1 extra\r\n\r\n"), Err(ParseError::BadRequestLine));
    }

    #[test]
    fn bare_line_feeds_are_refused() {
        assert_eq!(parse("GET / HTTP/1.1\nHost: a\n\n"), Err(ParseError::BareLineFeed));
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), Err(ParseError::BareLineFeed));
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), Err(ParseError::BareLineFeed));
    }

    #[test]
    fn more_than_a_hundred_headers_are_refused_with_431() {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        let at_limit = format!("{head}\r\n");
        assert_eq!(parse(&at_limit).map(|r| r.headers.len()), Ok(MAX_HEADERS));
        head.push_str("X-last: v\r\n\r\n");
        assert_eq!(parse(&head), Err(ParseError::TooManyHeaders));
        assert_eq!(ParseError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn a_head_past_16_kib_is_refused_with_431() {
        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&head), Err(ParseError::HeadTooLarge));
        assert_eq!(ParseError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn non_utf8_bytes_are_refused() {
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"), Err(ParseError::NotUtf8));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nX: \xc3\x28\r\n\r\n"), Err(ParseError::NotUtf8));
    }

    #[test]
    fn targets_other_than_origin_form_are_refused() {
        assert_eq!(parse("GET http://evil.example/ HTTP/1.1\r\n\r\n"), Err(ParseError::BadTarget));
        assert_eq!(parse("OPTIONS * HTTP/1.1\r\n\r\n"), Err(ParseError::BadTarget));
        assert_eq!(parse("GET metrics HTTP/1.1\r\n\r\n"), Err(ParseError::BadTarget));
        assert_eq!(parse("GET /a#frag HTTP/1.1\r\n\r\n"), Err(ParseError::BadTarget));
        assert_eq!(parse("GET /caf\u{e9} HTTP/1.1\r\n\r\n"), Err(ParseError::BadTarget));
    }

    #[test]
    fn malformed_header_lines_are_refused() {
        for bad in [
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\n: a\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
        ] {
            let got = parse(bad);
            assert!(matches!(got, Err(ParseError::BadHeader | ParseError::BadMethod)), "{bad:?}: {got:?}");
        }
    }

    #[test]
    fn bodies_and_duplicate_hosts_are_refused() {
        assert_eq!(parse("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").map(|r| r.headers.len()), Ok(1));
        assert_eq!(parse("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), Err(ParseError::BodyNotAccepted));
        assert_eq!(parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(ParseError::BodyNotAccepted));
        assert_eq!(parse("GET / HTTP/1.1\r\ncontent-length:\r\n\r\n"), Err(ParseError::BodyNotAccepted));
        assert_eq!(
            parse("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::BodyNotAccepted)
        );
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), Err(ParseError::DuplicateHost));
    }
}
