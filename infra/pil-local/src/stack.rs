//! The local stack: moto, the template's resources, and the four handlers running in-process
//! behind a local API Gateway (HTTP API, payload v2) and SQS pollers that behave like Lambda's
//! event-source mappings (batch size, partial batch failures, visibility timeout, redrive).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use base64::Engine;
use lambda_runtime::{Context, LambdaEvent};
use pil_aws::{Clients, Config, Meter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use shared::practice::{TriggerUrl, TriggerUrlScope};
use shared::signature::WebhookSecret;

use crate::fault::FaultProxy;
use crate::moto::Moto;
use crate::pms::PmsSim;
use crate::template::{self, Deployed, Mapping, Route};

pub const REGION: &str = "us-east-1";
pub const STACK_NAME: &str = "pil-local";
pub const SENDER: &str = "approvals@pil.localhost";

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub workspace: PathBuf,
    pub api_port: u16,
    pub emulator_port: u16,
    pub pms_port: u16,
    /// How often the local runner fires the template's schedule (`None`: never; scans are
    /// then started explicitly).
    pub tick: Option<Duration>,
    /// Trigger retry backoff base, seconds (Lambda default 30; shorter locally).
    pub backoff_base_seconds: u64,
    /// How often pollers ask for messages when a queue is empty.
    pub poll_wait_seconds: i32,
    /// Overrides the template's `TriggerMaxAttempts` (tests of the retry horizon).
    pub trigger_max_attempts: Option<u32>,
    /// Re-check quiet hours this often while a trigger waits (Lambda: at the window's end, at
    /// most 12 h); tests shorten it.
    pub quiet_recheck_seconds: Option<u64>,
    /// Put a [`FaultProxy`] between the handlers' AWS clients and the emulator (the
    /// fault-matrix tests). The stack's own plumbing still talks to the emulator directly.
    pub fault_proxy: bool,
    /// Sets every (non-dead-letter) queue's visibility timeout after deployment, so a message
    /// a handler failed comes back in seconds, not the template's minutes (fault tests).
    pub queue_visibility_seconds: Option<i32>,
    /// Extra environment for every function (overrides the template's).
    pub extra_env: Vec<(String, String)>,
    /// Where the handlers write their metrics (embedded metric format, one JSON line each;
    /// `METRICS_FILE`). Emptied at start. `None`: a file of this stack's own under the
    /// system's temporary directory.
    pub metrics_file: Option<PathBuf>,
}

impl StackOptions {
    /// Ports from `PIL_API_PORT`, `PIL_EMULATOR_PORT`, `PIL_PMS_PORT` (3000, 5000, 3100).
    pub fn from_env(workspace: PathBuf) -> Self {
        let metrics_file = Some(workspace_metrics_file(&workspace));
        let port = |k: &str, d: u16| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Self {
            workspace,
            api_port: port("PIL_API_PORT", 3000),
            emulator_port: port("PIL_EMULATOR_PORT", 5000),
            pms_port: port("PIL_PMS_PORT", 3100),
            tick: Some(Duration::from_secs(3600)),
            backoff_base_seconds: 2,
            poll_wait_seconds: 1,
            trigger_max_attempts: None,
            quiet_recheck_seconds: None,
            fault_proxy: false,
            queue_visibility_seconds: None,
            extra_env: Vec::new(),
            metrics_file,
        }
    }

    /// Free ports everywhere: for tests running several stacks at once.
    pub fn ephemeral(workspace: PathBuf) -> Result<Self> {
        Ok(Self {
            workspace,
            api_port: 0,
            // Any free port, chosen when moto starts (Moto::start retries a taken one).
            emulator_port: 0,
            pms_port: 0,
            tick: None,
            backoff_base_seconds: 1,
            poll_wait_seconds: 1,
            trigger_max_attempts: None,
            quiet_recheck_seconds: None,
            fault_proxy: false,
            queue_visibility_seconds: None,
            extra_env: Vec::new(),
            metrics_file: None,
        })
    }
}

fn ev<T>(payload: T) -> LambdaEvent<T> {
    LambdaEvent::new(payload, Context::default())
}

