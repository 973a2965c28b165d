//! `pil audit verify` against the local stack: a chain of real policy changes verifies; a
//! changed, a removed and a reordered record each make it exit non-zero naming the record.

use crate::common;
use common::run;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use pil_local::stack::{Stack, StackOptions, workspace_root};
use shared::audit::AuditRecord;

/// A practice with three audited policy changes.
async fn practice_with_chain(stack: &Stack, env: &[(String, String)], id: &str) {
    let trigger = stack.pms.trigger_url();
    let (ok, _, err) = run(
        env,
        &[
            "practice",
            "create",
            "--practice-id",
            id,
            "--time-zone",
            "America/Denver",
            "--owner-email",
            "owner@audit.example",
            "--trigger-url",
            &trigger,
        ],
    )
    .await;
    assert!(ok, "{err}");
    for args in [
        vec!["--kind", "rebook_nudge", "--mode", "auto"],
        vec!["--quiet-hours", "21-7"],
        vec!["--cooldown-days", "10", "--slot-fill-k", "4"],
    ] {
        let mut all = vec!["policy", "set", "--practice-id", id];
        all.extend(args);
        let (ok, out, err) = run(env, &all).await;
        assert!(ok, "{err}");
        assert!(out["policy"].is_object());
    }
    let (ok, out, err) = run(env, &["audit", "verify", "--practice-id", id]).await;
    assert!(ok, "{err}");
    assert_eq!(out["records"], 3, "{out}");
    let (_, shown, _) = run(env, &["audit", "show", "--practice-id", id]).await;
    assert_eq!(shown[1]["event"], "policy_changed");
    assert_eq!(shown[1]["actor"], "admin");
}

/// The audit head's sort key (infra/pil-aws/src/store/audit.rs).
const HEAD_SK: &str = "AUDITHEAD";

/// The practice's stored item under `sk`.
async fn item(stack: &Stack, id: &str, sk: &str) -> HashMap<String, AttributeValue> {
    let table = stack.resource("StateTable").unwrap();
    stack
        .clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("P#{id}")))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

async fn record(stack: &Stack, id: &str, seq: u64) -> AuditRecord {
    let item = item(stack, id, &format!("AUDIT#{seq:012}")).await;
    serde_dynamo::from_attribute_value(item["doc"].clone()).unwrap()
}

async fn put(stack: &Stack, id: &str, r: &AuditRecord) {
    let table = stack.resource("StateTable").unwrap();
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("P#{id}")))
        .key("sk", AttributeValue::S(format!("AUDIT#{:012}", r.seq)))
        .update_expression("SET doc = :d")
        .expression_attribute_values(":d", serde_dynamo::to_attribute_value(r).unwrap())
        .send()
        .await
        .unwrap();
}

