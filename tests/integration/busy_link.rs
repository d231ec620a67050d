//! Flows sharing a link that bulk flows keep full: new flows still open, and every flow
//! arrives intact (writers take fair turns at the link's send buffer, see
//! `src/node/link/send.rs`).

use crate::common;

use std::time::Duration;

use common::*;
use proxy::demo::probe::bulk_flow;
use proxy::emulator::LinkProfile;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_flows_open_while_bulk_flows_fill_the_link() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    // A 40 Mbit/s bottleneck between a and b, both ways. A header not in the link's send
    // buffer within `connect_timeout` is refused: before writers took turns, new flows
    // behind bulk ones waited out any such limit.
    let profile = LinkProfile {
        delay: Duration::from_millis(2),
        rate_bps: Some(40_000_000),
        queue_limit: 256,
        ..LinkProfile::ideal()
    };
    let (a, _b, _link) = pair_through_emulator(&mesh, echo, profile, &["connect_timeout: 3s"]).await;
    let entry = listener_addr(&a, "in");

    // 16 bulk flows of 3 MiB each way: the link's windows (16 MiB) fill at once.
    let bulk: Vec<_> =
        (0..16).map(|_| tokio::spawn(bulk_flow(entry, 3 * MIB, Duration::from_secs(240)))).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Ten new flows open while the link is full; each is proven by an echoed byte.
    let opened = futures_join_all((0..10u8).map(|i| async move {
        tokio::time::timeout(Duration::from_secs(60), open_echoed_flow(entry, i)).await.is_ok()
    }))
    .await;
    let still_busy = bulk.iter().filter(|t| !t.is_finished()).count();
    assert!(opened.iter().all(|&ok| ok), "new flows failed beside bulk ones: {opened:?}");
    assert!(still_busy > 0, "the bulk flows ended before the new flows opened: the test proved nothing");
    for task in bulk {
        let outcome = task.await.expect("bulk task").expect("bulk flow");
        assert!(outcome.intact, "a bulk flow came back altered: {} bytes", outcome.received);
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or(false));
    }
    out
}
