//! `proxy status --json`: one JSON document per run, node or scheduler, for scripts.
//!
//! The documents are the structs below, not the admin API's answers passed through: each
//! field is read from the admin API by name and written under the name given here, so
//! the document stays the same when the admin API's own answers grow or change. Stable:
//! `format` is 1; fields may be added, none is renamed, removed or changes meaning
//! without a new `format`. README ("Status as JSON") lists them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::{SchedulerStatusInput, StatusInput};

/// The document format this release writes.
pub const FORMAT: u32 = 1;

/// `proxy status --json`: a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The node's id.
    pub node_id: String,
    /// The running config's version (1 at start, +1 per applied reload).
    pub config_version: u64,
    /// The scheduler instructions' version held (0: none).
    pub instruction_version: u64,
    /// Whether those instructions are past their TTL.
    pub instructions_stale: bool,
    /// Flows open now, any role.
    pub flows_current: u64,
    /// Flows reset since start.
    pub flows_reset: u64,
    /// Bytes received from clients and peers since start.
    pub bytes_in: u64,
    /// Bytes sent since start.
    pub bytes_out: u64,
    /// Configured and introduced peers.
    pub peers: Vec<PeerStatus>,
    /// Listeners, with the address each is bound to.
    pub listeners: Vec<ListenerStatus>,
    /// Routes, with the path a new flow takes now.
    pub routes: Vec<RouteStatus>,
    /// The busiest open flows (at most ten), busiest first.
    pub busiest_flows: Vec<FlowStatus>,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node id.
    pub id: String,
    /// The address it is dialed at (`null`: it dials this node).
    pub address: Option<String>,
    /// Whether a link to it is up.
    pub connected: bool,
    /// Whether that link is usable for new flows.
    pub healthy: bool,
    /// `quic` or `tcp` (`null` without a link).
    pub transport: Option<String>,
    /// Smoothed round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Loss ratio, 0 to 1.
    pub loss: Option<f64>,
    /// How long the link has been up, seconds.
    pub connected_secs: Option<u64>,
}

/// One listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Its name.
    pub name: String,
    /// The address it is bound to.
    pub addr: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Its name.
    pub name: String,
    /// `remote` (through the mesh) or `local`.
    pub kind: String,
    /// The exit node (empty for a local route).
    pub exit: String,
    /// The path a new flow takes now: relays then the exit.
    pub active_path: Vec<String>,
    /// Every path it may take.
    pub alternatives: Vec<Vec<String>>,
    /// Whether flows are spread over several paths.
    pub multipath: bool,
    /// Whether the scheduler instructs it.
    pub instructed: bool,
    /// The instruction version it follows.
    pub instruction_version: u64,
    /// Whether that instruction is past its TTL.
    pub stale: bool,
    /// Flows it matched since start.
    pub matches: u64,
    /// Bytes it carried since start.
    pub bytes: u64,
}

/// One open flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowStatus {
    /// Its id on this node.
    pub id: u64,
    /// This node's role: `origin`, `relay`, `exit`, `local`, ...
    pub role: String,
    /// The route it matched (`null` where this node is not its origin).
    pub route: Option<String>,
    /// Its path.
    pub path: Vec<String>,
    /// Where it goes.
    pub destination: String,
    /// Bytes carried.
    pub bytes: u64,
    /// Age, seconds.
    pub age_secs: f64,
}

/// `proxy status --scheduler ADDR --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerStatus {
    /// Always [`FORMAT`].
    pub format: u32,
    /// Registered nodes.
    pub nodes: Vec<SchedulerNodeStatus>,
    /// Reported links.
    pub links: Vec<LinkStatus>,
    /// Issued paths per node and route.
    pub routes: Vec<SchedulerRouteStatus>,
}

/// A node the scheduler knows this session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerNodeStatus {
    /// Its id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// The address other nodes dial.
    pub mesh_address: String,
    /// Whether its session is open.
    pub connected: bool,
    /// Whether it reported recently enough to count.
    pub alive: bool,
    /// Seconds since its last report (`null`: none yet).
    pub last_report_secs: Option<f64>,
    /// Its peers, listeners, routes and reported links, counted.
    pub peers: u64,
    /// Listeners.
    pub listeners: u64,
    /// Routes.
    pub routes: u64,
    /// Links.
    pub links: u64,
    /// The version of the last instruction set issued to it (0: none).
    pub instruction_version: u64,
}

