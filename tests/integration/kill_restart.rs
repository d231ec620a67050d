//! Processes killed under load: `kill -9` of a relay with 100 flows through it, and
//! SIGTERM of a node with 100 flows open. Nothing may look like success that is not:
//! a flow either delivers every byte or ends with an error.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{KillOnDrop, free_port, proxy, temp};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `<node>.yaml` in `dir` (certificates from `mesh init` there) and starts it.
fn start(dir: &Path, node: &str, mesh_port: u16, body: &str) -> KillOnDrop {
    let path = dir.join(format!("{node}.yaml"));
    let text = format!(
        "common: {{ node_id: {node}, region: test, admin_addr: \"127.0.0.1:0\", log_level: warn }}\n{body}\n\
         mesh:\n  bind: \"127.0.0.1:{mesh_port}\"\n  cert: {node}.crt\n  key: {node}.key\n  ca: ca.crt\n  data_dir: data-{node}\n"
    );
    std::fs::write(&path, text).expect("write");
    let check = proxy().args(["check", "-c"]).arg(&path).output().expect("check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    KillOnDrop(proxy().args(["run", "-c"]).arg(&path).stderr(Stdio::null()).spawn().expect("spawn"))
}

fn mesh_init(dir: &Path, nodes: &str) {
    let out =
        proxy().args(["mesh", "init", "--dir"]).arg(dir).args(["--nodes", nodes]).output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until a flow through `entry` echoes a byte (the processes are up and linked).
async fn wait_ready(entry: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(entry)).await
        {
            let mut b = [0u8; 1];
            if c.write_all(b"r").await.is_ok()
                && tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no flow through {entry} within 20 s");
}

/// How a ping-pong flow ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// A read or write failed: the flow was reset (what a dead path must give).
    Error,
    /// The stream ended cleanly before the client finished: bytes went missing silently.
    CleanEofEarly,
    /// Ran to its time limit with every byte echoed.
    Completed,
}

/// Echo ping-pong of 16 KiB chunks until an error, an early clean end, or `limit`.
async fn ping_pong(entry: std::net::SocketAddr, limit: Duration) -> Ending {
    let Ok(mut s) = tokio::net::TcpStream::connect(entry).await else { return Ending::Error };
    let chunk = vec![0xa5u8; 16 * 1024];
    let mut back = vec![0u8; chunk.len()];
    let started = Instant::now();
    while started.elapsed() < limit {
        if s.write_all(&chunk).await.is_err() {
            return Ending::Error;
        }
        let mut got = 0;
        while got < back.len() {
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut back[got..])).await {
                Ok(Ok(0)) => return Ending::CleanEofEarly,
                Ok(Ok(n)) => got += n,
                Ok(Err(_)) | Err(_) => return Ending::Error,
            }
        }
        assert_eq!(back, chunk, "echoed bytes differ");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ending::Completed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_relay_resets_its_flows_and_new_flows_take_the_other_path() {
    let dir = temp("relay");
    mesh_init(&dir, "a,b,c,d");
    let echo = echo_server().await;
    let (pa, pb, pc, pd, entry_port) =
        (free_port(true), free_port(true), free_port(true), free_port(true), free_port(false));
    let _d = start(
        &dir,
        "d",
        pd,
        &format!(
            "peers: [ {{ name: b }}, {{ name: c }} ]\nexit_policy: {{ allow: [\"127.0.0.1:{}\"] }}",
            echo.port()
        ),
    );
    let relay = |name: &str, port: u16| {
        start(
            &dir,
            name,
            port,
            &format!("peers: [ {{ name: a }}, {{ name: d, address: \"127.0.0.1:{pd}\" }} ]"),
        )
    };
    let mut b = relay("b", pb);
    let _c = relay("c", pc);
    let _a = start(
        &dir,
        "a",
        pa,
        &format!(
            "listeners: [ {{ name: in, bind: \"127.0.0.1:{entry_port}\" }} ]\n\
         peers: [ {{ name: b, address: \"127.0.0.1:{pb}\" }}, {{ name: c, address: \"127.0.0.1:{pc}\" }} ]\n\
         routes: [ {{ name: in, match: {{ listener: in }}, target: \"{echo}\", exit: d, paths: [[b], [c]] }} ]"
        ),
    );
    let entry: std::net::SocketAddr = format!("127.0.0.1:{entry_port}").parse().expect("addr");
    wait_ready(entry).await;

    // 100 flows through b (the first path), then b dies without a word.
    let flows: Vec<_> = (0..100).map(|_| tokio::spawn(ping_pong(entry, Duration::from_secs(30)))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.0.kill().expect("kill -9");
    let _ = b.0.wait();
    let mut endings = Vec::new();
    for f in flows {
        endings.push(f.await.expect("flow task"));
    }
    let errors = endings.iter().filter(|e| **e == Ending::Error).count();
    assert!(
        !endings.contains(&Ending::CleanEofEarly),
        "a flow ended cleanly with bytes missing: {endings:?}"
    );
    assert_eq!(errors, 100, "every flow through the dead relay was reset: {endings:?}");

    // New flows take the other path, byte for byte.
    wait_ready(entry).await;
    many_echo_flows(entry, 20).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_100_flows_open_refuses_new_ones_finishes_some_resets_the_rest_and_exits_0() {
    let dir = temp("term");
    mesh_init(&dir, "a,b");
    let echo = echo_server().await;
    let (pa, pb, entry_port) = (free_port(true), free_port(true), free_port(false));
    let _b = start(
        &dir,
        "b",
        pb,
        &format!("peers: [ {{ name: a }} ]\nexit_policy: {{ allow: [\"127.0.0.1:{}\"] }}", echo.port()),
    );
    let mut a = start(
        &dir,
        "a",
        pa,
        &format!(
            "listeners: [ {{ name: in, bind: \"127.0.0.1:{entry_port}\" }} ]\n\
         peers: [ {{ name: b, address: \"127.0.0.1:{pb}\" }} ]\n\
         routes: [ {{ name: in, match: {{ listener: in }}, target: \"{echo}\", exit: b }} ]\n\
         limits: {{ drain_timeout: \"4s\" }}"
        ),
    );
    let entry: std::net::SocketAddr = format!("127.0.0.1:{entry_port}").parse().expect("addr");
    wait_ready(entry).await;

    // 50 flows that finish within the drain (2 s of ping-pong), 50 that would go on for a minute.
    let finishing: Vec<_> = (0..50).map(|_| tokio::spawn(ping_pong(entry, Duration::from_secs(2)))).collect();
    let lingering: Vec<_> =
        (0..50).map(|_| tokio::spawn(ping_pong(entry, Duration::from_secs(60)))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let ok = Command::new("kill").args(["-s", "TERM", &a.0.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused =
        tokio::time::timeout(Duration::from_secs(3), ping_pong(entry, Duration::from_secs(1))).await;
    assert_eq!(refused.ok(), Some(Ending::Error), "a new flow is refused at once while draining");
    for f in finishing {
        assert_eq!(f.await.expect("task"), Ending::Completed, "a finishing flow completes byte for byte");
    }
    for f in lingering {
        let ending = f.await.expect("task");
        assert_eq!(ending, Ending::Error, "a flow still open at the deadline is reset, not cut cleanly");
    }
    let status = loop {
        if let Some(status) = a.0.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(15), "the node did not exit within the drain deadline");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(4 + 5),
        "exited within the drain deadline and the reset grace"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
