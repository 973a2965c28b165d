//! The fault matrix (docs/reliability.md): one workload — a night for a few patients, from the
//! PMS's webhook through the scan, approval and the trigger — run once without faults and
//! then once per fault, injected by a proxy between the handlers' AWS clients and the
//! emulator (pil_local::fault) or by the PMS simulator. After each, the table holds exactly
//! what the fault-free run left (timestamps and attempt counters aside), and the PMS accepted
//! each trigger exactly once (a retried trigger it had already accepted is answered as a
//! duplicate and has no second effect).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use pil_local::fault::{Fault, Rule};
use pil_local::pms::Scripted;
use shared::action::ActionKind;
use shared::ports::ActionRepo;
use shared::practice::Mode;
use tests::{StackOptions, TestStack, eventually, workspace_root};

use serde_json::{Value, json};

/// The workload's events, built once so every run sends the same bytes.
struct Workload {
    batch: Value,
    /// The workload's refs by name (`pt_a`, …).
    refs: BTreeMap<&'static str, String>,
}

fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(|| {
        let at = |days: i64| {
            (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days))
                .round(jiff::Unit::Second)
                .unwrap()
                .to_string()
        };
        let ahead = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 20))
            .round(jiff::Unit::Hour)
            .unwrap()
            .to_string();
        let completed = |p: &str, appt: &str, t: &str, days: i64| {
            json!({"type": "appointment.completed", "occurred_at": at(days),
                "data": {"appointment_ref": appt, "patient_ref": p, "treatment": t}})
        };
        let r: BTreeMap<&str, String> = [
            "pt_a", "ap_a", "pt_b", "ap_b", "pt_c", "ap_c", "pt_d", "ap_d1", "ap_d2", "pr_1",
            "pt_e", "ap_e",
        ]
        .into_iter()
        .map(|k| (k, tests::new_ref(&k[..2])))
        .collect();
        let batch = json!({"events": [
            // Two rebook nudges (auto-approved, so each becomes a trigger).
            completed(&r["pt_a"], &r["ap_a"], "neurotoxin", 100),
            completed(&r["pt_b"], &r["ap_b"], "chemical_peel", 45),
            // A win-back that waits for the owner.
            completed(&r["pt_c"], &r["ap_c"], "dermal_filler", 400),
            // Booked ahead: no nudge for it.
            completed(&r["pt_d"], &r["ap_d1"], "neurotoxin", 100),
            {"type": "appointment.booked", "occurred_at": at(1), "data": {
                "appointment_ref": r["ap_d2"], "patient_ref": r["pt_d"], "treatment": "neurotoxin",
                "provider_ref": r["pr_1"], "starts_at": ahead, "duration_min": 30}},
            // Opted out: suppressed.
            completed(&r["pt_e"], &r["ap_e"], "neurotoxin", 100),
            {"type": "patient.opted_out", "occurred_at": at(2), "data": {"patient_ref": r["pt_e"]}},
        ]});
        Workload { batch, refs: r }
    })
}

/// What a run leaves behind, without what differs between two correct runs.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    /// Every entity and action item by key, volatile attributes removed.
    items: BTreeMap<String, Value>,
    /// Per trigger id: how many times the PMS accepted it as new (must be 1).
    accepted: BTreeMap<String, usize>,
}

/// Attributes that legitimately differ between two correct runs (when something happened,
/// how many tries it took) or that hold the practice's secrets.
const VOLATILE: [&str; 10] = [
    "created_at",
    "expires_at",
    "decided_at",
    "delivered_at",
    "lease_until",
    "attempts",
    "last_error",
    "rev",
    "ttl",
    "gsi3sk",
];

fn normalize(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        for k in VOLATILE {
            o.remove(k);
        }
        for (_, x) in o.iter_mut() {
            let y = std::mem::take(x);
            *x = normalize(y);
        }
    }
    v
}

