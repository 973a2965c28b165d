//! The cold-start baseline (`make bench-cold`): the smallest real `lambda_runtime` function,
//! on the same tokio runtime flavour as the handlers. It echoes its event.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
