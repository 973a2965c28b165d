//! approval-check: one function, two event sources.
//! - SQS (candidates queue): applies the owner's policy; auto-approves or e-mails the owner;
//!   e-mails the owners a settings link when one asked for it (`settings_link.requested`).
//! - HTTP API: `GET /v1/approvals/{token}` shows a confirmation page (never changes state);
//!   `POST /v1/approvals/{token}` decides.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{batch_failures, page_headers, response};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar, SesMailer};
use pil_shared::ids::PracticeId;
use pil_shared::ports::{CandidateBatch, DomainEvent, Mail, Mailer, PortError};
use pil_shared::service::approval::{self, ApprovalDeps};
use pil_shared::service::ops;
use pil_shared::service::settings;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub bus: EventBus,
    /// The owner's digest: sent by the deployment that consumes candidates, the one with
    /// `SENDER_EMAIL`. The page deployment has neither the variable nor an SES client.
    pub mailer: Option<SesMailer>,
    /// Public API URL for links in e-mails. Only the candidates consumer mails; the page
    /// function does not need it (its form posts to a relative path).
    pub base_url: Option<String>,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter)?,
            bus: EventBus::new(clients.eventbridge.clone(), config.get("EVENT_BUS_NAME")?),
            mailer: config
                .opt("SENDER_EMAIL")
                .map(|from| SesMailer::new(clients.sesv2(), from)),
            base_url: config.opt("PUBLIC_BASE_URL").map(str::to_owned),
            metrics: Metrics::new(config, "approval-check"),
        })
    }

    fn approval(&self) -> ApprovalDeps<'_> {
        let s = &self.adapters.store;
        ApprovalDeps {
            practices: s,
            actions: s,
            entities: s,
            due: s,
            log: s,
            audit: s,
            admin: s,
            tokens: s,
            bus: &self.bus,
            mailer: match &self.mailer {
                Some(m) => m,
                None => &NoMailer,
            },
            secrets: &self.adapters.secrets,
            clock: &self.adapters.clock,
            base_url: self.base_url.as_deref().unwrap_or_default(),
        }
    }
}

/// The mailer of a deployment without `SENDER_EMAIL` (the pages): a digest reaching it is a
/// misconfiguration, refused as such (the candidate message is retried, then dead-lettered).
struct NoMailer;

#[async_trait::async_trait]
impl Mailer for NoMailer {
    async fn send(&self, _mail: &Mail) -> Result<(), PortError> {
        Err(PortError::Permanent("no_sender_email".into()))
    }
}

/// Lambda entry: dispatches on the event's shape.
pub async fn handler(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    if payload.get("Records").is_some() {
        let sqs: SqsEvent = serde_json::from_value(payload)?;
        Ok(serde_json::to_value(handle_sqs(deps, sqs).await)?)
    } else {
        let req: ApiGatewayV2httpRequest = serde_json::from_value(payload)?;
        Ok(serde_json::to_value(handle_http(deps, &req).await)?)
    }
}

/// What arrives on the candidates queue: a scan's candidates, or (routed from the bus by
/// `SettingsLinkRule`) an owner's request for a settings link.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum CandidatesMessage {
    Candidates(CandidateBatch),
    Event { detail: DomainEvent },
}

