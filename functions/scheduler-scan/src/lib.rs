//! scheduler-scan: consumes the scan queue. Messages are the hourly tick from EventBridge
//! Scheduler (`{"kind":"tick"}`), an explicit scan (`{"kind":"scan","practice_id","date"}`),
//! or a `slot.opened` event routed by the EventBridge rule. Reports partial batch failures.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use jiff::civil::Date;
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{Disposition, record_practice, sqs_batch};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar, SqsQueue};
use serde::Deserialize;
use shared::ids::PracticeId;
use shared::ports::{Clock, DomainEvent};
use shared::service::scan::{self, ScanDeps, ScanError, ScanReport};
use shared::service::slots::{self, SlotDeps, SlotReport};

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub candidates: SqsQueue,
    /// The scan publishes the approval outbox again (`action.approved`).
    pub bus: EventBus,
    /// `OUTBOX_GRACE_SECONDS`, else [`scan::OUTBOX_GRACE_SECONDS`].
    pub outbox_grace_seconds: i64,
    /// Continuations of a night too large for one invocation, and the tick's fan-out.
    pub scan_queue: SqsQueue,
    /// `SCAN_PAGE_SIZE`, else [`scan::DUE_PAGE`].
    pub page_size: usize,
    /// `SCAN_TIME_BUDGET_SECONDS`, else [`scan::TIME_BUDGET`].
    pub time_budget: std::time::Duration,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter)?,
            candidates: SqsQueue::new(clients.sqs.clone(), config.get("CANDIDATES_QUEUE_URL")?),
            bus: EventBus::new(clients.eventbridge.clone(), config.get("EVENT_BUS_NAME")?),
            outbox_grace_seconds: config
                .opt("OUTBOX_GRACE_SECONDS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(scan::OUTBOX_GRACE_SECONDS),
            scan_queue: SqsQueue::new(clients.sqs.clone(), config.get("SCAN_QUEUE_URL")?),
            page_size: config
                .opt("SCAN_PAGE_SIZE")
                .and_then(|s| s.parse().ok())
                .unwrap_or(scan::DUE_PAGE),
            time_budget: config
                .opt("SCAN_TIME_BUDGET_SECONDS")
                .and_then(|s| s.parse().ok())
                .map_or(scan::TIME_BUDGET, std::time::Duration::from_secs),
            metrics: Metrics::new(config, "scheduler-scan"),
        })
    }

    pub fn scan_deps(&self) -> ScanDeps<'_> {
        let s = &self.adapters.store;
        ScanDeps {
            practices: s,
            entities: s,
            due: s,
            patients: s,
            actions: s,
            candidates: &self.candidates,
            log: s,
            bus: &self.bus,
            outbox_grace_seconds: self.outbox_grace_seconds,
            page_size: self.page_size,
            time_budget: self.time_budget,
            clock: &self.adapters.clock,
        }
    }

    pub fn slot_deps(&self) -> SlotDeps<'_> {
        let s = &self.adapters.store;
        SlotDeps {
            practices: s,
            entities: s,
            slots: s,
            patients: s,
            actions: s,
            candidates: &self.candidates,
            audit: s,
            clock: &self.adapters.clock,
        }
    }

    /// One part of a night's scan, as a scan message runs it: when the night is not done,
    /// the rest is put on the scan queue as a continuation; when it is, the day is recorded.
    pub async fn scan_part(
        &self,
        practice: &PracticeId,
        day: Date,
        part: u32,
    ) -> Result<ScanReport, ScanError> {
        let deps = self.scan_deps();
        let started = std::time::Instant::now();
        let report = scan::scan_part(&deps, practice, day, part).await?;
        self.scan_metrics(&report, started.elapsed());
        if report.more && part < scan::MAX_PARTS {
            self.scan_queue
                .send_json(&serde_json::json!({"kind": "scan",
                    "practice_id": practice, "date": day, "part": part + 1}))
                .await?;
            tracing::info!(scan_date = %day, part, reason = "time_budget",
                "night continued in another invocation");
        } else {
            scan::mark_scanned(&deps, practice, day).await?;
            self.metrics
                .emit(None, &[], &[("NightsScanned", 1.0, Unit::Count)]);
            // The night is done: the technical contacts' integration report, if anything was
            // refused (approval-check decides, once per practice and date).
            shared::ports::NoticeSink::notice(
                &self.candidates,
                &DomainEvent::IntegrationReportDue {
                    practice_id: practice.clone(),
                    date: day,
                },
            )
            .await?;
        }
        Ok(report)
    }

    /// One part's figures; the suppressed gaps by reason.
    fn scan_metrics(&self, r: &ScanReport, took: std::time::Duration) {
        self.metrics.emit(
            None,
            &[],
            &[
                ("ScanParts", 1.0, Unit::Count),
                ("DueRead", r.due_read as f64, Unit::Count),
                ("ActionsCreated", r.created.len() as f64, Unit::Count),
                ("ActionsDeferred", r.deferred as f64, Unit::Count),
                ("OutboxRepublished", r.republished as f64, Unit::Count),
                (
                    "ScanDuration",
                    took.as_secs_f64() * 1000.0,
                    Unit::Milliseconds,
                ),
            ],
        );
        let mut by_reason: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for (_, reason) in &r.suppressed {
            *by_reason.entry(reason.as_str()).or_default() += 1;
        }
        for (reason, n) in by_reason {
            self.metrics.emit(
                None,
                &[("Reason", reason)],
                &[("ActionsSuppressed", n as f64, Unit::Count)],
            );
        }
    }

    /// Runs one practice's nightly scan as if on `day`, every part in this call (what
    /// `pil scan` does).
    pub async fn scan(&self, practice: &PracticeId, day: Date) -> Result<ScanReport, ScanError> {
        let deps = self.scan_deps();
        let report = scan::scan_practice(&deps, practice, day).await?;
        scan::mark_scanned(&deps, practice, day).await?;
        Ok(report)
    }
}

