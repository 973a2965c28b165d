//! A Square booking as the layer's events (docs/square-relay.md, "Mapping").
//!
//! | Square status | events (each `occurred_at`) |
//! |---|---|
//! | `ACCEPTED`, `PENDING` | `appointment.booked` at `updated_at` (a moved booking is a later `booked` with the new start: the layer's last-writer-wins merge makes it a reschedule) |
//! | `ACCEPTED`, ended at least the completion grace ago | also `appointment.completed` at the visit's end, one per distinct treatment of its services |
//! | `CANCELLED_BY_CUSTOMER`, `CANCELLED_BY_SELLER` | `appointment.booked` at `created_at` (so the layer knows the slot even if it missed the booking), then `appointment.cancelled` at `updated_at`, `reopens_slot` when the start was still ahead when it was cancelled |
//! | `DECLINED` | the same, `reopens_slot: false` (the request never held the slot) |
//! | `NO_SHOW` | `appointment.booked` at `created_at`, then `appointment.no_show` at `updated_at` |
//!
//! Completion: Square has no "completed" status. A visit counts as completed when the booking
//! is `ACCEPTED` and its end (start plus every segment) lies at least the completion grace
//! (default 24 h) in the past: by then the front desk has had a day to mark a no-show or
//! cancel. The relay's completion sweep ([`crate::jobs`]) sends these as bookings pass the
//! mark; a backfill sends them for history.
//!
//! Refs: the customer id, the booking id and the team member id become refs with the
//! practice's ref key, the recipe of `pil ref derive` (`p_`, `a_`, `r_` prefixes). Services:
//! the practice's service map names a treatment for each service variation id; a booking
//! none of whose services is mapped is skipped and counted, never guessed. Nothing else of
//! Square's booking is read.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use shared::ids::OpaqueRef;
use shared::refkey::{RefKey, RefPrefix};
use shared::treatment::Treatment;

use crate::square::model::{Booking, BookingStatus};

/// Shortest and longest `duration_min` the layer accepts.
pub const DURATION_MIN: i64 = 5;
pub const DURATION_MAX: i64 = 720;
/// The default completion grace.
pub const DEFAULT_COMPLETION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The practice's map from Square service variation ids to treatment categories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMap(HashMap<String, Treatment>);

/// Why a service map was refused: the rule and the key's position, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceMapError {
    #[error("SERVICE_MAP: not a JSON object of service variation id to treatment")]
    NotAnObject,
    #[error(
        "SERVICE_MAP: entry {0}: the treatment is not one of the layer's categories (docs/contracts.md, Event types)"
    )]
    UnknownTreatment(usize),
    #[error("SERVICE_MAP: entry {0}: the service variation id is empty")]
    EmptyId(usize),
}

