//! Link transport benchmark: `cargo bench --bench transports`.
//!
//! In one run, nodes in this process, on loopback:
//!
//! 1. `bulk`: one flow through two nodes whose link runs over QUIC, then over TLS on TCP
//!    (QUIC packets inside one TLS connection): bulk throughput (SHA-256 checked by
//!    nothing but byte count here; the tests check bytes), 64-byte round trip p50, and the
//!    time to a new flow's first echoed byte. Direct TCP is the baseline of both. Aim: TCP
//!    link bulk at least 0.8x the QUIC link's.
//! 2. `fallback`: the peer's UDP is blackholed (a user-space relay drops everything): time
//!    from the node's start to the first echoed byte of a flow over the TCP link that the
//!    default `mesh.fallback_after` (1 s) brings up. Aim: under 3 s. Then UDP returns:
//!    time until new flows use QUIC, against `mesh.quic_probe_interval`. Aim: within one
//!    interval.
//!
//! 3. `wan`: one flow over an 80 ms, 0.1%-loss (each way), 100 Mbit/s path, over a QUIC
//!    link and over a TLS/TCP link (kernel TCP with `bbr`, the family of the default
//!    `model` controller). Both cross the same path: two network namespaces joined by TUN
//!    devices through this process ([`tun_path`]), whose own ceiling (no delay, loss or rate
//!    limit) is measured first. Aim: the TCP link within 20% of the QUIC link. Needs root;
//!    skipped with a message otherwise.
//!
//! Environment: `BENCH_SECTIONS` (default `bulk,fallback,wan`), `BENCH_BULK_MIB` (default
//! 1024), `BENCH_RTT_ROUNDS` (default 5000), `BENCH_NEW_FLOWS` (default 200),
//! `BENCH_PROBE_SECS` (default 5), `BENCH_WAN_MIB` (default 48).

#[path = "common/mod.rs"]
mod common;
#[path = "transports/tun_path.rs"]
mod tun_path;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proxy::Node;
use proxy::emulator::{LinkEmulator, LinkProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::env_usize;

const CHUNK: usize = 64 * 1024;

/// What one row measures.
struct Figures {
    gbit: f64,
    rtt_p50: Duration,
    new_flow_p50: Duration,
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// A TCP sink on loopback that reads each connection to its end.
async fn sink_server() -> Result<SocketAddr> {
    let l = proxy::node::bind_listener("127.0.0.1:0".parse()?)?;
    let addr = l.local_addr()?;
    common::serve_sink(l);
    Ok(addr)
}

/// Sends `bytes` to `entry` (a sink), half-closes, waits for the sink's acknowledgement;
/// Gbit/s.
async fn bulk(entry: SocketAddr, bytes: u64) -> Result<f64> {
    upload(TcpStream::connect(entry).await?, bytes).await
}

/// Sends `bytes` on `s` (to a sink), half-closes, waits for the sink's acknowledgement;
/// Gbit/s.
async fn upload(mut s: TcpStream, bytes: u64) -> Result<f64> {
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf).await?;
        sent += CHUNK as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut ack))
        .await
        .context("no acknowledgement from the sink within 120 s")??;
    Ok(sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

/// Round trips of 64 bytes on one connection to an echo entry.
async fn round_trips(entry: SocketAddr, rounds: usize) -> Result<Duration> {
    let mut s = TcpStream::connect(entry).await?;
    s.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        samples.push(t.elapsed());
    }
    Ok(p50(samples))
}

/// Time to the first echoed byte of each of `n` new connections.
async fn new_flows(entry: SocketAddr, n: usize) -> Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect(entry).await?;
        s.write_all(b"x").await?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await?;
        samples.push(t.elapsed());
    }
    Ok(p50(samples))
}

async fn figures(bulk_entry: SocketAddr, echo_entry: SocketAddr, bytes: u64) -> Result<Figures> {
    let gbit = bulk(bulk_entry, bytes).await?;
    let rtt_p50 = round_trips(echo_entry, env_usize("BENCH_RTT_ROUNDS", 5000)).await?;
    let new_flow_p50 = new_flows(echo_entry, env_usize("BENCH_NEW_FLOWS", 200)).await?;
    Ok(Figures { gbit, rtt_p50, new_flow_p50 })
}

