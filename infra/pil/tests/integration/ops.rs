//! `pil status`, `pil report --integration` and `pil dlq show|redrive` against the local
//! stack, driven through stack.env as outside scripts do.

use crate::common;

use common::run;
use pil_local::pms::Scripted;
use serde_json::json;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::ActionId;
use shared::ports::{ActionLog, ActionRepo};
use shared::practice::Mode;
use tests::{TestStack, WAIT, completed, eventually, new_ref};

async fn status_of(ts: &TestStack, id: &ActionId) -> Option<ActionStatus> {
    ts.store()
        .get_action(&ts.practice, id)
        .await
        .ok()
        .flatten()
        .map(|a| a.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_integration_report_and_dlq_redrive() {
    let ts = TestStack::start().await.unwrap();
    let env = ts.stack.env.clone();
    let pid = ts.practice.as_str().to_owned();

    // Two refusals of signed deliveries: PHI in a ref (twice, in two events' fields), and
    // an unknown event type; one accepted delivery.
    let phi = "maria.gonzalez@example.com";
    let leaky = json!({"events": [
        completed(phi, "neurotoxin", 5),
    ]});
    assert_eq!(ts.send("msg_leak_1", &leaky).await.status, 422);
    assert_eq!(ts.send("msg_leak_2", &leaky).await.status, 422);
    let p = new_ref("p");
    assert_eq!(
        ts.send("msg_ok", &completed(&p, "neurotoxin", 100))
            .await
            .status,
        202
    );

    // The integration report: the rule and the field, never the value.
    let (ok, report, err) = run(
        &env,
        &["report", "--practice-id", &pid, "--integration", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(report["refused"], 2, "{report}");
    assert_eq!(report["rows"][0]["code"], "phi_detected");
    assert_eq!(report["rows"][0]["path"], "events[].data.patient_ref");
    assert_eq!(report["rows"][0]["count"], 2);
    assert!(!report.to_string().contains("maria"));
    let (ok, text, _) = pil_text(&env, &["report", "--practice-id", &pid, "--integration"]).await;
    assert!(ok && text.contains("events[].data.patient_ref"), "{text}");
    // --from/--to and --integration do not mix; one of them is needed.
    let (ok, _, err) = run(&env, &["report", "--practice-id", &pid]).await;
    assert!(!ok && err.contains("--from"), "{err}");

    // The PMS vendor's technical contact gets the daily integration report.
    let (ok, shown, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            &pid,
            "--technical-contact",
            "it@pms-vendor.example",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(shown["technical_contacts"][0], "it@pms-vendor.example");
    let (ok, _, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            &pid,
            "--technical-contact",
            "not an address",
        ],
    )
    .await;
    assert!(!ok && err.contains("--technical-contact"), "{err}");

    // A trigger that fails for good (the PMS answers 400): dead-lettered, action failed.
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    ts.stack.pms.script([Scripted::status(400)]);
    ts.scan_via_queue(ts.today()).await;
    let id = eventually(WAIT, || async {
        let actions = ts.store().practice_actions(&ts.practice).await.ok()?;
        actions
            .into_iter()
            .find(|a| a.status == ActionStatus::Failed)
            .map(|a| a.id)
    })
    .await
    .expect("the trigger failed");

    // The night is done: the technical contact hears about the refusals, once, however often
    // the night is scanned again.
    let report_mail =
        |m: &pil_local::moto::SentEmail| m.to.iter().any(|t| t == "it@pms-vendor.example");
    let mails = eventually(WAIT, || async {
        let m: Vec<_> = ts.emails().await.into_iter().filter(report_mail).collect();
        (!m.is_empty()).then_some(m)
    })
    .await
    .expect("the integration report");
    assert!(
        mails[0].subject.contains("2 deliveries refused"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].body.contains("events[].data.patient_ref"));
    assert!(!mails[0].body.contains("maria"), "never the value");
    ts.scan_via_queue(ts.today()).await;
    ts.wait_handled("CandidatesQueue", "integration_report.due", 2)
        .await;
    let again: Vec<_> = ts.emails().await.into_iter().filter(report_mail).collect();
    assert_eq!(again.len(), 1, "one report per practice and night");

    // Status: the practice, its actions, its refusals, the queues (the DLQ holds one).
    let status = eventually(WAIT, || async {
        let (ok, v, _) = run(&env, &["status", "--practice-id", &pid, "--json"]).await;
        (ok && v["queues"]["TriggersDLQ"]["visible"] == 1).then_some(v)
    })
    .await
    .expect("pil status shows the dead letter");
    let p0 = &status["practices"][0];
    assert_eq!(p0["practice_id"], pid.as_str());
    assert_eq!(p0["actions"]["failed"], 1);
    assert_eq!(p0["trigger_endpoint"], "active");
    assert_eq!(p0["refusals_24h"]["phi_detected:email"], 2, "{p0}");
    assert_eq!(p0["last_scan_date"], ts.today().to_string());
    assert_eq!(
        status["metrics_24h"]["webhook-receiver/WebhooksRefused"],
        2.0
    );
    assert_eq!(status["metrics_24h"]["trigger-emitter/TriggersFailed"], 1.0);
    let (ok, text, _) = pil_text(&env, &["status"]).await;
    assert!(
        ok && text.contains(&pid) && text.contains("TriggersDLQ"),
        "{text}"
    );

    // dlq show: ids and kinds, never a body; the message stays.
    let (ok, shown, err) = run(&env, &["dlq", "show", "--queue", "triggers"]).await;
    assert!(ok, "{err}");
    let msgs = shown["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{shown}");
    assert_eq!(msgs[0]["about"]["action_id"], id.as_str());
    assert_eq!(msgs[0]["about"]["type"], "action.approved");
    let (_, again, _) = run(&env, &["dlq", "show", "--queue", "triggers"]).await;
    assert_eq!(
        again["messages"].as_array().unwrap().len(),
        1,
        "show leaves it"
    );

    // Redrive without --retry-failed: back on the queue, and the emitter sends nothing (the
    // action failed for good).
    let before = ts.stack.pms.received().len();
    let (ok, moved, err) = run(&env, &["dlq", "redrive", "--queue", "triggers"]).await;
    assert!(ok, "{err}");
    assert_eq!(moved["redriven"].as_array().unwrap().len(), 1, "{moved}");
    eventually(WAIT, || async {
        let (_, v, _) = run(&env, &["status", "--json"]).await;
        (v["queues"]["TriggersQueue"]["visible"] == 0
            && v["queues"]["TriggersQueue"]["in_flight"] == 0
            && v["queues"]["TriggersDLQ"]["visible"] == 0)
            .then_some(())
    })
    .await
    .expect("the redriven message was consumed");
    assert_eq!(ts.stack.pms.received().len(), before, "nothing sent");
    assert_eq!(status_of(&ts, &id).await, Some(ActionStatus::Failed));

    // The PMS is fixed; the dead letter comes back once more (as after a second failure) and
    // is redriven with --retry-failed: approved again, delivered once.
    let dlq = ts.stack.resource("TriggersDLQ").unwrap().to_owned();
    let body = json!({"detail": {"type": "action.approved", "practice_id": pid, "action_id": id.as_str()}});
    ts.stack
        .clients
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(body.to_string())
        .send()
        .await
        .unwrap();
    let (ok, moved, err) = run(
        &env,
        &["dlq", "redrive", "--queue", "triggers", "--retry-failed"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(moved["redriven"][0]["retry"], "approved", "{moved}");
    eventually(WAIT, || async {
        (status_of(&ts, &id).await == Some(ActionStatus::Delivered)).then_some(())
    })
    .await
    .expect("delivered after the redrive");
    // Redriving the same again changes nothing: the action is delivered.
    ts.stack
        .clients
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(body.to_string())
        .send()
        .await
        .unwrap();
    let (ok, moved, _) = run(
        &env,
        &["dlq", "redrive", "--queue", "triggers", "--retry-failed"],
    )
    .await;
    assert!(ok);
    assert_eq!(moved["redriven"][0]["retry"], "not_failed");
    let delivered = ts.stack.pms.received().len();
    ts.wait_handled("TriggersQueue", id.as_str(), 4).await;
    assert_eq!(ts.stack.pms.received().len(), delivered, "sent once");
    ts.stop().await;
}

async fn pil_text(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pil"))
            .args(&args)
            .env_clear()
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}
