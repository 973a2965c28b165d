//! trigger-emitter's domain: deliver one approved action to the PMS, once.
//!
//! A lease on the action (a conditional write on its revision) lets one emitter deliver at a
//! time; the `webhook-id` is the trigger id on every attempt so the PMS can de-duplicate a
//! retry after a crash; `delivered` is recorded by a conditional write.

use jiff::SignedDuration;
use serde::Serialize;

use crate::action::{Action, ActionStatus, Withdrawal};
use crate::ids::{ActionId, PracticeId};
use crate::ports::{
    ActionRepo, Clock, EntityRepo, PortError, PracticeRepo, StoreError, TransportError,
    TriggerTransport,
};
use crate::secrets::SecretCache;
use crate::service::consent;
use crate::signature::{self, WebhookSecret};
use crate::state::{Entity, EntityKey};

pub struct EmitterDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    /// Slot offers: the slot is checked again before the trigger goes out.
    pub entities: &'a dyn EntityRepo,
    /// ... and whether a booking holds it (one that arrived too early to mark it).
    pub slots: &'a dyn crate::ports::SlotIndex,
    pub actions: &'a dyn ActionRepo,
    pub transport: &'a dyn TriggerTransport,
    /// Deliveries, failures and withdrawals are appended to the audit chain.
    pub audit: &'a dyn crate::ports::AuditLog,
    pub secrets: &'a SecretCache,
    pub clock: &'a dyn Clock,
    pub policy: RetryPolicy,
    /// What the owners must be told (triggers stopped).
    pub notices: &'a dyn crate::ports::NoticeSink,
}

/// Backoff: `base * 2^(attempt-1)`, capped, with ±20 % jitter; `Retry-After` is a floor.
/// Retries stop at the horizon: `horizon_seconds` after the action was approved, or the
/// action's expiry, whichever comes first (or after `max_attempts`, a backstop).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub horizon_seconds: i64,
    pub base_seconds: u64,
    pub cap_seconds: u64,
    /// How long one delivery attempt may hold the action.
    pub lease_seconds: i64,
    /// In quiet hours, look again after at most this long (SQS visibility: at most 12 h).
    pub quiet_recheck_seconds: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 40,
            horizon_seconds: 86_400,
            base_seconds: 30,
            cap_seconds: 3600,
            lease_seconds: 60,
            quiet_recheck_seconds: 43_200,
        }
    }
}

impl RetryPolicy {
    /// When retries of `action` stop: the horizon after its approval, or its expiry if
    /// sooner.
    pub fn gives_up_at(&self, action: &Action) -> jiff::Timestamp {
        let from = action.decided_at.unwrap_or(action.created_at);
        (from + SignedDuration::from_secs(self.horizon_seconds)).min(action.expires_at)
    }

    pub fn delay(&self, attempt: u32, retry_after: Option<u64>, jitter_unit: f64) -> u64 {
        let exp = self
            .base_seconds
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.cap_seconds) as f64;
        let jittered = (capped * (0.8 + 0.4 * jitter_unit.clamp(0.0, 1.0))).round() as u64;
        // SQS visibility can be at most 12 h.
        jittered.max(retry_after.unwrap_or(0)).clamp(1, 43_200)
    }
}

/// What became of one delivery attempt. Each maps to one SQS decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitOutcome {
    /// 2xx or 409: the PMS has it, this long after the approval (when it has one).
    Delivered { since_approval_ms: Option<u64> },
    /// Delivered before (a redelivery): nothing sent.
    AlreadyDelivered,
    /// Not ours to send (rejected, unknown, retired endpoint): acknowledged, nothing sent.
    Dropped(&'static str),
    /// Try again after this many seconds (SQS keeps the message).
    Retry { after_seconds: u64, reason: String },
    /// Permanent failure: recorded, and the message goes to the dead-letter queue.
    DeadLetter(String),
    /// The practice's quiet hours: deliver when they end (SQS keeps the message; not an
    /// attempt).
    Defer { after_seconds: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("secrets: {0}")]
    Port(#[from] PortError),
}

/// The trigger on the wire, version 1 (docs/contracts.md, Triggers).
#[derive(Debug, Clone, Serialize)]
pub struct Trigger<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub trigger_id: String,
    pub practice_id: &'a str,
    pub patient_ref: &'a str,
    pub treatment: &'static str,
    pub reason: &'static str,
    pub due_since: String,
    pub template: &'static str,
    pub slot: Option<serde_json::Value>,
    pub expires_at: String,
}