impl ServiceMap {
    /// `{"<service variation id>": "<treatment>", …}`.
    pub fn parse(json: &str) -> Result<Self, ServiceMapError> {
        let raw: BTreeMap<String, String> =
            serde_json::from_str(json).map_err(|_| ServiceMapError::NotAnObject)?;
        let mut map = HashMap::with_capacity(raw.len());
        for (i, (id, t)) in raw.into_iter().enumerate() {
            if id.trim().is_empty() {
                return Err(ServiceMapError::EmptyId(i));
            }
            let t = Treatment::parse(&t).ok_or(ServiceMapError::UnknownTreatment(i))?;
            map.insert(id, t);
        }
        Ok(Self(map))
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Treatment)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn treatment(&self, variation_id: &str) -> Option<Treatment> {
        self.0.get(variation_id).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Refs made with the practice's ref key.
#[derive(Debug, Clone)]
pub struct Refs {
    key: RefKey,
    patient: RefPrefix,
    appointment: RefPrefix,
    provider: RefPrefix,
}

impl Refs {
    pub fn new(key: RefKey) -> Self {
        let p = |s| RefPrefix::parse(s).unwrap_or_else(|_| unreachable!("a valid prefix"));
        Self {
            key,
            patient: p("p"),
            appointment: p("a"),
            provider: p("r"),
        }
    }

    pub fn patient(&self, customer_id: &str) -> OpaqueRef {
        self.key.derive(Some(&self.patient), customer_id)
    }

    pub fn appointment(&self, booking_id: &str) -> OpaqueRef {
        self.key.derive(Some(&self.appointment), booking_id)
    }

    pub fn provider(&self, team_member_id: &str) -> OpaqueRef {
        self.key.derive(Some(&self.provider), team_member_id)
    }
}

/// What the mapping needs besides the booking.
#[derive(Debug, Clone)]
pub struct Rules {
    pub services: ServiceMap,
    pub completion_grace: Duration,
}

/// Why a booking sent nothing. Each is counted (`skipped` by reason), none is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    NoCustomer,
    NoStart,
    AllDay,
    NoSegments,
    UnmappedService,
    DurationOutOfRange,
    UnknownStatus,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCustomer => "no_customer",
            Self::NoStart => "no_start",
            Self::AllDay => "all_day",
            Self::NoSegments => "no_segments",
            Self::UnmappedService => "unmapped_service",
            Self::DurationOutOfRange => "duration_out_of_range",
            Self::UnknownStatus => "unknown_status",
        }
    }
}

/// A booking's events, or why there are none.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub events: Vec<Value>,
    /// The patient ref and its customer id, for the ref ↔ customer map (triggers).
    pub patient: Option<(OpaqueRef, String)>,
    pub skipped: Option<Skip>,
    /// For `unmapped_service`: the booking's service variation ids, none in the service map
    /// (catalog ids, for the practice to map or leave out on purpose).
    pub unmapped: Vec<String>,
}

impl Mapped {
    fn skip(why: Skip) -> Self {
        Self {
            events: Vec::new(),
            patient: None,
            skipped: Some(why),
            unmapped: Vec::new(),
        }
    }
}

