//! webhook-receiver's domain: check, verify, parse, guard, apply, publish.
//!
//! Order of checks: content type (415), size (413), practice and signature (401: an unknown
//! practice is answered as a bad signature, see [`ReceiveError::UnknownPractice`]), JSON (400),
//! schema and PHI guard (422). Nothing is written before every event of the body has parsed,
//! so a refused body leaves no trace. Writes are commutative merges conditional on
//! the version read, so a redelivery (same `webhook-id` or not) has no second effect.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::ids::PracticeId;
use crate::inbound::{self, EventData, InboundEvent, MAX_BODY_BYTES, Refusal};
use crate::ports::{
    ActionRepo, AuditLog, Clock, DomainEvent, EntityRepo, EventPublisher, PatientIndex,
    PatientRecords, PortError, PracticeRepo, SlotIndex, StoreError, TombstoneRepo,
};
use crate::practice::Practice;
use crate::secrets::SecretCache;
use crate::service::attribution::{self, Booking};
use crate::service::consent;
use crate::service::privacy::{self, PrivacyDeps, Resolver, Tombstones};
use crate::signature::{self, SignatureError, SignedHeaders};
use crate::state::{
    Appointment, AppointmentStatus, Completion, Consent, Entity, EntityKey, EventTime, Lww,
    PatientTreatment, PatientTreatmentKey, Slot, SlotTime,
};
use crate::tombstone::TombstoneKey;

/// What the receiver needs. Built once per cold start.
pub struct ReceiverDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub entities: &'a dyn EntityRepo,
    /// Rotation and erasure re-key or delete the patient's actions.
    pub actions: &'a dyn ActionRepo,
    /// Rotation and erasure find everything stored for a ref.
    pub records: &'a dyn PatientRecords,
    /// Rotation and erasure leave tombstones; every delivery is read against them.
    pub tombstones: &'a dyn TombstoneRepo,
    /// Attribution finds a booking patient's delivered actions.
    pub patients: &'a dyn PatientIndex,
    pub bus: &'a dyn EventPublisher,
    /// A booking that takes an open slot fills it (slot fill withdraws its offers).
    pub slots: &'a dyn SlotIndex,
    /// An opt-out's withdrawals are appended to the audit chain.
    pub audit: &'a dyn AuditLog,
    pub secrets: &'a SecretCache,
    pub clock: &'a dyn Clock,
    /// Counts of refused signed deliveries (rule and field path).
    pub refusals: &'a dyn crate::ports::RefusalLog,
}

/// One delivery as the handler saw it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub practice_id: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub headers: SignedHeaders<'a>,
    pub body: &'a [u8],
}

/// Every way a delivery is refused. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// The practice in the path is not onboarded, or its id is not well-formed. Answered
    /// exactly as a bad signature (status and body): the signature refusal that verifying the
    /// delivery against a dummy key gave, i.e. the one the caller would get from a practice
    /// whose secret it does not hold. So the answer does not tell which practice ids exist.
    /// Only [`ReceiveError::reason`] (operator logs) says `unknown_practice`. (The answers
    /// themselves, status and body, are the webhook-receiver function's mapping.)
    #[error("unknown practice")]
    UnknownPractice(SignatureError),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("signature refused: {0}")]
    Signature(SignatureError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("temporarily unavailable")]
    Unavailable,
}

impl ReceiveError {
    /// A reason code for logs and audit (operator-only: it tells an unknown practice apart).
    pub fn reason(&self) -> String {
        match self {
            Self::UnknownPractice(_) => "unknown_practice".to_owned(),
            Self::Refused(r) => format!("{}:{}", r.code.as_str(), r.rule),
            Self::Signature(e) => e.reason().to_owned(),
            Self::UnsupportedMediaType => "unsupported_media_type".to_owned(),
            Self::TooLarge => "payload_too_large".to_owned(),
            Self::Unavailable => "temporarily_unavailable".to_owned(),
        }
    }
}

impl From<StoreError> for ReceiveError {
    fn from(_: StoreError) -> Self {
        // Conflicts that outlived their retries, throttling, outages: the PMS retries.
        Self::Unavailable
    }
}

impl From<PortError> for ReceiveError {
    fn from(_: PortError) -> Self {
        Self::Unavailable
    }
}

