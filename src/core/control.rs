//! The scheduler protocol's messages and framing: pure encode/decode, length-capped and
//! versioned, shared by the node's scheduler client and the scheduler.
//!
//! Frame: `CONTROL_MAGIC` (4 bytes), version (1 byte), body length (u32, big endian), then
//! the bincode body ([`ToScheduler`] or [`ToNode`]). A frame larger than the cap, an
//! unknown version or a malformed body is an error that names what was wrong; the caller
//! decides whether the connection can go on (a bad body of a known length can be skipped).

use bincode::{Decode, Encode};

/// Application codes a scheduler connection is closed with (`docs/scheduler-protocol.md`,
/// section 1), by the node or the scheduler.
pub mod close_codes {
    /// The exchange or session ended normally: a join finished, or a node closes its
    /// session to register anew after a config reload.
    pub const DONE: u32 = 0;
    /// A newer session of the same node took this one's place.
    pub const REPLACED: u32 = 1;
    /// The client certificate names no single node id.
    pub const NO_NODE_ID: u32 = 2;
    /// The node is draining, or the scheduler is stopping.
    pub const SHUTTING_DOWN: u32 = 3;
    /// The node was removed from the mesh (`proxy mesh remove`).
    pub const REMOVED: u32 = 4;
    /// The scheduler has too many joins in progress; the joiner tries again.
    pub const BUSY: u32 = 5;
    /// A join connection sent no request in time: nothing within the first-byte deadline,
    /// or not the whole request within the exchange's deadline.
    pub const TIMED_OUT: u32 = 6;
    /// Too many failed joins from the joiner's address (IPv4) or /64 (IPv6) lately; it
    /// waits and checks its token.
    pub const HELD_OFF: u32 = 7;
    /// This scheduler does not lead the mesh now (another of its schedulers does, or one
    /// is being elected): the node tries the next scheduler it lists at once.
    pub const STANDBY: u32 = 8;
}

/// The node id a scheduler's certificate names, and the server name nodes dial it by.
pub const SCHEDULER_ID: &str = "scheduler";

/// First bytes of every control frame.
pub const CONTROL_MAGIC: [u8; 4] = *b"PXSC";
/// Protocol version.
pub const CONTROL_VERSION: u8 = 1;
/// What a scheduler says it understands, sent as `Welcome.version` (0 in schedulers from
/// before it was defined). Level 1: it reads [`ToScheduler::Capacity`]; level 2:
/// [`ToScheduler::Outcomes`]; level 3: [`ToScheduler::Transports`]. New messages go out only to a scheduler that announced them,
/// so an older one is never sent a frame it would skip and answer with `Error` every
/// heartbeat.
pub const SCHEDULER_FEATURES: u64 = 3;
/// The `Welcome.version` from which a scheduler reads [`ToScheduler::Capacity`].
pub const FEATURE_CAPACITY: u64 = 1;
/// The `Welcome.version` from which a scheduler reads [`ToScheduler::Outcomes`].
pub const FEATURE_OUTCOMES: u64 = 2;
/// The `Welcome.version` from which a scheduler reads [`ToScheduler::Transports`].
pub const FEATURE_TRANSPORTS: u64 = 3;
/// Bytes before the body.
pub const FRAME_PREFIX_LEN: usize = 9;
/// Largest body accepted by default (instructions for a large mesh fit comfortably).
pub const MAX_FRAME_BODY: usize = 4 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_limit::<{ 16 * 1024 * 1024 }>()
}

/// Frames of up to this many bytes (join frames) decode with [`SMALL_FRAME_CAP`]. The cap
/// counts each container at its in-memory size, so it leaves room above the frame size.
const SMALL_FRAME: usize = 64 * 1024;
/// The allocation cap of small frames.
const SMALL_FRAME_CAP: usize = 256 * 1024;

/// Decodes with at most `CAP` bytes allocated, the same encoding as [`config`].
fn decode_capped<T: Decode<()>, const CAP: usize>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::decode_from_slice::<T, _>(
        body,
        bincode::config::standard().with_big_endian().with_limit::<CAP>(),
    )
}

/// A node's own description, sent when it registers.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Registration {
    /// The node id (must match the certificate the connection was made with).
    pub node_id: String,
    /// Region label.
    pub region: String,
    /// `host:port` other nodes dial to reach this node's QUIC endpoint.
    pub mesh_address: String,
    /// Configured peers: id and, when configured, address.
    pub peers: Vec<(String, Option<String>)>,
    /// Listener names.
    pub listeners: Vec<String>,
    /// Routes this node originates: name and exit node (`None`: this node).
    pub routes: Vec<(String, Option<String>)>,
}

