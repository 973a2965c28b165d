//! The inbound contract, version 1 (docs/contracts.md, Inbound events): a closed schema.
//!
//! The body is read as JSON once, then walked field by field into typed events. A key repeated
//! in one object, any unknown field, wrong type, value outside its format, or PHI-shaped ref
//! refuses the whole body with the JSON path and the rule. Errors never carry the value, and
//! the walker never copies a string out of the body before it has passed its check.

use std::cell::Cell;
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use crate::guard::PhiRule;
use crate::ids::OpaqueRef;
use crate::treatment::Treatment;

pub const MAX_BATCH: usize = 100;
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How far in the future an `occurred_at` may be (clock skew between PMS and us).
const MAX_FUTURE_SKEW: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub index: u16,
    pub of: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    AppointmentBooked {
        appointment_ref: OpaqueRef,
        patient_ref: OpaqueRef,
        treatment: Treatment,
        provider_ref: OpaqueRef,
        starts_at: Timestamp,
        duration_min: u16,
    },
    AppointmentRescheduled {
        appointment_ref: OpaqueRef,
        starts_at: Timestamp,
        duration_min: u16,
    },
    AppointmentCancelled {
        appointment_ref: OpaqueRef,
        reopens_slot: bool,
    },
    AppointmentCompleted {
        appointment_ref: OpaqueRef,
        patient_ref: OpaqueRef,
        treatment: Treatment,
        series: Option<Series>,
        cycle_days: Option<u16>,
    },
    AppointmentNoShow {
        appointment_ref: OpaqueRef,
    },
    SlotOpened {
        slot_ref: OpaqueRef,
        provider_ref: OpaqueRef,
        starts_at: Timestamp,
        duration_min: u16,
        treatments: Vec<Treatment>,
    },
    PatientOptedOut {
        patient_ref: OpaqueRef,
    },
    PatientOptedIn {
        patient_ref: OpaqueRef,
    },
    PatientRefRotated {
        old_ref: OpaqueRef,
        new_ref: OpaqueRef,
    },
    PatientErased {
        patient_ref: OpaqueRef,
    },
}

impl EventData {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::AppointmentBooked { .. } => "appointment.booked",
            Self::AppointmentRescheduled { .. } => "appointment.rescheduled",
            Self::AppointmentCancelled { .. } => "appointment.cancelled",
            Self::AppointmentCompleted { .. } => "appointment.completed",
            Self::AppointmentNoShow { .. } => "appointment.no_show",
            Self::SlotOpened { .. } => "slot.opened",
            Self::PatientOptedOut { .. } => "patient.opted_out",
            Self::PatientOptedIn { .. } => "patient.opted_in",
            Self::PatientRefRotated { .. } => "patient.ref_rotated",
            Self::PatientErased { .. } => "patient.erased",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    pub occurred_at: Timestamp,
    pub data: EventData,
}

/// What kind of refusal: the wire `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The body is not JSON at all (HTTP 400).
    MalformedJson,
    /// Valid JSON outside the closed schema (HTTP 422).
    SchemaViolation,
    /// A value inside an allowed field looks like PHI (HTTP 422).
    PhiDetected,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::SchemaViolation => "schema_violation",
            Self::PhiDetected => "phi_detected",
        }
    }
}

/// A refusal: which field, which rule. Deliberately has no room for the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: field `{field}` breaks rule `{rule}`", code.as_str())]
pub struct Refusal {
    pub code: RefusalCode,
    pub field: String,
    pub rule: &'static str,
}

/// An unknown key as a refusal names it: the key itself when it has the shape of a field name
/// (`a-z`, digits, `_`, at most 40), `*` otherwise, so a key the sender filled with data (an
/// address, a name) is never quoted back.
fn shown_key(k: &str) -> String {
    let field_like = !k.is_empty()
        && k.len() <= 40
        && k.as_bytes()[0].is_ascii_lowercase()
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if field_like {
        k.to_owned()
    } else {
        "*".to_owned()
    }
}

impl Refusal {
    fn schema(field: String, rule: &'static str) -> Self {
        Self {
            code: RefusalCode::SchemaViolation,
            field,
            rule,
        }
    }
}

