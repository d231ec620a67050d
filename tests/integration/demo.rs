//! `proxy demo --quick`: the five-region demo runs to the end and every one of its checks
//! holds (it exits non-zero otherwise). Bounded: it is killed after 3 minutes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_quick_demo_shows_everything_it_promises() {
    // Output goes to files, so a chatty run can never block on a full pipe.
    let dir = std::env::temp_dir().join(format!("proxy-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["demo", "--quick"])
        .stdout(Stdio::from(std::fs::File::create(&out_path).expect("stdout file")))
        .stderr(Stdio::from(std::fs::File::create(&err_path).expect("stderr file")))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("proxy demo --quick did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for shown in
        ["via ap-south", "via us-west", "us-west killed", "SHA-256 identical both ways", "Mbit/s each way"]
    {
        assert!(stdout.contains(shown), "the demo did not show `{shown}`:\n{stdout}");
    }
    assert!(!stdout.contains("\x1b["), "no terminal control codes when stdout is not a terminal");
}
