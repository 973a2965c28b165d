//! SQS, EventBridge, SESv2, KMS and HTTP adapters for the domain ports, each behind its
//! cargo feature.
// With no client feature (nothing builds pil-aws so) the shared helpers below go unused.
#![cfg_attr(
    not(any(
        feature = "kms",
        feature = "sqs",
        feature = "eventbridge",
        feature = "sesv2",
        feature = "http"
    )),
    allow(unused_imports, dead_code)
)]

#[cfg(feature = "http")]
use std::time::Duration;

use async_trait::async_trait;
#[cfg(feature = "eventbridge")]
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
#[cfg(feature = "sesv2")]
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
#[cfg(feature = "kms")]
use base64::Engine;
#[cfg(feature = "kms")]
use base64::engine::general_purpose::STANDARD;
use shared::ports::PortError;
#[cfg(feature = "sqs")]
use shared::ports::{CandidateBatch, CandidateSink};
#[cfg(feature = "eventbridge")]
use shared::ports::{DomainEvent, EventPublisher};
#[cfg(feature = "kms")]
use shared::ports::{KeyService, SecretContext};
#[cfg(feature = "sesv2")]
use shared::ports::{Mail, Mailer};
#[cfg(feature = "http")]
use shared::ports::{TransportError, TransportReply, TriggerTransport};
#[cfg(feature = "http")]
use shared::practice::{TriggerUrl, TriggerUrlScope};

fn transient<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> PortError + '_ {
    move |_| PortError::Transient(what.to_owned())
}

/// Sends JSON messages to one SQS queue.
#[cfg(feature = "sqs")]
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

#[cfg(feature = "sqs")]
impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub async fn send_json<T: serde::Serialize>(&self, msg: &T) -> Result<(), PortError> {
        let body =
            serde_json::to_string(msg).map_err(|_| PortError::Permanent("serialize".into()))?;
        self.send_raw(&body).await
    }

    /// Keeps a received message invisible for `seconds` (retry backoff).
    pub async fn delay(&self, receipt_handle: &str, seconds: u64) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds.min(43_200)).unwrap_or(43_200))
            .send()
            .await
            .map_err(transient("sqs_visibility"))?;
        Ok(())
    }

    /// Sends a raw body as is (dead-lettering a message by hand).
    pub async fn send_raw(&self, body: &str) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(transient("sqs_send"))?;
        Ok(())
    }
}

#[cfg(feature = "sqs")]
#[async_trait]
impl CandidateSink for SqsQueue {
    async fn send_candidates(&self, batch: &CandidateBatch) -> Result<(), PortError> {
        self.send_json(batch).await
    }
}

/// approval-check's queue takes notices as it takes bus events: `{"detail": event}`.
#[cfg(feature = "sqs")]
#[async_trait]
impl shared::ports::NoticeSink for SqsQueue {
    async fn notice(&self, event: &shared::ports::DomainEvent) -> Result<(), PortError> {
        self.send_json(&serde_json::json!({
            "detail-type": event.detail_type(),
            "detail": event,
        }))
        .await
    }
}

/// Publishes domain events on the EventBridge bus.
#[cfg(feature = "eventbridge")]
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

#[cfg(feature = "eventbridge")]
impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[cfg(feature = "eventbridge")]
#[async_trait]
impl EventPublisher for EventBus {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PortError> {
        for chunk in events.chunks(10) {
            let entries = chunk
                .iter()
                .map(|e| {
                    let detail = serde_json::to_string(e)
                        .map_err(|_| PortError::Permanent("serialize".into()))?;
                    Ok(PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(e.source())
                        .detail_type(e.detail_type())
                        .detail(detail)
                        .build())
                })
                .collect::<Result<Vec<_>, PortError>>()?;
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(transient("eventbridge_put"))?;
            if out.failed_entry_count > 0 {
                return Err(PortError::Transient(format!(
                    "eventbridge_failed_entries:{}",
                    out.failed_entry_count
                )));
            }
        }
        Ok(())
    }
}

/// Sends owner e-mail through SESv2.
#[cfg(feature = "sesv2")]
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
}

#[cfg(feature = "sesv2")]
impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }
}

#[cfg(feature = "sesv2")]
fn content(s: &str) -> Result<Content, PortError> {
    Content::builder()
        .data(s)
        .charset("UTF-8")
        .build()
        .map_err(|_| PortError::Permanent("mail_build".into()))
}

