//! Test harness: a mesh CA in a temp dir, nodes started in-process on port 0, and TCP
//! servers (echo, sink, banner) with checksums; headless Chromium in `browser`.
#![allow(dead_code)]

pub mod browser;
pub mod dns;
pub mod etcd;
pub mod process;
pub mod raw_flow;
pub mod scheduler_config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proxy::Node;
use proxy::pki::MeshCa;
use ring::digest::{Context, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A temp directory with a CA and node certificates.
pub struct Mesh {
    pub dir: PathBuf,
    pub ca: MeshCa,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Mesh {
    /// A fresh mesh with certificates for `nodes`.
    pub fn new(nodes: &[&str]) -> Mesh {
        let dir = std::env::temp_dir().join(format!(
            "proxy-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = MeshCa::generate("test CA").expect("ca");
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).expect("write ca");
        let mesh = Mesh { dir, ca };
        for n in nodes {
            mesh.issue(n, n);
        }
        mesh
    }

    /// Writes `<file>.crt`/`<file>.key` for a certificate naming `node_id`.
    pub fn issue(&self, file: &str, node_id: &str) {
        let c = self.ca.issue_node_cert(node_id, 1).expect("issue");
        std::fs::write(self.dir.join(format!("{file}.crt")), c.cert_pem).expect("write crt");
        std::fs::write(self.dir.join(format!("{file}.key")), c.key_pem).expect("write key");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options for one test node's YAML.
pub struct NodeSpec<'a> {
    pub id: &'a str,
    /// Certificate file stem (defaults to the id).
    pub cert: Option<&'a str>,
    pub mesh_bind: String,
    /// `(name, address)`; address may be empty for accept-only peers.
    pub peers: Vec<(&'a str, String)>,
    /// `(listener name, target, exit)`: a listener on 127.0.0.1:0 and a route from it.
    pub routes: Vec<(&'a str, String, Option<&'a str>)>,
    pub allow: Vec<String>,
    /// Extra lines for the `limits` section, e.g. `header_timeout: "500ms"`.
    pub limits: Vec<String>,
    /// `mesh.link_idle_timeout`.
    pub link_idle: &'a str,
    /// Relays for every route (`via`).
    pub via: Vec<&'a str>,
    /// Extra lines for the `mesh` section, e.g. `relay: false`.
    pub mesh_extra: Vec<String>,
    /// The scheduler's address, when the node uses one; several, comma-separated, are
    /// written as `scheduler.addresses`.
    pub scheduler: Option<String>,
    /// `mesh.keepalive_interval`.
    pub keepalive: &'a str,
    /// Extra lines for every route, e.g. `multipath: true`.
    pub route_extra: Vec<String>,
    /// The whole `exit_policy` section, instead of one from `allow`.
    pub policy: Option<String>,
    /// The `type` of every peer with an address; with it, the node also accepts links over
    /// TCP on a port of its own (see [`link_addr`]).
    pub transport: Option<Transport>,
    /// Extra lines for every peer with an address, e.g. `tcp_address: ...`.
    pub peer_extra: Vec<String>,
    /// `(listener name, target, exit)` like `routes`, with a `protocol: udp` listener.
    pub udp_routes: Vec<(&'a str, String, Option<&'a str>)>,
    /// The port every listener binds on 127.0.0.1 (0: any free one each).
    pub listen_port: u16,
    /// `common.region` (default `test`).
    pub region: &'a str,
}

/// A link transport a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    /// The `peers[].type` value, and the name `/api/peers` reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

/// The address peers dial `node` at over `transport`.
pub fn link_addr(node: &Node, transport: Transport) -> String {
    match transport {
        Transport::Quic => node.mesh_addr().expect("mesh addr").to_string(),
        Transport::Tcp => node.tcp_links_addr().expect("the node accepts links over TCP").to_string(),
    }
}

/// Makes `name::quic` and `name::tcp` tests from `async fn name(transport: Transport)`.
#[macro_export]
macro_rules! over_both_transports {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                super::$name(super::common::Transport::Quic).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$name(super::common::Transport::Tcp).await
            }
        }
    )* };
}

impl<'a> NodeSpec<'a> {
    pub fn new(id: &'a str) -> Self {
        NodeSpec {
            id,
            cert: None,
            mesh_bind: "127.0.0.1:0".into(),
            peers: vec![],
            routes: vec![],
            allow: vec![],
            limits: vec![],
            link_idle: "5s",
            via: vec![],
            mesh_extra: vec![],
            scheduler: None,
            keepalive: "1s",
            route_extra: vec![],
            policy: None,
            transport: None,
            peer_extra: vec![],
            udp_routes: vec![],
            listen_port: 0,
            region: "test",
        }
    }

    pub fn yaml(&self) -> String {
        let cert = self.cert.unwrap_or(self.id);
        let mut y = format!(
            "common:\n  node_id: {}\n  region: {}\n  log_level: warn\n  admin_addr: \"127.0.0.1:0\"\n",
            self.id, self.region
        );
        y += "listeners:\n";
        if self.routes.is_empty() && self.udp_routes.is_empty() {
            y += "  []\n";
        }
        let port = self.listen_port;
        for (name, _, _) in &self.routes {
            y += &format!("  - name: {name}\n    bind: \"127.0.0.1:{port}\"\n");
        }
        for (name, _, _) in &self.udp_routes {
            y += &format!("  - name: {name}\n    bind: \"127.0.0.1:{port}\"\n    protocol: udp\n");
        }
        y += "peers:\n";
        if self.peers.is_empty() {
            y += "  []\n";
        }
        for (name, addr) in &self.peers {
            y += &format!("  - name: {name}\n");
            if !addr.is_empty() {
                y += &format!("    address: \"{addr}\"\n");
                if let Some(t) = self.transport {
                    y += &format!("    type: {}\n", t.name());
                }
                for l in &self.peer_extra {
                    y += &format!("    {l}\n");
                }
            }
        }
        y += "routes:\n";
        if self.routes.is_empty() && self.udp_routes.is_empty() {
            y += "  []\n";
        }
        for (name, target, exit) in self.routes.iter().chain(&self.udp_routes) {
            y += &format!("  - name: {name}\n    match: {{ listener: {name} }}\n    target: \"{target}\"\n");
            if let Some(e) = exit {
                y += &format!("    exit: {e}\n");
            }
            if !self.via.is_empty() {
                y += &format!("    via: [{}]\n", self.via.join(", "));
            }
            for l in &self.route_extra {
                y += &format!("    {l}\n");
            }
        }
        y += &format!(
            "mesh:\n  bind: \"{}\"\n  cert: {cert}.crt\n  key: {cert}.key\n  ca: ca.crt\n  data_dir: data-{}\n  redial_min: \"50ms\"\n  redial_max: \"1s\"\n  keepalive_interval: \"{}\"\n  link_idle_timeout: \"{}\"\n",
            self.mesh_bind, self.id, self.keepalive, self.link_idle
        );
        if self.transport.is_some() {
            y += "  tcp_bind: \"127.0.0.1:0\"\n";
        }
        for l in &self.mesh_extra {
            y += &format!("  {l}\n");
        }
        if let Some(addr) = &self.scheduler {
            let key = if addr.contains(',') {
                let list: Vec<String> = addr.split(',').map(|a| format!("\"{a}\"")).collect();
                format!("addresses: [ {} ]", list.join(", "))
            } else {
                format!("address: \"{addr}\"")
            };
            y += &format!(
                "scheduler:\n  {key}\n  heartbeat_interval: \"200ms\"\n  retry_interval: \"200ms\"\n  connect_timeout: \"1s\"\n"
            );
        }
        if !self.limits.is_empty() {
            y += "limits:\n";
            for l in &self.limits {
                y += &format!("  {l}\n");
            }
        }
        if let Some(policy) = &self.policy {
            return y + policy;
        }
        y += "exit_policy:\n  allow:\n";
        if self.allow.is_empty() {
            y += "    []\n";
        }
        for a in &self.allow {
            y += &format!("    - \"{a}\"\n");
        }
        y
    }

    pub async fn start(&self, mesh: &Mesh) -> Node {
        if std::env::var("PROXY_TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).try_init();
        }
        let path = mesh.path(&format!("{}-{}.yaml", self.id, COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, self.yaml()).expect("write config");
        let config = proxy::config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}\n{}", self.yaml()));
        Node::start(config).await.expect("node start")
    }
}

/// Starts exit node `b` (allowing `allow`) and origin node `a` whose route `in` goes to
/// `target` through `b`. Waits for the link.
pub async fn two_nodes(mesh: &Mesh, target: SocketAddr, allow: &str, limits: &[&str]) -> (Node, Node) {
    two_nodes_over(mesh, target, allow, limits, None).await
}

/// [`two_nodes`] with every link over `transport` (`None`: the default, `auto`); checks
/// the link came up over it.
pub async fn two_nodes_over(
    mesh: &Mesh,
    target: SocketAddr,
    allow: &str,
    limits: &[&str],
    transport: Option<Transport>,
) -> (Node, Node) {
    let routes = |a: &mut NodeSpec| a.routes = vec![("in", target.to_string(), Some("b"))];
    linked_pair(mesh, allow, (limits, limits), transport, routes).await
}

/// Exit `b` (allowing `allow`) and origin `a`, linked over `transport` (`None`: the
/// default, `auto`), with `(a, b)` limits; `routes` gives `a` its routes. Checks the link
/// came up over `transport`.
pub async fn linked_pair(
    mesh: &Mesh,
    allow: &str,
    (a_limits, b_limits): (&[&str], &[&str]),
    transport: Option<Transport>,
    routes: impl FnOnce(&mut NodeSpec),
) -> (Node, Node) {
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec![allow.to_string()];
    b.limits = b_limits.iter().map(|s| s.to_string()).collect();
    b.transport = transport;
    let b = b.start(mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", link_addr(&b, transport.unwrap_or(Transport::Quic)))];
    routes(&mut a);
    a.limits = a_limits.iter().map(|s| s.to_string()).collect();
    a.transport = transport;
    let a = a.start(mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a->b did not come up");
    if let Some(t) = transport {
        assert_link_transport(&a, "b", t);
    }
    (a, b)
}

/// Asserts the link from `node` to `peer` is up over `transport`.
pub fn assert_link_transport(node: &Node, peer: &str, transport: Transport) {
    let info = node.peers().into_iter().find(|p| p.id == peer).expect("peer listed");
    assert_eq!(info.transport, Some(transport.name()), "the link to {peer} runs over {transport:?}");
}

/// Three nodes on the scheduler at `scheduler`, all linked, in `regions` (a, b, d): d
/// accepts a and b; b dials d; a dials b and d and routes `in` to an echo server at d.
pub async fn scheduled_triangle(
    mesh: &Mesh,
    scheduler: &str,
    regions: [&'static str; 3],
) -> (Node, Node, Node) {
    let echo = echo_server().await;
    let mut d = NodeSpec::new("d");
    d.region = regions[2];
    d.peers = vec![("a", String::new()), ("b", String::new())];
    d.allow = vec!["127.0.0.1/32".into()];
    d.scheduler = Some(scheduler.to_string());
    let d = d.start(mesh).await;
    let d_addr = d.mesh_addr().expect("addr").to_string();
    let mut b = NodeSpec::new("b");
    b.region = regions[1];
    b.peers = vec![("a", String::new()), ("d", d_addr.clone())];
    b.scheduler = Some(scheduler.to_string());
    let b = b.start(mesh).await;
    let mut a = NodeSpec::new("a");
    a.region = regions[0];
    a.peers = vec![("b", b.mesh_addr().expect("addr").to_string()), ("d", d_addr)];
    a.routes = vec![("in", echo.to_string(), Some("d"))];
    a.scheduler = Some(scheduler.to_string());
    let a = a.start(mesh).await;
    for (n, p) in [(&a, "b"), (&a, "d"), (&b, "d")] {
        assert!(n.wait_for_link(p, Duration::from_secs(10)).await, "no link {p}");
    }
    (a, b, d)
}

pub fn listener_addr(node: &Node, name: &str) -> SocketAddr {
    node.listeners().into_iter().find(|l| l.name == name).expect("listener").addr
}

/// Deterministic pseudo-random bytes (xorshift), so both ends can agree on content.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// Writes `len` pattern bytes; returns their SHA-256.
pub async fn send_pattern<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    seed: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut p = Pattern::new(seed);
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        left -= n;
    }
    Ok(ctx.finish().as_ref().to_vec())
}

/// Reads to EOF; returns the byte count and SHA-256.
pub async fn read_all_hash<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(usize, Vec<u8>)> {
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, ctx.finish().as_ref().to_vec()));
        }
        ctx.update(&buf[..n]);
        total += n;
    }
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&SHA256, data).as_ref().to_vec()
}