/// Exit `b`, accepting links over TCP on a port of their own.
async fn exit_b(dir: &Path) -> Result<Node> {
    let body = "peers: [ { name: a } ]\nexit_policy: { allow: [\"127.0.0.1/32\"] }";
    common::node(dir, "b", body, "tcp_bind: \"127.0.0.1:0\"").await
}

/// Origin `a` with routes `bulk` and `echo` to `targets` at `b`, its peer `b` of `type`
/// `kind` at `address` (and `tcp_address`, for `auto`).
async fn origin_a(
    dir: &Path,
    kind: &str,
    targets: (SocketAddr, SocketAddr),
    (address, tcp_address): (String, Option<String>),
    a_mesh: &str,
) -> Result<Node> {
    let tcp = tcp_address.map(|t| format!(", tcp_address: \"{t}\"")).unwrap_or_default();
    let (sink, echo) = targets;
    let body = format!(
        "listeners: [ {{ name: bulk, bind: \"127.0.0.1:0\" }}, {{ name: echo, bind: \"127.0.0.1:0\" }} ]\npeers: [ {{ name: b, type: {kind}, address: \"{address}\"{tcp} }} ]\nroutes:\n  - {{ name: bulk, match: {{ listener: bulk }}, target: \"{sink}\", exit: b }}\n  - {{ name: echo, match: {{ listener: echo }}, target: \"{echo}\", exit: b }}"
    );
    common::node(dir, "a", &body, a_mesh).await
}

fn entry(node: &Node, name: &str) -> Result<SocketAddr> {
    node.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr).context("no such listener")
}

async fn echoed(entry: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect(entry).await?;
    s.write_all(b"r").await?;
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await?;
    Ok(())
}

async fn transport_of(node: &Node, peer: &str) -> Option<&'static str> {
    node.peers().into_iter().find(|p| p.id == peer && p.connected).and_then(|p| p.transport)
}

fn row(name: &str, f: &Figures) {
    println!(
        "{name:<28} {:>9.2} Gbit/s {:>10.1} µs {:>10.1} µs",
        f.gbit,
        f.rtt_p50.as_secs_f64() * 1e6,
        f.new_flow_p50.as_secs_f64() * 1e6
    );
}

async fn bulk_section(dir: &Path, bytes: u64) -> Result<()> {
    let sink = sink_server().await?;
    let echo = common::echo_server().await?;
    println!("1. bulk: one flow through two nodes, {} MiB, loopback", bytes >> 20);
    println!("{:<28} {:>16} {:>13} {:>13}", "", "bulk", "rtt64 p50", "new flow p50");
    let direct = figures(sink, echo, bytes).await?;
    row("direct TCP", &direct);
    let mut rows = Vec::new();
    for (kind, name) in [("quic", "QUIC link"), ("tcp", "TLS/TCP link")] {
        let b = exit_b(dir).await?;
        let addr = if kind == "tcp" { b.tcp_links_addr().context("no TCP links")? } else { b.mesh_addr()? };
        let a = origin_a(dir, kind, (sink, echo), (addr.to_string(), None), "").await?;
        echoed(entry(&a, "echo")?).await?;
        let f = figures(entry(&a, "bulk")?, entry(&a, "echo")?, bytes).await?;
        row(name, &f);
        if transport_of(&a, "b").await != Some(kind) {
            bail!("the link ran over {:?}, not {kind}", transport_of(&a, "b").await);
        }
        rows.push(f);
        a.shutdown().await;
        b.shutdown().await;
    }
    let (quic, tcp) = (&rows[0], &rows[1]);
    println!(
        "TLS/TCP link against QUIC link: bulk {:.2}x (aim >= 0.8x), rtt64 {:.2}x, new flow {:.2}x; QUIC link against direct TCP: bulk {:.2}x",
        tcp.gbit / quic.gbit,
        tcp.rtt_p50.as_secs_f64() / quic.rtt_p50.as_secs_f64(),
        tcp.new_flow_p50.as_secs_f64() / quic.new_flow_p50.as_secs_f64(),
        quic.gbit / direct.gbit,
    );
    Ok(())
}