/// One function of the template, built once (its "cold start").
#[derive(Debug)]
pub enum Handler {
    Receiver(webhook_receiver::Deps),
    Scan(scheduler_scan::Deps),
    Approval(approval_check::Deps),
    Page(approval_page::Deps),
    Emitter(trigger_emitter::Deps),
}

impl Handler {
    async fn http(&self, req: ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse> {
        match self {
            Self::Receiver(d) => webhook_receiver::handler(d, ev(req))
                .await
                .map_err(|e| anyhow!("{e}")),
            Self::Page(d) => approval_page::handler(d, ev(req))
                .await
                .map_err(|e| anyhow!("{e}")),
            Self::Scan(_) | Self::Approval(_) | Self::Emitter(_) => {
                Err(anyhow!("function has no HTTP handler"))
            }
        }
    }

    /// One SQS batch, as Lambda's event-source mapping hands it over.
    pub async fn sqs(&self, event: SqsEvent) -> Result<SqsBatchResponse> {
        match self {
            Self::Scan(d) => scheduler_scan::handler(d, ev(event))
                .await
                .map_err(|e| anyhow!("{e}")),
            Self::Approval(d) => approval_check::handler(d, ev(event))
                .await
                .map_err(|e| anyhow!("{e}")),
            Self::Emitter(d) => trigger_emitter::handler(d, ev(event))
                .await
                .map_err(|e| anyhow!("{e}")),
            Self::Receiver(_) | Self::Page(_) => Err(anyhow!("function has no SQS handler")),
        }
    }
}

/// Creates the template's resources in the emulator behind `clients`, with the local
/// parameters (the sender address), as the local stack and the benches do.
pub async fn deploy(workspace: &Path, clients: &Clients) -> Result<Deployed> {
    let params: HashMap<String, String> = [("SenderEmail".to_owned(), SENDER.to_owned())].into();
    template::deploy(
        &workspace.join("template.yaml"),
        clients,
        REGION,
        STACK_NAME,
        &params,
    )
    .await
    .context("creating the template's resources in the emulator")
}

/// Onboards a practice (`America/New_York`, owner `owner@{id}.example`, triggers to
/// `trigger_url`, the default policy without quiet hours, so triggers go out at any hour).
pub async fn onboard(
    store: &pil_aws::DynamoStore,
    keys: &dyn shared::ports::KeyService,
    id: &str,
    trigger_url: &str,
) -> Result<Onboarded> {
    use shared::service::admin::{self, KindChange, NewPractice};
    let practice = shared::ids::PracticeId::parse(id)?;
    let out = admin::create_practice(
        store,
        keys,
        NewPractice {
            id: practice.clone(),
            time_zone: "America/New_York".into(),
            owner_emails: vec![format!("owner@{id}.example")],
            // The local stack's PMS simulator listens on loopback http.
            trigger_url: TriggerUrl::parse(trigger_url, TriggerUrlScope::LocalStack)?,
        },
    )
    .await?;
    admin::set_policy(
        store,
        &practice,
        None,
        KindChange {
            quiet_hours: Some(None),
            ..Default::default()
        },
    )
    .await?;
    let parse = |s: &str| WebhookSecret::parse(s).map_err(|e| anyhow!("{e}"));
    Ok(Onboarded {
        webhook_secret: parse(&out.webhook_secret)?,
        trigger_secret: parse(&out.trigger_secret)?,
        practice,
    })
}

/// A practice [`onboard`] created, with its secrets in clear (as the PMS holds them).
#[derive(Debug)]
pub struct Onboarded {
    pub practice: shared::ids::PracticeId,
    pub webhook_secret: WebhookSecret,
    pub trigger_secret: WebhookSecret,
}

/// A message an SQS poller handed to its function, once the function answered.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The template's logical name of the function.
    pub function: String,
    pub queue_url: String,
    pub body: String,
    /// Deleted from the queue (processed); `false`: left for redelivery (a failure, or a
    /// message the function defers).
    pub deleted: bool,
}

