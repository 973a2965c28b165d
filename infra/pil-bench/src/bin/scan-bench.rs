//! `scan-bench`: what DynamoDB work the layer does, counted in read and write units, against
//! moto on loopback through the real AWS SDK and the real handlers' code.
//!
//! - `--mode scale`: for each practice size (10,000 and 100,000 patients by default) a fresh
//!   emulator and template deployment, a practice, N patients' records bulk-loaded in the
//!   store's own item format (N − D recently treated, nothing due; D with a gap due tonight,
//!   the same D in every run), then the nightly scan (`scheduler_scan::Deps::scan`: the
//!   DynamoStore adapters, candidates to the template's SQS queue) with a fresh meter. Prints
//!   items and units per scan, and fails if the scan's reads grow with patients (ratio over
//!   `--max-ratio`) or it did not create exactly D actions.
//! - `--mode units`: the local stack (HTTP API, handlers in-process); one single-event webhook
//!   per inbound event type, first delivery and redelivery, and refused deliveries; the units
//!   each cost. Fails if a redelivery or a refusal wrote anything.
//!
//! Output is Markdown on stdout (docs/units.md quotes it); progress goes to stderr. Logs carry
//! no refs or bodies (errors only unless `RUST_LOG` says otherwise).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use jiff::{SignedDuration, Timestamp};
use pil_aws::meter::Counts;
use pil_aws::{Clients, Config, Meter};
use pil_local::moto::Moto;
use pil_local::scenario::new_ref;
use pil_local::stack::{REGION, Stack, StackOptions, workspace_root};
use serde_json::{Value, json};
use shared::ids::{OpaqueRef, PracticeId};
use shared::inbound::Series;
use shared::ports::PracticeRepo;
use shared::practice::{Practice, TriggerUrl, TriggerUrlScope};
use shared::rules;
use shared::service::admin::{self, NewPractice};
use shared::signature::{self, WebhookSecret};
use shared::state::{
    Appointment, AppointmentStatus, Completion, Entity, Lww, PatientTreatment, PatientTreatmentKey,
};
use shared::treatment::Treatment;

#[derive(Parser, Debug)]
#[command(
    name = "scan-bench",
    about = "DynamoDB units per scan (10k vs 100k patients) and per inbound event, on moto"
)]
struct Cli {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Practice sizes in patients, comma-separated; the first is the ratios' baseline.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    patients: Vec<usize>,
    /// Patients with a gap due tonight: the same number in every run.
    #[arg(long, default_value_t = 50)]
    due: usize,
    /// Largest allowed ratio of a run's scan reads (units and items) to the baseline's.
    #[arg(long, default_value_t = 1.2)]
    max_ratio: f64,
    /// BatchWriteItem requests in flight while loading. moto serves them one at a time
    /// anyway, and out-of-order inserts make each of its queries slower (it sorts the whole
    /// table per query), so 1 is the fastest against the emulator.
    #[arg(long, default_value_t = 1)]
    load_concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Scale,
    Units,
    All,
}

