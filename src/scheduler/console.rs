//! The scheduler's console: the whole mesh as the page shows it (every node, link and
//! route, with alternatives), and the operator's actions: create a join token, remove a
//! node, pin and unpin a route. Actions need the admin token (a bearer token or a console
//! login); each is logged with who did it and recorded as an event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::info;

use super::server::SchedulerView;
use super::state::LinkState;
use crate::admin::http::{Caller, Request, Response};
use crate::clock::{unix_millis, unix_now};
use crate::config::scheduler::{Pin, SchedulerConfig};
use crate::console::events::EventKind;
use crate::console::live::{Console, StateSource};
use crate::console::model::{ConsoleState, LinkRow, NodeRow, PathRow, RouteRow};
use crate::console::rate::RateMeter;

/// The shortest span node rates are measured over.
const RATE_SPAN: Duration = Duration::from_secs(1);
/// Totals unchanged this long mean nothing flowed: nodes report every heartbeat (10 s by
/// default), so a quiet interval between two reports is not mistaken for a stop.
const RATE_IDLE: Duration = Duration::from_secs(25);
/// Alternatives shown per route.
const ALTERNATIVES: usize = 3;
/// Routes whose alternatives are computed per state (each is a path search).
const ROUTES_WITH_ALTERNATIVES: usize = 200;
/// The longest a console token may live.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most uses a console token may have.
const MAX_TOKEN_USES: u32 = 1000;

/// Starts the scheduler's console on `view` until `stopped`; live streams end when
/// `access` changes.
pub(super) fn start(
    view: SchedulerView,
    stopped: tokio::sync::watch::Receiver<bool>,
    access: tokio::sync::watch::Receiver<crate::admin::http::AccessRules>,
) -> Arc<Console> {
    let meter = Mutex::new(RateMeter::new(RATE_SPAN));
    let events = view.events();
    let source: StateSource = Arc::new(move |full| state(&view, &meter, full));
    Console::start(source, events, stopped, access)
}

/// The console's routes on the scheduler: the shared ones, and the actions.
pub(super) fn answer(
    console: &Console,
    view: &SchedulerView,
    config: &SchedulerConfig,
    request: &Request,
    caller: &Caller,
) -> Option<Response> {
    if let Some(action) = request.path.strip_prefix("/api/console/actions/") {
        if request.method != "POST" {
            return Some(Response::post_only());
        }
        if !caller.holds_token() {
            let why = if view.admin_token_set() {
                "actions need the admin token: log in, or send it as a bearer token"
            } else {
                "actions need an admin token: set admin_token in the scheduler's config"
            };
            return Some(Response::json_error(403, why));
        }
        let who = who(caller, request);
        return Some(match act(action, view, config, &request.body) {
            Ok((answer, done)) => {
                info!(by = %who, "console action: {done}");
                console.events().push(EventKind::Action, format!("{done}, by {who}"));
                answer
            }
            Err((status, message)) => Response::json_error(status, message),
        });
    }
    console.answer(&request.path, caller)
}

/// Who acted, for the log and the event.
fn who(caller: &Caller, request: &Request) -> String {
    let how = match caller {
        Caller::Bearer => "the API token",
        Caller::Session(_) => "a console login",
        Caller::Loopback | Caller::Anonymous => "loopback",
    };
    match request.peer {
        Some(peer) => format!("{how} from {}", peer.ip()),
        None => how.to_string(),
    }
}

type ActionResult = Result<(Response, String), (u16, String)>;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, (u16, String)> {
    serde_json::from_slice(body).map_err(|e| (400, format!("bad request body: {e}")))
}

fn node_id(id: &str) -> Result<(), (u16, String)> {
    if crate::core::wire::is_valid_node_id(id) {
        Ok(())
    } else {
        Err((400, format!("{id:?} is not a valid node id")))
    }
}