#[cfg(feature = "sesv2")]
#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, mail: &Mail) -> Result<(), PortError> {
        let message = Message::builder()
            .subject(content(&mail.subject)?)
            .body(
                Body::builder()
                    .html(content(&mail.html)?)
                    .text(content(&mail.text)?)
                    .build(),
            )
            .build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(mail.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(transient("ses_send"))?;
        Ok(())
    }
}

/// Seals secrets with a KMS key (the ciphertext, base64, is what is stored), each under the
/// encryption context of its [`SecretContext`]: `{"practice": id, "purpose": kind}`. KMS
/// refuses to decrypt under any other context, and IAM conditions on
/// `kms:EncryptionContext:purpose` decide which purposes a function may open.
#[cfg(feature = "kms")]
#[derive(Debug, Clone)]
pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

#[cfg(feature = "kms")]
impl KmsKeys {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    async fn decrypt_under(
        &self,
        context: Option<&SecretContext>,
        sealed: &str,
    ) -> Result<Vec<u8>, PortError> {
        let ct = STANDARD
            .decode(sealed)
            .map_err(|_| PortError::Permanent("sealed_not_base64".into()))?;
        let mut req = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ct));
        for (k, v) in context.map(SecretContext::pairs).into_iter().flatten() {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(transient("kms_decrypt"))?;
        Ok(out
            .plaintext
            .ok_or_else(|| PortError::Permanent("kms_no_plaintext".into()))?
            .into_inner())
    }
}

#[async_trait]
#[cfg(feature = "kms")]
impl KeyService for KmsKeys {
    async fn seal(&self, context: &SecretContext, plaintext: &[u8]) -> Result<String, PortError> {
        let mut req = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext));
        for (k, v) in context.pairs() {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(transient("kms_encrypt"))?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| PortError::Permanent("kms_no_ciphertext".into()))?;
        Ok(STANDARD.encode(blob.as_ref()))
    }

    /// A wrong context is refused by KMS (`InvalidCiphertextException`); like every KMS
    /// failure it is reported as transient (the caller retries: a webhook is answered 503, a
    /// queue message comes back), so a secret written before contexts existed waits for
    /// `pil secret reseal` rather than losing anything.
    async fn open(&self, context: &SecretContext, sealed: &str) -> Result<Vec<u8>, PortError> {
        self.decrypt_under(Some(context), sealed).await
    }

    async fn open_unbound(&self, sealed: &str) -> Result<Vec<u8>, PortError> {
        self.decrypt_under(None, sealed).await
    }
}

/// POSTs triggers over HTTPS (or loopback HTTP in the local stack). No redirects: a trigger
/// goes to the configured URL or nowhere. Each URL is checked again under the transport's own
/// scope before anything is sent: deployed, only https to a public host goes out, whatever a
/// stored practice says ([`TransportError::Refused`] otherwise).
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    scope: TriggerUrlScope,
}

#[cfg(feature = "http")]
impl HttpTransport {
    /// TLS: rustls with ring, the crypto provider the SDK clients already link (no second
    /// one), and Mozilla's root certificates compiled in (nothing read from disk): a PMS may
    /// use any public CA. `scope`: [`TriggerUrlScope::Deployed`] everywhere but the local stack
    /// ([`crate::Config::trigger_url_scope`]).
    pub fn new(
        timeout: Duration,
        scope: TriggerUrlScope,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let client = https_client(timeout, "pil-trigger-emitter/1")?;
        Ok(Self { client, scope })
    }
}

/// An HTTPS client for calls outside AWS (a PMS's trigger endpoint; the Square relay's calls
/// to Square and to the layer): rustls with ring, the crypto provider the SDK clients already
/// link (no second one), Mozilla's root certificates compiled in (nothing read from disk),
/// no redirects followed. Plain `http://` works too (the local stack's simulators).
#[cfg(feature = "http")]
pub fn https_client(
    timeout: Duration,
    user_agent: &'static str,
) -> Result<reqwest::Client, Box<dyn std::error::Error + Send + Sync>> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()?)
}

#[cfg(feature = "http")]
#[async_trait]
impl TriggerTransport for HttpTransport {
    async fn post(
        &self,
        url: &TriggerUrl,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<TransportReply, TransportError> {
        let url =
            TriggerUrl::parse(url.as_str(), self.scope).map_err(|_| TransportError::Refused)?;
        let mut req = self
            .client
            .post(url.as_str())
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Connect
            }
        })?;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok(TransportReply {
            status: resp.status().as_u16(),
            retry_after,
        })
    }
}
