//! webhook-receiver's domain: check, verify, parse, guard, apply, publish.
//!
//! Order of checks: content type (415), size (413), practice (404), signature (401), JSON
//! (400), schema and PHI guard (422). Nothing is written before every event of the body has
//! parsed, so a refused body leaves no trace. Writes are commutative merges conditional on
//! the version read, so a redelivery (same `webhook-id` or not) has no second effect.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::ids::PracticeId;
use crate::inbound::{self, EventData, InboundEvent, MAX_BODY_BYTES, Refusal, RefusalCode};
use crate::ports::{
    ActionRepo, Clock, DomainEvent, EntityRepo, EventPublisher, PatientIndex, PatientRecords,
    PortError, PracticeRepo, SlotIndex, StoreError,
};
use crate::practice::Practice;
use crate::secrets::SecretCache;
use crate::service::attribution::{self, Booking};
use crate::service::privacy::{self, PrivacyDeps};
use crate::signature::{self, SignatureError, SignedHeaders};
use crate::state::{
    Appointment, AppointmentStatus, Completion, Consent, Entity, EntityKey, Lww, PatientTreatment,
    PatientTreatmentKey, Slot, SlotTime,
};

/// What the receiver needs. Built once per cold start.
pub struct ReceiverDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub entities: &'a dyn EntityRepo,
    /// Rotation and erasure re-key or delete the patient's actions.
    pub actions: &'a dyn ActionRepo,
    /// Rotation and erasure find everything stored for a ref.
    pub records: &'a dyn PatientRecords,
    /// Attribution finds a booking patient's delivered actions.
    pub patients: &'a dyn PatientIndex,
    pub bus: &'a dyn EventPublisher,
    /// A booking that takes an open slot fills it (slot fill withdraws its offers).
    pub slots: &'a dyn SlotIndex,
    pub secrets: &'a SecretCache,
    pub clock: &'a dyn Clock,
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
    #[error("unknown practice")]
    UnknownPractice,
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
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownPractice => 404,
            Self::UnsupportedMediaType => 415,
            Self::TooLarge => 413,
            Self::Signature(SignatureError::BodyNotUtf8) => 400,
            Self::Signature(_) => 401,
            Self::Refused(r) if r.code == RefusalCode::MalformedJson => 400,
            Self::Refused(_) => 422,
            Self::Unavailable => 503,
        }
    }

    /// `{"error": {"code", "field", "rule"}}` — never a value from the request.
    pub fn body(&self) -> serde_json::Value {
        let (code, field, rule) = match self {
            Self::UnknownPractice => ("unknown_practice", "practice_id", "registered_practice"),
            Self::UnsupportedMediaType => {
                ("unsupported_media_type", "content-type", "application/json")
            }
            Self::TooLarge => ("payload_too_large", "body", "max_262144_bytes"),
            Self::Signature(e) => ("invalid_signature", "webhook-signature", e.reason()),
            Self::Refused(r) => (r.code.as_str(), r.field.as_str(), r.rule),
            Self::Unavailable => ("temporarily_unavailable", "", "retry_later"),
        };
        serde_json::json!({"error": {"code": code, "field": field, "rule": rule}})
    }

    /// A reason code for logs and audit.
    pub fn reason(&self) -> String {
        match self {
            Self::Refused(r) => format!("{}:{}", r.code.as_str(), r.rule),
            Self::Signature(e) => e.reason().to_owned(),
            other => other.body()["error"]["code"]
                .as_str()
                .unwrap_or("error")
                .to_owned(),
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

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    })
}

pub async fn receive(deps: &ReceiverDeps<'_>, d: Delivery<'_>) -> Result<Accepted, ReceiveError> {
    let practice_id = d
        .practice_id
        .and_then(|p| PracticeId::parse(p).ok())
        .ok_or(ReceiveError::UnknownPractice)?;
    if !is_json(d.content_type) {
        return Err(ReceiveError::UnsupportedMediaType);
    }
    if d.body.len() > MAX_BODY_BYTES {
        return Err(ReceiveError::TooLarge);
    }
    // A disabled practice still gets its events (state stays current, and opt-outs,
    // rotations and erasures are honoured); the scan and the emitter do nothing for it.
    // Eventually consistent (half the read units): see `get_practice_recent`.
    let practice = deps
        .practices
        .get_practice_recent(&practice_id)
        .await?
        .ok_or(ReceiveError::UnknownPractice)?;
    let now = deps.clock.now();
    // A secret a rotation replaced verifies only until its overlap ends.
    let secrets = deps.secrets.webhook_at(&practice.secrets, now).await?;
    let verified = signature::verify(d.headers, d.body, &secrets, now.as_second())
        .map_err(ReceiveError::Signature)?;
    let events = inbound::parse_body(d.body, now).map_err(ReceiveError::Refused)?;
    let (changed, published) = apply(deps, &practice, &events).await?;
    Ok(Accepted {
        practice_id,
        webhook_id: verified.webhook_id,
        events: events.len(),
        changed,
        published,
    })
}

