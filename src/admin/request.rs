//! A request as handlers see it: method, target, header fields and a small body, copied out
//! of hyper's types so that handlers and the access rules stay plain functions.

use bytes::Bytes;

/// The most bytes a request head may take (request line and header fields).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// The most bytes a request body may take (only POST has one: console actions are small
/// JSON objects).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive: `get` is not `GET`).
    pub method: String,
    /// The path part of the target, starting with `/`, not percent-decoded.
    pub path: String,
    /// What follows the first `?` of the target, without the `?`; empty when there is none.
    pub query: String,
    /// The header fields in order (names in lower case).
    pub headers: Vec<(String, String)>,
    /// The body (empty but for POST).
    pub body: Bytes,
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    /// The value of the first header field named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The head of a hyper request; bytes of header values that are not UTF-8 become
    /// U+FFFD (another site's cookie with such bytes must not hide this server's).
    pub(super) fn from_parts(
        parts: &hyper::http::request::Parts,
        body: Bytes,
        peer: std::net::SocketAddr,
    ) -> Request {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect();
        Request {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers,
            body,
            peer: Some(peer),
        }
    }
}