/// An echo server: copies every connection back to itself, half-close aware.
pub async fn echo_server() -> SocketAddr {
    let l = proxy::node::bind_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A TCP connection through `addr`.
#[track_caller]
pub fn connect(addr: SocketAddr) -> impl std::future::Future<Output = TcpStream> {
    let caller = std::panic::Location::caller();
    async move {
        let s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect from {caller}: {e}"));
        let _ = s.set_nodelay(true);
        s
    }
}

/// Reads until EOF or error: `Ok(bytes)` on a clean EOF, `Err(kind)` on a reset.
pub async fn read_to_end_or_error(s: &mut TcpStream) -> Result<Vec<u8>, std::io::ErrorKind> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out).await {
        Ok(_) => Ok(out),
        Err(e) => Err(e.kind()),
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Closes a socket with an RST.
pub fn reset(s: TcpStream) {
    proxy::node::reset_tcp(s);
}

/// A bare QUIC client endpoint presenting the certificate `<file>.crt` of `mesh` (or of
/// another CA's directory), for tests that play a hostile or foreign peer.
pub fn raw_client(cert: &Path, key: &Path, ca: &Path) -> quinn::Endpoint {
    let read = |p: &Path| std::fs::read_to_string(p).expect("read pem");
    let identity = proxy::tls::TlsIdentity::from_pem(&read(cert), &read(key), &read(ca)).expect("identity");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let client =
        quinn::ClientConfig::new(std::sync::Arc::new(identity.quic_client_config().expect("client tls")));
    ep.set_default_client_config(client);
    ep
}

/// Waits until `f` is true, polling, up to `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Connects to `entry`, sends `payload` and expects the node to refuse the flow: the
/// connection is reset or closed without a byte of response (a reset may even arrive
/// before the connect completes).
pub async fn expect_refused(entry: SocketAddr, payload: &[u8]) {
    let Ok(mut c) = TcpStream::connect(entry).await else { return };
    let _ = c.write_all(payload).await;
    let r = tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut c))
        .await
        .expect("refused in time");
    assert!(r.as_ref().map_or(true, |v| v.is_empty()), "refused flow delivered data: {r:?}");
}

