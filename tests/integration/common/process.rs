//! The `proxy` binary as tests run it: the command, a child killed when the test ends
//! however it ends, temp directories and free ports.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The `proxy` binary built for these tests.
pub fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
}

/// A child process, killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh, empty directory for `tag` in this test process.
pub fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proxy-proc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// A port free at this moment on 127.0.0.1, UDP or TCP.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }
}
