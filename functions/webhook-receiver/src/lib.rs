//! webhook-receiver: `POST /v1/practices/{practice_id}/events` behind API Gateway (HTTP API).
//! Parses the request, calls the domain, maps the result. Logs carry ids, counts and reason
//! codes; never the body.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{header, json_response, request_body};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar};
use pil_shared::ids::PracticeId;
use pil_shared::service::receiver::{self, Delivery, ReceiveError, ReceiverDeps};
use pil_shared::signature::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignedHeaders};

/// Built once per cold start.
#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub bus: EventBus,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter)?,
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
            &ReceiveError::Refused(pil_shared::inbound::Refusal {
                code: pil_shared::inbound::RefusalCode::MalformedJson,
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
        .filter(|p| pil_shared::ids::PracticeId::parse(p).is_ok())
        .unwrap_or("-");
    let wid = webhook_id
        .filter(|w| {
            signature::webhook_id_well_formed(w)
                && w.len() <= 64
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .unwrap_or("-");
    let status = e.status();
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
    let mut resp = json_response(status, &e.body());
    if status == 503 {
        resp.headers
            .insert("retry-after", http::HeaderValue::from_static("5"));
    }
    resp
}

/// The refusal's code and rule, from their fixed vocabularies (docs/contracts.md, Errors).
fn refusal_kind(e: &ReceiveError) -> (&'static str, &'static str) {
    match e {
        ReceiveError::Refused(r) => (r.code.as_str(), r.rule),
        ReceiveError::Signature(s) => ("invalid_signature", s.reason()),
        ReceiveError::UnknownPractice(_) => ("invalid_signature", "unknown_practice"),
        ReceiveError::UnsupportedMediaType => ("unsupported_media_type", "application/json"),
        ReceiveError::TooLarge => ("payload_too_large", "max_262144_bytes"),
        ReceiveError::Unavailable => ("temporarily_unavailable", "retry_later"),
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
