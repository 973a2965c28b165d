//! `cold-start`: init time, first-invocation latency and peak memory of each handler's release
//! bootstrap, as Lambda runs it, against a hello-world `lambda_runtime` baseline built with
//! the same profile (`make bench-cold` builds them all, one package at a time so that each gets
//! only its own cargo features, then runs this).
//!
//! Each bootstrap runs as a child process under a Lambda Runtime API emulator written here
//! (plain HTTP/1.1 on loopback: `GET /2018-06-01/runtime/invocation/next`,
//! `POST …/invocation/{id}/response`, `…/invocation/{id}/error`, `…/init/error`), with the
//! environment Lambda gives a `provided.al2023` function (`AWS_LAMBDA_RUNTIME_API`,
//! `AWS_LAMBDA_FUNCTION_NAME`, `_HANDLER`, `AWS_REGION`, credentials, …) plus the function's
//! own variables from `template.yaml`, pointed at moto with `AWS_ENDPOINT_URL`. Nothing else
//! is inherited (no `HOME`: no `~/.aws` files, as in Lambda).
//!
//! - **init** is process spawn → the first `GET …/invocation/next`;
//! - **first invoke** is the first event handed out → its `POST …/response`;
//! - **peak RSS** is `VmHWM` from `/proc/<pid>/status` after a load run: one process, a
//!   realistic batch of invocations (signed 100-event webhook batches for an onboarded
//!   practice; scans of the practice those events made due; the candidate messages the scan
//!   queued; page GETs from the digest the owner received; the trigger messages EventBridge
//!   routed), read when the bootstrap comes back for more after the last one.
//!
//! The load runs go first, in pipeline order, each feeding the next through moto's queues and
//! SES outbox; then `--runs` rounds of cold starts, every function once per round (so a noisy
//! moment hits all of them alike). With `--compare-warm` each handler also runs with
//! `PIL_INIT_WARMUP=0` (no warm-up in init) to show what the warm-up moves from the first
//! request into init.
//!
//! Output: a Markdown table on stdout, the JSON described in docs/performance.md in
//! `target/bench/cold-start.json`. Exits non-zero if a run failed, or, with `--enforce`, if a
//! goal is missed (size ≤ 8 MB, init ≤ 1.5× baseline).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use jiff::{SignedDuration, Timestamp};
use pil_aws::{Clients, DynamoStore, KmsKeys, Meter};
use pil_local::moto::Moto;
use pil_local::pms::PmsSim;
use pil_local::scenario::new_ref;
use pil_local::stack::{REGION, workspace_root};
use pil_local::template::Deployed;
use serde::Serialize;
use serde_json::{Value, json};
use shared::action::ActionKind;
use shared::practice::Mode;
use shared::secrets::SecretCache;
use shared::service::admin::{self, KindChange};
use shared::signature::{self, WebhookSecret};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const BASELINE: &str = "hello-lambda";
/// The baseline on tokio's current-thread runtime (the handlers' flavour): shown beside the
/// goal's baseline, with each handler's ratio to it, so the runtime's share is visible.
const BASELINE_CURRENT_THREAD: &str = "hello-lambda-current-thread";
/// 8 MB in decimal megabytes: the stricter reading of the goal (8 MiB is 8,388,608).
const SIZE_GOAL_BYTES: u64 = 8_000_000;
const PRACTICE: &str = "bench-clinic";

#[derive(Parser, Debug)]
#[command(
    name = "cold-start",
    about = "Init time, first-invocation latency and peak RSS of each release bootstrap under a local Lambda Runtime API"
)]
struct Cli {
    /// Cold starts per function (medians are reported).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Where the release bootstraps are (default: `$CARGO_TARGET_DIR/release`, else
    /// `target/release`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The JSON results (default: `target/bench/cold-start.json` in the workspace).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Webhook requests in the receiver's load run (100 events each).
    #[arg(long, default_value_t = 10)]
    webhook_requests: usize,
    /// Also cold-start each handler with `PIL_INIT_WARMUP=0` (what the warm-up in init buys).
    #[arg(long)]
    compare_warm: bool,
    /// Fail (exit 1) when a goal is missed, not only when a run fails.
    #[arg(long)]
    enforce: bool,
    /// Largest allowed ratio of a handler's init median to the baseline's.
    #[arg(long, default_value_t = 1.5)]
    max_ratio: f64,
}

