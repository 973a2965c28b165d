use lambda_runtime::{Error, run, service_fn};
use pil_aws::{Clients, Config, Meter};
use webhook_receiver::{Deps, handler};

// One event at a time per execution environment: a current-thread runtime, no worker
// threads to start in init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let config = Config::from_env();
    let deps = Deps::new(
        &Clients::from_lambda_env(&config)?,
        &config,
        // Counts this function's DynamoDB units for its `WriteUnits`/`ReadUnits` metrics: one
        // event at a time per execution environment, so the units around a request are its own.
        Meter::enabled(),
    )?;
    run(service_fn(|event| handler(&deps, event))).await
}
