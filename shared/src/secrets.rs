//! A practice's secrets: sealed at rest by the key service, opened on demand, cached per cold
//! start (keyed by the sealed form, so a rotation is picked up at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ids::PracticeId;
use crate::ports::{KeyService, PortError};
use crate::practice::SealedSecrets;
use crate::signature::WebhookSecret;
use crate::token::LinkKey;

#[derive(Debug, Clone)]
pub struct OpenedSecrets {
    pub webhook: Vec<WebhookSecret>,
    pub trigger: WebhookSecret,
    pub link: LinkKey,
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
    let link = LinkKey::from_bytes(keys.open(&sealed.link).await?)
        .ok_or_else(|| PortError::Permanent("link key too short".into()))?;
    Ok(OpenedSecrets {
        webhook,
        trigger,
        link,
    })
}

pub async fn seal(
    keys: &dyn KeyService,
    opened: &OpenedSecrets,
) -> Result<SealedSecrets, PortError> {
    let mut webhook = Vec::with_capacity(opened.webhook.len());
    for s in &opened.webhook {
        webhook.push(keys.seal(s.expose().as_bytes()).await?);
    }
    Ok(SealedSecrets {
        webhook,
        trigger: keys.seal(opened.trigger.expose().as_bytes()).await?,
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
