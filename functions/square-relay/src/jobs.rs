//! The relay's scheduled work (every 15 minutes, one run at a time): the backfill, the
//! completion sweep, and the expiry of group memberships. Each step saves its progress as it
//! goes and stops at the deadline, so the next run continues where this one stopped.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::layer::{LayerError, send_all};
use crate::mapping::{Mapped, completions, map_booking};
use crate::relay::Relay;
use crate::square::client::{BookingsQuery, MAX_RANGE_DAYS, SquareError};
use crate::square::model::BookingsPage;
use crate::store::{Backfill, StoreError};

/// Longest visit the layer knows (720 minutes): a booking that ends in a window started at
/// most this long before it.
const LONGEST_VISIT: SignedDuration = SignedDuration::from_hours(12);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Square(#[from] SquareError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JobError {
    /// Whether the next run may succeed by itself (Square or the layer busy, DynamoDB
    /// unavailable), as against a cause someone must fix (a refused token, a request Square
    /// or the layer refuses).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Square(SquareError::Unavailable(_))
                | Self::Layer(LayerError::Unavailable(_))
                | Self::Store(_)
        )
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Square(e) => e.code(),
            Self::Layer(LayerError::Unavailable(_)) => "layer_unavailable",
            Self::Layer(LayerError::Refused { .. }) => "layer_refused",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// How far a backfill reaches.
#[derive(Debug, Clone, Copy)]
pub struct BackfillSpan {
    /// Days of history before the start.
    pub days_back: i64,
    /// Days of bookings ahead (bookings already made for the coming weeks).
    pub days_ahead: i64,
}

impl Default for BackfillSpan {
    fn default() -> Self {
        Self {
            days_back: 3 * 365,
            days_ahead: 90,
        }
    }
}

/// What one run did (logged, and returned to the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobReport {
    pub backfill_pages: u64,
    pub backfill_bookings: u64,
    pub backfill_events: u64,
    pub backfill_skipped: u64,
    pub backfill_done: bool,
    pub completions_sent: u64,
    pub memberships_ended: u64,
    pub memberships_kept: u64,
    /// Service variation ids the backfill met that the service map lacks (at most
    /// [`UNMAPPED_LISTED`]): what to add to `ServiceMap`, or leave out on purpose.
    pub unmapped_services: std::collections::BTreeSet<String>,
}

/// Unmapped service variation ids a run lists, at most.
pub const UNMAPPED_LISTED: usize = 20;

impl JobReport {
    /// The run's counts as metric values.
    pub fn metrics(&self) -> Vec<pil_aws::metrics::Value> {
        use pil_aws::metrics::Unit::Count;
        vec![
            ("BackfillPages", self.backfill_pages as f64, Count),
            ("BackfillBookings", self.backfill_bookings as f64, Count),
            ("BackfillEvents", self.backfill_events as f64, Count),
            ("BookingsSkipped", self.backfill_skipped as f64, Count),
            ("CompletionsSent", self.completions_sent as f64, Count),
            ("MembershipsEnded", self.memberships_ended as f64, Count),
        ]
    }
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn grace(relay: &Relay) -> SignedDuration {
    SignedDuration::try_from(relay.rules.completion_grace).unwrap_or(SignedDuration::ZERO)
}

/// Runs the three steps, in order, until `deadline`.
pub async fn run(
    relay: &Relay,
    span: BackfillSpan,
    now: impl Fn() -> Timestamp,
    deadline: Timestamp,
) -> Result<JobReport, JobError> {
    let mut report = JobReport::default();
    backfill(relay, span, &now, deadline, &mut report).await?;
    if now() < deadline {
        sweep_completions(relay, now(), &mut report).await?;
    }
    if now() < deadline {
        expire_memberships(relay, now(), &mut report).await?;
    }
    Ok(report)
}

/// The backfill: every booking from `days_back` before the first run to `days_ahead` after
/// it, window by window (Square lists at most 31 days of starts at once), page by page. After
/// each page's events were taken by the layer the cursor is saved: a run that stops (deadline,
/// a 429 that outlasts the retries, the layer unavailable) resumes from the page it was on.
pub async fn backfill(
    relay: &Relay,
    span: BackfillSpan,
    now: &impl Fn() -> Timestamp,
    deadline: Timestamp,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let mut b = match relay.store.backfill().await? {
        Some(b) => b,
        None => {
            let start = now();
            let since = start - days(span.days_back);
            // Completions from here on are the sweep's; before, the backfill sends them.
            if relay.store.watermark().await?.is_none() {
                relay.store.put_watermark(start - grace(relay)).await?;
            }
            let b = Backfill {
                since,
                until: start + days(span.days_ahead),
                window_start: since,
                cursor: None,
                done: false,
                pages: 0,
                bookings: 0,
                events: 0,
                skipped: 0,
            };
            relay.store.put_backfill(&b).await?;
            b
        }
    };
    let mut walk = Walk {
        window_start: b.window_start,
        until: b.until,
        cursor: b.cursor.clone(),
    };
    while !b.done && now() < deadline {
        let page = walk.page(relay).await?;
        let at = now();
        let mapped: Vec<Mapped> = page
            .bookings
            .iter()
            .map(|booking| map_booking(booking, at, &relay.rules, &relay.refs))
            .collect();
        let mut skipped = 0;
        for m in &mapped {
            if let Some(why) = m.skipped {
                skipped += 1;
                tracing::debug!(reason = why.as_str(), "booking_skipped");
            }
            for id in &m.unmapped {
                if report.unmapped_services.len() < UNMAPPED_LISTED {
                    report.unmapped_services.insert(id.clone());
                }
            }
        }
        let events = deliver(relay, mapped).await? as u64;
        b.pages += 1;
        b.bookings += page.bookings.len() as u64;
        b.events += events;
        b.skipped += skipped;
        report.backfill_pages += 1;
        report.backfill_bookings += page.bookings.len() as u64;
        report.backfill_events += events;
        report.backfill_skipped += skipped;
        walk.advance(page.cursor);
        b.window_start = walk.window_start;
        b.cursor.clone_from(&walk.cursor);
        b.done = walk.done();
        relay.store.put_backfill(&b).await?;
    }
    report.backfill_done = b.done;
    if b.done {
        tracing::info!(
            pages = b.pages,
            bookings = b.bookings,
            events = b.events,
            skipped = b.skipped,
            "backfill_done"
        );
    }
    Ok(())
}

/// Visits that passed the completion mark since the last sweep: `ACCEPTED` bookings whose
/// end lies in `(watermark, now − grace]` are sent as `appointment.completed`. The watermark
/// moves only after the layer took them. A booking cancelled or marked a no-show before the
/// mark is never sent as completed.
pub async fn sweep_completions(
    relay: &Relay,
    now: Timestamp,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let cutoff = now - grace(relay);
    let Some(wm) = relay.store.watermark().await? else {
        relay.store.put_watermark(cutoff).await?;
        return Ok(());
    };
    if cutoff <= wm {
        return Ok(());
    }
    let mut walk = Walk {
        window_start: wm - LONGEST_VISIT,
        until: cutoff,
        cursor: None,
    };
    while !walk.done() {
        let page = walk.page(relay).await?;
        let ended = page.bookings.iter().filter(|booking| {
            booking
                .end_at()
                .is_some_and(|end| wm < end && end <= cutoff)
        });
        let mapped: Vec<Mapped> = ended
            .map(|booking| completions(booking, now, &relay.rules, &relay.refs))
            .collect();
        report.completions_sent += deliver(relay, mapped).await? as u64;
        walk.advance(page.cursor);
    }
    relay.store.put_watermark(cutoff).await?;
    Ok(())
}

/// Where a walk over the seller's bookings stands: the window of starts being listed (Square
/// lists at most 31 days of starts at once) and Square's cursor within it.
struct Walk {
    window_start: Timestamp,
    until: Timestamp,
    cursor: Option<String>,
}

impl Walk {
    fn done(&self) -> bool {
        self.window_start >= self.until
    }

