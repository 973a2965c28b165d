//! State kept per practice, as commutative merges of inbound events.
//!
//! Every field that an event can change is a last-writer-wins register keyed by the event's
//! time ([`EventTime::ranked_at`]: its `occurred_at`, but never later than its receipt), ties
//! broken by the `occurred_at` reported and then by the value itself, so applying the same
//! events in any order, any number of times, gives the same state. That is what makes
//! redeliveries and out-of-order deliveries harmless (docs/contracts.md, Ordering).
//!
//! Patient-linked dates are kept at day precision in the practice's time zone
//! (docs/design.md §2.3).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::OpaqueRef;
use crate::inbound::Series;
use crate::treatment::Treatment;

/// When an event happened, as the merges see it: the `occurred_at` the PMS reported, and when
/// the receiver accepted the delivery that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    pub occurred_at: Timestamp,
    pub received_at: Timestamp,
}

impl EventTime {
    /// The time the event is ordered by: `occurred_at`, but never later than its receipt. An
    /// `occurred_at` ahead of our clock is accepted (a PMS clock running fast), but it cannot
    /// win against events received after it: time cannot be borrowed from the future.
    pub fn ranked_at(self) -> Timestamp {
        self.occurred_at.min(self.received_at)
    }
}

/// What a register keeps about events dated ahead of their receipt (most registers never see
/// one, and keep nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ahead {
    /// The `occurred_at` the value's event reported, when it was later than the register's
    /// `at` (the event was dated ahead, and ranks at its receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Timestamp>,
    /// The events dated ahead that could still win here if redelivered, by `occurred_at`.
    #[serde(default)]
    pub seen: Vec<Seen>,
}

/// An event that was dated ahead of its receipt, as a register remembers it: a redelivery of
/// it (the same `occurred_at`) ranks at `ranked_at` again, not at its own later receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seen {
    /// The `occurred_at` reported.
    pub occurred_at: Timestamp,
    /// The earliest receipt seen: the time it ranks at.
    pub ranked_at: Timestamp,
}

/// A last-writer-wins register.
///
/// Ordered by `(at, reported, value)`: the event's [`EventTime::ranked_at`], then the
/// `occurred_at` it reported (so events clamped to the same receipt keep the PMS's own order),
/// then the value (two reports of the same instant: the greater value wins, e.g. an opt-out
/// over an opt-in).
///
/// Clamping to the receipt makes an event's rank depend on when it was received, so a
/// redelivery of an event dated ahead would rank later than its first delivery and could win
/// what the first one lost. [`Lww::ahead`] remembers such events until they can no longer win
/// (the register's time passed their `occurred_at`): a redelivery ranks where the first
/// delivery did, and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    pub value: T,
    /// When the value was set, for ordering: the event's `occurred_at`, or its receipt when
    /// that was earlier.
    pub at: Timestamp,
    /// Only for a register that has seen events dated ahead (boxed: most never do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahead: Option<Box<Ahead>>,
}

impl<T: Ord + Clone> Lww<T> {
    pub fn new(value: T, at: Timestamp) -> Self {
        Self {
            value,
            at,
            ahead: None,
        }
    }

    /// The `occurred_at` reported for the value.
    pub fn reported_at(&self) -> Timestamp {
        self.ahead
            .as_ref()
            .and_then(|a| a.reported)
            .unwrap_or(self.at)
    }

    /// The events dated ahead this register remembers.
    pub fn seen(&self) -> &[Seen] {
        self.ahead.as_ref().map_or(&[], |a| &a.seen)
    }

    /// The register an event at `t` writes into `slot`: `value(at)` ranked at the event's
    /// time, or, for a redelivery of an event dated ahead that `slot` remembers, where its
    /// first delivery ranked.
    pub fn of_event(
        slot: &Option<Lww<T>>,
        t: EventTime,
        value: impl FnOnce(Timestamp) -> T,
    ) -> Self {
        let first = slot
            .iter()
            .flat_map(|l| l.seen())
            .filter(|s| s.occurred_at == t.occurred_at)
            .map(|s| s.ranked_at)
            .min();
        let at = first.map_or(t.ranked_at(), |f| f.min(t.ranked_at()));
        let reported = (t.occurred_at > at).then_some(t.occurred_at);
        Self {
            value: value(at),
            at,
            ahead: reported.map(|occurred_at| {
                Box::new(Ahead {
                    reported,
                    seen: vec![Seen {
                        occurred_at,
                        ranked_at: at,
                    }],
                })
            }),
        }
    }

