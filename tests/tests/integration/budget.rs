//! The nightly budget through the real stack: a night proposes at most the practice's budget,
//! highest estimated value and most overdue first, in every mode; the rest come on later
//! nights in the same order, once each.

use serde_json::json;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::OpaqueRef;
use shared::ports::{ActionLog, PatientIndex};
use shared::practice::Mode;
use shared::service::admin::{self, KindChange, PracticeUpdate};
use shared::service::scan::ScanReport;
use shared::treatment::Treatment;
use tests::{TestStack, completed, new_ref};

async fn scan(ts: &TestStack, day: jiff::civil::Date) -> ScanReport {
    ts.stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, day)
        .await
        .unwrap()
}

/// The patients whose actions a scan created, in the order it created them.
async fn patients_of(ts: &TestStack, report: &ScanReport) -> Vec<String> {
    let all = ts.store().practice_actions(&ts.practice).await.unwrap();
    report
        .created
        .iter()
        .map(|id| {
            all.iter()
                .find(|a| a.id == *id)
                .map(|a| a.patient_ref.as_str().to_owned())
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_proposes_at_most_its_budget_and_the_rest_follow_in_order() {
    let ts = TestStack::start().await.unwrap();
    // Auto mode: auto-approved actions count against the budget like any other.
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    admin::set_policy(
        ts.store(),
        &ts.practice,
        None,
        KindChange {
            nightly_budget: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    admin::update_practice(
        ts.store(),
        &ts.practice,
        PracticeUpdate {
            avg_ticket: vec![
                (Treatment::Neurotoxin, Some(400)),
                (Treatment::DermalFiller, Some(900)),
            ],
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    // Five neurotoxin rebooks overdue by 5 to 25 days (same value), one filler rebook worth
    // more and barely overdue.
    let tox: Vec<String> = (0..5).map(|_| new_ref("p")).collect();
    let filler = new_ref("p");
    let mut events: Vec<serde_json::Value> = tox
        .iter()
        .enumerate()
        .map(|(i, p)| completed(p, "neurotoxin", 95 + 5 * i as i64))
        .collect();
    events.push(completed(&filler, "dermal_filler", 182));
    let r = ts.send("msg_budget", &json!({ "events": events })).await;
    assert_eq!(r.status, 202, "{}", r.body);

    let night1 = ts.today();
    let first = scan(&ts, night1).await;
    assert_eq!(first.created.len(), 3, "{first:?}");
    assert_eq!(first.deferred, 3);
    assert_eq!(
        patients_of(&ts, &first).await,
        vec![filler.clone(), tox[4].clone(), tox[3].clone()],
        "highest value first, then the most overdue"
    );
    // The same night again proposes nothing more.
    let again = scan(&ts, night1).await;
    assert!(again.created.is_empty() && again.deferred == 0, "{again:?}");

    // The next night: the three that waited, in the same order.
    let night2 = night1.tomorrow().unwrap();
    let second = scan(&ts, night2).await;
    assert_eq!(
        patients_of(&ts, &second).await,
        vec![tox[2].clone(), tox[1].clone(), tox[0].clone()]
    );
    assert_eq!(second.deferred, 0);
    let third = scan(&ts, night2.tomorrow().unwrap()).await;
    assert!(third.created.is_empty(), "nothing left: {third:?}");

    // One action per patient, none lost, none twice; every one auto-approved or on its way.
    for p in tox.iter().chain([&filler]) {
        let mine = ts
            .store()
            .actions_of(&ts.practice, &OpaqueRef::parse(p).unwrap())
            .await
            .unwrap();
        let proposed: Vec<_> = mine.iter().filter(|a| !a.suppressed_by_scan()).collect();
        assert_eq!(proposed.len(), 1, "{p}: {mine:?}");
        assert!(
            matches!(
                proposed[0].status,
                ActionStatus::Proposed
                    | ActionStatus::Pending
                    | ActionStatus::Approved
                    | ActionStatus::Delivered
            ),
            "{:?}",
            proposed[0].status
        );
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_held_back_by_a_deferred_proposal_waits_one_night_not_the_cooldown() {
    let ts = TestStack::start().await.unwrap();
    admin::set_policy(
        ts.store(),
        &ts.practice,
        None,
        KindChange {
            nightly_budget: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Q's filler rebook is worth the most and takes the night's one place. P has two rebooks
    // due (neurotoxin and a peel): one is P's proposal for tonight, deferred by the budget,
    // the other is held back by the cooldown that proposal would start.
    let (p, q) = (new_ref("p"), new_ref("p"));
    let batch = json!({"events": [
        completed(&q, "dermal_filler", 190),
        completed(&p, "neurotoxin", 100),
        completed(&p, "chemical_peel", 35),
    ]});
    assert_eq!(ts.send("msg_held", &batch).await.status, 202);
    let night1 = ts.today();
    let first = scan(&ts, night1).await;
    assert_eq!(patients_of(&ts, &first).await, vec![q.clone()]);
    assert_eq!(first.deferred, 1);
    // Nothing reached P tonight, so both of P's records are looked at again tomorrow.
    let tomorrow = night1.tomorrow().unwrap();
    for t in [Treatment::Neurotoxin, Treatment::ChemicalPeel] {
        let rec = shared::ports::EntityRepo::get_entity(
            ts.store(),
            &ts.practice,
            &shared::state::EntityKey::PatientTreatment(OpaqueRef::parse(&p).unwrap(), t),
        )
        .await
        .unwrap()
        .unwrap();
        let shared::state::Entity::PatientTreatment(pt) = rec.value else {
            panic!("a treatment record")
        };
        assert_eq!(pt.recheck_on, Some(tomorrow), "{t:?}");
    }
    let second = scan(&ts, tomorrow).await;
    assert_eq!(patients_of(&ts, &second).await, vec![p.clone()]);
    ts.stop().await;
}