impl<'a> Trigger<'a> {
    pub fn of(a: &'a Action) -> Self {
        Self {
            kind: a.kind.wire_type(),
            trigger_id: a.id.trigger_id(),
            practice_id: a.practice_id.as_str(),
            patient_ref: a.patient_ref.as_str(),
            treatment: a.treatment.as_str(),
            reason: a.reason.as_str(),
            due_since: a.due_since.to_string(),
            template: a.kind.default_template(),
            slot: a.slot.as_ref().map(|s| {
                serde_json::json!({
                    "slot_ref": s.slot_ref.as_str(),
                    "starts_at": s.starts_at.to_string(),
                    "provider_ref": s.provider_ref.as_ref().map(|p| p.as_str()),
                })
            }),
            expires_at: a.expires_at.to_string(),
        }
    }
}

/// Delivers the approved action's trigger once (see [`EmitOutcome`]). A trigger that fails for
/// good for a reason other than a retired endpoint (which has its own notice) also queues a
/// notice for the owners; approval-check sends at most one a day.
pub async fn emit(
    deps: &EmitterDeps<'_>,
    practice_id: &PracticeId,
    action_id: &ActionId,
    jitter_unit: f64,
) -> Result<EmitOutcome, EmitError> {
    let out = emit_once(deps, practice_id, action_id, jitter_unit).await?;
    if let EmitOutcome::DeadLetter(reason) = &out
        && reason != "endpoint_gone_410"
    {
        let date = match deps.practices.get_practice(practice_id).await {
            Ok(Some(p)) => p.local_date(deps.clock.now()),
            _ => deps.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date(),
        };
        let notice = crate::ports::DomainEvent::TriggersFailing {
            practice_id: practice_id.clone(),
            date,
            reason: failure_code(reason).to_owned(),
        };
        tell_owners(deps, practice_id, &notice).await;
    }
    Ok(out)
}

/// Queues a notice for the practice's owners (approval-check e-mails it). A notice that
/// cannot be queued is an alert; the trigger's own outcome stands.
async fn tell_owners(
    deps: &EmitterDeps<'_>,
    practice_id: &PracticeId,
    notice: &crate::ports::DomainEvent,
) {
    if let Err(e) = deps.notices.notice(notice).await {
        tracing::error!(practice_id = %practice_id, error = %e, notice = notice.detail_type(),
            alert = "owner_notice_failed", "owners not told");
    }
}

/// A dead letter's reason as a bounded code: `http_400`…`http_499`, or one of the named ones.
fn failure_code(reason: &str) -> &'static str {
    const NAMED: [&str; 5] = [
        "unsignable_body",
        "trigger_url_refused",
        "retries_exhausted",
        "retry_horizon_reached",
        "http_4xx",
    ];
    if reason.starts_with("http_4") {
        return "http_4xx";
    }
    NAMED
        .into_iter()
        .find(|n| reason.starts_with(n))
        .unwrap_or("failed")
}

