//! `patient.ref_rotated` and `patient.erased` over real HTTP, state in moto (docs/design.md
//! §2.6): afterwards the old ref is stored nowhere, and a redelivery has no second effect.

use serde_json::{Value, json};
use shared::action::ActionStatus;
use shared::ids::{ActionId, OpaqueRef};
use shared::ports::{ActionRepo, EntityRepo, PatientIndex};
use shared::state::{Entity, EntityKey};
use shared::treatment::Treatment;
use tests::{Captured, TestStack, WAIT, ago, completed, eventually, new_ref};

fn booked(patient: &str, appointment: &str) -> Value {
    let starts_at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30);
    json!({"type": "appointment.booked", "occurred_at": ago(1), "data": {
        "appointment_ref": appointment, "patient_ref": patient, "treatment": "dermal_filler",
        "provider_ref": new_ref("prov"), "starts_at": starts_at.to_string(), "duration_min": 30}})
}

fn consent(kind: &str, patient: &str, days_ago: i64) -> Value {
    json!({"type": kind, "occurred_at": ago(days_ago), "data": {"patient_ref": patient}})
}

fn rotated(old: &str, new: &str) -> Value {
    json!({"type": "patient.ref_rotated", "occurred_at": ago(0),
        "data": {"old_ref": old, "new_ref": new}})
}

fn erased(patient: &str) -> Value {
    json!({"type": "patient.erased", "occurred_at": ago(0), "data": {"patient_ref": patient}})
}

/// GIVEN a patient with a completion 100 days ago (so the night proposes a rebook nudge), a
/// booking of another category, and (after the scan) an opt-out, which withdraws the action.
/// Returns the action's id (approval-check settled it as pending before the opt-out, so
/// nothing else writes while the test measures).
async fn patient_with_history(ts: &TestStack, patient: &str, appointment: &str) -> ActionId {
    let batch =
        json!({"events": [completed(patient, "neurotoxin", 100), booked(patient, appointment)]});
    assert_eq!(ts.send(&new_ref("msg"), &batch).await.status, 202);
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert_eq!(report.created.len(), 1, "one rebook nudge");
    let id = report.created[0].clone();
    eventually(WAIT, || async {
        let a = ts.store().get_action(&ts.practice, &id).await.unwrap()?;
        (a.status == ActionStatus::Pending).then_some(())
    })
    .await
    .expect("the action waits for the owner");
    eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("owner e-mail sent");
    let out = consent("patient.opted_out", patient, 0);
    assert_eq!(ts.send(&new_ref("msg"), &out).await.status, 202);
    id
}

/// No message or e-mail the handlers ever sent (queue messages and bus events carry ids only,
/// e-mails short codes), no message still queued (a DLQ's), no e-mail and no log line
/// carries `value`.
async fn nowhere_else(ts: &TestStack, logs: &Captured, value: &str) {
    ts.settled().await;
    assert!(!ts.sent_text().contains(value), "in a message sent");
    assert!(
        !ts.queue_dump().await.contains(value),
        "in a queued message"
    );
    for e in ts.emails().await {
        assert!(!format!("{e:?}").contains(value), "in an e-mail");
    }
    let text = logs.text();
    assert!(
        text.contains("webhook accepted"),
        "the handlers' log lines are captured"
    );
    assert!(!text.contains(value), "in a log line");
}

