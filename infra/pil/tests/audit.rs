//! `pil audit verify` against the local stack: a chain of real policy changes verifies; a
//! changed, a removed and a reordered record each make it exit non-zero naming the record.

use std::process::Command;

use aws_sdk_dynamodb::types::AttributeValue;
use pil_local::stack::{Stack, StackOptions, workspace_root};
use pil_shared::audit::AuditRecord;

fn pil(env: &[(String, String)], args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pil"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn run(env: &[(String, String)], args: &[&str]) -> (bool, serde_json::Value, String) {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        pil(&env, &a)
    })
    .await
    .unwrap()
}

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

async fn record(stack: &Stack, id: &str, seq: u64) -> AuditRecord {
    let table = stack.resource("StateTable").unwrap();
    let item = stack
        .clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("P#{id}")))
        .key("sk", AttributeValue::S(format!("AUDIT#{seq:012}")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
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
