//! The JSON Square answers with, field for field as its API reference has them (README.md):
//! `Booking`, `AppointmentSegment`, `BookingCreatedEvent` / `BookingUpdatedEvent`, `Customer`,
//! `CustomerGroup` and `Error`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{BookingChange, Customer, Group, NewBooking, Segment};

/// Square's `BookingStatus` values.
pub const BOOKING_STATUSES: [&str; 6] = [
    "PENDING",
    "CANCELLED_BY_CUSTOMER",
    "CANCELLED_BY_SELLER",
    "DECLINED",
    "ACCEPTED",
    "NO_SHOW",
];

/// A timestamp as Square writes those of bookings and events: RFC 3339 in UTC, whole
/// seconds, `Z` (e.g. `2020-12-08T19:56:53Z`).
pub fn square_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// With milliseconds, as Square writes a customer's and a group's `created_at`
/// (`2020-04-13T21:54:57.863Z`).
fn square_time_ms(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn segments(segs: &[Segment], services: &BTreeMap<String, (String, i64)>) -> Value {
    segs.iter()
        .map(|s| {
            // A service the test did not add gets a fixed catalog version.
            let version = services
                .get(&s.service_variation_id)
                .map_or(1_599_775_456_731, |(_, v)| *v);
            json!({
                "duration_minutes": s.duration_minutes,
                "service_variation_id": s.service_variation_id,
                "team_member_id": s.team_member_id,
                "service_variation_version": version,
                "intermission_minutes": 0,
                "any_team_member": false,
            })
        })
        .collect()
}

/// A booking made by a team member in Square Appointments (the seller's side).
pub(crate) fn booking(
    id: &str,
    b: &NewBooking,
    at: Timestamp,
    services: &BTreeMap<String, (String, i64)>,
) -> Value {
    let creator = b
        .segments
        .first()
        .map(|s| s.team_member_id.clone())
        .unwrap_or_default();
    let mut v = json!({
        "id": id,
        "version": 0,
        "status": b.status,
        "created_at": square_time(at),
        "updated_at": square_time(at),
        "start_at": square_time(b.start_at),
        "location_id": b.location_id,
        "customer_id": b.customer_id,
        "all_day": false,
        "appointment_segments": segments(&b.segments, services),
        "transition_time_minutes": 0,
        "creator_details": {
            "creator_type": "TEAM_MEMBER",
            "team_member_id": creator,
        },
        "source": "FIRST_PARTY_MERCHANT",
        "location_type": "BUSINESS_LOCATION",
    });
    // Square leaves out a note that was never written.
    if let Some(n) = &b.customer_note {
        v["customer_note"] = json!(n);
    }
    if let Some(n) = &b.seller_note {
        v["seller_note"] = json!(n);
    }
    v
}

pub(crate) fn apply(
    booking: &mut Value,
    change: &BookingChange,
    at: Timestamp,
    services: &BTreeMap<String, (String, i64)>,
) {
    if let Some(s) = &change.status {
        booking["status"] = json!(s);
    }
    if let Some(t) = change.start_at {
        booking["start_at"] = json!(square_time(t));
    }
    if let Some(segs) = &change.segments {
        booking["appointment_segments"] = segments(segs, services);
    }
    let version = booking.get("version").and_then(Value::as_i64).unwrap_or(0);
    booking["version"] = json!(version + 1);
    booking["updated_at"] = json!(square_time(at));
}

/// A `booking.created` / `booking.updated` notification, as in Square's `BookingCreatedEvent`
/// example: `data.id` is the booking id and its version (`i2id2g3enyspi7:0`), and the top
/// level carries the booking's `location_id` too.
pub(crate) fn notification(merchant_id: &str, kind: &str, booking: &Value, at: Timestamp) -> Value {
    let id = booking
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = booking.get("version").and_then(Value::as_i64).unwrap_or(0);
    let mut v = json!({
        "merchant_id": merchant_id,
        "type": kind,
        "event_id": crate::ids::event(),
        "created_at": square_time(at),
        "data": {
            "type": "booking",
            "id": format!("{id}:{version}"),
            "object": { "booking": booking },
        },
    });
    if let Some(l) = booking.get("location_id") {
        v["location_id"] = l.clone();
    }
    v
}

/// A `Customer` as RetrieveCustomer answers it. Fields never set are left out, as Square
/// does; `group_ids` only when the customer is in a group.
pub(crate) fn customer(c: &Customer) -> Value {
    let mut v = json!({
        "id": c.id,
        "created_at": square_time_ms(c.created_at),
        "updated_at": square_time_ms(c.updated_at),
        "preferences": { "email_unsubscribed": false },
        "creation_source": "THIRD_PARTY",
        "version": c.version,
    });
    let p = &c.person;
    for (k, f) in [
        ("given_name", &p.given_name),
        ("family_name", &p.family_name),
        ("email_address", &p.email_address),
        ("phone_number", &p.phone_number),
        ("birthday", &p.birthday),
        ("note", &p.note),
    ] {
        if let Some(x) = f {
            v[k] = json!(x);
        }
    }
    if !c.group_ids.is_empty() {
        v["group_ids"] = json!(c.group_ids);
    }
    v
}

pub(crate) fn group(g: &Group) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "created_at": square_time_ms(g.created_at),
        "updated_at": square_time(g.updated_at),
    })
}

/// Square's error answer: an HTTP status and `{"errors": [Error]}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub category: &'static str,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(
        status: u16,
        category: &'static str,
        code: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            category,
            code,
            detail: detail.into(),
            field: None,
        }
    }

    pub(crate) fn invalid(
        code: &'static str,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: Some(field),
            ..Self::new(400, "INVALID_REQUEST_ERROR", code, detail)
        }
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", detail)
    }

    pub(crate) fn body(&self) -> Value {
        let mut e = json!({
            "category": self.category,
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            e["field"] = json!(f);
        }
        json!({ "errors": [e] })
    }
}
