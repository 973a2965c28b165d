//! The metrics the handlers emit (embedded metric format, read from the stack's metrics file),
//! for each path a webhook and a trigger take: accepted, each class of refusal, scanned,
//! approved by policy, retried, delivered, and failed on a retired endpoint; and the owners'
//! one notice when the PMS retires its endpoint.

use pil_local::pms::Scripted;
use serde_json::Value;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::ActionId;
use shared::ports::ActionRepo;
use shared::practice::Mode;
use shared::signature::WebhookSecret;
use tests::{TestStack, WAIT, completed, eventually, new_ref};

/// The metric lines of `function` that carry `metric`, with their dimensions.
fn lines<'a>(all: &'a [Value], function: &str, metric: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|l| l["Function"] == function && l.get(metric).is_some())
        .collect()
}

fn total(all: &[Value], function: &str, metric: &str, dim: Option<(&str, &str)>) -> f64 {
    lines(all, function, metric)
        .into_iter()
        .filter(|l| dim.is_none_or(|(k, v)| l[k] == v))
        .map(|l| l[metric].as_f64().unwrap_or(0.0))
        .sum()
}

/// Every metric named in a line is declared in its `_aws` block, with a unit, under the
/// function's namespace, and every declared dimension is present.
fn well_formed(l: &Value) -> bool {
    let m = &l["_aws"]["CloudWatchMetrics"][0];
    let dims_ok = m["Dimensions"].as_array().is_some_and(|sets| {
        sets.iter().all(|d| {
            d.as_array().is_some_and(|d| {
                d.iter()
                    .all(|k| k.as_str().is_some_and(|k| l.get(k).is_some()))
            })
        })
    });
    let metrics_ok = m["Metrics"].as_array().is_some_and(|ms| {
        !ms.is_empty()
            && ms.iter().all(|x| {
                x["Unit"].is_string() && x["Name"].as_str().is_some_and(|n| l[n].is_number())
            })
    });
    dims_ok && metrics_ok && l["_aws"]["Timestamp"].is_number()
}

async fn status(ts: &TestStack, id: &ActionId) -> Option<ActionStatus> {
    ts.store()
        .get_action(&ts.practice, id)
        .await
        .ok()
        .flatten()
        .map(|a| a.status)
}