pub struct Stack {
    pub moto: Moto,
    pub clients: Clients,
    pub deployed: Deployed,
    pub api_url: String,
    pub pms: PmsSim,
    pub meter: Meter,
    /// With [`StackOptions::fault_proxy`]: the proxy the handlers' AWS calls go through.
    pub faults: Option<FaultProxy>,
    /// The variables `stack.env` holds (and the CLI reads).
    pub env: Vec<(String, String)>,
    /// The handlers' metrics ([`StackOptions::metrics_file`]).
    pub metrics_file: PathBuf,
    pub handlers: Arc<HashMap<String, Handler>>,
    /// Every message the SQS pollers handed to a function, in the order the functions answered.
    handled: Arc<Mutex<Vec<Handled>>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stack(api: {}, emulator: {})",
            self.api_url, self.moto.url
        )
    }
}

/// The workspace root (where template.yaml is).
pub fn workspace_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PIL_WORKSPACE") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Stack {
    pub async fn start(opts: StackOptions) -> Result<Self> {
        // The local API's socket first: an ephemeral stack asks for any free port (0) and
        // keeps the socket, so no other stack starting meanwhile can take it.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.api_port))
            .await
            .with_context(|| {
                format!(
                    "binding the local API on port {} (set PIL_API_PORT)",
                    opts.api_port
                )
            })?;
        let api_port = listener.local_addr()?.port();
        let moto = Moto::start(&opts.workspace, opts.emulator_port).await?;
        let clients = Clients::local(&moto.url, REGION);
        let deployed = deploy(&opts.workspace, &clients).await?;
        if let Some(v) = opts.queue_visibility_seconds {
            for (name, url) in &deployed.refs {
                if name.ends_with("Queue") {
                    clients
                        .sqs
                        .set_queue_attributes()
                        .queue_url(url)
                        .attributes(
                            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                            v.to_string(),
                        )
                        .send()
                        .await
                        .with_context(|| format!("setting {name}'s visibility timeout"))?;
                }
            }
        }
        let api_url = format!("http://127.0.0.1:{api_port}");
        let meter = Meter::enabled();
        let faults = if opts.fault_proxy {
            Some(FaultProxy::start(&moto.url).await?)
        } else {
            None
        };
        // The handlers' clients (through the fault proxy when there is one).
        let handler_clients = match &faults {
            Some(p) => Clients::local(&p.url, REGION),
            None => clients.clone(),
        };

        let metrics_file = opts.metrics_file.clone().unwrap_or_else(|| {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            std::env::temp_dir().join(format!(
                "pil-metrics-{}-{}.jsonl",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        });
        if let Some(dir) = metrics_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&metrics_file, "")
            .with_context(|| format!("emptying {}", metrics_file.display()))?;
        let mut handlers = HashMap::new();
        for f in &deployed.functions {
            let mut env = f.env.clone();
            env.insert("METRICS_FILE".into(), metrics_file.display().to_string());
            // What differs from Lambda: the public URL, loopback triggers, shorter backoff.
            env.insert("PUBLIC_BASE_URL".into(), api_url.clone());
            env.insert("PIL_ALLOW_LOOPBACK_HTTP".into(), "1".into());
            env.insert(
                "TRIGGER_BACKOFF_BASE_SECONDS".into(),
                opts.backoff_base_seconds.to_string(),
            );
            env.insert(
                "TRIGGER_BACKOFF_CAP_SECONDS".into(),
                (opts.backoff_base_seconds * 8).to_string(),
            );
            env.insert("TRIGGER_LEASE_SECONDS".into(), "10".into());
            if let Some(n) = opts.trigger_max_attempts {
                env.insert("TRIGGER_MAX_ATTEMPTS".into(), n.to_string());
            }
            if let Some(n) = opts.quiet_recheck_seconds {
                env.insert("TRIGGER_QUIET_RECHECK_SECONDS".into(), n.to_string());
            }
            env.extend(opts.extra_env.iter().cloned());
            let config = Config::from_map(env);
            let h = match f.binary.as_str() {
                "webhook-receiver" => Handler::Receiver(webhook_receiver::Deps::new(
                    &handler_clients,
                    &config,
                    meter.clone(),
                )?),
                "scheduler-scan" => Handler::Scan(scheduler_scan::Deps::new(
                    &handler_clients,
                    &config,
                    meter.clone(),
                )?),
                "approval-check" => Handler::Approval(approval_check::Deps::new(
                    &handler_clients,
                    &config,
                    meter.clone(),
                )?),
                "approval-page" => Handler::Page(approval_page::Deps::new(
                    &handler_clients,
                    &config,
                    meter.clone(),
                )?),
                "trigger-emitter" => Handler::Emitter(
                    trigger_emitter::Deps::new(&handler_clients, &config, meter.clone())
                        .map_err(|e| anyhow!("{e}"))?,
                ),
                other => {
                    return Err(anyhow!(
                        "template function {} builds unknown binary {other}",
                        f.name
                    ));
                }
            };
            handlers.insert(f.name.clone(), h);
        }
        let handlers = Arc::new(handlers);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        // The local API Gateway (its socket was bound first thing).
        let state = Arc::new(ApiState {
            routes: deployed.routes.clone(),
            handlers: handlers.clone(),
        });
        let app = axum::Router::new().fallback(api).with_state(state);
        let mut rx_api = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx_api.wait_for(|s| *s).await;
                })
                .await;
        }));

        // The SQS event-source mappings.
        let handled = Arc::new(Mutex::new(Vec::new()));
        for m in &deployed.mappings {
            tasks.push(tokio::spawn(poll(
                clients.sqs.clone(),
                m.clone(),
                handlers.clone(),
                handled.clone(),
                rx.clone(),
                opts.poll_wait_seconds,
            )));
        }

        // The schedule, fired by the local runner.
        if let Some(every) = opts.tick {
            for s in &deployed.schedules {
                let (sqs, s, mut rx) = (clients.sqs.clone(), s.clone(), rx.clone());
                tasks.push(tokio::spawn(async move {
                    let mut iv = tokio::time::interval(every);
                    iv.tick().await;
                    loop {
                        tokio::select! {
                            _ = iv.tick() => {
                                let _ = sqs.send_message().queue_url(&s.queue_url).message_body(&s.input).send().await;
                                tracing::info!(schedule = %s.name, "schedule fired");
                            }
                            _ = rx.changed() => break,
                        }
                    }
                }));
            }
        }

        let pms = PmsSim::start(opts.pms_port, &clients, &deployed).await?;
        let mut env = stack_env(&deployed, &moto.url, &api_url, &pms.url);
        env.push((
            "PIL_METRICS_FILE".to_owned(),
            metrics_file.display().to_string(),
        ));
        Ok(Self {
            moto,
            clients,
            deployed,
            api_url,
            pms,
            meter,
            faults,
            env,
            metrics_file,
            handlers,
            handled,
            shutdown,
            tasks,
        })
    }

    /// Every message the SQS pollers have handed to a function so far (see [`Handled`]).
    pub fn handled(&self) -> Vec<Handled> {
        self.handled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether every queue a function polls is empty: no message visible, in flight (being
    /// handled, or left for redelivery) or delayed. A function sends what it sends before its
    /// message is deleted, so when this holds nothing queued is left to happen.
    pub async fn queues_idle(&self) -> Result<bool> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        for m in &self.deployed.mappings {
            let attrs = self
                .clients
                .sqs
                .get_queue_attributes()
                .queue_url(&m.queue_url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(A::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .with_context(|| format!("reading {}'s attributes", m.queue_url))?
                .attributes
                .unwrap_or_default();
            for a in [
                A::ApproximateNumberOfMessages,
                A::ApproximateNumberOfMessagesNotVisible,
                A::ApproximateNumberOfMessagesDelayed,
            ] {
                let n: u64 = attrs
                    .get(&a)
                    .ok_or_else(|| anyhow!("{} has no {}", m.queue_url, a.as_str()))?
                    .parse()?;
                if n > 0 {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Onboards a practice (see [`onboard`]) whose triggers go to the PMS simulator.
    pub async fn onboard(&self, id: &str) -> Result<Onboarded> {
        self.onboard_with_trigger_url(id, &self.pms.trigger_url())
            .await
    }

    /// Onboards a practice whose triggers go to `trigger_url` (e.g. the Square relay).
    pub async fn onboard_with_trigger_url(&self, id: &str, trigger_url: &str) -> Result<Onboarded> {
        let deps = self.scan_deps()?;
        onboard(
            &deps.adapters.store,
            deps.adapters.secrets.keys(),
            id,
            trigger_url,
        )
        .await
    }

    /// A resolved reference from the template (`Ref`), e.g. a queue URL.
    pub fn resource(&self, logical: &str) -> Result<&str> {
        self.deployed
            .refs
            .get(logical)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("template has no {logical}"))
    }

    /// The receiver's or scanner's dependencies, for in-process assertions.
    pub fn scan_deps(&self) -> Result<&scheduler_scan::Deps> {
        self.handlers
            .values()
            .find_map(|h| {
                if let Handler::Scan(d) = h {
                    Some(d)
                } else {
                    None
                }
            })
            .ok_or_else(|| anyhow!("no scheduler-scan function in the template"))
    }

    pub fn write_env_file(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text: String = self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(path, text)?;
        Ok(())
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.pms.stop().await;
        if let Some(p) = &self.faults {
            p.stop().await;
        }
        self.moto.stop().await;
    }
}

/// `stack.env`: what the CLI and outside scripts need to find the local stack.
fn stack_env(d: &Deployed, emulator: &str, api: &str, pms: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), emulator.to_owned()),
        ("AWS_REGION".to_owned(), REGION.to_owned()),
        ("AWS_DEFAULT_REGION".to_owned(), REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned()),
        ("PIL_API_URL".to_owned(), api.to_owned()),
        ("PIL_EMULATOR_URL".to_owned(), emulator.to_owned()),
        ("PIL_PMS_URL".to_owned(), pms.to_owned()),
        ("PIL_ALLOW_LOOPBACK_HTTP".to_owned(), "1".to_owned()),
        ("PUBLIC_BASE_URL".to_owned(), api.to_owned()),
    ];
    // Every function's configuration (table, key, bus, queues), as the CLI needs it.
    let mut seen = std::collections::BTreeMap::new();
    for f in &d.functions {
        for (k, v) in &f.env {
            if k != "RUST_LOG" && k != "PUBLIC_BASE_URL" {
                seen.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in &d.refs {
        if k.ends_with("Queue") || k.ends_with("DLQ") {
            seen.insert(format!("PIL_QUEUE_{}", k.to_uppercase()), v.clone());
        }
    }
    env.extend(seen);
    env
}

struct ApiState {
    routes: Vec<Route>,
    handlers: Arc<HashMap<String, Handler>>,
}

/// Matches `/v1/practices/{practice_id}/events` style templates.
fn match_route(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (a, b) in t.iter().zip(&p) {
        if let Some(name) = a.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            if b.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), percent_decode(b));
        } else if a != b {
            return None;
        }
    }
    Some(params)
}

fn percent_decode(s: &str) -> String {
    url_decode(s).unwrap_or_else(|| s.to_owned())
}

fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const API_GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

async fn api(State(state): State<Arc<ApiState>>, req: Request<Body>) -> Response<Body> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let found = state.routes.iter().find_map(|r| {
        if r.method == method || r.method == "ANY" {
            match_route(&r.path, &path).map(|p| (r, p))
        } else {
            None
        }
    });
    let Some((route, params)) = found else {
        return plain(StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#);
    };
    let Some(handler) = state.handlers.get(&route.function) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"message":"Internal Server Error"}"#,
        );
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, API_GATEWAY_MAX_BODY).await else {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"message":"Request Entity Too Large"}"#,
        );
    };
    let ev = apigw_request(
        &parts,
        &bytes,
        format!("{} {}", route.method, route.path),
        params,
    );
    match handler.http(ev).await {
        Ok(resp) => apigw_response(resp),
        Err(e) => {
            tracing::error!(error = %e, "function error");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"message":"Internal Server Error"}"#,
            )
        }
    }
}

