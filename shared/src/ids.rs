//! Value types for every boundary identifier. Each can only be built through `parse`, so a
//! value of the type is valid by construction (parse, don't validate).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::guard::{self, PhiRule};

/// Why an identifier did not parse. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub rule: &'static str,
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        string_id!($(#[$m])* $name, parse);
    };
    ($(#[$m:meta])* $name:ident, $de:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::$de(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }
    };
}

string_id!(
    /// A practice's id: 3–40 characters of `[a-z0-9-]`, starting with a letter or digit.
    PracticeId
);
impl PracticeId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (3..=40).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "practice id",
                rule: "3-40 characters of a-z 0-9 -",
            })
        }
    }
}

string_id!(
    /// An opaque reference issued by the PMS (patient, appointment, provider, slot). Passed the
    /// PHI guard when it entered: it looks like none of the PHI shapes and like a random id.
    /// Read back from storage or a queue (serde), it is checked for its format only: it was
    /// guarded on the way in, and a stricter guard must not make stored state unreadable.
    OpaqueRef,
    parse_stored
);
impl fmt::Debug for OpaqueRef {
    // A ref is not PHI, but it is patient-linked: keep it out of debug output next to dates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpaqueRef(#{})", short_code(&self.0))
    }
}
impl OpaqueRef {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_checked(s).map_err(|rule| IdError {
            kind: "ref",
            rule: rule.code(),
        })
    }

    /// A ref read back from the layer's own storage or queues: the wire format only
    /// (16–64 characters of `A–Z a–z 0–9 _ -`). The guard ran when it was received.
    pub fn parse_stored(s: &str) -> Result<Self, IdError> {
        let ok = (guard::REF_MIN_LEN..=guard::REF_MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "ref",
                rule: PhiRule::RefFormat.code(),
            })
        }
    }

    /// Parses, reporting the guard's rule (the inbound parser names it with a field path).
    pub fn parse_checked(s: &str) -> Result<Self, PhiRule> {
        guard::check_ref(s).map(|()| Self(s.to_owned()))
    }

    /// A ref made by the recommended recipe ([`crate::refkey`]): its shape is one the guard
    /// always accepts (`refkey`'s tests hold it to that).
    pub(crate) fn derived(s: String) -> Self {
        Self(s)
    }

    /// The short code owners see instead of the ref (e-mails, pages): 6 characters of a hash.
    pub fn short_code(&self) -> String {
        short_code(&self.0)
    }
}

fn short_code(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    digest
        .iter()
        .take(6)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

impl fmt::Debug for PracticeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PracticeId({})", self.0)
    }
}

string_id!(
    /// A candidate action's id: `act_` and 26 characters of a hash of what makes the gap
    /// (practice, kind, patient, treatment, evidence date). The same gap always has the same id.
    ActionId
);
impl fmt::Debug for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionId({})", self.0)
    }
}
impl ActionId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 30
            && s.starts_with("act_")
            && s[4..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "action id",
                rule: "act_ and 26 characters of a-z 0-9",
            })
        }
    }

    /// Derives the deterministic id from the parts that identify one gap.
    pub fn derive(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u32).to_be_bytes());
            h.update(p.as_bytes());
        }
        Self(format!(
            "act_{}",
            base32_lower(&h.finalize()[..17])[..26].to_owned()
        ))
    }

    /// The trigger id sent to the PMS as `webhook-id`: stable across retries.
    pub fn trigger_id(&self) -> String {
        format!("trg_{}", &self.0[4..])
    }
}

/// RFC 4648 base32, lower case, no padding.
pub(crate) fn base32_lower(bytes: &[u8]) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn practice_id_rules() {
        assert!(PracticeId::parse("demo-aesthetics").is_ok());
        for bad in ["", "ab", "Demo", "-abc", "abc-", "a b c", &"a".repeat(41)] {
            assert!(PracticeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn action_ids_are_deterministic_and_parse() {
        let a = ActionId::derive(&["p1", "rebook", "ref", "neurotoxin", "2026-01-01"]);
        let b = ActionId::derive(&["p1", "rebook", "ref", "neurotoxin", "2026-01-01"]);
        let c = ActionId::derive(&["p1", "rebook", "ref", "neurotoxin", "2026-01-02"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(ActionId::parse(a.as_str()), Ok(a.clone()));
        assert!(a.trigger_id().starts_with("trg_"));
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            ActionId::derive(&["ab", "c"]),
            ActionId::derive(&["a", "bc"])
        );
    }

    #[test]
    fn ref_debug_never_shows_the_ref() {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        assert!(!format!("{r:?}").contains("7Hq2kX9"));
        assert_eq!(r.short_code().len(), 6);
    }
}
