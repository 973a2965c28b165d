//! The `events/` fixtures (also for `cargo lambda invoke --data-file`) parse as their Lambda
//! event types and run through the real handlers against the local stack.

use std::path::PathBuf;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use pil_local::stack::Handler;
use tests::TestStack;

fn fixture<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ev<T>(p: T) -> LambdaEvent<T> {
    LambdaEvent::new(p, Context::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_runs_through_its_handler() {
    let ts = TestStack::start().await.unwrap();
    let h = &ts.stack.handlers;
    let find = |bin: &str| {
        h.iter()
            .find(|(_, f)| {
                matches!(
                    (bin, f),
                    ("receiver", Handler::Receiver(_))
                        | ("scan", Handler::Scan(_))
                        | ("approval", Handler::Approval(_))
                        | ("page", Handler::Page(_))
                        | ("emitter", Handler::Emitter(_))
                )
            })
            .map(|(_, f)| f)
            .unwrap()
    };

    // The webhook fixture's signature is a placeholder (and its timestamp old): 401, nothing stored.
    let Handler::Receiver(d) = find("receiver") else {
        unreachable!()
    };
    let resp = webhook_receiver::handler(
        d,
        ev(fixture::<ApiGatewayV2httpRequest>(
            "webhook-receiver/post-events.json",
        )),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 401);

    let Handler::Scan(d) = find("scan") else {
        unreachable!()
    };
    for f in [
        "scheduler-scan/sqs-tick.json",
        "scheduler-scan/sqs-scan.json",
        "scheduler-scan/sqs-slot-opened.json",
    ] {
        let r = scheduler_scan::handler(d, ev(fixture::<SqsEvent>(f)))
            .await
            .unwrap();
        assert!(r.batch_item_failures.is_empty(), "{f}");
    }

    let Handler::Approval(d) = find("approval") else {
        unreachable!()
    };
    // The candidates fixture names an action that does not exist: nothing to mail, no failure.
    let r = approval_check::handler(
        d,
        ev(fixture::<SqsEvent>("approval-check/sqs-candidates.json")),
    )
    .await
    .unwrap();
    assert!(r.batch_item_failures.is_empty());

    let Handler::Page(d) = find("page") else {
        unreachable!()
    };
    let resp = approval_page::handler(
        d,
        ev(fixture::<ApiGatewayV2httpRequest>(
            "approval-page/get-approval-page.json",
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.status_code, 400,
        "a malformed token gets the 'not valid' page"
    );
    assert_eq!(
        resp.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    let Handler::Emitter(d) = find("emitter") else {
        unreachable!()
    };
    let r = trigger_emitter::handler(
        d,
        ev(fixture::<SqsEvent>(
            "trigger-emitter/sqs-action-approved.json",
        )),
    )
    .await
    .unwrap();
    assert!(
        r.batch_item_failures.is_empty(),
        "an unknown action is acknowledged, not retried"
    );
    assert!(ts.stack.pms.received().is_empty(), "and nothing was sent");
    ts.stop().await;
}