/// Measured quality of one peer link, from the QUIC connection's own statistics.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct LinkReport {
    /// The peer.
    pub peer: String,
    /// Smoothed RTT, microseconds.
    pub rtt_us: u64,
    /// Loss of data-carrying traffic, in parts per million: a packet-weighted moving
    /// estimate over the report intervals in which the link carried enough data to measure
    /// it (an idle link's lost keepalives do not count); carried over unchanged through
    /// intervals with too little data, 0 until the first.
    pub loss_ppm: u32,
    /// Bytes per second sent over the link since the last report: what it carried, not
    /// what it could carry (see [`LinkCapacity`]).
    pub throughput_bps: u64,
}

/// What one peer link can carry, from its congestion controller. A separate message rather
/// than a field of [`LinkReport`] because bincode has no optional trailing fields: a new
/// field would make every `Report` unreadable to schedulers that predate it.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct LinkCapacity {
    /// The peer.
    pub peer: String,
    /// The controller's bottleneck-bandwidth estimate of the path from this node to the
    /// peer, **bytes** per second; only sent once measured with the sender never short of
    /// data.
    pub capacity_bps: u64,
}

/// Per-route flow statistics since the last report.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct RouteReport {
    /// The route.
    pub route: String,
    /// Flows started.
    pub flows: u64,
    /// Bytes carried, both directions.
    pub bytes: u64,
}

/// How the flows one origin opened on one path of a route fared since the last report.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PathOutcome {
    /// The route.
    pub route: String,
    /// The path's relays (empty: direct to the exit).
    pub relays: Vec<String>,
    /// Flows opened on it.
    pub flows: u64,
    /// Of those, the ones the path failed: refused by a node other than the exit, or no
    /// reply from the exit in time (a relay that drops flows silently).
    pub failed: u64,
}

/// Messages from a node to the scheduler.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ToScheduler {
    /// Sent first on every connection.
    Register(Registration),
    /// Liveness, every `heartbeat_interval`.
    Heartbeat {
        /// Instruction version the node holds.
        instructions_version: u64,
    },
    /// Link and route measurements.
    Report {
        /// One entry per live peer link.
        links: Vec<LinkReport>,
        /// One entry per route with traffic.
        routes: Vec<RouteReport>,
    },
    /// Ask for instruction updates newer than `since_version`.
    Subscribe {
        /// The version the node already has (0: none).
        since_version: u64,
    },
    /// Ask for a new certificate for the same key (renewal, before the current one
    /// expires). Answered with `Renewed` or `RenewRefused`.
    Renew {
        /// A PKCS#10 certificate request (DER) signed with the node's key.
        csr: Vec<u8>,
    },
    /// Link capacities, sent right after each `Report` (and once on `Welcome`) to a
    /// scheduler whose `Welcome.version` is at least [`FEATURE_CAPACITY`]. Lists every live
    /// link that has an estimate; a link left out has none (it replaces the previous list).
    Capacity {
        /// One entry per live peer link with a capacity estimate.
        links: Vec<LinkCapacity>,
    },
    /// Sent right after each `Report` to a scheduler whose `Welcome.version` is at least
    /// [`FEATURE_OUTCOMES`]: whether this node relays for others (`mesh.relay`), and how its
    /// flows fared per path, so path choice avoids relays that fail them.
    Outcomes {
        /// `mesh.relay`: paths may go through this node.
        relay: bool,
        /// Paths that carried flows since the last report.
        paths: Vec<PathOutcome>,
    },
    /// Sent right after each `Report` to a scheduler whose `Welcome.version` is at least
    /// [`FEATURE_TRANSPORTS`]: the peers whose live link runs over TLS on TCP (the
    /// fallback where UDP is blocked); every other reported link runs over QUIC.
    Transports {
        /// Peer ids, at most one per reported link.
        tcp: Vec<String>,
    },
}

/// One path for a route: the relays between the source and the exit, and its share.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct InstructedPath {
    /// Relays in order (empty: direct to the exit).
    pub relays: Vec<String>,
    /// Share of flows or bytes, 0 to 1.
    pub weight: f64,
}

/// The scheduler's instruction for one route of one node.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct RouteInstruction {
    /// The route's name on the node.
    pub route: String,
    /// The exit node.
    pub exit: String,
    /// Paths, best first; the first is the primary, the rest are alternatives that share no
    /// relay with it.
    pub paths: Vec<InstructedPath>,
}

