//! A user-space link emulator: a UDP relay put between two nodes' QUIC endpoints that
//! imposes delay, jitter, loss, a rate limit or a blackhole on each direction, for tests
//! and demos on machines without netem.
//!
//! Side "a" is whoever sends to [`LinkEmulator::addr`]; side "b" is the target. Each
//! client address seen on the front socket gets its own back socket towards the target,
//! so replies find the right client (at most [`MAX_CLIENTS`], least recently heard from
//! evicted first).
//!
//! Invariants:
//! - Each direction is one FIFO bottleneck (token bucket) followed by a propagation delay.
//!   Without jitter, packets leave in the order they arrived, even across profile changes;
//!   with jitter, only as far as the jitter reorders them (as with netem).
//! - Randomness is seeded: the n-th packet of a direction always gets the n-th loss draw,
//!   so equal seeds and equal traffic give equal drop patterns.
//! - A profile change applies to packets that arrive afterwards; packets already queued
//!   keep the schedule they were given.
//! - Every received packet is counted once: forwarded, dropped (lost, blackholed or
//!   overflowed), or still queued.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::quic::bind_udp;
use schedule::{Schedule, Verdict};

mod schedule;

/// Most distinct client addresses served at once; one more evicts the quietest.
pub const MAX_CLIENTS: usize = 64;

/// Socket buffers: large, so bursts are queued by the emulator (and counted), not dropped
/// by the kernel.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Bytes a rate-limited direction may send back to back after being idle.
const RATE_BURST_BYTES: u64 = 16 * 1024;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// One direction of the emulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the side that sends to [`LinkEmulator::addr`] towards the target.
    AtoB,
    /// From the target back to the client.
    BtoA,
}

/// How one direction of the link behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` for each packet (may reorder).
    pub jitter: Duration,
    /// Probability in `0..=1` that a packet is lost (values outside are clamped).
    pub loss: f64,
    /// Bottleneck rate in bits per second, with a 16 KiB burst; `None` is unlimited and
    /// `Some(0)` carries nothing (counted as blackholed). Packets over the rate wait.
    pub rate_bps: Option<u64>,
    /// Drop everything.
    pub blackhole: bool,
    /// Most packets held in this direction (waiting for the rate or in flight), like
    /// netem's `limit`; beyond it arriving packets are dropped (tail drop).
    pub queue_limit: usize,
}

impl Default for LinkProfile {
    fn default() -> Self {
        LinkProfile::ideal()
    }
}

impl LinkProfile {
    /// No delay, no loss, no rate limit.
    pub fn ideal() -> Self {
        LinkProfile {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            blackhole: false,
            queue_limit: 10_000,
        }
    }

    /// A fixed one-way delay and nothing else.
    pub fn delayed(delay: Duration) -> Self {
        LinkProfile { delay, ..LinkProfile::ideal() }
    }

    /// Random loss with probability `loss` and nothing else.
    pub fn lossy(loss: f64) -> Self {
        LinkProfile { loss, ..LinkProfile::ideal() }
    }

    /// A bottleneck of `rate_bps` bits per second and nothing else.
    pub fn rate_limited(rate_bps: u64) -> Self {
        LinkProfile { rate_bps: Some(rate_bps), ..LinkProfile::ideal() }
    }

    /// Drops everything.
    pub fn blackholed() -> Self {
        LinkProfile { blackhole: true, ..LinkProfile::ideal() }
    }
}

/// Packet counts of one direction since the emulator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets that arrived to be carried in this direction.
    pub received: u64,
    /// Packets handed to the kernel on the far side (counted just after the send, so a
    /// receiver may see a packet a moment before it is counted).
    pub forwarded: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped by a blackhole (or a zero rate).
    pub blackholed: u64,
    /// Dropped because the queue was full.
    pub overflowed: u64,
}

impl DirectionStats {
    /// All drops, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.lost + self.blackholed + self.overflowed
    }
}

/// Packet counts of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    /// Client towards target.
    pub a_to_b: DirectionStats,
    /// Target towards client.
    pub b_to_a: DirectionStats,
}

/// Where a queued packet goes out.
#[derive(Debug)]
enum Exit {
    /// Through a client's back socket, connected to the target.
    Back(Arc<UdpSocket>),
    /// Through the front socket, to this client.
    Front(SocketAddr),
}

#[derive(Debug)]
struct Queued {
    due: Instant,
    seq: u64,
    data: Vec<u8>,
    exit: Exit,
}

