//! trigger-emitter against the PMS simulator: retries, permanent failures, 410, redelivery.

use pil_local::pms::Scripted;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::ActionId;
use shared::ports::{ActionRepo, DomainEvent, EventPublisher, PracticeRepo};
use shared::practice::Mode;
use shared::service::admin::{self, KindChange};
use tests::{TestStack, WAIT, completed, eventually, new_ref};

/// One auto-approved rebook nudge; returns its action id.
async fn auto_action(ts: &TestStack) -> ActionId {
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    let p = new_ref("p");
    assert_eq!(
        ts.send(&format!("msg_{p}"), &completed(&p, "neurotoxin", 100))
            .await
            .status,
        202
    );
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert_eq!(report.created.len(), 1);
    report.created[0].clone()
}

/// A stack with `opts` whose PMS answers 503 to the first `answers` triggers, and one
/// auto-approved action, once it has failed: the stack, the action, and how many times its
/// trigger was sent.
async fn fails_against_503s(
    opts: tests::StackOptions,
    answers: usize,
) -> (TestStack, shared::action::Action, usize) {
    let ts = TestStack::start_with(opts).await.unwrap();
    ts.stack
        .pms
        .script((0..answers).map(|_| Scripted::status(503)));
    let id = auto_action(&ts).await;
    failed(&ts, &id, "failed").await;
    let action = ts
        .store()
        .get_action(&ts.practice, &id)
        .await
        .unwrap()
        .unwrap();
    let attempts = ts
        .stack
        .pms
        .received()
        .into_iter()
        .filter(|r| r.webhook_id == id.trigger_id())
        .count();
    (ts, action, attempts)
}

