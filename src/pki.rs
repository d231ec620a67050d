//! The mesh's certificates: a CA, and one certificate per node that names the node id as
//! its DNS subject alternative name, valid for both TLS client and server use, because
//! every node both dials and accepts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// How long a CA made by `mesh init` is valid.
const CA_LIFETIME_DAYS: i64 = 3650;
/// How long a node certificate made by `mesh init` is valid.
pub const NODE_CERT_LIFETIME_DAYS: i64 = 365;

/// Errors making or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file already exists and would be overwritten.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A certificate request is not one, or its signature does not verify.
    #[error("bad certificate request: {0}")]
    BadRequest(String),
    /// A group name cannot be put in a certificate.
    #[error("invalid group `{0}`: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidGroup(String),
    /// The node id cannot be put in a certificate.
    #[error("invalid node id `{0}`: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidNodeId(String),
}

/// A mesh CA: its certificate and signing key.
pub struct MeshCa {
    cert: Certificate,
    key: KeyPair,
}

/// A PEM certificate and its PEM private key.
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl MeshCa {
    /// Makes a new CA with a fresh key.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_LIFETIME_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// Loads a CA from its PEM certificate and key (as `mesh init` wrote them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Re-signing the parsed parameters gives an issuer with the same name and key
        // identifier, which is all signing needs.
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// Signs a certificate request (DER) for `node_id`, valid for `lifetime`, starting no
    /// earlier than `not_before_floor` (Unix seconds) when given. Only the request's public
    /// key is used (its signature proves the requester holds the key); the names, usages
    /// and validity are this CA's to choose.
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        node_id: &str,
        lifetime: std::time::Duration,
        not_before_floor: Option<i64>,
    ) -> Result<String, PkiError> {
        self.sign_request_with_groups(csr_der, node_id, &[], lifetime, not_before_floor)
    }

    /// [`Self::sign_request`], naming the node's `groups` in the certificate (see
    /// [`groups_in_cert`]).
    pub fn sign_request_with_groups(
        &self,
        csr_der: &[u8],
        node_id: &str,
        groups: &[String],
        lifetime: std::time::Duration,
        not_before_floor: Option<i64>,
    ) -> Result<String, PkiError> {
        let mut request = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        request.params = node_params(node_id, lifetime, not_before_floor)?;
        add_groups(&mut request.params, groups)?;
        Ok(request.signed_by(&self.cert, &self.key)?.pem())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `node_id`, valid for `days`, with a fresh key.
    pub fn issue_node_cert(&self, node_id: &str, days: i64) -> Result<IssuedCert, PkiError> {
        self.issue_node_cert_with_groups(node_id, &[], days)
    }

    /// [`Self::issue_node_cert`], naming the node's `groups` in the certificate.
    pub fn issue_node_cert_with_groups(
        &self,
        node_id: &str,
        groups: &[String],
        days: i64,
    ) -> Result<IssuedCert, PkiError> {
        let mut params =
            node_params(node_id, std::time::Duration::from_secs(days.max(0) as u64 * 86_400), None)?;
        add_groups(&mut params, groups)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A node certificate's parameters: the id as CN and the only DNS name, client and server
/// use, a random serial, valid for `lifetime` from a little before now (clock skew), but
/// not from before `not_before_floor`.
fn node_params(
    node_id: &str,
    lifetime: std::time::Duration,
    not_before_floor: Option<i64>,
) -> Result<CertificateParams, PkiError> {
    if !crate::core::wire::is_valid_node_id(node_id) {
        return Err(PkiError::InvalidNodeId(node_id.to_string()));
    }
    let mut params = CertificateParams::new(vec![node_id.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    rand::fill(&mut serial);
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    // Backdated for clock skew, but by little against the lifetime, so the validity span
    // (which renewal is timed by) stays close to it.
    let backdate = (lifetime / 10).min(std::time::Duration::from_secs(300));
    let mut not_before = now - Duration::try_from(backdate).unwrap_or(Duration::minutes(5));
    if let Some(floor) = not_before_floor.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()) {
        not_before = not_before.max(floor);
    }
    params.not_before = not_before;
    params.not_after = not_before + Duration::try_from(lifetime).unwrap_or(Duration::days(CA_LIFETIME_DAYS));
    Ok(params)
}

/// The certificate extension that names a node's groups (for `exit_policy` rules with
/// `from: [group:NAME]`): an OID under the UUID arc (2.25, ITU-T X.667), so it needs no
/// registration and cannot collide; its value is a DER `SEQUENCE OF UTF8String`. The CA
/// puts it in; a node cannot add groups to its own certificate.
const GROUPS_OID: &[u64] = &[2, 25, 2_265_194_483_611_787_303];

/// A group name: like a node id (1-63 of a-z, 0-9, '-').
pub fn is_valid_group(name: &str) -> bool {
    crate::core::wire::is_valid_node_id(name)
}

fn add_groups(params: &mut CertificateParams, groups: &[String]) -> Result<(), PkiError> {
    if groups.is_empty() {
        return Ok(());
    }
    if let Some(bad) = groups.iter().find(|g| !is_valid_group(g)) {
        return Err(PkiError::InvalidGroup(bad.clone()));
    }
    let mut body = Vec::new();
    for g in groups {
        der_push(&mut body, 0x0c, g.as_bytes());
    }
    let mut value = Vec::new();
    der_push(&mut value, 0x30, &body);
    params.custom_extensions.push(CustomExtension::from_oid_content(GROUPS_OID, value));
    Ok(())
}

/// Appends a DER TLV.
fn der_push(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// Reads one DER TLV from the front of `input`: its tag, content and the rest.
fn der_take(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The groups a DER certificate names (empty when it names none, or cannot be read).
pub fn groups_in_cert(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| e.oid.iter().is_some_and(|arcs| arcs.eq(GROUPS_OID.iter().copied())))
    else {
        return Vec::new();
    };
    let Some((0x30, mut body, _)) = der_take(ext.value) else { return Vec::new() };
    let mut groups = Vec::new();
    while let Some((tag, content, rest)) = der_take(body) {
        if tag == 0x0c
            && let Ok(g) = std::str::from_utf8(content)
            && is_valid_group(g)
        {
            groups.push(g.to_string());
        }
        body = rest;
    }
    groups
}

/// A new private key for a node, PEM (PKCS#8). It is made where it is used and never sent.
pub fn new_node_key() -> Result<String, PkiError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// A certificate request (DER) for `node_id`, signed with the PEM key `key_pem`.
pub fn certificate_request(node_id: &str, key_pem: &str) -> Result<Vec<u8>, PkiError> {
    certificate_request_with(node_id, &KeyPair::from_pem(key_pem)?)
}

/// A certificate request (DER) for `node_id`, signed with `key`.
pub fn certificate_request_with(node_id: &str, key: &KeyPair) -> Result<Vec<u8>, PkiError> {
    let mut params = CertificateParams::new(vec![node_id.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// The validity of a PEM certificate, as Unix seconds (not before, not after).
pub fn validity(cert_pem: &str) -> Option<(i64, i64)> {
    validity_der(&first_cert_der(cert_pem)?)
}

/// The validity of a DER certificate, as Unix seconds (not before, not after).
pub fn validity_der(der: &[u8]) -> Option<(i64, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = parsed.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// SHA-256 of a PEM certificate's DER (how join tokens and revocations name it).
pub fn fingerprint(cert_pem: &str) -> Option<[u8; 32]> {
    first_cert_der(cert_pem).map(|der| crate::core::join_token::sha256(&der))
}

fn first_cert_der(cert_pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(cert_pem.as_bytes()).next()?.ok().map(|c| c.as_ref().to_vec())
}

/// The scheduler config `mesh init` writes next to the certificates.
const SCHEDULER_YAML: &str = "\
# The scheduler of this mesh: `proxy scheduler -c scheduler.yaml`.
# Nodes point `scheduler.address` at this machine's address and `bind` port.
bind: \"0.0.0.0:7900\"
cert: scheduler.crt
key: scheduler.key
ca: ca.crt
objective: latency          # latency | loss | bandwidth | balanced
recompute_interval: \"1s\"
hysteresis: { margin: 0.1, hold: \"5s\" }
instruction_ttl: \"5m\"
max_paths: 3
node_dead_after: \"15s\"
pins: []
log_level: info             # debug | info | warn | error | fatal
# log_file: scheduler.log   # default: standard error; rotated at log_max_bytes, log_keep kept
log_format: text            # text | json
admin_addr: \"127.0.0.1:9900\"  # admin API: nodes, links, routes, /metrics (`proxy status --scheduler`)
# admin_token: ...          # 16-256 visible ASCII; required when admin_addr is not loopback
ca_key: ca.key              # signs `proxy mesh join` and renewals; without it no one can join
data_dir: state             # join tokens (hashed), members, removed nodes
node_cert_lifetime: \"90d\"   # certificates it signs renew themselves after two thirds
";

/// What `mesh init` wrote.
#[derive(Debug)]
pub struct WrittenFiles {
    /// Every file, in the order written.
    pub files: Vec<PathBuf>,
}

/// Makes a mesh in `dir`: `ca.crt`, `ca.key`, the scheduler's `scheduler.crt`,
/// `scheduler.key` and an example `scheduler.yaml`, and `<node>.crt`, `<node>.key` per node.
/// Keys are written mode 0600. Refuses to overwrite an existing CA.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("proxy-doc-init-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # struct Cleanup(std::path::PathBuf);
/// # impl Drop for Cleanup { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _cleanup = Cleanup(dir.clone());
/// let written = proxy::pki::init_mesh(&dir, &["a".to_string(), "b".to_string()])?;
/// assert!(written.files.contains(&dir.join("b.key")));
/// // The CA is never overwritten.
/// assert!(proxy::pki::init_mesh(&dir, &[]).is_err());
/// # Ok(())
/// # }
/// ```
pub fn init_mesh(dir: &Path, nodes: &[String]) -> Result<WrittenFiles, PkiError> {
    let reserved = crate::core::control::SCHEDULER_ID;
    if let Some(bad) = nodes.iter().find(|n| !crate::core::wire::is_valid_node_id(n) || *n == reserved) {
        return Err(PkiError::InvalidNodeId(bad.clone()));
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
    let ca_path = dir.join("ca.crt");
    let mut planned = vec![
        ca_path.clone(),
        dir.join("ca.key"),
        dir.join("scheduler.crt"),
        dir.join("scheduler.key"),
        dir.join("scheduler.yaml"),
    ];
    for node in nodes {
        planned.push(dir.join(format!("{node}.crt")));
        planned.push(dir.join(format!("{node}.key")));
    }
    // Nothing is written unless nothing would be overwritten.
    if let Some(existing) = planned.into_iter().find(|p| p.exists()) {
        return Err(PkiError::Exists(existing));
    }
    let ca = MeshCa::generate("proxy mesh CA")?;
    let mut files = Vec::new();
    write_file(&ca_path, &ca.cert_pem(), false, &mut files)?;
    write_file(&dir.join("ca.key"), &ca.key_pem(), true, &mut files)?;
    let scheduler = ca.issue_node_cert(reserved, NODE_CERT_LIFETIME_DAYS)?;
    write_file(&dir.join("scheduler.crt"), &scheduler.cert_pem, false, &mut files)?;
    write_file(&dir.join("scheduler.key"), &scheduler.key_pem, true, &mut files)?;
    write_file(&dir.join("scheduler.yaml"), SCHEDULER_YAML, false, &mut files)?;
    for node in nodes {
        let issued = ca.issue_node_cert(node, NODE_CERT_LIFETIME_DAYS)?;
        write_file(&dir.join(format!("{node}.crt")), &issued.cert_pem, false, &mut files)?;
        write_file(&dir.join(format!("{node}.key")), &issued.key_pem, true, &mut files)?;
    }
    Ok(WrittenFiles { files })
}

/// Writes a new file (never an existing one); a secret is created mode 0600 before any
/// byte is written, so it is never readable by others, not even briefly.
pub fn write_file(path: &Path, contents: &str, secret: bool, log: &mut Vec<PathBuf>) -> Result<(), PkiError> {
    let err = |source| PkiError::Write { path: path.to_path_buf(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    log.push(path.to_path_buf());
    Ok(())
}
