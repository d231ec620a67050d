//! Idle and half-closed timeouts measure progress: a flow whose bytes are still being
//! delivered over a slow link is not cut, however long that takes; a flow whose bytes move
//! nowhere is still cut at its limit.
//!
//! The slow link is the user-space emulator with a rate limit: the transfers below cannot
//! take less than several times the timeouts they run under, whatever the machine's load.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxy::emulator::LinkProfile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// 4 Mbit/s, 20 ms each way, 1% loss, a queue of 128 packets (about a quarter second at
/// this rate, so the link's round trip stays short while it is full).
fn slow_lossy_link() -> LinkProfile {
    LinkProfile {
        delay: Duration::from_millis(20),
        loss: 0.01,
        rate_bps: Some(4_000_000),
        queue_limit: 128,
        ..LinkProfile::ideal()
    }
}

/// The time `bytes` need at least at the slow link's rate.
fn wire_time(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 * 8.0 / 4_000_000.0)
}

/// A target that reads each connection to its end and answers with the SHA-256 of what it
/// read, then closes.
async fn hashing_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok((_, hash)) = read_all_hash(&mut s).await {
                    let _ = s.write_all(&hash).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A target that reads a one-byte request `seed`, answers with `len` pattern bytes of
/// that seed and closes its sending side; it keeps reading until the client closes.
async fn download_target(len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut seed = [0u8; 1];
                if r.read_exact(&mut seed).await.is_err() {
                    return;
                }
                if send_pattern(&mut w, u64::from(seed[0]), len).await.is_ok() {
                    let _ = w.shutdown().await;
                }
                let _ = read_all_hash(&mut r).await;
            });
        }
    });
    addr
}

/// Uploads `len` pattern bytes, half-closes, and checks the target's SHA-256 of them.
async fn upload_and_check(entry: SocketAddr, seed: u64, len: usize) -> Result<(), String> {
    let mut c = connect(entry).await;
    let sent = send_pattern(&mut c, seed, len).await.map_err(|e| format!("flow {seed}: write: {e}"))?;
    c.shutdown().await.map_err(|e| format!("flow {seed}: half-close: {e}"))?;
    let answer = read_to_end_or_error(&mut c).await.map_err(|e| format!("flow {seed}: cut: {e:?}"))?;
    if answer != sent {
        return Err(format!("flow {seed}: the target's hash differs ({} bytes of answer)", answer.len()));
    }
    Ok(())
}

/// Runs `flows` uploads of `len` bytes at once; returns the failures.
async fn uploads(entry: SocketAddr, flows: u64, len: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..flows).map(|i| tokio::spawn(upload_and_check(entry, i + 1, len))).collect();
    let mut failed = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(format!("task: {e}")),
        }
    }
    failed
}

