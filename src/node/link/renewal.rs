//! Certificate renewal: when two thirds of the certificate's lifetime have passed, the
//! node asks the scheduler, over its session, to sign a new certificate for the same key.
//! The new certificate is put in force for new handshakes and written over `mesh.cert`;
//! established links and their flows are untouched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::node::Shared;

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed:
/// after two thirds of its lifetime, leaving a third to get a new one.
pub(crate) fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before.saturating_add(not_after.saturating_sub(not_before).max(0) * 2 / 3)
}

/// The renewal state of one node.
#[derive(Debug, Default)]
pub(crate) struct Renewal {
    /// No request before this (a request is outstanding, or one was refused).
    hold_until: Option<Instant>,
}

impl Renewal {
    /// A certificate request, if renewal is due at `now_unix` and none is outstanding.
    pub(crate) fn due(&mut self, shared: &Shared, now_unix: i64) -> Option<Vec<u8>> {
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let identity = shared.tls.identity();
        let (not_before, not_after) = identity.validity()?;
        if now_unix < renew_at(not_before, not_after) {
            return None;
        }
        match identity.certificate_request(shared.id()) {
            Ok(csr) => {
                // An unanswered request is repeated after a while, never in a burst.
                self.hold_until = Some(Instant::now() + retry_after(not_before, not_after));
                Some(csr)
            }
            Err(e) => {
                warn!("cannot make a certificate request for renewal: {e}");
                self.hold_until = Some(Instant::now() + retry_after(not_before, not_after));
                None
            }
        }
    }

    /// The scheduler refused: try again later (the current certificate is still valid).
    pub(crate) fn refused(&mut self, shared: &Shared, reason: &str) {
        warn!(reason = %crate::logging::log_escape(reason), "certificate renewal refused; trying again later");
        if let Some((not_before, not_after)) = shared.tls.identity().validity() {
            self.hold_until = Some(Instant::now() + retry_after(not_before, not_after));
        }
    }

    /// A renewed certificate arrived: put it in force and write it to `mesh.cert`.
    pub(crate) async fn renewed(&mut self, shared: &Arc<Shared>, cert_pem: String) {
        self.hold_until = None;
        if let Err(e) = shared.tls.renew(&shared.endpoint, &cert_pem, shared.id()) {
            warn!("renewed certificate not usable, keeping the current one: {e:#}");
            return;
        }
        // The card names the certificate: the renewed one goes out to the mesh.
        match shared.tls.identity().card(shared.id(), shared.seal_keys.public()) {
            Ok(card) => {
                shared.cards.set_own(card.clone());
                crate::node::link::cards::share(shared, &[card], None);
            }
            Err(e) => warn!("seal card not renewed: {e}"),
        }
        let not_after = shared.tls.identity().validity().map_or(0, |(_, t)| t);
        shared
            .events
            .push(crate::console::events::EventKind::CertRenewed, "this node's certificate was renewed");
        let path = shared.config.mesh.cert.clone();
        if path == shared.config.mesh.key {
            // Writing the certificate alone over a file that also holds the key would lose it.
            warn!("certificate renewed for this run, but not saved: mesh.cert and mesh.key are one file");
            return;
        }
        match tokio::task::spawn_blocking(move || {
            crate::state_file::replace(&path, cert_pem.as_bytes(), None)
        })
        .await
        {
            Ok(Ok(())) => info!(not_after, "certificate renewed"),
            Ok(Err(e)) => warn!("certificate renewed for this run, but not saved: {e}"),
            Err(e) => warn!("certificate renewed for this run, but not saved: {e}"),
        }
    }
}

/// A twentieth of the lifetime, between 1 s and an hour.
fn retry_after(not_before: i64, not_after: i64) -> Duration {
    let lifetime = u64::try_from(not_after.saturating_sub(not_before)).unwrap_or(0);
    Duration::from_secs((lifetime / 20).clamp(1, 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(1000, 1900), 1600);
        assert_eq!(renew_at(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renew_at(500, 400), 500, "a backwards validity is due at once");
        assert_eq!(retry_after(0, 12), Duration::from_secs(1));
        assert_eq!(retry_after(0, 90 * 86_400), Duration::from_secs(3600));
    }
}