async fn outcome(ts: &TestStack) -> Outcome {
    let mut items = BTreeMap::new();
    for item in tests::table_items(&ts.stack).await.unwrap() {
        let key = format!(
            "{} | {}",
            item["pk"].as_str().unwrap_or(""),
            item["sk"].as_str().unwrap_or("")
        );
        // The practice's configuration (secrets, the PMS's port) and the audit chain (times,
        // hashes) differ by nature between two stacks.
        if key.contains("AUDIT") || key.ends_with("| CONFIG") {
            continue;
        }
        items.insert(key, normalize(item));
    }
    let mut accepted = BTreeMap::new();
    for r in ts.stack.pms.received() {
        let n = accepted.entry(r.webhook_id.clone()).or_insert(0);
        if (200..300).contains(&r.status) && !r.duplicate {
            *n += 1;
        }
    }
    Outcome { items, accepted }
}

async fn stack(fault_proxy: bool, extra_env: &[(&str, &str)]) -> TestStack {
    let mut opts = StackOptions::ephemeral(workspace_root()).unwrap();
    opts.fault_proxy = fault_proxy;
    opts.queue_visibility_seconds = Some(3);
    opts.extra_env = extra_env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let ts = TestStack::start_with(opts).await.unwrap();
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    ts
}

/// Sends the workload's webhook until the receiver takes it (a PMS retries 5xx).
async fn deliver_webhook(ts: &TestStack) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let r = ts.send("msg_fault_workload", &workload().batch).await;
        statuses.push(r.status);
        if r.status == 202 {
            return statuses;
        }
        assert_eq!(
            r.status, 503,
            "only 503 while storage is failing: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the receiver never accepted the webhook: {statuses:?}");
}

/// The fault-free outcome, computed once per test binary.
async fn expected() -> Outcome {
    static EXPECTED: tokio::sync::OnceCell<Outcome> = tokio::sync::OnceCell::const_new();
    EXPECTED
        .get_or_init(|| async {
            let ts = stack(false, &[]).await;
            assert_eq!(deliver_webhook(&ts).await, vec![202]);
            ts.scan_via_queue(ts.today()).await;
            let settled = eventually(Duration::from_secs(60), || async {
                let o = outcome(&ts).await;
                let approved = o.items.values().any(|v| v["status"] == "approved");
                (o.accepted.len() == 2 && o.accepted.values().all(|n| *n == 1) && !approved)
                    .then_some(o)
            })
            .await
            .expect("the fault-free run delivers two triggers");
            // Nothing more happens after it settled: once nothing is queued, it is the same.
            ts.settled().await;
            assert_eq!(outcome(&ts).await, settled, "the fault-free run is stable");
            // And it is what the rules say, exactly, before any fault case compares with it.
            assert_control(&settled);
            ts.stop().await;
            settled
        })
        .await
        .clone()
}

/// Waits until the run's outcome equals the fault-free one (or fails showing the difference).
async fn converges(ts: &TestStack, what: &str) {
    let want = expected().await;
    let got = eventually(Duration::from_secs(90), || async {
        let o = outcome(ts).await;
        (o == want).then_some(o)
    })
    .await;
    if got.is_none() {
        let o = outcome(ts).await;
        for (k, v) in &want.items {
            if o.items.get(k) != Some(v) {
                eprintln!("{what}: item {k}\n  want {v}\n  got  {:?}", o.items.get(k));
            }
        }
        for k in o.items.keys().filter(|k| !want.items.contains_key(*k)) {
            eprintln!("{what}: extra item {k}");
        }
        assert_eq!(o.accepted, want.accepted, "{what}: triggers accepted");
        panic!("{what}: the state differs from the fault-free run");
    }
    // And stays there: once every retry has run and nothing is queued, it is the same.
    ts.settled().await;
    assert!(outcome(ts).await == want, "{what}: changed after settling");
}

/// The rest of the night after the webhook: the scan, through its queue.
async fn night(ts: &TestStack) {
    ts.scan_via_queue(ts.today()).await;
}

fn proxy(ts: &TestStack) -> &pil_local::fault::FaultProxy {
    ts.stack
        .faults
        .as_ref()
        .expect("stack started with the fault proxy")
}

