//! webhook-receiver over real HTTP through the local API Gateway, state in moto.

use pil_shared::ids::OpaqueRef;
use pil_shared::ports::EntityRepo;
use pil_shared::state::{AppointmentStatus, Entity, EntityKey};
use pil_tests::{TestStack, ago, completed, new_ref};
use serde_json::json;

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

    // 404: unknown practice (signed or not).
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/practices/no-such-clinic/events",
            ts.stack.api_url
        ))
        .header("content-type", "application/json")
        .body(ok.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
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
    let dump = pil_tests::table_dump(&ts.stack).await.unwrap();
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
