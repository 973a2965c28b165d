//! A PMS simulator: the practice's side of both contracts. It signs and sends events to the
//! local API (as a PMS or relay would), and receives triggers on a loopback endpoint,
//! verifying each signature with the practice's trigger secret and de-duplicating by
//! `webhook-id` as a real PMS should. Its answers can be scripted (e.g. 503 then 200).
//!
//! By default it verifies with the practice's current trigger secret, read from the store. A
//! test can instead give it the secrets a PMS integrator configured
//! ([`PmsSim::trust_trigger_secrets`], e.g. the old and the new one around a rotation); each
//! received trigger then records which of them verify it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pil_aws::{Clients, DynamoStore, KmsKeys, Meter};
use serde::{Deserialize, Serialize};
use shared::ids::PracticeId;
use shared::ports::PracticeRepo;
use shared::secrets::SecretCache;
use shared::signature::{self, SignedHeaders, WebhookSecret};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::template::Deployed;

/// One trigger as the PMS received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {
    pub webhook_id: String,
    pub body: serde_json::Value,
    pub verified: bool,
    /// What the simulator answered.
    pub status: u16,
    /// The same `webhook-id` was accepted before (a retry the PMS de-duplicated).
    pub duplicate: bool,
    /// How many `v1,` signatures the `webhook-signature` header carried (two during a trigger
    /// secret rotation's overlap).
    #[serde(default)]
    pub signatures: usize,
    /// With [`PmsSim::trust_trigger_secrets`]: the positions of the trusted secrets that
    /// verify this trigger, each on its own. Otherwise `[0]` when the practice's current
    /// trigger secret verifies it.
    #[serde(default)]
    pub verified_with: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scripted {
    pub status: u16,
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Answer only after this many milliseconds (the trigger is taken first, as a slow PMS
    /// would): longer than the emitter's timeout, the emitter sees a timeout.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl Scripted {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay_ms: None,
        }
    }
}

struct PmsState {
    store: DynamoStore,
    secrets: SecretCache,
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Scripted>>,
    accepted: Mutex<HashSet<String>>,
    /// Trigger secrets configured per practice (instead of the store's current one).
    trusted: Mutex<HashMap<PracticeId, Vec<WebhookSecret>>>,
}

pub struct PmsSim {
    pub url: String,
    state: Arc<PmsState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PmsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PmsSim({})", self.url)
    }
}

