//! Onboarding and policy changes: what `pil practice create` and `pil policy set` do.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::action::ActionKind;
use crate::ids::PracticeId;
use crate::ports::{KeyService, PortError, PracticeRepo, StoreError};
use crate::practice::{self, ConfigError, KindPolicy, Mode, Policy, Practice};
use crate::secrets::{self, OpenedSecrets};
use crate::signature::WebhookSecret;
use crate::token::LinkKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("practice {0} already exists")]
    Exists(PracticeId),
    #[error("practice {0} not found")]
    NotFound(PracticeId),
    #[error("storage: {0}")]
    Store(StoreError),
    #[error("key service: {0}")]
    Keys(#[from] PortError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

#[derive(Debug, Clone)]
pub struct NewPractice {
    pub id: PracticeId,
    pub time_zone: String,
    pub owner_emails: Vec<String>,
    pub trigger_url: String,
}

/// What onboarding prints, once: the secrets in clear for the PMS integrator.
#[derive(Debug, Clone, Serialize)]
pub struct Onboarded {
    pub practice_id: PracticeId,
    pub time_zone: String,
    pub webhook_secret: String,
    pub trigger_secret: String,
    pub policy: Policy,
}

pub async fn create_practice(
    repo: &dyn PracticeRepo,
    keys: &dyn KeyService,
    input: NewPractice,
    allow_loopback_http: bool,
) -> Result<Onboarded, AdminError> {
    practice::validate_time_zone(&input.time_zone)?;
    if input.owner_emails.is_empty() {
        return Err(ConfigError::OwnerEmail.into());
    }
    for e in &input.owner_emails {
        practice::validate_email(e)?;
    }
    practice::validate_trigger_url(&input.trigger_url, allow_loopback_http)?;
    let opened = OpenedSecrets {
        webhook: vec![WebhookSecret::generate()],
        trigger: WebhookSecret::generate(),
        link: LinkKey::generate(),
    };
    let sealed = secrets::seal(keys, &opened).await?;
    let p = Practice {
        id: input.id.clone(),
        time_zone: input.time_zone.clone(),
        owner_emails: input.owner_emails,
        trigger_url: input.trigger_url,
        secrets: sealed,
        policy: Policy::default(),
        cycle_days: BTreeMap::new(),
        avg_ticket: BTreeMap::new(),
        follow_up_days: BTreeMap::new(),
        win_back_multiple: None,
        disabled: false,
        endpoint_retired: false,
        last_scan_date: None,
        version: 1,
    };
    match repo.put_practice(&p, None).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(AdminError::Exists(input.id)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(practice_id = %p.id, event = "practice_created", "practice onboarded");
    Ok(Onboarded {
        practice_id: p.id,
        time_zone: p.time_zone,
        webhook_secret: opened.webhook[0].expose().to_owned(),
        trigger_secret: opened.trigger.expose().to_owned(),
        policy: p.policy,
    })
}

/// A change to one kind's policy; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct KindChange {
    pub mode: Option<Mode>,
    pub max_auto_per_day: Option<u32>,
    pub max_auto_value: Option<u32>,
}

pub async fn set_kind_policy(
    repo: &dyn PracticeRepo,
    id: &PracticeId,
    kind: ActionKind,
    change: KindChange,
) -> Result<Policy, AdminError> {
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        let before = p.policy.for_kind(kind);
        let after = KindPolicy {
            mode: change.mode.unwrap_or(before.mode),
            max_auto_per_day: change.max_auto_per_day.unwrap_or(before.max_auto_per_day),
            max_auto_value: change.max_auto_value.unwrap_or(before.max_auto_value),
        };
        p.policy.kinds.insert(kind, after.clone());
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                tracing::info!(practice_id = %id, event = "policy_changed", kind = kind.as_str(), mode_before = before.mode.as_str(),
                    mode_after = after.mode.as_str(), "policy changed");
                return Ok(p.policy);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}