/// A request as API Gateway (HTTP API, payload 2.0) hands it to a function.
pub fn apigw_request(
    parts: &http::request::Parts,
    bytes: &[u8],
    route_key: String,
    params: HashMap<String, String>,
) -> ApiGatewayV2httpRequest {
    let path = parts.uri.path().to_owned();
    let mut ev = ApiGatewayV2httpRequest::default();
    ev.version = Some("2.0".into());
    ev.route_key = Some(route_key);
    ev.raw_path = Some(path.clone());
    ev.raw_query_string = Some(parts.uri.query().unwrap_or("").to_owned());
    ev.headers = parts.headers.clone();
    ev.path_parameters = params;
    ev.request_context.http.method = parts.method.clone();
    ev.request_context.http.path = Some(path);
    ev.request_context.http.source_ip = Some("127.0.0.1".into());
    ev.request_context.request_id = Some(format!("local-{}", rand::random::<u64>()));
    ev.request_context.time_epoch = jiff::Timestamp::now().as_millisecond();
    if !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => ev.body = Some(s.to_owned()),
            Err(_) => {
                ev.body = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                ev.is_base64_encoded = true;
            }
        }
    }
    ev
}

/// A function's answer as API Gateway sends it back.
pub fn apigw_response(resp: ApiGatewayV2httpResponse) -> Response<Body> {
    let mut b = Response::builder().status(u16::try_from(resp.status_code).unwrap_or(500));
    for (k, v) in &resp.headers {
        b = b.header(k, v);
    }
    let body = match resp.body {
        Some(LambdaBody::Text(t)) => Body::from(t),
        Some(LambdaBody::Binary(b)) => Body::from(b),
        _ => Body::empty(),
    };
    b.body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "{}"))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// One event-source mapping: receive a batch, invoke, delete what succeeded. Failed messages
