//! A local simulator of the Square API endpoints the Square relay uses, and of Square's
//! signed `booking.created` / `booking.updated` webhooks. Shapes follow Square's published API
//! reference (the OpenAPI spec in `square/connect-api-specification`, see README.md); where the
//! reference is silent (ListBookings' page size and order, the error code of a too-long
//! range) the simulator's choice is documented in README.md.
//!
//! Endpoints (each needs `Authorization: Bearer <access token>`):
//! - `GET /v2/bookings` ListBookings, `GET /v2/bookings/{id}` RetrieveBooking
//! - `GET /v2/customers/{id}` RetrieveCustomer
//! - `GET|POST /v2/customers/groups` ListCustomerGroups, CreateCustomerGroup
//! - `PUT|DELETE /v2/customers/{id}/groups/{group_id}` AddGroupToCustomer,
//!   RemoveGroupFromCustomer
//!
//! The test drives the seller's side through [`SquareSim`]'s methods: locations, team
//! members, services and customers, bookings created and changed (each change notified to the
//! webhook subscription), redeliveries and rate limiting.

mod api;
mod cursor;
pub mod ids;
mod model;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use square_relay::square::signature::{HEADER, SignatureKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use model::{BOOKING_STATUSES, square_time};

/// A customer profile's personal fields: PHI the relay must never forward.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    /// `YYYY-MM-DD` (or `0000-MM-DD` without a year), as Square stores it.
    pub birthday: Option<String>,
    pub note: Option<String>,
}

/// One appointment segment of a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub service_variation_id: String,
    pub team_member_id: String,
    pub duration_minutes: u32,
}

/// A booking to create (as the seller would in Square Appointments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBooking {
    pub customer_id: String,
    pub location_id: String,
    pub start_at: Timestamp,
    pub segments: Vec<Segment>,
    /// `ACCEPTED` or `PENDING`.
    pub status: String,
    pub customer_note: Option<String>,
    pub seller_note: Option<String>,
}

/// A change to a booking; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingChange {
    /// One of [`BOOKING_STATUSES`].
    pub status: Option<String>,
    pub start_at: Option<Timestamp>,
    pub segments: Option<Vec<Segment>>,
}

/// One API request as the simulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    pub status: u16,
    /// The `Square-Version` header, when sent.
    pub square_version: Option<String>,
    /// The request body as text (empty for GET and DELETE).
    pub body: String,
}

struct Subscription {
    notification_url: String,
    key: SignatureKey,
}

/// A notification as first sent: redeliveries send the same bytes (same `event_id`).
#[derive(Clone)]
struct Notification {
    body: Vec<u8>,
    initial_delivery: Timestamp,
    retries: u32,
}

struct Customer {
    id: String,
    person: Person,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: i64,
    group_ids: Vec<String>,
}

struct Group {
    id: String,
    name: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Default)]
struct Inner {
    now: Option<Timestamp>,
    locations: Vec<String>,
    team_members: Vec<String>,
    /// Service variation id -> (name, version).
    services: BTreeMap<String, (String, i64)>,
    customers: BTreeMap<String, Customer>,
    /// In creation order.
    groups: Vec<Group>,
    /// CreateCustomerGroup idempotency key -> (group id, name asked for).
    group_keys: HashMap<String, (String, String)>,
    bookings: BTreeMap<String, serde_json::Value>,
    last_notification: HashMap<String, Notification>,
    subscription: Option<Arc<Subscription>>,
    rate_limited: usize,
    retry_after: Option<u64>,
    requests: Vec<RecordedRequest>,
}

impl Inner {
    fn now(&self) -> Timestamp {
        self.now.unwrap_or_else(Timestamp::now)
    }
}

struct Shared {
    access_token: String,
    merchant_id: String,
    cursors: cursor::Cursors,
    http: reqwest::Client,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The simulator: an HTTP server on loopback plus the seller's controls.
pub struct SquareSim {
    /// `http://127.0.0.1:PORT`, the base URL to give the relay instead of
    /// `https://connect.squareup.com`.
    pub url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SquareSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SquareSim({})", self.url)
    }
}