/// A flow through `entry` to an echo target, proven open by one echoed byte.
pub async fn open_echoed_flow(entry: SocketAddr, byte: u8) -> TcpStream {
    let mut c = connect(entry).await;
    c.write_all(&[byte]).await.expect("write");
    let mut one = [0u8; 1];
    c.read_exact(&mut one).await.expect("echo");
    assert_eq!(one[0], byte);
    c
}

/// Two linked nodes whose route `in` on `a` exits at `b` to a TCP server the test drives.
pub struct PairWithServer {
    /// Keeps the certificates alive for the nodes' lifetime.
    pub mesh: Mesh,
    /// The target behind `b`.
    pub server: tokio::net::TcpListener,
    pub a: Node,
    pub b: Node,
}

pub async fn pair_with_server(limits: &[&str]) -> PairWithServer {
    pair_with_server_over(limits, None).await
}

/// [`pair_with_server`] with the link over `transport` (`None`: the default).
pub async fn pair_with_server_over(limits: &[&str], transport: Option<Transport>) -> PairWithServer {
    let mesh = Mesh::new(&["a", "b"]);
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let (a, b) = two_nodes_over(&mesh, target, "127.0.0.1/32", limits, transport).await;
    PairWithServer { mesh, server, a, b }
}

/// A one-client UDP relay in front of `target` that can be told to drop everything: a
/// link through it can die silently, the way a crashed host or a cut cable looks.
pub struct UdpRelay {
    pub addr: SocketAddr,
    blackhole: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpRelay {
    pub async fn start(target: SocketAddr) -> UdpRelay {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        back.connect(target).await.expect("connect");
        let addr = front.local_addr().expect("addr");
        let blackhole = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let (f, b, bh, cl) = (front.clone(), back.clone(), blackhole.clone(), client.clone());
        // An ICMP error is not the end: a packet sent before the target bound its port comes
        // back as `ConnectionRefused` on the connected socket's next receive, and ending the
        // relay there cut the path for good in one run of three.
        let transient = |e: &std::io::Error| {
            matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset)
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = match f.recv_from(&mut buf).await {
                    Ok(got) => got,
                    Err(e) if transient(&e) => continue,
                    Err(_) => return,
                };
                *cl.lock().expect("lock") = Some(from);
                if !bh.load(Ordering::Relaxed) {
                    let _ = b.send(&buf[..n]).await;
                }
            }
        });
        let bh = blackhole.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = match back.recv(&mut buf).await {
                    Ok(n) => n,
                    Err(e) if transient(&e) => continue,
                    Err(_) => return,
                };
                let to = *client.lock().expect("lock");
                if let (Some(to), false) = (to, bh.load(Ordering::Relaxed)) {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        UdpRelay { addr, blackhole }
    }

    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }
}

