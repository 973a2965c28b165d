//! A practice's secrets: sealed at rest by the key service, each bound to its practice and
//! purpose ([`SecretContext`]), opened on demand one at a time, cached per cold start (keyed by
//! the context and the sealed form, so a rotation is picked up at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::ids::PracticeId;
use crate::ports::{KeyService, PortError, SecretContext};
use crate::practice::{PreviousSecret, SealedSecrets, SecretKind};
use crate::signature::WebhookSecret;
use crate::token::LinkKey;

/// A practice's secrets in clear (each redacts itself in `Debug`).
#[derive(Debug, Clone)]
pub struct OpenedSecrets {
    /// Newest first; see [`SealedSecrets::webhook_at`].
    pub webhook: Vec<WebhookSecret>,
    /// When `webhook[1..]` stops verifying (see [`SealedSecrets`]).
    pub webhook_previous_until: Option<Timestamp>,
    pub trigger: WebhookSecret,
    /// The replaced trigger secret and the end of its overlap.
    pub trigger_previous: Option<(WebhookSecret, Timestamp)>,
    pub link: LinkKey,
    /// The replaced link key and the end of its overlap.
    pub link_previous: Option<(LinkKey, Timestamp)>,
}

fn secret_of(plain: Vec<u8>) -> Result<WebhookSecret, PortError> {
    let text = String::from_utf8(plain)
        .map_err(|_| PortError::Permanent("sealed secret is not text".into()))?;
    WebhookSecret::parse(&text)
        .map_err(|_| PortError::Permanent("sealed secret is not a whsec_ secret".into()))
}

fn link_key_of(plain: Vec<u8>) -> Result<LinkKey, PortError> {
    LinkKey::from_bytes(plain).ok_or_else(|| PortError::Permanent("link key too short".into()))
}

/// Opens every secret of the practice (tests and tools; handlers use [`SecretCache`], which
/// opens only what they use).
pub async fn open_all(
    keys: &dyn KeyService,
    practice: &PracticeId,
    sealed: &SealedSecrets,
) -> Result<OpenedSecrets, PortError> {
    let (w, t, l) = (
        SecretContext::for_any(practice, SecretKind::Webhook),
        SecretContext::for_any(practice, SecretKind::Trigger),
        SecretContext::for_any(practice, SecretKind::Link),
    );
    let mut webhook = Vec::with_capacity(sealed.webhook.len());
    for s in &sealed.webhook {
        webhook.push(secret_of(keys.open(&w, s).await?)?);
    }
    let trigger = secret_of(keys.open(&t, &sealed.trigger).await?)?;
    let trigger_previous = match &sealed.trigger_previous {
        Some(p) => Some((secret_of(keys.open(&t, &p.sealed).await?)?, p.until)),
        None => None,
    };
    let link = link_key_of(keys.open(&l, &sealed.link).await?)?;
    let link_previous = match &sealed.link_previous {
        Some(p) => Some((link_key_of(keys.open(&l, &p.sealed).await?)?, p.until)),
        None => None,
    };
    Ok(OpenedSecrets {
        webhook,
        webhook_previous_until: sealed.webhook_previous_until,
        trigger,
        trigger_previous,
        link,
        link_previous,
    })
}

/// Seals one webhook or trigger secret (a new one from a rotation) under its context.
pub async fn seal_one(
    keys: &dyn KeyService,
    context: &SecretContext,
    secret: &WebhookSecret,
) -> Result<String, PortError> {
    keys.seal(context, secret.expose().as_bytes()).await
}

/// Seals a link key (a new one from a rotation) for the practice.
pub async fn seal_link(
    keys: &dyn KeyService,
    practice: &PracticeId,
    key: &LinkKey,
) -> Result<String, PortError> {
    keys.seal(
        &SecretContext::for_any(practice, SecretKind::Link),
        key.expose(),
    )
    .await
}

