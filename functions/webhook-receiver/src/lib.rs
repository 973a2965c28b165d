//! webhook-receiver: `POST /v1/practices/{practice_id}/events` behind API Gateway (HTTP API).
//! Parses the request, calls the domain, maps the result. Logs carry ids, counts and reason
//! codes; never the body.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{header, json_response, request_body};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar};
use shared::ids::PracticeId;
use shared::service::receiver::{self, Delivery, ReceiveError, ReceiverDeps};
use shared::signature::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignedHeaders};

/// Built once per cold start.
#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub bus: EventBus,
    pub metrics: Metrics,
    /// The store's meter: the units a delivery used become its metrics.
    pub meter: Meter,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter.clone())?,
            meter,
            bus: EventBus::new(clients.eventbridge.clone(), config.get("EVENT_BUS_NAME")?),
            metrics: Metrics::new(config, "webhook-receiver"),
        })
    }
}

pub async fn handler(
    deps: &Deps,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    Ok(handle(deps, &event.payload).await)
}

pub async fn handle(deps: &Deps, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let practice_id = req.path_parameters.get("practice_id").map(String::as_str);
    let Some(body) = request_body(req) else {
        return refuse(
            &deps.metrics,
            practice_id,
            None,
            &ReceiveError::Refused(shared::inbound::Refusal {
                code: shared::inbound::RefusalCode::MalformedJson,
                field: String::new(),
                rule: "json",
            }),
        );
    };
    let delivery = Delivery {
        practice_id,
        content_type: header(req, "content-type"),
        headers: SignedHeaders {
            // Present but not visible ASCII (`header` reads such a value as absent): malformed,
            // not missing, so it gets the `webhook_id_format` refusal.
            id: req.headers.get(HEADER_ID).map(|v| v.to_str().unwrap_or("")),
            timestamp: header(req, HEADER_TIMESTAMP),
            signature: header(req, HEADER_SIGNATURE),
        },
        body: &body,
    };
    let rd = ReceiverDeps {
        practices: &deps.adapters.store,
        entities: &deps.adapters.store,
        actions: &deps.adapters.store,
        records: &deps.adapters.store,
        tombstones: &deps.adapters.store,
        patients: &deps.adapters.store,
        bus: &deps.bus,
        slots: &deps.adapters.store,
        audit: &deps.adapters.store,
        secrets: &deps.adapters.secrets,
        clock: &deps.adapters.clock,
        refusals: &deps.adapters.store,
    };
    let before = deps.meter.snapshot();
    match receiver::receive(&rd, delivery).await {
        Ok(a) => {
            // `a.webhook_id` passed `verify`, so it is well-formed (and signed).
            tracing::info!(practice_id = %a.practice_id, webhook_id = %a.webhook_id, events = a.events, changed = a.changed,
                published = a.published, status = 202, "webhook accepted");
            deps.metrics.emit(
                None,
                &[],
                &[
                    ("WebhooksAccepted", 1.0, Unit::Count),
                    ("Events", a.events as f64, Unit::Count),
                    ("RecordsChanged", a.changed as f64, Unit::Count),
                ],
            );
            // With the meter off (as in tests that pass a disabled one) both are 0: not written.
            let used = deps.meter.snapshot();
            let write = used.total_write_units() - before.total_write_units();
            let read = used.read_units - before.read_units;
            if write > 0.0 || read > 0.0 {
                deps.metrics.emit(
                    None,
                    &[],
                    &[
                        ("WriteUnits", write, Unit::Count),
                        ("ReadUnits", read, Unit::Count),
                    ],
                );
            }
            json_response(
                202,
                &serde_json::json!({"accepted": a.events, "webhook_id": a.webhook_id}),
            )
        }
        Err(e) => refuse(&deps.metrics, practice_id, delivery.headers.id, &e),
    }
}