    fn window_end(&self) -> Timestamp {
        (self.window_start + days(MAX_RANGE_DAYS)).min(self.until)
    }

    /// The page the walk stands on.
    async fn page(&self, relay: &Relay) -> Result<BookingsPage, JobError> {
        Ok(relay
            .square
            .list_bookings(&BookingsQuery {
                location_id: relay.location_id.clone(),
                start_at_min: Some(self.window_start),
                start_at_max: Some(self.window_end()),
                cursor: self.cursor.clone(),
            })
            .await?)
    }

    /// Past a page: to Square's next cursor in the window, or to the next window.
    fn advance(&mut self, next: Option<String>) {
        match next.filter(|c| !c.is_empty()) {
            Some(c) => self.cursor = Some(c),
            None => {
                self.cursor = None;
                self.window_start = self.window_end();
            }
        }
    }
}

/// Remembers the customer behind each patient ref (triggers name the ref), then sends the
/// events to the layer. Returns the events sent.
async fn deliver(relay: &Relay, mapped: Vec<Mapped>) -> Result<usize, JobError> {
    let mut events = Vec::new();
    let mut pairs = Vec::new();
    for m in mapped {
        events.extend(m.events);
        pairs.extend(m.patient.map(|(r, c)| (r.as_str().to_owned(), c)));
    }
    relay.remember(pairs).await?;
    Ok(send_all(relay.layer.as_ref(), &events).await?)
}

/// Memberships past their trigger's expiry: the customer leaves the group. A trigger that
/// extended the membership meanwhile keeps (or puts back) the customer in it.
pub async fn expire_memberships(
    relay: &Relay,
    now: Timestamp,
    report: &mut JobReport,
) -> Result<(), JobError> {
    for m in relay.store.expired_memberships(now).await? {
        match relay
            .square
            .remove_from_group(&m.customer_id, &m.group_id)
            .await
        {
            // Gone already: the customer was deleted, or removed by hand.
            Ok(()) | Err(SquareError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        if relay.store.end_membership(&m).await? {
            report.memberships_ended += 1;
        } else {
            // Extended by a newer trigger while this ran: back into the group.
            match relay.square.add_to_group(&m.customer_id, &m.group_id).await {
                Ok(()) | Err(SquareError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            report.memberships_kept += 1;
        }
    }
    Ok(())
}

/// The deadline of a run given Lambda's: a minute's margin for the last page in flight.
pub fn deadline_before(lambda_deadline: Timestamp) -> Timestamp {
    lambda_deadline - Duration::from_secs(60)
}