async fn emit_once(
    deps: &EmitterDeps<'_>,
    practice_id: &PracticeId,
    action_id: &ActionId,
    jitter_unit: f64,
) -> Result<EmitOutcome, EmitError> {
    let Some(action) = deps.actions.get_action(practice_id, action_id).await? else {
        return Ok(EmitOutcome::Dropped("unknown_action"));
    };
    match action.status {
        ActionStatus::Approved => {}
        ActionStatus::Delivered => return Ok(EmitOutcome::AlreadyDelivered),
        _ => return Ok(EmitOutcome::Dropped("not_approved")),
    }
    let now = deps.clock.now();
    if let Some(until) = action.lease_until
        && until > now
    {
        let wait = until.duration_since(now).as_secs().max(1) as u64;
        return Ok(EmitOutcome::Retry {
            after_seconds: wait,
            reason: "leased_by_another_emitter".into(),
        });
    }
    let Some(practice) = deps.practices.get_practice(practice_id).await? else {
        return Ok(EmitOutcome::Dropped("unknown_practice"));
    };
    if practice.disabled {
        fail(deps, &action, "practice_disabled").await?;
        return Ok(EmitOutcome::Dropped("practice_disabled"));
    }
    if practice.endpoint_retired {
        fail(deps, &action, "endpoint_retired").await?;
        return Ok(EmitOutcome::Dropped("endpoint_retired"));
    }
    let Some(trigger_url) = practice.trigger_url.as_ref() else {
        // The stored URL broke the rules when read back (see `Practice::trigger_url`).
        fail(deps, &action, "trigger_url_refused").await?;
        tracing::error!(practice_id = %practice.id, action_id = %action.id, alert = "trigger_url_refused", "stored trigger URL breaks the URL rules: no triggers until `pil practice update --trigger-url`");
        return Ok(EmitOutcome::Dropped("trigger_url_refused"));
    };
    if now >= action.expires_at {
        fail(deps, &action, "expired_before_delivery").await?;
        return Ok(EmitOutcome::Dropped("expired_before_delivery"));
    }
    if let Some(slot) = &action.slot {
        let stored = deps
            .entities
            .get_entity(practice_id, &EntityKey::Slot(slot.slot_ref.clone()))
            .await?;
        let taken = match stored.map(|s| s.value) {
            Some(Entity::Slot(s)) => {
                s.filled
                    || crate::service::slots::holder(deps.entities, deps.slots, practice_id, &s)
                        .await?
                        .is_some()
            }
            _ => false,
        };
        if taken {
            if crate::service::slots::withdraw(deps.actions, practice_id, &action.id).await? {
                audit(
                    deps,
                    &action,
                    "offer_withdrawn",
                    serde_json::json!({"reason": "slot_filled"}),
                )
                .await;
            }
            return Ok(EmitOutcome::Dropped("slot_filled"));
        }
    }
    if let Some(until) = practice.policy.quiet_until(&practice.tz(), now) {
        let wait = until.duration_since(now).as_secs().max(1) as u64;
        // SQS visibility is at most 12 h: a longer window defers again when it comes back.
        return Ok(EmitOutcome::Defer {
            after_seconds: wait.min(deps.policy.quiet_recheck_seconds).clamp(1, 43_200),
        });
    }
    // Consent, before the lease: an opt-out since the approval withdraws the action.
    if consent::opted_out(deps.entities, practice_id, &action.patient_ref).await? {
        return withdrawn_for_opt_out(deps, &action).await;
    }
    // Take the lease (and count the attempt) by a conditional write on the revision.
    let mut leased = action.clone();
    leased.attempts += 1;
    leased.lease_until = Some(now + SignedDuration::from_secs(deps.policy.lease_seconds));
    if !deps.actions.update_action(&leased).await? {
        return Ok(EmitOutcome::Retry {
            after_seconds: 1,
            reason: "lost_lease_race".into(),
        });
    }
    leased.rev += 1;
    // And once more just before the POST: an opt-out accepted while the lease was taken.
    // (Its withdrawal may have lost its race with the lease; this one re-reads.)
    if consent::opted_out(deps.entities, practice_id, &action.patient_ref).await? {
        return withdrawn_for_opt_out(deps, &leased).await;
    }

    let body = serde_json::to_vec(&Trigger::of(&leased)).unwrap_or_default();
    let trigger_id = leased.id.trigger_id();
    // During a rotation's overlap the trigger carries a signature with the new and with the
    // replaced secret, so the PMS verifies it whichever one it holds.
    let signers = deps
        .secrets
        .trigger_signers_at(&practice.id, &practice.secrets, now)
        .await?;
    let signers: Vec<&WebhookSecret> = signers.iter().collect();
    let Some(headers) = signature::signed_headers(&signers, &trigger_id, now.as_second(), &body)
    else {
        return Ok(EmitOutcome::DeadLetter("unsignable_body".into()));
    };
    let reply = deps.transport.post(trigger_url, &headers, body).await;
    let attempt = leased.attempts;
    match reply {
        Ok(r) if (200..300).contains(&r.status) || r.status == 409 => {
            let done = record_delivered(deps, leased).await?;
            audit(deps, &done, "trigger_delivered", serde_json::json!({"kind": done.kind.as_str(), "status": r.status, "attempt": attempt})).await;
            let since_approval_ms = done
                .decided_at
                .zip(done.delivered_at)
                .and_then(|(a, d)| u64::try_from((d - a).get_milliseconds()).ok());
            Ok(EmitOutcome::Delivered { since_approval_ms })
        }
        Ok(r) if r.status == 410 => {
            let mut p = practice.clone();
            p.endpoint_retired = true;
            p.version += 1;
            // Best effort: if a concurrent config change won, the next attempt sees 410 again.
            // Only the writer that retires the endpoint tells the owners: one notice, however
            // many triggers were in flight.
            let retired = deps
                .practices
                .put_practice(&p, Some(practice.version))
                .await
                .is_ok();
            fail(deps, &leased, "endpoint_gone_410").await?;
            tracing::error!(practice_id = %practice.id, action_id = %leased.id, alert = "trigger_endpoint_retired", "PMS answered 410: endpoint retired, triggers stopped");
            // If this notice is lost, the digest still says triggers stopped.
            if retired {
                let notice = crate::ports::DomainEvent::EndpointRetired {
                    practice_id: practice.id.clone(),
                };
                tell_owners(deps, &practice.id, &notice).await;
            }
            Ok(EmitOutcome::DeadLetter("endpoint_gone_410".into()))
        }
        Ok(r) if r.status == 429 || r.status >= 500 => {
            retry_or_give_up(
                deps,
                &leased,
                attempt,
                r.retry_after,
                format!("http_{}", r.status),
                jitter_unit,
            )
            .await
        }
        Ok(r) => {
            let reason = format!("http_{}", r.status);
            fail(deps, &leased, &reason).await?;
            Ok(EmitOutcome::DeadLetter(reason))
        }
        Err(TransportError::Timeout) => {
            retry_or_give_up(deps, &leased, attempt, None, "timeout".into(), jitter_unit).await
        }
        Err(TransportError::Connect) => {
            retry_or_give_up(deps, &leased, attempt, None, "connect".into(), jitter_unit).await
        }
        Err(TransportError::Refused) => {
            fail(deps, &leased, "trigger_url_refused").await?;
            tracing::error!(practice_id = %practice.id, action_id = %leased.id, alert = "trigger_url_refused", "the trigger transport refused the practice's URL (http outside the local stack)");
            Ok(EmitOutcome::DeadLetter("trigger_url_refused".into()))
        }
    }
}

