//! The relay's HTTP face (API Gateway HTTP API, payload 2.0): `POST /square/webhooks` for
//! Square, `POST /triggers` for the layer. This is where outcomes become statuses; bodies
//! are never logged.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use jiff::Timestamp;
use pil_aws::lambda::{header, request_body};
use pil_aws::metrics::Unit;
use serde_json::json;
use shared::signature::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureError, SignedHeaders,
};

use crate::layer::LayerError;
use crate::relay::{Relay, TriggerError, TriggerOutcome, WebhookError, WebhookOutcome};
use crate::square::client::SquareError;
use crate::square::signature;

pub const SQUARE_PATH: &str = "/square/webhooks";
pub const TRIGGER_PATH: &str = "/triggers";
/// Seconds the layer is asked to wait before retrying a trigger Square could not take.
const RETRY_AFTER: &str = "30";

fn respond(status: u16, body: serde_json::Value, retry_after: bool) -> ApiGatewayV2httpResponse {
    let extra: &[(&str, &str)] = if retry_after {
        &[("retry-after", RETRY_AFTER)]
    } else {
        &[]
    };
    pil_aws::lambda::response(status, "application/json", body.to_string(), extra)
}

fn error(status: u16, code: &str, field: &str, rule: &str) -> ApiGatewayV2httpResponse {
    respond(
        status,
        json!({"error": {"code": code, "field": field, "rule": rule}}),
        status == 503,
    )
}

/// Routes one request.
pub async fn handle(
    relay: &Relay,
    req: &ApiGatewayV2httpRequest,
    now: Timestamp,
) -> ApiGatewayV2httpResponse {
    let path = req.raw_path.as_deref().unwrap_or("");
    let method = req.request_context.http.method.as_str();
    let route = match path {
        SQUARE_PATH => "square_webhook",
        TRIGGER_PATH => "trigger",
        _ => {
            return error(404, "not_found", "path", "route");
        }
    };
    if method != "POST" {
        return error(405, "method_not_allowed", "method", "post");
    }
    let Some(body) = request_body(req) else {
        return error(400, "malformed_body", "body", "base64");
    };
    if route == "square_webhook" {
        square(relay, header(req, signature::HEADER), &body, now).await
    } else {
        let headers = SignedHeaders {
            id: header(req, HEADER_ID),
            timestamp: header(req, HEADER_TIMESTAMP),
            signature: header(req, HEADER_SIGNATURE),
        };
        trigger(relay, headers, &body, now).await
    }
}