/// stay and come back after their visibility timeout; the queue's redrive policy dead-letters
/// them after `maxReceiveCount` receives.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    m: Mapping,
    handlers: Arc<HashMap<String, Handler>>,
    handled: Arc<Mutex<Vec<Handled>>>,
    mut stop: watch::Receiver<bool>,
    wait: i32,
) {
    let Some(handler) = handlers.get(&m.function) else {
        return;
    };
    let arn = format!(
        "arn:aws:sqs:{REGION}:{}:{}",
        template::ACCOUNT,
        m.queue_url.rsplit('/').next().unwrap_or_default()
    );
    loop {
        if *stop.borrow() {
            break;
        }
        let recv = sqs
            .receive_message()
            .queue_url(&m.queue_url)
            .max_number_of_messages(m.batch_size.clamp(1, 10))
            .wait_time_seconds(wait)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send();
        let out = tokio::select! {
            r = recv => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let msgs = match out {
            Ok(o) => o.messages.unwrap_or_default(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if msgs.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        for msg in &msgs {
            let mut r = SqsMessage::default();
            r.message_id = msg.message_id.clone();
            r.receipt_handle = msg.receipt_handle.clone();
            r.body = msg.body.clone();
            r.md5_of_body = msg.md5_of_body.clone();
            r.event_source = Some("aws:sqs".into());
            r.event_source_arn = Some(arn.clone());
            r.aws_region = Some(REGION.into());
            if let Some(attrs) = &msg.attributes {
                r.attributes = attrs
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect();
            }
            event.records.push(r);
        }
        let failed: Vec<String> = match handler.sqs(event).await {
            Ok(resp) if m.partial_batch => resp
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Ok(resp) if resp.batch_item_failures.is_empty() => vec![],
            // Without partial batch responses, any failure fails the whole batch, as in Lambda.
            Ok(_) | Err(_) => msgs.iter().filter_map(|x| x.message_id.clone()).collect(),
        };
        for msg in &msgs {
            let kept = msg
                .message_id
                .as_ref()
                .is_some_and(|id| failed.contains(id));
            let mut deleted = false;
            if !kept && let Some(rh) = &msg.receipt_handle {
                deleted = sqs
                    .delete_message()
                    .queue_url(&m.queue_url)
                    .receipt_handle(rh)
                    .send()
                    .await
                    .is_ok();
            }
            handled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Handled {
                    function: m.function.clone(),
                    queue_url: m.queue_url.clone(),
                    body: msg.body.clone().unwrap_or_default(),
                    deleted,
                });
        }
    }
}

/// The metrics file of `make run` and `make serve`: `target/local/metrics.jsonl`.
pub fn workspace_metrics_file(workspace: &std::path::Path) -> PathBuf {
    workspace.join("target/local/metrics.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates() {
        let p = match_route(
            "/v1/practices/{practice_id}/events",
            "/v1/practices/demo-clinic/events",
        )
        .unwrap();
        assert_eq!(p["practice_id"], "demo-clinic");
        assert!(
            match_route("/v1/practices/{practice_id}/events", "/v1/practices/events").is_none()
        );
        assert!(match_route("/v1/approvals/{token}", "/v1/approvals/abc.def").is_some());
    }
}
