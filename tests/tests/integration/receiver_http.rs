//! webhook-receiver over real HTTP through the local API Gateway, state in moto.

use reqwest::header::HeaderValue;
use serde_json::json;
use shared::ids::OpaqueRef;
use shared::ports::EntityRepo;
use shared::signature::WebhookSecret;
use shared::state::{AppointmentStatus, Entity, EntityKey};
use tests::{TestStack, ago, completed, new_ref};

async fn post_raw(
    ts: &TestStack,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().post(format!(
        "{}/v1/practices/{}/events",
        ts.stack.api_url, ts.practice
    ));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn signed(ts: &TestStack, id: &str, body: &[u8], at: i64) -> Vec<(&'static str, String)> {
    let sig = ts.secret.sign(id, at, body).unwrap();
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", sig),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_follow_the_contract() {
    let ts = TestStack::start().await.unwrap();
    let now = jiff::Timestamp::now().as_second();
    let ok = json!({"type": "patient.opted_in", "occurred_at": ago(0), "data": {"patient_ref": new_ref("p")}}).to_string().into_bytes();

    let (s, _) = post_raw(&ts, &signed(&ts, "msg_ok_1", &ok, now), ok.clone()).await;
    assert_eq!(s, 202);

    // 415: wrong content type.
    let mut h = signed(&ts, "msg_415", &ok, now);
    h[0].1 = "text/plain".into();
    let (s, b) = post_raw(&ts, &h, ok.clone()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    // 413: over 256 KiB (checked before anything else is read).
    let big = vec![b' '; 256 * 1024 + 1];
    let (s, _) = post_raw(&ts, &signed(&ts, "msg_413", &big, now), big).await;
    assert_eq!(s, 413);

    // 401: bad signature, stale timestamp, missing headers.
    let (s, b) = post_raw(&ts, &signed(&ts, "msg_401", b"{}", now), ok.clone()).await;
    assert_eq!(
        (s, b["error"]["rule"].as_str()),
        (401, Some("signature_mismatch"))
    );
    let (s, b) = post_raw(&ts, &signed(&ts, "msg_stale", &ok, now - 301), ok.clone()).await;
    assert_eq!(
        (s, b["error"]["rule"].as_str()),
        (401, Some("stale_timestamp"))
    );
    let (s, _) = post_raw(
        &ts,
        &[("content-type", "application/json".into())],
        ok.clone(),
    )
    .await;
    assert_eq!(s, 401);

    // 400: malformed JSON, and the error never quotes the input.
    let bad =
        b"{\"type\": \"patient.opted_in\", \"data\": {\"patient_ref\": \"jane.doe@example.com\""
            .to_vec();
    let (s, b) = post_raw(&ts, &signed(&ts, "msg_400", &bad, now), bad).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    assert!(!b.to_string().contains("jane"));

    // 422: a key repeated in one object, named by its path, the value never quoted.
    let dup = format!(
        r#"{{"type": "patient.opted_in", "occurred_at": "{}", "data": {{"patient_ref": "{}", "patient_ref": "jane.doe@example.com"}}}}"#,
        ago(0),
        new_ref("p")
    )
    .into_bytes();
    let (s, b) = post_raw(&ts, &signed(&ts, "msg_dup", &dup, now), dup).await;
    assert_eq!(
        (s, &b["error"]),
        (
            422,
            &json!({"code": "schema_violation", "field": "data.patient_ref", "rule": "duplicate_key"})
        )
    );
    assert!(!b.to_string().contains("jane"));

    // 401: a malformed webhook-id, named by its header and rule.
    let (s, b) = post_raw(&ts, &signed(&ts, "msg 1", &ok, now), ok.clone()).await;
    assert_eq!(
        (s, &b["error"]),
        (
            401,
            &json!({"code": "invalid_signature", "field": "webhook-id", "rule": "webhook_id_format"})
        )
    );
    ts.stop().await;
}

/// POSTs `body` to `practice`'s events with `headers` (raw values: any bytes a client can
/// send); the status, the content type and the body's bytes as answered.
async fn post_to(
    ts: &TestStack,
    practice: &str,
    headers: &[(&str, HeaderValue)],
    body: &[u8],
) -> (u16, Option<HeaderValue>, Vec<u8>) {
    let mut req = reqwest::Client::new().post(format!(
        "{}/v1/practices/{practice}/events",
        ts.stack.api_url
    ));
    for (k, v) in headers {
        req = req.header(*k, v.clone());
    }
    let r = req.body(body.to_vec()).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").cloned();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_practice_is_answered_exactly_as_a_bad_signature() {
    let ts = TestStack::start().await.unwrap();
    let now = jiff::Timestamp::now().as_second();
    let wrong = WebhookSecret::generate();
    let body = json!({"type": "patient.opted_in", "occurred_at": ago(0), "data": {"patient_ref": new_ref("p")}}).to_string().into_bytes();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap();
    // Headers for `id` (raw bytes), signed at `at` with `key` (no signature header: `None`).
    let headers = |id: &[u8], at: i64, key: Option<&WebhookSecret>| {
        let mut h = vec![
            ("content-type", hv("application/json")),
            ("webhook-id", HeaderValue::from_bytes(id).unwrap()),
            ("webhook-timestamp", hv(&at.to_string())),
        ];
        if let Some(k) = key {
            let id = String::from_utf8_lossy(id);
            h.push(("webhook-signature", hv(&k.sign(&id, at, &body).unwrap())));
        }
        h
    };
    let long_id = vec![b'm'; 257];
    // (what is wrong, webhook-id, timestamp, signed with the practice's secret, expected rule)
    let cases: [(&str, &[u8], i64, bool, &str); 7] = [
        ("wrong secret", b"msg_u1", now, true, "signature_mismatch"),
        (
            "no signature",
            b"msg_u2",
            now,
            false,
            "missing_signature_header",
        ),
        (
            "stale timestamp",
            b"msg_u3",
            now - 301,
            true,
            "stale_timestamp",
        ),
        ("space in the id", b"msg u4", now, true, "webhook_id_format"),
        (
            "non-ASCII id",
            "msg_é".as_bytes(),
            now,
            true,
            "webhook_id_format",
        ),
        ("empty id", b"", now, true, "webhook_id_format"),
        (
            "id over 256 bytes",
            &long_id,
            now,
            true,
            "webhook_id_format",
        ),
    ];
    for (what, id, at, signed, rule) in cases {
        // The known practice gets the request signed with a secret it does not hold; the
        // unknown ones get it signed with the known practice's own secret (which tells
        // nothing either).
        let known = post_to(
            &ts,
            ts.practice.as_str(),
            &headers(id, at, signed.then_some(&wrong)),
            &body,
        )
        .await;
        let answer: serde_json::Value = serde_json::from_slice(&known.2).unwrap();
        assert_eq!(
            (known.0, answer["error"]["rule"].as_str()),
            (401, Some(rule)),
            "{what}"
        );
        for practice in ["no-such-clinic", "No_Such_Clinic"] {
            let unknown = post_to(
                &ts,
                practice,
                &headers(id, at, signed.then_some(&ts.secret)),
                &body,
            )
            .await;
            assert_eq!(
                unknown, known,
                "{what}, {practice}: status, content type, bytes"
            );
        }
    }
    // Content type and size still come first, practice or not.
    for practice in [ts.practice.as_str(), "no-such-clinic"] {
        let mut h = headers(b"msg_u5", now, Some(&ts.secret));
        h[0].1 = hv("text/plain");
        assert_eq!(post_to(&ts, practice, &h, &body).await.0, 415);
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_leaves_no_trace_and_duplicates_have_one_effect() {
    let ts = TestStack::start().await.unwrap();
    let good = new_ref("p");
    let batch = json!({"events": [completed(&good, "neurotoxin", 100),
        {"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": "Maria Gonzalez"}}]});
    let r = ts.send("msg_batch_bad", &batch).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "events[1].data.patient_ref");
    assert_eq!(r.body["error"]["rule"], "person_name");
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    assert!(
        !dump.contains(&good),
        "no event of a refused batch takes effect"
    );
    assert!(!dump.contains("Gonzalez"));

    let single = json!({"events": [completed(&good, "neurotoxin", 100)]});
    assert_eq!(ts.send("msg_once", &single).await.status, 202);
    let before = ts.stack.meter.snapshot();
    assert_eq!(
        ts.send("msg_once", &single).await.status,
        202,
        "a duplicate is accepted"
    );
    let after = ts.stack.meter.snapshot();
    assert_eq!(
        after.write_requests, before.write_requests,
        "and writes nothing"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_deliveries_converge() {
    let ts = TestStack::start().await.unwrap();
    let appt = new_ref("appt");
    let patient = new_ref("p");
    let booked = json!({"type": "appointment.booked", "occurred_at": ago(3), "data": {"appointment_ref": appt, "patient_ref": patient,
        "treatment": "neurotoxin", "provider_ref": new_ref("prov"), "starts_at": "2027-01-10T15:00:00Z", "duration_min": 30}});
    let resched = json!({"type": "appointment.rescheduled", "occurred_at": ago(2), "data": {"appointment_ref": appt, "starts_at": "2027-01-12T15:00:00Z", "duration_min": 45}});
    let cancelled = json!({"type": "appointment.cancelled", "occurred_at": ago(1), "data": {"appointment_ref": appt, "reopens_slot": false}});
    // Newest first: the cancellation, then the reschedule, then the booking.
    for (i, ev) in [&cancelled, &resched, &booked].iter().enumerate() {
        assert_eq!(ts.send(&format!("msg_ooo_{i}"), ev).await.status, 202);
    }
    let stored = ts
        .store()
        .get_entity(
            &ts.practice,
            &EntityKey::Appointment(OpaqueRef::parse(&appt).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    let Entity::Appointment(a) = stored.value else {
        panic!("appointment")
    };
    assert_eq!(
        a.status.unwrap().value,
        AppointmentStatus::Cancelled,
        "the latest event wins whatever the arrival order"
    );
    assert_eq!(
        a.starts_on.unwrap().value.to_string(),
        "2027-01-12",
        "the reschedule's date, at day precision"
    );
    assert_eq!(a.patient.unwrap().value.patient_ref.as_str(), patient);
    ts.stop().await;
}
