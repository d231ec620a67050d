//! A small HTTP/1.1 server for the admin API, and the client `proxy status` uses.
//!
//! The server is deliberately narrow: one request per connection, answered with
//! `Connection: close` and a `Content-Length`; GET and HEAD only; no request bodies. It is
//! bounded everywhere an admin port exposed by mistake could be pushed on:
//!
//! - at most [`ServeOptions::max_connections`] connections at once (64); a connection
//!   beyond that is closed as soon as it is accepted;
//! - the request head must arrive within [`ServeOptions::head_timeout`] (5 s), or the
//!   connection is closed without an answer; it may take at most [`MAX_HEAD_BYTES`] and
//!   [`MAX_HEADERS`] fields (431);
//! - the answer must be written within [`ServeOptions::write_timeout`];
//! - after answering, the server reads and drops what the client still sends for at most
//!   [`LINGER`] (and [`LINGER_BYTES`]) before closing, so the answer is not destroyed by a
//!   reset when the client had sent more than was read (an oversized head, say).
//!
//! Every request passes [`AccessRules`] (Host header, bearer token) before its method or
//! path is looked at. The accepted subset of HTTP is documented on [`parse_request`]; the
//! whole pipeline from head bytes to answer bytes is [`answer`], which needs no socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

pub use super::access::{AccessRules, default_allowed_hosts};
pub use super::client::{ClientError, MAX_RESPONSE_BYTES, get};
pub use super::request::{MAX_HEAD_BYTES, MAX_HEADERS, ParseError, Request, parse_request};
pub use super::response::Response;

/// Answers one request that passed the access rules and whose method is GET or HEAD (the
/// handler needs not check the method; for HEAD the body it returns is dropped).
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// How long the server keeps reading after its answer, at most.
pub const LINGER: Duration = Duration::from_secs(1);
/// How many bytes the server reads after its answer, at most.
pub const LINGER_BYTES: usize = 64 * 1024;

/// The server's limits; [`ServeOptions::default`] is what [`serve`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections served at once; further ones are closed at once (default 64).
    pub max_connections: usize,
    /// Time from accepting a connection to the end of its request head (default 5 s).
    pub head_timeout: Duration,
    /// Time to write the answer (default 10 s).
    pub write_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 64,
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` with the default [`ServeOptions`] until `shutdown` turns true (or its
/// sender is dropped). Connections already accepted finish on their own, each within its
/// time limits.
pub async fn serve(
    listener: TcpListener,
    rules: AccessRules,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, rules, handler, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    rules: AccessRules,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    options: ServeOptions,
) {
    let rules = Arc::new(rules);
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!("admin API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("admin API: {peer}: {} connections open, closing this one", options.max_connections);
            drop(stream);
            continue;
        };
        let (rules, handler, options) = (rules.clone(), handler.clone(), options.clone());
        tokio::spawn(async move {
            serve_connection(stream, &rules, &handler, &options).await;
            drop(permit);
        });
    }
}

/// The answer, as bytes, to the request head `head` (up to its blank line): the parse
/// error, the access refusal, the 405, or what `handler` says. No I/O.
pub fn answer(head: &[u8], rules: &AccessRules, handler: &dyn Fn(&Request) -> Response) -> Vec<u8> {
    let request = match parse_request(head) {
        Ok(request) => request,
        Err(e) => return Response::text(e.status(), format!("{e}\n")).encode(false, &[]),
    };
    if let Some(refusal) = rules.check(&request) {
        return refusal.encode(request.method == "HEAD", &[]);
    }
    match request.method.as_str() {
        "GET" => handler(&request).encode(false, &[]),
        "HEAD" => handler(&request).encode(true, &[]),
        _ => Response::method_not_allowed().encode(false, &[]),
    }
}

/// What reading a request head came to.
enum Head {
    /// The bytes up to and including the blank line.
    Complete(Vec<u8>),
    /// [`MAX_HEAD_BYTES`] read without a blank line.
    TooLarge,
    /// The client closed first.
    Closed,
}

async fn serve_connection(
    mut stream: TcpStream,
    rules: &AccessRules,
    handler: &Handler,
    options: &ServeOptions,
) {
    let bytes = match tokio::time::timeout(options.head_timeout, read_head(&mut stream)).await {
        Ok(Ok(Head::Complete(head))) => answer(&head, rules, handler.as_ref()),
        Ok(Ok(Head::TooLarge)) => {
            let e = ParseError::HeadTooLarge;
            Response::text(e.status(), format!("{e}\n")).encode(false, &[])
        }
        Ok(Ok(Head::Closed)) | Ok(Err(_)) => return,
        Err(_) => {
            debug!("admin API: no request head within {:?}, closing", options.head_timeout);
            return;
        }
    };
    let written = tokio::time::timeout(options.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        // The blank line may straddle two reads: look again at the last bytes already held.
        let from = buf.len().saturating_sub(2);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, from) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends: just past the first empty line at or after `from`, with CRLF or
/// bare LF line ends (bare LF is found here so that it is refused at once by
/// [`parse_request`] rather than waited on until the deadline).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    (0..tail.len()).find_map(|i| {
        let rest = &tail[i..];
        if rest.starts_with(b"\n\r\n") {
            Some(from + i + 3)
        } else if rest.starts_with(b"\n\n") {
            Some(from + i + 2)
        } else {
            None
        }
    })
}

/// Reads and drops what the client still sends, up to [`LINGER_BYTES`] or its close.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(token: Option<&str>) -> AccessRules {
        AccessRules { token: token.map(String::from), allowed_hosts: vec!["localhost".into()] }
    }

    fn route(request: &Request) -> Response {
        match request.path.as_str() {
            "/healthz" => Response::text(200, "ok\n"),
            _ => Response::not_found(),
        }
    }

    fn answer_text(head: &str, rules: &AccessRules) -> String {
        String::from_utf8(answer(head.as_bytes(), rules, &route)).expect("utf-8 answer")
    }

    #[test]
    fn head_end_finds_the_blank_line_in_either_form() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 14), Some(18));
        assert_eq!(head_end(b"ab", 5), None);
    }

    #[test]
    fn answer_runs_parse_access_method_and_handler_in_that_order() {
        let r = rules(Some("t"));
        let ok =
            answer_text("GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n", &r);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok\n"), "{ok}");
        let head =
            answer_text("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n", &r);
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        let post =
            answer_text("POST /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n", &r);
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let evil = answer_text("POST /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n", &rules(None));
        assert!(evil.starts_with("HTTP/1.1 421 "), "{evil}");
        let anon = answer_text("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
        assert!(anon.starts_with("HTTP/1.1 401 ") && anon.contains("WWW-Authenticate: Bearer\r\n"), "{anon}");
        let bad = answer_text("GET /healthz HTTP/1.1\nHost: localhost\n\n", &r);
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let missing =
            answer_text("GET /nope HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n", &r);
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    }
}
