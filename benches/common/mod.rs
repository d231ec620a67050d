//! Set-up shared by the benchmarks: a mesh CA and node certificates in a temp directory,
//! nodes from short YAML bodies, and an echo service.
#![allow(dead_code)]

pub mod heap;
pub mod rng;

/// The scheduler's defaults as a `Policy` (what `config::scheduler` fills in).
pub fn scheduler_policy() -> proxy::scheduler::state::Policy {
    proxy::scheduler::state::Policy {
        objective: proxy::core::pathfind::Objective::Latency,
        max_paths: 3,
        hysteresis: proxy::core::hysteresis::Hysteresis {
            margin: 0.1,
            hold: std::time::Duration::from_secs(5),
        },
        ttl: std::time::Duration::from_secs(300),
        dead_after: std::time::Duration::from_secs(15),
        pins: Vec::new(),
        max_links: 32,
    }
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use proxy::Node;
use proxy::pki::MeshCa;

/// A temp directory `proxy-<name>-<pid>` with a mesh CA and a certificate and key per node.
pub fn make_mesh(name: &str, nodes: &[&str]) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = MeshCa::generate("bench CA")?;
    std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
    for n in nodes {
        let c = ca.issue_node_cert(n, 1)?;
        std::fs::write(dir.join(format!("{n}.crt")), c.cert_pem)?;
        std::fs::write(dir.join(format!("{n}.key")), c.key_pem)?;
    }
    Ok(dir)
}

/// A node config: `body` (listeners, peers, routes, policy) plus a loopback mesh section
/// with `mesh_extra` settings (e.g. `keepalive_interval: "200ms"`).
pub fn yaml(id: &str, body: &str, mesh_extra: &str) -> String {
    let extra = if mesh_extra.is_empty() { String::new() } else { format!(", {mesh_extra}") };
    format!(
        "common: {{ node_id: {id}, region: bench, admin_addr: \"127.0.0.1:0\", log_level: error }}\n{body}\nmesh: {{ bind: \"127.0.0.1:0\", cert: {id}.crt, key: {id}.key, ca: ca.crt, data_dir: data-{id}{extra} }}\n"
    )
}

/// Starts node `id` in this process with its certificates in `dir`.
pub async fn node(dir: &Path, id: &str, body: &str, mesh_extra: &str) -> Result<Node> {
    let config =
        proxy::config::parse(&yaml(id, body, mesh_extra), dir).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Node::start(config).await
}

/// The number in environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Reads every connection `listener` accepts to its end, then answers one byte (so the
/// sender knows all arrived).
pub fn serve_sink(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
}

/// A TCP echo server on loopback.
pub async fn echo_server() -> Result<SocketAddr> {
    let l = proxy::node::bind_listener("127.0.0.1:0".parse()?)?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ =
                    tokio::io::copy_buf(&mut tokio::io::BufReader::with_capacity(64 * 1024, &mut r), &mut w)
                        .await;
            });
        }
    });
    Ok(addr)
}
