//! `cargo run --release --example two_nodes`: a two-node mesh on loopback, end to end.
//!
//! Needs no arguments and no files. It:
//! 1. makes a mesh CA and certificates for nodes `a` and `b` in a fresh temp directory;
//! 2. starts an echo TCP server (the "service") and writes two node configs next to the
//!    certificates: `b` is the exit (its exit policy allows only the echo server), `a` has a
//!    listener whose route carries every connection to the echo server through `b`;
//! 3. starts both nodes in this process and waits for the QUIC link between them;
//! 4. pushes one TCP flow app -> a => b -> echo and back (a text line plus 16 MiB of
//!    pseudo-random bytes) and checks the SHA-256 of what comes back;
//! 5. prints both nodes' counters, shuts them down gracefully and removes the temp dir.
//!
//! Exits non-zero if anything fails or the checksum differs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proxy::Node;
use proxy::pki::{self, MeshCa};
use ring::digest::{self, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
const LINE: &[u8] = b"hello through the mesh\n";
const LINK_WAIT: Duration = Duration::from_secs(10);
const FLOW_DEADLINE: Duration = Duration::from_secs(120);

/// A temp directory, removed when dropped (also when the example fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_target(false).init();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!("proxy-two-nodes-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let dir = TempDir(path);
    run(&dir.0).await?;
    drop(dir);
    println!("done: temp directory removed");
    Ok(())
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    // Certificates: the CA key stays in memory; node keys are written mode 0600.
    let ca = MeshCa::generate("two_nodes example CA")?;
    let mut written = Vec::new();
    pki::write_file(&dir.join("ca.crt"), &ca.cert_pem(), false, &mut written)?;
    for id in ["a", "b"] {
        let cert = ca.issue_node_cert(id, pki::NODE_CERT_LIFETIME_DAYS)?;
        pki::write_file(&dir.join(format!("{id}.crt")), &cert.cert_pem, false, &mut written)?;
        pki::write_file(&dir.join(format!("{id}.key")), &cert.key_pem, true, &mut written)?;
    }
    println!("mesh CA and certificates for nodes a and b in {}", dir.display());

    let (echo, _echo_task) = proxy::demo::probe::echo_service().await?;
    let b_body = format!("peers:\n  - name: a\nexit_policy:\n  allow:\n    - \"{echo}\"\n");
    let b = start_node(dir, "b", &b_body).await?;
    let b_mesh = b.mesh_addr()?;
    let a_body = format!(
        "listeners:\n  - name: in\n    bind: \"127.0.0.1:0\"\npeers:\n  - name: b\n    address: \"{b_mesh}\"\n\
         routes:\n  - name: to-echo\n    match: {{ listener: in }}\n    target: \"{echo}\"\n    exit: b\n"
    );
    let a = start_node(dir, "a", &a_body).await?;
    let a_in = a.listeners().into_iter().find(|l| l.name == "in").context("listener `in` is missing")?.addr;
    println!("echo    service: TCP server on {echo}");
    println!("node b  QUIC endpoint udp {b_mesh}; exit node, its exit_policy allows only {echo}");
    println!("node a  QUIC endpoint udp {}; TCP listener `in` on {a_in}", a.mesh_addr()?);

    if !a.wait_for_link("b", LINK_WAIT).await || !b.wait_for_link("a", LINK_WAIT).await {
        bail!("the link between a and b did not come up within {LINK_WAIT:?}");
    }
    let peer = a.peers().into_iter().find(|p| p.id == "b").context("peer `b` is missing")?;
    let dialer = if peer.initiator == Some("local") { "a" } else { "b" };
    println!(
        "link    a <-> b up: QUIC, mutual TLS 1.3 against the mesh CA, dialed by {dialer}, RTT {:.3} ms",
        peer.rtt_ms.unwrap_or_default()
    );
    println!("route   app -> a {a_in} ==QUIC stream==> b -> echo {echo}, and the same way back");

    let data = pseudo_random(PAYLOAD_BYTES, 0x5eed);
    let expected = digest::digest(&SHA256, &[LINE, &data].concat());
    let sent = LINE.len() + data.len();
    let started = Instant::now();
    let (received, got, head) = tokio::time::timeout(FLOW_DEADLINE, push_flow(a_in, &data))
        .await
        .with_context(|| format!("the flow did not finish within {FLOW_DEADLINE:?}"))??;
    let elapsed = started.elapsed().as_secs_f64();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    println!("sent    {sent} bytes: the line {:?} + 16 MiB of pseudo-random data", text(LINE));
    println!("echoed  {received} bytes back; first line {:?}", text(&head));
    if received != sent || got.as_ref() != expected.as_ref() {
        bail!("checksum mismatch: sent {sent} bytes, got {received} with sha256 {}", hex(&got));
    }
    println!("sha256  {} both ways: match", hex(&got));
    let mib = sent as f64 / (1024.0 * 1024.0);
    let rate = mib / elapsed;
    println!("time    {elapsed:.3} s for {mib:.1} MiB each way: {rate:.1} MiB/s per direction");

    // The flow's tasks finish just after the application sees EOF; let the counters settle.
    let settle = Instant::now() + Duration::from_secs(2);
    while (a.stats().flows_current > 0 || b.stats().flows_current > 0) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("stats   (Node::stats())");
    print_stats(&a.stats());
    print_stats(&b.stats());

    let ra = a.shutdown().await;
    let rb = b.shutdown().await;
    println!(
        "shutdown a: {} flows open at start, {} reset; b: {} open, {} reset",
        ra.open_at_start, ra.reset_at_deadline, rb.open_at_start, rb.reset_at_deadline
    );
    Ok(())
}

