//! A large generated backfill through the layer's own parser and PHI guard: every event the
//! relay makes from Square bookings (ids shaped like Square's, every status, notes full of
//! PHI) must be accepted, and nothing of the bookings but their ids made opaque may appear.

use jiff::{SignedDuration, Timestamp};
use shared::inbound::parse_body;
use shared::refkey::RefKey;
use shared::treatment::Treatment;
use square_relay::layer::MAX_BATCH;
use square_relay::mapping::{DEFAULT_COMPLETION_GRACE, Refs, Rules, ServiceMap, map_booking};
use square_relay::square::model::Booking;

/// splitmix64: a fixed seed, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// `len` characters of `alphabet`.
    fn id(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| *self.pick(alphabet) as char).collect()
    }
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const NOTES: &[&str] = &[
    "Maria Lopez (DOB 03/02/1984) prefers afternoons",
    "call 555-867-5309 before, allergic to lidocaine",
    "SSN 123-45-6789 on file, MRN 00482913",
    "jane.doe@example.com asked about filler for her lips",
    "lives at 1200 Main Street, Springfield IL 62701",
];

#[test]
fn a_large_generated_backfill_is_accepted_whole_and_carries_only_opaque_ids() {
    let mut rng = Rng(0x5EED_0F5A_0A4E);
    let refs = Refs::new(RefKey::generate());
    let variations: Vec<String> = (0..40).map(|_| rng.id(UPPER_DIGITS, 24)).collect();
    // Three in four services are mapped; the rest are skipped, as the practice left them.
    let mapped: Vec<(&str, Treatment)> = variations
        .iter()
        .take(30)
        .enumerate()
        .map(|(i, v)| {
            let t = [
                Treatment::Neurotoxin,
                Treatment::DermalFiller,
                Treatment::Microneedling,
                Treatment::Facial,
                Treatment::LaserHairRemoval,
            ][i % 5];
            (v.as_str(), t)
        })
        .collect();
    let rules = Rules {
        services: ServiceMap::from_pairs(mapped),
        completion_grace: DEFAULT_COMPLETION_GRACE,
    };
    let customers: Vec<String> = (0..4_000).map(|_| rng.id(UPPER_DIGITS, 26)).collect();
    let team: Vec<String> = (0..12).map(|_| rng.id(MIXED, 16)).collect();
    let now: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
    let statuses = [
        "ACCEPTED",
        "ACCEPTED",
        "ACCEPTED",
        "PENDING",
        "CANCELLED_BY_CUSTOMER",
        "CANCELLED_BY_SELLER",
        "DECLINED",
        "NO_SHOW",
    ];

    let mut raw = Vec::new();
    let mut events = Vec::new();
    let mut skipped = 0usize;
    const BOOKINGS: usize = 20_000;
    for _ in 0..BOOKINGS {
        // Three years back to 90 days ahead.
        let start = now - SignedDuration::from_mins(rng.below(1185 * 24 * 60) as i64)
            + SignedDuration::from_hours(90 * 24);
        // Made before its start, and never after now (Square's own clock).
        let created = (start - SignedDuration::from_mins(rng.below(60 * 24 * 60) as i64)).min(now);
        let updated =
            (created + SignedDuration::from_mins(rng.below(30 * 24 * 60) as i64)).min(now);
        let segments: Vec<_> = (0..1 + rng.below(3))
            .map(|_| {
                serde_json::json!({
                    "duration_minutes": *rng.pick(&[15, 30, 45, 60, 90, 120]),
                    "service_variation_id": rng.pick(&variations),
                    "team_member_id": rng.pick(&team),
                    "service_variation_version": 1_599_775_456_731i64,
                    "intermission_minutes": 0,
                    "any_team_member": false,
                })
            })
            .collect();
        let customer = rng.pick(&customers).clone();
        let booking = serde_json::json!({
            "id": rng.id(LOWER_DIGITS, 14),
            "version": 1 + rng.below(5),
            "status": rng.pick(&statuses),
            "created_at": created.to_string(),
            "updated_at": updated.to_string(),
            "start_at": start.to_string(),
            "location_id": "LKTJ3RV8ZJ1ZQ",
            "customer_id": customer,
            "customer_note": rng.pick(NOTES),
            "seller_note": rng.pick(NOTES),
            "location_type": "BUSINESS_LOCATION",
            "creator_details": {"creator_type": "TEAM_MEMBER", "team_member_id": rng.pick(&team)},
            "source": "FIRST_PARTY_MERCHANT",
            "all_day": false,
            "transition_time_minutes": 0,
            "appointment_segments": segments,
        });
        raw.push(booking.clone());
        let b: Booking = serde_json::from_value(booking).unwrap();
        let m = map_booking(&b, now, &rules, &refs);
        if m.skipped.is_some() {
            skipped += 1;
        }
        events.extend(m.events);
    }
    assert!(
        events.len() > BOOKINGS,
        "every kind of event is made: {}",
        events.len()
    );
    assert!(
        skipped > 0 && skipped < BOOKINGS / 2,
        "unmapped services are skipped: {skipped}"
    );
    for kind in [
        "appointment.booked",
        "appointment.cancelled",
        "appointment.no_show",
        "appointment.completed",
    ] {
        assert!(events.iter().any(|e| e["type"] == kind), "no {kind}");
    }

    // The layer's parser and PHI guard, as the receiver runs them, batch by batch.
    let mut refused = Vec::new();
    for chunk in events.chunks(MAX_BATCH) {
        let body = serde_json::to_vec(&serde_json::json!({ "events": chunk })).unwrap();
        if let Err(r) = parse_body(&body, now) {
            refused.push(format!("{r:?}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{} batches refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );

    // Nothing of Square's payload but the ids made opaque: every string the events carry is
    // an event type, a treatment, a ref made with the key, or a time; every key is the
    // contract's. So no id, note, location or name can be in there, whole or in part.
    let treatments: Vec<&str> = Treatment::ALL.iter().map(|t| t.as_str()).collect();
    let keys = [
        "type",
        "occurred_at",
        "data",
        "appointment_ref",
        "patient_ref",
        "treatment",
        "provider_ref",
        "starts_at",
        "duration_min",
        "reopens_slot",
    ];
    let is_ref = |s: &str| {
        let (prefix, hex) = s.split_at(2);
        ["p_", "a_", "r_"].contains(&prefix)
            && hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    fn walk(v: &serde_json::Value, f: &mut dyn FnMut(Option<&str>, &serde_json::Value)) {
        match v {
            serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
                f(Some(k), v);
                walk(v, f);
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, f)),
            _ => {}
        }
    }
    let mut strings = 0usize;
    for e in &events {
        walk(e, &mut |k, v| {
            let k = k.unwrap_or_default();
            assert!(keys.contains(&k), "a key the contract does not have: {k}");
            if let Some(s) = v.as_str() {
                strings += 1;
                let ok = (k == "type" && s.starts_with("appointment."))
                    || (k == "treatment" && treatments.contains(&s))
                    || (k.ends_with("_ref") && is_ref(s))
                    || ((k == "occurred_at" || k == "starts_at") && s.parse::<Timestamp>().is_ok());
                assert!(ok, "{k} carries something else than the contract's values");
            }
        });
    }
    assert!(strings > 4 * events.len());
    // And the bookings did carry what must not leave (the check above had something to find).
    assert!(
        raw.iter()
            .all(|b| b["customer_note"].as_str().is_some_and(|n| !n.is_empty()))
    );
}