/// Seals every secret of the practice, each under its own context.
pub async fn seal_all(
    keys: &dyn KeyService,
    practice: &PracticeId,
    opened: &OpenedSecrets,
) -> Result<SealedSecrets, PortError> {
    let (w, t) = (
        SecretContext::for_any(practice, SecretKind::Webhook),
        SecretContext::for_any(practice, SecretKind::Trigger),
    );
    let mut webhook = Vec::with_capacity(opened.webhook.len());
    for s in &opened.webhook {
        webhook.push(seal_one(keys, &w, s).await?);
    }
    let trigger_previous = match &opened.trigger_previous {
        Some((s, until)) => Some(PreviousSecret {
            sealed: seal_one(keys, &t, s).await?,
            until: *until,
        }),
        None => None,
    };
    let link_previous = match &opened.link_previous {
        Some((k, until)) => Some(PreviousSecret {
            sealed: seal_link(keys, practice, k).await?,
            until: *until,
        }),
        None => None,
    };
    Ok(SealedSecrets {
        webhook,
        webhook_previous_until: opened.webhook_previous_until,
        trigger: seal_one(keys, &t, &opened.trigger).await?,
        trigger_previous,
        link: seal_link(keys, practice, &opened.link).await?,
        link_previous,
        tombstone: None,
    })
}

/// One opened secret in the cache: when it was opened, and its clear form.
#[derive(Clone)]
enum Opened {
    Secret(WebhookSecret),
    Link(LinkKey),
    Tombstone(crate::tombstone::TombstoneKey),
}

/// Opened secrets, for the life of one cold start (each at most `ttl`), keyed by their context
/// and sealed form: a rotation seals a new value, so it is seen at the next read of the
/// practice, and a cached value is only ever served under the context the key service opened
/// it with (a sealed value copied into another practice's record is opened, and refused, by
/// the key service, never served from here).
///
/// Each handler opens only the secret it uses, when it first needs it: the receiver the
/// webhook secret (and the replaced one only during a rotation's overlap), the emitter the
/// trigger secret, the approval check and pages the link key (and the replaced one only for a
/// link the current key does not verify, during its overlap). That is one KMS Decrypt per
/// practice, function and `ttl` in the usual case, not one per secret (docs/cost.md).
pub struct SecretCache {
    keys: Arc<dyn KeyService>,
    ttl: Duration,
    entries: Mutex<HashMap<(SecretContext, String), (Instant, Opened)>>,
    /// A random webhook secret no practice has, made once per cold start: the receiver
    /// verifies a delivery for an unknown practice against it (see [`Self::dummy_webhook`]).
    dummy: WebhookSecret,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCache(<redacted>)")
    }
}

/// Past this many cached secrets, an insert first drops the expired ones.
const CACHE_SWEEP_AT: usize = 4096;

impl SecretCache {
    pub fn new(keys: Arc<dyn KeyService>, ttl: Duration) -> Self {
        Self {
            keys,
            ttl,
            entries: Mutex::new(HashMap::new()),
            dummy: WebhookSecret::generate(),
        }
    }

    /// A webhook secret that verifies nothing: random, never stored, never shown. The receiver
    /// checks a delivery for a practice that does not exist against it, so that delivery costs
    /// the same work as one for a practice that does and gets the same refusal.
    pub fn dummy_webhook(&self) -> &WebhookSecret {
        &self.dummy
    }

    pub fn keys(&self) -> &dyn KeyService {
        self.keys.as_ref()
    }

