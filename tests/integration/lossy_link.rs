//! Links across long and lossy paths (through `proxy::emulator`) with the default windows:
//! a link's window that grows with the path, many concurrent flows, and a flow whose
//! reader lags behind a full 16 MiB stream window while loss punches holes into what the
//! receiver holds.
//!
//! The second is the condition under which quinn-proto, before 0.11.18, closed the whole
//! connection with `too many gaps in stream buffer`: its reassembly counted every
//! retained packet-sized piece of a stream's unread data against a limit of 1024 pieces,
//! contiguous or not, so any stream holding more than about 2.4 MB unread could take its
//! link down (quinn issue 2809, fixed by merging contiguous pieces). With quinn-proto
//! 0.11.17 this test fails that way every time (the link closes after 22-38 MB); Cargo.toml
//! requires 0.11.19, and this test keeps it from regressing.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy::demo::probe::bulk_flow;
use proxy::emulator::LinkProfile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const MIB: usize = 1024 * 1024;

/// 30 ms round trip, 1% random loss each way, 200 Mbit/s.
fn lossy_path() -> LinkProfile {
    LinkProfile {
        delay: Duration::from_millis(15),
        loss: 0.01,
        rate_bps: Some(200_000_000),
        ..LinkProfile::ideal()
    }
}

