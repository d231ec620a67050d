//! Moves one UDP association's datagrams between UDP sockets and its flow stream, both
//! ways at once.
//!
//! On the stream each datagram is one frame (see [`crate::core::datagram`]): 2 bytes of
//! length, then the payload, so boundaries survive the byte stream, the relays and the
//! seal. Invariants:
//! - Datagrams are never merged or split: a frame in is one `send` out.
//! - Nothing is buffered without bound: datagrams for the stream wait in a bounded queue
//!   ([`crate::node::splice::udp_queue`]), filled by the socket's reader without waiting;
//!   when the stream cannot take more (the queue is full), new datagrams are dropped and
//!   counted `congested`, as a router drops at a full queue. The other way the socket's send
//!   buffer is the only queue.
//! - A datagram the socket refuses is dropped and counted (`too_large` for `EMSGSIZE`,
//!   `send_failed` otherwise); the association goes on, as UDP would.
//! - UDP has no close: an association ends when it has been idle for
//!   `limits.udp_idle_timeout` or its node starts draining. That end finishes its
//!   direction of the stream (with the sealed end record on a sealed flow); the other end,
//!   seeing the finish, finishes its own: a clean end on both sides. Any stream failure
//!   resets both directions, as a TCP flow's failure does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use quinn::RecvStream;
use tokio::net::UdpSocket;

use crate::core::datagram::{Deframer, MAX_FRAME_PAYLOAD, put_frame};
use crate::node::flow::timer::Activity;
use crate::node::link::credit::StallWatch;
use crate::node::link::send::LinkSend;
use crate::node::observe::udp::{UdpCounters, UdpDrop};
use crate::node::splice::sealing::{DownSeal, FlowSeal, UpSeal};
use crate::node::splice::tcp_stream::{Prelude, first_bytes, write_upward};
use crate::node::splice::udp_queue::QueueRx;
use crate::node::splice::{FlowEnd, FlowEnv, acknowledged, codes, read_error, stop_code, write_error};

/// Frames gathered into one stream write: a burst costs one turn at the link, not one
/// per datagram.
const GATHER_BYTES: usize = 64 * 1024;

/// Stream chunks read at once.
const READ_CHUNKS: usize = 16;

/// Where datagrams from the stream go.
pub(crate) enum Outgoing {
    /// Back to a client, through its UDP listener's socket.
    Client(Arc<UdpSocket>, SocketAddr),
    /// To the target, through the association's connected socket.
    Target(Arc<UdpSocket>),
}

impl Outgoing {
    /// Sends one datagram, counting it sent or dropped (a failed send ends nothing).
    pub(crate) async fn send(&self, datagram: &[u8], udp: &UdpCounters) {
        let sent = match self {
            Self::Client(socket, client) => socket.send_to(datagram, *client).await,
            Self::Target(socket) => socket.send(datagram).await,
        };
        match sent {
            Ok(_) => udp.sent(datagram.len()),
            Err(e) if is_too_large(&e) => udp.drop_one(UdpDrop::TooLarge),
            Err(_) => udp.drop_one(UdpDrop::SendFailed),
        }
    }
}

/// Whether a send failed because the datagram is larger than the route allows with the
/// don't-fragment flag set (`EMSGSIZE`).
#[cfg(target_os = "linux")]
pub(crate) fn is_too_large(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error())
}

/// Elsewhere the flag is not set (see `flow::udp_exit`), so no send fails for size alone.
#[cfg(not(target_os = "linux"))]
pub(crate) fn is_too_large(_: &io::Error) -> bool {
    false
}

/// One association's datagrams: the queue of those received (for the stream) and where
/// those from the stream go.
pub(crate) struct Datagrams<'a> {
    /// Received datagrams, waiting for the stream (the caller keeps the queue: after a
    /// refusal it goes on dropping what arrives).
    pub incoming: &'a mut QueueRx,
    /// Where datagrams from the stream go.
    pub outgoing: Outgoing,
    /// The node's draining signal: UDP has no close to wait for, so a draining node ends
    /// its associations at once (as if idle) instead of holding the drain to its deadline.
    pub draining: tokio::sync::watch::Receiver<bool>,
}

