//! Rotation and erasure of patient refs (docs/design.md §2.6): refs are the practice's to
//! re-key and to delete, and afterwards the old ref is stored nowhere.
//!
//! Both work record by record, every step a conditional write on the version just read, in
//! an order that leaves a complete state between any two steps:
//!
//! - **rotate**: a patient × treatment or consent record is first merged into the record of
//!   the same kind under the new ref (the commutative merges of [`crate::state`], so a record
//!   already there, or one an earlier attempt wrote, absorbs it without counting anything
//!   twice), and only then is the old record deleted, conditional on the version that was
//!   merged. A late event that changed the old record in between makes the delete fail; the
//!   record is merged again and the delete retried. An appointment or an action keeps its key
//!   and is rewritten in place with the new ref (which moves its per-patient index entry).
//! - **erase**: every record of the ref is deleted, conditional on its version, actions in any
//!   state included (a pending action must not reach the owner or the PMS afterwards).
//!
//! A crash between any two steps leaves what is not done yet under the old ref, findable: the
//! receiver answers 503, the PMS retries, and running the operation again finishes it with the
//! same end state (merging what was merged already changes nothing). Once nothing is stored
//! under the old ref a redelivery only reads.
//!
//! Both leave a tombstone ([`crate::tombstone`]) before they touch a record, so a late event
//! for the old ref cannot undo them: [`Resolver`] reads the tombstones of the refs a delivery
//! names and rewrites the delivery before anything is applied (events about an erased ref
//! are dropped, a rotated-away ref is replaced by the ref it became).
//!
//! Logs carry the practice id, the event type and counts; never a ref.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::action::{Action, Withdrawal};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::inbound::{EventData, InboundEvent};
use crate::ports::{
    ActionRepo, EntityRepo, PatientRecord, PatientRecords, RecordKey, StoreError, TombstoneRepo,
};
use crate::practice::Practice;
use crate::rules::due_index_date;
use crate::service::withdrawal;
use crate::state::{Entity, EntityKey, Stored};
use crate::tombstone::{Fate, Tombstone, TombstoneId, TombstoneKey};

/// What rotation and erasure need.
pub struct PrivacyDeps<'a> {
    pub entities: &'a dyn EntityRepo,
    pub actions: &'a dyn ActionRepo,
    pub records: &'a dyn PatientRecords,
    /// Where tombstones go; `None` for a practice stored before it had a tombstone key
    /// (rotation and erasure still work, but leave no tombstone: logged as an alert).
    pub tombstones: Option<Tombstones<'a>>,
    /// Appointments the same delivery booked, by patient ref: looked at by key as well, since
    /// the per-patient index may not list a write this fresh yet.
    pub fresh: Option<&'a HashMap<OpaqueRef, Vec<OpaqueRef>>>,
}

/// The tombstone store, the practice's key, and the time to stamp.
#[derive(Clone, Copy)]
pub struct Tombstones<'a> {
    pub repo: &'a dyn TombstoneRepo,
    pub key: &'a TombstoneKey,
    pub at: Timestamp,
}

/// Rotation tombstones are followed at most this many hops (a chain is normally one hop:
/// rotating a ref rewrites the tombstones that point to it; more only while the index lags).
const MAX_HOPS: usize = 4;

/// The tombstones of every ref one delivery names, read in one batch before it is applied.
pub struct Resolver<'a> {
    key: Option<&'a TombstoneKey>,
    found: HashMap<TombstoneId, Tombstone>,
}

/// How a delivery reads once tombstones are applied.
#[derive(Debug, Default)]
pub struct Resolved {
    pub events: Vec<InboundEvent>,
    /// Events about an erased ref (or one of its erased appointments): accepted, not applied.
    pub dropped: usize,
    /// Events whose patient ref was rotated away, applied to the ref it became.
    pub redirected: usize,
    /// Appointments booked for an erased ref: erased too ([`erase_appointment`]), and the
    /// delivery's other events about them dropped.
    pub erased_appointments: Vec<OpaqueRef>,
}

fn patient_refs(d: &EventData) -> Vec<&OpaqueRef> {
    match d {
        EventData::AppointmentBooked { patient_ref, .. }
        | EventData::AppointmentCompleted { patient_ref, .. }
        | EventData::PatientOptedOut { patient_ref }
        | EventData::PatientOptedIn { patient_ref }
        | EventData::PatientErased { patient_ref } => vec![patient_ref],
        EventData::PatientRefRotated { old_ref, new_ref } => vec![old_ref, new_ref],
        _ => vec![],
    }
}

fn appointment_ref(d: &EventData) -> Option<&OpaqueRef> {
    match d {
        EventData::AppointmentBooked {
            appointment_ref, ..
        }
        | EventData::AppointmentRescheduled {
            appointment_ref, ..
        }
        | EventData::AppointmentCancelled {
            appointment_ref, ..
        }
        | EventData::AppointmentCompleted {
            appointment_ref, ..
        }
        | EventData::AppointmentNoShow { appointment_ref } => Some(appointment_ref),
        _ => None,
    }
}

