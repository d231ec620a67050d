//! Entry points for fuzzing: each takes arbitrary bytes and feeds them to one decoder the
//! network or a file reaches, checking what must hold for any input. The cargo-fuzz
//! targets in `fuzz/` call these, and `cargo test` replays the committed corpora through
//! them (`tests/integration/fuzz_corpus.rs`), so a crash once found stays fixed.
//!
//! Each entry point panics only when an invariant is broken (that is the finding); any
//! input may be refused with an error.

use std::path::Path;

use crate::core::control::{self, ToNode, ToScheduler};
use crate::core::enroll::{JoinReply, JoinRequest, MAX_JOIN_FRAME};
use crate::core::subflow_frame::{Frame, FrameDecoder};
use crate::core::wire::{self, Decoded, HeaderLimits};

/// A flow header: decoding never panics, never claims more bytes than given, and a header
/// it accepts encodes to bytes that decode to the same header.
pub fn flow_header(data: &[u8]) {
    let limits = HeaderLimits::default();
    match wire::decode_header(data, &limits) {
        Ok(Decoded::Complete(header, used)) => {
            assert!(used <= data.len() && used <= limits.max_header_bytes);
            let again = wire::encode_header(&header).expect("an accepted header encodes");
            match wire::decode_header(&again, &limits) {
                Ok(Decoded::Complete(back, n)) => assert!(back == header && n == again.len()),
                other => panic!("a re-encoded header does not decode: {other:?}"),
            }
        }
        Ok(Decoded::NeedMore(n)) => assert!(n > data.len() && n <= limits.max_header_bytes),
        Err(_) => {}
    }
}

/// What an exit reads of a sealed flow before it trusts anything: the header of either
/// version (an accepted one re-encodes to the same bytes), the opening under a fixed exit
/// key, the origin's card, and records. Any input may be refused; none may panic.
pub fn sealed(data: &[u8]) {
    use crate::core::seal::record::{DirectionKey, Opener};
    let limits = HeaderLimits::default();
    if let Ok(Decoded::Complete(header, used)) = wire::decode_any_header(data, &limits) {
        assert!(used <= data.len());
        let again = header.encode().expect("an accepted header encodes");
        match wire::decode_any_header(&again, &limits) {
            Ok(Decoded::Complete(back, n)) => assert!(back == header && n == again.len()),
            other => panic!("a re-encoded header does not decode: {other:?}"),
        }
    }
    if let Ok(received) = crate::core::seal::handshake::receive(&fuzz_exit_keys(), 0, data) {
        let _ = crate::tls::card::decode(&received.card);
    }
    if let Some(card) = crate::tls::card::decode(data) {
        assert_eq!(crate::tls::card::decode(&crate::tls::card::encode(&card)), Some(card));
    }
    let mut opener = Opener::new(DirectionKey::new(&[0; 32], 0));
    let mut out = Vec::new();
    let _ = opener.open(data, &mut out);
}

/// The exit key the `sealed` target opens openings with (its seeds are sealed to it).
fn fuzz_exit_keys() -> crate::core::seal::StaticKeys {
    crate::core::seal::StaticKeys::derive(b"fuzz exit")
}

/// A reply: like [`flow_header`].
pub fn reply(data: &[u8]) {
    match wire::decode_reply(data) {
        Ok(Decoded::Complete(reply, used)) => {
            assert!(used <= data.len());
            let again = wire::encode_reply(&reply);
            match wire::decode_reply(&again) {
                Ok(Decoded::Complete(back, _)) => assert_eq!(back, reply),
                other => panic!("a re-encoded reply does not decode: {other:?}"),
            }
        }
        Ok(Decoded::NeedMore(n)) => assert!(n > data.len()),
        Err(_) => {}
    }
}

/// Scheduler protocol frames, both directions: decoding is bounded, and a message it
/// accepts re-encodes stably (compared as bytes: floats may be NaN).
pub fn control_messages(data: &[u8]) {
    stable::<ToScheduler>(data, control::MAX_FRAME_BODY);
    stable::<ToNode>(data, control::MAX_FRAME_BODY);
}

