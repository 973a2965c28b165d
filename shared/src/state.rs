//! State kept per practice, as commutative merges of inbound events.
//!
//! Every field that an event can change is a last-writer-wins register keyed by the event's
//! `occurred_at` (ties broken by the value itself), so applying the same events in any order,
//! any number of times, gives the same state. That is what makes redeliveries and
//! out-of-order deliveries harmless (DESIGN §4.1).
//!
//! Patient-linked dates are kept at day precision in the practice's time zone (DESIGN §2.3).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::OpaqueRef;
use crate::inbound::Series;
use crate::treatment::Treatment;

/// A last-writer-wins register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    pub value: T,
    pub at: Timestamp,
}

impl<T: Ord + Clone> Lww<T> {
    pub fn new(value: T, at: Timestamp) -> Self {
        Self { value, at }
    }

    /// Merges `other` in; returns whether anything changed.
    pub fn merge(slot: &mut Option<Lww<T>>, other: Lww<T>) -> bool {
        match slot {
            Some(cur) if (cur.at, &cur.value) >= (other.at, &other.value) => false,
            _ => {
                *slot = Some(other);
                true
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
    Completed,
    NoShow,
}

/// What we know of one appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub appointment_ref: OpaqueRef,
    /// Known once `appointment.booked` (or `completed`) arrived; a reschedule may come first.
    pub patient: Option<Lww<PatientTreatmentKey>>,
    pub starts_on: Option<Lww<Date>>,
    pub status: Option<Lww<AppointmentStatus>>,
    /// The no-show recovery gap was settled (actioned or suppressed for good).
    #[serde(default)]
    pub recovery_settled: bool,
    /// Re-check the no-show recovery no earlier than this.
    #[serde(default)]
    pub recheck_on: Option<Date>,
    /// The booked start to the minute, and its length: what slot fill needs when a
    /// cancellation reopens the slot. Kept only while the appointment lies ahead: cleared when
    /// it is missed, when an event about it arrives after its start, and once its reopened
    /// slot has been taken over (DESIGN §2.3: the precision the rules need).
    #[serde(default)]
    /// A register like the others: forgetting keeps its time (value `None`), so an older
    /// report delivered late cannot bring the minute back.
    pub slot_start: Option<Lww<Option<SlotTime>>>,
    /// The provider, from the booking (not patient-linked; slot fill offers it).
    #[serde(default)]
    pub provider_ref: Option<Lww<OpaqueRef>>,
}

/// A booked start to the minute and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotTime {
    pub starts_at: Timestamp,
    pub duration_min: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientTreatmentKey {
    pub patient_ref: OpaqueRef,
    pub treatment: Treatment,
}

impl Appointment {
    pub fn new(appointment_ref: OpaqueRef) -> Self {
        Self {
            appointment_ref,
            patient: None,
            starts_on: None,
            status: None,
            recovery_settled: false,
            recheck_on: None,
            slot_start: None,
            provider_ref: None,
        }
    }

    /// The start minute, while it is kept.
    pub fn start_minute(&self) -> Option<(SlotTime, Timestamp)> {
        self.slot_start
            .as_ref()
            .and_then(|l| l.value.map(|v| (v, l.at)))
    }

    /// Forgets the start minute (keeps the day): the appointment is past, missed, or its
    /// reopened slot is taken over by a slot record.
    pub fn forget_minute(&mut self) -> bool {
        match &mut self.slot_start {
            Some(l) if l.value.is_some() => {
                l.value = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets the start minute once any event about the appointment was reported at or after
    /// it (the appointment is past): only the day stays.
    pub fn forget_stale_minute(&mut self) -> bool {
        let latest = [
            self.status.as_ref().map(|l| l.at),
            self.starts_on.as_ref().map(|l| l.at),
            self.patient.as_ref().map(|l| l.at),
        ]
        .into_iter()
        .flatten()
        .max();
        match (&self.slot_start, latest) {
            (Some(Lww { value: Some(t), .. }), Some(latest)) if t.starts_at <= latest => {
                self.forget_minute()
            }
            _ => false,
        }
    }

    /// Booked and starting on or after `day`: this blocks a rebook nudge for its category.
    pub fn is_booked_from(&self, day: Date) -> bool {
        matches!(&self.status, Some(s) if s.value == AppointmentStatus::Booked)
            && matches!(&self.starts_on, Some(d) if d.value >= day)
    }

    pub fn treatment(&self) -> Option<Treatment> {
        self.patient.as_ref().map(|p| p.value.treatment)
    }
}

/// The last completed treatment of one category for one patient: what the rebook rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientTreatment {
    pub patient_ref: OpaqueRef,
    pub treatment: Treatment,
    pub last: Option<Lww<Completion>>,
    /// The due date an action was already created for (so a re-run adds nothing).
    #[serde(default)]
    pub actioned_due: Option<Date>,
    /// Re-check no earlier than this (set when a gap was suppressed, e.g. booked ahead).
    #[serde(default)]
    pub recheck_on: Option<Date>,
}

/// One completion, as the rules need it: the day, not the minute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Completion {
    pub on: Date,
    pub series_index: Option<u16>,
    pub series_of: Option<u16>,
    pub cycle_days: Option<u16>,
}

impl Completion {
    pub fn new(on: Date, series: Option<Series>, cycle_days: Option<u16>) -> Self {
        Self {
            on,
            series_index: series.map(|s| s.index),
            series_of: series.map(|s| s.of),
            cycle_days,
        }
    }
}

impl PatientTreatment {
    pub fn new(patient_ref: OpaqueRef, treatment: Treatment) -> Self {
        Self {
            patient_ref,
            treatment,
            last: None,
            actioned_due: None,
            recheck_on: None,
        }
    }

    /// Merges a completion. The latest completion *date* wins (a late-arriving older visit
    /// never replaces a newer one); `occurred_at` breaks ties within a day.
    pub fn merge_completion(&mut self, c: Completion, at: Timestamp) -> bool {
        let newer = match &self.last {
            None => true,
            Some(cur) => (&c.on, at, &c) > (&cur.value.on, cur.at, &cur.value),
        };
        if newer {
            self.last = Some(Lww::new(c, at));
            self.recheck_on = None;
        }
        newer
    }

    /// Merges another record of the same category in (the same patient under an older ref,
    /// when a ref is rotated). Commutative, associative and idempotent: the later completion
    /// wins (by the same order as [`Self::merge_completion`]) and brings its re-check date
    /// along; the latest due date an action exists for is kept, so no gap is actioned twice.
    /// Returns whether anything changed.
    pub fn absorb(&mut self, other: &PatientTreatment) -> bool {
        let before = (self.last.clone(), self.actioned_due, self.recheck_on);
        let order = |pt: &PatientTreatment| {
            pt.last
                .as_ref()
                .map(|l| (l.value.on, l.at, l.value.clone()))
        };
        match order(other).cmp(&order(self)) {
            std::cmp::Ordering::Greater => {
                self.last = other.last.clone();
                self.recheck_on = other.recheck_on;
            }
            std::cmp::Ordering::Equal => self.recheck_on = self.recheck_on.max(other.recheck_on),
            std::cmp::Ordering::Less => {}
        }
        self.actioned_due = self.actioned_due.max(other.actioned_due);
        before != (self.last.clone(), self.actioned_due, self.recheck_on)
    }
}

/// Consent to nudges, per patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub patient_ref: OpaqueRef,
    pub opted_out: Option<Lww<bool>>,
}

impl Consent {
    pub fn is_opted_out(&self) -> bool {
        self.opted_out.as_ref().is_some_and(|o| o.value)
    }

    /// Merges another consent record of the same patient in (last writer wins).
    pub fn absorb(&mut self, other: &Consent) -> bool {
        match &other.opted_out {
            Some(o) => Lww::merge(&mut self.opted_out, o.clone()),
            None => false,
        }
    }
}

/// An open slot (not patient-linked: kept to the minute for real-time matching).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub slot_ref: OpaqueRef,
    pub provider_ref: OpaqueRef,
    pub starts_at: Timestamp,
    pub duration_min: u16,
    pub treatments: Vec<Treatment>,
    pub opened_at: Timestamp,
    /// Slot fill ran for this slot: the offers it made (action ids, no patient refs).
    #[serde(default)]
    pub offers: Option<Vec<crate::ids::ActionId>>,
    /// The slot was booked: pending offers are withdrawn and no more go out.
    #[serde(default)]
    pub filled: bool,
}

/// How an entity is addressed within a practice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityKey {
    Appointment(OpaqueRef),
    PatientTreatment(OpaqueRef, Treatment),
    Consent(OpaqueRef),
    Slot(OpaqueRef),
}