/// Splices an association with its stream until it is idle past the flow's idle limit,
/// or either side fails (both are then reset). `force` turning true aborts it.
pub(crate) async fn splice(
    mut send: LinkSend,
    mut recv: RecvStream,
    datagrams: Datagrams<'_>,
    prelude: Prelude,
    seal: FlowSeal,
    env: FlowEnv,
) -> FlowEnd {
    let FlowEnv { timeouts, counters, mut force, route, bytes, answered, .. } = env;
    let Datagrams { incoming, outgoing, mut draining } = datagrams;
    let activity = Activity::counting(bytes);
    let expects_reply = matches!(prelude, Prelude::ExpectReply);
    let awaiting_reply = AtomicBool::new(expects_reply);
    // Datagrams sent ahead of the exit's answer: lost with the flow if it is refused.
    let unanswered = AtomicU64::new(0);
    let mut watch = send.stall_watch();
    let (up_seal, mut down_seal) = seal.split();
    let end = {
        // Boxed so the upward half can be dropped (giving `send` back) while the downward
        // half still reads.
        let mut up =
            Box::pin(to_stream(&mut send, incoming, &up_seal, &activity, (&awaiting_reply, &unanswered)));
        let stream = (&mut recv, &mut watch, &mut down_seal, &up_seal);
        let mut down = Box::pin(from_stream(
            stream,
            &outgoing,
            prelude,
            (&activity, &counters.udp),
            timeouts.reply,
            &awaiting_reply,
        ));
        // Either direction ending cleanly ends the association: there is no half-open
        // UDP. Idle and draining end it cleanly from this side.
        let close = tokio::select! {
            r = &mut up => r.map(|()| Close::Finished),
            r = &mut down => r.map(|()| Close::Theirs),
            _ = activity.watchdog(&timeouts) => Ok(Close::Ours),
            _ = crate::shutdown::wait_true(&mut draining) => Ok(Close::Ours),
            _ = crate::shutdown::wait_true(&mut force) => Err(FlowEnd::Aborted),
        };
        drop(up);
        match close {
            Err(end) => end,
            // The far end finished after reading all of ours: once it has our finish too,
            // both sides are done.
            Ok(Close::Theirs) => match finish(&mut send, &up_seal, &activity).await {
                Err(end) => end,
                Ok(()) => {
                    let _ = acknowledged(stop_code(&send), &activity, timeouts, force.clone()).await;
                    FlowEnd::Completed
                }
            },
            // This end closes: finish, then wait for the far end's finish, which it sends
            // once it has read ours. Only then may this node close its links (a draining
            // node does right after), or the far end could lose the finish it had not read.
            Ok(close) => {
                let finished = match close {
                    Close::Ours => finish(&mut send, &up_seal, &activity).await,
                    _ => Ok(()),
                };
                match finished {
                    Err(end) => end,
                    Ok(()) => tokio::select! {
                        // Whatever the far end does now, the association is over.
                        _ = &mut down => FlowEnd::Completed,
                        _ = activity.watchdog(&timeouts) => FlowEnd::Completed,
                        _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
                    },
                }
            }
        }
    };
    if let Some(answered) = answered
        && expects_reply
        && (!awaiting_reply.load(Ordering::Relaxed) || down_seal.answered_sealed())
    {
        answered.store(true, Ordering::Relaxed);
    }
    if let Some(route) = route {
        route.bytes.fetch_add(activity.bytes(), Ordering::Relaxed);
    }
    if matches!(end, FlowEnd::Refused { .. } | FlowEnd::RefusedAhead) {
        let lost = unanswered.load(Ordering::Relaxed);
        counters.udp.dropped_n(UdpDrop::Refused, lost);
    }
    if end != FlowEnd::Completed {
        let _ = send.reset(end.reset_code());
        let _ = recv.stop(end.reset_code());
    }
    end
}

/// Who ended an association cleanly.
enum Close {
    /// This side's queue closed, and `to_stream` already finished its direction.
    Finished,
    /// This side: idle past the limit, or the node is draining.
    Ours,
    /// The far side finished its direction.
    Theirs,
}

/// Finishes this side's direction cleanly: the sealed end record (on a sealed flow), then
/// the stream finish, whose delivery counts as the flow's progress.
async fn finish(send: &mut LinkSend, seal: &UpSeal, activity: &Activity) -> Result<(), FlowEnd> {
    if let Some(fin) = seal.fin()? {
        send.write_data_moving(fin, Some(activity)).await.map_err(write_error)?;
    }
    activity.half_close();
    send.finish_delivering(activity).map_err(|_| FlowEnd::PeerReset(0))
}

