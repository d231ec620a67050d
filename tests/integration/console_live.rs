//! The console's live stream (Server-Sent Events) under load, without a browser: 20
//! subscribers on a node while 1,000 flows a second open and close through it. Each
//! subscriber keeps receiving, states are coalesced (at most one per tick whatever the
//! flow rate), streams beyond the cap are refused, and a subscriber that leaves frees its
//! place.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use proxy::console::live::{MAX_SUBSCRIBERS, TICK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUBSCRIBERS: usize = 20;
const FLOWS_PER_SECOND: usize = 1000;
const LOAD: Duration = Duration::from_secs(3);

/// Opens a live stream on `admin` and counts the `state` messages it brings.
async fn subscribe(admin: std::net::SocketAddr, states: Arc<AtomicUsize>) -> tokio::task::JoinHandle<String> {
    let mut stream = TcpStream::connect(admin).await.expect("connect");
    stream
        .write_all(b"GET /api/console/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send");
    tokio::spawn(async move {
        let mut head = String::new();
        let mut partial = String::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return head,
                Ok(n) => n,
            };
            partial.push_str(&String::from_utf8_lossy(&buf[..n]));
            if head.is_empty() && partial.contains("\r\n\r\n") {
                head = partial.split("\r\n\r\n").next().unwrap_or_default().to_string();
            }
            let complete = partial.rfind('\n').map_or(0, |i| i + 1);
            let lines: String = partial.drain(..complete).collect();
            states.fetch_add(lines.lines().filter(|l| *l == "event: state").count(), Ordering::Relaxed);
        }
    })
}

/// One short flow: a few bytes echoed back.
async fn short_flow(entry: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(entry).await else { return false };
    if s.write_all(b"ping").await.is_err() || s.shutdown().await.is_err() {
        return false;
    }
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.is_ok() && back == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_streams_under_a_thousand_flows_a_second_get_coalesced_states() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let (a, _b) = two_nodes(&mesh, echo, "127.0.0.1/32", &[]).await;
    let entry = listener_addr(&a, "in");
    let admin = a.admin_addr();

    let counts: Vec<Arc<AtomicUsize>> = (0..SUBSCRIBERS).map(|_| Arc::default()).collect();
    let mut readers = Vec::new();
    for c in &counts {
        readers.push(subscribe(admin, c.clone()).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || counts.iter().all(|c| c.load(Ordering::Relaxed) >= 1)).await,
        "every stream starts with a state"
    );

    // Flows open and close at the target rate, in batches every 100 ms, for LOAD.
    let before: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let started = Instant::now();
    let mut flows = tokio::task::JoinSet::new();
    let mut batch = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < LOAD {
        batch.tick().await;
        for _ in 0..FLOWS_PER_SECOND / 10 {
            flows.spawn(short_flow(entry));
        }
    }
    let (mut ok, mut total) = (0, 0);
    while let Some(done) = flows.join_next().await {
        total += 1;
        ok += usize::from(done.unwrap_or(false));
    }
    let elapsed = started.elapsed();
    println!("{total} flows in {elapsed:?} ({:.0}/s), {ok} echoed", total as f64 / elapsed.as_secs_f64());
    assert_eq!(ok, total, "every flow echoed");

    // Every stream saw the node change, and no stream got more than one state per tick.
    assert!(
        eventually(Duration::from_secs(10), || counts
            .iter()
            .zip(&before)
            .all(|(c, b)| c.load(Ordering::Relaxed) > *b))
        .await,
        "every stream saw the flows"
    );
    let ceiling = (started.elapsed().as_millis() / TICK.as_millis()) as usize + 3;
    for (c, b) in counts.iter().zip(&before) {
        let during = c.load(Ordering::Relaxed) - b;
        assert!(
            during <= ceiling,
            "{during} states in {:?}: not coalesced (ceiling {ceiling})",
            started.elapsed()
        );
    }

    // The cap: MAX_SUBSCRIBERS streams at once, the next one is refused with 503.
    let extra: Vec<_> = (SUBSCRIBERS..MAX_SUBSCRIBERS).map(|_| Arc::<AtomicUsize>::default()).collect();
    for c in &extra {
        readers.push(subscribe(admin, c.clone()).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || extra.iter().all(|c| c.load(Ordering::Relaxed) >= 1)).await
    );
    let refused = subscribe(admin, Arc::default()).await;
    let head =
        tokio::time::timeout(Duration::from_secs(10), refused).await.expect("answered").expect("reader");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");

    // A subscriber that leaves frees its place.
    readers.pop().expect("a reader").abort();
    let mut again = String::new();
    for _ in 0..50 {
        let c = Arc::<AtomicUsize>::default();
        let reader = subscribe(admin, c.clone()).await;
        if eventually(Duration::from_millis(500), || c.load(Ordering::Relaxed) >= 1).await {
            again = "served".into();
            readers.push(reader);
            break;
        }
        reader.abort();
    }
    assert_eq!(again, "served", "a place came free");
    for r in readers {
        r.abort();
    }
}
