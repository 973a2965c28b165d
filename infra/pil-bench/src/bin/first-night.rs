//! `first-night`: a practice's first night at scale, on moto through the real AWS SDK and the
//! real handlers' code (docs/performance.md, "First night").
//!
//! For each practice size measured (`--patients`, 1,000 and 10,000 by default): a fresh
//! emulator and template deployment, a practice onboarded with the default policy (nightly
//! budget 25), then
//!
//! 1. **the import**: three years of history for N patients (one to three treatments each,
//!    visits at each treatment's rhythm until the patient stopped coming, laser series finished
//!    or under way, one patient in twelve with a no-show), as `pil import` sends it: 100-event
//!    batches, each patient's events together and oldest first, every batch signed and handed
//!    to the webhook receiver's Lambda handler (signature, parse, PHI guard, merge into the
//!    DynamoStore), one batch at a time;
//! 2. **the first scan**: the night's scan in parts (`scan::scan_part`, the 10-second reading
//!    budget of the deployed function) until the night is done, or until `--scan-seconds` of
//!    wall time have passed (300 by default): then the part under way finishes, the due
//!    records left are counted, and the rest of the night is priced at the requests and units
//!    per record read so far (tonight's proposals were all made in the first part, so the
//!    records left are deferred, suppressed or parked like most of the sample). The output
//!    says which runs were cut short and how many records they read.
//!
//! DynamoDB requests and units are counted by the meter (docs/units.md). Beside the emulator's
//! wall time, a **modelled DynamoDB time**: requests × a per-request latency (`--latency-ms`, 5
//! by default: AWS describes DynamoDB as "single-digit millisecond" at any scale, and
//! docs/cost.md prices Lambda time at 5 ms a call), divided by the requests the code keeps in
//! flight: the receiver merges up to 8 records of a batch at once; the scan reads, decides and
//! writes 8 due records at once (`scan::CONCURRENCY`), and makes one at a time only its page
//! reads and tonight's proposals within the budget (see [`scan_modelled`]).
//!
//! Practice sizes in `--extrapolate` (100,000 by default) are not run: their rows are the
//! largest measured run's figures per patient times the size, and say so. moto answers each
//! query by sorting the whole table, so a first scan evaluates a record in ~0.1 s at 1,000
//! patients and ~1 s at 10,000: a measured 100,000-patient night would take days here. The
//! per-record figures are what the design makes linear (docs/units.md).
//!
//! Markdown on stdout; `target/bench/first-night.json` for `bench-report`; progress on stderr.
//! Logs carry no refs or bodies.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use clap::Parser;
use jiff::{SignedDuration, Timestamp};
use pil_aws::meter::Counts;
use pil_aws::{Clients, Config, Meter};
use pil_local::moto::Moto;
use pil_local::scenario::new_ref;
use pil_local::stack::{REGION, workspace_root};
use serde_json::{Value, json};
use shared::ports::{DueIndex, PracticeRepo};
use shared::service::scan;
use shared::signature::{self, WebhookSecret};

#[derive(Parser, Debug)]
#[command(
    name = "first-night",
    about = "A practice's first night: history import and first scan, measured on moto"
)]
struct Cli {
    /// Practice sizes measured, in patients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    patients: Vec<usize>,
    /// Practice sizes extrapolated from the largest measured run (not run).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    extrapolate: Vec<usize>,
    /// Events per import batch (the events API takes at most 100).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Modelled DynamoDB latency per request, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    latency_ms: f64,
    /// Seed of the generated history.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Wall time after which the first scan stops at the end of its current part; the rest of
    /// the night is then priced at the per-record figures measured so far (0: never stop).
    #[arg(long, default_value_t = 300)]
    scan_seconds: u64,
}

/// Records the receiver merges at once (shared/src/service/receiver.rs).
const RECEIVER_IN_FLIGHT: f64 = 8.0;
/// Requests each proposal within the budget makes one at a time (read the record again,
/// reserve a place in the budget, create the action, settle the record).
const PROPOSAL_REQUESTS: f64 = 4.0;
/// Requests each part makes one at a time besides its pages: the practice, the outbox, the
/// first reservation refused and its deferral.
const PART_REQUESTS: f64 = 4.0;
/// DynamoDB on demand, us-east-1 (the prices docs/cost.md uses).
const USD_PER_WRU: f64 = 0.625 / 1e6;
const USD_PER_RRU: f64 = 0.125 / 1e6;
/// HTTP API, per request (each import batch is one).
const USD_PER_API_REQUEST: f64 = 1.0 / 1e6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figures {
    /// Every figure measured.
    Measured,
    /// The first scan stopped early: its figures are those of the records it read.
    Sample,
    /// A sampled night's whole: the measured due count at the per-record figures of the
    /// largest night measured to the end.
    WholeNight,
    /// Not run: per patient from the largest measured run.
    Extrapolated,
}

