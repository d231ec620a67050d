//! UDP benchmark: `cargo bench --bench udp`.
//!
//! Two in-process nodes on loopback (a: origin, b: exit; flows sealed end to end, the
//! default), measured in one run against their baselines:
//! - 64-byte round trip p50/p99: UDP direct, TCP direct, a TCP flow through the two nodes,
//!   a UDP association through the same two nodes (aim: UDP within 1.5x the TCP flow);
//! - datagrams per second through the two nodes: one client and four clients sending
//!   64-byte datagrams to a counting sink, paced at 50k to 200k datagrams/s in total and
//!   flat out; delivered rate and loss, with the origin's `congested` drops (aim: at least
//!   100k/s), and one sender straight to the sink as the baseline.
//!
//! Environment: `BENCH_RTT_ROUNDS` (default 10000), `BENCH_DATAGRAMS` (per client when
//! flat out, default 400000), `BENCH_UDP_SECONDS` (per paced run, default 2).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// A UDP echo server on loopback.
async fn udp_echo() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

/// A UDP sink: counts datagrams and remembers when the last one came.
struct Sink {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

async fn udp_sink() -> Result<Sink> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let addr = socket.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let last = Arc::new(std::sync::Mutex::new(None));
    let (c, l) = (count.clone(), last.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while socket.recv(&mut buf).await.is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
            *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    });
    Ok(Sink { addr, count, last })
}

