//! Onboarding and policy changes: what `pil practice create` and `pil policy set` do.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::action::ActionKind;
use crate::ids::PracticeId;
use crate::ports::{AuditLog, KeyService, PortError, PracticeRepo, SecretContext, StoreError};
use crate::practice::{
    self, ConfigError, KindPolicy, Mode, Policy, Practice, Rotated, SealedSecrets, SecretKind,
    TriggerUrl,
};
use crate::secrets::{self, OpenedSecrets};
use crate::signature::WebhookSecret;
use crate::token::LinkKey;
use crate::treatment::Treatment;

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
    /// A policy setting out of its range: names the setting and the rule.
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
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
    /// Checked where it was parsed ([`TriggerUrl::parse`]): a value of the type is valid.
    pub trigger_url: TriggerUrl,
}

/// What onboarding prints, once: the secrets in clear for the PMS integrator. `Debug`
/// leaves them out.
#[derive(Clone, Serialize)]
pub struct Onboarded {
    pub practice_id: PracticeId,
    pub time_zone: String,
    pub webhook_secret: String,
    pub trigger_secret: String,
    pub policy: Policy,
}

impl std::fmt::Debug for Onboarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onboarded")
            .field("practice_id", &self.practice_id)
            .field("time_zone", &self.time_zone)
            .field("webhook_secret", &"<redacted>")
            .field("trigger_secret", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

pub async fn create_practice(
    repo: &dyn PracticeRepo,
    keys: &dyn KeyService,
    input: NewPractice,
) -> Result<Onboarded, AdminError> {
    practice::validate_time_zone(&input.time_zone)?;
    if input.owner_emails.is_empty() {
        return Err(ConfigError::OwnerEmail.into());
    }
    for e in &input.owner_emails {
        practice::validate_email(e)?;
    }
    let opened = OpenedSecrets {
        webhook: vec![WebhookSecret::generate()],
        webhook_previous_until: None,
        trigger: WebhookSecret::generate(),
        trigger_previous: None,
        link: LinkKey::generate(),
        link_previous: None,
    };
    let mut sealed = secrets::seal_all(keys, &input.id, &opened).await?;
    sealed.tombstone = Some(
        keys.seal(
            &SecretContext::for_tombstone(&input.id),
            crate::tombstone::TombstoneKey::generate().expose(),
        )
        .await?,
    );
    let p = Practice::new(
        input.id.clone(),
        input.time_zone.clone(),
        input.owner_emails,
        input.trigger_url,
        sealed,
    );
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

/// A change to the policy; `None` leaves a setting as it is. The first three are per kind,
/// the rest practice-wide.
#[derive(Debug, Clone, Default)]
pub struct KindChange {
    pub mode: Option<Mode>,
    pub max_auto_per_day: Option<u32>,
    pub max_auto_value: Option<u32>,
    pub cooldown_days: Option<u32>,
    pub max_nudges_per_30_days: Option<u32>,
    /// `Some(None)` turns quiet hours off.
    pub quiet_hours: Option<Option<(u8, u8)>>,
    pub approval_expiry_hours: Option<u32>,
    pub slot_fill_k: Option<u32>,
    pub nightly_budget: Option<u32>,
}

impl KindChange {
    fn has_kind_settings(&self) -> bool {
        self.mode.is_some() || self.max_auto_per_day.is_some() || self.max_auto_value.is_some()
    }

    fn check(&self) -> Result<(), AdminError> {
        let bad = |field, rule| Err(AdminError::Invalid { field, rule });
        if self.cooldown_days.is_some_and(|d| d > 365) {
            return bad("cooldown_days", "at most 365");
        }
        if self
            .max_nudges_per_30_days
            .is_some_and(|n| n == 0 || n > 30)
        {
            return bad("max_nudges_per_30_days", "between 1 and 30");
        }
        if let Some(Some((a, b))) = self.quiet_hours
            && (a > 23 || b > 23 || a == b)
        {
            return bad("quiet_hours", "two different hours 0-23 (start-end)");
        }
        if self
            .approval_expiry_hours
            .is_some_and(|h| !(1..=720).contains(&h))
        {
            return bad("approval_expiry_hours", "between 1 and 720");
        }
        if self.slot_fill_k.is_some_and(|k| !(1..=20).contains(&k)) {
            return bad("slot_fill_k", "between 1 and 20");
        }
        if self.nightly_budget.is_some_and(|k| !(1..=500).contains(&k)) {
            return bad("nightly_budget", "between 1 and 500");
        }
        Ok(())
    }
}

/// Changes one kind's settings (see [`set_policy`]).
/// What policy changes need: the practice and its audit chain.
pub trait AdminStore: PracticeRepo + AuditLog {}
impl<T: PracticeRepo + AuditLog> AdminStore for T {}

pub async fn set_kind_policy(
    repo: &dyn AdminStore,
    id: &PracticeId,
    kind: ActionKind,
    change: KindChange,
) -> Result<Policy, AdminError> {
    set_policy(repo, id, Some(kind), change).await
}

/// Changes the policy: per-kind settings need `kind`; practice-wide ones do not. A
/// version-checked write (retried on a concurrent change); the change is logged with the
/// policy before and after (no PHI in a policy).
pub async fn set_policy(
    repo: &dyn AdminStore,
    id: &PracticeId,
    kind: Option<ActionKind>,
    change: KindChange,
) -> Result<Policy, AdminError> {
    set_policy_as(repo, id, kind, change, "admin").await
}

/// [`set_policy`] on behalf of `actor` (`admin` for the CLI, `owner:<hash>` from the settings
/// page); the change is appended to the audit chain with the policy before and after.
pub async fn set_policy_as(
    repo: &dyn AdminStore,
    id: &PracticeId,
    kind: Option<ActionKind>,
    change: KindChange,
    actor: &str,
) -> Result<Policy, AdminError> {
    change.check()?;
    if kind.is_none() && change.has_kind_settings() {
        return Err(AdminError::Invalid {
            field: "kind",
            rule: "required with mode, max_auto_per_day or max_auto_value",
        });
    }
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        let before = p.policy.clone();
        if let Some(kind) = kind {
            let was = p.policy.for_kind(kind);
            let after = KindPolicy {
                mode: change.mode.unwrap_or(was.mode),
                max_auto_per_day: change.max_auto_per_day.unwrap_or(was.max_auto_per_day),
                max_auto_value: change.max_auto_value.unwrap_or(was.max_auto_value),
            };
            p.policy.kinds.insert(kind, after);
        }
        let pol = &mut p.policy;
        pol.cooldown_days = change.cooldown_days.unwrap_or(pol.cooldown_days);
        pol.max_nudges_per_30_days = change
            .max_nudges_per_30_days
            .unwrap_or(pol.max_nudges_per_30_days);
        pol.quiet_hours = change.quiet_hours.unwrap_or(pol.quiet_hours);
        pol.approval_expiry_hours = change
            .approval_expiry_hours
            .unwrap_or(pol.approval_expiry_hours);
        pol.slot_fill_k = change.slot_fill_k.unwrap_or(pol.slot_fill_k);
        pol.nightly_budget = change.nightly_budget.unwrap_or(pol.nightly_budget);
        if p.policy == before {
            return Ok(p.policy);
        }
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                repo.record(id,
                    crate::audit::AuditEvent::new(actor, "policy_changed").details(
                        serde_json::json!({"kind": kind.map(ActionKind::as_str), "before": before, "after": p.policy}),
                    ),
                    jiff::Timestamp::now(),
                )
                .await;
                tracing::info!(practice_id = %id, event = "policy_changed", kind = kind.map(ActionKind::as_str).unwrap_or("-"),
                    before = %serde_json::to_string(&before).unwrap_or_default(),
                    after = %serde_json::to_string(&p.policy).unwrap_or_default(), "policy changed");
                return Ok(p.policy);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// A change to a practice's configuration; `None` (or an empty list) leaves a setting as it
/// is. Per-treatment overrides: `Some(n)` sets, `None` returns to the default.
#[derive(Debug, Clone, Default)]
pub struct PracticeUpdate {
    pub time_zone: Option<String>,
    pub owner_emails: Option<Vec<String>>,
    /// A new URL also re-enables an endpoint the PMS retired with 410.
    pub trigger_url: Option<TriggerUrl>,
    pub cycle_days: Vec<(Treatment, Option<u32>)>,
    pub avg_ticket: Vec<(Treatment, Option<u32>)>,
    pub follow_up_days: Vec<(Treatment, Option<u32>)>,
    /// Per kind: days past its due date a gap stays actionable; `None` returns to the default.
    pub stale_after_days: Vec<(ActionKind, Option<u32>)>,
    /// `Some(None)` returns to the default (2).
    pub win_back_multiple: Option<Option<u32>>,
    pub disabled: Option<bool>,
    /// Replaces the technical contacts (an empty list: nobody).
    pub technical_contacts: Option<Vec<String>>,
}

impl PracticeUpdate {
    fn check(&self) -> Result<(), AdminError> {
        let bad = |field, rule| Err(AdminError::Invalid { field, rule });
        if let Some(tz) = &self.time_zone {
            practice::validate_time_zone(tz)?;
        }
        if let Some(emails) = &self.owner_emails {
            if emails.is_empty() {
                return Err(ConfigError::OwnerEmail.into());
            }
            for e in emails {
                practice::validate_email(e)?;
            }
        }
        for e in self.technical_contacts.iter().flatten() {
            if practice::validate_email(e).is_err() {
                return bad("technical_contact", "an e-mail address");
            }
        }
        let out_of = |v: &[(Treatment, Option<u32>)], lo: u32, hi: u32| {
            v.iter().any(|(_, n)| n.is_some_and(|n| n < lo || n > hi))
        };
        if out_of(&self.cycle_days, 1, 1095) {
            return bad("cycle_days", "between 1 and 1095 days");
        }
        if out_of(&self.avg_ticket, 1, 100_000) {
            return bad("avg_ticket", "between 1 and 100000");
        }
        if out_of(&self.follow_up_days, 1, 365) {
            return bad("follow_up_days", "between 1 and 365 days");
        }
        if self
            .stale_after_days
            .iter()
            .any(|(k, n)| *k == ActionKind::SlotOffer || n.is_some_and(|n| !(1..=730).contains(&n)))
        {
            return bad(
                "stale_after_days",
                "a scanned kind (not slot_offer), between 1 and 730 days",
            );
        }
        if self
            .win_back_multiple
            .flatten()
            .is_some_and(|m| !(2..=10).contains(&m))
        {
            return bad("win_back_multiple", "between 2 and 10");
        }
        Ok(())
    }

    /// The names of the settings this update touches (what the audit record lists).
    fn fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        let mut add = |on: bool, name| {
            if on {
                f.push(name);
            }
        };
        add(self.time_zone.is_some(), "time_zone");
        add(self.owner_emails.is_some(), "owner_emails");
        add(self.trigger_url.is_some(), "trigger_url");
        add(!self.cycle_days.is_empty(), "cycle_days");
        add(!self.avg_ticket.is_empty(), "avg_ticket");
        add(!self.follow_up_days.is_empty(), "follow_up_days");
        add(!self.stale_after_days.is_empty(), "stale_after_days");
        add(self.win_back_multiple.is_some(), "win_back_multiple");
        add(self.disabled.is_some(), "disabled");
        f
    }
}

/// Changes a practice's configuration (version-checked, retried on a concurrent change) and
/// appends `practice_updated` (the settings touched, and the overrides before and after) to the
/// audit chain. Secrets are not changed here.
pub async fn update_practice(
    repo: &dyn AdminStore,
    id: &PracticeId,
    update: PracticeUpdate,
    actor: &str,
) -> Result<Practice, AdminError> {
    update.check()?;
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        let before = p.clone();
        if let Some(tz) = &update.time_zone {
            p.time_zone.clone_from(tz);
        }
        if let Some(e) = &update.owner_emails {
            p.owner_emails.clone_from(e);
        }
        if let Some(u) = &update.trigger_url {
            p.trigger_url = Some(u.clone());
            p.endpoint_retired = false;
        }
        let apply = |m: &mut BTreeMap<Treatment, u32>, v: &[(Treatment, Option<u32>)]| {
            for (t, n) in v {
                match n {
                    Some(n) => drop(m.insert(*t, *n)),
                    None => drop(m.remove(t)),
                }
            }
        };
        apply(&mut p.cycle_days, &update.cycle_days);
        apply(&mut p.avg_ticket, &update.avg_ticket);
        apply(&mut p.follow_up_days, &update.follow_up_days);
        for (k, n) in &update.stale_after_days {
            match n {
                Some(n) => drop(p.stale_after_days.insert(*k, *n)),
                None => drop(p.stale_after_days.remove(k)),
            }
        }
        if let Some(m) = update.win_back_multiple {
            p.win_back_multiple = m;
        }
        if let Some(d) = update.disabled {
            p.disabled = d;
        }
        if let Some(c) = &update.technical_contacts {
            p.technical_contacts.clone_from(c);
        }
        if p == before {
            return Ok(p);
        }
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                let overrides = |x: &Practice| {
                    serde_json::json!({"cycle_days": x.cycle_days, "avg_ticket": x.avg_ticket,
                        "follow_up_days": x.follow_up_days, "stale_after_days": x.stale_after_days, "win_back_multiple": x.win_back_multiple,
                        "disabled": x.disabled, "technical_contacts": x.technical_contacts.len()})
                };
                repo.record(id,
                    crate::audit::AuditEvent::new(actor, "practice_updated").details(
                        serde_json::json!({"fields": update.fields(), "before": overrides(&before), "after": overrides(&p)}),
                    ),
                    jiff::Timestamp::now(),
                )
                .await;
                tracing::info!(practice_id = %id, event = "practice_updated", fields = ?update.fields(), "practice updated");
                return Ok(p);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// Replaces the whole policy at once (the settings page): checked, version-checked, one audit
/// record with the policy before and after.
pub async fn replace_policy(
    repo: &dyn AdminStore,
    id: &PracticeId,
    policy: Policy,
    actor: &str,
) -> Result<Policy, AdminError> {
    let whole = KindChange {
        cooldown_days: Some(policy.cooldown_days),
        max_nudges_per_30_days: Some(policy.max_nudges_per_30_days),
        quiet_hours: Some(policy.quiet_hours),
        approval_expiry_hours: Some(policy.approval_expiry_hours),
        slot_fill_k: Some(policy.slot_fill_k),
        nightly_budget: Some(policy.nightly_budget),
        ..Default::default()
    };
    whole.check()?;
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        let before = p.policy.clone();
        if before == policy {
            return Ok(before);
        }
        p.policy = policy.clone();
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                repo.record(
                    id,
                    crate::audit::AuditEvent::new(actor, "policy_changed").details(
                        serde_json::json!({"kind": null, "before": before, "after": p.policy}),
                    ),
                    jiff::Timestamp::now(),
                )
                .await;
                tracing::info!(practice_id = %id, event = "policy_changed", actor, "policy replaced");
                return Ok(p.policy);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// The overlap a rotation gives the replaced secret unless told otherwise.
pub const DEFAULT_OVERLAP_HOURS: u32 = 72;
/// The longest overlap a rotation accepts (30 days).
pub const MAX_OVERLAP_HOURS: u32 = 720;

/// What `pil secret rotate` prints, once: the new secret in clear (`Debug` redacts it). A
/// new link key is never shown (`secret` is `null`): nobody outside the layer needs it.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRotation {
    pub practice_id: PracticeId,
    pub which: SecretKind,
    #[serde(serialize_with = "expose_secret")]
    pub secret: Option<WebhookSecret>,
    pub overlap_hours: u32,
    pub rotated_at: Timestamp,
    /// The replaced secret works until this instant (exclusive): inbound events signed with
    /// it are accepted, triggers carry a signature with it too, or links signed with it still
    /// work. `rotated_at` for no overlap.
    pub old_valid_until: Timestamp,
    /// Set when `force` dropped a secret from an earlier rotation that was still inside its
    /// overlap: when it would have stopped working.
    pub older_secret_was_valid_until: Option<Timestamp>,
}

fn expose_secret<S: serde::Serializer>(
    s: &Option<WebhookSecret>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_str(s.expose()),
        None => ser.serialize_none(),
    }
}

/// Why a rotation was refused beyond the common [`AdminError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The last rotation's overlap is still running: rotating again would stop the secret
    /// it replaced at once (at most two are kept).
    #[error(
        "the {which} secret replaced by the last rotation still works until {until}, and the PMS may still be using it; rotating again now would stop it at once (at most two secrets are kept). Wait until then, or pass --force to drop it now"
    )]
    OverlapRunning {
        which: &'static str,
        until: Timestamp,
    },
}