// Ordered by due time, then arrival, so equal times stay FIFO.
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Queued {}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    lost: AtomicU64,
    blackholed: AtomicU64,
    overflowed: AtomicU64,
}

#[derive(Debug)]
struct PipeState {
    profile: LinkProfile,
    schedule: Schedule,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
}

/// One direction: its profile and schedule, the packets in it, and its counters.
#[derive(Debug)]
struct Pipe {
    state: Mutex<PipeState>,
    /// Wakes the delivery task when a packet becomes the earliest due.
    wake: Notify,
    counters: Counters,
}

impl Pipe {
    fn new(seed: u64) -> Self {
        let state = PipeState {
            profile: LinkProfile::ideal(),
            schedule: Schedule::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
        };
        Pipe { state: Mutex::new(state), wake: Notify::new(), counters: Counters::default() }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // The state stays consistent between statements, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules or drops an arriving packet.
    fn admit(&self, data: &[u8], exit: Exit) {
        let c = &self.counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now().into_std();
        let mut st = self.lock();
        let st = &mut *st;
        let dropped = match st.schedule.admit(&st.profile, data.len(), st.queue.len(), now) {
            Verdict::Deliver(due) => {
                st.seq += 1;
                let earliest = st.queue.peek().is_none_or(|Reverse(head)| due < head.due);
                st.queue.push(Reverse(Queued { due, seq: st.seq, data: data.to_vec(), exit }));
                if earliest {
                    self.wake.notify_one();
                }
                return;
            }
            Verdict::Lost => &c.lost,
            Verdict::Blackholed => &c.blackholed,
            Verdict::Overflowed => &c.overflowed,
        };
        dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The next packet due by now, or else when the next one is due.
    fn pop_due(&self) -> Result<Queued, Option<Instant>> {
        let now = tokio::time::Instant::now().into_std();
        let mut st = self.lock();
        match st.queue.peek() {
            Some(Reverse(head)) if head.due <= now => st.queue.pop().map(|Reverse(q)| q).ok_or(None),
            Some(Reverse(head)) => Err(Some(head.due)),
            None => Err(None),
        }
    }

    fn stats(&self) -> DirectionStats {
        let c = &self.counters;
        DirectionStats {
            received: c.received.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            blackholed: c.blackholed.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
        }
    }
}

/// Aborts the task when dropped, so tasks never outlive what owns them.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running emulated link between a client side ("a") and `target` ("b"). Dropping it
/// stops its tasks.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::{Duration, Instant};
/// use proxy::{LinkEmulator, LinkProfile};
///
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let far = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
///     let emulator = LinkEmulator::start(far.local_addr()?, 1).await?;
///     emulator.set_both(LinkProfile { delay: Duration::from_millis(40), ..LinkProfile::ideal() });
///     let near = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
///     let sent = Instant::now();
///     near.send_to(b"ping", emulator.addr()).await?;
///     let mut buf = [0u8; 16];
///     let arrived = tokio::time::timeout(Duration::from_secs(5), far.recv(&mut buf)).await;
///     let n = arrived.map_err(|_| std::io::Error::other("nothing arrived"))??;
///     assert_eq!(&buf[..n], b"ping");
///     assert!(sent.elapsed() >= Duration::from_millis(40), "the one-way delay was applied");
///     Ok::<_, std::io::Error>(())
/// })?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LinkEmulator {
    addr: SocketAddr,
    a_to_b: Arc<Pipe>,
    b_to_a: Arc<Pipe>,
    _tasks: Vec<AbortOnDrop>,
}

impl LinkEmulator {
    /// Binds `127.0.0.1:0` and forwards to `target`, both directions ideal until set.
    /// `seed` fixes every random draw.
    pub async fn start(target: SocketAddr, seed: u64) -> std::io::Result<LinkEmulator> {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), target, seed).await
    }

    /// Like [`LinkEmulator::start`], with the front socket bound to `bind`.
    pub async fn start_at(bind: SocketAddr, target: SocketAddr, seed: u64) -> std::io::Result<LinkEmulator> {
        let front = Arc::new(tokio_socket(bind)?);
        let addr = front.local_addr()?;
        // Different streams per direction, so the two directions do not mirror each other.
        let a_to_b = Arc::new(Pipe::new(seed));
        let b_to_a = Arc::new(Pipe::new(seed ^ 0xD1B5_4A32_D192_ED03));
        let tasks = vec![
            AbortOnDrop(tokio::spawn(deliver(a_to_b.clone(), front.clone()))),
            AbortOnDrop(tokio::spawn(deliver(b_to_a.clone(), front.clone()))),
            AbortOnDrop(tokio::spawn(front_loop(front, target, a_to_b.clone(), b_to_a.clone()))),
        ];
        Ok(LinkEmulator { addr, a_to_b, b_to_a, _tasks: tasks })
    }

    /// The address the client side sends to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes one direction's profile, for packets arriving from now on.
    pub fn set(&self, direction: Direction, profile: LinkProfile) {
        self.pipe(direction).lock().profile = profile;
    }

    /// Changes both directions' profiles.
    pub fn set_both(&self, profile: LinkProfile) {
        self.set(Direction::AtoB, profile.clone());
        self.set(Direction::BtoA, profile);
    }

    /// One direction's current profile.
    pub fn profile(&self, direction: Direction) -> LinkProfile {
        self.pipe(direction).lock().profile.clone()
    }

    /// Packet counts of both directions.
    pub fn stats(&self) -> EmulatorStats {
        EmulatorStats { a_to_b: self.a_to_b.stats(), b_to_a: self.b_to_a.stats() }
    }

    fn pipe(&self, direction: Direction) -> &Pipe {
        match direction {
            Direction::AtoB => &self.a_to_b,
            Direction::BtoA => &self.b_to_a,
        }
    }
}