async fn broken_at(env: &[(String, String)], id: &str) -> String {
    let (ok, _, err) = run(env, &["audit", "verify", "--practice-id", id]).await;
    assert!(!ok, "verify must fail");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_first_changed_removed_or_reordered_record() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let env = stack.env.clone();

    // Changed: someone edits what a policy change said.
    practice_with_chain(&stack, &env, "audit-changed").await;
    let mut r = record(&stack, "audit-changed", 2).await;
    r.details = r.details.replace("21", "22");
    put(&stack, "audit-changed", &r).await;
    let err = broken_at(&env, "audit-changed").await;
    assert!(err.contains("audit record 2: changed"), "{err}");

    // Removed: a record deleted from the middle.
    practice_with_chain(&stack, &env, "audit-removed").await;
    let table = stack.resource("StateTable").unwrap().to_owned();
    stack
        .clients
        .dynamodb
        .delete_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("P#audit-removed".into()))
        .key("sk", AttributeValue::S(format!("AUDIT#{:012}", 2)))
        .send()
        .await
        .unwrap();
    let err = broken_at(&env, "audit-removed").await;
    assert!(err.contains("audit record 2: missing"), "{err}");

    // Reordered: records 2 and 3 swap places (each keeps the slot's sequence number).
    practice_with_chain(&stack, &env, "audit-reordered").await;
    let (two, three) = (
        record(&stack, "audit-reordered", 2).await,
        record(&stack, "audit-reordered", 3).await,
    );
    put(&stack, "audit-reordered", &AuditRecord { seq: 2, ..three }).await;
    put(&stack, "audit-reordered", &AuditRecord { seq: 3, ..two }).await;
    let err = broken_at(&env, "audit-reordered").await;
    assert!(err.contains("audit record 2:"), "{err}");

    // An append that stopped between its record and the head (the head one behind): the
    // chain verifies; the next append moves the head onto the orphan and chains after it.
    practice_with_chain(&stack, &env, "audit-lag").await;
    let two = record(&stack, "audit-lag", 2).await;
    stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("P#audit-lag".into()))
        .item("sk", AttributeValue::S(HEAD_SK.into()))
        .item("seq", AttributeValue::N("2".into()))
        .item("hash", AttributeValue::S(two.hash.clone()))
        .send()
        .await
        .unwrap();
    let (ok, out, err) = run(&env, &["audit", "verify", "--practice-id", "audit-lag"]).await;
    assert!(ok, "{err}");
    assert_eq!(out["records"], 3, "{out}");
    let (ok, _, err) = run(
        &env,
        &[
            "policy",
            "set",
            "--practice-id",
            "audit-lag",
            "--cooldown-days",
            "12",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&env, &["audit", "verify", "--practice-id", "audit-lag"]).await;
    assert!(ok, "{err}");
    assert_eq!(out["records"], 4, "{out}");
    assert_eq!(
        record(&stack, "audit-lag", 4).await.prev,
        record(&stack, "audit-lag", 3).await.hash
    );
    let head = item(&stack, "audit-lag", HEAD_SK).await;
    assert_eq!(
        head["seq"],
        AttributeValue::N("4".into()),
        "the head caught up"
    );

    // A bad setting names the flag and its rule, and changes nothing.
    let (ok, _, err) = run(
        &env,
        &[
            "policy",
            "set",
            "--practice-id",
            "audit-changed",
            "--quiet-hours",
            "25-3",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("--quiet-hours"), "{err}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practice_update_overrides_drive_the_rules_and_disable_stops_the_scan() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let env = stack.env.clone();
    let trigger = stack.pms.trigger_url();
    let (ok, created, err) = run(
        &env,
        &[
            "practice",
            "create",
            "--practice-id",
            "upd-clinic",
            "--time-zone",
            "America/Chicago",
            "--owner-email",
            "owner@upd.example",
            "--trigger-url",
            &trigger,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            "upd-clinic",
            "--cycle-days",
            "neurotoxin=60",
            "--avg-ticket",
            "neurotoxin=610",
            "--follow-up-days",
            "dermal_filler=21",
            "--win-back-multiple",
            "3",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out["cycle_days"]["neurotoxin"], 60);
    assert_eq!(out["avg_ticket"]["neurotoxin"], 610);
    assert_eq!(out["win_back_multiple"], 3);
    // Bad values name the flag and the rule.
    let (ok, _, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            "upd-clinic",
            "--cycle-days",
            "botox=60",
        ],
    )
    .await;
    assert!(!ok && err.contains("--cycle-days"), "{err}");
    let (ok, _, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            "upd-clinic",
            "--cycle-days",
            "neurotoxin=0",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("--cycle-days: between 1 and 1095"),
        "{err}"
    );

    // A neurotoxin visit 70 days ago is due under the 60-day override (not the default 90),
    // valued at the practice's own ticket.
    let secret =
        shared::signature::WebhookSecret::parse(created["webhook_secret"].as_str().unwrap())
            .unwrap();
    let pms = pil_local::pms::PmsClient::new(&stack.api_url);
    let patient = pil_local::scenario::new_ref("p");
    let at = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 70)).to_string();
    let body = serde_json::json!({"type": "appointment.completed", "occurred_at": at, "data": {
        "appointment_ref": pil_local::scenario::new_ref("appt"), "patient_ref": patient, "treatment": "neurotoxin"}});
    let r = pms
        .send("upd-clinic", &secret, "msg_upd_1", &body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 202);

    // Disabled: the scan does nothing.
    let (ok, out, err) = run(
        &env,
        &["practice", "disable", "--practice-id", "upd-clinic"],
    )
    .await;
    assert!(ok && out["disabled"] == true, "{err}");
    let (ok, out, err) = run(&env, &["scan", "--practice-id", "upd-clinic"]).await;
    assert!(ok, "{err}");
    assert_eq!(out["created"].as_array().map(Vec::len), Some(0), "{out}");
    // Enabled again: the override makes it due.
    let (ok, _, err) = run(&env, &["practice", "enable", "--practice-id", "upd-clinic"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&env, &["scan", "--practice-id", "upd-clinic"]).await;
    assert!(ok, "{err}");
    assert_eq!(out["created"].as_array().map(Vec::len), Some(1), "{out}");
    let (_, trail, _) = run(&env, &["audit", "show", "--practice-id", "upd-clinic"]).await;
    let events: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(
        events,
        ["practice_updated", "practice_updated", "practice_updated"],
        "update, disable, enable are audited"
    );
    let (ok, _, err) = run(&env, &["audit", "verify", "--practice-id", "upd-clinic"]).await;
    assert!(ok, "{err}");
    stack.stop().await;
}
