//! `cargo run --release --example embed_node`: a node embedded in your own program.
//!
//! The library is the binary's engine: build a [`proxy::config::Config`] (here from YAML,
//! as `proxy run` does), start a [`proxy::Node`], and read what the admin API shows
//! through its methods. This one node exits flows to a local echo service; a flow from
//! its own listener goes straight there (no peer needed), so the example is self-contained.

use std::time::Duration;

use proxy::Node;
use proxy::pki::{self, MeshCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A temp directory, removed when dropped (also when the example fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Certificates for the node, in a temp directory (a real deployment uses `mesh join`).
    let temp = TempDir(std::env::temp_dir().join(format!("proxy-embed-{}", std::process::id())));
    let dir = temp.0.clone();
    std::fs::create_dir_all(&dir)?;
    let ca = MeshCa::generate("embed example CA")?;
    let cert = ca.issue_node_cert("embedded", 1)?;
    let mut files = Vec::new();
    for (name, text, secret) in [
        ("ca.crt", ca.cert_pem(), false),
        ("node.crt", cert.cert_pem, false),
        ("node.key", cert.key_pem, true),
    ] {
        let _ = std::fs::remove_file(dir.join(name));
        pki::write_file(&dir.join(name), &text, secret, &mut files)?;
    }

    // A service to reach.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    // The node: one listener whose route ends at the service.
    let yaml = format!(
        "common: {{ node_id: embedded, region: local, admin_addr: \"127.0.0.1:0\" }}\n\
         listeners: [ {{ name: app, bind: \"127.0.0.1:0\" }} ]\n\
         routes: [ {{ name: app, match: {{ listener: app }}, target: \"{service_addr}\" }} ]\n\
         mesh: {{ bind: \"127.0.0.1:0\", cert: node.crt, key: node.key, ca: ca.crt, data_dir: data }}\n"
    );
    std::fs::write(dir.join("node.yaml"), yaml)?;
    let config = proxy::config::load(&dir.join("node.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = Node::start(config).await?;
    let app = node.listeners()[0].addr;
    println!("node `embedded` listening on {app}; admin API on {}", node.admin_addr());

    // Use it as an application would, then read the node's own counters.
    let mut conn = tokio::net::TcpStream::connect(app).await?;
    conn.write_all(b"hello, embedded mesh").await?;
    let mut back = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut back)).await??;
    println!("echoed: {}", String::from_utf8_lossy(&back));
    drop(conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = node.stats();
    println!(
        "flows: {} local, {} bytes in, {} bytes out",
        stats.flows_local, stats.bytes_in, stats.bytes_out
    );
    let report = node.shutdown().await;
    println!("shut down: {} flows open at the start of the drain", report.open_at_start);
    drop(temp);
    Ok(())
}