fn tokio_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = bind_udp(bind, SOCKET_BUFFER)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Errors a UDP receive reports for an earlier ICMP message; the socket still works.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionReset | Interrupted | WouldBlock)
}

/// A client's back socket and the task relaying what the target sends it.
struct Client {
    back: Arc<UdpSocket>,
    last_seen: Instant,
    _task: AbortOnDrop,
}

/// Receives from clients on the front socket and queues towards the target.
async fn front_loop(front: Arc<UdpSocket>, target: SocketAddr, a_to_b: Arc<Pipe>, b_to_a: Arc<Pipe>) {
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match front.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                debug!(error = %e, "link emulator: front socket failed");
                return;
            }
        };
        let now = Instant::now();
        if let Some(client) = clients.get_mut(&from) {
            client.last_seen = now;
            a_to_b.admit(&buf[..n], Exit::Back(client.back.clone()));
            continue;
        }
        let back = match open_back(target).await {
            Ok(back) => Arc::new(back),
            Err(e) => {
                debug!(error = %e, client = %from, "link emulator: no back socket; packet dropped");
                continue;
            }
        };
        if clients.len() >= MAX_CLIENTS {
            // Evicting aborts the quietest client's back task with it.
            let quietest = clients.iter().min_by_key(|(_, c)| c.last_seen).map(|(a, _)| *a);
            if let Some(a) = quietest {
                clients.remove(&a);
            }
        }
        let task = AbortOnDrop(tokio::spawn(back_loop(back.clone(), from, b_to_a.clone())));
        a_to_b.admit(&buf[..n], Exit::Back(back.clone()));
        clients.insert(from, Client { back, last_seen: now, _task: task });
    }
}

/// A socket connected to `target`, so it hears only the target.
async fn open_back(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = tokio_socket(SocketAddr::new(any, 0))?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Receives what the target sends one client and queues it back towards that client.
async fn back_loop(back: Arc<UdpSocket>, client: SocketAddr, b_to_a: Arc<Pipe>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match back.recv(&mut buf).await {
            Ok(n) => b_to_a.admit(&buf[..n], Exit::Front(client)),
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                debug!(error = %e, %client, "link emulator: back socket failed");
                return;
            }
        }
    }
}

/// Sends each packet of `pipe` when it is due.
async fn deliver(pipe: Arc<Pipe>, front: Arc<UdpSocket>) {
    loop {
        match pipe.pop_due() {
            Ok(packet) => {
                let sent = match &packet.exit {
                    Exit::Back(back) => back.send(&packet.data).await,
                    Exit::Front(client) => front.send_to(&packet.data, *client).await,
                };
                // A failed send is a packet the network lost; it is not counted as forwarded.
                if sent.is_ok() {
                    pipe.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(Some(due)) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
                    _ = pipe.wake.notified() => {}
                }
            }
            // `notify_one` keeps a permit, so a packet queued since `pop_due` is not missed.
            Err(None) => pipe.wake.notified().await,
        }
    }
}
