//! `make load`: drives the local API (loopback only) at a fixed rate for a fixed time with a mix
//! of valid, duplicate and refused webhooks, then checks that every valid event took effect
//! exactly once and nothing refused was stored. Prints throughput and latency percentiles and
//! writes them to target/bench/load.json.
//!
//! Open loop: requests start on a fixed schedule whether or not earlier ones have finished
//! (at most `--max-in-flight` outstanding), so a slow server shows up as latency, not as a
//! lower offered rate. Bounded: `--rate` × `--seconds` requests at most.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Parser;
use pil_local::pms::PmsClient;
use pil_local::scenario::{new_ref, table_items};
use pil_local::stack::{Stack, StackOptions, workspace_root};
use serde_json::{Value, json};
use shared::signature::WebhookSecret;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(
    name = "load",
    about = "Local load test: valid, duplicate and refused webhooks at a fixed rate"
)]
struct Args {
    /// Requests per second offered.
    #[arg(long, default_value_t = 15)]
    rate: u32,
    /// How long to offer them.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Outstanding requests at most (beyond it, a request waits and counts as late).
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Where the figures go.
    #[arg(long, default_value = "target/bench/load.json")]
    out: String,
}

/// What one request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Valid,
    Duplicate,
    Refused,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
        }
    }
}

/// One valid webhook: its id, body, and the item it must leave (sort key, expected fields).
#[derive(Debug, Clone)]
struct Sent {
    webhook_id: String,
    body: String,
    sk: String,
    expect: Value,
}

fn at(days_ago: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days_ago))
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The i-th valid webhook: one event for a fresh patient (a completion, a booking or an
/// opt-out, in turn).
fn valid(i: usize) -> Sent {
    let p = new_ref("pt");
    let appt = new_ref("ap");
    let (event, sk, expect) = match i % 3 {
        0 => (
            json!({"type": "appointment.completed", "occurred_at": at(20),
                "data": {"appointment_ref": appt, "patient_ref": p, "treatment": "neurotoxin"}}),
            format!("PT#{p}#neurotoxin"),
            json!({"patient_ref": p}),
        ),
        1 => (
            json!({"type": "appointment.booked", "occurred_at": at(1), "data": {
                "appointment_ref": appt, "patient_ref": p, "treatment": "facial",
                "provider_ref": new_ref("pr"), "starts_at": at(-10), "duration_min": 30}}),
            format!("APPT#{appt}"),
            json!({"appointment_ref": appt}),
        ),
        _ => (
            json!({"type": "patient.opted_out", "occurred_at": at(1), "data": {"patient_ref": p}}),
            format!("CONSENT#{p}"),
            json!({"patient_ref": p}),
        ),
    };
    Sent {
        webhook_id: format!("msg_load_{i}"),
        body: json!({ "events": [event] }).to_string(),
        sk,
        expect,
    }
}

/// The i-th refused webhook and the marker that must appear nowhere afterwards.
fn refused(i: usize) -> (String, String) {
    let marker = format!("load.refused.{i}@example.com");
    let body = match i % 3 {
        // PHI in a ref field: 422.
        0 => json!({"events": [{"type": "patient.opted_out", "occurred_at": at(0),
            "data": {"patient_ref": marker}}]}),
        // An unknown field: 422.
        1 => json!({"events": [{"type": "patient.opted_out", "occurred_at": at(0),
            "data": {"patient_ref": new_ref("pt"), "email": marker}}]}),
        // Not JSON at all: 400.
        _ => Value::String(format!("{{not json {marker}")),
    };
    let text = match body {
        Value::String(s) => s,
        other => other.to_string(),
    };
    (text, marker)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> ExitCode {
    pil_local::init_stderr_logging("error");
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root())?).await?;
    let result = drive(&stack, &args).await;
    stack.stop().await;
    result
}

