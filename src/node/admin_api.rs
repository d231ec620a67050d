//! The node's admin routes: JSON snapshots of its state, the Prometheus metrics and a
//! health check, all read from a [`NodeView`].

use std::sync::Arc;

use serde::Serialize;

use crate::admin::http::{Handler, Request, Response};
use crate::console::live::Console;
use crate::node::NodeView;
use crate::node::Stats;

/// `/api/stats`: the counters with the versions of the config and instructions in force.
#[derive(Debug, Serialize)]
pub(super) struct StatsView {
    /// The counters.
    #[serde(flatten)]
    pub stats: Stats,
    /// The running config's version.
    pub config_version: u64,
    /// The instruction set's version (0: none).
    pub instruction_version: u64,
    /// Whether the instructions are past their TTL.
    pub instructions_stale: bool,
}

/// The routes of a node's admin API, its console's among them.
pub(super) fn node_handler(view: NodeView, console: Arc<Console>) -> Handler {
    Arc::new(move |request: &Request, caller: &crate::admin::http::Caller| {
        if request.path.starts_with("/api/console/actions/") {
            return Response::json_error(404, "a node's console has no actions: use the scheduler's");
        }
        console.answer(&request.path, caller).unwrap_or_else(|| route(&view, request))
    })
}

fn route(view: &NodeView, request: &Request) -> Response {
    match request.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
        "/api/stats" => Response::json(&StatsView {
            stats: view.stats(),
            config_version: view.config_version(),
            instruction_version: view.instruction_version(),
            instructions_stale: view.instructions_stale(),
        }),
        "/api/listeners" => Response::json(&view.listeners()),
        "/api/udp" => Response::json(&view.stats().udp),
        "/api/peers" => Response::json(&view.peers()),
        "/api/flows" => Response::json(&view.busiest_flows(limit(&request.query))),
        "/api/routes" => Response::json(&view.routes()),
        "/api/probe" => probe(view, request),
        "/metrics" => Response::metrics(view.metrics()),
        _ => Response::not_found(),
    }
}

/// `POST /api/probe`: a ping or a trace (body: a [`crate::node::probe::ProbeRequest`]),
/// answered with its report, or with its steps as Server-Sent Events when it asks for a
/// stream.
/// POST only, so a page in a browser cannot make the node send probes with a cross-site
/// GET. POSTs are handled on a blocking thread (see `admin::http`), which waits here
/// while the probe runs as a task of the node's runtime.
fn probe(view: &NodeView, request: &Request) -> Response {
    if request.method != "POST" {
        return Response::post_only();
    }
    let probe: crate::node::probe::ProbeRequest = match serde_json::from_slice(&request.body) {
        Ok(p) => p,
        Err(e) => return Response::json_error(400, format!("expected a JSON probe request: {e}")),
    };
    let refused = |e: crate::node::probe::ProbeError| {
        Response::json_status(e.status(), &serde_json::json!({ "error": e.to_string(), "kind": e.kind() }))
    };
    let runtime = view.shared.runtime.clone();
    if probe.stream {
        let mut events = match view.probe_streamed(&probe) {
            Ok(events) => events,
            Err(e) => return refused(e),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        runtime.spawn(async move {
            // A reader that left drops `events`, which stops the run.
            while let Some(event) = events.recv().await {
                let event = serde_json::to_value(&event).unwrap_or_default();
                let name = event.get("event").and_then(|n| n.as_str()).unwrap_or("step").to_string();
                if tx.send(crate::console::live::frame(&name, &event)).await.is_err() {
                    return;
                }
            }
        });
        return Response::event_stream(rx);
    }
    let view = view.clone();
    match runtime.block_on(runtime.spawn(async move { view.probe(&probe).await })) {
        Ok(Ok(report)) => Response::json(&report),
        Ok(Err(e)) => refused(e),
        Err(_) => Response::json_error(500, "the probe failed"),
    }
}

/// Frames a streamed probe holds for a slow reader; the run itself never waits on them.
const STREAM_QUEUE: usize = 16;

/// Most flows `/api/flows` lists; `?limit=N` asks for fewer (the busiest).
pub(super) const MAX_FLOWS_LISTED: usize = 10_000;

/// `limit=N` from a query string, capped at [`MAX_FLOWS_LISTED`].
fn limit(query: &str) -> usize {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(MAX_FLOWS_LISTED, |n| n.min(MAX_FLOWS_LISTED))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flow_limit_is_read_from_the_query_and_capped() {
        assert_eq!(super::limit(""), super::MAX_FLOWS_LISTED);
        assert_eq!(super::limit("limit=10"), 10);
        assert_eq!(super::limit("x=1&limit=3"), 3);
        assert_eq!(super::limit("limit=99999999"), super::MAX_FLOWS_LISTED);
        assert_eq!(super::limit("limit=ten"), super::MAX_FLOWS_LISTED);
    }
}
