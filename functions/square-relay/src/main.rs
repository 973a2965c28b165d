use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use square_relay::config::{Role, from_lambda_env};
use square_relay::http::handle;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let relay = from_lambda_env(Role::Http).await?;
    run(service_fn(|e: LambdaEvent<ApiGatewayV2httpRequest>| {
        let relay = &relay;
        async move { Ok::<_, Error>(handle(relay, &e.payload, jiff::Timestamp::now()).await) }
    }))
    .await
}
