//! Browser sessions of the console: a signed cookie after a login with the admin token,
//! and the CSRF token that goes with it.
//!
//! Sessions are stateless: the cookie is its expiry signed with a key drawn when the server
//! starts, so a restart logs everyone out and nothing grows with the number of logins. The
//! CSRF token is a second signature over the cookie, which a page of another origin cannot
//! read (the session answer has no CORS headers), so it cannot forge a state-changing
//! request even when the browser would attach the cookie.

use ring::hmac;

use super::access::constant_time_eq;
use crate::core::join_token::hex;

/// The cookie's name.
pub const COOKIE: &str = "proxy_console";
/// How long a login lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

/// The server's signing key for cookies and CSRF tokens.
pub struct SessionKeys {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// A fresh random key.
    pub fn random() -> SessionKeys {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        SessionKeys { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes) }
    }

    fn sign(&self, purpose: &str, value: &str) -> String {
        let tag = hmac::sign(&self.key, format!("{purpose}|{value}").as_bytes());
        hex(&tag.as_ref()[..16])
    }

    /// A new cookie value valid until `now_unix + SESSION_SECS`.
    pub fn issue(&self, now_unix: u64) -> String {
        let expiry = format!("{:x}", now_unix + SESSION_SECS);
        let mac = self.sign("session", &expiry);
        format!("{expiry}.{mac}")
    }

    /// Whether `cookie` was issued by this server and has not expired.
    pub fn valid(&self, cookie: &str, now_unix: u64) -> bool {
        let (Some((expiry, mac)), Some(until)) = (cookie.split_once('.'), self::expiry(cookie)) else {
            return false;
        };
        until > now_unix && constant_time_eq(mac.as_bytes(), self.sign("session", expiry).as_bytes())
    }

    /// The CSRF token of the session `cookie`, or of loopback callers when `None`.
    pub fn csrf(&self, cookie: Option<&str>) -> String {
        match cookie {
            Some(cookie) => self.sign("csrf", cookie),
            None => self.sign("csrf-loopback", ""),
        }
    }
}

/// When the session `cookie` expires (Unix seconds), as it says (check it is valid first).
pub(super) fn expiry(cookie: &str) -> Option<u64> {
    let (expiry, _) = cookie.split_once('.')?;
    u64::from_str_radix(expiry, 16).ok()
}

/// The value of cookie `name` in a `Cookie` header.
pub(super) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_valid_until_it_expires_and_only_for_its_issuer() {
        let keys = SessionKeys::random();
        let cookie = keys.issue(1000);
        assert!(keys.valid(&cookie, 1000));
        assert!(!keys.valid(&cookie, 1000 + SESSION_SECS));
        assert!(!SessionKeys::random().valid(&cookie, 1000));
        let (expiry, mac) = cookie.split_once('.').expect("two parts");
        let later = format!("{:x}.{mac}", u64::from_str_radix(expiry, 16).expect("hex") + 10);
        assert!(!keys.valid(&later, 1000), "the expiry is signed");
        assert!(!keys.valid("garbage", 1000) && !keys.valid("zz.00", 1000));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_from_loopback() {
        let keys = SessionKeys::random();
        let (a, b) = (keys.issue(1), keys.issue(2));
        assert_ne!(keys.csrf(Some(&a)), keys.csrf(Some(&b)));
        assert_ne!(keys.csrf(Some(&a)), keys.csrf(None));
        assert_eq!(keys.csrf(Some(&a)), keys.csrf(Some(&a)));
    }

    #[test]
    fn cookie_values_are_found_by_name() {
        assert_eq!(cookie_value("a=1; proxy_console=x.y; b=2", COOKIE), Some("x.y"));
        assert_eq!(cookie_value("proxy_consoleX=1", COOKIE), None);
    }
}