/// A node the scheduler introduces (peer discovery).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct NodeIntro {
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Address of its QUIC endpoint.
    pub mesh_address: String,
}

/// A full set of instructions for one node, versioned.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct InstructionSet {
    /// Increases with every change; a node keeps the highest it has seen.
    pub version: u64,
    /// When the scheduler issued it, Unix seconds.
    pub issued_at_unix: u64,
    /// How long it is fresh, seconds; older sets are still used while nothing better
    /// exists, and shown as stale.
    pub ttl_secs: u64,
    /// Per-route instructions.
    pub routes: Vec<RouteInstruction>,
    /// Nodes missing from the node's config that its paths may need.
    pub nodes: Vec<NodeIntro>,
}

/// Messages from the scheduler to a node.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ToNode {
    /// Registration accepted.
    Welcome {
        /// What the scheduler understands ([`SCHEDULER_FEATURES`]; 0 from schedulers that
        /// predate it). Instructions follow as `Instructions` once the node subscribes.
        version: u64,
    },
    /// New instructions.
    Instructions(InstructionSet),
    /// The last message was not understood; the connection goes on.
    Error {
        /// What was wrong.
        message: String,
    },
    /// The certificates the mesh no longer accepts (the whole list, sent after `Welcome`
    /// and on every change): the node refuses them on every link from now on.
    Revocations(RevocationList),
    /// A renewed certificate, PEM, for the key of the node's `Renew` request.
    Renewed {
        /// The certificate, PEM.
        cert_pem: String,
    },
    /// The renewal was refused; the node keeps its certificate and tries again later.
    RenewRefused {
        /// Why.
        reason: String,
    },
}

/// Node ids removed from the mesh and the certificates revoked with them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct RevocationList {
    /// Node ids refused whatever certificate they present.
    pub node_ids: Vec<String>,
    /// Certificates refused, by SHA-256 of their DER.
    pub cert_fingerprints: Vec<[u8; 32]>,
    /// Per node id, a time (Unix seconds): its certificates that start at or before it
    /// are refused (those from before the id's last removal, made by hand or not).
    pub issued_before: Vec<(String, i64)>,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a control frame at all: the connection cannot go on.
    #[error("bad magic: not a control frame")]
    BadMagic,
    /// A version this side does not speak; the body (of `skip` bytes) can be skipped.
    #[error("unsupported control protocol version {version}")]
    UnsupportedVersion {
        /// The version seen.
        version: u8,
        /// Bytes to skip to the next frame.
        skip: usize,
    },
    /// Larger than the cap: the connection cannot go on.
    #[error("control frame of {0} bytes exceeds the limit of {1}")]
    TooLong(usize, usize),
    /// The body does not decode; the frame (`skip` bytes) can be skipped.
    #[error("malformed control message: {message}")]
    Malformed {
        /// What the decoder said.
        message: String,
        /// Bytes to skip to the next frame.
        skip: usize,
    },
}

