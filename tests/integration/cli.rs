//! The `proxy` binary: `mesh init`, `check`, `run`, signals and exit codes.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{KillOnDrop, free_port, proxy, temp};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let yaml = std::fs::read_to_string(dir.join("scheduler.yaml")).expect("read");
    assert!(yaml.contains("\nadmin_addr: \"127.0.0.1:9900\""), "the admin API's key is shown:\n{yaml}");
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
    let text = common::scheduler_config::on_loopback(&std::fs::read_to_string(&cfg).expect("read"));
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

/// What a log file held before the node started; the node must append after it.
const EARLIER_RUN: &str = "a line from an earlier run\n";

/// The node's whole lines in `log`, each parsed as JSON (a line that is not JSON fails
/// the test); what came before the node started must still be there.
fn node_log_lines(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).expect("read the log file");
    let ours = text.strip_prefix(EARLIER_RUN).expect("the log file was truncated");
    // A line still being written is not whole yet.
    let whole = ours.rsplit_once('\n').map_or("", |(lines, _)| lines);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// The first line of `log` with message `msg`, waiting for it up to 10 s.
fn wait_for_line(log: &Path, msg: &str) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(line) = node_log_lines(log).into_iter().find(|l| message(l) == msg) {
            return Some(line);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_node_logs_json_lines_with_flow_ids_to_its_log_file() {
    let dir = temp("jsonlog");
    let init =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "a"]).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
    let log = dir.join("logs/a.log");
    std::fs::write(&log, EARLIER_RUN).expect("write");
    // The route exits here, to a port nothing listens on: each flow is refused and logged.
    let closed = free_port(false);
    let cfg = dir.join("a.yaml");
    let text = format!(
        "common: {{ node_id: a, region: test, log_level: info, log_format: json, log_file: logs/a.log, admin_addr: \"127.0.0.1:0\" }}\n\
         listeners: [ {{ name: web, bind: \"127.0.0.1:0\" }} ]\n\
         routes: [ {{ name: web, match: {{ listener: web }}, target: \"127.0.0.1:{closed}\" }} ]\n\
         mesh: {{ bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }}\n"
    );
    std::fs::write(&cfg, text).expect("write");
    let mut node = proxy().args(["run", "-c"]).arg(&cfg).stderr(Stdio::piped()).spawn().expect("spawn");
    let Some(listening) = wait_for_line(&log, "listening") else {
        let _ = node.kill();
        panic!("no `listening` line: {:?}", std::fs::read_to_string(&log));
    };
    assert_eq!((&listening["level"], &listening["fields"]["listener"]), (&"INFO".into(), &"web".into()));
    let addr = listening["fields"]["addr"].as_str().expect("the listener's address").to_owned();
    let mut client = std::net::TcpStream::connect(&addr).expect("connect to the listener");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = std::io::Read::read(&mut client, &mut [0u8; 16]);
    let Some(refused) = wait_for_line(&log, "flow refused") else {
        let _ = node.kill();
        panic!("no `flow refused` line: {:?}", std::fs::read_to_string(&log));
    };
    // The flow's span is on its lines: its id, its route.
    assert_eq!(refused["span"]["name"], "flow");
    // The id is a string: a random u64 is past what a double (jq, JavaScript) holds exactly.
    let id = refused["span"]["id"].as_str().and_then(|id| id.parse::<u64>().ok());
    assert!(id.is_some(), "no flow id in {refused}");
    assert_eq!(refused["spans"][0]["id"], refused["span"]["id"]);
    assert_eq!(refused["span"]["route"], "web");
    assert_eq!(refused["fields"]["reason"], "target_unreachable");
    assert_eq!(signal_and_wait(&mut node, "TERM"), Some(0));
    let lines = node_log_lines(&log);
    assert!(lines.iter().any(|l| message(l) == "shutdown complete"), "{lines:?}");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut node.stderr.take().expect("stderr"), &mut stderr);
    assert!(stderr.is_empty(), "logs went to stderr too: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_log_file_in_a_missing_directory_is_refused_naming_the_key() {
    let dir = temp("nologdir");
    let init =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "a"]).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let cfg = dir.join("a.yaml");
    let text = "common: { node_id: a, region: test, log_file: gone/a.log }\n\
                mesh: { bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }\n";
    std::fs::write(&cfg, text).expect("write");
    for command in ["run", "check"] {
        let out = proxy().args([command, "-c"]).arg(&cfg).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "proxy {command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("common.log_file") && stderr.contains("gone"), "{stderr}");
    }
    assert!(!dir.join("gone").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_scheduler_logs_to_its_own_log_file() {
    let dir = temp("schedlog");
    let init = proxy().args(["mesh", "init", "--dir"]).arg(&dir).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let cfg = dir.join("scheduler.yaml");
    let text = std::fs::read_to_string(&cfg).expect("read");
    assert!(text.contains("log_format: text"), "mesh init's scheduler.yaml shows the logging keys");
    let text = common::scheduler_config::on_loopback(&text).replace("log_format: text", "log_format: json")
        + "log_file: scheduler.log\n";
    std::fs::write(&cfg, text).expect("write");
    let log = dir.join("scheduler.log");
    std::fs::write(&log, EARLIER_RUN).expect("write");
    let mut child = proxy().args(["scheduler", "-c"]).arg(&cfg).stderr(Stdio::null()).spawn().expect("spawn");
    let started = wait_for_line(&log, "scheduler started");
    assert_eq!(signal_and_wait(&mut child, "TERM"), Some(0));
    let started = started.expect("a `scheduler started` line");
    assert_eq!(started["level"], "INFO");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits up to 10 s for something to accept on `port`.
fn accepts(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_running_node_reloads_its_config_on_sighup_and_on_a_file_change() {
    let dir = temp("reload");
    let init =
        proxy().args(["mesh", "init", "--dir"]).arg(&dir).args(["--nodes", "a"]).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let (first, second, third) = (free_port(false), free_port(false), free_port(false));
    let config = |ports: &[(&str, u16)]| {
        let mut text = String::from(
            "common: { node_id: a, region: test, log_level: info, log_format: json, log_file: a.log, admin_addr: \"127.0.0.1:0\" }\nlisteners:\n",
        );
        for (name, port) in ports {
            text += &format!("  - {{ name: {name}, bind: \"127.0.0.1:{port}\" }}\n");
        }
        text += "routes:\n";
        for (name, _) in ports {
            text +=
                &format!("  - {{ name: {name}, match: {{ listener: {name} }}, target: \"127.0.0.1:9\" }}\n");
        }
        text + "mesh: { bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }\n"
    };
    let cfg = dir.join("a.yaml");
    std::fs::write(&cfg, config(&[("one", first)])).expect("write");
    let mut node = proxy().args(["run", "-c"]).arg(&cfg).stderr(Stdio::null()).spawn().expect("spawn");
    let log = dir.join("a.log");
    let wait_line = |msg: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|l| l.contains(msg)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    let outcome = || -> Result<(), String> {
        if !accepts(first) {
            return Err("the first listener never opened".into());
        }
        // SIGHUP: a second listener appears.
        std::fs::write(&cfg, config(&[("one", first), ("two", second)])).expect("write");
        let hup = Command::new("kill").args(["-s", "HUP", &node.id().to_string()]).status().expect("kill");
        assert!(hup.success());
        if !accepts(second) {
            return Err("SIGHUP did not open the second listener".into());
        }
        // A file change alone (polled): the first listener goes, a third appears.
        std::fs::write(&cfg, config(&[("two", second), ("three", third)])).expect("write");
        if !accepts(third) {
            return Err("the file change did not open the third listener".into());
        }
        if std::net::TcpStream::connect(("127.0.0.1", first)).is_ok() {
            return Err("the first listener is still open".into());
        }
        // A bad file is refused, logged, and the running config stays.
        std::fs::write(&cfg, "common: { node_id: a }\n").expect("write");
        if !wait_line("config refused") {
            return Err("no `config refused` line".into());
        }
        if !accepts(second) || !accepts(third) {
            return Err("a refused reload closed a listener".into());
        }
        Ok(())
    };
    let result = outcome();
    let code = signal_and_wait(&mut node, "TERM");
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0));
}

fn wait_for_text(path: &Path, text: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_machine_joins_with_one_command_and_is_removed_with_another() {
    let dir = temp("enroll");
    let mesh = dir.join("mesh");
    let init = proxy().args(["mesh", "init", "--dir"]).arg(&mesh).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("join token (10 use(s)"),
        "init makes a first token"
    );
    let cfg = mesh.join("scheduler.yaml");
    let port = free_port(true);
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("0.0.0.0:7900", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9900", "127.0.0.1:0");
    std::fs::write(&cfg, text).expect("write");
    let check = proxy().args(["check", "-c"]).arg(&cfg).output().expect("check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let mut scheduler =
        KillOnDrop(proxy().args(["scheduler", "-c"]).arg(&cfg).stderr(Stdio::null()).spawn().expect("spawn"));

    let created = proxy().args(["mesh", "token", "create", "-c"]).arg(&cfg).args(["--node-id", "a"]).output();
    let created = created.expect("token create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("pxj1-") && !token.contains('\n'), "stdout is the token alone: {token}");

    let node_log = dir.join("a.log");
    let join = |token: &str, id: &str, sub: &str| {
        let mut c = proxy();
        c.args(["mesh", "join", "--scheduler", &format!("127.0.0.1:{port}"), "--node-id", id])
            .args(["--region", "eu", "--bind", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--dir"])
            .arg(dir.join(sub))
            .env("PROXY_JOIN_TOKEN", token);
        c
    };
    let log = std::fs::File::create(&node_log).expect("log");
    let mut node =
        KillOnDrop(join(&token, "a", "a").stdout(Stdio::null()).stderr(log).spawn().expect("spawn join"));
    assert!(
        wait_for_text(&node_log, "connected to the scheduler", Duration::from_secs(20)),
        "the joined node started and reached the scheduler"
    );
    assert_eq!(std::fs::metadata(dir.join("a/node.key")).expect("key").permissions().mode() & 0o777, 0o600);

    let reused = join(&token, "a", "a2").output().expect("join again");
    assert_eq!(reused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    let malformed = join("pxj1-zz", "b", "b").output().expect("join");
    assert_eq!(malformed.status.code(), Some(2));
    // On the command line the token works, with a warning: every local user can read it.
    let on_line = join("", "b", "b").env_remove("PROXY_JOIN_TOKEN").args(["--token", "pxj1-zz"]).output();
    let on_line = on_line.expect("join");
    let stderr = String::from_utf8_lossy(&on_line.stderr);
    assert_eq!(on_line.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("warning: --token shows the token") && stderr.contains("--token-file"),
        "{stderr}"
    );
    let bad_ttl = proxy().args(["mesh", "token", "create", "-c"]).arg(&cfg).args(["--ttl", "0s"]).output();
    assert_eq!(bad_ttl.expect("run").status.code(), Some(2));

    let removed = proxy().args(["mesh", "remove", "a", "-c"]).arg(&cfg).output().expect("remove");
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert!(String::from_utf8_lossy(&removed.stdout).contains("removed `a`"));
    assert!(
        wait_for_text(&node_log, "certificate as revoked", Duration::from_secs(20)),
        "the removed node lost its session and cannot get it back"
    );
    let again = proxy().args(["mesh", "remove", "a", "-c"]).arg(&cfg).output().expect("remove");
    assert!(again.status.success(), "removing an id the registry does not hold still refuses it");
    assert!(String::from_utf8_lossy(&again.stdout).contains("was not a member"));

    assert_eq!(signal_and_wait(&mut node.0, "TERM"), Some(0));
    assert_eq!(signal_and_wait(&mut scheduler.0, "TERM"), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
