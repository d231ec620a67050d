//! The node's TLS identity in force: its certificate (renewed in place), the configs it
//! dials and accepts links with (QUIC, and TLS on TCP), and the revocations every
//! handshake checks. A renewal changes only new handshakes: established links, and the
//! flows on them, go on.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quinn::TransportConfig;

use crate::tls::{Revocations, TlsIdentity};

/// Everything built from one identity, replaced together.
struct InForce {
    identity: Arc<TlsIdentity>,
    /// QUIC on UDP, dialing (the endpoint holds the accepting side).
    quic_client: quinn::ClientConfig,
    /// QUIC on UDP to the scheduler.
    scheduler_client: quinn::ClientConfig,
    /// The TLS layer of links over TCP.
    tcp: TcpLinkConfigs,
}

/// What a link over TCP is set up with: the outer TLS, and the QUIC inside it (with the
/// transport of links over TCP, see `node::link::endpoint`).
#[derive(Clone)]
pub(crate) struct TcpLinkConfigs {
    /// Outer TLS, dialing.
    pub tls_client: Arc<rustls::ClientConfig>,
    /// Outer TLS, accepting.
    pub tls_server: Arc<rustls::ServerConfig>,
    /// QUIC inside, dialing.
    pub quic_client: quinn::ClientConfig,
    /// QUIC inside, accepting.
    pub quic_server: quinn::ServerConfig,
}

/// The identity and the configs built from it.
pub(crate) struct NodeTls {
    current: RwLock<InForce>,
    transport: Arc<TransportConfig>,
    tcp_transport: Arc<TransportConfig>,
}

impl NodeTls {
    /// The identity the endpoint was built with; `transport` is QUIC links',
    /// `tcp_transport` links over TCP.
    pub(crate) fn new(
        identity: TlsIdentity,
        transport: Arc<TransportConfig>,
        tcp_transport: Arc<TransportConfig>,
    ) -> anyhow::Result<Self> {
        let current = in_force(identity, &transport, &tcp_transport)?;
        Ok(Self { current: RwLock::new(current), transport, tcp_transport })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, InForce> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity in force.
    pub(crate) fn identity(&self) -> Arc<TlsIdentity> {
        self.read().identity.clone()
    }

    /// The revocations every handshake checks.
    pub(crate) fn revocations(&self) -> Arc<Revocations> {
        self.identity().revocations().clone()
    }

    /// The configs links over TCP are set up with now.
    pub(crate) fn tcp(&self) -> TcpLinkConfigs {
        self.read().tcp.clone()
    }

    /// Dials `addr`, expecting a certificate for `server_name`, with the identity in force.
    pub(crate) fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connecting, quinn::ConnectError> {
        let client = self.read().quic_client.clone();
        endpoint.connect_with(client, addr, server_name)
    }

    /// Dials the scheduler at `addr` with the identity in force: a session that notices
    /// a scheduler gone silent within [`SCHEDULER_IDLE`], so the node moves on to the
    /// next scheduler it lists well before a link's idle timeout would tell it.
    pub(crate) fn connect_scheduler(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
    ) -> Result<quinn::Connecting, quinn::ConnectError> {
        let client = self.read().scheduler_client.clone();
        endpoint.connect_with(client, addr, crate::core::control::SCHEDULER_ID)
    }

    /// Puts a renewed certificate (same key) in force for every handshake from now on.
    pub(crate) fn renew(
        &self,
        endpoint: &quinn::Endpoint,
        cert_pem: &str,
        node_id: &str,
    ) -> anyhow::Result<()> {
        let next = self.identity().renewed(cert_pem, node_id)?;
        crate::quic::apply_identity(endpoint, &next, self.transport.clone())?;
        let next = in_force(next, &self.transport, &self.tcp_transport)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

/// A scheduler session that hears nothing for this long is over (a killed scheduler
/// sends no close): keepalives go every sixth of it, so only a burst of lost packets
/// ends a live session, and the node then simply connects again.
pub(crate) const SCHEDULER_IDLE: std::time::Duration = std::time::Duration::from_secs(3);

/// The scheduler session's transport: small (control messages only), quick to notice a
/// silent scheduler.
fn scheduler_transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(SCHEDULER_IDLE / 6)).max_idle_timeout(SCHEDULER_IDLE.try_into().ok());
    Arc::new(transport)
}

fn in_force(
    identity: TlsIdentity,
    transport: &Arc<TransportConfig>,
    tcp_transport: &Arc<TransportConfig>,
) -> anyhow::Result<InForce> {
    let quic_client = crate::quic::client_config(&identity, transport.clone())?;
    let scheduler_client = crate::quic::client_config(&identity, scheduler_transport())?;
    let mut quic_server = quinn::ServerConfig::with_crypto(Arc::new(identity.quic_server_config()?));
    quic_server.transport_config(tcp_transport.clone());
    let tcp = TcpLinkConfigs {
        tls_client: identity.tcp_client_config()?,
        tls_server: identity.tcp_server_config()?,
        quic_client: crate::quic::client_config(&identity, tcp_transport.clone())?,
        quic_server,
    };
    Ok(InForce { identity: Arc::new(identity), quic_client, scheduler_client, tcp })
}
