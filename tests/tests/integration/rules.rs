//! Each gap rule through the real stack (moto, HTTP), with its suppressions.

use serde_json::json;
use shared::action::{Action, ActionKind, ActionStatus, Reason};
use shared::ids::OpaqueRef;
use shared::ports::{ActionRepo, PatientIndex, PracticeRepo};
use shared::practice::Mode;
use shared::service::scan::{ScanReport, Suppression};
use tests::{TestStack, ago, completed, new_ref};

async fn scan(ts: &TestStack) -> ScanReport {
    ts.stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap()
}

/// Every action stored for the patient, suppressed gaps included.
async fn stored(ts: &TestStack, patient: &str) -> Vec<Action> {
    ts.store()
        .actions_of(&ts.practice, &OpaqueRef::parse(patient).unwrap())
        .await
        .unwrap()
}

/// The actions proposed for the patient (not the suppressed gaps).
async fn actions(ts: &TestStack, patient: &str) -> Vec<Action> {
    let mut v = stored(ts, patient).await;
    v.retain(|a| !a.suppressed_by_scan());
    v
}

/// The patient's suppressed gaps, as recorded for the report: kind and reason, by kind.
async fn suppressions(ts: &TestStack, patient: &str) -> Vec<(ActionKind, Suppression)> {
    let mut v: Vec<_> = stored(ts, patient)
        .await
        .into_iter()
        .filter(|a| a.suppressed_by_scan())
        .filter_map(|a| a.suppression.map(|r| (a.kind, r)))
        .collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

fn kinds(report: &ScanReport) -> Vec<(ActionKind, Suppression)> {
    report.suppressed.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_series_and_win_back_fire_with_precedence() {
    let ts = TestStack::start().await.unwrap();
    let (fu, series, lapsed) = (new_ref("p"), new_ref("p"), new_ref("p"));
    let body = json!({"events": [
        completed(&fu, "neurotoxin", 15),
        {"type": "appointment.completed", "occurred_at": ago(45), "data": {"appointment_ref": new_ref("appt"), "patient_ref": series,
            "treatment": "laser_hair_removal", "series": {"index": 2, "of": 6}}},
        completed(&lapsed, "dermal_filler", 400),
    ]});
    assert_eq!(ts.send("msg_rules_1", &body).await.status, 202);
    let report = scan(&ts).await;
    assert_eq!(report.created.len(), 3, "{report:?}");
    let one = |v: Vec<Action>| {
        v.into_iter()
            .map(|a| (a.kind, a.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        one(actions(&ts, &fu).await),
        vec![(ActionKind::FollowUp, Reason::FollowUpDue)]
    );
    assert_eq!(
        one(actions(&ts, &series).await),
        vec![(ActionKind::SeriesContinue, Reason::SeriesNextDue)]
    );
    assert_eq!(
        one(actions(&ts, &lapsed).await),
        vec![(ActionKind::WinBack, Reason::Lapsed)],
        "win-back over rebook over follow-up"
    );
    let superseded = kinds(&report)
        .iter()
        .filter(|(_, s)| *s == Suppression::Superseded)
        .count();
    assert_eq!(
        superseded, 2,
        "the lapsed patient's follow-up and rebook were superseded"
    );
    assert_eq!(
        suppressions(&ts, &lapsed).await,
        vec![
            (ActionKind::RebookNudge, Suppression::Superseded),
            (ActionKind::FollowUp, Suppression::Superseded)
        ],
        "recorded under their own kinds"
    );
    let all = stored(&ts, &lapsed).await.len();
    assert!(scan(&ts).await.created.is_empty(), "a re-run adds nothing");
    assert_eq!(
        stored(&ts, &lapsed).await.len(),
        all,
        "and records nothing twice"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_show_recovery_unless_rebooked() {
    let ts = TestStack::start().await.unwrap();
    let (missed, rebooked) = (new_ref("p"), new_ref("p"));
    let (a1, a2) = (new_ref("appt"), new_ref("appt"));
    let book = |appt: &str, p: &str, when: &str, days_ago: i64| {
        json!({"type": "appointment.booked", "occurred_at": ago(days_ago),
        "data": {"appointment_ref": appt, "patient_ref": p, "treatment": "neurotoxin", "provider_ref": new_ref("prov"), "starts_at": when, "duration_min": 30}})
    };
    let past = ago(4);
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 5)).to_string();
    let body = json!({"events": [
        book(&a1, &missed, &past, 10),
        {"type": "appointment.no_show", "occurred_at": ago(4), "data": {"appointment_ref": a1}},
        book(&a2, &rebooked, &past, 10),
        {"type": "appointment.no_show", "occurred_at": ago(4), "data": {"appointment_ref": a2}},
        book(&new_ref("appt"), &rebooked, &future, 1),
    ]});
    assert_eq!(ts.send("msg_ns", &body).await.status, 202);
    let report = scan(&ts).await;
    assert_eq!(
        actions(&ts, &missed)
            .await
            .iter()
            .map(|a| a.kind)
            .collect::<Vec<_>>(),
        vec![ActionKind::NoShowRecovery]
    );
    assert!(actions(&ts, &rebooked).await.is_empty());
    assert_eq!(
        suppressions(&ts, &rebooked).await,
        vec![(ActionKind::NoShowRecovery, Suppression::BookedAhead)]
    );
    assert!(kinds(&report).contains(&(ActionKind::NoShowRecovery, Suppression::BookedAhead)));
    assert!(
        scan(&ts).await.created.is_empty(),
        "settled: a re-run adds nothing"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_monthly_cap_and_kind_off_suppress() {
    let ts = TestStack::start().await.unwrap();
    // One patient, two categories due the same night: one message, the other cools down.
    let p = new_ref("p");
    let body =
        json!({"events": [completed(&p, "neurotoxin", 100), completed(&p, "chemical_peel", 40)]});
    assert_eq!(ts.send("msg_cd", &body).await.status, 202);
    let report = scan(&ts).await;
    assert_eq!(report.created.len(), 1);
    assert!(
        kinds(&report)
            .iter()
            .any(|(_, s)| *s == Suppression::Cooldown),
        "{report:?}"
    );

    // Cap: cooldown 0, at most 1 nudge per 30 days; a second category is capped.
    let mut practice = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    let v = practice.version;
    practice.policy.cooldown_days = 0;
    practice.policy.max_nudges_per_30_days = 1;
    practice.version += 1;
    ts.store().put_practice(&practice, Some(v)).await.unwrap();
    assert_eq!(
        ts.send(
            "msg_cap",
            &json!({"events": [completed(&p, "microneedling", 40)]})
        )
        .await
        .status,
        202
    );
    let report = scan(&ts).await;
    assert!(report.created.is_empty());
    assert!(
        kinds(&report).contains(&(ActionKind::RebookNudge, Suppression::MonthlyCap)),
        "{report:?}"
    );

    // A kind switched off is suppressed, not proposed.
    ts.set_mode(ActionKind::FollowUp, Mode::Off).await;
    let q = new_ref("p");
    assert_eq!(
        ts.send("msg_off", &completed(&q, "dermal_filler", 15))
            .await
            .status,
        202
    );
    let report = scan(&ts).await;
    assert!(
        kinds(&report).contains(&(ActionKind::FollowUp, Suppression::KindOff)),
        "{report:?}"
    );
    assert!(actions(&ts, &q).await.is_empty());
    assert_eq!(
        suppressions(&ts, &q).await,
        vec![(ActionKind::FollowUp, Suppression::KindOff)]
    );
    // The patient's three categories: one nudge, one cooled down, one capped.
    assert_eq!(actions(&ts, &p).await.len(), 1);
    let mut reasons: Vec<Suppression> = suppressions(&ts, &p)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    reasons.retain(|r| *r != Suppression::Superseded);
    reasons.sort_by_key(|r| r.as_str());
    assert_eq!(
        reasons,
        vec![Suppression::Cooldown, Suppression::MonthlyCap]
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_gap_becomes_the_action_once_it_may_be_acted_on() {
    let ts = TestStack::start().await.unwrap();
    let p = new_ref("p");
    let out =
        json!({"type": "patient.opted_out", "occurred_at": ago(1), "data": {"patient_ref": p}});
    let body = json!({"events": [completed(&p, "neurotoxin", 95), out]});
    assert_eq!(ts.send("msg_revive_1", &body).await.status, 202);
    assert!(scan(&ts).await.created.is_empty());
    let recorded = stored(&ts, &p)
        .await
        .into_iter()
        .find(|a| a.kind == ActionKind::RebookNudge)
        .unwrap();
    assert_eq!(recorded.suppression, Some(Suppression::OptedOut));

    // WHEN the patient opts back in and the gap is looked at again a week later
    let back_in =
        json!({"type": "patient.opted_in", "occurred_at": ago(0), "data": {"patient_ref": p}});
    assert_eq!(ts.send("msg_revive_2", &back_in).await.status, 202);
    let later = ts.today().saturating_add(jiff::ToSpan::days(7));
    let deps = ts.stack.scan_deps().unwrap();
    let report = deps.scan(&ts.practice, later).await.unwrap();

    // THEN the suppression record becomes the proposed action: same id, no reason, once
    assert_eq!(report.created, vec![recorded.id.clone()]);
    let now = ts
        .store()
        .get_action(&ts.practice, &recorded.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(now.status, ActionStatus::Suppressed);
    assert_eq!(now.suppression, None);
    assert!(
        deps.scan(&ts.practice, later)
            .await
            .unwrap()
            .created
            .is_empty()
    );
    assert_eq!(actions(&ts, &p).await.len(), 1);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_gaps_are_settled_as_suppressed_and_never_proposed() {
    let ts = TestStack::start().await.unwrap();
    let (late_fu, fresh_fu, missed, lapsed, overridden) = (
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
    );
    let appt = new_ref("appt");
    let body = json!({"events": [
        // Follow-up due 11 days ago: past its 7-day window.
        completed(&late_fu, "neurotoxin", 25),
        // Follow-up due 6 days ago: inside it.
        completed(&fresh_fu, "neurotoxin", 20),
        // A no-show 20 days ago: recovery due 18 days ago, past its 12-day window.
        {"type": "appointment.booked", "occurred_at": ago(30), "data": {"appointment_ref": appt,
            "patient_ref": missed, "treatment": "facial", "provider_ref": new_ref("prov"),
            "starts_at": ago(20), "duration_min": 30}},
        {"type": "appointment.no_show", "occurred_at": ago(20), "data": {"appointment_ref": appt}},
        // Neurotoxin 600 days ago: the win-back was due 420 days ago, past its 180 days; the
        // rebook it supersedes does not fire either.
        completed(&lapsed, "neurotoxin", 600),
    ]});
    assert_eq!(ts.send("msg_stale", &body).await.status, 202);
    let report = scan(&ts).await;
    assert!(actions(&ts, &late_fu).await.is_empty());
    assert_eq!(
        suppressions(&ts, &late_fu).await,
        vec![(ActionKind::FollowUp, Suppression::Stale)]
    );
    assert_eq!(
        actions(&ts, &fresh_fu)
            .await
            .iter()
            .map(|a| a.kind)
            .collect::<Vec<_>>(),
        vec![ActionKind::FollowUp]
    );
    assert!(actions(&ts, &missed).await.is_empty());
    assert_eq!(
        suppressions(&ts, &missed).await,
        vec![(ActionKind::NoShowRecovery, Suppression::Stale)]
    );
    assert!(actions(&ts, &lapsed).await.is_empty());
    assert!(
        suppressions(&ts, &lapsed)
            .await
            .contains(&(ActionKind::WinBack, Suppression::Stale))
    );
    assert_eq!(
        report
            .suppressed
            .iter()
            .filter(|(_, r)| *r == Suppression::Stale)
            .count(),
        3
    );
    // Settled for good: the next night neither proposes nor suppresses them again.
    let again = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today().tomorrow().unwrap())
        .await
        .unwrap();
    assert!(
        again.created.is_empty() && again.suppressed.is_empty(),
        "{again:?}"
    );
    // The report counts them by reason.
    let today = ts.today();
    let r = shared::service::report::report(
        ts.store(),
        ts.store(),
        &ts.practice,
        today,
        today,
        jiff::Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(r.total.suppressed.get("stale"), Some(&3));

    // A practice that allows follow-ups two weeks late gets the same late one proposed.
    shared::service::admin::update_practice(
        ts.store(),
        &ts.practice,
        shared::service::admin::PracticeUpdate {
            stale_after_days: vec![(ActionKind::FollowUp, Some(14))],
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    let p = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.stale_after_days(ActionKind::FollowUp), Some(14));
    let body = completed(&overridden, "neurotoxin", 25);
    assert_eq!(ts.send("msg_stale_2", &body).await.status, 202);
    scan(&ts).await;
    assert_eq!(
        actions(&ts, &overridden)
            .await
            .iter()
            .map(|a| a.kind)
            .collect::<Vec<_>>(),
        vec![ActionKind::FollowUp]
    );
    ts.stop().await;
}
