//! The engine of one multipath flow, the same at the origin and at the exit: it moves
//! bytes between the TCP socket and the subflows, takes in new subflows, drops lost ones
//! (resending what they held), and decides how the flow ends.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use crate::core::multipath::MAX_SUBFLOWS;
use crate::core::subflow_frame::MAX_DATA;
use crate::node::flow::timer::Activity;
use crate::node::multipath::origin::Opener;
use crate::node::multipath::state::Sub;
use crate::node::multipath::subflow::{halves, read_loop, write_loop};
use crate::node::multipath::{Event, FLOW_RESET, FlowCore, NewSubflow, PATH_LOST};
use crate::node::observe::stats::Counters;
use crate::node::splice::{FlowEnd, FlowEnv};
use crate::node::{FlowGuard, splice::tcp_io};

/// Largest read from TCP at once (one `Data` frame).
const CHUNK: usize = 32 * 1024;
const _: () = assert!(CHUNK <= MAX_DATA);
/// How often subflows are checked for stalls.
const STALL_CHECK: Duration = Duration::from_millis(100);
/// After the flow completed, how long subflow streams may take to close cleanly.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// TCP writes gather up to this many chunks.
const GATHER: usize = 16;

/// What reaches a running flow from outside: a new subflow, or a failed attempt to open
/// one (origin side).
pub(crate) enum Arrival {
    /// A subflow to take in.
    Subflow(Box<NewSubflow>),
    /// Opening a subflow on this path failed.
    Failed(Vec<String>),
}

/// How the engine runs.
pub(crate) struct EngineParams {
    /// Timeouts, counters, shutdown signal, route.
    pub(crate) env: FlowEnv,
    /// How long the exit waits for a replacement when no subflow is left.
    pub(crate) grace: Duration,
    /// Whether a peer link can take new flows (origin side, for subflow health).
    pub(crate) link_usable: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// Runs a multipath flow over `tcp`, starting with `first`, until it completes or fails.
/// The origin passes an `opener` for more subflows; the exit gets them as `arrivals`.
pub(crate) async fn run(
    tcp: TcpStream,
    first: NewSubflow,
    mut arrivals: mpsc::Receiver<Arrival>,
    mut opener: Option<Opener>,
    params: EngineParams,
) -> FlowEnd {
    let EngineParams { env, grace, link_usable } = params;
    let counters = env.counters.clone();
    counters.multipath_flows.fetch_add(1, Ordering::Relaxed);
    tcp_io::arm_reset_on_drop(&tcp);
    let (core, mut events) = FlowCore::new(counters.clone(), env.bytes.clone(), env.budget.clone());
    let mut flow = Subflows { core: core.clone(), tasks: JoinSet::new(), slots: Vec::new() };
    flow.add(first);
    let activity = &core.activity;
    let mut force = env.force.clone();
    let end = {
        let up = tcp_to_subflows(&core, &tcp, activity, &counters);
        let down = subflows_to_tcp(&core, &tcp, activity, &counters);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done, mut peer_finished, mut primary_open) = (false, false, false, false);
        let mut pathless_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(STALL_CHECK);
        loop {
            if up_done && down_done && (peer_finished || core.lock().out_delivered()) {
                break FlowEnd::Completed;
            }
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(end) => break end,
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(end) => break end,
                },
                Some(event) = events.recv() => match event {
                    Event::Opened(slot, rtt) => {
                        primary_open |= slot == 0;
                        flow.opened(slot, rtt);
                        if slot == 0 && let Some(op) = opener.as_mut() {
                            op.open_more(&flow.paths_in_use());
                        }
                    }
                    Event::Refused { slot: 0, reason, hop, detail } if !primary_open => {
                        break FlowEnd::Refused { reason, hop, detail };
                    }
                    Event::Refused { slot, reason, hop, .. } => {
                        flow.lose(slot, &format!("refused by {hop}: {}", reason.as_str()));
                        replace(&mut opener, &flow, slot);
                    }
                    Event::Lost(0, why) if !primary_open && opener.is_some() => break FlowEnd::LinkLost(why),
                    Event::Lost(slot, why) => {
                        flow.lose(slot, &why);
                        replace(&mut opener, &flow, slot);
                    }
                    Event::PeerFinished => peer_finished = true,
                    Event::FlowReset(code) => break FlowEnd::PeerReset(code),
                    Event::Violation(detail) => break FlowEnd::Protocol(detail),
                    Event::OutDelivered => {}
                },
                Some(arrival) = arrivals.recv() => match arrival {
                    Arrival::Subflow(mut sub) => {
                        if let Some(op) = opener.as_mut() {
                            op.settled(&sub.path, false);
                        }
                        if flow.accepts(&sub) {
                            flow.add(*sub);
                        } else {
                            let _ = sub.send.reset(PATH_LOST);
                            let _ = sub.recv.stop(PATH_LOST);
                        }
                    }
                    Arrival::Failed(path) => {
                        if let Some(op) = opener.as_mut() {
                            op.settled(&path, true);
                            op.open_more(&flow.paths_in_use());
                        }
                    }
                },
                _ = tick.tick() => {
                    for slot in flow.stalled(&link_usable) {
                        flow.lose(slot, "stalled: bytes unacknowledged past the stall timeout");
                        replace(&mut opener, &flow, slot);
                    }
                    if down_done {
                        // Our last acknowledgement may have gone down with its subflow, and
                        // the peer cannot complete without it: say it again.
                        core.lock().ack_written(std::time::Instant::now(), false);
                    }
                    if primary_open && let Some(op) = opener.as_mut() {
                        // Paths lost a while ago may be tried again.
                        op.open_more(&flow.paths_in_use());
                    }
                }
                reason = activity.watchdog(&env.timeouts) => break FlowEnd::TimedOut(reason),
                _ = tcp_io::error_reported(&tcp) => break FlowEnd::TcpReset,
                _ = crate::shutdown::wait_true(&mut force) => break FlowEnd::Aborted,
            }
            // No subflow left: the origin gives up once nothing it opened can still arrive;
            // the exit waits a while for the origin to send a replacement.
            if core.lock().alive() == 0 {
                match opener.as_ref() {
                    Some(op) if op.pending() == 0 => break FlowEnd::LinkLost("no path left".into()),
                    Some(_) => {}
                    None => {
                        let since = *pathless_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > grace {
                            break FlowEnd::LinkLost("no path left".into());
                        }
                    }
                }
            } else {
                pathless_since = None;
            }
        }
    };
    // Subflows that arrived too late: reset, never dropped (a dropped stream finishes).
    let late_code = if end == FlowEnd::Completed { PATH_LOST } else { FLOW_RESET };
    arrivals.close();
    while let Ok(arrival) = arrivals.try_recv() {
        if let Arrival::Subflow(mut sub) = arrival {
            let _ = sub.send.reset(late_code);
            let _ = sub.recv.stop(late_code);
        }
    }
    if let Some(route) = &env.route {
        route.bytes.fetch_add(activity.bytes(), Ordering::Relaxed);
    }
    if end == FlowEnd::Completed {
        core.lock().finish_all();
        let close = async { while flow.tasks.join_next().await.is_some() {} };
        tokio::select! {
            _ = tokio::time::timeout(CLOSE_LINGER.min(env.timeouts.half_closed), close) => {}
            _ = crate::shutdown::wait_true(&mut force) => {}
        }
        tcp_io::disarm_reset_on_drop(&tcp);
    } else {
        debug!(end = ?end, "multipath flow failed");
        core.fail_code.store(FLOW_RESET.into_inner(), Ordering::Relaxed);
        flow.tasks.abort_all();
        tcp_io::reset_tcp(tcp);
    }
    end
}

