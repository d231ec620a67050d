//! The stream header that opens every flow stream, and the reply the far end sends back.
//!
//! Header on the wire: `MAGIC` (4 bytes), `VERSION` (1 byte), body length (u16, big
//! endian), then the bincode body ([`FlowHeader`]). Reply: `VERSION` (1 byte), body length
//! (u16, big endian), then the bincode body ([`Reply`]).
//!
//! Decoding is pure and capped: the declared length is checked against the caller's limit
//! before a byte of the body is looked at, bincode runs with a hard allocation limit, and
//! every field is checked (hop count, node id syntax, no id twice, target syntax) before a
//! header is handed out. Application bytes may follow the header in the same packet; the
//! decoder reports how many bytes the header took so the rest can be forwarded.

use bincode::{Decode, Encode};

/// First bytes of every flow stream.
pub const MAGIC: [u8; 4] = *b"PRXY";
/// Wire version of an unsealed flow's header (`mesh.e2e: preferred` only), and of every
/// reply.
pub const VERSION: u8 = 1;
/// Wire version of a sealed flow's header: routing in the clear, the rest sealed to the
/// exit ([`SealedHeader`]).
pub const SEALED_VERSION: u8 = 2;
/// Bytes before the header body: magic, version, length.
pub const HEADER_PREFIX_LEN: usize = 7;
/// Bytes before the reply body: version, length.
pub const REPLY_PREFIX_LEN: usize = 3;
/// Largest reply body accepted.
pub const MAX_REPLY_BODY: usize = 1024;
/// Longest node id (a DNS label).
pub const MAX_NODE_ID_LEN: usize = 63;
/// Longest `host:port` target.
pub const MAX_TARGET_LEN: usize = 261;
/// Longest free-text detail in a refusal.
const MAX_DETAIL_LEN: usize = 512;

/// bincode with a hard cap, so a forged length prefix inside the body cannot make the
/// decoder allocate more than the body could hold.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_limit::<65_536>()
}

/// Which part of a multipath flow a stream carries.
///
/// Index 0 opens the flow at the exit (the exit dials the target); any other index joins
/// the flow the exit already holds for `(origin, flow_id)` and must present the same
/// token. Replacement subflows take fresh indices, so an index names one stream for the
/// flow's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Subflow {
    /// This subflow's index: 0 opens the flow, any other joins it.
    pub index: u8,
    /// Secret chosen by the origin for this flow, so a node off the flow's paths cannot
    /// join it by guessing its id.
    pub token: u64,
}

impl Subflow {
    /// Whether this subflow opens its flow (rather than joining one).
    pub fn opens(&self) -> bool {
        self.index == 0
    }
}

/// Where a flow leaves the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Destination {
    /// The exit dials this `host:port` (subject to its exit policy).
    Target(String),
    /// A proxy chain: the exit routes the flow by its own route for this port, as if the
    /// application had connected to its listener on that port.
    RouteByPort(u16),
    /// The exit sends UDP datagrams to this `host:port` (subject to its exit policy). The
    /// stream then carries datagrams framed by [`crate::core::datagram`], both ways.
    /// Appended last, so the encodings of the other variants are unchanged.
    UdpTarget(String),
    /// A probe (`proxy ping`, `proxy trace`): the exit itself answers, echoing the bytes
    /// it receives within small bounds (see `node::flow::echo`); nothing is dialed.
    /// Appended last, so the encodings of the other variants are unchanged.
    Echo,
}

/// The body of a stream header.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FlowHeader {
    /// Flow id chosen by the origin; unique per origin.
    pub flow_id: u64,
    /// Node id of the origin.
    pub origin: String,
    /// Nodes the flow already crossed after the origin, up to and including the sender
    /// (relays and proxy-chain nodes). With `origin` and `hops` it makes loops detectable.
    pub passed: Vec<String>,
    /// Nodes still to go after the node that receives this header; the last one is the
    /// exit. Empty: the receiver is the exit.
    pub hops: Vec<String>,
    /// What the exit does with the flow.
    pub destination: Destination,
    /// The multipath subflow this stream carries, if any.
    pub subflow: Option<Subflow>,
}

