//! Real-time slot fill through the real stack: `slot.opened` (and a cancellation that reopens a
//! slot) reaches scheduler-scan through EventBridge and SQS within seconds; the top K due
//! patients get offers (skipping booked, opted-out and recently offered ones); a redelivery
//! adds nothing; booking the slot (or moving an appointment onto it) withdraws the offers still
//! pending and none goes out; a slot reported after its booking is not offered at all.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use shared::action::{Action, ActionKind, ActionStatus, Reason};
use shared::ids::OpaqueRef;
use shared::ports::{EntityRepo, PatientIndex};
use shared::practice::Mode;
use shared::state::{Entity, EntityKey};
use tests::{TestStack, WAIT, completed, eventually, new_ref};

async fn actions(ts: &TestStack, patient: &str) -> Vec<Action> {
    ts.store()
        .actions_of(&ts.practice, &OpaqueRef::parse(patient).unwrap())
        .await
        .unwrap()
}

async fn offers(ts: &TestStack, patients: &[String]) -> Vec<(String, Action)> {
    let mut out = Vec::new();
    for p in patients {
        for a in actions(ts, p).await {
            if a.kind == ActionKind::SlotOffer {
                out.push((p.clone(), a));
            }
        }
    }
    out
}

/// Five patients overdue for neurotoxin (140, 130, 120, 110, 100 days ago), scanned so their
/// rebook gaps are in the slot-fill pool.
async fn due_patients(ts: &TestStack) -> Vec<String> {
    let patients: Vec<String> = (0..5).map(|_| new_ref("p")).collect();
    let events: Vec<_> = patients
        .iter()
        .zip([140, 130, 120, 110, 100])
        .map(|(p, d)| completed(p, "neurotoxin", d))
        .collect();
    assert_eq!(
        ts.send("msg_due", &json!({ "events": events }))
            .await
            .status,
        202
    );
    let r = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert_eq!(r.created.len(), 5, "{r:?}");
    patients
}

/// Waits for three offers of a slot to `patients`, pending the owner's decision.
async fn pending_offers(ts: &TestStack, patients: &[String]) -> Vec<(String, Action)> {
    eventually(WAIT, || async {
        let o = offers(ts, patients).await;
        (o.len() == 3 && o.iter().all(|(_, a)| a.status == ActionStatus::Pending)).then_some(o)
    })
    .await
    .expect("three pending offers")
}

/// A slot opened `hours` ahead at a new provider, and its three pending offers.
async fn offered_slot(
    ts: &TestStack,
    patients: &[String],
    hours: i64,
) -> (String, String, Timestamp, Vec<(String, Action)>) {
    let (slot, provider) = (new_ref("slot"), new_ref("prov"));
    let starts_at = Timestamp::now() + SignedDuration::from_hours(hours);
    assert_eq!(
        ts.send("msg_slot", &slot_opened(&slot, &provider, starts_at))
            .await
            .status,
        202
    );
    let pending = pending_offers(ts, patients).await;
    (slot, provider, starts_at, pending)
}