async fn drive(stack: &Stack, args: &Args) -> Result<bool> {
    let onboarded = stack.onboard("load-clinic").await?;
    let (practice, secret) = (onboarded.practice, onboarded.webhook_secret);
    let wrong = WebhookSecret::parse("whsec_bG9hZC10ZXN0LXdyb25nLXNlY3JldC1rZXk=")
        .map_err(|e| anyhow!("{e}"))?;
    let client = Arc::new(PmsClient::new(&stack.api_url));
    let total = (args.rate * args.seconds) as usize;
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let permits = Arc::new(Semaphore::new(args.max_in_flight));

    // The plan: 70 % new valid webhooks, 15 % redeliveries of an earlier one, 15 % refused
    // (PHI, unknown field, not JSON, bad signature).
    let mut sent_valid: Vec<Sent> = Vec::new();
    let mut markers = Vec::new();
    let mut tasks = Vec::with_capacity(total);
    let start = Instant::now();
    let mut next = tokio::time::Instant::now();
    for i in 0..total {
        next += gap;
        tokio::time::sleep_until(next).await;
        let slot = i % 20;
        let (class, webhook_id, body, key, want) = if slot < 14 || sent_valid.is_empty() {
            let s = valid(sent_valid.len());
            sent_valid.push(s.clone());
            (Class::Valid, s.webhook_id, s.body, secret.clone(), 202)
        } else if slot < 17 {
            let s = &sent_valid[(i * 7919) % sent_valid.len()];
            (
                Class::Duplicate,
                s.webhook_id.clone(),
                s.body.clone(),
                secret.clone(),
                202,
            )
        } else if slot < 19 {
            let (body, marker) = refused(i);
            markers.push(marker);
            let want = if i % 3 == 2 { 400 } else { 422 };
            (
                Class::Refused,
                format!("msg_bad_{i}"),
                body,
                secret.clone(),
                want,
            )
        } else {
            let s = valid(1_000_000 + i);
            markers.push(s.sk.clone());
            (Class::Refused, s.webhook_id, s.body, wrong.clone(), 401)
        };
        let permit = permits.clone().acquire_owned().await?;
        let client = client.clone();
        let practice = practice.as_str().to_owned();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.send(&practice, &key, &webhook_id, &body).await;
            drop(permit);
            let status = r.map(|r| r.status).unwrap_or(0);
            (class, status, want, t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies: BTreeMap<Class, Vec<f64>> = BTreeMap::new();
    let mut wrong_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (class, status, want, ms) = t.await?;
        latencies.entry(class).or_default().push(ms);
        if status != want {
            *wrong_status
                .entry(format!("{} got {status}, want {want}", class.name()))
                .or_default() += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Exactly once: one item per valid event, with its value, written once (`ver` 1: a
    // redelivery that wrote would have made it 2); nothing of a refused webhook anywhere.
    let items = table_items(stack).await?;
    let by_sk: BTreeMap<&str, &Value> = items
        .iter()
        .filter(|i| i["pk"] == format!("P#{practice}"))
        .filter_map(|i| i["sk"].as_str().map(|s| (s, i)))
        .collect();
    let mut missing = 0;
    let mut rewritten = 0;
    for s in &sent_valid {
        match by_sk.get(s.sk.as_str()) {
            Some(item) => {
                let doc = &item["doc"];
                let fields_ok = s
                    .expect
                    .as_object()
                    .is_some_and(|o| o.iter().all(|(k, v)| &doc[k] == v));
                if !fields_ok {
                    missing += 1;
                }
                if item["ver"] != 1 {
                    rewritten += 1;
                }
            }
            None => missing += 1,
        }
    }
    let patient_items = by_sk
        .keys()
        .filter(|k| {
            ["PT#", "APPT#", "CONSENT#"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .count();
    let dump = format!("{items:?}");
    let leaked = markers.iter().filter(|m| dump.contains(m.as_str())).count();

    let mut all: Vec<f64> = latencies.values().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    let mut classes = serde_json::Map::new();
    println!("| requests | count | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (class, v) in &mut latencies {
        v.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            class.name(),
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
        classes.insert(
            class.name().into(),
            json!({"count": v.len(), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}),
        );
    }
    println!(
        "| all | {} | {:.1} | {:.1} | {:.1} |",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    let throughput = all.len() as f64 / elapsed;
    let events_per_s = sent_valid.len() as f64 / elapsed;
    println!(
        "\n{} requests in {elapsed:.1} s: {throughput:.1} requests/s offered and answered ({events_per_s:.1} new valid events/s)",
        all.len()
    );
    println!(
        "valid events: {}; items: {patient_items}; missing or wrong: {missing}; written more than once: {rewritten}; refused values stored: {leaked}; unexpected statuses: {wrong_status:?}",
        sent_valid.len()
    );
    let ok = missing == 0
        && rewritten == 0
        && leaked == 0
        && wrong_status.is_empty()
        && patient_items == sent_valid.len();
    let report = json!({
        "rate_offered": args.rate, "seconds": args.seconds, "requests": all.len(),
        "elapsed_s": elapsed, "throughput_rps": throughput, "valid_events": sent_valid.len(),
        "p50_ms": percentile(&all, 0.5), "p99_ms": percentile(&all, 0.99),
        "classes": classes, "missing": missing, "rewritten": rewritten, "leaked": leaked,
        "unexpected_statuses": wrong_status, "pass": ok,
    });
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "{}",
        if ok {
            "every valid event took effect exactly once; nothing refused was stored"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}
