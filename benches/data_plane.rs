//! Data-plane benchmark: `cargo bench --bench data_plane`.
//!
//! Measures, in one run on loopback: direct TCP, a bare quinn stream with the node's own
//! transport tuning, one flow through two `proxy` nodes, and one flow through one, two and
//! three relays (chains of in-process nodes origin -> relays -> exit). For each: bulk
//! throughput, 64-byte round trip p50/p99, and new-flow time to the first echoed byte.
//! Prints the ratios to the baselines and the cost of each extra relay hop, then the RSS of
//! two node processes with 10,000 idle flows open.
//!
//! Environment: `BENCH_BULK_MIB` (default 1024), `BENCH_RTT_ROUNDS` (default 10000),
//! `BENCH_NEW_FLOWS` (default 1000), `BENCH_IDLE_FLOWS` (default 10000).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use common::env_usize;

const CHUNK: usize = 64 * 1024;

struct Figures {
    gbit: f64,
    rtt_p50: Duration,
    rtt_p99: Duration,
    new_flow_p50: Duration,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// A TCP sink: counts each connection's bytes to EOF and reports the count.
async fn sink_server() -> Result<(SocketAddr, mpsc::UnboundedReceiver<u64>)> {
    let l = proxy::node::bind_listener("127.0.0.1:0".parse()?)?;
    let addr = l.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = tx.send(n);
            });
        }
    });
    Ok((addr, rx))
}

async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Bulk, round trip and new flow over TCP to `entry` (direct, or a node's listener),
/// with the sink and echo targets behind it.
async fn tcp_figures(
    bulk_entry: SocketAddr,
    sink: &mut mpsc::UnboundedReceiver<u64>,
    echo_entry: SocketAddr,
    bulk: u64,
) -> Result<Figures> {
    let payload = vec![0xa5u8; CHUNK];
    let mut s = tcp_connect(bulk_entry).await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bulk {
        s.write_all(&payload).await?;
        sent += CHUNK as u64;
    }
    s.shutdown().await?;
    let got = sink.recv().await.context("sink closed")?;
    let secs = start.elapsed().as_secs_f64();
    if got != sent {
        bail!("sink got {got} of {sent} bytes");
    }
    let mut e = tcp_connect(echo_entry).await?;
    let rtts = round_trips(&mut e).await?;
    let mut flows = Vec::new();
    for _ in 0..env_usize("BENCH_NEW_FLOWS", 1000) {
        let t = Instant::now();
        let mut c = tcp_connect(echo_entry).await?;
        c.write_all(b"x").await?;
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await?;
        flows.push(t.elapsed());
    }
    Ok(figures(sent, secs, rtts, flows))
}

async fn round_trips<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S) -> Result<Vec<Duration>> {
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..500 {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    let mut out = Vec::new();
    for _ in 0..env_usize("BENCH_RTT_ROUNDS", 10_000) {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn figures(bytes: u64, secs: f64, mut rtts: Vec<Duration>, mut flows: Vec<Duration>) -> Figures {
    Figures {
        gbit: bytes as f64 * 8.0 / secs / 1e9,
        rtt_p50: percentile(&mut rtts, 0.5),
        rtt_p99: percentile(&mut rtts, 0.99),
        new_flow_p50: percentile(&mut flows, 0.5),
    }
}

/// A bare quinn stream between two endpoints with the node's tuning.
async fn quinn_figures(dir: &Path, bulk: u64) -> Result<Figures> {
    let config = node_config_for_tuning(dir)?;
    let transport = Arc::new(proxy::node::transport_config(&config.mesh, &config.limits));
    let identity = |n: &str| -> Result<proxy::tls::TlsIdentity> {
        Ok(proxy::tls::TlsIdentity::load(
            &dir.join(format!("{n}.crt")),
            &dir.join(format!("{n}.key")),
            &dir.join("ca.crt"),
            n,
        )?)
    };
    let server_sock = proxy::quic::bind_udp("127.0.0.1:0".parse()?, 4 << 20)?;
    let server = proxy::quic::build(&identity("b")?, transport.clone(), server_sock)?;
    let client_sock = proxy::quic::bind_udp("127.0.0.1:0".parse()?, 4 << 20)?;
    let client = proxy::quic::build(&identity("a")?, transport, client_sock)?;
    let server_addr = server.local_addr()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        let Some(incoming) = server.accept().await else { return };
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // First byte says what to do: 's' sink, 'e' echo.
                let Ok(Some(first)) = recv.read_chunk(1, true).await else { return };
                if first.bytes.as_ref() == b"s" {
                    let mut n = 0u64;
                    while let Ok(Some(c)) = recv.read_chunk(CHUNK, true).await {
                        n += c.bytes.len() as u64;
                    }
                    let _ = tx.send(n);
                } else {
                    while let Ok(Some(c)) = recv.read_chunk(CHUNK, true).await {
                        if send.write_chunk(c.bytes).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                }
            });
        }
    });
    let conn = client.connect(server_addr, "b")?.await?;
    let payload = Bytes::from(vec![0xa5u8; CHUNK]);
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(b"s").await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bulk {
        send.write_chunk(payload.clone()).await?;
        sent += CHUNK as u64;
    }
    send.finish()?;
    let got = rx.recv().await.context("quinn sink")?;
    let secs = start.elapsed().as_secs_f64();
    if got != sent {
        bail!("quinn sink got {got} of {sent}");
    }
    let (mut s, mut r) = conn.open_bi().await?;
    s.write_all(b"e").await?;
    let mut joined = tokio::io::join(&mut r, &mut s);
    let rtts = round_trips(&mut joined).await?;
    let mut flows = Vec::new();
    for _ in 0..env_usize("BENCH_NEW_FLOWS", 1000) {
        let t = Instant::now();
        let (mut s, mut r) = conn.open_bi().await?;
        s.write_all(b"ex").await?;
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await?;
        flows.push(t.elapsed());
        let _ = s.finish();
    }
    Ok(figures(sent, secs, rtts, flows))
}

