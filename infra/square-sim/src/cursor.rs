//! Opaque pagination cursors: a JSON position, base64url, with an HMAC so that a cursor the
//! simulator did not issue (or one altered) answers `400 INVALID_CURSOR` as Square's would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

pub(crate) struct Cursors {
    key: [u8; 32],
}

impl Cursors {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        Self { key }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(payload);
        m
    }

    pub(crate) fn issue<T: Serialize>(&self, position: &T) -> String {
        let payload = serde_json::to_vec(position).unwrap_or_default();
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The position a cursor carries, or `None` for one this simulator did not issue.
    pub(crate) fn read<T: DeserializeOwned>(&self, cursor: &str) -> Option<T> {
        let (payload, tag) = cursor.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let c = Cursors::new();
        let s = c.issue(&("a", 3));
        assert_eq!(c.read::<(String, u32)>(&s), Some(("a".to_owned(), 3)));
        let mut bad = s.clone();
        bad.insert(0, 'x');
        assert_eq!(c.read::<(String, u32)>(&bad), None);
        assert_eq!(Cursors::new().read::<(String, u32)>(&s), None);
        assert_eq!(c.read::<(String, u32)>("garbage"), None);
    }
}