/// A counter's value once it has stopped moving towards `expected` (counters are bumped
/// just after the application sees the outcome, so a test may look a moment too early).
pub async fn settled(expected: u64, mut read: impl FnMut() -> u64) -> u64 {
    let _ = eventually(Duration::from_secs(5), || read() == expected).await;
    read()
}

/// Sends `len` pattern bytes each way at once through `entry` to the one connection
/// `server` accepts, and checks the SHA-256 of both directions.
pub async fn exchange_both_ways(entry: SocketAddr, server: tokio::net::TcpListener, len: usize) {
    let server_task = tokio::spawn(async move {
        let (s, _) = server.accept().await.expect("accept");
        let (mut r, mut w) = s.into_split();
        let sent = tokio::spawn(async move {
            let h = send_pattern(&mut w, 2, len).await.expect("server send");
            w.shutdown().await.expect("server shutdown");
            h
        });
        let got = read_all_hash(&mut r).await.expect("server read");
        (got, sent.await.expect("join"))
    });
    let (mut r, mut w) = connect(entry).await.into_split();
    let sent = tokio::spawn(async move {
        let h = send_pattern(&mut w, 1, len).await.expect("client send");
        w.shutdown().await.expect("client shutdown");
        h
    });
    let (client_got_len, client_got) = read_all_hash(&mut r).await.expect("client read");
    let client_sent = sent.await.expect("join");
    let ((server_got_len, server_got), server_sent) = server_task.await.expect("server");
    assert_eq!((server_got_len, client_got_len), (len, len));
    assert_eq!(server_got, client_sent, "client->server bytes differ");
    assert_eq!(client_got, server_sent, "server->client bytes differ");
}

