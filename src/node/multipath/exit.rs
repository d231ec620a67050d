//! The exit's side of a multipath flow: the primary subflow dials the target and
//! registers the flow under `(origin, flow id)`; joins find it there, present its token,
//! and are handed to its engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quinn::RecvStream;
use tokio::sync::mpsc;

use crate::core::multipath::MAX_SUBFLOWS;
use crate::core::wire::{FlowHeader, RefuseReason, Subflow};
use crate::logging::log_escape;
use crate::node::flow::inbound::{refuse, refuse_exit};
use crate::node::flow::seal::ExitSeal;
use crate::node::link::send::LinkSend;
use crate::node::multipath::NewSubflow;
use crate::node::multipath::PATH_LOST;
use crate::node::multipath::engine::{self, Arrival, EngineParams};
use crate::node::{FlowGuard, Shared, flow::exit, splice::tcp_io};

/// Origin, flow id, and whether the flow is sealed: a sealed flow's origin is
/// authenticated, an unsealed one's only claimed, so the two never share a key (an
/// unsealed header claiming another node's id cannot open or join its sealed flow).
type Key = (String, u64, bool);

/// The multipath flows exiting at this node, by origin and flow id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<Key, (u64, mpsc::Sender<Arrival>)>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u64, mpsc::Sender<Arrival>)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a flow; false if one with the same key is already here.
    fn insert(&self, key: Key, token: u64, tx: mpsc::Sender<Arrival>) -> bool {
        let mut map = self.lock();
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, (token, tx));
        true
    }

    /// Whether a flow with this key is registered.
    fn holds(&self, key: &Key) -> bool {
        self.lock().contains_key(key)
    }

    /// The way into a registered flow, if `token` is its token.
    fn joiner(&self, key: &Key, token: u64) -> Option<mpsc::Sender<Arrival>> {
        self.lock().get(key).filter(|(t, _)| *t == token).map(|(_, tx)| tx.clone())
    }
}

/// Removes a flow from the registry when it ends, however it ends.
struct Registered<'a> {
    sessions: &'a Sessions,
    key: Key,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.key);
    }
}

/// A subflow stream whose header names `target`: opens the flow (index 0) or joins it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn subflow_arrived(
    shared: Arc<Shared>,
    guard: FlowGuard,
    header: FlowHeader,
    subflow: Subflow,
    target: &str,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    // Keyed by the origin as the seal authenticated it (sealed flows), so no member can
    // open or join a flow under another node's id.
    let key = (header.origin.clone(), header.flow_id, seal.is_some());
    if !subflow.opens() {
        join(&shared, guard, key, subflow, rest, (send, recv), seal).await;
        return;
    }
    if shared.sessions.holds(&key) {
        let detail = format!("flow {} from `{}` is already open here", key.1, log_escape(&key.0));
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::BadHeader, &detail).await;
        return;
    }
    let who = ExitSeal::requester(seal.as_ref(), &header.origin);
    let tcp = match exit::dial_target(&shared, target, &who).await {
        Ok(tcp) => tcp,
        Err((reason, detail)) => {
            tracing::info!(target = %log_escape(target), reason = reason.as_str(), %detail, "refused flow");
            refuse_exit(&shared, (&mut send, &mut recv), seal, reason, &detail).await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel(MAX_SUBFLOWS);
    if !shared.sessions.insert(key.clone(), subflow.token, tx) {
        // Another primary with the same key won the race while this one dialed.
        tcp_io::reset_tcp(tcp);
        let detail = format!("flow {} from `{}` is already open here", key.1, log_escape(&key.0));
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::BadHeader, &detail).await;
        return;
    }
    let _registered = Registered { sessions: &shared.sessions, key };
    shared.counters.flows_exited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(first) = arrived(subflow.index, (send, recv), rest, None, seal) else {
        tcp_io::reset_tcp(tcp);
        return;
    };
    let params = EngineParams {
        env: shared.flow_env(shared.timeouts, None, &guard),
        // The origin needs a stall timeout to notice the loss and a connect timeout to
        // open a replacement.
        grace: shared.config.limits.connect_timeout.saturating_mul(2),
        link_usable: Box::new(|_| true),
    };
    let end = engine::run(tcp, first, rx, None, params).await;
    guard.finish(&end);
}

/// A joining subflow: handed to its flow's engine, or refused.
async fn join(
    shared: &Shared,
    guard: FlowGuard,
    key: Key,
    subflow: Subflow,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    let Some(tx) = shared.sessions.joiner(&key, subflow.token) else {
        let detail = format!("no multipath flow {} from `{}` to join", key.1, log_escape(&key.0));
        refuse_exit(shared, (&mut send, &mut recv), seal, RefuseReason::NoRoute, &detail).await;
        return;
    };
    let Some(new) = arrived(subflow.index, (send, recv), rest, Some(guard), seal) else { return };
    if let Err(e) = tx.try_send(Arrival::Subflow(Box::new(new))) {
        let (reason, detail) = match e {
            mpsc::error::TrySendError::Full(_) => {
                (RefuseReason::Overloaded, "too many subflows joining at once")
            }
            mpsc::error::TrySendError::Closed(_) => (RefuseReason::NoRoute, "the flow ended"),
        };
        if let Arrival::Subflow(mut s) = e.into_inner() {
            refuse(shared, &mut s.send, &mut s.recv, reason, detail).await;
        }
    }
}

/// A subflow as the exit's engine takes it: it answers `Opened` first (sealed on a sealed
/// flow) and may carry data at once. `None` (the stream reset) when the reply cannot be
/// sealed.
fn arrived(
    index: u8,
    (mut send, mut recv): (LinkSend, RecvStream),
    rest: Bytes,
    guard: Option<FlowGuard>,
    seal: Option<ExitSeal>,
) -> Option<NewSubflow> {
    let Ok((preamble, seal)) = exit::opened_reply(seal) else {
        let _ = send.reset(PATH_LOST);
        let _ = recv.stop(PATH_LOST);
        return None;
    };
    Some(NewSubflow {
        index,
        path: Vec::new(),
        first_hop: None,
        send,
        recv,
        seal,
        preamble,
        leading: rest,
        awaits_reply: None,
        ready: true,
        replacement: false,
        guard,
    })
}