/// Waits until the metrics file has a line of `function` with `metric` summing to at least
/// `n`, and returns the file's lines.
async fn until(ts: &TestStack, function: &str, metric: &str, n: f64) -> Vec<Value> {
    eventually(WAIT, || async {
        let all = pil_aws::metrics::read_file(&ts.stack.metrics_file).ok()?;
        (total(&all, function, metric, None) >= n).then_some(all)
    })
    .await
    .unwrap_or_else(|| panic!("{function} emitted {metric} ≥ {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_path_emits_its_metrics_and_a_retired_endpoint_tells_the_owners_once() {
    let ts = TestStack::start().await.unwrap();
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;

    // Accepted.
    let p1 = new_ref("p");
    let p2 = new_ref("p");
    let batch = serde_json::json!({"events": [
        completed(&p1, "neurotoxin", 100),
        completed(&p2, "neurotoxin", 101),
    ]});
    assert_eq!(ts.send("msg_accepted", &batch).await.status, 202);
    // Refused: PHI in a ref (signed, so counted for the practice too).
    let phi = "maria.gonzalez@example.com";
    assert_eq!(
        ts.send("msg_phi", &completed(phi, "neurotoxin", 5))
            .await
            .status,
        422
    );
    // Refused: a signature the practice's secret did not make.
    let stranger = WebhookSecret::generate();
    let r = ts
        .pms
        .send(
            ts.practice.as_str(),
            &stranger,
            "msg_unsigned",
            &completed(&new_ref("p"), "neurotoxin", 5).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    // Refused before the signature: the wrong content type, a body over the limit.
    let url = format!(
        "{}/v1/practices/{}/events",
        ts.stack.api_url,
        ts.practice.as_str()
    );
    let http = reqwest::Client::new();
    let code = |r: reqwest::Response| r.status().as_u16();
    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 415);
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 413);
    // Signed but not JSON, and signed JSON that breaks the schema: refused after the
    // signature, so counted for the practice too.
    let r = ts
        .pms
        .send(ts.practice.as_str(), &ts.secret, "msg_not_json", "{nope")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = ts
        .send(
            "msg_schema",
            &serde_json::json!({"type": "appointment.teleported", "occurred_at": tests::ago(1), "data": {}}),
        )
        .await;
    assert_eq!(r.status, 422);

    // The first trigger meets a 503 and is retried, then delivered; the second meets a 410.
    ts.stack
        .pms
        .script([Scripted::status(503), Scripted::status(200)]);
    ts.scan_via_queue(ts.today()).await;
    let all = until(&ts, "trigger-emitter", "TriggersDelivered", 1.0).await;

    let receiver = "webhook-receiver";
    assert_eq!(total(&all, receiver, "WebhooksAccepted", None), 1.0);
    assert_eq!(total(&all, receiver, "Events", None), 2.0);
    // The units the accepted delivery used, from the receiver's meter: two new patients'
    // records at least (refused deliveries write nothing but their count).
    assert!(
        total(&all, receiver, "WriteUnits", None) >= 2.0,
        "{:?}",
        lines(&all, receiver, "WriteUnits")
    );
    assert_eq!(
        total(
            &all,
            receiver,
            "WebhooksRefused",
            Some(("Code", "phi_detected"))
        ),
        1.0
    );
    assert_eq!(
        total(&all, receiver, "WebhooksRefused", Some(("Status", "401"))),
        1.0
    );
    for (status, code) in [
        ("415", "unsupported_media_type"),
        ("413", "payload_too_large"),
        ("400", "malformed_json"),
    ] {
        assert_eq!(
            total(&all, receiver, "WebhooksRefused", Some(("Status", status))),
            1.0,
            "{status}"
        );
        assert_eq!(
            total(&all, receiver, "WebhooksRefused", Some(("Code", code))),
            1.0,
            "{code}"
        );
    }
    assert_eq!(
        total(&all, receiver, "WebhooksRefused", Some(("Status", "422"))),
        2.0,
        "PHI and schema"
    );
    assert_eq!(total(&all, receiver, "WebhooksRefused", None), 6.0);
    let per_practice = lines(&all, receiver, "PracticeRefusals");
    assert_eq!(
        per_practice.len(),
        3,
        "only the refusals after the signature name the practice"
    );
    assert!(
        per_practice
            .iter()
            .all(|l| l["Practice"] == ts.practice.as_str())
    );

    let scan = "scheduler-scan";
    assert!(total(&all, scan, "ScanParts", None) >= 1.0);
    assert_eq!(total(&all, scan, "ActionsCreated", None), 2.0);
    assert_eq!(total(&all, scan, "DueRead", None), 2.0);
    assert_eq!(total(&all, scan, "NightsScanned", None), 1.0);

    assert_eq!(total(&all, "approval-check", "ApprovedByPolicy", None), 2.0);

    let emitter = "trigger-emitter";
    // One of the two met the 503 first.
    assert_eq!(
        total(&all, emitter, "TriggersRetried", Some(("Outcome", "retry"))),
        1.0
    );

    // The second trigger: wait for its outcome (delivered, or the 410 below).
    let all = until(&ts, emitter, "TriggersDelivered", 2.0).await;
    assert!(
        lines(&all, emitter, "DeliveryLatency")
            .iter()
            .all(|l| l["DeliveryLatency"].as_f64().is_some_and(|ms| ms >= 0.0)),
    );
    assert_eq!(lines(&all, emitter, "DeliveryLatency").len(), 2);

    // A third action meets a 410: it fails, the endpoint is retired, and the owners get one
    // e-mail, however many triggers meet the 410.
    ts.stack
        .pms
        .script([Scripted::status(410), Scripted::status(410)]);
    let (p3, p4) = (new_ref("p"), new_ref("p"));
    let batch = serde_json::json!({"events": [
        completed(&p3, "neurotoxin", 102),
        completed(&p4, "neurotoxin", 103),
    ]});
    assert_eq!(ts.send("msg_410", &batch).await.status, 202);
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today().tomorrow().unwrap())
        .await
        .unwrap();
    assert_eq!(report.created.len(), 2);
    let ids = report.created.clone();
    let deps = ts.stack.scan_deps().unwrap();
    let batch = shared::ports::CandidateBatch {
        practice_id: ts.practice.clone(),
        scan_date: ts.today().tomorrow().unwrap(),
        action_ids: ids.clone(),
        deferred: 0,
    };
    shared::ports::CandidateSink::send_candidates(&deps.candidates, &batch)
        .await
        .unwrap();
    eventually(WAIT, || async {
        let mut done = 0;
        for id in &ids {
            let s = status(&ts, id).await;
            done += usize::from(matches!(s, Some(ActionStatus::Failed)));
        }
        (done == ids.len()).then_some(())
    })
    .await
    .expect("both fail: the first on the 410, the second on the retired endpoint");
    let all = until(&ts, "approval-check", "OwnerNotices", 1.0).await;
    // One or both met the 410 (the second may have been posted before the first retired the
    // endpoint); either way the owners hear once.
    assert!(
        total(
            &all,
            emitter,
            "TriggersFailed",
            Some(("Outcome", "endpoint_retired"))
        ) >= 1.0
    );
    let subject = "Triggers to your practice software have stopped";
    let notices = eventually(WAIT, || async {
        let n: Vec<_> = ts
            .stack
            .moto
            .sent_emails()
            .await
            .ok()?
            .into_iter()
            .filter(|m| m.subject == subject)
            .collect();
        (!n.is_empty()).then_some(n)
    })
    .await
    .expect("the owners are told");
    assert_eq!(notices.len(), 1, "one notice");
    assert!(notices[0].body.contains("HTTP 410"));
    assert_eq!(total(&all, "approval-check", "OwnerNotices", None), 1.0);

    // While triggers are stopped, every digest says so.
    ts.set_mode(ActionKind::RebookNudge, Mode::Approve).await;
    let p5 = new_ref("p");
    assert_eq!(
        ts.send("msg_after_410", &completed(&p5, "neurotoxin", 104))
            .await
            .status,
        202
    );
    let day = ts.today().tomorrow().unwrap().tomorrow().unwrap();
    let report = deps.scan(&ts.practice, day).await.unwrap();
    assert_eq!(report.created.len(), 1);
    let batch = shared::ports::CandidateBatch {
        practice_id: ts.practice.clone(),
        scan_date: day,
        action_ids: report.created.clone(),
        deferred: 0,
    };
    shared::ports::CandidateSink::send_candidates(&deps.candidates, &batch)
        .await
        .unwrap();
    let digest = eventually(WAIT, || async {
        ts.stack
            .moto
            .sent_emails()
            .await
            .ok()?
            .into_iter()
            .find(|m| m.subject.contains("awaiting approval"))
    })
    .await
    .expect("a digest");
    assert!(
        digest.body.contains("Action needed.")
            && digest
                .body
                .contains(shared::service::approval::TRIGGERS_STOPPED),
        "the digest says triggers stopped"
    );

    // Every line is well-formed EMF, and none carries anything of a request body.
    assert!(all.iter().all(well_formed), "well-formed EMF");
    let text = std::fs::read_to_string(&ts.stack.metrics_file).unwrap();
    for secret in [phi, "maria", p1.as_str(), p3.as_str()] {
        assert!(!text.contains(secret), "a metric carries {secret}");
    }
    ts.stop().await;
}