impl EntityKey {
    /// The sort key inside the practice's partition.
    pub fn sort_key(&self) -> String {
        match self {
            Self::Appointment(a) => format!("APPT#{a}"),
            Self::PatientTreatment(p, t) => format!("PT#{p}#{t}"),
            Self::Consent(p) => format!("CONSENT#{p}"),
            Self::Slot(s) => format!("SLOT#{s}"),
        }
    }

    pub fn parse_sort_key(sk: &str) -> Option<Self> {
        let (kind, rest) = sk.split_once('#')?;
        let r = |s: &str| OpaqueRef::parse(s).ok();
        match kind {
            "APPT" => Some(Self::Appointment(r(rest)?)),
            "CONSENT" => Some(Self::Consent(r(rest)?)),
            "SLOT" => Some(Self::Slot(r(rest)?)),
            "PT" => {
                let (p, t) = rest.split_once('#')?;
                Some(Self::PatientTreatment(r(p)?, Treatment::parse(t)?))
            }
            _ => None,
        }
    }
}

/// Any stored entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entity", rename_all = "snake_case")]
pub enum Entity {
    Appointment(Appointment),
    PatientTreatment(PatientTreatment),
    Consent(Consent),
    Slot(Slot),
}

impl Entity {
    pub fn key(&self) -> EntityKey {
        match self {
            Self::Appointment(a) => EntityKey::Appointment(a.appointment_ref.clone()),
            Self::PatientTreatment(p) => {
                EntityKey::PatientTreatment(p.patient_ref.clone(), p.treatment)
            }
            Self::Consent(c) => EntityKey::Consent(c.patient_ref.clone()),
            Self::Slot(s) => EntityKey::Slot(s.slot_ref.clone()),
        }
    }

