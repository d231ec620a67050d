//! What a ping or trace asks for and what it answers: the JSON of `POST /api/probe`, read
//! back by `proxy ping` and `proxy trace` (field names are stable).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most probes per flow: with [`MAX_INTERVAL_MS`], a flow stays well inside the exit's
/// limits (`flow::echo`).
pub const MAX_COUNT: u32 = 50;
/// Shortest wait between probes.
pub const MIN_INTERVAL_MS: u64 = 10;
/// Longest wait between probes.
pub const MAX_INTERVAL_MS: u64 = 1000;

/// `ping`: probes over the whole path; `trace`: probes to each hop of it in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Round trips to the node over the whole path.
    Ping,
    /// Round trips to each hop of the path in turn.
    Trace,
}

/// The body of `POST /api/probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The node to probe.
    pub node: String,
    /// Ping or trace.
    pub mode: ProbeMode,
    /// Probes per flow (default 5 for a ping, 3 per hop for a trace), 1 to [`MAX_COUNT`].
    #[serde(default)]
    pub count: Option<u32>,
    /// Time from one probe to the next (default 1000 for a ping, 100 for a trace),
    /// [`MIN_INTERVAL_MS`] to [`MAX_INTERVAL_MS`].
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Answer with a stream of [`ProbeEvent`]s as the probes happen (Server-Sent Events,
    /// the full report last) instead of the report alone at the end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

impl ProbeRequest {
    /// The count and interval to use, or why the request is refused.
    pub fn checked(&self) -> Result<(u32, Duration), String> {
        if !crate::core::wire::is_valid_node_id(&self.node) {
            return Err(format!("{:?} is not a node id (1-63 of a-z, 0-9 and '-')", self.node));
        }
        let (count, interval) = match self.mode {
            ProbeMode::Ping => (self.count.unwrap_or(5), self.interval_ms.unwrap_or(1000)),
            ProbeMode::Trace => (self.count.unwrap_or(3), self.interval_ms.unwrap_or(100)),
        };
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(format!("count must be 1 to {MAX_COUNT}, not {count}"));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval) {
            return Err(format!(
                "interval_ms must be {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}, not {interval}"
            ));
        }
        Ok((count, Duration::from_millis(interval)))
    }
}

/// The answer to a ping or a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The node probed.
    pub node: String,
    /// Ping or trace.
    pub mode: ProbeMode,
    /// The route whose exit is the node, whose path was taken; `None`: the direct link.
    pub route: Option<String>,
    /// The path a new flow to the node takes now: the nodes after this one, the node last.
    pub path: Vec<String>,
    /// A ping: one entry, the node over the whole path. A trace: one per hop tried, in
    /// path order; it stops at the first hop that answered no probe.
    pub hops: Vec<HopReport>,
    /// Whether the node itself answered at least one probe.
    pub reached: bool,
}

/// One step of a streamed ping or trace, sent as it happens: the data of one
/// Server-Sent Event named after its `event` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ProbeEvent {
    /// The path chosen, before any flow opens.
    Path {
        /// The node probed.
        node: String,
        /// Ping or trace.
        mode: ProbeMode,
        /// As in [`ProbeReport::route`].
        route: Option<String>,
        /// As in [`ProbeReport::path`].
        path: Vec<String>,
    },
    /// A probe flow opened to `path[hop]`.
    Opened {
        /// The index in the path of the flow's last node.
        hop: usize,
        /// That node.
        node: String,
        /// As in [`HopReport::open_ms`].
        open_ms: f64,
        /// As in [`HopReport::sealed`].
        sealed: bool,
    },
    /// One probe's round trip.
    Probe {
        /// The index in the path of the flow's last node.
        hop: usize,
        /// That node.
        node: String,
        /// The probe's number in its flow, from 1.
        seq: u32,
        /// Milliseconds; `null`: no echo in time.
        rtt_ms: Option<f64>,
    },
    /// A flow's probes are done (for a trace, `delta_ms` is filled).
    Hop {
        /// The index in the path of the flow's last node.
        hop: usize,
        /// The flow's figures.
        report: HopReport,
    },
    /// The whole answer, last.
    Report(ProbeReport),
}