/// What an accepted delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub practice_id: PracticeId,
    pub webhook_id: String,
    pub events: usize,
    /// Records whose state changed (0 for a pure redelivery).
    pub changed: usize,
    pub published: usize,
}

/// A refusal's field as counted: indices dropped (`events[3].data` → `events[].data`), at
/// most 80 characters, so the paths a practice's counts hold are the schema's, not one per
/// event.
pub fn field_path(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            c if in_index && c.is_ascii_digit() => {}
            c => out.push(c),
        }
    }
    out.chars().take(80).collect()
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    })
}

pub async fn receive(deps: &ReceiverDeps<'_>, d: Delivery<'_>) -> Result<Accepted, ReceiveError> {
    // Content type and size first: they do not depend on the practice.
    if !is_json(d.content_type) {
        return Err(ReceiveError::UnsupportedMediaType);
    }
    if d.body.len() > MAX_BODY_BYTES {
        return Err(ReceiveError::TooLarge);
    }
    // A disabled practice still gets its events (state stays current, and opt-outs,
    // rotations and erasures are honoured); the scan and the emitter do nothing for it.
    // Eventually consistent (half the read units): see `get_practice_recent`.
    let found = match d.practice_id.and_then(|p| PracticeId::parse(p).ok()) {
        Some(id) => deps
            .practices
            .get_practice_recent(&id)
            .await?
            .map(|p| (id, p)),
        // Not an id at all: nothing to read. Its shape is public, so answering without the
        // read tells nothing about which practices exist.
        None => None,
    };
    let now = deps.clock.now();
    let Some((practice_id, practice)) = found else {
        return Err(unknown_practice(deps, d, now));
    };
    // A secret a rotation replaced verifies only until its overlap ends.
    let secrets = deps
        .secrets
        .webhook_at(&practice.id, &practice.secrets, now)
        .await?;
    let verified = signature::verify(d.headers, d.body, &secrets, now.as_second())
        .map_err(ReceiveError::Signature)?;
    let events = match inbound::parse_body(d.body, now) {
        Ok(e) => e,
        Err(r) => {
            // Signed, so the practice's own PMS sent it: counted for its integration report
            // (rule and field path; nothing of the body). Best effort: the answer is the same.
            if let Err(e) = deps
                .refusals
                .count_refusal(
                    &practice.id,
                    now,
                    r.code.as_str(),
                    r.rule,
                    &field_path(&r.field),
                )
                .await
            {
                tracing::warn!(practice_id = %practice.id, error = %e, reason = "refusal_not_counted", "refusal count not written");
            }
            return Err(ReceiveError::Refused(r));
        }
    };
    let (changed, published) = apply(deps, &practice, &events, now).await?;
    Ok(Accepted {
        practice_id,
        webhook_id: verified.webhook_id,
        events: events.len(),
        changed,
        published,
    })
}

/// The refusal for a practice that does not exist: the signature refusal the same delivery
/// gets from a practice whose secret it was not signed with, so an unknown practice and a bad
/// signature are indistinguishable (same status, same body).
///
/// Timing: the delivery is verified against the secret cache's dummy key, a random secret no
/// practice has, made once per cold start. That is the work a known practice's refused
/// delivery costs after its read (the header checks, one HMAC-SHA256 over the whole body, the
/// constant-time compare), and the practice read before it is made for every well-formed id,
/// so this answer is not measurably faster than a bad signature's. What still differs, by
/// design: a known practice's first delivery per cold start and cache TTL also opens its
/// secret (one key-service call), and during a rotation's overlap is checked against two
/// secrets; opening a key for every unknown id would let anyone spend key-service calls.
fn unknown_practice(deps: &ReceiverDeps<'_>, d: Delivery<'_>, now: Timestamp) -> ReceiveError {
    let dummy = std::slice::from_ref(deps.secrets.dummy_webhook());
    // A random 256-bit key verifies nothing; were it ever to, the answer is still a refusal.
    let e = signature::verify(d.headers, d.body, dummy, now.as_second())
        .err()
        .unwrap_or(SignatureError::NoMatch);
    ReceiveError::UnknownPractice(e)
}

