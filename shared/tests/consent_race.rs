//! The emitter's last consent check: an opt-out that lands after the lease was taken (its
//! withdrawal lost the race with the lease) still stops the POST. The real-stack tests
//! (tests/tests/integration/consent.rs) cover the other checks; this moment cannot be timed through
//! HTTP, so a store wrapper flips consent exactly between the two reads.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use shared::action::{Action, ActionStatus, Withdrawal};
use shared::ids::{OpaqueRef, PracticeId};
use shared::ports::{ActionRepo, EntityRepo, StoreError};
use shared::service::admin::{self, NewPractice};
use shared::service::emitter::{self, EmitOutcome, EmitterDeps, RetryPolicy};
use shared::state::{Consent, Entity, EntityKey, Lww, Stored};
use shared::testing::World;

fn run<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// The world's store, except that the consent record reads as opted out from the
/// `flip_at`-th consent read on.
struct FlipsConsent<'a> {
    inner: &'a dyn EntityRepo,
    reads: AtomicUsize,
    flip_at: usize,
    at: Timestamp,
}

#[async_trait]
impl EntityRepo for FlipsConsent<'_> {
    async fn get_entity(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        if let EntityKey::Consent(p) = key {
            let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.flip_at {
                return Ok(Some(Stored {
                    value: Entity::Consent(Consent {
                        patient_ref: p.clone(),
                        opted_out: Some(Lww::new(true, self.at)),
                    }),
                    version: 1,
                }));
            }
        }
        self.inner.get_entity(practice, key).await
    }

    async fn put_entity(
        &self,
        practice: &PracticeId,
        entity: &Entity,
        expected: Option<u64>,
        due_on: Option<Date>,
    ) -> Result<(), StoreError> {
        self.inner
            .put_entity(practice, entity, expected, due_on)
            .await
    }
}

fn setup(now: Timestamp) -> (World, PracticeId, Action) {
    let pid = PracticeId::parse("race-clinic").unwrap();
    let world = World::new(now);
    run(admin::create_practice(
        &world.store,
        world.keys(),
        NewPractice {
            id: pid.clone(),
            time_zone: "UTC".into(),
            owner_emails: vec!["owner@race.example".into()],
            trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
        },
    ))
    .unwrap();
    let patient = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
    let action = Action {
        status: ActionStatus::Approved,
        created_at: now,
        expires_at: now + SignedDuration::from_hours(24 * 14),
        decided_at: Some(now),
        ..shared::testing::sample_action(
            "race-clinic",
            &patient,
            &["race-clinic", "rebook_nudge", patient.as_str()],
        )
    };
    assert!(run(world.store.create_action(&action)).unwrap());
    (world, pid, action)
}

fn deps<'a>(world: &'a World, entities: &'a dyn EntityRepo) -> EmitterDeps<'a> {
    EmitterDeps {
        practices: &world.store,
        entities,
        slots: &world.store,
        actions: &world.store,
        transport: &world.transport,
        audit: &world.store,
        secrets: &world.secrets,
        clock: &world.clock,
        policy: RetryPolicy::default(),
        notices: &world.bus,
    }
}

#[test]
fn an_opt_out_between_the_lease_and_the_post_stops_the_post() {
    // Midday UTC: outside the default quiet hours.
    let now: Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
    let (world, pid, action) = setup(now);
    // The first consent read (before the lease) says in; the second (before the POST) out.
    let flips = FlipsConsent {
        inner: &world.store,
        reads: AtomicUsize::new(0),
        flip_at: 2,
        at: now,
    };
    let out = run(emitter::emit(&deps(&world, &flips), &pid, &action.id, 0.5)).unwrap();
    assert_eq!(out, EmitOutcome::Dropped("opted_out"));
    assert_eq!(
        flips.reads.load(Ordering::SeqCst),
        2,
        "read before lease and POST"
    );
    assert!(world.transport.posts().is_empty(), "nothing POSTed");
    let stored = run(world.store.get_action(&pid, &action.id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ActionStatus::Withdrawn);
    assert_eq!(stored.withdrawal, Some(Withdrawal::OptedOut));
    assert_eq!(stored.attempts, 1, "the lease was taken, then given up");
    assert_eq!(stored.lease_until, None);
}

#[test]
fn without_an_opt_out_the_trigger_goes_out_after_both_reads() {
    let now: Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
    let (world, pid, action) = setup(now);
    let never = FlipsConsent {
        inner: &world.store,
        reads: AtomicUsize::new(0),
        flip_at: usize::MAX,
        at: now,
    };
    let out = run(emitter::emit(&deps(&world, &never), &pid, &action.id, 0.5)).unwrap();
    assert!(matches!(out, EmitOutcome::Delivered { .. }), "{out:?}");
    assert_eq!(never.reads.load(Ordering::SeqCst), 2);
    assert_eq!(world.transport.posts().len(), 1);
}
