//! `proxy mesh join`, the joining machine's side: make a key here, send a certificate
//! request with the token's secret to the scheduler (authenticated by the CA fingerprint
//! the token carries, before anything is sent), and write the key, the certificate, the CA
//! and a working node config. Nothing is written unless the scheduler accepted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::core::control;
use crate::core::control::SCHEDULER_ID;
use crate::core::enroll::{JoinReply, JoinRequest, MAX_JOIN_FRAME};
use crate::core::join_token::JoinToken;

/// The files a join writes, in `dir`.
pub const KEY_FILE: &str = "node.key";
/// The node's certificate.
pub const CERT_FILE: &str = "node.crt";
/// The mesh CA.
pub const CA_FILE: &str = "ca.crt";
/// The node config.
pub const CONFIG_FILE: &str = "config.yaml";
/// The node's `mesh.data_dir` in the config a join writes (in `--state-dir` if given).
const DATA_DIR: &str = "data";

/// How long the whole exchange with the scheduler may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What `mesh join` needs.
#[derive(Clone)]
pub struct JoinOptions {
    /// The scheduler's QUIC address, `host:port`; several (comma-separated) for a mesh
    /// with several schedulers, tried in turn.
    pub scheduler: String,
    /// The join token, as printed by `proxy mesh token create`.
    pub token: String,
    /// The node id to ask for.
    pub node_id: String,
    /// Its region label.
    pub region: String,
    /// Where to write the key, certificates and config.
    pub dir: PathBuf,
    /// Where to put what the node itself rewrites while it runs, its certificate (renewed
    /// in place) and `mesh.data_dir`, so `dir` can stay read-only (e.g. `/etc/proxy`
    /// with this `/var/lib/proxy`); `None`: in `dir`.
    pub state_dir: Option<PathBuf>,
    /// `mesh.bind` of the written config.
    pub bind: SocketAddr,
    /// `mesh.advertise` of the written config, if given.
    pub advertise: Option<String>,
    /// `common.admin_addr` of the written config.
    pub admin_addr: SocketAddr,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token: it may enroll more machines.
        f.debug_struct("JoinOptions")
            .field("scheduler", &self.scheduler)
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("dir", &self.dir)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The command line is wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The scheduler refused, with its reason (exit code 1).
    #[error("the scheduler refused to enroll this node: {0}")]
    Refused(String),
    /// Anything else: network, TLS, files (exit code 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What a join wrote.
#[derive(Debug)]
pub struct Joined {
    /// The node config, ready for `proxy run -c`.
    pub config: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

/// Enrolls this machine; see the module docs.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let dir = std::env::temp_dir().join(format!("proxy-doc-join-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # struct Cleanup(std::path::PathBuf);
/// # impl Drop for Cleanup { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _cleanup = Cleanup(dir.clone());
/// proxy::pki::init_mesh(&dir, &[])?;
/// // A scheduler that holds the CA key signs joiners' certificates.
/// let yaml = "bind: \"127.0.0.1:0\"\nadmin_addr: \"127.0.0.1:0\"\ncert: scheduler.crt\n\
///             key: scheduler.key\nca: ca.crt\nca_key: ca.key\n";
/// let config = proxy::config::scheduler::parse(yaml, &dir).map_err(|e| format!("{e:?}"))?;
/// let token = proxy::scheduler::enrollment::create_token(&config, None, Vec::new(), Duration::from_secs(600), 1)?;
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let scheduler = proxy::Scheduler::start(config).await?;
///     let options = proxy::join::JoinOptions {
///         scheduler: scheduler.local_addr()?.to_string(),
///         token: token.encode(),
///         node_id: "edge-1".into(),
///         region: "eu".into(),
///         dir: dir.join("edge-1"),
///         state_dir: None,
///         bind: "127.0.0.1:0".parse()?,
///         advertise: None,
///         admin_addr: "127.0.0.1:0".parse()?,
///     };
///     let joined = proxy::join::join(&options).await?;
///     // A key made here, a certificate signed there, and a config ready to run.
///     let config = proxy::config::load(&joined.config).map_err(|e| anyhow::anyhow!("{e}"))?;
///     assert_eq!(config.common.node_id, "edge-1");
///     Ok::<_, anyhow::Error>(())
/// })?;
/// # Ok(())
/// # }
/// ```
pub async fn join(options: &JoinOptions) -> Result<Joined, JoinError> {
    let token = JoinToken::parse(&options.token).map_err(|e| JoinError::Usage(format!("--token: {e}")))?;
    check_names(options)?;
    let state_dir = options.state_dir.as_ref().unwrap_or(&options.dir);
    let targets = [KEY_FILE, CA_FILE, CONFIG_FILE].map(|f| options.dir.join(f));
    let targets = targets.into_iter().chain([state_dir.join(CERT_FILE)]).collect::<Vec<_>>();
    if let Some(existing) = targets.iter().find(|p| p.exists()) {
        return Err(JoinError::Usage(format!(
            "{} already exists: this directory holds a node already; use another --dir (or --state-dir)",
            existing.display()
        )));
    }
    let key_pem = crate::pki::new_node_key().map_err(anyhow::Error::from)?;
    let csr = crate::pki::certificate_request(&options.node_id, &key_pem).map_err(anyhow::Error::from)?;
    let request = JoinRequest {
        secret: token.secret,
        node_id: options.node_id.clone(),
        region: options.region.clone(),
        csr,
    };
    let reply = ask(&options.scheduler, token.ca_fingerprint, &request).await?;
    let (cert_pem, ca_pem) = match reply {
        JoinReply::Accepted { cert_pem, ca_pem } => (cert_pem, ca_pem),
        JoinReply::Refused { reason } => return Err(JoinError::Refused(reason)),
    };
    // The reply must be what was asked for, from the CA the token named.
    if crate::pki::fingerprint(&ca_pem) != Some(token.ca_fingerprint) {
        return Err(anyhow::anyhow!("the scheduler sent a CA other than the token's").into());
    }
    let identity =
        crate::tls::TlsIdentity::from_pem(&cert_pem, &key_pem, &ca_pem).map_err(anyhow::Error::from)?;
    // Building a server config checks that the certificate is for this key.
    identity
        .quic_server_config()
        .map_err(|e| anyhow::anyhow!("the certificate sent does not fit this key: {e}"))?;
    let names = identity.certificate().map(crate::tls::node_ids_in_cert).unwrap_or_default();
    if names != [options.node_id.as_str()] {
        return Err(anyhow::anyhow!("the certificate sent names {names:?}, not `{}`", options.node_id).into());
    }
    write_files(options, &key_pem, &cert_pem, &ca_pem).map_err(JoinError::Failed)
}

fn check_names(options: &JoinOptions) -> Result<(), JoinError> {
    if !crate::core::wire::is_valid_node_id(&options.node_id) || options.node_id == SCHEDULER_ID {
        return Err(JoinError::Usage(format!(
            "--node-id: `{}` is not a usable node id: use 1-63 of a-z, 0-9 and '-', not `{SCHEDULER_ID}`",
            crate::logging::log_escape(&options.node_id)
        )));
    }
    if !crate::core::enroll::is_valid_region(&options.region) {
        return Err(JoinError::Usage("--region: use 1-63 of letters, digits, '-', '_' and '.'".into()));
    }
    Ok(())
}

/// How long a join keeps trying the schedulers listed (each exchange has its own
/// [`JOIN_TIMEOUT`]).
const JOIN_BUDGET: Duration = Duration::from_secs(60);

/// A scheduler turned the join away as busy: the joiner waits a moment and tries again.
#[derive(Debug, thiserror::Error)]
#[error("busy with other joins")]
struct Busy;

/// Sends `request` to the schedulers in `list` (`host:port`, comma-separated) in turn until
/// one answers. A scheduler that dies mid-join may have enrolled the node already: the
/// same request sent again to another scheduler is recognised and answered with a
/// certificate, without using the token a second time, so retrying is always safe.
async fn ask(list: &str, ca_fingerprint: [u8; 32], request: &JoinRequest) -> Result<JoinReply, JoinError> {
    let schedulers: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if schedulers.is_empty() {
        return Err(JoinError::Usage("--scheduler: give host:port (several: comma-separated)".into()));
    }
    let give_up = tokio::time::Instant::now() + JOIN_BUDGET;
    let mut last = HashMap::new();
    for (attempt, scheduler) in schedulers.iter().cycle().enumerate() {
        let failure =
            match tokio::time::timeout(JOIN_TIMEOUT, exchange(scheduler, ca_fingerprint, request)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) if e.is::<Busy>() => "busy with other joins".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("did not answer within {JOIN_TIMEOUT:?}"),
            };
        last.insert(*scheduler, failure);
        if tokio::time::Instant::now() >= give_up {
            break;
        }
        // A pause once every scheduler was tried, jittered so joiners turned away
        // together do not come back together.
        if (attempt + 1) % schedulers.len() == 0 {
            tokio::time::sleep(Duration::from_millis(rand::random_range(200..600))).await;
        }
    }
    let failures: Vec<String> =
        schedulers.iter().filter_map(|s| Some(format!("{s}: {}", last.get(s)?))).collect();
    Err(anyhow::anyhow!("no scheduler enrolled this node within {JOIN_BUDGET:?}: {}", failures.join("; "))
        .into())
}

/// A join connection that hears nothing for this long is over: a scheduler killed in the
/// middle of a join sends no close, and the joiner moves on to the next one listed.
const JOIN_IDLE: Duration = Duration::from_secs(3);

async fn exchange(
    scheduler: &str,
    ca_fingerprint: [u8; 32],
    request: &JoinRequest,
) -> anyhow::Result<JoinReply> {
    let addr = tokio::net::lookup_host(scheduler)
        .await
        .map_err(|e| anyhow::anyhow!("--scheduler {scheduler}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--scheduler {scheduler}: resolves to no address"))?;
    let local: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let mut endpoint = quinn::Endpoint::client(local)?;
    let crypto = crate::tls::join_client_config(ca_fingerprint)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(JOIN_IDLE / 6)).max_idle_timeout(JOIN_IDLE.try_into().ok());
    client.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(client);
    let conn = endpoint.connect(addr, SCHEDULER_ID)?.await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the scheduler at {addr} ({e}); check --scheduler and that the token is this mesh's"
        )
    })?;
    let asked = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_chunk(Bytes::from(control::encode(request)?)).await?;
        send.finish()?;
        crate::quic::read_frame::<JoinReply>(&mut recv, MAX_JOIN_FRAME).await
    };
    let reply = match asked.await {
        Ok(reply) => reply,
        // The scheduler turned the connection away before reading the request.
        Err(e) => match refused_by_close(&conn) {
            Some(_) if closed_with(&conn, control::close_codes::BUSY) => return Err(Busy.into()),
            Some(reason) => JoinReply::Refused { reason },
            None => return Err(e),
        },
    };
    conn.close(quinn::VarInt::from_u32(control::close_codes::DONE), b"done");
    endpoint.wait_idle().await;
    Ok(reply)
}