/// Bytes `b` has received on its current connection from `a`: a link that was closed
/// and dialed again starts counting from zero.
fn received_on_current_link(b: &proxy::Node) -> u64 {
    b.peers().iter().find(|p| p.id == "a" && p.connected).and_then(|p| p.bytes_received).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_flows_cross_a_lossy_link_intact_on_one_connection() {
    const FLOWS: usize = 16;
    const EACH: usize = 3 * MIB;
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let (a, b, emu) = pair_through_emulator(&mesh, echo, lossy_path(), &[]).await;
    let entry = listener_addr(&a, "in");

    let flows: Vec<_> =
        (0..FLOWS).map(|_| tokio::spawn(bulk_flow(entry, EACH, Duration::from_secs(120)))).collect();
    for (i, flow) in flows.into_iter().enumerate() {
        let outcome = flow.await.expect("flow task").unwrap_or_else(|e| panic!("flow {i}: {e:#}"));
        assert!(outcome.intact && outcome.received == EACH, "flow {i} came back altered: {outcome:?}");
    }

    let lost = emu.stats().a_to_b.lost + emu.stats().b_to_a.lost;
    assert!(lost > 0, "the emulated path lost nothing: the test did not test loss");
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0, "no flow was reset");
    let carried = received_on_current_link(&b);
    assert!(
        carried >= (FLOWS * EACH) as u64,
        "b's current link carried {carried} bytes: the link was redialed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_lagging_a_full_window_behind_on_a_lossy_link_keeps_the_link_up() {
    let mesh = Mesh::new(&["a", "b"]);
    let release = Arc::new(Semaphore::new(0));
    let stall_target = stalling_target(release.clone()).await;
    let echo = echo_server().await;
    let (a, b, emu) = pair_through_emulator_tuned(&mesh, echo, lossy_path(), |spec| {
        if spec.id == "a" {
            spec.routes.push(("stall", stall_target.to_string(), Some("b")));
        }
    })
    .await;
    let (stall_entry, entry) = (listener_addr(&a, "stall"), listener_addr(&a, "in"));

    // The lagging flow: its target reads nothing, so b holds a whole default stream
    // window (16 MiB) of it unread, received through a path that loses 1% of packets.
    let mut lagging = connect(stall_entry).await;
    let (len, sent) = fill_until_stalled(&mut lagging, 11).await;
    assert!(len >= 16 * MIB, "only {len} bytes were taken before the writer blocked");
    assert!(emu.stats().a_to_b.lost > 0, "the emulated path lost nothing");

    // The link goes on carrying other flows...
    let bulk =
        bulk_flow(entry, 4 * MIB, Duration::from_secs(60)).await.expect("a flow beside the lagging one");
    assert!(bulk.intact, "the flow beside the lagging one came back altered");

    // ...and once the reader reads, the lagging flow arrives whole, on the same link.
    release.add_permits(1);
    lagging.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), lagging.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(answer, sent, "the lagging flow ({len} bytes) arrived altered");
    assert_eq!(a.stats().flows_reset + b.stats().flows_reset, 0, "no flow was reset");
    let carried = received_on_current_link(&b);
    assert!(carried >= len as u64, "b's current link carried {carried} bytes: the link was redialed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_window_grows_with_a_long_path_and_an_idle_link_reserves_only_its_start() {
    // Small stream windows, so that eight flows together, not one fast flow, fill the
    // link's start window (8 MiB, the least a link starts with): the window must grow
    // once the path carries more than 4 MiB per 200 ms round trip (168 Mbit/s), well
    // within what the emulator carries on a busy machine.
    const START: u64 = 8 * MIB as u64;
    const MAX: u64 = 32 * MIB as u64;
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let long = LinkProfile { delay: Duration::from_millis(100), ..LinkProfile::ideal() };
    let (a, b, _emu) = pair_through_emulator_tuned(&mesh, echo, long, |spec| {
        spec.mesh_extra = vec!["stream_window: 2097152".into(), format!("connection_window: {MAX}")];
    })
    .await;
    let idle = eventually(Duration::from_secs(10), || b.stats().buffers.used_bytes == START).await;
    assert!(idle, "an idle link reserves its start window, not {}", b.stats().buffers.used_bytes);

    let entry = listener_addr(&a, "in");
    let flows: Vec<_> =
        (0..8).map(|_| tokio::spawn(bulk_flow(entry, 4 * MIB, Duration::from_secs(120)))).collect();
    for flow in flows {
        let outcome = flow.await.expect("flow task").expect("bulk flow");
        assert!(outcome.intact, "a flow came back altered");
    }
    let grown = b.stats().buffers.used_bytes;
    assert!(grown > START, "b's link window stayed at {grown} bytes over a 200 ms path");
    assert!(grown <= MAX, "past mesh.connection_window: {grown}");
}

/// The path on which quinn's BBR, with 32 MiB stream windows, tore the link down with
/// `too many gaps in stream buffer` within seconds on quinn-proto 0.11.19 (three runs of
/// three): 400 ms round trip, 15% random loss each way, 100 Mbit/s. The default controller
/// reads that loss as congestion and keeps few enough packets in flight for the holes to
/// stay under quinn's 1024 pieces per stream. Ignored because it runs for 40 s; run it with
/// `cargo test --test integration lossy_link:: -- --ignored`, and with `PROXY_TEST_CONGESTION=bbr` to see
/// the link close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for 40 s"]
async fn heavy_loss_on_a_long_fat_path_leaves_the_link_up() {
    use proxy::demo::probe::{Capped, bulk_flow_capped};
    let congestion = std::env::var("PROXY_TEST_CONGESTION").unwrap_or_else(|_| "model".into());
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let path = LinkProfile {
        delay: Duration::from_millis(200),
        loss: 0.15,
        rate_bps: Some(100_000_000),
        ..LinkProfile::ideal()
    };
    let (a, b, emu) = pair_through_emulator_tuned(&mesh, echo, path, |spec| {
        spec.mesh_extra = vec![
            format!("congestion: {congestion}"),
            format!("stream_window: {}", 32 * MIB),
            format!("connection_window: {}", 64 * MIB),
        ];
    })
    .await;
    let entry = listener_addr(&a, "in");
    let outcome = bulk_flow_capped(entry, 48 * MIB, Duration::from_secs(40))
        .await
        .unwrap_or_else(|e| panic!("the flow failed, its link closed? {e:#}"));
    let received = match outcome {
        Capped::Done(done) => {
            assert!(done.intact, "the flow came back altered");
            done.received
        }
        Capped::GaveUp { received, .. } => received,
    };
    assert!(emu.stats().a_to_b.lost > 100, "the path lost too little to test anything");
    assert!(received > 0, "nothing came back");
    let carried = received_on_current_link(&b);
    assert!(carried >= received as u64, "b's current link carried {carried} bytes: the link was closed");
}
