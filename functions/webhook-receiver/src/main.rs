use lambda_runtime::{Error, run, service_fn};
use pil_aws::{Clients, Config, Meter};
use webhook_receiver::{Deps, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let config = Config::from_env();
    let deps = Deps::new(
        &Clients::from_lambda_env(&config)?,
        &config,
        Meter::default(),
    )?;
    // The PHI guard's patterns a clean request reaches: compiled in init, not on the first
    // request (the rest only ever run on values that look like PHI).
    if config.warm_up() {
        pil_shared::guard::warm_up();
    }
    run(service_fn(|event| handler(&deps, event))).await
}