impl From<StoreError> for RotateError {
    fn from(e: StoreError) -> Self {
        Self::Admin(e.into())
    }
}

/// Replaces the practice's webhook or trigger secret, or its link key, with a fresh one,
/// keeping the replaced one for `overlap_hours` (see
/// [`SealedSecrets::rotate`](crate::practice::SealedSecrets::rotate)): an old webhook secret
/// keeps verifying inbound events, an old trigger secret keeps signing triggers alongside the
/// new one, links signed with an old link key keep working, until `now + overlap`. With no
/// overlap the old one stops at once: a link rotation then invalidates every outstanding
/// approval and settings link.
///
/// Refused while an earlier rotation's overlap is running, unless `force`. The new secret is
/// sealed once; the practice write is conditional on the version read and retried on a
/// concurrent change. Before each retry the stored record is checked for the new secret, so a
/// write that landed but answered with an error (a lost reply, a retried request that then
/// failed its condition) is recognised instead of rotated a second time. Appends
/// `secret_rotated` (which, overlap, until when; never the secret) to the audit chain.
pub async fn rotate_secret(
    repo: &dyn AdminStore,
    keys: &dyn KeyService,
    id: &PracticeId,
    which: SecretKind,
    overlap_hours: u32,
    force: bool,
    now: Timestamp,
) -> Result<SecretRotation, RotateError> {
    if overlap_hours > MAX_OVERLAP_HOURS {
        return Err(AdminError::Invalid {
            field: "overlap_hours",
            rule: "between 0 and 720 (30 days)",
        }
        .into());
    }
    let current = repo
        .get_practice(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(id.clone()))?;
    refuse_during_overlap(&current.secrets, which, force, now)?;
    let (secret, sealed) = match which {
        SecretKind::Tombstone => {
            return Err(AdminError::Invalid {
                field: "which",
                rule: "webhook, trigger or link (the tombstone key is never rotated)",
            }
            .into());
        }
        SecretKind::Link => {
            let key = LinkKey::generate();
            let sealed = secrets::seal_link(keys, id, &key)
                .await
                .map_err(AdminError::Keys)?;
            (None, sealed)
        }
        SecretKind::Webhook | SecretKind::Trigger => {
            let secret = WebhookSecret::generate();
            let sealed = secrets::seal_one(keys, &SecretContext::for_any(id, which), &secret)
                .await
                .map_err(AdminError::Keys)?;
            (Some(secret), sealed)
        }
    };
    let overlap = jiff::SignedDuration::from_hours(i64::from(overlap_hours));
    let mut tried: Option<Rotated> = None;
    let mut last_err = StoreError::Conflict;
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        if let Some(done) = tried.filter(|_| holds(&p.secrets, which, &sealed)) {
            return Ok(finish(repo, id, which, secret, overlap_hours, now, done).await);
        }
        refuse_during_overlap(&p.secrets, which, force, now)?;
        let rotated = p.secrets.rotate(which, sealed.clone(), now, overlap);
        tried = Some(rotated);
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                return Ok(finish(repo, id, which, secret, overlap_hours, now, rotated).await);
            }
            Err(e @ (StoreError::Conflict | StoreError::Transient(_))) => last_err = e,
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err.into())
}

