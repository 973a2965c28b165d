//! Real-time slot fill (docs/design.md §4.4): when a slot opens, offer it to the K due or
//! overdue patients it fits best; when it is booked, withdraw what has not gone out.
//!
//! Candidates come from the slot-fill pool: open gap actions (rebook, series, win-back,
//! no-show; see [`Action::in_slot_pool`]) indexed per treatment by the date their gap opened,
//! so a slot reads only what is due for its treatments, never every patient. Ranking: most
//! overdue first (earliest `due_since`), ties by higher estimated value, then by action id (so
//! the order is total and a re-run ranks the same way). Skipped: anyone booked ahead (any
//! treatment), opted out, offered a slot within the policy's cooldown, or at the monthly cap.
//! Offers expire [`OFFER_LEAD_MINUTES`] before the slot starts; none is made later than that.
//!
//! Exactly one set of offers per slot: offer ids are derived from (practice, patient, slot),
//! the slot record keeps the ids once made, and a re-run hands over only what is still
//! proposed. `slot.filled` marks the slot taken and withdraws every offer not yet delivered;
//! the emitter checks the slot again before it sends one.

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::Serialize;
use std::collections::HashSet;

use crate::action::{Action, ActionKind, ActionStatus, Reason, SlotDetails};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::ports::{
    ActionRepo, CandidateBatch, CandidateSink, Clock, EntityRepo, PatientIndex, PracticeRepo,
    SlotIndex, StoreError,
};
use crate::practice::{Mode, Practice};
use crate::service::scan::ScanError;
use crate::state::{AppointmentStatus, Entity, EntityKey, Slot};

/// Offers expire this long before the slot starts, and none is made closer to it.
pub const OFFER_LEAD_MINUTES: i64 = 60;
/// Pool entries read per treatment of the slot, at most.
const POOL_PAGE: usize = 200;

pub struct SlotDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub entities: &'a dyn EntityRepo,
    pub slots: &'a dyn SlotIndex,
    pub patients: &'a dyn PatientIndex,
    pub actions: &'a dyn ActionRepo,
    pub candidates: &'a dyn CandidateSink,
    /// Withdrawals are appended to the audit chain.
    pub audit: &'a dyn crate::ports::AuditLog,
    pub clock: &'a dyn Clock,
}

/// Why a pool candidate was not offered the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotSkip {
    BookedAhead,
    OptedOut,
    OfferedRecently,
    MonthlyCap,
}

impl SlotSkip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookedAhead => "booked_ahead",
            Self::OptedOut => "opted_out",
            Self::OfferedRecently => "offered_recently",
            Self::MonthlyCap => "monthly_cap",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlotReport {
    /// What happened: `offered`, `already_offered`, `no_candidates`, `filled`, `too_late`,
    /// `kind_off`, `practice_disabled`, `no_slot`; for `slot.filled`, `not_taken` when the
    /// booking does not hold the slot.
    pub outcome: &'static str,
    /// Pool entries read.
    pub pool_read: usize,
    /// The offers (new, or made by an earlier run), best first.
    pub offers: Vec<ActionId>,
    /// Offers handed to approval-check by this run.
    pub handed_over: usize,
    pub skipped: Vec<SlotSkip>,
    /// Offers withdrawn because the slot was booked.
    pub withdrawn: usize,
}

impl SlotReport {
    fn outcome(outcome: &'static str) -> Self {
        Self {
            outcome,
            ..Default::default()
        }
    }
}

