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

/// Headers for every page an owner sees (docs/contracts.md, Approval links). The CSP allows
/// no script, nothing fetched, and exactly one stylesheet: the pages' `<style>` element, by its SHA-256
/// (`pil_shared::service::approval::page_style_csp_source`), whose fonts are inline `data:`
/// URIs. Computed once per cold start (the handler warms it in init).
pub fn page_headers() -> &'static [(&'static str, &'static str)] {
    static HEADERS: std::sync::OnceLock<Vec<(&'static str, &'static str)>> =
        std::sync::OnceLock::new();
    HEADERS.get_or_init(|| {
        let csp: &'static str = Box::leak(
            format!(
                "default-src 'none'; style-src {}; font-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
                pil_shared::service::approval::page_style_csp_source()
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

#[cfg(test)]
mod tests {
    use super::page_headers;

    #[test]
    fn page_csp_allows_exactly_the_pages_stylesheet() {
        let csp = page_headers()
            .iter()
            .find(|(k, _)| *k == "content-security-policy")
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let source = pil_shared::service::approval::page_style_csp_source();
        assert!(
            csp.contains(&format!("style-src {source};")),
            "the CSP must allow the page stylesheet {source}"
        );
        assert!(csp.starts_with("default-src 'none';"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"));
    }
}
