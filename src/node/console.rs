//! A node's console: its own view of the mesh (itself, its peers and the links to them,
//! its routes with the path a new flow takes now, its busiest flows). It offers no
//! actions: those are the scheduler's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::unix_millis;
use crate::console::live::{Console, StateSource};
use crate::console::model::{ConsoleState, FlowRow, LinkRow, NodeRow, PathRow, RouteRow};
use crate::console::rate::RateMeter;
use crate::node::NodeView;

/// Flows the console lists.
const FLOWS_SHOWN: usize = 20;
/// The span rates are measured over.
const RATE_SPAN: Duration = Duration::from_secs(2);

/// Starts the node's console until `stopped`; live streams end when `access` changes.
pub(super) fn start(
    view: NodeView,
    stopped: tokio::sync::watch::Receiver<bool>,
    access: tokio::sync::watch::Receiver<crate::admin::http::AccessRules>,
) -> Arc<Console> {
    let meter = Mutex::new(RateMeter::new(RATE_SPAN));
    let events = view.events();
    let source: StateSource = Arc::new(move |_full| state(&view, &meter));
    Console::start(source, events, stopped, access)
}

/// `hops` as a whole path from this node: route and flow views leave out the node itself.
fn from_me(me: &str, hops: &[String]) -> Vec<String> {
    let mut path = Vec::with_capacity(hops.len() + 1);
    if hops.first().is_none_or(|h| h != me) {
        path.push(me.to_string());
    }
    path.extend(hops.iter().cloned());
    path
}

fn state(view: &NodeView, meter: &Mutex<RateMeter<1>>) -> ConsoleState {
    let me = view.id().to_string();
    let stats = view.stats();
    let peers = view.peers();
    let now = Instant::now();
    let mut meter = meter.lock().unwrap_or_else(|p| p.into_inner());
    meter.retain(|key| key == me || peers.iter().any(|p| p.id == key));
    let own_rate = meter.rates(&me, [stats.bytes_in + stats.bytes_out], now).map(|r| r[0]);
    let mut nodes = vec![NodeRow {
        id: me.clone(),
        region: view.region(),
        address: view.mesh_addr().ok().map(|a| a.to_string()),
        state: "up",
        last_seen_secs: Some(0.0),
        instruction_version: Some(view.instruction_version()),
        relay: None,
        flows: Some(stats.flows_current as f64),
        bytes_per_sec: own_rate,
    }];
    let mut links = Vec::new();
    for p in &peers {
        let up = p.connected && p.healthy;
        nodes.push(NodeRow {
            id: p.id.clone(),
            region: p.region.clone().unwrap_or_else(|| "unknown region".into()),
            address: p.address.clone(),
            state: if p.connected { "up" } else { "down" },
            last_seen_secs: None,
            instruction_version: None,
            relay: None,
            flows: None,
            bytes_per_sec: None,
        });
        let sent = p.bytes_sent.unwrap_or(0);
        let throughput = meter.rates(&p.id, [sent], now).map(|r| r[0]);
        let (a, b) = if me < p.id { (me.clone(), p.id.clone()) } else { (p.id.clone(), me.clone()) };
        links.push(LinkRow {
            a,
            b,
            state: if up { "up" } else { "dead" },
            rtt_ms: p.rtt_ms.filter(|_| up),
            loss: p.loss.filter(|_| up),
            throughput_bytes_per_sec: throughput.filter(|_| up),
            capacity_bytes_per_sec: None,
            transport: p.transport.unwrap_or("quic").to_string(),
            used: false,
        });
    }
    drop(meter);
    let mut state = ConsoleState {
        kind: "node",
        self_id: Some(me.clone()),
        generated_at_ms: unix_millis(),
        actions: false,
        nodes,
        links,
        routes: Vec::new(),
        flows: Vec::new(),
        events: Vec::new(),
    };
    for r in view.routes() {
        let active = from_me(&me, &r.active_path);
        let alternatives = r
            .alternatives
            .iter()
            .map(|hops| from_me(&me, hops))
            .filter(|hops| *hops != active)
            .map(|hops| PathRow { cost_ms: state.rtt_along(&hops), hops, weight: None })
            .collect();
        let paths = if r.active_path.is_empty() {
            Vec::new()
        } else {
            vec![PathRow { cost_ms: state.rtt_along(&active), hops: active, weight: Some(1.0) }]
        };
        state.routes.push(RouteRow {
            node: me.clone(),
            route: r.name,
            exit: r.exit,
            objective: r.kind.to_string(),
            pinned: false,
            instruction_version: r.instruction_version,
            age_secs: None,
            stale: r.stale,
            paths,
            alternatives,
        });
    }
    for route in &state.routes {
        for path in &route.paths {
            for w in path.hops.windows(2) {
                if let Some(link) = state
                    .links
                    .iter_mut()
                    .find(|l| (l.a == w[0] && l.b == w[1]) || (l.a == w[1] && l.b == w[0]))
                {
                    link.used = true;
                }
            }
        }
    }
    state.flows = view
        .busiest_flows(FLOWS_SHOWN)
        .into_iter()
        .map(|f| FlowRow {
            id: f.id.to_string(),
            route: f.route,
            bytes: f.bytes,
            rate_bytes_per_sec: f.bytes as f64 / f.age_secs.max(0.001),
            age_secs: f.age_secs,
            path: f.path,
        })
        .collect();
    state
}
