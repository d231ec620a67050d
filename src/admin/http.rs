//! The admin HTTP server (on hyper), and the client `proxy status` uses.
//!
//! HTTP/1.1 with keep-alive and streamed answers (the console's live updates), bounded
//! everywhere an admin port exposed by mistake could be pushed on:
//!
//! - at most [`ServeOptions::max_connections`] connections at once (64); a connection
//!   beyond that is closed as soon as it is accepted;
//! - each request head must arrive within [`ServeOptions::head_timeout`] (5 s; an idle
//!   keep-alive connection waits for its next head under the same deadline), or the
//!   connection is closed without an answer; it may take at most [`MAX_HEAD_BYTES`] and
//!   [`MAX_HEADERS`] fields (431);
//! - a write that makes no progress for [`ServeOptions::write_timeout`] closes the
//!   connection, streams included;
//! - request bodies only on POST, at most [`MAX_BODY_BYTES`] (413); a GET with a body
//!   gets 400;
//! - at close, the server reads and drops what the client still sends for at most
//!   [`LINGER`] (and [`LINGER_BYTES`]), so the answer is not destroyed by a reset.
//!
//! Every request passes [`AccessRules`] (Host header, bearer token, console session)
//! before its path is looked at, and every POST passes [`check_post`] (same Origin, CSRF
//! token). The console's page, assets and login are served here for both the node and the
//! scheduler; everything else is the [`Handler`]'s.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::logging::log_escape;

use super::body::OutBody;
use super::conn_io::ConnIo;
pub use super::session::{COOKIE, SESSION_SECS, SessionKeys};
use crate::clock::unix_now;
use crate::core::join_token::{FailureLimiter, SourcePrefix};

pub use super::access::{AccessRules, Caller, check_post, default_allowed_hosts, is_public};
pub use super::client::{BodySink, ClientError, MAX_RESPONSE_BYTES, get, post, post_streamed};
pub use super::conn_io::{LINGER, LINGER_BYTES};
pub use super::request::{MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, Request};
pub use super::response::Response;

/// Answers one request that passed the access rules: GET and HEAD (for HEAD the body it
/// returns is dropped), and POST under `/api/console/actions/` and to `/api/probe`.
/// `caller` is who sent it.
pub type Handler = Arc<dyn Fn(&Request, &Caller) -> Response + Send + Sync>;

/// The server's limits; [`ServeOptions::default`] is what [`serve`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections served at once; further ones are closed at once (default 64).
    pub max_connections: usize,
    /// Time to receive each request head, from the connection's accept or the previous
    /// answer (default 5 s).
    pub head_timeout: Duration,
    /// Time a write may make no progress (default 10 s).
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

/// What every connection of one server shares.
struct Context {
    access: LiveAccess,
    handler: Handler,
    /// The session cookie's name: one per port, since browsers share cookies between the
    /// ports of one host name (a node's console must not log the scheduler's out).
    cookie: String,
    /// Failed logins per source address (an IPv4 address or an IPv6 /64).
    failed_logins: std::sync::Mutex<FailureLimiter>,
    /// The deadline of a request head, and of a POST's body after it.
    head_timeout: Duration,
}

/// The access rules in force, which a config reload may change (a new admin token).
struct LiveAccess {
    state: std::sync::Mutex<(watch::Receiver<AccessRules>, Arc<Access>)>,
}

/// The rules, and the keys of the console's sessions under them.
struct Access {
    rules: AccessRules,
    sessions: SessionKeys,
}

impl LiveAccess {
    fn new(rules: watch::Receiver<AccessRules>) -> LiveAccess {
        let access = Arc::new(Access { rules: rules.borrow().clone(), sessions: SessionKeys::random() });
        LiveAccess { state: std::sync::Mutex::new((rules, access)) }
    }

    /// The rules for the next request. New rules come with new session keys: a changed
    /// token logs every browser out, so a leaked old token stops working in the console too.
    fn current(&self) -> Arc<Access> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.has_changed().unwrap_or(false) {
            let rules = state.0.borrow_and_update().clone();
            state.1 = Arc::new(Access { rules, sessions: SessionKeys::random() });
        }
        state.1.clone()
    }
}

/// Failed logins allowed per source per [`LOGIN_WINDOW_SECS`]: past it, that source's
/// logins are refused (429) until the window has passed, whatever token it sends.
const MAX_FAILED_LOGINS: u32 = 10;
/// The window of [`MAX_FAILED_LOGINS`].
const LOGIN_WINDOW_SECS: u64 = 60;
/// Sources the login limit tracks at most.
const LOGIN_SOURCES: usize = 4096;

