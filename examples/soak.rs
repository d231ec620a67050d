//! `cargo run --release --example soak [-- --quick]`: a bounded soak that must lose
//! nothing. Three nodes in this process, a => b => c, both links through the emulator with
//! 1% loss each way and 2 ms of delay. It holds 2,000 idle flows open to measure memory per
//! open flow; runs 10,000 flows of 16 KiB (256 at a time) and 200 flows of 8 MiB (20 at a
//! time) to an echo service behind c, every one checked by SHA-256 both ways, and reports
//! how evenly the bulk flows shared the links; then checks that the process's file
//! descriptors and tokio tasks are back where they started. `--quick`: 1,000 and 20 flows;
//! `--small N`, `--big N` set the counts. Exits non-zero on any lost, corrupted or stuck
//! flow, or a leak. Every phase is bounded in count and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proxy::Node;
use proxy::emulator::{LinkEmulator, LinkProfile};
use proxy::pki::{self, MeshCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A temp directory, removed when dropped (also when the soak fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_target(false).init();
    let _ = rlimit::increase_nofile_limit(65_536);
    let quick = std::env::args().any(|a| a == "--quick");
    let (small, big) = if quick { (1_000, 20) } else { (10_000, 200) };
    let count = |flag: &str, default: u64| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (small, big) = (count("--small", small), count("--big", big));
    let dir = TempDir(std::env::temp_dir().join(format!("proxy-soak-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let (echo, _echo_task) = proxy::demo::probe::echo_service().await?;
    let mesh = start_mesh(&dir.0, echo).await?;
    let entry = mesh.entry;

    let before = Snapshot::take();
    println!("start: {before}");
    let per_flow = idle_flow_memory(entry, 2_000).await?;
    println!(
        "2,000 idle flows open (before the load, so freed memory is not reused): {per_flow:.1} KiB of RSS per open flow (this process holds all three nodes and the clients)"
    );

    let started = Instant::now();
    let outcome = run_flows(entry, small, 16 * 1024, 256, Duration::from_secs(600)).await;
    println!("{small} flows of 16 KiB: {outcome} in {:.1} s", started.elapsed().as_secs_f64());
    let small_ok = outcome.clean(small);
    let started = Instant::now();
    let outcome = run_flows(entry, big, 8 << 20, 20, Duration::from_secs(1800)).await;
    println!(
        "{big} flows of 8 MiB: {outcome} in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        outcome.spread()
    );
    let big_ok = outcome.clean(big);

    // Everything the flows used must be given back.
    let settled = settle(&before, Duration::from_secs(15)).await;
    let after = Snapshot::take();
    println!("end:   {after}");
    println!("peak RSS: {:.1} MiB", after.peak_rss_kib as f64 / 1024.0);
    drop(mesh);
    if !small_ok || !big_ok {
        bail!("flows were lost, corrupted or stuck");
    }
    if !settled {
        bail!("file descriptors or tasks did not return to where they started ({before} -> {after})");
    }
    println!("soak passed: every flow intact, nothing leaked");
    Ok(())
}

struct Mesh {
    entry: SocketAddr,
    _nodes: Vec<Node>,
    _links: Vec<LinkEmulator>,
}

/// a => b => c, each link through an emulator with 1% loss and 2 ms each way.
async fn start_mesh(dir: &std::path::Path, echo: SocketAddr) -> anyhow::Result<Mesh> {
    let ca = MeshCa::generate("soak CA")?;
    let mut written = Vec::new();
    pki::write_file(&dir.join("ca.crt"), &ca.cert_pem(), false, &mut written)?;
    for id in ["a", "b", "c"] {
        let cert = ca.issue_node_cert(id, 1)?;
        pki::write_file(&dir.join(format!("{id}.crt")), &cert.cert_pem, false, &mut written)?;
        pki::write_file(&dir.join(format!("{id}.key")), &cert.key_pem, true, &mut written)?;
    }
    let lossy = LinkProfile { loss: 0.01, ..LinkProfile::delayed(Duration::from_millis(2)) };
    let node = |id: &str, body: String| {
        let yaml = format!(
            "common: {{ node_id: {id}, region: soak, admin_addr: \"127.0.0.1:0\", log_level: error }}\n{body}\n\
             mesh: {{ bind: \"127.0.0.1:0\", cert: {id}.crt, key: {id}.key, ca: ca.crt, data_dir: data-{id} }}\n\
             limits: {{ max_flows: 20000, max_streams_per_peer: 8192 }}\n"
        );
        let path = dir.join(format!("{id}.yaml"));
        std::fs::write(&path, yaml).map(|()| path)
    };
    let c_path = node("c", format!("peers: [ {{ name: b }} ]\nexit_policy: {{ allow: [\"{echo}\"] }}"))?;
    let c = Node::start(proxy::config::load(&c_path).map_err(|e| anyhow::anyhow!("{e}"))?).await?;
    let bc = LinkEmulator::start(c.mesh_addr()?, 1).await?;
    bc.set_both(lossy.clone());
    let b_path = node("b", format!("peers: [ {{ name: a }}, {{ name: c, address: \"{}\" }} ]", bc.addr()))?;
    let b = Node::start(proxy::config::load(&b_path).map_err(|e| anyhow::anyhow!("{e}"))?).await?;
    let ab = LinkEmulator::start(b.mesh_addr()?, 2).await?;
    ab.set_both(lossy);
    let a_path = node(
        "a",
        format!(
            "listeners: [ {{ name: in, bind: \"127.0.0.1:0\" }} ]\npeers: [ {{ name: b, address: \"{}\" }} ]\n\
             routes: [ {{ name: in, match: {{ listener: in }}, target: \"{echo}\", exit: c, via: [b] }} ]",
            ab.addr()
        ),
    )?;
    let a = Node::start(proxy::config::load(&a_path).map_err(|e| anyhow::anyhow!("{e}"))?).await?;
    let entry = a.listeners().first().map(|l| l.addr).context("listener")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.peers().iter().any(|p| p.connected) && b.peers().iter().filter(|p| p.connected).count() == 2) {
        if Instant::now() > deadline {
            bail!("the links did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Mesh { entry, _nodes: vec![a, b, c], _links: vec![ab, bc] })
}

/// How a batch of flows went.
#[derive(Default)]
struct Outcome {
    intact: AtomicU64,
    corrupted: AtomicU64,
    failed: AtomicU64,
    stuck: AtomicU64,
    /// Seconds each intact flow took: their spread shows how fairly flows share a link.
    took: std::sync::Mutex<Vec<f64>>,
}

impl Outcome {
    fn clean(&self, total: u64) -> bool {
        self.intact.load(Ordering::Relaxed) == total
    }

    /// Fastest, median and slowest intact flow, in seconds.
    fn spread(&self) -> String {
        let mut took = self.took.lock().map(|t| t.clone()).unwrap_or_default();
        took.sort_by(f64::total_cmp);
        match (took.first(), took.get(took.len() / 2), took.last()) {
            (Some(min), Some(median), Some(max)) => {
                format!("each took {min:.1} s fastest, {median:.1} s median, {max:.1} s slowest")
            }
            _ => "none intact".to_owned(),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} intact, {} corrupted, {} failed, {} stuck",
            n(&self.intact),
            n(&self.corrupted),
            n(&self.failed),
            n(&self.stuck)
        )
    }
}

/// `count` flows of `len` bytes each way, `parallel` at a time, each within two minutes,
/// all within `phase` (what has not finished by then counts as stuck).
async fn run_flows(
    entry: SocketAddr,
    count: u64,
    len: usize,
    parallel: usize,
    phase: Duration,
) -> Arc<Outcome> {
    let outcome = Arc::new(Outcome::default());
    let permits = Arc::new(Semaphore::new(parallel));
    let each = Duration::from_secs(120);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let outcome = outcome.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let counter = match tokio::time::timeout(each, one_flow(entry, len)).await {
                Ok(Ok(true)) => {
                    if let Ok(mut took) = outcome.took.lock() {
                        took.push(started.elapsed().as_secs_f64());
                    }
                    &outcome.intact
                }
                Ok(Ok(false)) => &outcome.corrupted,
                Ok(Err(e)) => {
                    if outcome.failed.load(Ordering::Relaxed) < 3 {
                        eprintln!("flow {i} failed: {e:#}");
                    }
                    &outcome.failed
                }
                Err(_) => &outcome.stuck,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(phase, async { while tasks.join_next().await.is_some() {} }).await;
    let unfinished = tasks.len() as u64;
    outcome.stuck.fetch_add(unfinished, Ordering::Relaxed);
    tasks.abort_all();
    outcome
}

/// One flow: `len` pseudo-random bytes out, the echo back; whether every byte came back
/// with the same SHA-256 (the demo's checked transfer).
async fn one_flow(entry: SocketAddr, len: usize) -> anyhow::Result<bool> {
    Ok(proxy::demo::probe::bulk_flow(entry, len, Duration::from_secs(120)).await?.intact)
}

/// Opens `n` flows, proves each open with one echoed byte, and returns the growth of RSS
/// per open flow in KiB; then closes them.
async fn idle_flow_memory(entry: SocketAddr, n: usize) -> anyhow::Result<f64> {
    let before = Snapshot::take().rss_kib;
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(entry).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut b)).await??;
        open.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = Snapshot::take().rss_kib;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Waits until the fds and tasks are back to `before` (a little slack for the runtime's
/// own), up to `within`.
async fn settle(before: &Snapshot, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        let now = Snapshot::take();
        if now.fds <= before.fds + 2 && now.tasks <= before.tasks + 2 {
            return true;
        }
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process's open file descriptors, live tokio tasks and memory.
struct Snapshot {
    fds: usize,
    tasks: usize,
    rss_kib: u64,
    peak_rss_kib: u64,
}

impl Snapshot {
    fn take() -> Self {
        let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self { fds, tasks, rss_kib: field("VmRSS:"), peak_rss_kib: field("VmHWM:") }
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fds, {} tasks, RSS {:.1} MiB", self.fds, self.tasks, self.rss_kib as f64 / 1024.0)
    }
}
