//! The layer's side: events out (`POST /v1/practices/{id}/events`, Standard Webhooks-signed
//! with the practice's webhook secret, batches of at most 100), as docs/contracts.md
//! describes. Every event is a merge in the layer, so sending one twice has one effect: the
//! relay keeps no outbox and simply sends again when in doubt.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::signature::WebhookSecret;

/// Most events the layer takes in one delivery.
pub const MAX_BATCH: usize = 100;

/// Why the layer did not take a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// 429, 5xx, a timeout or no connection: send again later.
    #[error("the layer is unavailable ({0})")]
    Unavailable(&'static str),
    /// A 4xx: the layer refused what the relay sent. `code`, `field` and `rule` are the
    /// layer's error (field paths and rule names, never values).
    #[error("the layer refused the delivery ({status} {code} {field} {rule})")]
    Refused {
        status: u16,
        code: String,
        field: String,
        rule: String,
    },
}

#[async_trait]
pub trait EventSink: Send + Sync {
    /// One delivery of 1 to [`MAX_BATCH`] events.
    async fn deliver(&self, events: &[Value]) -> Result<(), LayerError>;
}

/// Sends `events` in deliveries of at most [`MAX_BATCH`]; returns how many were sent. Stops
/// at the first delivery the layer does not take (the ones before it took effect; sending
/// them again is harmless).
pub async fn send_all(sink: &dyn EventSink, events: &[Value]) -> Result<usize, LayerError> {
    let mut sent = 0;
    for chunk in events.chunks(MAX_BATCH) {
        sink.deliver(chunk).await?;
        sent += chunk.len();
    }
    Ok(sent)
}

/// The layer over HTTPS.
#[derive(Clone)]
pub struct HttpLayer {
    client: reqwest::Client,
    url: String,
    secret: WebhookSecret,
}

impl std::fmt::Debug for HttpLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpLayer({})", self.url)
    }
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: ErrorFields,
}

#[derive(Deserialize, Default)]
struct ErrorFields {
    #[serde(default)]
    code: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    rule: String,
}

impl HttpLayer {
    /// `api_url` is the layer's API root (`https://…/`), `practice_id` the practice's id
    /// there.
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        practice_id: &str,
        secret: WebhookSecret,
    ) -> Self {
        Self {
            client,
            url: format!(
                "{}/v1/practices/{}/events",
                api_url.trim_end_matches('/'),
                practice_id
            ),
            secret,
        }
    }
}

/// The delivery's `webhook-id`: derived from its bytes, so a resend is the same delivery.
pub fn delivery_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut id = String::from("rly_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[async_trait]
impl EventSink for HttpLayer {
    async fn deliver(&self, events: &[Value]) -> Result<(), LayerError> {
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .map_err(|_| LayerError::Unavailable("serialize"))?;
        let id = delivery_id(&body);
        let now = jiff::Timestamp::now().as_second();
        let Some(headers) = self.secret.headers(&id, now, &body) else {
            return Err(LayerError::Unavailable("sign"));
        };
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(LayerError::Unavailable("layer_timeout")),
            Err(_) => return Err(LayerError::Unavailable("layer_unreachable")),
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        if status == 429 || status >= 500 {
            return Err(LayerError::Unavailable("layer_retry_later"));
        }
        let err: ErrorAnswer = resp.json().await.unwrap_or_default();
        Err(LayerError::Refused {
            status,
            code: err.error.code,
            field: err.error.field,
            rule: err.error.rule,
        })
    }
}