fn node_config_for_tuning(dir: &Path) -> Result<proxy::config::Config> {
    let yaml = "common: { node_id: a, region: bench, admin_addr: \"127.0.0.1:0\" }\nmesh: { bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }\n";
    proxy::config::parse(yaml, dir).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// A node process; killed on drop.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl NodeProcess {
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }
}

fn start_node(dir: &Path, id: &str, yaml: &str) -> Result<NodeProcess> {
    let path = dir.join(format!("{id}.yaml"));
    std::fs::write(&path, yaml)?;
    let child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(NodeProcess(child))
}

fn free_port(udp: bool) -> Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    })
}

const LIMITS: &str = "limits: { max_streams_per_peer: 30000, max_flows: 100000 }\n";

/// Starts b (exit) and a (origin, listeners `bulk` and `echo`).
async fn start_pair(
    dir: &Path,
    sink: SocketAddr,
    echo: SocketAddr,
) -> Result<(NodeProcess, NodeProcess, SocketAddr, SocketAddr)> {
    let (ub, tb, te) = (free_port(true)?, free_port(false)?, free_port(false)?);
    let b = format!(
        "common: {{ node_id: b, region: bench, admin_addr: \"127.0.0.1:0\", log_level: warn }}\npeers: [ {{ name: a }} ]\nmesh: {{ bind: \"127.0.0.1:{ub}\", cert: b.crt, key: b.key, ca: ca.crt }}\n{LIMITS}exit_policy: {{ allow: [\"127.0.0.1/32\"] }}\n"
    );
    let a = format!(
        "common: {{ node_id: a, region: bench, admin_addr: \"127.0.0.1:0\", log_level: warn }}\nlisteners: [ {{ name: bulk, bind: \"127.0.0.1:{tb}\" }}, {{ name: echo, bind: \"127.0.0.1:{te}\" }} ]\npeers: [ {{ name: b, address: \"127.0.0.1:{ub}\" }} ]\nroutes:\n  - {{ name: bulk, match: {{ listener: bulk }}, target: \"{sink}\", exit: b }}\n  - {{ name: echo, match: {{ listener: echo }}, target: \"{echo}\", exit: b }}\nmesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\n{LIMITS}"
    );
    let nb = start_node(dir, "b", &b)?;
    let na = start_node(dir, "a", &a)?;
    let echo_entry: SocketAddr = format!("127.0.0.1:{te}").parse()?;
    // Ready when an echo crosses both nodes.
    for _ in 0..200 {
        if let Ok(mut c) = tcp_connect(echo_entry).await {
            let mut one = [0u8; 1];
            if c.write_all(b"r").await.is_ok() && c.read_exact(&mut one).await.is_ok() {
                return Ok((na, nb, format!("127.0.0.1:{tb}").parse()?, echo_entry));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nodes did not come up")
}

/// Node ids of an in-process chain, origin first; the mesh has certificates for each.
const NODE_IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// Relay counts measured after the two-node flow.
const MAX_RELAYS: usize = NODE_IDS.len() - 2;

fn node_yaml(id: &str, peers: &str, extra: &str, e2e: Seal) -> String {
    let e2e = e2e.mode();
    format!(
        "common: {{ node_id: {id}, region: bench, admin_addr: \"127.0.0.1:0\", log_level: warn }}\npeers: [ {peers} ]\nmesh: {{ bind: \"127.0.0.1:0\", cert: {id}.crt, key: {id}.key, ca: ca.crt, e2e: {e2e} }}\n{LIMITS}{extra}"
    )
}

/// Whether the proxy rows seal flows end to end (`mesh.e2e`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seal {
    /// `required`, the default.
    Sealed,
    /// `off`: the same flows without end-to-end sealing, the baseline of its cost.
    Unsealed,
}

impl Seal {
    fn mode(self) -> &'static str {
        match self {
            Self::Sealed => "required",
            Self::Unsealed => "off",
        }
    }
}

async fn start_in_process(dir: &Path, yaml: &str) -> Result<proxy::Node> {
    let config = proxy::config::parse(yaml, dir).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    proxy::Node::start(config).await
}

/// The origin: listeners `bulk` and `echo`, routed to `sink` and `echo` at the last of
/// `ids` via the ones between; it dials `ids[1]` at `next`.
fn origin_yaml(
    ids: &[&str],
    next: SocketAddr,
    (sink, echo): (SocketAddr, SocketAddr),
    e2e: Seal,
) -> Result<String> {
    let (first, exit) = (ids.get(1).context("no next hop")?, ids.last().context("no exit")?);
    let relays = ids.get(1..ids.len() - 1).unwrap_or_default();
    let via = if relays.is_empty() { String::new() } else { format!(", via: [{}]", relays.join(", ")) };
    let route = |name: &str, target: SocketAddr| {
        format!(
            "  - {{ name: {name}, match: {{ listener: {name} }}, target: \"{target}\", exit: {exit}{via} }}\n"
        )
    };
    let extra = format!(
        "listeners: [ {{ name: bulk, bind: \"127.0.0.1:0\" }}, {{ name: echo, bind: \"127.0.0.1:0\" }} ]\nroutes:\n{}{}",
        route("bulk", sink),
        route("echo", echo)
    );
    Ok(node_yaml(ids[0], &format!("{{ name: {first}, address: \"{next}\" }}"), &extra, e2e))
}

/// Starts a chain origin -> `relays` relays -> exit in this process, each node dialing the
/// next; returns its nodes, origin first. The origin's listeners `bulk` and `echo` lead,
/// through the relays, to `sink` and `echo`. With no relays this is the two-node pair.
async fn start_chain(
    dir: &Path,
    sink: SocketAddr,
    echo: SocketAddr,
    relays: usize,
    e2e: Seal,
) -> Result<Vec<proxy::Node>> {
    let ids = NODE_IDS.get(..relays + 2).with_context(|| format!("at most {MAX_RELAYS} relays"))?;
    let allow = "exit_policy: { allow: [\"127.0.0.1/32\"] }\n";
    let exit = node_yaml(ids[relays + 1], &format!("{{ name: {} }}", ids[relays]), allow, e2e);
    // From the exit back to the origin, so each node knows the address of the next.
    let mut nodes = vec![start_in_process(dir, &exit).await?];
    for i in (1..=relays).rev() {
        let next = nodes.last().context("no next node")?.mesh_addr()?;
        let peers = format!("{{ name: {} }}, {{ name: {}, address: \"{next}\" }}", ids[i - 1], ids[i + 1]);
        nodes.push(start_in_process(dir, &node_yaml(ids[i], &peers, "", e2e)).await?);
    }
    let next = nodes.last().context("no next node")?.mesh_addr()?;
    nodes.push(start_in_process(dir, &origin_yaml(ids, next, (sink, echo), e2e)?).await?);
    nodes.reverse();
    for (node, peer) in nodes.iter().zip(ids.iter().skip(1)) {
        if !node.wait_for_link(peer, Duration::from_secs(10)).await {
            bail!("link {} -> {peer} did not come up", node.id());
        }
    }
    Ok(nodes)
}

/// Figures for one flow through a chain with `relays` relays; the chain is shut down after.
async fn chain_figures(
    dir: &Path,
    sink: SocketAddr,
    sink_rx: &mut mpsc::UnboundedReceiver<u64>,
    echo: SocketAddr,
    relays: usize,
    bulk: u64,
    e2e: Seal,
) -> Result<Figures> {
    let nodes = start_chain(dir, sink, echo, relays, e2e).await?;
    let origin = nodes.first().context("empty chain")?;
    let f = tcp_figures(entry(origin, "bulk")?, sink_rx, entry(origin, "echo")?, bulk).await;
    for node in nodes {
        node.shutdown().await;
    }
    f
}

fn entry(node: &proxy::Node, name: &str) -> Result<SocketAddr> {
    node.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr).context("listener")
}

