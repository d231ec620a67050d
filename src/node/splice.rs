//! Moves one flow's bytes between a TCP socket and a QUIC stream, both ways at once.
//!
//! Invariants:
//! - TCP end of stream becomes a stream finish, and a stream finish becomes a TCP write
//!   shutdown; the flow is complete only when both directions finished.
//! - Any error, timeout or forced shutdown resets *both* sides: the QUIC stream is reset
//!   and stopped, and the TCP socket is closed with `SO_LINGER 0` (an RST). quinn finishes a
//!   dropped `SendStream` cleanly, so the streams are owned here, outside the copy futures,
//!   and reset explicitly after those futures are dropped: a cut flow never looks complete.
//! - Memory is bounded per flow: each direction holds at most one chunk (64 KiB) of its
//!   own, and buffers are only allocated while a socket is readable, so an idle flow holds
//!   none. Backpressure is the QUIC stream window on one side and the TCP socket buffer on
//!   the other: a slow reader stops this loop from reading more.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::wire::{self, Decoded, RefuseReason, Reply};
use crate::node::stats::Counters;

/// Largest chunk moved in one step.
const CHUNK: usize = 64 * 1024;
/// Stream chunks gathered into one TCP write.
const GATHER: usize = 16;
/// Reads shorter than this are copied out so the 64 KiB buffer can be reused.
const SMALL_READ: usize = 4 * 1024;

/// Application error codes used when resetting or stopping flow streams.
pub mod codes {
    use quinn::VarInt;
    /// The TCP side was reset or failed.
    pub const TCP_RESET: VarInt = VarInt::from_u32(1);
    /// The flow timed out (idle or half-closed).
    pub const TIMEOUT: VarInt = VarInt::from_u32(2);
    /// The node is shutting down and the drain deadline passed.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(3);
    /// The flow was refused; the reply says why.
    pub const REFUSED: VarInt = VarInt::from_u32(4);
    /// The far side reset the stream, passed on.
    pub const PEER_RESET: VarInt = VarInt::from_u32(5);
}

/// Timeouts that apply to a spliced flow.
#[derive(Debug, Clone, Copy)]
pub struct SpliceTimeouts {
    /// No bytes either way for this long resets the flow.
    pub idle: Duration,
    /// After one direction finished, the other must finish within this.
    pub half_closed: Duration,
    /// The opener waits this long for the reply.
    pub reply: Duration,
}

/// What happens on the stream-to-TCP side before plain copying starts.
pub enum Prelude {
    /// Nothing: copy at once.
    Nothing,
    /// These bytes (that arrived behind the header) go to TCP first.
    WriteFirst(Bytes),
    /// The opener's side: read the far end's reply first.
    ExpectReply,
}

/// How a flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEnd {
    /// Both directions finished cleanly.
    Completed,
    /// The far end refused the flow.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// The node that refused.
        hop: String,
        /// Its detail text.
        detail: String,
    },
    /// The TCP side reset or failed.
    TcpReset,
    /// The far side reset or stopped the stream.
    PeerReset(u64),
    /// The peer link was lost.
    LinkLost(String),
    /// Idle or half-closed timeout.
    TimedOut(&'static str),
    /// Forced shutdown.
    Aborted,
    /// The reply was malformed.
    BadReply(String),
}

impl FlowEnd {
    fn reset_code(&self) -> VarInt {
        match self {
            Self::Completed | Self::TcpReset | Self::LinkLost(_) | Self::BadReply(_) => codes::TCP_RESET,
            Self::Refused { .. } => codes::REFUSED,
            Self::PeerReset(_) => codes::PEER_RESET,
            Self::TimedOut(_) => codes::TIMEOUT,
            Self::Aborted => codes::SHUTDOWN,
        }
    }
}

/// Tracks when a flow last moved bytes and when it became half-closed.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    half_closed_ms: AtomicU64,
    /// Wakes the watchdog when a half-close brings its deadline forward.
    half_closed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            half_closed_ms: AtomicU64::new(u64::MAX),
            half_closed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn half_close(&self) {
        let first = self.half_closed_ms.compare_exchange(
            u64::MAX,
            self.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if first.is_ok() {
            self.half_closed.notify_one();
        }
    }

    /// The next deadline and what it is for.
    fn deadline(&self, t: &SpliceTimeouts) -> (Instant, &'static str) {
        let idle = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + t.idle;
        match self.half_closed_ms.load(Ordering::Relaxed) {
            u64::MAX => (idle, "idle"),
            ms => {
                let half = self.start + Duration::from_millis(ms) + t.half_closed;
                if half < idle { (half, "half-closed") } else { (idle, "idle") }
            }
        }
    }
}

/// Splices `tcp` and the stream until both directions finish, or resets both sides on
/// any failure. `force` turning true aborts the flow (shutdown deadline).
pub async fn splice(
    tcp: TcpStream,
    mut send: SendStream,
    mut recv: RecvStream,
    prelude: Prelude,
    timeouts: SpliceTimeouts,
    counters: Arc<Counters>,
    mut force: watch::Receiver<bool>,
) -> FlowEnd {
    let activity = Activity::new();
    let end = {
        let up = tcp_to_stream(&tcp, &mut send, &activity, &counters);
        let down = stream_to_tcp(&mut recv, &tcp, prelude, &activity, &counters, timeouts.reply);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) => FlowEnd::Completed,
                Err(end) => end,
            },
            reason = watchdog(&activity, &timeouts) => FlowEnd::TimedOut(reason),
            _ = crate::node::wait_true(&mut force) => FlowEnd::Aborted,
        }
    };
    if end != FlowEnd::Completed {
        abort(tcp, &mut send, &mut recv, end.reset_code());
    }
    end
}

