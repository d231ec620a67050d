//! `proxy demo --quick`: the five-region demo runs to the end and every one of its checks
//! holds (it exits non-zero otherwise). Bounded: it is killed after 3 minutes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_quick_demo_shows_everything_it_promises() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["demo", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("proxy demo --quick did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for shown in ["via ap-south", "via us-west", "us-west killed", "SHA-256 identical both ways"] {
        assert!(stdout.contains(shown), "the demo did not show `{shown}`:\n{stdout}");
    }
    assert!(!stdout.contains("\x1b["), "no terminal control codes when stdout is not a terminal");
}
