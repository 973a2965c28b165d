//! approval-check: consumes the candidates queue. Applies the owner's policy to a scan's
//! candidates (auto-approves, or e-mails the owner a digest); e-mails the owners a settings
//! link when one asked for it (`settings_link.requested`), the notice that triggers stopped
//! (`endpoint.retired`), and the technical contacts the night's integration report. The
//! pages the digest links to are approval-page's.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{Disposition, record_practice, sqs_batch};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar, SesMailer};
use shared::ids::PracticeId;
use shared::ports::{CandidateBatch, DomainEvent};
use shared::service::approval::{self, ApprovalDeps};
use shared::service::ops;
use shared::service::settings;

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub bus: EventBus,
    /// The owners' digests and notices, from `SENDER_EMAIL`.
    pub mailer: SesMailer,
    /// Public API URL for the links in e-mails (`PUBLIC_BASE_URL`).
    pub base_url: String,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter)?,
            bus: EventBus::new(clients.eventbridge.clone(), config.get("EVENT_BUS_NAME")?),
            mailer: SesMailer::new(clients.sesv2(), config.get("SENDER_EMAIL")?),
            base_url: config.get("PUBLIC_BASE_URL")?.to_owned(),
            metrics: Metrics::new(config, "approval-check"),
        })
    }

    fn approval(&self) -> ApprovalDeps<'_> {
        self.adapters
            .approval_deps(&self.bus, &self.mailer, &self.base_url)
    }
}

pub async fn handler(deps: &Deps, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    Ok(handle(deps, event.payload).await)
}

/// What arrives on the candidates queue: a scan's candidates, or (routed from the bus by
/// `SettingsLinkRule`) an owner's request for a settings link.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum CandidatesMessage {
    Candidates(CandidateBatch),
    Event { detail: DomainEvent },
}

/// Four messages at a time, each in its message's span (which names the practice once the
/// message is read). A transient failure is retried. A permanent one is dropped, except for
/// candidates: those are retried until the redrive policy moves them to CandidatesDLQ
/// (alarmed), as an owner's digest is worth an operator's look.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch(event, 4, |m| async move {
        match serde_json::from_str::<CandidatesMessage>(m.body.as_deref().unwrap_or("")) {
            Ok(CandidatesMessage::Candidates(batch)) => candidates(deps, &batch).await,
            Ok(CandidatesMessage::Event {
                detail:
                    DomainEvent::SettingsLinkRequested {
                        practice_id,
                        requested_by,
                    },
            }) => settings_link(deps, &practice_id, &requested_by).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::EndpointRetired { practice_id },
            }) => endpoint_retired(deps, &practice_id).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::IntegrationReportDue { practice_id, date },
            }) => integration_report(deps, &practice_id, date).await,
            Ok(CandidatesMessage::Event {
                detail:
                    DomainEvent::TriggersFailing {
                        practice_id,
                        date,
                        reason,
                    },
            }) => triggers_failing(deps, &practice_id, date, &reason).await,
            Ok(CandidatesMessage::Event { .. }) | Err(_) => {
                tracing::error!(reason = "unrecognised_candidate_message", "dropped");
                Disposition::DeadLetter
            }
        }
    })
    .await
}

async fn candidates(deps: &Deps, batch: &CandidateBatch) -> Disposition {
    record_practice(&batch.practice_id);
    match approval::handle_candidates(&deps.approval(), batch).await {
        Ok(r) => {
            tracing::info!(
                candidates = batch.action_ids.len(),
                auto_approved = r.auto_approved.len(),
                pending = r.pending.len(),
                suppressed = r.suppressed.len(),
                fell_back = r.fell_back,
                mailed = r.mailed,
                "candidates evaluated"
            );
            deps.metrics.emit(
                None,
                &[],
                &[
                    (
                        "ApprovedByPolicy",
                        r.auto_approved.len() as f64,
                        Unit::Count,
                    ),
                    ("AwaitingOwner", r.pending.len() as f64, Unit::Count),
                    (
                        "CandidatesSuppressed",
                        r.suppressed.len() as f64,
                        Unit::Count,
                    ),
                ],
            );
            Disposition::Done
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "candidates failed; will retry");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(error = %e, "candidates failed permanently");
            Disposition::Retry
        }
    }
}

/// E-mails each owner that triggers stopped.
async fn endpoint_retired(deps: &Deps, practice_id: &PracticeId) -> Disposition {
    record_practice(practice_id);
    let sent = approval::endpoint_retired(&deps.approval(), practice_id).await;
    notice_sent(deps, sent, "endpoint_retired")
}

/// E-mails each owner that triggers fail (at most once a day).
async fn triggers_failing(
    deps: &Deps,
    practice_id: &PracticeId,
    date: jiff::civil::Date,
    reason: &str,
) -> Disposition {
    record_practice(practice_id);
    let sent = approval::triggers_failing(&deps.approval(), practice_id, date, reason).await;
    notice_sent(deps, sent, "triggers_failing")
}

/// An owners' notice sent (a line and a metric), left for a retry, or given up with an alert
/// (the digest still says triggers stopped).
fn notice_sent(
    deps: &Deps,
    sent: Result<usize, approval::ApprovalError>,
    reason: &'static str,
) -> Disposition {
    match sent {
        Ok(0) => Disposition::Done,
        Ok(owners) => {
            tracing::info!(owners, reason, "owners told");
            deps.metrics
                .emit(None, &[], &[("OwnerNotices", 1.0, Unit::Count)]);
            Disposition::Done
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, reason, "owner notice failed; will retry");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(error = %e, reason, alert = "owner_notice_failed", "owners not told");
            Disposition::DeadLetter
        }
    }
}

async fn integration_report(
    deps: &Deps,
    practice_id: &PracticeId,
    date: jiff::civil::Date,
) -> Disposition {
    record_practice(practice_id);
    let s = &deps.adapters.store;
    let now = shared::ports::Clock::now(&deps.adapters.clock);
    match ops::integration_mail(s, s, s, &deps.mailer, practice_id, date, now).await {
        Ok(0) => Disposition::Done,
        Ok(contacts) => {
            tracing::info!(contacts, reason = "refusals", "integration report sent");
            deps.metrics
                .emit(None, &[], &[("IntegrationReports", 1.0, Unit::Count)]);
            Disposition::Done
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "integration report failed; will retry");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(error = %e, "integration report failed permanently; dropped");
            Disposition::DeadLetter
        }
    }
}

/// E-mails each owner a settings link of their own.
async fn settings_link(deps: &Deps, practice_id: &PracticeId, requested_by: &str) -> Disposition {
    record_practice(practice_id);
    let actor = format!("owner:{requested_by}");
    match settings::send_links(&deps.approval(), practice_id, &actor).await {
        Ok(sent) => {
            tracing::info!(owners = sent, "settings link request handled");
            Disposition::Done
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "settings link failed; will retry");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(error = %e, "settings link failed permanently; dropped");
            Disposition::DeadLetter
        }
    }
}