async fn entity(ts: &TestStack, key: EntityKey) -> Option<Entity> {
    ts.store()
        .get_entity(&ts.practice, &key)
        .await
        .unwrap()
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_rekeys_every_record_and_a_redelivery_changes_nothing() {
    let logs = Captured::global();
    let ts = TestStack::start_recorded().await.unwrap();
    let (a, b, appt) = (new_ref("p"), new_ref("p"), new_ref("appt"));
    // The new ref already has a (older) consent record: rotation merges into it.
    let opt_in = consent("patient.opted_in", &b, 30);
    assert_eq!(ts.send("msg_b_in", &opt_in).await.status, 202);
    let id = patient_with_history(&ts, &a, &appt).await;
    assert!(tests::table_dump(&ts.stack).await.unwrap().contains(&a));

    // WHEN the PMS rotates A to B
    let r = ts.send("msg_rotate", &rotated(&a, &b)).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // THEN A is stored nowhere (no item, queued message, e-mail or log line; the audit trail
    // is in the table and names action ids only), and B holds A's state
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    assert!(!dump.contains(&a), "the old ref is gone from every item");
    nowhere_else(&ts, &logs, &a).await;
    let (ra, rb) = (OpaqueRef::parse(&a).unwrap(), OpaqueRef::parse(&b).unwrap());
    assert!(
        entity(
            &ts,
            EntityKey::PatientTreatment(ra.clone(), Treatment::Neurotoxin)
        )
        .await
        .is_none()
    );
    let Some(Entity::PatientTreatment(pt)) = entity(
        &ts,
        EntityKey::PatientTreatment(rb.clone(), Treatment::Neurotoxin),
    )
    .await
    else {
        panic!("the treatment record moved to B")
    };
    assert!(
        pt.last.is_some() && pt.actioned_due.is_some(),
        "with its history"
    );
    let Some(Entity::Consent(c)) = entity(&ts, EntityKey::Consent(rb.clone())).await else {
        panic!("consent under B")
    };
    assert!(
        c.is_opted_out(),
        "A's later opt-out wins over B's older opt-in"
    );
    let appt_ref = OpaqueRef::parse(&appt).unwrap();
    let Some(Entity::Appointment(ap)) = entity(&ts, EntityKey::Appointment(appt_ref)).await else {
        panic!("the appointment keeps its key")
    };
    assert_eq!(ap.patient.unwrap().value.patient_ref, rb);
    let by_b = ts.store().appointments_of(&ts.practice, &rb).await.unwrap();
    assert_eq!(by_b.len(), 1, "the per-patient index lists it under B");
    let by_a = ts.store().appointments_of(&ts.practice, &ra).await.unwrap();
    assert!(by_a.is_empty(), "and not under A");
    let action = ts
        .store()
        .get_action(&ts.practice, &id)
        .await
        .unwrap()
        .expect("the action keeps its id");
    // (The opt-out withdrew it before the rotation; it moved all the same.)
    assert_eq!(
        (action.patient_ref, action.status),
        (rb, ActionStatus::Withdrawn)
    );

    // AND a redelivery of the same rotation writes nothing
    let before = ts.stack.meter.snapshot();
    assert_eq!(ts.send("msg_rotate", &rotated(&a, &b)).await.status, 202);
    let after = ts.stack.meter.snapshot();
    assert_eq!(after.write_requests, before.write_requests);

    // AND the gap already actioned under A is not proposed again under B
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert!(
        report.created.is_empty(),
        "no second nudge for the same gap"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_deletes_every_record_and_a_redelivery_is_a_no_op() {
    let logs = Captured::global();
    let ts = TestStack::start_recorded().await.unwrap();
    let (p, appt) = (new_ref("p"), new_ref("appt"));
    let other = new_ref("p");
    let keep = consent("patient.opted_out", &other, 1);
    assert_eq!(ts.send("msg_other", &keep).await.status, 202);
    let id = patient_with_history(&ts, &p, &appt).await;

    // WHEN the PMS erases the patient
    let r = ts.send("msg_erase", &erased(&p)).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // THEN nothing of it is stored, the pending action included; other patients stay
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    assert!(!dump.contains(&p), "the ref is gone from every item");
    assert!(!dump.contains(&appt), "its appointment is gone");
    // (The audit chain keeps naming the action by id, as it names every action: an id,
    // never a ref; so does the night's budget counter, for three days.)
    let items = tests::table_items(&ts.stack).await.unwrap();
    let outside_audit = items
        .iter()
        .filter(|i| {
            !i["sk"]
                .as_str()
                .is_some_and(|k| k.starts_with("AUDIT") || k.starts_with("NIGHT#"))
        })
        .map(Value::to_string)
        .collect::<String>();
    assert!(
        !outside_audit.contains(id.as_str()),
        "its withdrawn action is gone"
    );
    assert!(
        ts.store()
            .get_action(&ts.practice, &id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(dump.contains(&other), "another patient's record stays");
    nowhere_else(&ts, &logs, &p).await;
    nowhere_else(&ts, &logs, &appt).await;

    // AND a redelivery is a no-op
    let before = ts.stack.meter.snapshot();
    assert_eq!(ts.send("msg_erase", &erased(&p)).await.status, 202);
    assert_eq!(
        ts.stack.meter.snapshot().write_requests,
        before.write_requests
    );

    // AND within one batch the erasure runs after the batch's other events, so what the
    // batch said about the ref is erased too
    let q = new_ref("p");
    let batch = json!({"events": [erased(&q), completed(&q, "facial", 3),
        consent("patient.opted_out", &q, 0), booked(&q, &new_ref("appt"))]});
    assert_eq!(ts.send("msg_erase_batch", &batch).await.status, 202);
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    assert!(!dump.contains(&q));
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_cannot_bring_an_erased_or_rotated_ref_back() {
    let ts = TestStack::start_recorded().await.unwrap();
    let (gone, gone_appt) = (new_ref("p"), new_ref("appt"));
    let (old, new) = (new_ref("p"), new_ref("p"));
    let history = json!({"events": [
        completed(&gone, "neurotoxin", 100), booked(&gone, &gone_appt),
        completed(&old, "dermal_filler", 200),
    ]});
    assert_eq!(ts.send("msg_hist", &history).await.status, 202);
    assert_eq!(ts.send("msg_erase", &erased(&gone)).await.status, 202);
    assert_eq!(
        ts.send("msg_rotate", &rotated(&old, &new)).await.status,
        202
    );

    // WHEN the PMS retries older events for both refs (signed afresh, new webhook ids), one
    // for the erased patient's appointment, and an event dated after the erasure
    let late = json!({"events": [
        completed(&gone, "neurotoxin", 120),
        consent("patient.opted_out", &gone, 0),
        {"type": "appointment.cancelled", "occurred_at": ago(0),
            "data": {"appointment_ref": gone_appt, "reopens_slot": false}},
        completed(&old, "chemical_peel", 50),
        consent("patient.opted_out", &old, 2),
    ]});
    let r = ts.send("msg_late_1", &late).await;
    // THEN they are accepted (so the PMS stops retrying)
    assert_eq!(r.status, 202, "{}", r.body);
    // AND nothing names the erased ref, its appointment or the rotated-away ref
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    for (what, r) in [
        ("erased ref", &gone),
        ("erased appointment", &gone_appt),
        ("rotated-away ref", &old),
    ] {
        assert!(!dump.contains(r.as_str()), "the {what} is back");
    }
    // AND the rotated ref's late events landed on the new ref
    let rn = OpaqueRef::parse(&new).unwrap();
    assert!(
        entity(
            &ts,
            EntityKey::PatientTreatment(rn.clone(), Treatment::ChemicalPeel)
        )
        .await
        .is_some(),
        "the late completion is the new ref's"
    );
    let Some(Entity::Consent(c)) = entity(&ts, EntityKey::Consent(rn)).await else {
        panic!("the late opt-out is the new ref's")
    };
    assert!(c.is_opted_out());
    // AND the tombstones hold keyed hashes only (three: the erased ref, its appointment, the
    // rotated-away ref), the rotation's naming the new ref
    let items = tests::table_items(&ts.stack).await.unwrap();
    let tombs: Vec<&Value> = items
        .iter()
        .filter(|i| i["sk"].as_str().is_some_and(|k| k.starts_with("TOMB#")))
        .collect();
    assert_eq!(tombs.len(), 3, "{tombs:?}");
    assert!(
        tombs
            .iter()
            .all(|t| t["ttl"].is_string() || t["ttl"].is_number())
    );
    assert_eq!(
        tombs
            .iter()
            .filter(|t| t.to_string().contains(new.as_str()))
            .count(),
        1
    );
    // AND a redelivery of the erasure and the rotation writes nothing
    let before = ts.stack.meter.snapshot();
    assert_eq!(ts.send("msg_erase", &erased(&gone)).await.status, 202);
    assert_eq!(
        ts.send("msg_rotate", &rotated(&old, &new)).await.status,
        202
    );
    assert_eq!(
        ts.stack.meter.snapshot().write_requests,
        before.write_requests
    );
    ts.stop().await;
}
