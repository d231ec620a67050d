//! The admin client `proxy status`, `ping` and `trace` use: one GET or POST on a fresh
//! connection, one answer.
//!
//! It speaks just enough HTTP/1.1 for this crate's admin server: it sends
//! `Connection: close`, reads the answer to its `Content-Length` (or to the server's close
//! when there is none), and refuses chunked answers. The whole exchange, connecting
//! included, shares one deadline.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer [`get`] reads, head included.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why an admin request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The path, token or address cannot be put in a request (a retry cannot help).
    #[error("invalid admin request: {0}")]
    InvalidRequest(String),
    /// No connection could be made (is the node running, is `common.admin_addr` right?).
    #[error("cannot connect to admin at {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// The OS error, or a timeout.
        source: io::Error,
    },
    /// The connection failed while sending or reading.
    #[error("admin at {addr}: connection failed: {source}")]
    Io {
        /// The address dialed.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The answer did not come within the time allowed.
    #[error("admin at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address dialed.
        addr: String,
        /// The time allowed for the whole exchange.
        timeout: Duration,
    },
    /// The answer is longer than [`MAX_RESPONSE_BYTES`].
    #[error("admin at {addr} sent more than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// The address dialed.
        addr: String,
    },
    /// The answer is not HTTP/1.x as this client reads it.
    #[error("admin at {addr} sent a malformed answer: {reason}")]
    BadResponse {
        /// The address dialed.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

/// Sends `GET path` to the admin server at `addr` (`host:port`, also sent as the Host
/// header) with `Authorization: Bearer <token>` when a token is given, and returns the
/// status and the body. `timeout` bounds the whole exchange, connecting included.
pub async fn get(
    addr: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let request = build_request(addr, path, token, None).map_err(ClientError::InvalidRequest)?;
    exchange(addr, request, timeout).await
}

/// Sends `POST path` with a JSON `body` (and `X-CSRF-Token: csrf` when given: what a
/// token-less admin API asks of loopback callers, from `GET /api/console/session`), like
/// [`get`] otherwise.
pub async fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    (body, csrf): (&str, Option<&str>),
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let request =
        build_request(addr, path, token, Some((body, csrf))).map_err(ClientError::InvalidRequest)?;
    exchange(addr, request, timeout).await
}

/// Sends `request` on a fresh connection to `addr` and reads the answer, all within
/// `timeout`.
async fn exchange(addr: &str, request: String, timeout: Duration) -> Result<(u16, String), ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let connect = |source| ClientError::Connect { addr: addr.to_string(), source };
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(connect(source)),
        Err(_) => {
            let message = format!("no connection within {timeout:?}");
            return Err(connect(io::Error::new(io::ErrorKind::TimedOut, message)));
        }
    };
    let exchange = async {
        let io_error = |source| ClientError::Io { addr: addr.to_string(), source };
        stream.write_all(request.as_bytes()).await.map_err(io_error)?;
        read_response(&mut stream, addr).await
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { addr: addr.to_string(), timeout }),
    }
}

