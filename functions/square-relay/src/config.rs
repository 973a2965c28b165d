//! The relay's configuration, read once per cold start: plain settings from the environment
//! (infra/relay/template.yaml sets them from its parameters) and the secrets, which the
//! environment holds only as KMS ciphertexts, each sealed under the encryption context
//! `{"relay": "square", "purpose": <purpose>}` and opened here.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pil_aws::Config;
use shared::refkey::RefKey;
use shared::signature::WebhookSecret;

use crate::dynamo::DynamoRelayStore;
use crate::jobs::BackfillSpan;
use crate::layer::HttpLayer;
use crate::mapping::{DEFAULT_COMPLETION_GRACE, Refs, Rules, ServiceMap, ServiceMapError};
use crate::relay::{Relay, RelayParts};
use crate::square::client::{HttpSquare, PRODUCTION_URL, RetryPolicy};
use crate::square::signature::SignatureKey;

/// A secret's purpose: its encryption context, and the environment variable holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    SquareAccessToken,
    SquareSignatureKey,
    RefKey,
    LayerWebhookSecret,
    TriggerSecret,
    TriggerSecretPrevious,
}

impl Purpose {
    pub const ALL: [Purpose; 6] = [
        Self::SquareAccessToken,
        Self::SquareSignatureKey,
        Self::RefKey,
        Self::LayerWebhookSecret,
        Self::TriggerSecret,
        Self::TriggerSecretPrevious,
    ];

    /// The `purpose` in the encryption context (IAM conditions name it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SquareAccessToken => "square_access_token",
            Self::SquareSignatureKey => "square_signature_key",
            Self::RefKey => "ref_key",
            Self::LayerWebhookSecret => "layer_webhook_secret",
            // Both trigger secrets are the same kind of secret.
            Self::TriggerSecret | Self::TriggerSecretPrevious => "trigger_secret",
        }
    }

    /// The environment variable holding the ciphertext (base64).
    pub fn env(self) -> &'static str {
        match self {
            Self::SquareAccessToken => "SQUARE_ACCESS_TOKEN_SEALED",
            Self::SquareSignatureKey => "SQUARE_SIGNATURE_KEY_SEALED",
            Self::RefKey => "REF_KEY_SEALED",
            Self::LayerWebhookSecret => "LAYER_WEBHOOK_SECRET_SEALED",
            Self::TriggerSecret => "TRIGGER_SECRET_SEALED",
            Self::TriggerSecretPrevious => "TRIGGER_SECRET_PREVIOUS_SEALED",
        }
    }
}

/// Why the relay could not start. Names the setting and the rule, never a value.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{0}: {1}")]
    Invalid(&'static str, &'static str),
    #[error(transparent)]
    ServiceMap(#[from] ServiceMapError),
    #[error("{0}: KMS could not open it (wrong key, context or permission)")]
    Kms(&'static str),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// The AWS clients the relay uses.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
}

/// Which function is starting: each opens only the secrets it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Square's webhooks and the layer's triggers.
    Http,
    /// The backfill, the completion sweep and the expiry of memberships.
    Jobs,
}

impl Role {
    pub fn purposes(self) -> &'static [Purpose] {
        match self {
            Self::Http => &Purpose::ALL,
            Self::Jobs => &[
                Purpose::SquareAccessToken,
                Purpose::RefKey,
                Purpose::LayerWebhookSecret,
            ],
        }
    }
}

/// Seals `plaintext` for `purpose` (the local stack and the set-up steps use the same
/// context the relay opens with).
pub async fn seal(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    purpose: Purpose,
    plaintext: &str,
) -> Result<String, InitError> {
    let out = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext.as_bytes()))
        .encryption_context("relay", "square")
        .encryption_context("purpose", purpose.as_str())
        .send()
        .await
        .map_err(|_| InitError::Kms(purpose.env()))?;
    let blob = out.ciphertext_blob.ok_or(InitError::Kms(purpose.env()))?;
    Ok(STANDARD.encode(blob.as_ref()))
}

async fn open(
    kms: &aws_sdk_kms::Client,
    config: &Config,
    purpose: Purpose,
) -> Result<Option<String>, InitError> {
    let Some(sealed) = config.opt(purpose.env()).filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let blob = STANDARD
        .decode(sealed.trim())
        .map_err(|_| InitError::Invalid(purpose.env(), "base64 of a KMS ciphertext"))?;
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .encryption_context("relay", "square")
        .encryption_context("purpose", purpose.as_str())
        .send()
        .await
        .map_err(|_| InitError::Kms(purpose.env()))?;
    let plain = out.plaintext.ok_or(InitError::Kms(purpose.env()))?;
    String::from_utf8(plain.into_inner())
        .map(Some)
        .map_err(|_| InitError::Invalid(purpose.env(), "UTF-8 text"))
}