/// Parses a request body (one event, or `{"events": [...]}`) into typed events.
/// All or nothing: the first refusal refuses the whole body.
pub fn parse_body(body: &[u8], now: Timestamp) -> Result<Vec<InboundEvent>, Refusal> {
    let root = read_json(body)?;
    let Value::Object(mut obj) = root else {
        return Err(Refusal::schema(String::new(), "type_object"));
    };
    if obj.contains_key("events") {
        if let Some(k) = obj.keys().find(|k| *k != "events") {
            return Err(Refusal::schema(shown_key(k), "unknown_field"));
        }
        let Some(Value::Array(items)) = obj.remove("events") else {
            return Err(Refusal::schema("events".into(), "type_array"));
        };
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(Refusal::schema("events".into(), "batch_size_1_to_100"));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_event(v, &format!("events[{i}]."), now))
            .collect()
    } else {
        parse_event(Value::Object(obj), "", now).map(|e| vec![e])
    }
}

/// Reads the body as JSON, refusing a key that appears twice in one object.
///
/// `serde_json::from_slice::<Value>` keeps the last of two equal keys, so a body could say one
/// thing to this parser and another to a first-wins reader on the way (a proxy, a log
/// pipeline, the PMS's own tests). The body is read once, by [`Checked`], which builds the same
/// `Value` and refuses the first repeated key, wherever it is, with the path to it.
fn read_json(body: &[u8]) -> Result<Value, Refusal> {
    let repeated = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = Checked {
        place: &Place::Root,
        repeated: &repeated,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    read.map_err(|_| match repeated.take() {
        Some(field) => Refusal::schema(field, "duplicate_key"),
        None => Refusal {
            code: RefusalCode::MalformedJson,
            field: String::new(),
            rule: "json",
        },
    })
}

/// Where the reader is in the body: a chain of frames on the stack, so the walk allocates
/// nothing for paths; the path text is built only for a refusal.
enum Place<'a> {
    Root,
    Key(&'a Place<'a>, &'a str),
    Index(&'a Place<'a>, usize),
}

impl Place<'_> {
    /// The path as refusals write it (`events[2].data.patient_ref`), each key through
    /// [`shown_key`].
    fn path(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Root => {}
            Self::Key(parent, k) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shown_key(k));
            }
            Self::Index(parent, i) => {
                parent.write(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

/// A `serde` seed that builds a [`Value`] as `serde_json`'s own does, checking each object's
/// keys as they come: the first key already seen in its object stops the read, its path left
/// in `repeated`. Depth is bounded by `serde_json`'s recursion limit (128).
#[derive(Clone, Copy)]
struct Checked<'a> {
    place: &'a Place<'a>,
    repeated: &'a Cell<Option<String>>,
}

impl<'a> Checked<'a> {
    fn at<'b>(&self, place: &'b Place<'b>) -> Checked<'b>
    where
        'a: 'b,
    {
        Checked {
            place,
            repeated: self.repeated,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let place = Place::Index(self.place, items.len());
            match seq.next_element_seed(self.at(&place))? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                Entry::Occupied(seen) => {
                    // Only the path: never the value, and the key itself only when it is
                    // field-shaped.
                    self.repeated
                        .set(Some(Place::Key(self.place, seen.key()).path()));
                    return Err(de::Error::custom("duplicate key"));
                }
                Entry::Vacant(slot) => {
                    let place = Place::Key(self.place, slot.key());
                    let v = map.next_value_seed(self.at(&place))?;
                    slot.insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A JSON object being walked, with the path prefix for errors and the set of fields read.
struct Fields<'a> {
    map: Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn new(v: Value, prefix: &'a str, here: &str) -> Result<Self, Refusal> {
        match v {
            Value::Object(map) => Ok(Self { map, prefix }),
            _ => Err(Refusal::schema(trim_dot(prefix, here), "type_object")),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Refuses any field not in `allowed` (reported in the body's own key order).
    fn closed(&self, allowed: &[&str]) -> Result<(), Refusal> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(Refusal::schema(self.path(&shown_key(k)), "unknown_field")),
            None => Ok(()),
        }
    }

    fn take(&mut self, key: &str) -> Result<Value, Refusal> {
        match self.map.remove(key) {
            Some(Value::Null) | None => Err(Refusal::schema(self.path(key), "required")),
            Some(v) => Ok(v),
        }
    }

    fn take_opt(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    fn str_of(&self, key: &str, v: Value) -> Result<String, Refusal> {
        match v {
            Value::String(s) => Ok(s),
            _ => Err(Refusal::schema(self.path(key), "type_string")),
        }
    }

    fn opaque_ref(&mut self, key: &str) -> Result<OpaqueRef, Refusal> {
        let v = self.take(key)?;
        let s = self.str_of(key, v)?;
        OpaqueRef::parse_checked(&s).map_err(|rule| Refusal {
            code: phi_code(rule),
            field: self.path(key),
            rule: rule.code(),
        })
    }

    fn treatment(&mut self, key: &str) -> Result<Treatment, Refusal> {
        let v = self.take(key)?;
        let s = self.str_of(key, v)?;
        Treatment::parse(&s).ok_or_else(|| Refusal::schema(self.path(key), "closed_vocabulary"))
    }

    fn timestamp(
        &mut self,
        key: &str,
        now: Timestamp,
        max_future: Option<SignedDuration>,
    ) -> Result<Timestamp, Refusal> {
        let v = self.take(key)?;
        let s = self.str_of(key, v)?;
        let ts = parse_rfc3339(&s)
            .ok_or_else(|| Refusal::schema(self.path(key), "timestamp_rfc3339"))?;
        let earliest = Timestamp::from_second(946_684_800).unwrap_or(Timestamp::UNIX_EPOCH); // 2000-01-01
        let latest_span = max_future.unwrap_or(SignedDuration::from_hours(24 * 366 * 2));
        if ts < earliest || now.checked_add(latest_span).is_ok_and(|latest| ts > latest) {
            return Err(Refusal::schema(self.path(key), "timestamp_range"));
        }
        Ok(ts)
    }

    fn int_in(&mut self, key: &str, v: Value, lo: u16, hi: u16) -> Result<u16, Refusal> {
        let n = v
            .as_u64()
            .ok_or_else(|| Refusal::schema(self.path(key), "type_integer"))?;
        u16::try_from(n)
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| Refusal::schema(self.path(key), range_rule(lo, hi)))
    }

    fn duration(&mut self, key: &str) -> Result<u16, Refusal> {
        let v = self.take(key)?;
        self.int_in(key, v, 5, 720)
    }

    fn boolean(&mut self, key: &str) -> Result<bool, Refusal> {
        match self.take(key)? {
            Value::Bool(b) => Ok(b),
            _ => Err(Refusal::schema(self.path(key), "type_boolean")),
        }
    }
}

fn range_rule(lo: u16, hi: u16) -> &'static str {
    match (lo, hi) {
        (5, 720) => "integer_5_to_720",
        (1, 1095) => "integer_1_to_1095",
        (1, 100) => "integer_1_to_100",
        _ => "integer_range",
    }
}

fn trim_dot(prefix: &str, here: &str) -> String {
    if here.is_empty() {
        prefix.trim_end_matches('.').to_owned()
    } else {
        format!("{prefix}{here}")
    }
}

fn phi_code(rule: PhiRule) -> RefusalCode {
    match rule {
        PhiRule::RefFormat => RefusalCode::SchemaViolation,
        _ => RefusalCode::PhiDetected,
    }
}

/// RFC 3339 with an explicit offset (`Z` or `±hh:mm`); jiff rejects a missing offset.
fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    if s.len() > 40 || !s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    s.parse::<Timestamp>().ok()
}

const EVENT_FIELDS: &[&str] = &["type", "occurred_at", "data"];

fn parse_event(v: Value, prefix: &str, now: Timestamp) -> Result<InboundEvent, Refusal> {
    let mut ev = Fields::new(v, prefix, "")?;
    ev.closed(EVENT_FIELDS)?;
    let ty_v = ev.take("type")?;
    let ty = ev.str_of("type", ty_v)?;
    let occurred_at = ev.timestamp("occurred_at", now, Some(MAX_FUTURE_SKEW))?;
    let data_v = ev.take("data")?;
    let data_prefix = format!("{prefix}data.");
    let mut d = Fields::new(data_v, &data_prefix, "")?;
    let data = match ty.as_str() {
        "appointment.booked" => {
            d.closed(&[
                "appointment_ref",
                "patient_ref",
                "treatment",
                "provider_ref",
                "starts_at",
                "duration_min",
            ])?;
            EventData::AppointmentBooked {
                appointment_ref: d.opaque_ref("appointment_ref")?,
                patient_ref: d.opaque_ref("patient_ref")?,
                treatment: d.treatment("treatment")?,
                provider_ref: d.opaque_ref("provider_ref")?,
                starts_at: d.timestamp("starts_at", now, None)?,
                duration_min: d.duration("duration_min")?,
            }
        }
        "appointment.rescheduled" => {
            d.closed(&["appointment_ref", "starts_at", "duration_min"])?;
            EventData::AppointmentRescheduled {
                appointment_ref: d.opaque_ref("appointment_ref")?,
                starts_at: d.timestamp("starts_at", now, None)?,
                duration_min: d.duration("duration_min")?,
            }
        }
        "appointment.cancelled" => {
            d.closed(&["appointment_ref", "reopens_slot"])?;
            EventData::AppointmentCancelled {
                appointment_ref: d.opaque_ref("appointment_ref")?,
                reopens_slot: d.boolean("reopens_slot")?,
            }
        }
        "appointment.completed" => {
            d.closed(&[
                "appointment_ref",
                "patient_ref",
                "treatment",
                "series",
                "cycle_days",
            ])?;
            let appointment_ref = d.opaque_ref("appointment_ref")?;
            let patient_ref = d.opaque_ref("patient_ref")?;
            let treatment = d.treatment("treatment")?;
            let series = match d.take_opt("series") {
                None => None,
                Some(sv) => {
                    let series_prefix = format!("{data_prefix}series.");
                    let mut s = Fields::new(sv, &series_prefix, "")?;
                    s.closed(&["index", "of"])?;
                    let iv = s.take("index")?;
                    let index = s.int_in("index", iv, 1, 100)?;
                    let ov = s.take("of")?;
                    let of = s.int_in("of", ov, 1, 100)?;
                    if index > of {
                        return Err(Refusal::schema(s.path("index"), "index_at_most_of"));
                    }
                    Some(Series { index, of })
                }
            };
            let cycle_days = match d.take_opt("cycle_days") {
                None => None,
                Some(cv) => Some(d.int_in("cycle_days", cv, 1, 1095)?),
            };
            EventData::AppointmentCompleted {
                appointment_ref,
                patient_ref,
                treatment,
                series,
                cycle_days,
            }
        }
        "appointment.no_show" => {
            d.closed(&["appointment_ref"])?;
            EventData::AppointmentNoShow {
                appointment_ref: d.opaque_ref("appointment_ref")?,
            }
        }
        "slot.opened" => {
            d.closed(&[
                "slot_ref",
                "provider_ref",
                "starts_at",
                "duration_min",
                "treatments",
            ])?;
            let slot_ref = d.opaque_ref("slot_ref")?;
            let provider_ref = d.opaque_ref("provider_ref")?;
            let starts_at = d.timestamp("starts_at", now, None)?;
            let duration_min = d.duration("duration_min")?;
            let Value::Array(items) = d.take("treatments")? else {
                return Err(Refusal::schema(d.path("treatments"), "type_array"));
            };
            if items.is_empty() || items.len() > Treatment::ALL.len() {
                return Err(Refusal::schema(d.path("treatments"), "list_1_to_14"));
            }
            let mut treatments = Vec::with_capacity(items.len());
            for (i, t) in items.into_iter().enumerate() {
                let path = format!("{}treatments[{i}]", d.prefix);
                let parsed = t
                    .as_str()
                    .ok_or_else(|| Refusal::schema(path.clone(), "type_string"))
                    .and_then(|s| {
                        Treatment::parse(s)
                            .ok_or_else(|| Refusal::schema(path.clone(), "closed_vocabulary"))
                    })?;
                if treatments.contains(&parsed) {
                    return Err(Refusal::schema(path, "unique"));
                }
                treatments.push(parsed);
            }
            EventData::SlotOpened {
                slot_ref,
                provider_ref,
                starts_at,
                duration_min,
                treatments,
            }
        }
        "patient.opted_out" | "patient.opted_in" | "patient.erased" => {
            d.closed(&["patient_ref"])?;
            let patient_ref = d.opaque_ref("patient_ref")?;
            match ty.as_str() {
                "patient.opted_out" => EventData::PatientOptedOut { patient_ref },
                "patient.opted_in" => EventData::PatientOptedIn { patient_ref },
                _ => EventData::PatientErased { patient_ref },
            }
        }
        "patient.ref_rotated" => {
            d.closed(&["old_ref", "new_ref"])?;
            let old_ref = d.opaque_ref("old_ref")?;
            let new_ref = d.opaque_ref("new_ref")?;
            if old_ref == new_ref {
                return Err(Refusal::schema(d.path("new_ref"), "differs_from_old_ref"));
            }
            EventData::PatientRefRotated { old_ref, new_ref }
        }
        _ => {
            return Err(Refusal::schema(
                format!("{prefix}type"),
                "closed_vocabulary",
            ));
        }
    };
    Ok(InboundEvent { occurred_at, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-21T00:00:00Z".parse().unwrap()
    }

    fn parse(v: serde_json::Value) -> Result<Vec<InboundEvent>, Refusal> {
        parse_body(v.to_string().as_bytes(), now())
    }

    fn refused(v: serde_json::Value) -> (String, &'static str) {
        let e = parse(v).unwrap_err();
        (e.field, e.rule)
    }

    const P: &str = "p_7Hq2kX9mZ4rT1vB8yW3n";
    const A: &str = "appt_Qm8Zr2Lx7Vt4Nw9Kc1Pb";
    const V: &str = "prov_Zx3Vb7Nm1Qw9Er5Ty2";

    #[test]
    fn parses_every_event_type() {
        let events = json!({"events": [
            {"type": "appointment.booked", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "patient_ref": P, "treatment": "neurotoxin", "provider_ref": V, "starts_at": "2026-12-01T15:00:00-05:00", "duration_min": 30}},
            {"type": "appointment.rescheduled", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "starts_at": "2026-12-02T15:00:00Z", "duration_min": 45}},
            {"type": "appointment.cancelled", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "reopens_slot": true}},
            {"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "patient_ref": P, "treatment": "laser_hair_removal", "series": {"index": 2, "of": 6}, "cycle_days": 40}},
            {"type": "appointment.no_show", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A}},
            {"type": "slot.opened", "occurred_at": "2026-11-20T15:04:05Z", "data": {"slot_ref": "slot_Zx3Vb7Nm1Qw9Er5Ty2Ui", "provider_ref": V, "starts_at": "2026-11-25T14:00:00Z", "duration_min": 30, "treatments": ["neurotoxin", "dermal_filler"]}},
            {"type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P}},
            {"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P}},
            {"type": "patient.ref_rotated", "occurred_at": "2026-11-20T15:04:05Z", "data": {"old_ref": P, "new_ref": "3f6c2a9e-8b1d-4e57-a0c4-9d2b7e1f5a38"}},
            {"type": "patient.erased", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P}},
        ]});
        let parsed = parse(events).unwrap();
        let names: Vec<_> = parsed.iter().map(|e| e.data.type_name()).collect();
        assert_eq!(names.len(), 10);
        assert_eq!(names[0], "appointment.booked");
        assert_eq!(names[9], "patient.erased");
        assert!(matches!(
            parsed[3].data,
            EventData::AppointmentCompleted {
                series: Some(Series { index: 2, of: 6 }),
                cycle_days: Some(40),
                ..
            }
        ));
    }

    #[test]
    fn schema_rules_name_the_path() {
        let ok = json!({"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P}});
        assert!(parse(ok.clone()).is_ok());
        assert_eq!(refused(json!([ok])), (String::new(), "type_object"));
        assert_eq!(
            refused(json!({"type": "patient.opted_in", "data": {"patient_ref": P}})),
            ("occurred_at".into(), "required")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2026-11-20 15:04", "data": {"patient_ref": P}})
            ),
            ("occurred_at".into(), "timestamp_rfc3339")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05", "data": {"patient_ref": P}})
            ),
            ("occurred_at".into(), "timestamp_rfc3339")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2030-11-20T15:04:05Z", "data": {"patient_ref": P}})
            ),
            ("occurred_at".into(), "timestamp_range")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.renamed", "occurred_at": "2026-11-20T15:04:05Z", "data": {}})
            ),
            ("type".into(), "closed_vocabulary")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": 5}})
            ),
            ("data.patient_ref".into(), "type_string")
        );
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": "x"})
            ),
            ("data".into(), "type_object")
        );
        assert_eq!(
            refused(
                json!({"type": "appointment.cancelled", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "reopens_slot": "yes"}})
            ),
            ("data.reopens_slot".into(), "type_boolean")
        );
        assert_eq!(
            refused(
                json!({"type": "appointment.rescheduled", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "starts_at": "2026-12-02T15:00:00Z", "duration_min": 0}})
            ),
            ("data.duration_min".into(), "integer_5_to_720")
        );
        assert_eq!(
            refused(
                json!({"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "patient_ref": P, "treatment": "neurotoxin", "series": {"index": 3, "of": 2}}})
            ),
            ("data.series.index".into(), "index_at_most_of")
        );
        assert_eq!(
            refused(
                json!({"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": A, "patient_ref": P, "treatment": "neurotoxin", "series": {"index": 1, "of": 2, "note": "x"}}})
            ),
            ("data.series.note".into(), "unknown_field")
        );
        assert_eq!(
            refused(
                json!({"type": "slot.opened", "occurred_at": "2026-11-20T15:04:05Z", "data": {"slot_ref": "slot_Zx3Vb7Nm1Qw9Er5Ty2Ui", "provider_ref": V, "starts_at": "2026-11-25T14:00:00Z", "duration_min": 30, "treatments": ["neurotoxin", "Botox"]}})
            ),
            ("data.treatments[1]".into(), "closed_vocabulary")
        );
        assert_eq!(
            refused(json!({"events": []})),
            ("events".into(), "batch_size_1_to_100")
        );
        assert_eq!(
            refused(json!({"events": vec![ok.clone(); 101]})),
            ("events".into(), "batch_size_1_to_100")
        );
        assert!(parse(json!({"events": vec![ok.clone(); 100]})).is_ok());
        assert_eq!(
            refused(json!({"events": [ok.clone()], "meta": 1})),
            ("meta".into(), "unknown_field")
        );
        // An unknown key that carries data is named by position, never quoted.
        assert_eq!(
            refused(
                json!({"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P, "jane.doe@example.com": 1}})
            ),
            ("data.*".into(), "unknown_field")
        );
        assert_eq!(
            refused(json!({"events": [ok], "Jane Doe": 1})),
            ("*".into(), "unknown_field")
        );
        assert_eq!(
            refused(
                json!({"events": [{"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": P}}, "x"]})
            ),
            ("events[1]".into(), "type_object")
        );
    }

    #[test]
    fn malformed_json_is_its_own_code() {
        let e = parse_body(b"{\"type\": \"patient.opted_in\", ", now()).unwrap_err();
        assert_eq!(e.code, RefusalCode::MalformedJson);
        assert_eq!(e.to_string(), "malformed_json: field `` breaks rule `json`");
    }

    /// `body` with `{ok}` replaced by a valid opt-in event (raw text: `json!` cannot repeat a key).
    fn refused_raw(body: &str) -> Refusal {
        let ok = format!(
            r#"{{"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {{"patient_ref": "{P}"}}}}"#
        );
        parse_body(body.replace("{ok}", &ok).as_bytes(), now()).unwrap_err()
    }

    fn duplicate(body: &str) -> String {
        let e = refused_raw(body);
        assert_eq!(
            (e.code, e.rule),
            (RefusalCode::SchemaViolation, "duplicate_key"),
            "{body}"
        );
        e.field
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        // Top level of a single event.
        assert_eq!(
            duplicate(
                r#"{"type": "patient.opted_in", "type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n"}}"#
            ),
            "type"
        );
        // Top level of a batch: `events` twice.
        assert_eq!(
            duplicate(r#"{"events": [{ok}], "events": [{ok}]}"#),
            "events"
        );
        // Inside `events[i]`.
        assert_eq!(
            duplicate(
                r#"{"events": [{ok}, {ok}, {"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "occurred_at": "2026-11-20T15:04:06Z", "data": {}}]}"#
            ),
            "events[2].occurred_at"
        );
        // Inside `data`, single event and batch; equal values are refused too.
        assert_eq!(
            duplicate(
                r#"{"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": "appt_Qm8Zr2Lx7Vt4Nw9Kc1Pb", "patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n", "treatment": "neurotoxin", "treatment": "neurotoxin"}}"#
            ),
            "data.treatment"
        );
        assert_eq!(
            duplicate(
                r#"{"events": [{ok}, {ok}, {"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n", "patient_ref": "p_9Zz2kX9mZ4rT1vB8yW3n"}}]}"#
            ),
            "events[2].data.patient_ref"
        );
        // Deeper: `series` inside `data`, and objects the schema would refuse anyway (the
        // repeated key is found first, while reading).
        assert_eq!(
            duplicate(
                r#"{"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z", "data": {"appointment_ref": "appt_Qm8Zr2Lx7Vt4Nw9Kc1Pb", "patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n", "treatment": "neurotoxin", "series": {"index": 1, "of": 2, "index": 2}}}"#
            ),
            "data.series.index"
        );
        assert_eq!(
            duplicate(r#"{"events": [{ok}, {"data": {"x": [1, {"y": {"z": 1, "z": 2}}]}}]}"#),
            "events[1].data.x[1].y.z"
        );
        assert_eq!(duplicate(r#"[{"a": 1}, {"b": 1, "b": 1}]"#), "[1].b");
        // A key that is not field-shaped is `*`, as an ancestor and as the repeated key.
        assert_eq!(
            duplicate(
                r#"{"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n", "Jane Doe": 1, "Jane Doe": 2}}"#
            ),
            "data.*"
        );
        assert_eq!(
            duplicate(r#"{"jane.doe@example.com": {"note": 1, "note": 2}}"#),
            "*.note"
        );
        // Distinct keys in sibling objects are not repeats; a repeat after a syntax error is
        // never reached.
        assert!(parse_body(two_events().as_bytes(), now()).is_ok());
        assert_eq!(
            refused_raw(r#"{"events": [{ok}], "#).code,
            RefusalCode::MalformedJson
        );
        assert_eq!(
            refused_raw(r#"{"events": [{ok}]} {"a": 1, "a": 2}"#).code,
            RefusalCode::MalformedJson
        );
    }

    fn two_events() -> String {
        format!(
            r#"{{"events": [{{"type": "patient.opted_in", "occurred_at": "2026-11-20T15:04:05Z", "data": {{"patient_ref": "{P}"}}}}, {{"type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {{"patient_ref": "{P}"}}}}]}}"#
        )
    }

    #[test]
    fn the_checked_reader_builds_what_serde_json_builds() {
        let text = r#"{"a": [1, -2, 3.5, 18446744073709551615, -9223372036854775808, 1e300, 0.0],
            "b": {"c": null, "d": true, "e": false, "f": "x\"y\u00e9\ud83d\ude00", "g": {}, "h": []},
            "": [[{"a": 1}, {"a": 2}]], "A": "a"}"#;
        assert_eq!(
            read_json(text.as_bytes()).unwrap(),
            serde_json::from_slice::<Value>(text.as_bytes()).unwrap()
        );
        // Nesting past serde_json's recursion limit is malformed JSON, not a stack overflow.
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(
            read_json(deep.as_bytes()).unwrap_err().code,
            RefusalCode::MalformedJson
        );
    }

    #[test]
    fn a_repeated_key_refusal_never_contains_the_value() {
        for body in [
            // The PHI in the second value, the first, and in a repeated key's name.
            r#"{"type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n", "patient_ref": "jane.doe@example.com"}}"#,
            r#"{"type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": "jane.doe@example.com", "patient_ref": "p_7Hq2kX9mZ4rT1vB8yW3n"}}"#,
            r#"{"events": [{ok}], "jane.doe@example.com": 1, "jane.doe@example.com": 1}"#,
            r#"{"events": [{"type": "patient.opted_out", "data": {"jane.doe@example.com": {"x": "Jane", "x": "Jane"}}}]}"#,
        ] {
            let e = refused_raw(body);
            assert_eq!(e.rule, "duplicate_key", "{body}");
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains("jane") && !shown.contains("Jane"),
                "{shown}"
            );
        }
    }

    #[test]
    fn refusal_text_never_contains_the_value() {
        let secret_value = "jane.doe@example.com";
        let e = parse(json!({"type": "patient.opted_out", "occurred_at": "2026-11-20T15:04:05Z", "data": {"patient_ref": secret_value}})).unwrap_err();
        assert_eq!(e.code, RefusalCode::PhiDetected);
        assert!(!format!("{e} {e:?}").contains("jane"));
    }
}