/// After the loss of `lost`, asks the opener (origin side) for a replacement on another
/// path.
fn replace(opener: &mut Option<Opener>, flow: &Subflows, lost: usize) {
    if let Some(op) = opener.as_mut() {
        if let Some(path) = flow.path_of(lost) {
            op.path_failed(&path);
        }
        op.open_more(&flow.paths_in_use());
    }
}

/// One slot per subflow ever added.
struct Slot {
    tasks: [AbortHandle; 2],
    first_hop: Option<String>,
    replacement: bool,
    _guard: Option<FlowGuard>,
}

/// The flow's subflow tasks.
struct Subflows {
    core: Arc<FlowCore>,
    tasks: JoinSet<()>,
    slots: Vec<Slot>,
}

impl Subflows {
    /// Whether a new subflow may join: its index is new to the flow, and fewer than
    /// [`MAX_SUBFLOWS`] are alive.
    fn accepts(&self, sub: &NewSubflow) -> bool {
        let st = self.core.lock();
        st.alive() < MAX_SUBFLOWS && !st.subs.iter().any(|s| s.index == sub.index)
    }

    fn add(&mut self, sub: NewSubflow) {
        let now = std::time::Instant::now();
        let replied = sub.awaits_reply.is_none();
        let slot = self.core.lock().add(Sub::new(sub.index, sub.path, sub.ready, replied, now));
        let (send, recv) = halves(&self.core, sub.send, sub.recv, sub.seal);
        let reply = sub.awaits_reply.map(|(at, limit)| (limit, at));
        let w = self.tasks.spawn(write_loop(self.core.clone(), slot, send, sub.preamble, CLOSE_LINGER));
        let r = self.tasks.spawn(read_loop(self.core.clone(), slot, recv, sub.leading, reply));
        self.slots.push(Slot {
            tasks: [w, r],
            first_hop: sub.first_hop,
            replacement: sub.replacement,
            _guard: sub.guard,
        });
        self.core.counters.subflows_opened.fetch_add(1, Ordering::Relaxed);
        if sub.ready {
            self.core.assign_waiting(&mut self.core.lock());
            self.core.room.notify_one();
        }
    }