impl SquareSim {
    /// Binds 127.0.0.1:port (0 = any free port). Requests must carry
    /// `Authorization: Bearer <access_token>`, else 401 with Square's error body.
    pub async fn start(port: u16, access_token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Square counts a delivery not answered within 10 seconds as failed.
            .timeout(Duration::from_secs(10))
            .build()?;
        let shared = Arc::new(Shared {
            access_token: access_token.to_owned(),
            merchant_id: ids::merchant(),
            cursors: cursor::Cursors::new(),
            http,
            inner: Mutex::new(Inner::default()),
        });
        let app = axum::Router::new()
            .fallback(api::handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self {
            url,
            shared,
            stop,
            task,
        })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// The seller's merchant id (`merchant_id` of every notification).
    pub fn merchant_id(&self) -> String {
        self.shared.merchant_id.clone()
    }

    /// Fixes the simulator's clock ("now" is ListBookings' default `start_at_min` and the
    /// creation time of customers and groups); by default the system clock.
    pub fn set_now(&self, now: Timestamp) {
        self.shared.lock().now = Some(now);
    }

    /// A webhook subscription for booking.created and booking.updated: notifications are
    /// POSTed to `notification_url` signed with `SignatureKey::sign(notification_url, body)` in
    /// header `x-square-hmacsha256-signature`. A second call replaces the subscription (as
    /// when the signature key is rotated or the URL changed).
    ///
    /// # Panics
    /// When `signature_key` is blank (Square never issues one).
    pub fn subscribe(&self, notification_url: &str, signature_key: &str) {
        let key = SignatureKey::new(signature_key)
            .unwrap_or_else(|e| panic!("subscribe: {e}: Square never issues a blank key"));
        self.shared.lock().subscription = Some(Arc::new(Subscription {
            notification_url: notification_url.to_owned(),
            key,
        }));
    }

    /// Ends the webhook subscription: no more notifications are sent.
    pub fn unsubscribe(&self) {
        self.shared.lock().subscription = None;
    }

    /// A new location; its id is shaped like Square's (`L` and 12 base32 characters).
    pub fn add_location(&self) -> String {
        let id = ids::location();
        self.shared.lock().locations.push(id.clone());
        id
    }

    /// A new team member (`TM` and 14 letters or digits).
    pub fn add_team_member(&self) -> String {
        let id = ids::team_member();
        self.shared.lock().team_members.push(id.clone());
        id
    }

    /// A new service variation: its catalog object id (24 base32 characters, as in Square's
    /// examples). Its version is the creation time in milliseconds, as Square's catalog
    /// versions are.
    pub fn add_service_variation(&self, name: &str) -> String {
        let id = ids::catalog_object();
        let mut inner = self.shared.lock();
        let version = inner.now().as_millisecond();
        inner
            .services
            .insert(id.clone(), (name.to_owned(), version));
        id
    }

    /// A customer with PHI-bearing fields (given_name, family_name, email_address,
    /// phone_number, birthday, note) that the relay must never forward. Returns its id.
    pub fn add_customer(&self, person: Person) -> String {
        let id = ids::customer();
        let mut inner = self.shared.lock();
        let now = inner.now();
        inner.customers.insert(
            id.clone(),
            Customer {
                id: id.clone(),
                person,
                created_at: now,
                updated_at: now,
                version: 0,
                group_ids: Vec::new(),
            },
        );
        id
    }

    /// Creates a booking (status ACCEPTED or PENDING, version 0 as in Square's CreateBooking
    /// and booking.created examples, created_at/updated_at = `at`) and, when subscribed,
    /// sends booking.created; returns the booking JSON and the webhook delivery's HTTP status
    /// (None when not subscribed, `Some(0)` when the delivery got no HTTP answer).
    ///
    /// # Panics
    /// When the status is neither `ACCEPTED` nor `PENDING`, or there is no segment.
    pub async fn create_booking(
        &self,
        b: NewBooking,
        at: Timestamp,
    ) -> (serde_json::Value, Option<u16>) {
        assert!(
            b.status == "ACCEPTED" || b.status == "PENDING",
            "create_booking: a new booking is ACCEPTED or PENDING, not {:?}",
            b.status
        );
        assert!(
            !b.segments.is_empty(),
            "create_booking: a booking has at least one appointment segment"
        );
        let (booking, send) = {
            let mut inner = self.shared.lock();
            let id = ids::booking();
            let booking = model::booking(&id, &b, at, &inner.services);
            inner.bookings.insert(id.clone(), booking.clone());
            let send = self.notify(&mut inner, "booking.created", &booking, at);
            (booking, send)
        };
        let status = match send {
            Some(s) => Some(self.deliver(s).await),
            None => None,
        };
        (booking, status)
    }

    /// Applies a change (status and/or start_at and/or segments), bumps version, sets
    /// updated_at = at, and sends booking.updated.
    ///
    /// # Panics
    /// For an unknown booking id or status.
    pub async fn update_booking(
        &self,
        booking_id: &str,
        change: BookingChange,
        at: Timestamp,
    ) -> (serde_json::Value, Option<u16>) {
        if let Some(s) = &change.status {
            assert!(
                BOOKING_STATUSES.contains(&s.as_str()),
                "update_booking: {s:?} is not a Square booking status"
            );
        }
        let (booking, send) = {
            let mut inner = self.shared.lock();
            let services = inner.services.clone();
            let booking = inner
                .bookings
                .get_mut(booking_id)
                .unwrap_or_else(|| panic!("update_booking: no booking {booking_id:?}"));
            model::apply(booking, &change, at, &services);
            let booking = booking.clone();
            let send = self.notify(&mut inner, "booking.updated", &booking, at);
            (booking, send)
        };
        let status = match send {
            Some(s) => Some(self.deliver(s).await),
            None => None,
        };
        (booking, status)
    }

    /// Re-sends the last notification for a booking (Square redelivers): the same body and
    /// `event_id`, with `square-retry-number` counting the redeliveries. Returns the status;
    /// None when the booking had no notification or there is no subscription.
    pub async fn redeliver(&self, booking_id: &str) -> Option<u16> {
        let send = {
            let mut inner = self.shared.lock();
            let sub = inner.subscription.clone()?;
            let n = inner.last_notification.get_mut(booking_id)?;
            n.retries += 1;
            Send {
                sub,
                notification: n.clone(),
            }
        };
        Some(self.deliver(send).await)
    }

    /// Inserts a booking as it is, without any webhook (history for a backfill). It is listed
    /// by ListBookings when it has an `id` and an RFC 3339 `start_at`.
    ///
    /// # Panics
    /// When the booking has no string `id`.
    pub fn insert_booking(&self, booking: serde_json::Value) {
        let id = booking
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("insert_booking: the booking has no \"id\""))
            .to_owned();
        self.shared.lock().bookings.insert(id, booking);
    }