/// The header of a sealed flow: what relays need in the clear (the flow id for their
/// logs, the nodes passed and still to go), and the opening message sealed to the exit
/// (see [`crate::core::seal::handshake`]), which carries an [`InnerHeader`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SealedHeader {
    /// Flow id chosen by the origin; random, bound into the sealed opening.
    pub flow_id: u64,
    /// Nodes the flow crossed after the origin, up to and including the sender; the
    /// origin itself is not named.
    pub passed: Vec<String>,
    /// Nodes still to go after the receiver; empty: the receiver is the exit.
    pub hops: Vec<String>,
    /// The handshake's first message.
    pub opening: Vec<u8>,
}

/// What the origin tells only the exit, inside the sealed opening.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct InnerHeader {
    /// The origin's node id (its card, sealed beside this, proves it).
    pub origin: String,
    /// What the exit does with the flow.
    pub destination: Destination,
    /// The multipath subflow this stream carries, if any.
    pub subflow: Option<Subflow>,
    /// When the origin made the opening, Unix milliseconds (the exit's replay window).
    pub sent_at: u64,
    /// On a proxy chain, the nodes of the earlier legs (the first origin first), so the
    /// hop limit and loop checks cover the whole chain.
    pub before: Vec<String>,
}

/// A decoded header of either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyHeader {
    /// Version 1: everything in the clear.
    Plain(FlowHeader),
    /// Version 2: sealed to the exit.
    Sealed(SealedHeader),
}

impl AnyHeader {
    /// The flow id.
    pub fn flow_id(&self) -> u64 {
        match self {
            Self::Plain(h) => h.flow_id,
            Self::Sealed(h) => h.flow_id,
        }
    }

    /// Nodes still to go after the receiver.
    pub fn hops(&self) -> &[String] {
        match self {
            Self::Plain(h) => &h.hops,
            Self::Sealed(h) => &h.hops,
        }
    }

    /// Nodes passed after the origin.
    pub fn passed(&self) -> &[String] {
        match self {
            Self::Plain(h) => &h.passed,
            Self::Sealed(h) => &h.passed,
        }
    }

    /// The header the next node gets when `me` forwards this flow to `hops[0]`.
    pub fn onward(&self, me: &str) -> AnyHeader {
        match self {
            Self::Plain(h) => Self::Plain(h.onward(me)),
            Self::Sealed(h) => {
                let mut passed = h.passed.clone();
                passed.push(me.to_string());
                Self::Sealed(SealedHeader {
                    passed,
                    hops: h.hops.iter().skip(1).cloned().collect(),
                    ..h.clone()
                })
            }
        }
    }

    /// Encodes the header with its prefix (and the version its kind has).
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        match self {
            Self::Plain(h) => encode_header(h),
            Self::Sealed(h) => encode_sealed_header(h),
        }
    }
}

/// Encodes a sealed header with its prefix.
pub fn encode_sealed_header(header: &SealedHeader) -> Result<Vec<u8>, HeaderError> {
    let body = bincode::encode_to_vec(header, bincode_config())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    prefixed(SEALED_VERSION, &body)
}

/// Encodes an inner header (the plaintext sealed in the opening).
pub fn encode_inner(inner: &InnerHeader) -> Vec<u8> {
    // Bounded fields (ids, a target), so encoding cannot fail.
    bincode::encode_to_vec(inner, bincode_config()).unwrap_or_default()
}

/// Decodes and checks an inner header, once the opening is authenticated: the whole path
/// (earlier chain legs, origin, passed, the receiver, hops) must keep the hop limit and
/// name no node twice.
pub fn decode_inner(
    bytes: &[u8],
    outer: &SealedHeader,
    limits: &HeaderLimits,
) -> Result<InnerHeader, HeaderError> {
    let (inner, used): (InnerHeader, usize) = bincode::decode_from_slice(bytes, bincode_config())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(HeaderError::Malformed(format!("{} trailing bytes", bytes.len() - used)));
    }
    let plain = FlowHeader {
        flow_id: outer.flow_id,
        origin: inner.origin.clone(),
        passed: inner.before.iter().chain(&outer.passed).cloned().collect(),
        hops: outer.hops.clone(),
        destination: inner.destination.clone(),
        subflow: inner.subflow,
    };
    // `before` ends with the earlier legs' origins and relays; checked as if passed.
    check_header(&plain, limits)?;
    Ok(inner)
}

