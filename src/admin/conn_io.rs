//! The admin server's socket wrapper: a write deadline, and a short linger at close.
//!
//! hyper bounds the request head (size, count, time); what it does not bound is a client
//! that stops reading, which would hold a connection (and a live-update stream) forever,
//! nor the reset a close sends when the client's bytes were left unread (an oversized
//! head, say), which can destroy the answer before the client reads it. Both live here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long the server keeps reading after its answer, at most.
pub const LINGER: Duration = Duration::from_secs(1);
/// How many bytes the server reads after its answer, at most.
pub const LINGER_BYTES: usize = 64 * 1024;

/// A TCP stream whose writes fail after `write_timeout` without progress, and whose
/// shutdown reads and drops what the client still sends for at most [`LINGER`].
pub(super) struct ConnIo {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed while a write waits; reset by any progress.
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Set once the write side is shut: the linger's deadline and bytes left.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl ConnIo {
    pub(super) fn new(stream: TcpStream, write_timeout: Duration) -> ConnIo {
        ConnIo { stream, write_timeout, write_deadline: None, linger: None }
    }

    /// `Pending` from the socket: arms the deadline, and fails once it has passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let deadline = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "admin client stopped reading"))
    }

    fn progress<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progress(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.progress(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            let result = Pin::new(&mut this.stream).poll_shutdown(cx);
            ready!(this.progress(result, cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep_until(Instant::now() + LINGER)), LINGER_BYTES));
        }
        let Some((deadline, left)) = this.linger.as_mut() else { return Poll::Ready(Ok(())) };
        let mut chunk = [0u8; 4096];
        loop {
            if *left == 0 || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *left = left.saturating_sub(buf.filled().len());
                }
                // The client's close, or an error: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