impl<'a> Resolver<'a> {
    /// No tombstones (a practice without a tombstone key).
    pub fn none() -> Self {
        Self {
            key: None,
            found: HashMap::new(),
        }
    }

    /// Reads the tombstones of the refs in `events`: one consistent batch read (so a
    /// rotation or erasure sees what the batch's earlier ones wrote), and one more per hop of
    /// a rotation chain the index has not folded yet.
    pub async fn load(
        repo: &dyn TombstoneRepo,
        practice: &PracticeId,
        key: Option<&'a TombstoneKey>,
        events: &[InboundEvent],
    ) -> Result<Self, StoreError> {
        let Some(k) = key else {
            return Ok(Self::none());
        };
        let mut ask: Vec<TombstoneId> = Vec::new();
        for ev in events {
            ask.extend(patient_refs(&ev.data).into_iter().map(|r| k.patient(r)));
            ask.extend(appointment_ref(&ev.data).map(|a| k.appointment(a)));
        }
        let mut found = HashMap::new();
        for _ in 0..=MAX_HOPS {
            if ask.is_empty() {
                break;
            }
            let got = repo.tombstones(practice, &ask).await?;
            ask = got
                .iter()
                .filter_map(Tombstone::to)
                .map(|to| k.patient(to))
                .collect();
            for t in got {
                found.insert(t.id.clone(), t);
            }
            ask.retain(|id| !found.contains_key(id));
        }
        Ok(Self {
            key: Some(k),
            found,
        })
    }

    /// The ref `r` stands for today: itself, the ref a rotation made it, or `None` when it
    /// (or the ref it became) was erased.
    pub fn patient(&self, r: &OpaqueRef) -> Option<OpaqueRef> {
        let Some(k) = self.key else {
            return Some(r.clone());
        };
        let mut cur = r.clone();
        for _ in 0..=MAX_HOPS {
            match self.found.get(&k.patient(&cur)).map(|t| &t.fate) {
                None => return Some(cur),
                Some(Fate::Erased) => return None,
                // A rotation back to a ref rotated away earlier: the chain closes; the ref
                // reached last is the live one.
                Some(Fate::RotatedTo { to }) if to == r => return Some(cur),
                Some(Fate::RotatedTo { to }) => cur = to.clone(),
            }
        }
        Some(cur)
    }

    fn appointment_erased(&self, a: &OpaqueRef) -> bool {
        self.key.is_some_and(|k| {
            matches!(
                self.found.get(&k.appointment(a)).map(|t| &t.fate),
                Some(Fate::Erased)
            )
        })
    }

    /// Whether `r` was rotated away already (to anything).
    fn rotated_away(&self, r: &OpaqueRef) -> Option<&OpaqueRef> {
        let k = self.key?;
        self.found.get(&k.patient(r)).and_then(Tombstone::to)
    }

    /// The delivery as it applies now.
    pub fn rewrite(&self, events: &[InboundEvent]) -> Resolved {
        let mut out = Resolved::default();
        // A booking for an erased ref: its appointment goes with the patient, so whatever
        // else the delivery says about that appointment is dropped as well.
        for ev in events {
            if let EventData::AppointmentBooked {
                appointment_ref,
                patient_ref,
                ..
            } = &ev.data
                && self.patient(patient_ref).is_none()
                && !self.appointment_erased(appointment_ref)
                && !out.erased_appointments.contains(appointment_ref)
            {
                out.erased_appointments.push(appointment_ref.clone());
            }
        }
        for ev in events {
            if appointment_ref(&ev.data)
                .is_some_and(|a| self.appointment_erased(a) || out.erased_appointments.contains(a))
            {
                out.dropped += 1;
                continue;
            }
            let mut data = ev.data.clone();
            let kept = match &mut data {
                EventData::AppointmentBooked { patient_ref, .. }
                | EventData::AppointmentCompleted { patient_ref, .. }
                | EventData::PatientOptedOut { patient_ref }
                | EventData::PatientOptedIn { patient_ref } => match self.patient(patient_ref) {
                    None => false,
                    Some(p) => {
                        if p != *patient_ref {
                            out.redirected += 1;
                            *patient_ref = p;
                        }
                        true
                    }
                },
                // Erasing a ref erases the patient: the ref it was rotated to if any. An
                // erased ref is erased again (idempotent: it finishes a run cut short).
                EventData::PatientErased { patient_ref } => {
                    if let Some(p) = self.patient(patient_ref) {
                        *patient_ref = p;
                    }
                    true
                }
                EventData::PatientRefRotated { old_ref, new_ref } => {
                    match (self.patient(old_ref), self.patient(new_ref)) {
                        // Both erased: nothing left to do.
                        (None, None) => false,
                        // The old ref is erased, and the PMS says it became the new one: the
                        // same patient, so the new ref is erased too (whichever of the two
                        // arrived first, the end state is the same).
                        (None, Some(to)) => {
                            data = EventData::PatientErased { patient_ref: to };
                            true
                        }
                        // Rotated to an erased ref: the patient is erased.
                        (Some(_), None) => {
                            data = EventData::PatientErased {
                                patient_ref: old_ref.clone(),
                            };
                            true
                        }
                        (Some(_), Some(to)) => match self.rotated_away(old_ref) {
                            // Rotated before: a redelivery goes through again (it finishes
                            // a run cut short); another target is a stale rotation.
                            Some(prev) if self.patient(prev) != Some(to.clone()) => false,
                            _ => {
                                *new_ref = to;
                                true
                            }
                        },
                    }
                }
                _ => true,
            };
            if kept {
                out.events.push(InboundEvent {
                    occurred_at: ev.occurred_at,
                    data,
                });
            } else {
                out.dropped += 1;
            }
        }
        out
    }
}