/// Decodes a header of either version from the start of `buf`.
pub fn decode_any_header(buf: &[u8], limits: &HeaderLimits) -> Result<Decoded<AnyHeader>, HeaderError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf[..magic_seen] != MAGIC[..magic_seen] {
        return Err(HeaderError::BadMagic);
    }
    if buf.len() > 4 && buf[4] == SEALED_VERSION {
        return decode_sealed_header(buf, limits).map(|d| match d {
            Decoded::Complete(h, n) => Decoded::Complete(AnyHeader::Sealed(h), n),
            Decoded::NeedMore(n) => Decoded::NeedMore(n),
        });
    }
    decode_header(buf, limits).map(|d| match d {
        Decoded::Complete(h, n) => Decoded::Complete(AnyHeader::Plain(h), n),
        Decoded::NeedMore(n) => Decoded::NeedMore(n),
    })
}

fn decode_sealed_header(buf: &[u8], limits: &HeaderLimits) -> Result<Decoded<SealedHeader>, HeaderError> {
    let (header, total) = match decode_body::<SealedHeader>(buf, limits)? {
        Decoded::Complete(h, total) => (h, total),
        Decoded::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
    };
    // The origin is not named: it counts as one node, and only the exit can check it.
    let nodes = 1 + header.passed.len() + 1 + header.hops.len();
    if nodes > limits.max_hops {
        return Err(HeaderError::HopLimit(nodes, limits.max_hops));
    }
    let path: Vec<&String> = header.passed.iter().chain(&header.hops).collect();
    for (i, node) in path.iter().enumerate() {
        if !is_valid_node_id(node) {
            return Err(HeaderError::InvalidField("node id on the path"));
        }
        if path[..i].contains(node) {
            return Err(HeaderError::Loop((*node).clone()));
        }
    }
    Ok(Decoded::Complete(header, total))
}

fn prefixed(version: u8, body: &[u8]) -> Result<Vec<u8>, HeaderError> {
    let len = u16::try_from(body.len()).map_err(|_| HeaderError::TooLong(body.len(), u16::MAX as usize))?;
    let mut out = Vec::with_capacity(HEADER_PREFIX_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Limits applied while decoding a header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    /// Largest header in bytes, prefix included.
    pub max_header_bytes: usize,
    /// Largest number of nodes on a path (origin and exit included).
    pub max_hops: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self { max_header_bytes: 4096, max_hops: 16 }
    }
}

/// Why a header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The stream does not start with [`MAGIC`].
    #[error("bad magic: not a flow stream")]
    BadMagic,
    /// A version this node does not speak.
    #[error("unsupported header version {0}")]
    UnsupportedVersion(u8),
    /// The declared length exceeds the limit.
    #[error("header of {0} bytes exceeds the limit of {1}")]
    TooLong(usize, usize),
    /// The body is not a valid bincode [`FlowHeader`], or has trailing bytes.
    #[error("malformed header body: {0}")]
    Malformed(String),
    /// More nodes on the path than allowed.
    #[error("path of {0} nodes exceeds the hop limit of {1}")]
    HopLimit(usize, usize),
    /// A node id appears twice on the path.
    #[error("node `{0}` appears twice on the path")]
    Loop(String),
    /// A node id or target is not well formed.
    #[error("invalid {0}")]
    InvalidField(&'static str),
}

/// Outcome of feeding bytes to [`decode_header`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// At least this many bytes in total are needed before decoding can finish.
    NeedMore(usize),
    /// A complete value, and how many bytes of the input it took.
    Complete(T, usize),
}

/// Encodes a header with its prefix.
pub fn encode_header(header: &FlowHeader) -> Result<Vec<u8>, HeaderError> {
    let body = bincode::encode_to_vec(header, bincode_config())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    prefixed(VERSION, &body)
}