    fn cached(&self, context: &SecretContext, sealed: &str) -> Option<Opened> {
        let map = self.entries.lock().ok()?;
        map.get(&(context.clone(), sealed.to_owned()))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, o)| o.clone())
    }

    fn remember(&self, context: &SecretContext, sealed: &str, opened: Opened) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CACHE_SWEEP_AT {
                let ttl = self.ttl;
                map.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            map.insert(
                (context.clone(), sealed.to_owned()),
                (Instant::now(), opened),
            );
        }
    }

    async fn secret(
        &self,
        context: &SecretContext,
        sealed: &str,
    ) -> Result<WebhookSecret, PortError> {
        if let Some(Opened::Secret(s)) = self.cached(context, sealed) {
            return Ok(s);
        }
        let s = secret_of(self.keys.open(context, sealed).await?)?;
        self.remember(context, sealed, Opened::Secret(s.clone()));
        Ok(s)
    }

    async fn link_key(&self, context: &SecretContext, sealed: &str) -> Result<LinkKey, PortError> {
        if let Some(Opened::Link(k)) = self.cached(context, sealed) {
            return Ok(k);
        }
        let k = link_key_of(self.keys.open(context, sealed).await?)?;
        self.remember(context, sealed, Opened::Link(k.clone()));
        Ok(k)
    }

    /// The webhook secrets that verify an inbound delivery at `now`
    /// ([`SealedSecrets::webhook_at`]): the replaced one is opened only during its overlap.
    pub async fn webhook_at(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecret>, PortError> {
        let context = SecretContext::for_webhook(practice);
        let mut out = Vec::new();
        for s in sealed.webhook_at(now) {
            out.push(self.secret(&context, s).await?);
        }
        Ok(out)
    }

    /// The secrets a trigger sent at `now` is signed with
    /// ([`SealedSecrets::trigger_signers_at`]).
    pub async fn trigger_signers_at(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
        now: Timestamp,
    ) -> Result<Vec<WebhookSecret>, PortError> {
        let context = SecretContext::for_trigger(practice);
        let mut out = Vec::new();
        for s in sealed.trigger_signers_at(now) {
            out.push(self.secret(&context, s).await?);
        }
        Ok(out)
    }

    /// The practice's key for tombstone hashes; `None` for a practice stored before it had
    /// one (see [`SealedSecrets::tombstone`]).
    pub async fn tombstone(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
    ) -> Result<Option<crate::tombstone::TombstoneKey>, PortError> {
        let Some(s) = &sealed.tombstone else {
            return Ok(None);
        };
        let context = SecretContext::for_tombstone(practice);
        if let Some(Opened::Tombstone(k)) = self.cached(&context, s) {
            return Ok(Some(k));
        }
        let k = crate::tombstone::TombstoneKey::from_bytes(self.keys.open(&context, s).await?)
            .ok_or_else(|| PortError::Permanent("tombstone key too short".into()))?;
        self.remember(&context, s, Opened::Tombstone(k.clone()));
        Ok(Some(k))
    }

    /// The practice's current key for approval and settings links: new links are signed with
    /// it, and presented ones verified with it first.
    pub async fn link(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
    ) -> Result<LinkKey, PortError> {
        self.link_key(&SecretContext::for_link(practice), &sealed.link)
            .await
    }

    /// The link key a rotation replaced, while links signed with it still verify at `now`
    /// ([`SealedSecrets::link_keys_at`]); `None` outside an overlap (nothing is opened).
    pub async fn link_previous(
        &self,
        practice: &PracticeId,
        sealed: &SealedSecrets,
        now: Timestamp,
    ) -> Result<Option<LinkKey>, PortError> {
        match sealed.link_keys_at(now).get(1) {
            Some(s) => Ok(Some(
                self.link_key(&SecretContext::for_link(practice), s).await?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A key service that counts what it opens (the in-memory one underneath, which binds
    /// each value to its context).
    #[derive(Default)]
    struct CountingKeys {
        opened: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeyService for CountingKeys {
        async fn seal(
            &self,
            context: &SecretContext,
            plaintext: &[u8],
        ) -> Result<String, PortError> {
            crate::testing::MemKeys.seal(context, plaintext).await
        }
        async fn open(&self, context: &SecretContext, sealed: &str) -> Result<Vec<u8>, PortError> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            crate::testing::MemKeys.open(context, sealed).await
        }
        async fn open_unbound(&self, sealed: &str) -> Result<Vec<u8>, PortError> {
            crate::testing::MemKeys.open_unbound(sealed).await
        }
    }

    fn pid() -> PracticeId {
        PracticeId::parse("demo-clinic").unwrap()
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_cache_opens_only_the_secret_asked_for_once_per_ttl_and_per_sealed_form() {
        let keys = Arc::new(CountingKeys::default());
        let until = at("2026-11-26T17:00:00Z");
        let before = until - jiff::SignedDuration::from_secs(1);
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let (trigger, trigger_old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let opened = OpenedSecrets {
            webhook: vec![new.clone(), old.clone()],
            webhook_previous_until: Some(until),
            trigger: trigger.clone(),
            trigger_previous: Some((trigger_old.clone(), until)),
            link: LinkKey::from_bytes(vec![7u8; 32]).unwrap(),
            link_previous: Some((LinkKey::from_bytes(vec![8u8; 32]).unwrap(), until)),
        };
        let p = pid();
        let sealed = block(seal_all(keys.as_ref(), &p, &opened)).unwrap();
        let cache = SecretCache::new(keys.clone(), Duration::from_secs(3600));
        let count = || keys.opened.load(Ordering::SeqCst);
        let exposed =
            |v: Vec<WebhookSecret>| v.iter().map(|k| k.expose().to_owned()).collect::<Vec<_>>();

        // After the overlap: only the newest webhook secret is opened.
        let w = block(cache.webhook_at(&pid(), &sealed, until)).unwrap();
        assert_eq!(exposed(w), [new.expose()]);
        assert_eq!(count(), 1);
        // Again: from the cache.
        block(cache.webhook_at(&pid(), &sealed, until)).unwrap();
        assert_eq!(count(), 1);
        // During the overlap the replaced one too (the newest still cached).
        let w = block(cache.webhook_at(&pid(), &sealed, before)).unwrap();
        assert_eq!(exposed(w), [new.expose(), old.expose()]);
        assert_eq!(count(), 2);
        // The trigger secrets and the link key only when asked for.
        let t = block(cache.trigger_signers_at(&pid(), &sealed, until)).unwrap();
        assert_eq!(exposed(t), [trigger.expose()]);
        assert_eq!(count(), 3);
        let t = block(cache.trigger_signers_at(&pid(), &sealed, before)).unwrap();
        assert_eq!(exposed(t), [trigger.expose(), trigger_old.expose()]);
        assert_eq!(count(), 4);
        block(cache.link(&p, &sealed)).unwrap();
        block(cache.link(&p, &sealed)).unwrap();
        assert_eq!(count(), 5);
        // The replaced link key only during its overlap.
        assert!(
            block(cache.link_previous(&p, &sealed, until))
                .unwrap()
                .is_none()
        );
        assert_eq!(count(), 5);
        let prev = block(cache.link_previous(&p, &sealed, before))
            .unwrap()
            .unwrap();
        assert_eq!(prev.expose(), &[8u8; 32]);
        assert_eq!(count(), 6);

        // A rotation seals a new value: seen at once, opened once.
        let rotated = SealedSecrets {
            webhook: vec![
                block(seal_one(
                    keys.as_ref(),
                    &SecretContext::for_webhook(&p),
                    &WebhookSecret::generate(),
                ))
                .unwrap(),
            ],
            webhook_previous_until: None,
            ..sealed.clone()
        };
        let w = block(cache.webhook_at(&p, &rotated, until)).unwrap();
        assert_ne!(exposed(w), [new.expose()]);
        assert_eq!(count(), 7);

        // Another practice's record holding this practice's sealed values: the key service
        // refuses them under the other practice's context, and the cache serves nothing.
        let other = PracticeId::parse("other-clinic").unwrap();
        assert!(block(cache.webhook_at(&other, &sealed, until)).is_err());
        assert!(block(cache.link(&other, &sealed)).is_err());
        assert_eq!(count(), 9);

        // Past the TTL everything is opened again; Debug shows nothing.
        let short = SecretCache::new(keys.clone(), Duration::ZERO);
        block(short.webhook_at(&p, &sealed, until)).unwrap();
        block(short.webhook_at(&p, &sealed, until)).unwrap();
        assert_eq!(count(), 11);
        assert_eq!(format!("{cache:?}"), "SecretCache(<redacted>)");
        // A sealed value the key service refuses is an error, not a cached miss.
        let bad = SealedSecrets {
            link: "garbage".into(),
            tombstone: None,
            ..sealed
        };
        assert!(block(cache.link(&p, &bad)).is_err());
    }

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
            link_previous: None,
        };
        let (cache, sealed) = cached(&s);
        let webhook_at =
            |sealed: &SealedSecrets, now| block(cache.webhook_at(&pid(), sealed, now)).unwrap();
        let sign = |k: &WebhookSecret| k.sign("msg_1", 0, b"{}").unwrap();
        let ok = |now: Timestamp, k: &WebhookSecret| {
            let sig = sign(k);
            let h = crate::signature::SignedHeaders {
                id: Some("msg_1"),
                timestamp: Some("0"),
                signature: Some(&sig),
            };
            crate::signature::verify(h, b"{}", &webhook_at(&sealed, now), 0).is_ok()
        };
        let before = until - jiff::SignedDuration::from_secs(1);
        assert!(ok(before, &old) && ok(before, &new));
        assert!(!ok(until, &old), "refused from the end of the overlap on");
        assert!(ok(until, &new));
        assert_eq!(webhook_at(&sealed, until).len(), 1);
        // A record without an end (never rotated) accepts all it lists.
        let legacy = SealedSecrets {
            webhook_previous_until: None,
            ..sealed.clone()
        };
        assert_eq!(webhook_at(&legacy, until).len(), 2);
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
            link_previous: None,
        };
        let (cache, sealed) = cached(&s);
        let signers = |now| block(cache.trigger_signers_at(&pid(), &sealed, now)).unwrap();
        let keys = |now| {
            signers(now)
                .iter()
                .map(|k| k.expose().to_owned())
                .collect::<Vec<_>>()
        };
        let before = until - jiff::SignedDuration::from_secs(1);
        assert_eq!(keys(before), [new.expose(), old.expose()]);
        assert_eq!(keys(until), [new.expose()]);
        let headers = |now| {
            let signers = signers(now);
            let refs: Vec<&WebhookSecret> = signers.iter().collect();
            crate::signature::signed_headers(&refs, "trg_1", 0, b"{}").unwrap()[2]
                .1
                .clone()
        };
        assert_eq!(headers(before).split(' ').count(), 2);
        assert_eq!(headers(until).split(' ').count(), 1);
        // Debug shows none of them.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(new.expose()) && !dbg.contains(old.expose()));
    }

    /// `opened` sealed by a counting key service, and a cache over it.
    fn cached(opened: &OpenedSecrets) -> (SecretCache, SealedSecrets) {
        let keys = Arc::new(CountingKeys::default());
        let sealed = block(seal_all(keys.as_ref(), &pid(), opened)).unwrap();
        (SecretCache::new(keys, Duration::from_secs(3600)), sealed)
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
            link_previous: Some((LinkKey::generate(), until)),
        };
        let keys = crate::testing::MemKeys;
        let back = futures::executor::block_on(async {
            let sealed = seal_all(&keys, &pid(), &s).await.unwrap();
            assert_eq!(
                sealed.trigger_previous.as_ref().map(|p| p.until),
                Some(until)
            );
            assert_eq!(sealed.link_previous.as_ref().map(|p| p.until), Some(until));
            // Each value opens under its own practice and purpose only.
            let other = PracticeId::parse("other-clinic").unwrap();
            assert!(open_all(&keys, &other, &sealed).await.is_err());
            let swapped = SealedSecrets {
                trigger: sealed.webhook[0].clone(),
                ..sealed.clone()
            };
            assert!(open_all(&keys, &pid(), &swapped).await.is_err());
            open_all(&keys, &pid(), &sealed).await.unwrap()
        });
        assert_eq!(back.webhook_previous_until, Some(until));
        assert_eq!(
            back.trigger_previous
                .map(|(k, u)| (k.expose().to_owned(), u)),
            s.trigger_previous.map(|(k, u)| (k.expose().to_owned(), u))
        );
        assert_eq!(
            back.link_previous.map(|(k, u)| (k.expose().to_vec(), u)),
            s.link_previous.map(|(k, u)| (k.expose().to_vec(), u))
        );
    }
}
