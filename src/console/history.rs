//! An hour of history behind the console's charts: per link its round-trip time, loss and
//! throughput, per node its flows and bytes per second, one point per sample interval.
//! Bounded: at most [`POINTS`] per series, and series not sampled for [`POINTS`]
//! intervals are dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::model::ConsoleState;

/// Time between two points.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Points kept per series: one hour.
pub const POINTS: usize = 360;
/// Series kept per kind (links, nodes) at most: the first ones sampled; a mesh with more
/// links than this shows history for these only (each series takes about 20 KiB).
pub const MAX_SERIES: usize = 2000;

/// One sample of every series, as the live stream's `sample` message carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub t_ms: u64,
    /// Per link.
    pub links: Vec<LinkPoint>,
    /// Per node.
    pub nodes: Vec<NodePoint>,
}

/// A link's values at one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkPoint {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Round-trip time (`None` when down).
    pub rtt_ms: Option<f64>,
    /// Loss ratio.
    pub loss: Option<f64>,
    /// Bytes per second sent over it.
    pub throughput_bytes_per_sec: Option<f64>,
}

/// A node's values at one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePoint {
    /// Node id.
    pub id: String,
    /// Flows (as its row counts them).
    pub flows: Option<f64>,
    /// Bytes per second.
    pub bytes_per_sec: Option<f64>,
}

impl Sample {
    /// The sample `state` makes.
    pub fn of(state: &ConsoleState) -> Sample {
        Sample {
            t_ms: state.generated_at_ms,
            links: state
                .links
                .iter()
                .map(|l| LinkPoint {
                    a: l.a.clone(),
                    b: l.b.clone(),
                    rtt_ms: l.rtt_ms.filter(|_| l.state == "up"),
                    loss: l.loss,
                    throughput_bytes_per_sec: l.throughput_bytes_per_sec,
                })
                .collect(),
            nodes: state
                .nodes
                .iter()
                .map(|n| NodePoint { id: n.id.clone(), flows: n.flows, bytes_per_sec: n.bytes_per_sec })
                .collect(),
        }
    }
}

type LinkValues = (u64, Option<f64>, Option<f64>, Option<f64>);
type NodeValues = (u64, Option<f64>, Option<f64>);

/// The kept series.
#[derive(Debug, Default)]
pub struct History {
    links: BTreeMap<(String, String), VecDeque<LinkValues>>,
    nodes: BTreeMap<String, VecDeque<NodeValues>>,
}

/// `GET /api/console/history`.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    /// Seconds between points.
    pub interval_secs: u64,
    /// Per link: `[t_ms, rtt_ms, loss, throughput]`, oldest first.
    pub links: Vec<LinkSeries>,
    /// Per node: `[t_ms, flows, bytes_per_sec]`, oldest first.
    pub nodes: Vec<NodeSeries>,
}

/// One link's series.
#[derive(Debug, Serialize)]
pub struct LinkSeries {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// The points.
    pub points: Vec<LinkValues>,
}

/// One node's series.
#[derive(Debug, Serialize)]
pub struct NodeSeries {
    /// Node id.
    pub id: String,
    /// The points.
    pub points: Vec<NodeValues>,
}

/// The series of `key`, made if there is room for one more.
fn series_for<K: Ord, T>(all: &mut BTreeMap<K, VecDeque<T>>, key: K) -> Option<&mut VecDeque<T>> {
    if all.len() >= MAX_SERIES && !all.contains_key(&key) {
        return None;
    }
    Some(all.entry(key).or_default())
}

fn push<T>(series: &mut VecDeque<T>, value: T) {
    if series.len() == POINTS {
        series.pop_front();
    }
    series.push_back(value);
}

impl History {
    /// Appends `sample`, and drops series whose newest point is over an hour older.
    pub fn record(&mut self, sample: &Sample) {
        let t = sample.t_ms;
        for l in &sample.links {
            let key = (l.a.clone(), l.b.clone());
            if let Some(series) = series_for(&mut self.links, key) {
                push(series, (t, l.rtt_ms, l.loss, l.throughput_bytes_per_sec));
            }
        }
        for n in &sample.nodes {
            if let Some(series) = series_for(&mut self.nodes, n.id.clone()) {
                push(series, (t, n.flows, n.bytes_per_sec));
            }
        }
        let horizon = t.saturating_sub(INTERVAL.as_millis() as u64 * POINTS as u64);
        self.links.retain(|_, s| s.back().is_some_and(|p| p.0 > horizon));
        self.nodes.retain(|_, s| s.back().is_some_and(|p| p.0 > horizon));
    }

    /// Everything kept.
    pub fn view(&self) -> HistoryView {
        HistoryView {
            interval_secs: INTERVAL.as_secs(),
            links: self
                .links
                .iter()
                .map(|((a, b), s)| LinkSeries {
                    a: a.clone(),
                    b: b.clone(),
                    points: s.iter().copied().collect(),
                })
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|(id, s)| NodeSeries { id: id.clone(), points: s.iter().copied().collect() })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, link: &str) -> Sample {
        Sample {
            t_ms,
            links: vec![LinkPoint {
                a: link.into(),
                b: "z".into(),
                rtt_ms: Some(1.0),
                loss: None,
                throughput_bytes_per_sec: None,
            }],
            nodes: vec![NodePoint { id: link.into(), flows: Some(1.0), bytes_per_sec: None }],
        }
    }

    #[test]
    fn series_keep_an_hour_and_vanished_ones_are_dropped() {
        let mut h = History::default();
        let step = INTERVAL.as_millis() as u64;
        for i in 0..POINTS as u64 + 10 {
            h.record(&sample(i * step, "a"));
        }
        assert_eq!(h.view().links[0].points.len(), POINTS);
        h.record(&sample((POINTS as u64 + 10) * step, "b"));
        assert_eq!(h.view().links.len(), 2, "a was sampled within the hour");
        h.record(&sample((2 * POINTS as u64 + 20) * step, "b"));
        let view = h.view();
        assert_eq!((view.links.len(), view.nodes.len()), (1, 1), "a is gone");
        assert_eq!(view.links[0].a, "b");
    }

    #[test]
    fn the_number_of_series_is_capped() {
        let mut h = History::default();
        for i in 0..MAX_SERIES + 10 {
            h.record(&sample(1, &format!("n{i}")));
        }
        let view = h.view();
        assert_eq!((view.links.len(), view.nodes.len()), (MAX_SERIES, MAX_SERIES));
    }
}
