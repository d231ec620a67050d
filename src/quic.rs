//! QUIC endpoints for every part of the mesh that speaks it (node links, the scheduler,
//! the link emulator's sockets): the UDP socket setup, an endpoint built from a TLS
//! identity, and reading one framed message from a stream (the join exchange). What a
//! node's links negotiate (windows, controller) is the node's business: see
//! `node::link::endpoint`.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{EndpointConfig, TransportConfig};
use socket2::{Domain, Protocol, Socket, Type};

use crate::tls::TlsIdentity;

/// Binds the UDP socket with large buffers, so bursts are not dropped by the kernel's
/// default 208 KiB.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A stateless-reset key derived from the node's private key, stable across restarts: a
/// restarted node can then tell peers at once that their old connection is gone, instead
/// of them waiting out the idle timeout.
fn reset_key(identity: &TlsIdentity) -> ring::hmac::Key {
    let seed = ring::digest::digest(&ring::digest::SHA256, &identity.key_fingerprint_input());
    let mut material = b"proxy stateless reset v1".to_vec();
    material.extend_from_slice(seed.as_ref());
    let derived = ring::digest::digest(&ring::digest::SHA256, &material);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

/// Builds the endpoint: server and client TLS from `identity`, transport from the config.
pub fn build(
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
    socket: std::net::UdpSocket,
) -> anyhow::Result<quinn::Endpoint> {
    let server = identity.quic_server_config()?;
    build_with(identity, transport, socket, server)
}

/// Builds the scheduler's endpoint: like [`build`], but it also takes join requests from
/// clients without a certificate.
pub fn build_scheduler(
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
    socket: std::net::UdpSocket,
) -> anyhow::Result<quinn::Endpoint> {
    let server = identity.quic_scheduler_server_config()?;
    build_with(identity, transport, socket, server)
}

fn build_with(
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
    socket: std::net::UdpSocket,
    server_crypto: quinn::crypto::rustls::QuicServerConfig,
) -> anyhow::Result<quinn::Endpoint> {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let endpoint_config = EndpointConfig::new(Arc::new(reset_key(identity)));
    let mut endpoint =
        quinn::Endpoint::new(endpoint_config, Some(server), socket, Arc::new(quinn::TokioRuntime))?;
    endpoint.set_default_client_config(client_config(identity, transport)?);
    Ok(endpoint)
}

/// The client side of `identity`, with the peer-link transport.
pub fn client_config(
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut client = quinn::ClientConfig::new(Arc::new(identity.quic_client_config()?));
    client.transport_config(transport);
    Ok(client)
}

/// Puts a new identity (a renewed certificate) in force for the connections the endpoint
/// accepts from now on, and returns the client config to dial with; established
/// connections, and the flows on them, are left as they are.
pub fn apply_identity(
    endpoint: &quinn::Endpoint,
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
) -> anyhow::Result<quinn::ClientConfig> {
    let client = client_config(identity, transport.clone())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(identity.quic_server_config()?));
    server.transport_config(transport);
    endpoint.set_server_config(Some(server));
    Ok(client)
}

/// Reads exactly one frame (at most `max` bytes of body) from a stream that carries
/// nothing else.
pub async fn read_frame<T: bincode::Decode<()>>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> anyhow::Result<T> {
    read_frame_after(recv, max, Vec::new()).await
}

/// [`read_frame`] for a caller that has read the frame's first bytes already (`buf`), for
/// instance to put a deadline on the first byte alone.
pub async fn read_frame_after<T: bincode::Decode<()>>(
    recv: &mut quinn::RecvStream,
    max: usize,
    mut buf: Vec<u8>,
) -> anyhow::Result<T> {
    loop {
        match crate::core::control::decode::<T>(&buf, max) {
            Ok(Some((message, _))) => return Ok(message),
            Ok(None) => {}
            Err(crate::core::control::FrameError::Malformed { message, .. }) => {
                anyhow::bail!("malformed: {message}")
            }
            Err(e) => anyhow::bail!("{e}"),
        }
        match recv.read_chunk(max + crate::core::control::FRAME_PREFIX_LEN - buf.len().min(max), true).await?
        {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => anyhow::bail!("the stream ended before a whole message"),
        }
    }
}
