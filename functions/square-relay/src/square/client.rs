//! Square's API as the relay calls it: list bookings (backfill, completions), customer groups
//! (trigger execution). [`SquareApi`] is the port; [`HttpSquare`] the client over HTTPS.
//! Rate limits: a 429 is retried after its `Retry-After` (or an exponential backoff when
//! Square sends none), as are 5xx answers and connection errors, up to
//! [`RetryPolicy::attempts`] tries; then the caller gets [`SquareError::Unavailable`] and
//! gives up for now (a backfill resumes from its saved cursor, a trigger is answered 503 and
//! the layer retries it).

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::model::{BookingsPage, CustomerGroup, ErrorBody, GroupCreated, GroupsPage};

/// The API version the relay was written and tested against (`Square-Version`).
pub const SQUARE_VERSION: &str = "2025-08-20";
/// Square's production API.
pub const PRODUCTION_URL: &str = "https://connect.squareup.com";
/// Square's sandbox.
pub const SANDBOX_URL: &str = "https://connect.squareupsandbox.com";
/// The widest `start_at` range `ListBookings` accepts.
pub const MAX_RANGE_DAYS: i64 = 31;
/// The largest page `ListBookings` returns.
pub const PAGE_LIMIT: u32 = 100;

/// Why a Square call failed. Never carries Square's `detail` text (it may echo input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SquareError {
    /// Rate limited, 5xx or unreachable after every retry: try again later.
    #[error("square unavailable ({0})")]
    Unavailable(&'static str),
    /// The access token was refused or lacks a permission: the practice must fix it.
    #[error("square refused the access token ({code})")]
    Unauthorized { code: String },
    /// The customer or group does not exist.
    #[error("square: not found")]
    NotFound,
    /// Any other 4xx: a request Square will never accept.
    #[error("square rejected the request ({status} {category}/{code})")]
    Rejected {
        status: u16,
        category: String,
        code: String,
    },
}

impl SquareError {
    /// The reason code in logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "square_unavailable",
            Self::Unauthorized { .. } => "square_unauthorized",
            Self::NotFound => "square_not_found",
            Self::Rejected { .. } => "square_rejected",
        }
    }
}

/// One page request of `ListBookings`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingsQuery {
    pub location_id: Option<String>,
    pub start_at_min: Option<Timestamp>,
    pub start_at_max: Option<Timestamp>,
    pub cursor: Option<String>,
}

#[async_trait]
pub trait SquareApi: Send + Sync {
    async fn list_bookings(&self, q: &BookingsQuery) -> Result<BookingsPage, SquareError>;
    async fn list_groups(&self, cursor: Option<&str>) -> Result<GroupsPage, SquareError>;
    async fn create_group(
        &self,
        name: &str,
        idempotency_key: &str,
    ) -> Result<CustomerGroup, SquareError>;
    async fn add_to_group(&self, customer_id: &str, group_id: &str) -> Result<(), SquareError>;
    async fn remove_from_group(&self, customer_id: &str, group_id: &str)
    -> Result<(), SquareError>;
}

/// How often and how long to retry 429s, 5xx and connection errors.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    /// The longest wait between two tries (a `Retry-After` above it is not waited for: the
    /// call gives up and the caller comes back later).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Square over HTTPS (or plain HTTP to the local simulator).
#[derive(Clone)]
pub struct HttpSquare {
    client: reqwest::Client,
    base_url: String,
    token: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HttpSquare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpSquare({})", self.base_url)
    }
}

enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl HttpSquare {
    pub fn new(
        client: reqwest::Client,
        base_url: impl Into<String>,
        access_token: impl Into<String>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            client,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: access_token.into(),
            retry,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, SquareError> {
        let url = format!("{}{}", self.base_url, path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = match method {
                Method::Get => self.client.get(&url),
                Method::Post => self.client.post(&url),
                Method::Put => self.client.put(&url),
                Method::Delete => self.client.delete(&url),
            }
            .bearer_auth(&self.token)
            .header("square-version", SQUARE_VERSION)
            .header("accept", "application/json")
            .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let (wait, why) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = resp.bytes().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
                        return serde_json::from_slice(text)
                            .map_err(|_| SquareError::Unavailable("square_unreadable_answer"));
                    }
                    if status == 429 {
                        (retry_after, "square_rate_limited")
                    } else if status >= 500 {
                        (retry_after, "square_5xx")
                    } else {
                        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
                        let (category, code) = err
                            .errors
                            .first()
                            .map(|e| (e.category.clone(), e.code.clone()))
                            .unwrap_or_default();
                        return Err(match status {
                            401 | 403 => SquareError::Unauthorized { code },
                            404 => SquareError::NotFound,
                            _ => SquareError::Rejected {
                                status,
                                category,
                                code,
                            },
                        });
                    }
                }
                Err(e) if e.is_timeout() => (None, "square_timeout"),
                Err(_) => (None, "square_unreachable"),
            };
            let backoff = self.retry.base * 2u32.saturating_pow(attempt - 1);
            let wait = wait.unwrap_or(backoff);
            if attempt >= self.retry.attempts || wait > self.retry.max_wait {
                tracing::warn!(reason = why, attempts = attempt, "square_gave_up");
                return Err(SquareError::Unavailable(why));
            }
            tracing::info!(
                reason = why,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "square_retry"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn ts(t: Timestamp) -> String {
    // Square's examples write seconds and a `Z`.
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

#[async_trait]
impl SquareApi for HttpSquare {
    async fn list_bookings(&self, q: &BookingsQuery) -> Result<BookingsPage, SquareError> {
        let mut query = vec![("limit", PAGE_LIMIT.to_string())];
        if let Some(l) = &q.location_id {
            query.push(("location_id", l.clone()));
        }
        if let Some(t) = q.start_at_min {
            query.push(("start_at_min", ts(t)));
        }
        if let Some(t) = q.start_at_max {
            query.push(("start_at_max", ts(t)));
        }
        if let Some(c) = &q.cursor {
            query.push(("cursor", c.clone()));
        }
        self.call(Method::Get, "/v2/bookings", &query, None).await
    }

    async fn list_groups(&self, cursor: Option<&str>) -> Result<GroupsPage, SquareError> {
        let query: Vec<(&str, String)> = cursor
            .map(|c| vec![("cursor", c.to_owned())])
            .unwrap_or_default();
        self.call(Method::Get, "/v2/customers/groups", &query, None)
            .await
    }

    async fn create_group(
        &self,
        name: &str,
        idempotency_key: &str,
    ) -> Result<CustomerGroup, SquareError> {
        let body = serde_json::json!({"idempotency_key": idempotency_key, "group": {"name": name}});
        let created: GroupCreated = self
            .call(Method::Post, "/v2/customers/groups", &[], Some(&body))
            .await?;
        Ok(created.group)
    }

    async fn add_to_group(&self, customer_id: &str, group_id: &str) -> Result<(), SquareError> {
        let path = format!(
            "/v2/customers/{}/groups/{}",
            segment(customer_id),
            segment(group_id)
        );
        let _: serde_json::Value = self.call(Method::Put, &path, &[], None).await?;
        Ok(())
    }

    async fn remove_from_group(
        &self,
        customer_id: &str,
        group_id: &str,
    ) -> Result<(), SquareError> {
        let path = format!(
            "/v2/customers/{}/groups/{}",
            segment(customer_id),
            segment(group_id)
        );
        let _: serde_json::Value = self.call(Method::Delete, &path, &[], None).await?;
        Ok(())
    }
}

/// A path segment: Square's ids are `[A-Za-z0-9_-]`, anything else is percent-encoded.
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