/// Whether the scheduler closed `conn` with `code`.
fn closed_with(conn: &quinn::Connection, code: u32) -> bool {
    matches!(conn.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(code))
}

/// The reason the scheduler gave when it closed a join connection without a reply (busy,
/// held off for failures, or no request in time), escaped for the terminal.
fn refused_by_close(conn: &quinn::Connection) -> Option<String> {
    use control::close_codes::{BUSY, HELD_OFF, TIMED_OUT};
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close)
            if [BUSY, HELD_OFF, TIMED_OUT].map(u64::from).contains(&close.error_code.into_inner()) =>
        {
            Some(crate::logging::log_escape(&String::from_utf8_lossy(&close.reason)))
        }
        _ => None,
    }
}

fn write_files(options: &JoinOptions, key_pem: &str, cert_pem: &str, ca_pem: &str) -> anyhow::Result<Joined> {
    let dir = &options.dir;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--dir {}: {e}", dir.display()))?;
    // The config names state files by absolute path: relative ones are read from the
    // config's own directory.
    let state = match &options.state_dir {
        Some(state) => Some(
            std::fs::create_dir_all(state)
                .and_then(|()| std::fs::canonicalize(state))
                .map_err(|e| anyhow::anyhow!("--state-dir {}: {e}", state.display()))?,
        ),
        None => None,
    };
    let mut files = Vec::new();
    let config = node_config(options, state.as_deref());
    crate::pki::write_file(&dir.join(KEY_FILE), key_pem, true, &mut files)?;
    let cert_file = state.as_deref().unwrap_or(dir).join(CERT_FILE);
    crate::pki::write_file(&cert_file, cert_pem, false, &mut files)?;
    crate::pki::write_file(&dir.join(CA_FILE), ca_pem, false, &mut files)?;
    crate::pki::write_file(&dir.join(CONFIG_FILE), &config, false, &mut files)?;
    Ok(Joined { config: dir.join(CONFIG_FILE), files })
}

