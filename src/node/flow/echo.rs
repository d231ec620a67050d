//! The exit of a probe flow (`Destination::Echo`, sent by `proxy ping` and `proxy trace`):
//! this node answers `Opened` itself and echoes every byte the origin sends, sealed when
//! the flow is sealed. Nothing is dialed and the exit policy is not involved: an echo
//! reaches no one but this node.
//!
//! A member could open probe flows just to make this node work, so each is held small:
//! at most [`MAX_ECHO_FLOWS`] at once on this node, shared fairly between origins (see
//! [`EchoSlots`]), and [`MAX_ECHO_FLOWS_PER_ORIGIN`] from one origin (more are refused
//! `overloaded`); at most [`ECHO_MAX_BYTES`] received per flow, [`ECHO_LIFETIME`] per flow
//! and [`ECHO_IDLE`] without a byte (past any, the flow is reset). Every echo is no larger
//! than what came in, so a probe never amplifies traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quinn::RecvStream;
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::core::wire::RefuseReason;
use crate::node::flow::exit::send_opened_or_reset;
use crate::node::flow::inbound::refuse_exit;
use crate::node::flow::seal::ExitSeal;
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::{FlowEnd, read_error, write_error};
use crate::node::{FlowGuard, Shared};

/// Probe flows this node answers at once.
pub(crate) const MAX_ECHO_FLOWS: usize = 16;
/// Probe flows one origin may hold at once.
pub(crate) const MAX_ECHO_FLOWS_PER_ORIGIN: usize = 4;

/// The probe flows this node answers now, by who is accountable for them.
///
/// Shared max-min fair: when every slot is taken, a newcomer takes the youngest slot of
/// the origin holding the most, as long as that origin then still holds at least as many
/// as the newcomer. So colluding members that fill the node can delay a ping but never
/// keep one out: an origin that asks while `n` origins hold slots gets one as long as it
/// holds fewer than `min(MAX_ECHO_FLOWS_PER_ORIGIN, MAX_ECHO_FLOWS / n)`. The youngest
/// goes because it has done the least: an origin that keeps coming back to evict costs
/// its victims a run just started, not one nearly done.
#[derive(Debug, Default)]
pub(crate) struct EchoSlots {
    held: std::sync::Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    /// Per origin, its slots oldest first: an id and the signal that takes it back.
    by_origin: HashMap<String, VecDeque<(u64, Arc<Notify>)>>,
}

impl Held {
    fn total(&self) -> usize {
        self.by_origin.values().map(VecDeque::len).sum()
    }

    fn count(&self, origin: &str) -> usize {
        self.by_origin.get(origin).map_or(0, VecDeque::len)
    }

    /// Takes back the youngest slot of the origin holding the most, if that origin still
    /// holds more than `than` after giving it up.
    fn evict_from_largest(&mut self, than: usize) -> bool {
        let Some((origin, held)) = self.by_origin.iter_mut().max_by_key(|(_, held)| held.len()) else {
            return false;
        };
        if held.len() <= than + 1 {
            return false;
        }
        if let Some((_, evicted)) = held.pop_back() {
            // A stored permit: the flow sees it even if it is not waiting yet.
            evicted.notify_one();
        }
        debug!(origin = %crate::logging::log_escape(origin), "probe flow slot taken back for a newcomer");
        true
    }

    fn remove(&mut self, origin: &str, id: u64) {
        if let Some(held) = self.by_origin.get_mut(origin) {
            held.retain(|(slot, _)| *slot != id);
            if held.is_empty() {
                self.by_origin.remove(origin);
            }
        }
    }
}

/// One probe flow's slot, given back when dropped.
pub(crate) struct EchoSlot {
    slots: Arc<EchoSlots>,
    origin: String,
    id: u64,
    evicted: Arc<Notify>,
}

impl EchoSlots {
    /// A slot for a probe flow from `origin`, or `None` when that origin is at its limit,
    /// or the node is full and no origin holds more than `origin` would.
    pub(crate) fn take(self: &Arc<Self>, origin: &str) -> Option<EchoSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.count(origin);
        if mine >= MAX_ECHO_FLOWS_PER_ORIGIN {
            return None;
        }
        if held.total() >= MAX_ECHO_FLOWS && !held.evict_from_largest(mine) {
            return None;
        }
        held.next_id += 1;
        let id = held.next_id;
        let evicted = Arc::new(Notify::new());
        held.by_origin.entry(origin.to_string()).or_default().push_back((id, evicted.clone()));
        Some(EchoSlot { slots: self.clone(), origin: origin.to_string(), id, evicted })
    }
}

impl EchoSlot {
    /// Returns when the slot was taken back for another origin's probe flow.
    pub(crate) async fn taken_back(&self) {
        self.evicted.notified().await
    }
}

