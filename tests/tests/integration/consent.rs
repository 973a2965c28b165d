//! Consent at every step that can lead to a message, through the real handlers and HTTP:
//! an opt-out withdraws what is open, the owner's approval and approval-check read consent
//! again, the emitter reads it before its lease, and an opt-in dated ahead cannot outrank a
//! real opt-out (time cannot be borrowed).

use serde_json::json;
use shared::action::{Action, ActionStatus, Withdrawal};
use shared::ids::{ActionId, OpaqueRef};
use shared::ports::{ActionRepo, EntityRepo};
use shared::state::{Consent, Entity, Lww};
use tests::{TestStack, WAIT, completed, eventually, new_ref};

/// The first e-mail's approve link and the action it approves, once the action is pending.
async fn pending_action(ts: &TestStack) -> (String, ActionId) {
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the owner's e-mail");
    let approve = email.links()[0].clone();
    let raw = approve.rsplit('/').next().unwrap();
    let claims: shared::token::Claims = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            raw.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let id = claims.action_ids[0].clone();
    eventually(WAIT, || async {
        let a = action(ts, &id).await;
        (a.status == ActionStatus::Pending).then_some(())
    })
    .await
    .expect("the action is pending");
    (approve, id)
}

async fn action(ts: &TestStack, id: &ActionId) -> Action {
    ts.store()
        .get_action(&ts.practice, id)
        .await
        .unwrap()
        .expect("action stored")
}

fn opted_out_event(patient: &str) -> serde_json::Value {
    json!({"type": "patient.opted_out", "occurred_at": jiff::Timestamp::now().to_string(),
        "data": {"patient_ref": patient}})
}

/// Writes an opt-out straight into the consent record, without the receiver (and so without
/// its withdrawals): what a later step sees when the opt-out lands between two of them.
async fn opt_out_behind_the_receivers_back(ts: &TestStack, patient: &str) {
    let consent = Entity::Consent(Consent {
        patient_ref: OpaqueRef::parse(patient).unwrap(),
        opted_out: Some(Lww::new(true, jiff::Timestamp::now())),
    });
    ts.store()
        .put_entity(&ts.practice, &consent, None, None)
        .await
        .unwrap();
}