/// A slot opened (`slot.opened`, or `appointment.cancelled` with `reopens_slot`): offer it.
pub async fn fill(
    deps: &SlotDeps<'_>,
    practice_id: &PracticeId,
    slot_ref: &OpaqueRef,
) -> Result<SlotReport, ScanError> {
    let practice = deps
        .practices
        .get_practice(practice_id)
        .await?
        .ok_or(ScanError::UnknownPractice)?;
    if practice.disabled {
        return Ok(SlotReport::outcome("practice_disabled"));
    }
    let Some((slot, version)) = open_slot(deps, &practice, slot_ref).await? else {
        return Ok(SlotReport::outcome("no_slot"));
    };
    if slot.filled {
        return Ok(SlotReport::outcome("filled"));
    }
    // A booking that arrived before the slot was reported open (or before the cancellation
    // that reopened it), or since the offers were made, has taken it: nothing more goes out.
    if let Some(by) = holder(deps.entities, deps.slots, &practice.id, &slot).await? {
        if slot.offers.is_some() {
            return filled(deps, practice_id, slot_ref, Some(&by)).await;
        }
        let mut taken = slot.clone();
        taken.filled = true;
        deps.entities
            .put_entity(&practice.id, &Entity::Slot(taken), version, None)
            .await?;
        return Ok(SlotReport::outcome("filled"));
    }
    if let Some(offers) = &slot.offers {
        // A redelivery, or a run that stopped before handing over: hand over what is left.
        let mut report = SlotReport::outcome("already_offered");
        report.offers = offers.clone();
        report.handed_over = hand_over(deps, &practice, offers).await?;
        return Ok(report);
    }
    if practice.policy.for_kind(ActionKind::SlotOffer).mode == Mode::Off {
        return Ok(SlotReport::outcome("kind_off"));
    }
    let now = deps.clock.now();
    let expires_at = slot.starts_at - SignedDuration::from_mins(OFFER_LEAD_MINUTES);
    if expires_at <= now {
        return Ok(SlotReport::outcome("too_late"));
    }

    let mut report = SlotReport::outcome("offered");
    let ranked = ranked_pool(deps, &practice, &slot, &mut report).await?;
    let k = practice.policy.slot_fill_k as usize;
    let today = practice.local_date(now);
    let mut seen: HashSet<OpaqueRef> = HashSet::new();
    for candidate in ranked {
        if report.offers.len() >= k {
            break;
        }
        if !seen.insert(candidate.patient_ref.clone()) {
            continue;
        }
        let offer = offer_for(&practice, &slot, &candidate, now, expires_at);
        // Made by an earlier run that stopped before recording it on the slot.
        if deps
            .actions
            .get_action(&practice.id, &offer.id)
            .await?
            .is_some()
        {
            report.offers.push(offer.id);
            continue;
        }
        if let Some(skip) = skip_reason(deps, &practice, &candidate.patient_ref, today).await? {
            report.skipped.push(skip);
            continue;
        }
        deps.actions.create_action(&offer).await?;
        report.offers.push(offer.id);
    }
    if report.offers.is_empty() {
        report.outcome = "no_candidates";
    }
    // Record the offers on the slot before handing them over: a redelivery then re-uses them.
    let mut recorded = slot.clone();
    recorded.offers = Some(report.offers.clone());
    deps.entities
        .put_entity(&practice.id, &Entity::Slot(recorded), version, None)
        .await?;
    report.handed_over = hand_over(deps, &practice, &report.offers).await?;
    Ok(report)
}