/// Whether the stored secrets hold `sealed` as the current `which` secret.
fn holds(s: &SealedSecrets, which: SecretKind, sealed: &str) -> bool {
    match which {
        SecretKind::Webhook => s.webhook.first().is_some_and(|w| w == sealed),
        SecretKind::Trigger => s.trigger == sealed,
        SecretKind::Link => s.link == sealed,
        SecretKind::Tombstone => s.tombstone.as_deref() == Some(sealed),
    }
}

fn refuse_during_overlap(
    s: &SealedSecrets,
    which: SecretKind,
    force: bool,
    now: Timestamp,
) -> Result<(), RotateError> {
    match s.overlap_running(which, now) {
        Some(until) if !force => Err(RotateError::OverlapRunning {
            which: which.as_str(),
            until,
        }),
        _ => Ok(()),
    }
}

async fn finish(
    repo: &dyn AdminStore,
    id: &PracticeId,
    which: SecretKind,
    secret: Option<WebhookSecret>,
    overlap_hours: u32,
    now: Timestamp,
    rotated: Rotated,
) -> SecretRotation {
    repo.record(
        id,
        crate::audit::AuditEvent::new("admin", "secret_rotated").details(serde_json::json!({
            "which": which.as_str(),
            "overlap_hours": overlap_hours,
            "old_valid_until": rotated.old_valid_until,
            "older_secret_was_valid_until": rotated.cut_short,
        })),
        now,
    )
    .await;
    tracing::info!(practice_id = %id, event = "secret_rotated", which = which.as_str(),
        overlap_hours, old_valid_until = %rotated.old_valid_until,
        older_dropped = rotated.cut_short.is_some(), "secret rotated");
    SecretRotation {
        practice_id: id.clone(),
        which,
        secret,
        overlap_hours,
        rotated_at: now,
        old_valid_until: rotated.old_valid_until,
        older_secret_was_valid_until: rotated.cut_short,
    }
}