impl PmsSim {
    pub async fn start(port: u16, clients: &Clients, deployed: &Deployed) -> Result<Self> {
        let env = &deployed
            .functions
            .first()
            .ok_or_else(|| anyhow!("no functions"))?
            .env;
        let table = env
            .get("TABLE_NAME")
            .ok_or_else(|| anyhow!("no TABLE_NAME"))?;
        let key = env
            .get("KMS_KEY_ID")
            .ok_or_else(|| anyhow!("no KMS_KEY_ID"))?;
        let state = Arc::new(PmsState {
            store: DynamoStore::new(clients.dynamodb.clone(), table, Meter::default()),
            secrets: SecretCache::new(
                Arc::new(KmsKeys::new(clients.kms.clone(), key)),
                Duration::from_secs(5),
            ),
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            accepted: Mutex::new(HashSet::new()),
            trusted: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new()
            .route("/triggers", post(receive))
            .route("/_control/received", get(received))
            .route("/_control/script", post(script))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self {
            url,
            state,
            stop,
            task,
        })
    }

    /// The trigger URL to onboard a practice with.
    pub fn trigger_url(&self) -> String {
        format!("{}/triggers", self.url)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The next answers, in order (then 200 again).
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        if let Ok(mut s) = self.state.script.lock() {
            s.extend(answers);
        }
    }

    /// Verify the practice's triggers with these secrets (as a PMS holds them) instead of the
    /// practice's current trigger secret; [`Received::verified_with`] lists which verified.
    pub fn trust_trigger_secrets(&self, practice: &PracticeId, secrets: Vec<WebhookSecret>) {
        if let Ok(mut t) = self.state.trusted.lock() {
            t.insert(practice.clone(), secrets);
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn receive(State(st): State<Arc<PmsState>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let webhook_id = h(signature::HEADER_ID).unwrap_or_default().to_owned();
    let signatures = h(signature::HEADER_SIGNATURE)
        .map(|v| v.split(' ').filter(|p| p.starts_with("v1,")).count())
        .unwrap_or(0);
    let verified_with = verify(&st, &json, &headers, &body).await;
    let verified = !verified_with.is_empty();
    let scripted = st.script.lock().ok().and_then(|mut s| s.pop_front());
    let duplicate = st
        .accepted
        .lock()
        .map(|a| a.contains(&webhook_id))
        .unwrap_or(false);
    let (status, retry_after) = match (&scripted, verified, duplicate) {
        (_, false, _) => (401, None),
        (Some(s), true, _) => (s.status, s.retry_after),
        (None, true, true) => (409, None),
        (None, true, false) => (200, None),
    };
    if verified
        && (200..300).contains(&status)
        && let Ok(mut a) = st.accepted.lock()
    {
        a.insert(webhook_id.clone());
    }
    if let Ok(mut r) = st.received.lock() {
        r.push(Received {
            webhook_id,
            body: json,
            verified,
            status,
            duplicate,
            signatures,
            verified_with,
        });
    }
    if let Some(ms) = scripted.as_ref().and_then(|s| s.delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), "").into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = ra.to_string().parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// The positions of the secrets that verify the trigger: of the trusted ones when the test
/// configured them for the practice, else `[0]` for the practice's current trigger secret.
/// Empty: not verified.
async fn verify(
    st: &PmsState,
    json: &serde_json::Value,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<usize> {
    let Some(pid) = json["practice_id"]
        .as_str()
        .and_then(|p| PracticeId::parse(p).ok())
    else {
        return Vec::new();
    };
    let trusted = st.trusted.lock().ok().and_then(|t| t.get(&pid).cloned());
    let secrets = match trusted {
        Some(t) => t,
        None => {
            let Ok(Some(practice)) = st.store.get_practice(&pid).await else {
                return Vec::new();
            };
            // The current trigger secret (the first signer).
            let Ok(mut signers) = st
                .secrets
                .trigger_signers_at(&practice.id, &practice.secrets, jiff::Timestamp::now())
                .await
            else {
                return Vec::new();
            };
            signers.truncate(1);
            signers
        }
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let sh = SignedHeaders {
        id: h(signature::HEADER_ID),
        timestamp: h(signature::HEADER_TIMESTAMP),
        signature: h(signature::HEADER_SIGNATURE),
    };
    let now = jiff::Timestamp::now().as_second();
    secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| signature::verify(sh, body, std::slice::from_ref(*s), now).is_ok())
        .map(|(i, _)| i)
        .collect()
}

async fn received(State(st): State<Arc<PmsState>>) -> Json<Vec<Received>> {
    Json(st.received.lock().map(|r| r.clone()).unwrap_or_default())
}

async fn script(State(st): State<Arc<PmsState>>, Json(answers): Json<Vec<Scripted>>) -> StatusCode {
    if let Ok(mut s) = st.script.lock() {
        s.extend(answers);
    }
    StatusCode::NO_CONTENT
}

/// The PMS's sending side: signs a body with the practice's webhook secret and POSTs it.
#[derive(Debug, Clone)]
pub struct PmsClient {
    pub api_url: String,
    pub http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl PmsClient {
    pub fn new(api_url: &str) -> Self {
        Self {
            api_url: api_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(
        &self,
        practice: &str,
        secret: &WebhookSecret,
        webhook_id: &str,
        body: &str,
    ) -> Result<Reply> {
        let ts = jiff::Timestamp::now().as_second();
        let sig = secret
            .sign(webhook_id, ts, body.as_bytes())
            .ok_or_else(|| anyhow!("body is not UTF-8"))?;
        let resp = self
            .http
            .post(format!("{}/v1/practices/{practice}/events", self.api_url))
            .header("content-type", "application/json")
            .header(signature::HEADER_ID, webhook_id)
            .header(signature::HEADER_TIMESTAMP, ts.to_string())
            .header(signature::HEADER_SIGNATURE, sig)
            .body(body.to_owned())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok(Reply { status, body })
    }
}