#[tokio::main]
async fn main() -> ExitCode {
    // The refusals this bench sends on purpose are logged at warn (ids and reason codes).
    pil_local::init_stderr_logging("error");
    let cli = Cli::parse();
    let mut failures = Vec::new();
    let started = Instant::now();
    if matches!(cli.mode, Mode::Scale | Mode::All) {
        match scale(&cli).await {
            Ok(f) => failures.extend(f),
            Err(e) => failures.push(format!("scale run: {e:#}")),
        }
    }
    if matches!(cli.mode, Mode::Units | Mode::All) {
        match units().await {
            Ok(f) => failures.extend(f),
            Err(e) => failures.push(format!("units run: {e:#}")),
        }
    }
    eprintln!(
        "scan-bench: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("scan-bench: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Scale: the nightly scan against 10k and 100k patients.

/// One practice size's measurements.
#[derive(Debug, Clone)]
struct ScaleRun {
    patients: usize,
    due: usize,
    loaded: usize,
    load: Duration,
    due_read: usize,
    created: usize,
    suppressed: usize,
    scan: Counts,
    wall: Duration,
    /// The same scan again (nothing left due): the fixed cost of a scan.
    rerun: Counts,
    rerun_created: usize,
    /// Candidate messages waiting on the template's queue after the scan.
    queued: usize,
}

async fn scale(cli: &Cli) -> Result<Vec<String>> {
    if cli.patients.is_empty() || cli.due == 0 {
        bail!("need at least one practice size and at least one due gap");
    }
    let root = workspace_root();
    let mut runs = Vec::new();
    for &n in &cli.patients {
        if n < cli.due || cli.due > 500 {
            bail!(
                "{n} patients cannot hold {} due gaps (at most 500: the largest nightly budget)",
                cli.due
            );
        }
        eprintln!(
            "scan-bench: {n} patients, {} due: starting moto and loading",
            cli.due
        );
        let moto = Moto::start(&root, 0).await?;
        let run = scale_run(&root, &moto, n, cli.due, cli.load_concurrency).await;
        moto.stop().await;
        let run = run?;
        eprintln!(
            "scan-bench: {n} patients: loaded {} items in {:.1} s; scan {:.1} s",
            run.loaded,
            run.load.as_secs_f64(),
            run.wall.as_secs_f64()
        );
        runs.push(run);
    }
    print_scale(&runs);

    let mut failures = Vec::new();
    let base = &runs[0];
    for r in &runs {
        if r.created != r.due || r.due_read != r.due {
            failures.push(format!(
                "{} patients: the scan read {} due entries and created {} actions, expected {}",
                r.patients, r.due_read, r.created, r.due
            ));
        }
        if r.rerun_created != 0 {
            failures.push(format!(
                "{} patients: a re-run created {} actions",
                r.patients, r.rerun_created
            ));
        }
        if r.queued != r.due.div_ceil(100) {
            failures.push(format!(
                "{} patients: {} candidate messages on the queue, expected {}",
                r.patients,
                r.queued,
                r.due.div_ceil(100)
            ));
        }
        let rcu = r.scan.read_units / base.scan.read_units;
        let items = r.scan.items_read as f64 / base.scan.items_read as f64;
        record(
            "scan_read_ratio",
            json!({"patients": [base.patients, r.patients], "due": r.due,
                "read_units_ratio": rcu, "items_ratio": items,
                "read_units": [base.scan.read_units, r.scan.read_units]}),
        );
        if rcu > cli.max_ratio || items > cli.max_ratio {
            failures.push(format!(
                "{} patients: scan reads grew with patients (read units ×{rcu:.2}, items ×{items:.2}; limit {})",
                r.patients, cli.max_ratio
            ));
        }
    }
    Ok(failures)
}

async fn scale_run(
    root: &Path,
    moto: &Moto,
    patients: usize,
    due: usize,
    concurrency: usize,
) -> Result<ScaleRun> {
    // moto answers a query by sorting the whole table: seconds at 100,000 items.
    let clients = Clients::local_with_timeout(&moto.url, REGION, Duration::from_secs(300));
    let deployed = pil_local::stack::deploy(root, &clients).await?;
    let function = deployed
        .functions
        .iter()
        .find(|f| f.binary == "scheduler-scan")
        .ok_or_else(|| anyhow!("template has no scheduler-scan function"))?;
    let queue = function
        .env
        .get("CANDIDATES_QUEUE_URL")
        .cloned()
        .ok_or_else(|| anyhow!("scheduler-scan has no CANDIDATES_QUEUE_URL"))?;
    let meter = Meter::enabled();
    let deps = scheduler_scan::Deps::new(
        &clients,
        &Config::from_map(function.env.clone()),
        meter.clone(),
    )?;
    let store = &deps.adapters.store;
    let id = PracticeId::parse("bench-clinic")?;
    admin::create_practice(
        store,
        deps.adapters.secrets.keys(),
        NewPractice {
            id: id.clone(),
            time_zone: "America/New_York".into(),
            owner_emails: vec!["owner@bench-clinic.example".into()],
            trigger_url: TriggerUrl::parse(
                "http://127.0.0.1:9/pil-trigger",
                TriggerUrlScope::LocalStack,
            )?,
        },
    )
    .await?;
    // The bench measures what a scan costs per due gap: every due gap is proposed tonight
    // (a nightly budget at least the due count; docs/contracts.md, Windows and the nightly
    // budget).
    admin::set_policy(
        store,
        &id,
        None,
        admin::KindChange {
            nightly_budget: Some(u32::try_from(due).unwrap_or(u32::MAX).clamp(1, 500)),
            ..Default::default()
        },
    )
    .await?;
    let practice = store
        .get_practice(&id)
        .await?
        .ok_or_else(|| anyhow!("practice not stored"))?;
    let now = Timestamp::now();
    let today = practice.local_date(now);

    let records = population(&practice, now, patients, due)?;
    let t = Instant::now();
    let loaded = store.load_entities(&id, &records, concurrency).await?;
    let load = t.elapsed();

    meter.reset();
    let t = Instant::now();
    let report = deps.scan(&id, today).await?;
    let wall = t.elapsed();
    let scan = meter.snapshot();

    meter.reset();
    let again = deps.scan(&id, today).await?;
    let rerun = meter.snapshot();

    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    let queued = attrs
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    Ok(ScaleRun {
        patients,
        due,
        loaded,
        load,
        due_read: report.due_read,
        created: report.created.len(),
        suppressed: report.suppressed.len(),
        scan,
        wall,
        rerun,
        rerun_created: again.created.len(),
        queued,
    })
}

/// `patients` patients' records: one record each; all but `due` of them treated in the last
/// days with their next gap weeks ahead (in the due index, dated in the future), and `due`
/// of them with exactly one action to take tonight, over five shapes (follow-up, rebook,
/// series continuation, win-back over two superseded gaps, no-show recovery). Records are
/// returned in key order: moto sorts the whole table on every query, cheaply when it was
/// loaded sorted; the units counted do not depend on it.
fn population(
    practice: &Practice,
    now: Timestamp,
    patients: usize,
    due: usize,
) -> Result<Vec<(Entity, Option<jiff::civil::Date>)>> {
    let ago = |days: i64| now - SignedDuration::from_hours(24 * days);
    let completed = |t: Treatment, days: i64, series: Option<Series>| -> Result<Entity> {
        let mut pt = PatientTreatment::new(OpaqueRef::parse(&new_ref("p"))?, t);
        let at = ago(days);
        pt.merge_completion(Completion::new(practice.local_date(at), series, None), at);
        Ok(Entity::PatientTreatment(pt))
    };
    let mut out = Vec::with_capacity(patients);
    for i in 0..due {
        let e = match i % 5 {
            0 => completed(Treatment::Neurotoxin, 15, None)?,
            1 => completed(Treatment::ChemicalPeel, 30, None)?,
            2 => completed(
                Treatment::LaserHairRemoval,
                45,
                Some(Series { index: 2, of: 6 }),
            )?,
            3 => completed(Treatment::DermalFiller, 400, None)?,
            _ => {
                let mut a = Appointment::new(OpaqueRef::parse(&new_ref("appt"))?);
                let (booked, missed) = (ago(20), ago(4));
                let who = PatientTreatmentKey {
                    patient_ref: OpaqueRef::parse(&new_ref("p"))?,
                    treatment: Treatment::Neurotoxin,
                };
                a.patient = Some(Lww::new(who, booked));
                a.starts_on = Some(Lww::new(practice.local_date(missed), booked));
                a.status = Some(Lww::new(AppointmentStatus::NoShow, missed));
                Entity::Appointment(a)
            }
        };
        out.push(e);
    }
    for i in 0..patients - due {
        let days = (i % 10) as i64;
        let e = match i % 4 {
            0 => completed(Treatment::Neurotoxin, days, None)?,
            1 => completed(Treatment::Facial, days, None)?,
            2 => completed(
                Treatment::LaserHairRemoval,
                days,
                Some(Series { index: 1, of: 6 }),
            )?,
            _ => completed(Treatment::DermalFiller, days, None)?,
        };
        out.push(e);
    }
    let today = practice.local_date(now);
    let mut records: Vec<(String, (Entity, Option<jiff::civil::Date>))> = out
        .into_iter()
        .map(|e| {
            let due_on = rules::due_index_date(practice, &e);
            (e.key().sort_key(), (e, due_on))
        })
        .collect();
    let due_tonight = records
        .iter()
        .filter(|(_, (_, d))| d.is_some_and(|d| d <= today))
        .count();
    if due_tonight != due {
        bail!("the generated practice has {due_tonight} records due tonight, not {due}");
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(records.into_iter().map(|(_, r)| r).collect())
}

fn units_str(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

#[allow(clippy::print_stdout)]
fn print_scale(runs: &[ScaleRun]) {
    let base = &runs[0];
    println!("## Nightly scan against practice size\n");
    println!(
        "| patients | due gaps | items loaded | load s | due-index items read | items read | read requests | read units | write units (table + index) | actions created | suppressed (superseded) | candidate messages | scan s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        println!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} ({} + {}) | {} | {} | {} | {:.1} |",
            r.patients,
            r.due,
            r.loaded,
            r.load.as_secs_f64(),
            r.due_read,
            r.scan.items_read,
            r.scan.read_requests,
            units_str(r.scan.read_units),
            units_str(r.scan.total_write_units()),
            units_str(r.scan.write_units),
            units_str(r.scan.index_write_units),
            r.created,
            r.suppressed,
            r.queued,
            r.wall.as_secs_f64(),
        );
    }
    println!();
    for r in &runs[1..] {
        println!(
            "Ratio {} / {} patients: read units ×{:.3}, items read ×{:.3}, write units ×{:.3}, scan wall time ×{:.2}.",
            r.patients,
            base.patients,
            r.scan.read_units / base.scan.read_units,
            r.scan.items_read as f64 / base.scan.items_read as f64,
            r.scan.total_write_units() / base.scan.total_write_units(),
            r.wall.as_secs_f64() / base.wall.as_secs_f64(),
        );
    }
    println!("\n## Per scan\n");
    println!("| patients | | read units | items read | write units (table + index) |");
    println!("|---:|---|---:|---:|---:|");
    for r in runs {
        let d = r.due as f64;
        let per = |a: f64, b: f64| units_str((a - b) / d);
        println!(
            "| {} | scan with {} due | {} | {} | {} ({} + {}) |",
            r.patients,
            r.due,
            units_str(r.scan.read_units),
            r.scan.items_read,
            units_str(r.scan.total_write_units()),
            units_str(r.scan.write_units),
            units_str(r.scan.index_write_units)
        );
        println!(
            "| {} | re-run, nothing due (fixed cost) | {} | {} | {} ({} + {}) |",
            r.patients,
            units_str(r.rerun.read_units),
            r.rerun.items_read,
            units_str(r.rerun.total_write_units()),
            units_str(r.rerun.write_units),
            units_str(r.rerun.index_write_units)
        );
        println!(
            "| {} | per due record ((scan − re-run) / {}) | {} | {} | {} ({} + {}) |",
            r.patients,
            r.due,
            per(r.scan.read_units, r.rerun.read_units),
            per(r.scan.items_read as f64, r.rerun.items_read as f64),
            per(r.scan.total_write_units(), r.rerun.total_write_units()),
            per(r.scan.write_units, r.rerun.write_units),
            per(r.scan.index_write_units, r.rerun.index_write_units)
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Units per inbound event: single-event webhooks through the local API.

struct Sent {
    status: u16,
    cost: Counts,
}

fn delta(after: &Counts, before: &Counts) -> Counts {
    Counts {
        write_units: after.write_units - before.write_units,
        index_write_units: after.index_write_units - before.index_write_units,
        read_units: after.read_units - before.read_units,
        write_requests: after.write_requests - before.write_requests,
        read_requests: after.read_requests - before.read_requests,
        items_read: after.items_read - before.items_read,
    }
}

struct Sender<'a> {
    stack: &'a Stack,
    http: reqwest::Client,
    practice: String,
    secret: WebhookSecret,
}

impl Sender<'_> {
    /// POSTs `body`, signed with `secret`, as `content_type`; what the request cost.
    async fn raw(
        &self,
        practice: &str,
        secret: &WebhookSecret,
        content_type: &str,
        webhook_id: &str,
        body: &str,
    ) -> Result<Sent> {
        let ts = Timestamp::now().as_second();
        let sig = secret
            .sign(webhook_id, ts, body.as_bytes())
            .ok_or_else(|| anyhow!("body is not UTF-8"))?;
        let before = self.stack.meter.snapshot();
        let resp = self
            .http
            .post(format!(
                "{}/v1/practices/{practice}/events",
                self.stack.api_url
            ))
            .header("content-type", content_type)
            .header(signature::HEADER_ID, webhook_id)
            .header(signature::HEADER_TIMESTAMP, ts.to_string())
            .header(signature::HEADER_SIGNATURE, sig)
            .body(body.to_owned())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        let cost = delta(&self.stack.meter.snapshot(), &before);
        // The receiver's writes are done when it answers; what it published (slot.opened,
        // slot.filled) runs asynchronously in scheduler-scan on the same meter. Let that settle
        // so it is not counted against the next webhook.
        self.settle().await;
        Ok(Sent { status, cost })
    }

    /// Waits until the meter has not moved for a second (at most 10 s).
    async fn settle(&self) {
        let start = std::time::Instant::now();
        let mut last = self.stack.meter.snapshot();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            let now = self.stack.meter.snapshot();
            if now.write_requests == last.write_requests && now.read_units == last.read_units {
                return;
            }
            last = now;
        }
    }

    async fn send(&self, webhook_id: &str, body: &Value) -> Result<Sent> {
        self.raw(
            &self.practice,
            &self.secret,
            "application/json",
            webhook_id,
            &body.to_string(),
        )
        .await
    }
}

fn ago(days: i64) -> String {
    (Timestamp::now() - SignedDuration::from_hours(24 * days)).to_string()
}
fn ahead(days: i64) -> String {
    (Timestamp::now() + SignedDuration::from_hours(24 * days)).to_string()
}

/// One row of the per-event table.
struct EventRow {
    label: String,
    first: Sent,
    again: Sent,
}

async fn units() -> Result<Vec<String>> {
    eprintln!("scan-bench: units per event: starting the local stack");
    let stack = Stack::start(StackOptions::ephemeral(workspace_root())?).await?;
    let out = units_on(&stack).await;
    stack.stop().await;
    out
}

async fn units_on(stack: &Stack) -> Result<Vec<String>> {
    let onboarded = stack.onboard("units-clinic").await?;
    let (id, secret) = (onboarded.practice, onboarded.webhook_secret);
    let sender = Sender {
        stack,
        http: reqwest::Client::new(),
        practice: id.as_str().to_owned(),
        secret,
    };

    let (p, p2) = (new_ref("p"), new_ref("p"));
    let (a1, a2) = (new_ref("appt"), new_ref("appt"));
    let prov = new_ref("prov");
    let book = |appt: &str, starts: String, days_ago: i64| {
        json!({"type": "appointment.booked", "occurred_at": ago(days_ago), "data": {"appointment_ref": appt,
            "patient_ref": p, "treatment": "neurotoxin", "provider_ref": prov, "starts_at": starts, "duration_min": 30}})
    };
    let completed = |days_ago: i64| {
        json!({"type": "appointment.completed", "occurred_at": ago(days_ago), "data": {"appointment_ref": new_ref("appt"),
            "patient_ref": p, "treatment": "neurotoxin"}})
    };
    // In order, each against the state the ones before left. `None`: sent, not reported.
    let script: Vec<(Option<&str>, Value)> = vec![
        (
            Some("appointment.booked (new appointment)"),
            book(&a1, ahead(10), 1),
        ),
        (
            Some("appointment.rescheduled"),
            json!({"type": "appointment.rescheduled", "occurred_at": ago(0), "data": {"appointment_ref": a1,
                "starts_at": ahead(12), "duration_min": 45}}),
        ),
        (
            Some("appointment.cancelled (reopens_slot: publishes slot.opened)"),
            json!({"type": "appointment.cancelled", "occurred_at": ago(0), "data": {"appointment_ref": a1, "reopens_slot": true}}),
        ),
        (None, book(&a2, ago(4), 10)),
        (
            Some("appointment.no_show (enters the due index)"),
            json!({"type": "appointment.no_show", "occurred_at": ago(4), "data": {"appointment_ref": a2}}),
        ),
        (
            Some("appointment.completed (first for the patient × treatment)"),
            completed(100),
        ),
        (
            Some("appointment.completed (newer visit, same patient × treatment)"),
            completed(20),
        ),
        (
            Some("slot.opened"),
            json!({"type": "slot.opened", "occurred_at": ago(0), "data": {"slot_ref": new_ref("slot"), "provider_ref": prov,
                "starts_at": ahead(2), "duration_min": 60, "treatments": ["neurotoxin", "dermal_filler"]}}),
        ),
        (
            Some("patient.opted_out (new consent record)"),
            json!({"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": p}}),
        ),
        (
            Some("patient.opted_in (existing consent record)"),
            json!({"type": "patient.opted_in", "occurred_at": ago(0), "data": {"patient_ref": p}}),
        ),
        (
            Some("patient.ref_rotated (patient with 1 treatment record, consent, 2 appointments)"),
            json!({"type": "patient.ref_rotated", "occurred_at": ago(0), "data": {"old_ref": p, "new_ref": p2}}),
        ),
        (
            Some("patient.erased (the same 4 records)"),
            json!({"type": "patient.erased", "occurred_at": ago(0), "data": {"patient_ref": p2}}),
        ),
    ];

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for (i, (label, event)) in script.into_iter().enumerate() {
        let wid = format!("msg_bench_{i:02}");
        let first = sender.send(&wid, &event).await?;
        if first.status != 202 {
            bail!("event {i} answered {}", first.status);
        }
        let Some(label) = label else { continue };
        let again = sender.send(&wid, &event).await?;
        if again.status != 202 || again.cost.write_requests != 0 {
            failures.push(format!(
                "{label}: redelivery answered {} and made {} writes",
                again.status, again.cost.write_requests
            ));
        }
        rows.push(EventRow {
            label: label.to_owned(),
            first,
            again,
        });
    }

    // A full batch: 100 first completions of 100 patients.
    let batch: Vec<Value> = (0..100)
        .map(|_| {
            json!({"type": "appointment.completed", "occurred_at": ago(30), "data": {"appointment_ref": new_ref("appt"),
                "patient_ref": new_ref("p"), "treatment": "chemical_peel"}})
        })
        .collect();
    let body = json!({ "events": batch });
    let batch_first = sender.send("msg_bench_batch", &body).await?;
    let batch_again = sender.send("msg_bench_batch", &body).await?;
    if batch_first.status != 202 || batch_again.status != 202 {
        bail!(
            "the batch answered {} then {}",
            batch_first.status,
            batch_again.status
        );
    }
    if batch_again.cost.write_requests != 0 {
        failures.push("the batch's redelivery wrote".into());
    }

    // Refused deliveries.
    let good = json!({"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": new_ref("p")}});
    let wrong_secret = WebhookSecret::generate();
    let mut refused = Vec::new();
    let phi = json!({"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": "jane.doe@example.com"}});
    let unknown_field = json!({"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": new_ref("p"), "name": "x"}});
    let json_ct = "application/json";
    let cases: Vec<(&str, u16, Sent)> = vec![
        (
            "PHI in a ref (422)",
            422,
            sender.send("msg_bench_r1", &phi).await?,
        ),
        (
            "schema violation (422)",
            422,
            sender.send("msg_bench_r2", &unknown_field).await?,
        ),
        (
            "bad signature (401)",
            401,
            sender
                .raw(
                    &sender.practice,
                    &wrong_secret,
                    json_ct,
                    "msg_bench_r3",
                    &good.to_string(),
                )
                .await?,
        ),
        (
            "malformed JSON (400)",
            400,
            sender
                .raw(
                    &sender.practice,
                    &sender.secret,
                    json_ct,
                    "msg_bench_r4",
                    "{\"events\": [",
                )
                .await?,
        ),
        (
            "unknown practice (401)",
            401,
            sender
                .raw(
                    "no-such-clinic",
                    &sender.secret,
                    json_ct,
                    "msg_bench_r5",
                    &good.to_string(),
                )
                .await?,
        ),
        (
            "wrong content type (415)",
            415,
            sender
                .raw(
                    &sender.practice,
                    &sender.secret,
                    "text/plain",
                    "msg_bench_r6",
                    &good.to_string(),
                )
                .await?,
        ),
        (
            "body over 256 KiB (413)",
            413,
            sender
                .raw(
                    &sender.practice,
                    &sender.secret,
                    json_ct,
                    "msg_bench_r7",
                    &format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024)),
                )
                .await?,
        ),
    ];
    for (label, want, sent) in cases {
        if sent.status != want {
            failures.push(format!("{label}: answered {}", sent.status));
        }
        if sent.cost.write_requests != 0 {
            failures.push(format!("{label}: a refused delivery wrote"));
        }
        refused.push((label, sent));
    }
    print_units(&rows, (&batch_first, &batch_again), &refused);
    let max = |it: &mut dyn Iterator<Item = f64>| it.fold(0.0_f64, f64::max);
    record(
        "units",
        json!({
            "max_wru_accepted_single_event": max(&mut rows.iter().map(|r| r.first.cost.total_write_units())),
            "max_wru_redelivery": max(&mut rows.iter().map(|r| r.again.cost.total_write_units())),
            "max_wru_refused": max(&mut refused.iter().map(|(_, s)| s.cost.total_write_units())),
            "per_event": rows.iter().map(|r| (r.label.to_string(), json!({
                "rru": r.first.cost.read_units, "wru": r.first.cost.total_write_units()}))).collect::<serde_json::Map<_, _>>(),
        }),
    );
    Ok(failures)
}

