//! This host's own interface addresses, which the exit policy guards like loopback: under a
//! broad rule (`0.0.0.0/0`) a flow could otherwise reach the exit's own services bound to
//! all addresses, or dial the node's own listeners and loop back into the mesh.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a reading of the interfaces is used: addresses change (DHCP, a new interface),
/// and reading them costs a netlink round trip, so once per this per node, not per flow.
const REFRESH: Duration = Duration::from_secs(5);

/// The addresses, read at most once per [`REFRESH`].
#[derive(Default)]
pub(crate) struct OwnAddresses {
    read: Mutex<Option<(Instant, Arc<[IpAddr]>)>>,
}

impl OwnAddresses {
    /// The host's addresses other than loopback (which is guarded anyway).
    pub(crate) fn current(&self) -> Arc<[IpAddr]> {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, addrs)) = read.as_ref()
            && at.elapsed() < REFRESH
        {
            return addrs.clone();
        }
        let addrs: Arc<[IpAddr]> = match if_addrs::get_if_addrs() {
            Ok(list) => list.into_iter().map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect(),
            Err(e) => {
                warn!("cannot read this host's interface addresses ({e}): keeping the last reading");
                read.as_ref().map(|(_, a)| a.clone()).unwrap_or_else(|| Arc::from(Vec::new()))
            }
        };
        *read = Some((Instant::now(), addrs.clone()));
        addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_left_out_and_a_reading_is_reused() {
        let own = OwnAddresses::default();
        let first = own.current();
        assert!(first.iter().all(|ip| !ip.is_loopback()));
        assert!(Arc::ptr_eq(&first, &own.current()), "read once per refresh period");
    }
}
