//! Small helpers shared by the handlers for API Gateway (HTTP API, payload v2) and SQS events.

use std::future::Future;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use http::HeaderValue;
use shared::ids::{ActionId, PracticeId};
use tracing::Instrument;
use tracing::field::{Empty, display};

/// The raw request body bytes (API Gateway base64-encodes non-text bodies).
/// `None` when the body claims base64 but is not.
pub fn request_body(req: &ApiGatewayV2httpRequest) -> Option<Vec<u8>> {
    match (&req.body, req.is_base64_encoded) {
        (None, _) => Some(Vec::new()),
        (Some(b), false) => Some(b.as_bytes().to_vec()),
        (Some(b), true) => STANDARD.decode(b).ok(),
    }
}

pub fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn response(
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &[(&'static str, &'static str)],
) -> ApiGatewayV2httpResponse {
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers
        .insert("content-type", HeaderValue::from_static(content_type));
    for (k, v) in extra {
        r.headers.insert(*k, HeaderValue::from_static(v));
    }
    r.body = Some(Body::Text(body));
    r.is_base64_encoded = false;
    r
}

pub fn json_response(status: u16, body: &serde_json::Value) -> ApiGatewayV2httpResponse {
    response(
        status,
        "application/json",
        body.to_string(),
        &[("cache-control", "no-store")],
    )
}

/// Headers for every page an owner sees (docs/contracts.md, Approval links). The CSP allows
/// no script, nothing fetched, and exactly one stylesheet: the pages' `<style>` element, by its SHA-256
/// (`shared::service::approval::page_style_csp_source`), whose fonts are inline `data:`
/// URIs. Computed once per cold start (the handler warms it in init).
pub fn page_headers() -> &'static [(&'static str, &'static str)] {
    static HEADERS: std::sync::OnceLock<Vec<(&'static str, &'static str)>> =
        std::sync::OnceLock::new();
    HEADERS.get_or_init(|| {
        let csp: &'static str = Box::leak(
            format!(
                "default-src 'none'; style-src {}; font-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
                shared::service::approval::page_style_csp_source()
            )
            .into_boxed_str(),
        );
        vec![
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("content-security-policy", csp),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ]
    })
}

/// What became of one SQS message, as its handler decides. Every queue the handlers consume
/// has a redrive policy to its own dead-letter queue (alarmed) after a few receives
/// (docs/operations.md, Queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Handled, or nothing to do: deleted from the queue.
    Done,
    /// Failed for now: reported as a batch item failure, so SQS delivers it again once its
    /// visibility timeout (or the delay the handler set on it) has passed. After the queue's
    /// `maxReceiveCount` receives, the redrive policy moves it to the dead-letter queue, so a
    /// handler also retries a failure it wants an operator to see there.
    Retry,
    /// Can never be handled (unreadable, refused for good): deleted from the queue, like
    /// `Done`, rather than received again only to fail again until the redrive policy moves
    /// it. The handler has logged why at error level (with an `alert` when someone must act),
    /// or put the message in a dead-letter queue itself (the emitter does).
    DeadLetter,
}