/// Records what happened: the PMS has the trigger. Normally one conditional write on the
/// leased revision; if something changed the action meanwhile (an opt-out withdrew it after
/// the last consent check, while the POST was in flight), the stored action is re-read and
/// still marked delivered, because it was: the PMS, which holds the consent too, decides.
async fn record_delivered(deps: &EmitterDeps<'_>, leased: Action) -> Result<Action, EmitError> {
    let mut cur = leased;
    for _ in 0..5 {
        let mut done = cur.clone();
        done.status = ActionStatus::Delivered;
        done.delivered_at = Some(deps.clock.now());
        done.lease_until = None;
        done.last_error = None;
        done.withdrawal = None;
        if deps.actions.update_action(&done).await? {
            return Ok(done);
        }
        match deps.actions.get_action(&cur.practice_id, &cur.id).await? {
            Some(a) if a.status != ActionStatus::Delivered => {
                tracing::warn!(practice_id = %a.practice_id, action_id = %a.id, status = a.status.as_str(),
                    reason = "changed_during_post", "trigger delivered while the action changed");
                cur = a;
            }
            Some(a) => return Ok(a),
            None => return Ok(cur),
        }
    }
    Err(StoreError::Conflict.into())
}

/// The patient opted out: the action is withdrawn (reason `opted_out`) and nothing is sent.
async fn withdrawn_for_opt_out(
    deps: &EmitterDeps<'_>,
    action: &Action,
) -> Result<EmitOutcome, EmitError> {
    consent::withdraw(
        deps.actions,
        deps.audit,
        deps.clock,
        &action.practice_id,
        &action.id,
        Withdrawal::OptedOut,
    )
    .await?;
    tracing::info!(practice_id = %action.practice_id, action_id = %action.id, reason = "opted_out",
        "trigger withdrawn before delivery");
    Ok(EmitOutcome::Dropped("opted_out"))
}