fn limits(spec: &mut NodeSpec<'_>, lines: &[&str]) {
    spec.limits = lines.iter().map(|l| l.to_string()).collect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_uploads_slower_than_the_half_closed_timeout_complete() {
    let mesh = Mesh::new(&["a", "b"]);
    let target = hashing_target().await;
    let (a, _b, _emu) = pair_through_emulator_tuned(&mesh, target, slow_lossy_link(), |spec| {
        limits(spec, &["half_closed_timeout: \"1s\"", "idle_timeout: \"60s\""])
    })
    .await;
    // The defect this guards against: every client half-closes at once, its bytes sit in
    // the origin's QUIC send buffer and cross the slow link for seconds; the origin saw no
    // byte move for a second and reset them all while they were still being delivered.
    let (flows, len) = (8, 320 * 1024);
    let started = std::time::Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(120), uploads(listener_addr(&a, "in"), flows, len))
        .await
        .expect("uploads end");
    assert!(failed.is_empty(), "uploads cut or damaged: {failed:?}");
    // The link's rate makes the transfer last several half-closed timeouts.
    assert!(started.elapsed() >= wire_time(flows as usize * len), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_slower_than_the_idle_timeout_complete() {
    let mesh = Mesh::new(&["a", "b"]);
    let len = 640 * 1024;
    let target = download_target(len).await;
    let (a, _b, _emu) = pair_through_emulator_tuned(&mesh, target, slow_lossy_link(), |spec| {
        limits(spec, &["idle_timeout: \"1s\"", "half_closed_timeout: \"60s\""])
    })
    .await;
    // The target's answer goes into the exit's QUIC send buffer at once and its end right
    // behind it; the exit then reads and writes nothing for the seconds the answer takes
    // to cross the link, longer than the idle timeout.
    let entry = listener_addr(&a, "in");
    let flows = 4u8;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (1..=flows)
        .map(|seed| {
            tokio::spawn(async move {
                let mut c = connect(entry).await;
                c.write_all(&[seed]).await.map_err(|e| format!("flow {seed}: request: {e}"))?;
                let (got, hash) =
                    read_all_hash(&mut c).await.map_err(|e| format!("flow {seed}: cut: {e}"))?;
                let mut expected = Vec::new();
                send_pattern(&mut expected, u64::from(seed), len).await.map_err(|e| e.to_string())?;
                if (got, hash) != (len, sha256(&expected)) {
                    return Err(format!("flow {seed}: {got} bytes, or not the bytes sent"));
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(120), t).await {
            Ok(Ok(Ok(()))) => {}
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(failed.is_empty(), "downloads cut or damaged: {failed:?}");
    assert!(started.elapsed() >= wire_time(usize::from(flows) * len), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_stuck_behind_a_target_that_never_reads_is_still_cut_at_the_idle_timeout() {
    let mesh = Mesh::new(&["a", "b"]);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let limits = ["idle_timeout: \"1s\"", "half_closed_timeout: \"60s\""];
    let (a, _b) = two_nodes(&mesh, target, "127.0.0.1/32", &limits).await;
    let c = connect(listener_addr(&a, "in")).await;
    // The target accepts and never reads: the client fills every window on the way and
    // then sends nothing more. Nothing is read, written or acknowledged anywhere.
    let (_held, _) = server.accept().await.expect("accept");
    let (mut r, mut w) = c.into_split();
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    let cut_while_writing = loop {
        match tokio::time::timeout(Duration::from_millis(500), w.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            // Only the node resets this socket: the cut came while a write waited.
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        assert!(written < 256 * 1024 * 1024, "the client was never slowed down");
    };
    if !cut_while_writing {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf)).await.expect("cut in time");
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the stuck flow must be reset: {r:?} after {written} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_upload_whose_link_goes_silent_is_still_cut_at_the_half_closed_timeout() {
    let mesh = Mesh::new(&["a", "b"]);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    // The link itself outlives the test: the flow must be cut by its own timeout, not by
    // the loss of the link.
    let (a, _b, emu) = pair_through_emulator_tuned(&mesh, target, slow_lossy_link(), |spec| {
        limits(spec, &["half_closed_timeout: \"1s\"", "idle_timeout: \"60s\""]);
        spec.link_idle = "60s";
    })
    .await;
    let mut c = connect(listener_addr(&a, "in")).await;
    c.write_all(b"first").await.expect("write");
    let (mut s, _) = server.accept().await.expect("accept");
    let mut first = [0u8; 5];
    s.read_exact(&mut first).await.expect("the flow is open");
    // Two seconds' worth of upload goes into the origin's send buffer, the client
    // half-closes, and the link drops everything: nothing is acknowledged any more.
    emu.set_both(LinkProfile::blackholed());
    send_pattern(&mut c, 1, 1024 * 1024).await.expect("upload into the buffers");
    c.shutdown().await.expect("half-close");
    let r = tokio::time::timeout(Duration::from_secs(30), read_to_end_or_error(&mut c))
        .await
        .expect("cut in time");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset), "the stalled flow must be reset");
    // Cut by the flow's timeout: the link (idle timeout 60 s) was still up.
    assert!(a.peers().iter().any(|p| p.id == "b" && p.connected), "the link went down instead");
}
