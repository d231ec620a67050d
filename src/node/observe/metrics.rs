//! The node's metrics in the Prometheus text exposition format (version 0.0.4), built
//! from the same snapshots the admin API serves as JSON.

use crate::core::wire::RefuseReason;
use crate::node::link::peers::PeerInfo;
use crate::node::observe::flow_registry::FlowRole;
use crate::node::observe::route_view::RouteInfo;
use crate::node::observe::stats::Stats;
use crate::prometheus::family;

/// Everything the metrics are made of.
pub(crate) struct MetricsInput<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// The peers, with link health.
    pub peers: &'a [PeerInfo],
    /// The routes.
    pub routes: &'a [RouteInfo],
    /// Open flows by role.
    pub flows_by_role: &'a [(FlowRole, u64)],
    /// The running config's version (1 at start, +1 per applied reload).
    pub config_version: u64,
    /// The instruction set's version (0: none).
    pub instruction_version: u64,
    /// Whether it is past its TTL.
    pub instructions_stale: bool,
    /// Validity (Unix seconds) of the certificate in force (the renewed one after a
    /// renewal) and of the mesh CA.
    pub certs: [(&'static str, Option<(i64, i64)>); 2],
}

/// The UDP families: associations, datagrams and bytes each way, drops by reason.
fn udp_metrics(out: &mut String, u: &crate::node::observe::udp::UdpStats) {
    family(out, "proxy_udp_associations_open", "gauge", "UDP associations open now (origin and exit sides).")
        .sample(&[], u.associations_open as f64);
    family(out, "proxy_udp_associations_total", "counter", "UDP associations opened since start.")
        .sample(&[], u.associations_total as f64);
    let mut f = family(
        out,
        "proxy_udp_datagrams_total",
        "counter",
        "UDP datagrams through this node's UDP sockets: in = received, out = sent.",
    );
    f.sample(&[("direction", "in")], u.datagrams_in as f64);
    f.sample(&[("direction", "out")], u.datagrams_out as f64);
    let mut f =
        family(out, "proxy_udp_bytes_total", "counter", "UDP payload bytes: in = received, out = sent.");
    f.sample(&[("direction", "in")], u.bytes_in as f64);
    f.sample(&[("direction", "out")], u.bytes_out as f64);
    let mut f = family(out, "proxy_udp_dropped_total", "counter", "UDP datagrams dropped, by reason.");
    for (reason, n) in &u.dropped {
        f.sample(&[("reason", reason)], *n as f64);
    }
}

/// Renders every metric.
pub(crate) fn render(input: &MetricsInput<'_>) -> String {
    let s = input.stats;
    let mut out = String::new();
    family(&mut out, "proxy_flows_current", "gauge", "Flows open now, any role.")
        .sample(&[], s.flows_current as f64);
    let mut f = family(&mut out, "proxy_flows_open", "gauge", "Flows open now, by this node's role in them.");
    for (role, n) in input.flows_by_role {
        f.sample(&[("role", role.as_str())], *n as f64);
    }
    let mut f = family(&mut out, "proxy_flows_total", "counter", "Flows since start, by role.");
    // `flows_originated` counts every application connection; local ones count apart.
    for (role, n) in [
        ("origin", s.flows_originated.saturating_sub(s.flows_local)),
        ("exit", s.flows_exited),
        ("local", s.flows_local),
        ("relay", s.flows_relayed),
    ] {
        f.sample(&[("role", role)], n as f64);
    }
    let mut f = family(
        &mut out,
        "proxy_flow_streams_total",
        "counter",
        "Flow streams opened or accepted, by whether they were sealed end to end (sealed: opened here; unsealed: opened or accepted here).",
    );
    f.sample(&[("seal", "sealed")], s.flows_sealed as f64);
    f.sample(&[("seal", "unsealed")], s.flows_unsealed as f64);
    let mut f = family(
        &mut out,
        "proxy_probe_flows_total",
        "counter",
        "Probe flows (proxy ping, proxy trace): role=origin opened here, role=exit answered here.",
    );
    f.sample(&[("role", "origin")], s.probes_sent as f64);
    f.sample(&[("role", "exit")], s.probes_answered as f64);
    family(&mut out, "proxy_flows_reset_total", "counter", "Flows that ended in a reset or timeout.")
        .sample(&[], s.flows_reset as f64);
    let mut f = family(
        &mut out,
        "proxy_bytes_total",
        "counter",
        "Bytes through TCP sockets: in = read, out = written.",
    );
    f.sample(&[("direction", "in")], s.bytes_in as f64);
    f.sample(&[("direction", "out")], s.bytes_out as f64);
    family(&mut out, "proxy_bytes_relayed_total", "counter", "Bytes relayed between streams.")
        .sample(&[], s.bytes_relayed as f64);
    let mut f = family(
        &mut out,
        "proxy_refusals_total",
        "counter",
        "Refused flows by reason: side=origin for flows started here, inbound for flows refused here.",
    );
    for reason in RefuseReason::ALL {
        f.sample(&[("side", "origin"), ("reason", reason.as_str())], s.refused_at_origin(reason) as f64);
        f.sample(&[("side", "inbound"), ("reason", reason.as_str())], s.refused_inbound(reason) as f64);
    }
    let mut f = family(
        &mut out,
        "proxy_link_fallbacks_total",
        "counter",
        "Links dialed over TCP because no QUIC handshake completed in time (to=tcp), and links that moved back to QUIC when a probe got through (to=quic).",
    );
    f.sample(&[("to", "tcp")], s.link_fallbacks as f64);
    f.sample(&[("to", "quic")], s.links_back_to_quic as f64);
    peer_metrics(&mut out, input.peers);
    route_metrics(&mut out, s, input.routes);
    let m = &s.multipath;
    family(&mut out, "proxy_multipath_flows_total", "counter", "Multipath flows started here.")
        .sample(&[], m.flows as f64);
    let mut f = family(&mut out, "proxy_subflows_total", "counter", "Multipath subflows by event.");
    for (event, n) in
        [("opened", m.subflows_opened), ("lost", m.subflows_lost), ("replaced", m.subflows_replaced)]
    {
        f.sample(&[("event", event)], n as f64);
    }
    family(
        &mut out,
        "proxy_multipath_resent_bytes_total",
        "counter",
        "Bytes sent again after their subflow was lost.",
    )
    .sample(&[], m.bytes_resent as f64);
    udp_metrics(&mut out, &s.udp);
    let b = &s.buffers;
    let mut f = family(
        &mut out,
        "proxy_buffer_bytes",
        "gauge",
        "Buffered flow data: limit = limits.max_buffered_bytes, used = reserved now (link windows, reorder buffers).",
    );
    f.sample(&[("kind", "limit")], b.limit_bytes as f64);
    f.sample(&[("kind", "used")], b.used_bytes as f64);
    family(
        &mut out,
        "proxy_stalled_flows",
        "gauge",
        "Flows whose reader stalled, each holding a stream window.",
    )
    .sample(&[], b.stalled_flows as f64);
    family(
        &mut out,
        "proxy_buffer_refusals_total",
        "counter",
        "Flows reset because the buffer budget had no room for them.",
    )
    .sample(&[], b.refusals as f64);
    family(
        &mut out,
        "proxy_config_version",
        "gauge",
        "Version of the running config (1 at start, +1 per applied reload).",
    )
    .sample(&[], input.config_version as f64);
    let (version, stale) = (input.instruction_version, input.instructions_stale);
    family(
        &mut out,
        "proxy_instruction_version",
        "gauge",
        "Version of the scheduler instructions held (0: none).",
    )
    .sample(&[], version as f64);
    family(&mut out, "proxy_instructions_stale", "gauge", "1 when the instructions held are past their TTL.")
        .sample(&[], if stale { 1.0 } else { 0.0 });
    crate::prometheus::cert_expiry(&mut out, &input.certs, crate::clock::unix_now());
    out
}

fn peer_metrics(out: &mut String, peers: &[PeerInfo]) {
    let mut f = family(out, "proxy_peer_up", "gauge", "1 when a link to the peer is connected.");
    for p in peers {
        f.sample(&[("peer", &p.id)], if p.connected { 1.0 } else { 0.0 });
    }
    let mut f =
        family(out, "proxy_peer_healthy", "gauge", "1 when new flows may use the link (heard from lately).");
    for p in peers {
        f.sample(&[("peer", &p.id)], if p.healthy { 1.0 } else { 0.0 });
    }
    let mut f = family(
        out,
        "proxy_peer_transport",
        "gauge",
        "1 for what carries the link to the peer: quic, or tcp (TLS on TCP where UDP is blocked).",
    );
    for p in peers {
        if let Some(transport) = p.transport {
            f.sample(&[("peer", &p.id), ("transport", transport)], 1.0);
        }
    }
    let mut f = family(out, "proxy_peer_rtt_seconds", "gauge", "Smoothed round-trip time of the link.");
    for p in peers {
        if let Some(ms) = p.rtt_ms {
            f.sample(&[("peer", &p.id)], ms / 1000.0);
        }
    }
    let mut f = family(out, "proxy_peer_loss_ratio", "gauge", "Packets lost over packets sent on the link.");
    for p in peers {
        if let Some(loss) = p.loss {
            f.sample(&[("peer", &p.id)], loss);
        }
    }
    let mut f =
        family(out, "proxy_peer_link_bytes_total", "counter", "UDP bytes on the current link, by direction.");
    for p in peers {
        if let (Some(tx), Some(rx)) = (p.bytes_sent, p.bytes_received) {
            f.sample(&[("peer", &p.id), ("direction", "sent")], tx as f64);
            f.sample(&[("peer", &p.id), ("direction", "received")], rx as f64);
        }
    }
}

fn route_metrics(out: &mut String, s: &Stats, routes: &[RouteInfo]) {
    let mut f = family(out, "proxy_route_matches_total", "counter", "Connections matched by each route.");
    for r in routes {
        f.sample(&[("route", &r.name)], r.matches as f64);
    }
    let mut f = family(out, "proxy_route_bytes_total", "counter", "Bytes of each route's finished flows.");
    for r in routes {
        f.sample(&[("route", &r.name)], r.bytes as f64);
    }
    let mut f =
        family(out, "proxy_route_refusals_total", "counter", "Refused flows of each route, by reason.");
    for (route, reasons) in &s.route_refusals {
        for (reason, n) in reasons {
            f.sample(&[("route", route), ("reason", reason)], *n as f64);
        }
    }
}