/// What arrives on the scan queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScanMessage {
    Tick,
    /// A practice's night; `part` > 0 continues one a previous invocation could not finish.
    Scan {
        practice_id: PracticeId,
        date: Date,
        #[serde(default)]
        part: u32,
    },
}

#[derive(Debug, Deserialize)]
struct EventEnvelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: DomainEvent,
}

pub async fn handler(deps: &Deps, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    Ok(handle(deps, event.payload).await)
}

/// Four messages at a time, each in its message's span (which names the practice once it is
/// known). A transient failure is retried; a permanent one is logged and dropped.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch(event, 4, |m| async move {
        match process(deps, m.body.as_deref().unwrap_or("")).await {
            Ok(()) => Disposition::Done,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "scan message failed; will retry");
                Disposition::Retry
            }
            Err(e) => {
                tracing::error!(error = %e, "scan message failed permanently; dropped");
                Disposition::DeadLetter
            }
        }
    })
    .await
}

async fn process(deps: &Deps, body: &str) -> Result<(), ScanError> {
    if let Ok(env) = serde_json::from_str::<EventEnvelope>(body) {
        match env.detail {
            DomainEvent::SlotOpened {
                practice_id,
                slot_ref,
            } => {
                record_practice(&practice_id);
                let r = slots::fill(&deps.slot_deps(), &practice_id, &slot_ref).await?;
                log_slot(&env.detail_type, &r);
            }
            DomainEvent::SlotFilled {
                practice_id,
                slot_ref,
                appointment_ref,
            } => {
                record_practice(&practice_id);
                let r = slots::filled(
                    &deps.slot_deps(),
                    &practice_id,
                    &slot_ref,
                    appointment_ref.as_ref(),
                )
                .await?;
                log_slot(&env.detail_type, &r);
            }
            DomainEvent::ActionApproved { .. }
            | DomainEvent::SettingsLinkRequested { .. }
            | DomainEvent::EndpointRetired { .. }
            | DomainEvent::IntegrationReportDue { .. }
            | DomainEvent::TriggersFailing { .. } => {
                tracing::error!(detail_type = %env.detail_type, reason = "unexpected_event", "scan message dropped");
            }
        }
        return Ok(());
    }
    match serde_json::from_str::<ScanMessage>(body) {
        Ok(ScanMessage::Tick) => {
            // The tick fans out: one scan message per practice whose night it is, each run in
            // its own invocation (and continued there if it is large).
            let now = deps.adapters.clock.now();
            let tonight = scan::tonight(&deps.scan_deps(), now).await?;
            let due = tonight.due;
            deps.metrics.emit(
                None,
                &[],
                &[
                    ("ScansScheduled", due.len() as f64, Unit::Count),
                    ("PracticesBehind", tonight.behind as f64, Unit::Count),
                ],
            );
            for (practice_id, date) in &due {
                deps.scan_queue
                    .send_json(&serde_json::json!({"kind": "scan",
                        "practice_id": practice_id, "date": date}))
                    .await?;
            }
            tracing::info!(practices = due.len(), "nightly tick fanned out");
            Ok(())
        }
        Ok(ScanMessage::Scan {
            practice_id,
            date,
            part,
        }) => {
            record_practice(&practice_id);
            let r = deps.scan_part(&practice_id, date, part).await?;
            log_report(&r);
            Ok(())
        }
        Err(_) => {
            tracing::error!(reason = "unrecognised_scan_message", "scan message dropped");
            Ok(())
        }
    }
}

fn log_slot(detail_type: &str, r: &SlotReport) {
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.as_str()).collect();
    tracing::info!(
        detail_type,
        outcome = r.outcome,
        pool_read = r.pool_read,
        offers = r.offers.len(),
        handed_over = r.handed_over,
        withdrawn = r.withdrawn,
        skipped = ?skipped,
        "slot fill"
    );
}

fn log_report(r: &ScanReport) {
    tracing::info!(
        scan_date = %r.scan_date.map(|d| d.to_string()).unwrap_or_default(),
        due_read = r.due_read,
        created = r.created.len(),
        handed_over = r.handed_over,
        suppressed = r.suppressed.len(),
        "scan finished"
    );
}