/// Encodes one message as a frame.
pub fn encode<T: Encode>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = bincode::encode_to_vec(message, config())
        .map_err(|e| FrameError::Malformed { message: e.to_string(), skip: 0 })?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLong(body.len(), MAX_FRAME_BODY))?;
    let mut out = Vec::with_capacity(FRAME_PREFIX_LEN + body.len());
    out.extend_from_slice(&CONTROL_MAGIC);
    out.push(CONTROL_VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes one frame from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the message and the bytes it took.
pub fn decode<T: Decode<()>>(buf: &[u8], max_body: usize) -> Result<Option<(T, usize)>, FrameError> {
    let seen = buf.len().min(CONTROL_MAGIC.len());
    if buf[..seen] != CONTROL_MAGIC[..seen] {
        return Err(FrameError::BadMagic);
    }
    if buf.len() < FRAME_PREFIX_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    if len > max_body {
        return Err(FrameError::TooLong(len, max_body));
    }
    let total = FRAME_PREFIX_LEN + len;
    if buf[4] != CONTROL_VERSION {
        return Err(FrameError::UnsupportedVersion { version: buf[4], skip: total });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[FRAME_PREFIX_LEN..total];
    // The decoder's allocation cap follows the frame's: a length inside a small frame (a
    // join request from a machine not yet authenticated) must not make it allocate 16 MiB.
    let decoded = if max_body <= SMALL_FRAME {
        decode_capped::<T, SMALL_FRAME_CAP>(body)
    } else {
        bincode::decode_from_slice::<T, _>(body, config())
    };
    match decoded {
        Ok((m, used)) if used == body.len() => Ok(Some((m, total))),
        Ok((_, used)) => Err(FrameError::Malformed {
            message: format!("{} trailing bytes", body.len() - used),
            skip: total,
        }),
        Err(e) => Err(FrameError::Malformed { message: e.to_string(), skip: total }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> InstructionSet {
        InstructionSet {
            version: 7,
            issued_at_unix: 1_800_000_000,
            ttl_secs: 300,
            routes: vec![RouteInstruction {
                route: "web".into(),
                exit: "d".into(),
                paths: vec![
                    InstructedPath { relays: vec!["b".into()], weight: 0.7 },
                    InstructedPath { relays: vec![], weight: 0.3 },
                ],
            }],
            nodes: vec![NodeIntro {
                node_id: "b".into(),
                region: "eu".into(),
                mesh_address: "10.0.0.2:7800".into(),
            }],
        }
    }

    #[test]
    fn messages_round_trip_and_every_prefix_asks_for_more() {
        let frame = encode(&ToNode::Instructions(set())).expect("encode");
        for cut in 0..frame.len() {
            assert_eq!(decode::<ToNode>(&frame[..cut], MAX_FRAME_BODY), Ok(None), "prefix {cut}");
        }
        let (m, used) = decode::<ToNode>(&frame, MAX_FRAME_BODY).expect("decode").expect("complete");
        assert_eq!((m, used), (ToNode::Instructions(set()), frame.len()));
        let hb = encode(&ToScheduler::Heartbeat { instructions_version: 3 }).expect("encode");
        let (m, _) = decode::<ToScheduler>(&hb, MAX_FRAME_BODY).expect("decode").expect("complete");
        assert_eq!(m, ToScheduler::Heartbeat { instructions_version: 3 });
    }

    #[test]
    fn an_unknown_version_or_bad_body_can_be_skipped_but_bad_magic_cannot() {
        let mut frame = encode(&ToScheduler::Subscribe { since_version: 1 }).expect("encode");
        let len = frame.len();
        frame[4] = 9;
        assert_eq!(
            decode::<ToScheduler>(&frame, MAX_FRAME_BODY),
            Err(FrameError::UnsupportedVersion { version: 9, skip: len })
        );
        let mut bad = encode(&ToScheduler::Subscribe { since_version: 1 }).expect("encode");
        bad[FRAME_PREFIX_LEN] = 0x7f; // no such variant
        assert!(
            matches!(decode::<ToScheduler>(&bad, MAX_FRAME_BODY), Err(FrameError::Malformed { skip, .. }) if skip == bad.len())
        );
        assert_eq!(decode::<ToScheduler>(b"GET /", MAX_FRAME_BODY), Err(FrameError::BadMagic));
    }

    #[test]
    fn a_report_keeps_the_bytes_older_schedulers_read_and_capacity_is_a_new_variant() {
        // The example of docs/scheduler-protocol.md §7: unchanged, so a scheduler that
        // predates capacity still reads every report.
        let report = ToScheduler::Report {
            links: vec![LinkReport { peer: "b".into(), rtt_us: 12_000, loss_ppm: 0, throughput_bps: 0 }],
            routes: vec![],
        };
        let frame = encode(&report).expect("encode");
        assert_eq!(
            frame,
            [0x50, 0x58, 0x53, 0x43, 1, 0, 0, 0, 0x0a, 2, 1, 1, b'b', 0xfb, 0x2e, 0xe0, 0, 0, 0]
        );
        let capacity =
            ToScheduler::Capacity { links: vec![LinkCapacity { peer: "b".into(), capacity_bps: 1_250_000 }] };
        let frame = encode(&capacity).expect("encode");
        assert_eq!(frame[FRAME_PREFIX_LEN], 5, "variant 5, which older schedulers skip as unknown");
        let (m, _) = decode::<ToScheduler>(&frame, MAX_FRAME_BODY).expect("decode").expect("complete");
        assert_eq!(m, capacity);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_arrives() {
        let mut prefix = CONTROL_MAGIC.to_vec();
        prefix.push(CONTROL_VERSION);
        prefix.extend_from_slice(&(u32::MAX).to_be_bytes());
        assert_eq!(
            decode::<ToNode>(&prefix, MAX_FRAME_BODY),
            Err(FrameError::TooLong(u32::MAX as usize, MAX_FRAME_BODY))
        );
    }
}