/// Runs `n` concurrent flows through `entry` to an echo target, each with its own
/// pattern and length, and checks every one byte for byte.
pub async fn many_echo_flows(entry: SocketAddr, n: u64) {
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = connect(entry).await.into_split();
            let len = 8 * 1024 + (i as usize % 7) * 1000;
            let writer = tokio::spawn(async move {
                let h = send_pattern(&mut w, i, len).await.expect("send");
                w.shutdown().await.expect("shutdown");
                h
            });
            let (got_len, got) = read_all_hash(&mut r).await.expect("read");
            (got_len == len && got == writer.await.expect("join"), i)
        }));
    }
    let mut bad = Vec::new();
    for t in tasks {
        let (ok, i) =
            tokio::time::timeout(Duration::from_secs(120), t).await.expect("in time").expect("join");
        if !ok {
            bad.push(i);
        }
    }
    assert!(bad.is_empty(), "flows with wrong bytes: {bad:?}");
}

/// Writes 64 KiB chunks until writes stall for 700 ms (backpressure reached); returns the
/// bytes written. Fails if the writer is never slowed down.
pub async fn write_until_stalled<W: AsyncWriteExt + Unpin>(w: &mut W) -> usize {
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(700), w.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => return written,
        }
        assert!(written < 256 * 1024 * 1024, "the sender was never slowed down");
    }
}

