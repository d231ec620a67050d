//! TLS for peer links: TLS 1.3 only, both sides authenticated against the mesh CA.
//!
//! A node's certificate names its node id as a DNS subject alternative name. The dialing
//! side asks for the expected peer id as the server name, so webpki refuses a server whose
//! certificate names another node; the accepting side reads the client's node id from the
//! verified certificate and checks it against its configured peers.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// ALPN protocol of peer links.
pub const ALPN_PEER: &[u8] = b"proxy-peer/1";

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

/// A node's TLS identity: its chain, key and the mesh CA.
#[derive(Debug)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl TlsIdentity {
    /// Loads PEM files and checks that the certificate names `node_id`.
    pub fn load(cert: &Path, key: &Path, ca: &Path, node_id: &str) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        let key_bytes = read(key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem_err(key, e))?;
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c)?;
        }
        let found = chain.first().map(node_ids_in_cert).unwrap_or_default();
        // Peers accept a certificate only when it names exactly one node, so require the same.
        if found != [node_id] {
            return Err(TlsError::WrongIdentity {
                path: cert.display().to_string(),
                expected: node_id.to_string(),
                found,
            });
        }
        Ok(Self { chain, key, roots: Arc::new(roots) })
    }

    /// Builds the identity from PEM text (tests and embedding).
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, TlsError> {
        let chain = certs_from_pem(cert_pem.as_bytes(), "(certificate)")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem_err(Path::new("(key)"), e))?;
        let mut roots = RootCertStore::empty();
        for c in certs_from_pem(ca_pem.as_bytes(), "(ca)")? {
            roots.add(c)?;
        }
        Ok(Self { chain, key, roots: Arc::new(roots) })
    }

    /// Bytes derived from the private key, for keys that must stay stable across restarts
    /// (never sent anywhere).
    pub fn key_fingerprint_input(&self) -> Vec<u8> {
        self.key.secret_der().to_vec()
    }

    /// The QUIC server crypto: requires a client certificate from the mesh CA.
    pub fn quic_server_config(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone()).build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN_PEER.to_vec()];
        tls.try_into().map_err(|e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Quic(e.to_string()))
    }

    /// The QUIC client crypto: presents this node's certificate, trusts only the mesh CA.
    pub fn quic_client_config(&self) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN_PEER.to_vec()];
        tls.try_into().map_err(|e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Quic(e.to_string()))
    }
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
