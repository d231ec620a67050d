//! The `proxy` binary: `mesh init`, `check`, `run`, signals and exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
}

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("proxy-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }
}

/// Sends `sig` with kill(1) and waits for the exit code, bounded.
fn signal_and_wait(child: &mut Child, sig: &str) -> Option<i32> {
    let ok = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("process did not exit after SIG{sig}");
}

#[test]
fn mesh_init_writes_a_ca_and_node_certificates_with_private_keys_0600() {
    let dir = temp("init");
    let out =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "a,b,c"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for f in [
        "ca.crt",
        "ca.key",
        "scheduler.crt",
        "scheduler.key",
        "scheduler.yaml",
        "a.crt",
        "a.key",
        "b.crt",
        "b.key",
        "c.crt",
        "c.key",
    ] {
        let p = dir.join(f);
        assert!(stdout.contains(&p.display().to_string()), "not reported: {f}");
        let mode = std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
        if f.ends_with(".key") {
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    // The certificate names its node, and chains to the CA (TlsIdentity checks both).
    let id = proxy::tls::TlsIdentity::load(&dir.join("b.crt"), &dir.join("b.key"), &dir.join("ca.crt"), "b");
    assert!(id.is_ok(), "{:?}", id.err());
    let wrong =
        proxy::tls::TlsIdentity::load(&dir.join("b.crt"), &dir.join("b.key"), &dir.join("ca.crt"), "a");
    assert!(wrong.is_err());
    // A second init into the same directory refuses to overwrite the CA.
    let again =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "d"]).output().expect("run");
    assert_eq!(again.status.code(), Some(2));
    let bad = proxy().args(["mesh", "init", "--dir"]).arg(dir.join("x")).args(["--nodes", "Bad_Id"]).output();
    assert_eq!(bad.expect("run").status.code(), Some(2));
    let reserved =
        proxy().args(["mesh", "init", "--dir"]).arg(dir.join("y")).args(["--nodes", "scheduler"]).output();
    assert_eq!(reserved.expect("run").status.code(), Some(2));
    // The example scheduler config it wrote passes `proxy check`.
    let check = proxy().arg("check").arg("-c").arg(dir.join("scheduler.yaml")).output().expect("check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_usage_and_bad_config_exit_2_without_starting() {
    let dir = temp("usage");
    assert_eq!(proxy().arg("frobnicate").output().expect("run").status.code(), Some(2));
    let cfg = dir.join("bad.yaml");
    std::fs::write(
        &cfg,
        "common: { node_id: a, region: r, admin_addr: \"127.0.0.1:0\" }\nmesh: { cert: no.crt, key: no.key, ca: no.crt }\n",
    )
    .expect("write");
    let out = proxy().args(["run", "-c"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mesh.cert") && stderr.contains("refusing to start"), "{stderr}");
    // `proxy -c FILE` is the same as `proxy run -c FILE`.
    assert_eq!(proxy().arg("-c").arg(&cfg).output().expect("run").status.code(), Some(2));
    // `proxy` alone reads ./config.yaml.
    let out = proxy().current_dir(&dir).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.yaml"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_config(dir: &Path, node: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{node}.yaml"));
    let text = format!(
        "common: {{ node_id: {node}, region: test, admin_addr: \"127.0.0.1:0\", log_level: info }}\n{body}\nmesh:\n  bind: \"{}\"\n  cert: {node}.crt\n  key: {node}.key\n  ca: ca.crt\n",
        "127.0.0.1:PORT"
    );
    std::fs::write(&p, text).expect("write");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_carry_a_flow_and_exit_0_on_sigterm() {
    let dir = temp("run");
    let init =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "a,b"]).output().expect("init");
    assert!(init.status.success());
    let echo = echo_server().await;
    let (ua, ub, ta) = (free_port(true), free_port(true), free_port(false));
    let b_body =
        format!("peers: [ {{ name: a }} ]\nexit_policy: {{ allow: [\"127.0.0.1:{}\"] }}", echo.port());
    let a_body = format!(
        "listeners: [ {{ name: web, bind: \"127.0.0.1:{ta}\" }} ]\npeers: [ {{ name: b, address: \"127.0.0.1:{ub}\" }} ]\nroutes: [ {{ name: web, match: {{ listener: web }}, target: \"{echo}\", exit: b }} ]"
    );
    let b_cfg = write_config(&dir, "b", &b_body);
    let a_cfg = write_config(&dir, "a", &a_body);
    for (cfg, port) in [(&b_cfg, ub), (&a_cfg, ua)] {
        let t = std::fs::read_to_string(cfg).expect("read").replace("PORT", &port.to_string());
        std::fs::write(cfg, t).expect("write");
        let check = proxy().arg("check").arg("-c").arg(cfg).output().expect("check");
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    }
    let spawn =
        |cfg: &Path| proxy().args(["run", "-c"]).arg(cfg).stderr(Stdio::null()).spawn().expect("spawn");
    let mut b = spawn(&b_cfg);
    let mut a = spawn(&a_cfg);
    let entry: std::net::SocketAddr = format!("127.0.0.1:{ta}").parse().expect("addr");
    let payload = vec![0x5au8; 256 * 1024];
    let mut echoed = None;
    for _ in 0..100 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(entry).await {
            let _ = c.write_all(&payload).await;
            let _ = c.shutdown().await;
            let mut got = Vec::new();
            if c.read_to_end(&mut got).await.is_ok() && got.len() == payload.len() {
                echoed = Some(got);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let echoed = echoed.expect("a flow crossed the two processes");
    assert_eq!(sha256(&echoed), sha256(&payload));
    assert_eq!(signal_and_wait(&mut a, "TERM"), Some(0));
    assert_eq!(signal_and_wait(&mut b, "INT"), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_scheduler_runs_from_its_config_and_exits_0_on_sigterm() {
    let dir = temp("sched");
    let init = proxy().args(["mesh", "init", "--dir"]).arg(&dir).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let cfg = dir.join("scheduler.yaml");
    let text = std::fs::read_to_string(&cfg).expect("read").replace("0.0.0.0:7900", "127.0.0.1:0");
    std::fs::write(&cfg, text).expect("write");
    let mut child = proxy().args(["scheduler", "-c"]).arg(&cfg).stderr(Stdio::null()).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().expect("wait").is_none(), "the scheduler exited early");
    assert_eq!(signal_and_wait(&mut child, "TERM"), Some(0));
    // A broken scheduler config is refused with exit code 2.
    std::fs::write(&cfg, "cert: nope.crt\nkey: nope.key\nca: ca.crt\nobjective: fastest\n").expect("write");
    let out = proxy().args(["scheduler", "-c"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("objective"));
    let _ = std::fs::remove_dir_all(&dir);
}
