//! The Square relay on the local stack: its template (infra/relay/template.yaml) deployed into
//! the same emulator as the layer's (its key and table), its secrets sealed with that key
//! under the contexts the relay opens them with, and its two functions built by the relay's
//! own configuration code from the environment the template gives them. The HTTP function
//! listens on loopback behind a local API Gateway; the jobs function runs on demand.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use pil_aws::{Clients, Config};
use shared::refkey::RefKey;
use square_relay::config::{AwsClients, Purpose, Role, relay, seal};
use square_relay::jobs::{self, JobReport};
use square_relay::relay::Relay;
use square_relay::square::client::RetryPolicy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::stack::{Onboarded, REGION, apigw_request, apigw_response};
use crate::template;

pub const RELAY_STACK: &str = "pil-square-relay-local";

/// What the practice configures its relay with.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub layer_api_url: String,
    pub square_api_url: String,
    pub square_access_token: String,
    pub square_signature_key: String,
    /// `{"<service variation id>": "<treatment>"}`.
    pub service_map: String,
    pub ref_key: RefKey,
}

pub struct RelayStack {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub http: Arc<Relay>,
    pub jobs: Arc<Relay>,
    pub table: String,
    pub key_id: String,
    /// Where both functions write their metrics (one JSON line each).
    pub metrics_file: std::path::PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RelayStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayStack({})", self.url)
    }
}

impl RelayStack {
    /// The URL Square is told to notify (its webhook subscription's notification URL).
    pub fn notification_url(&self) -> String {
        format!("{}{}", self.url, square_relay::http::SQUARE_PATH)
    }

    /// The practice's trigger URL in the layer.
    pub fn trigger_url(&self) -> String {
        format!("{}{}", self.url, square_relay::http::TRIGGER_PATH)
    }

    /// A loopback port for the relay, and its URL: the notification URL is part of what
    /// Square signs and the trigger URL is the practice's, so both are known before the
    /// practice is onboarded and the relay starts.
    pub async fn bind() -> Result<(tokio::net::TcpListener, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        Ok((listener, url))
    }

    /// Deploys the relay's template, seals its secrets, builds both functions and serves the
    /// HTTP one on `listener` (from [`RelayStack::bind`]).
    pub async fn start(
        (listener, url): (tokio::net::TcpListener, String),
        workspace: &Path,
        clients: &Clients,
        practice: &Onboarded,
        settings: &RelaySettings,
    ) -> Result<Self> {
        let params: HashMap<String, String> = [
            ("PracticeId", practice.practice.as_str().to_owned()),
            ("LayerApiUrl", settings.layer_api_url.clone()),
            ("ServiceMap", settings.service_map.clone()),
            (
                "NotificationUrl",
                format!("{url}{}", square_relay::http::SQUARE_PATH),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let deployed = template::deploy(
            &workspace.join("infra/relay/template.yaml"),
            clients,
            REGION,
            RELAY_STACK,
            &params,
        )
        .await
        .context("creating the relay template's resources in the emulator")?;
        let key_id = deployed
            .refs
            .get("RelayKey")
            .cloned()
            .ok_or_else(|| anyhow!("relay template has no RelayKey"))?;
        let table = deployed
            .refs
            .get("RelayTable")
            .cloned()
            .ok_or_else(|| anyhow!("relay template has no RelayTable"))?;
        let sealed: Vec<(Purpose, String)> = vec![
            (
                Purpose::SquareAccessToken,
                settings.square_access_token.clone(),
            ),
            (
                Purpose::SquareSignatureKey,
                settings.square_signature_key.clone(),
            ),
            (Purpose::RefKey, settings.ref_key.expose()),
            (
                Purpose::LayerWebhookSecret,
                practice.webhook_secret.expose().to_owned(),
            ),
            (
                Purpose::TriggerSecret,
                practice.trigger_secret.expose().to_owned(),
            ),
        ];
        let mut extra: Vec<(String, String)> = Vec::new();
        for (p, plain) in sealed {
            extra.push((
                p.env().to_owned(),
                seal(&clients.kms, &key_id, p, &plain).await?,
            ));
        }
        // The emulator stands in for Square's API; metrics go to a file, not stdout.
        extra.push(("SQUARE_API_URL".into(), settings.square_api_url.clone()));
        let metrics_file = std::env::temp_dir().join(format!(
            "pil-relay-metrics-{}-{}.jsonl",
            std::process::id(),
            url.rsplit(':').next().unwrap_or("0")
        ));
        let _ = std::fs::remove_file(&metrics_file);
        extra.push(("METRICS_FILE".into(), metrics_file.display().to_string()));
        let aws = AwsClients {
            dynamodb: clients.dynamodb.clone(),
            kms: clients.kms.clone(),
        };
        let retry = RetryPolicy {
            attempts: 4,
            base: std::time::Duration::from_millis(50),
            max_wait: std::time::Duration::from_secs(3),
        };
        let build = |binary: &'static str, role: Role| {
            let f = deployed
                .functions
                .iter()
                .find(|f| f.binary == binary)
                .ok_or_else(|| anyhow!("relay template has no function {binary}"));
            let extra = extra.clone();
            let aws = aws.clone();
            async move {
                let mut env = f?.env.clone();
                env.extend(extra);
                Ok::<_, anyhow::Error>(Arc::new(
                    relay(&Config::from_map(env), &aws, role, retry)
                        .await
                        .map_err(|e| anyhow!("{binary}: {e}"))?,
                ))
            }
        };
        let http = build("square-relay", Role::Http).await?;
        let jobs = build("square-relay-jobs", Role::Jobs).await?;
        let (stop, mut stopped) = watch::channel(false);
        let app = axum::Router::new().fallback(serve).with_state(http.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await;
        });
        Ok(Self {
            url,
            http,
            jobs,
            table,
            key_id,
            metrics_file,
            stop,
            task,
        })
    }

    /// One run of the jobs function (backfill, completions, expiry) at `now`.
    pub async fn run_jobs(
        &self,
        span: jobs::BackfillSpan,
        now: jiff::Timestamp,
    ) -> Result<JobReport> {
        let deadline = now + std::time::Duration::from_secs(600);
        jobs::run(&self.jobs, span, || now, deadline)
            .await
            .map_err(|e| anyhow!("relay jobs: {e}"))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(State(relay): State<Arc<Relay>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body(Body::empty())
            .unwrap_or_default();
    };
    let route = format!("{} {}", parts.method, parts.uri.path());
    let ev = apigw_request(&parts, &bytes, route, HashMap::new());
    apigw_response(square_relay::http::handle(&relay, &ev, jiff::Timestamp::now()).await)
}