impl Drop for EchoSlot {
    fn drop(&mut self) {
        self.slots.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.origin, self.id);
    }
}

/// Bytes one probe flow may send this node, as they come off the stream (records and
/// all): 50 probes of 16 bytes, sealed, take under 2 KiB.
pub(crate) const ECHO_MAX_BYTES: usize = 8 * 1024;
/// How long one probe flow may last.
pub(crate) const ECHO_LIFETIME: Duration = Duration::from_secs(60);
/// How long one probe flow may send nothing: an origin sends its next probe within the
/// interval (1 s at most) or its 2 s wait for an echo, and a write may take 2 s more, so
/// a flow this quiet holds a slot for nothing.
pub(crate) const ECHO_IDLE: Duration = Duration::from_secs(10);
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
    let Some(slot) = shared.echo_slots.take(origin) else {
        let detail = format!(
            "probe flows are being answered already ({MAX_ECHO_FLOWS} at most, {MAX_ECHO_FLOWS_PER_ORIGIN} per origin)"
        );
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::Overloaded, &detail).await;
        return;
    };
    let seal = match send_opened_or_reset(&shared, (&mut send, &mut recv), seal).await {
        Ok(seal) => seal,
        Err(end) => return guard.finish(&end),
    };
    shared.counters.probes_answered.fetch_add(1, Ordering::Relaxed);
    let mut force = shared.force.clone();
    let end = tokio::select! {
        r = echo(&mut send, &mut recv, seal, rest) => r.err().unwrap_or(FlowEnd::Completed),
        _ = tokio::time::sleep(ECHO_LIFETIME) => FlowEnd::TimedOut("probe lifetime"),
        () = slot.taken_back() => FlowEnd::TimedOut("probe slot taken back for another origin"),
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
            None => match tokio::time::timeout(ECHO_IDLE, recv.read_chunk(READ_CHUNK, true)).await {
                Err(_) => return Err(FlowEnd::TimedOut("probe idle")),
                Ok(Ok(Some(chunk))) => chunk.bytes,
                Ok(Ok(None)) => {
                    down.end()?;
                    if let Some(fin) = up.fin()? {
                        send.write_data(fin).await.map_err(write_error)?;
                    }
                    return send.finish().map_err(|_| FlowEnd::PeerReset(0));
                }
                Ok(Err(e)) => return Err(read_error(e)),
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
        drop(a);
        assert_eq!(slots.held.lock().unwrap().total(), 0, "dropped slots come back");
        assert!(slots.take("a").is_some());
    }

    /// Whether `slot` was taken back: a stored permit makes the wait ready at once.
    async fn taken_back(slot: &EchoSlot) -> bool {
        tokio::time::timeout(Duration::ZERO, slot.taken_back()).await.is_ok()
    }

    #[tokio::test]
    async fn colluders_that_fill_the_node_give_way_to_a_newcomer_down_to_a_fair_share() {
        let slots = Arc::new(EchoSlots::default());
        let colluders: Vec<EchoSlot> = (0..MAX_ECHO_FLOWS)
            .filter_map(|i| slots.take(&format!("c{}", i / MAX_ECHO_FLOWS_PER_ORIGIN)))
            .collect();
        assert_eq!(colluders.len(), MAX_ECHO_FLOWS, "four colluders fill the node");
        let newcomer: Vec<EchoSlot> = std::iter::from_fn(|| slots.take("n")).take(8).collect();
        // Each slot comes from an origin holding 4, and stops when the largest holds 4
        // and the newcomer would: 4, 3, 3, 3 and 3.
        assert_eq!(newcomer.len(), 3, "the newcomer takes slots down to a fair share");
        let mut evicted = Vec::new();
        for slot in &colluders {
            if taken_back(slot).await {
                evicted.push(slot);
            }
        }
        assert_eq!(evicted.len(), 3, "one slot taken back per slot given");
        for slot in &evicted {
            let youngest = colluders.iter().filter(|s| s.origin == slot.origin).map(|s| s.id).max();
            assert_eq!(Some(slot.id), youngest, "an origin gives up its youngest slot");
        }
        let origins: std::collections::HashSet<&str> = evicted.iter().map(|s| s.origin.as_str()).collect();
        assert_eq!(origins.len(), 3, "from three origins, never below another's share");
        assert_eq!(slots.held.lock().unwrap().total(), MAX_ECHO_FLOWS, "the total holds");
        // A second newcomer still gets in, from the one origin left at 4.
        let late = [slots.take("m"), slots.take("m")];
        assert!(late.iter().all(Option::is_some), "from the origin at 4, then one at 3");
        assert!(slots.take("m").is_none(), "2 against at most 3: no more is taken");
        drop((newcomer, late, colluders));
        assert_eq!(slots.held.lock().unwrap().total(), 0, "dropped slots come back");
    }
}