/// Adds one figure to target/bench/scan.json (what `make bench`'s summary reads).
fn record(key: &str, value: Value) {
    let path = workspace_root().join("target/bench/scan.json");
    let mut all: serde_json::Map<String, Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    all.insert(key.to_owned(), value);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    );
}

fn cell(c: &Counts) -> (String, String) {
    let w = if c.index_write_units > 0.0 {
        format!(
            "{} ({} + {})",
            units_str(c.total_write_units()),
            units_str(c.write_units),
            units_str(c.index_write_units)
        )
    } else {
        units_str(c.total_write_units())
    };
    (units_str(c.read_units), w)
}

#[allow(clippy::print_stdout)]
fn print_units(rows: &[EventRow], batch: (&Sent, &Sent), refused: &[(&str, Sent)]) {
    println!("## Units per single-event webhook\n");
    println!(
        "| event (one per webhook) | first delivery: read units | first delivery: write units (table + index) | redelivery: read units | redelivery: write units |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        let (r1, w1) = cell(&r.first.cost);
        let (r2, w2) = cell(&r.again.cost);
        println!("| {} | {r1} | {w1} | {r2} | {w2} |", r.label);
    }
    let (r1, w1) = cell(&batch.0.cost);
    let (r2, w2) = cell(&batch.1.cost);
    println!("| batch of 100 first completions (whole webhook) | {r1} | {w1} | {r2} | {w2} |");
    println!("\n## Refused deliveries\n");
    println!("| refusal | read units | write units |");
    println!("|---|---:|---:|");
    for (label, s) in refused {
        let (r, w) = cell(&s.cost);
        println!("| {label} | {r} | {w} |");
    }
    println!();
}