#[derive(Debug, Clone)]
struct Run {
    patients: usize,
    figures: Figures,
    measured: bool,
    events: usize,
    batches: usize,
    import: Counts,
    import_wall: Duration,
    scan: Counts,
    scan_wall: Duration,
    parts: u32,
    /// Due records the scan read before it stopped (all of them unless sampled).
    sampled: usize,
    due_read: usize,
    created: usize,
    deferred: usize,
    suppressed: BTreeMap<String, usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    pil_local::init_stderr_logging("error");
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("first-night: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    if cli.patients.is_empty() || cli.batch == 0 || cli.batch > 100 {
        bail!("need at least one practice size and a batch of 1 to 100 events");
    }
    let root = workspace_root();
    let mut runs = Vec::new();
    for &n in &cli.patients {
        eprintln!("first-night: {n} patients: starting moto");
        let moto = Moto::start(&root, 0).await?;
        let r = measure(&root, &moto, n, cli).await;
        moto.stop().await;
        let r = r?;
        eprintln!(
            "first-night: {n} patients: {} events imported in {:.1} s; first scan {}{:.1} s, {} parts",
            r.events,
            r.import_wall.as_secs_f64(),
            if scan_complete(&r) { "" } else { "(stopped) " },
            r.scan_wall.as_secs_f64(),
            r.parts
        );
        runs.push(r);
    }
    // Per due record: the largest night measured to the end (else the largest sample).
    let basis = runs
        .iter()
        .filter(|r| r.figures == Figures::Measured)
        .max_by_key(|r| r.patients)
        .or_else(|| runs.iter().max_by_key(|r| r.patients))
        .cloned()
        .ok_or_else(|| anyhow!("no run"))?;
    let sampled: Vec<Run> = runs
        .iter()
        .filter(|r| r.figures == Figures::Sample)
        .map(|r| whole_night(r, &basis))
        .collect();
    runs.extend(sampled);
    // Per patient: the largest run (its import measured, its night whole).
    let base = runs
        .iter()
        .filter(|r| matches!(r.figures, Figures::Measured | Figures::WholeNight))
        .max_by_key(|r| r.patients)
        .cloned()
        .ok_or_else(|| anyhow!("no run"))?;
    for &n in &cli.extrapolate {
        runs.push(extrapolate(&base, n));
    }
    print(&runs, cli);
    record(&runs, cli);
    Ok(())
}

/// A sampled night's whole: the import as measured, the due records as counted, each at the
/// requests, units and outcomes per due record of `basis` (a night measured to the end).
fn whole_night(r: &Run, basis: &Run) -> Run {
    let k = r.due_read as f64 / basis.due_read.max(1) as f64;
    let c = &basis.scan;
    let us = |x: usize| (x as f64 * k).round() as usize;
    Run {
        figures: Figures::WholeNight,
        scan: Counts {
            write_units: c.write_units * k,
            index_write_units: c.index_write_units * k,
            read_units: c.read_units * k,
            write_requests: (c.write_requests as f64 * k).round() as u64,
            read_requests: (c.read_requests as f64 * k).round() as u64,
            items_read: (c.items_read as f64 * k).round() as u64,
        },
        scan_wall: Duration::ZERO,
        parts: 0,
        sampled: 0,
        created: basis.created,
        deferred: us(basis.created + basis.deferred).saturating_sub(basis.created),
        suppressed: basis
            .suppressed
            .iter()
            .map(|(k2, v)| (k2.clone(), us(*v)))
            .collect(),
        ..r.clone()
    }
}