fn act(action: &str, view: &SchedulerView, config: &SchedulerConfig, body: &[u8]) -> ActionResult {
    match action {
        "token" => create_token(view, config, body),
        "remove" => remove(view, body),
        "pin" => pin(view, body),
        "unpin" => unpin(view, body),
        _ => Err((404, format!("no action {action:?}: token, remove, pin or unpin"))),
    }
}

fn create_token(view: &SchedulerView, config: &SchedulerConfig, body: &[u8]) -> ActionResult {
    #[derive(Deserialize)]
    struct TokenRequest {
        ttl_secs: u64,
        uses: u32,
        node_id: Option<String>,
    }
    let r: TokenRequest = parse(body)?;
    let ttl = Duration::from_secs(r.ttl_secs);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err((400, format!("ttl_secs must be between 1 and {}", MAX_TOKEN_TTL.as_secs())));
    }
    if r.uses == 0 || r.uses > MAX_TOKEN_USES {
        return Err((400, format!("uses must be between 1 and {MAX_TOKEN_USES}")));
    }
    let node = r.node_id.filter(|n| !n.trim().is_empty());
    if let Some(node) = &node {
        node_id(node)?;
    }
    let token =
        super::enrollment::create_token_in(&view.registry(), config, node.clone(), Vec::new(), ttl, r.uses)
            .map_err(|e| (500, format!("cannot create the token: {e:#}")))?;
    let expires_at_unix = unix_now() + ttl.as_secs();
    let bound = node.map(|n| format!(" for node {n}")).unwrap_or_default();
    let answer = Response::json(&serde_json::json!({
        "token": token.encode(),
        "expires_at_unix": expires_at_unix,
    }));
    Ok((answer, format!("join token created ({} use(s), valid {} s{bound})", r.uses, ttl.as_secs())))
}

fn remove(view: &SchedulerView, body: &[u8]) -> ActionResult {
    #[derive(Deserialize)]
    struct RemoveRequest {
        node: String,
    }
    let r: RemoveRequest = parse(body)?;
    node_id(&r.node)?;
    let member = super::enrollment::remove_node_in(&view.registry(), &r.node)
        .map_err(|e| (500, format!("cannot remove {}: {e:#}", r.node)))?;
    let answer = Response::json(&serde_json::json!({ "removed": r.node, "was_member": member.is_some() }));
    Ok((answer, format!("node {} removed", r.node)))
}

fn pin(view: &SchedulerView, body: &[u8]) -> ActionResult {
    #[derive(Deserialize)]
    struct PinRequest {
        node: String,
        route: String,
        relays: Vec<String>,
    }
    let r: PinRequest = parse(body)?;
    node_id(&r.node)?;
    r.relays.iter().try_for_each(|n| node_id(n))?;
    if !view.routes().iter().any(|x| x.node == r.node && x.route == r.route) {
        return Err((404, format!("node {} has no route {:?} with issued paths", r.node, r.route)));
    }
    let done = format!(
        "route {} of {} pinned to {}",
        r.route,
        r.node,
        if r.relays.is_empty() {
            "the direct link".to_string()
        } else {
            format!("relays {}", r.relays.join(", "))
        }
    );
    view.pin(Pin { node: r.node, route: r.route, relays: r.relays })
        .map_err(|e| (500, format!("cannot pin: {e}")))?;
    Ok((Response::json(&serde_json::json!({})), done))
}

fn unpin(view: &SchedulerView, body: &[u8]) -> ActionResult {
    #[derive(Deserialize)]
    struct UnpinRequest {
        node: String,
        route: String,
    }
    let r: UnpinRequest = parse(body)?;
    if !view.unpin(&r.node, &r.route).map_err(|e| (500, format!("cannot unpin: {e}")))? {
        return Err((
            404,
            format!(
                "route {:?} of {} has no pin made here (a pin in the config is changed in the config)",
                r.route, r.node
            ),
        ));
    }
    Ok((Response::json(&serde_json::json!({})), format!("route {} of {} unpinned", r.route, r.node)))
}

