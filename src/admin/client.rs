//! The admin client `proxy status`, `ping` and `trace` use: one GET or POST on a fresh
//! connection, one answer.
//!
//! It speaks just enough HTTP/1.1 for this crate's admin server: it sends
//! `Connection: close` and reads the answer to its `Content-Length`, to its last chunk
//! (`Transfer-Encoding: chunked`, how the server sends a stream), or to the server's close.
//! A streamed answer can be read as it arrives ([`post_streamed`]). The whole exchange,
//! connecting included, shares one deadline.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer [`get`] reads, head included.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Where a streamed answer's body goes as it arrives, piece by piece (a 2xx answer's
/// only). It runs inside the exchange: time it takes counts against the deadline.
pub type BodySink<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

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
    exchange(addr, request, timeout, None).await
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
    exchange(addr, request, timeout, None).await
}

/// Like [`post`], and hands each piece of the body to `on_body` as it arrives (the whole
/// body is still returned at the end): for answers streamed as they happen.
pub async fn post_streamed(
    addr: &str,
    path: &str,
    token: Option<&str>,
    (body, csrf): (&str, Option<&str>),
    timeout: Duration,
    on_body: BodySink<'_>,
) -> Result<(u16, String), ClientError> {
    let request =
        build_request(addr, path, token, Some((body, csrf))).map_err(ClientError::InvalidRequest)?;
    exchange(addr, request, timeout, Some(on_body)).await
}

/// Sends `request` on a fresh connection to `addr` and reads the answer, all within
/// `timeout`.
async fn exchange(
    addr: &str,
    request: String,
    timeout: Duration,
    on_body: Option<BodySink<'_>>,
) -> Result<(u16, String), ClientError> {
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
        read_response(&mut stream, addr, on_body).await
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

async fn read_response(
    stream: &mut TcpStream,
    addr: &str,
    mut on_body: Option<BodySink<'_>>,
) -> Result<(u16, String), ClientError> {
    let bad = |reason: String| ClientError::BadResponse { addr: addr.to_string(), reason };
    let too_large = || ClientError::TooLarge { addr: addr.to_string() };
    let mut chunk = vec![0u8; 16 * 1024];
    let io_error = |source| ClientError::Io { addr: addr.to_string(), source };
    // The head, and what came behind it.
    let mut raw = Vec::new();
    let (status, framing, mut pending) = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status, framing) = parse_response_head(&raw[..end]).map_err(bad)?;
            if let Framing::Length(length) = framing
                && length > MAX_RESPONSE_BYTES.saturating_sub(end + 4)
            {
                return Err(too_large());
            }
            break (status, framing, raw.split_off(end + 4));
        }
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            return Err(bad("connection closed before the end of the headers".into()));
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
    };
    let mut chunks = Dechunk::default();
    let mut body = Vec::new();
    loop {
        let fresh = match framing {
            Framing::Chunked => chunks.take(&mut pending).map_err(bad)?,
            Framing::Length(length) => {
                let n = pending.len().min(length - body.len());
                pending.drain(..n).collect()
            }
            Framing::Close => std::mem::take(&mut pending),
        };
        if body.len() + fresh.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        if !fresh.is_empty() {
            // Only a success is a stream worth following; an error's body is read whole.
            if let Some(on_body) = on_body.as_mut().filter(|_| (200..300).contains(&status)) {
                on_body(&fresh);
            }
            body.extend_from_slice(&fresh);
        }
        let complete = match framing {
            Framing::Chunked => chunks.done,
            Framing::Length(length) => body.len() >= length,
            Framing::Close => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            if framing == Framing::Close {
                break;
            }
            return Err(bad("connection closed before the end of the body".into()));
        }
        pending.extend_from_slice(&chunk[..n]);
        if pending.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
    }
    String::from_utf8(body).map(|b| (status, b)).map_err(|_| bad("body is not UTF-8".into()))
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many bytes.
    Length(usize),
    /// At its last, empty chunk.
    Chunked,
    /// When the server closes the connection.
    Close,
}

/// Reads a chunked body as it arrives; the size lines are read by `httparse` (hyper's
/// own parser, already built for the admin server).
#[derive(Debug, Default)]
struct Dechunk {
    /// Data bytes of the current chunk still to come.
    left: u64,
    /// The CRLF after a chunk's data is still to come.
    crlf: bool,
    /// The last chunk came (trailers, if any, are not read: the server closes).
    done: bool,
}

impl Dechunk {
    /// Takes what it can from the front of `raw`: the data bytes, as far as they came.
    fn take(&mut self, raw: &mut Vec<u8>) -> Result<Vec<u8>, String> {
        let mut data = Vec::new();
        let mut used = 0;
        while !self.done {
            let rest = &raw[used..];
            if self.left > 0 {
                let n = rest.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&rest[..n]);
                used += n;
                self.left -= n as u64;
                self.crlf = self.left == 0;
            } else if self.crlf {
                match rest {
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.crlf = false;
                    }
                    [] | [b'\r'] => break,
                    _ => return Err("a chunk's data is not followed by CRLF".into()),
                }
            } else {
                match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        used += line;
                        self.left = size;
                        self.done = size == 0;
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return Err("bad chunk size line".into()),
                }
            }
        }
        raw.drain(..used);
        Ok(data)
    }
}

/// The status and the body's framing of an answer's head, without its blank line.
fn parse_response_head(head: &[u8]) -> Result<(u16, Framing), String> {
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
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(format!("Transfer-Encoding {value:?} is not supported"));
            }
            chunked = true;
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(parsed);
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err("both Transfer-Encoding and Content-Length".into()),
        (true, None) => Ok((status, Framing::Chunked)),
        (false, Some(length)) => Ok((status, Framing::Length(length))),
        (false, None) => Ok((status, Framing::Close)),
    }
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
    fn response_heads_give_status_and_framing() {
        let head = parse_response_head;
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nContent-Length: 12"), Ok((200, Framing::Length(12))));
        assert_eq!(head(b"HTTP/1.0 404"), Ok((404, Framing::Close)));
        assert_eq!(
            head(b"HTTP/1.1 421 Misdirected Request\r\ncontent-length:0\r\nX: y"),
            Ok((421, Framing::Length(0)))
        );
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"), Ok((200, Framing::Chunked)));
        assert!(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip").is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3").is_err());
        assert!(parse_response_head(b"HTTP/2 200 OK").is_err());
        assert!(parse_response_head(b"HTTP/1.1 2000 OK").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());
    }

    #[test]
    fn a_chunked_body_is_read_whatever_the_pieces_it_arrives_in() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        for cut in 1..wire.len() {
            let (mut chunks, mut raw, mut data) = (Dechunk::default(), Vec::new(), Vec::new());
            for piece in wire.chunks(cut) {
                raw.extend_from_slice(piece);
                data.extend(chunks.take(&mut raw).expect("valid"));
            }
            assert_eq!(data, b"hello, world", "pieces of {cut}");
            assert!(chunks.done, "pieces of {cut}");
        }
        let mut raw = b"3\r\nabcX\r\n".to_vec();
        assert!(Dechunk::default().take(&mut raw).is_err(), "data longer than its size");
        let mut raw = b"zz\r\n".to_vec();
        assert!(Dechunk::default().take(&mut raw).is_err(), "a size that is not hex");
    }
}