async fn retry_or_give_up(
    deps: &EmitterDeps<'_>,
    leased: &Action,
    attempt: u32,
    retry_after: Option<u64>,
    reason: String,
    jitter: f64,
) -> Result<EmitOutcome, EmitError> {
    if attempt >= deps.policy.max_attempts {
        fail(deps, leased, "retries_exhausted").await?;
        return Ok(EmitOutcome::DeadLetter(format!(
            "retries_exhausted:{reason}"
        )));
    }
    let after_seconds = deps.policy.delay(attempt, retry_after, jitter);
    let next = deps.clock.now() + SignedDuration::from_secs(after_seconds as i64);
    if next >= deps.policy.gives_up_at(leased) {
        fail(deps, leased, "retry_horizon_reached").await?;
        return Ok(EmitOutcome::DeadLetter(format!(
            "retry_horizon_reached:{reason}"
        )));
    }
    let mut released = leased.clone();
    released.lease_until = None;
    released.last_error = Some(reason.clone());
    deps.actions.update_action(&released).await?;
    Ok(EmitOutcome::Retry {
        after_seconds,
        reason,
    })
}

async fn fail(deps: &EmitterDeps<'_>, action: &Action, reason: &str) -> Result<(), EmitError> {
    let mut failed = action.clone();
    failed.status = ActionStatus::Failed;
    failed.lease_until = None;
    failed.last_error = Some(reason.to_owned());
    if deps.actions.update_action(&failed).await? {
        audit(
            deps,
            action,
            "trigger_failed",
            serde_json::json!({"kind": action.kind.as_str(), "reason": reason}),
        )
        .await;
    }
    Ok(())
}