    /// The booking as Square holds it now.
    pub fn booking(&self, booking_id: &str) -> Option<serde_json::Value> {
        self.shared.lock().bookings.get(booking_id).cloned()
    }

    /// The next `n` API requests answer 429 RATE_LIMITED (Square's error body), with
    /// `Retry-After: secs` when given. Requests refused for their authorization do not count.
    pub fn rate_limit_next(&self, n: usize, retry_after: Option<u64>) {
        let mut inner = self.shared.lock();
        inner.rate_limited = n;
        inner.retry_after = retry_after;
    }

    /// Every API request so far, in order: method, path, query string, status answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The names of the customer groups the customer is in.
    pub fn group_names_of(&self, customer_id: &str) -> Vec<String> {
        let inner = self.shared.lock();
        let Some(c) = inner.customers.get(customer_id) else {
            return Vec::new();
        };
        c.group_ids
            .iter()
            .filter_map(|g| inner.groups.iter().find(|x| &x.id == g))
            .map(|g| g.name.clone())
            .collect()
    }

    /// Every customer group: (id, name), in creation order.
    pub fn groups(&self) -> Vec<(String, String)> {
        self.shared
            .lock()
            .groups
            .iter()
            .map(|g| (g.id.clone(), g.name.clone()))
            .collect()
    }

    /// Builds and remembers a notification; what to send when subscribed.
    fn notify(
        &self,
        inner: &mut Inner,
        kind: &str,
        booking: &serde_json::Value,
        at: Timestamp,
    ) -> Option<Send> {
        let sub = inner.subscription.clone()?;
        let body = model::notification(&self.shared.merchant_id, kind, booking, at);
        let notification = Notification {
            body: serde_json::to_vec(&body).unwrap_or_default(),
            initial_delivery: at,
            retries: 0,
        };
        let id = booking
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        inner
            .last_notification
            .insert(id.to_owned(), notification.clone());
        Some(Send { sub, notification })
    }

    /// POSTs a notification as Square does; the HTTP status, 0 when none came.
    async fn deliver(&self, send: Send) -> u16 {
        let Send { sub, notification } = send;
        let signature = sub.key.sign(&sub.notification_url, &notification.body);
        let mut req = self
            .shared
            .http
            .post(&sub.notification_url)
            .header("content-type", "application/json")
            .header(HEADER, signature)
            .header("square-environment", "Sandbox")
            .header(
                "square-initial-delivery-timestamp",
                square_time(notification.initial_delivery),
            );
        if notification.retries > 0 {
            req = req.header("square-retry-number", notification.retries.to_string());
        }
        match req.body(notification.body).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

struct Send {
    sub: Arc<Subscription>,
    notification: Notification,
}