/// A delivered trigger offers this slot (ref, provider, start).
fn assert_offers(t: &pil_local::pms::Received, slot: &str, provider: &str, starts_at: Timestamp) {
    assert_eq!(t.body["slot"]["slot_ref"], slot);
    assert_eq!(t.body["slot"]["provider_ref"], provider);
    let start: Timestamp = t.body["slot"]["starts_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(start, starts_at);
}

/// The owner's e-mail for three slot offers.
async fn offers_mail(ts: &TestStack) -> pil_local::moto::SentEmail {
    eventually(WAIT, || async {
        ts.emails()
            .await
            .into_iter()
            .find(|m| m.subject.starts_with("3 actions"))
    })
    .await
    .expect("the owner's e-mail for the slot offers")
}

/// An appointment that reopened its slot.
struct Reopened {
    appt: String,
    provider: String,
    patient: String,
}

/// Someone else's neurotoxin appointment at `starts_at`, booked and then cancelled with
/// `reopens_slot`.
async fn reopen(ts: &TestStack, starts_at: Timestamp) -> Reopened {
    let (appt, provider, patient) = (new_ref("appt"), new_ref("prov"), new_ref("p"));
    let book = json!({"events": [{"type": "appointment.booked", "occurred_at": Timestamp::now().to_string(),
        "data": {"appointment_ref": appt, "patient_ref": patient, "treatment": "neurotoxin",
                 "provider_ref": provider, "starts_at": starts_at.to_string(), "duration_min": 30}}]});
    assert_eq!(ts.send("msg_book", &book).await.status, 202);
    let cancel = json!({"events": [{"type": "appointment.cancelled", "occurred_at": Timestamp::now().to_string(),
        "data": {"appointment_ref": appt, "reopens_slot": true}}]});
    assert_eq!(ts.send("msg_cancel", &cancel).await.status, 202);
    Reopened {
        appt,
        provider,
        patient,
    }
}

fn slot_opened(slot: &str, provider: &str, starts_at: Timestamp) -> serde_json::Value {
    json!({"events": [{"type": "slot.opened", "occurred_at": Timestamp::now().to_string(),
        "data": {"slot_ref": slot, "provider_ref": provider, "starts_at": starts_at.to_string(),
                 "duration_min": 30, "treatments": ["neurotoxin", "dermal_filler"]}}]})
}

fn booked(
    patient: &str,
    treatment: &str,
    provider: &str,
    starts_at: Timestamp,
) -> serde_json::Value {
    json!({"events": [{"type": "appointment.booked", "occurred_at": Timestamp::now().to_string(),
        "data": {"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": treatment,
                 "provider_ref": provider, "starts_at": starts_at.to_string(), "duration_min": 30}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_slot_goes_to_the_top_k_due_patients_in_real_time() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    ts.set_mode(ActionKind::SlotOffer, Mode::Auto).await;
    // p[1] opted out since; p[2] booked something else ahead.
    let opt_out = json!({"events": [{"type": "patient.opted_out", "occurred_at": Timestamp::now().to_string(),
        "data": {"patient_ref": p[1]}}]});
    assert_eq!(ts.send("msg_opt", &opt_out).await.status, 202);
    let later = Timestamp::now() + SignedDuration::from_hours(24 * 20);
    let b = booked(&p[2], "facial", &new_ref("prov"), later);
    assert_eq!(ts.send("msg_b2", &b).await.status, 202);

    let (slot, provider) = (new_ref("slot"), new_ref("prov"));
    let starts_at = Timestamp::now() + SignedDuration::from_hours(26);
    let sent = std::time::Instant::now();
    assert_eq!(
        ts.send("msg_slot", &slot_opened(&slot, &provider, starts_at))
            .await
            .status,
        202
    );
    // Offers reach the PMS within seconds, most overdue first: p0, p3, p4 (p1, p2 skipped).
    let triggers = eventually(WAIT, || async {
        let got: Vec<_> = ts
            .stack
            .pms
            .received()
            .into_iter()
            .filter(|r| r.body["type"] == "action.slot_offer" && r.verified && r.status == 200)
            .collect();
        (got.len() >= 3).then_some(got)
    })
    .await
    .expect("three slot offers delivered");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
    let mut got: Vec<String> = triggers
        .iter()
        .map(|r| r.body["patient_ref"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![p[0].clone(), p[3].clone(), p[4].clone()];
    want.sort();
    assert_eq!(got, want);
    for t in &triggers {
        assert_offers(t, &slot, &provider, starts_at);
        assert_eq!(t.body["reason"], "slot_open");
        let expires: Timestamp = t.body["expires_at"].as_str().unwrap().parse().unwrap();
        assert!(expires < starts_at, "offers expire before the slot starts");
    }
    let made = offers(&ts, &p).await;
    assert_eq!(made.len(), 3);
    assert!(made.iter().all(|(_, a)| a.reason == Reason::SlotOpen));

    // The same slot reported again (a PMS retry with a new webhook-id): nothing new.
    let handled = ts.handled("ScanQueue", slot.as_str());
    assert_eq!(
        ts.send("msg_slot_again", &slot_opened(&slot, &provider, starts_at))
            .await
            .status,
        202
    );
    // Slot fill has run for it again, and whatever it handed on has been handled.
    ts.wait_handled("ScanQueue", slot.as_str(), handled + 1)
        .await;
    assert_eq!(offers(&ts, &p).await.len(), 3);
    assert_eq!(
        ts.stack
            .pms
            .received()
            .iter()
            .filter(|r| r.body["type"] == "action.slot_offer" && !r.duplicate)
            .count(),
        3
    );

    // A second slot the same day: everyone due was offered one recently or is skipped.
    let slot2 = new_ref("slot");
    let s2 = Timestamp::now() + SignedDuration::from_hours(30);
    assert_eq!(
        ts.send("msg_slot2", &slot_opened(&slot2, &provider, s2))
            .await
            .status,
        202
    );
    ts.wait_handled("ScanQueue", slot2.as_str(), 1).await;
    assert_eq!(
        offers(&ts, &p).await.len(),
        3,
        "recently offered are skipped"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_the_slot_withdraws_pending_offers_and_none_goes_out() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    // Default policy: the owner approves slot offers (an e-mail with links).
    let (slot, provider, starts_at, pending) = offered_slot(&ts, &p, 26).await;
    let mail = offers_mail(&ts).await;

    // Another patient books the slot at the PMS.
    let b = booked(&new_ref("p"), "neurotoxin", &provider, starts_at);
    assert_eq!(ts.send("msg_book_slot", &b).await.status, 202);
    eventually(WAIT, || async {
        let o = offers(&ts, &p).await;
        o.iter()
            .all(|(_, a)| a.status == ActionStatus::Withdrawn)
            .then_some(())
    })
    .await
    .expect("offers withdrawn");

    // Approving from the e-mail now changes nothing and sends nothing.
    let http = reqwest::Client::new();
    // (The last link is the settings page's.)
    let links = mail.links();
    for link in &links[..links.len() - 1] {
        let r = http.post(link).send().await.unwrap();
        assert!(r.status().as_u16() >= 400, "{}", r.status());
    }
    // Whatever the presses and the slot's withdrawal queued has been handled.
    ts.wait_handled("ScanQueue", slot.as_str(), 2).await;
    assert!(
        ts.stack
            .pms
            .received()
            .iter()
            .all(|r| r.body["type"] != "action.slot_offer"),
        "no offer goes out for a filled slot"
    );
    for (_, a) in &pending {
        let now = actions(&ts, a.patient_ref.as_str()).await;
        assert!(
            now.iter()
                .filter(|x| x.kind == ActionKind::SlotOffer)
                .all(|x| x.status == ActionStatus::Withdrawn)
        );
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_that_reopens_its_slot_is_offered_then_filled() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    ts.set_mode(ActionKind::SlotOffer, Mode::Auto).await;
    // Someone else's neurotoxin appointment tomorrow is cancelled and reopens its slot.
    let starts_at = Timestamp::now() + SignedDuration::from_hours(28);
    let Reopened {
        appt,
        provider,
        patient: other,
    } = reopen(&ts, starts_at).await;
    let triggers = eventually(WAIT, || async {
        let got: Vec<_> = ts
            .stack
            .pms
            .received()
            .into_iter()
            .filter(|r| r.body["type"] == "action.slot_offer")
            .collect();
        (got.len() >= 3).then_some(got)
    })
    .await
    .expect("offers for the reopened slot");
    for t in &triggers {
        assert_offers(t, &appt, &provider, starts_at);
        assert_ne!(t.body["patient_ref"], other.as_str());
    }
    assert_eq!(offers(&ts, &p).await.len(), 3);
    // The stored appointment keeps only the day now: the slot record holds the minute.
    let stored = ts
        .store()
        .get_entity(
            &ts.practice,
            &EntityKey::Appointment(OpaqueRef::parse(&appt).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    match stored.value {
        Entity::Appointment(a) => {
            assert!(a.start_minute().is_none(), "minute kept on the appointment");
            assert!(a.starts_on.is_some(), "the day stays");
        }
        other => panic!("{other:?}"),
    }
    ts.stop().await;
}

async fn slot_record(ts: &TestStack, slot: &str) -> shared::state::Slot {
    let key = EntityKey::Slot(OpaqueRef::parse(slot).unwrap());
    match ts.store().get_entity(&ts.practice, &key).await.unwrap() {
        Some(stored) => match stored.value {
            Entity::Slot(s) => s,
            other => panic!("{other:?}"),
        },
        None => panic!("no slot record"),
    }
}

/// A slot reported open after the booking that takes it (the PMS's events crossed): slot
/// fill finds the booking through the ByStart index and offers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_reported_after_its_booking_is_not_offered() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    ts.set_mode(ActionKind::SlotOffer, Mode::Auto).await;
    let (slot, provider) = (new_ref("slot"), new_ref("prov"));
    let starts_at = Timestamp::now() + SignedDuration::from_hours(30);
    let b = booked(&new_ref("p"), "neurotoxin", &provider, starts_at);
    assert_eq!(ts.send("msg_book_first", &b).await.status, 202);
    // Another provider's slot at the same start is offered as usual.
    let (free, other) = (new_ref("slot"), new_ref("prov"));
    assert_eq!(
        ts.send("msg_free", &slot_opened(&free, &other, starts_at))
            .await
            .status,
        202
    );
    assert_eq!(
        ts.send("msg_slot_after", &slot_opened(&slot, &provider, starts_at))
            .await
            .status,
        202
    );
    ts.wait_handled("ScanQueue", slot.as_str(), 1).await;
    ts.wait_handled("ScanQueue", free.as_str(), 1).await;
    assert!(slot_record(&ts, &slot).await.filled, "the slot is taken");
    let o = offers(&ts, &p).await;
    assert!(
        o.iter()
            .all(|(_, a)| a.slot.as_ref().is_some_and(|s| s.slot_ref.as_str() == free)),
        "an offer for the taken slot: {o:?}"
    );
    assert_eq!(o.len(), 3, "the free slot is offered");
    ts.stop().await;
}

/// An appointment moved onto a slot that has offers out fills it (the reschedule names no
/// provider: the stored appointment does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_onto_an_offered_slot_withdraws_its_offers() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    let (slot, provider, starts_at, _) = offered_slot(&ts, &p, 32).await;
    // Booked the day after at the same provider, then moved onto the slot.
    let b = booked(
        &new_ref("p"),
        "neurotoxin",
        &provider,
        starts_at + SignedDuration::from_hours(24),
    );
    let appt = b["events"][0]["data"]["appointment_ref"].clone();
    assert_eq!(ts.send("msg_book_elsewhere", &b).await.status, 202);
    assert!(!slot_record(&ts, &slot).await.filled);
    let moved = json!({"events": [{"type": "appointment.rescheduled",
        "occurred_at": Timestamp::now().to_string(),
        "data": {"appointment_ref": appt, "starts_at": starts_at.to_string(), "duration_min": 30}}]});
    assert_eq!(ts.send("msg_moved_onto", &moved).await.status, 202);
    eventually(WAIT, || async {
        let o = offers(&ts, &p).await;
        o.iter()
            .all(|(_, a)| a.status == ActionStatus::Withdrawn)
            .then_some(())
    })
    .await
    .expect("offers withdrawn");
    assert!(slot_record(&ts, &slot).await.filled);
    ts.stop().await;
}

/// Erasing the patient whose cancelled appointment reopened a slot: the slot record (keyed by
/// the appointment's ref) goes, its offers still waiting for the owner are withdrawn, and no
/// offer keeps the appointment's ref; nothing goes out for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_the_patient_of_a_reopened_slot_erases_the_slot_from_its_offers() {
    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    // Default policy: slot offers wait for the owner.
    let Reopened {
        appt,
        patient: other,
        ..
    } = reopen(&ts, Timestamp::now() + SignedDuration::from_hours(29)).await;
    pending_offers(&ts, &p).await;
    assert!(tests::table_dump(&ts.stack).await.unwrap().contains(&appt));

    let erase = json!({"events": [{"type": "patient.erased", "occurred_at": Timestamp::now().to_string(),
        "data": {"patient_ref": other}}]});
    assert_eq!(ts.send("msg_erase", &erase).await.status, 202);
    let o = offers(&ts, &p).await;
    assert_eq!(o.len(), 3);
    for (_, a) in &o {
        assert_eq!(a.status, ActionStatus::Withdrawn, "{a:?}");
        assert_eq!(a.withdrawal, Some(shared::action::Withdrawal::SlotErased));
        assert!(a.slot.is_none(), "{a:?}");
    }
    let dump = tests::table_dump(&ts.stack).await.unwrap();
    assert!(
        !dump.contains(&appt),
        "the erased appointment's ref is kept"
    );
    assert!(!dump.contains(&other), "the erased ref is kept");
    ts.stop().await;
}

/// A booking slot fill and the receiver could not match to the slot (stored while the slot's
/// record was being written, so no `slot.filled` followed): the emitter finds it through the
/// ByStart index before an approved offer goes out, and withdraws the offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_offer_of_a_slot_a_booking_holds_is_not_sent() {
    use shared::state::{Appointment, AppointmentStatus, Lww, PatientTreatmentKey, SlotTime};
    use shared::treatment::Treatment;

    let ts = TestStack::start().await.unwrap();
    let p = due_patients(&ts).await;
    // Default policy: the owner approves slot offers (an e-mail with links).
    let (_, provider, starts_at, _) = offered_slot(&ts, &p, 27).await;
    let mail = offers_mail(&ts).await;

    // The booking, stored as the receiver stores one, with nothing published.
    let at = Timestamp::now();
    let mut a = Appointment::new(OpaqueRef::parse(&new_ref("appt")).unwrap());
    a.patient = Some(Lww::new(
        PatientTreatmentKey {
            patient_ref: OpaqueRef::parse(&new_ref("p")).unwrap(),
            treatment: Treatment::Neurotoxin,
        },
        at,
    ));
    a.status = Some(Lww::new(AppointmentStatus::Booked, at));
    a.slot_start = Some(Lww::new(
        Some(SlotTime {
            starts_at,
            duration_min: 30,
        }),
        at,
    ));
    a.provider_ref = Some(Lww::new(OpaqueRef::parse(&provider).unwrap(), at));
    ts.store()
        .put_entity(&ts.practice, &Entity::Appointment(a), None, None)
        .await
        .unwrap();

    // The owner approves the first link's offers.
    let approve = mail.links()[0].clone();
    let r = reqwest::Client::new().post(&approve).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eventually(WAIT, || async {
        let o = offers(&ts, &p).await;
        o.iter()
            .any(|(_, a)| a.status == ActionStatus::Withdrawn)
            .then_some(())
    })
    .await
    .expect("the approved offer withdrawn by the emitter");
    assert!(
        ts.stack
            .pms
            .received()
            .iter()
            .all(|r| r.body["type"] != "action.slot_offer"),
        "no offer goes out for a slot a booking holds"
    );
    ts.stop().await;
}
