//! Flows are sealed end to end between origin and exit: a relay sees no plaintext, a relay
//! that alters, drops, repeats or cuts bytes makes the flow reset at both ends, a member
//! cannot pass itself off as another origin, and a node of the previous wire version is
//! refused with a reason that names the versions.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proxy::core::seal::StaticKeys;
use proxy::core::seal::handshake::{self, Initiated};
use proxy::core::wire::{
    self, Decoded, Destination, InnerHeader, RefuseReason, Reply, SealedHeader, Subflow,
};
use proxy::node::{TapAction, TapDirection};
use proxy::tls::TlsIdentity;
use proxy::tls::card::{self, Card};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `alpha` -> `relay` -> `omega` (the exit), `alpha`'s route `in` to `target`; `mallory`
/// is a member linked to `omega` only.
struct Line {
    mesh: Mesh,
    alpha: proxy::Node,
    relay: proxy::Node,
    omega: proxy::Node,
}

async fn line(target: std::net::SocketAddr) -> Line {
    let mesh = Mesh::new(&["alpha", "relay", "omega", "mallory"]);
    let mut omega = NodeSpec::new("omega");
    omega.peers = vec![("relay", String::new()), ("mallory", String::new()), ("alpha", String::new())];
    omega.allow = vec!["127.0.0.1/32".into()];
    let omega = omega.start(&mesh).await;
    let mut relay = NodeSpec::new("relay");
    relay.peers = vec![("alpha", String::new()), ("omega", omega.mesh_addr().expect("addr").to_string())];
    let relay = relay.start(&mesh).await;
    let mut alpha = NodeSpec::new("alpha");
    alpha.peers = vec![("relay", relay.mesh_addr().expect("addr").to_string())];
    alpha.routes = vec![("in", target.to_string(), Some("omega"))];
    alpha.via = vec!["relay"];
    let alpha = alpha.start(&mesh).await;
    assert!(alpha.wait_for_link("relay", Duration::from_secs(10)).await);
    assert!(relay.wait_for_link("omega", Duration::from_secs(10)).await);
    Line { mesh, alpha, relay, omega }
}

/// A payload no encoding would produce by chance.
fn payload(len: usize) -> Vec<u8> {
    b"SECRET-PAYLOAD-7f3a9c-".iter().copied().cycle().take(len).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forwards_no_plaintext_and_does_not_learn_the_target() {
    let echo = echo_server().await;
    let l = line(echo).await;
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let dump = seen.clone();
    l.relay.set_relay_tap(Some(Arc::new(move |_, chunk: Bytes| {
        dump.lock().expect("dump").extend_from_slice(&chunk);
        TapAction::Send(vec![chunk])
    })));
    let data = payload(300_000);
    let mut s = connect(listener_addr(&l.alpha, "in")).await;
    s.write_all(&data[..1000]).await.expect("write");
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).await.expect("first echo");
    // While the flow is open, the relay's own record of it names no target.
    let relayed = l.relay.flows();
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert_eq!(relayed[0].destination, "(sealed)");
    s.write_all(&data[1000..]).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("echo to the end");
    back.extend_from_slice(&rest);
    assert_eq!(sha256(&back), sha256(&data), "the echo came back whole");

    let dump = seen.lock().expect("dump").clone();
    assert!(dump.len() >= 2 * data.len(), "the relay carried the flow ({} bytes)", dump.len());
    assert!(!contains(&dump, b"SECRET-PAYLOAD"), "plaintext crossed the relay");
    assert!(!contains(&dump, echo.to_string().as_bytes()), "the target crossed the relay");
    // The exit knows who asked: the authenticated origin.
    let stats = l.omega.stats();
    assert_eq!(stats.flows_exited, 1);
    assert!(l.alpha.stats().flows_sealed >= 1);
    assert_eq!(l.omega.stats().flows_unsealed, 0);
}

/// What a hostile relay does to the first chunk it forwards once armed.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Flip,
    Drop,
    Replay,
    Truncate,
}

