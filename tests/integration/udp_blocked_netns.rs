//! Two hosts whose UDP traffic the kernel drops: node `b` runs as its own process in a
//! network namespace this test creates, behind a veth pair, with an `iptables` rule in
//! the namespace that drops every UDP packet. Node `a` (in the test's namespace) dials it
//! with the default `type: auto` at its QUIC address only: the link must come up over
//! TLS on TCP, on the same port number (the default `mesh.tcp_bind`), and carry flows.
//!
//! Needs root (to create the namespace) and `iptables` (`.ci/run` installs it). Without
//! root, or on a kernel without network namespaces or netfilter, the test says so and
//! skips; a missing `iptables` program fails it.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{KillOnDrop, proxy};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A namespace and the veth pair into it, deleted when dropped.
struct Namespace {
    name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth end inside it, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Creates the namespace with `host_ip` on the test's side and `ns_ip` inside, or says
/// why it cannot.
fn namespace(tag: u32, host_ip: &str, ns_ip: &str) -> Result<Namespace, String> {
    let name = format!("proxy-udpblock-{tag}");
    let (outside, inside) = (format!("pxh{tag}"), format!("pxn{tag}"));
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    run(&["ip", "netns", "add", &name])?;
    let ns = Namespace { name: name.clone() };
    run(&["ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
    run(&["ip", "link", "set", &inside, "netns", &name])?;
    run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &outside])?;
    run(&["ip", "link", "set", &outside, "up"])?;
    run(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &inside])?;
    run(&["ip", "netns", "exec", &name, "ip", "link", "set", &inside, "up"])?;
    run(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
    Ok(ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_dropped_by_the_kernel_the_mesh_carries_flows_over_tcp() {
    if Command::new("iptables").arg("-V").output().is_err() {
        panic!("`iptables` is not installed: install it (apt-get install -y iptables; .ci/run does)");
    }
    let tag = std::process::id() % 200 + 20;
    let (host_ip, ns_ip) = (format!("10.231.{tag}.1"), format!("10.231.{tag}.2"));
    let ns = match namespace(tag, &host_ip, &ns_ip) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIPPED: cannot create a network namespace here (needs root and netns support): {e}");
            return;
        }
    };
    for chain in ["INPUT", "OUTPUT"] {
        if let Err(e) =
            run(&["ip", "netns", "exec", &ns.name, "iptables", "-A", chain, "-p", "udp", "-j", "DROP"])
        {
            eprintln!("SKIPPED: the kernel takes no netfilter rule in a namespace: {e}");
            return;
        }
    }

    // The target, on the test's side of the veth pair.
    let target = tokio::net::TcpListener::bind(format!("{host_ip}:0")).await.expect("bind target");
    let target_addr = target.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = target.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let mesh = Mesh::new(&["a", "b"]);
    let mut b = NodeSpec::new("b");
    b.mesh_bind = format!("{ns_ip}:7800");
    b.peers = vec![("a", String::new())];
    b.allow = vec![format!("{host_ip}/32")];
    let b_config = mesh.path("b-netns.yaml");
    std::fs::write(&b_config, b.yaml()).expect("write config");
    // `ip netns exec NAME proxy run -c FILE`: node b lives inside the namespace.
    let _b = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(proxy().get_program())
            .args(["run", "-c"])
            .arg(&b_config)
            .current_dir(&mesh.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start node b in the namespace"),
    );

    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", format!("{ns_ip}:7800"))];
    a.routes = vec![("in", target_addr.to_string(), Some("b"))];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(30)).await, "no link to b with its UDP dropped");
    assert_link_transport(&a, "b", Transport::Tcp);
    assert_eq!(a.stats().link_fallbacks, 1);

    let entry = listener_addr(&a, "in");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let mut c = connect(entry).await;
    let (mut r, mut w) = c.split();
    let send = async {
        w.write_all(&payload).await.expect("write");
        w.shutdown().await.expect("half-close");
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (_, got) = tokio::join!(send, recv);
    got.expect("read");
    assert_eq!(sha256(&back), sha256(&payload), "a megabyte echoed byte exact over the TCP link");
}
