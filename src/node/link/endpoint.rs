//! The node's one QUIC endpoint: one UDP socket that both accepts and dials peer links,
//! with the transport its links negotiate. Sockets and endpoints are built by
//! [`crate::quic`].

use quinn::{TransportConfig, VarInt};

use crate::config::{Limits, MeshConfig};

/// Unidirectional streams a peer may have open at once: they carry only seal cards
/// ([`crate::node::link::cards`]), one batch each.
const CARD_STREAMS: u32 = 8;

/// QUIC packet size on links over TCP. TCP carries any size whole, so packets are as
/// large as a TLS record: far fewer packets (encryption calls, acknowledgements) per byte
/// than on UDP.
pub(crate) const TCP_LINK_PACKET: u16 = 16_384;

/// The transport of links over TCP: that of QUIC links, with [`TCP_LINK_PACKET`]-sized
/// packets from the first one and no path MTU discovery (there is no path MTU inside TCP).
pub(crate) fn tcp_transport_config(mesh: &MeshConfig, limits: &Limits) -> TransportConfig {
    let mut t = transport_config(mesh, limits);
    t.initial_mtu(TCP_LINK_PACKET).min_mtu(TCP_LINK_PACKET).mtu_discovery_config(None);
    t
}

/// The endpoint config of one link over TCP: it must take [`TCP_LINK_PACKET`]-sized
/// packets. Stateless resets do not apply (the TCP connection's end says the link ended).
pub(crate) fn tcp_endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    // Never fails: the value is within QUIC's limits.
    let _ = config.max_udp_payload_size(TCP_LINK_PACKET);
    config
}

/// QUIC settings of peer links, derived from the config. Windows are set explicitly: quinn's
/// default connection window is unlimited, which would let one peer pin unbounded memory.
pub fn transport_config(mesh: &MeshConfig, limits: &Limits) -> TransportConfig {
    let mut t = TransportConfig::default();
    let window = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_peer))
        .max_concurrent_uni_streams(VarInt::from_u32(CARD_STREAMS))
        .stream_receive_window(window(mesh.stream_window))
        .receive_window(window(crate::node::link::credit::start_window(
            mesh.connection_window,
            mesh.stream_window,
        )))
        .send_window(mesh.send_window)
        .keep_alive_interval(Some(mesh.keepalive_interval))
        .max_idle_timeout(mesh.link_idle_timeout.try_into().ok())
        .congestion_controller_factory(crate::node::link::congestion::factory(mesh.congestion));
    t
}
