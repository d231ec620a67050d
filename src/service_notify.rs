//! Telling a service manager (systemd, `Type=notify`) what state the process is in: ready
//! once it serves, reloading around a config reload, stopping at shutdown, with a one-line
//! status for `systemctl status`. Nothing happens when `NOTIFY_SOCKET` is unset, so a
//! process started by hand or by another supervisor is unaffected.
//!
//! Hand-written rather than the `sd-notify` crate: its latest release treats a socket
//! name starting with `@` as a file path, so the abstract sockets systemd hands out in
//! some setups (containers, test harnesses) would fail; the protocol is one datagram of
//! `KEY=VALUE` lines, and std reaches abstract sockets safely.

use std::os::unix::net::UnixDatagram;

/// The variable systemd sets for `Type=notify` services: the socket's path, or `@name`
/// for a Linux abstract socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Startup is done (or a reload is): the process serves. `status` is what
/// `systemctl status` shows.
pub(crate) fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// A reload has begun; [`ready`] ends it. `MONOTONIC_USEC` is what systemd 253 and later
/// require with `RELOADING=1` (`Type=notify-reload`); older ones ignore it.
pub(crate) fn reloading(status: &str) {
    let mut message = String::from("RELOADING=1\n");
    if let Some(usec) = monotonic_usec() {
        message += &format!("MONOTONIC_USEC={usec}\n");
    }
    send(&(message + &format!("STATUS={}\n", one_line(status))));
}

/// Shutdown has begun (draining); the process exits when it is done.
pub(crate) fn stopping(status: &str) {
    send(&format!("STOPPING=1\nSTATUS={}\n", one_line(status)));
}

/// A status line is one line: a newline would start another `KEY=VALUE` assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Sends `message` to `NOTIFY_SOCKET`, if set; a failure is logged, never fatal (the
/// process serves either way, and systemd reports a missed `READY=1` itself).
fn send(message: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&socket, message.as_bytes()) {
        tracing::warn!(socket = %socket.to_string_lossy(), "cannot notify the service manager: {e}");
    }
}

fn send_to(socket: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sender = UnixDatagram::unbound()?;
    let sent = match socket.as_bytes() {
        [] => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the variable is empty")),
        [b'@', name @ ..] => send_abstract(&sender, name, message)?,
        _ => sender.send_to(message, socket)?,
    };
    if sent != message.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the datagram was cut short"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(message, &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload requests with.
#[cfg(target_os = "linux")]
fn monotonic_usec() -> Option<u128> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u128::try_from(now.tv_sec).ok()?;
    let nanos = u128::try_from(now.tv_nsec).ok()?;
    Some(secs * 1_000_000 + nanos / 1_000)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_usec() -> Option<u128> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_and_an_abstract_one_each_get_one_datagram() {
        let dir = std::env::temp_dir().join(format!("proxy-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), b"READY=1\n").expect("send to a path");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("proxy-notify-unit-{}", std::process::id());
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
            let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract");
            send_to(std::ffi::OsStr::new(&format!("@{name}")), b"STOPPING=1\n").expect("send abstract");
            let n = receiver.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..n], b"STOPPING=1\n");
        }
        assert!(send_to(std::ffi::OsStr::new(""), b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("refused: a\nSTOPPING=1"), "refused: a STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monotonic_clock_moves_forward() {
        let first = monotonic_usec().expect("clock");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec().expect("clock") > first);
    }
}
