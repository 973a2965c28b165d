//! Secret rotation through the services, on the in-memory ports: the receiver accepts the
//! replaced webhook secret until its overlap ends and refuses it after; the emitter signs
//! with both trigger secrets during the overlap and with the new one after; the rotation is
//! refused during a running overlap unless forced, audited without the secret, and neither a
//! concurrent change nor a lost reply makes it rotate twice.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use shared::action::{Action, ActionKind, ActionStatus, Reason};
use shared::audit::AuditRecord;
use shared::ids::{ActionId, OpaqueRef, PracticeId};
use shared::ports::{ActionRepo, AuditLog, PracticeRepo, StoreError};
use shared::practice::{Practice, SecretKind};
use shared::service::admin::{self, NewPractice, RotateError};
use shared::service::emitter::{self, EmitOutcome};
use shared::service::receiver::{self, Delivery, ReceiveError};
use shared::signature::{self, SignatureError, SignedHeaders, WebhookSecret};
use shared::testing::{MemStore, World};
use shared::treatment::Treatment;

fn pid() -> PracticeId {
    PracticeId::parse("rot-clinic").unwrap()
}

/// 12:00 in New York: outside the default quiet hours.
fn noon() -> Timestamp {
    "2026-11-23T17:00:00Z".parse().unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// A practice onboarded in a fresh world; its webhook and trigger secrets in clear.
fn onboarded() -> (World, WebhookSecret, WebhookSecret) {
    let world = World::new(noon());
    let out = run(admin::create_practice(
        &world.store,
        world.keys(),
        NewPractice {
            id: pid(),
            time_zone: "America/New_York".into(),
            owner_emails: vec!["owner@rot.example".into()],
            trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
        },
    ))
    .unwrap();
    (
        world,
        WebhookSecret::parse(&out.webhook_secret).unwrap(),
        WebhookSecret::parse(&out.trigger_secret).unwrap(),
    )
}

fn rotate(
    world: &World,
    which: SecretKind,
    hours: u32,
    force: bool,
) -> Result<admin::SecretRotation, RotateError> {
    run(admin::rotate_secret(
        &world.store,
        world.keys(),
        &pid(),
        which,
        hours,
        force,
        world.clock_now(),
    ))
}

trait Now {
    fn clock_now(&self) -> Timestamp;
    fn advance(&self, d: SignedDuration);
}

impl Now for World {
    fn clock_now(&self) -> Timestamp {
        shared::ports::Clock::now(&self.clock)
    }
    fn advance(&self, d: SignedDuration) {
        self.clock.set(self.clock_now() + d);
    }
}

/// Posts a consent event signed with `secret` at the world's time.
fn send(world: &World, secret: &WebhookSecret, id: &str) -> Result<(), ReceiveError> {
    let body = format!(
        r#"{{"type":"patient.opted_in","occurred_at":"{}","data":{{"patient_ref":"p_7Hq2kX9mZ4rT1vB8yW3n"}}}}"#,
        world.clock_now()
    );
    let ts = world.clock_now().as_second();
    let sig = secret.sign(id, ts, body.as_bytes()).unwrap();
    let ts = ts.to_string();
    let d = Delivery {
        practice_id: Some("rot-clinic"),
        content_type: Some("application/json"),
        headers: SignedHeaders {
            id: Some(id),
            timestamp: Some(&ts),
            signature: Some(&sig),
        },
        body: body.as_bytes(),
    };
    run(receiver::receive(&world.receiver(), d)).map(|_| ())
}

#[test]
fn the_old_webhook_secret_is_accepted_during_the_overlap_and_refused_after() {
    let (world, old, _) = onboarded();
    let out = rotate(&world, SecretKind::Webhook, 72, false).unwrap();
    assert_eq!(out.overlap_hours, 72);
    assert_eq!(out.old_valid_until, noon() + SignedDuration::from_hours(72));
    let new = out.secret.clone().unwrap();
    assert_ne!(new.expose(), old.expose());

    // During the overlap: both verify.
    assert_eq!(send(&world, &old, "msg_1"), Ok(()));
    assert_eq!(send(&world, &new, "msg_2"), Ok(()));
    world.advance(SignedDuration::from_hours(72) - SignedDuration::from_secs(1));
    assert_eq!(send(&world, &old, "msg_3"), Ok(()));

    // From the end of the overlap on: the old one is refused (401), the new one works.
    world.advance(SignedDuration::from_secs(1));
    let err = send(&world, &old, "msg_4").unwrap_err();
    assert_eq!(err, ReceiveError::Signature(SignatureError::NoMatch));
    assert_eq!(send(&world, &new, "msg_5"), Ok(()));

    // The next rotation (no overlap running any more) drops it; still two at most.
    let third = rotate(&world, SecretKind::Webhook, 72, false)
        .unwrap()
        .secret
        .unwrap();
    let p = run(world.store.get_practice(&pid())).unwrap().unwrap();
    assert_eq!(p.secrets.webhook.len(), 2);
    assert_eq!(send(&world, &third, "msg_6"), Ok(()));
    assert_eq!(send(&world, &new, "msg_7"), Ok(()));
    assert!(send(&world, &old, "msg_8").is_err());
}

#[test]
fn a_zero_overlap_refuses_the_old_webhook_secret_at_once() {
    let (world, old, _) = onboarded();
    let out = rotate(&world, SecretKind::Webhook, 0, false).unwrap();
    assert_eq!(out.old_valid_until, noon());
    assert!(send(&world, &old, "msg_1").is_err());
    assert_eq!(send(&world, out.secret.as_ref().unwrap(), "msg_2"), Ok(()));
    let p = run(world.store.get_practice(&pid())).unwrap().unwrap();
    assert_eq!(
        p.secrets.webhook.len(),
        1,
        "nothing kept that cannot verify"
    );
}

/// An approved rebook nudge for a fresh patient, waiting for the emitter.
fn approved(world: &World, n: u32) -> ActionId {
    let patient = OpaqueRef::parse(&format!("p_7Hq2kX9mZ4rT1vB8yW{n:02}")).unwrap();
    let now = world.clock_now();
    let a = Action {
        id: ActionId::derive(&["rot-clinic", "rebook_nudge", patient.as_str()]),
        practice_id: pid(),
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
    assert!(run(world.store.create_action(&a)).unwrap());
    a.id
}

/// Emits one approved action; returns the `webhook-signature` header the PMS got, with the
/// id, timestamp and body to verify it.
fn emit(world: &World, id: &ActionId) -> (String, String, String, Vec<u8>) {
    let deps = world.emitter();
    let out = run(emitter::emit(&deps, &pid(), id, 0.5)).unwrap();
    assert!(matches!(out, EmitOutcome::Delivered { .. }), "{out:?}");
    let post = world.transport.posts().pop().unwrap();
    let h = |k: &str| {
        post.headers
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    (
        h(signature::HEADER_SIGNATURE),
        h(signature::HEADER_ID),
        h(signature::HEADER_TIMESTAMP),
        post.body,
    )
}

fn verifies(
    (sig, id, ts, body): &(String, String, String, Vec<u8>),
    secret: &WebhookSecret,
    now: Timestamp,
) -> bool {
    let h = SignedHeaders {
        id: Some(id),
        timestamp: Some(ts),
        signature: Some(sig),
    };
    signature::verify(h, body, std::slice::from_ref(secret), now.as_second()).is_ok()
}

#[test]
fn triggers_carry_both_signatures_during_the_overlap_and_only_the_new_one_after() {
    let (world, _, old) = onboarded();
    // Before any rotation: one signature.
    let before = emit(&world, &approved(&world, 1));
    assert_eq!(before.0.split(' ').count(), 1);
    assert!(verifies(&before, &old, world.clock_now()));

    let out = rotate(&world, SecretKind::Trigger, 24, false).unwrap();
    let new = out.secret.clone().unwrap();
    assert_eq!(out.old_valid_until, noon() + SignedDuration::from_hours(24));

    // During the overlap: two signatures; a PMS holding either secret verifies the trigger.
    let during = emit(&world, &approved(&world, 2));
    assert_eq!(during.0.split(' ').count(), 2, "{}", during.0);
    assert!(verifies(&during, &old, world.clock_now()));
    assert!(verifies(&during, &new, world.clock_now()));

    // After it: the new secret only.
    world.advance(SignedDuration::from_hours(24));
    let after = emit(&world, &approved(&world, 3));
    assert_eq!(after.0.split(' ').count(), 1);
    assert!(verifies(&after, &new, world.clock_now()));
    assert!(!verifies(&after, &old, world.clock_now()));

    // The webhook secrets were not touched.
    let p = run(world.store.get_practice(&pid())).unwrap().unwrap();
    assert_eq!(p.secrets.webhook.len(), 1);
}

#[test]
fn a_second_rotation_during_the_overlap_needs_force_and_everything_is_audited_without_secrets() {
    let (world, old, _) = onboarded();
    let first = rotate(&world, SecretKind::Webhook, 72, false).unwrap();
    world.advance(SignedDuration::from_hours(1));
    let err = rotate(&world, SecretKind::Webhook, 72, false).unwrap_err();
    assert!(
        matches!(err, RotateError::OverlapRunning { which: "webhook", until } if until == first.old_valid_until)
    );
    assert!(err.to_string().contains("--force"), "{err}");
    // The refusal changed nothing: the old secret still works.
    assert_eq!(send(&world, &old, "msg_1"), Ok(()));
    // The trigger secret is a separate matter.
    rotate(&world, SecretKind::Trigger, 72, false).unwrap();
    // Forced: the oldest is dropped at once and the output says until when it was valid.
    let forced = rotate(&world, SecretKind::Webhook, 48, true).unwrap();
    assert_eq!(
        forced.older_secret_was_valid_until,
        Some(first.old_valid_until)
    );
    assert!(send(&world, &old, "msg_2").is_err());
    assert_eq!(
        send(&world, first.secret.as_ref().unwrap(), "msg_3"),
        Ok(())
    );
    assert_eq!(
        send(&world, forced.secret.as_ref().unwrap(), "msg_4"),
        Ok(())
    );

    // Bad input names the setting; an unknown practice is not found.
    let err = rotate(&world, SecretKind::Webhook, 721, true).unwrap_err();
    assert!(err.to_string().contains("overlap_hours"), "{err}");
    let err = run(admin::rotate_secret(
        &world.store,
        world.keys(),
        &PracticeId::parse("nobody-here").unwrap(),
        SecretKind::Webhook,
        72,
        false,
        noon(),
    ))
    .unwrap_err();
    assert_eq!(
        err,
        RotateError::Admin(admin::AdminError::NotFound(
            PracticeId::parse("nobody-here").unwrap()
        ))
    );

    let (records, _) = run(world.store.audit_trail(&pid())).unwrap();
    let rotations: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == "secret_rotated")
        .collect();
    assert_eq!(rotations.len(), 3, "refusals are not rotations");
    let details: Vec<serde_json::Value> = rotations
        .iter()
        .map(|r| serde_json::from_str(&r.details).unwrap())
        .collect();
    assert_eq!(details[0]["which"], "webhook");
    assert_eq!(details[0]["overlap_hours"], 72);
    assert_eq!(details[1]["which"], "trigger");
    assert_eq!(details[2]["overlap_hours"], 48);
    assert!(details[2]["older_secret_was_valid_until"].is_string());
    let all = serde_json::to_string(&records).unwrap();
    for s in [&first.secret, &forced.secret].map(|s| s.as_ref().unwrap()) {
        let bare = s.expose().trim_start_matches("whsec_");
        assert!(!all.contains(bare), "no secret in the audit trail");
    }
    assert!(!format!("{forced:?}").contains(forced.secret.as_ref().unwrap().expose()));
}

/// A store whose practice writes can be made to lose their reply (the write lands, the
/// caller sees a transient error) or to race a concurrent policy change.
struct Flaky {
    inner: MemStore,
    lose_reply: std::sync::atomic::AtomicBool,
    race: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl PracticeRepo for Flaky {
    async fn get_practice(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        self.inner.get_practice(id).await
    }
    async fn put_practice(&self, p: &Practice, expected: Option<u64>) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.race.swap(false, SeqCst) {
            let change = admin::KindChange {
                cooldown_days: Some(30),
                ..Default::default()
            };
            admin::set_policy(&self.inner, &p.id, None, change)
                .await
                .unwrap();
        }
        self.inner.put_practice(p, expected).await?;
        if self.lose_reply.swap(false, SeqCst) {
            return Err(StoreError::Transient("reply lost".into()));
        }
        Ok(())
    }
    async fn list_practices(&self) -> Result<Vec<PracticeId>, StoreError> {
        self.inner.list_practices().await
    }
}

#[async_trait]
impl AuditLog for Flaky {
    async fn append(
        &self,
        practice: &PracticeId,
        event: &shared::audit::AuditEvent,
        at: Timestamp,
    ) -> Result<AuditRecord, StoreError> {
        self.inner.append(practice, event, at).await
    }
    async fn audit_trail(
        &self,
        practice: &PracticeId,
    ) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        self.inner.audit_trail(practice).await
    }
}

#[test]
fn a_lost_reply_is_not_rotated_twice_and_a_concurrent_change_is_kept() {
    let (world, old, _) = onboarded();
    let p = run(world.store.get_practice(&pid())).unwrap().unwrap();
    let flaky = Flaky {
        inner: MemStore::new(),
        lose_reply: true.into(),
        race: false.into(),
    };
    run(flaky.inner.put_practice(&p, None)).unwrap();
    let out = run(admin::rotate_secret(
        &flaky,
        world.keys(),
        &pid(),
        SecretKind::Webhook,
        72,
        false,
        noon(),
    ))
    .unwrap();
    let stored = run(flaky.inner.get_practice(&pid())).unwrap().unwrap();
    assert_eq!(stored.version, p.version + 1, "written once");
    assert_eq!(stored.secrets.webhook.len(), 2);
    assert_eq!(
        stored.secrets.webhook[1], p.secrets.webhook[0],
        "the old one kept"
    );
    let opened = run(shared::secrets::open_all(
        world.keys(),
        &pid(),
        &stored.secrets,
    ))
    .unwrap();
    assert_eq!(
        opened.webhook[0].expose(),
        out.secret.as_ref().unwrap().expose()
    );
    assert_eq!(opened.webhook[1].expose(), old.expose());

    // A policy change lands between the read and the write: the write conflicts, is retried
    // on the new version, and both changes stand.
    flaky.race.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = run(admin::rotate_secret(
        &flaky,
        world.keys(),
        &pid(),
        SecretKind::Trigger,
        72,
        false,
        noon(),
    ))
    .unwrap();
    let stored = run(flaky.inner.get_practice(&pid())).unwrap().unwrap();
    assert_eq!(stored.policy.cooldown_days, 30);
    let opened = run(shared::secrets::open_all(
        world.keys(),
        &pid(),
        &stored.secrets,
    ))
    .unwrap();
    assert_eq!(
        opened.trigger.expose(),
        out.secret.as_ref().unwrap().expose()
    );
    assert!(opened.trigger_previous.is_some());
    let (records, _) = run(flaky.inner.audit_trail(&pid())).unwrap();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        ["secret_rotated", "policy_changed", "secret_rotated"]
    );
}
