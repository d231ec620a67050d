//! Private key files (a node's or the scheduler's TLS key, the mesh CA's key): a warning
//! when one is open to anyone but its owner, as ssh gives for an identity file.
//!
//! A warning, not a refusal: ssh refuses, but a mesh node that stops at a restart because
//! a deployment tool left a key 0640 would be an outage for a risk that was already
//! there; the log line names the file and its mode so the operator can fix it.

use std::path::Path;

/// Whether permission bits `mode` give the file's group or others any access (ssh's rule:
/// any of the bits `0o077`).
pub(crate) fn exposed(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Logs a warning naming `path` and its mode when the private key there is open to group
/// or others. A file that cannot be examined is left to the read that follows, which
/// reports it.
pub(crate) fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else { return };
    let mode = metadata.permissions().mode() & 0o7777;
    if exposed(mode) {
        tracing::warn!(
            file = %path.display(),
            mode = %format!("{mode:04o}"),
            "private key file is accessible to group or others: anyone who can read it can act as this \
             member of the mesh; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn any_group_or_other_bit_exposes_a_key() {
        for mode in [0o600, 0o400, 0o700, 0o100600] {
            assert!(!exposed(mode), "{mode:o}");
        }
        for mode in [0o640, 0o644, 0o604, 0o620, 0o601, 0o666, 0o100644] {
            assert!(exposed(mode), "{mode:o}");
        }
    }

    #[test]
    fn loading_a_world_readable_key_logs_the_file_and_its_mode() {
        let dir = std::env::temp_dir().join(format!("proxy-key-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = crate::pki::MeshCa::generate("test CA").expect("ca");
        let cert = ca.issue_node_cert("a", 1).expect("cert");
        let (crt, key, ca_file) = (dir.join("a.crt"), dir.join("a.key"), dir.join("ca.crt"));
        std::fs::write(&crt, &cert.cert_pem).expect("write");
        std::fs::write(&key, &cert.key_pem).expect("write");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write");
        let log = dir.join("node.log");
        let config = crate::config::LogConfig {
            level: crate::config::LogLevel::Warn.into(),
            file: Some(log.clone()),
            ..crate::config::LogConfig::default()
        };
        let dispatch = crate::logging::dispatch(&config).expect("logger");
        let load = || {
            tracing::dispatcher::with_default(&dispatch, || {
                crate::tls::TlsIdentity::load(&crt, &key, &ca_file, "a").expect("load")
            })
        };

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        load();
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN") && text.contains(&key.display().to_string()), "{text}");
        assert!(text.contains("mode=0644") && text.contains("chmod 600"), "{text}");

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        load();
        assert_eq!(std::fs::read_to_string(&log).expect("log"), text, "a private key is loaded quietly");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