    /// The same record under another patient ref (rotation). Patient × treatment and consent
    /// records move to the new ref's key; an appointment keeps its key (its `patient` changes,
    /// keeping the time it was learnt, so later events about it still merge by time). A slot,
    /// or an appointment whose patient is not known, is returned unchanged.
    pub fn with_patient(&self, new: &OpaqueRef) -> Entity {
        let mut e = self.clone();
        match &mut e {
            Self::Appointment(a) => {
                if let Some(p) = &mut a.patient {
                    p.value.patient_ref = new.clone();
                }
            }
            Self::PatientTreatment(p) => p.patient_ref = new.clone(),
            Self::Consent(c) => c.patient_ref = new.clone(),
            Self::Slot(_) => {}
        }
        e
    }

    /// Merges another record with the same key in (see [`PatientTreatment::absorb`],
    /// [`Consent::absorb`]). Records of different kinds, appointments and slots are left as
    /// they are: they never meet under one key through rotation. Returns whether anything
    /// changed.
    pub fn absorb(&mut self, other: &Entity) -> bool {
        match (self, other) {
            (Self::PatientTreatment(a), Self::PatientTreatment(b)) => a.absorb(b),
            (Self::Consent(a), Self::Consent(b)) => a.absorb(b),
            _ => false,
        }
    }

    /// The patient this entity belongs to, for the per-patient index (rotation, erasure,
    /// booked-ahead checks).
    pub fn patient(&self) -> Option<&OpaqueRef> {
        match self {
            Self::Appointment(a) => a.patient.as_ref().map(|p| &p.value.patient_ref),
            Self::PatientTreatment(p) => Some(&p.patient_ref),
            Self::Consent(c) => Some(&c.patient_ref),
            Self::Slot(_) => None,
        }
    }
}