/// Decodes a header from the start of `buf`, which may hold only part of it.
pub fn decode_header(buf: &[u8], limits: &HeaderLimits) -> Result<Decoded<FlowHeader>, HeaderError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf[..magic_seen] != MAGIC[..magic_seen] {
        return Err(HeaderError::BadMagic);
    }
    if buf.len() < HEADER_PREFIX_LEN {
        return Ok(Decoded::NeedMore(HEADER_PREFIX_LEN));
    }
    if buf[4] != VERSION {
        return Err(HeaderError::UnsupportedVersion(buf[4]));
    }
    let (header, total) = match decode_body::<FlowHeader>(buf, limits)? {
        Decoded::Complete(h, total) => (h, total),
        Decoded::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
    };
    check_header(&header, limits)?;
    Ok(Decoded::Complete(header, total))
}

/// The body behind a header prefix (magic and version already checked): its declared
/// length checked against the limit before a byte of it is read, then exactly that many
/// bytes of bincode.
fn decode_body<T: Decode<()>>(buf: &[u8], limits: &HeaderLimits) -> Result<Decoded<T>, HeaderError> {
    if buf.len() < HEADER_PREFIX_LEN {
        return Ok(Decoded::NeedMore(HEADER_PREFIX_LEN));
    }
    let total = HEADER_PREFIX_LEN + usize::from(u16::from_be_bytes([buf[5], buf[6]]));
    if total > limits.max_header_bytes {
        return Err(HeaderError::TooLong(total, limits.max_header_bytes));
    }
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total));
    }
    let body = &buf[HEADER_PREFIX_LEN..total];
    let (value, used): (T, usize) = bincode::decode_from_slice(body, bincode_config())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(HeaderError::Malformed(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(Decoded::Complete(value, total))
}

fn check_header(h: &FlowHeader, limits: &HeaderLimits) -> Result<(), HeaderError> {
    // The whole path: origin, passed, (the receiver), hops.
    let nodes = 1 + h.passed.len() + 1 + h.hops.len();
    if nodes > limits.max_hops {
        return Err(HeaderError::HopLimit(nodes, limits.max_hops));
    }
    if !is_valid_node_id(&h.origin) {
        return Err(HeaderError::InvalidField("origin node id"));
    }
    let rest: Vec<&String> = h.passed.iter().chain(&h.hops).collect();
    for (i, node) in rest.iter().enumerate() {
        if !is_valid_node_id(node) {
            return Err(HeaderError::InvalidField("node id on the path"));
        }
        if **node == h.origin || rest[..i].contains(node) {
            return Err(HeaderError::Loop((*node).clone()));
        }
    }
    match &h.destination {
        Destination::Target(t) | Destination::UdpTarget(t) if !is_valid_target(t) => {
            return Err(HeaderError::InvalidField("target"));
        }
        Destination::RouteByPort(0) => return Err(HeaderError::InvalidField("port")),
        _ => {}
    }
    if h.subflow.is_some() && matches!(h.destination, Destination::RouteByPort(_)) {
        // A chain node routes by its own table; it cannot keep one flow's subflows together.
        return Err(HeaderError::InvalidField("subflow on a proxy-chain flow"));
    }
    if h.subflow.is_some() && matches!(h.destination, Destination::UdpTarget(_)) {
        // A UDP association is one stream: datagrams are not striped over paths.
        return Err(HeaderError::InvalidField("subflow on a UDP flow"));
    }
    if h.subflow.is_some() && h.destination == Destination::Echo {
        // A probe measures one path: it is never striped.
        return Err(HeaderError::InvalidField("subflow on a probe flow"));
    }
    Ok(())
}

impl FlowHeader {
    /// Whether `node` is already on this flow's path (origin, passed or still to go).
    pub fn names(&self, node: &str) -> bool {
        self.origin == node || self.passed.iter().chain(&self.hops).any(|n| n == node)
    }

    /// The header the next node gets when `me` forwards this flow to `hops[0]`.
    pub fn onward(&self, me: &str) -> FlowHeader {
        let mut passed = self.passed.clone();
        passed.push(me.to_string());
        FlowHeader { passed, hops: self.hops.iter().skip(1).cloned().collect(), ..self.clone() }
    }
}

/// Whether `id` is a valid node id: 1 to 63 of `[a-z0-9-]`, not starting or ending with
/// `-` (node ids are DNS names in certificates).
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && !id.starts_with('-')
        && !id.ends_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `target` looks like `host:port` or `[v6]:port` with printable host
/// characters and a port from 1 to 65535.
pub fn is_valid_target(target: &str) -> bool {
    if target.len() > MAX_TARGET_LEN {
        return false;
    }
    let Some((host, port)) = target.rsplit_once(':') else { return false };
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p != 0);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    port_ok
        && !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// Why a flow was refused; carried in the reply and counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum RefuseReason {
    /// No route or no connection to the next hop.
    NoRoute,
    /// The node does not relay flows.
    RelayNotAllowed,
    /// The exit policy does not allow the target.
    Policy,
    /// The target could not be resolved or connected.
    TargetUnreachable,
    /// The path is longer than the hop limit.
    HopLimit,
    /// A node appears twice on the path.
    Loop,
    /// Too many flows or streams.
    Overloaded,
    /// The stream header was malformed, too long or too slow.
    BadHeader,
    /// The node is shutting down.
    Draining,
}

