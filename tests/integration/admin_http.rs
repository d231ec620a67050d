//! The admin HTTP server and client over real loopback sockets: routes, access rules,
//! limits, deadlines and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy::admin::http::{self, AccessRules, ClientError, Handler, Request, Response, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn routes() -> Handler {
    Arc::new(|request: &Request, _: &http::Caller| match request.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
        "/api/console/actions/echo" => Response::json(&serde_json::json!({})),
        "/v1/big" => Response::text(200, "x".repeat(64 * 1024 * 1024)),
        "/v1/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..3 {
                    let _ = tx.send(bytes::Bytes::from(format!("data: {i}\n\n"))).await;
                }
                // Held open like a live stream until the test ends.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            Response::event_stream(rx)
        }
        "/v1/status" => Response::json(&serde_json::json!({"node": "a", "flows": 3})),
        _ => Response::not_found(),
    })
}

async fn start(token: Option<&str>, options: ServeOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let rules =
        AccessRules { token: token.map(String::from), allowed_hosts: http::default_allowed_hosts(addr) };
    let (shutdown, watch) = watch::channel(false);
    let task = tokio::spawn(http::serve_with(listener, watch::channel(rules).1, routes(), watch, options));
    Server { addr, shutdown, task }
}

/// Sends `bytes` as they are and reads one answer: to the server's close, or to the end
/// of its `Content-Length` when the server keeps the connection open (keep-alive).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    let head_only = bytes.starts_with(b"HEAD ");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_one = async {
        loop {
            let text = String::from_utf8_lossy(&answer).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|n| n.parse::<usize>().ok());
                if length.is_some_and(|n| head_only || answer.len() >= end + 4 + n) {
                    return;
                }
            }
            match stream.read(&mut chunk).await.expect("read") {
                0 => return,
                n => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read_one).await.expect("answer in time");
    String::from_utf8(answer).expect("utf-8 answer")
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    http::get(&server.addr.to_string(), path, token, WAIT).await.expect("admin answer")
}

