//! Flows whose readers stall do not hold back the other flows on their link, and resume
//! intact once their readers read (receive credit per link, `src/node/link/credit.rs`).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy::demo::probe::bulk_flow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const STALLED: usize = 64;
const MIB: usize = 1024 * 1024;
/// Small windows, so that the stalled flows fill them quickly: four stream windows make a
/// link's base, so before per-link credit four stalled flows took the link whole.
const WINDOWS: [&str; 2] = ["stream_window: 131072", "connection_window: 524288"];

// Per-flow backpressure and stalled-flow isolation hold over both link transports.
over_both_transports!(flows_whose_readers_stall_never_hold_back_their_link_and_resume_intact);

async fn flows_whose_readers_stall_never_hold_back_their_link_and_resume_intact(transport: Transport) {
    let mesh = Mesh::new(&["a", "b"]);
    let release = Arc::new(Semaphore::new(0));
    let stall_target = stalling_target(release.clone()).await;
    let echo = echo_server().await;

    let mut b = NodeSpec::new("b");
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.mesh_extra = WINDOWS.iter().map(|s| s.to_string()).collect();
    b.transport = Some(transport);
    let b = b.start(&mesh).await;
    let mut a = NodeSpec::new("a");
    a.peers = vec![("b", link_addr(&b, transport))];
    a.transport = Some(transport);
    a.routes = vec![("stall", stall_target.to_string(), Some("b")), ("in", echo.to_string(), Some("b"))];
    a.mesh_extra = WINDOWS.iter().map(|s| s.to_string()).collect();
    // A header that gets no credit is refused after this, so a clogged link fails fast.
    a.limits = vec!["connect_timeout: 3s".into()];
    let a = a.start(&mesh).await;
    assert!(a.wait_for_link("b", Duration::from_secs(10)).await, "link a->b");
    assert_link_transport(&a, "b", transport);
    let (stall_entry, entry) = (listener_addr(&a, "stall"), listener_addr(&a, "in"));

    // 64 flows whose target never reads: each fills its path until the writer blocks.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut s = connect(stall_entry).await;
        stalled.push(tokio::spawn(async move {
            let (len, sent) = fill_until_stalled(&mut s, i as u64).await;
            (s, len, sent)
        }));
    }
    let mut clients = Vec::new();
    for t in stalled {
        clients.push(t.await.expect("stalled writer"));
    }
    // Each of them holds its stream window at b, and b counts it as stalled.
    let counted =
        eventually(Duration::from_secs(30), || b.stats().buffers.stalled_flows >= STALLED as u64).await;
    assert!(counted, "b counts {} stalled flows, not {STALLED}", b.stats().buffers.stalled_flows);

    // The link still carries everything else: a new flow opens, a bulk flow goes through.
    let opened = tokio::time::timeout(Duration::from_secs(10), open_echoed_flow(entry, 7)).await;
    assert!(opened.is_ok(), "a new flow could not open beside the stalled ones");
    let bulk =
        bulk_flow(entry, 8 * MIB, Duration::from_secs(60)).await.expect("bulk flow beside stalled ones");
    assert!(bulk.intact, "the bulk flow came back altered ({} bytes)", bulk.received);
    assert_eq!(b.stats().buffers.refusals, 0, "nothing was over the budget");

    // The readers read: every stalled flow arrives whole, byte for byte.
    release.add_permits(STALLED);
    for (i, (mut s, len, sent)) in clients.into_iter().enumerate() {
        s.shutdown().await.expect("half-close");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("answer");
        assert_eq!(answer, sent, "stalled flow {i} ({len} bytes) arrived altered");
    }
    // With the readers caught up, the extra credit is given back.
    let settled = eventually(Duration::from_secs(10), || b.stats().buffers.stalled_flows == 0).await;
    assert!(settled, "b still counts {} stalled flows", b.stats().buffers.stalled_flows);
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0, "no flow was reset");
}
