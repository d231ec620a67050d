//! The `proxy` binary under systemd: the readiness notifications it sends to
//! `NOTIFY_SOCKET` (`Type=notify`), in order and only once it serves, and the unit files in
//! packaging/systemd, which `systemd-analyze verify` must accept.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{KillOnDrop, free_port, proxy, temp};

/// How long a test waits for one notification.
const NOTIFY_WAIT: Duration = Duration::from_secs(20);

/// The next datagram on `socket`, as text; fails the test after [`NOTIFY_WAIT`], with
/// what the process wrote to `stderr_file`.
fn next_notification(socket: &UnixDatagram, child: &mut Child, stderr_file: &Path) -> String {
    socket.set_read_timeout(Some(NOTIFY_WAIT)).expect("timeout");
    let mut buf = vec![0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8(buf[..n].to_vec()).expect("a notification is UTF-8"),
        Err(e) => {
            let exited = child.try_wait().ok().flatten();
            let said = std::fs::read_to_string(stderr_file).unwrap_or_default();
            panic!(
                "no notification within {NOTIFY_WAIT:?} ({e}); the process exited: {exited:?}; its stderr:\n{said}"
            )
        }
    }
}

/// A file for a child's stderr.
fn stderr_to(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create the stderr file"))
}

/// The `KEY=VALUE` lines of a notification.
fn assignments(message: &str) -> Vec<(&str, &str)> {
    message.lines().map(|l| l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l:?}"))).collect()
}

fn value<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    assignments(message).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The admin address a `STATUS=` line names ("... admin API on ADDR").
fn admin_addr(message: &str) -> std::net::SocketAddr {
    let status = value(message, "STATUS").unwrap_or_else(|| panic!("no STATUS in {message:?}"));
    let addr = status.rsplit(' ').next().expect("a word");
    addr.parse().unwrap_or_else(|e| panic!("no admin address at the end of {status:?}: {e}"))
}

/// One GET of `/healthz`, no retry: the status line of the answer.
fn healthz_once(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("the admin API accepts at once");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

fn kill(child: &Child, sig: &str) {
    let ok = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
}

/// Waits, bounded, for the exit code.
fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the process did not exit");
}

/// A node config with a listener on each of `ports`, its admin API on a port the OS
/// picks.
fn node_config(dir: &Path, ports: &[u16]) -> std::path::PathBuf {
    let cfg = dir.join("a.yaml");
    let mut text = String::from("common: { node_id: a, region: test, admin_addr: \"127.0.0.1:0\" }\n");
    text += "listeners:\n";
    for port in ports {
        text += &format!("  - {{ name: l{port}, bind: \"127.0.0.1:{port}\" }}\n");
    }
    text += "routes:\n";
    for port in ports {
        text +=
            &format!("  - {{ name: l{port}, match: {{ listener: l{port} }}, target: \"127.0.0.1:9\" }}\n");
    }
    text += "mesh: { bind: \"127.0.0.1:0\", cert: a.crt, key: a.key, ca: ca.crt }\n";
    std::fs::write(&cfg, text).expect("write");
    cfg
}

