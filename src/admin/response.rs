//! What a handler answers: a status, a content type, extra header fields, and a body that
//! is either whole or streamed (the console's live updates).

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// `Content-Type` of JSON answers.
const JSON: &str = "application/json";
/// `Content-Type` of plain-text answers.
const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of Server-Sent Events.
const EVENT_STREAM: &str = "text/event-stream";

/// One answer. The server adds the framing (`Content-Length` or chunks), `Cache-Control:
/// no-store` and the security headers.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body (not sent in answer to HEAD).
    pub body: Bytes,
    /// Further header fields (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// When set, the body is what arrives on this channel until it closes, instead of
    /// [`Response::body`].
    pub stream: Option<mpsc::Receiver<Bytes>>,
}

impl Response {
    /// `status` with `body` of type `content_type`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response { status, content_type, body: body.into(), headers: Vec::new(), stream: None }
    }

    /// 200 with `value` as JSON and a final newline; 500 if `value` cannot be serialized.
    pub fn json(value: &impl Serialize) -> Response {
        Response::json_status(200, value)
    }

    /// `status` with `value` as JSON and a final newline; 500 if it cannot be serialized.
    pub fn json_status(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response::new(status, JSON, body)
            }
            Err(e) => Response::text(500, format!("cannot encode the answer as JSON: {e}\n")),
        }
    }

    /// `status` with `{"error": message}`: how the console's endpoints refuse.
    pub fn json_error(status: u16, message: impl Into<String>) -> Response {
        Response::json_status(status, &serde_json::json!({ "error": message.into() }))
    }

    /// `status` with a plain UTF-8 text body.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, TEXT, body.into())
    }

    /// 200 with a body in the Prometheus text format (version 0.0.4).
    pub fn metrics(body: String) -> Response {
        Response::new(200, METRICS, body)
    }

    /// 200 with a Server-Sent Events stream fed by `events` (each item already framed).
    pub fn event_stream(events: mpsc::Receiver<Bytes>) -> Response {
        Response { stream: Some(events), ..Response::new(200, EVENT_STREAM, Bytes::new()) }
    }

    /// 404 with a short text.
    pub fn not_found() -> Response {
        Response::text(404, "not found\n")
    }

    /// 405 with a short text and `Allow: GET, HEAD`.
    pub fn method_not_allowed() -> Response {
        Response::text(405, "method not allowed; use GET or HEAD\n").with_header("Allow", "GET, HEAD")
    }

    /// 405 for a path that only takes POST.
    pub fn post_only() -> Response {
        Response::text(405, "method not allowed; use POST\n").with_header("Allow", "POST")
    }

    /// The same answer with one more header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_carry_a_trailing_newline_and_errors_an_error_field() {
        let r = Response::json(&serde_json::json!({"a": 1}));
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        assert_eq!(&r.body[..], b"{\"a\":1}\n");
        let e = Response::json_error(403, "no");
        assert_eq!((e.status, &e.body[..]), (403, &b"{\"error\":\"no\"}\n"[..]));
    }

    #[test]
    fn method_refusals_name_the_allowed_methods() {
        let r = Response::method_not_allowed();
        assert_eq!((r.status, r.headers.as_slice()), (405, &[("Allow", "GET, HEAD".to_string())][..]));
        assert_eq!(Response::post_only().headers, [("Allow", "POST".to_string())]);
        assert_eq!(Response::metrics(String::new()).content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(Response::not_found().status, 404);
    }
}