/// The node config a join writes: the identity and the scheduler, no listeners, routes or
/// exits yet (the operator adds those), so it starts as a relay the scheduler can use.
/// With `state`, the certificate and data directory are there (absolute paths).
fn node_config(options: &JoinOptions, state: Option<&Path>) -> String {
    let (cert, data_dir) = match state {
        Some(state) => (
            yaml_string(&state.join(CERT_FILE).to_string_lossy()),
            yaml_string(&state.join(DATA_DIR).to_string_lossy()),
        ),
        None => (CERT_FILE.to_string(), DATA_DIR.to_string()),
    };
    let advertise = match &options.advertise {
        Some(a) => format!("  advertise: {}\n", yaml_string(a)),
        None => {
            "  # advertise: \"203.0.113.7:7800\"  # default: the address the scheduler sees, on bind's port\n"
                .to_string()
        }
    };
    format!(
        "# Written by `proxy mesh join`. Run this node with `proxy run -c {config}`.
# Its certificate renews itself through the scheduler; node.key never leaves this machine.
# Add listeners and routes to start flows here, and exit_policy.allow to let flows exit
# here; paths are relative to this file. `proxy check -c {config}` validates a change.

common:
  node_id: {id}
  region: {region}
  log_level: info
  admin_addr: \"{admin}\"

mesh:
  bind: \"{bind}\"
{advertise}  cert: {cert}
  key: {KEY_FILE}
  ca: {CA_FILE}
  data_dir: {data_dir}

scheduler:
  {scheduler}

# listeners:
#   - name: web
#     bind: \"127.0.0.1:8080\"
# routes:
#   - name: web
#     match: {{ listener: web }}
#     target: \"10.0.0.5:80\"
#     exit: other-node

exit_policy:
  allow: []                      # deny all: this node dials nothing for the mesh
",
        config = CONFIG_FILE,
        id = yaml_string(&options.node_id),
        region = yaml_string(&options.region),
        admin = options.admin_addr,
        bind = options.bind,
        scheduler = scheduler_keys(&options.scheduler),
    )
}

/// The `scheduler` keys for `--scheduler`: `address` for one, `addresses` for several.
fn scheduler_keys(list: &str) -> String {
    let all: Vec<String> =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(yaml_string).collect();
    match all.as_slice() {
        [one] => format!("address: {one}"),
        _ => format!("addresses: [{}]", all.join(", ")),
    }
}

/// `text` as a double-quoted YAML scalar: a JSON string is one, with every character that
/// needs it escaped, and it never reads as null, a number or a boolean.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}