// ---------------------------------------------------------------------------------------------
// The Lambda Runtime API emulator.

/// One request the bootstrap made.
struct ApiRequest {
    method: String,
    path: String,
    body: Vec<u8>,
    /// When its head had arrived.
    at: Instant,
    reply: oneshot::Sender<ApiResponse>,
}

struct ApiResponse {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl ApiResponse {
    fn accepted() -> Self {
        Self {
            status: 202,
            headers: vec![("content-type", "application/json".into())],
            body: br#"{"status":"OK"}"#.to_vec(),
        }
    }
}

async fn read_request(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<Option<(String, String, Vec<u8>, Instant)>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            bail!("connection closed in the request head");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().context("content-length")?;
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let at = Instant::now();
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .context("chunk size")?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body).await?;
    }
    Ok(Some((method, path, body, at)))
}

/// One keep-alive connection from the runtime client: each request goes to the run's loop,
/// which answers when it decides to (a `GET …/next` waits for the next event).
async fn serve_connection(stream: TcpStream, tx: mpsc::UnboundedSender<ApiRequest>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Ok(Some((method, path, body, at))) = read_request(&mut read).await {
        let (reply, rx) = oneshot::channel();
        if tx
            .send(ApiRequest {
                method,
                path,
                body,
                at,
                reply,
            })
            .is_err()
        {
            return;
        }
        let Ok(resp) = rx.await else { return };
        let reason = match resp.status {
            200 => "OK",
            202 => "Accepted",
            _ => "Error",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
        for (k, v) in &resp.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", resp.body.len()));
        if write.write_all(head.as_bytes()).await.is_err()
            || write.write_all(&resp.body).await.is_err()
        {
            return;
        }
    }
}

/// What one process did.
#[derive(Debug, Clone)]
struct RunOutcome {
    init: Duration,
    /// Per event, handed out → response received.
    invokes: Vec<Duration>,
    responses: Vec<Value>,
    vm_hwm_kib: u64,
}

/// The environment Lambda gives a `provided.al2023` function, for `name`.
fn lambda_env(name: &str, api: &str, memory: u32) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/23/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_SESSION_TOKEN", "testing".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Reads `VmHWM` (peak resident set) of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Starts `bin` under the emulator, hands it `events` one at a time, and stops it when it asks
/// for more after the last one.
async fn run_bootstrap(
    bin: &Path,
    name: &str,
    function_env: &[(String, String)],
    events: Vec<Value>,
    log: &Path,
    timeout: Duration,
) -> Result<RunOutcome> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, tx.clone()));
        }
    });
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .envs(lambda_env(name, &api, 128))
        .envs(function_env.iter().map(|(k, v)| (k, v)))
        .current_dir(bin.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(logfile.try_clone()?)
        .stderr(logfile)
        .kill_on_drop(true);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let arn = format!("arn:aws:lambda:{REGION}:123456789012:function:{name}");

    let mut pending = events.into_iter().enumerate();
    let mut init = None;
    let mut sent: Option<(String, Instant)> = None;
    let mut invokes = Vec::new();
    let mut responses = Vec::new();
    let result = loop {
        let req = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break Err(anyhow!("emulator stopped")) },
            status = child.wait() => break Err(anyhow!("{name} exited ({:?}) before it was done; see {}", status.ok(), log.display())),
            _ = tokio::time::sleep_until(deadline) => break Err(anyhow!("{name}: no progress within {timeout:?}; see {}", log.display())),
        };
        let path = req
            .path
            .strip_prefix("/2018-06-01/runtime/")
            .unwrap_or(&req.path)
            .to_owned();
        match (req.method.as_str(), path.as_str()) {
            ("GET", "invocation/next") => {
                if init.is_none() {
                    init = Some(req.at - t0);
                }
                if sent.is_some() {
                    break Err(anyhow!("{name} asked for the next event before answering"));
                }
                match pending.next() {
                    Some((i, event)) => {
                        let id = format!("{:08x}-bench-{i:04}", rand::random::<u32>());
                        let deadline_ms = Timestamp::now().as_millisecond() + 900_000;
                        let resp = ApiResponse {
                            status: 200,
                            headers: vec![
                                ("content-type", "application/json".into()),
                                ("lambda-runtime-aws-request-id", id.clone()),
                                ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                                ("lambda-runtime-invoked-function-arn", arn.clone()),
                                (
                                    "lambda-runtime-trace-id",
                                    format!(
                                        "Root=1-00000000-{:024x};Parent={:016x};Sampled=0",
                                        rand::random::<u64>(),
                                        rand::random::<u64>()
                                    ),
                                ),
                            ],
                            body: serde_json::to_vec(&event)?,
                        };
                        sent = Some((id, Instant::now()));
                        let _ = req.reply.send(resp);
                    }
                    None => {
                        // Idle, waiting for work: the load is over. Keep the request unanswered.
                        let hwm = vm_hwm_kib(pid);
                        drop(req);
                        break hwm.map(|vm_hwm_kib| RunOutcome {
                            init: init.unwrap_or_default(),
                            invokes: std::mem::take(&mut invokes),
                            responses: std::mem::take(&mut responses),
                            vm_hwm_kib,
                        });
                    }
                }
            }
            ("POST", p) if p.starts_with("invocation/") && p.ends_with("/response") => {
                let Some((id, at)) = sent.take() else {
                    break Err(anyhow!("{name} answered an invocation it was not given"));
                };
                if !p.contains(&id) {
                    break Err(anyhow!("{name} answered another request id"));
                }
                invokes.push(req.at - at);
                responses.push(serde_json::from_slice(&req.body).unwrap_or(Value::Null));
                let _ = req.reply.send(ApiResponse::accepted());
            }
            ("POST", p) if p.ends_with("/error") => {
                let what = String::from_utf8_lossy(&req.body)
                    .chars()
                    .take(300)
                    .collect::<String>();
                let _ = req.reply.send(ApiResponse::accepted());
                break Err(anyhow!("{name} reported {p}: {what}"));
            }
            (m, p) => {
                let _ = req.reply.send(ApiResponse {
                    status: 404,
                    headers: vec![],
                    body: Vec::new(),
                });
                break Err(anyhow!(
                    "{name} called {m} {p}, which the emulator does not know"
                ));
            }
        }
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    acceptor.abort();
    result
}