/// An appointment booked for an erased ref, learnt after the erasure (the booking came
/// late): tombstoned, and its record deleted if one was made without a patient (a
/// reschedule, cancellation or no-show that came before the booking). A record that names a
/// live patient is left alone.
pub async fn erase_appointment(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    appointment: &OpaqueRef,
) -> Result<bool, StoreError> {
    let key = EntityKey::Appointment(appointment.clone());
    for _ in 0..MAX_CONFLICT_RETRIES {
        let stored = deps.entities.get_entity(&practice.id, &key).await?;
        if let Some(s) = &stored
            && s.value.patient().is_some()
        {
            return Ok(false);
        }
        leave_tombstone(deps, practice, |k| k.appointment(appointment), Fate::Erased).await?;
        erase_reopened_slot(deps, practice, appointment).await?;
        let Some(s) = stored else {
            return Ok(false);
        };
        if deps
            .records
            .delete_record(&practice.id, &RecordKey::Entity(key.clone()), s.version)
            .await?
        {
            return Ok(true);
        }
    }
    Err(StoreError::Conflict)
}

/// The ref a record is keyed by, as a tombstone id (patient × treatment and consent records
/// by the patient, appointments by their own ref; slots have none).
pub fn tombstone_id_of(key: &TombstoneKey, entity: &EntityKey) -> Option<TombstoneId> {
    match entity {
        EntityKey::PatientTreatment(p, _) | EntityKey::Consent(p) => Some(key.patient(p)),
        EntityKey::Appointment(a) => Some(key.appointment(a)),
        EntityKey::Slot(_) => None,
    }
}

async fn leave_tombstone(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    id: impl FnOnce(&TombstoneKey) -> TombstoneId,
    fate: Fate,
) -> Result<(), StoreError> {
    match &deps.tombstones {
        Some(t) => {
            let id = id(t.key);
            // A redelivery finds its tombstone in place and writes nothing.
            if t.repo
                .tombstone(&practice.id, &id)
                .await?
                .is_some_and(|old| old.fate == fate)
            {
                return Ok(());
            }
            t.repo
                .put_tombstone(&practice.id, &Tombstone::new(id, fate, t.at))
                .await
        }
        None => {
            tracing::error!(practice_id = %practice.id, alert = "tombstone_key_missing",
                "no tombstone key: a late event may bring an erased or rotated ref back");
            Ok(())
        }
    }
}

/// Everything stored for `patient`, as [`PatientRecords::records_of`] finds it, plus the
/// appointments this delivery booked for it that the index does not list yet.
async fn records_with_fresh(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    patient: &OpaqueRef,
) -> Result<Vec<PatientRecord>, StoreError> {
    let mut records = deps.records.records_of(&practice.id, patient).await?;
    let fresh = deps
        .fresh
        .and_then(|f| f.get(patient))
        .map_or(&[][..], Vec::as_slice);
    for a in fresh {
        let key = EntityKey::Appointment(a.clone());
        if records
            .iter()
            .any(|r| r.key() == RecordKey::Entity(key.clone()))
        {
            continue;
        }
        if let Some(s) = deps.entities.get_entity(&practice.id, &key).await?
            && s.value.patient() == Some(patient)
        {
            records.push(PatientRecord::Entity(s));
        }
    }
    Ok(records)
}

/// Rewrites the rotation tombstones that point to `from`: to `fate` (the ref `from` became,
/// or erased), so no tombstone names a ref that is gone.
async fn repoint_tombstones(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    from: &OpaqueRef,
    fate: &Fate,
) -> Result<usize, StoreError> {
    let Some(t) = &deps.tombstones else {
        return Ok(0);
    };
    let pointing = t.repo.tombstones_to(&practice.id, from).await?;
    for old in &pointing {
        t.repo
            .put_tombstone(
                &practice.id,
                &Tombstone::new(old.id.clone(), fate.clone(), old.at),
            )
            .await?;
    }
    Ok(pointing.len())
}

/// Conditional writes that lost a race are re-read and retried this many times.
const MAX_CONFLICT_RETRIES: usize = 5;
/// Records of one patient worked on at once (they are independent of each other).
const CONCURRENCY: usize = 8;