/// The largest measured run's figures per patient, times `n`.
fn extrapolate(base: &Run, n: usize) -> Run {
    let k = n as f64 / base.patients as f64;
    let scale = |c: &Counts| Counts {
        write_units: c.write_units * k,
        index_write_units: c.index_write_units * k,
        read_units: c.read_units * k,
        write_requests: (c.write_requests as f64 * k).round() as u64,
        read_requests: (c.read_requests as f64 * k).round() as u64,
        items_read: (c.items_read as f64 * k).round() as u64,
    };
    let us = |x: usize| (x as f64 * k).round() as usize;
    Run {
        patients: n,
        figures: Figures::Extrapolated,
        measured: false,
        events: us(base.events),
        batches: us(base.batches),
        import: scale(&base.import),
        import_wall: Duration::ZERO,
        scan: scale(&base.scan),
        scan_wall: Duration::ZERO,
        parts: 0,
        sampled: 0,
        due_read: us(base.due_read),
        created: base.created,
        // Tonight proposes the budget, whatever the size; everything else that would have been
        // proposed waits.
        deferred: us(base.created + base.deferred).saturating_sub(base.created),
        suppressed: base
            .suppressed
            .iter()
            .map(|(k2, v)| (k2.clone(), us(*v)))
            .collect(),
    }
}

