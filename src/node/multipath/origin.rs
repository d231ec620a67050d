//! The origin's side of a multipath flow: the primary subflow on the first usable path,
//! joins on the other paths once the exit holds the flow, and replacements after losses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::RecvStream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::core::multipath::{MAX_SUBFLOW_INDEX, MAX_SUBFLOWS};
use crate::core::route::{first_hop, path_via, pick_relays};
use crate::core::wire::{FlowHeader, Subflow};
use crate::node::link::send::LinkSend;
use crate::node::multipath::engine::{self, Arrival, EngineParams};
use crate::node::multipath::{NewSubflow, PATH_LOST};
use crate::node::observe::stats::RouteCounters;
use crate::node::splice::FlowEnd;
use crate::node::splice::sealing::FlowSeal;
use crate::node::{FlowGuard, Shared, flow::seal, splice::tcp_io};

/// How long a path that failed in a flow is left alone before the flow tries it again.
const PATH_RETRY: Duration = Duration::from_secs(10);

/// Opens subflows for one flow.
pub(crate) struct Opener {
    shared: Arc<Shared>,
    header: FlowHeader,
    exit: String,
    token: u64,
    candidates: Vec<Vec<String>>,
    /// Paths that failed or were lost in this flow, and when: not tried again for
    /// [`PATH_RETRY`] (a relay that just died is not worth a new stream at once).
    failed: Vec<(Vec<String>, Instant)>,
    pending: Vec<Vec<String>>,
    next_index: u8,
    max: usize,
    joined_once: bool,
    tx: mpsc::Sender<Arrival>,
}

impl Opener {
    /// Subflows being opened.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// An open on `path` finished (`failed`: not tried again for a while).
    pub(crate) fn settled(&mut self, path: &[String], failed: bool) {
        if let Some(i) = self.pending.iter().position(|p| p == path) {
            self.pending.swap_remove(i);
        }
        if failed {
            self.path_failed(path);
        }
    }

    /// A subflow on `path` was lost or refused: not tried again for a while.
    pub(crate) fn path_failed(&mut self, path: &[String]) {
        self.failed.retain(|(p, _)| p != path);
        self.failed.push((path.to_vec(), Instant::now()));
    }

    /// Opens subflows on candidate paths not in use, not failed and with a usable first
    /// link, up to the subflow limit. The first call (after the primary opened) opens
    /// joins; later calls open replacements.
    pub(crate) fn open_more(&mut self, in_use: &[Vec<String>]) {
        let replacement = self.joined_once;
        self.joined_once = true;
        for relays in self.candidates.clone() {
            if in_use.len() + self.pending.len() >= self.max || self.next_index == MAX_SUBFLOW_INDEX {
                break;
            }
            let failed_lately = self.failed.iter().any(|(p, at)| *p == relays && at.elapsed() < PATH_RETRY);
            let taken = in_use.contains(&relays) || self.pending.contains(&relays) || failed_lately;
            if taken || !self.shared.link_usable(first_hop(&self.exit, &relays)) {
                continue;
            }
            self.next_index += 1;
            self.pending.push(relays.clone());
            let mut header = self.header.clone();
            header.subflow = Some(Subflow { index: self.next_index, token: self.token });
            let (shared, exit, tx) = (self.shared.clone(), self.exit.clone(), self.tx.clone());
            tokio::spawn(open_join(shared, exit, header, relays, replacement, tx));
        }
    }
}

/// Opens one join subflow and hands it to the flow.
async fn open_join(
    shared: Arc<Shared>,
    exit: String,
    mut header: FlowHeader,
    relays: Vec<String>,
    replacement: bool,
    tx: mpsc::Sender<Arrival>,
) {
    let path = path_via(&exit, &relays);
    header.hops = path.hops;
    let index = header.subflow.map_or(0, |s| s.index);
    let started = Instant::now();
    let reply_within = shared.timeouts_for(header.hops.len() + 1).reply;
    let arrival = match seal::open_stream(&shared, &path.first_hop, &header, Vec::new()).await {
        Ok(streams) => {
            let sub = opened(index, relays, path.first_hop, streams, (started, reply_within), replacement);
            Arrival::Subflow(Box::new(sub))
        }
        Err(_) => Arrival::Failed(relays),
    };
    if let Err(mpsc::error::SendError(Arrival::Subflow(mut late))) = tx.send(arrival).await {
        // The flow ended meanwhile; a dropped stream would be finished, not reset.
        let _ = late.send.reset(PATH_LOST);
        let _ = late.recv.stop(PATH_LOST);
    }
}

/// A subflow this node opened on `relays` (to `first_hop`), waiting for its reply. The
/// primary (index 0) carries data at once, behind its header; a join waits for `Opened`.
fn opened(
    index: u8,
    relays: Vec<String>,
    first_hop: String,
    (send, recv, seal): (LinkSend, RecvStream, FlowSeal),
    awaits_reply: (Instant, Duration),
    replacement: bool,
) -> NewSubflow {
    NewSubflow {
        index,
        path: relays,
        first_hop: Some(first_hop),
        send,
        recv,
        seal,
        preamble: Bytes::new(),
        leading: Bytes::new(),
        awaits_reply: Some(awaits_reply),
        ready: index == 0,
        replacement,
        guard: None,
    }
}

/// Carries `tcp` as a multipath flow to `exit` over `candidates` (relay lists, best
/// first), with `header` naming the flow and its destination.
pub(crate) async fn open_flow(
    shared: &Arc<Shared>,
    guard: &FlowGuard,
    tcp: TcpStream,
    mut header: FlowHeader,
    exit: &str,
    candidates: Vec<Vec<String>>,
    route: Arc<RouteCounters>,
) -> FlowEnd {
    let relays = pick_relays(exit, &candidates, |n| shared.link_usable(n));
    let path = path_via(exit, &relays);
    let token = rand::random::<u64>();
    let template = header.clone();
    header.hops = path.hops;
    header.subflow = Some(Subflow { index: 0, token });
    let nodes_ahead = header.hops.len() + 1;
    let started = Instant::now();
    let (send, recv, seal) = match seal::open_stream(shared, &path.first_hop, &header, Vec::new()).await {
        Ok(stream) => stream,
        Err(e) => {
            tcp_io::reset_tcp(tcp);
            return FlowEnd::Refused {
                reason: e.reason,
                hop: e.hop.unwrap_or_else(|| shared.id().to_string()),
                detail: e.detail,
            };
        }
    };
    let max = shared.config.limits.max_subflows.min(MAX_SUBFLOWS);
    let (tx, rx) = mpsc::channel(MAX_SUBFLOWS);
    let opener = Opener {
        shared: shared.clone(),
        header: template,
        exit: exit.to_string(),
        token,
        candidates,
        failed: Vec::new(),
        pending: Vec::new(),
        next_index: 0,
        max,
        joined_once: false,
        tx,
    };
    let awaits_reply = (started, shared.timeouts_for(nodes_ahead).reply);
    let first = opened(0, relays, path.first_hop, (send, recv, seal), awaits_reply, false);
    let health = shared.clone();
    let params = EngineParams {
        env: shared.flow_env(shared.timeouts_for(nodes_ahead), Some(route), guard),
        grace: shared.config.limits.connect_timeout,
        link_usable: Box::new(move |peer| health.link_usable(peer)),
    };
    engine::run(tcp, first, rx, Some(opener), params).await
}