/// Re-keys everything stored for `old` to `new`. Returns how many records this call moved
/// (0 for a redelivery).
pub async fn rotate(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    old: &OpaqueRef,
    new: &OpaqueRef,
) -> Result<usize, StoreError> {
    if old == new {
        return Ok(0);
    }
    // The tombstone first: from here on, a late event for the old ref goes to the new one.
    let to_new = Fate::RotatedTo { to: new.clone() };
    leave_tombstone(deps, practice, |k| k.patient(old), to_new.clone()).await?;
    let records = records_with_fresh(deps, practice, old).await?;
    let found = records.len();
    let moved: Vec<bool> = stream::iter(
        records
            .into_iter()
            .map(|r| rotate_record(deps, practice, r, old, new)),
    )
    .buffer_unordered(CONCURRENCY)
    .try_collect()
    .await?;
    let rekeyed = moved.into_iter().filter(|m| *m).count();
    // Refs rotated to the old ref earlier now lead to the new one.
    repoint_tombstones(deps, practice, old, &to_new).await?;
    tracing::info!(practice_id = %practice.id, event_type = "patient.ref_rotated", records = found,
        rekeyed, "patient ref rotated");
    Ok(rekeyed)
}

/// Deletes everything stored for `patient`. Returns how many records this call deleted
/// (0 for a redelivery).
pub async fn erase(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    patient: &OpaqueRef,
) -> Result<usize, StoreError> {
    // The tombstones first: from here on, a late event for the ref (or for one of its
    // appointments) is dropped.
    leave_tombstone(deps, practice, |k| k.patient(patient), Fate::Erased).await?;
    let records = records_with_fresh(deps, practice, patient).await?;
    let found = records.len();
    let appointments: Vec<OpaqueRef> = records
        .iter()
        .filter_map(|r| match r {
            PatientRecord::Entity(s) => match s.value.key() {
                EntityKey::Appointment(a) => Some(a),
                _ => None,
            },
            PatientRecord::Action(_) => None,
        })
        .collect();
    for a in &appointments {
        leave_tombstone(deps, practice, |k| k.appointment(a), Fate::Erased).await?;
    }
    // Before the appointments go: a retry after a failure here still finds them.
    let mut deleted = 0;
    for a in &appointments {
        deleted += erase_reopened_slot(deps, practice, a).await?;
    }
    let gone: Vec<bool> = stream::iter(
        records
            .into_iter()
            .map(|r| erase_record(deps, practice, r, patient)),
    )
    .buffer_unordered(CONCURRENCY)
    .try_collect()
    .await?;
    deleted += gone.into_iter().filter(|g| *g).count();
    // Refs rotated to this one earlier are erased too (and stop naming it).
    repoint_tombstones(deps, practice, patient, &Fate::Erased).await?;
    tracing::info!(practice_id = %practice.id, event_type = "patient.erased", records = found,
        deleted, "patient erased");
    Ok(deleted)
}

/// A slot reopened by an erased appointment is keyed by the appointment's ref, and the offers
/// of it made to other patients carry that ref: the slot record is deleted, offers not yet
/// sent are withdrawn (`slot_erased`), and every offer of it forgets the slot (its ref, start
/// and provider). Returns 1 when this call deleted the slot record.
async fn erase_reopened_slot(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    appointment: &OpaqueRef,
) -> Result<usize, StoreError> {
    let key = EntityKey::Slot(appointment.clone());
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(stored) = deps.entities.get_entity(&practice.id, &key).await? else {
            return Ok(0);
        };
        let Entity::Slot(slot) = &stored.value else {
            return Ok(0);
        };
        for id in slot.offers.iter().flatten() {
            withdrawal::withdraw(deps.actions, &practice.id, id, Withdrawal::SlotErased).await?;
            forget_slot(deps.actions, &practice.id, id, appointment).await?;
        }
        if deps
            .records
            .delete_record(
                &practice.id,
                &RecordKey::Entity(key.clone()),
                stored.version,
            )
            .await?
        {
            return Ok(1);
        }
    }
    Err(StoreError::Conflict)
}

/// Drops the slot from an offer of the slot `slot_ref`.
async fn forget_slot(
    actions: &dyn ActionRepo,
    practice: &PracticeId,
    id: &ActionId,
    slot_ref: &OpaqueRef,
) -> Result<(), StoreError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(a) = actions.get_action(practice, id).await? else {
            return Ok(());
        };
        if a.slot.as_ref().is_none_or(|s| s.slot_ref != *slot_ref) {
            return Ok(());
        }
        let mut next = a;
        next.slot = None;
        if actions.update_action(&next).await? {
            return Ok(());
        }
    }
    Err(StoreError::Conflict)
}

async fn rotate_record(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    record: PatientRecord,
    old: &OpaqueRef,
    new: &OpaqueRef,
) -> Result<bool, StoreError> {
    match record {
        PatientRecord::Action(a) => rekey_action(deps, practice, a, old, new).await,
        PatientRecord::Entity(s) => match &s.value {
            Entity::Appointment(_) => rekey_appointment(deps, practice, s, old, new).await,
            Entity::PatientTreatment(_) | Entity::Consent(_) => {
                move_entity(deps, practice, s, old, new).await
            }
            Entity::Slot(_) => Ok(false),
        },
    }
}