fn refuse(
    metrics: &Metrics,
    practice_id: Option<&str>,
    webhook_id: Option<&str>,
    e: &ReceiveError,
) -> ApiGatewayV2httpResponse {
    // Ids only if they are well-formed: a path or a header could carry anything. A refused
    // delivery is not authenticated, so of the well-formed webhook-ids only the token-shaped
    // ones are logged (`[A-Za-z0-9_-]`, at most 64): one with `@`, `.` or `/` may be an address.
    let practice = practice_id
        .filter(|p| shared::ids::PracticeId::parse(p).is_ok())
        .unwrap_or("-");
    let wid = webhook_id
        .filter(|w| {
            signature::webhook_id_well_formed(w)
                && w.len() <= 64
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .unwrap_or("-");
    let status = status_of(e);
    if status >= 500 {
        tracing::error!(practice_id = practice, webhook_id = wid, status, reason = %e.reason(), "webhook not processed; PMS will retry");
    } else {
        tracing::warn!(practice_id = practice, webhook_id = wid, status, reason = %e.reason(), "webhook refused");
    }
    let (code, rule) = refusal_kind(e);
    // The practice is a dimension only for a refusal of a signed delivery (an unsigned one
    // could name any id): the per-practice refusal alarm and `pil status` count those.
    let signed = match e {
        ReceiveError::Refused(_) => practice_id.and_then(|p| PracticeId::parse(p).ok()),
        _ => None,
    };
    let metric = if status >= 500 {
        "WebhooksUnavailable"
    } else {
        "WebhooksRefused"
    };
    metrics.emit(
        None,
        &[
            ("Status", status_str(status)),
            ("Code", code),
            ("Rule", rule),
        ],
        &[(metric, 1.0, Unit::Count)],
    );
    if let Some(p) = &signed {
        metrics.emit(Some(p), &[], &[("PracticeRefusals", 1.0, Unit::Count)]);
    }
    let mut resp = json_response(status, &body_of(e));
    if status == 503 {
        resp.headers
            .insert("retry-after", http::HeaderValue::from_static("5"));
    }
    resp
}

/// The HTTP status of a refusal (docs/contracts.md, Responses). An unknown practice is
/// answered exactly as the signature refusal it carries.
pub fn status_of(e: &ReceiveError) -> u16 {
    use shared::inbound::RefusalCode;
    use shared::signature::SignatureError;
    match e {
        ReceiveError::UnsupportedMediaType => 415,
        ReceiveError::TooLarge => 413,
        ReceiveError::Signature(SignatureError::BodyNotUtf8)
        | ReceiveError::UnknownPractice(SignatureError::BodyNotUtf8) => 400,
        ReceiveError::Signature(_) | ReceiveError::UnknownPractice(_) => 401,
        ReceiveError::Refused(r) if r.code == RefusalCode::MalformedJson => 400,
        ReceiveError::Refused(_) => 422,
        ReceiveError::Unavailable => 503,
    }
}

/// `{"error": {"code", "field", "rule"}}`: never a value from the request.
pub fn body_of(e: &ReceiveError) -> serde_json::Value {
    let (code, field, rule) = answer(e);
    serde_json::json!({"error": {"code": code, "field": field, "rule": rule}})
}

/// The refusal's code, field and rule as the PMS is told them: an unknown practice is told
/// what a bad signature is told.
fn answer(e: &ReceiveError) -> (&'static str, &str, &'static str) {
    match e {
        ReceiveError::UnsupportedMediaType => {
            ("unsupported_media_type", "content-type", "application/json")
        }
        ReceiveError::TooLarge => ("payload_too_large", "body", "max_262144_bytes"),
        ReceiveError::Signature(s) | ReceiveError::UnknownPractice(s) => {
            ("invalid_signature", s.field(), s.reason())
        }
        ReceiveError::Refused(r) => (r.code.as_str(), r.field.as_str(), r.rule),
        ReceiveError::Unavailable => ("temporarily_unavailable", "", "retry_later"),
    }
}

/// The refusal's code and rule, from their fixed vocabularies (docs/contracts.md, Errors), as
/// logs and metrics count them: there an unknown practice is told apart.
fn refusal_kind(e: &ReceiveError) -> (&'static str, &'static str) {
    match e {
        ReceiveError::UnknownPractice(_) => ("invalid_signature", "unknown_practice"),
        _ => {
            let (code, _, rule) = answer(e);
            (code, rule)
        }
    }
}

fn status_str(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        413 => "413",
        415 => "415",
        422 => "422",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::signature::SignatureError;

    const SIGNATURE_REFUSALS: [SignatureError; 7] = [
        SignatureError::MissingHeader("webhook-signature"),
        SignatureError::MissingHeader("webhook-id"),
        SignatureError::IdFormat,
        SignatureError::MalformedHeader("webhook-timestamp"),
        SignatureError::StaleTimestamp,
        SignatureError::NoMatch,
        SignatureError::BodyNotUtf8,
    ];

    #[test]
    fn an_unknown_practice_is_answered_exactly_as_its_signature_refusal() {
        for s in SIGNATURE_REFUSALS {
            let (known, unknown) = (ReceiveError::Signature(s), ReceiveError::UnknownPractice(s));
            assert_eq!(
                (status_of(&unknown), body_of(&unknown)),
                (status_of(&known), body_of(&known)),
                "{s:?}"
            );
            assert_eq!(body_of(&known)["error"]["code"], "invalid_signature");
            assert!(matches!(status_of(&known), 400 | 401), "{s:?}");
        }
    }

    #[test]
    fn each_refusal_has_its_status_and_a_body_without_values() {
        let missing =
            ReceiveError::UnknownPractice(SignatureError::MissingHeader("webhook-signature"));
        assert_eq!(status_of(&missing), 401);
        assert_eq!(
            body_of(&missing).to_string(),
            r#"{"error":{"code":"invalid_signature","field":"webhook-signature","rule":"missing_signature_header"}}"#
        );
        let id = ReceiveError::Signature(SignatureError::IdFormat);
        assert_eq!(status_of(&id), 401);
        assert_eq!(
            body_of(&id).to_string(),
            r#"{"error":{"code":"invalid_signature","field":"webhook-id","rule":"webhook_id_format"}}"#
        );
        assert_eq!(status_of(&ReceiveError::UnsupportedMediaType), 415);
        assert_eq!(status_of(&ReceiveError::TooLarge), 413);
        assert_eq!(status_of(&ReceiveError::Unavailable), 503);
        assert_eq!(
            status_of(&ReceiveError::Signature(SignatureError::BodyNotUtf8)),
            400
        );
    }
}