/// Serves `listener` with the default [`ServeOptions`] until `shutdown` turns true (or its
/// sender is dropped). Connections already accepted are then asked to finish, each within
/// its time limits. A request is checked against the rules `rules` holds when it arrives
/// (a reload may send new ones).
pub async fn serve(
    listener: TcpListener,
    rules: watch::Receiver<AccessRules>,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, rules, handler, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    rules: watch::Receiver<AccessRules>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    options: ServeOptions,
) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let context = Arc::new(Context {
        access: LiveAccess::new(rules),
        handler,
        cookie: format!("{COOKIE}_{port}"),
        failed_logins: std::sync::Mutex::new(FailureLimiter::new(
            MAX_FAILED_LOGINS,
            LOGIN_WINDOW_SECS,
            LOGIN_SOURCES,
        )),
        head_timeout: options.head_timeout,
    });
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
        let (context, options, shutdown) = (context.clone(), options.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, context, &options, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    context: Arc<Context>,
    options: &ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(ConnIo::new(stream, options.write_timeout));
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(respond(request, peer, &context).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .title_case_headers(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!("admin API: connection ended: {e}");
            }
        }
        _ = crate::shutdown::wait_true(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(options.write_timeout, connection).await;
        }
    }
}

/// The whole pipeline of one request: access, method and CSRF on the head; only then the
/// body (a POST's, within its limits and the head deadline); then the console's own
/// paths or the handler.
async fn respond(
    request: hyper::Request<Incoming>,
    peer: std::net::SocketAddr,
    context: &Context,
) -> hyper::Response<OutBody> {
    let (parts, body) = request.into_parts();
    let mut closes = wants_close(&parts);
    let mut request = Request::from_parts(&parts, Bytes::new(), peer);
    let (method, path) = (request.method.clone(), log_escape(&request.path));
    let access = context.access.current();
    let answer = match admit(&request, &parts, context, &access) {
        Err(refusal) => {
            // A body left unread: the connection cannot carry another request.
            closes |= body_announced(&parts);
            refusal
        }
        Ok(caller) if request.method == "POST" => {
            match tokio::time::timeout(context.head_timeout, read_body(body)).await {
                Ok(Ok(bytes)) => {
                    request.body = bytes;
                    dispatch_post(request, caller, context, &access).await
                }
                Ok(Err(refusal)) => {
                    closes = true;
                    refusal
                }
                Err(_) => {
                    closes = true;
                    Response::text(408, "the request body did not arrive in time\n")
                }
            }
        }
        Ok(caller) => dispatch(&request, &caller, context, &access),
    };
    // An access log at debug: the path only (a query may be long), never a header.
    debug!(%method, %path, status = answer.status, "admin API request");
    into_hyper(answer, closes)
}

/// Whether the head announces a body.
fn body_announced(parts: &hyper::http::request::Parts) -> bool {
    parts.headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// Who sent the request, or the refusal, from its head alone: the access rules, the
/// methods and paths that take a body, and for a POST its origin and CSRF token.
fn admit(
    request: &Request,
    parts: &hyper::http::request::Parts,
    context: &Context,
    access: &Access,
) -> Result<Caller, Response> {
    let sessions = Some((&access.sessions, context.cookie.as_str()));
    let caller = access.rules.admit(request, sessions, unix_now())?;
    match request.method.as_str() {
        "GET" | "HEAD" if body_announced(parts) => {
            Err(Response::text(400, "a request body is accepted on POST only\n"))
        }
        "GET" | "HEAD" => Ok(caller),
        "POST" => {
            let console = request.path.starts_with("/api/console/actions/")
                || matches!(request.path.as_str(), "/console/login" | "/console/logout");
            if !console && !ACTION_PATHS.contains(&request.path.as_str()) {
                return Err(Response::method_not_allowed());
            }
            match check_post(request, &caller, &access.sessions) {
                Some(refusal) => Err(refusal),
                None => Ok(caller),
            }
        }
        _ => Err(Response::method_not_allowed()),
    }
}

/// Paths outside the console that take a POST (with the same origin and CSRF checks):
/// actions that make the node send traffic, which a page must not trigger with a
/// cross-site GET.
const ACTION_PATHS: &[&str] = &["/api/probe"];

/// A POST's body, within [`MAX_BODY_BYTES`].
async fn read_body(body: Incoming) -> Result<Bytes, Response> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Response::text(413, format!("request body over {MAX_BODY_BYTES} bytes\n")))
        }
        Err(e) => Err(Response::text(400, format!("cannot read the request body: {e}\n"))),
    }
}

