//! The scheduler's admin routes, in the style of the node's (`node::admin_api`):
//!
//! - `GET /api/nodes`: every registered node ([`NodeSnapshot`]);
//! - `GET /api/links`: every reported link with the metrics the computation sees, whether
//!   it counts and whether a path uses it ([`LinkSnapshot`](crate::scheduler::state::LinkSnapshot));
//! - `GET /api/routes`: the paths issued per node and route
//!   ([`RouteSnapshot`](crate::scheduler::state::RouteSnapshot));
//! - `GET /healthz`: `ok`;
//! - `GET /metrics`: the Prometheus text format, rendered by [`render_metrics`].
//!
//! The server, its access rules (Host header, bearer token) and its limits are
//! [`crate::admin::http`]'s.

use std::sync::Arc;

use crate::admin::http::{Caller, Handler, Request, Response};
use crate::config::scheduler::SchedulerConfig;
use crate::console::live::Console;
use crate::prometheus::family;
use crate::scheduler::etcd::leadership::Role;
use crate::scheduler::server::{SchedulerView, Snapshot};
use crate::scheduler::state::{LinkState, NodeSnapshot};

/// The routes of the scheduler's admin API, its console's among them.
pub fn scheduler_handler(
    view: SchedulerView,
    console: Arc<Console>,
    config: Arc<SchedulerConfig>,
) -> Handler {
    Arc::new(move |request: &Request, caller: &Caller| {
        super::console::answer(&console, &view, &config, request, caller)
            .unwrap_or_else(|| route(&view, request))
    })
}

fn route(view: &SchedulerView, request: &Request) -> Response {
    match request.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
        "/api/nodes" => Response::json(&view.nodes()),
        "/api/links" => Response::json(&view.links()),
        "/api/routes" => Response::json(&view.routes()),
        "/metrics" => Response::metrics(render_metrics(&view.snapshot())),
        _ => Response::not_found(),
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Renders the scheduler's metrics (Prometheus text format, version 0.0.4).
pub fn render_metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let (leader, term) = match s.role {
        Role::Leader { term, .. } if s.role.is_leader() => (1.0, term as f64),
        _ => (0.0, 0.0),
    };
    family(
        &mut out,
        "proxy_scheduler_leader",
        "gauge",
        "1 when this scheduler leads the mesh (issues instructions).",
    )
    .sample(&[], leader);
    family(
        &mut out,
        "proxy_scheduler_leader_term",
        "gauge",
        "The term it leads in (etcd revision; 0 without etcd or when not leading).",
    )
    .sample(&[], term);
    crate::prometheus::cert_expiry(
        &mut out,
        &[("scheduler", s.certs.scheduler), ("ca", s.certs.ca)],
        crate::clock::unix_now(),
    );
    node_metrics(&mut out, &s.nodes);
    let mut f = family(
        &mut out,
        "proxy_scheduler_links",
        "gauge",
        "Reported links, by how the computation treats them.",
    );
    for state in [LinkState::Counted, LinkState::OneSided, LinkState::Stale] {
        let n = s.links.iter().filter(|l| l.state == state).count();
        f.sample(&[("state", state.as_str())], n as f64);
    }
    let mut f = family(
        &mut out,
        "proxy_scheduler_link_counted",
        "gauge",
        "1 when both ends of the link report it freshly, so paths may use it.",
    );
    for l in &s.links {
        f.sample(&[("a", &l.a), ("b", &l.b)], flag(l.state == LinkState::Counted));
    }
    let counted: Vec<_> = s.links.iter().filter(|l| l.state == LinkState::Counted).collect();
    let mut f = family(
        &mut out,
        "proxy_scheduler_link_rtt_seconds",
        "gauge",
        "Round-trip time of each counted link (the higher of its two reports).",
    );
    for l in &counted {
        f.sample(&[("a", &l.a), ("b", &l.b)], l.rtt_ms / 1000.0);
    }
    let mut f = family(
        &mut out,
        "proxy_scheduler_link_loss_ratio",
        "gauge",
        "Loss ratio of each counted link (the higher of its two reports).",
    );
    for l in &counted {
        f.sample(&[("a", &l.a), ("b", &l.b)], l.loss);
    }
    let mut f = family(
        &mut out,
        "proxy_scheduler_link_throughput_bytes_per_second",
        "gauge",
        "Bytes per second sent over each counted link that carried traffic (the lower report).",
    );
    for l in &counted {
        if let Some(t) = l.throughput_bytes_per_sec {
            f.sample(&[("a", &l.a), ("b", &l.b)], t as f64);
        }
    }
    let mut f = family(
        &mut out,
        "proxy_scheduler_link_capacity_bytes_per_second",
        "gauge",
        "What each counted link can carry, from its ends' congestion controllers (the lower claim).",
    );
    for l in &counted {
        if let Some(c) = l.capacity_bytes_per_sec {
            f.sample(&[("a", &l.a), ("b", &l.b)], c as f64);
        }
    }
    let mut f =
        family(&mut out, "proxy_scheduler_link_used", "gauge", "1 when an issued path runs over the link.");
    for l in &s.links {
        f.sample(&[("a", &l.a), ("b", &l.b)], flag(l.used));
    }
    family(&mut out, "proxy_scheduler_routes", "gauge", "Routes with issued paths, over all nodes.")
        .sample(&[], s.routes.len() as f64);
    let r = &s.recompute;
    family(&mut out, "proxy_scheduler_recomputes_total", "counter", "Path recomputations since start.")
        .sample(&[], r.recomputes as f64);
    if let Some(last) = r.last_duration_secs {
        family(
            &mut out,
            "proxy_scheduler_recompute_duration_seconds",
            "gauge",
            "Time the last path recomputation took.",
        )
        .sample(&[], last);
    }
    family(
        &mut out,
        "proxy_scheduler_recompute_seconds_total",
        "counter",
        "Time all path recomputations took.",
    )
    .sample(&[], r.total_duration_secs);
    family(
        &mut out,
        "proxy_scheduler_instruction_sets_total",
        "counter",
        "Instruction sets issued (one per node whose paths changed).",
    )
    .sample(&[], r.instruction_sets as f64);
    out
}

