//! TLS for peer links: TLS 1.3 only, both sides authenticated against the mesh CA.
//!
//! A node's certificate names its node id as a DNS subject alternative name. The dialing
//! side asks for the expected peer id as the server name, so webpki refuses a server whose
//! certificate names another node; the accepting side reads the client's node id from the
//! verified certificate and checks it against its configured peers. Revoked certificates
//! ([`Revocations`]) are refused inside the handshake, both ways.

pub mod card;
mod pinned;
mod revocation;

pub use revocation::{Revocations, RevokedSet};

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// ALPN protocol of peer links (and of a node's session with the scheduler).
pub const ALPN_PEER: &[u8] = b"proxy-peer/1";
/// ALPN protocol of the TLS layer of a link over TCP (QUIC packets framed inside, see
/// `node::link::stream_socket`).
pub const ALPN_TCP_LINK: &[u8] = b"proxy-tcp-link/1";
/// ALPN protocol of a join request: a machine without a certificate asking for one.
pub const ALPN_JOIN: &[u8] = b"proxy-join/1";

/// Errors loading certificates or building TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificates or key.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the TLS config.
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
    /// This node's own certificate does not name exactly its configured node id.
    #[error("certificate {path} names {found:?}, but this node is `{expected}`")]
    WrongIdentity {
        /// The certificate file.
        path: String,
        /// The configured node id.
        expected: String,
        /// The node ids found in the certificate.
        found: Vec<String>,
    },
}

/// A node's TLS identity: its chain, key and the mesh CA, and the revocations its
/// verifiers apply.
#[derive(Debug)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    ca_certs: Vec<CertificateDer<'static>>,
    revocations: Arc<Revocations>,
}

impl TlsIdentity {
    /// Loads PEM files and checks that the certificate names `node_id`.
    pub fn load(cert: &Path, key: &Path, ca: &Path, node_id: &str) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        crate::key_file::warn_if_exposed(key);
        let key_bytes = read(key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem_err(key, e))?;
        let ca_certs = read_certs(ca)?;
        check_names(&chain, node_id, &cert.display().to_string())?;
        Self::assemble(chain, key, ca_certs)
    }

    fn assemble(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca_certs: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &ca_certs {
            roots.add(c.clone())?;
        }
        Ok(Self { chain, key, roots: Arc::new(roots), ca_certs, revocations: Arc::default() })
    }

    /// The same identity with a renewed certificate (same key, same CA, same revocations);
    /// the certificate must name `node_id`.
    pub fn renewed(&self, cert_pem: &str, node_id: &str) -> Result<Self, TlsError> {
        let chain = certs_from_pem(cert_pem.as_bytes(), "(renewed certificate)")?;
        check_names(&chain, node_id, "(renewed certificate)")?;
        let mut next = Self::assemble(chain, self.key.clone_key(), self.ca_certs.clone())?;
        next.revocations = self.revocations.clone();
        Ok(next)
    }

    /// Applies `revocations` in this identity's verifiers (shared: later changes apply to
    /// every handshake after them).
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// The revocations this identity's verifiers apply.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// A certificate request for `node_id` signed with this identity's key (renewal keeps
    /// the key: it never leaves the machine).
    pub fn certificate_request(&self, node_id: &str) -> Result<Vec<u8>, crate::pki::PkiError> {
        let key = rcgen::KeyPair::try_from(&self.key)?;
        crate::pki::certificate_request_with(node_id, &key)
    }

    /// This identity's certificate's validity, Unix seconds (not before, not after).
    pub fn validity(&self) -> Option<(i64, i64)> {
        crate::pki::validity_der(self.chain.first()?.as_ref())
    }

    /// The (first) mesh CA certificate's validity, Unix seconds (not before, not after).
    pub fn ca_validity(&self) -> Option<(i64, i64)> {
        crate::pki::validity_der(self.ca_certs.first()?.as_ref())
    }

    /// This identity's own certificate (DER), first in its chain.
    pub fn certificate(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// Builds the identity from PEM text (tests and embedding).
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, TlsError> {
        let chain = certs_from_pem(cert_pem.as_bytes(), "(certificate)")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem_err(Path::new("(key)"), e))?;
        Self::assemble(chain, key, certs_from_pem(ca_pem.as_bytes(), "(ca)")?)
    }

    /// Bytes derived from the private key, for keys that must stay stable across restarts
    /// (never sent anywhere).
    pub fn key_fingerprint_input(&self) -> Vec<u8> {
        self.key.secret_der().to_vec()
    }

    /// The QUIC server crypto: requires a client certificate from the mesh CA.
    pub fn quic_server_config(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        self.server_config(false)
    }

    /// The scheduler's QUIC server crypto: like [`Self::quic_server_config`], but a client
    /// without a certificate may connect to ask to join ([`ALPN_JOIN`]), and the chain
    /// carries the CA so the joining machine can check it against the token's fingerprint.
    pub fn quic_scheduler_server_config(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        self.server_config(true)
    }

    fn server_config(&self, accept_joins: bool) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let tls = self.rustls_server_config(accept_joins)?;
        tls.try_into().map_err(|e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Quic(e.to_string()))
    }

    /// The server side of the TLS layer of links over TCP: the same verification as QUIC
    /// links (mesh CA, revocations, TLS 1.3, no resumption).
    pub fn tcp_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut tls = self.rustls_server_config(false)?;
        tls.alpn_protocols = vec![ALPN_TCP_LINK.to_vec()];
        Ok(Arc::new(tls))
    }

    /// The client side of the TLS layer of links over TCP, like [`Self::quic_client_config`].
    pub fn tcp_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut tls = self.rustls_client_config()?;
        tls.alpn_protocols = vec![ALPN_TCP_LINK.to_vec()];
        Ok(Arc::new(tls))
    }

    fn rustls_server_config(&self, accept_joins: bool) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let mut builder = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone());
        if accept_joins {
            builder = builder.allow_unauthenticated();
        }
        let verifier = Arc::new(revocation::RevocationCheckingClientVerifier {
            inner: builder.build()?,
            revocations: self.revocations.clone(),
        });
        let mut chain = self.chain.clone();
        if accept_joins {
            chain.extend(self.ca_certs.iter().cloned());
        }
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, self.key.clone_key())?;
        // No resumption: a resumed session restores the client's certificate without
        // verifying it again, which would let a revoked node back in.
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        tls.alpn_protocols = vec![ALPN_PEER.to_vec()];
        if accept_joins {
            tls.alpn_protocols.push(ALPN_JOIN.to_vec());
        }
        Ok(tls)
    }

    /// The QUIC client crypto: presents this node's certificate, trusts only the mesh CA.
    pub fn quic_client_config(&self) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
        let tls = self.rustls_client_config()?;
        tls.try_into().map_err(|e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Quic(e.to_string()))
    }

    fn rustls_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let verifier = Arc::new(revocation::RevocationCheckingServerVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?,
            revocations: self.revocations.clone(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN_PEER.to_vec()];
        Ok(tls)
    }
}

