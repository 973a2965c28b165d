//! Small helpers shared by the handlers for API Gateway (HTTP API, payload v2) and SQS events.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;

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

/// Headers for every page an owner sees (DESIGN §4.3).
pub const PAGE_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
];

pub fn batch_failures(ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
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
