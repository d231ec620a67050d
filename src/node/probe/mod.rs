//! `proxy ping` and `proxy trace`, run by a node for its admin API (`POST /api/probe`):
//! the path a new flow to a node takes now ([`path`]), and real probe flows along it
//! ([`flow`]): for a ping, one flow over the whole path; for a trace, one flow to each hop
//! in turn (the path cut after that hop), stopping at the first hop that does not answer.
//!
//! Relays carry probe flows like any other; the last node of each answers it itself
//! (`flow::echo`). At most [`MAX_RUNS`] pings and traces run at once on one node.

mod flow;
mod path;
mod report;

pub use report::{
    HopReport, MAX_COUNT, MAX_INTERVAL_MS, MIN_INTERVAL_MS, ProbeEvent, ProbeMode, ProbeReport, ProbeRequest,
};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::node::Shared;

/// Pings and traces one node runs at once.
pub(crate) const MAX_RUNS: usize = 4;

/// Why a ping or trace did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The request is malformed or out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// The node asked for is this node.
    #[error("`{0}` is this node")]
    Itself(String),
    /// No route exits at the node, it is not a peer, and no path names it.
    #[error("unknown node `{0}`: no route exits there and it is not a peer of this node")]
    UnknownNode(String),
    /// The node is only a relay on some route's paths: no route exits there and it is not
    /// a peer, so no flow of this node ends there.
    #[error("no path to `{0}`: it is only a relay on route `{1}`; no route exits there and it is not a peer")]
    NoPath(String, String),
    /// [`MAX_RUNS`] pings and traces are running already.
    #[error("{MAX_RUNS} pings or traces are running on this node already; try again shortly")]
    Busy,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Draining,
}

impl ProbeError {
    /// A short name of the error for the admin API's JSON (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Itself(_) => "itself",
            Self::UnknownNode(_) => "unknown_node",
            Self::NoPath(..) => "no_path",
            Self::Busy => "busy",
            Self::Draining => "draining",
        }
    }

    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) | Self::Itself(_) => 400,
            Self::UnknownNode(_) | Self::NoPath(..) => 404,
            Self::Busy => 429,
            Self::Draining => 503,
        }
    }
}

/// Where a streamed run sends its steps as they happen; nowhere when only the report is
/// wanted. Unbounded on purpose: a run sends at most `MAX_COUNT + 2` events per hop plus
/// two, all small, and must never wait on a slow reader between probes (that would skew
/// the round trips it measures).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Option<mpsc::UnboundedSender<ProbeEvent>>);

impl Progress {
    /// Progress sent to a new channel, and its receiving end.
    pub(crate) fn channel() -> (Progress, mpsc::UnboundedReceiver<ProbeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    /// Sends the event `make` builds, if anyone listens.
    pub(crate) fn send(&self, make: impl FnOnce() -> ProbeEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(make());
        }
    }

    /// Returns once the receiving end is gone (never, for progress sent nowhere).
    pub(crate) async fn reader_gone(&self) {
        match &self.0 {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }
}

/// A ping or trace that may run: its path is chosen and it holds one of [`MAX_RUNS`].
pub(crate) struct Planned {
    shared: Arc<Shared>,
    node: String,
    mode: ProbeMode,
    count: u32,
    interval: Duration,
    chosen: path::Chosen,
    _run: OwnedSemaphorePermit,
}

/// Checks a request and chooses its path, without sending anything yet: what is wrong with
/// it is known before any answer starts.
pub(crate) fn plan(shared: Arc<Shared>, request: &ProbeRequest) -> Result<Planned, ProbeError> {
    let (count, interval) = request.checked().map_err(ProbeError::Invalid)?;
    if *shared.draining.borrow() {
        return Err(ProbeError::Draining);
    }
    let run = shared.probe_runs.clone().try_acquire_owned().map_err(|_| ProbeError::Busy)?;
    let node = request.node.clone();
    let chosen = path::to(&shared, &node).map_err(|e| match e {
        path::NoPath::Itself => ProbeError::Itself(node.clone()),
        path::NoPath::Unknown => ProbeError::UnknownNode(node.clone()),
        path::NoPath::RelayOnly(route) => ProbeError::NoPath(node.clone(), route),
    })?;
    Ok(Planned { shared, node, mode: request.mode, count, interval, chosen, _run: run })
}

impl Planned {
    /// Sends the probes, telling `progress` each step, and reports.
    pub(crate) async fn run(self, progress: Progress) -> ProbeReport {
        let Planned { shared, node, mode, count, interval, chosen, _run } = self;
        progress.send(|| ProbeEvent::Path {
            node: node.clone(),
            mode,
            route: chosen.route.clone(),
            path: chosen.path.clone(),
        });
        let ends: Vec<usize> = match mode {
            ProbeMode::Ping => vec![chosen.path.len()],
            ProbeMode::Trace => (1..=chosen.path.len()).collect(),
        };
        let mut hops: Vec<HopReport> = Vec::new();
        for end in ends {
            let mut hop = flow::measure(&shared, &chosen.path[..end], count, interval, &progress).await;
            if mode == ProbeMode::Trace {
                let before = hops.last().map_or(Some(0.0), |h| h.avg_ms);
                hop.delta_ms = hop.avg_ms.zip(before).map(|(now, then)| now - then);
            }
            progress.send(|| ProbeEvent::Hop { hop: end - 1, report: hop.clone() });
            let answered = hop.received > 0;
            hops.push(hop);
            // A trace stops at the first hop that answers nothing.
            if !answered {
                break;
            }
        }
        let reached = hops.last().is_some_and(|h| h.node == node && h.received > 0);
        let report = ProbeReport { node, mode, route: chosen.route, path: chosen.path, hops, reached };
        progress.send(|| ProbeEvent::Report(report.clone()));
        report
    }
}

/// Runs a ping or a trace from this node.
pub(crate) async fn run(shared: Arc<Shared>, request: &ProbeRequest) -> Result<ProbeReport, ProbeError> {
    Ok(plan(shared, request)?.run(Progress::default()).await)
}
