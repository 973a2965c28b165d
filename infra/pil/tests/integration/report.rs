//! Attribution and `pil report` through the real stack (moto, HTTP, queues, the PMS
//! simulator), the CLI driven through stack.env as outside scripts do.

use std::process::Command;

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::json;
use shared::action::{Action, ActionKind, ActionStatus};
use shared::ids::OpaqueRef;
use shared::ports::{ActionRepo, PatientIndex, PracticeRepo};
use shared::practice::Mode;
use tests::{TestStack, WAIT, completed, eventually, new_ref};

fn pil(env: &[(String, String)], args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pil"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn run_pil(ts: &TestStack, args: &[&str]) -> (bool, String, String) {
    let env = ts.stack.env.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || pil(&env, &args))
        .await
        .unwrap()
}

async fn actions_of(ts: &TestStack, patient: &str) -> Vec<Action> {
    ts.store()
        .actions_of(&ts.practice, &OpaqueRef::parse(patient).unwrap())
        .await
        .unwrap()
}

fn booked(patient: &str, treatment: &str, at: Timestamp) -> serde_json::Value {
    let starts = at + SignedDuration::from_hours(24 * 7);
    json!({"type": "appointment.booked", "occurred_at": at.to_string(),
        "data": {"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": treatment,
            "provider_ref": new_ref("prov"), "starts_at": starts.to_string(), "duration_min": 30}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_after_a_delivered_trigger_is_recovered_revenue_in_the_report() {
    let ts = TestStack::start().await.unwrap();
    // Rebook nudges go out without the owner; deliveries at any hour.
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    let mut practice = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    let v = practice.version;
    practice.policy.quiet_hours = None;
    practice.version += 1;
    ts.store().put_practice(&practice, Some(v)).await.unwrap();

    // GIVEN one patient due for a rebook, and one due but opted out.
    let (p, out) = (new_ref("p"), new_ref("p"));
    let body = json!({"events": [
        completed(&p, "neurotoxin", 95),
        completed(&out, "neurotoxin", 95),
        {"type": "patient.opted_out", "occurred_at": tests::ago(1), "data": {"patient_ref": out}},
    ]});
    assert_eq!(ts.send("msg_attr_1", &body).await.status, 202);

    // WHEN the night's scan runs, the trigger is auto-approved and delivered
    ts.scan_via_queue(ts.today()).await;
    let delivered = eventually(WAIT, || async {
        actions_of(&ts, &p)
            .await
            .into_iter()
            .find(|a| a.status == ActionStatus::Delivered)
    })
    .await
    .expect("the rebook nudge is delivered");
    // The opted-out patient's gaps are recorded with their reasons: the rebook (opted out)
    // and the follow-up it superseded (95 days after, one message per category).
    let mut suppressed: Vec<_> = actions_of(&ts, &out)
        .await
        .iter()
        .map(|a| (a.kind, a.status, a.suppression.map(|s| s.as_str())))
        .collect();
    suppressed.sort_by_key(|(k, ..)| *k);
    assert_eq!(
        suppressed,
        vec![
            (
                ActionKind::RebookNudge,
                ActionStatus::Suppressed,
                Some("opted_out")
            ),
            (
                ActionKind::FollowUp,
                ActionStatus::Suppressed,
                Some("superseded")
            ),
        ]
    );

    // AND the patient books the same category: converted, once
    let at = Timestamp::now();
    let booking = booked(&p, "neurotoxin", at);
    assert_eq!(ts.send("msg_attr_book", &booking).await.status, 202);
    let converted = ts
        .store()
        .get_action(&ts.practice, &delivered.id)
        .await
        .unwrap()
        .unwrap();
    let conversion = converted.converted.expect("converted");
    assert_eq!(
        (converted.status, conversion.value),
        (ActionStatus::Delivered, delivered.value)
    );
    assert_eq!(conversion.on, practice.local_date(at));
    // A booking of another category converts nothing, and the booking path still writes
    // only the appointment (and its ByPatient and ByStart entries).
    let rev = converted.rev;
    let meter = &ts.stack.meter;
    let before = meter.snapshot().total_write_units();
    assert_eq!(
        ts.send("msg_attr_other", &booked(&p, "dermal_filler", at))
            .await
            .status,
        202
    );
    assert_eq!(meter.snapshot().total_write_units() - before, 3.0);
    // A redelivery (same event, new webhook id) and a second booking change nothing.
    let again = json!({"events": [
        booking,
        booked(&p, "neurotoxin", at + SignedDuration::from_hours(1)),
    ]});
    assert_eq!(ts.send("msg_attr_again", &again).await.status, 202);
    let after = ts
        .store()
        .get_action(&ts.practice, &delivered.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.rev, rev, "no second effect");

    // A re-run of the scan records nothing twice.
    ts.stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();

    // THEN the report shows the delivery, the conversion, the revenue and the suppression.
    let today = ts.today();
    let (from, to) = (
        today.saturating_sub(1.day()).to_string(),
        today.saturating_add(1.day()).to_string(),
    );
    let args = [
        "report",
        "--practice-id",
        ts.practice.as_str(),
        "--from",
        &from,
        "--to",
        &to,
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (ok, stdout, err) = run_pil(&ts, &json_args).await;
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rebook = &report["kinds"]["rebook_nudge"];
    assert_eq!(rebook["proposed"], 1, "{report:#}");
    assert_eq!(rebook["auto_approved"], 1);
    assert_eq!(rebook["delivered"], 1);
    assert_eq!(rebook["converted"], 1);
    assert_eq!(rebook["recovered_revenue"], delivered.value);
    assert_eq!(rebook["conversion_rate"], 1.0);
    assert_eq!(rebook["suppressed"], json!({"opted_out": 1}));
    assert_eq!(
        report["kinds"]["follow_up"]["suppressed"],
        json!({"superseded": 2}),
        "both patients' follow-ups lost to their rebooks, counted once despite the re-run"
    );
    assert_eq!(report["total"]["recovered_revenue"], delivered.value);
    assert!(
        !stdout.contains(&p) && !stdout.contains(&out),
        "the report names no patient"
    );

    let (ok, table, err) = run_pil(&ts, &args).await;
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("rebook_nudge"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("$450") && row.ends_with("100.0%"), "{table}");
    assert!(table.contains("rebook_nudge: opted_out 1"), "{table}");

    let (ok, _, err) = run_pil(
        &ts,
        &[
            "report",
            "--practice-id",
            ts.practice.as_str(),
            "--from",
            &to,
            "--to",
            &from,
        ],
    )
    .await;
    assert!(!ok && err.contains("--from"), "{err}");

    // AND the next digest tells the owner about yesterday. (Moved back a day in the table:
    // the stack's clock is the real one.)
    let mut moved = after.clone();
    moved.delivered_at = Some(Timestamp::now() - SignedDuration::from_hours(24));
    let yesterday = practice.local_date(moved.delivered_at.unwrap());
    moved.converted = Some(shared::action::Conversion {
        on: yesterday,
        value: conversion.value,
    });
    assert!(ts.store().update_action(&moved).await.unwrap());
    let q = new_ref("p");
    assert_eq!(
        ts.send("msg_attr_fu", &completed(&q, "dermal_filler", 15))
            .await
            .status,
        202
    );
    let before = ts.emails().await.len();
    ts.scan_via_queue(today).await;
    let mail = eventually(WAIT, || async {
        let all = ts.emails().await;
        (all.len() > before).then(|| all.last().cloned()).flatten()
    })
    .await
    .expect("a digest for the follow-up");
    let expect = if practice.local_date(Timestamp::now()).yesterday().unwrap() == yesterday {
        format!(
            "Yesterday: 1 trigger delivered, ${} recovered",
            conversion.value
        )
    } else {
        // A DST day can make "24 hours ago" two local days back.
        "Yesterday: 0 triggers delivered, $0 recovered".to_owned()
    };
    assert!(mail.body.contains(&expect), "{}", mail.body);
    ts.stop().await;
}