/// Reads exactly `n` bytes (in any chunking), failing on an early end.
pub async fn read_exactly<R: AsyncReadExt + Unpin>(r: &mut R, n: usize) {
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < n {
        let k = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf))
            .await
            .expect("data")
            .expect("read");
        assert!(k > 0, "EOF after {got} of {n}");
        got += k;
    }
}

/// Parses a Prometheus text exposition; panics (with the text) if it is not valid.
pub fn scrape(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not a valid exposition ({e}):\n{body}"))
}

/// The value of the sample `name` whose labels include `labels`; panics if none.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

/// The encoded header of a flow from `origin` that exits at the receiving node to `target`.
pub fn exit_header(origin: &str, target: &str) -> Vec<u8> {
    let h = proxy::core::wire::FlowHeader {
        flow_id: 9,
        origin: origin.into(),
        passed: vec![],
        hops: vec![],
        destination: proxy::core::wire::Destination::Target(target.into()),
        subflow: None,
    };
    proxy::core::wire::encode_header(&h).expect("encode")
}

/// Exit `b` (allowing 127.0.0.1) and origin `a`, whose route `in` goes to `target`, linked
/// through a link emulator set to `profile` both ways; `a_limits` go into a's `limits`.
/// Waits for the link.
pub async fn pair_through_emulator(
    mesh: &Mesh,
    target: SocketAddr,
    profile: proxy::emulator::LinkProfile,
    a_limits: &[&str],
) -> (Node, Node, proxy::emulator::LinkEmulator) {
    let a_limits: Vec<String> = a_limits.iter().map(|l| l.to_string()).collect();
    pair_through_emulator_tuned(mesh, target, profile, |spec| {
        if spec.id == "a" {
            spec.limits = a_limits.clone();
        }
    })
    .await
}

/// As [`pair_through_emulator`], with `tune` applied to both nodes' specs (`b` first).
pub async fn pair_through_emulator_tuned(
    mesh: &Mesh,
    target: SocketAddr,
    profile: proxy::emulator::LinkProfile,
    tune: impl Fn(&mut NodeSpec<'_>),
) -> (Node, Node, proxy::emulator::LinkEmulator) {
    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    tune(&mut b);
    let b = b.start(mesh).await;
    let emu = proxy::emulator::LinkEmulator::start(b.mesh_addr().expect("addr"), 7).await.expect("emulator");
    emu.set_both(profile);
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", emu.addr().to_string())];
    a.routes = vec![("in", target.to_string(), Some("b"))];
    tune(&mut a);
    let a = a.start(mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a->b through the emulator");
    (a, b, emu)
}

/// A target that accepts at once but reads nothing until released; then it reads each
/// connection to its end and answers with the SHA-256 of what it got.
pub async fn stalling_target(release: std::sync::Arc<tokio::sync::Semaphore>) -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive buffer: the stall reaches the mesh after a few KiB, not megabytes.
    socket.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener: tokio::net::TcpListener = socket.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let release = release.clone();
            tokio::spawn(async move {
                let Ok(_permit) = release.acquire().await else { return };
                if let Ok((_, hash)) = read_all_hash(&mut s).await {
                    let _ = s.write_all(&hash).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Writes pattern bytes until the writes have been blocked for 700 ms (the whole path is
/// backed up), then half-closes; returns what was written and its SHA-256.
pub async fn fill_until_stalled(s: &mut tokio::net::TcpStream, seed: u64) -> (usize, Vec<u8>) {
    let mut pattern = Pattern::new(seed);
    let mut hash = Context::new(&SHA256);
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut written, mut at) = (0usize, chunk.len());
    loop {
        if at == chunk.len() {
            pattern.fill(&mut chunk);
            at = 0;
        }
        // One `write` at a time: cancelled by the timeout, it has written nothing, so the
        // hash covers exactly what was sent.
        match tokio::time::timeout(Duration::from_millis(700), s.write(&chunk[at..])).await {
            Ok(Ok(n)) => {
                hash.update(&chunk[at..at + n]);
                (at, written) = (at + n, written + n);
            }
            Ok(Err(e)) => panic!("write failed after {written} bytes: {e}"),
            Err(_) => break,
        }
        assert!(written < 256 * 1024 * 1024, "the writer was never slowed down");
    }
    (written, hash.finish().as_ref().to_vec())
}