fn post_count(ts: &TestStack) -> usize {
    ts.stack.pms.received().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_withdraws_the_pending_action_and_approving_it_sends_nothing() {
    let ts = TestStack::start().await.unwrap();
    let p = new_ref("p");
    assert_eq!(
        ts.send("msg_c1", &completed(&p, "neurotoxin", 100))
            .await
            .status,
        202
    );
    ts.scan_via_queue(ts.today()).await;
    let (approve, id) = pending_action(&ts).await;

    let r = ts.send("msg_c2", &opted_out_event(&p)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let a = action(&ts, &id).await;
    assert_eq!(a.status, ActionStatus::Withdrawn);
    assert_eq!(a.withdrawal, Some(Withdrawal::OptedOut));

    // A redelivery of the opt-out changes nothing more.
    let r = ts.send("msg_c2", &opted_out_event(&p)).await;
    assert_eq!(r.status, 202);
    assert_eq!(action(&ts, &id).await.rev, a.rev);

    // The owner presses Approve afterwards: the page says the patient opted out.
    let r = reqwest::Client::new().post(&approve).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "nothing open to decide any more");
    let page = r.text().await.unwrap();
    assert!(page.contains("Withdrawn · the patient opted out"), "{page}");
    assert!(
        page.contains("The patient opted out since this was proposed. Nothing will be sent."),
        "{page}"
    );
    assert_eq!(action(&ts, &id).await.status, ActionStatus::Withdrawn);
    assert_eq!(post_count(&ts), 0, "no trigger reached the PMS");

    // The report counts it as withdrawn for opt-out.
    let today = ts.today();
    let report = shared::service::report::report(
        ts.store(),
        ts.store(),
        &ts.practice,
        today,
        today,
        jiff::Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.total.withdrawn, 1);
    assert_eq!(report.total.withdrawn_by_reason.get("opted_out"), Some(&1));
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_reads_consent_again() {
    let ts = TestStack::start().await.unwrap();
    let p = new_ref("p");
    ts.send("msg_c1", &completed(&p, "neurotoxin", 100)).await;
    ts.scan_via_queue(ts.today()).await;
    let (approve, id) = pending_action(&ts).await;
    // The opt-out lands after the receiver's withdrawals looked (a race): the approval
    // itself must notice.
    opt_out_behind_the_receivers_back(&ts, &p).await;
    let r = reqwest::Client::new().post(&approve).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("The patient opted out since this was proposed. Nothing will be sent."),
        "{page}"
    );
    let a = action(&ts, &id).await;
    assert_eq!(a.status, ActionStatus::Withdrawn);
    assert_eq!(a.withdrawal, Some(Withdrawal::OptedOut));
    assert_eq!(post_count(&ts), 0);
    ts.stop().await;
}

/// An action as the scan stores it, for driving approval-check and the emitter directly.
fn stored_action(ts: &TestStack, patient: &str, status: ActionStatus) -> Action {
    let now = jiff::Timestamp::now();
    Action {
        id: ActionId::derive(&[ts.practice.as_str(), patient, "consent-test"]),
        practice_id: ts.practice.clone(),
        kind: shared::action::ActionKind::RebookNudge,
        patient_ref: OpaqueRef::parse(patient).unwrap(),
        treatment: shared::treatment::Treatment::Neurotoxin,
        reason: shared::action::Reason::CycleDue,
        evidence_date: ts.today().saturating_sub(jiff::ToSpan::days(100)),
        due_since: ts.today().saturating_sub(jiff::ToSpan::days(10)),
        value: 450,
        status,
        created_at: now,
        expires_at: now + jiff::SignedDuration::from_hours(24 * 7),
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        suppression: None,
        converted: None,
        rev: 0,
        slot: None,
        withdrawal: None,
    }
}

fn sqs_event(body: String) -> aws_lambda_events::sqs::SqsEvent {
    let mut e = aws_lambda_events::sqs::SqsEvent::default();
    let mut m = aws_lambda_events::sqs::SqsMessage::default();
    m.message_id = Some("m-1".into());
    m.body = Some(body);
    e.records.push(m);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_check_and_the_emitter_read_consent_again() {
    let ts = TestStack::start().await.unwrap();
    ts.set_mode(
        shared::action::ActionKind::RebookNudge,
        shared::practice::Mode::Auto,
    )
    .await;

    // approval-check: a candidate whose patient opted out after the scan is neither
    // auto-approved nor mailed.
    let p1 = new_ref("p");
    let proposed = stored_action(&ts, &p1, ActionStatus::Proposed);
    assert!(ts.store().create_action(&proposed).await.unwrap());
    opt_out_behind_the_receivers_back(&ts, &p1).await;
    let batch = json!({"practice_id": ts.practice.as_str(), "scan_date": ts.today().to_string(),
        "action_ids": [proposed.id.as_str()]});
    let approval = ts
        .stack
        .handlers
        .get("ApprovalCheckFunction")
        .expect("ApprovalCheckFunction in the template");
    let r = approval.sqs(sqs_event(batch.to_string())).await.unwrap();
    assert!(r.batch_item_failures.is_empty());
    let a = action(&ts, &proposed.id).await;
    assert_eq!(a.status, ActionStatus::Withdrawn);
    assert_eq!(a.withdrawal, Some(Withdrawal::OptedOut));
    assert!(ts.emails().await.is_empty(), "nothing mailed");

    // The emitter: an approved action whose patient opted out since is withdrawn before
    // the lease, and nothing is POSTed.
    let p2 = new_ref("p");
    let mut approved = stored_action(&ts, &p2, ActionStatus::Approved);
    approved.decided_at = Some(jiff::Timestamp::now());
    assert!(ts.store().create_action(&approved).await.unwrap());
    opt_out_behind_the_receivers_back(&ts, &p2).await;
    let msg = json!({"version": "0", "id": new_ref("ev"), "detail-type": "action.approved",
        "source": "pil.approval", "detail": {"type": "action.approved",
        "practice_id": ts.practice.as_str(), "action_id": approved.id.as_str()}});
    let emitter = ts
        .stack
        .handlers
        .get("TriggerEmitterFunction")
        .expect("TriggerEmitterFunction in the template");
    let r = emitter.sqs(sqs_event(msg.to_string())).await.unwrap();
    assert!(r.batch_item_failures.is_empty());
    let a = action(&ts, &approved.id).await;
    assert_eq!(a.status, ActionStatus::Withdrawn);
    assert_eq!(a.withdrawal, Some(Withdrawal::OptedOut));
    assert_eq!(a.attempts, 0, "withdrawn before the lease");
    assert_eq!(post_count(&ts), 0, "no trigger reached the PMS");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_in_dated_ahead_cannot_outrank_a_real_opt_out() {
    let ts = TestStack::start().await.unwrap();
    ts.set_mode(
        shared::action::ActionKind::RebookNudge,
        shared::practice::Mode::Auto,
    )
    .await;
    let p = new_ref("p");
    assert_eq!(
        ts.send("msg_a1", &completed(&p, "neurotoxin", 100))
            .await
            .status,
        202
    );
    // A PMS clock 23 hours fast stamps an opt-in; a minute later the patient opts out.
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(23);
    let opt_in = json!({"type": "patient.opted_in", "occurred_at": ahead.to_string(),
        "data": {"patient_ref": p}});
    assert_eq!(
        ts.send("msg_a2", &opt_in).await.status,
        202,
        "accepted, not refused"
    );
    assert_eq!(ts.send("msg_a3", &opted_out_event(&p)).await.status, 202);
    // And the PMS retries the dated-ahead opt-in: it ranks where it first did.
    assert_eq!(ts.send("msg_a2", &opt_in).await.status, 202);
    let consent = ts
        .store()
        .get_entity(
            &ts.practice,
            &shared::state::EntityKey::Consent(OpaqueRef::parse(&p).unwrap()),
        )
        .await
        .unwrap()
        .map(|s| s.value);
    assert!(
        matches!(consent, Some(Entity::Consent(c)) if c.is_opted_out()),
        "the real opt-out wins"
    );
    // Auto mode: the night proposes nothing for the patient, and nothing reaches the PMS.
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(post_count(&ts), 0);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_in_the_same_delivery_as_a_rotation_withdraws_what_moved() {
    let ts = TestStack::start().await.unwrap();
    let (a, b) = (new_ref("p"), new_ref("p"));
    ts.send("msg_r1", &completed(&a, "neurotoxin", 100)).await;
    ts.scan_via_queue(ts.today()).await;
    let (_, id) = pending_action(&ts).await;
    // The PMS rotates A to B and, in the same delivery, reports the opt-out under A.
    let batch = json!({"events": [
        {"type": "patient.ref_rotated", "occurred_at": jiff::Timestamp::now().to_string(),
            "data": {"old_ref": a, "new_ref": b}},
        opted_out_event(&a),
    ]});
    let r = ts.send("msg_r2", &batch).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let x = action(&ts, &id).await;
    assert_eq!(x.patient_ref.as_str(), b, "the action moved to B");
    assert_eq!(x.status, ActionStatus::Withdrawn);
    assert_eq!(x.withdrawal, Some(Withdrawal::OptedOut));
    ts.stop().await;
}