async fn measure(root: &Path, moto: &Moto, patients: usize, cli: &Cli) -> Result<Run> {
    let clients = Clients::local_with_timeout(&moto.url, REGION, Duration::from_secs(600));
    let deployed = pil_local::stack::deploy(root, &clients).await?;
    let env = |binary: &str| {
        deployed
            .functions
            .iter()
            .find(|f| f.binary == binary)
            .map(|f| Config::from_map(f.env.clone()))
            .ok_or_else(|| anyhow!("template has no {binary} function"))
    };
    let meter = Meter::enabled();
    let receiver = webhook_receiver::Deps::new(&clients, &env("webhook-receiver")?, meter.clone())?;
    let scanner = scheduler_scan::Deps::new(&clients, &env("scheduler-scan")?, meter.clone())?;
    let onboarded = pil_local::stack::onboard(
        &scanner.adapters.store,
        receiver.adapters.secrets.keys(),
        "first-night-clinic",
        "http://127.0.0.1:9/pil-trigger",
    )
    .await?;
    let id = onboarded.practice.clone();
    let practice = scanner
        .adapters
        .store
        .get_practice(&id)
        .await?
        .ok_or_else(|| anyhow!("practice not stored"))?;
    let now = Timestamp::now();
    let today = practice.local_date(now);

    // 1. The import.
    let events = history(patients, now, cli.seed);
    meter.reset();
    let t = Instant::now();
    let mut batches = 0;
    for (i, chunk) in events.chunks(cli.batch).enumerate() {
        let req = signed(id.as_str(), &onboarded.webhook_secret, chunk, i)?;
        let resp = webhook_receiver::handle(&receiver, &req).await;
        if resp.status_code != 202 {
            bail!(
                "import batch {i} answered {} (a generated event was refused)",
                resp.status_code
            );
        }
        batches += 1;
        if batches % 100 == 0 {
            eprintln!(
                "first-night: {patients} patients: {batches} batches, {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let import_wall = t.elapsed();
    let import = meter.snapshot();

    // 2. The first scan, in parts, as the deployed function runs it.
    meter.reset();
    let deps = scanner.scan_deps();
    let t = Instant::now();
    let mut total = scan::scan_part(&deps, &id, today, 0).await?;
    let mut parts = 1;
    let limit = (cli.scan_seconds > 0).then(|| Duration::from_secs(cli.scan_seconds));
    while total.more && limit.is_none_or(|l| t.elapsed() < l) {
        let next = scan::scan_part(&deps, &id, today, parts).await?;
        total.absorb(next);
        parts += 1;
        eprintln!(
            "first-night: {patients} patients: scan part {parts}, {} due read, {:.0} s",
            total.due_read,
            t.elapsed().as_secs_f64()
        );
    }
    let scan_wall = t.elapsed();
    let scan = meter.snapshot();
    let mut suppressed = BTreeMap::new();
    for (_, reason) in &total.suppressed {
        *suppressed.entry(reason.as_str().to_owned()).or_insert(0) += 1;
    }
    let sampled = total.due_read;
    let mut due_read = total.due_read;
    if total.more {
        // Stopped early: what is still due tonight, read without the meter.
        meter.reset();
        let left = scanner
            .adapters
            .store
            .due_records(&id, today, usize::MAX)
            .await?
            .len();
        meter.reset();
        due_read = sampled + left;
        eprintln!(
            "first-night: {patients} patients: scan stopped after {sampled} of {due_read} due records"
        );
    }
    if total.created.len() > practice.policy.nightly_budget as usize {
        bail!(
            "the first night proposed {} actions, over the nightly budget of {}",
            total.created.len(),
            practice.policy.nightly_budget
        );
    }
    Ok(Run {
        patients,
        figures: if total.more {
            Figures::Sample
        } else {
            Figures::Measured
        },
        measured: true,
        events: events.len(),
        batches,
        import,
        import_wall,
        scan,
        scan_wall,
        parts,
        sampled,
        due_read,
        created: total.created.len(),
        deferred: total.deferred,
        suppressed,
    })
}

/// A small deterministic generator (the history is the same for a seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }
}

/// Treatments a patient may have, with their weights and the days between visits.
const MIX: &[(&str, u64, i64, i64)] = &[
    ("neurotoxin", 40, 90, 130),
    ("dermal_filler", 18, 180, 300),
    ("laser_hair_removal", 10, 42, 42),
    ("chemical_peel", 10, 28, 60),
    ("facial", 10, 35, 60),
    ("hormone_therapy", 6, 100, 120),
    ("microneedling", 6, 35, 60),
];
const HISTORY_DAYS: i64 = 3 * 365;

/// Three years of a practice's history, each patient's events together, oldest first.
fn history(patients: usize, now: Timestamp, seed: u64) -> Vec<Value> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let at = |days: i64| {
        (now - SignedDuration::from_hours(24 * days) - SignedDuration::from_hours(3)).to_string()
    };
    let total_weight: u64 = MIX.iter().map(|m| m.1).sum();
    let provider = new_ref("prov");
    let mut out = Vec::new();
    for _ in 0..patients {
        let patient = new_ref("p");
        let n_treatments = 1 + usize::from(rng.below(100) < 35) + usize::from(rng.below(100) < 10);
        let mut chosen: Vec<&(&str, u64, i64, i64)> = Vec::new();
        while chosen.len() < n_treatments {
            let mut pick = rng.below(total_weight);
            let m = MIX
                .iter()
                .find(|m| {
                    if pick < m.1 {
                        true
                    } else {
                        pick -= m.1;
                        false
                    }
                })
                .unwrap_or(&MIX[0]);
            if !chosen.iter().any(|c| c.0 == m.0) {
                chosen.push(m);
            }
        }
        let mut visits: Vec<(i64, Value)> = Vec::new();
        for (treatment, _, lo, hi) in chosen {
            // First visit within the three years; the patient kept coming until `stop` days
            // ago (a third still comes).
            let first = rng.range(30, HISTORY_DAYS);
            let stop = if rng.below(3) == 0 {
                0
            } else {
                rng.range(0, first)
            };
            if *treatment == "laser_hair_removal" {
                // A series of six, every six weeks: finished, or under way.
                let mut day = first;
                for index in 1..=6u16 {
                    if day < 1 {
                        break;
                    }
                    visits.push((
                        day,
                        completed(&patient, treatment, &at(day), Some((index, 6))),
                    ));
                    day -= rng.range(*lo, *hi + 7);
                }
                continue;
            }
            let mut day = first;
            while day >= stop.max(1) {
                visits.push((day, completed(&patient, treatment, &at(day), None)));
                day -= rng.range(*lo, *hi);
            }
        }
        // One patient in twelve missed a booking: in the last three weeks (recoverable) or
        // long ago (stale).
        if rng.below(12) == 0 {
            let missed = if rng.below(2) == 0 {
                rng.range(3, 20)
            } else {
                rng.range(30, 700)
            };
            let appt = new_ref("appt");
            visits.push((
                missed + 14,
                json!({"type": "appointment.booked", "occurred_at": at(missed + 14),
                    "data": {"appointment_ref": appt, "patient_ref": patient, "treatment": "neurotoxin",
                        "provider_ref": provider, "starts_at": at(missed), "duration_min": 30}}),
            ));
            visits.push((
                missed,
                json!({"type": "appointment.no_show", "occurred_at": at(missed),
                    "data": {"appointment_ref": appt}}),
            ));
        }
        visits.sort_by_key(|v| std::cmp::Reverse(v.0));
        out.extend(visits.into_iter().map(|(_, v)| v));
    }
    out
}

fn completed(patient: &str, treatment: &str, at: &str, series: Option<(u16, u16)>) -> Value {
    let mut data =
        json!({"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": treatment});
    if let Some((index, of)) = series {
        data["series"] = json!({"index": index, "of": of});
    }
    json!({"type": "appointment.completed", "occurred_at": at, "data": data})
}

/// One batch as API Gateway hands it to the receiver, signed as `pil import` signs it.
fn signed(
    practice: &str,
    secret: &WebhookSecret,
    events: &[Value],
    n: usize,
) -> Result<ApiGatewayV2httpRequest> {
    let body = json!({ "events": events }).to_string();
    let _ = n;
    let id = new_ref("msg");
    let ts = Timestamp::now().as_second();
    let sig = secret
        .sign(&id, ts, body.as_bytes())
        .ok_or_else(|| anyhow!("body is not UTF-8"))?;
    let path = format!("/v1/practices/{practice}/events");
    let now = Timestamp::now();
    Ok(serde_json::from_value(json!({
        "version": "2.0",
        "routeKey": "POST /v1/practices/{practice_id}/events",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", (signature::HEADER_ID): id,
            (signature::HEADER_TIMESTAMP): ts.to_string(), (signature::HEADER_SIGNATURE): sig},
        "pathParameters": {"practice_id": practice},
        "requestContext": {
            "accountId": "123456789012", "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10", "userAgent": "bench"},
            "requestId": new_ref("req"), "routeKey": "POST /v1/practices/{practice_id}/events",
            "stage": "$default", "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.as_millisecond(),
        },
        "body": body,
        "isBase64Encoded": false,
    }))?)
}

