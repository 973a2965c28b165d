//! The test vectors in `tests/data/vectors/` (see its README): every build passes them.

use std::path::PathBuf;

use serde_json::Value;
use shared::inbound::{RefusalCode, parse_body};
use shared::signature::{SignedHeaders, WebhookSecret, verify};

fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PIL_VECTORS_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors must be present at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

#[test]
fn standard_webhooks_vectors() {
    let v = load("standard-webhooks.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "expected the full vector set");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let secret = WebhookSecret::parse(case["secret"].as_str().unwrap()).expect(name);
        let h = &case["headers"];
        let headers = SignedHeaders {
            id: h["webhook-id"].as_str(),
            timestamp: h["webhook-timestamp"].as_str(),
            signature: h["webhook-signature"].as_str(),
        };
        let body = case["body"].as_str().unwrap().as_bytes();
        let now = case["now"].as_i64().unwrap();
        let got = verify(headers, body, &[secret], now);
        assert_eq!(
            got.is_ok(),
            case["valid"].as_bool().unwrap(),
            "case `{name}`: {got:?}"
        );
    }
}

#[test]
fn official_vectors_also_sign_identically() {
    let v = load("standard-webhooks.json");
    for case in v["cases"].as_array().unwrap().iter().take(2) {
        let secret = WebhookSecret::parse(case["secret"].as_str().unwrap()).unwrap();
        let h = &case["headers"];
        let ts: i64 = h["webhook-timestamp"].as_str().unwrap().parse().unwrap();
        let sig = secret.sign(
            h["webhook-id"].as_str().unwrap(),
            ts,
            case["body"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(sig.as_deref(), h["webhook-signature"].as_str());
    }
}

/// The vectors' descriptive rule names, mapped to the stable codes on the wire.
fn rule_code(vector_rule: &str) -> &'static str {
    match vector_rule {
        "email" => "email",
        "phone" => "phone",
        "ssn" => "ssn",
        "all-digit identifier (MRN-like)" => "mrn",
        "date-like" => "date",
        "person name" => "person_name",
        "url" => "url",
        "unknown field" => "unknown_field",
        "closed vocabulary" => "closed_vocabulary",
        other => panic!("vector rule `{other}` has no mapping: add it"),
    }
}

#[test]
fn phi_vectors_are_refused_naming_field_and_rule_never_the_value() {
    let v = load("phi-examples.json");
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    for case in v["reject"].as_array().unwrap() {
        let body = case["body"].to_string();
        let refusal = parse_body(body.as_bytes(), now).expect_err(&body);
        assert_eq!(refusal.field, case["field"].as_str().unwrap(), "{body}");
        assert_eq!(
            refusal.rule,
            rule_code(case["rule"].as_str().unwrap()),
            "{body}"
        );
        assert_ne!(refusal.code, RefusalCode::MalformedJson);
        // Nothing of any input value in the body appears in the refusal: every string but
        // the schema's own words (an event's `type`, the envelope's timestamps).
        let shown = format!("{refusal} {refusal:?}");
        for s in input_values(&case["body"]) {
            if s.len() >= 4 {
                assert!(!shown.contains(&s), "refusal echoes a value: {shown}");
            }
        }
    }
}

/// The string values of a body a sender chose: every string but those under `type` (the
/// schema's event names) and the timestamps the envelope carries (`occurred_at`,
/// `starts_at`), which the schema itself names in its refusals' rules.
fn input_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(input_values).collect(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "occurred_at" | "starts_at"))
            .flat_map(|(_, v)| input_values(v))
            .collect(),
        _ => vec![],
    }
}

