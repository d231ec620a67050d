//! Multipath subflows from a raw peer: joins need the flow's token, a flow id opens once,
//! and frames that break the protocol reset the flow on every side without harming the
//! node.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proxy::core::multipath::FLOW_WINDOW;
use proxy::core::subflow_frame::Frame;
use proxy::core::wire::{self, Decoded, Destination, FlowHeader, RefuseReason, Reply, Subflow};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const TOKEN: u64 = 0x005E_C2E7;

/// Exit node `b` and a raw QUIC link to it as its peer `a`.
async fn exit_and_raw_link(target: SocketAddr) -> (Mesh, proxy::Node, quinn::Endpoint, quinn::Connection) {
    let mesh = Mesh::new(&["a", "b"]);
    let mut b = NodeSpec::new("b");
    // Unsealed (version 1) headers written by hand: b accepts them.
    b.mesh_extra = vec!["e2e: preferred".into()];
    b.peers = vec![("a", String::new())];
    b.allow = vec![target.to_string()];
    let b = b.start(&mesh).await;
    let ep = raw_client(&mesh.path("a.crt"), &mesh.path("a.key"), &mesh.path("ca.crt"));
    let conn = ep.connect(b.mesh_addr().expect("addr"), "b").expect("connect").await.expect("handshake");
    (mesh, b, ep, conn)
}

fn subflow_header(target: SocketAddr, flow_id: u64, index: u8, token: u64) -> Vec<u8> {
    let h = FlowHeader {
        flow_id,
        origin: "a".into(),
        passed: vec![],
        hops: vec![],
        destination: Destination::Target(target.to_string()),
        subflow: Some(Subflow { index, token }),
    };
    wire::encode_header(&h).expect("encode")
}

fn frame(f: Frame) -> Vec<u8> {
    f.chunks().concat()
}

/// Opens a subflow stream and returns it with the reply.
async fn open(conn: &quinn::Connection, header: Vec<u8>) -> (quinn::SendStream, quinn::RecvStream, Reply) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    send.write_all(&header).await.expect("write header");
    let mut buf = Vec::new();
    let reply = loop {
        if let Ok(Decoded::Complete(r, _)) = wire::decode_reply(&buf) {
            break r;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), recv.read_chunk(1, true))
            .await
            .expect("reply in time")
            .expect("read")
            .expect("reply before the end");
        buf.extend_from_slice(&chunk.bytes);
    };
    (send, recv, reply)
}

