//! TCP socket helpers shared by the flow splices.
//!
//! Sockets that carry flows are armed with `SO_LINGER 0` as soon as they exist, so that any
//! way a flow task can end without completing (an error path, a cancelled task, a panic)
//! closes the socket with an RST rather than a FIN: the application never mistakes a cut
//! flow for a complete one. Only a flow that completed both ways disarms it.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::node::flow::timer::Activity;
use crate::node::observe::stats::Counters;
use crate::node::splice::FlowEnd;

/// Makes a later drop of `tcp` send an RST (see the module comment).
pub(crate) fn arm_reset_on_drop(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Restores a normal close (FIN) for a flow that completed.
pub(crate) fn disarm_reset_on_drop(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(None);
}

/// Closes a TCP connection with an RST instead of a FIN.
pub fn reset_tcp(tcp: TcpStream) {
    arm_reset_on_drop(&tcp);
    drop(tcp);
}

/// Sends FIN on `tcp`; a failure means the connection is already gone.
pub(crate) fn shutdown_write(tcp: &TcpStream) -> Result<(), FlowEnd> {
    socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write).map_err(|_| FlowEnd::TcpReset)
}

/// Completes when the socket reports an error (an RST from the application), so a reset
/// is passed on even when no direction is reading or writing it at that moment.
pub(crate) async fn error_reported(tcp: &TcpStream) {
    loop {
        if tcp.ready(Interest::ERROR).await.is_err() {
            return;
        }
        if matches!(tcp.take_error(), Ok(Some(_)) | Err(_)) {
            return;
        }
        // Readiness without a pending error: clear it and wait for the next event.
        let _ = tcp.try_io(Interest::ERROR, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
    }
}

/// Writes all of `bytes`.
pub(crate) async fn write_all(
    tcp: &TcpStream,
    mut bytes: &[u8],
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    while !bytes.is_empty() {
        tcp.writable().await.map_err(|_| FlowEnd::TcpReset)?;
        match tcp.try_write(bytes) {
            Ok(n) => {
                activity.moved(n as u64);
                counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(FlowEnd::TcpReset),
        }
    }
    Ok(())
}

/// Most chunks handed to one `writev`.
const MAX_SLICES: usize = 32;

/// Writes all of `chunks` with as few `writev` calls as the socket allows.
pub(crate) async fn write_all_vectored(
    tcp: &TcpStream,
    mut chunks: &mut [Bytes],
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    while !chunks.is_empty() {
        if chunks[0].is_empty() {
            chunks = &mut chunks[1..];
            continue;
        }
        tcp.writable().await.map_err(|_| FlowEnd::TcpReset)?;
        // On the stack: this runs once per write on the bulk path.
        let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
        let count = chunks.len().min(MAX_SLICES);
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = io::IoSlice::new(chunk);
        }
        match tcp.try_write_vectored(&slices[..count]) {
            Ok(mut n) => {
                activity.moved(n as u64);
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
