use approval_check::{Deps, handler};
use lambda_runtime::{Error, run, service_fn};
use pil_aws::{Clients, Config, Meter};

// One event at a time per execution environment: a current-thread runtime, no worker
// threads to start in init (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let config = Config::from_env();
    let deps = Deps::new(
        &Clients::from_lambda_env(&config)?,
        &config,
        Meter::default(),
    )?;
    run(service_fn(|event| handler(&deps, event))).await
}