fn refusal(reply: &Reply) -> Option<RefuseReason> {
    match reply {
        Reply::Refused { reason, .. } => Some(*reason),
        Reply::Opened | Reply::Sealed(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_the_flow_and_its_token_and_a_flow_opens_once() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let (_mesh, b, _ep, conn) = exit_and_raw_link(target).await;
    let (mut send, _recv, reply) = open(&conn, subflow_header(target, 1, 0, TOKEN)).await;
    assert_eq!(reply, Reply::Opened);
    let (mut upstream, _) = server.accept().await.expect("accept");
    send.write_all(&frame(Frame::Data { offset: 0, data: Bytes::from_static(b"hello") }))
        .await
        .expect("data");
    let mut got = [0u8; 5];
    upstream.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"hello");

    let (_, _, wrong_token) = open(&conn, subflow_header(target, 1, 1, TOKEN + 1)).await;
    assert_eq!(refusal(&wrong_token), Some(RefuseReason::NoRoute));
    let (_, _, unknown_flow) = open(&conn, subflow_header(target, 2, 1, TOKEN)).await;
    assert_eq!(refusal(&unknown_flow), Some(RefuseReason::NoRoute));
    let (_, _, twice) = open(&conn, subflow_header(target, 1, 0, TOKEN)).await;
    assert_eq!(refusal(&twice), Some(RefuseReason::BadHeader));
    let (mut joined, _joined_recv, ok) = open(&conn, subflow_header(target, 1, 1, TOKEN)).await;
    assert_eq!(ok, Reply::Opened);
    // Bytes on the joined subflow continue the flow.
    joined
        .write_all(&frame(Frame::Data { offset: 5, data: Bytes::from_static(b" world") }))
        .await
        .expect("data");
    let mut more = [0u8; 6];
    upstream.read_exact(&mut more).await.expect("read");
    assert_eq!(&more, b" world");
    assert_eq!(b.stats().multipath.subflows_opened, 2);
}

/// Sends `bad` on a fresh flow's primary subflow and checks the flow is reset at the
/// target and on the stream, and the node goes on serving.
async fn breaks_the_flow(bad: Vec<u8>) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let (_mesh, b, _ep, conn) = exit_and_raw_link(target).await;
    let (mut send, mut recv, reply) = open(&conn, subflow_header(target, 7, 0, TOKEN)).await;
    assert_eq!(reply, Reply::Opened);
    let (mut upstream, _) = server.accept().await.expect("accept");
    send.write_all(&bad).await.expect("write");
    let end = tokio::time::timeout(Duration::from_secs(10), read_to_end_or_error(&mut upstream))
        .await
        .expect("in time");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "the target sees a reset");
    let stream_end =
        tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20)).await.expect("in time");
    assert!(
        matches!(stream_end, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if code.into_inner() == 7),
        "the subflow is reset with FLOW_RESET: {stream_end:?}"
    );
    // The node still takes flows.
    let (_s, _r, again) = open(&conn, subflow_header(target, 8, 0, TOKEN)).await;
    assert_eq!(again, Reply::Opened);
    assert_eq!(settled(1, || b.stats().flows_reset).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_flow_window_resets_the_flow() {
    let offset = FLOW_WINDOW as u64 + 1;
    breaks_the_flow(frame(Frame::Data { offset, data: Bytes::from_static(b"x") })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_resets_the_flow() {
    breaks_the_flow(vec![0x42, 0, 0, 0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_of_flow_that_moves_resets_the_flow() {
    let mut bad = frame(Frame::Fin { offset: 10 });
    bad.extend(frame(Frame::Fin { offset: 20 }));
    breaks_the_flow(bad).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_that_leave_a_gap_at_offset_0_cannot_push_the_node_past_its_buffer_budget() {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = server.local_addr().expect("addr");
    let mesh = Mesh::new(&["a", "b"]);
    let mut b = NodeSpec::new("b");
    // Unsealed (version 1) headers written by hand: b accepts them.
    b.mesh_extra = vec!["e2e: preferred".into()];
    b.peers = vec![("a", String::new())];
    b.allow = vec![target.to_string()];
    // The link's window (8 MiB, fixed: at most the start window) and room for two full
    // reorder buffers, not five.
    b.mesh_extra.extend(["stream_window: 4194304".into(), "connection_window: 8388608".into()]);
    let budget: u64 = (8 + 20) * 1024 * 1024;
    b.limits = vec![format!("max_buffered_bytes: {budget}")];
    let b = b.start(&mesh).await;
    let ep = raw_client(&mesh.path("a.crt"), &mesh.path("a.key"), &mesh.path("ca.crt"));
    let conn = ep.connect(b.mesh_addr().expect("addr"), "b").expect("connect").await.expect("handshake");

    // Five flows, each sending all but its first byte: everything waits for offset 0.
    let ahead = FLOW_WINDOW - 512 * 1024;
    let mut streams = Vec::new();
    for flow in 0..5u64 {
        let (mut send, recv, reply) = open(&conn, subflow_header(target, 100 + flow, 0, TOKEN)).await;
        assert_eq!(reply, Reply::Opened);
        let piece = vec![7u8; proxy::core::subflow_frame::MAX_DATA];
        for offset in (1..ahead as u64).step_by(piece.len()) {
            let data = Bytes::copy_from_slice(&piece);
            // A flow the budget refused is reset: its writes fail, which is the point.
            if send.write_all(&frame(Frame::Data { offset, data })).await.is_err() {
                break;
            }
        }
        streams.push((send, recv));
    }
    let refused = eventually(Duration::from_secs(20), || b.stats().buffers.refusals >= 3).await;
    let stats = b.stats();
    assert!(
        refused,
        "the budget refused {} reorder buffers, not 3: {:?} {:?}",
        stats.buffers.refusals, stats.buffers, stats.multipath
    );
    assert!(stats.buffers.used_bytes <= budget, "over the budget: {:?}", stats.buffers);
    // A refusal is counted before its flow has finished resetting: wait for the resets.
    let reset = eventually(Duration::from_secs(10), || b.stats().flows_reset >= 3).await;
    assert!(reset, "the refused flows were reset: {}", b.stats().flows_reset);
    // The link and the node go on: a new flow opens.
    let (_s, _r, again) = open(&conn, subflow_header(target, 200, 0, TOKEN)).await;
    assert_eq!(again, Reply::Opened);
    assert!(conn.close_reason().is_none(), "the link closed: {:?}", conn.close_reason());
}