    fn opened(&mut self, slot: usize, rtt: Duration) {
        let mut st = self.core.lock();
        let now = std::time::Instant::now();
        if let Some(sub) = st.subs.get_mut(slot).filter(|s| s.alive) {
            sub.ready = true;
            sub.replied = true;
            // Bytes sent before the reply waited for it (and, on the primary, for the
            // exit's dial): the stall clock starts now. The open time is a first RTT
            // sample (on the primary an overestimate, which errs on the patient side
            // until acks refine it).
            sub.meter.restart_stall_clock(now);
            sub.meter.sample_rtt(rtt);
            self.core.assign_waiting(&mut st);
        }
        drop(st);
        if self.slots.get(slot).is_some_and(|s| s.replacement) {
            self.core.counters.subflows_replaced.fetch_add(1, Ordering::Relaxed);
        }
        self.core.room.notify_one();
    }

    fn lose(&mut self, slot: usize, why: &str) {
        let mut st = self.core.lock();
        if !st.lose(slot) {
            return;
        }
        let resent = st.resend(slot);
        self.core.assign_waiting(&mut st);
        if st.written > 0 {
            // Our last acknowledgement may have been on it.
            st.ack_written(std::time::Instant::now(), true);
        }
        let (index, rtt, in_flight) =
            st.subs.get(slot).map_or((0, None, 0), |s| (s.index, s.meter.srtt(), s.meter.in_flight()));
        drop(st);
        debug!(subflow = index, why, resent, ?rtt, in_flight, "subflow lost");
        self.core.counters.subflows_lost.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.slots.get_mut(slot) {
            // Dropping the halves resets and stops the stream with `PATH_LOST`.
            s.tasks.iter().for_each(AbortHandle::abort);
            s._guard = None;
        }
        self.core.room.notify_one();
    }

    fn path_of(&self, slot: usize) -> Option<Vec<String>> {
        self.core.lock().subs.get(slot).map(|s| s.path.clone())
    }

    fn paths_in_use(&self) -> Vec<Vec<String>> {
        self.core.lock().subs.iter().filter(|s| s.alive).map(|s| s.path.clone()).collect()
    }

    /// Live subflows whose bytes went unacknowledged past their stall timeout, or whose
    /// first link went silent while bytes are in flight (and the subflow too, for longer
    /// than its RTT: on a path slower than the link's health threshold, a quiet link is
    /// no proof).
    fn stalled(&self, link_usable: &dyn Fn(&str) -> bool) -> Vec<usize> {
        let now = std::time::Instant::now();
        let st = self.core.lock();
        st.subs
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                let link_down = self
                    .slots
                    .get(*i)
                    .and_then(|slot| slot.first_hop.as_deref())
                    .is_some_and(|hop| !link_usable(hop));
                let silent =
                    s.meter.in_flight() > 0 && s.meter.silence(now) > s.meter.srtt().unwrap_or_default();
                s.alive && s.replied && (s.meter.stalled(now) || (link_down && silent))
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// TCP to subflows: reads while the window and some subflow have room; the end of the
/// TCP stream becomes a `Fin` on every subflow.
async fn tcp_to_subflows(
    core: &FlowCore,
    tcp: &TcpStream,
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    loop {
        let room = loop {
            let room = core.lock().tcp_room(CHUNK);
            if room > 0 {
                break room;
            }
            core.room.notified().await;
        };
        tcp.readable().await.map_err(|_| FlowEnd::TcpReset)?;
        let mut buf = BytesMut::with_capacity(room);
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => {
                activity.half_close();
                core.lock().finish_out();
                return Ok(());
            }
            Ok(n) => {
                activity.moved(n as u64);
                counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                let mut st = core.lock();
                // The subflow picked above may have lost its room or gone meanwhile; then
                // the bytes wait for one.
                let slot = st.pick();
                if !st.push_data(slot, buf.freeze(), std::time::Instant::now()) {
                    return Err(FlowEnd::Protocol("send window overrun".into()));
                }
                counters.multipath_unacked_peak.fetch_max(st.send.held() as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(FlowEnd::TcpReset),
        }
    }
}

/// Subflows to TCP: writes the reassembled bytes in order, acknowledges them, and shuts
/// the TCP write side down at the peer's `Fin`.
async fn subflows_to_tcp(
    core: &FlowCore,
    tcp: &TcpStream,
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(GATHER);
    loop {
        let at_end = {
            let mut st = core.lock();
            while chunks.len() < GATHER {
                match st.recv.pop() {
                    Some(c) => chunks.push(c),
                    None => break,
                }
            }
            chunks.is_empty() && st.fin_in == Some(st.recv.delivered())
        };
        if at_end {
            activity.half_close();
            tcp_io::shutdown_write(tcp)?;
            core.lock().ack_written(std::time::Instant::now(), true);
            return Ok(());
        }
        if chunks.is_empty() {
            core.data.notified().await;
            continue;
        }
        let n: usize = chunks.iter().map(Bytes::len).sum();
        tcp_io::write_all_vectored(tcp, &mut chunks, activity, counters).await?;
        chunks.clear();
        let mut st = core.lock();
        st.written += n as u64;
        let drained = st.recv.held() == 0;
        if drained || st.written - st.written_acked >= 64 * 1024 {
            st.ack_written(std::time::Instant::now(), false);
        }
    }
}
