use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pil_aws::Config;
use square_relay::config::{Role, backfill_span, from_lambda_env};
use square_relay::jobs;

// The schedule's tick (EventBridge Scheduler, every 15 minutes; one run at a time).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let relay = from_lambda_env(Role::Jobs).await?;
    let span = backfill_span(&Config::from_env());
    run(service_fn(
        |e: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
            let relay = &relay;
            async move {
                let deadline = jiff::Timestamp::from_millisecond(e.context.deadline as i64)
                    .map(jobs::deadline_before)
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                // Progress is saved as it goes: a run that stops leaves the rest to the next.
                // Only a cause someone must fix is an alert; Lambda's retries of the
                // invocation would change nothing, so the run still succeeds.
                match jobs::run(relay, span, jiff::Timestamp::now, deadline).await {
                    Ok(r) => {
                        tracing::info!(report = ?r, "jobs_done");
                        relay.metrics.emit(None, &[], &r.metrics());
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(reason = e.code(), "jobs_paused");
                    }
                    Err(e) => tracing::error!(alert = e.code(), reason = %e, "jobs_stopped"),
                }
                Ok::<(), Error>(())
            }
        },
    ))
    .await
}
