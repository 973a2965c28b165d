//! A practice's secrets: sealed at rest by the key service, opened on demand, cached per cold
//! start (keyed by the sealed form, so a rotation is picked up at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::ids::PracticeId;
use crate::ports::{KeyService, PortError};
use crate::practice::{PreviousSecret, SealedSecrets};
use crate::signature::WebhookSecret;
use crate::token::LinkKey;

/// A practice's secrets in clear (each redacts itself in `Debug`).
#[derive(Debug, Clone)]
pub struct OpenedSecrets {
    /// Newest first; see [`OpenedSecrets::webhook_at`].
    pub webhook: Vec<WebhookSecret>,
    /// When `webhook[1..]` stops verifying (see [`SealedSecrets`]).
    pub webhook_previous_until: Option<Timestamp>,
    pub trigger: WebhookSecret,
    /// The replaced trigger secret and the end of its overlap.
    pub trigger_previous: Option<(WebhookSecret, Timestamp)>,
    pub link: LinkKey,
}

impl OpenedSecrets {
    /// The webhook secrets that verify an inbound delivery at `now`: the newest always; the
    /// one a rotation replaced only before its overlap ends.
    pub fn webhook_at(&self, now: Timestamp) -> &[WebhookSecret] {
        match self.webhook_previous_until {
            Some(until) if now >= until => &self.webhook[..self.webhook.len().min(1)],
            _ => &self.webhook,
        }
    }

    /// The trigger secrets a trigger sent at `now` is signed with: the current one, and the
    /// one a rotation replaced until its overlap ends (the PMS verifies with either).
    pub fn trigger_signers_at(&self, now: Timestamp) -> Vec<&WebhookSecret> {
        std::iter::once(&self.trigger)
            .chain(
                self.trigger_previous
                    .as_ref()
                    .filter(|(_, until)| now < *until)
                    .map(|(s, _)| s),
            )
            .collect()
    }
}

async fn open_secret(keys: &dyn KeyService, sealed: &str) -> Result<WebhookSecret, PortError> {
    let plain = keys.open(sealed).await?;
    let text = String::from_utf8(plain)
        .map_err(|_| PortError::Permanent("sealed secret is not text".into()))?;
    WebhookSecret::parse(&text)
        .map_err(|_| PortError::Permanent("sealed secret is not a whsec_ secret".into()))
}

pub async fn open(
    keys: &dyn KeyService,
    sealed: &SealedSecrets,
) -> Result<OpenedSecrets, PortError> {
    let mut webhook = Vec::with_capacity(sealed.webhook.len());
    for s in &sealed.webhook {
        webhook.push(open_secret(keys, s).await?);
    }
    let trigger = open_secret(keys, &sealed.trigger).await?;
    let trigger_previous = match &sealed.trigger_previous {
        Some(p) => Some((open_secret(keys, &p.sealed).await?, p.until)),
        None => None,
    };
    let link = LinkKey::from_bytes(keys.open(&sealed.link).await?)
        .ok_or_else(|| PortError::Permanent("link key too short".into()))?;
    Ok(OpenedSecrets {
        webhook,
        webhook_previous_until: sealed.webhook_previous_until,
        trigger,
        trigger_previous,
        link,
    })
}

/// Seals one secret (a new one from a rotation).
pub async fn seal_one(keys: &dyn KeyService, secret: &WebhookSecret) -> Result<String, PortError> {
    keys.seal(secret.expose().as_bytes()).await
}

pub async fn seal(
    keys: &dyn KeyService,
    opened: &OpenedSecrets,
) -> Result<SealedSecrets, PortError> {
    let mut webhook = Vec::with_capacity(opened.webhook.len());
    for s in &opened.webhook {
        webhook.push(seal_one(keys, s).await?);
    }
    let trigger_previous = match &opened.trigger_previous {
        Some((s, until)) => Some(PreviousSecret {
            sealed: seal_one(keys, s).await?,
            until: *until,
        }),
        None => None,
    };
    Ok(SealedSecrets {
        webhook,
        webhook_previous_until: opened.webhook_previous_until,
        trigger: seal_one(keys, &opened.trigger).await?,
        trigger_previous,
        link: keys.seal(opened.link.expose()).await?,
    })
}

type CacheEntry = (SealedSecrets, Instant, Arc<OpenedSecrets>);

/// Opened secrets per practice, for the life of one cold start (at most `ttl`).
pub struct SecretCache {
    keys: Arc<dyn KeyService>,
    ttl: Duration,
    entries: Mutex<HashMap<PracticeId, CacheEntry>>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCache(<redacted>)")
    }
}