async fn fallback_section(dir: &Path) -> Result<()> {
    let sink = sink_server().await?;
    let echo = common::echo_server().await?;
    let probe = Duration::from_secs(env_usize("BENCH_PROBE_SECS", 5) as u64);
    println!();
    println!(
        "2. fallback: the peer's UDP blackholed, mesh.fallback_after 1s (the default), quic_probe_interval {probe:?}"
    );
    let b = exit_b(dir).await?;
    let emulator = LinkEmulator::start(b.mesh_addr()?, 1).await?;
    emulator.set_both(LinkProfile::blackholed());
    let tcp = b.tcp_links_addr().context("no TCP links")?.to_string();
    let addrs = (emulator.addr().to_string(), Some(tcp));
    let started = Instant::now();
    let a_mesh = format!("quic_probe_interval: \"{}s\"", probe.as_secs());
    let a = origin_a(dir, "auto", (sink, echo), addrs, &a_mesh).await?;
    let since_start = Instant::now();
    echoed(entry(&a, "echo")?).await?;
    let first = started.elapsed();
    println!(
        "first flow answered {:.0} ms after the node started ({:.0} ms after start returned), over {:?} (aim: under 3 s)",
        first.as_secs_f64() * 1e3,
        since_start.elapsed().as_secs_f64() * 1e3,
        transport_of(&a, "b").await.unwrap_or("nothing"),
    );
    emulator.set_both(LinkProfile::ideal());
    let restored = Instant::now();
    while transport_of(&a, "b").await != Some("quic") {
        if restored.elapsed() > probe * 3 {
            bail!("no move back to QUIC within three probe intervals");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = restored.elapsed();
    echoed(entry(&a, "echo")?).await?;
    println!(
        "UDP restored: new flows over QUIC after {:.2} s (aim: within one probe interval, {:.0} s)",
        back.as_secs_f64(),
        probe.as_secs_f64()
    );
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// A node running in network namespace `ns` on a thread of its own (every socket it ever
/// opens must live there); stopped when the returned sender is dropped.
fn node_in_netns(
    ns: &str,
    dir: &Path,
    yaml: String,
) -> Result<(proxy::node::NodeView, tokio::sync::oneshot::Sender<()>)> {
    let config = proxy::config::parse(&yaml, dir).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let run = || -> Result<()> {
            let file = std::fs::File::open(&path)?;
            // SAFETY: setns on this thread only, with a valid namespace descriptor.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let node = proxy::Node::start(config).await?;
                let _ = ready_tx.send(Ok((*node).clone()));
                let _ = stop_rx.await;
                node.shutdown().await;
                Ok(())
            })
        };
        if let Err(e) = run() {
            let _ = ready_tx.send(Err(e));
        }
    });
    let view = ready_rx.recv().context("node thread ended")??;
    Ok((view, stop_tx))
}

