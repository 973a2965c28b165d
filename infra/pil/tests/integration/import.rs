//! `pil import` through the CLI against the local stack: a history in batches, safe to run
//! again, a refused line named; the first night proposes at most the nightly budget.

use crate::common;
use common::pil;

use pil_local::scenario::new_ref;
use pil_local::stack::{Stack, StackOptions, workspace_root};
use shared::ids::PracticeId;
use shared::ports::ActionLog;

fn completed(patient: &str, days_ago: i64) -> String {
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days_ago);
    serde_json::json!({"type": "appointment.completed", "occurred_at": at.to_string(),
        "data": {"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": "neurotoxin"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_imports_in_batches_again_without_effect_and_a_bad_line_is_named() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let env = stack.env.clone();
    let trigger = stack.pms.trigger_url();
    let run = |args: Vec<String>, extra: Vec<(String, String)>| {
        let mut env = env.clone();
        env.extend(extra);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pil(&env, &args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ok, out, err) = run(
        args(&[
            "practice",
            "create",
            "--practice-id",
            "import-clinic",
            "--time-zone",
            "America/Chicago",
            "--owner-email",
            "owner@import.example",
            "--trigger-url",
            &trigger,
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let secret = out["webhook_secret"].as_str().unwrap().to_owned();
    let secret_env = vec![("PIL_WEBHOOK_SECRET".to_owned(), secret)];

    // Three years of history for 250 patients: one neurotoxin visit each, 95 to 344 days ago.
    let dir = std::env::temp_dir().join(format!("pil-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history.ndjson");
    let lines: Vec<String> = (0..250).map(|i| completed(&new_ref("p"), 95 + i)).collect();
    std::fs::write(&history, lines.join("\n") + "\n").unwrap();
    let import = args(&[
        "import",
        "--practice-id",
        "import-clinic",
        "--file",
        history.to_str().unwrap(),
    ]);
    let (ok, out, err) = run(import.clone(), secret_env.clone()).await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(out["events"], 250);
    assert_eq!(out["batches"], 3, "batches of 100");
    assert!(err.contains("250 of 250 events (3 of 3 batches)"), "{err}");

    // Importing created state only: no action before the scan.
    let pid = PracticeId::parse("import-clinic").unwrap();
    let store = stack.scan_deps().unwrap().adapters.store.clone();
    assert!(store.practice_actions(&pid).await.unwrap().is_empty());
    let before = pil_local::scenario::table_items(&stack).await.unwrap();

    // Again: nothing changes (every write is a merge, the batches repeat their ids).
    let (ok, _, err) = run(import.clone(), secret_env.clone()).await.unwrap();
    assert!(ok, "{err}");
    let after = pil_local::scenario::table_items(&stack).await.unwrap();
    assert!(after == before, "a second import changed the table");

    // The first night proposes the default nightly budget, no more.
    let (ok, out, err) = run(args(&["scan", "--practice-id", "import-clinic"]), vec![])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out["created"].as_array().map(Vec::len), Some(25), "{out}");
    assert_eq!(out["deferred"], 225);
    // The owner's digest holds those 25 and says what waits.
    let mail = pil_local::scenario::eventually(std::time::Duration::from_secs(30), || async {
        stack.moto.sent_emails().await.ok()?.into_iter().last()
    })
    .await
    .expect("the first night's digest");
    assert!(
        mail.subject.starts_with("25 actions awaiting approval"),
        "{}",
        mail.subject
    );
    assert!(
        mail.body.contains("225 more due patients wait over the nightly limit of 25: they come in the next 9 nights"),
        "the digest says how many wait and when: {}",
        &mail.body[mail.body.find("more due").map_or(0, |i| i.saturating_sub(40))..][..200.min(mail.body.len())]
    );

    // A line carrying PHI stops the import there, named by its line number, never its text.
    let mut bad = lines.clone();
    bad[129] = completed("jane.doe@example.com", 100);
    let bad_file = dir.join("bad.ndjson");
    std::fs::write(&bad_file, bad.join("\n")).unwrap();
    let (ok, _, err) = run(
        args(&[
            "import",
            "--practice-id",
            "import-clinic",
            "--file",
            bad_file.to_str().unwrap(),
        ]),
        secret_env.clone(),
    )
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("line 130"), "{err}");
    assert!(err.contains("phi_detected"), "{err}");
    assert!(
        err.contains("the 100 events before this batch are in"),
        "{err}"
    );
    assert!(
        !err.contains("jane.doe"),
        "the refused value is never echoed"
    );

    // Without a secret: a clear error, nothing sent.
    let (ok, _, err) = run(import, vec![]).await.unwrap();
    assert!(!ok);
    assert!(err.contains("PIL_WEBHOOK_SECRET"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await;
}