impl RefuseReason {
    /// Every reason, in counter order.
    pub const ALL: [RefuseReason; 9] = [
        Self::NoRoute,
        Self::RelayNotAllowed,
        Self::Policy,
        Self::TargetUnreachable,
        Self::HopLimit,
        Self::Loop,
        Self::Overloaded,
        Self::BadHeader,
        Self::Draining,
    ];

    /// Stable snake_case name, used in logs, stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::RelayNotAllowed => "relay_not_allowed",
            Self::Policy => "policy",
            Self::TargetUnreachable => "target_unreachable",
            Self::HopLimit => "hop_limit",
            Self::Loop => "loop",
            Self::Overloaded => "overloaded",
            Self::BadHeader => "bad_header",
            Self::Draining => "draining",
        }
    }

    /// Position in [`RefuseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<&HeaderError> for RefuseReason {
    fn from(e: &HeaderError) -> Self {
        match e {
            HeaderError::HopLimit(..) => Self::HopLimit,
            HeaderError::Loop(_) => Self::Loop,
            _ => Self::BadHeader,
        }
    }
}

/// The far end's answer to a header.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Reply {
    /// The exit connected to the target; bytes flow.
    Opened,
    /// The flow was refused.
    Refused {
        /// Why.
        reason: RefuseReason,
        /// The node that refused.
        hop: String,
        /// Human-readable detail for the log.
        detail: String,
    },
    /// A sealed flow's reply from its exit: the handshake's second message, whose
    /// plaintext is an encoded [`Reply`] (`Opened` or `Refused`).
    Sealed(Vec<u8>),
}