/// An entity as read from the store, with the version its next write is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    pub value: T,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn lww_is_order_independent_and_idempotent() {
        let a = Lww::new(AppointmentStatus::Booked, ts("2026-01-01T00:00:00Z"));
        let b = Lww::new(AppointmentStatus::Cancelled, ts("2026-01-02T00:00:00Z"));
        let mut x = None;
        Lww::merge(&mut x, a.clone());
        Lww::merge(&mut x, b.clone());
        let mut y = None;
        Lww::merge(&mut y, b.clone());
        assert!(!Lww::merge(&mut y, a.clone()));
        assert!(!Lww::merge(&mut y, b));
        assert_eq!(x, y);
    }

    #[test]
    fn latest_completion_date_wins_regardless_of_arrival() {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let mut pt = PatientTreatment::new(r, Treatment::Neurotoxin);
        assert!(pt.merge_completion(
            Completion::new(d("2026-05-01"), None, None),
            ts("2026-05-01T10:00:00Z")
        ));
        assert!(!pt.merge_completion(
            Completion::new(d("2026-02-01"), None, None),
            ts("2026-02-01T10:00:00Z")
        ));
        assert_eq!(pt.last.as_ref().map(|l| l.value.on), Some(d("2026-05-01")));
    }

    fn pt_with(
        on: &str,
        at: &str,
        actioned: Option<&str>,
        recheck: Option<&str>,
    ) -> PatientTreatment {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let mut pt = PatientTreatment::new(r, Treatment::Neurotoxin);
        pt.merge_completion(Completion::new(d(on), None, None), ts(at));
        pt.actioned_due = actioned.map(d);
        pt.recheck_on = recheck.map(d);
        pt
    }

    #[test]
    fn absorbing_records_is_commutative_and_idempotent() {
        // GIVEN the same patient's records under an old and a new ref
        let empty = PatientTreatment::new(
            OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(),
            Treatment::Neurotoxin,
        );
        let cases = [
            pt_with(
                "2026-03-01",
                "2026-03-01T10:00:00Z",
                Some("2026-05-30"),
                None,
            ),
            pt_with(
                "2026-04-01",
                "2026-04-01T10:00:00Z",
                None,
                Some("2026-08-01"),
            ),
            pt_with(
                "2026-04-01",
                "2026-04-01T10:00:00Z",
                None,
                Some("2026-07-15"),
            ),
            empty,
        ];
        for a in &cases {
            for b in &cases {
                // WHEN either absorbs the other, in either order, twice
                let mut ab = a.clone();
                ab.absorb(b);
                let mut ba = b.clone();
                ba.absorb(a);
                // THEN the result is the same, and absorbing again changes nothing
                assert_eq!(ab, ba);
                assert!(!ab.clone().absorb(a) && !ab.clone().absorb(b));
            }
        }
        let mut x = cases[0].clone();
        assert!(x.absorb(&cases[1]));
        assert_eq!(x.last, cases[1].last, "the later completion wins");
        assert_eq!(x.recheck_on, cases[1].recheck_on, "with its re-check date");
        assert_eq!(
            x.actioned_due, cases[0].actioned_due,
            "an actioned gap stays actioned"
        );
    }

    #[test]
    fn consent_absorb_is_last_writer_wins() {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let out = Consent {
            patient_ref: r.clone(),
            opted_out: Some(Lww::new(true, ts("2026-01-02T00:00:00Z"))),
        };
        let mut older_in = Consent {
            patient_ref: r,
            opted_out: Some(Lww::new(false, ts("2026-01-01T00:00:00Z"))),
        };
        assert!(older_in.absorb(&out));
        assert!(older_in.is_opted_out());
        let mut again = out.clone();
        assert!(!again.absorb(&older_in) && again == out);
    }

    #[test]
    fn with_patient_moves_keys_but_not_appointments() {
        let old = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let new = OpaqueRef::parse("p_Q2w8ErT5yU1iO3pA6sDf").unwrap();
        let appt = OpaqueRef::parse("appt_K3j9Hg2Fd8Sa7Lk4").unwrap();
        let mut a = Appointment::new(appt.clone());
        a.patient = Some(Lww::new(
            PatientTreatmentKey {
                patient_ref: old.clone(),
                treatment: Treatment::Neurotoxin,
            },
            ts("2026-01-01T00:00:00Z"),
        ));
        let moved = Entity::Appointment(a).with_patient(&new);
        assert_eq!(moved.key(), EntityKey::Appointment(appt));
        assert_eq!(moved.patient(), Some(&new));
        let pt = Entity::PatientTreatment(PatientTreatment::new(old, Treatment::Facial));
        assert_eq!(
            pt.with_patient(&new).key(),
            EntityKey::PatientTreatment(new, Treatment::Facial)
        );
    }

    #[test]
    fn sort_keys_round_trip() {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        for k in [
            EntityKey::Appointment(r.clone()),
            EntityKey::PatientTreatment(r.clone(), Treatment::DermalFiller),
            EntityKey::Consent(r.clone()),
            EntityKey::Slot(r),
        ] {
            assert_eq!(EntityKey::parse_sort_key(&k.sort_key()), Some(k));
        }
    }
}
