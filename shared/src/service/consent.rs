//! Consent at every step that can lead to a message.
//!
//! The scan and slot fill skip an opted-out patient; that is not enough, because an opt-out
//! can arrive after the scan. So consent is read again when the owner approves, when the
//! policy auto-approves, when the emitter takes its lease and just before it POSTs, and an
//! opt-out withdraws the patient's open actions at once (proposed, pending, approved, deferred
//! by quiet hours, waiting for a retry): status `withdrawn`, reason `opted_out`.
//!
//! What no check can close: a trigger already POSTed (or in flight after the last check) has
//! reached the PMS, which holds the patient's consent itself and must honour it there
//! (docs/contracts.md, Consent).

use crate::action::{Action, ActionStatus, Withdrawal};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::ports::{ActionRepo, AuditLog, Clock, EntityRepo, PatientIndex, StoreError};
use crate::state::{Entity, EntityKey};

/// Conditional writes that lost a race are re-read and retried this many times.
const MAX_CONFLICT_RETRIES: usize = 5;

/// Whether the patient has opted out (a consistent read of the consent record).
pub async fn opted_out(
    entities: &dyn EntityRepo,
    practice: &PracticeId,
    patient: &OpaqueRef,
) -> Result<bool, StoreError> {
    let stored = entities
        .get_entity(practice, &EntityKey::Consent(patient.clone()))
        .await?;
    Ok(matches!(stored.map(|s| s.value), Some(Entity::Consent(c)) if c.is_opted_out()))
}

/// May still reach the patient: not final, and not delivered.
pub fn is_open(a: &Action) -> bool {
    !a.status.is_final()
}

/// Withdraws one action for `why` unless it is final already (a delivered trigger stays
/// delivered). Re-reads on a lost race (an emitter taking its lease, say). Returns whether
/// this call withdrew it; the withdrawal is appended to the audit chain.
pub async fn withdraw(
    actions: &dyn ActionRepo,
    audit: &dyn AuditLog,
    clock: &dyn Clock,
    practice: &PracticeId,
    id: &ActionId,
    why: Withdrawal,
) -> Result<bool, StoreError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(a) = actions.get_action(practice, id).await? else {
            return Ok(false);
        };
        if !is_open(&a) {
            return Ok(false);
        }
        let mut next = a.clone();
        next.status = ActionStatus::Withdrawn;
        next.withdrawal = Some(why);
        next.lease_until = None;
        next.last_error = Some(why.as_str().into());
        if actions.update_action(&next).await? {
            crate::audit::record(
                audit,
                practice,
                crate::audit::AuditEvent::new("consent", "action_withdrawn")
                    .action(id)
                    .details(serde_json::json!({
                        "kind": a.kind.as_str(),
                        "from": a.status.as_str(),
                        "reason": why.as_str(),
                    })),
                clock.now(),
            )
            .await;
            return Ok(true);
        }
    }
    Err(StoreError::Conflict)
}

/// An opt-out's effect on what is already planned: every open action of the patient is
/// withdrawn. Idempotent (a redelivered opt-out finds nothing open). Returns how many this
/// call withdrew.
pub async fn withdraw_open(
    actions: &dyn ActionRepo,
    patients: &dyn PatientIndex,
    audit: &dyn AuditLog,
    clock: &dyn Clock,
    practice: &PracticeId,
    patient: &OpaqueRef,
) -> Result<usize, StoreError> {
    let mut withdrawn = 0;
    for a in patients.actions_of(practice, patient).await? {
        if is_open(&a)
            && withdraw(actions, audit, clock, practice, &a.id, Withdrawal::OptedOut).await?
        {
            withdrawn += 1;
        }
    }
    if withdrawn > 0 {
        tracing::info!(practice_id = %practice, event_type = "patient.opted_out", withdrawn,
            reason = "opted_out", "open actions withdrawn");
    }
    Ok(withdrawn)
}