async fn audit(
    deps: &EmitterDeps<'_>,
    action: &Action,
    event: &'static str,
    details: serde_json::Value,
) {
    deps.audit
        .record(
            &action.practice_id,
            crate::audit::AuditEvent::new("emitter", event)
                .action(&action.id)
                .details(details),
            deps.clock.now(),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 6,
            horizon_seconds: 86_400,
            base_seconds: 30,
            cap_seconds: 600,
            lease_seconds: 60,
            quiet_recheck_seconds: 43_200,
        };
        assert_eq!(p.delay(1, None, 0.5), 30);
        assert_eq!(p.delay(2, None, 0.5), 60);
        assert_eq!(p.delay(10, None, 0.5), 600);
        assert_eq!(p.delay(1, Some(120), 0.5), 120);
        assert!(
            (24..=36).contains(&p.delay(1, None, 0.0))
                && (24..=36).contains(&p.delay(1, None, 1.0))
        );
    }

    /// A stored URL refused when read back, and a URL the transport refuses: nothing is sent,
    /// the action fails with `trigger_url_refused`, and no retry follows.
    #[test]
    fn a_refused_trigger_url_sends_nothing_and_fails_the_action() {
        use crate::action::ActionStatus;
        use crate::ports::{ActionRepo, PracticeRepo};
        use crate::service::admin::{NewPractice, create_practice};
        use crate::testing::World;
        use futures::executor::block_on as run;
        let now: jiff::Timestamp = "2026-11-02T17:00:00Z".parse().unwrap();
        let world = World::new(now);
        let pid = PracticeId::parse("url-clinic").unwrap();
        run(create_practice(
            &world.store,
            world.keys(),
            NewPractice {
                id: pid.clone(),
                time_zone: "UTC".into(),
                owner_emails: vec!["owner@url.example".into()],
                trigger_url: "https://pms.example.com/t".parse().unwrap(),
            },
        ))
        .unwrap();
        let mut p = run(world.store.get_practice(&pid)).unwrap().unwrap();
        p.policy.quiet_hours = None;
        let patient = crate::ids::OpaqueRef::parse("pt_Xk29dLq7ZpR4mN8vT3wY").unwrap();
        let approved = |n: &str| crate::action::Action {
            status: ActionStatus::Approved,
            ..crate::testing::sample_action("url-clinic", &patient, &[n])
        };
        let deps = world.emitter();
        let failed_with = |a: &crate::action::Action| {
            let stored = run(world.store.get_action(&pid, &a.id)).unwrap().unwrap();
            (stored.status, stored.last_error)
        };
        let refused = (ActionStatus::Failed, Some("trigger_url_refused".to_owned()));

        // The transport's own check (deployed: http is never sent).
        let one = approved("one");
        assert!(run(world.store.create_action(&one)).unwrap());
        let expected = p.version;
        p.version += 1;
        run(world.store.put_practice(&p, Some(expected))).unwrap();
        world.transport.reply(Err(TransportError::Refused));
        let out = run(emit(&deps, &pid, &one.id, 0.5)).unwrap();
        assert_eq!(out, EmitOutcome::DeadLetter("trigger_url_refused".into()));
        assert_eq!(failed_with(&one), refused);

        // A practice whose stored URL was refused on read.
        let two = approved("two");
        assert!(run(world.store.create_action(&two)).unwrap());
        p.trigger_url = None;
        let expected = p.version;
        p.version += 1;
        run(world.store.put_practice(&p, Some(expected))).unwrap();
        let posts = world.transport.posts().len();
        let out = run(emit(&deps, &pid, &two.id, 0.5)).unwrap();
        assert_eq!(out, EmitOutcome::Dropped("trigger_url_refused"));
        assert_eq!(world.transport.posts().len(), posts, "nothing sent");
        assert_eq!(failed_with(&two), refused);
    }

    #[test]
    fn the_horizon_is_a_day_after_approval_or_the_expiry_if_sooner() {
        let p = RetryPolicy::default();
        let patient = crate::ids::OpaqueRef::parse("pt_Xk29dLq7ZpR4mN8vT3wY").unwrap();
        let mut a = crate::testing::sample_action("demo-clinic", &patient, &["horizon"]);
        let approved: jiff::Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        a.decided_at = Some(approved);
        a.expires_at = "2026-05-10T00:00:00Z".parse().unwrap();
        assert_eq!(
            p.gives_up_at(&a),
            "2026-05-02T10:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        a.expires_at = "2026-05-01T18:00:00Z".parse().unwrap();
        assert_eq!(p.gives_up_at(&a), a.expires_at);
        // With the default backoff, the attempts fit the horizon before the backstop.
        let mut t = 0u64;
        let mut n = 1;
        while t < 86_400 {
            t += p.delay(n, None, 0.5);
            n += 1;
        }
        assert!(n <= p.max_attempts, "{n} attempts in a day");
    }
}