fn requests(c: &Counts) -> u64 {
    c.read_requests + c.write_requests
}

/// Requests × latency ÷ requests in flight, in seconds.
fn modelled(c: &Counts, latency_ms: f64, in_flight: f64) -> f64 {
    requests(c) as f64 * latency_ms / 1000.0 / in_flight
}

/// The scan's modelled DynamoDB time, in seconds: the requests it makes one at a time (its
/// due-index pages, tonight's proposals within the budget, a few per part) at the full
/// latency, the rest (reading, deciding and writing due records, deferring what the budget
/// leaves) [`scan::CONCURRENCY`] at once. The parts are counted from the time itself.
fn scan_modelled(r: &Run, latency_ms: f64) -> f64 {
    let pages = (r.due_read as f64 / scan::DUE_PAGE as f64).ceil() + 1.0;
    let one_at_a_time = |parts: f64| {
        (pages + r.created as f64 * PROPOSAL_REQUESTS + parts * PART_REQUESTS)
            .min(requests(&r.scan) as f64)
    };
    let at = |parts: f64| {
        let seq = one_at_a_time(parts);
        let par = requests(&r.scan) as f64 - seq;
        (seq + par / scan::CONCURRENCY as f64) * latency_ms / 1000.0
    };
    let first = at(1.0);
    at(parts_of(first))
}

/// Parts of [`scan::TIME_BUDGET`] a night of `seconds` takes.
fn parts_of(seconds: f64) -> f64 {
    (seconds / scan::TIME_BUDGET.as_secs_f64()).ceil().max(1.0)
}

fn usd(c: &Counts) -> f64 {
    c.total_write_units() * USD_PER_WRU + c.read_units * USD_PER_RRU
}

fn onboarding_usd(r: &Run) -> f64 {
    usd(&r.import) + usd(&r.scan) + r.batches as f64 * USD_PER_API_REQUEST
}

fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn wall(r: &Run, d: Duration) -> String {
    if r.measured {
        format!("{:.1}", d.as_secs_f64())
    } else {
        "–".into()
    }
}

/// Whether the first scan ran to the end of the night.
fn scan_complete(r: &Run) -> bool {
    r.figures == Figures::Measured
}

fn scan_label(r: &Run) -> String {
    match r.figures {
        Figures::Measured => "measured".into(),
        Figures::Sample => format!(
            "measured, stopped: the first {} of {} records (oldest due first)",
            grouped(r.sampled),
            grouped(r.due_read)
        ),
        Figures::WholeNight => {
            "modelled: this night's due count × a whole night's figures per record".into()
        }
        Figures::Extrapolated => "extrapolated".into(),
    }
}

fn import_label(r: &Run) -> &'static str {
    if r.measured {
        "measured"
    } else {
        "extrapolated"
    }
}