/// `bytes` through an origin in namespace `a` over a link of `kind` to an exit in `b`
/// whose target is a sink in `b`; megabits per second.
async fn wan_flow(path: &tun_path::TunPath, dir: &Path, kind: &str, bytes: u64) -> Result<f64> {
    let sink = tun_path::in_netns(path.b(), || Ok(std::net::TcpListener::bind("127.0.0.1:0")?))?;
    let sink_addr = sink.local_addr()?;
    sink.set_nonblocking(true)?;
    common::serve_sink(tokio::net::TcpListener::from_std(sink)?);
    let b_ip = tun_path::TunPath::B_IP;
    // Ports of their own per transport: the other pair's node b may still be draining.
    let (udp, tcp) = if kind == "tcp" { (7810, 7811) } else { (7800, 7801) };
    let b_yaml = format!(
        "common: {{ node_id: b, region: bench, admin_addr: \"127.0.0.1:0\", log_level: error }}\npeers: [ {{ name: a }} ]\nmesh: {{ bind: \"{b_ip}:{udp}\", tcp_bind: \"{b_ip}:{tcp}\", cert: b.crt, key: b.key, ca: ca.crt, data_dir: data-b }}\nexit_policy: {{ allow: [\"127.0.0.1/32\"] }}\n"
    );
    let (_b, stop_b) = node_in_netns(path.b(), dir, b_yaml)?;
    let port = if kind == "tcp" { tcp } else { udp };
    let a_yaml = format!(
        "common: {{ node_id: a, region: bench, admin_addr: \"127.0.0.1:0\", log_level: error }}\nlisteners: [ {{ name: bulk, bind: \"127.0.0.1:0\" }} ]\npeers: [ {{ name: b, type: {kind}, address: \"{b_ip}:{port}\" }} ]\nroutes: [ {{ name: bulk, match: {{ listener: bulk }}, target: \"{sink_addr}\", exit: b }} ]\nmesh: {{ bind: \"{}:0\", tcp_bind: \"off\", cert: a.crt, key: a.key, ca: ca.crt, data_dir: data-a }}\n",
        tun_path::TunPath::A_IP
    );
    let (a, stop_a) = node_in_netns(path.a(), dir, a_yaml)?;
    if !a.wait_for_link("b", Duration::from_secs(10)).await {
        bail!("no {kind} link across the path");
    }
    let entry = a.listeners().into_iter().find(|l| l.name == "bulk").context("no listener")?.addr;
    let client = tun_path::in_netns(path.a(), move || Ok(std::net::TcpStream::connect(entry)?))?;
    client.set_nonblocking(true)?;
    let mbit = upload(TcpStream::from_std(client)?, bytes).await? * 1e3;
    let transport = a.peers().into_iter().find(|p| p.id == "b").and_then(|p| p.transport);
    if transport != Some(kind) {
        bail!("the link ran over {transport:?}, not {kind}");
    }
    drop(stop_a);
    drop(stop_b);
    Ok(mbit)
}

async fn wan_section(dir: &Path) -> Result<()> {
    println!();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("3. wan: SKIPPED (network namespaces and TUN devices need root)");
        return Ok(());
    }
    let mib = env_usize("BENCH_WAN_MIB", 48) as u64;
    let open =
        tun_path::Impairment { delay: Duration::ZERO, loss: 0.0, rate_bps: None, queue_bytes: 64 << 20 };
    let wan = tun_path::Impairment {
        delay: Duration::from_millis(40),
        loss: 0.001,
        rate_bps: Some(100_000_000),
        queue_bytes: 1_000_000,
    };
    println!(
        "3. wan: one flow of {mib} MiB through two nodes in two namespaces joined by TUN devices through this process"
    );
    println!("{:<44} {:>14} {:>14} {:>8}", "path", "QUIC link", "TLS/TCP link", "tcp/quic");
    let cases = [
        ("the path's ceiling (no delay, loss or limit)", open),
        ("80 ms, 0.1% loss each way, 100 Mbit/s", wan),
    ];
    for (i, (name, imp)) in cases.into_iter().enumerate() {
        let path = tun_path::TunPath::start(&format!("pxbench{i}"), imp).await?;
        let quic = wan_flow(&path, dir, "quic", mib << 20).await?;
        let tcp = wan_flow(&path, dir, "tcp", mib << 20).await?;
        let c = &path.counters;
        println!(
            "{name:<44} {quic:>9.1} Mbit/s {tcp:>9.1} Mbit/s {:>7.2}x   (packets: {} forwarded, {} lost, {} over the queue)",
            tcp / quic,
            c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
            c.lost.load(std::sync::atomic::Ordering::Relaxed),
            c.overflowed.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    println!(
        "aim: the TLS/TCP link within 20% of the QUIC link on the 80 ms row (kernel TCP runs bbr, the family of the default `model`)"
    );
    Ok(())
}

fn main() -> Result<()> {
    let dir = common::make_mesh("transports", &["a", "b"])?;
    let bytes = env_usize("BENCH_BULK_MIB", 1024) as u64 * 1024 * 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        println!("proxy link transport benchmark (nodes in this process, loopback)");
        if std::env::var("BENCH_SECTIONS").map_or(true, |s| s.contains("bulk")) {
            bulk_section(&dir, bytes).await?;
        }
        if std::env::var("BENCH_SECTIONS").map_or(true, |s| s.contains("fallback")) {
            fallback_section(&dir).await?;
        }
        if std::env::var("BENCH_SECTIONS").map_or(true, |s| s.contains("wan")) {
            wan_section(&dir).await?;
        }
        Ok::<(), anyhow::Error>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
