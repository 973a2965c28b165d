//! The recommended way for a practice to make refs (docs/contracts.md, "Refs"): a keyed hash
//! of the PMS's own id, so the same patient always gets the same ref, the ref reveals
//! nothing, and nobody without the practice's key can link a ref back to a PMS id.
//!
//! `ref = [prefix "_"] + lowercase_hex(HMAC-SHA256(key, utf8(pms_id))[0..16])`
//!
//! The key is the practice's (at least 16, by default 32 random bytes, written as unpadded
//! base64url); the layer never holds it. The PMS id is used exactly as given: no trimming,
//! no case folding, no Unicode normalisation.

use std::fmt;

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ids::{IdError, OpaqueRef};

/// Bytes in a key from [`RefKey::generate`].
pub const KEY_LEN: usize = 32;
/// Fewest bytes [`RefKey::parse`] accepts.
pub const MIN_KEY_LEN: usize = 16;
/// Bytes of the MAC kept in a ref (128 bits, 32 hex characters).
pub const REF_MAC_LEN: usize = 16;
/// Longest prefix (letters before the `_`).
pub const MAX_PREFIX_LEN: usize = 8;

/// Why a key was refused. Never carries the key, nor any part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefKeyError {
    #[error("not base64url (or base64) text")]
    NotBase64,
    #[error(
        "{0} bytes; a ref key is at least {MIN_KEY_LEN} random bytes (`pil ref key` makes one of {KEY_LEN})"
    )]
    TooShort(usize),
}

/// A practice's ref key: at least [`MIN_KEY_LEN`] bytes, so a value of the type is usable.
/// `Debug` never shows it, and it has no `Display`.
#[derive(Clone)]
pub struct RefKey(Vec<u8>);

impl fmt::Debug for RefKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefKey(<redacted>)")
    }
}

/// base64url, padded or not; standard base64 (`+`, `/`) is mapped onto it first.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    NO_PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl RefKey {
    /// A fresh key of [`KEY_LEN`] random bytes.
    pub fn generate() -> Self {
        let mut k = vec![0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut k);
        Self(k)
    }

    /// Reads a key written as base64url (unpadded, as [`RefKey::expose`] writes it) or as
    /// standard base64, padded or not. Surrounding white space (a key file's line end) is
    /// ignored.
    pub fn parse(text: &str) -> Result<Self, RefKeyError> {
        let text = text.trim_ascii();
        let url: String = text
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let key = LENIENT.decode(url).map_err(|_| RefKeyError::NotBase64)?;
        if key.len() < MIN_KEY_LEN {
            return Err(RefKeyError::TooShort(key.len()));
        }
        Ok(Self(key))
    }

    /// The key as unpadded base64url text (43 characters for 32 bytes): to show once, when
    /// it is made, to the practice that keeps it.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// The ref of the PMS id `pms_id` (taken exactly as given), with the prefix if any:
    /// `[prefix_]` and 32 lowercase hex characters.
    pub fn derive(&self, prefix: Option<&RefPrefix>, pms_id: &str) -> OpaqueRef {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(pms_id.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(MAX_PREFIX_LEN + 1 + 2 * REF_MAC_LEN);
        if let Some(p) = prefix {
            out.push_str(&p.0);
            out.push('_');
        }
        push_lower_hex(&mut out, &tag[..REF_MAC_LEN]);
        OpaqueRef::derived(out)
    }
}

/// Appends `bytes` as lowercase hex (refs and tombstone ids).
pub(crate) fn push_lower_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
}

/// A ref prefix such as `p` (patients) or `a` (appointments): 1–8 lowercase ASCII letters,
/// written before the `_`. The words record numbers are labelled with ([`LABEL_WORDS`]) are
/// refused: `mrn_…` or `pt_…` reads as a labelled record number, to a person and to the PHI
/// guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPrefix(String);

/// Prefixes [`RefPrefix::parse`] refuses: the labels of record numbers.
pub const LABEL_WORDS: [&str; 9] = [
    "mrn", "medrec", "chart", "acct", "account", "patient", "pt", "dob", "ssn",
];

