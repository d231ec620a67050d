//! A real etcd cluster on loopback (Debian's `etcd-server`), for the tests of several
//! schedulers sharing one mesh, and a TCP relay that can cut a scheduler off from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The `etcd` program, when installed.
pub fn etcd_path() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("etcd"))
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
}

/// A port that is free now, from below the kernel's ephemeral range (32768 and up) so no
/// other test's `:0` socket takes it between this check and etcd's bind.
fn quiet_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000u16);
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() {
            return port;
        }
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of etcd members on 127.0.0.1, killed and removed when dropped.
pub struct EtcdCluster {
    dir: PathBuf,
    program: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers; `None` (with a message)
    /// when etcd is not installed outside CI. In CI (`CI` set) a missing etcd fails.
    pub async fn start_or_skip(size: usize, tag: &str) -> Option<EtcdCluster> {
        let Some(program) = etcd_path() else {
            if std::env::var("CI").is_ok() {
                panic!("etcd is not installed: .ci/run installs it (apt-get install -y etcd-server)");
            }
            eprintln!(
                "SKIPPED: etcd is not installed (apt-get install -y etcd-server); this test did not run"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("proxy-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let members = (0..size)
            .map(|i| Member { name: format!("m{i}"), client: quiet_port(), peer: quiet_port(), child: None })
            .collect();
        let token = format!("{tag}-{}-{}", std::process::id(), rand::random::<u32>());
        let mut cluster = EtcdCluster { dir, program, token, members };
        for i in 0..size {
            cluster.launch(i);
        }
        cluster.wait_ready().await;
        Some(cluster)
    }

    fn launch(&mut self, i: usize) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).expect("etcd log");
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(&self.program)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", &self.token])
            // Quick elections, so a killed member's leadership moves within a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect()
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// Kills member `i` (SIGKILL: no goodbye to its peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.launch(i);
    }

    /// Waits until a write through every running member's endpoint commits (a quorum is
    /// up and each member serves).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let config = proxy::config::scheduler::EtcdConfig {
                endpoints: vec![self.endpoints()[i].clone()],
                prefix: "/health".into(),
                lease: Duration::from_secs(3),
                name: "probe".into(),
            };
            let etcd = proxy::scheduler::etcd::Etcd::connect(&config).expect("client");
            loop {
                let key = etcd.key("probe");
                let put = etcd
                    .call(move |mut c| async move {
                        c.kv.put(etcdv3client::pb::PutRequest {
                            key,
                            value: b"1".to_vec(),
                            ..Default::default()
                        })
                        .await
                    })
                    .await;
                if put.is_ok() {
                    break;
                }
                if let Some(status) = self.members[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("etcd member {i} exited ({status}):\n{}", self.log_tail(i));
                }
                assert!(Instant::now() < deadline, "etcd member {i} never served:\n{}", self.log_tail(i));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP relay to one address that can be cut: while cut, nothing passes either way and
/// new connections are accepted and left unanswered, as across a network partition
/// (calls hang until their deadlines; nothing fails fast). Restored, the held
/// connections are closed and new ones pass.
pub struct TcpRelay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl TcpRelay {
    /// Listens on 127.0.0.1 and relays to `target`.
    pub async fn start(target: SocketAddr) -> TcpRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    if *cut_rx.borrow() {
                        until(&mut cut_rx, false).await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = until(&mut cut_rx, true) => {
                            // Held open, silent, until the path is restored.
                            until(&mut cut_rx, false).await;
                        }
                    }
                });
            }
        });
        TcpRelay { addr, cut }
    }

    /// The relay's URL for an etcd client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts (`true`) or restores (`false`) the path.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Returns once the flag is `want` (or its sender is gone).
async fn until(flag: &mut watch::Receiver<bool>, want: bool) {
    while *flag.borrow_and_update() != want {
        if flag.changed().await.is_err() {
            return;
        }
    }
}