fn init_mesh(dir: &Path, nodes: &str) {
    let mut init = proxy();
    init.args(["mesh", "init", "--dir"]).arg(dir);
    if !nodes.is_empty() {
        init.args(["--nodes", nodes]);
    }
    let out = init.output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_node_notifies_ready_once_it_serves_then_reloading_and_stopping() {
    let dir = temp("notify-node");
    init_mesh(&dir, "a");
    let port = free_port(false);
    let cfg = node_config(&dir, &[port]);
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let log = dir.join("stderr.log");
    let mut node = KillOnDrop(
        proxy()
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(stderr_to(&log))
            .spawn()
            .expect("spawn"),
    );

    // The first notification is READY=1, and by then the node serves: the admin API
    // and the listener answer at the first try, and a SIGHUP at once is a reload (its
    // default action would end the process).
    let ready = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    kill(&node.0, "HUP");
    let reloading = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let unchanged = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&unchanged, "READY"), Some("1"), "{unchanged:?}");
    let status = value(&ready, "STATUS").expect("a status");
    assert!(status.starts_with("serving: config version 1, 1 listener(s)"), "{status}");
    let admin = admin_addr(&ready);
    assert!(healthz_once(admin).contains(" 200 "), "the admin API did not answer /healthz with 200");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the listener accepts at once");

    // SIGHUP after adding a listener: RELOADING=1 with the monotonic clock, then READY=1
    // once the new config is in force.
    let second = free_port(false);
    node_config(&dir, &[port, second]);
    kill(&node.0, "HUP");
    let reloading = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let usec = value(&reloading, "MONOTONIC_USEC").expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "MONOTONIC_USEC={usec}");
    assert!(value(&reloading, "STATUS").is_some_and(|s| s.contains("SIGHUP")), "{reloading:?}");
    let reloaded = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&reloaded, "READY"), Some("1"), "{reloaded:?}");
    let status = value(&reloaded, "STATUS").expect("a status");
    assert!(status.starts_with("serving: config version 2, 2 listener(s)"), "{status}");
    std::net::TcpStream::connect(("127.0.0.1", second)).expect("the new listener accepts at READY=1");

    // A config the node refuses still ends the reload with READY=1, and says so.
    std::fs::write(&cfg, "common: { node_id: a }\n").expect("write");
    kill(&node.0, "HUP");
    let reloading = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let refused = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&refused, "READY"), Some("1"), "{refused:?}");
    assert!(value(&refused, "STATUS").is_some_and(|s| s.contains("refused")), "{refused:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    kill(&node.0, "TERM");
    let stopping = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert_eq!(exit_code(&mut node.0), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_scheduler_notifies_ready_and_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = temp("notify-sched");
    init_mesh(&dir, "");
    let cfg = dir.join("scheduler.yaml");
    let text = common::scheduler_config::on_loopback(&std::fs::read_to_string(&cfg).expect("read"));
    std::fs::write(&cfg, text).expect("write");
    let name = format!("proxy-test-notify-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let socket = UnixDatagram::bind_addr(&address).expect("bind the abstract notify socket");
    let log = dir.join("stderr.log");
    let mut scheduler = KillOnDrop(
        proxy()
            .args(["scheduler", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", format!("@{name}"))
            .stderr(stderr_to(&log))
            .spawn()
            .expect("spawn"),
    );
    let ready = next_notification(&socket, &mut scheduler.0, &log);
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    assert!(healthz_once(admin_addr(&ready)).contains(" 200 "), "the admin API did not answer");
    kill(&scheduler.0, "TERM");
    let stopping = next_notification(&socket, &mut scheduler.0, &log);
    assert_eq!(value(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert_eq!(exit_code(&mut scheduler.0), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_notify_socket_that_is_not_there_does_not_stop_the_node() {
    let dir = temp("notify-missing");
    init_mesh(&dir, "a");
    let port = free_port(false);
    let cfg = node_config(&dir, &[port]);
    let mut node = KillOnDrop(
        proxy()
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", dir.join("no-such.sock"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let deadline = Instant::now() + NOTIFY_WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the node never served");
        assert!(node.0.try_wait().expect("wait").is_none(), "the node exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(&node.0, "TERM");
    assert_eq!(exit_code(&mut node.0), Some(0));
    let mut stderr = String::new();
    let _ = node.0.stderr.take().expect("stderr").read_to_string(&mut stderr);
    assert!(stderr.contains("cannot notify the service manager"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `systemd-analyze`, where this machine has it.
fn systemd_analyze() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin"), std::path::PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// The packaged units, with `ExecStart=` pointed at the binary these tests built
/// (`systemd-analyze verify` checks that the program exists), written into `dir`.
fn units_for_verify(dir: &Path) -> Vec<std::path::PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let mut written = Vec::new();
    for name in ["proxy-node.service", "proxy-scheduler.service"] {
        let text = std::fs::read_to_string(source.join(name)).expect("read a unit");
        let path = dir.join(name);
        std::fs::write(&path, text.replace("/usr/bin/proxy", env!("CARGO_BIN_EXE_proxy"))).expect("write");
        written.push(path);
    }
    written
}

/// What `systemd-analyze verify` says about `units` (stdout and stderr), and whether it
/// exited 0.
fn verify(analyze: &Path, units: &[std::path::PathBuf]) -> (bool, String) {
    let out =
        Command::new(analyze).args(["verify", "--man=no"]).args(units).output().expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_keep_the_layout() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    for name in ["proxy-node.service", "proxy-scheduler.service"] {
        let text = std::fs::read_to_string(source.join(name)).expect("read a unit");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for wanted in [
            "Type=notify",
            "User=proxy",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
        ] {
            assert!(lines.contains(&wanted), "{name}: no `{wanted}`");
        }
        assert!(lines.iter().any(|l| l.starts_with("StateDirectory=proxy")), "{name}: no StateDirectory=");
        // Nothing the services write is under /etc: the config stays read-only.
        assert!(!lines.iter().any(|l| l.starts_with("ReadWritePaths=")), "{name}: writes outside its state");
    }

    let Some(analyze) = systemd_analyze() else {
        eprintln!("skipped: systemd-analyze is not on this machine, so the units are not verified");
        return;
    };
    let dir = temp("units");
    let units = units_for_verify(&dir);
    let (ok, said) = verify(&analyze, &units);
    assert!(ok, "systemd-analyze verify refused the units:\n{said}");
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("proxy-")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify complained about the units:\n{}", ours.join("\n"));

    // The check has teeth: a misspelt key in one of them is reported.
    let broken = std::fs::read_to_string(&units[0]).expect("read").replace("ProtectSystem=", "ProtectSytem=");
    std::fs::write(&units[0], broken).expect("write");
    let (_, said) = verify(&analyze, &units);
    assert!(said.contains("ProtectSytem"), "a misspelt key went unreported:\n{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The system calls in a `systemd-analyze syscall-filter` group, its nested groups
/// expanded.
fn syscall_group(analyze: &Path, group: &str, seen: &mut Vec<String>) -> Vec<String> {
    let out = Command::new(analyze).args(["syscall-filter", group]).output().expect("syscall-filter");
    let mut names = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            if !seen.iter().any(|g| g == line) {
                seen.push(line.to_string());
                names.extend(syscall_group(analyze, line, seen));
            }
        } else {
            names.push(line.to_string());
        }
    }
    names
}

/// Runs a node under strace through a start, a flow, a reload and a stop, and checks
/// that every system call it made is one the units allow (`SystemCallFilter=
/// @system-service` less `@privileged`) and every socket family one of
/// `RestrictAddressFamilies=`: the sandbox blocks nothing the node needs.
#[test]
fn the_node_needs_nothing_the_units_sandbox_blocks() {
    let (Some(analyze), true) =
        (systemd_analyze(), Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()))
    else {
        eprintln!("skipped: this needs strace and systemd-analyze");
        return;
    };
    let dir = temp("sandbox");
    init_mesh(&dir, "a");
    let port = free_port(false);
    let cfg = node_config(&dir, &[port]);
    let trace = dir.join("strace.out");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let log = dir.join("stderr.log");
    let mut node = KillOnDrop(
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_proxy"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(stderr_to(&log))
            .spawn()
            .expect("spawn strace"),
    );
    let ready = next_notification(&socket, &mut node.0, &log);
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    // A flow (its target refuses), the admin API, a reload, a stop.
    let mut flow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the listener accepts");
    let _ = flow.write_all(b"hello");
    let _ = flow.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = flow.read(&mut [0u8; 16]);
    assert!(healthz_once(admin_addr(&ready)).contains(" 200 "));
    // strace passes signals on to the traced process: the node's pid is strace's child.
    let pid = || {
        let children = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", node.0.id()))
            .expect("strace's children");
        children.split_whitespace().next().expect("the traced node").to_string()
    };
    let node_pid = pid();
    for sig in ["HUP", "TERM"] {
        assert!(Command::new("kill").args(["-s", sig, &node_pid]).status().expect("kill").success());
        let _ = next_notification(&socket, &mut node.0, &log);
    }
    assert_eq!(exit_code(&mut node.0), Some(0));

    let text = std::fs::read_to_string(&trace).expect("read the trace");
    let mut used: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.trim_start()))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.contains(&"socket") && used.contains(&"bind"), "the trace looks empty: {used:?}");
    let allowed = syscall_group(&analyze, "@system-service", &mut Vec::new());
    let privileged = syscall_group(&analyze, "@privileged", &mut Vec::new());
    let blocked: Vec<&&str> = used
        .iter()
        .filter(|s| !allowed.iter().any(|a| a == **s) || privileged.iter().any(|p| p == **s))
        .collect();
    assert!(blocked.is_empty(), "system calls the units' filter blocks: {blocked:?}");
    let mut families: Vec<&str> = text
        .match_indices("socket(AF_")
        .map(|(i, _)| text[i + 7..].split([',', ')']).next().unwrap_or(""))
        .collect();
    families.sort_unstable();
    families.dedup();
    for family in &families {
        assert!(
            ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"].contains(family),
            "socket family {family} is not allowed"
        );
    }
    eprintln!("{} distinct system calls, socket families {families:?}: all allowed", used.len());
    let _ = std::fs::remove_dir_all(&dir);
}