#[tokio::test]
async fn json_routes_answer_200_and_unknown_paths_404() {
    let server = start(None, ServeOptions::default()).await;
    let (status, body) = get(&server, "/v1/status", None).await;
    assert_eq!(status, 200);
    let value: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(value, serde_json::json!({"node": "a", "flows": 3}));
    assert_eq!(get(&server, "/healthz", None).await, (200, "ok\n".to_string()));
    assert_eq!(get(&server, "/nope", None).await.0, 404);

    let answer = raw(server.addr, b"GET /v1/status HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nContent-Type: application/json\r\n"), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(answer.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{answer}");
}

#[tokio::test]
async fn head_answers_with_headers_only() {
    let server = start(None, ServeOptions::default()).await;
    let answer = raw(server.addr, b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nContent-Length: 3\r\n") && answer.ends_with("\r\n\r\n"), "{answer}");
}

#[tokio::test]
async fn methods_other_than_get_and_head_get_405() {
    let server = start(None, ServeOptions::default()).await;
    let answer =
        raw(server.addr, b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");
    assert!(answer.contains("\r\nAllow: GET, HEAD\r\n"), "{answer}");
}

#[tokio::test]
async fn a_foreign_or_missing_host_header_gets_421() {
    let server = start(None, ServeOptions::default()).await;
    let evil = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(evil.starts_with("HTTP/1.1 421 Misdirected Request\r\n"), "{evil}");
    let port = server.addr.port();
    let rebound =
        raw(server.addr, format!("GET /v1/status HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n").as_bytes())
            .await;
    assert!(rebound.starts_with("HTTP/1.1 421 "), "{rebound}");
    let none = raw(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(none.starts_with("HTTP/1.0 421 "), "{none}");
}

#[tokio::test]
async fn the_bearer_token_is_required_when_configured() {
    let server = start(Some("s3cret"), ServeOptions::default()).await;
    assert_eq!(get(&server, "/healthz", None).await.0, 401);
    assert_eq!(get(&server, "/v1/status", None).await.0, 401);
    assert_eq!(get(&server, "/v1/status", Some("wrong")).await.0, 401);
    assert_eq!(get(&server, "/v1/status", Some("s3cret")).await.0, 200);
    assert_eq!(get(&server, "/healthz", Some("s3cret")).await, (200, "ok\n".to_string()));
    let answer = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    // Header names are case-insensitive; hyper writes this one `Www-Authenticate`.
    assert!(answer.to_ascii_lowercase().contains("\r\nwww-authenticate: bearer\r\n"), "{answer}");
}

#[tokio::test]
async fn one_connection_carries_several_requests() {
    let server = start(None, ServeOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        while !got.ends_with("\r\n\r\nok\n") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("in time").expect("read");
            assert_ne!(n, 0, "closed after {got:?}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && !got.contains("Connection: close"), "{got}");
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_head_deadline() {
    let deadline = Duration::from_millis(400);
    let server = start(None, ServeOptions { head_timeout: deadline, ..ServeOptions::default() }).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "closed within {WAIT:?}, not held open: {read:?}");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK\r\n"));
}

/// A POST as a browser sends it; `extra` adds header lines (each ending in CRLF).
fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn cookie_of(answer: &str) -> String {
    let line = answer.lines().find(|l| l.starts_with("Set-Cookie: ")).expect("a cookie is set");
    line.trim_start_matches("Set-Cookie: ").split(';').next().expect("name=value").to_string()
}

fn csrf_of(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    let value: serde_json::Value = serde_json::from_str(body).expect("json");
    value["csrf"].as_str().expect("a csrf token").to_string()
}

#[tokio::test]
async fn a_browser_logs_in_with_the_token_and_gets_a_strict_http_only_cookie() {
    let server = start(Some("s3cret"), ServeOptions::default()).await;
    // The page and the session probe are public; the API is not.
    let page = raw(server.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("text/html"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'self'"), "{page}");
    let session = raw(server.addr, b"GET /api/console/session HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(
        session.contains("\"authenticated\":false") && session.contains("\"login_required\":true"),
        "{session}"
    );

    let wrong = raw(server.addr, &post("/console/login", r#"{"token":"nope"}"#, "")).await;
    assert!(wrong.starts_with("HTTP/1.1 401 ") && !wrong.contains("Set-Cookie"), "{wrong}");
    let junk = raw(server.addr, &post("/console/login", "token=s3cret", "")).await;
    assert!(junk.starts_with("HTTP/1.1 400 ") && junk.contains("error"), "{junk}");
    let foreign =
        raw(server.addr, &post("/console/login", r#"{"token":"s3cret"}"#, "Origin: http://evil.example\r\n"))
            .await;
    assert!(foreign.starts_with("HTTP/1.1 403 ") && !foreign.contains("Set-Cookie"), "{foreign}");
    let ok =
        raw(server.addr, &post("/console/login", r#"{"token":"s3cret"}"#, "Origin: http://localhost\r\n"))
            .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    let set_cookie = ok.lines().find(|l| l.starts_with("Set-Cookie: ")).expect("cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = cookie_of(&ok);
    assert!(
        cookie.starts_with(&format!("proxy_console_{}=", server.addr.port())),
        "named per port: {cookie}"
    );
    let csrf = csrf_of(&ok);

    let with_cookie = format!("GET /v1/status HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n");
    assert!(raw(server.addr, with_cookie.as_bytes()).await.starts_with("HTTP/1.1 200 OK"));
    let forged = format!("GET /v1/status HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}0\r\n\r\n");
    assert!(raw(server.addr, forged.as_bytes()).await.starts_with("HTTP/1.1 401 "));

    // An action needs the session's CSRF token and the same origin.
    let action =
        |extra: String| post("/api/console/actions/echo", "{}", &format!("Cookie: {cookie}\r\n{extra}"));
    let done =
        raw(server.addr, &action(format!("X-CSRF-Token: {csrf}\r\nOrigin: http://localhost\r\n"))).await;
    assert!(done.starts_with("HTTP/1.1 200 OK\r\n"), "{done}");
    let no_csrf = raw(server.addr, &action("Origin: http://localhost\r\n".into())).await;
    assert!(no_csrf.starts_with("HTTP/1.1 403 "), "{no_csrf}");
    let cross =
        raw(server.addr, &action(format!("X-CSRF-Token: {csrf}\r\nOrigin: http://evil.example\r\n"))).await;
    assert!(cross.starts_with("HTTP/1.1 403 "), "{cross}");
    let anonymous =
        raw(server.addr, &post("/api/console/actions/echo", "{}", "Origin: http://localhost\r\n")).await;
    assert!(anonymous.starts_with("HTTP/1.1 401 "), "{anonymous}");
    // Scripts use the bearer token and need no CSRF token.
    let script =
        raw(server.addr, &post("/api/console/actions/echo", "{}", "Authorization: Bearer s3cret\r\n")).await;
    assert!(script.starts_with("HTTP/1.1 200 OK\r\n"), "{script}");
}

#[tokio::test]
async fn a_body_is_read_only_after_the_head_is_admitted_and_within_the_deadline() {
    let deadline = Duration::from_millis(400);
    let server =
        start(Some("s3cret"), ServeOptions { head_timeout: deadline, ..ServeOptions::default() }).await;
    // Without the token: refused from the head alone, the announced body never waited for.
    let head = "POST /api/console/actions/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16000\r\n\r\n";
    let refused = raw(server.addr, head.as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    // With it, a body that never comes is answered 408 at the deadline.
    let slow = "POST /api/console/actions/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\n\
                Content-Length: 16000\r\n\r\n{";
    let late = raw(server.addr, slow.as_bytes()).await;
    assert!(late.starts_with("HTTP/1.1 408 "), "{late}");
}

#[tokio::test]
async fn guessing_the_token_is_cut_short_after_ten_failures_a_minute() {
    let server = start(Some("s3cret"), ServeOptions::default()).await;
    for _ in 0..10 {
        let wrong = raw(server.addr, &post("/console/login", r#"{"token":"guess"}"#, "")).await;
        assert!(wrong.starts_with("HTTP/1.1 401 "), "{wrong}");
    }
    let held = raw(server.addr, &post("/console/login", r#"{"token":"s3cret"}"#, "")).await;
    assert!(held.starts_with("HTTP/1.1 429 ") && held.contains("Retry-After: 60"), "{held}");
    // The bearer token still works for scripts meanwhile.
    assert_eq!(get(&server, "/healthz", Some("s3cret")).await.0, 200);
    // The limit is per source: another address logs in with the token.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let mut other = socket.connect(server.addr).await.expect("connect from 127.0.0.2");
    other.write_all(&post("/console/login", r#"{"token":"s3cret"}"#, "")).await.expect("send");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, other.read_to_string(&mut answer)).await.expect("in time").expect("read");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_at_the_write_deadline() {
    let options = ServeOptions {
        max_connections: 1,
        write_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = start(None, options).await;
    // Asks for 64 MiB and reads none of it: the server's writes stall.
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled.write_all(b"GET /v1/big HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
    // The only connection slot comes free once the server gives up on it.
    let mut status = 0;
    for _ in 0..100 {
        status = match http::get(&server.addr.to_string(), "/healthz", None, WAIT).await {
            Ok((status, _)) => status,
            Err(_) => 0,
        };
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "served once the stalled client was dropped");
    drop(stalled);
}

#[tokio::test]
async fn post_bodies_are_capped_and_post_is_only_for_console_actions() {
    let server = start(None, ServeOptions::default()).await;
    let big = "x".repeat(http::MAX_BODY_BYTES + 1);
    let session = raw(server.addr, b"GET /api/console/session HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let csrf = csrf_of(&session);
    let answer =
        raw(server.addr, &post("/api/console/actions/echo", &big, &format!("X-CSRF-Token: {csrf}\r\n")))
            .await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    let other = raw(server.addr, &post("/v1/status", "{}", &format!("X-CSRF-Token: {csrf}\r\n"))).await;
    assert!(other.starts_with("HTTP/1.1 405 "), "{other}");
    let loopback =
        raw(server.addr, &post("/api/console/actions/echo", "{}", &format!("X-CSRF-Token: {csrf}\r\n")))
            .await;
    assert!(loopback.starts_with("HTTP/1.1 200 OK\r\n"), "{loopback}");
}

#[tokio::test]
async fn a_streamed_answer_arrives_chunk_by_chunk() {
    let server = start(None, ServeOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("data: 2") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("in time").expect("read");
        assert_ne!(n, 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        got.contains("Content-Type: text/event-stream") && got.contains("Transfer-Encoding: chunked"),
        "{got}"
    );
}

#[tokio::test]
async fn a_request_body_is_refused_with_400() {
    let server = start(None, ServeOptions::default()).await;
    let answer =
        raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
}

#[tokio::test]
async fn an_oversized_head_is_refused_and_the_server_keeps_serving() {
    let server = start(None, ServeOptions::default()).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..200 {
        head.push_str(&format!("X-Filler-{i:03}: {}\r\n", "f".repeat(100)));
    }
    head.push_str("\r\n");
    assert!(head.len() >= 20 * 1024, "{}", head.len());
    let answer = raw(server.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
    assert_eq!(get(&server, "/healthz", None).await, (200, "ok\n".to_string()));
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_deadline_without_blocking_others() {
    // Long enough that serving one request on a loaded machine stays well inside it.
    let deadline = Duration::from_secs(3);
    let server = start(None, ServeOptions { head_timeout: deadline, ..ServeOptions::default() }).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(get(&server, "/healthz", None).await.0, 200);
    assert!(started.elapsed() < deadline, "served while the silent client waited: {:?}", started.elapsed());

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "no answer to a silent client: {read:?}");
    assert!(started.elapsed() >= deadline, "closed only at the deadline: {:?}", started.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let options = ServeOptions { max_connections: 2, ..ServeOptions::default() };
    let server = start(None, options).await;
    let idle: Vec<TcpStream> = vec![
        TcpStream::connect(server.addr).await.expect("connect"),
        TcpStream::connect(server.addr).await.expect("connect"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await; // let the server accept both

    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read =
        tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    drop(idle);
    let mut status = 0;
    for _ in 0..50 {
        status = match http::get(&server.addr.to_string(), "/healthz", None, WAIT).await {
            Ok((status, _)) => status,
            Err(_) => 0,
        };
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "served again once the idle connections left");
}

#[tokio::test]
async fn serve_returns_when_shutdown_turns_true() {
    let server = start(None, ServeOptions::default()).await;
    assert_eq!(get(&server, "/healthz", None).await.0, 200);
    server.shutdown.send(true).expect("server listening");
    tokio::time::timeout(WAIT, server.task).await.expect("serve returned").expect("no panic");
    let err = http::get(&server.addr.to_string(), "/healthz", None, WAIT).await.expect_err("listener closed");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn the_client_names_the_address_it_cannot_reach() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let err = http::get(&addr, "/healthz", None, WAIT).await.expect_err("nothing listens");
    assert!(err.to_string().starts_with(&format!("cannot connect to admin at {addr}: ")), "{err}");
}

#[tokio::test]
async fn the_client_gives_up_at_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let holder = tokio::spawn(async move {
        let accepted = listener.accept().await;
        tokio::time::sleep(WAIT).await;
        drop(accepted);
    });
    let err = http::get(&addr, "/healthz", None, Duration::from_millis(200)).await.expect_err("no answer");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
    holder.abort();
}