/// Keys of the items the workload's webhook writes (patient records, appointments, consent).
async fn patient_items(ts: &TestStack) -> usize {
    tests::table_items(&ts.stack)
        .await
        .unwrap()
        .iter()
        .filter(|i| {
            let sk = i["sk"].as_str().unwrap_or("");
            ["PT#", "APPT#", "CONSENT#"]
                .iter()
                .any(|p| sk.starts_with(p))
        })
        .count()
}

/// The ids of the actions the fault-free run delivered.
async fn delivered_ids() -> Vec<String> {
    expected()
        .await
        .items
        .values()
        .filter(|v| v["status"] == "delivered")
        .filter_map(|v| v["doc"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// The message EventBridge puts on the triggers queue for an approved action.
fn approved_message(ts: &TestStack, action_id: &str) -> String {
    json!({"version": "0", "id": tests::new_ref("ev"), "detail-type": "action.approved",
        "source": "pil", "detail": {"type": "action.approved",
        "practice_id": ts.practice.as_str(), "action_id": action_id}})
    .to_string()
}

fn sqs_event(messages: &[(&str, String)]) -> aws_lambda_events::sqs::SqsEvent {
    let mut e = aws_lambda_events::sqs::SqsEvent::default();
    for (id, body) in messages {
        let mut m = aws_lambda_events::sqs::SqsMessage::default();
        m.message_id = Some((*id).to_owned());
        m.body = Some(body.clone());
        e.records.push(m);
    }
    e
}

/// The emitter's lease on `action` (the conditional write that counts the attempt) fails.
fn lease_write_fails(action: &str) -> Rule {
    Rule::any(Fault::internal_error())
        .containing(action)
        .containing("\"lease_until\":{\"S\"")
}

fn emitter(ts: &TestStack) -> &pil_local::stack::Handler {
    ts.stack
        .handlers
        .get("TriggerEmitterFunction")
        .expect("TriggerEmitterFunction in the template")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_unreachable_the_receiver_answers_503_and_writes_nothing() {
    let ts = stack(true, &[]).await;
    proxy(&ts).set_down(true).await.unwrap();
    let r = ts.send("msg_fault_workload", &workload().batch).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(patient_items(&ts).await, 0, "nothing half-written");
    proxy(&ts).set_down(false).await.unwrap();
    // The PMS retries, the same webhook-id and body.
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    converges(&ts, "emulator unreachable").await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failing_part_way_through_a_webhook_then_the_pms_retry_completes_it() {
    let ts = stack(true, &[]).await;
    // The receiver's third write and every call after it fail (beyond the SDK's retries):
    // a crash between two writes, seen from the outside.
    proxy(&ts).add(
        Rule::any(Fault::internal_error())
            .containing("PT#")
            .after(2)
            .times(40),
    );
    let statuses = deliver_webhook(&ts).await;
    assert!(
        statuses.first() == Some(&503) && statuses.last() == Some(&202),
        "503 until storage recovers, then 202: {statuses:?}"
    );
    night(&ts).await;
    converges(&ts, "crash between two writes (receiver)").await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_on_every_kind_of_call_are_absorbed() {
    let ts = stack(true, &[]).await;
    let p = proxy(&ts);
    for op in [
        "GetItem",
        "Query",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "BatchWriteItem",
    ] {
        p.add(Rule::on(op, Fault::throttle()).times(2));
        p.add(Rule::on(op, Fault::internal_error()).times(1));
    }
    p.add(Rule::on("SendMessage", Fault::Drop).times(1));
    p.add(Rule::on("PutEvents", Fault::internal_error()).times(1));
    let _ = deliver_webhook(&ts).await;
    night(&ts).await;
    converges(&ts, "throttling and 5xx").await;
    let injected: u64 = p.injected().values().sum();
    assert!(injected >= 10, "faults were injected: {:?}", p.injected());
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_whose_publish_fails_for_good_are_published_by_the_next_scan() {
    // Every approval is at once old enough for the outbox.
    let ts = stack(true, &[("OUTBOX_GRACE_SECONDS", "0")]).await;
    let p = proxy(&ts);
    // The bus refuses every `action.approved` (and nothing else) until the fault is cleared.
    p.add(Rule::on("PutEvents", Fault::internal_error()).containing("action.approved"));
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    // Both auto-approvals are recorded, and stranded: approved, nothing delivered.
    let ids = delivered_ids().await;
    let stranded = eventually(Duration::from_secs(60), || async {
        let mut approved = 0;
        for id in &ids {
            let a = ts
                .store()
                .get_action(&ts.practice, &shared::ids::ActionId::parse(id).unwrap())
                .await
                .ok()??;
            approved += usize::from(a.status == shared::action::ActionStatus::Approved);
        }
        (approved == ids.len()).then_some(())
    })
    .await;
    assert!(stranded.is_some(), "both approvals recorded");
    assert!(p.injected().get("PutEvents").copied().unwrap_or(0) >= 1);
    assert!(ts.stack.pms.received().is_empty(), "nothing delivered yet");
    // The bus recovers; the next night's scan publishes the outbox.
    p.clear();
    night(&ts).await;
    converges(&ts, "approvals published by the outbox").await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_writes_keep_failing_is_retried_from_its_queue() {
    let ts = stack(true, &[]).await;
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    // Every write of an action fails for a while: more than the SDK's retries, so the scan
    // message fails and SQS delivers it again.
    proxy(&ts).add(
        Rule::any(Fault::internal_error())
            .containing("ACTION#")
            .times(12),
    );
    night(&ts).await;
    converges(&ts, "scan storage failures").await;
    assert!(proxy(&ts).injected().values().sum::<u64>() >= 12);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_lost_after_writes_landed_have_no_second_effect() {
    let ts = stack(true, &[]).await;
    let p = proxy(&ts);
    for op in [
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "SendMessage",
        "SendMessageBatch",
        "PutEvents",
    ] {
        p.add(Rule::on(op, Fault::ForwardThenDrop).times(2));
    }
    let _ = deliver_webhook(&ts).await;
    night(&ts).await;
    converges(&ts, "responses lost after the write").await;
    assert!(
        p.injected().values().sum::<u64>() >= 6,
        "{:?}",
        p.injected()
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_message_of_a_batch_is_the_only_one_retried() {
    let ts = stack(true, &[]).await;
    let ids = delivered_ids().await;
    let (a, b) = (&ids[0], &ids[1]);
    // The emitter cannot take its lease on action A (the write fails beyond the SDK's
    // retries) until the rule is cleared.
    proxy(&ts).add(lease_write_fails(a));
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    let accepted = |id: &str| {
        let trg = id.replacen("act_", "trg_", 1);
        ts.stack
            .pms
            .received()
            .iter()
            .filter(|r| r.webhook_id == trg && (200..300).contains(&r.status))
            .count()
    };
    eventually(Duration::from_secs(60), || async {
        (accepted(b) == 1).then_some(())
    })
    .await
    .expect("B is delivered while A fails");
    // A batch of both, as the event-source mapping hands it over: only A's message fails.
    let batch = sqs_event(&[
        ("m-a", approved_message(&ts, a)),
        ("m-b", approved_message(&ts, b)),
    ]);
    let resp = emitter(&ts).sqs(batch).await.unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["m-a"], "only the failing message is retried");
    assert_eq!(accepted(a), 0);
    assert_eq!(accepted(b), 1, "B was not sent again");
    proxy(&ts).clear();
    converges(&ts, "one message of a batch failing").await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_messages_delivered_five_times_have_one_effect() {
    let ts = stack(true, &[]).await;
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    for _ in 0..5 {
        night(&ts).await;
    }
    let queue = ts.stack.resource("TriggersQueue").unwrap().to_owned();
    for id in delivered_ids().await {
        for _ in 0..5 {
            ts.stack
                .clients
                .sqs
                .send_message()
                .queue_url(&queue)
                .message_body(approved_message(&ts, &id))
                .send()
                .await
                .unwrap();
        }
    }
    converges(&ts, "five deliveries of each message").await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_emitters_racing_on_one_action_send_one_trigger() {
    let ts = stack(true, &[]).await;
    let ids = delivered_ids().await;
    // Hold the queue's own delivery of the first action back until the racers are ready.
    proxy(&ts).add(lease_write_fails(&ids[0]));
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    eventually(Duration::from_secs(60), || async {
        let a = ts
            .store()
            .get_action(
                &ts.practice,
                &shared::ids::ActionId::parse(&ids[0]).unwrap(),
            )
            .await
            .ok()??;
        let tried = !proxy(&ts).injected().is_empty();
        (a.status == shared::action::ActionStatus::Approved && tried).then_some(())
    })
    .await
    .expect("approved, and the queue's emitter was held back");
    proxy(&ts).clear();
    // The PMS answers slowly, so the two attempts overlap.
    ts.stack.pms.script([Scripted {
        status: 200,
        retry_after: None,
        delay_ms: Some(1_500),
    }]);
    let one = sqs_event(&[("m-1", approved_message(&ts, &ids[0]))]);
    let two = sqs_event(&[("m-2", approved_message(&ts, &ids[0]))]);
    // (The queue's own copy of the message may join the race: three emitters then, and any
    // of them may win the lease; the others back off and find it delivered later.)
    let (r1, r2) = tokio::join!(emitter(&ts).sqs(one), emitter(&ts).sqs(two));
    r1.unwrap();
    r2.unwrap();
    let posts = || {
        ts.stack
            .pms
            .received()
            .iter()
            .filter(|r| r.webhook_id == ids[0].replacen("act_", "trg_", 1))
            .count()
    };
    // The queue's own copy may hold the lease and still be in its (slow) POST when the two
    // return: wait for the trigger, then for the run to settle, and count again.
    eventually(Duration::from_secs(30), || async {
        (posts() > 0).then_some(())
    })
    .await
    .expect("the trigger went out");
    converges(&ts, "two emitters racing").await;
    assert_eq!(posts(), 1, "one POST for the racing emitters");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_crash_after_the_post_resends_the_same_trigger_the_pms_deduplicates() {
    let ts = stack(true, &[]).await;
    // The write that records the delivery fails beyond the SDK's retries, twice over: the
    // trigger went out, the emitter could not say so (as if it crashed after the POST).
    proxy(&ts).add(
        Rule::any(Fault::internal_error())
            .containing("{\"S\":\"delivered\"}")
            .times(6),
    );
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    converges(&ts, "emitter crash after the POST").await;
    let dups = ts
        .stack
        .pms
        .received()
        .iter()
        .filter(|r| r.duplicate)
        .count();
    assert!(
        dups >= 1,
        "the resent trigger carried the same webhook-id and was a duplicate"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pms_5xx_429_and_timeouts_are_retried_until_delivered_once() {
    let ts = stack(false, &[("TRIGGER_TIMEOUT_SECONDS", "1")]).await;
    ts.stack.pms.script([
        Scripted::status(500),
        Scripted {
            status: 429,
            retry_after: Some(2),
            delay_ms: None,
        },
        // Taken, but the answer comes after the emitter's timeout.
        Scripted {
            status: 200,
            retry_after: None,
            delay_ms: Some(2_500),
        },
        Scripted::status(503),
    ]);
    assert_eq!(deliver_webhook(&ts).await, vec![202]);
    night(&ts).await;
    converges(&ts, "PMS 5xx, 429, timeout").await;
    let got = ts.stack.pms.received();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    for s in [500, 429, 503] {
        assert!(statuses.contains(&s), "the PMS answered {s}: {statuses:?}");
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_run_is_what_the_rules_say() {
    // `expected` asserts it (see `assert_control`); this runs it on its own.
    let o = expected().await;
    assert_control(&o);
}

/// The fault-free run, exactly: every action by patient, kind, status and suppression, and
/// each delivered trigger accepted once.
fn assert_control(o: &Outcome) {
    let name_of = |r: &str| {
        workload()
            .refs
            .iter()
            .find(|(_, v)| v.as_str() == r)
            .map(|(k, _)| *k)
            .unwrap_or("?")
    };
    let got: std::collections::BTreeSet<(String, String, String, String)> = o
        .items
        .iter()
        .filter(|(k, _)| k.contains("ACTION#"))
        .map(|(_, v)| {
            let doc = &v["doc"];
            (
                name_of(doc["patient_ref"].as_str().unwrap_or("")).to_owned(),
                doc["kind"].as_str().unwrap_or("").to_owned(),
                v["status"].as_str().unwrap_or("").to_owned(),
                doc["suppression"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<(String, String, String, String)> = [
        // Auto-approved rebooks, delivered; the neurotoxin follow-up due with them loses.
        ("pt_a", "rebook_nudge", "delivered", "-"),
        ("pt_a", "follow_up", "suppressed", "superseded"),
        ("pt_b", "rebook_nudge", "delivered", "-"),
        // The win-back waits for the owner; the follow-up and rebook due with it lose.
        ("pt_c", "win_back", "pending", "-"),
        ("pt_c", "follow_up", "suppressed", "superseded"),
        ("pt_c", "rebook_nudge", "suppressed", "superseded"),
        // Booked ahead, and opted out.
        ("pt_d", "rebook_nudge", "suppressed", "booked_ahead"),
        ("pt_d", "follow_up", "suppressed", "superseded"),
        ("pt_e", "rebook_nudge", "suppressed", "opted_out"),
        ("pt_e", "follow_up", "suppressed", "superseded"),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()))
    .collect();
    assert_eq!(got, want, "the control run's actions");
    assert_eq!(o.accepted.len(), 2, "two triggers: {:?}", o.accepted);
    assert!(o.accepted.values().all(|n| *n == 1), "{:?}", o.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_in_many_parts_with_a_redelivered_continuation_creates_each_action_once() {
    // Three due entries per page and no time to spare: every part hands the rest on.
    let ts = stack(
        true,
        &[("SCAN_PAGE_SIZE", "3"), ("SCAN_TIME_BUDGET_SECONDS", "0")],
    )
    .await;
    let p = proxy(&ts);
    // The answer to a continuation's SendMessage is lost after it landed: the SDK sends it
    // again, so that part of the night runs twice.
    p.add(
        Rule::on("SendMessage", Fault::ForwardThenDrop)
            .containing("part")
            .times(1),
    );
    let patients: Vec<String> = (0..20).map(|_| tests::new_ref("p")).collect();
    let events: Vec<Value> = patients
        .iter()
        .enumerate()
        .map(|(i, pt)| tests::completed(pt, "neurotoxin", 95 + i as i64))
        .collect();
    let r = ts.send("msg_parts", &json!({ "events": events })).await;
    assert_eq!(r.status, 202, "{}", r.body);
    night(&ts).await;
    let all = eventually(Duration::from_secs(90), || async {
        let actions = shared::ports::ActionLog::practice_actions(ts.store(), &ts.practice)
            .await
            .ok()?;
        let delivered = actions
            .iter()
            .filter(|a| a.status == shared::action::ActionStatus::Delivered)
            .count();
        (delivered == 20).then_some(actions)
    })
    .await
    .expect("every patient's nudge delivered");
    // One action per patient, each delivered once.
    for pt in &patients {
        let mine = all
            .iter()
            .filter(|a| a.patient_ref.as_str() == pt && !a.suppressed_by_scan())
            .count();
        assert_eq!(mine, 1, "{pt}");
    }
    let mut accepted = BTreeMap::new();
    for r in ts.stack.pms.received() {
        if (200..300).contains(&r.status) && !r.duplicate {
            *accepted.entry(r.webhook_id.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(accepted.len(), 20);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    assert_eq!(
        p.injected().get("SendMessage").copied(),
        Some(1),
        "a continuation was sent twice"
    );
    assert!(
        p.forwarded().get("SendMessage").copied().unwrap_or(0) >= 7,
        "the night ran in parts: {:?}",
        p.forwarded()
    );
    ts.stop().await;
}
