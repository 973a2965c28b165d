use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use pil_aws::{Clients, Config};
use square_relay::config::{AwsClients, Role, relay};
use square_relay::http::handle;
use square_relay::square::client::RetryPolicy;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    pil_aws::init_logging();
    let config = Config::from_env();
    let clients = Clients::from_lambda_env(&config)?;
    let aws = AwsClients {
        dynamodb: clients.dynamodb.clone(),
        kms: clients.kms.clone(),
    };
    let relay = relay(&config, &aws, Role::Http, RetryPolicy::default()).await?;
    run(service_fn(|e: LambdaEvent<ApiGatewayV2httpRequest>| {
        let relay = &relay;
        async move { Ok::<_, Error>(handle(relay, &e.payload, jiff::Timestamp::now()).await) }
    }))
    .await
}