/// The HTTPS client for Square and the layer ([`pil_aws::adapters::https_client`]).
pub fn http_client() -> Result<reqwest::Client, InitError> {
    pil_aws::adapters::https_client(Duration::from_secs(20), "pil-square-relay/1")
        .map_err(|e| InitError::Http(e.to_string()))
}

/// The backfill's reach from `BACKFILL_DAYS` (default 1095) and `BACKFILL_AHEAD_DAYS` (90).
pub fn backfill_span(config: &Config) -> BackfillSpan {
    let d = BackfillSpan::default();
    BackfillSpan {
        days_back: config.num("BACKFILL_DAYS", d.days_back).clamp(0, 3650),
        days_ahead: config
            .num("BACKFILL_AHEAD_DAYS", d.days_ahead)
            .clamp(0, 365),
    }
}

/// In Lambda: the AWS clients from the environment Lambda sets, then the relay for `role`.
pub async fn from_lambda_env(
    role: Role,
) -> Result<Relay, Box<dyn std::error::Error + Send + Sync>> {
    let config = Config::from_env();
    let clients = pil_aws::Clients::from_lambda_env(&config)?;
    let aws = AwsClients {
        dynamodb: clients.dynamodb.clone(),
        kms: clients.kms.clone(),
    };
    Ok(relay(&config, &aws, role, RetryPolicy::default()).await?)
}

/// Builds the relay from the environment (every setting is read here, once).
pub async fn relay(
    config: &Config,
    aws: &AwsClients,
    role: Role,
    retry: RetryPolicy,
) -> Result<Relay, InitError> {
    let get = |k: &'static str| config.get(k).map_err(|_| InitError::Missing(k));
    let practice_id = get("PRACTICE_ID")?.to_owned();
    let layer_url = get("LAYER_API_URL")?.to_owned();
    let table = get("TABLE_NAME")?.to_owned();
    let square_url = config
        .opt("SQUARE_API_URL")
        .filter(|s| !s.is_empty())
        .unwrap_or(PRODUCTION_URL)
        .to_owned();
    let services = ServiceMap::parse(config.opt("SERVICE_MAP").unwrap_or("{}"))?;
    let grace_hours: u64 = config.num(
        "COMPLETION_GRACE_HOURS",
        DEFAULT_COMPLETION_GRACE.as_secs() / 3600,
    );
    let mut secrets = std::collections::HashMap::new();
    for p in role.purposes() {
        if let Some(s) = open(&aws.kms, config, *p).await? {
            secrets.insert(*p, s);
        }
    }
    let secret = |p: Purpose| secrets.get(&p).cloned().ok_or(InitError::Missing(p.env()));
    let ref_key = RefKey::parse(&secret(Purpose::RefKey)?)
        .map_err(|_| InitError::Invalid(Purpose::RefKey.env(), "a ref key (pil ref key)"))?;
    let layer_secret = WebhookSecret::parse(&secret(Purpose::LayerWebhookSecret)?)
        .map_err(|_| InitError::Invalid(Purpose::LayerWebhookSecret.env(), "a whsec_ secret"))?;
    let (signature_key, notification_url, trigger_secrets) = match role {
        Role::Jobs => (None, String::new(), Vec::new()),
        Role::Http => {
            let key = SignatureKey::new(secret(Purpose::SquareSignatureKey)?)
                .map_err(|_| InitError::Invalid(Purpose::SquareSignatureKey.env(), "not empty"))?;
            let mut trigger = Vec::new();
            for p in [Purpose::TriggerSecret, Purpose::TriggerSecretPrevious] {
                if let Some(s) = secrets.get(&p) {
                    trigger.push(
                        WebhookSecret::parse(s)
                            .map_err(|_| InitError::Invalid(p.env(), "a whsec_ secret"))?,
                    );
                }
            }
            if trigger.is_empty() {
                return Err(InitError::Missing(Purpose::TriggerSecret.env()));
            }
            (
                Some(key),
                get("SQUARE_NOTIFICATION_URL")?.to_owned(),
                trigger,
            )
        }
    };
    let http = http_client()?;
    Ok(Relay::new(RelayParts {
        practice_id: practice_id.clone(),
        rules: Rules {
            services,
            completion_grace: Duration::from_secs(grace_hours * 3600),
        },
        refs: Refs::new(ref_key),
        signature_key,
        notification_url,
        trigger_secrets,
        location_id: config
            .opt("SQUARE_LOCATION_ID")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        square: Arc::new(HttpSquare::new(
            http.clone(),
            square_url,
            secret(Purpose::SquareAccessToken)?,
            retry,
        )),
        layer: Arc::new(HttpLayer::new(http, &layer_url, &practice_id, layer_secret)),
        store: Arc::new(DynamoRelayStore::new(aws.dynamodb.clone(), table)),
        metrics: pil_aws::metrics::Metrics::new(
            config,
            match role {
                Role::Http => "square-relay",
                Role::Jobs => "square-relay-jobs",
            },
        ),
    }))
}
