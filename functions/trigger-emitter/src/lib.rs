//! trigger-emitter: consumes approved actions (EventBridge → SQS), delivers each as a
//! signed trigger to the practice's PMS, once. Retries back off by keeping the message
//! invisible (honouring `Retry-After`); permanent failures go to the dead-letter queue.
//! Messages run through `pil_aws::lambda::sqs_batch` (partial batch failures, one span each).

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{Disposition, record_action, record_practice, sqs_batch};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, HttpTransport, Meter, Metrics, MissingVar, SqsQueue};
use serde::Deserialize;
use shared::ports::DomainEvent;
use shared::service::emitter::{self, EmitOutcome, EmitterDeps, RetryPolicy};

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub transport: HttpTransport,
    pub queue: SqsQueue,
    pub dead_letters: SqsQueue,
    /// approval-check's queue: the owners' notice when triggers stop.
    pub notices: SqsQueue,
    pub policy: RetryPolicy,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, Error> {
        let missing = |e: MissingVar| -> Error { e.into() };
        Ok(Self {
            adapters: Adapters::new(clients, config, meter).map_err(missing)?,
            transport: HttpTransport::new(
                Duration::from_secs(config.num("TRIGGER_TIMEOUT_SECONDS", 10)),
                config.trigger_url_scope(),
            )?,
            queue: SqsQueue::new(
                clients.sqs.clone(),
                config.get("TRIGGERS_QUEUE_URL").map_err(missing)?,
            ),
            dead_letters: SqsQueue::new(
                clients.sqs.clone(),
                config.get("TRIGGERS_DLQ_URL").map_err(missing)?,
            ),
            notices: SqsQueue::new(
                clients.sqs.clone(),
                config.get("CANDIDATES_QUEUE_URL").map_err(missing)?,
            ),
            policy: config.retry_policy(),
            metrics: Metrics::new(config, "trigger-emitter"),
        })
    }

    fn emitter(&self) -> EmitterDeps<'_> {
        let s = &self.adapters.store;
        EmitterDeps {
            practices: s,
            entities: s,
            slots: s,
            actions: s,
            transport: &self.transport,
            audit: s,
            secrets: &self.adapters.secrets,
            clock: &self.adapters.clock,
            policy: self.policy,
            notices: &self.notices,
        }
    }
}

#[derive(Debug, Deserialize)]
struct EventEnvelope {
    detail: DomainEvent,
}

pub async fn handler(deps: &Deps, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    Ok(handle(deps, event.payload).await)
}

/// Ten messages at a time, each in its message's span (which names the practice and the
/// action once the message is read).
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch(event, 10, |m| process(deps, m)).await
}

/// A retry or a deferral stays on the queue, kept invisible for its delay. A permanent
/// failure is put in the dead-letter queue here (at the retry horizon, not after the queue's
/// receive count) and then dropped from the queue; when that send fails, it is retried.
async fn process(deps: &Deps, m: SqsMessage) -> Disposition {
    let id = m.message_id.clone().unwrap_or_default();
    let body = m.body.as_deref().unwrap_or("");
    let Ok(EventEnvelope {
        detail:
            DomainEvent::ActionApproved {
                practice_id,
                action_id,
            },
    }) = serde_json::from_str(body)
    else {
        tracing::error!(reason = "unrecognised_trigger_message", "dropped");
        return Disposition::DeadLetter;
    };
    record_practice(&practice_id);
    record_action(&action_id);
    let jitter = rand_unit(&id);
    let outcome = emitter::emit(&deps.emitter(), &practice_id, &action_id, jitter).await;
    outcome_metrics(deps, &outcome);
    match outcome {
        Ok(EmitOutcome::Delivered { .. }) => {
            tracing::info!(outcome = "delivered", "trigger delivered");
            Disposition::Done
        }
        Ok(EmitOutcome::AlreadyDelivered) => {
            tracing::info!(outcome = "already_delivered", "redelivery ignored");
            Disposition::Done
        }
        Ok(EmitOutcome::Dropped(reason)) => {
            tracing::warn!(outcome = "dropped", reason, "trigger not sent");
            Disposition::Done
        }
        Ok(EmitOutcome::Retry {
            after_seconds,
            reason,
        }) => {
            tracing::warn!(outcome = "retry", reason = %reason, after_seconds, "trigger will be retried");
            if let Some(rh) = m.receipt_handle.as_deref()
                && let Err(e) = deps.queue.delay(rh, after_seconds).await
            {
                tracing::warn!(error = %e, "could not set retry delay; default visibility applies");
            }
            Disposition::Retry
        }
        Ok(EmitOutcome::Defer { after_seconds }) => {
            tracing::info!(
                outcome = "deferred",
                reason = "quiet_hours",
                after_seconds,
                "trigger deferred to the end of quiet hours"
            );
            if let Some(rh) = m.receipt_handle.as_deref()
                && let Err(e) = deps.queue.delay(rh, after_seconds).await
            {
                tracing::warn!(error = %e, "could not set the deferral; default visibility applies");
            }
            Disposition::Retry
        }
        Ok(EmitOutcome::DeadLetter(reason)) => {
            tracing::error!(outcome = "dead_letter", reason = %reason, alert = "trigger_dead_lettered", "trigger failed permanently");
            match deps.dead_letters.send_raw(body).await {
                Ok(()) => Disposition::DeadLetter,
                Err(_) => Disposition::Retry,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "emitter storage failure; will retry");
            Disposition::Retry
        }
    }
}

/// A jitter value in [0, 1) that differs per message (no RNG state needed).
fn rand_unit(seed: &str) -> f64 {
    let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One line per message: its outcome (a fixed vocabulary), and for a delivery the time from
/// the approval to the PMS's answer.
fn outcome_metrics(deps: &Deps, outcome: &Result<EmitOutcome, emitter::EmitError>) {
    let (name, kind) = match outcome {
        Ok(EmitOutcome::Delivered { since_approval_ms }) => {
            if let Some(ms) = since_approval_ms {
                deps.metrics.emit(
                    None,
                    &[],
                    &[("DeliveryLatency", *ms as f64, Unit::Milliseconds)],
                );
            }
            ("TriggersDelivered", "delivered")
        }
        Ok(EmitOutcome::AlreadyDelivered) => ("TriggersRedelivered", "already_delivered"),
        Ok(EmitOutcome::Dropped(_)) => ("TriggersDropped", "dropped"),
        Ok(EmitOutcome::Retry { .. }) => ("TriggersRetried", "retry"),
        Ok(EmitOutcome::Defer { .. }) => ("TriggersDeferred", "quiet_hours"),
        Ok(EmitOutcome::DeadLetter(r)) if r == "endpoint_gone_410" => {
            ("TriggersFailed", "endpoint_retired")
        }
        Ok(EmitOutcome::DeadLetter(_)) => ("TriggersFailed", "failed"),
        Err(_) => ("TriggersRetried", "storage"),
    };
    deps.metrics
        .emit(None, &[("Outcome", kind)], &[(name, 1.0, Unit::Count)]);
}
