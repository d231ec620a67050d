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
    Arc::new(|request: &Request| match request.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
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
    let task = tokio::spawn(http::serve_with(listener, rules, routes(), watch, options));
    Server { addr, shutdown, task }
}

/// Sends `bytes` as they are and reads the answer to the server's close.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("answer in time").expect("read");
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
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
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
    assert!(none.starts_with("HTTP/1.1 421 "), "{none}");
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
    assert!(answer.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{answer}");
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
