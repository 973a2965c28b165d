use approval_page::{Deps, handler};
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
    // The pages' headers (their CSP names the stylesheet's hash, computed at build time):
    // built in init, not on the first request.
    if config.warm_up() {
        let _ = pil_aws::lambda::page_headers();
    }
    run(service_fn(|event| handler(&deps, event))).await
}