/// Reads from `s` until it fails or ends; returns what came and whether it was a reset.
async fn read_until_end(s: &mut (impl AsyncReadExt + Unpin)) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("flow ends in time")
        {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                return (got, true);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_tampers_makes_the_flow_reset_never_deliver_altered_bytes() {
    let echo = echo_server().await;
    let l = line(echo).await;
    let cases = [
        (Tamper::Flip, TapDirection::Forward),
        (Tamper::Drop, TapDirection::Forward),
        (Tamper::Replay, TapDirection::Forward),
        (Tamper::Truncate, TapDirection::Forward),
        (Tamper::Flip, TapDirection::Backward),
        (Tamper::Replay, TapDirection::Backward),
        (Tamper::Truncate, TapDirection::Backward),
    ];
    for (tamper, direction) in cases {
        let armed = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (a, d) = (armed.clone(), done.clone());
        l.relay.set_relay_tap(Some(Arc::new(move |dir, chunk: Bytes| {
            if dir != direction || !a.load(Ordering::SeqCst) || d.swap(true, Ordering::SeqCst) {
                return TapAction::Send(vec![chunk]);
            }
            match tamper {
                Tamper::Flip => {
                    let mut v = chunk.to_vec();
                    let i = v.len() / 2;
                    v[i] ^= 0x01;
                    TapAction::Send(vec![Bytes::from(v)])
                }
                Tamper::Drop => TapAction::Send(vec![]),
                Tamper::Replay => TapAction::Send(vec![chunk.clone(), chunk]),
                Tamper::Truncate => TapAction::Finish,
            }
        })));
        let data = payload(400_000);
        let mut s = connect(listener_addr(&l.alpha, "in")).await;
        // A clean round trip first, so the tampering hits flow data, not the opening.
        s.write_all(b"hello").await.expect("write");
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).await.expect("hello echoed");
        armed.store(true, Ordering::SeqCst);
        let (mut r, mut w) = s.into_split();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
                let _ = w.shutdown().await;
                w
            })
        };
        let (got, was_reset) = read_until_end(&mut r).await;
        drop(writer.await.expect("writer"));
        assert!(done.load(Ordering::SeqCst), "{tamper:?} {direction:?}: the relay never tampered");
        assert!(was_reset, "{tamper:?} {direction:?}: the flow ended without a reset ({} bytes)", got.len());
        assert!(got.len() < data.len(), "{tamper:?} {direction:?}: all bytes arrived");
        assert_eq!(got, data[..got.len()], "{tamper:?} {direction:?}: altered bytes were delivered");
    }
    l.relay.set_relay_tap(None);
    // The link and honest flows are unaffected.
    let mut s = open_echoed_flow(listener_addr(&l.alpha, "in"), 3).await;
    s.shutdown().await.expect("half-close");
}

/// A member's sealing material, as its node would derive it.
struct Member {
    id: String,
    keys: StaticKeys,
    card: Card,
}

fn member(mesh: &Mesh, id: &str) -> Member {
    let tls = TlsIdentity::load(
        &mesh.path(&format!("{id}.crt")),
        &mesh.path(&format!("{id}.key")),
        &mesh.path("ca.crt"),
        id,
    )
    .expect("identity");
    let keys = StaticKeys::derive(&tls.key_fingerprint_input());
    let card = tls.card(id, keys.public()).expect("card");
    Member { id: id.into(), keys, card }
}

/// A raw QUIC link to `node` as member `id` (its certificate from `mesh`); the endpoint
/// must live as long as the link.
async fn link_as(mesh: &Mesh, id: &str, node: &proxy::Node) -> (quinn::Connection, quinn::Endpoint) {
    let file = |ext: &str| mesh.path(&format!("{id}.{ext}"));
    let ep = raw_client(&file("crt"), &file("key"), &mesh.path("ca.crt"));
    let conn =
        ep.connect(node.mesh_addr().expect("addr"), node.id()).expect("connect").await.expect("handshake");
    (conn, ep)
}

