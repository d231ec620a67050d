//! Traffic the demo drives through a node's listener: round trips of new flows, and a
//! bulk flow whose echo is checked byte for byte, and the echo service behind them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The shortest round trip of `samples` new flows through `entry`: connect, send a byte,
/// get it back (the exit dials the service in the same flow, as an application sees it).
pub async fn flow_rtt(entry: SocketAddr, samples: usize, within: Duration) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..samples {
        let started = Instant::now();
        let one = async {
            let mut s = TcpStream::connect(entry).await.ok()?;
            s.set_nodelay(true).ok()?;
            s.write_all(b"x").await.ok()?;
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.ok()?;
            Some(started.elapsed())
        };
        if let Ok(Some(rtt)) = tokio::time::timeout(within, one).await {
            best = Some(best.map_or(rtt, |b| b.min(rtt)));
        }
    }
    best
}

/// What a bulk flow did.
#[derive(Debug, Clone, Copy)]
pub struct BulkOutcome {
    /// Bytes echoed back.
    pub received: usize,
    /// Whether they are exactly the bytes sent (SHA-256 of both).
    pub intact: bool,
    /// From connect to the last byte back.
    pub took: Duration,
}

/// Sends `len` pseudo-random bytes through `entry` to the echo service and reads them
/// back, checking the SHA-256 of both directions; gives up after `within`.
pub async fn bulk_flow(entry: SocketAddr, len: usize, within: Duration) -> anyhow::Result<BulkOutcome> {
    transfer(entry, len, within, &AtomicUsize::new(0))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bulk flow did not finish within {within:?}"))
}

/// How a bulk flow with a time cap ended.
#[derive(Debug, Clone, Copy)]
pub enum Capped {
    /// It finished within the cap.
    Done(BulkOutcome),
    /// The cap passed first: `received` bytes had come back by then.
    GaveUp {
        /// Bytes echoed back before the cap.
        received: usize,
        /// The cap.
        after: Duration,
    },
}

/// [`bulk_flow`], but a flow still running at `cap` is a result, not an error: what it
/// got through by then measures a path too slow to wait for.
pub async fn bulk_flow_capped(entry: SocketAddr, len: usize, cap: Duration) -> anyhow::Result<Capped> {
    let received = AtomicUsize::new(0);
    Ok(match transfer(entry, len, cap, &received).await? {
        Some(outcome) => Capped::Done(outcome),
        None => Capped::GaveUp { received: received.load(Ordering::Relaxed), after: cap },
    })
}

/// The bulk flow; `None` when `within` passed before it finished, with the bytes back so
/// far in `received`.
async fn transfer(
    entry: SocketAddr,
    len: usize,
    within: Duration,
    received: &AtomicUsize,
) -> anyhow::Result<Option<BulkOutcome>> {
    let started = Instant::now();
    let stream = tokio::time::timeout(within, TcpStream::connect(entry))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {entry}"))??;
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = Context::new(&SHA256);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            for b in &mut chunk[..n] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            w.write_all(&chunk[..n]).await?;
            sent.update(&chunk[..n]);
            left -= n;
        }
        w.shutdown().await?;
        anyhow::Ok(sent.finish())
    });
    let abort = writer.abort_handle();
    let run = async {
        let mut got = Context::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.update(&buf[..n]);
            received.fetch_add(n, Ordering::Relaxed);
        }
        let sent = writer.await??;
        let received = received.load(Ordering::Relaxed);
        let intact = received == len && sent.as_ref() == got.finish().as_ref();
        anyhow::Ok(BulkOutcome { received, intact, took: started.elapsed() })
    };
    let outcome = tokio::time::timeout(within, run).await;
    // On a timeout the writer may still be blocked on a stalled flow: stop it.
    abort.abort();
    outcome.ok().transpose()
}

/// An echo service on a free loopback port: every byte back, per connection, then a
/// finish once the client finished. The checked transfers run against it.
pub async fn echo_service() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // tokio's copy holds one small buffer per connection: an idle connection
                // costs the service next to nothing (the soak measures memory per flow).
                let (mut r, mut w) = stream.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok((addr, task))
}
