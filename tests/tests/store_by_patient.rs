//! ByPatient projects keys only: the store reads a patient's records from the table by the
//! keys the index lists (BatchGetItem, 100 keys a request), whole, in key order, as they are
//! now; and a change that keeps the keys writes no index entry.

use jiff::{SignedDuration, Timestamp};
use pil_aws::{DynamoStore, Meter};
use pil_shared::ids::OpaqueRef;
use pil_shared::ports::{EntityRepo, PatientIndex};
use pil_shared::state::{
    Appointment, AppointmentStatus, Entity, EntityKey, Lww, PatientTreatmentKey,
};
use pil_shared::treatment::Treatment;
use pil_tests::{TestStack, new_ref};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_appointments_are_fetched_whole_through_the_keys_only_index() {
    let ts = TestStack::start().await.unwrap();
    let table = ts
        .stack
        .env
        .iter()
        .find(|(k, _)| k == "TABLE_NAME")
        .map(|(_, v)| v.clone())
        .unwrap();
    let meter = Meter::enabled();
    let store = DynamoStore::new(ts.stack.clients.dynamodb.clone(), table, meter.clone());
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