/// A sealed header from `from` (sealing with its keys, sending `card`, naming `origin`)
/// to the exit `to`.
fn opening(
    from: &Member,
    card: &Card,
    origin: &str,
    to: &Member,
    flow_id: u64,
    target: &str,
    subflow: Option<Subflow>,
) -> (Vec<u8>, Initiated) {
    let inner = InnerHeader {
        origin: origin.into(),
        destination: Destination::Target(target.into()),
        subflow,
        sent_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64,
        before: vec![],
    };
    let started = handshake::initiate(
        &from.keys,
        &to.card.seal_key,
        flow_id,
        &card::encode(card),
        &wire::encode_inner(&inner),
    )
    .expect("initiate");
    let header = SealedHeader { flow_id, passed: vec![], hops: vec![], opening: started.message.clone() };
    (wire::encode_sealed_header(&header).expect("encode"), started)
}

/// Writes `header` on a new stream and reads the reply.
async fn send_header(
    conn: &quinn::Connection,
    header: &[u8],
) -> (quinn::SendStream, quinn::RecvStream, Reply) {
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(header).await.expect("write");
    let mut buf = Vec::new();
    loop {
        if let Decoded::Complete(reply, _) = wire::decode_reply(&buf).expect("valid reply") {
            return (s, r, reply);
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.read_chunk(4096, true))
            .await
            .expect("reply in time")
            .expect("read")
            .expect("reply before the end");
        buf.extend_from_slice(&chunk.bytes);
    }
}

