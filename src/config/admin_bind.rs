//! The admin API's bind rule: an address other than loopback needs a token. It lives with
//! the config so that a config breaking it is refused when it is loaded; the node and the
//! scheduler check it again when they bind.

use std::net::{IpAddr, SocketAddr};

/// Refuses a non-loopback bind address (0.0.0.0 and :: included) without a token: such an
/// admin API would answer anyone who can reach the port. The message names the node's
/// keys, `common.admin_addr` and `common.admin_token`.
pub fn check_bind(bind: SocketAddr, token: Option<&str>) -> Result<(), String> {
    check_bind_keys(bind, token, "common.admin_addr", "common.admin_token")
}

/// [`check_bind`] for a config whose keys are `addr_key` and `token_key` (the scheduler's
/// are `admin_addr` and `admin_token`); the message names them.
pub fn check_bind_keys(
    bind: SocketAddr,
    token: Option<&str>,
    addr_key: &str,
    token_key: &str,
) -> Result<(), String> {
    if is_loopback(bind.ip()) {
        return Ok(());
    }
    match token {
        Some(t) if !t.is_empty() => Ok(()),
        Some(_) => Err(format!(
            "the admin API would listen on {bind}, which is not a loopback address, and \
             {token_key} is empty; set a non-empty {token_key} or bind {addr_key} to 127.0.0.1"
        )),
        None => Err(format!(
            "the admin API would listen on {bind}, which is not a loopback address, without a \
             token; set {token_key} or bind {addr_key} to 127.0.0.1"
        )),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_binds_need_a_token() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(check_bind(addr("127.0.0.1:9901"), None), Ok(()));
        assert_eq!(check_bind(addr("[::1]:9901"), None), Ok(()));
        assert_eq!(check_bind(addr("[::ffff:127.0.0.1]:9901"), None), Ok(()));
        assert_eq!(check_bind(addr("10.0.0.1:9901"), Some("t")), Ok(()));
        for bad in ["0.0.0.0:9901", "[::]:9901", "10.0.0.1:9901"] {
            let err = check_bind(addr(bad), None).expect_err(bad);
            assert!(err.contains(bad) && err.contains("common.admin_token"), "{err}");
        }
        let err = check_bind(addr("0.0.0.0:9901"), Some("")).expect_err("empty token");
        assert!(err.contains("0.0.0.0:9901") && err.contains("common.admin_token"), "{err}");
        let err =
            check_bind_keys(addr("0.0.0.0:9900"), None, "admin_addr", "admin_token").expect_err("no token");
        assert!(err.contains("set admin_token or bind admin_addr") && !err.contains("common."), "{err}");
    }
}