/// 64-byte round trips over a connected UDP socket to `entry`.
async fn udp_rtt(entry: SocketAddr, rounds: usize) -> Result<(Duration, Duration)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(entry).await?;
    let msg = [7u8; 64];
    let mut buf = [0u8; 128];
    let mut samples = Vec::with_capacity(rounds);
    // Warm-up: the first datagram opens the association.
    for i in 0..rounds + 100 {
        let t = Instant::now();
        socket.send(&msg).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .context("udp echo")??;
        anyhow::ensure!(n == 64, "echo of {n} bytes");
        if i >= 100 {
            samples.push(t.elapsed());
        }
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

/// 64-byte round trips over one TCP connection to `entry`.
async fn tcp_rtt(entry: SocketAddr, rounds: usize) -> Result<(Duration, Duration)> {
    let mut s = TcpStream::connect(entry).await?;
    s.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        if i >= 100 {
            samples.push(t.elapsed());
        }
    }
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

/// How `clients` senders send `per_client` 64-byte datagrams each: as fast as they can,
/// or paced at a total rate (datagrams per second, in bursts once a millisecond).
#[derive(Clone, Copy)]
enum Pace {
    Flat,
    Rate(usize),
}

/// `clients` senders, each `per_client` 64-byte datagrams to `entry` at `pace`; returns
/// what reached the sink and the delivered rate (first send to last arrival).
async fn blast(
    entry: SocketAddr,
    sink: &Sink,
    clients: usize,
    per_client: usize,
    pace: Pace,
) -> Result<(u64, f64)> {
    let before = sink.count.load(Ordering::Relaxed);
    // One datagram per client first, so associations are open before the clock starts.
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(entry).await?;
        s.send(&[0u8; 64]).await?;
        sockets.push(s);
    }
    let warm = before + clients as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.count.load(Ordering::Relaxed) < warm && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start_count = sink.count.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in sockets {
        tasks.push(tokio::spawn(async move {
            let msg = [1u8; 64];
            match pace {
                Pace::Flat => {
                    for i in 0..per_client {
                        let _ = s.send(&msg).await;
                        if i % 64 == 63 {
                            // A sender that never yields would starve the nodes on two cores.
                            tokio::task::yield_now().await;
                        }
                    }
                }
                Pace::Rate(total) => {
                    let per_ms = (total / clients / 1000).max(1);
                    let mut tick = tokio::time::interval(Duration::from_millis(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut sent = 0;
                    while sent < per_client {
                        tick.tick().await;
                        for _ in 0..per_ms.min(per_client - sent) {
                            let _ = s.send(&msg).await;
                            sent += 1;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    // Wait until the sink has been quiet for 300 ms (bounded).
    let mut seen = sink.count.load(Ordering::Relaxed);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sink.count.load(Ordering::Relaxed);
        if now == seen {
            break;
        }
        seen = now;
    }
    let got = seen - start_count;
    let last = sink.last.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(start);
    let secs = last.saturating_duration_since(start).as_secs_f64().max(1e-9);
    Ok((got, got as f64 / secs))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn rtt_suite(title: &str, dir: &std::path::Path, rounds: usize) -> Result<()> {
    let tcp_echo = common::echo_server().await?;
    let echo = udp_echo().await?;
    let (a, b) = pair(dir, tcp_echo, echo).await?;
    let tcp_entry = entry(&a, "tcp")?;
    let udp_entry = entry(&a, "udp")?;
    println!();
    println!("64-byte round trip, {rounds} rounds, {title}:");
    println!("{:<34} {:>10} {:>10}", "", "p50", "p99");
    let rows = [
        ("UDP direct", udp_rtt(echo, rounds).await?),
        ("TCP direct", tcp_rtt(tcp_echo, rounds).await?),
        ("TCP flow through 2 nodes", tcp_rtt(tcp_entry, rounds).await?),
        ("UDP association through 2 nodes", udp_rtt(udp_entry, rounds).await?),
    ];
    for (name, (p50, p99)) in &rows {
        println!("{name:<34} {:>7.1} µs {:>7.1} µs", us(*p50), us(*p99));
    }
    let ratio = rows[3].1.0.as_secs_f64() / rows[2].1.0.as_secs_f64();
    println!("UDP / TCP through the mesh, p50: {ratio:.2}x (aim <= 1.5x)");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

async fn rate_suite(dir: &std::path::Path, per_client: usize, seconds: usize) -> Result<()> {
    let tcp_echo = common::echo_server().await?;
    let sink = udp_sink().await?;
    let (a, b) = pair(dir, tcp_echo, sink.addr).await?;
    let udp_entry = entry(&a, "udp")?;
    println!();
    println!(
        "64-byte datagrams to a counting sink, tokio 2 worker threads (senders, sink and both nodes share the 2 cores):"
    );
    println!(
        "{:<44} {:>10} {:>12} {:>8} {:>10} {:>10}",
        "", "sent", "delivered", "loss", "rate/s", "congested"
    );
    let (got, rate) = blast(sink.addr, &sink, 1, per_client, Pace::Flat).await?;
    println!(
        "{:<44} {:>10} {:>12} {:>7.1}% {:>10.0} {:>10}",
        "direct, 1 client, flat out",
        per_client,
        got,
        loss(per_client as u64, got),
        rate,
        "-"
    );
    let mut runs: Vec<(usize, Pace, String)> = Vec::new();
    for clients in [1, 4] {
        for total in [50_000, 100_000, 150_000, 200_000] {
            runs.push((
                clients,
                Pace::Rate(total),
                format!("through 2 nodes, {clients} client(s), paced {}k/s", total / 1000),
            ));
        }
        runs.push((clients, Pace::Flat, format!("through 2 nodes, {clients} client(s), flat out")));
    }
    for (clients, pace, name) in runs {
        let n = match pace {
            Pace::Rate(total) => total * seconds / clients,
            Pace::Flat => per_client,
        };
        let before = a.stats().udp.dropped("congested");
        let (got, rate) = blast(udp_entry, &sink, clients, n, pace).await?;
        let congested = a.stats().udp.dropped("congested") - before;
        let sent = (clients * n) as u64;
        println!("{name:<44} {sent:>10} {got:>12} {:>7.1}% {rate:>10.0} {congested:>10}", loss(sent, got));
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

fn loss(sent: u64, got: u64) -> f64 {
    100.0 * sent.saturating_sub(got) as f64 / sent.max(1) as f64
}

fn entry(node: &proxy::Node, name: &str) -> Result<SocketAddr> {
    node.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr).context("listener")
}

/// Exit b, and origin a with a TCP listener `tcp` to `tcp_target` and a UDP listener `udp`
/// to `udp_target`, both exiting at b.
async fn pair(
    dir: &std::path::Path,
    tcp_target: SocketAddr,
    udp_target: SocketAddr,
) -> Result<(proxy::Node, proxy::Node)> {
    let b = common::node(dir, "b", "peers: [ { name: a } ]\nexit_policy: { allow: [\"127.0.0.1/32\"] }", "")
        .await?;
    let b_addr = b.mesh_addr()?;
    let body = format!(
        "listeners: [ {{ name: tcp, bind: \"127.0.0.1:0\" }}, {{ name: udp, bind: \"127.0.0.1:0\", protocol: udp }} ]\n\
         peers: [ {{ name: b, address: \"{b_addr}\" }} ]\n\
         routes: [ {{ name: tcp, match: {{ listener: tcp }}, target: \"{tcp_target}\", exit: b }}, \
         {{ name: udp, match: {{ listener: udp }}, target: \"{udp_target}\", exit: b }} ]"
    );
    let a = common::node(dir, "a", &body, "").await?;
    anyhow::ensure!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a -> b");
    Ok((a, b))
}

fn main() -> Result<()> {
    let dir = common::make_mesh("udp-bench", &["a", "b"])?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path) -> Result<()> {
    let rounds = env_usize("BENCH_RTT_ROUNDS", 10_000);
    let per_client = env_usize("BENCH_DATAGRAMS", 400_000);
    println!("proxy UDP benchmark: loopback, both nodes in this process, flows sealed end to end");
    // As in the data-plane bench: one thread keeps a round trip on one core, free of the
    // virtual machine's idle-CPU wake-up latency; two threads use both cores.
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    multi.block_on(rtt_suite("tokio, 2 worker threads", dir, rounds))?;
    let single = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    single.block_on(rtt_suite("tokio, 1 thread", dir, rounds))?;
    multi.block_on(rate_suite(dir, per_client, env_usize("BENCH_UDP_SECONDS", 2)))?;
    Ok(())
}