pub async fn handle_sqs(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let failed: Vec<String> = futures::stream::iter(event.records.into_iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        match serde_json::from_str::<CandidatesMessage>(m.body.as_deref().unwrap_or("")) {
            Ok(CandidatesMessage::Candidates(batch)) => candidates(deps, &id, &batch).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::SettingsLinkRequested { practice_id, requested_by },
            }) => settings_link(deps, &id, &practice_id, &requested_by).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::EndpointRetired { practice_id },
            }) => endpoint_retired(deps, &id, &practice_id).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::IntegrationReportDue { practice_id, date },
            }) => integration_report(deps, &id, &practice_id, date).await,
            Ok(CandidatesMessage::Event {
                detail: DomainEvent::TriggersFailing { practice_id, date, reason },
            }) => triggers_failing(deps, &id, &practice_id, date, &reason).await,
            Ok(CandidatesMessage::Event { .. }) | Err(_) => {
                tracing::error!(message_id = %id, reason = "unrecognised_candidate_message", "dropped");
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

/// Returns the message id when the message must stay on the queue.
async fn candidates(deps: &Deps, id: &str, batch: &CandidateBatch) -> Option<String> {
    match approval::handle_candidates(&deps.approval(), batch).await {
        Ok(r) => {
            tracing::info!(message_id = %id, practice_id = %batch.practice_id, candidates = batch.action_ids.len(),
                auto_approved = r.auto_approved.len(), pending = r.pending.len(), suppressed = r.suppressed.len(),
                fell_back = r.fell_back, mailed = r.mailed, "candidates evaluated");
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
            None
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(message_id = %id, practice_id = %batch.practice_id, error = %e, "candidates failed; will retry");
            Some(id.to_owned())
        }
        Err(e) => {
            tracing::error!(message_id = %id, practice_id = %batch.practice_id, error = %e, "candidates failed permanently");
            Some(id.to_owned())
        }
    }
}

/// E-mails each owner a settings link. Returns the message id when it must be retried.
async fn endpoint_retired(deps: &Deps, id: &str, practice_id: &PracticeId) -> Option<String> {
    match approval::endpoint_retired(&deps.approval(), practice_id).await {
        Ok(owners) => {
            tracing::info!(message_id = %id, practice_id = %practice_id, owners, reason = "endpoint_retired", "owners told that triggers stopped");
            deps.metrics
                .emit(None, &[], &[("OwnerNotices", 1.0, Unit::Count)]);
            None
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(message_id = %id, practice_id = %practice_id, error = %e, "owner notice failed; will retry");
            Some(id.to_owned())
        }
        Err(e) => {
            tracing::error!(message_id = %id, practice_id = %practice_id, error = %e, alert = "owner_notice_failed", "owners not told that triggers stopped; the digest says it");
            None
        }
    }
}

async fn triggers_failing(
    deps: &Deps,
    id: &str,
    practice_id: &PracticeId,
    date: jiff::civil::Date,
    reason: &str,
) -> Option<String> {
    match approval::triggers_failing(&deps.approval(), practice_id, date, reason).await {
        Ok(0) => None,
        Ok(owners) => {
            tracing::info!(message_id = %id, practice_id = %practice_id, owners, reason = "triggers_failing", "owners told that triggers fail");
            deps.metrics
                .emit(None, &[], &[("OwnerNotices", 1.0, Unit::Count)]);
            None
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(message_id = %id, practice_id = %practice_id, error = %e, "owner notice failed; will retry");
            Some(id.to_owned())
        }
        Err(e) => {
            tracing::error!(message_id = %id, practice_id = %practice_id, error = %e, alert = "owner_notice_failed", "owners not told that triggers fail");
            None
        }
    }
}

async fn integration_report(
    deps: &Deps,
    id: &str,
    practice_id: &PracticeId,
    date: jiff::civil::Date,
) -> Option<String> {
    let s = &deps.adapters.store;
    let mailer: &dyn Mailer = match &deps.mailer {
        Some(m) => m,
        None => &NoMailer,
    };
    let now = pil_shared::ports::Clock::now(&deps.adapters.clock);
    match ops::integration_mail(s, s, s, mailer, practice_id, date, now).await {
        Ok(0) => None,
        Ok(contacts) => {
            tracing::info!(message_id = %id, practice_id = %practice_id, contacts, reason = "refusals", "integration report sent");
            deps.metrics
                .emit(None, &[], &[("IntegrationReports", 1.0, Unit::Count)]);
            None
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(message_id = %id, practice_id = %practice_id, error = %e, "integration report failed; will retry");
            Some(id.to_owned())
        }
        Err(e) => {
            tracing::error!(message_id = %id, practice_id = %practice_id, error = %e, "integration report failed permanently; dropped");
            None
        }
    }
}

async fn settings_link(
    deps: &Deps,
    id: &str,
    practice_id: &PracticeId,
    requested_by: &str,
) -> Option<String> {
    let actor = format!("owner:{requested_by}");
    match settings::send_links(&deps.approval(), practice_id, &actor).await {
        Ok(sent) => {
            tracing::info!(message_id = %id, practice_id = %practice_id, owners = sent, "settings link request handled");
            None
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(message_id = %id, practice_id = %practice_id, error = %e, "settings link failed; will retry");
            Some(id.to_owned())
        }
        Err(e) => {
            tracing::error!(message_id = %id, practice_id = %practice_id, error = %e, "settings link failed permanently; dropped");
            None
        }
    }
}

pub async fn handle_http(deps: &Deps, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let token = req
        .path_parameters
        .get("token")
        .map(String::as_str)
        .unwrap_or("");
    let page = match req.request_context.http.method.as_str() {
        "GET" | "HEAD" => pil_shared::service::links::show(&deps.approval(), token).await,
        "POST" => {
            let body = pil_aws::lambda::request_body(req).unwrap_or_default();
            pil_shared::service::links::decide(&deps.approval(), token, &body).await
        }
        _ => {
            return response(
                405,
                "text/plain; charset=utf-8",
                "method not allowed".into(),
                page_headers(),
            );
        }
    };
    tracing::info!(method = %req.request_context.http.method, status = page.status, outcome = page.outcome, "approval page");
    deps.metrics.emit(
        None,
        &[("Outcome", page.outcome)],
        &[("OwnerPages", 1.0, Unit::Count)],
    );
    response(
        page.status,
        "text/html; charset=utf-8",
        page.html,
        page_headers(),
    )
}