// ---------------------------------------------------------------------------------------------
// Events, as API Gateway (HTTP API, payload v2) and SQS deliver them.

fn apigw(
    method: &str,
    route: &str,
    path: &str,
    params: Value,
    headers: Value,
    body: Option<String>,
) -> Value {
    let now = Timestamp::now();
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "pathParameters": params,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10", "userAgent": "bench"},
            "requestId": new_ref("req"),
            "routeKey": format!("{method} {route}"),
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.as_millisecond(),
        },
        "body": body,
        "isBase64Encoded": false,
    })
}

/// A signed batch of `n` completed neurotoxin appointments, each for a new patient: one in ten
/// 95 days ago (a rebook nudge is due), one in ten 190 days ago (a win-back is due), the rest
/// 5 days ago (nothing due yet).
fn webhook_batch(practice: &str, secret: &WebhookSecret, n: usize) -> Result<Value> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let days = match i % 10 {
                0 => 95,
                5 => 190,
                _ => 5,
            };
            let at = Timestamp::now() - SignedDuration::from_hours(24 * days);
            json!({"type": "appointment.completed", "occurred_at": at.to_string(),
                "data": {"appointment_ref": new_ref("appt"), "patient_ref": new_ref("p"), "treatment": "neurotoxin"}})
        })
        .collect();
    let body = json!({ "events": events }).to_string();
    let id = new_ref("msg");
    let ts = Timestamp::now().as_second();
    let sig = secret
        .sign(&id, ts, body.as_bytes())
        .ok_or_else(|| anyhow!("body is not UTF-8"))?;
    let path = format!("/v1/practices/{practice}/events");
    Ok(apigw(
        "POST",
        "/v1/practices/{practice_id}/events",
        &path,
        json!({"practice_id": practice}),
        json!({"content-type": "application/json", (signature::HEADER_ID): id,
            (signature::HEADER_TIMESTAMP): ts.to_string(), (signature::HEADER_SIGNATURE): sig}),
        Some(body),
    ))
}