/// Runs `per_message` on each message of `event`, at most `concurrency` at a time, and
/// answers with the messages to retry (partial batch failures: the event source mapping
/// needs `FunctionResponseTypes: [ReportBatchItemFailures]`).
///
/// Each message runs inside an `sqs_message` span that carries `message_id`, and
/// `practice_id` and `action_id` once the handler knows them ([`record_practice`],
/// [`record_action`]): every line logged while the message is handled names them, so the
/// log calls do not repeat them. The span is at error level so that it is enabled whenever
/// any of those lines is (a span filtered out would take its fields with it).
pub async fn sqs_batch<F, Fut>(
    event: SqsEvent,
    concurrency: usize,
    per_message: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Disposition>,
{
    let failed: Vec<String> = futures::stream::iter(event.records.into_iter().map(|m| {
        let id = m.message_id.clone().unwrap_or_default();
        let span = tracing::error_span!(
            "sqs_message",
            message_id = %id,
            practice_id = Empty,
            action_id = Empty
        );
        let handled = per_message(m);
        async move { (handled.await == Disposition::Retry).then_some(id) }.instrument(span)
    }))
    .buffer_unordered(concurrency.max(1))
    .filter_map(|failed| async move { failed })
    .collect()
    .await;
    batch_failures(failed)
}

/// Names the practice the current message is about on its span ([`sqs_batch`]).
pub fn record_practice(practice_id: &PracticeId) {
    tracing::Span::current().record("practice_id", display(practice_id));
}

/// Names the action the current message is about on its span ([`sqs_batch`]).
pub fn record_action(action_id: &ActionId) {
    tracing::Span::current().record("action_id", display(action_id));
}

fn batch_failures(ids: Vec<String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = ids
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
    use shared::ids::{ActionId, PracticeId};

    use super::{Disposition, page_headers, record_action, record_practice, sqs_batch};

    fn event(bodies: &[&str]) -> SqsEvent {
        let mut e = SqsEvent::default();
        e.records = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m-{i}"));
                m.body = Some((*b).to_owned());
                m
            })
            .collect();
        e
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The tests that run `sqs_batch` one at a time: its span's callsite caches whether any
    /// subscriber wants it, and a test running it without one beside the test that logs could
    /// leave that cache saying no.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn disposition(body: &str) -> Disposition {
        match body {
            "done" => Disposition::Done,
            "retry" => Disposition::Retry,
            _ => Disposition::DeadLetter,
        }
    }

    #[test]
    fn only_retried_messages_are_batch_failures() {
        let _serial = serial();
        let bodies = ["done", "retry", "dead", "retry", "done", "dead"];
        let resp = block_on(sqs_batch(event(&bodies), 2, |m| async move {
            disposition(m.body.as_deref().unwrap_or_default())
        }));
        let mut failed: Vec<&str> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        failed.sort_unstable();
        assert_eq!(failed, ["m-1", "m-3"]);

        let all_done = block_on(sqs_batch(event(&["done", "dead"]), 4, |m| async move {
            disposition(m.body.as_deref().unwrap_or_default())
        }));
        assert!(all_done.batch_item_failures.is_empty());
    }

    #[test]
    fn at_most_the_bound_run_at_once() {
        let _serial = serial();
        for bound in [1, 3] {
            let (running, peak, seen) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            let resp = block_on(sqs_batch(event(&["done"; 10]), bound, |_| async {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                seen.fetch_add(1, Ordering::SeqCst);
                Disposition::Done
            }));
            assert!(resp.batch_item_failures.is_empty());
            assert_eq!(seen.load(Ordering::SeqCst), 10, "every message ran");
            assert_eq!(peak.load(Ordering::SeqCst), bound, "bound {bound}");
        }
    }

    /// Log lines as the handlers write them in Lambda (JSON, the current span's fields).
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn each_message_logs_inside_a_span_naming_it() {
        let _serial = serial();
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // This subscriber wants the span, whatever an earlier test left cached.
            tracing::callsite::rebuild_interest_cache();
            block_on(sqs_batch(
                event(&["pr-1", "pr-2", "-"]),
                3,
                |m| async move {
                    let body = m.body.unwrap_or_default();
                    if body != "-" {
                        record_practice(&PracticeId::parse(&body).unwrap());
                        tokio::task::yield_now().await;
                        record_action(&ActionId::derive(&[&body]));
                    }
                    tokio::task::yield_now().await;
                    tracing::warn!(outcome = "handled", "message handled");
                    Disposition::Done
                },
            ))
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let mut spans: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["outcome"], "handled", "{l}");
                assert_eq!(v["span"]["name"], "sqs_message", "{l}");
                v["span"].clone()
            })
            .collect();
        spans.sort_by_key(|s| s["message_id"].as_str().unwrap_or_default().to_owned());
        assert_eq!(spans.len(), 3, "{text}");
        for (i, p) in ["pr-1", "pr-2"].iter().enumerate() {
            assert_eq!(spans[i]["message_id"], format!("m-{i}"));
            assert_eq!(spans[i]["practice_id"], *p);
            assert_eq!(spans[i]["action_id"], ActionId::derive(&[p]).as_str());
        }
        assert_eq!(spans[2]["message_id"], "m-2");
        assert!(spans[2].get("practice_id").is_none() && spans[2].get("action_id").is_none());
    }

    #[test]
    fn page_csp_allows_exactly_the_pages_stylesheet() {
        let csp = page_headers()
            .iter()
            .find(|(k, _)| *k == "content-security-policy")
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let source = shared::service::approval::page_style_csp_source();
        assert!(
            csp.contains(&format!("style-src {source};")),
            "the CSP must allow the page stylesheet {source}"
        );
        assert!(csp.starts_with("default-src 'none';"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"));
    }
}
