//! Tombstones: what erasure and rotation leave behind so that a late event cannot undo them.
//!
//! A PMS retries, and a retry is signed afresh: after `patient.erased`, an older event for
//! the ref would otherwise create its record again; after `patient.ref_rotated`, one for the
//! old ref would bring the old ref back. So both leave a tombstone, keyed by a keyed hash of
//! the ref (HMAC-SHA256 under the practice's tombstone key, 128 bits, hex): the ref itself is
//! stored nowhere, and the hash cannot be tested against guessed refs without the key.
//!
//! - **erased**: every later event about the ref (or about one of the appointments erasure
//!   deleted) is accepted (202, so the PMS stops retrying) and changes nothing, whatever its
//!   `occurred_at`: erasure is final while the tombstone lasts, and a returning patient gets a
//!   new ref. (Dropping only events dated before the erasure would make the end state depend
//!   on the order: an event dated after an erasure that arrives before it is erased with it.)
//! - **rotated**: a later event for the old ref is applied to the new ref. The tombstone
//!   names the new ref (a live ref, stored anyway); when the new ref is itself rotated or
//!   erased, the tombstones that point to it are rewritten, so a chain of rotations resolves
//!   in one read and an erased ref is named by no tombstone.
//!
//! Tombstones are kept [`RETENTION_DAYS`] (the table's TTL removes them); docs/contracts.md
//! states it and the data inventory lists them.

use std::fmt;

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::OpaqueRef;

type HmacSha256 = Hmac<Sha256>;

/// How long a tombstone is kept. Long enough for any PMS retry, queue replay or re-sent
/// backfill of the erased or rotated ref (a year of history, and a margin).
pub const RETENTION_DAYS: i64 = 400;

/// The practice's key for tombstone hashes. `Debug` never shows it.
#[derive(Clone)]
pub struct TombstoneKey(Vec<u8>);

impl fmt::Debug for TombstoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TombstoneKey(<redacted>)")
    }
}

impl TombstoneKey {
    pub fn generate() -> Self {
        let mut k = vec![0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Self(k)
    }
    pub fn from_bytes(b: Vec<u8>) -> Option<Self> {
        (b.len() >= 16).then_some(Self(b))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn hash(&self, domain: &str, r: &OpaqueRef) -> TombstoneId {
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(domain.as_bytes());
        mac.update(b"\0");
        mac.update(r.as_str().as_bytes());
        let out = mac.finalize().into_bytes();
        let mut id = String::with_capacity(32);
        crate::refkey::push_lower_hex(&mut id, &out[..16]);
        TombstoneId(id)
    }

    /// The tombstone id of a patient ref.
    pub fn patient(&self, r: &OpaqueRef) -> TombstoneId {
        self.hash("patient", r)
    }

    /// The tombstone id of an appointment ref (erasure deletes the patient's appointments).
    pub fn appointment(&self, r: &OpaqueRef) -> TombstoneId {
        self.hash("appointment", r)
    }
}

/// A keyed hash of a ref: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TombstoneId(String);

impl TombstoneId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Read back from storage: exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }
}

impl fmt::Display for TombstoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What became of the ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    Erased,
    RotatedTo { to: OpaqueRef },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: TombstoneId,
    #[serde(flatten)]
    pub fate: Fate,
    /// When the erasure or rotation was applied.
    pub at: Timestamp,
}

impl Tombstone {
    pub fn new(id: TombstoneId, fate: Fate, at: Timestamp) -> Self {
        Self { id, fate, at }
    }

    /// When the table's TTL removes it.
    pub fn expires_at(&self) -> Timestamp {
        self.at + SignedDuration::from_hours(24 * RETENTION_DAYS)
    }

    /// The ref a rotation tombstone points to.
    pub fn to(&self) -> Option<&OpaqueRef> {
        match &self.fate {
            Fate::RotatedTo { to } => Some(to),
            Fate::Erased => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_domain_separated_and_hold_no_ref() {
        let k = TombstoneKey::generate();
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let a = k.patient(&r);
        assert_eq!(a, k.patient(&r), "deterministic");
        assert_ne!(a, k.appointment(&r), "patient and appointment ids differ");
        assert_ne!(a, TombstoneKey::generate().patient(&r), "keyed");
        assert!(TombstoneId::parse(a.as_str()).is_some());
        assert!(!a.as_str().contains("7Hq2"));
        assert!(TombstoneId::parse("p_7Hq2kX9mZ4rT1vB8yW3n").is_none());
    }

    #[test]
    fn ids_read_back_only_as_32_lowercase_hex_digits() {
        let id =
            TombstoneKey::generate().patient(&OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap());
        assert_eq!(id.to_string(), id.as_str(), "shown as stored");
        assert_eq!(TombstoneId::parse(&id.to_string()), Some(id.clone()));
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(TombstoneId::parse(hex).is_some());
        for bad in [
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "",
        ] {
            assert!(TombstoneId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_key_is_never_shown() {
        let k = TombstoneKey::from_bytes(vec![0xAB; 16]).unwrap();
        let shown = format!("{k:?}");
        assert!(
            shown.starts_with("TombstoneKey") && shown.contains("redacted"),
            "{shown}"
        );
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab,"),
            "{shown}"
        );
        assert!(
            TombstoneKey::from_bytes(vec![0; 15]).is_none(),
            "at least 128 bits"
        );
    }

    #[test]
    fn a_tombstone_expires_after_its_retention() {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t = Tombstone::new(TombstoneId("0".repeat(32)), Fate::Erased, at);
        assert_eq!(
            t.expires_at(),
            "2027-02-05T00:00:00Z".parse::<Timestamp>().unwrap(),
            "400 days later"
        );
        assert_eq!(t.to(), None);
    }
}