/// The mesh as the console shows it; with `full`, each route's alternatives too.
fn state(view: &SchedulerView, meter: &Mutex<RateMeter<2>>, full: bool) -> ConsoleState {
    let snapshot = view.snapshot();
    let totals = view.node_totals();
    let now = Instant::now();
    let mut meter = meter.lock().unwrap_or_else(|p| p.into_inner());
    meter.retain(|id| snapshot.nodes.iter().any(|n| n.id == id));
    let nodes: Vec<NodeRow> = snapshot
        .nodes
        .iter()
        .map(|n| {
            let (flows, bytes) = totals.get(&n.id).copied().unwrap_or_default();
            let rates = meter.rates_on_change(&n.id, [flows, bytes], now, RATE_IDLE);
            NodeRow {
                id: n.id.clone(),
                region: n.region.clone(),
                address: Some(n.mesh_address.clone()),
                state: if n.connected && n.alive { "up" } else { "down" },
                last_seen_secs: Some(n.last_seen_secs),
                instruction_version: Some(n.instruction_version),
                relay: Some(n.relay),
                flows: rates.map(|r| r[0]),
                bytes_per_sec: rates.map(|r| r[1]),
            }
        })
        .collect();
    drop(meter);
    let up = |id: &str| nodes.iter().any(|n| n.id == id && n.state == "up");
    let links: Vec<LinkRow> = snapshot
        .links
        .iter()
        .map(|l| {
            let state = match l.state {
                _ if !up(&l.a) || !up(&l.b) => "dead",
                LinkState::Counted => "up",
                LinkState::OneSided => "one_sided",
                LinkState::Stale => "dead",
            };
            let measured = state != "dead";
            LinkRow {
                a: l.a.clone(),
                b: l.b.clone(),
                state,
                rtt_ms: Some(l.rtt_ms).filter(|_| measured),
                loss: Some(l.loss).filter(|_| measured),
                throughput_bytes_per_sec: l.throughput_bytes_per_sec.map(|t| t as f64).filter(|_| measured),
                capacity_bytes_per_sec: l.capacity_bytes_per_sec.map(|c| c as f64).filter(|_| measured),
                transport: l.transport.to_string(),
                used: l.used,
            }
        })
        .collect();
    let mut state = ConsoleState {
        kind: "scheduler",
        self_id: None,
        generated_at_ms: unix_millis(),
        actions: true,
        nodes,
        links,
        routes: Vec::new(),
        flows: Vec::new(),
        events: Vec::new(),
    };
    let ttl = view.instruction_ttl().as_secs_f64();
    let now_unix = unix_now();
    let ends: Vec<(String, String)> = snapshot
        .routes
        .iter()
        .take(if full { ROUTES_WITH_ALTERNATIVES } else { 0 })
        .map(|r| (r.node.clone(), r.exit.clone()))
        .collect();
    let mut found = view.alternatives(&ends, ALTERNATIVES + 2).into_iter();
    for r in &snapshot.routes {
        let paths: Vec<PathRow> = r
            .paths
            .iter()
            .map(|p| PathRow {
                hops: p.hops.clone(),
                weight: Some(p.weight),
                cost_ms: state.rtt_along(&p.hops),
            })
            .collect();
        let alternatives = found
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter(|hops| !paths.iter().any(|p| &p.hops == hops))
            .take(ALTERNATIVES)
            .map(|hops| PathRow { cost_ms: state.rtt_along(&hops), hops, weight: None })
            .collect();
        let age = now_unix.saturating_sub(r.issued_at_unix) as f64;
        state.routes.push(RouteRow {
            node: r.node.clone(),
            route: r.route.clone(),
            exit: r.exit.clone(),
            objective: r.objective.to_string(),
            pinned: r.pinned,
            instruction_version: r.instruction_version,
            age_secs: Some(age),
            stale: age > ttl,
            paths,
            alternatives,
        });
    }
    state
}
