//! This host's own addresses, which the exit policy guards like loopback: under a broad
//! rule (`0.0.0.0/0`) a flow could otherwise reach the exit's own services bound to all
//! addresses, or dial the node's own listeners and loop back into the mesh. Its interfaces'
//! addresses, and the one it advertises (a public address NAT maps to it is on no
//! interface).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a reading of the interfaces is used: addresses change (DHCP, a new interface),
/// and reading them costs a netlink round trip, so once per this per node, not per flow.
const REFRESH: Duration = Duration::from_secs(5);

/// The addresses, the interfaces' read at most once per [`REFRESH`].
#[derive(Default)]
pub(crate) struct OwnAddresses {
    /// `mesh.advertise`, when it is an IP address (not loopback).
    advertised: Option<IpAddr>,
    read: Mutex<Option<(Instant, Arc<[IpAddr]>)>>,
}

impl OwnAddresses {
    /// This host's addresses, with `advertise` (`mesh.advertise`) among them when it names
    /// an IP address.
    pub(crate) fn new(advertise: Option<&str>) -> Self {
        Self { advertised: advertised_ip(advertise), read: Mutex::default() }
    }

    /// The host's addresses other than loopback (which is guarded anyway).
    pub(crate) fn current(&self) -> Arc<[IpAddr]> {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, addrs)) = read.as_ref()
            && at.elapsed() < REFRESH
        {
            return addrs.clone();
        }
        let addrs: Arc<[IpAddr]> = match if_addrs::get_if_addrs() {
            Ok(list) => {
                let mut addrs: Vec<IpAddr> =
                    list.into_iter().map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect();
                addrs.extend(self.advertised.filter(|ip| !addrs.contains(ip)));
                addrs.into()
            }
            Err(e) => {
                warn!("cannot read this host's interface addresses ({e}): keeping the last reading");
                read.as_ref().map(|(_, a)| a.clone()).unwrap_or_else(|| self.advertised.into_iter().collect())
            }
        };
        *read = Some((Instant::now(), addrs.clone()));
        addrs
    }
}

/// The IP of `mesh.advertise` when it is an IP address (not a name) and not loopback.
fn advertised_ip(advertise: Option<&str>) -> Option<IpAddr> {
    let a = advertise?;
    let ip = a.parse::<std::net::SocketAddr>().map(|s| s.ip()).or_else(|_| a.parse::<IpAddr>()).ok()?;
    let ip = ip.to_canonical();
    (!ip.is_loopback()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_public_address_is_guarded_like_the_interfaces() {
        let public = "203.0.113.9".parse().ok();
        assert_eq!(advertised_ip(Some("203.0.113.9:7800")), public);
        assert_eq!(advertised_ip(Some("[::ffff:203.0.113.9]:7800")), public, "as IPv4");
        assert_eq!(advertised_ip(Some("203.0.113.9")), public);
        assert_eq!(advertised_ip(Some("127.0.0.1:7800")), None, "loopback has its own rule");
        assert_eq!(advertised_ip(Some("mesh.example.com:7800")), None, "a name is not resolved");
        assert_eq!(advertised_ip(None), None);
        let own = OwnAddresses::new(Some("203.0.113.9:7800"));
        assert_eq!(own.current().iter().filter(|ip| Some(**ip) == public).count(), 1, "listed once");
    }

    #[test]
    fn loopback_is_left_out_and_a_reading_is_reused() {
        let own = OwnAddresses::default();
        let first = own.current();
        assert!(first.iter().all(|ip| !ip.is_loopback()));
        assert!(Arc::ptr_eq(&first, &own.current()), "read once per refresh period");
    }
}