/// A booking took the slot (`slot.filled`, naming the booking): mark it, and withdraw every
/// offer not yet sent.
///
/// The event is a hint, checked against the store before anything is written: the booking
/// must hold the slot's provider and start now (it may have moved, or been a stale report
/// that lost to a newer one). An event that names no booking is checked against every
/// appointment at the slot's provider and start. Not held: outcome `not_taken`, nothing
/// written (the slot stays open).
pub async fn filled(
    deps: &SlotDeps<'_>,
    practice_id: &PracticeId,
    slot_ref: &OpaqueRef,
    by: Option<&OpaqueRef>,
) -> Result<SlotReport, ScanError> {
    let mut report = SlotReport::outcome("filled");
    for _ in 0..5 {
        let Some(stored) = deps
            .entities
            .get_entity(practice_id, &EntityKey::Slot(slot_ref.clone()))
            .await?
        else {
            return Ok(SlotReport::outcome("no_slot"));
        };
        let Entity::Slot(mut slot) = stored.value else {
            return Ok(SlotReport::outcome("no_slot"));
        };
        if !slot.filled {
            let taken = match by {
                Some(appt) => holds(deps.entities, practice_id, appt, &slot).await?,
                None => holder(deps.entities, deps.slots, practice_id, &slot)
                    .await?
                    .is_some(),
            };
            if !taken {
                return Ok(SlotReport::outcome("not_taken"));
            }
            slot.filled = true;
            match deps
                .entities
                .put_entity(
                    practice_id,
                    &Entity::Slot(slot.clone()),
                    Some(stored.version),
                    None,
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        for id in slot.offers.iter().flatten() {
            if withdraw(deps.actions, practice_id, id).await? {
                report.withdrawn += 1;
                deps.audit
                    .record(
                        practice_id,
                        crate::audit::AuditEvent::new("slot_fill", "offer_withdrawn")
                            .action(id)
                            .details(serde_json::json!({"reason": "slot_filled"})),
                        deps.clock.now(),
                    )
                    .await;
            }
        }
        report.offers = slot.offers.unwrap_or_default();
        return Ok(report);
    }
    Err(StoreError::Conflict.into())
}

/// The booking that holds the slot's provider and start
/// ([`crate::state::Appointment::holds`]; the appointment that reopened the slot too, if it
/// was booked there again). Reads what the index names consistently: the index is
/// eventually consistent, and a cancelled or moved appointment stays in it.
pub async fn holder(
    entities: &dyn EntityRepo,
    slots: &dyn SlotIndex,
    practice_id: &PracticeId,
    slot: &Slot,
) -> Result<Option<OpaqueRef>, StoreError> {
    for appt in slots
        .appointments_at(practice_id, &slot.provider_ref, slot.starts_at)
        .await?
    {
        if holds(entities, practice_id, &appt, slot).await? {
            return Ok(Some(appt));
        }
    }
    Ok(None)
}

/// Whether the appointment, read consistently, holds the slot's provider and start.
async fn holds(
    entities: &dyn EntityRepo,
    practice_id: &PracticeId,
    appt: &OpaqueRef,
    slot: &Slot,
) -> Result<bool, StoreError> {
    let stored = entities
        .get_entity(practice_id, &EntityKey::Appointment(appt.clone()))
        .await?;
    Ok(
        matches!(stored.map(|s| s.value), Some(Entity::Appointment(a))
        if a.holds().is_some_and(|(p, at)| {
            *p == slot.provider_ref && at.as_second() == slot.starts_at.as_second()
        })),
    )
}

/// Withdraws one offer unless it is already final (delivered offers stay delivered: the PMS
/// knows its own calendar). Returns whether this call withdrew it.
pub async fn withdraw(
    actions: &dyn ActionRepo,
    practice_id: &PracticeId,
    id: &ActionId,
) -> Result<bool, StoreError> {
    let taken = crate::service::withdrawal::withdraw(
        actions,
        practice_id,
        id,
        crate::action::Withdrawal::SlotFilled,
    )
    .await?;
    Ok(taken.is_some())
}

/// The slot record, or one made from the cancelled appointment that reopened it.
async fn open_slot(
    deps: &SlotDeps<'_>,
    practice: &Practice,
    slot_ref: &OpaqueRef,
) -> Result<Option<(Slot, Option<u64>)>, StoreError> {
    let key = EntityKey::Slot(slot_ref.clone());
    if let Some(stored) = deps.entities.get_entity(&practice.id, &key).await?
        && let Entity::Slot(slot) = stored.value
    {
        return Ok(Some((slot, Some(stored.version))));
    }
    let appt_key = EntityKey::Appointment(slot_ref.clone());
    let Some(stored) = deps.entities.get_entity(&practice.id, &appt_key).await? else {
        return Ok(None);
    };
    let Entity::Appointment(mut appt) = stored.value else {
        return Ok(None);
    };
    let cancelled = matches!(&appt.status, Some(s) if s.value == AppointmentStatus::Cancelled);
    let (Some((time, set_at)), Some(treatment), true) =
        (appt.start_minute(), appt.treatment(), cancelled)
    else {
        return Ok(None);
    };
    let slot = Slot {
        slot_ref: slot_ref.clone(),
        provider_ref: appt
            .provider_ref
            .as_ref()
            .map_or_else(|| slot_ref.clone(), |p| p.value.clone()),
        starts_at: time.starts_at,
        duration_min: time.duration_min,
        treatments: vec![treatment],
        opened_at: appt.status.as_ref().map_or(set_at, |s| s.at),
        offers: None,
        filled: false,
    };
    // The slot record carries the minute from now on; the appointment keeps only the day.
    appt.forget_minute();
    let due = crate::rules::due_index_date(practice, &Entity::Appointment(appt.clone()));
    match deps
        .entities
        .put_entity(
            &practice.id,
            &Entity::Appointment(appt),
            Some(stored.version),
            due,
        )
        .await
    {
        Ok(()) | Err(StoreError::Conflict) => {}
        Err(e) => return Err(e),
    }
    Ok(Some((slot, None)))
}

/// One pool entry, as ranking needs it.
struct Candidate {
    patient_ref: OpaqueRef,
    treatment: crate::treatment::Treatment,
    due_since: jiff::civil::Date,
    evidence_date: jiff::civil::Date,
    value: u32,
    id: ActionId,
}

async fn ranked_pool(
    deps: &SlotDeps<'_>,
    practice: &Practice,
    slot: &Slot,
    report: &mut SlotReport,
) -> Result<Vec<Candidate>, StoreError> {
    let through = practice.local_date(slot.starts_at);
    let mut ids: Vec<ActionId> = Vec::new();
    for t in &slot.treatments {
        ids.extend(
            deps.slots
                .slot_pool(&practice.id, *t, through, POOL_PAGE)
                .await?,
        );
    }
    report.pool_read = ids.len();
    let mut actions: Vec<Option<Action>> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(16) {
        let reads = chunk
            .iter()
            .map(|id| deps.actions.get_action(&practice.id, id));
        actions.extend(futures::future::try_join_all(reads).await?);
    }
    let mut ranked: Vec<Candidate> = actions
        .into_iter()
        .flatten()
        .filter(Action::in_slot_pool)
        .map(|a| Candidate {
            patient_ref: a.patient_ref,
            treatment: a.treatment,
            due_since: a.due_since,
            evidence_date: a.evidence_date,
            value: practice.avg_ticket(a.treatment),
            id: a.id,
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.due_since
            .cmp(&b.due_since)
            .then(b.value.cmp(&a.value))
            .then(a.id.cmp(&b.id))
    });
    Ok(ranked)
}

fn offer_for(
    practice: &Practice,
    slot: &Slot,
    c: &Candidate,
    now: Timestamp,
    expires_at: Timestamp,
) -> Action {
    Action {
        id: ActionId::derive(&[
            practice.id.as_str(),
            ActionKind::SlotOffer.as_str(),
            c.patient_ref.as_str(),
            slot.slot_ref.as_str(),
        ]),
        practice_id: practice.id.clone(),
        kind: ActionKind::SlotOffer,
        patient_ref: c.patient_ref.clone(),
        treatment: c.treatment,
        reason: Reason::SlotOpen,
        evidence_date: c.evidence_date,
        due_since: c.due_since,
        value: c.value,
        status: ActionStatus::Proposed,
        created_at: now,
        expires_at,
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        rev: 0,
        suppression: None,
        converted: None,
        slot: Some(SlotDetails {
            slot_ref: slot.slot_ref.clone(),
            starts_at: slot.starts_at,
            provider_ref: Some(slot.provider_ref.clone()),
        }),
        withdrawal: None,
    }
}

/// Booked ahead (any treatment), opted out, offered a slot within the cooldown, or at the
/// monthly cap: not offered.
async fn skip_reason(
    deps: &SlotDeps<'_>,
    practice: &Practice,
    patient: &OpaqueRef,
    today: jiff::civil::Date,
) -> Result<Option<SlotSkip>, StoreError> {
    if let Some(stored) = deps
        .entities
        .get_entity(&practice.id, &EntityKey::Consent(patient.clone()))
        .await?
        && let Entity::Consent(c) = stored.value
        && c.is_opted_out()
    {
        return Ok(Some(SlotSkip::OptedOut));
    }
    let appts = deps.patients.appointments_of(&practice.id, patient).await?;
    if appts.iter().any(|a| a.is_booked_from(today)) {
        return Ok(Some(SlotSkip::BookedAhead));
    }
    let policy = &practice.policy;
    let actions = deps.patients.actions_of(&practice.id, patient).await?;
    let recent = |days: u32| today.saturating_sub(i64::from(days).days());
    let reaching = |a: &&Action| {
        matches!(
            a.status,
            ActionStatus::Proposed
                | ActionStatus::Pending
                | ActionStatus::Approved
                | ActionStatus::Delivered
        )
    };
    if actions.iter().filter(reaching).any(|a| {
        a.kind == ActionKind::SlotOffer
            && practice.local_date(a.created_at) > recent(policy.cooldown_days)
    }) {
        return Ok(Some(SlotSkip::OfferedRecently));
    }
    let in_30_days = actions
        .iter()
        .filter(reaching)
        .filter(|a| practice.local_date(a.created_at) > recent(30))
        .count();
    if in_30_days as u32 >= policy.max_nudges_per_30_days {
        return Ok(Some(SlotSkip::MonthlyCap));
    }
    Ok(None)
}

/// Hands the still-proposed offers to approval-check (the policy decides auto or owner).
async fn hand_over(
    deps: &SlotDeps<'_>,
    practice: &Practice,
    offers: &[ActionId],
) -> Result<usize, ScanError> {
    let mut proposed = Vec::new();
    for id in offers {
        if let Some(a) = deps.actions.get_action(&practice.id, id).await?
            && a.status == ActionStatus::Proposed
        {
            proposed.push(id.clone());
        }
    }
    if proposed.is_empty() {
        return Ok(0);
    }
    let batch = CandidateBatch {
        practice_id: practice.id.clone(),
        scan_date: practice.local_date(deps.clock.now()),
        action_ids: proposed.clone(),
        deferred: 0,
    };
    deps.candidates.send_candidates(&batch).await?;
    Ok(proposed.len())
}