fn refusal(reply: Reply) -> (RefuseReason, String) {
    match reply {
        Reply::Refused { reason, detail, .. } => (reason, detail),
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_pass_itself_off_as_another_origin() {
    let echo = echo_server().await;
    let l = line(echo).await;
    let (alpha, mallory, omega) =
        (member(&l.mesh, "alpha"), member(&l.mesh, "mallory"), member(&l.mesh, "omega"));
    let (conn, _ep) = link_as(&l.mesh, "mallory", &l.omega).await;
    let target = echo.to_string();

    // Its own card, another's name.
    let (h, _) = opening(&mallory, &mallory.card, "alpha", &omega, 1, &target, None);
    let (reason, detail) = refusal(send_header(&conn, &h).await.2);
    assert_eq!(reason, RefuseReason::BadHeader);
    assert!(detail.contains("carries the card of `mallory`"), "{detail}");
    // Another's card (public: it travels the links), without that node's secret key.
    let (h, _) = opening(&mallory, &alpha.card, "alpha", &omega, 2, &target, None);
    let (reason, detail) = refusal(send_header(&conn, &h).await.2);
    assert_eq!(reason, RefuseReason::BadHeader);
    assert!(detail.contains("not made by the holder of `alpha`"), "{detail}");
    // A header that names alpha in the clear (version 1) is refused for its version.
    let (reason, detail) = refusal(send_header(&conn, &exit_header("alpha", &target)).await.2);
    assert_eq!(reason, RefuseReason::BadHeader);
    assert!(detail.contains("wire version 1") && detail.contains("version 2"), "{detail}");
    assert_eq!(l.omega.stats().flows_exited, 0);

    // As itself, mallory is served, and recorded as itself.
    let (h, started) = opening(&mallory, &mallory.card, &mallory.id, &omega, 3, &target, None);
    let (_s, _r, reply) = send_header(&conn, &h).await;
    let Reply::Sealed(message) = reply else { panic!("not sealed: {reply:?}") };
    let finished = started.initiator.finish(&message).expect("the exit's reply opens");
    assert_eq!(
        wire::decode_reply(&finished.reply).expect("reply"),
        Decoded::Complete(Reply::Opened, finished.reply.len())
    );
    assert!(
        eventually(Duration::from_secs(5), || l
            .omega
            .flows()
            .iter()
            .any(|f| f.id == 3 && f.origin == "mallory"))
        .await
    );

    // The same opening again (a replay) is refused.
    let (reason, detail) = refusal(send_header(&conn, &h).await.2);
    assert_eq!(reason, RefuseReason::BadHeader);
    assert!(detail.contains("replayed"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipath_flow_id_taken_by_one_member_does_not_block_another() {
    let echo = echo_server().await;
    let l = line(echo).await;
    let (alpha, mallory, omega) =
        (member(&l.mesh, "alpha"), member(&l.mesh, "mallory"), member(&l.mesh, "omega"));
    let target = echo.to_string();
    let (m_conn, _m_ep) = link_as(&l.mesh, "mallory", &l.omega).await;
    let (a_conn, _a_ep) = link_as(&l.mesh, "alpha", &l.omega).await;
    let id = 0x5eed;
    // mallory opens a multipath flow under alpha's next id, first: as itself.
    let sub = Some(Subflow { index: 0, token: 1 });
    let (h, _) = opening(&mallory, &mallory.card, &mallory.id, &omega, id, &target, sub);
    let (_ms, _mr, reply) = send_header(&m_conn, &h).await;
    assert!(matches!(reply, Reply::Sealed(_)), "{reply:?}");
    // alpha's flow with the same id opens all the same: flows are keyed by the
    // authenticated origin.
    let (h, _) =
        opening(&alpha, &alpha.card, &alpha.id, &omega, id, &target, Some(Subflow { index: 0, token: 2 }));
    let (_as, _ar, reply) = send_header(&a_conn, &h).await;
    assert!(matches!(reply, Reply::Sealed(_)), "{reply:?}");
    // And mallory cannot join alpha's flow, even with its token.
    let (h, _) =
        opening(&mallory, &mallory.card, "alpha", &omega, id, &target, Some(Subflow { index: 1, token: 2 }));
    let (reason, _) = refusal(send_header(&m_conn, &h).await.2);
    assert_eq!(reason, RefuseReason::BadHeader);
    let origins: Vec<String> = l.omega.flows().into_iter().filter(|f| f.id == id).map(|f| f.origin).collect();
    assert!(
        origins.contains(&"alpha".to_string()) && origins.contains(&"mallory".to_string()),
        "{origins:?}"
    );
}

/// Opens a sealed flow from `from` to `to` over `conn`; returns the exit's answer,
/// unsealed.
async fn sealed_answer(conn: &quinn::Connection, from: &Member, to: &Member, target: &str) -> Reply {
    let (h, started) = opening(from, &from.card, &from.id, to, rand::random(), target, None);
    let (_s, _r, reply) = send_header(conn, &h).await;
    match reply {
        Reply::Sealed(message) => {
            let finished = started.initiator.finish(&message).expect("the exit's reply opens");
            match wire::decode_reply(&finished.reply).expect("reply") {
                Decoded::Complete(r, _) => r,
                other => panic!("{other:?}"),
            }
        }
        clear => clear,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_policy_rules_can_name_origins_and_certificate_groups() {
    let mesh = Mesh::new(&["omega", "beta"]);
    // alpha's certificate names the group `backend`: the CA put it there.
    let alpha_cert = mesh.ca.issue_node_cert_with_groups("alpha", &["backend".into()], 1).expect("issue");
    std::fs::write(mesh.path("alpha.crt"), alpha_cert.cert_pem).expect("write");
    std::fs::write(mesh.path("alpha.key"), alpha_cert.key_pem).expect("write");
    let (e1, e2, e3) = (echo_server().await, echo_server().await, echo_server().await);
    let policy = |first_from: &str| {
        format!(
            "exit_policy:\n  allow:\n    - {{ to: \"{e1}\", from: [{first_from}] }}\n    - {{ to: \"{e2}\", from: [\"group:backend\"] }}\n    - \"{e3}\"\n"
        )
    };
    let mut spec = NodeSpec::new("omega");
    spec.peers = vec![("alpha", String::new()), ("beta", String::new())];
    // Unsealed headers are accepted, to show that a claimed origin never meets `from`.
    spec.mesh_extra = vec!["e2e: preferred".into()];
    spec.policy = Some(policy("alpha"));
    let omega = spec.start(&mesh).await;
    let (alpha, beta, omega_m) = (member(&mesh, "alpha"), member(&mesh, "beta"), member(&mesh, "omega"));
    let (a_conn, _a) = link_as(&mesh, "alpha", &omega).await;
    let (b_conn, _b) = link_as(&mesh, "beta", &omega).await;

    // A rule for a node id.
    assert_eq!(sealed_answer(&a_conn, &alpha, &omega_m, &e1.to_string()).await, Reply::Opened);
    let (reason, detail) = refusal(sealed_answer(&b_conn, &beta, &omega_m, &e1.to_string()).await);
    assert_eq!(reason, RefuseReason::Policy);
    assert!(detail.contains("allow[0]") && detail.contains("for `beta`"), "{detail}");
    assert!(!detail.contains("alpha"), "the refusal does not tell who the rule is for: {detail}");
    // A rule for a group, read from the origin's certificate.
    assert_eq!(sealed_answer(&a_conn, &alpha, &omega_m, &e2.to_string()).await, Reply::Opened);
    let (reason, detail) = refusal(sealed_answer(&b_conn, &beta, &omega_m, &e2.to_string()).await);
    assert_eq!(reason, RefuseReason::Policy);
    assert!(detail.contains("allow[1]"), "{detail}");
    // A rule without `from` is for everyone.
    assert_eq!(sealed_answer(&b_conn, &beta, &omega_m, &e3.to_string()).await, Reply::Opened);
    // An unsealed header that claims to come from alpha meets no `from` rule.
    let (reason, _) = refusal(send_header(&b_conn, &exit_header("beta", &e1.to_string())).await.2);
    assert_eq!(reason, RefuseReason::Policy);
    let (_, _, reply) = send_header(&a_conn, &exit_header("alpha", &e1.to_string())).await;
    assert_eq!(refusal(reply).0, RefuseReason::Policy, "a claim is not an identity, even when true");

    // A node cannot claim groups in its own config: there is no such setting.
    let claimed =
        NodeSpec::new("beta").yaml().replace("region: test\n", "region: test\n  groups: [backend]\n");
    assert!(proxy::config::parse(&claimed, &mesh.dir).is_err(), "a config that claims groups is refused");

    // Hot reload: the first rule now names beta too.
    let mut reloaded = NodeSpec::new("omega");
    reloaded.peers = spec.peers.clone();
    reloaded.mesh_extra = spec.mesh_extra.clone();
    reloaded.policy = Some(policy("alpha, beta"));
    let path = mesh.path("omega-reloaded.yaml");
    std::fs::write(&path, reloaded.yaml()).expect("write");
    omega.reload_file(&path).expect("reload");
    assert_eq!(sealed_answer(&b_conn, &beta, &omega_m, &e1.to_string()).await, Reply::Opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_off_sends_unsealed_flows_which_only_a_node_that_accepts_them_carries() {
    let echo = echo_server().await;
    let mesh = Mesh::new(&["a", "b"]);
    let start = |exit_mode: &'static str| {
        let mesh = &mesh;
        async move {
            let mut b = NodeSpec::new("b");
            b.peers = vec![("a", String::new())];
            b.allow = vec!["127.0.0.1/32".into()];
            b.mesh_extra = vec![format!("e2e: {exit_mode}")];
            let b = b.start(mesh).await;
            let mut a = NodeSpec::new("a");
            a.peers = vec![("b", b.mesh_addr().expect("addr").to_string())];
            a.routes = vec![("in", echo.to_string(), Some("b"))];
            a.mesh_extra = vec!["e2e: off".into()];
            let a = a.start(mesh).await;
            assert!(a.wait_for_link("b", Duration::from_secs(10)).await);
            (a, b)
        }
    };
    // An exit that accepts unsealed flows carries them, and both ends count them.
    let (a, b) = start("preferred").await;
    let mut s = open_echoed_flow(listener_addr(&a, "in"), 5).await;
    s.shutdown().await.expect("half-close");
    assert_eq!((a.stats().flows_sealed, a.stats().flows_unsealed), (0, 1));
    assert_eq!(settled(1, || b.stats().flows_unsealed).await, 1);
    drop((a, b));
    // One that requires sealing refuses them, naming the versions.
    let (a, b) = start("required").await;
    expect_refused(listener_addr(&a, "in"), b"hello").await;
    assert_eq!(settled(1, || b.stats().refused_inbound(RefuseReason::BadHeader)).await, 1);
}
