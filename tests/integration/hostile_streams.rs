//! Streams with bad headers are refused one by one; the link and its other flows live on.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proxy::core::wire::{self, Decoded, Destination, FlowHeader, RefuseReason, Reply};

async fn read_reply(recv: &mut quinn::RecvStream) -> Reply {
    let buf = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4096))
        .await
        .expect("reply in time")
        .expect("reply stream");
    match wire::decode_reply(&buf).expect("valid reply") {
        Decoded::Complete(r, _) => r,
        other => panic!("incomplete reply {other:?}"),
    }
}

/// Exit node `b` (allowing loopback targets) and a raw QUIC link to it as its peer `a`.
async fn exit_with_raw_link() -> (Mesh, proxy::Node, quinn::Endpoint, quinn::Connection) {
    let mesh = Mesh::new(&["a", "b"]);
    let mut b = NodeSpec::new("b");
    // Unsealed (version 1) headers written by hand: b accepts them.
    b.mesh_extra = vec!["e2e: preferred".into()];
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    let b = b.start(&mesh).await;
    let ep = raw_client(&mesh.path("a.crt"), &mesh.path("a.key"), &mesh.path("ca.crt"));
    let conn = ep.connect(b.mesh_addr().expect("addr"), "b").expect("connect").await.expect("handshake");
    (mesh, b, ep, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_are_refused_while_a_good_flow_on_the_same_link_keeps_working() {
    let mesh = Mesh::new(&["a", "b"]);
    let echo = echo_server().await;
    let mut b = NodeSpec::new("b");
    // Unsealed (version 1) headers written by hand: b accepts them.
    b.mesh_extra = vec!["e2e: preferred".into()];
    b.peers = vec![("a", String::new())];
    b.allow = vec!["127.0.0.1/32".into()];
    b.limits = vec!["header_timeout: \"700ms\"".into()];
    let b = b.start(&mesh).await;
    let ep = raw_client(&mesh.path("a.crt"), &mesh.path("a.key"), &mesh.path("ca.crt"));
    let conn = ep.connect(b.mesh_addr().expect("addr"), "b").expect("connect").await.expect("handshake");

    // A good flow, opened first and kept open across the bad ones.
    let (mut good_send, mut good_recv) = conn.open_bi().await.expect("open");
    let mut first = exit_header("a", &echo.to_string());
    first.extend_from_slice(b"ping-1");
    good_send.write_all(&first).await.expect("write");
    let mut reply_and_echo = vec![0u8; wire::encode_reply(&Reply::Opened).len() + 6];
    good_recv.read_exact(&mut reply_and_echo).await.expect("echo 1");
    assert!(reply_and_echo.ends_with(b"ping-1"));

    // Garbage.
    let (mut s1, mut r1) = conn.open_bi().await.expect("open");
    s1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    // Oversized: a valid prefix that declares 60,000 bytes.
    let (mut s2, mut r2) = conn.open_bi().await.expect("open");
    let mut big = wire::MAGIC.to_vec();
    big.push(wire::VERSION);
    big.extend_from_slice(&60_000u16.to_be_bytes());
    s2.write_all(&big).await.expect("write");
    // Never completes: three bytes, then silence.
    let (mut s3, mut r3) = conn.open_bi().await.expect("open");
    s3.write_all(&wire::MAGIC[..3]).await.expect("write");

    for (name, r) in [("garbage", &mut r1), ("oversized", &mut r2), ("stalled", &mut r3)] {
        match read_reply(r).await {
            Reply::Refused { reason, hop, .. } => {
                assert_eq!((reason, hop.as_str()), (RefuseReason::BadHeader, "b"), "{name}");
            }
            Reply::Opened | Reply::Sealed(_) => panic!("{name} header was accepted"),
        }
    }
    assert_eq!(settled(3, || b.stats().refused_inbound(RefuseReason::BadHeader)).await, 3);

    // The good flow still works after all that, on the same connection.
    good_send.write_all(b"ping-2").await.expect("write");
    let mut two = [0u8; 6];
    good_recv.read_exact(&mut two).await.expect("echo 2");
    assert_eq!(&two, b"ping-2");
    good_send.finish().expect("finish");
    let rest = good_recv.read_to_end(1024).await.expect("clean end");
    assert!(rest.is_empty());
    assert!(conn.close_reason().is_none(), "the link must survive bad streams");
    let _ = s1.finish();
    let _ = s2.finish();
    let _ = s3.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_and_relay_headers_are_refused_with_their_reason() {
    let (_mesh, _b, _ep, conn) = exit_with_raw_link().await;
    let cases = [(vec!["c", "d", "c"], RefuseReason::Loop), (vec!["c"], RefuseReason::NoRoute)];
    for (hops, expected) in cases {
        let h = FlowHeader {
            flow_id: 1,
            origin: "a".into(),
            passed: vec![],
            hops: hops.iter().map(|s| s.to_string()).collect(),
            destination: Destination::Target("127.0.0.1:9".into()),
            subflow: None,
        };
        let (mut s, mut r) = conn.open_bi().await.expect("open");
        s.write_chunk(Bytes::from(wire::encode_header(&h).expect("encode"))).await.expect("write");
        match read_reply(&mut r).await {
            Reply::Refused { reason, .. } => assert_eq!(reason, expected, "hops {hops:?}"),
            Reply::Opened | Reply::Sealed(_) => panic!("accepted {hops:?}"),
        }
    }
    let distinct: Vec<String> = (0..15).map(|i| format!("n{i}")).collect();
    let h = FlowHeader {
        flow_id: 2,
        origin: "a".into(),
        passed: vec![],
        hops: distinct,
        destination: Destination::Target("127.0.0.1:9".into()),
        subflow: None,
    };
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(&wire::encode_header(&h).expect("encode")).await.expect("write");
    match read_reply(&mut r).await {
        Reply::Refused { reason, .. } => assert_eq!(reason, RefuseReason::HopLimit),
        Reply::Opened | Reply::Sealed(_) => panic!("17-node path accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_does_not_name_its_sender_is_refused() {
    let (_mesh, _b, _ep, conn) = exit_with_raw_link().await;
    // a claims the flow came from z and never passed a: b would send it back to a.
    let h = FlowHeader {
        flow_id: 3,
        origin: "z".into(),
        passed: vec![],
        hops: vec!["a".into()],
        destination: Destination::Target("127.0.0.1:9".into()),
        subflow: None,
    };
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(&wire::encode_header(&h).expect("encode")).await.expect("write");
    match read_reply(&mut r).await {
        Reply::Refused { reason, hop, .. } => {
            assert_eq!((reason, hop.as_str()), (RefuseReason::BadHeader, "b"))
        }
        Reply::Opened | Reply::Sealed(_) => panic!("accepted a header that hides its sender"),
    }
}
