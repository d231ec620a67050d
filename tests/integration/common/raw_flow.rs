//! A flow opened by hand on a raw QUIC link, for tests and benchmarks that play a member
//! speaking the wire directly. Shared by `tests/integration/attacks.rs` and `benches/hostile_member.rs`.

use std::time::Duration;

use proxy::core::wire::{self, Decoded, Reply};

/// Opens a stream with `header` as its start and returns the reply as soon as it is whole
/// (`None`: the stream ended or was reset first), leaving the stream open: an opened flow's
/// stream does not end by itself. Gives up after 10 s.
pub async fn open_raw_flow(conn: &quinn::Connection, header: &[u8]) -> Option<Reply> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(header).await.ok()?;
    let mut buf = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = recv.read_chunk(4096, true).await {
            buf.extend_from_slice(&chunk.bytes);
            if let Ok(Decoded::Complete(r, _)) = wire::decode_reply(&buf) {
                return Some(r);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}
