//! Square's webhook signature: `x-square-hmacsha256-signature` is the base64 of
//! HMAC-SHA256, keyed with the subscription's signature key (its UTF-8 text), over the
//! notification URL exactly as configured in Square followed by the raw request body.
//! Tested against the official SDK's helper (`squareup` on PyPI).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Square signs its webhooks in.
pub const HEADER: &str = "x-square-hmacsha256-signature";

/// A webhook subscription's signature key. `Debug` never shows it.
#[derive(Clone)]
pub struct SignatureKey(String);

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(<redacted>)")
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Square signature key is empty")]
pub struct EmptyKey;

impl SignatureKey {
    pub fn new(key: impl Into<String>) -> Result<Self, EmptyKey> {
        let key = key.into();
        if key.trim().is_empty() {
            return Err(EmptyKey);
        }
        Ok(Self(key))
    }

    fn mac(&self, notification_url: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(notification_url.as_bytes());
        m.update(body);
        m
    }

    /// The header's value for `body` sent to `notification_url` (the simulator and tests sign
    /// with it).
    pub fn sign(&self, notification_url: &str, body: &[u8]) -> String {
        STANDARD.encode(self.mac(notification_url, body).finalize().into_bytes())
    }

    /// Whether `header` is the signature of `body` sent to `notification_url`. Constant time
    /// in the MAC comparison; a header that is not base64 of 32 bytes is simply false, and so
    /// is an empty body (Square never sends one; its SDK refuses it too).
    pub fn verify(&self, notification_url: &str, body: &[u8], header: &str) -> bool {
        if body.is_empty() {
            return false;
        }
        let Ok(given) = STANDARD.decode(header.trim()) else {
            return false;
        };
        self.mac(notification_url, body)
            .verify_slice(&given)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_url_then_the_body() {
        let key = SignatureKey::new("asdf1234").unwrap();
        let url = "https://example.com/webhook";
        let body = br#"{"hello":"world"}"#;
        let sig = key.sign(url, body);
        assert!(key.verify(url, body, &sig));
        // The URL is part of what is signed: another URL, another signature.
        assert!(!key.verify("https://example.com/webhook/", body, &sig));
        assert!(!key.verify(url, br#"{"hello":"world!"}"#, &sig));
        assert!(!SignatureKey::new("other").unwrap().verify(url, body, &sig));
        assert!(!key.verify(url, body, "not base64!"));
        assert!(!key.verify(url, body, ""));
    }

    #[test]
    fn an_empty_key_is_refused() {
        assert_eq!(SignatureKey::new("  ").unwrap_err(), EmptyKey);
    }
}