/// The request bytes (a GET, or a POST of a JSON body with its CSRF token); refuses what
/// would break the request's framing.
fn build_request(
    addr: &str,
    path: &str,
    token: Option<&str>,
    post: Option<(&str, Option<&str>)>,
) -> Result<String, String> {
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !path.starts_with('/') || !visible(path) {
        return Err(format!("path {path:?} must start with '/' and hold visible ASCII only"));
    }
    if !visible(addr) {
        return Err(format!("address {addr:?} must be host:port"));
    }
    let method = if post.is_some() { "POST" } else { "GET" };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: proxy/{}\r\nAccept: */*\r\n\
         Connection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        if !visible(token) {
            return Err("the admin token must be visible ASCII without spaces".into());
        }
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = match post {
        Some((body, csrf)) => {
            if let Some(csrf) = csrf {
                if !visible(csrf) {
                    return Err("the CSRF token must be visible ASCII".into());
                }
                request.push_str(&format!("X-CSRF-Token: {csrf}\r\n"));
            }
            request
                .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
            body
        }
        None => "",
    };
    request.push_str("\r\n");
    request.push_str(body);
    Ok(request)
}

async fn read_response(stream: &mut TcpStream, addr: &str) -> Result<(u16, String), ClientError> {
    let bad = |reason: String| ClientError::BadResponse { addr: addr.to_string(), reason };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // (status, head length, Content-Length) once the head is in.
    let mut head: Option<(u16, usize, Option<usize>)> = None;
    loop {
        if let Some((status, head_len, Some(length))) = head
            && buf.len() >= head_len + length
        {
            return body(&buf[head_len..head_len + length]).map(|b| (status, b)).map_err(bad);
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| ClientError::Io { addr: addr.to_string(), source })?;
        if n == 0 {
            return match head {
                None => Err(bad("connection closed before the end of the headers".into())),
                Some((_, _, Some(_))) => Err(bad("connection closed before the end of the body".into())),
                Some((status, head_len, None)) => body(&buf[head_len..]).map(|b| (status, b)).map_err(bad),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::TooLarge { addr: addr.to_string() });
        }
        if head.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let (status, length) = parse_response_head(&buf[..end]).map_err(bad)?;
            if length.is_some_and(|l| end + 4 + l > MAX_RESPONSE_BYTES) {
                return Err(ClientError::TooLarge { addr: addr.to_string() });
            }
            head = Some((status, end + 4, length));
        }
    }
}

/// The status and the `Content-Length` (if any) of an answer's head, without its blank line.
fn parse_response_head(head: &[u8]) -> Result<(u16, Option<usize>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && (100..600).contains(&s) => s,
        _ => return Err(format!("bad status code in {status_line:?}")),
    };
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("Transfer-Encoding {value:?} is not supported"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(parsed);
        }
    }
    Ok((status, length))
}

fn body(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "body is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_host_and_token() {
        let r = build_request("127.0.0.1:9901", "/v1/status", Some("t0k"), None).expect("valid");
        assert!(r.starts_with("GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(r.ends_with("\r\nAuthorization: Bearer t0k\r\n\r\n"), "{r}");
        let anon = build_request("[::1]:9901", "/healthz", None, None).expect("valid");
        assert!(!anon.contains("Authorization"), "{anon}");
        let post = build_request("127.0.0.1:1", "/api/probe", None, Some(("{}", Some("c5")))).expect("valid");
        assert!(post.starts_with("POST /api/probe HTTP/1.1\r\n"), "{post}");
        assert!(
            post.ends_with(
                "X-CSRF-Token: c5\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            ),
            "{post}"
        );
        assert!(build_request("127.0.0.1:1", "/", None, Some(("{}", Some("a\r\nX: y")))).is_err());
    }

    #[test]
    fn requests_that_would_break_framing_are_refused() {
        assert!(build_request("127.0.0.1:1", "healthz", None, None).is_err());
        assert!(build_request("127.0.0.1:1", "/a b", None, None).is_err());
        assert!(build_request("127.0.0.1:1", "/a\r\nX: y", None, None).is_err());
        assert!(build_request("127.0.0.1:1", "/", Some("t\r\nX: y"), None).is_err());
        assert!(build_request("", "/", None, None).is_err());
    }

    #[test]
    fn response_heads_give_status_and_length() {
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12"), Ok((200, Some(12))));
        assert_eq!(parse_response_head(b"HTTP/1.0 404"), Ok((404, None)));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 421 Misdirected Request\r\ncontent-length:0\r\nX: y"),
            Ok((421, Some(0)))
        );
        assert!(parse_response_head(b"HTTP/2 200 OK").is_err());
        assert!(parse_response_head(b"HTTP/1.1 2000 OK").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());
    }
}
