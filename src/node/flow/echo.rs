//! The exit of a probe flow (`Destination::Echo`, sent by `proxy ping` and `proxy trace`):
//! this node answers `Opened` itself and echoes every byte the origin sends, sealed when
//! the flow is sealed. Nothing is dialed and the exit policy is not involved: an echo
//! reaches no one but this node.
//!
//! A member could open probe flows just to make this node work, so each is held small:
//! at most [`MAX_ECHO_FLOWS`] at once on this node and [`MAX_ECHO_FLOWS_PER_ORIGIN`] from
//! one origin (more are refused `overloaded`), at
//! most [`ECHO_MAX_BYTES`] received per flow and at most [`ECHO_LIFETIME`] per flow (past
//! either, the flow is reset). Every echo is no larger than what came in, so a probe
//! never amplifies traffic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quinn::RecvStream;
use tracing::{debug, info};

use crate::core::wire::RefuseReason;
use crate::node::flow::exit::send_opened;
use crate::node::flow::inbound::refuse_exit;
use crate::node::flow::seal::ExitSeal;
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::{FlowEnd, read_error, write_error};
use crate::node::{FlowGuard, Shared};

/// Probe flows this node answers at once.
pub(crate) const MAX_ECHO_FLOWS: usize = 16;
/// Probe flows one origin may hold at once, so one member cannot take every slot and
/// keep everyone else's pings out.
pub(crate) const MAX_ECHO_FLOWS_PER_ORIGIN: usize = 4;

/// The probe flows this node answers now, in all and per origin.
#[derive(Debug, Default)]
pub(crate) struct EchoSlots {
    held: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One probe flow's slot, given back when dropped.
pub(crate) struct EchoSlot {
    slots: Arc<EchoSlots>,
    origin: String,
}

impl EchoSlots {
    /// A slot for a probe flow from `origin`, or `None` when the node or that origin is at
    /// its limit.
    pub(crate) fn take(self: &Arc<Self>, origin: &str) -> Option<EchoSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = held.values().sum();
        let mine = held.get(origin).copied().unwrap_or(0);
        if total >= MAX_ECHO_FLOWS || mine >= MAX_ECHO_FLOWS_PER_ORIGIN {
            return None;
        }
        held.insert(origin.to_string(), mine + 1);
        Some(EchoSlot { slots: self.clone(), origin: origin.to_string() })
    }
}

impl Drop for EchoSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.origin) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.origin);
            }
        }
    }
}
/// Bytes one probe flow may send this node, as they come off the stream (records and
/// all): 50 probes of 16 bytes, sealed, take under 2 KiB.
pub(crate) const ECHO_MAX_BYTES: usize = 8 * 1024;
/// How long one probe flow may last.
pub(crate) const ECHO_LIFETIME: Duration = Duration::from_secs(60);
/// Largest read from the stream at once.
const READ_CHUNK: usize = 1024;

/// Answers one probe flow that exits here.
pub(crate) async fn answer(
    shared: Arc<Shared>,
    guard: FlowGuard,
    origin: &str,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    let Some(_slot) = shared.echo_slots.take(origin) else {
        let detail = format!(
            "probe flows are being answered already ({MAX_ECHO_FLOWS} at most, {MAX_ECHO_FLOWS_PER_ORIGIN} per origin)"
        );
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::Overloaded, &detail).await;
        return;
    };
    let seal = match send_opened(&shared, &mut send, seal).await {
        Ok(seal) => seal,
        Err((code, end)) => {
            let _ = send.reset(code);
            let _ = recv.stop(code);
            guard.finish(&end);
            return;
        }
    };
    shared.counters.probes_answered.fetch_add(1, Ordering::Relaxed);
    let mut force = shared.force.clone();
    let end = tokio::select! {
        r = echo(&mut send, &mut recv, seal, rest) => r.err().unwrap_or(FlowEnd::Completed),
        _ = tokio::time::sleep(ECHO_LIFETIME) => FlowEnd::TimedOut("probe lifetime"),
        _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
    };
    match &end {
        FlowEnd::Completed => debug!("probe flow answered"),
        other => {
            info!(end = ?other, "probe flow closed");
            let _ = send.reset(other.reset_code());
            let _ = recv.stop(other.reset_code());
        }
    }
    guard.finish(&end);
}

/// Echoes what arrives until the origin's clean end, then ends this direction the same
/// way; an error past [`ECHO_MAX_BYTES`] or on a broken stream.
async fn echo(
    send: &mut LinkSend,
    recv: &mut RecvStream,
    seal: FlowSeal,
    rest: Bytes,
) -> Result<(), FlowEnd> {
    let (up, mut down) = seal.split();
    let mut received = 0usize;
    let mut plain = Vec::new();
    let mut next = Some(rest);
    loop {
        let chunk = match next.take() {
            Some(bytes) => bytes,
            None => match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => {
                    down.end()?;
                    if let Some(fin) = up.fin()? {
                        send.write_data(fin).await.map_err(write_error)?;
                    }
                    return send.finish().map_err(|_| FlowEnd::PeerReset(0));
                }
                Err(e) => return Err(read_error(e)),
            },
        };
        received += chunk.len();
        if received > ECHO_MAX_BYTES {
            return Err(FlowEnd::Protocol(format!("probe flow sent over {ECHO_MAX_BYTES} bytes")));
        }
        down.open(chunk, &mut plain)?;
        for data in plain.drain(..) {
            send.write_data(up.seal(data)?).await.map_err(write_error)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_origin_holds_at_most_its_share_and_slots_come_back() {
        let slots = Arc::new(EchoSlots::default());
        let a: Vec<EchoSlot> = (0..MAX_ECHO_FLOWS_PER_ORIGIN).filter_map(|_| slots.take("a")).collect();
        assert_eq!(a.len(), MAX_ECHO_FLOWS_PER_ORIGIN);
        assert!(slots.take("a").is_none(), "a is at its share");
        let others: Vec<EchoSlot> =
            (0..MAX_ECHO_FLOWS).filter_map(|i| slots.take(&format!("n{}", i % 4))).collect();
        assert_eq!(others.len(), MAX_ECHO_FLOWS - MAX_ECHO_FLOWS_PER_ORIGIN, "the node's total holds");
        assert!(slots.take("z").is_none());
        drop(a);
        assert!(slots.take("a").is_some() && slots.take("z").is_some(), "dropped slots come back");
    }
}