    /// Merges the value an event at `t` reports; returns whether anything changed.
    pub fn merge_event(slot: &mut Option<Lww<T>>, value: T, t: EventTime) -> bool {
        let other = Self::of_event(slot, t, |_| value);
        Self::merge(slot, other)
    }

    /// Merges `other` in (another register, or an event's [`Lww::of_event`]); returns whether
    /// anything changed. Commutative, associative and idempotent.
    pub fn merge(slot: &mut Option<Lww<T>>, other: Lww<T>) -> bool {
        let key = |l: &Lww<T>| (l.at, l.reported_at());
        Self::merge_by(slot, other, |o, c| (key(o), &o.value) > (key(c), &c.value)).changed
    }

    /// [`Lww::merge`] with another order deciding which value wins (`beats(other, current)`);
    /// the remembered events are joined either way.
    pub fn merge_by(
        slot: &mut Option<Lww<T>>,
        other: Lww<T>,
        beats: impl Fn(&Lww<T>, &Lww<T>) -> bool,
    ) -> Merged {
        let Some(cur) = slot else {
            let mut other = other;
            let (reported, seen) = other.take_ahead();
            other.set_ahead(reported, seen);
            *slot = Some(other);
            return Merged {
                won: true,
                changed: true,
            };
        };
        let before = cur.ahead.clone();
        let won = beats(&other, cur);
        let mut other = other;
        let (other_reported, other_seen) = other.take_ahead();
        let (mut reported, mut seen) = cur.take_ahead();
        seen.extend(other_seen);
        if won {
            cur.value = other.value;
            cur.at = other.at;
            reported = other_reported;
        }
        cur.set_ahead(reported, seen);
        Merged {
            won,
            changed: won || cur.ahead != before,
        }
    }

    fn take_ahead(&mut self) -> (Option<Timestamp>, Vec<Seen>) {
        self.ahead
            .take()
            .map_or((None, Vec::new()), |a| (a.reported, a.seen))
    }

    /// Keeps one entry per `occurred_at` (its earliest rank) and drops those that can no
    /// longer win: dated before the register's time, a redelivery ranks below it.
    pub(crate) fn set_ahead(&mut self, reported: Option<Timestamp>, mut seen: Vec<Seen>) {
        let at = self.at;
        seen.retain(|s| s.occurred_at >= at);
        seen.sort();
        seen.dedup_by_key(|s| s.occurred_at);
        let reported = reported.filter(|r| *r > at);
        self.ahead =
            (reported.is_some() || !seen.is_empty()).then(|| Box::new(Ahead { reported, seen }));
    }
}

/// What [`Lww::merge_by`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// The other value won.
    pub won: bool,
    /// Anything changed (the value, or what the register remembers).
    pub changed: bool,
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
    /// slot has been taken over (docs/design.md §2.3: the precision the rules need).
    #[serde(default)]
    /// A register like the others: forgetting keeps its time (value `None`), so an older
    /// report delivered late cannot bring the minute back.
    pub slot_start: Option<Lww<Option<SlotTime>>>,
    /// The provider, from the booking (not patient-linked; slot fill offers it).
    #[serde(default)]
    pub provider_ref: Option<Lww<OpaqueRef>>,
}

