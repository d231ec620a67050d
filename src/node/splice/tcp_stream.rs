//! Moves one flow's bytes between a TCP socket and a QUIC stream, both ways at once.
//!
//! Invariants:
//! - TCP end of stream becomes a stream finish, and a stream finish becomes a TCP write
//!   shutdown; the flow is complete only when both directions finished.
//! - Any error, timeout or forced shutdown resets *both* sides: the QUIC stream is reset
//!   and stopped, and the TCP socket is closed with an RST. quinn finishes a dropped
//!   `LinkSend` cleanly, so the streams are owned here, outside the copy futures, and
//!   reset explicitly after those futures are dropped: a cut flow never looks complete.
//! - A completed flow is held until the peer acknowledged all its bytes, so a shutdown
//!   that closes the link right after cannot drop its tail; it waits as long as the link
//!   keeps delivering, and gives up after a limit without progress.
//! - Timeouts count progress anywhere on the path this node can see (see
//!   [`crate::node::flow::timer`]): bytes read and written here, taken by QUIC, and a
//!   finished stream's bytes still being acknowledged.
//! - Memory is bounded per flow: each direction holds at most one chunk (256 KiB) of its
//!   own, and buffers are only allocated while a socket is readable, so an idle flow holds
//!   none. Backpressure is the QUIC stream window on one side and the TCP socket buffer on
//!   the other: a slow reader stops this loop from reading more.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{RecvStream, VarInt, WriteError};
use tokio::net::TcpStream;

use crate::core::seal::record::{MAX_RECORD_DATA, RECORD_HEAD, RECORD_OVERHEAD, TAG_LEN};
use crate::core::wire::{self, Decoded, Reply};
use crate::node::flow::timer::Activity;
use crate::node::link::credit::StallWatch;
use crate::node::link::send::LinkSend;
use crate::node::observe::stats::Counters;
use crate::node::splice::sealing::{DownSeal, FlowSeal, UpSeal};
use crate::node::splice::tcp_io;
use crate::node::splice::{FlowEnd, FlowEnv, acknowledged, codes, read_error, stop_code, write_error};

/// Largest chunk read from TCP in one step.
const CHUNK: usize = 256 * 1024;
/// Stream chunks gathered into one TCP write.
const GATHER: usize = 16;
/// Reads shorter than this are copied out so the read buffer can be reused.
const SMALL_READ: usize = 4 * 1024;

/// What happens on the stream-to-TCP side before plain copying starts.
pub(crate) enum Prelude {
    /// These bytes (that arrived behind the header) go to TCP first.
    WriteFirst(Bytes),
    /// The opener's side: read the far end's reply first.
    ExpectReply,
}

/// Splices `tcp` and the stream until both directions finish, or resets both sides on
/// any failure. `force` turning true aborts the flow (shutdown deadline).
pub(crate) async fn splice(
    tcp: TcpStream,
    mut send: LinkSend,
    mut recv: RecvStream,
    prelude: Prelude,
    seal: FlowSeal,
    env: FlowEnv,
) -> FlowEnd {
    let FlowEnv { timeouts, counters, mut force, route, bytes, answered, .. } = env;
    tcp_io::arm_reset_on_drop(&tcp);
    let activity = Activity::counting(bytes);
    // Only an opener still waiting for its reply may take a stop with `REFUSED` as "the
    // reply will say why"; after `Opened` (or on the exit side) it is a failure.
    let expects_reply = matches!(prelude, Prelude::ExpectReply);
    let awaiting_reply = AtomicBool::new(expects_reply);
    let mut watch = send.stall_watch();
    let (up_seal, mut down_seal) = seal.split();
    let end = {
        let up = tcp_to_stream(&tcp, &mut send, &up_seal, &activity, &counters, &awaiting_reply);
        let down = stream_to_tcp(
            (&mut recv, &mut watch, &mut down_seal, &up_seal),
            &tcp,
            prelude,
            &activity,
            &counters,
            timeouts.reply,
            &awaiting_reply,
        );
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) => FlowEnd::Completed,
                Err(end) => end,
            },
            reason = activity.watchdog(&timeouts) => FlowEnd::TimedOut(reason),
            _ = tcp_io::error_reported(&tcp) => FlowEnd::TcpReset,
            _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
        }
    };
    if let Some(answered) = answered
        && expects_reply
        && (!awaiting_reply.load(Ordering::Relaxed) || down_seal.answered_sealed())
    {
        answered.store(true, Ordering::Relaxed);
    }
    let end = match end {
        FlowEnd::Completed => {
            match acknowledged(stop_code(&send), &activity, timeouts, force.clone()).await {
                Some(code) => FlowEnd::PeerReset(code),
                None => FlowEnd::Completed,
            }
        }
        other => other,
    };
    if let Some(route) = route {
        route.bytes.fetch_add(activity.bytes(), Ordering::Relaxed);
    }
    if end == FlowEnd::Completed {
        tcp_io::disarm_reset_on_drop(&tcp);
    } else {
        abort(tcp, &mut send, &mut recv, end.reset_code());
    }
    end
}