/// Opens `n` idle flows through the nodes; returns RSS growth per flow of a and b.
async fn idle_flow_memory(
    a: &NodeProcess,
    b: &NodeProcess,
    echo_entry: SocketAddr,
    n: usize,
) -> Result<(u64, u64, u64, u64)> {
    let (a0, b0) = (a.rss_kib()?, b.rss_kib()?);
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = tcp_connect(echo_entry).await.with_context(|| format!("idle flow {i}: connect"))?;
        c.write_all(b"i").await.with_context(|| format!("idle flow {i}: write"))?;
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.with_context(|| format!("idle flow {i}: echo"))?;
        open.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a1, b1) = (a.rss_kib()?, b.rss_kib()?);
    drop(open);
    Ok((a0, a1, b0, b1))
}

fn row(name: &str, f: &Figures) {
    println!(
        "{name:<22} {:>8.2} Gbit/s {:>9.1} µs {:>9.1} µs {:>9.1} µs",
        f.gbit,
        f.rtt_p50.as_secs_f64() * 1e6,
        f.rtt_p99.as_secs_f64() * 1e6,
        f.new_flow_p50.as_secs_f64() * 1e6
    );
}

fn main() -> Result<()> {
    if std::env::var("BENCH_ROLE").as_deref() == Ok("echo") {
        return echo_process();
    }
    // 10,000 flows need ~40,000 descriptors across this process and the nodes.
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, 200_000, 200_000);
    let _ = rlimit::increase_nofile_limit(200_000);
    let dir = common::make_mesh("bench", &NODE_IDS)?;
    let result = run_all(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_all(dir: &Path) -> Result<()> {
    let bulk = env_usize("BENCH_BULK_MIB", 1024) as u64 * 1024 * 1024;
    println!(
        "proxy data-plane benchmark: {} MiB bulk, loopback, all nodes of the proxy rows (2 to 5) in this process",
        bulk >> 20
    );
    // Two runtimes: two worker threads use both cores (throughput); one thread keeps a
    // round trip on one core, free of the virtual machine's idle-CPU wake-up latency,
    // which otherwise dominates microsecond figures here.
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    multi.block_on(suite("tokio, 2 worker threads", dir, bulk))?;
    let single = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    single.block_on(suite("tokio, 1 thread (client, servers and all nodes share it)", dir, bulk))?;
    let n = env_usize("BENCH_IDLE_FLOWS", 10_000);
    if n > 0 {
        multi.block_on(memory(dir, n))?;
    }
    Ok(())
}

async fn suite(title: &str, dir: &Path, bulk: u64) -> Result<()> {
    let (sink, mut sink_rx) = sink_server().await?;
    let echo = common::echo_server().await?;
    println!();
    println!("{title}");
    println!("{:<22} {:>15} {:>12} {:>12} {:>12}", "", "bulk", "rtt64 p50", "rtt64 p99", "new flow p50");
    let direct = tcp_figures(sink, &mut sink_rx, echo, bulk).await?;
    row("direct TCP", &direct);
    let quinn = quinn_figures(dir, bulk).await?;
    row("bare quinn stream", &quinn);
    let mut hops = Vec::new();
    for relays in 0..=MAX_RELAYS {
        let f = chain_figures(dir, sink, &mut sink_rx, echo, relays, bulk, Seal::Sealed).await?;
        row(&hop_label(relays), &f);
        hops.push(f);
    }
    let mut unsealed = Vec::new();
    for relays in 0..=SEAL_COST_RELAYS {
        let f = chain_figures(dir, sink, &mut sink_rx, echo, relays, bulk, Seal::Unsealed).await?;
        row(&format!("{}, unsealed", hop_label(relays)), &f);
        unsealed.push(f);
    }
    pair_ratios(&direct, &quinn, hops.first().context("no two-node figures")?);
    hop_ratios(&direct, &hops);
    seal_costs(&hops, &unsealed);
    Ok(())
}

/// Relay counts measured without sealing too (the cost of sealing by path length).
const SEAL_COST_RELAYS: usize = 2;

/// What end-to-end sealing costs: sealed against unsealed flows on the same paths (aims:
/// bulk at most 10% lower, 64 B round trip at most 10 µs more through 2 nodes).
fn seal_costs(sealed: &[Figures], unsealed: &[Figures]) {
    println!("end-to-end sealing (mesh.e2e: required vs off, same run):");
    for (relays, (s, u)) in sealed.iter().zip(unsealed).enumerate() {
        println!(
            "  {:<18} bulk {:>5.1}% {:<6} rtt64 p50 {:>+6.1} µs  p99 {:>+6.1} µs  new flow p50 {:>+7.1} µs",
            hop_label(relays),
            (ratio(s.gbit, u.gbit) - 1.0) * 100.0,
            "",
            micros(s.rtt_p50) - micros(u.rtt_p50),
            micros(s.rtt_p99) - micros(u.rtt_p99),
            micros(s.new_flow_p50) - micros(u.new_flow_p50),
        );
    }
}

fn hop_label(relays: usize) -> String {
    match relays {
        0 => "proxy, 2 nodes".to_owned(),
        1 => "proxy, 1 relay".to_owned(),
        n => format!("proxy, {n} relays"),
    }
}

fn ratio(x: f64, y: f64) -> f64 {
    x / y
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The two-node flow against the baselines.
fn pair_ratios(direct: &Figures, quinn: &Figures, through: &Figures) {
    println!(
        "  bulk: proxy / bare quinn = {:.2} (aim >= 0.65); proxy / direct TCP = {:.2}",
        ratio(through.gbit, quinn.gbit),
        ratio(through.gbit, direct.gbit)
    );
    println!(
        "  rtt64 p50: proxy / bare quinn = {:.2} (aim <= 1.5); p99: {:.2}",
        ratio(through.rtt_p50.as_secs_f64(), quinn.rtt_p50.as_secs_f64()),
        ratio(through.rtt_p99.as_secs_f64(), quinn.rtt_p99.as_secs_f64())
    );
    println!(
        "  new flow p50: proxy / direct TCP connect+first byte = {:.2} (aim <= 3); bare quinn new stream / direct = {:.2}",
        ratio(through.new_flow_p50.as_secs_f64(), direct.new_flow_p50.as_secs_f64()),
        ratio(quinn.new_flow_p50.as_secs_f64(), direct.new_flow_p50.as_secs_f64())
    );
}

/// Each relayed flow against the two-node flow (`hops[0]`) and direct TCP, then the cost
/// of each extra hop against the hop count before it.
fn hop_ratios(direct: &Figures, hops: &[Figures]) {
    let Some(pair) = hops.first() else { return };
    for (relays, f) in hops.iter().enumerate().skip(1) {
        println!(
            "  {:<9} bulk / 2 nodes = {:.2}, / direct TCP = {:.2}; rtt64 p50 {:+.1} µs vs 2 nodes; new flow p50 {:.1} µs",
            format!("{}:", hop_label(relays).trim_start_matches("proxy, ")),
            ratio(f.gbit, pair.gbit),
            ratio(f.gbit, direct.gbit),
            micros(f.rtt_p50) - micros(pair.rtt_p50),
            micros(f.new_flow_p50)
        );
    }
    let steps: Vec<(f64, f64)> = hops
        .windows(2)
        .map(|w| ((1.0 - ratio(w[1].gbit, w[0].gbit)) * 100.0, micros(w[1].rtt_p50) - micros(w[0].rtt_p50)))
        .collect();
    let list = |v: Vec<String>| v.join(", ");
    let worst_bulk = steps.iter().map(|s| s.0).fold(f64::NEG_INFINITY, f64::max);
    let worst_rtt = steps.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    println!(
        "  per extra hop (1, 2, 3 relays vs one fewer): bulk cost {} % (aim <= 15%: {}); rtt64 p50 cost {} µs (aim <= 100 µs: {})",
        list(steps.iter().map(|s| format!("{:.1}", s.0)).collect()),
        if worst_bulk <= 15.0 { "met" } else { "missed" },
        list(steps.iter().map(|s| format!("{:+.1}", s.1)).collect()),
        if worst_rtt <= 100.0 { "met" } else { "missed" }
    );
}

/// The echo target of the memory run, as its own process: 10,000 flows need 10,000
/// sockets on the client side and as many on the target side, more than one process may
/// hold under this machine's descriptor limit.
fn echo_process() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let addr = common::echo_server().await?;
        println!("{}", addr.port());
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn start_echo_process() -> Result<(NodeProcess, SocketAddr)> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .env("BENCH_ROLE", "echo")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("echo stdout")?;
    let proc = NodeProcess(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("echo port")?;
    Ok((proc, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// RSS of two node processes before and after `n` idle flows.
async fn memory(dir: &Path, n: usize) -> Result<()> {
    let (sink, _sink_rx) = sink_server().await?;
    let (_echo_process, echo) = start_echo_process()?;
    let (a, b, _, echo_entry) = start_pair(dir, sink, echo).await?;
    let (a0, a1, b0, b1) = idle_flow_memory(&a, &b, echo_entry, n).await?;
    let per = |x0: u64, x1: u64| (x1.saturating_sub(x0)) as f64 / n as f64;
    println!();
    println!("memory, {n} idle flows through two node processes (aim < 16 KiB/flow):");
    println!("  node a (origin): RSS {a0} -> {a1} KiB, {:.1} KiB/flow", per(a0, a1));
    println!("  node b (exit):   RSS {b0} -> {b1} KiB, {:.1} KiB/flow", per(b0, b1));
    Ok(())
}