fn page_get(token: &str) -> Value {
    apigw(
        "GET",
        "/v1/approvals/{token}",
        &format!("/v1/approvals/{token}"),
        json!({"token": token}),
        json!({"accept": "text/html"}),
        None,
    )
}

fn sqs_event(queue: &str, bodies: &[String]) -> Value {
    let now = Timestamp::now().as_millisecond().to_string();
    let records: Vec<Value> = bodies
        .iter()
        .map(|b| {
            json!({
                "messageId": new_ref("m"),
                "receiptHandle": new_ref("rh"),
                "body": b,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now,
                    "SenderId": "bench", "ApproximateFirstReceiveTimestamp": now},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:123456789012:{queue}"),
                "awsRegion": REGION,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Takes every message off a queue (moto), as the event-source mapping would.
async fn drain(clients: &Clients, url: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let r = clients
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let msgs = r.messages.unwrap_or_default();
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        for m in msgs {
            if let Some(rh) = m.receipt_handle {
                clients
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(rh)
                    .send()
                    .await?;
            }
            out.extend(m.body);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The bench.

/// One row: a template function (or the baseline).
#[derive(Debug, Clone)]
struct Subject {
    /// Template logical id, or `hello-lambda`.
    name: String,
    binary: String,
    env: Vec<(String, String)>,
    /// The first event of each cold start.
    cold_event: Value,
    memory_size: Option<u64>,
    load: Option<RunOutcome>,
    cold: Vec<RunOutcome>,
    cold_no_warm: Vec<RunOutcome>,
}

/// One row of `cold-start.json`.
#[derive(Debug, Serialize)]
struct Row {
    function: String,
    binary: String,
    size_bytes: u64,
    init_median_ms: f64,
    init_ratio: f64,
    /// The median over rounds of this function's init / the baseline's init in the same
    /// round (each round runs every function once, so a slow moment of the machine hits
    /// both sides of a ratio).
    init_ratio_paired: f64,
    /// init_median_ms / the current-thread baseline's.
    init_ratio_current_thread: f64,
    first_invoke_median_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_median_no_warmup_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_invoke_median_no_warmup_ms: Option<f64>,
    peak_rss_kib: u64,
    load_invocations: usize,
    memory_size_mb: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Format version of this file.
    version: u32,
    generated_at: String,
    target: String,
    runs: usize,
    baseline: String,
    goals: Value,
    functions: Vec<Row>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `MemorySize` per function from the template (`Globals.Function.MemorySize` unless the
/// function sets its own).
fn memory_sizes(template: &Path) -> Result<HashMap<String, u64>> {
    let t: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(template)?)?;
    let global = t
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("MemorySize"))
        .and_then(serde_yaml::Value::as_u64);
    let mut out = HashMap::new();
    if let Some(res) = t.get("Resources").and_then(serde_yaml::Value::as_mapping) {
        for (k, r) in res {
            if r.get("Type").and_then(serde_yaml::Value::as_str)
                != Some("AWS::Serverless::Function")
            {
                continue;
            }
            let own = r
                .get("Properties")
                .and_then(|p| p.get("MemorySize"))
                .and_then(serde_yaml::Value::as_u64);
            if let (Some(k), Some(m)) = (k.as_str(), own.or(global)) {
                out.insert(k.to_owned(), m);
            }
        }
    }
    Ok(out)
}

fn bin_dir(cli: &Cli, root: &Path) -> PathBuf {
    cli.bin_dir.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("release")
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    pil_local::init_stderr_logging("error");
    let cli = Cli::parse();
    match bench(&cli).await {
        Ok(missed) if missed.is_empty() || !cli.enforce => {
            for m in &missed {
                eprintln!("cold-start: goal not met: {m}");
            }
            ExitCode::SUCCESS
        }
        Ok(missed) => {
            for m in &missed {
                eprintln!("cold-start: FAILED: {m}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cold-start: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; returns the goals missed.
async fn bench(cli: &Cli) -> Result<Vec<String>> {
    let root = workspace_root();
    let bins = bin_dir(cli, &root);
    // Results next to every other bench's, wherever the bootstraps were built (make
    // bench-cold builds them under target/<triple>/release).
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bench");
    let logs = out_dir.join("cold-start-logs");
    std::fs::create_dir_all(&logs)?;
    for b in [
        BASELINE,
        BASELINE_CURRENT_THREAD,
        "webhook-receiver",
        "scheduler-scan",
        "approval-check",
        "approval-page",
        "trigger-emitter",
    ] {
        if !bins.join(b).exists() {
            bail!(
                "{} is missing: build the release bootstraps first (make bench-cold builds them)",
                bins.join(b).display()
            );
        }
    }

    eprintln!("cold-start: starting moto and creating the template's resources");
    let moto = Moto::start(&root, 0).await?;
    let clients = Clients::local(&moto.url, REGION);
    let deployed = pil_local::stack::deploy(&root, &clients).await?;
    let result = run_all(
        cli, &root, &bins, &logs, &out_dir, &moto, &clients, &deployed,
    )
    .await;
    moto.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_all(
    cli: &Cli,
    root: &Path,
    bins: &Path,
    logs: &Path,
    out_dir: &Path,
    moto: &Moto,
    clients: &Clients,
    deployed: &Deployed,
) -> Result<Vec<String>> {
    let pms = PmsSim::start(0, clients, deployed).await?;
    let public_url = "https://bench.execute-api.us-east-1.amazonaws.com".to_owned();
    let memory = memory_sizes(&root.join("template.yaml"))?;
    let fn_env = |name: &str| -> Result<Vec<(String, String)>> {
        let f = deployed
            .functions
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| anyhow!("template has no {name}"))?;
        let mut env: BTreeMap<String, String> = f.env.clone().into_iter().collect();
        env.insert("AWS_ENDPOINT_URL".into(), moto.url.clone());
        env.insert("PUBLIC_BASE_URL".into(), public_url.clone());
        env.insert("PIL_ALLOW_LOOPBACK_HTTP".into(), "1".into());
        Ok(env.into_iter().collect())
    };
    let binary_of = |name: &str| -> Result<String> {
        Ok(deployed
            .functions
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| anyhow!("template has no {name}"))?
            .binary
            .clone())
    };

    // The practice: onboarded as `pil practice create` does, its secrets sealed with the
    // template's KMS key; rebook nudges auto-approved (they become triggers), win-backs need
    // the owner (they become the digest and its pages); no quiet hours.
    let env0 = &deployed
        .functions
        .first()
        .ok_or_else(|| anyhow!("no functions"))?
        .env;
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        env0.get("TABLE_NAME")
            .ok_or_else(|| anyhow!("no TABLE_NAME"))?,
        Meter::default(),
    );
    let keys = SecretCache::new(
        Arc::new(KmsKeys::new(
            clients.kms.clone(),
            env0.get("KMS_KEY_ID")
                .ok_or_else(|| anyhow!("no KMS_KEY_ID"))?,
        )),
        Duration::from_secs(300),
    );
    let onboarded =
        pil_local::stack::onboard(&store, keys.keys(), PRACTICE, &pms.trigger_url()).await?;
    let practice = onboarded.practice.clone();
    admin::set_kind_policy(
        &store,
        &practice,
        ActionKind::RebookNudge,
        KindChange {
            mode: Some(Mode::Auto),
            max_auto_per_day: Some(1000),
            // Every due gap proposed in one night (the default budget of 25 would pick the
            // most overdue, the win-backs, which wait for the owner), at any hour.
            nightly_budget: Some(500),
            quiet_hours: Some(None),
            ..Default::default()
        },
    )
    .await?;
    let secret = onboarded.webhook_secret;

    let mut subjects: Vec<Subject> = Vec::new();
    let subject =
        |name: &str, binary: String, env: Vec<(String, String)>, cold_event: Value| Subject {
            name: name.to_owned(),
            memory_size: memory.get(name).copied(),
            binary,
            env,
            cold_event,
            load: None,
            cold: Vec::new(),
            cold_no_warm: Vec::new(),
        };
    let timeout = Duration::from_secs(600);
    let load = |s: &Subject, events: Vec<Value>| {
        let (bin, name, env) = (bins.join(&s.binary), s.name.clone(), s.env.clone());
        let log = logs.join(format!("{}.log", s.name));
        async move {
            let n = events.len();
            eprintln!("cold-start: load run of {name}: {n} invocations");
            run_bootstrap(&bin, &name, &env, events, &log, timeout).await
        }
    };

    // The baselines: the goal's (first: every ratio is to it), then the current-thread one.
    for name in [BASELINE, BASELINE_CURRENT_THREAD] {
        let mut hello = subject(name, name.into(), Vec::new(), json!({"hello": "world"}));
        hello.load = Some(load(&hello, vec![json!({"hello": "world"}); 20]).await?);
        subjects.push(hello);
    }

    // Receiver: signed 100-event batches.
    let name = "WebhookReceiverFunction";
    let mut recv = subject(name, binary_of(name)?, fn_env(name)?, Value::Null);
    let batches = (0..cli.webhook_requests)
        .map(|_| webhook_batch(PRACTICE, &secret, 100))
        .collect::<Result<Vec<_>>>()?;
    let out = load(&recv, batches).await?;
    for r in &out.responses {
        if r.get("statusCode").and_then(Value::as_i64) != Some(202) {
            bail!("the receiver refused a bench batch: {r}");
        }
    }
    recv.load = Some(out);
    subjects.push(recv);

    // Scan: the explicit scan of the practice (what the nightly tick fans out to), then ticks.
    let name = "SchedulerScanFunction";
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("America/New_York")?)
        .date();
    let scan_body =
        json!({"kind": "scan", "practice_id": PRACTICE, "date": today.to_string()}).to_string();
    let tick_body = json!({"kind": "tick"}).to_string();
    let scan_event = sqs_event("ScanQueue", std::slice::from_ref(&scan_body));
    let mut scan = subject(name, binary_of(name)?, fn_env(name)?, scan_event.clone());
    scan.load = Some(
        load(
            &scan,
            vec![
                scan_event.clone(),
                sqs_event("ScanQueue", std::slice::from_ref(&tick_body)),
                scan_event.clone(),
            ],
        )
        .await?,
    );
    subjects.push(scan);

    // Approval check: the candidate messages the scan queued, in the mapping's batches.
    let name = "ApprovalCheckFunction";
    let candidates = drain(
        clients,
        deployed
            .refs
            .get("CandidatesQueue")
            .ok_or_else(|| anyhow!("no CandidatesQueue"))?,
    )
    .await?;
    if candidates.is_empty() {
        bail!("the scan queued no candidates");
    }
    let cand_events: Vec<Value> = candidates
        .chunks(10)
        .map(|c| sqs_event("CandidatesQueue", c))
        .collect();
    // A cold start's event: one message with the first scan message's first 10 candidates.
    let mut first: Value = serde_json::from_str(&candidates[0])?;
    if let Some(ids) = first.get_mut("action_ids").and_then(Value::as_array_mut) {
        ids.truncate(10);
    }
    let cold_check = sqs_event("CandidatesQueue", &[first.to_string()]);
    let mut check = subject(name, binary_of(name)?, fn_env(name)?, cold_check);
    check.load = Some(load(&check, cand_events).await?);
    subjects.push(check);

    // Approval pages: GETs of the links in the digest the owner received.
    let name = "ApprovalPageFunction";
    let mails = moto.sent_emails().await?;
    let tokens: Vec<String> = mails
        .iter()
        .flat_map(|m| m.links())
        .filter_map(|l| {
            l.split("/v1/approvals/")
                .nth(1)
                .map(|t| t.split(['?', '#', '"']).next().unwrap_or("").to_owned())
        })
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        bail!("the digest carried no approval links");
    }
    let page_events: Vec<Value> = tokens
        .iter()
        .cycle()
        .take(tokens.len().max(20))
        .map(|t| page_get(t))
        .collect();
    let mut page = subject(name, binary_of(name)?, fn_env(name)?, Value::Null);
    let out = load(&page, page_events.clone()).await?;
    let mut statuses: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &out.responses {
        *statuses
            .entry(r.get("statusCode").and_then(Value::as_i64).unwrap_or(0))
            .or_default() += 1;
    }
    eprintln!("cold-start: approval pages answered (status: count) {statuses:?}");
    // A cold start's event: the first link that showed its page.
    page.cold_event = out
        .responses
        .iter()
        .position(|r| r.get("statusCode").and_then(Value::as_i64) == Some(200))
        .map(|i| page_events[i].clone())
        .ok_or_else(|| anyhow!("no approval link showed its page: {statuses:?}"))?;
    page.load = Some(out);
    subjects.push(page);

    // Emitter: the approvals EventBridge routed to the triggers queue.
    let name = "TriggerEmitterFunction";
    let triggers = drain(
        clients,
        deployed
            .refs
            .get("TriggersQueue")
            .ok_or_else(|| anyhow!("no TriggersQueue"))?,
    )
    .await?;
    if triggers.is_empty() {
        bail!("no approved actions reached the triggers queue");
    }
    let trig_events: Vec<Value> = triggers
        .chunks(10)
        .map(|c| sqs_event("TriggersQueue", c))
        .collect();
    let cold_emit = sqs_event("TriggersQueue", &triggers[..1]);
    let mut emit = subject(name, binary_of(name)?, fn_env(name)?, cold_emit);
    emit.load = Some(load(&emit, trig_events).await?);
    let delivered = pms.received().len();
    if delivered == 0 {
        bail!("the emitter delivered no trigger to the PMS");
    }
    subjects.push(emit);
    eprintln!(
        "cold-start: pipeline: {} webhook events, {} candidate messages, {} digest links, {} triggers delivered",
        cli.webhook_requests * 100,
        candidates.len(),
        tokens.len(),
        delivered
    );

    // Cold starts, round-robin. The receiver's first event is a fresh signed batch each time.
    for round in 0..cli.runs {
        eprintln!("cold-start: round {}/{}", round + 1, cli.runs);
        for s in subjects.iter_mut() {
            let event = if s.name == "WebhookReceiverFunction" {
                webhook_batch(PRACTICE, &secret, 10)?
            } else {
                s.cold_event.clone()
            };
            let log = logs.join(format!("{}.log", s.name));
            let out = run_bootstrap(
                &bins.join(&s.binary),
                &s.name,
                &s.env,
                vec![event.clone()],
                &log,
                timeout,
            )
            .await?;
            s.cold.push(out);
            if cli.compare_warm && !s.name.starts_with(BASELINE) {
                let event = if s.name == "WebhookReceiverFunction" {
                    webhook_batch(PRACTICE, &secret, 10)?
                } else {
                    event
                };
                let mut env = s.env.clone();
                env.push(("PIL_INIT_WARMUP".into(), "0".into()));
                let out = run_bootstrap(
                    &bins.join(&s.binary),
                    &s.name,
                    &env,
                    vec![event],
                    &log,
                    timeout,
                )
                .await?;
                s.cold_no_warm.push(out);
            }
        }
    }
    pms.stop().await;

    // Results.
    let init_of = |v: &[RunOutcome]| median(v.iter().map(|o| ms(o.init)).collect());
    let first_of = |v: &[RunOutcome]| {
        median(
            v.iter()
                .filter_map(|o| o.invokes.first().copied().map(ms))
                .collect(),
        )
    };
    let base_init = init_of(&subjects[0].cold);
    let ct_init = subjects
        .iter()
        .find(|s| s.name == BASELINE_CURRENT_THREAD)
        .map(|s| init_of(&s.cold))
        .ok_or_else(|| anyhow!("no {BASELINE_CURRENT_THREAD} row"))?;
    let paired_of = |v: &[RunOutcome]| {
        median(
            v.iter()
                .zip(&subjects[0].cold)
                .map(|(o, b)| ms(o.init) / ms(b.init))
                .collect(),
        )
    };
    let mut rows = Vec::new();
    let mut missed = Vec::new();
    for s in &subjects {
        let size = std::fs::metadata(bins.join(&s.binary))?.len();
        let init = init_of(&s.cold);
        let ratio = init / base_init;
        let paired = paired_of(&s.cold);
        let load = s.load.as_ref();
        rows.push(Row {
            function: s.name.clone(),
            binary: s.binary.clone(),
            size_bytes: size,
            init_median_ms: round3(init),
            init_ratio: round3(ratio),
            init_ratio_paired: round3(paired),
            init_ratio_current_thread: round3(init / ct_init),
            first_invoke_median_ms: round3(first_of(&s.cold)),
            init_median_no_warmup_ms: (!s.cold_no_warm.is_empty())
                .then(|| round3(init_of(&s.cold_no_warm))),
            first_invoke_median_no_warmup_ms: (!s.cold_no_warm.is_empty())
                .then(|| round3(first_of(&s.cold_no_warm))),
            peak_rss_kib: load.map(|l| l.vm_hwm_kib).unwrap_or_default(),
            load_invocations: load.map(|l| l.invokes.len()).unwrap_or_default(),
            memory_size_mb: s.memory_size,
        });
        if s.name != BASELINE && s.name != BASELINE_CURRENT_THREAD {
            if size > SIZE_GOAL_BYTES {
                missed.push(format!(
                    "{}: {} is {size} bytes (goal ≤ {SIZE_GOAL_BYTES})",
                    s.name, s.binary
                ));
            }
            if ratio > cli.max_ratio {
                missed.push(format!(
                    "{}: init {init:.2} ms is ×{ratio:.2} the baseline (goal ≤ ×{})",
                    s.name, cli.max_ratio
                ));
            }
        }
    }

    print_table(&rows, cli);
    let report = Report {
        version: 1,
        generated_at: Timestamp::now().to_string(),
        target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        runs: cli.runs,
        baseline: BASELINE.into(),
        goals: json!({"size_bytes_max": SIZE_GOAL_BYTES, "init_ratio_max": cli.max_ratio}),
        functions: rows,
    };
    let path = cli
        .json
        .clone()
        .unwrap_or_else(|| out_dir.join("cold-start.json"));
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("cold-start: wrote {}", path.display());
    Ok(missed)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_table(rows: &[Row], cli: &Cli) {
    println!(
        "\n### Cold start, {} runs each (medians; init = spawn → first `GET /next`)\n",
        cli.runs
    );
    let warm = rows.iter().any(|r| r.init_median_no_warmup_ms.is_some());
    let mut head =
        "| function | binary | stripped size | init ms | × baseline | × baseline, paired by round | × current-thread baseline | first invoke ms |".to_owned();
    let mut rule = "|---|---|---:|---:|---:|---:|---:|---:|".to_owned();
    if warm {
        head.push_str(" init ms, no warm-up | first invoke ms, no warm-up |");
        rule.push_str("---:|---:|");
    }
    head.push_str(" peak RSS (load) | load invocations | MemorySize |");
    rule.push_str("---:|---:|---:|");
    println!("{head}\n{rule}");
    for r in rows {
        let mut line = format!(
            "| {} | {} | {:.2} MiB | {:.2} | ×{:.2} | ×{:.2} | ×{:.2} | {:.2} |",
            r.function,
            r.binary,
            r.size_bytes as f64 / 1_048_576.0,
            r.init_median_ms,
            r.init_ratio,
            r.init_ratio_paired,
            r.init_ratio_current_thread,
            r.first_invoke_median_ms
        );
        if warm {
            let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
            line.push_str(&format!(
                " {} | {} |",
                f(r.init_median_no_warmup_ms),
                f(r.first_invoke_median_no_warmup_ms)
            ));
        }
        line.push_str(&format!(
            " {:.1} MiB | {} | {} |",
            r.peak_rss_kib as f64 / 1024.0,
            r.load_invocations,
            r.memory_size_mb
                .map(|m| format!("{m} MB"))
                .unwrap_or_else(|| "–".into())
        ));
        println!("{line}");
    }
}
