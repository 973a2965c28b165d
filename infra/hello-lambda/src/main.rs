//! The cold-start baseline (`make bench-cold`): the smallest real `lambda_runtime` function,
//! as the `lambda_runtime` README writes it (`#[tokio::main]`: the multi-thread runtime). It
//! echoes its event. The handlers run on the current-thread runtime; the bench shows
//! `hello-lambda-current-thread` beside this one.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
