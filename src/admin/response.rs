//! What a handler answers, and how it is written on the wire (pure).

use serde::Serialize;

/// `Content-Type` of JSON answers.
const JSON: &str = "application/json";
/// `Content-Type` of plain-text answers.
const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One answer: a status, a content type and a body. The server adds the framing headers
/// (`Content-Length`, `Connection: close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body (not sent in answer to HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with `value` as JSON and a final newline; 500 if `value` cannot be serialized.
    pub fn json(value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response { status: 200, content_type: JSON, body }
            }
            Err(e) => Response::text(500, format!("cannot encode the answer as JSON: {e}\n")),
        }
    }

    /// `status` with a plain UTF-8 text body.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: TEXT, body: body.into().into_bytes() }
    }

    /// 200 with a body in the Prometheus text format (version 0.0.4).
    pub fn metrics(body: String) -> Response {
        Response { status: 200, content_type: METRICS, body: body.into_bytes() }
    }

    /// 404 with a short text.
    pub fn not_found() -> Response {
        Response::text(404, "not found\n")
    }

    /// 405 with a short text (written with `Allow: GET, HEAD`).
    pub fn method_not_allowed() -> Response {
        Response::text(405, "method not allowed; use GET or HEAD\n")
    }

    /// The whole answer as bytes: status line, headers, then the body unless `head_only`.
    /// A 401 gets `WWW-Authenticate: Bearer`, a 405 `Allow: GET, HEAD`; `extra` headers are
    /// written as given (name, value).
    pub(crate) fn encode(&self, head_only: bool, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        match self.status {
            401 => out.push_str("WWW-Authenticate: Bearer\r\n"),
            405 => out.push_str("Allow: GET, HEAD\r\n"),
            _ => {}
        }
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase for the codes this server sends (clients ignore it; it is for people).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_200_with_a_trailing_newline() {
        let r = Response::json(&serde_json::json!({"a": 1}));
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        assert_eq!(r.body, b"{\"a\":1}\n");
    }

    #[test]
    fn encoding_frames_the_body_and_head_drops_it() {
        let r = Response::text(200, "hi");
        let full = String::from_utf8(r.encode(false, &[])).expect("ascii");
        assert_eq!(
            full,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
             Connection: close\r\nCache-Control: no-store\r\n\r\nhi"
        );
        let head = String::from_utf8(r.encode(true, &[("X-A", "b")])).expect("ascii");
        assert!(head.ends_with(
            "Content-Length: 2\r\nConnection: close\r\nCache-Control: no-store\r\nX-A: b\r\n\r\n"
        ));
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let bytes = Response::method_not_allowed().encode(true, &[]);
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert_eq!(Response::metrics(String::new()).content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(Response::not_found().status, 404);
    }
}
