//! A fault-injecting HTTP proxy for the fault-matrix tests (docs/reliability.md).
//!
//! It sits between the handlers' AWS SDK clients and the emulator: every request is forwarded
//! unless a [`Rule`] matches it. A rule matches an operation (`DynamoDB_20120810.PutItem`'s
//! `PutItem`, `AmazonSQS.SendMessage`'s `SendMessage`, `sesv2:SendEmail`…) and optionally a
//! string in the request body (an action id, a ref), and injects one [`Fault`] a number of
//! times. [`FaultProxy::set_down`] drops every open connection and closes each new one at
//! once (the port stays bound, so no other listener takes it): the emulator is unreachable
//! until it is up again. It also counts the calls per operation, and records every message
//! the handlers send ([`FaultProxy::sent`]: queue messages, bus events and e-mails, as the
//! emulator received them).
//!
//! Only the handlers go through it; the local stack's own plumbing (the SQS pollers standing in
//! for Lambda's event-source mappings, the PMS simulator, test assertions) talks to the
//! emulator directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::body::{Body, Bytes};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What a matching request gets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The connection is closed before the request reaches the emulator (a network failure:
    /// nothing was written).
    Drop,
    /// The emulator never sees the request; the client gets this status and AWS JSON error
    /// body (`__type` = `code`).
    Status { status: u16, code: &'static str },
    /// The request reaches the emulator (and its write lands), then the connection is closed
    /// before the response: the caller cannot tell it succeeded.
    ForwardThenDrop,
    /// Forwarded after this delay.
    Delay(Duration),
}