async fn square(
    relay: &Relay,
    sig: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> ApiGatewayV2httpResponse {
    match relay.square_webhook(sig, body, now).await {
        Ok(outcome) => {
            let status = match &outcome {
                WebhookOutcome::Sent { events } => {
                    tracing::info!(route = "square_webhook", events, "booking_sent");
                    relay.metrics.emit(
                        None,
                        &[],
                        &[
                            ("BookingsSent", 1.0, Unit::Count),
                            ("EventsSent", *events as f64, Unit::Count),
                        ],
                    );
                    "sent"
                }
                WebhookOutcome::Skipped { why, services } => {
                    tracing::info!(
                        route = "square_webhook",
                        reason = why.as_str(),
                        services = ?services,
                        "booking_skipped"
                    );
                    relay.metrics.emit(
                        None,
                        &[("Reason", why.as_str())],
                        &[("BookingsSkipped", 1.0, Unit::Count)],
                    );
                    "skipped"
                }
                WebhookOutcome::Erased => {
                    tracing::info!(route = "square_webhook", "customer_erased");
                    "erased"
                }
                WebhookOutcome::Ignored => "ignored",
            };
            respond(200, json!({ "status": status }), false)
        }
        Err(WebhookError::Signature) => {
            tracing::warn!(
                route = "square_webhook",
                reason = "signature_mismatch",
                "refused"
            );
            error(
                401,
                "invalid_signature",
                signature::HEADER,
                "signature_mismatch",
            )
        }
        Err(WebhookError::Malformed(field)) => {
            tracing::warn!(
                route = "square_webhook",
                reason = "malformed",
                field,
                "refused"
            );
            error(400, "malformed_notification", field, "square_webhook_v2")
        }
        Err(WebhookError::Layer(LayerError::Refused {
            status,
            code,
            field,
            rule,
        })) => {
            // Square's retries cannot change the answer: acknowledged, and alerted on (a
            // backfill re-sends the window once the cause is fixed).
            relay
                .metrics
                .emit(None, &[], &[("LayerRefusals", 1.0, Unit::Count)]);
            tracing::error!(
                route = "square_webhook",
                alert = "layer_refused_events",
                status,
                code,
                field,
                rule,
                "layer_refused"
            );
            respond(200, json!({"status": "refused_by_layer"}), false)
        }
        Err(e @ (WebhookError::Layer(LayerError::Unavailable(_)) | WebhookError::Store(_))) => {
            tracing::warn!(route = "square_webhook", reason = %e, "retry_later");
            error(503, "temporarily_unavailable", "", "retry_later")
        }
    }
}

async fn trigger(
    relay: &Relay,
    headers: SignedHeaders<'_>,
    body: &[u8],
    now: Timestamp,
) -> ApiGatewayV2httpResponse {
    let result = relay.trigger(headers, body, now).await;
    let outcome = match &result {
        Ok(TriggerOutcome::Added { .. }) => "added",
        Ok(TriggerOutcome::Duplicate) => "duplicate",
        Ok(TriggerOutcome::Expired) => "expired",
        Err(TriggerError::Signature(_)) => "signature_refused",
        Err(TriggerError::Invalid { .. }) => "invalid",
        Err(TriggerError::UnknownPatient | TriggerError::Square(SquareError::NotFound)) => {
            "unknown_patient"
        }
        Err(TriggerError::Square(SquareError::Rejected { .. })) => "square_rejected",
        Err(_) => "retry_later",
    };
    relay.metrics.emit(
        None,
        &[("Outcome", outcome)],
        &[("Triggers", 1.0, Unit::Count)],
    );
    match result {
        Ok(TriggerOutcome::Added { group }) => {
            tracing::info!(route = "trigger", outcome = "added", "trigger_done");
            respond(200, json!({"status": "added", "group": group}), false)
        }
        Ok(TriggerOutcome::Duplicate) => {
            tracing::info!(route = "trigger", outcome = "duplicate", "trigger_done");
            respond(200, json!({"status": "duplicate"}), false)
        }
        Ok(TriggerOutcome::Expired) => {
            tracing::info!(route = "trigger", outcome = "expired", "trigger_done");
            respond(200, json!({"status": "expired"}), false)
        }
        Err(TriggerError::Signature(e)) => {
            let (status, field, rule) = signature_rule(e);
            tracing::warn!(route = "trigger", reason = rule, "refused");
            error(status, "invalid_signature", field, rule)
        }
        Err(TriggerError::Invalid { field, rule }) => {
            tracing::warn!(route = "trigger", field, reason = rule, "refused");
            error(422, "invalid_trigger", field, rule)
        }
        Err(TriggerError::UnknownPatient) => {
            tracing::warn!(route = "trigger", reason = "unknown_patient_ref", "refused");
            error(404, "unknown_patient", "patient_ref", "sent_by_this_relay")
        }
        Err(TriggerError::Square(SquareError::NotFound)) => {
            tracing::warn!(route = "trigger", reason = "square_not_found", "refused");
            error(
                404,
                "unknown_customer",
                "patient_ref",
                "square_customer_exists",
            )
        }
        Err(TriggerError::Square(SquareError::Rejected {
            status,
            category,
            code,
        })) => {
            tracing::error!(
                route = "trigger",
                alert = "square_rejected",
                square_status = status,
                category,
                code,
                "square_rejected"
            );
            error(422, "square_rejected", "", "square_request")
        }
        Err(TriggerError::Square(SquareError::Unauthorized { code })) => {
            tracing::error!(
                route = "trigger",
                alert = "square_unauthorized",
                code,
                "square_unauthorized"
            );
            error(503, "temporarily_unavailable", "", "retry_later")
        }
        Err(e @ (TriggerError::Square(SquareError::Unavailable(_)) | TriggerError::Store(_))) => {
            tracing::warn!(route = "trigger", reason = %e, "retry_later");
            error(503, "temporarily_unavailable", "", "retry_later")
        }
    }
}

/// The answer to a signature refusal: the header and rule, as the layer names them.
fn signature_rule(e: SignatureError) -> (u16, &'static str, &'static str) {
    match e {
        SignatureError::MissingHeader(h) => (401, h, "missing_signature_header"),
        SignatureError::MalformedHeader(h) => (401, h, "malformed_signature_header"),
        SignatureError::StaleTimestamp => (401, HEADER_TIMESTAMP, "stale_timestamp"),
        SignatureError::IdFormat => (401, HEADER_ID, "webhook_id_format"),
        SignatureError::BodyNotUtf8 => (400, HEADER_SIGNATURE, "body_not_utf8"),
        SignatureError::NoMatch => (401, HEADER_SIGNATURE, "signature_mismatch"),
    }
}
