//! `pil practice disable` as documented: inbound events are still accepted (so opt-outs,
//! rotations and erasures are honoured), and nothing is sent to the PMS.

use jiff::{SignedDuration, Timestamp};
use shared::action::{Action, ActionKind, ActionStatus, Reason};
use shared::ids::{ActionId, OpaqueRef, PracticeId};
use shared::ports::ActionRepo;
use shared::service::admin::{self, NewPractice, PracticeUpdate};
use shared::service::emitter::{self, EmitOutcome};
use shared::service::receiver::{self, Delivery};
use shared::signature::{SignedHeaders, WebhookSecret};
use shared::testing::World;
use shared::treatment::Treatment;

fn run<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn a_disabled_practice_receives_events_and_sends_nothing() {
    let now: Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
    let pid = PracticeId::parse("off-clinic").unwrap();
    let world = World::new(now);
    let out = run(admin::create_practice(
        &world.store,
        world.keys(),
        NewPractice {
            id: pid.clone(),
            time_zone: "America/New_York".into(),
            owner_emails: vec!["owner@off.example".into()],
            trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
        },
    ))
    .unwrap();
    let secret = WebhookSecret::parse(&out.webhook_secret).unwrap();
    let patient = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
    let action = Action {
        id: ActionId::derive(&["off-clinic", "rebook_nudge", patient.as_str()]),
        practice_id: pid.clone(),
        kind: ActionKind::RebookNudge,
        patient_ref: patient,
        treatment: Treatment::Neurotoxin,
        reason: Reason::CycleDue,
        evidence_date: "2026-08-01".parse().unwrap(),
        due_since: "2026-10-30".parse().unwrap(),
        value: 450,
        status: ActionStatus::Approved,
        created_at: now,
        expires_at: now + SignedDuration::from_hours(24 * 14),
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        rev: 0,
        suppression: None,
        converted: None,
        slot: None,
        withdrawal: None,
    };
    assert!(run(world.store.create_action(&action)).unwrap());
    let disable = PracticeUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    run(admin::update_practice(&world.store, &pid, disable, "admin")).unwrap();

    // Inbound: accepted (an opt-out must not be lost while the practice is paused). Another
    // patient's: this one's would withdraw the action below.
    let body = format!(
        r#"{{"type":"patient.opted_out","occurred_at":"{now}","data":{{"patient_ref":"p_Wq8nR3tY6uK2mZ5xB9cV"}}}}"#
    );
    let sig = secret
        .sign("msg_off", now.as_second(), body.as_bytes())
        .unwrap();
    let ts = now.as_second().to_string();
    let accepted = run(receiver::receive(
        &world.receiver(),
        Delivery {
            practice_id: Some("off-clinic"),
            content_type: Some("application/json"),
            headers: SignedHeaders {
                id: Some("msg_off"),
                timestamp: Some(&ts),
                signature: Some(&sig),
            },
            body: body.as_bytes(),
        },
    ))
    .unwrap();
    assert_eq!(accepted.changed, 1);

    // Outbound: the approved action is not sent; it fails with the reason.
    let deps = world.emitter();
    let out = run(emitter::emit(&deps, &pid, &action.id, 0.5)).unwrap();
    assert_eq!(out, EmitOutcome::Dropped("practice_disabled"));
    assert!(world.transport.posts().is_empty());
    let stored = run(world.store.get_action(&pid, &action.id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ActionStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some("practice_disabled"));
}