impl Fault {
    /// DynamoDB's throttling error (the SDK retries it with backoff).
    pub fn throttle() -> Self {
        Self::Status {
            status: 400,
            code: "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        }
    }

    /// A 500 from the service.
    pub fn internal_error() -> Self {
        Self::Status {
            status: 500,
            code: "com.amazonaws.dynamodb.v20120810#InternalServerError",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation name (`PutItem`, `TransactWriteItems`, `SendMessage`, `PutEvents`,
    /// `SendEmail`, `Decrypt`…); `None` matches every operation.
    pub operation: Option<&'static str>,
    /// Strings the request body must all contain.
    pub body_contains: Vec<String>,
    pub fault: Fault,
    /// How many matching requests get the fault (`None`: until the rule is cleared).
    pub times: Option<u32>,
    /// The first this many matching requests pass untouched (a failure part-way through).
    pub skip: u32,
}

impl Rule {
    pub fn on(operation: &'static str, fault: Fault) -> Self {
        Self {
            operation: Some(operation),
            body_contains: Vec::new(),
            fault,
            times: None,
            skip: 0,
        }
    }

    /// Every operation.
    pub fn any(fault: Fault) -> Self {
        Self {
            operation: None,
            ..Self::on("", fault)
        }
    }

    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// The body must contain `s` (as well as any string given before).
    pub fn containing(mut self, s: impl Into<String>) -> Self {
        self.body_contains.push(s.into());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Default)]
struct ProxyState {
    rules: Vec<Rule>,
    /// Calls per operation that reached the emulator.
    forwarded: BTreeMap<String, u64>,
    /// Faults injected per operation.
    injected: BTreeMap<String, u64>,
    /// Requests of the [`SENDS`] operations that reached the emulator.
    sent: Vec<Sent>,
    /// Requests of the [`READS`] operations that reached the emulator.
    reads: Vec<Sent>,
}

/// The DynamoDB reads whose requests are recorded (what a read costs depends on what it
/// asked for: `ConsistentRead`, the keys, the index).
pub const READS: [&str; 3] = ["GetItem", "BatchGetItem", "Query"];

/// The operations by which a handler sends something on: a queue message, a bus event, an
/// e-mail.
pub const SENDS: [&str; 4] = ["SendMessage", "SendMessageBatch", "PutEvents", "SendEmail"];

/// One request of a [`SENDS`] operation that reached the emulator.
#[derive(Debug, Clone)]
pub struct Sent {
    pub operation: String,
    /// The request body as sent (the SDK's JSON; the message, event or e-mail inside it).
    pub body: String,
    /// The emulator's answer; `None` when no answer came back.
    pub status: Option<u16>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    state: Mutex<ProxyState>,
}

pub struct FaultProxy {
    pub url: String,
    /// Held for the proxy's life, down or up: a port released while "down" could be taken by
    /// another test's listener before it is bound again.
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProxy({})", self.url)
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream` (the emulator's URL).
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = Arc::new(TcpListener::bind(("127.0.0.1", 0)).await?);
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            state: Mutex::new(ProxyState::default()),
        });
        let server = tokio::spawn(serve(listener.clone(), shared.clone()));
        Ok(Self {
            url: format!("http://{addr}"),
            listener,
            shared,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn add(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// `true`: every open connection is dropped and every new one closed as soon as it is
    /// accepted (the emulator is unreachable). `false`: serving again. The port stays bound
    /// throughout, so no other listener can take it in between.
    pub async fn set_down(&self, down: bool) -> Result<()> {
        let old = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = old {
            h.abort();
            let _ = h.await;
        }
        let h = if down {
            tokio::spawn(refuse(self.listener.clone()))
        } else {
            tokio::spawn(serve(self.listener.clone(), self.shared.clone()))
        };
        if let Ok(mut s) = self.server.lock() {
            *s = Some(h);
        }
        Ok(())
    }

    /// Calls per operation that reached the emulator.
    pub fn forwarded(&self) -> BTreeMap<String, u64> {
        self.state().forwarded.clone()
    }

    /// Faults injected per operation.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state().injected.clone()
    }

    /// Every queue message, bus event and e-mail the handlers sent that reached the emulator,
    /// in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state().sent.clone()
    }

    /// Every DynamoDB read ([`READS`]) that reached the emulator, in order.
    pub fn reads(&self) -> Vec<Sent> {
        self.state().reads.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops serving: every connection dropped; the port is released with the proxy.
    pub async fn stop(&self) {
        let old = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = old {
            h.abort();
            let _ = h.await;
        }
    }
}

/// While down: accepts and closes at once, until aborted.
async fn refuse(listener: Arc<TcpListener>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    }
}

/// Accepts until aborted; aborting drops every connection task with it.
async fn serve(listener: Arc<TcpListener>, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { handle(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The operation a request calls: the JSON protocols' `X-Amz-Target` suffix, or SESv2's REST
/// path.
fn operation(req: &http::request::Parts) -> String {
    if let Some(t) = req
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return t.rsplit('.').next().unwrap_or(t).to_owned();
    }
    let path = req.uri.path();
    if path.starts_with("/v2/email/outbound-emails") {
        return "SendEmail".to_owned();
    }
    format!("{} {}", req.method, path)
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault proxy dropped the connection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body: Bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| Dropped)?;
    let op = operation(&parts);
    let fault = {
        let mut st = shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = st.rules.iter_mut().find(|r| {
            r.operation.is_none_or(|o| o == op)
                && r.body_contains
                    .iter()
                    .all(|s| body.windows(s.len().max(1)).any(|w| w == s.as_bytes()))
                && r.times != Some(0)
        });
        let fault = hit.and_then(|r| {
            if r.skip > 0 {
                r.skip -= 1;
                return None;
            }
            if let Some(n) = r.times.as_mut() {
                *n -= 1;
            }
            Some(r.fault.clone())
        });
        if fault.is_some() {
            *st.injected.entry(op.clone()).or_default() += 1;
        }
        fault
    };
    match fault {
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Status { status, code }) => {
            let body =
                serde_json::json!({"__type": code, "message": "injected by the fault proxy"});
            return Ok(Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amzn-errortype", code.rsplit('#').next().unwrap_or(code))
                .body(Body::from(body.to_string()))
                .unwrap_or_default());
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::ForwardThenDrop) | None => {}
    }
    let sent = SENDS
        .contains(&op.as_str())
        .then(|| String::from_utf8_lossy(&body).into_owned());
    let read = READS
        .contains(&op.as_str())
        .then(|| String::from_utf8_lossy(&body).into_owned());
    let resp = forward(shared, &parts, body).await;
    if let Ok(mut st) = shared.state.lock() {
        let status = resp.as_ref().ok().map(|r| r.status().as_u16());
        if let Some(body) = sent {
            st.sent.push(Sent {
                operation: op.clone(),
                body,
                status,
            });
        }
        if let Some(body) = read {
            st.reads.push(Sent {
                operation: op.clone(),
                body,
                status,
            });
        }
        *st.forwarded.entry(op).or_default() += 1;
    }
    if matches!(fault, Some(Fault::ForwardThenDrop)) {
        return Err(Dropped);
    }
    resp
}

async fn forward(
    shared: &Shared,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response<Body>, Dropped> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream));
    for (k, v) in &parts.headers {
        if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
            req = req.header(k, v);
        }
    }
    let resp = req.body(body).send().await.map_err(|_| Dropped)?;
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.map_err(|_| Dropped)?;
    out.body(Body::from(bytes)).map_err(|_| Dropped)
}
