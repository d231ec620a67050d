//! A WAN path for kernel TCP as well as QUIC: two network namespaces, each with a TUN
//! device, and this process moving IP packets between the two devices with a delay,
//! random loss and a rate limit with a tail-drop queue on each direction (the kernel here
//! has no netem, and the project's emulator relays UDP only). Both link transports cross
//! the same path, so their figures compare.
//!
//! Needs root. Everything is deleted when the [`TunPath`] is dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// One direction's impairments.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// One-way delay.
    pub delay: Duration,
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Bottleneck rate, bits per second; `None`: as fast as this process moves packets.
    pub rate_bps: Option<u64>,
    /// Most bytes queued at the bottleneck; beyond it packets are dropped.
    pub queue_bytes: usize,
}

/// Packets dropped by the queue and by random loss, both directions.
#[derive(Debug, Default)]
pub struct PathCounters {
    pub forwarded: AtomicU64,
    pub lost: AtomicU64,
    pub overflowed: AtomicU64,
}

/// Two namespaces `<name>-a` and `<name>-b`, joined by this process through TUN devices;
/// `a` has [`TunPath::A_IP`], `b` [`TunPath::B_IP`].
pub struct TunPath {
    names: [String; 2],
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub counters: Arc<PathCounters>,
}

impl TunPath {
    pub const A_IP: &'static str = "10.232.0.1";
    pub const B_IP: &'static str = "10.232.0.2";

    /// Creates the namespaces and devices and starts moving packets with `each_way`.
    pub async fn start(name: &str, each_way: Impairment) -> Result<TunPath> {
        let names = [format!("{name}-a"), format!("{name}-b")];
        let mut path = TunPath { names: names.clone(), tasks: Vec::new(), counters: Arc::default() };
        let mut fds = Vec::new();
        for (ns, ip) in names.iter().zip([Self::A_IP, Self::B_IP]) {
            let _ =
                Command::new("ip").args(["netns", "del", ns]).stderr(std::process::Stdio::null()).status();
            run(&["ip", "netns", "add", ns])?;
            let fd = in_netns(ns, open_tun)?;
            run(&["ip", "netns", "exec", ns, "ip", "addr", "add", &format!("{ip}/24"), "dev", "tun0"])?;
            run(&["ip", "netns", "exec", ns, "ip", "link", "set", "tun0", "mtu", "1500", "up"])?;
            run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
            // SAFETY: the descriptor is owned here and stays open as long as the AsyncFd.
            let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| anyhow::anyhow!("register tun: {e}"))?;
            fds.push(Arc::new(fd));
        }
        for (from, to, seed) in [(0, 1, 1), (1, 0, 2)] {
            let (rx, tx) = (fds[from].clone(), fds[to].clone());
            let counters = path.counters.clone();
            path.tasks.push(tokio::spawn(async move {
                let _ = forward(rx, tx, each_way, seed, counters).await;
            }));
        }
        Ok(path)
    }

    /// Namespace `a`'s name.
    pub fn a(&self) -> &str {
        &self.names[0]
    }

    /// Namespace `b`'s name.
    pub fn b(&self) -> &str {
        &self.names[1]
    }
}

impl Drop for TunPath {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(cmd: &[&str]) -> Result<()> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().with_context(|| cmd[0].to_string())?;
    if !out.status.success() {
        bail!("`{}`: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `f` on a thread that joined network namespace `ns`: sockets and devices it creates
/// live there, whichever thread uses them afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| path.clone())?;
        // SAFETY: setns on this thread only, with a valid namespace descriptor.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Opens TUN device `tun0` (IP packets, no extra header), non-blocking.
fn open_tun() -> Result<OwnedFd> {
    // SAFETY: plain open/ioctl on a fresh descriptor; `ifr` outlives the call.
    unsafe {
        let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC);
        if fd < 0 {
            bail!("/dev/net/tun: {}", std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"tun0\0") {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) < 0 {
            bail!("TUNSETIFF: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Moves packets from `rx` to `tx`: random loss, then a FIFO bottleneck (rate and queue
/// limit), then the propagation delay.
async fn forward(
    rx: Arc<AsyncFd<OwnedFd>>,
    tx: Arc<AsyncFd<OwnedFd>>,
    imp: Impairment,
    seed: u64,
    counters: Arc<PathCounters>,
) -> Result<()> {
    // Seeded xorshift: the same loss pattern every run.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut draw = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    // (release time, packet); releases are in order: one FIFO, one fixed delay.
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut bottleneck_free = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = queue.front().map(|(t, _)| *t);
        tokio::select! {
            ready = rx.readable() => {
                let mut guard = ready?;
                loop {
                    // SAFETY: reading into a buffer we own, of its length.
                    let n = unsafe { libc::read(rx.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            guard.clear_ready();
                            break;
                        }
                        return Err(e.into());
                    }
                    let len = n as usize;
                    if draw() < imp.loss {
                        counters.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let now = Instant::now();
                    let start = bottleneck_free.max(now);
                    // Bytes waiting at the bottleneck: what it has not yet sent.
                    let waiting = imp.rate_bps.map_or(0, |r| ((start - now).as_secs_f64() * r as f64 / 8.0) as usize);
                    if waiting + len > imp.queue_bytes {
                        counters.overflowed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let sent = start + imp.rate_bps.map_or(Duration::ZERO, |r| Duration::from_secs_f64(len as f64 * 8.0 / r as f64));
                    bottleneck_free = sent;
                    queue.push_back((sent + imp.delay, buf[..len].to_vec()));
                }
            }
            _ = sleep_until(next) => {
                let now = Instant::now();
                while queue.front().is_some_and(|(t, _)| *t <= now) {
                    if let Some((_, packet)) = queue.pop_front() {
                        // SAFETY: writing a packet we own to the device.
                        let _ = unsafe { libc::write(tx.get_ref().as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
                        counters.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
