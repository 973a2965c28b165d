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

use crate::action::{Action, Withdrawal};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::ports::{ActionRepo, AuditLog, Clock, EntityRepo, PatientIndex, StoreError};
use crate::state::{Entity, EntityKey};

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

/// Withdraws one action for `why` ([`crate::service::withdrawal::withdraw`]) and appends
/// the withdrawal to the audit chain. Returns whether this call withdrew it.
pub async fn withdraw(
    actions: &dyn ActionRepo,
    audit: &dyn AuditLog,
    clock: &dyn Clock,
    practice: &PracticeId,
    id: &ActionId,
    why: Withdrawal,
) -> Result<bool, StoreError> {
    match crate::service::withdrawal::withdraw(actions, practice, id, why).await? {
        Some(a) => {
            audit
                .record(
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
            Ok(true)
        }
        None => Ok(false),
    }
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

/// [`withdraw_open`], when the patient's stored consent says opted out (an opt-out that an
/// opt-in ranked later has overtaken withdraws nothing). Returns how many this call withdrew.
pub async fn withdraw_if_opted_out(
    entities: &dyn EntityRepo,
    actions: &dyn ActionRepo,
    patients: &dyn PatientIndex,
    audit: &dyn AuditLog,
    clock: &dyn Clock,
    practice: &PracticeId,
    patient: &OpaqueRef,
) -> Result<usize, StoreError> {
    if !opted_out(entities, practice, patient).await? {
        return Ok(0);
    }
    withdraw_open(actions, patients, audit, clock, practice, patient).await
}
