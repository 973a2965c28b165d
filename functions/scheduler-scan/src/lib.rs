//! scheduler-scan: consumes the scan queue. Messages are the hourly tick from EventBridge
//! Scheduler (`{"kind":"tick"}`), an explicit scan (`{"kind":"scan","practice_id","date"}`),
//! or a `slot.opened` event routed by the EventBridge rule. Reports partial batch failures.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use jiff::civil::Date;
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::batch_failures;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, MissingVar, SqsQueue};
use pil_shared::ids::PracticeId;
use pil_shared::ports::{Clock, DomainEvent};
use pil_shared::service::scan::{self, ScanDeps, ScanError, ScanReport};
use pil_shared::service::slots::{self, SlotDeps, SlotReport};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub candidates: SqsQueue,
    /// The scan publishes the approval outbox again (`action.approved`).
    pub bus: EventBus,
    /// `OUTBOX_GRACE_SECONDS`, else [`scan::OUTBOX_GRACE_SECONDS`].
    pub outbox_grace_seconds: i64,
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

    /// Runs one practice's nightly scan as if on `day` (also what `pil scan` calls).
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
    Scan { practice_id: PracticeId, date: Date },
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

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let failed: Vec<String> = futures::stream::iter(event.records.into_iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        match process(deps, m.body.as_deref().unwrap_or("")).await {
            Ok(()) => None,
            Err(e) if e.is_transient() => {
                tracing::warn!(message_id = %id, error = %e, "scan message failed; will retry");
                Some(id)
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "scan message failed permanently; dropped");
                None
            }
        }
    }))
    .buffer_unordered(4)
    .filter_map(|x| async move { x })
    .collect()
    .await;
    batch_failures(failed)
}

async fn process(deps: &Deps, body: &str) -> Result<(), ScanError> {
    if let Ok(env) = serde_json::from_str::<EventEnvelope>(body) {
        match env.detail {
            DomainEvent::SlotOpened {
                practice_id,
                slot_ref,
            } => {
                let r = slots::fill(&deps.slot_deps(), &practice_id, &slot_ref).await?;
                log_slot(&practice_id, &env.detail_type, &r);
            }
            DomainEvent::SlotFilled {
                practice_id,
                slot_ref,
            } => {
                let r = slots::filled(&deps.slot_deps(), &practice_id, &slot_ref).await?;
                log_slot(&practice_id, &env.detail_type, &r);
            }
            DomainEvent::ActionApproved { .. } | DomainEvent::SettingsLinkRequested { .. } => {
                tracing::error!(detail_type = %env.detail_type, reason = "unexpected_event", "scan message dropped");
            }
        }
        return Ok(());
    }
    match serde_json::from_str::<ScanMessage>(body) {
        Ok(ScanMessage::Tick) => {
            let now = deps.adapters.clock.now();
            let reports = scan::nightly_tick(&deps.scan_deps(), now).await?;
            for r in &reports {
                log_report(r);
            }
            Ok(())
        }
        Ok(ScanMessage::Scan { practice_id, date }) => {
            let r = deps.scan(&practice_id, date).await?;
            log_report(&r);
            Ok(())
        }
        Err(_) => {
            tracing::error!(reason = "unrecognised_scan_message", "scan message dropped");
            Ok(())
        }
    }
}

fn log_slot(practice_id: &PracticeId, detail_type: &str, r: &SlotReport) {
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.as_str()).collect();
    tracing::info!(
        practice_id = %practice_id,
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
        practice_id = %r.practice_id.as_ref().map(PracticeId::as_str).unwrap_or("-"),
        scan_date = %r.scan_date.map(|d| d.to_string()).unwrap_or_default(),
        due_read = r.due_read,
        created = r.created.len(),
        handed_over = r.handed_over,
        suppressed = r.suppressed.len(),
        "scan finished"
    );
}