/// The answer to a POST [`admit`] let through. Actions run on a blocking thread: they
/// write the registry (a file under its lock, or etcd, which may take seconds to fail),
/// and the runtime's threads must go on serving sessions and renewing leadership.
async fn dispatch_post(request: Request, caller: Caller, context: &Context, access: &Access) -> Response {
    match request.path.as_str() {
        "/console/login" => login(&request, context, access, unix_now()),
        "/console/logout" => logout(context),
        _ => {
            let handler = context.handler.clone();
            tokio::task::spawn_blocking(move || handler(&request, &caller))
                .await
                .unwrap_or_else(|_| Response::text(500, "the action failed\n"))
        }
    }
}

/// The answer to a GET [`admit`] let through.
fn dispatch(request: &Request, caller: &Caller, context: &Context, access: &Access) -> Response {
    if let Some(asset) = super::assets::asset(&request.path) {
        return asset;
    }
    match request.path.as_str() {
        "/api/console/session" => session_answer(caller, access),
        // Browsers ask for it; an empty answer keeps their consoles quiet.
        "/favicon.ico" => Response::new(204, "image/x-icon", Bytes::new()),
        _ => (context.handler)(request, caller),
    }
}

/// Whether the page must show its login form, and the CSRF token the caller's POSTs need.
fn session_answer(caller: &Caller, access: &Access) -> Response {
    let csrf = match caller {
        Caller::Session(cookie) => Some(access.sessions.csrf(Some(cookie))),
        Caller::Loopback => Some(access.sessions.csrf(None)),
        Caller::Bearer | Caller::Anonymous => None,
    };
    Response::json(&serde_json::json!({
        "authenticated": !matches!(caller, Caller::Anonymous),
        "login_required": access.rules.token.is_some(),
        "actions": caller.holds_token(),
        "csrf": csrf,
    }))
}

/// `POST /console/login` with `{"token": ...}`: a session cookie when the token is right.
fn login(request: &Request, context: &Context, access: &Access, now: u64) -> Response {
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    if access.rules.token.is_none() {
        return Response::json_error(400, "this API has no token configured: there is nothing to log in to");
    }
    let Ok(login) = serde_json::from_slice::<Login>(&request.body) else {
        return Response::json_error(400, "expected a JSON body {\"token\": \"...\"}");
    };
    let source = request.peer.map(|p| SourcePrefix::of(p.ip()).to_string()).unwrap_or_default();
    {
        let mut failed = context.failed_logins.lock().unwrap_or_else(|p| p.into_inner());
        if !failed.allows(&source, now) {
            return Response::json_error(
                429,
                "too many failed logins from this address: try again in a minute",
            )
            .with_header("Retry-After", LOGIN_WINDOW_SECS.to_string());
        }
        if !access.rules.token_matches(&login.token) {
            failed.failed(&source, now);
            if failed.allows(&source, now) {
                warn!(from = %source, "admin console: a login with a wrong token was refused");
            } else {
                warn!(from = %source, "admin console: {MAX_FAILED_LOGINS} failed logins; refusing logins from there for a minute");
            }
            return Response::json_error(401, "wrong token");
        }
    }
    let cookie = access.sessions.issue(now);
    let csrf = access.sessions.csrf(Some(&cookie));
    info!("admin console: a browser logged in");
    Response::json(&serde_json::json!({ "csrf": csrf })).with_header(
        "Set-Cookie",
        format!("{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}", context.cookie),
    )
}

fn logout(context: &Context) -> Response {
    let expired = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", context.cookie);
    Response::json(&serde_json::json!({})).with_header("Set-Cookie", expired)
}

/// Whether the client asked to close after this answer (HTTP/1.0 without keep-alive, or
/// `Connection: close`).
fn wants_close(parts: &hyper::http::request::Parts) -> bool {
    let connection = parts.headers.get(hyper::header::CONNECTION).and_then(|v| v.to_str().ok());
    let says =
        |word: &str| connection.is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case(word)));
    says("close") || (parts.version == hyper::Version::HTTP_10 && !says("keep-alive"))
}

/// Security headers on every answer: nothing is cached, sniffed, framed or loaded from
/// elsewhere (the console's page runs under a strict content security policy).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
];

fn into_hyper(answer: Response, closes: bool) -> hyper::Response<OutBody> {
    let body = match answer.stream {
        Some(chunks) => OutBody::Stream(chunks),
        None => OutBody::Whole(Some(answer.body)),
    };
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    let mut put = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    };
    put("Content-Type", answer.content_type);
    for (name, value) in SECURITY_HEADERS {
        put(name, value);
    }
    if answer.status == 401 {
        put("WWW-Authenticate", "Bearer");
    }
    if closes {
        put("Connection", "close");
    }
    for (name, value) in &answer.headers {
        put(name, value);
    }
    response
}