fn node_metrics(out: &mut String, nodes: &[NodeSnapshot]) {
    family(out, "proxy_scheduler_nodes", "gauge", "Registered nodes.").sample(&[], nodes.len() as f64);
    family(out, "proxy_scheduler_nodes_connected", "gauge", "Registered nodes with an open session.")
        .sample(&[], nodes.iter().filter(|n| n.connected).count() as f64);
    family(out, "proxy_scheduler_nodes_alive", "gauge", "Nodes heard from within node_dead_after.")
        .sample(&[], nodes.iter().filter(|n| n.alive).count() as f64);
    let mut f = family(out, "proxy_scheduler_node_connected", "gauge", "1 when the node's session is open.");
    for n in nodes {
        f.sample(&[("node", &n.id)], flag(n.connected));
    }
    let mut f = family(
        out,
        "proxy_scheduler_node_last_seen_seconds",
        "gauge",
        "Seconds since the node was heard from.",
    );
    for n in nodes {
        f.sample(&[("node", &n.id)], n.last_seen_secs);
    }
    let mut f = family(
        out,
        "proxy_scheduler_instruction_version",
        "gauge",
        "Version of the last instruction set issued to the node (0: none).",
    );
    for n in nodes {
        f.sample(&[("node", &n.id)], n.instruction_version as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::server::RecomputeStats;
    use crate::scheduler::state::{LinkSnapshot, PathSnapshot, RouteSnapshot};

    fn snapshot() -> Snapshot {
        let node = |id: &str, connected: bool| NodeSnapshot {
            id: id.into(),
            region: "r".into(),
            mesh_address: format!("{id}:7800"),
            connected,
            alive: connected,
            last_seen_secs: 1.5,
            last_report_secs: Some(1.5),
            peers: 1,
            listeners: 0,
            routes: 0,
            links: 1,
            instruction_version: 7,
            relay: true,
            avoided_relays: vec![],
        };
        let link = |a: &str, b: &str, state| LinkSnapshot {
            a: a.into(),
            b: b.into(),
            state,
            reported_by: vec![a.into()],
            rtt_ms: 12.5,
            loss: 0.01,
            throughput_bytes_per_sec: Some(1000),
            capacity_bytes_per_sec: Some(125_000),
            bandwidth_mbps: 1.0,
            transport: "quic",
            used: state == LinkState::Counted,
            age_secs: 0.5,
        };
        Snapshot {
            nodes: vec![node("a", true), node("b\"x", false)],
            links: vec![link("a", "b", LinkState::Counted), link("a", "m", LinkState::OneSided)],
            routes: vec![RouteSnapshot {
                node: "a".into(),
                route: "web".into(),
                exit: "b".into(),
                objective: "latency",
                pinned: false,
                instruction_version: 7,
                issued_at_unix: 1,
                paths: vec![PathSnapshot {
                    relays: vec![],
                    hops: vec!["a".into(), "b".into()],
                    weight: 1.0,
                    cost: None,
                }],
            }],
            recompute: RecomputeStats {
                recomputes: 3,
                last_duration_secs: Some(0.25),
                total_duration_secs: 0.5,
                instruction_sets: 2,
            },
            role: Role::Leader { term: 42, until: None },
            certs: crate::scheduler::server::CertValidity { scheduler: Some((0, 1)), ca: None },
        }
    }

    #[test]
    fn metrics_carry_nodes_links_and_the_recompute_figures() {
        let text = render_metrics(&snapshot());
        for line in [
            "proxy_scheduler_nodes 2",
            "proxy_scheduler_nodes_connected 1",
            "proxy_scheduler_node_connected{node=\"b\\\"x\"} 0",
            "proxy_scheduler_links{state=\"counted\"} 1",
            "proxy_scheduler_links{state=\"one_sided\"} 1",
            "proxy_scheduler_links{state=\"stale\"} 0",
            "proxy_scheduler_link_counted{a=\"a\",b=\"m\"} 0",
            "proxy_scheduler_link_rtt_seconds{a=\"a\",b=\"b\"} 0.0125",
            "proxy_scheduler_link_loss_ratio{a=\"a\",b=\"b\"} 0.01",
            "proxy_scheduler_link_capacity_bytes_per_second{a=\"a\",b=\"b\"} 125000",
            "proxy_scheduler_link_used{a=\"a\",b=\"b\"} 1",
            "proxy_scheduler_routes 1",
            "proxy_scheduler_instruction_version{node=\"a\"} 7",
            "proxy_scheduler_recomputes_total 3",
            "proxy_scheduler_recompute_duration_seconds 0.25",
            "# TYPE proxy_scheduler_instruction_sets_total counter",
            "proxy_scheduler_leader 1",
            "proxy_scheduler_leader_term 42",
            "# TYPE proxy_cert_expiry_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let expiry = text.lines().find(|l| l.starts_with("proxy_cert_expiry_seconds{cert=\"scheduler\"} -"));
        assert!(expiry.is_some(), "an expired certificate counts below zero:\n{text}");
        assert!(!text.contains("cert=\"ca\""), "an unknown validity is left out");
        // Only counted links have measurements in the metrics.
        assert!(!text.contains("proxy_scheduler_link_rtt_seconds{a=\"a\",b=\"m\"}"), "{text}");
    }

    #[test]
    fn no_recompute_yet_means_no_duration_sample() {
        let mut s = snapshot();
        s.recompute = RecomputeStats::default();
        let text = render_metrics(&s);
        assert!(!text.contains("proxy_scheduler_recompute_duration_seconds"), "{text}");
        assert!(text.contains("proxy_scheduler_recomputes_total 0\n"), "{text}");
    }
}