/// A link between two nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// `counted`, `one_sided` or `stale`.
    pub state: String,
    /// The ends that report it.
    pub reported_by: Vec<String>,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Loss ratio, 0 to 1.
    pub loss: f64,
    /// Bytes per second carried (`null`: not measured).
    pub throughput_bytes_per_sec: Option<u64>,
    /// Estimated capacity, bytes per second (`null`: unknown).
    pub capacity_bytes_per_sec: Option<u64>,
    /// `quic` or `tcp`.
    pub transport: String,
    /// Whether an issued path uses it.
    pub used: bool,
    /// Seconds since its last report.
    pub age_secs: f64,
}

/// The paths issued for one node's route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerRouteStatus {
    /// The origin node.
    pub node: String,
    /// The route.
    pub route: String,
    /// Its exit node.
    pub exit: String,
    /// The objective the paths were chosen for.
    pub objective: String,
    /// Whether an operator pinned it.
    pub pinned: bool,
    /// The instruction set that carries it.
    pub instruction_version: u64,
    /// Its paths, with their share of flows.
    pub paths: Vec<PathStatus>,
}

/// One issued path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathStatus {
    /// Every hop, origin to exit.
    pub hops: Vec<String>,
    /// Its share of new flows, 0 to 1.
    pub weight: f64,
    /// Its cost under the objective (`null`: unknown).
    pub cost: Option<f64>,
}

/// `value` read as `T`; what it is called in the message.
fn read<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("the admin API's {what} is not as expected: {e}"))
}

/// The node document from the admin API's answers, as pretty JSON.
pub fn node_document(input: &StatusInput) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Stats {
        node_id: String,
        config_version: u64,
        instruction_version: u64,
        instructions_stale: bool,
        flows_current: u64,
        flows_reset: u64,
        bytes_in: u64,
        bytes_out: u64,
    }
    let s: Stats = read(&input.stats, "/api/stats")?;
    let document = NodeStatus {
        format: FORMAT,
        node_id: s.node_id,
        config_version: s.config_version,
        instruction_version: s.instruction_version,
        instructions_stale: s.instructions_stale,
        flows_current: s.flows_current,
        flows_reset: s.flows_reset,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        peers: read(&input.peers, "/api/peers")?,
        listeners: read(&input.listeners, "/api/listeners")?,
        routes: read(&input.routes, "/api/routes")?,
        busiest_flows: read(&input.flows, "/api/flows")?,
    };
    serde_json::to_string_pretty(&document).map_err(|e| e.to_string())
}

/// The scheduler document from its admin API's answers, as pretty JSON.
pub fn scheduler_document(input: &SchedulerStatusInput) -> Result<String, String> {
    let document = SchedulerStatus {
        format: FORMAT,
        nodes: read(&input.nodes, "/api/nodes")?,
        links: read(&input.links, "/api/links")?,
        routes: read(&input.routes, "/api/routes")?,
    };
    serde_json::to_string_pretty(&document).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documents_carry_only_their_own_fields() {
        let input = StatusInput {
            stats: json!({"node_id": "a", "config_version": 3, "instruction_version": 0, "instructions_stale": false,
                "flows_current": 1, "bytes_in": 10, "bytes_out": 20, "flows_reset": 0, "internal_counter": 5}),
            peers: json!([{"id": "b", "address": null, "connected": true, "healthy": true, "transport": "quic",
                "rtt_ms": 1.25, "loss": 0.0, "connected_secs": 65, "remote_addr": "127.0.0.1:9"}]),
            listeners: json!([{"name": "web", "addr": "127.0.0.1:8080", "protocol": "tcp"}]),
            routes: json!([]),
            flows: json!([{"id": 9, "role": "origin", "route": "web", "path": ["b"], "destination": "10.0.0.5:80",
                "bytes": 4096, "age_secs": 3.0, "origin": "a"}]),
        };
        let text = node_document(&input).expect("document");
        let back: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back["format"], 1);
        assert_eq!(back["peers"][0]["rtt_ms"], 1.25);
        assert!(back.get("internal_counter").is_none() && back["peers"][0].get("remote_addr").is_none());
        let mut broken = input;
        broken.stats = json!({"node": "a"});
        assert!(node_document(&broken).is_err_and(|e| e.contains("/api/stats")));
    }
}