impl SecretCache {
    pub fn new(keys: Arc<dyn KeyService>, ttl: Duration) -> Self {
        Self {
            keys,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn keys(&self) -> &dyn KeyService {
        self.keys.as_ref()
    }

    pub async fn get(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
    ) -> Result<Arc<OpenedSecrets>, PortError> {
        if let Ok(map) = self.entries.lock()
            && let Some((s, at, opened)) = map.get(practice)
            && s == sealed
            && at.elapsed() < self.ttl
        {
            return Ok(opened.clone());
        }
        let opened = Arc::new(open(self.keys.as_ref(), sealed).await?);
        if let Ok(mut map) = self.entries.lock() {
            map.insert(
                practice.clone(),
                (sealed.clone(), Instant::now(), opened.clone()),
            );
        }
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_replaced_webhook_secret_verifies_before_the_overlap_ends_and_not_after() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let until = at("2026-11-26T17:00:00Z");
        let s = OpenedSecrets {
            webhook: vec![new.clone(), old.clone()],
            webhook_previous_until: Some(until),
            trigger: WebhookSecret::generate(),
            trigger_previous: None,
            link: LinkKey::generate(),
        };
        let sign = |k: &WebhookSecret| k.sign("msg_1", 0, b"{}").unwrap();
        let ok = |now: Timestamp, k: &WebhookSecret| {
            let sig = sign(k);
            let h = crate::signature::SignedHeaders {
                id: Some("msg_1"),
                timestamp: Some("0"),
                signature: Some(&sig),
            };
            crate::signature::verify(h, b"{}", s.webhook_at(now), 0).is_ok()
        };
        let before = until - jiff::SignedDuration::from_secs(1);
        assert!(ok(before, &old) && ok(before, &new));
        assert!(!ok(until, &old), "refused from the end of the overlap on");
        assert!(ok(until, &new));
        assert_eq!(s.webhook_at(until).len(), 1);
        // A record without an end (never rotated) accepts all it lists.
        let legacy = OpenedSecrets {
            webhook_previous_until: None,
            ..s.clone()
        };
        assert_eq!(legacy.webhook_at(until).len(), 2);
    }

    #[test]
    fn triggers_are_signed_with_both_secrets_during_the_overlap_and_the_new_one_after() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let until = at("2026-11-26T17:00:00Z");
        let s = OpenedSecrets {
            webhook: vec![WebhookSecret::generate()],
            webhook_previous_until: None,
            trigger: new.clone(),
            trigger_previous: Some((old.clone(), until)),
            link: LinkKey::generate(),
        };
        let keys = |now| {
            s.trigger_signers_at(now)
                .iter()
                .map(|k| k.expose().to_owned())
                .collect::<Vec<_>>()
        };
        let before = until - jiff::SignedDuration::from_secs(1);
        assert_eq!(keys(before), [new.expose(), old.expose()]);
        assert_eq!(keys(until), [new.expose()]);
        let headers = |now| {
            crate::signature::signed_headers(&s.trigger_signers_at(now), "trg_1", 0, b"{}").unwrap()
                [2]
            .1
            .clone()
        };
        assert_eq!(headers(before).split(' ').count(), 2);
        assert_eq!(headers(until).split(' ').count(), 1);
        // Debug shows none of them.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(new.expose()) && !dbg.contains(old.expose()));
    }

    #[test]
    fn sealing_and_opening_keep_the_overlap() {
        let until = at("2026-11-26T17:00:00Z");
        let s = OpenedSecrets {
            webhook: vec![WebhookSecret::generate(), WebhookSecret::generate()],
            webhook_previous_until: Some(until),
            trigger: WebhookSecret::generate(),
            trigger_previous: Some((WebhookSecret::generate(), until)),
            link: LinkKey::generate(),
        };
        let keys = crate::testing::MemKeys;
        let back = futures::executor::block_on(async {
            let sealed = seal(&keys, &s).await.unwrap();
            assert_eq!(
                sealed.trigger_previous.as_ref().map(|p| p.until),
                Some(until)
            );
            open(&keys, &sealed).await.unwrap()
        });
        assert_eq!(back.webhook_previous_until, Some(until));
        assert_eq!(
            back.trigger_previous
                .map(|(k, u)| (k.expose().to_owned(), u)),
            s.trigger_previous.map(|(k, u)| (k.expose().to_owned(), u))
        );
    }
}
