//! Approval-link tokens (docs/contracts.md, Approval links): signed with the practice's link
//! key, bound to the practice, the action(s), the decision and the approver, expiring,
//! single-use (the nonce is consumed by a conditional write when the decision is POSTed). A
//! link works only while its approver is one of the practice's owners, and only while the key
//! it was signed with is the practice's (or, during a rotation's overlap, the replaced one).
//!
//! Wire form: `base64url(json claims) . base64url(HMAC-SHA256(link key, claims))`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ActionId, PracticeId};

type HmacSha256 = Hmac<Sha256>;

/// The practice's key for approval links. `Debug` never shows it.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

impl LinkKey {
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
    fn mac(&self) -> HmacSha256 {
        match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// The practice's approval settings page (no actions). Sent only by e-mail, to an owner,
    /// on request; works for [`SETTINGS_LINK_MINUTES`].
    Settings,
    /// Asks for a settings link by e-mail (the digest's "Approval settings"; no actions): its
    /// page's button has one e-mailed to the practice's owners. It never shows one.
    SettingsRequest,
    /// The full list of the night (no actions): every open action of the practice and what
    /// waits for a later night. A page to read; it decides nothing, so it is not single-use
    /// and lives as long as the digest's approve and reject links.
    List,
}

/// How long a settings link works, in minutes: it opens the page that changes what is sent
/// without asking, so it is short-lived, e-mailed only on request, and works once.
pub const SETTINGS_LINK_MINUTES: i64 = 30;

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Settings => "settings",
            Self::SettingsRequest => "settings_request",
            Self::List => "list",
        }
    }

    /// Links that name no actions: the settings page, the request for one and the full list.
    pub fn names_no_actions(self) -> bool {
        matches!(self, Self::Settings | Self::SettingsRequest | Self::List)
    }
}

/// What a token says. Short field names keep links short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "p")]
    pub practice_id: PracticeId,
    #[serde(rename = "a")]
    pub action_ids: Vec<ActionId>,
    #[serde(rename = "d")]
    pub decision: Decision,
    /// Approver: a hash of the owner's address, never the address.
    #[serde(rename = "u")]
    pub approver: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    #[serde(rename = "n")]
    pub nonce: String,
}

impl Claims {
    pub fn new(
        practice_id: PracticeId,
        action_ids: Vec<ActionId>,
        decision: Decision,
        approver_email: &str,
        expires: Timestamp,
    ) -> Self {
        let mut n = [0u8; 12];
        rand::rng().fill_bytes(&mut n);
        Self {
            practice_id,
            action_ids,
            decision,
            approver: approver_id(approver_email),
            expires: expires.as_second(),
            nonce: B64.encode(n),
        }
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_second(self.expires).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// A stable, non-reversible id for an approver's address (for audit and tokens).
pub fn approver_id(email: &str) -> String {
    let d = Sha256::digest(email.trim().to_ascii_lowercase().as_bytes());
    format!("ap_{}", &crate::ids::base32_lower(&d[..10]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

pub fn sign(claims: &Claims, key: &LinkKey) -> String {
    let body = match serde_json::to_vec(claims) {
        Ok(b) => b,
        Err(_) => unreachable!("claims always serialize"),
    };
    let mut mac = key.mac();
    mac.update(&body);
    format!(
        "{}.{}",
        B64.encode(&body),
        B64.encode(mac.finalize().into_bytes())
    )
}

/// Reads the practice id from a token without trusting it, to find the key to verify with.
pub fn unverified_practice(token: &str) -> Result<PracticeId, TokenError> {
    Ok(decode_unverified(token)?.0.practice_id)
}

fn decode_unverified(token: &str) -> Result<(Claims, Vec<u8>, Vec<u8>), TokenError> {
    if token.len() > 4096 {
        return Err(TokenError::Malformed);
    }
    let (body_b64, mac_b64) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let body = B64.decode(body_b64).map_err(|_| TokenError::Malformed)?;
    let mac = B64.decode(mac_b64).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
    // A decision names its actions; a settings link (or a request for one) names none.
    if claims.action_ids.is_empty() != claims.decision.names_no_actions() {
        return Err(TokenError::Malformed);
    }
    Ok((claims, body, mac))
}

/// Verifies signature and expiry. Single use is enforced by the caller's ledger.
pub fn verify(token: &str, key: &LinkKey, now: Timestamp) -> Result<Claims, TokenError> {
    let (claims, body, tag) = decode_unverified(token)?;
    let mut mac = key.mac();
    mac.update(&body);
    mac.verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if now.as_second() >= claims.expires {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        let mut c = Claims::new(
            PracticeId::parse("demo-clinic").unwrap(),
            vec![ActionId::derive(&["x"])],
            Decision::Approve,
            "Owner@Clinic.example",
            Timestamp::from_second(exp).unwrap(),
        );
        c.nonce = "n".into();
        c
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = LinkKey::generate();
        let t = sign(&claims(2_000), &key);
        assert_eq!(
            verify(&t, &key, Timestamp::from_second(1_000).unwrap()).unwrap(),
            claims(2_000)
        );
        assert_eq!(
            verify(&t, &key, Timestamp::from_second(2_000).unwrap()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(
                &t,
                &LinkKey::generate(),
                Timestamp::from_second(1_000).unwrap()
            ),
            Err(TokenError::BadSignature)
        );
        // Tampering with the claims (say, another action or practice) breaks the signature.
        let (body, mac) = t.split_once('.').unwrap();
        let mut c: Claims = serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
        c.decision = Decision::Reject;
        let forged = format!("{}.{mac}", B64.encode(serde_json::to_vec(&c).unwrap()));
        assert_eq!(
            verify(&forged, &key, Timestamp::from_second(1_000).unwrap()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify("garbage", &key, Timestamp::UNIX_EPOCH),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            approver_id("owner@clinic.example"),
            approver_id(" Owner@Clinic.example")
        );
        // A settings link (or a request for one) names no actions; a decision names some.
        for (d, actions, ok) in [
            (Decision::Settings, vec![], true),
            (Decision::SettingsRequest, vec![], true),
            (Decision::List, vec![], true),
            (Decision::List, vec![ActionId::derive(&["x"])], false),
            (Decision::Settings, vec![ActionId::derive(&["x"])], false),
            (Decision::Approve, vec![], false),
        ] {
            let mut c = claims(2_000);
            c.decision = d;
            c.action_ids = actions;
            let t = sign(&c, &key);
            let now = Timestamp::from_second(1_000).unwrap();
            assert_eq!(verify(&t, &key, now).is_ok(), ok, "{d:?}");
        }
    }
}
