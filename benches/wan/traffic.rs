//! Bytes to send and places to send them: a fixed pseudo-random pattern, a TCP sink that
//! hashes and counts, uploads checked end to end by SHA-256, timeouts and RTT sampling.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ring::digest::{Context as Digest, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Length of the repeated pattern: odd, so that its repeats do not line up with write
/// chunks or packets (a chunk dropped or repeated shows in the hash).
const PATTERN_LEN: usize = 4 * 1024 * 1024 + 7;
/// Bytes per write.
const CHUNK: usize = 64 * 1024;

fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        (0..PATTERN_LEN)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    })
}

/// The next chunk of the pattern at stream offset `sent`, at most `left` bytes.
fn chunk_at(sent: u64, left: u64) -> &'static [u8] {
    let p = pattern();
    let start = (sent % PATTERN_LEN as u64) as usize;
    let n = (PATTERN_LEN - start).min(CHUNK).min(left.try_into().unwrap_or(usize::MAX));
    &p[start..start + n]
}

/// SHA-256 of the first `len` bytes of the repeated pattern; computed before a timed run
/// (and cached), so the sender spends no time hashing while it is measured.
pub fn expected_hash(len: u64) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&len) {
        return h.clone();
    }
    let mut hash = Digest::new(&SHA256);
    let mut sent = 0;
    while sent < len {
        let c = chunk_at(sent, len - sent);
        hash.update(c);
        sent += c.len() as u64;
    }
    let h = hash.finish().as_ref().to_vec();
    cache.lock().unwrap_or_else(PoisonError::into_inner).insert(len, h.clone());
    h
}

/// Writes the first `len` bytes of the pattern.
pub async fn write_pattern<W: AsyncWrite + Unpin>(w: &mut W, len: u64) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < len {
        let c = chunk_at(sent, len - sent);
        w.write_all(c).await?;
        sent += c.len() as u64;
    }
    Ok(())
}

/// Writes the pattern until `stop` is set; returns the bytes written.
pub async fn write_until<W: AsyncWrite + Unpin>(w: &mut W, stop: &AtomicBool) -> std::io::Result<u64> {
    write_counted(w, stop, &AtomicU64::new(0)).await
}

/// Like [`write_until`], adding each write to `counter` as it completes.
pub async fn write_counted<W: AsyncWrite + Unpin>(
    w: &mut W,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> std::io::Result<u64> {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = chunk_at(sent, u64::MAX);
        w.write_all(c).await?;
        sent += c.len() as u64;
        counter.fetch_add(c.len() as u64, Ordering::Relaxed);
    }
    Ok(sent)
}

/// Reads to the end, counting into `counter` as bytes arrive; returns the SHA-256.
pub async fn hash_to_end<R: AsyncRead + Unpin>(r: &mut R, counter: &AtomicU64) -> std::io::Result<Vec<u8>> {
    let mut hash = Digest::new(&SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf).await? {
            0 => return Ok(hash.finish().as_ref().to_vec()),
            n => {
                hash.update(&buf[..n]);
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// A TCP sink on loopback: reads each connection to its end and answers with its SHA-256.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Bytes received so far over all its connections.
    pub received: Arc<AtomicU64>,
}

/// Starts a [`Sink`].
pub async fn sink() -> Result<Sink> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                if let Ok(h) = hash_to_end(&mut s, &counter).await {
                    let _ = s.write_all(&h).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    Ok(Sink { addr, received })
}

/// A TCP target that accepts and never reads: what a stalled application looks like. Its
/// receive buffer is small (accepted sockets inherit it), so a stalled flow stops after
/// what the mesh itself buffers, not after megabytes of loopback autotuning.
pub async fn staller() -> Result<SocketAddr> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let l = socket.listen(1024)?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    Ok(addr)
}

/// After writing, reads the peer's answer and checks it against the hash of `len` bytes.
async fn check_answer<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> Result<()> {
    let mut answer = Vec::new();
    r.read_to_end(&mut answer).await?;
    anyhow::ensure!(answer == expected_hash(len), "the sink got different bytes ({} bytes sent)", len);
    Ok(())
}

/// Sends `len` bytes through the TCP entry `entry` to a [`Sink`] and checks its hash.
pub async fn tcp_upload(entry: SocketAddr, len: u64) -> Result<()> {
    let mut c = TcpStream::connect(entry).await?;
    c.set_nodelay(true)?;
    write_pattern(&mut c, len).await?;
    c.shutdown().await?;
    check_answer(&mut c, len).await
}

/// Sends through `entry` until `stop`, then finishes and checks the sink's hash; returns
/// the bytes sent.
pub async fn tcp_stream_until(entry: SocketAddr, stop: Arc<AtomicBool>) -> Result<u64> {
    let mut c = TcpStream::connect(entry).await?;
    c.set_nodelay(true)?;
    let sent = write_until(&mut c, &stop).await?;
    c.shutdown().await?;
    check_answer(&mut c, sent).await?;
    Ok(sent)
}

/// Sends through a QUIC stream `len` bytes and checks the answer.
pub async fn quic_upload(conn: &quinn::Connection, len: u64) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_pattern(&mut send, len).await?;
    send.finish()?;
    check_answer(&mut recv, len).await
}

/// Connect, one byte out and its echo back: how long a new flow takes to open.
pub async fn open_time(entry: SocketAddr) -> Result<Duration> {
    let start = Instant::now();
    let mut c = TcpStream::connect(entry).await?;
    c.set_nodelay(true)?;
    c.write_all(&[7]).await?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.context("no echo")?;
    Ok(start.elapsed())
}

/// How a bounded transfer ended.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Bytes delivered (all of them, or those counted by the timeout).
    pub bytes: u64,
    /// Time taken, or the limit.
    pub elapsed: Duration,
    /// Cut at the limit.
    pub timed_out: bool,
}

impl Timed {
    /// Goodput in Mbit/s.
    pub fn mbit(&self) -> f64 {
        crate::net::mbit(self.bytes, self.elapsed)
    }

    /// Goodput, with `t/o` when the transfer was cut.
    pub fn cell(&self) -> String {
        format!("{:.1}{}", self.mbit(), if self.timed_out { " t/o" } else { "" })
    }
}

/// Runs a transfer of `len` bytes with a time limit; on timeout, the bytes delivered are
/// what `counter` (the receiver's) gained meanwhile.
pub async fn timed(
    transfer: impl Future<Output = Result<()>>,
    len: u64,
    counter: &AtomicU64,
    limit: Duration,
) -> Result<Timed> {
    let base = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    match tokio::time::timeout(limit, transfer).await {
        Ok(done) => {
            done?;
            Ok(Timed { bytes: len, elapsed: start.elapsed(), timed_out: false })
        }
        Err(_) => {
            let bytes = counter.load(Ordering::Relaxed).saturating_sub(base);
            Ok(Timed { bytes, elapsed: limit, timed_out: true })
        }
    }
}

/// Runs `fut`, calling `sample` every 50 ms meanwhile; returns its output and the samples.
pub async fn sampled<T>(
    fut: impl Future<Output = T>,
    mut sample: impl FnMut() -> Option<f64>,
) -> (T, Vec<f64>) {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            out = &mut fut => return (out, samples),
            _ = tick.tick() => samples.extend(sample()),
        }
    }
}

/// The median of `v` (0 when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