/// How an association's end counts: idle (or a draining node) is how UDP associations end
/// (either side's watchdog, or the far side's reset for it), not a failure.
pub(crate) fn association_end(end: FlowEnd) -> FlowEnd {
    match end {
        FlowEnd::TimedOut("idle" | "draining") => FlowEnd::Completed,
        FlowEnd::PeerReset(code) if code == codes::TIMEOUT.into_inner() => FlowEnd::Completed,
        other => other,
    }
}

/// Frames queued datagrams onto the stream, a burst per write.
async fn to_stream(
    send: &mut LinkSend,
    incoming: &mut QueueRx,
    seal: &UpSeal,
    activity: &Activity,
    (awaiting_reply, unanswered): (&AtomicBool, &AtomicU64),
) -> Result<(), FlowEnd> {
    let mut frames = BytesMut::new();
    while let Some(first) = incoming.recv().await {
        // Datagrams past the frame's range were dropped when received (`max_datagram`).
        put_frame(&mut frames, &first).map_err(|e| FlowEnd::Protocol(e.to_string()))?;
        let mut n = 1;
        while frames.len() < GATHER_BYTES
            && let Some(next) = incoming.try_recv()
        {
            put_frame(&mut frames, &next).map_err(|e| FlowEnd::Protocol(e.to_string()))?;
            n += 1;
        }
        if awaiting_reply.load(Ordering::Relaxed) {
            unanswered.fetch_add(n, Ordering::Relaxed);
        }
        activity.moved(frames.len() as u64);
        let chunk = seal.seal(frames.split().freeze())?;
        write_upward(send, chunk, activity, awaiting_reply).await?;
    }
    // The queue's sender is gone (the listener closed): no more datagrams this way.
    finish(send, seal, activity).await
}

/// The stream side of the downward direction: the stream, its stall watch, and the seal.
type StreamSide<'a> = (&'a mut RecvStream, &'a mut StallWatch, &'a mut DownSeal, &'a UpSeal);

/// Reads frames off the stream and sends each as one datagram.
async fn from_stream(
    (recv, watch, seal, up): StreamSide<'_>,
    outgoing: &Outgoing,
    prelude: Prelude,
    (activity, udp): (&Activity, &UdpCounters),
    reply_timeout: std::time::Duration,
    awaiting_reply: &AtomicBool,
) -> Result<(), FlowEnd> {
    // The far end checks its own `max_datagram`; a frame is bounded by its length field.
    let mut deframer = Deframer::new(MAX_FRAME_PAYLOAD);
    let mut plain = Vec::new();
    let first = first_bytes(prelude, (recv, seal, up), reply_timeout, awaiting_reply).await?;
    seal.open(first, &mut plain)?;
    let mut chunks: [Bytes; READ_CHUNKS] = Default::default();
    loop {
        for bytes in plain.drain(..) {
            activity.moved(bytes.len() as u64);
            deframer.push(&bytes);
        }
        while let Some(datagram) = deframer.next_datagram().map_err(|e| FlowEnd::Protocol(e.to_string()))? {
            outgoing.send(&datagram, udp).await;
        }
        match watch.read(recv.read_chunks(&mut chunks)).await {
            Ok(Some(n)) => {
                for chunk in &mut chunks[..n] {
                    seal.open(std::mem::take(chunk), &mut plain)?;
                }
            }
            Ok(None) => {
                // A sealed stream ends only with its sealed end: anything else was cut.
                seal.end()?;
                activity.half_close();
                return Ok(());
            }
            Err(e) => return Err(read_error(e)),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_the_kernel_refuses_for_size_is_counted_too_large() {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(target.local_addr().expect("addr")).await.expect("connect");
        let out = Outgoing::Target(Arc::new(socket));
        let udp = UdpCounters::default();
        out.send(b"fits", &udp).await;
        out.send(&vec![0u8; 65_508], &udp).await;
        let s = udp.snapshot();
        assert_eq!((s.datagrams_out, s.bytes_out, s.dropped("too_large")), (1, 4, 1));
        let mut buf = [0u8; 16];
        assert_eq!(target.recv(&mut buf).await.expect("recv"), 4, "the datagram that fit arrived whole");
    }
}