/// A record keyed by the ref: merge it into the new ref's record, then delete it.
async fn move_entity(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    mut cur: Stored<Entity>,
    old: &OpaqueRef,
    new: &OpaqueRef,
) -> Result<bool, StoreError> {
    let old_key = RecordKey::Entity(cur.value.key());
    for _ in 0..MAX_CONFLICT_RETRIES {
        if cur.value.patient() != Some(old) {
            return Ok(false);
        }
        merge_into(deps, practice, cur.value.with_patient(new)).await?;
        if deps
            .records
            .delete_record(&practice.id, &old_key, cur.version)
            .await?
        {
            return Ok(true);
        }
        // Changed since it was read (a late event for the old ref: merge that in too), or
        // gone (another run finished it).
        match deps
            .entities
            .get_entity(&practice.id, &cur.value.key())
            .await?
        {
            Some(s) => cur = s,
            None => return Ok(false),
        }
    }
    Err(StoreError::Conflict)
}

/// Merges `incoming` into the record stored under its key (or creates it). Returns whether
/// anything was written.
async fn merge_into(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    incoming: Entity,
) -> Result<bool, StoreError> {
    let key = incoming.key();
    for _ in 0..MAX_CONFLICT_RETRIES {
        let (entity, expected) = match deps.entities.get_entity(&practice.id, &key).await? {
            None => (incoming.clone(), None),
            Some(s) => {
                let mut merged = s.value;
                if !merged.absorb(&incoming) {
                    return Ok(false);
                }
                (merged, Some(s.version))
            }
        };
        let due = due_index_date(practice, &entity);
        match deps
            .entities
            .put_entity(&practice.id, &entity, expected, due)
            .await
        {
            Ok(()) => return Ok(true),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// An appointment keeps its key; its patient (and so its index entry) changes.
async fn rekey_appointment(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    mut cur: Stored<Entity>,
    old: &OpaqueRef,
    new: &OpaqueRef,
) -> Result<bool, StoreError> {
    let key = cur.value.key();
    for _ in 0..MAX_CONFLICT_RETRIES {
        // Moved already (the index lags a write) or now someone else's: nothing to do.
        if cur.value.patient() != Some(old) {
            return Ok(false);
        }
        let next = cur.value.with_patient(new);
        let due = due_index_date(practice, &next);
        match deps
            .entities
            .put_entity(&practice.id, &next, Some(cur.version), due)
            .await
        {
            Ok(()) => return Ok(true),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        match deps.entities.get_entity(&practice.id, &key).await? {
            Some(s) => cur = s,
            None => return Ok(false),
        }
    }
    Err(StoreError::Conflict)
}

/// An action keeps its id; its `patient_ref` (and so its index entry) changes.
async fn rekey_action(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    mut cur: Action,
    old: &OpaqueRef,
    new: &OpaqueRef,
) -> Result<bool, StoreError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        if cur.patient_ref != *old {
            return Ok(false);
        }
        let mut next = cur.clone();
        next.patient_ref = new.clone();
        if deps.actions.update_action(&next).await? {
            return Ok(true);
        }
        match deps.actions.get_action(&practice.id, &cur.id).await? {
            Some(a) => cur = a,
            None => return Ok(false),
        }
    }
    Err(StoreError::Conflict)
}

/// Deletes one record, conditional on its version; on a lost race re-reads it and deletes it
/// again if it still belongs to the patient.
async fn erase_record(
    deps: &PrivacyDeps<'_>,
    practice: &Practice,
    record: PatientRecord,
    patient: &OpaqueRef,
) -> Result<bool, StoreError> {
    let key = record.key();
    let mut version = record.version();
    for _ in 0..MAX_CONFLICT_RETRIES {
        if deps
            .records
            .delete_record(&practice.id, &key, version)
            .await?
        {
            return Ok(true);
        }
        let current = match &key {
            RecordKey::Entity(k) => deps
                .entities
                .get_entity(&practice.id, k)
                .await?
                .filter(|s| s.value.patient() == Some(patient))
                .map(|s| s.version),
            RecordKey::Action(id) => deps
                .actions
                .get_action(&practice.id, id)
                .await?
                .filter(|a| a.patient_ref == *patient)
                .map(|a| a.rev),
        };
        match current {
            Some(v) => version = v,
            None => return Ok(false),
        }
    }
    Err(StoreError::Conflict)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use jiff::Timestamp;
    use jiff::civil::Date;

    use super::*;
    use crate::action::{ActionKind, ActionStatus};
    use crate::ids::{ActionId, PracticeId};

    use crate::state::{
        Appointment, AppointmentStatus, Completion, Consent, EntityKey, Lww, PatientTreatment,
        PatientTreatmentKey,
    };
    use crate::treatment::Treatment;

    /// What the fake holds: entities (with version and due-index date) and actions.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Tables {
        entities: BTreeMap<String, (Entity, u64, Option<Date>)>,
        actions: BTreeMap<String, Action>,
    }

    /// An in-memory store with the adapter's version rules, a write counter, a crash at a
    /// chosen write, and a late event slipped in before the first delete.
    #[derive(Default)]
    struct Mem {
        t: Mutex<Tables>,
        writes: Mutex<usize>,
        crash_at: Mutex<Option<usize>>,
        late_event: Mutex<Option<(EntityKey, Completion, Timestamp)>>,
    }

    impl Mem {
        fn write(&self) -> Result<(), StoreError> {
            let mut w = self.writes.lock().unwrap();
            let n = *w;
            *w += 1;
            if *self.crash_at.lock().unwrap() == Some(n) {
                return Err(StoreError::Transient("crash".into()));
            }
            Ok(())
        }
        fn writes(&self) -> usize {
            *self.writes.lock().unwrap()
        }
        fn tables(&self) -> Tables {
            self.t.lock().unwrap().clone()
        }
        fn dump(&self) -> String {
            format!("{:?}", self.tables()).replace("OpaqueRef(", "")
        }
        fn contains(&self, r: &OpaqueRef) -> bool {
            let t = self.tables();
            t.entities.iter().any(|(k, (e, ..))| {
                k.contains(r.as_str()) || serde_json::to_string(e).unwrap().contains(r.as_str())
            }) || t
                .actions
                .values()
                .any(|a| serde_json::to_string(a).unwrap().contains(r.as_str()))
        }
    }

    #[async_trait]
    impl EntityRepo for Mem {
        async fn get_entity(
            &self,
            _: &PracticeId,
            key: &EntityKey,
        ) -> Result<Option<Stored<Entity>>, StoreError> {
            Ok(self
                .t
                .lock()
                .unwrap()
                .entities
                .get(&key.sort_key())
                .map(|(e, v, _)| Stored {
                    value: e.clone(),
                    version: *v,
                }))
        }
        async fn put_entity(
            &self,
            _: &PracticeId,
            entity: &Entity,
            expected: Option<u64>,
            due_on: Option<Date>,
        ) -> Result<(), StoreError> {
            self.write()?;
            let mut t = self.t.lock().unwrap();
            let sk = entity.key().sort_key();
            if t.entities.get(&sk).map(|(_, v, _)| *v) != expected {
                return Err(StoreError::Conflict);
            }
            t.entities
                .insert(sk, (entity.clone(), expected.map_or(1, |v| v + 1), due_on));
            Ok(())
        }
    }

    #[async_trait]
    impl ActionRepo for Mem {
        async fn create_action(&self, action: &Action) -> Result<bool, StoreError> {
            self.write()?;
            let mut t = self.t.lock().unwrap();
            if t.actions.contains_key(action.id.as_str()) {
                return Ok(false);
            }
            let mut a = action.clone();
            a.rev = 0;
            t.actions.insert(a.id.to_string(), a);
            Ok(true)
        }
        async fn get_action(
            &self,
            _: &PracticeId,
            id: &ActionId,
        ) -> Result<Option<Action>, StoreError> {
            Ok(self.t.lock().unwrap().actions.get(id.as_str()).cloned())
        }
        async fn update_action(&self, action: &Action) -> Result<bool, StoreError> {
            self.write()?;
            let mut t = self.t.lock().unwrap();
            if t.actions.get(action.id.as_str()).map(|a| a.rev) != Some(action.rev) {
                return Ok(false);
            }
            let mut a = action.clone();
            a.rev += 1;
            t.actions.insert(a.id.to_string(), a);
            Ok(true)
        }
        async fn reserve_auto_approval(
            &self,
            _: &PracticeId,
            _: ActionKind,
            _: Date,
            _: u32,
            _: &ActionId,
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn reserve_nightly(
            &self,
            _: &PracticeId,
            _: Date,
            _: u32,
            _: &ActionId,
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    #[async_trait]
    impl PatientRecords for Mem {
        async fn records_of(
            &self,
            _: &PracticeId,
            patient: &OpaqueRef,
        ) -> Result<Vec<PatientRecord>, StoreError> {
            let t = self.t.lock().unwrap();
            let entities = t
                .entities
                .values()
                .filter(|(e, ..)| e.patient() == Some(patient))
                .map(|(e, v, _)| {
                    PatientRecord::Entity(Stored {
                        value: e.clone(),
                        version: *v,
                    })
                });
            let actions = t
                .actions
                .values()
                .filter(|a| a.patient_ref == *patient)
                .map(|a| PatientRecord::Action(a.clone()));
            Ok(entities.chain(actions).collect())
        }
        async fn delete_record(
            &self,
            _: &PracticeId,
            key: &RecordKey,
            expected: u64,
        ) -> Result<bool, StoreError> {
            let late = {
                let mut l = self.late_event.lock().unwrap();
                match l.as_ref() {
                    Some((k, ..)) if RecordKey::Entity(k.clone()) == *key => l.take(),
                    _ => None,
                }
            };
            if let Some((k, c, at)) = late {
                // A webhook for the old ref lands between the merge and this delete.
                let mut t = self.t.lock().unwrap();
                if let Some((Entity::PatientTreatment(pt), v, _)) =
                    t.entities.get_mut(&k.sort_key())
                {
                    pt.merge_completion(c, at);
                    *v += 1;
                }
            }
            self.write()?;
            let mut t = self.t.lock().unwrap();
            let sk = key.sort_key();
            let current = match key {
                RecordKey::Entity(_) => t.entities.get(&sk).map(|(_, v, _)| *v),
                RecordKey::Action(id) => t.actions.get(id.as_str()).map(|a| a.rev),
            };
            if current != Some(expected) {
                return Ok(false);
            }
            t.entities.remove(&sk);
            if let RecordKey::Action(id) = key {
                t.actions.remove(id.as_str());
            }
            Ok(true)
        }
    }

    fn r(s: &str) -> OpaqueRef {
        OpaqueRef::parse(s).unwrap()
    }
    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn practice() -> Practice {
        crate::testing::practice("test-clinic")
    }

    fn old() -> OpaqueRef {
        r("p_Old7Hq2kX9mZ4rT1vB8")
    }
    fn new() -> OpaqueRef {
        r("p_New3Lk8sD2fG6hJ4qW9")
    }
    fn bystander() -> OpaqueRef {
        r("p_Oth5Tr6yU2iO8pA3sD7")
    }

    fn pt(p: &OpaqueRef, t: Treatment, on: &str, actioned: Option<&str>) -> Entity {
        let mut pt = PatientTreatment::new(p.clone(), t);
        pt.merge_completion(
            Completion::new(d(on), None, None),
            ts(&format!("{on}T15:00:00Z")),
        );
        pt.actioned_due = actioned.map(d);
        Entity::PatientTreatment(pt)
    }

    fn consent(p: &OpaqueRef, out: bool, at: &str) -> Entity {
        Entity::Consent(Consent {
            patient_ref: p.clone(),
            opted_out: Some(Lww::new(out, ts(at))),
        })
    }

    fn appointment(appt: &str, p: &OpaqueRef) -> Entity {
        let mut a = Appointment::new(r(appt));
        let at = ts("2026-06-01T12:00:00Z");
        a.patient = Some(Lww::new(
            PatientTreatmentKey {
                patient_ref: p.clone(),
                treatment: Treatment::Neurotoxin,
            },
            at,
        ));
        a.starts_on = Some(Lww::new(d("2026-09-01"), at));
        a.status = Some(Lww::new(AppointmentStatus::Booked, at));
        Entity::Appointment(a)
    }

    fn action(p: &OpaqueRef) -> Action {
        Action {
            evidence_date: d("2026-02-01"),
            due_since: d("2026-05-02"),
            status: ActionStatus::Pending,
            created_at: ts("2026-05-03T08:00:00Z"),
            expires_at: ts("2026-05-17T04:00:00Z"),
            ..crate::testing::sample_action(
                "test-clinic",
                p,
                &["test-clinic", "rebook_nudge", p.as_str()],
            )
        }
    }

    /// GIVEN the old ref with two treatments, an opt-out, a booking and a pending action; the
    /// new ref already holding an older completion and an older opt-in; a bystander.
    async fn seeded() -> Mem {
        let m = Mem::default();
        let p = practice();
        for e in [
            pt(
                &old(),
                Treatment::Neurotoxin,
                "2026-02-01",
                Some("2026-05-02"),
            ),
            pt(&old(), Treatment::Facial, "2026-04-10", None),
            consent(&old(), true, "2026-03-01T00:00:00Z"),
            appointment("appt_Ab3Cd4Ef5Gh6Jk7", &old()),
            pt(&new(), Treatment::Neurotoxin, "2025-11-01", None),
            consent(&new(), false, "2026-01-01T00:00:00Z"),
            pt(&bystander(), Treatment::Neurotoxin, "2026-01-01", None),
            appointment("appt_Zy9Xw8Vu7Ts6Rq5", &bystander()),
        ] {
            let due = crate::rules::due_index_date(&p, &e);
            m.put_entity(&p.id, &e, None, due).await.unwrap();
        }
        m.create_action(&action(&old())).await.unwrap();
        m.create_action(&action(&bystander())).await.unwrap();
        m
    }

    fn deps(m: &Mem) -> PrivacyDeps<'_> {
        PrivacyDeps {
            entities: m,
            actions: m,
            records: m,
            tombstones: None,
            fresh: None,
        }
    }

    fn entity(m: &Mem, key: &EntityKey) -> Option<Entity> {
        m.tables()
            .entities
            .get(&key.sort_key())
            .map(|(e, ..)| e.clone())
    }

    #[tokio::test]
    async fn rotation_rekeys_every_record_and_merges_with_the_new_refs_state() {
        let m = seeded().await;
        let p = practice();
        let bystander_before: Vec<_> = m
            .records_of(&p.id, &bystander())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key())
            .collect();

        // WHEN the ref is rotated
        let moved = rotate(&deps(&m), &p, &old(), &new()).await.unwrap();

        // THEN nothing holds the old ref, and the new ref holds the merged state
        assert_eq!(moved, 5);
        assert!(!m.contains(&old()), "{}", m.dump());
        let Some(Entity::PatientTreatment(neuro)) = entity(
            &m,
            &EntityKey::PatientTreatment(new(), Treatment::Neurotoxin),
        ) else {
            panic!("neurotoxin record under the new ref")
        };
        assert_eq!(
            neuro.last.unwrap().value.on,
            d("2026-02-01"),
            "later visit wins"
        );
        assert_eq!(
            neuro.actioned_due,
            Some(d("2026-05-02")),
            "actioned stays actioned"
        );
        let (_, _, due) = m.tables().entities
            [&EntityKey::PatientTreatment(new(), Treatment::Facial).sort_key()]
            .clone();
        assert_eq!(
            due,
            Some(d("2026-05-15")),
            "the due index follows the record"
        );
        let Some(Entity::Consent(c)) = entity(&m, &EntityKey::Consent(new())) else {
            panic!("consent under the new ref")
        };
        assert!(
            c.is_opted_out(),
            "the later opt-out wins over the older opt-in"
        );
        let appt = entity(&m, &EntityKey::Appointment(r("appt_Ab3Cd4Ef5Gh6Jk7"))).unwrap();
        assert_eq!(appt.patient(), Some(&new()));
        let a = m.tables().actions[action(&old()).id.as_str()].clone();
        assert_eq!((a.patient_ref, a.status), (new(), ActionStatus::Pending));
        let bystander_after: Vec<_> = m
            .records_of(&p.id, &bystander())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key())
            .collect();
        assert_eq!(
            bystander_before, bystander_after,
            "other patients untouched"
        );

        // AND a redelivery writes nothing
        let writes = m.writes();
        assert_eq!(rotate(&deps(&m), &p, &old(), &new()).await.unwrap(), 0);
        assert_eq!(m.writes(), writes);
    }

    #[tokio::test]
    async fn a_rotation_cut_short_at_any_write_finishes_on_retry_with_the_same_state() {
        let p = practice();
        let clean = seeded().await;
        let start = clean.writes();
        rotate(&deps(&clean), &p, &old(), &new()).await.unwrap();
        let steps = clean.writes() - start;
        assert!(
            steps >= 7,
            "merge-writes, deletes and in-place rewrites: {steps}"
        );
        for k in 0..steps {
            // GIVEN a rotation that crashed at its k-th write
            let m = seeded().await;
            *m.crash_at.lock().unwrap() = Some(m.writes() + k);
            assert!(rotate(&deps(&m), &p, &old(), &new()).await.is_err());
            *m.crash_at.lock().unwrap() = None;
            // WHEN the PMS retries THEN the end state is the uninterrupted one
            rotate(&deps(&m), &p, &old(), &new()).await.unwrap();
            assert_eq!(m.tables(), clean.tables(), "crash at write {k}");
        }
    }

    #[tokio::test]
    async fn a_late_event_between_merge_and_delete_is_merged_not_lost() {
        let m = seeded().await;
        let p = practice();
        // GIVEN a completion for the old ref arriving after its record was merged
        let later = Completion::new(d("2026-06-20"), None, None);
        *m.late_event.lock().unwrap() = Some((
            EntityKey::PatientTreatment(old(), Treatment::Facial),
            later.clone(),
            ts("2026-06-20T15:00:00Z"),
        ));
        // WHEN the rotation's delete finds the record changed
        rotate(&deps(&m), &p, &old(), &new()).await.unwrap();
        // THEN the new ref has the late completion and the old ref is gone
        let Some(Entity::PatientTreatment(f)) =
            entity(&m, &EntityKey::PatientTreatment(new(), Treatment::Facial))
        else {
            panic!("facial record under the new ref")
        };
        assert_eq!(f.last.unwrap().value, later);
        assert!(!m.contains(&old()));
    }

    #[tokio::test]
    async fn erasure_deletes_every_record_and_a_redelivery_is_a_no_op() {
        let m = seeded().await;
        let p = practice();
        let deleted = erase(&deps(&m), &p, &old()).await.unwrap();
        assert_eq!(deleted, 5);
        assert!(!m.contains(&old()), "{}", m.dump());
        assert!(
            !m.tables().actions.contains_key(action(&old()).id.as_str()),
            "the pending action is gone"
        );
        assert!(
            m.contains(&new()) && m.contains(&bystander()),
            "others stay"
        );
        let writes = m.writes();
        assert_eq!(erase(&deps(&m), &p, &old()).await.unwrap(), 0);
        assert_eq!(m.writes(), writes);
    }

    #[tokio::test]
    async fn an_erasure_cut_short_at_any_write_finishes_on_retry() {
        let p = practice();
        let clean = seeded().await;
        erase(&deps(&clean), &p, &old()).await.unwrap();
        for k in 0..5 {
            let m = seeded().await;
            *m.crash_at.lock().unwrap() = Some(m.writes() + k);
            assert!(erase(&deps(&m), &p, &old()).await.is_err());
            *m.crash_at.lock().unwrap() = None;
            erase(&deps(&m), &p, &old()).await.unwrap();
            assert_eq!(m.tables(), clean.tables(), "crash at write {k}");
        }
    }

    #[tokio::test]
    async fn erasing_after_a_rotation_leaves_the_new_ref_alone() {
        let m = seeded().await;
        let p = practice();
        rotate(&deps(&m), &p, &old(), &new()).await.unwrap();
        let before = m.tables();
        assert_eq!(erase(&deps(&m), &p, &old()).await.unwrap(), 0);
        assert_eq!(m.tables(), before);
    }
}
