//! The node's TLS identity in force: its certificate (renewed in place), the client config
//! it dials with, and the revocations every handshake checks. A renewal changes only new
//! handshakes: established links, and the flows on them, go on.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quinn::TransportConfig;

use crate::tls::{Revocations, TlsIdentity};

/// The identity and the config to dial with, replaced together.
pub(crate) struct NodeTls {
    current: RwLock<(Arc<TlsIdentity>, quinn::ClientConfig)>,
    transport: Arc<TransportConfig>,
}

impl NodeTls {
    /// The identity the endpoint was built with.
    pub(crate) fn new(identity: TlsIdentity, transport: Arc<TransportConfig>) -> anyhow::Result<Self> {
        let client = crate::quic::client_config(&identity, transport.clone())?;
        Ok(Self { current: RwLock::new((Arc::new(identity), client)), transport })
    }

    /// The identity in force.
    pub(crate) fn identity(&self) -> Arc<TlsIdentity> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The revocations every handshake checks.
    pub(crate) fn revocations(&self) -> Arc<Revocations> {
        self.identity().revocations().clone()
    }

    /// Dials `addr`, expecting a certificate for `server_name`, with the identity in force.
    pub(crate) fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connecting, quinn::ConnectError> {
        let client = self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone();
        endpoint.connect_with(client, addr, server_name)
    }

    /// Puts a renewed certificate (same key) in force for every handshake from now on.
    pub(crate) fn renew(
        &self,
        endpoint: &quinn::Endpoint,
        cert_pem: &str,
        node_id: &str,
    ) -> anyhow::Result<()> {
        let next = self.identity().renewed(cert_pem, node_id)?;
        let client = crate::quic::apply_identity(endpoint, &next, self.transport.clone())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(next), client);
        Ok(())
    }
}