/// The start-minute register's order: time, reported time, then a forgotten minute above any
/// kept one (see [`Appointment::merge_minute_event`]), then the minute itself.
fn minute_rank(l: &Lww<Option<SlotTime>>) -> (Timestamp, Timestamp, bool, Option<SlotTime>) {
    (l.at, l.reported_at(), l.value.is_none(), l.value)
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

    /// Merges a report of the start minute (`None`: the appointment was missed) at `t`.
    ///
    /// The register is ordered as the others, except that at the same time forgetting wins
    /// over a minute: [`Self::forget_minute`] keeps the register's time, so a redelivery of
    /// the report whose minute was forgotten ranks at that time and must lose to it.
    pub fn merge_minute_event(&mut self, minute: Option<SlotTime>, t: EventTime) -> bool {
        let other = Lww::of_event(&self.slot_start, t, |_| minute);
        Lww::merge_by(&mut self.slot_start, other, |o, c| {
            minute_rank(o) > minute_rank(c)
        })
        .changed
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

    /// The provider and start minute, while the minute is kept and the provider known
    /// (whatever the status): where an index of appointments by start files it.
    pub fn placed_at(&self) -> Option<(&OpaqueRef, Timestamp)> {
        let (minute, _) = self.start_minute()?;
        Some((&self.provider_ref.as_ref()?.value, minute.starts_at))
    }

    /// [`Self::placed_at`] while the appointment is booked: a slot at the same provider and
    /// start is taken by it.
    pub fn holds(&self) -> Option<(&OpaqueRef, Timestamp)> {
        let booked = matches!(&self.status, Some(s) if s.value == AppointmentStatus::Booked);
        self.placed_at().filter(|_| booked)
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
        self.merge_last(Lww::new(c, at))
    }

    /// Merges the completion an event at `t` reports, ranked as [`Lww::of_event`] ranks it;
    /// `completion` makes it from that time (its day is the day of the ranked time, so a
    /// completion dated ahead cannot take a later day either).
    pub fn merge_completion_event(
        &mut self,
        t: EventTime,
        completion: impl FnOnce(Timestamp) -> Completion,
    ) -> bool {
        let c = Lww::of_event(&self.last, t, completion);
        self.merge_last(c)
    }

    fn merge_last(&mut self, c: Lww<Completion>) -> bool {
        let merged = Lww::merge_by(&mut self.last, c, |o, c| {
            (o.value.on, o.at, o.reported_at(), &o.value)
                > (c.value.on, c.at, c.reported_at(), &c.value)
        });
        if merged.won {
            self.recheck_on = None;
        }
        merged.changed
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
                .map(|l| (l.value.on, l.at, l.reported_at(), l.value.clone()))
        };
        let seen: Vec<Seen> = [&self.last, &other.last]
            .into_iter()
            .flatten()
            .flat_map(|l| l.seen().iter().copied())
            .collect();
        match order(other).cmp(&order(self)) {
            std::cmp::Ordering::Greater => {
                self.last = other.last.clone();
                self.recheck_on = other.recheck_on;
            }
            std::cmp::Ordering::Equal => self.recheck_on = self.recheck_on.max(other.recheck_on),
            std::cmp::Ordering::Less => {}
        }
        if let Some(l) = &mut self.last {
            let reported = l.ahead.as_ref().and_then(|a| a.reported);
            l.set_ahead(reported, seen);
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

    fn ev(occurred_at: &str, received_at: &str) -> EventTime {
        EventTime {
            occurred_at: ts(occurred_at),
            received_at: ts(received_at),
        }
    }

    /// The consent register after merging `(opted_out, time)` reports in order.
    fn consent(reports: &[(bool, EventTime)]) -> Option<Lww<bool>> {
        let mut slot = None;
        for (out, t) in reports {
            Lww::merge_event(&mut slot, *out, *t);
        }
        slot
    }

    #[test]
    fn an_event_dated_ahead_ranks_at_its_receipt() {
        // GIVEN an opt-in stamped 23 h ahead, received at noon, and a real opt-out an hour later
        let opt_in = (false, ev("2026-11-24T11:00:00Z", "2026-11-23T12:00:00Z"));
        let opt_out = (true, ev("2026-11-23T13:00:00Z", "2026-11-23T13:00:05Z"));
        // THEN the opt-out wins: the opt-in ranks at its receipt, not at its stamp
        let c = consent(&[opt_in, opt_out]).unwrap();
        assert!(c.value);
        assert_eq!(
            (c.at, c.reported_at()),
            (ts("2026-11-23T13:00:00Z"), ts("2026-11-23T13:00:00Z"))
        );
        // The opt-in is remembered until the register's time passes its stamp.
        assert_eq!(
            c.ahead.as_deref(),
            Some(&Ahead {
                reported: None,
                seen: vec![Seen {
                    occurred_at: ts("2026-11-24T11:00:00Z"),
                    ranked_at: ts("2026-11-23T12:00:00Z"),
                }],
            })
        );
        // An event on time is not clamped, and one received later still wins on its own.
        let later_in = (false, ev("2026-11-23T14:00:00Z", "2026-11-23T14:00:01Z"));
        assert!(!consent(&[opt_in, opt_out, later_in]).unwrap().value);
    }

    #[test]
    fn a_redelivery_of_an_event_dated_ahead_has_no_second_effect() {
        let opt_in = |received: &str| (false, ev("2026-11-24T11:00:00Z", received));
        let opt_out = (true, ev("2026-11-23T13:00:00Z", "2026-11-23T13:00:05Z"));
        let mut slot = consent(&[opt_in("2026-11-23T12:00:00Z")]);
        let first = slot.clone();
        // Redelivered while it is still ahead: same rank, nothing changes (no write).
        assert!(!Lww::merge_event(
            &mut slot,
            false,
            opt_in("2026-11-23T12:30:00Z").1
        ));
        assert_eq!(slot, first);
        // Beaten by the opt-out, then redelivered later, before and after its stamp: the
        // opt-out stays.
        assert!(Lww::merge_event(&mut slot, opt_out.0, opt_out.1));
        let out = slot.clone();
        for received in [
            "2026-11-23T14:00:00Z",
            "2026-11-24T11:00:00Z",
            "2026-12-01T00:00:00Z",
        ] {
            let (v, t) = opt_in(received);
            assert!(
                !Lww::merge_event(&mut slot, v, t),
                "redelivered at {received}"
            );
            assert_eq!(slot, out, "redelivered at {received}");
        }
        // Once the register's time passes the stamp, the memory goes: a redelivery ranks at
        // most at its stamp, below the register, so it is not needed any more.
        let after = (true, ev("2026-11-24T12:00:00Z", "2026-11-24T12:00:00Z"));
        assert!(Lww::merge_event(&mut slot, after.0, after.1));
        assert_eq!(slot.as_ref().unwrap().ahead, None);
        let (v, t) = opt_in("2026-11-25T00:00:00Z");
        assert!(!Lww::merge_event(&mut slot, v, t));
    }

    #[test]
    fn ties_at_one_receipt_keep_the_reported_order_then_the_value() {
        let at = "2026-11-23T12:00:00Z";
        // Both dated ahead, received in one batch: the PMS's own order decides…
        let out = (true, ev("2026-11-24T09:00:00Z", at));
        let back_in = (false, ev("2026-11-24T09:00:01Z", at));
        // …and for the same instant, the opt-out.
        let same_in = (false, ev("2026-11-24T09:00:00Z", at));
        for reports in [
            vec![out, back_in],
            vec![back_in, out],
            vec![out, back_in, out, back_in],
        ] {
            let c = consent(&reports).unwrap();
            assert!(!c.value, "{reports:?}");
            assert_eq!(
                (c.at, c.reported_at()),
                (ts(at), ts("2026-11-24T09:00:01Z"))
            );
        }
        assert!(consent(&[out, same_in]).unwrap().value);
        assert!(consent(&[same_in, out]).unwrap().value);
        // An event stamped exactly at the receipt ranks below one clamped to it.
        let on_time = (true, ev(at, at));
        assert!(!consent(&[on_time, back_in]).unwrap().value);
        assert!(!consent(&[back_in, on_time]).unwrap().value);
    }

    #[test]
    fn merges_with_events_dated_ahead_are_commutative_and_idempotent() {
        // Reports received at a few instants, some dated ahead, some sharing a stamp.
        let reports = [
            (false, ev("2026-11-24T11:00:00Z", "2026-11-23T12:00:00Z")),
            (true, ev("2026-11-23T12:00:00Z", "2026-11-23T12:00:00Z")),
            (true, ev("2026-11-24T11:00:00Z", "2026-11-23T12:00:00Z")),
            (false, ev("2026-11-23T20:00:00Z", "2026-11-23T12:00:00Z")),
            (true, ev("2026-11-23T11:00:00Z", "2026-11-23T12:00:00Z")),
        ];
        let mut orders = vec![vec![]];
        for _ in 0..reports.len() {
            orders = orders
                .into_iter()
                .flat_map(|o: Vec<usize>| {
                    (0..reports.len())
                        .filter(|i| !o.contains(i))
                        .map(|i| [o.as_slice(), &[i]].concat())
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        let expected = consent(&reports);
        for order in orders {
            let picked: Vec<_> = order.iter().map(|i| reports[*i]).collect();
            let mut slot = consent(&picked);
            assert_eq!(slot, expected, "{order:?}");
            for (v, t) in &picked {
                assert!(!Lww::merge_event(&mut slot, *v, *t), "{order:?}");
            }
            // Registers merge the same way (rotation absorbs one into another).
            let (a, b) = picked.split_at(2);
            let mut x = consent(a);
            Lww::merge(&mut x, consent(b).unwrap());
            assert_eq!(x, expected, "{order:?}");
        }
    }

    #[test]
    fn a_completion_dated_ahead_takes_the_day_of_its_receipt() {
        let r = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
        let mut pt = PatientTreatment::new(r, Treatment::Neurotoxin);
        let day = |at: Timestamp| {
            Completion::new(at.to_zoned(jiff::tz::TimeZone::UTC).date(), None, None)
        };
        let ahead = ev("2026-11-24T20:00:00Z", "2026-11-23T22:00:00Z");
        assert!(pt.merge_completion_event(ahead, day));
        let last = pt.last.clone().unwrap();
        assert_eq!(last.value.on, d("2026-11-23"));
        assert_eq!(last.at, ts("2026-11-23T22:00:00Z"));
        // A completion received the next morning wins; the first one, redelivered, does not.
        assert!(pt.merge_completion_event(ev("2026-11-24T09:00:00Z", "2026-11-24T09:00:00Z"), day));
        assert_eq!(pt.last.as_ref().unwrap().value.on, d("2026-11-24"));
        let next = pt.clone();
        assert!(
            !pt.merge_completion_event(ev("2026-11-24T20:00:00Z", "2026-11-24T21:00:00Z"), day)
        );
        assert_eq!(pt, next);
    }

    #[test]
    fn a_register_written_before_clamping_reads_and_writes_as_before() {
        let old = r#"{"value":true,"at":"2026-01-02T00:00:00Z"}"#;
        let l: Lww<bool> = serde_json::from_str(old).unwrap();
        assert_eq!(l, Lww::new(true, ts("2026-01-02T00:00:00Z")));
        assert_eq!(serde_json::to_string(&l).unwrap(), old);
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

    /// An appointment booked for 15:00 on 10 March (30 minutes), its minute and day known
    /// from a booking reported at `booked_at`.
    fn booked(booked_at: &str) -> Appointment {
        let mut a = Appointment::new(OpaqueRef::parse("appt_K3j9Hg2Fd8Sa7Lk4").unwrap());
        a.status = Some(Lww::new(AppointmentStatus::Booked, ts(booked_at)));
        a.starts_on = Some(Lww::new(d("2026-03-10"), ts(booked_at)));
        a.slot_start = Some(Lww::new(
            Some(SlotTime {
                starts_at: ts("2026-03-10T15:00:00Z"),
                duration_min: 30,
            }),
            ts(booked_at),
        ));
        a
    }

    #[test]
    fn forgetting_the_minute_keeps_the_day_and_the_registers_time() {
        let mut a = booked("2026-03-01T09:00:00Z");
        assert_eq!(
            a.start_minute().map(|(s, _)| s.starts_at),
            Some(ts("2026-03-10T15:00:00Z"))
        );
        assert!(a.forget_minute());
        assert_eq!(a.start_minute(), None);
        assert_eq!(
            a.slot_start.as_ref().map(|l| l.at),
            Some(ts("2026-03-01T09:00:00Z"))
        );
        assert_eq!(a.starts_on.as_ref().map(|l| l.value), Some(d("2026-03-10")));
        assert!(!a.forget_minute(), "nothing left to forget");
        assert!(!Appointment::new(a.appointment_ref.clone()).forget_minute());
    }

    #[test]
    fn a_forgotten_minute_outranks_its_own_report_but_not_a_later_one() {
        let at = "2026-03-01T09:00:00Z";
        let minute = |h: &str| {
            Some(SlotTime {
                starts_at: ts(h),
                duration_min: 30,
            })
        };
        let mut a = booked(at);
        assert!(a.forget_minute());
        let forgotten = a.clone();
        // The report whose minute was forgotten, redelivered: nothing changes.
        assert!(!a.merge_minute_event(minute("2026-03-10T15:00:00Z"), ev(at, at)));
        assert_eq!(a, forgotten);
        // A later report (a reschedule) sets a minute again.
        let later = "2026-03-02T09:00:00Z";
        assert!(a.merge_minute_event(minute("2026-03-11T15:00:00Z"), ev(later, later)));
        assert_eq!(
            a.start_minute().map(|(s, _)| s.starts_at),
            Some(ts("2026-03-11T15:00:00Z"))
        );
        // Two reports of the same instant, in either order: the missed one wins.
        let (mut x, mut y) = (booked(at), booked(at));
        assert!(x.merge_minute_event(None, ev(at, at)));
        y.slot_start = None;
        assert!(y.merge_minute_event(None, ev(at, at)));
        assert!(!y.merge_minute_event(minute("2026-03-10T15:00:00Z"), ev(at, at)));
        assert_eq!(x.slot_start, y.slot_start);
        assert_eq!(x.start_minute(), None);
    }

    #[test]
    fn the_minute_is_forgotten_once_an_event_is_reported_at_or_after_it() {
        // Reported before the start: the minute stays (slot fill may need it).
        let mut a = booked("2026-03-01T09:00:00Z");
        assert!(!a.forget_stale_minute());
        assert!(a.start_minute().is_some());
        // A status reported exactly at the start, or later: only the day stays.
        for at in ["2026-03-10T15:00:00Z", "2026-03-10T16:00:00Z"] {
            let mut a = booked("2026-03-01T09:00:00Z");
            Lww::merge(
                &mut a.status,
                Lww::new(AppointmentStatus::Completed, ts(at)),
            );
            assert!(a.forget_stale_minute(), "{at}");
            assert_eq!(a.start_minute(), None, "{at}");
            assert!(!a.forget_stale_minute(), "{at}: already forgotten");
        }
        // Any of the registers counts, the patient's too.
        let mut a = booked("2026-03-01T09:00:00Z");
        a.patient = Some(Lww::new(
            PatientTreatmentKey {
                patient_ref: OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(),
                treatment: Treatment::Neurotoxin,
            },
            ts("2026-03-11T00:00:00Z"),
        ));
        assert!(a.forget_stale_minute());
        // Without a minute, or without any other register, nothing to do.
        let mut bare = Appointment::new(a.appointment_ref.clone());
        assert!(!bare.forget_stale_minute());
        bare.slot_start = booked("2026-03-01T09:00:00Z").slot_start;
        assert!(!bare.forget_stale_minute());
        assert!(bare.start_minute().is_some());
    }

    #[test]
    fn booked_from_a_day_means_booked_and_starting_on_or_after_it() {
        let a = booked("2026-03-01T09:00:00Z");
        assert!(a.is_booked_from(d("2026-03-09")));
        assert!(a.is_booked_from(d("2026-03-10")), "the same day");
        assert!(!a.is_booked_from(d("2026-03-11")), "already past");
        let mut cancelled = a.clone();
        Lww::merge(
            &mut cancelled.status,
            Lww::new(AppointmentStatus::Cancelled, ts("2026-03-02T09:00:00Z")),
        );
        assert!(!cancelled.is_booked_from(d("2026-03-09")));
        let mut no_day = a;
        no_day.starts_on = None;
        assert!(!no_day.is_booked_from(d("2026-03-09")));
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
