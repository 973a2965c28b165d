//! The baseline on tokio's current-thread runtime, the flavour the handlers run on: shown
//! beside the goal's baseline (`hello-lambda`, the `lambda_runtime` README's hello world on
//! the default multi-thread runtime) so the runtime's share of the difference is visible.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