/// What `pil secret reseal` did to one practice (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resealed {
    pub practice_id: PracticeId,
    /// Values that were sealed without an encryption context and are now sealed under theirs.
    pub resealed: usize,
    /// Values that were bound to their context already (left as they are).
    pub already_bound: usize,
}

/// Seals again, under its [`SecretContext`], every secret of the practice that was sealed
/// before secrets were bound to one (no encryption context); the secrets themselves do not
/// change, so nothing changes for the PMS. A value that opens under its context already is
/// left alone, so running it twice does nothing the second time. One that opens neither way
/// (sealed for another practice or purpose, or by another key) fails the command and nothing
/// is written. The write is version-checked (retried on a concurrent change, resealing what
/// the re-read record holds); a change appends `secrets_resealed` (how many; never a secret)
/// to the audit chain.
pub async fn reseal_secrets(
    repo: &dyn AdminStore,
    keys: &dyn KeyService,
    id: &PracticeId,
    now: Timestamp,
) -> Result<Resealed, AdminError> {
    for _ in 0..5 {
        let mut p = repo
            .get_practice(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.clone()))?;
        let (mut resealed, mut already_bound) = (0, 0);
        let s = &mut p.secrets;
        let mut slots: Vec<(SecretKind, &mut String)> = Vec::new();
        for w in &mut s.webhook {
            slots.push((SecretKind::Webhook, w));
        }
        slots.push((SecretKind::Trigger, &mut s.trigger));
        if let Some(prev) = &mut s.trigger_previous {
            slots.push((SecretKind::Trigger, &mut prev.sealed));
        }
        slots.push((SecretKind::Link, &mut s.link));
        if let Some(prev) = &mut s.link_previous {
            slots.push((SecretKind::Link, &mut prev.sealed));
        }
        if let Some(t) = &mut s.tombstone {
            slots.push((SecretKind::Tombstone, t));
        }
        for (purpose, sealed) in slots {
            let context = SecretContext::for_any(id, purpose);
            if keys.open(&context, sealed).await.is_ok() {
                already_bound += 1;
                continue;
            }
            let plain = keys.open_unbound(sealed).await.map_err(|_| {
                AdminError::Keys(PortError::Permanent(format!(
                    "a {} secret opens neither under its encryption context nor without one",
                    purpose.as_str()
                )))
            })?;
            *sealed = keys.seal(&context, &plain).await?;
            resealed += 1;
        }
        // A practice from before tombstones existed gets its tombstone key here.
        if s.tombstone.is_none() {
            s.tombstone = Some(
                keys.seal(
                    &SecretContext::for_tombstone(id),
                    crate::tombstone::TombstoneKey::generate().expose(),
                )
                .await?,
            );
            resealed += 1;
        }
        let out = Resealed {
            practice_id: id.clone(),
            resealed,
            already_bound,
        };
        if resealed == 0 {
            return Ok(out);
        }
        let expected = p.version;
        p.version += 1;
        match repo.put_practice(&p, Some(expected)).await {
            Ok(()) => {
                repo.record(
                    id,
                    crate::audit::AuditEvent::new("admin", "secrets_resealed").details(
                        serde_json::json!({"resealed": resealed, "already_bound": already_bound}),
                    ),
                    now,
                )
                .await;
                tracing::info!(practice_id = %id, event = "secrets_resealed", resealed, already_bound, "secrets resealed");
                return Ok(out);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}