/// Waits until the action has failed.
async fn failed(ts: &TestStack, id: &ActionId, what: &str) {
    eventually(WAIT, || async {
        (status(ts, id).await == Some(ActionStatus::Failed)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{what}"));
}

async fn status(ts: &TestStack, id: &ActionId) -> Option<ActionStatus> {
    ts.store()
        .get_action(&ts.practice, id)
        .await
        .unwrap()
        .map(|a| a.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_then_deliver_exactly_once_even_when_redelivered() {
    let ts = TestStack::start().await.unwrap();
    ts.stack.pms.script([
        Scripted::status(503),
        Scripted {
            status: 429,
            retry_after: Some(1),
            delay_ms: None,
        },
    ]);
    let id = auto_action(&ts).await;
    let trig = id.trigger_id();
    eventually(WAIT, || async {
        (status(&ts, &id).await == Some(ActionStatus::Delivered)).then_some(())
    })
    .await
    .expect("delivered");
    let got: Vec<_> = ts
        .stack
        .pms
        .received()
        .into_iter()
        .filter(|r| r.webhook_id == trig)
        .collect();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 429, 200]
    );
    assert!(
        got.iter().all(|r| r.verified),
        "every attempt signed, same webhook-id"
    );

    // The approval event delivered again (SQS/EventBridge at-least-once): no second trigger.
    let bus = pil_aws::EventBus::new(
        ts.stack.clients.eventbridge.clone(),
        ts.stack.resource("EventBus").unwrap(),
    );
    let handled = ts.handled("TriggersQueue", id.as_str());
    for _ in 0..3 {
        bus.publish(&[DomainEvent::ActionApproved {
            practice_id: ts.practice.clone(),
            action_id: id.clone(),
        }])
        .await
        .unwrap();
    }
    // The emitter has taken each of the three, and nothing is left queued.
    ts.wait_handled("TriggersQueue", id.as_str(), handled + 3)
        .await;
    let n = ts
        .stack
        .pms
        .received()
        .into_iter()
        .filter(|r| r.webhook_id == trig)
        .count();
    assert_eq!(n, 3, "redeliveries sent nothing more");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_4xx_dead_letters_and_410_retires_the_endpoint() {
    let ts = TestStack::start().await.unwrap();
    ts.stack.pms.script([Scripted::status(400)]);
    let id = auto_action(&ts).await;
    failed(&ts, &id, "failed").await;
    let dlq = ts.stack.resource("TriggersDLQ").unwrap().to_owned();
    let dead = eventually(WAIT, || async {
        let r = ts
            .stack
            .clients
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .send()
            .await
            .ok()?;
        r.messages.filter(|m| !m.is_empty())
    })
    .await;
    assert!(
        dead.is_some_and(|m| m[0].body.as_deref().unwrap_or("").contains(id.as_str())),
        "dead-lettered"
    );
    // The owners hear that triggers fail: one e-mail a day, however many fail.
    let failing = "Some approved messages could not be sent today";
    let told = eventually(WAIT, || async {
        let n = ts
            .emails()
            .await
            .into_iter()
            .filter(|m| m.subject == failing)
            .count();
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(told, Some(1), "the owners are told");
    ts.stack.pms.script([Scripted::status(422)]);
    let second = auto_action(&ts).await;
    failed(&ts, &second, "the second fails too").await;
    ts.wait_handled("CandidatesQueue", "triggers.failing", 2)
        .await;
    let n = ts
        .emails()
        .await
        .into_iter()
        .filter(|m| m.subject == failing)
        .count();
    assert_eq!(n, 1, "one notice a day");

    ts.stack.pms.script([Scripted::status(410)]);
    let id2 = auto_action(&ts).await;
    failed(&ts, &id2, "failed on 410").await;
    let practice = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    assert!(
        practice.endpoint_retired,
        "410 retires the practice's endpoint"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_horizon_and_dead_letter() {
    let mut opts = tests::StackOptions::ephemeral(tests::workspace_root()).unwrap();
    opts.trigger_max_attempts = Some(3);
    let (ts, a, attempts) = fails_against_503s(opts, 5).await;
    assert_eq!(attempts, 3, "exactly the configured number of attempts");
    assert_eq!(a.last_error.as_deref(), Some("retries_exhausted"));
    let dlq = ts.stack.resource("TriggersDLQ").unwrap().to_owned();
    let dead = eventually(WAIT, || async {
        ts.stack
            .clients
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .send()
            .await
            .ok()?
            .messages
            .filter(|m| !m.is_empty())
    })
    .await;
    assert!(dead.is_some(), "the message went to the dead-letter queue");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_time_horizon_after_approval() {
    let mut opts = tests::StackOptions::ephemeral(tests::workspace_root()).unwrap();
    opts.extra_env = vec![("TRIGGER_RETRY_HORIZON_SECONDS".into(), "5".into())];
    let (ts, a, attempts) = fails_against_503s(opts, 30).await;
    assert_eq!(a.last_error.as_deref(), Some("retry_horizon_reached"));
    let approved = a.decided_at.expect("approved");
    assert!(
        (2..30).contains(&attempts),
        "retried within the horizon, then stopped: {attempts}"
    );
    assert!(jiff::Timestamp::now() >= approved + jiff::SignedDuration::from_secs(3));
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_defer_delivery_without_dropping_or_counting_attempts() {
    let mut opts = tests::StackOptions::ephemeral(tests::workspace_root()).unwrap();
    // Re-check every 2 s instead of sleeping until the window ends.
    opts.quiet_recheck_seconds = Some(2);
    opts.trigger_max_attempts = Some(2);
    let ts = TestStack::start_with(opts).await.unwrap();
    // Quiet hours around "now" in the practice's zone.
    let hour = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap())
        .hour() as u8;
    admin::set_policy(
        ts.store(),
        &ts.practice,
        None,
        KindChange {
            quiet_hours: Some(Some((hour, (hour + 2) % 24))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let id = auto_action(&ts).await;
    eventually(WAIT, || async {
        (status(&ts, &id).await == Some(ActionStatus::Approved)).then_some(())
    })
    .await
    .expect("auto-approved");
    // Several re-checks pass (more than the max attempts): nothing sent, nothing failed.
    let handled = ts.handled("TriggersQueue", id.as_str());
    eventually(WAIT, || async {
        (ts.handled("TriggersQueue", id.as_str()) >= handled + 3).then_some(())
    })
    .await
    .expect("the emitter re-checks three more times");
    assert!(
        ts.stack.pms.received().is_empty(),
        "nothing is delivered in quiet hours"
    );
    let a = ts
        .store()
        .get_action(&ts.practice, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, ActionStatus::Approved, "deferred, not dropped");
    assert_eq!(a.attempts, 0, "a deferral is not a delivery attempt");
    // The window ends (here: the owner turns quiet hours off): it goes out, once.
    admin::set_policy(
        ts.store(),
        &ts.practice,
        None,
        KindChange {
            quiet_hours: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(WAIT, || async {
        (status(&ts, &id).await == Some(ActionStatus::Delivered)).then_some(())
    })
    .await
    .expect("delivered after quiet hours");
    let sent: Vec<_> = ts
        .stack
        .pms
        .received()
        .into_iter()
        .filter(|r| r.webhook_id == id.trigger_id())
        .collect();
    assert_eq!(sent.len(), 1);
    ts.stop().await;
}
