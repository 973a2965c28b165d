//! ByPatient projects keys only: the store reads a patient's records from the table by the
//! keys the index lists (BatchGetItem, 100 keys a request), whole, in key order, as they are
//! now; and a change that keeps the keys writes no index entry.

use jiff::{SignedDuration, Timestamp};
use pil_aws::{DynamoStore, Meter};
use shared::ids::OpaqueRef;
use shared::ports::{EntityRepo, PatientIndex, PracticeRepo};
use shared::state::{Appointment, AppointmentStatus, Entity, EntityKey, Lww, PatientTreatmentKey};
use shared::treatment::Treatment;
use tests::{TestStack, new_ref};

/// The stack's table through the DynamoDB adapter, with a meter of its own.
fn metered_store(ts: &TestStack) -> (DynamoStore, Meter) {
    let table = ts
        .stack
        .env
        .iter()
        .find(|(k, _)| k == "TABLE_NAME")
        .map(|(_, v)| v.clone())
        .unwrap();
    let meter = Meter::enabled();
    let store = DynamoStore::new(ts.stack.clients.dynamodb.clone(), table, meter.clone());
    (store, meter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_appointments_are_fetched_whole_through_the_keys_only_index() {
    let ts = TestStack::start().await.unwrap();
    let (store, meter) = metered_store(&ts);
    let patient = OpaqueRef::parse(&new_ref("p")).unwrap();
    let at = Timestamp::now() - SignedDuration::from_hours(1);
    // 130 appointments: more than one BatchGetItem request holds.
    let mut appointments = Vec::new();
    for _ in 0..130 {
        let mut a = Appointment::new(OpaqueRef::parse(&new_ref("ap")).unwrap());
        a.patient = Some(Lww::new(
            PatientTreatmentKey {
                patient_ref: patient.clone(),
                treatment: Treatment::Facial,
            },
            at,
        ));
        a.status = Some(Lww::new(AppointmentStatus::Booked, at));
        store
            .put_entity(&ts.practice, &Entity::Appointment(a.clone()), None, None)
            .await
            .unwrap();
        appointments.push(a);
    }
    // Another patient's appointment is not listed.
    let mut other = Appointment::new(OpaqueRef::parse(&new_ref("ap")).unwrap());
    other.patient = Some(Lww::new(
        PatientTreatmentKey {
            patient_ref: OpaqueRef::parse(&new_ref("p")).unwrap(),
            treatment: Treatment::Facial,
        },
        at,
    ));
    store
        .put_entity(&ts.practice, &Entity::Appointment(other), None, None)
        .await
        .unwrap();

    // A cancellation after the appointment was indexed: one write unit (the item alone), and
    // the read sees it.
    let mut cancelled = appointments[7].clone();
    cancelled.status = Some(Lww::new(
        AppointmentStatus::Cancelled,
        at + SignedDuration::from_mins(5),
    ));
    meter.reset();
    store
        .put_entity(
            &ts.practice,
            &Entity::Appointment(cancelled.clone()),
            Some(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!(meter.snapshot().total_write_units(), 1.0);
    appointments[7] = cancelled;

    meter.reset();
    let got = store.appointments_of(&ts.practice, &patient).await.unwrap();
    let mut want = appointments;
    want.sort_by_key(|a| EntityKey::Appointment(a.appointment_ref.clone()).sort_key());
    assert_eq!(got, want);
    let read = meter.snapshot();
    assert_eq!(
        (read.read_requests, read.items_read),
        (3, 260),
        "one index query (130 keys), then BatchGetItem of 100 and of 30"
    );
    // ½ per record fetched (each under 4 KiB: 65), plus the query: ½ per started 4 KiB of
    // the 130 keys it returned (a few KiB: a handful of units at most).
    assert!(
        read.read_units > 65.0 && read.read_units <= 70.0,
        "{read:?}"
    );
}

/// The receiver's first reads are eventually consistent: the same practice and record as a
/// consistent read, for half the read units. What DynamoDB was asked is read from the request
/// bodies (recorded at the proxy between the store and the emulator), and the units the meter
/// counts are what DynamoDB's price rules give for those requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_reads_return_the_same_records_for_half_the_units() {
    let ts = TestStack::start_recorded().await.unwrap();
    let proxy = ts.stack.faults.as_ref().expect("a recording proxy");
    let table = ts
        .stack
        .env
        .iter()
        .find(|(k, _)| k == "TABLE_NAME")
        .map(|(_, v)| v.clone())
        .unwrap();
    let meter = Meter::enabled();
    let through_proxy = pil_aws::Clients::local(&proxy.url, pil_local::stack::REGION);
    let store = DynamoStore::new(through_proxy.dynamodb.clone(), table, meter.clone());
    let mut a = Appointment::new(OpaqueRef::parse(&new_ref("ap")).unwrap());
    a.status = Some(Lww::new(AppointmentStatus::Booked, Timestamp::now()));
    let entity = Entity::Appointment(a.clone());
    store
        .put_entity(&ts.practice, &entity, None, None)
        .await
        .unwrap();
    let key = EntityKey::Appointment(a.appointment_ref.clone());
    // The last GetItem the store sent: whether it asked for a consistent read, and the
    // units DynamoDB charges for it (an item under 4 KiB, or none: one unit consistent,
    // half a unit eventually consistent).
    let asked = || {
        let last = proxy
            .reads()
            .into_iter()
            .rev()
            .find(|r| r.operation == "GetItem")
            .expect("a GetItem reached the emulator");
        assert_eq!(last.status, Some(200));
        let body: serde_json::Value = serde_json::from_str(&last.body).unwrap();
        let consistent = body["ConsistentRead"].as_bool().unwrap_or(false);
        (consistent, if consistent { 1.0 } else { 0.5 })
    };

    let units = || {
        let c = meter.snapshot();
        (c.read_units, c.read_requests)
    };
    meter.reset();
    let consistent = store.get_entity(&ts.practice, &key).await.unwrap();
    assert_eq!(asked(), (true, 1.0));
    assert_eq!(units(), (1.0, 1));
    meter.reset();
    let recent = store.get_entity_recent(&ts.practice, &key).await.unwrap();
    assert_eq!(
        asked(),
        (false, 0.5),
        "sent as an eventually consistent read"
    );
    assert_eq!(units(), (0.5, 1));
    assert_eq!(consistent, recent);
    assert_eq!(recent.map(|s| (s.value, s.version)), Some((entity, 1)));

    meter.reset();
    let consistent = store.get_practice(&ts.practice).await.unwrap();
    assert_eq!(asked(), (true, 1.0));
    assert_eq!(units(), (1.0, 1));
    meter.reset();
    let recent = store.get_practice_recent(&ts.practice).await.unwrap();
    assert_eq!(asked(), (false, 0.5));
    assert_eq!(units(), (0.5, 1));
    assert!(recent.is_some());
    assert_eq!(consistent, recent);

    // A miss costs the minimum of its kind, and finds nothing either way.
    meter.reset();
    let missing = EntityKey::Appointment(OpaqueRef::parse(&new_ref("ap")).unwrap());
    assert_eq!(
        store
            .get_entity_recent(&ts.practice, &missing)
            .await
            .unwrap(),
        None
    );
    assert_eq!(asked(), (false, 0.5));
    assert_eq!(units(), (0.5, 1));
}

/// The approval outbox through the index, whose sort key holds only the decision's second:
/// an approval made earlier in the same second as `decided_before` is in the outbox, one
/// made later in it is not (as the in-memory store answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_approvals_decided_earlier_in_the_same_second() {
    use shared::action::ActionStatus;
    use shared::ports::{ActionLog, ActionRepo};
    let ts = TestStack::start().await.unwrap();
    let store = ts.store();
    let second = Timestamp::now().as_second() - 60;
    let at = |ms: i64| Timestamp::from_millisecond(second * 1000 + ms).unwrap();
    let mut action = pil_local::inventory::sample_actions()
        .into_iter()
        .next()
        .unwrap();
    action.practice_id = ts.practice.clone();
    action.status = ActionStatus::Approved;
    action.attempts = 0;
    action.lease_until = None;
    action.decided_at = Some(at(200));
    assert!(store.create_action(&action).await.unwrap());
    let ids = |v: Vec<shared::action::Action>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.outbox(&ts.practice, at(900)).await.unwrap()),
        vec![action.id.clone()],
        "decided at .200, asked before .900 of the same second"
    );
    assert!(
        store
            .outbox(&ts.practice, at(100))
            .await
            .unwrap()
            .is_empty(),
        "decided after .100"
    );
    assert_eq!(
        ids(store.outbox(&ts.practice, at(2000)).await.unwrap()),
        vec![action.id.clone()]
    );
    ts.stop().await;
}
