//! `patient.ref_rotated` and `patient.erased` over real HTTP, state in moto (docs/design.md
//! §2.6): afterwards the old ref is stored nowhere, and a redelivery has no second effect.

use pil_shared::action::ActionStatus;
use pil_shared::ids::{ActionId, OpaqueRef};
use pil_shared::ports::{ActionRepo, EntityRepo, PatientIndex};
use pil_shared::state::{Entity, EntityKey};
use pil_shared::treatment::Treatment;
use pil_tests::{Captured, TestStack, WAIT, ago, completed, eventually, new_ref};
use serde_json::{Value, json};

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
/// booking of another category, and (after the scan) an opt-out. Returns the action's id once
/// approval-check has settled it as pending (so nothing else writes while the test measures).
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

/// No queue holds a message with `value`, no e-mail and no log line carries it.
async fn nowhere_else(ts: &TestStack, logs: &Captured, value: &str) {
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
    let ts = TestStack::start().await.unwrap();
    let (a, b, appt) = (new_ref("p"), new_ref("p"), new_ref("appt"));
    // The new ref already has a (older) consent record: rotation merges into it.
    let opt_in = consent("patient.opted_in", &b, 30);
    assert_eq!(ts.send("msg_b_in", &opt_in).await.status, 202);
    let id = patient_with_history(&ts, &a, &appt).await;
    assert!(pil_tests::table_dump(&ts.stack).await.unwrap().contains(&a));

    // WHEN the PMS rotates A to B
    let r = ts.send("msg_rotate", &rotated(&a, &b)).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // THEN A is stored nowhere (no item, queued message, e-mail or log line; the audit trail
    // is in the table and names action ids only), and B holds A's state
    let dump = pil_tests::table_dump(&ts.stack).await.unwrap();
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
    assert_eq!(
        (action.patient_ref, action.status),
        (rb, ActionStatus::Pending)
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
    let ts = TestStack::start().await.unwrap();
    let (p, appt) = (new_ref("p"), new_ref("appt"));
    let other = new_ref("p");
    let keep = consent("patient.opted_out", &other, 1);
    assert_eq!(ts.send("msg_other", &keep).await.status, 202);
    let id = patient_with_history(&ts, &p, &appt).await;

    // WHEN the PMS erases the patient
    let r = ts.send("msg_erase", &erased(&p)).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // THEN nothing of it is stored, the pending action included; other patients stay
    let dump = pil_tests::table_dump(&ts.stack).await.unwrap();
    assert!(!dump.contains(&p), "the ref is gone from every item");
    assert!(!dump.contains(&appt), "its appointment is gone");
    assert!(!dump.contains(id.as_str()), "its pending action is gone");
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
    let dump = pil_tests::table_dump(&ts.stack).await.unwrap();
    assert!(!dump.contains(&q));
    ts.stop().await;
}