/// Resets both sides of a flow: stream reset and stopped, TCP closed with an RST.
pub fn abort(tcp: TcpStream, send: &mut SendStream, recv: &mut RecvStream, code: VarInt) {
    let _ = send.reset(code);
    let _ = recv.stop(code);
    reset_tcp(tcp);
}

/// Closes a TCP connection with an RST instead of a FIN.
pub fn reset_tcp(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

async fn watchdog(activity: &Activity, t: &SpliceTimeouts) -> &'static str {
    loop {
        let (deadline, reason) = activity.deadline(t);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = activity.half_closed.notified() => continue,
        }
        let (again, _) = activity.deadline(t);
        if again <= Instant::now() {
            return reason;
        }
    }
}

async fn tcp_to_stream(
    tcp: &TcpStream,
    send: &mut SendStream,
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    loop {
        tcp.readable().await.map_err(|_| FlowEnd::TcpReset)?;
        // Allocated only once the socket is readable, dropped when it would block: an idle
        // flow holds no buffer.
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            if buf.capacity() - buf.len() < SMALL_READ {
                buf = BytesMut::with_capacity(CHUNK);
            }
            match tcp.try_read_buf(&mut buf) {
                Ok(0) => {
                    activity.half_close();
                    send.finish().map_err(|_| FlowEnd::PeerReset(0))?;
                    return Ok(());
                }
                Ok(n) => {
                    activity.touch();
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    let chunk = if n < SMALL_READ {
                        let c = Bytes::copy_from_slice(&buf[..n]);
                        buf.clear();
                        c
                    } else {
                        buf.split().freeze()
                    };
                    send.write_chunk(chunk).await.map_err(write_error)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(FlowEnd::TcpReset),
            }
        }
    }
}

async fn stream_to_tcp(
    recv: &mut RecvStream,
    tcp: &TcpStream,
    prelude: Prelude,
    activity: &Activity,
    counters: &Counters,
    reply_timeout: Duration,
) -> Result<(), FlowEnd> {
    match prelude {
        Prelude::Nothing => {}
        Prelude::WriteFirst(bytes) => write_tcp(tcp, &bytes, activity, counters).await?,
        Prelude::ExpectReply => {
            let rest = tokio::time::timeout(reply_timeout, read_reply(recv))
                .await
                .map_err(|_| FlowEnd::TimedOut("reply"))??;
            write_tcp(tcp, &rest, activity, counters).await?;
        }
    }
    // Chunks arrive about one QUIC packet each; gathering several per writev saves a
    // syscall per packet on bulk flows.
    let mut chunks: [Bytes; GATHER] = Default::default();
    loop {
        match recv.read_chunks(&mut chunks).await {
            Ok(Some(n)) => {
                let written = write_tcp_vectored(tcp, &mut chunks[..n], activity, counters).await;
                chunks[..n].iter_mut().for_each(|c| *c = Bytes::new());
                written?;
            }
            Ok(None) => {
                activity.half_close();
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            Err(e) => return Err(read_error(e)),
        }
    }
}

/// Reads the reply; returns the bytes that followed it in the stream.
async fn read_reply(recv: &mut RecvStream) -> Result<Bytes, FlowEnd> {
    let mut buf = Vec::new();
    loop {
        match wire::decode_reply(&buf) {
            Ok(Decoded::Complete(Reply::Opened, used)) => return Ok(Bytes::copy_from_slice(&buf[used..])),
            Ok(Decoded::Complete(Reply::Refused { reason, hop, detail }, _)) => {
                return Err(FlowEnd::Refused { reason, hop, detail });
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

async fn write_tcp(
    tcp: &TcpStream,
    mut bytes: &[u8],
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    while !bytes.is_empty() {
        tcp.writable().await.map_err(|_| FlowEnd::TcpReset)?;
        match tcp.try_write(bytes) {
            Ok(n) => {
                activity.touch();
                counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(FlowEnd::TcpReset),
        }
    }
    Ok(())
}

async fn write_tcp_vectored(
    tcp: &TcpStream,
    mut chunks: &mut [Bytes],
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    use bytes::Buf;
    while !chunks.is_empty() {
        if chunks[0].is_empty() {
            chunks = &mut chunks[1..];
            continue;
        }
        tcp.writable().await.map_err(|_| FlowEnd::TcpReset)?;
        let slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
        match tcp.try_write_vectored(&slices) {
            Ok(mut n) => {
                activity.touch();
                counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                while n > 0 {
                    let take = n.min(chunks[0].len());
                    chunks[0].advance(take);
                    n -= take;
                    if chunks[0].is_empty() {
                        chunks = &mut chunks[1..];
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(FlowEnd::TcpReset),
        }
    }
    Ok(())
}

fn read_error(e: ReadError) -> FlowEnd {
    match e {
        ReadError::Reset(code) => FlowEnd::PeerReset(code.into_inner()),
        ReadError::ConnectionLost(c) => FlowEnd::LinkLost(c.to_string()),
        other => FlowEnd::LinkLost(other.to_string()),
    }
}

fn write_error(e: WriteError) -> FlowEnd {
    match e {
        WriteError::Stopped(code) => FlowEnd::PeerReset(code.into_inner()),
        WriteError::ConnectionLost(c) => FlowEnd::LinkLost(c.to_string()),
        other => FlowEnd::LinkLost(other.to_string()),
    }
}
