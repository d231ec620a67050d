//! A DNS server for tests and benchmarks: names under `slow.test` never get an answer, every
//! other name is 127.0.0.1. Shared by `tests/integration/attacks.rs` and `benches/hostile_member.rs`.

use std::net::SocketAddr;

/// A DNS server for the test: names under `slow.test` are never answered (each name asked
/// is recorded), any other name is `127.0.0.1` (an empty answer for other record types).
pub struct TestDns {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    /// The never-answered names asked so far.
    pub slow_names: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl TestDns {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("addr");
        let slow_names = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let asked = slow_names.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Some((name, question_end, qtype)) = dns_question(&buf[..n]) else { continue };
                if name.ends_with("slow.test") {
                    asked.lock().expect("names").insert(name);
                    continue;
                }
                let mut out = buf[..question_end].to_vec();
                out[2] = 0x81; // a response, recursion desired
                out[3] = 0x80; // recursion available, no error
                out[6..12].copy_from_slice(&[0, u8::from(qtype == 1), 0, 0, 0, 0]);
                if qtype == 1 {
                    // The name by pointer to the question, A, IN, TTL 60, 127.0.0.1.
                    out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
                }
                let _ = socket.send_to(&out, from).await;
            }
        });
        TestDns { addr, slow_names }
    }

    /// The never-answered names asked so far.
    pub fn slow_names(&self) -> usize {
        self.slow_names.lock().expect("names").len()
    }
}

/// The first question of a DNS query: its name, where the question ends, its type.
pub fn dns_question(msg: &[u8]) -> Option<(String, usize, u16)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    Some((labels.join("."), at + 4, qtype))
}