/// The probes of one flow, ending at `node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopReport {
    /// The node the probe flow ended at.
    pub node: String,
    /// Round trip of each probe in milliseconds, in order; `null`: no echo in time.
    pub probes: Vec<Option<f64>>,
    /// Probes sent.
    pub sent: u32,
    /// Echoes received.
    pub received: u32,
    /// Fastest round trip, milliseconds.
    pub min_ms: Option<f64>,
    /// Mean round trip, milliseconds.
    pub avg_ms: Option<f64>,
    /// Slowest round trip, milliseconds.
    pub max_ms: Option<f64>,
    /// A trace: `avg_ms` less the previous hop's (the first hop's own `avg_ms`).
    pub delta_ms: Option<f64>,
    /// Time from sending the flow's header to the node's answer (the node's seal
    /// handshake and each relay opening its next stream included), milliseconds.
    pub open_ms: Option<f64>,
    /// Whether the probe flow was sealed end to end.
    pub sealed: bool,
    /// Why the flow failed, if it did (refused, no answer in time, a link lost).
    pub error: Option<String>,
}

impl HopReport {
    /// A report of no probes yet, ending at `node`.
    pub(crate) fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            probes: Vec::new(),
            sent: 0,
            received: 0,
            min_ms: None,
            avg_ms: None,
            max_ms: None,
            delta_ms: None,
            open_ms: None,
            sealed: false,
            error: None,
        }
    }

    /// Fills `sent`, `received`, min, mean and max from `probes`.
    pub(crate) fn summarise(&mut self) {
        let rtts: Vec<f64> = self.probes.iter().flatten().copied().collect();
        self.sent = u32::try_from(self.probes.len()).unwrap_or(u32::MAX);
        self.received = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
        self.min_ms = rtts.iter().copied().reduce(f64::min);
        self.max_ms = rtts.iter().copied().reduce(f64::max);
        self.avg_ms = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: ProbeMode, count: Option<u32>, interval_ms: Option<u64>) -> ProbeRequest {
        ProbeRequest { node: "c".into(), mode, count, interval_ms, stream: false }
    }

    #[test]
    fn counts_and_intervals_have_defaults_and_bounds() {
        assert_eq!(request(ProbeMode::Ping, None, None).checked(), Ok((5, Duration::from_secs(1))));
        assert_eq!(request(ProbeMode::Trace, None, None).checked(), Ok((3, Duration::from_millis(100))));
        assert!(request(ProbeMode::Ping, Some(0), None).checked().is_err());
        assert!(request(ProbeMode::Ping, Some(MAX_COUNT + 1), None).checked().is_err());
        assert!(request(ProbeMode::Ping, None, Some(MAX_INTERVAL_MS + 1)).checked().is_err());
        assert!(request(ProbeMode::Ping, None, Some(MIN_INTERVAL_MS - 1)).checked().is_err());
        let bad_id = ProbeRequest { node: "No Such".into(), ..request(ProbeMode::Ping, None, None) };
        assert!(bad_id.checked().is_err());
    }

    #[test]
    fn a_summary_counts_lost_probes_and_skips_them_in_the_figures() {
        let mut hop = HopReport::new("b");
        hop.probes = vec![Some(10.0), None, Some(30.0)];
        hop.summarise();
        assert_eq!((hop.sent, hop.received), (3, 2));
        assert_eq!((hop.min_ms, hop.avg_ms, hop.max_ms), (Some(10.0), Some(20.0), Some(30.0)));
        let mut none = HopReport::new("b");
        none.probes = vec![None];
        none.summarise();
        assert_eq!((none.received, none.avg_ms), (0, None));
    }

    #[test]
    fn events_name_themselves_and_read_back() {
        let event = ProbeEvent::Probe { hop: 1, node: "c".into(), seq: 2, rtt_ms: None };
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"event": "probe", "hop": 1, "node": "c", "seq": 2, "rtt_ms": null})
        );
        assert_eq!(serde_json::from_value::<ProbeEvent>(json).expect("back"), event);
        let hop = ProbeEvent::Hop { hop: 0, report: HopReport::new("b") };
        let back: ProbeEvent =
            serde_json::from_str(&serde_json::to_string(&hop).expect("json")).expect("back");
        assert_eq!(back, hop);
    }
}