/// Applies parsed events: groups them by the record they touch, merges each group into the
/// stored record, writes each changed record once; then runs the batch's attributions
/// (bookings converting delivered triggers), ref rotations and erasures in batch order (so
/// whatever the batch said about an old ref ends up re-keyed or erased too); then publishes
/// what needs real-time work.
///
/// `received_at` is when the delivery was accepted: no event ranks later than that, whatever
/// its `occurred_at` ([`EventTime::ranked_at`]).
pub async fn apply(
    deps: &ReceiverDeps<'_>,
    practice: &Practice,
    events: &[InboundEvent],
    received_at: Timestamp,
) -> Result<(usize, usize), ReceiveError> {
    // Tombstones first: an event about an erased ref changes nothing, one about a rotated-away
    // ref applies to the ref it became (see `privacy`).
    let key = deps
        .secrets
        .tombstone(&practice.id, &practice.secrets)
        .await?;
    let resolved = Resolver::load(deps.tombstones, &practice.id, key.as_ref(), events)
        .await?
        .rewrite(events);
    if resolved.dropped > 0 || resolved.redirected > 0 {
        tracing::info!(practice_id = %practice.id, dropped = resolved.dropped,
            redirected = resolved.redirected, reason = "tombstone", "events read against tombstones");
    }
    let events = &resolved.events[..];
    let key = key.as_ref();
    // Only a delivery that rotates or erases needs them.
    let privacy_ops = events.iter().any(|e| {
        matches!(
            e.data,
            EventData::PatientRefRotated { .. } | EventData::PatientErased { .. }
        )
    });
    let mut fresh: HashMap<crate::ids::OpaqueRef, Vec<crate::ids::OpaqueRef>> = HashMap::new();
    for ev in events.iter().filter(|_| privacy_ops) {
        if let EventData::AppointmentBooked {
            appointment_ref,
            patient_ref,
            ..
        } = &ev.data
        {
            fresh
                .entry(patient_ref.clone())
                .or_default()
                .push(appointment_ref.clone());
        }
    }
    let pdeps = PrivacyDeps {
        entities: deps.entities,
        actions: deps.actions,
        records: deps.records,
        tombstones: key.map(|k| Tombstones {
            repo: deps.tombstones,
            key: k,
            at: received_at,
        }),
        fresh: Some(&fresh),
    };
    let mut erased = 0;
    for a in &resolved.erased_appointments {
        erased += usize::from(privacy::erase_appointment(&pdeps, practice, a).await?);
    }
    let mut groups: HashMap<EntityKey, Vec<&InboundEvent>> = HashMap::new();
    let mut order: Vec<EntityKey> = Vec::new();
    let mut publish = Vec::new();
    for ev in events {
        for key in touched(ev) {
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(ev);
        }
        match &ev.data {
            EventData::SlotOpened { slot_ref, .. } => publish.push(DomainEvent::SlotOpened {
                practice_id: practice.id.clone(),
                slot_ref: slot_ref.clone(),
            }),
            EventData::AppointmentCancelled {
                appointment_ref,
                reopens_slot: true,
            } => publish.push(DomainEvent::SlotOpened {
                practice_id: practice.id.clone(),
                slot_ref: appointment_ref.clone(),
            }),
            _ => {}
        }
    }
    let tomb = key;
    let upserted: Vec<(bool, Entity)> = stream::iter(order.into_iter().map(|key| {
        let evs = groups.remove(&key).unwrap_or_default();
        async move { upsert(deps, practice, key, &evs, received_at, tomb).await }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await?;
    let mut changed = erased + upserted.iter().filter(|(c, _)| *c).count();
    // The appointments as merged, for the slots they take (below).
    let merged: HashMap<EntityKey, Appointment> = upserted
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entity::Appointment(a) => Some((EntityKey::Appointment(a.appointment_ref.clone()), a)),
            _ => None,
        })
        .collect();
    for ev in events {
        changed += match &ev.data {
            // Every booking, redeliveries too: a crash after the appointment write is finished
            // by the retry, and converting what is converted already writes nothing.
            EventData::AppointmentBooked {
                patient_ref,
                treatment,
                ..
            } => {
                let booking = Booking {
                    patient: patient_ref,
                    treatment: *treatment,
                    // As the merges rank it: a booking dated ahead converts nothing sent
                    // after it was received.
                    booked_at: ev.occurred_at.min(received_at),
                };
                attribution::attribute(deps.actions, deps.patients, practice, &booking)
                    .await?
                    .map_or(0, |_| 1)
            }
            // Each against the tombstones as they are now, consistently read: the batch's
            // earlier rotations and erasures count (erase, then rotate the erased ref away,
            // in one batch, ends as in two).
            EventData::PatientRefRotated { .. } | EventData::PatientErased { .. } => {
                let one = std::slice::from_ref(ev);
                let fresh = Resolver::load(deps.tombstones, &practice.id, key, one)
                    .await?
                    .rewrite(one);
                let mut n = 0;
                for e in &fresh.events {
                    n += match &e.data {
                        EventData::PatientRefRotated { old_ref, new_ref } => {
                            let moved = privacy::rotate(&pdeps, practice, old_ref, new_ref).await?;
                            // An opt-out under either ref now holds for the new one, and so
                            // for every action the rotation moved to it.
                            moved + withdraw_if_opted_out(deps, practice, new_ref).await?
                        }
                        EventData::PatientErased { patient_ref } => {
                            privacy::erase(&pdeps, practice, patient_ref).await?
                        }
                        _ => 0,
                    };
                }
                n
            }
            // Every opt-out, redeliveries too (a crash between the consent write and the
            // withdrawals is finished by the retry).
            EventData::PatientOptedOut { patient_ref } => {
                withdraw_if_opted_out(deps, practice, patient_ref).await?
            }
            _ => 0,
        };
    }
    // A booking (or a reschedule) onto a slot already reported open fills it: `slot.filled`
    // names the appointment, and slot fill checks that it still holds the slot. Where it
    // holds is the merged record's (a reschedule names no provider, and either may have
    // arrived first). A slot reported after its booking is found taken by slot fill.
    for ev in events {
        let (EventData::AppointmentBooked {
            appointment_ref, ..
        }
        | EventData::AppointmentRescheduled {
            appointment_ref, ..
        }) = &ev.data
        else {
            continue;
        };
        let key = EntityKey::Appointment(appointment_ref.clone());
        let Some((provider, starts_at)) = merged.get(&key).and_then(Appointment::holds) else {
            continue;
        };
        for slot_ref in deps
            .slots
            .slots_at(&practice.id, provider, starts_at)
            .await?
        {
            publish.push(DomainEvent::SlotFilled {
                practice_id: practice.id.clone(),
                slot_ref,
                appointment_ref: Some(appointment_ref.clone()),
            });
        }
    }
    if !publish.is_empty() {
        deps.bus.publish(&publish).await?;
    }
    Ok((changed, publish.len()))
}

pub(crate) use crate::rules::due_index_date;

async fn withdraw_if_opted_out(
    deps: &ReceiverDeps<'_>,
    practice: &Practice,
    patient: &crate::ids::OpaqueRef,
) -> Result<usize, StoreError> {
    consent::withdraw_if_opted_out(
        deps.entities,
        deps.actions,
        deps.patients,
        deps.audit,
        deps.clock,
        &practice.id,
        patient,
    )
    .await
}

/// The records one event changes.
fn touched(ev: &InboundEvent) -> Vec<EntityKey> {
    match &ev.data {
        EventData::AppointmentBooked {
            appointment_ref, ..
        }
        | EventData::AppointmentRescheduled {
            appointment_ref, ..
        }
        | EventData::AppointmentCancelled {
            appointment_ref, ..
        }
        | EventData::AppointmentNoShow { appointment_ref } => {
            vec![EntityKey::Appointment(appointment_ref.clone())]
        }
        EventData::AppointmentCompleted {
            patient_ref,
            treatment,
            ..
        } => {
            vec![EntityKey::PatientTreatment(patient_ref.clone(), *treatment)]
        }
        EventData::SlotOpened { slot_ref, .. } => vec![EntityKey::Slot(slot_ref.clone())],
        EventData::PatientOptedOut { patient_ref } | EventData::PatientOptedIn { patient_ref } => {
            vec![EntityKey::Consent(patient_ref.clone())]
        }
        // Re-keying and erasure touch every record of the patient: `apply` runs them after
        // the upserts (see `privacy`).
        EventData::PatientRefRotated { .. } | EventData::PatientErased { .. } => vec![],
    }
}

const MAX_CONFLICT_RETRIES: usize = 5;

/// Read, merge, conditional write; on a lost race, again. Returns whether it wrote, and the
/// record as merged.
async fn upsert(
    deps: &ReceiverDeps<'_>,
    practice: &Practice,
    key: EntityKey,
    evs: &[&InboundEvent],
    received_at: Timestamp,
    tomb: Option<&TombstoneKey>,
) -> Result<(bool, Entity), StoreError> {
    for attempt in 0..MAX_CONFLICT_RETRIES {
        // The first read may be a second stale (half the read units): a stale version makes
        // the conditional write fail, and every retry reads consistently. A merge that
        // changes nothing on a stale record changes nothing on the current one either (the
        // merge only ever moves a field forward), so skipping the write is still right.
        let stored = if attempt == 0 {
            deps.entities.get_entity_recent(&practice.id, &key).await?
        } else {
            deps.entities.get_entity(&practice.id, &key).await?
        };
        let expected = stored.as_ref().map(|s| s.version);
        // A record about to be created for a ref erased or rotated away since the delivery
        // was read against the tombstones (a concurrent erasure or rotation): the PMS
        // retries (503), and the retry reads the new tombstone.
        if expected.is_none()
            && let Some(id) = tomb.and_then(|k| privacy::tombstone_id_of(k, &key))
            && deps
                .tombstones
                .tombstone(&practice.id, &id)
                .await?
                .is_some()
        {
            return Err(StoreError::Transient("tombstoned_since_read".into()));
        }
        let before = stored.map(|s| s.value);
        let mut entity = before
            .clone()
            .unwrap_or_else(|| empty(&key, evs, received_at));
        let mut touched = false;
        for ev in evs {
            let t = EventTime {
                occurred_at: ev.occurred_at,
                received_at,
            };
            touched |= merge(&mut entity, ev, t, practice);
        }
        // A merge can set a field and clear it again (a start minute already past when it
        // arrives): that changes nothing, and a redelivery must not cost a write.
        if expected.is_some() && (!touched || before.as_ref() == Some(&entity)) {
            return Ok((false, entity));
        }
        let due = due_index_date(practice, &entity);
        match deps
            .entities
            .put_entity(&practice.id, &entity, expected, due)
            .await
        {
            Ok(()) => return Ok((true, entity)),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

fn empty(key: &EntityKey, evs: &[&InboundEvent], received_at: Timestamp) -> Entity {
    match key {
        EntityKey::Appointment(a) => Entity::Appointment(Appointment::new(a.clone())),
        EntityKey::PatientTreatment(p, t) => {
            Entity::PatientTreatment(PatientTreatment::new(p.clone(), *t))
        }
        EntityKey::Consent(p) => Entity::Consent(Consent {
            patient_ref: p.clone(),
            opted_out: None,
        }),
        EntityKey::Slot(s) => {
            // A slot record is created from its own event; find it for the fixed fields.
            let found = evs.iter().find_map(|e| match &e.data {
                EventData::SlotOpened {
                    provider_ref,
                    starts_at,
                    duration_min,
                    treatments,
                    ..
                } => Some((
                    provider_ref.clone(),
                    *starts_at,
                    *duration_min,
                    treatments.clone(),
                    e.occurred_at.min(received_at),
                )),
                _ => None,
            });
            let (provider_ref, starts_at, duration_min, treatments, opened_at) = found
                .unwrap_or_else(|| {
                    (
                        s.clone(),
                        Timestamp::UNIX_EPOCH,
                        0,
                        Vec::new(),
                        Timestamp::UNIX_EPOCH,
                    )
                });
            Entity::Slot(Slot {
                slot_ref: s.clone(),
                provider_ref,
                starts_at,
                duration_min,
                treatments,
                opened_at,
                offers: None,
                filled: false,
            })
        }
    }
}

/// Keeps a booking's start minute (slot fill needs it if a cancellation reopens the slot),
/// then forgets it if any event about the appointment came after the start.
fn merge_minute(
    a: &mut Appointment,
    starts_at: Timestamp,
    duration_min: u16,
    t: EventTime,
) -> bool {
    let minute = SlotTime {
        starts_at,
        duration_min,
    };
    let changed = a.merge_minute_event(Some(minute), t);
    changed | a.forget_stale_minute()
}

/// Merges one event into its record. Returns whether it touched anything (`false`: nothing
/// changed). Every register ranks the event at `t` ([`Lww::of_event`]): its `occurred_at`, but
/// never later than its receipt.
fn merge(entity: &mut Entity, ev: &InboundEvent, t: EventTime, practice: &Practice) -> bool {
    match (entity, &ev.data) {
        (
            Entity::Appointment(a),
            EventData::AppointmentBooked {
                patient_ref,
                treatment,
                starts_at,
                duration_min,
                provider_ref,
                ..
            },
        ) => {
            let who = PatientTreatmentKey {
                patient_ref: patient_ref.clone(),
                treatment: *treatment,
            };
            let c1 = Lww::merge_event(&mut a.patient, who, t);
            let c2 = Lww::merge_event(&mut a.starts_on, practice.local_date(*starts_at), t);
            let c3 = Lww::merge_event(&mut a.status, AppointmentStatus::Booked, t);
            let c4 = Lww::merge_event(&mut a.provider_ref, provider_ref.clone(), t);
            let c5 = merge_minute(a, *starts_at, *duration_min, t);
            c1 | c2 | c3 | c4 | c5
        }
        (
            Entity::Appointment(a),
            EventData::AppointmentRescheduled {
                starts_at,
                duration_min,
                ..
            },
        ) => {
            let c1 = Lww::merge_event(&mut a.starts_on, practice.local_date(*starts_at), t);
            let c2 = Lww::merge_event(&mut a.status, AppointmentStatus::Booked, t);
            let c3 = merge_minute(a, *starts_at, *duration_min, t);
            c1 | c2 | c3
        }
        (Entity::Appointment(a), EventData::AppointmentCancelled { .. }) => {
            let c1 = Lww::merge_event(&mut a.status, AppointmentStatus::Cancelled, t);
            c1 | a.forget_stale_minute()
        }
        (Entity::Appointment(a), EventData::AppointmentNoShow { .. }) => {
            let c1 = Lww::merge_event(&mut a.status, AppointmentStatus::NoShow, t);
            // Missed: the minute goes, unless a later report (a reschedule) set it again.
            let c2 = a.merge_minute_event(None, t);
            c1 | c2 | a.forget_stale_minute()
        }
        (
            Entity::PatientTreatment(pt),
            EventData::AppointmentCompleted {
                series, cycle_days, ..
            },
        ) => pt.merge_completion_event(t, |at| {
            Completion::new(practice.local_date(at), *series, *cycle_days)
        }),
        (Entity::Consent(c), EventData::PatientOptedOut { .. }) => {
            Lww::merge_event(&mut c.opted_out, true, t)
        }
        (Entity::Consent(c), EventData::PatientOptedIn { .. }) => {
            Lww::merge_event(&mut c.opted_out, false, t)
        }
        (Entity::Slot(s), EventData::SlotOpened { .. }) => {
            // The first report of a slot wins; later reports of the same slot change nothing.
            let at = t.ranked_at();
            if at < s.opened_at {
                s.opened_at = at;
                return true;
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod field_path_tests {
    #[test]
    fn indices_are_dropped_and_paths_capped() {
        assert_eq!(
            super::field_path("events[12].data.patient_ref"),
            "events[].data.patient_ref"
        );
        assert_eq!(super::field_path("body"), "body");
        assert_eq!(super::field_path(&"a".repeat(200)).len(), 80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::admin::{NewPractice, create_practice};
    use crate::signature::WebhookSecret;
    use crate::testing::World;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    /// A world with `known-clinic` onboarded, and its webhook secret.
    fn onboarded() -> (World, WebhookSecret) {
        let world = World::new("2026-11-23T17:00:00Z".parse().unwrap());
        let out = run(create_practice(
            &world.store,
            world.keys(),
            NewPractice {
                id: PracticeId::parse("known-clinic").unwrap(),
                time_zone: "America/New_York".into(),
                owner_emails: vec!["owner@known.example".into()],
                trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
            },
        ))
        .unwrap();
        (world, WebhookSecret::parse(&out.webhook_secret).unwrap())
    }

    #[test]
    fn an_unknown_practice_is_answered_as_a_bad_signature() {
        let (world, secret) = onboarded();
        let wrong = WebhookSecret::generate();
        let now = world.clock.now();
        let body = format!(
            r#"{{"type":"patient.opted_in","occurred_at":"{now}","data":{{"patient_ref":"p_7Hq2kX9mZ4rT1vB8yW3n"}}}}"#
        );
        let long_id = "m".repeat(signature::MAX_WEBHOOK_ID_LEN + 1);
        let non_utf8 = b"{\"type\": \"\xff\"}".to_vec();
        // (webhook-id, timestamp, signed, body): whatever is wrong with a delivery, an unknown
        // practice (or a path that is no practice id) answers as the known practice does when
        // the delivery is not signed with its secret.
        let now = now.as_second();
        let cases: [(Option<&str>, i64, bool, &[u8]); 8] = [
            (Some("msg_1"), now, true, body.as_bytes()),
            (Some("msg_1"), now - 301, true, body.as_bytes()),
            (Some("msg_1"), now, false, body.as_bytes()),
            (None, now, true, body.as_bytes()),
            (Some("msg 1"), now, true, body.as_bytes()),
            (Some(""), now, true, body.as_bytes()),
            (Some(&long_id), now, true, body.as_bytes()),
            (Some("msg_1"), now, true, &non_utf8),
        ];
        for (i, (id, at, signed, body)) in cases.into_iter().enumerate() {
            let sign = |k: &WebhookSecret| {
                // A body that is not UTF-8 cannot be signed: a well-shaped signature will do.
                k.sign(id.unwrap_or("x"), at, body)
                    .unwrap_or_else(|| format!("v1,{}=", "A".repeat(43)))
            };
            // The unknown practices get a signature under the known practice's own secret:
            // that tells nothing either.
            let (right, wrong) = (sign(&secret), sign(&wrong));
            let at = at.to_string();
            let deliver = |practice: &str, sig: &str| {
                let d = Delivery {
                    practice_id: Some(practice),
                    content_type: Some("application/json"),
                    headers: SignedHeaders {
                        id,
                        timestamp: Some(&at),
                        signature: signed.then_some(sig),
                    },
                    body,
                };
                run(receive(&world.receiver(), d)).unwrap_err()
            };
            let known = deliver("known-clinic", &wrong);
            let unknown = deliver("no-such-clinic", &right);
            let malformed = deliver("No Such Clinic", &right);
            // The function answers `UnknownPractice(x)` exactly as `Signature(x)` (its own
            // tests check the mapping): the same signature refusal is enough here.
            let ReceiveError::Signature(refusal) = known else {
                panic!("case {i}: {known:?}");
            };
            for e in [&unknown, &malformed] {
                assert_eq!(e, &ReceiveError::UnknownPractice(refusal), "case {i}");
                // Operators can still tell.
                assert_eq!(e.reason(), "unknown_practice", "case {i}");
            }
        }
        let d = Delivery {
            practice_id: Some("no-such-clinic"),
            content_type: Some("application/json"),
            headers: SignedHeaders::default(),
            body: body.as_bytes(),
        };
        let e = run(receive(&world.receiver(), d)).unwrap_err();
        assert!(
            matches!(
                e,
                ReceiveError::UnknownPractice(SignatureError::MissingHeader(_))
            ),
            "{e:?}"
        );
    }

    #[test]
    fn content_type_and_size_come_before_the_practice() {
        let (world, _) = onboarded();
        for practice in ["no-such-clinic", "No Such Clinic"] {
            let big = vec![b' '; MAX_BODY_BYTES + 1];
            let d = |ct, body| Delivery {
                practice_id: Some(practice),
                content_type: Some(ct),
                headers: SignedHeaders::default(),
                body,
            };
            let e = run(receive(&world.receiver(), d("text/plain", b"{}"))).unwrap_err();
            assert_eq!(e, ReceiveError::UnsupportedMediaType);
            let e = run(receive(&world.receiver(), d("application/json", &big))).unwrap_err();
            assert_eq!(e, ReceiveError::TooLarge);
        }
    }

    #[test]
    fn a_malformed_webhook_id_names_its_header_and_rule() {
        let e = ReceiveError::Signature(SignatureError::IdFormat);
        assert_eq!(SignatureError::IdFormat.field(), "webhook-id");
        assert_eq!(e.reason(), "webhook_id_format");
    }
}