/// Writes the node's config into `dir` and starts the node from it.
async fn start_node(dir: &Path, id: &str, body: &str) -> anyhow::Result<Node> {
    let yaml = format!(
        "common:\n  node_id: {id}\n  region: local\n  log_level: warn\n  admin_addr: \"127.0.0.1:0\"\n{body}\
         mesh:\n  bind: \"127.0.0.1:0\"\n  cert: {id}.crt\n  key: {id}.key\n  ca: ca.crt\n"
    );
    let path = dir.join(format!("{id}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    let config = proxy::config::load(&path)?;
    Node::start(config).await.with_context(|| format!("node `{id}` did not start"))
}

/// Sends the line and `data` through `addr`, half-closes, and reads until EOF. Returns the
/// byte count, the SHA-256 and the first line of what came back.
async fn push_flow(addr: SocketAddr, data: &[u8]) -> anyhow::Result<(usize, digest::Digest, Vec<u8>)> {
    let tcp =
        TcpStream::connect(addr).await.with_context(|| format!("cannot connect to node a at {addr}"))?;
    tcp.set_nodelay(true)?;
    let (mut r, mut w) = tcp.into_split();
    let send = async {
        w.write_all(LINE).await?;
        w.write_all(data).await?;
        w.shutdown().await // TCP half-close: node a finishes the QUIC stream
    };
    let recv = async {
        let (mut ctx, mut buf, mut total, mut head) =
            (digest::Context::new(&SHA256), vec![0; 64 << 10], 0, vec![]);
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>((total, ctx.finish(), head));
            }
            let take = (LINE.len() - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
            ctx.update(&buf[..n]);
            total += n;
        }
    };
    let ((), out) = tokio::try_join!(send, recv).context("the flow failed")?;
    Ok(out)
}

fn print_stats(s: &proxy::node::Stats) {
    let list = |l: &[(String, u64)]| {
        let items: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if items.is_empty() { "none".to_string() } else { items.join(" ") }
    };
    let c = [s.flows_originated, s.flows_exited, s.flows_current, s.flows_reset, s.bytes_in, s.bytes_out];
    println!(
        "  {}: flows originated {}, exited here {}, open {}, reset {}; TCP bytes in {}, out {}",
        s.node_id, c[0], c[1], c[2], c[3], c[4], c[5]
    );
    let (matches, origin, inbound) =
        (list(&s.route_matches), list(&s.refused_at_origin), list(&s.refused_inbound));
    println!("     route matches: {matches}; refused: {origin} (as origin), {inbound} (inbound)");
}

/// Deterministic pseudo-random bytes (xorshift64).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let (mut x, mut out) = (seed | 1, Vec::with_capacity(len + 8));
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn hex(d: &digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