/// One event of each shape that carries refs, with `r` in the field `field` and valid refs
/// in the others.
fn bodies_with_ref_in_every_field(r: &str) -> Vec<(String, Value)> {
    let other = "p_Zq9Wm4Kx7Rt2Vb8Ny5Lc";
    let other2 = "p_Hd3Fg8Jk2Lm7Qw4Er9Ty";
    let at = "2026-11-20T15:04:05Z";
    let starts = "2026-12-01T15:00:00Z";
    let mut out = Vec::new();
    for field in ["appointment_ref", "patient_ref", "provider_ref"] {
        let mut data = serde_json::json!({"appointment_ref": other, "patient_ref": other2,
            "treatment": "neurotoxin", "provider_ref": "prov_Zx3Vb7Nm1Qw9Er5Ty2",
            "starts_at": starts, "duration_min": 30});
        data[field] = Value::String(r.to_owned());
        out.push((
            format!("appointment.booked {field}"),
            serde_json::json!({"type": "appointment.booked", "occurred_at": at, "data": data}),
        ));
    }
    for field in ["slot_ref", "provider_ref"] {
        let mut data = serde_json::json!({"slot_ref": other, "provider_ref": other2,
            "starts_at": starts, "duration_min": 30, "treatments": ["neurotoxin"]});
        data[field] = Value::String(r.to_owned());
        out.push((
            format!("slot.opened {field}"),
            serde_json::json!({"type": "slot.opened", "occurred_at": at, "data": data}),
        ));
    }
    for field in ["old_ref", "new_ref"] {
        let mut data = serde_json::json!({"old_ref": other, "new_ref": other2});
        data[field] = Value::String(r.to_owned());
        out.push((
            format!("patient.ref_rotated {field}"),
            serde_json::json!({"type": "patient.ref_rotated", "occurred_at": at, "data": data}),
        ));
    }
    out.push((
        "patient.opted_out patient_ref".into(),
        serde_json::json!({"type": "patient.opted_out", "occurred_at": at, "data": {"patient_ref": r}}),
    ));
    out
}

#[test]
fn accepted_refs_pass_in_every_ref_field() {
    let v = load("phi-examples.json");
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    for r in v["accept_refs"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        for (what, body) in bodies_with_ref_in_every_field(r) {
            let parsed = parse_body(body.to_string().as_bytes(), now);
            assert!(parsed.is_ok(), "{r} in {what}: {:?}", parsed.err());
        }
    }
}

/// Each refused ref of the examples is refused in every ref field too, naming that field.
#[test]
fn refused_refs_are_refused_in_every_ref_field() {
    let v = load("phi-examples.json");
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    let mut tried = 0;
    for case in v["reject"].as_array().unwrap() {
        let Some(field) = case["field"].as_str() else {
            continue;
        };
        if !field.ends_with("_ref") {
            continue;
        }
        let Some(r) = field_value(&case["body"], field) else {
            continue;
        };
        for (what, body) in bodies_with_ref_in_every_field(&r) {
            let refusal = parse_body(body.to_string().as_bytes(), now).expect_err(&what);
            let named = what.rsplit(' ').next().unwrap_or_default();
            assert_eq!(refusal.field, format!("data.{named}"), "{what}");
            tried += 1;
        }
    }
    assert!(tried > 0, "the examples refuse some ref");
}

/// The string at a refusal's field path (`data.patient_ref`, `events[1].data.old_ref`).
fn field_value(body: &Value, path: &str) -> Option<String> {
    let mut v = body;
    for part in path.split('.') {
        v = match part.split_once('[') {
            Some((key, index)) => {
                let i: usize = index.trim_end_matches(']').parse().ok()?;
                v.get(key)?.get(i)?
            }
            None => v.get(part)?,
        };
    }
    v.as_str().map(str::to_owned)
}

#[test]
fn a_batch_with_one_refused_event_is_refused_whole() {
    let v = load("phi-examples.json");
    let batch = v["reject"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["body"].get("events").is_some())
        .unwrap();
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    assert!(parse_body(batch["body"].to_string().as_bytes(), now).is_err());
}

mod reference {
    use proptest::prelude::*;
    use shared::signature::WebhookSecret;

    proptest! {
        #![proptest_config(ProptestConfig {
            // A failure's seed is kept (and replayed first) in a committed file.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "tests/vectors.proptest-regressions",
                ),
            )),
            ..ProptestConfig::default()
        })]
        /// Our signatures are byte-for-byte the reference implementation's.
        #[test]
        fn signatures_equal_the_standardwebhooks_crate(
            key in proptest::collection::vec(any::<u8>(), 16..64),
            id in "[A-Za-z0-9_-]{1,40}",
            ts in 0i64..4_000_000_000,
            body in "\\PC{0,300}",
        ) {
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key);
            let ours = WebhookSecret::parse(&format!("whsec_{encoded}")).unwrap();
            let theirs = standardwebhooks::Webhook::new(&format!("whsec_{encoded}")).unwrap();
            prop_assert_eq!(ours.sign(&id, ts, body.as_bytes()).unwrap(), theirs.sign(&id, ts, body.as_bytes()).unwrap());
        }
    }
}