/// RFC 3339 in UTC to the second, as the layer's examples write it.
fn at(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

/// Whether an `ACCEPTED` booking counts as completed at `now`.
pub fn is_completed(b: &Booking, now: Timestamp, grace: Duration) -> bool {
    b.status == BookingStatus::Accepted
        && b.end_at().is_some_and(|end| {
            jiff::SignedDuration::try_from(grace)
                .ok()
                .and_then(|g| end.checked_add(g).ok())
                .is_some_and(|mark| mark <= now)
        })
}

/// The events for `b` as it stands (see the module's table). `now` decides completion.
pub fn map_booking(b: &Booking, now: Timestamp, rules: &Rules, refs: &Refs) -> Mapped {
    if b.status == BookingStatus::Unknown {
        return Mapped::skip(Skip::UnknownStatus);
    }
    let Some(customer_id) = b.customer_id.as_deref().filter(|c| !c.is_empty()) else {
        return Mapped::skip(Skip::NoCustomer);
    };
    let Some(start) = b.start_at else {
        return Mapped::skip(Skip::NoStart);
    };
    if b.all_day == Some(true) {
        return Mapped::skip(Skip::AllDay);
    }
    if b.appointment_segments.is_empty() {
        return Mapped::skip(Skip::NoSegments);
    }
    // Treatments in segment order, each once.
    let mut treatments: Vec<Treatment> = Vec::new();
    for s in &b.appointment_segments {
        if let Some(t) = s
            .service_variation_id
            .as_deref()
            .and_then(|v| rules.services.treatment(v))
            && !treatments.contains(&t)
        {
            treatments.push(t);
        }
    }
    let Some(&first) = treatments.first() else {
        let mut unmapped: Vec<String> = b
            .appointment_segments
            .iter()
            .filter_map(|s| s.service_variation_id.clone())
            .collect();
        unmapped.sort();
        unmapped.dedup();
        return Mapped {
            unmapped,
            ..Mapped::skip(Skip::UnmappedService)
        };
    };
    let duration = b.total_minutes();
    if !(DURATION_MIN..=DURATION_MAX).contains(&duration) {
        return Mapped::skip(Skip::DurationOutOfRange);
    }
    let Some(team_member) = b
        .appointment_segments
        .iter()
        .find_map(|s| s.team_member_id.as_deref().filter(|t| !t.is_empty()))
    else {
        return Mapped::skip(Skip::NoSegments);
    };

    let patient = refs.patient(customer_id);
    let appointment = refs.appointment(&b.id);
    let booked = |occurred: Timestamp| {
        json!({
            "type": "appointment.booked",
            "occurred_at": at(occurred),
            "data": {
                "appointment_ref": appointment.as_str(),
                "patient_ref": patient.as_str(),
                "treatment": first.as_str(),
                "provider_ref": refs.provider(team_member).as_str(),
                "starts_at": at(start),
                "duration_min": duration,
            }
        })
    };
    let mut events = Vec::new();
    match b.status {
        BookingStatus::Accepted | BookingStatus::Pending => {
            events.push(booked(b.updated_at));
            if is_completed(b, now, rules.completion_grace)
                && let Some(end) = b.end_at()
            {
                for t in &treatments {
                    events.push(json!({
                        "type": "appointment.completed",
                        "occurred_at": at(end),
                        "data": {
                            "appointment_ref": appointment.as_str(),
                            "patient_ref": patient.as_str(),
                            "treatment": t.as_str(),
                        }
                    }));
                }
            }
        }
        BookingStatus::CancelledByCustomer
        | BookingStatus::CancelledBySeller
        | BookingStatus::Declined => {
            events.push(booked(b.created_at));
            let reopens = b.status != BookingStatus::Declined && start > b.updated_at;
            events.push(json!({
                "type": "appointment.cancelled",
                "occurred_at": at(b.updated_at),
                "data": {"appointment_ref": appointment.as_str(), "reopens_slot": reopens}
            }));
        }
        BookingStatus::NoShow => {
            events.push(booked(b.created_at));
            events.push(json!({
                "type": "appointment.no_show",
                "occurred_at": at(b.updated_at),
                "data": {"appointment_ref": appointment.as_str()}
            }));
        }
        BookingStatus::Unknown => unreachable!("skipped above"),
    }
    Mapped {
        events,
        patient: Some((patient, customer_id.to_owned())),
        skipped: None,
        unmapped: Vec::new(),
    }
}

/// Only the completions of `b` (the completion sweep: the booking itself was sent when it was
/// made).
pub fn completions(b: &Booking, now: Timestamp, rules: &Rules, refs: &Refs) -> Mapped {
    let mut m = map_booking(b, now, rules, refs);
    m.events
        .retain(|e| e["type"].as_str() == Some("appointment.completed"));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::square::model::Booking;

    const NEURO: &str = "VAR_NEUROTOXIN";
    const FILLER: &str = "VAR_FILLER";

    fn rules() -> Rules {
        Rules {
            services: ServiceMap::from_pairs([
                (NEURO, Treatment::Neurotoxin),
                (FILLER, Treatment::DermalFiller),
            ]),
            completion_grace: DEFAULT_COMPLETION_GRACE,
        }
    }

    fn refs() -> Refs {
        Refs::new(RefKey::parse("dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktMzJi").unwrap())
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn booking(status: &str, start: &str, services: &[&str]) -> Booking {
        let segments: Vec<_> = services
            .iter()
            .map(|s| serde_json::json!({"duration_minutes": 30, "service_variation_id": s, "team_member_id": "TM1", "service_variation_version": 1}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "BOOKING1", "version": 2, "status": status,
            "created_at": "2026-11-01T10:00:00Z", "updated_at": "2026-11-02T09:30:00Z",
            "start_at": start, "location_id": "L1", "customer_id": "CUSTOMER1",
            "customer_note": "Maria Lopez, 555-0100, allergic to lidocaine",
            "seller_note": "DOB 1984-03-02",
            "appointment_segments": segments,
        }))
        .unwrap()
    }

    fn kinds(m: &Mapped) -> Vec<&str> {
        m.events
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn accepted_ahead_is_booked_at_its_last_update() {
        let b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &[NEURO]);
        let m = map_booking(&b, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
        assert_eq!(kinds(&m), ["appointment.booked"]);
        let e = &m.events[0];
        assert_eq!(e["occurred_at"], "2026-11-02T09:30:00Z");
        assert_eq!(e["data"]["starts_at"], "2026-11-20T15:00:00Z");
        assert_eq!(e["data"]["duration_min"], 30);
        assert_eq!(e["data"]["treatment"], "neurotoxin");
        assert_eq!(
            e["data"]["patient_ref"],
            refs().patient("CUSTOMER1").as_str()
        );
        assert_eq!(
            e["data"]["appointment_ref"],
            refs().appointment("BOOKING1").as_str()
        );
        assert_eq!(e["data"]["provider_ref"], refs().provider("TM1").as_str());
        assert_eq!(
            m.patient.as_ref().map(|(_, c)| c.as_str()),
            Some("CUSTOMER1")
        );
    }

    #[test]
    fn pending_is_booked_too() {
        let b = booking("PENDING", "2026-11-20T15:00:00Z", &[NEURO]);
        let m = map_booking(&b, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
        assert_eq!(kinds(&m), ["appointment.booked"]);
    }

    #[test]
    fn accepted_and_past_the_grace_is_completed_per_treatment() {
        let b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &[NEURO, FILLER, NEURO]);
        // Ends 16:30; the mark is 24 h later.
        let before = map_booking(&b, ts("2026-11-21T16:29:59Z"), &rules(), &refs());
        assert_eq!(kinds(&before), ["appointment.booked"]);
        let after = map_booking(&b, ts("2026-11-21T16:30:00Z"), &rules(), &refs());
        assert_eq!(
            kinds(&after),
            [
                "appointment.booked",
                "appointment.completed",
                "appointment.completed"
            ]
        );
        assert_eq!(after.events[0]["data"]["duration_min"], 90);
        assert_eq!(after.events[1]["occurred_at"], "2026-11-20T16:30:00Z");
        assert_eq!(after.events[1]["data"]["treatment"], "neurotoxin");
        assert_eq!(after.events[2]["data"]["treatment"], "dermal_filler");
        let only = completions(&b, ts("2026-11-22T00:00:00Z"), &rules(), &refs());
        assert_eq!(
            kinds(&only),
            ["appointment.completed", "appointment.completed"]
        );
    }

    #[test]
    fn cancellations_reopen_the_slot_only_when_it_lay_ahead() {
        for status in ["CANCELLED_BY_CUSTOMER", "CANCELLED_BY_SELLER"] {
            let ahead = booking(status, "2026-11-20T15:00:00Z", &[NEURO]);
            let m = map_booking(&ahead, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
            assert_eq!(kinds(&m), ["appointment.booked", "appointment.cancelled"]);
            assert_eq!(m.events[0]["occurred_at"], "2026-11-01T10:00:00Z");
            assert_eq!(m.events[1]["occurred_at"], "2026-11-02T09:30:00Z");
            assert_eq!(m.events[1]["data"]["reopens_slot"], true);
            // Cancelled after the start: nothing to offer.
            let past = booking(status, "2026-11-02T08:00:00Z", &[NEURO]);
            let m = map_booking(&past, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
            assert_eq!(m.events[1]["data"]["reopens_slot"], false);
        }
    }

    #[test]
    fn declined_never_reopens_and_no_show_is_reported() {
        let d = booking("DECLINED", "2026-11-20T15:00:00Z", &[NEURO]);
        let m = map_booking(&d, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
        assert_eq!(kinds(&m), ["appointment.booked", "appointment.cancelled"]);
        assert_eq!(m.events[1]["data"]["reopens_slot"], false);
        let n = booking("NO_SHOW", "2026-11-02T08:00:00Z", &[NEURO]);
        let m = map_booking(&n, ts("2026-11-30T00:00:00Z"), &rules(), &refs());
        assert_eq!(kinds(&m), ["appointment.booked", "appointment.no_show"]);
        assert_eq!(m.events[1]["occurred_at"], "2026-11-02T09:30:00Z");
    }

    #[test]
    fn unmapped_services_are_skipped_never_guessed() {
        let b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &["VAR_UNKNOWN"]);
        let m = map_booking(&b, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
        assert_eq!(m.skipped, Some(Skip::UnmappedService));
        assert!(m.events.is_empty());
        assert_eq!(m.unmapped, ["VAR_UNKNOWN"], "named for the practice to map");
        // One mapped service among unmapped ones is enough; its treatment is used.
        let b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &["VAR_UNKNOWN", FILLER]);
        let m = map_booking(&b, ts("2026-11-03T00:00:00Z"), &rules(), &refs());
        assert_eq!(m.events[0]["data"]["treatment"], "dermal_filler");
        assert!(m.unmapped.is_empty());
    }

    #[test]
    fn bookings_the_layer_cannot_take_are_skipped_with_a_reason() {
        let now = ts("2026-11-03T00:00:00Z");
        let mut b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &[NEURO]);
        b.customer_id = None;
        assert_eq!(
            map_booking(&b, now, &rules(), &refs()).skipped,
            Some(Skip::NoCustomer)
        );
        let mut b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &[NEURO]);
        b.all_day = Some(true);
        assert_eq!(
            map_booking(&b, now, &rules(), &refs()).skipped,
            Some(Skip::AllDay)
        );
        let mut b = booking("ACCEPTED", "2026-11-20T15:00:00Z", &[NEURO]);
        b.appointment_segments[0].duration_minutes = Some(721);
        assert_eq!(
            map_booking(&b, now, &rules(), &refs()).skipped,
            Some(Skip::DurationOutOfRange)
        );
        let b: Booking = serde_json::from_value(serde_json::json!({
            "id": "B", "status": "SOMETHING_NEW", "created_at": "2026-11-01T10:00:00Z",
            "updated_at": "2026-11-01T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            map_booking(&b, now, &rules(), &refs()).skipped,
            Some(Skip::UnknownStatus)
        );
    }

    #[test]
    fn nothing_but_ids_made_opaque_leaves() {
        let b = booking("NO_SHOW", "2026-11-02T08:00:00Z", &[NEURO]);
        let m = map_booking(&b, ts("2026-11-30T00:00:00Z"), &rules(), &refs());
        let text = serde_json::to_string(&m.events).unwrap();
        for raw in [
            "CUSTOMER1",
            "BOOKING1",
            "TM1",
            "L1",
            "Maria",
            "555",
            "1984",
            "lidocaine",
            NEURO,
        ] {
            assert!(!text.contains(raw), "{raw} left the relay");
        }
    }

    #[test]
    fn the_service_map_names_the_rule_never_the_value() {
        let m = ServiceMap::parse(r#"{"A": "neurotoxin", "B": "iv_therapy"}"#).unwrap();
        assert_eq!(m.treatment("B"), Some(Treatment::IvTherapy));
        let e = ServiceMap::parse(r#"{"A": "neurotoxin", "B": "botox for maria"}"#).unwrap_err();
        assert_eq!(e, ServiceMapError::UnknownTreatment(1));
        assert!(!e.to_string().contains("maria"));
        assert_eq!(
            ServiceMap::parse("[1]").unwrap_err(),
            ServiceMapError::NotAnObject
        );
        assert_eq!(
            ServiceMap::parse(r#"{" ": "facial"}"#).unwrap_err(),
            ServiceMapError::EmptyId(0)
        );
    }
}
