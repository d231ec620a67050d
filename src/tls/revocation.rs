//! Certificates the mesh no longer accepts: node ids removed by `proxy mesh remove`, and
//! the fingerprints of certificates issued to them. Checked inside the TLS handshake in
//! both directions, so a removed node can neither dial nor be dialled, whatever the
//! config says about it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// What is refused: whole node ids, single certificates by SHA-256 of their DER, and a
/// node id's certificates that start before a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedSet {
    /// Node ids refused whatever certificate they present.
    pub node_ids: BTreeSet<String>,
    /// Certificates refused, by SHA-256 of their DER.
    pub certs: BTreeSet<[u8; 32]>,
    /// Per node id, a time (Unix seconds): its certificates whose validity starts at or
    /// before it are refused (those from before its last removal).
    pub issued_before: BTreeMap<String, i64>,
}

impl From<&crate::core::control::RevocationList> for RevokedSet {
    fn from(list: &crate::core::control::RevocationList) -> Self {
        Self {
            node_ids: list.node_ids.iter().cloned().collect(),
            certs: list.cert_fingerprints.iter().copied().collect(),
            issued_before: list.issued_before.iter().cloned().collect(),
        }
    }
}

impl RevokedSet {
    /// The set as the scheduler protocol sends it.
    pub fn to_list(&self) -> crate::core::control::RevocationList {
        crate::core::control::RevocationList {
            node_ids: self.node_ids.iter().cloned().collect(),
            cert_fingerprints: self.certs.iter().copied().collect(),
            issued_before: self.issued_before.iter().map(|(id, t)| (id.clone(), *t)).collect(),
        }
    }

    /// Whether a peer presenting `cert` is refused.
    pub fn refuses(&self, cert: &CertificateDer<'_>) -> bool {
        if self.node_ids.is_empty() && self.certs.is_empty() && self.issued_before.is_empty() {
            return false;
        }
        if self.certs.contains(&crate::core::join_token::sha256(cert.as_ref())) {
            return true;
        }
        let ids = super::node_ids_in_cert(cert);
        if ids.iter().any(|id| self.node_ids.contains(id)) {
            return true;
        }
        let cutoff = ids.iter().filter_map(|id| self.issued_before.get(id)).max();
        let not_before = crate::pki::validity_der(cert.as_ref()).map(|(start, _)| start);
        cutoff.is_some_and(|cutoff| not_before.is_none_or(|start| start <= *cutoff))
    }
}

/// The revocations in force, shared by the TLS verifiers and whoever updates them.
#[derive(Debug, Default)]
pub struct Revocations {
    set: RwLock<RevokedSet>,
}

impl Revocations {
    /// Starts with `set`.
    pub fn new(set: RevokedSet) -> Arc<Self> {
        Arc::new(Self { set: RwLock::new(set) })
    }

    /// Replaces the set; returns whether it changed.
    pub fn replace(&self, set: RevokedSet) -> bool {
        let mut current = self.set.write().unwrap_or_else(|p| p.into_inner());
        if *current == set {
            return false;
        }
        *current = set;
        true
    }

    /// A copy of the set in force.
    pub fn snapshot(&self) -> RevokedSet {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a peer presenting `cert` is refused.
    pub fn refuses(&self, cert: &CertificateDer<'_>) -> bool {
        self.set.read().unwrap_or_else(|p| p.into_inner()).refuses(cert)
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        if self.refuses(cert) { Err(Error::InvalidCertificate(CertificateError::Revoked)) } else { Ok(()) }
    }
}

/// A client verifier that refuses revoked certificates, then defers to `inner`.
pub(super) struct RevocationCheckingClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) revocations: Arc<Revocations>,
}

impl fmt::Debug for RevocationCheckingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationCheckingClientVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for RevocationCheckingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.revocations.check(end_entity)?;
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server verifier that refuses revoked certificates, then defers to `inner`.
pub(super) struct RevocationCheckingServerVerifier {
    pub(super) inner: Arc<dyn ServerCertVerifier>,
    pub(super) revocations: Arc<Revocations>,
}

impl fmt::Debug for RevocationCheckingServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationCheckingServerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for RevocationCheckingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.revocations.check(end_entity)?;
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
    }

    #[test]
    fn a_removal_time_refuses_every_earlier_certificate_of_the_id_but_not_a_later_one() {
        let ca = crate::pki::MeshCa::generate("test").expect("ca");
        let by_hand = ca.issue_node_cert("h", 365).expect("cert");
        let other = ca.issue_node_cert("k", 365).expect("cert");
        let removed_at = crate::clock::unix_now() as i64;
        let set =
            RevokedSet { issued_before: [("h".to_string(), removed_at)].into(), ..RevokedSet::default() };
        assert!(set.refuses(&der(&by_hand.cert_pem)), "made before the removal");
        assert!(!set.refuses(&der(&other.cert_pem)), "another node is not touched");
        let key = crate::pki::new_node_key().expect("key");
        let csr = crate::pki::certificate_request("h", &key).expect("csr");
        let later = ca
            .sign_request(&csr, "h", std::time::Duration::from_secs(3600), Some(removed_at + 1))
            .expect("sign");
        assert!(!set.refuses(&der(&later)), "a certificate from the next join is accepted");
        let whole = RevokedSet { node_ids: ["h".to_string()].into(), ..RevokedSet::default() };
        assert!(whole.refuses(&der(&later)), "while the id itself is removed, nothing of it is accepted");
    }
}