#[allow(clippy::print_stdout)]
fn print(runs: &[Run], cli: &Cli) {
    let lat = cli.latency_ms;
    println!("## First night: the import\n");
    println!(
        "| patients | figures | events | batches | events/s (moto) | write units / event | read units / event | requests / event | modelled DynamoDB s ({lat} ms, 8 in flight) | moto s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| r.figures != Figures::WholeNight) {
        let e = r.events.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
            grouped(r.patients),
            import_label(r),
            grouped(r.events),
            grouped(r.batches),
            if r.measured {
                format!("{:.0}", e / r.import_wall.as_secs_f64().max(1e-9))
            } else {
                "–".into()
            },
            r.import.total_write_units() / e,
            r.import.read_units / e,
            requests(&r.import) as f64 / e,
            modelled(&r.import, lat, RECEIVER_IN_FLIGHT),
            wall(r, r.import_wall),
        );
    }
    println!("\n## First night: the first scan\n");
    println!(
        "| patients | figures | due records read | proposed | deferred | suppressed | read requests | write requests | read units | write units | modelled DynamoDB s ({lat} ms, {} in flight) | parts of 10 s (modelled) | moto s | moto parts |",
        scan::CONCURRENCY
    );
    println!("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let m = scan_modelled(r, lat);
        let suppressed: Vec<String> = r
            .suppressed
            .iter()
            .map(|(k, v)| format!("{k} {}", grouped(*v)))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            grouped(r.patients),
            scan_label(r),
            grouped(if r.figures == Figures::Sample {
                r.sampled
            } else {
                r.due_read
            }),
            r.created,
            grouped(r.deferred),
            suppressed.join(", "),
            grouped(r.scan.read_requests as usize),
            grouped(r.scan.write_requests as usize),
            r.scan.read_units,
            r.scan.total_write_units(),
            m,
            parts_of(m),
            match r.figures {
                Figures::Measured | Figures::Sample => format!("{:.1}", r.scan_wall.as_secs_f64()),
                Figures::WholeNight | Figures::Extrapolated => "–".into(),
            },
            match r.figures {
                Figures::Measured => r.parts.to_string(),
                Figures::Sample => format!("{} (stopped)", r.parts),
                Figures::WholeNight | Figures::Extrapolated => "–".into(),
            },
        );
    }
    println!("\n## First night: what an onboarding costs (DynamoDB on demand, HTTP API)\n");
    println!("| patients | figures | import $ | first scan $ | API requests $ | total $ |");
    println!("|---:|---|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| r.figures != Figures::Sample) {
        println!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
            grouped(r.patients),
            scan_label(r),
            usd(&r.import),
            usd(&r.scan),
            r.batches as f64 * USD_PER_API_REQUEST,
            onboarding_usd(r),
        );
    }
    println!();
}

fn record(runs: &[Run], cli: &Cli) {
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            let e = r.events.max(1) as f64;
            json!({
                "patients": r.patients,
                "figures": format!("{:?}", r.figures),
                "measured": r.measured,
                "events": r.events,
                "batches": r.batches,
                "import_events_per_s": r.measured.then(|| e / r.import_wall.as_secs_f64().max(1e-9)),
                "import_wru_per_event": r.import.total_write_units() / e,
                "import_rru_per_event": r.import.read_units / e,
                "import_requests": requests(&r.import),
                "import_modelled_s": modelled(&r.import, cli.latency_ms, RECEIVER_IN_FLIGHT),
                "import_wall_s": r.measured.then_some(r.import_wall.as_secs_f64()),
                "scan_due_read": r.due_read,
                "scan_sampled": r.sampled,
                "scan_complete": scan_complete(r),
                "scan_created": r.created,
                "scan_deferred": r.deferred,
                "scan_read_requests": r.scan.read_requests,
                "scan_write_requests": r.scan.write_requests,
                "scan_rru": r.scan.read_units,
                "scan_wru": r.scan.total_write_units(),
                "scan_modelled_s": scan_modelled(r, cli.latency_ms),
                "scan_wall_s": matches!(r.figures, Figures::Measured | Figures::Sample)
                    .then(|| r.scan_wall.as_secs_f64()),
                "scan_parts": matches!(r.figures, Figures::Measured | Figures::Sample)
                    .then_some(r.parts),
                "onboarding_usd": onboarding_usd(r),
            })
        })
        .collect();
    let path = workspace_root().join("target/bench/first-night.json");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({"latency_ms": cli.latency_ms, "runs": rows}))
            .unwrap_or_default(),
    );
}