impl RefPrefix {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !(1..=MAX_PREFIX_LEN).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(IdError {
                kind: "ref prefix",
                rule: "1-8 lowercase letters a-z, without the _",
            });
        }
        if LABEL_WORDS.contains(&s) {
            return Err(IdError {
                kind: "ref prefix",
                rule: "a record-number label (mrn, medrec, chart, acct, account, patient, pt, dob, ssn): choose another, such as p",
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's standard library:
    /// `hmac.new(bytes(range(32)), pms_id.encode("utf-8"), hashlib.sha256).digest()[:16].hex()`.
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const VECTORS: [(&str, &str); 5] = [
        ("12345", "36e295174c2947fbba5ff2d280b635a4"),
        ("004821377", "c66876be728ac71864c0d3e29d31c7ee"),
        (
            "Zo\u{eb}-\u{d1}\u{fa}\u{f1}ez/7",
            "83d1c3a374dbb3fae009a08401c1eaf5",
        ),
        ("  AB 12  ", "6567a21f90acf866c4b8a4c715814e97"),
        ("pat:00042", "1d7e72b73e4354bf3469c705c8423310"),
    ];

    #[test]
    fn derive_matches_the_independent_vector() {
        let key = RefKey::parse(KEY).unwrap();
        assert_eq!(key.0, (0u8..32).collect::<Vec<_>>());
        let p = RefPrefix::parse("p").unwrap();
        for (id, hex) in VECTORS {
            assert_eq!(key.derive(None, id).as_str(), hex, "{id}");
            assert_eq!(key.derive(Some(&p), id).as_str(), format!("p_{hex}"));
        }
    }

    #[test]
    fn the_id_is_used_exactly() {
        let key = RefKey::parse(KEY).unwrap();
        let r = |id| key.derive(None, id);
        assert_ne!(r("AB12"), r("ab12"));
        assert_ne!(r("AB12"), r(" AB12"));
        assert_ne!(r("AB12"), r("AB12\n"));
        // Unicode: composed and decomposed forms are different ids.
        assert_ne!(r("Zo\u{eb}"), r("Zoe\u{308}"));
    }

    #[test]
    fn keys_in_every_base64_spelling_are_the_same_key() {
        let bytes: Vec<u8> = (200u8..232).collect();
        let url = URL_SAFE_NO_PAD.encode(&bytes);
        let std = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(std.contains(['+', '/']) && std.ends_with('='), "{std}");
        for text in [
            url.clone(),
            format!("{url}=\n"),
            std.clone(),
            std.trim_end_matches('=').to_owned(),
            format!("  {std}\r\n"),
        ] {
            assert_eq!(RefKey::parse(&text).unwrap().0, bytes, "{text}");
        }
    }

    #[test]
    fn generated_keys_are_32_bytes_in_43_characters_and_round_trip() {
        let k = RefKey::generate();
        let text = k.expose();
        assert_eq!(text.len(), 43);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(RefKey::parse(&text).unwrap().0, k.0);
        assert_ne!(RefKey::generate().0, k.0);
        assert_eq!(format!("{k:?}"), "RefKey(<redacted>)");
    }

    #[test]
    fn short_or_malformed_keys_are_refused_without_the_key() {
        let short = URL_SAFE_NO_PAD.encode([7u8; 15]);
        assert_eq!(
            RefKey::parse(&short).unwrap_err(),
            RefKeyError::TooShort(15)
        );
        assert!(RefKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 16])).is_ok());
        assert_eq!(RefKey::parse("").unwrap_err(), RefKeyError::TooShort(0));
        for bad in [
            "not a key!",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8*",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9",
        ] {
            let e = RefKey::parse(bad).unwrap_err();
            assert_eq!(e, RefKeyError::NotBase64, "{bad}");
            assert!(!e.to_string().contains(&bad[..8]));
        }
    }

    #[test]
    fn prefixes_are_short_lowercase_words_but_no_record_labels() {
        for ok in ["p", "a", "appt", "slot", "abcdefgh"] {
            assert_eq!(RefPrefix::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "P", "p_", "p1", "abcdefghi", "\u{e9}"] {
            let e = RefPrefix::parse(bad).unwrap_err();
            assert_eq!(e.rule, "1-8 lowercase letters a-z, without the _", "{bad}");
        }
        for label in LABEL_WORDS {
            let e = RefPrefix::parse(label).unwrap_err();
            assert!(e.rule.contains("record-number label"), "{label}");
        }
    }

    /// Every derived ref is a ref the receiver accepts: the PHI guard takes the recipe's
    /// shape (32 lowercase hex characters, with or without a prefix) whatever the bytes.
    #[test]
    fn derived_refs_always_pass_the_guard() {
        let key = RefKey::generate();
        let mut prefixes = vec![None];
        prefixes.extend(
            ["p", "a", "appt", "prov", "slot", "abcdefgh"]
                .map(|p| Some(RefPrefix::parse(p).unwrap())),
        );
        for i in 0..1000 {
            for p in &prefixes {
                let r = key.derive(p.as_ref(), &format!("{i}"));
                assert_eq!(
                    OpaqueRef::parse(r.as_str()).as_ref().map(OpaqueRef::as_str),
                    Ok(r.as_str()),
                    "a derived ref is refused by the guard"
                );
            }
        }
    }
}