/// Resets both sides of a flow: stream reset and stopped, TCP closed with an RST.
pub(crate) fn abort(tcp: TcpStream, send: &mut LinkSend, recv: &mut RecvStream, code: VarInt) {
    let _ = send.reset(code);
    let _ = recv.stop(code);
    tcp_io::reset_tcp(tcp);
}

async fn tcp_to_stream(
    tcp: &TcpStream,
    send: &mut LinkSend,
    seal: &UpSeal,
    activity: &Activity,
    counters: &Counters,
    awaiting_reply: &AtomicBool,
) -> Result<(), FlowEnd> {
    loop {
        tcp.readable().await.map_err(|_| FlowEnd::TcpReset)?;
        // Allocated only once the socket is readable, dropped when it would block: an idle
        // flow holds no buffer.
        let mut buf = BytesMut::with_capacity(CHUNK);
        // A sealed flow reads each record's data straight behind its reserved head.
        let head = if seal.is_sealed() { RECORD_HEAD } else { 0 };
        loop {
            if buf.capacity() - buf.len() < SMALL_READ + RECORD_OVERHEAD {
                buf = BytesMut::with_capacity(CHUNK);
            }
            buf.put_bytes(0, head);
            let room = if head == 0 {
                usize::MAX
            } else {
                (buf.capacity() - buf.len() - TAG_LEN).min(MAX_RECORD_DATA)
            };
            let read = tcp.try_read_buf(&mut (&mut buf).limit(room));
            if !matches!(read, Ok(n) if n > 0) {
                buf.clear();
            }
            match read {
                Ok(0) => {
                    if let Some(fin) = seal.fin()? {
                        send.write_data_moving(fin, Some(activity)).await.map_err(write_error)?;
                    }
                    activity.half_close();
                    send.finish_delivering(activity).map_err(|_| FlowEnd::PeerReset(0))?;
                    return Ok(());
                }
                Ok(n) => {
                    activity.moved(n as u64);
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    let before = if head == 0 { None } else { seal.seal_reserved(&mut buf)? };
                    let chunk = if n < SMALL_READ {
                        let c = Bytes::copy_from_slice(&buf);
                        buf.clear();
                        c
                    } else {
                        buf.split().freeze()
                    };
                    if let Some(before) = before {
                        send.write_data_moving(before, Some(activity)).await.map_err(write_error)?;
                    }
                    write_upward(send, chunk, activity, awaiting_reply).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(FlowEnd::TcpReset),
            }
        }
    }
}

/// The stream side of the downward direction: the stream, its stall watch, and the seal.
type StreamSide<'a> = (&'a mut RecvStream, &'a mut StallWatch, &'a mut DownSeal, &'a UpSeal);

async fn stream_to_tcp(
    (recv, watch, seal, up): StreamSide<'_>,
    tcp: &TcpStream,
    prelude: Prelude,
    activity: &Activity,
    counters: &Counters,
    reply_timeout: std::time::Duration,
    awaiting_reply: &AtomicBool,
) -> Result<(), FlowEnd> {
    let mut plain = Vec::new();
    let first = first_bytes(prelude, (recv, seal, up), reply_timeout, awaiting_reply).await?;
    seal.open(first, &mut plain)?;
    tcp_io::write_all_vectored(tcp, &mut plain, activity, counters).await?;
    // Chunks arrive about one QUIC packet each; gathering several per writev saves a
    // syscall per packet on bulk flows.
    let mut chunks: [Bytes; GATHER] = Default::default();
    loop {
        match watch.read(recv.read_chunks(&mut chunks)).await {
            Ok(Some(n)) => {
                plain.clear();
                for chunk in &mut chunks[..n] {
                    seal.open(std::mem::take(chunk), &mut plain)?;
                }
                // A reader that stops holds this stream's window; the watch keeps that out
                // of the link's shared credit (see `node::link::credit`).
                let written =
                    watch.write(tcp_io::write_all_vectored(tcp, &mut plain, activity, counters)).await;
                let written = written.unwrap_or(Err(FlowEnd::OverBudget));
                plain.clear();
                written?;
            }
            Ok(None) => {
                // A sealed stream ends only with its sealed end: anything else was cut.
                seal.end()?;
                activity.half_close();
                return tcp_io::shutdown_write(tcp);
            }
            Err(e) => return Err(read_error(e)),
        }
    }
}

/// Reads the reply (unsealing it on a sealed flow); returns the bytes that followed it in
/// the stream, still as they came.
/// Writes `chunk` of the upward direction. A refusing node stops our upload and then sends
/// its reply: then this never returns, and the other direction reads why (bounded by the
/// reply timeout and the watchdog).
pub(crate) async fn write_upward(
    send: &mut LinkSend,
    chunk: Bytes,
    activity: &Activity,
    awaiting_reply: &AtomicBool,
) -> Result<(), FlowEnd> {
    match send.write_data_moving(chunk, Some(activity)).await {
        Ok(()) => Ok(()),
        Err(WriteError::Stopped(code))
            if code == codes::REFUSED && awaiting_reply.load(Ordering::Relaxed) =>
        {
            std::future::pending().await
        }
        Err(e) => Err(write_error(e)),
    }
}

/// The first bytes of the downward direction: those the caller already holds, or, when a
/// reply is due, the bytes after the reply (read within `reply_timeout`; then
/// `awaiting_reply` is cleared).
pub(crate) async fn first_bytes(
    prelude: Prelude,
    (recv, seal, up): (&mut RecvStream, &mut DownSeal, &UpSeal),
    reply_timeout: std::time::Duration,
    awaiting_reply: &AtomicBool,
) -> Result<Bytes, FlowEnd> {
    match prelude {
        Prelude::WriteFirst(bytes) => Ok(bytes),
        Prelude::ExpectReply => {
            let rest = tokio::time::timeout(reply_timeout, read_reply(recv, seal, up))
                .await
                .map_err(|_| FlowEnd::TimedOut("reply"))??;
            awaiting_reply.store(false, Ordering::Relaxed);
            Ok(rest)
        }
    }
}

pub(crate) async fn read_reply(
    recv: &mut RecvStream,
    down: &mut DownSeal,
    up: &UpSeal,
) -> Result<Bytes, FlowEnd> {
    let mut buf = Vec::new();
    loop {
        match wire::decode_reply(&buf) {
            Ok(Decoded::Complete(reply, used)) => {
                return match down.reply(reply, up)? {
                    Reply::Opened => Ok(Bytes::copy_from_slice(&buf[used..])),
                    Reply::Refused { reason, hop, detail } => Err(FlowEnd::Refused { reason, hop, detail }),
                    Reply::Sealed(_) => Err(FlowEnd::BadReply("a sealed reply inside a sealed reply".into())),
                };
            }
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Err(FlowEnd::BadReply(e.to_string())),
        }
        match recv.read_chunk(wire::MAX_REPLY_BODY, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(FlowEnd::BadReply("stream finished before the reply".into())),
            Err(e) => return Err(read_error(e)),
        }
    }
}