/// Applies parsed events: groups them by the record they touch, merges each group into the
/// stored record, writes each changed record once; then runs the batch's attributions
/// (bookings converting delivered triggers), ref rotations and erasures in batch order (so
/// whatever the batch said about an old ref ends up re-keyed or erased too); then publishes
/// what needs real-time work.
pub async fn apply(
    deps: &ReceiverDeps<'_>,
    practice: &Practice,
    events: &[InboundEvent],
) -> Result<(usize, usize), ReceiveError> {
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
    let changed: Vec<bool> = stream::iter(order.into_iter().map(|key| {
        let evs = groups.remove(&key).unwrap_or_default();
        async move { upsert(deps, practice, key, &evs).await }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await?;
    let mut changed = changed.into_iter().filter(|c| *c).count();
    let pdeps = PrivacyDeps {
        entities: deps.entities,
        actions: deps.actions,
        records: deps.records,
    };
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
                    booked_at: ev.occurred_at,
                };
                attribution::attribute(deps.actions, deps.patients, practice, &booking)
                    .await?
                    .map_or(0, |_| 1)
            }
            EventData::PatientRefRotated { old_ref, new_ref } => {
                privacy::rotate(&pdeps, practice, old_ref, new_ref).await?
            }
            EventData::PatientErased { patient_ref } => {
                privacy::erase(&pdeps, practice, patient_ref).await?
            }
            _ => 0,
        };
    }
    for ev in events {
        if let EventData::AppointmentBooked {
            appointment_ref,
            provider_ref,
            starts_at,
            ..
        } = &ev.data
        {
            for slot_ref in deps
                .slots
                .slots_at(&practice.id, provider_ref, *starts_at)
                .await?
            {
                // A slot reopened by this very appointment is not filled by its own booking.
                if slot_ref != *appointment_ref {
                    publish.push(DomainEvent::SlotFilled {
                        practice_id: practice.id.clone(),
                        slot_ref,
                    });
                }
            }
        }
    }
    if !publish.is_empty() {
        deps.bus.publish(&publish).await?;
    }
    Ok((changed, publish.len()))
}

pub(crate) use crate::rules::due_index_date;

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

/// Read, merge, conditional write; on a lost race, again.
async fn upsert(
    deps: &ReceiverDeps<'_>,
    practice: &Practice,
    key: EntityKey,
    evs: &[&InboundEvent],
) -> Result<bool, StoreError> {
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
        let before = stored.map(|s| s.value);
        let mut entity = before.clone().unwrap_or_else(|| empty(&key, evs));
        let mut touched = false;
        for ev in evs {
            touched |= merge(&mut entity, ev, practice);
        }
        // A merge can set a field and clear it again (a start minute already past when it
        // arrives): that changes nothing, and a redelivery must not cost a write.
        if expected.is_some() && (!touched || before.as_ref() == Some(&entity)) {
            return Ok(false);
        }
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

fn empty(key: &EntityKey, evs: &[&InboundEvent]) -> Entity {
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
                    e.occurred_at,
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
    at: Timestamp,
) -> bool {
    let t = SlotTime {
        starts_at,
        duration_min,
    };
    let changed = Lww::merge(&mut a.slot_start, Lww::new(Some(t), at));
    changed | a.forget_stale_minute()
}

/// Merges one event into its record. Returns whether it touched anything (`false`: nothing
/// changed).
fn merge(entity: &mut Entity, ev: &InboundEvent, practice: &Practice) -> bool {
    let at = ev.occurred_at;
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
            let c1 = Lww::merge(&mut a.patient, Lww::new(who, at));
            let c2 = Lww::merge(
                &mut a.starts_on,
                Lww::new(practice.local_date(*starts_at), at),
            );
            let c3 = Lww::merge(&mut a.status, Lww::new(AppointmentStatus::Booked, at));
            let c4 = Lww::merge(&mut a.provider_ref, Lww::new(provider_ref.clone(), at));
            let c5 = merge_minute(a, *starts_at, *duration_min, at);
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
            let c1 = Lww::merge(
                &mut a.starts_on,
                Lww::new(practice.local_date(*starts_at), at),
            );
            let c2 = Lww::merge(&mut a.status, Lww::new(AppointmentStatus::Booked, at));
            let c3 = merge_minute(a, *starts_at, *duration_min, at);
            c1 | c2 | c3
        }
        (Entity::Appointment(a), EventData::AppointmentCancelled { .. }) => {
            let c1 = Lww::merge(&mut a.status, Lww::new(AppointmentStatus::Cancelled, at));
            c1 | a.forget_stale_minute()
        }
        (Entity::Appointment(a), EventData::AppointmentNoShow { .. }) => {
            let c1 = Lww::merge(&mut a.status, Lww::new(AppointmentStatus::NoShow, at));
            // Missed: the minute goes, unless a later report (a reschedule) set it again.
            let c2 = Lww::merge(&mut a.slot_start, Lww::new(None, at));
            c1 | c2 | a.forget_stale_minute()
        }
        (
            Entity::PatientTreatment(pt),
            EventData::AppointmentCompleted {
                series, cycle_days, ..
            },
        ) => pt.merge_completion(
            Completion::new(practice.local_date(at), *series, *cycle_days),
            at,
        ),
        (Entity::Consent(c), EventData::PatientOptedOut { .. }) => {
            Lww::merge(&mut c.opted_out, Lww::new(true, at))
        }
        (Entity::Consent(c), EventData::PatientOptedIn { .. }) => {
            Lww::merge(&mut c.opted_out, Lww::new(false, at))
        }
        (Entity::Slot(s), EventData::SlotOpened { .. }) => {
            // The first report of a slot wins; later reports of the same slot change nothing.
            if at < s.opened_at {
                s.opened_at = at;
                return true;
            }
            false
        }
        _ => false,
    }
}