/// The QUIC client crypto of a join request: no client certificate; the scheduler is
/// trusted only through the CA whose SHA-256 is `ca_fingerprint` (from the token).
pub fn join_client_config(
    ca_fingerprint: [u8; 32],
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let provider = provider();
    let verifier =
        Arc::new(pinned::PinnedCaVerifier { fingerprint: ca_fingerprint, provider: provider.clone() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    tls.try_into().map_err(|e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Quic(e.to_string()))
}

/// Peers accept a certificate only when it names exactly one node, so a node's own
/// certificate must name exactly its id.
fn check_names(chain: &[CertificateDer<'_>], node_id: &str, path: &str) -> Result<(), TlsError> {
    let found = chain.first().map(node_ids_in_cert).unwrap_or_default();
    if found != [node_id] {
        return Err(TlsError::WrongIdentity { path: path.to_string(), expected: node_id.to_string(), found });
    }
    Ok(())
}

/// The ALPN protocol a connection agreed on.
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?;
    data.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node ids named by a DER certificate (its DNS subject alternative names that are
/// valid node ids). Empty when the certificate cannot be parsed.
pub fn node_ids_in_cert(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) if crate::core::wire::is_valid_node_id(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// The node id of the peer on an established connection, from its verified certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let ids = node_ids_in_cert(chain.first()?);
    // A node certificate names exactly one node; anything else is not a node identity.
    if ids.len() == 1 { ids.into_iter().next() } else { None }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::Pem { path: path.display().to_string(), message: e.to_string() })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(&read(path)?, &path.display().to_string())
}

fn certs_from_pem(pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(Path::new(name), e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: name.to_string(), message: "no certificate in file".into() });
    }
    Ok(certs)
}

fn pem_err(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem { path: path.display().to_string(), message: e.to_string() }
}
