//! approval-page: the owner's links, behind the HTTP API. `GET /v1/approvals/{token}` (and
//! `HEAD`) shows a confirmation page and never changes state; `POST /v1/approvals/{token}`
//! decides. The same links open the settings page and the full list. It sends no mail: a
//! settings link request goes on the bus (`settings_link.requested`) for approval-check.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{Error, LambdaEvent};
use pil_aws::lambda::{page_headers, request_body, response};
use pil_aws::metrics::Unit;
use pil_aws::{Adapters, Clients, Config, EventBus, Meter, Metrics, MissingVar};
use shared::ports::{Mail, Mailer, PortError};
use shared::service::approval::ApprovalDeps;
use shared::service::links;

#[derive(Debug, Clone)]
pub struct Deps {
    pub adapters: Adapters,
    pub bus: EventBus,
    pub metrics: Metrics,
}

impl Deps {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        Ok(Self {
            adapters: Adapters::new(clients, config, meter)?,
            bus: EventBus::new(clients.eventbridge.clone(), config.get("EVENT_BUS_NAME")?),
            metrics: Metrics::new(config, "approval-page"),
        })
    }

    fn approval(&self) -> ApprovalDeps<'_> {
        // The pages' forms post back to a relative path: no public URL needed.
        self.adapters.approval_deps(&self.bus, &NoMailer, "")
    }
}

/// The pages send no mail (this function has no SES client and no permission to send):
/// a page that tried would be refused as a misconfiguration.
struct NoMailer;

#[async_trait::async_trait]
impl Mailer for NoMailer {
    async fn send(&self, _mail: &Mail) -> Result<(), PortError> {
        Err(PortError::Permanent("no_sender_email".into()))
    }
}

pub async fn handler(
    deps: &Deps,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    Ok(handle(deps, &event.payload).await)
}

pub async fn handle(deps: &Deps, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let token = req
        .path_parameters
        .get("token")
        .map(String::as_str)
        .unwrap_or("");
    let page = match req.request_context.http.method.as_str() {
        "GET" | "HEAD" => links::show(&deps.approval(), token).await,
        "POST" => {
            let body = request_body(req).unwrap_or_default();
            links::decide(&deps.approval(), token, &body).await
        }
        _ => {
            return response(
                405,
                "text/plain; charset=utf-8",
                "method not allowed".into(),
                page_headers(),
            );
        }
    };
    tracing::info!(method = %req.request_context.http.method, status = page.status, outcome = page.outcome, "approval page");
    deps.metrics.emit(
        None,
        &[("Outcome", page.outcome)],
        &[("OwnerPages", 1.0, Unit::Count)],
    );
    response(
        page.status,
        "text/html; charset=utf-8",
        page.html,
        page_headers(),
    )
}