/// Join exchange frames, both directions, with the join cap.
pub fn join_messages(data: &[u8]) {
    stable::<JoinRequest>(data, MAX_JOIN_FRAME);
    stable::<JoinReply>(data, MAX_JOIN_FRAME);
}

fn stable<T: bincode::Encode + bincode::Decode<()>>(data: &[u8], max: usize) {
    if let Ok(Some((message, used))) = control::decode::<T>(data, max) {
        assert!(used <= data.len() && used <= max + control::FRAME_PREFIX_LEN);
        let once = control::encode(&message).expect("an accepted message encodes");
        let (back, _) = control::decode::<T>(&once, usize::MAX).ok().flatten().expect("it decodes again");
        assert_eq!(control::encode(&back).expect("encodes"), once, "re-encoding is stable");
    }
}

/// Multipath subflow frames: the decoder takes bytes in arbitrary pieces and yields the
/// same frames as when given them at once, with data frames within their cap.
pub fn subflow_frames(data: &[u8]) {
    let whole = frames(&[data]);
    let split = data.len() / 3;
    let pieces = frames(&[&data[..split], &data[split..]]);
    assert_eq!(whole, pieces, "framing does not depend on how the bytes arrive");
}

fn frames(pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Frame::Data { data, .. } = &frame {
                        assert!(data.len() <= crate::core::subflow_frame::MAX_DATA);
                    }
                    out.push(frame);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// UDP datagram frames: the deframer takes stream bytes in arbitrary pieces and yields the
/// same datagrams as when given them at once, each within its limit, and re-framing what
/// it yielded gives back the bytes it consumed.
pub fn datagram_frames(data: &[u8]) {
    let whole = datagrams(&[data]);
    let split = data.len() / 3;
    let pieces = datagrams(&[&data[..split], &data[split..]]);
    assert_eq!(whole, pieces, "framing does not depend on how the bytes arrive");
    let mut again = bytes::BytesMut::new();
    for d in &whole.0 {
        crate::core::datagram::put_frame(&mut again, d).expect("a yielded datagram fits a frame");
    }
    assert_eq!(&again[..], &data[..again.len()], "frames re-encode to the bytes they came from");
}

fn datagrams(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    // A low limit, so the over-limit path is reached by short inputs too.
    const LIMIT: usize = 300;
    let mut deframer = crate::core::datagram::Deframer::new(LIMIT);
    let mut out = Vec::new();
    for piece in pieces {
        deframer.push(piece);
        loop {
            match deframer.next_datagram() {
                Ok(Some(d)) => {
                    assert!(d.len() <= LIMIT);
                    out.push(d.to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// Config text, node and scheduler: any input is parsed or refused with errors, never a
/// panic (file checks look under a directory that does not exist).
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base = Path::new("/nonexistent-proxy-fuzz");
    if let Err(errors) = crate::config::parse(text, base) {
        assert!(!errors.is_empty(), "a refusal names at least one problem");
    }
    let _ = crate::config::scheduler::parse(text, base);
    let _ = crate::config::is_scheduler_config(text);
}

/// Valid inputs for each target, to seed its corpus: (target, bytes).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::core::control::{InstructedPath, InstructionSet, Registration, RouteInstruction};
    use crate::core::wire::{Destination, FlowHeader, RefuseReason, Reply, Subflow};
    let header = FlowHeader {
        flow_id: 7,
        origin: "a".into(),
        passed: vec![],
        hops: vec!["b".into()],
        destination: Destination::Target("10.0.0.5:443".into()),
        subflow: Some(Subflow { index: 1, token: 99 }),
    };
    let mut out = sealed_seeds();
    out.extend([
        ("flow_header", wire::encode_header(&header).unwrap_or_default()),
        (
            "flow_header",
            wire::encode_header(&FlowHeader {
                destination: Destination::Echo,
                subflow: None,
                ..header.clone()
            })
            .unwrap_or_default(),
        ),
        ("reply", wire::encode_reply(&Reply::Opened)),
        ("reply", wire::encode_reply(&Reply::refused(RefuseReason::Policy, "b", "not allowed"))),
    ]);
    let register = ToScheduler::Register(Registration {
        node_id: "a".into(),
        region: "eu".into(),
        mesh_address: "10.0.0.1:7800".into(),
        peers: vec![("b".into(), Some("10.0.0.2:7800".into()))],
        listeners: vec!["web".into()],
        routes: vec![("web".into(), Some("d".into()))],
    });
    let set = ToNode::Instructions(InstructionSet {
        version: 3,
        issued_at_unix: 1_800_000_000,
        ttl_secs: 300,
        routes: vec![RouteInstruction {
            route: "web".into(),
            exit: "d".into(),
            paths: vec![InstructedPath { relays: vec!["b".into()], weight: 1.0 }],
        }],
        nodes: vec![],
    });
    for message in [control::encode(&register), control::encode(&ToScheduler::Renew { csr: vec![1, 2, 3] })] {
        out.push(("control", message.unwrap_or_default()));
    }
    out.push(("control", control::encode(&set).unwrap_or_default()));
    let join =
        JoinRequest { secret: [7; 32], node_id: "c".into(), region: "ap".into(), csr: vec![0x30, 0x82] };
    out.push(("join", control::encode(&join).unwrap_or_default()));
    out.push(("join", control::encode(&JoinReply::Refused { reason: "no".into() }).unwrap_or_default()));
    let mut frames = Vec::new();
    for frame in [
        Frame::Data { offset: 0, data: bytes::Bytes::from_static(b"hello") },
        Frame::Ack { delivered: 5, received: 5 },
        Frame::Fin { offset: 5 },
    ] {
        frames.extend_from_slice(&frame.prefix());
        if let Frame::Data { data, .. } = &frame {
            frames.extend_from_slice(data);
        }
    }
    out.push(("subflow_frames", frames));
    for config in [
        "common: { node_id: a, region: eu }\nmesh: { cert: a.crt, key: a.key, ca: ca.crt }\n",
        "bind: \"0.0.0.0:7900\"\ncert: s.crt\nkey: s.key\nca: ca.crt\npins: []\n",
    ] {
        out.push(("config_text", config.as_bytes().to_vec()));
    }
    out
}

/// Seeds of the `sealed` target: a sealed header, an opening sealed to the fuzz exit key,
/// and two records under the all-zero key.
fn sealed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::core::seal::handshake;
    use crate::core::seal::record::{DirectionKey, Sealer};
    use crate::core::wire::{Destination, InnerHeader, SealedHeader};
    let inner = InnerHeader {
        origin: "a".into(),
        destination: Destination::Target("10.0.0.5:443".into()),
        subflow: None,
        sent_at: 1_800_000_000_000,
        before: vec![],
    };
    let origin = crate::core::seal::StaticKeys::derive(b"fuzz origin");
    let mut out = Vec::new();
    if let Ok(started) = handshake::initiate(
        &origin,
        &fuzz_exit_keys().public(),
        0,
        b"not a card",
        &wire::encode_inner(&inner),
    ) {
        let header = SealedHeader {
            flow_id: 0,
            passed: vec![],
            hops: vec!["b".into()],
            opening: started.message.clone(),
        };
        out.push(("sealed", wire::encode_sealed_header(&header).unwrap_or_default()));
        out.push(("sealed", started.message));
    }
    let mut sealer = Sealer::new(DirectionKey::new(&[0; 32], 0));
    let records = [sealer.seal(b"hello").unwrap_or_default(), sealer.fin().unwrap_or_default()].concat();
    out.push(("sealed", records));
    let mut frames = bytes::BytesMut::new();
    for d in [&b"query"[..], b"", &[7u8; 300]] {
        let _ = crate::core::datagram::put_frame(&mut frames, d);
    }
    out.push(("datagram_frames", frames.to_vec()));
    out
}

/// The entry point for each target name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "flow_header" => flow_header,
        "reply" => reply,
        "control" => control_messages,
        "join" => join_messages,
        "subflow_frames" => subflow_frames,
        "config_text" => config_text,
        "datagram_frames" => datagram_frames,
        "sealed" => sealed,
        _ => return None,
    })
}

/// Every target's name.
pub const TARGETS: [&str; 8] =
    ["flow_header", "reply", "control", "join", "subflow_frames", "config_text", "sealed", "datagram_frames"];