impl Reply {
    /// A refusal from `hop`, with the detail capped to a loggable length.
    pub fn refused(reason: RefuseReason, hop: &str, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_LEN {
            let mut cut = MAX_DETAIL_LEN;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Self::Refused { reason, hop: hop.to_string(), detail }
    }
}

/// Encodes a reply with its prefix.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    // A reply is a few hundred bytes at most (capped detail, node id), so it always fits.
    let body = bincode::encode_to_vec(reply, bincode_config()).unwrap_or_default();
    let len = u16::try_from(body.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(REPLY_PREFIX_LEN + body.len());
    out.push(VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out
}

/// Decodes a reply from the start of `buf`.
pub fn decode_reply(buf: &[u8]) -> Result<Decoded<Reply>, HeaderError> {
    if buf.is_empty() {
        return Ok(Decoded::NeedMore(REPLY_PREFIX_LEN));
    }
    if buf[0] != VERSION {
        return Err(HeaderError::UnsupportedVersion(buf[0]));
    }
    if buf.len() < REPLY_PREFIX_LEN {
        return Ok(Decoded::NeedMore(REPLY_PREFIX_LEN));
    }
    let total = REPLY_PREFIX_LEN + usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    if total - REPLY_PREFIX_LEN > MAX_REPLY_BODY {
        return Err(HeaderError::TooLong(total, MAX_REPLY_BODY + REPLY_PREFIX_LEN));
    }
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total));
    }
    let body = &buf[REPLY_PREFIX_LEN..total];
    let (reply, used): (Reply, usize) = bincode::decode_from_slice(body, bincode_config())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(HeaderError::Malformed(format!("{} trailing bytes in reply", body.len() - used)));
    }
    Ok(Decoded::Complete(reply, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FlowHeader {
        FlowHeader {
            flow_id: 42,
            origin: "a".into(),
            passed: vec![],
            hops: vec!["b".into(), "c".into()],
            destination: Destination::Target("10.0.0.1:80".into()),
            subflow: None,
        }
    }

    #[test]
    fn header_round_trips_with_trailing_application_bytes() {
        let mut bytes = encode_header(&header()).expect("encode");
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let d = decode_header(&bytes, &HeaderLimits::default()).expect("decode");
        assert_eq!(d, Decoded::Complete(header(), len));
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let bytes = encode_header(&header()).expect("encode");
        for cut in 0..bytes.len() {
            match decode_header(&bytes[..cut], &HeaderLimits::default()) {
                Ok(Decoded::NeedMore(n)) => assert!(n > cut && n <= bytes.len()),
                other => panic!("prefix {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_rejected_from_the_first_byte() {
        assert_eq!(decode_header(b"G", &HeaderLimits::default()), Err(HeaderError::BadMagic));
        assert_eq!(decode_header(b"GET / HTTP/1.1", &HeaderLimits::default()), Err(HeaderError::BadMagic));
    }

    #[test]
    fn oversized_declared_length_is_rejected_before_the_body_arrives() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        bytes.extend_from_slice(&5000u16.to_be_bytes());
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::TooLong(5007, 4096)));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = encode_header(&header()).expect("encode");
        bytes[4] = 9;
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::UnsupportedVersion(9)));
    }

    #[test]
    fn header_that_names_a_node_twice_is_a_loop() {
        let mut h = header();
        h.hops = vec!["b".into(), "c".into(), "b".into()];
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::Loop("b".into())));
        h.hops = vec!["a".into()];
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::Loop("a".into())));
    }

    #[test]
    fn seventeen_node_path_exceeds_the_hop_limit() {
        let mut h = header();
        h.hops = (0..15).map(|i| format!("n{i}")).collect();
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::HopLimit(17, 16)));
    }

    #[test]
    fn forged_vector_length_inside_the_body_does_not_allocate() {
        let mut body = bincode::encode_to_vec(7u64, bincode_config()).expect("encode");
        body.push(1);
        body.push(b'a');
        body.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::Malformed(_))));
    }

    #[test]
    fn invalid_fields_are_rejected() {
        for (origin, target) in [("A", "h:1"), ("a\n", "h:1"), ("a", "h:0"), ("a", "h"), ("a", "h\u{1b}:80")]
        {
            let mut h = header();
            h.origin = origin.into();
            h.destination = Destination::Target(target.into());
            let bytes = encode_header(&h).expect("encode");
            assert!(matches!(
                decode_header(&bytes, &HeaderLimits::default()),
                Err(HeaderError::InvalidField(_))
            ));
        }
    }

    #[test]
    fn the_example_in_docs_wire_md_encodes_byte_for_byte() {
        let mut expected = vec![0x50, 0x52, 0x58, 0x59, 0x01, 0x00, 0x17, 0x2a, 0x01, b'a', 0x00];
        expected.extend_from_slice(&[0x02, 0x01, b'b', 0x01, b'c', 0x00, 0x0b]);
        expected.extend_from_slice(b"10.0.0.1:80");
        expected.push(0x00);
        assert_eq!(encode_header(&header()).expect("encode"), expected);
        let mut chain = header();
        chain.destination = Destination::RouteByPort(8080);
        let body = bincode::encode_to_vec(&chain.destination, bincode_config()).expect("encode");
        assert_eq!(body, vec![0x01, 0xfb, 0x1f, 0x90]);
    }

    #[test]
    fn a_node_already_passed_cannot_come_again() {
        let mut h = header();
        h.passed = vec!["x".into()];
        h.hops = vec!["y".into(), "x".into()];
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(decode_header(&bytes, &HeaderLimits::default()), Err(HeaderError::Loop("x".into())));
    }

    #[test]
    fn forwarding_moves_the_sender_from_hops_to_passed() {
        let mut h = header();
        h.hops = vec!["c".into(), "d".into()];
        let onward = h.onward("b");
        assert_eq!((onward.passed, onward.hops), (vec!["b".to_string()], vec!["d".to_string()]));
        assert!(h.names("a") && h.names("c") && !h.names("b"));
    }

    #[test]
    fn a_proxy_chain_header_names_a_port_and_never_port_zero() {
        let mut h = header();
        h.destination = Destination::RouteByPort(8080);
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(
            decode_header(&bytes, &HeaderLimits::default()),
            Ok(Decoded::Complete(h.clone(), bytes.len()))
        );
        h.destination = Destination::RouteByPort(0);
        let bytes = encode_header(&h).expect("encode");
        assert!(matches!(
            decode_header(&bytes, &HeaderLimits::default()),
            Err(HeaderError::InvalidField("port"))
        ));
    }

    #[test]
    fn an_echo_header_round_trips_is_variant_3_and_takes_no_subflow() {
        let mut h = header();
        h.destination = Destination::Echo;
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(
            decode_header(&bytes, &HeaderLimits::default()),
            Ok(Decoded::Complete(h.clone(), bytes.len()))
        );
        assert_eq!(bincode::encode_to_vec(Destination::Echo, bincode_config()).expect("encode"), [3]);
        h.subflow = Some(Subflow { index: 0, token: 7 });
        let bytes = encode_header(&h).expect("encode");
        assert!(matches!(
            decode_header(&bytes, &HeaderLimits::default()),
            Err(HeaderError::InvalidField("subflow on a probe flow"))
        ));
    }

    #[test]
    fn a_udp_header_round_trips_and_keeps_the_other_encodings() {
        let mut h = header();
        h.destination = Destination::UdpTarget("127.0.0.1:53".into());
        let bytes = encode_header(&h).expect("encode");
        assert_eq!(
            decode_header(&bytes, &HeaderLimits::default()),
            Ok(Decoded::Complete(h.clone(), bytes.len()))
        );
        // Appended last: `Target` is still variant 0 and `RouteByPort` variant 1.
        let target =
            bincode::encode_to_vec(Destination::Target("a:1".into()), bincode_config()).expect("encode");
        let udp =
            bincode::encode_to_vec(Destination::UdpTarget("a:1".into()), bincode_config()).expect("encode");
        assert_eq!(target[0], 0);
        assert_eq!(udp[0], 2);
        assert_eq!(target[1..], udp[1..]);
        h.destination = Destination::UdpTarget("no-port".into());
        let bytes = encode_header(&h).expect("encode");
        assert!(matches!(
            decode_header(&bytes, &HeaderLimits::default()),
            Err(HeaderError::InvalidField("target"))
        ));
        h.destination = Destination::UdpTarget("127.0.0.1:53".into());
        h.subflow = Some(Subflow { index: 0, token: 7 });
        let bytes = encode_header(&h).expect("encode");
        assert!(matches!(
            decode_header(&bytes, &HeaderLimits::default()),
            Err(HeaderError::InvalidField("subflow on a UDP flow"))
        ));
    }

    #[test]
    fn reply_round_trips_and_caps_detail() {
        let r = Reply::refused(RefuseReason::Policy, "b", "x".repeat(5000));
        let bytes = encode_reply(&r);
        match decode_reply(&bytes).expect("decode") {
            Decoded::Complete(Reply::Refused { reason, hop, detail }, n) => {
                assert_eq!(
                    (reason, hop.as_str(), detail.len(), n),
                    (RefuseReason::Policy, "b", 512, bytes.len())
                );
            }
            other => panic!("{other:?}"),
        }
        let ok = encode_reply(&Reply::Opened);
        assert_eq!(decode_reply(&ok[..1]), Ok(Decoded::NeedMore(REPLY_PREFIX_LEN)));
        assert_eq!(decode_reply(&ok), Ok(Decoded::Complete(Reply::Opened, ok.len())));
    }

    #[test]
    fn refuse_reason_indices_match_the_table() {
        for (i, r) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
