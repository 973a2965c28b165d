//! The relay's scheduled work (every 15 minutes, one run at a time): the backfill, the
//! completion sweep, and the expiry of group memberships. Each step saves its progress as it
//! goes and stops at the deadline, so the next run continues where this one stopped.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::layer::{LayerError, send_all};
use crate::mapping::{completions, map_booking};
use crate::relay::Relay;
use crate::square::client::{BookingsQuery, MAX_RANGE_DAYS, SquareError};
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
}

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
    while !b.done && now() < deadline {
        let window_end = (b.window_start + days(MAX_RANGE_DAYS)).min(b.until);
        let page = relay
            .square
            .list_bookings(&BookingsQuery {
                location_id: relay.location_id.clone(),
                start_at_min: Some(b.window_start),
                start_at_max: Some(window_end),
                cursor: b.cursor.clone(),
            })
            .await?;
        let at = now();
        let mut events = Vec::new();
        let mut pairs = Vec::new();
        let mut skipped = 0;
        for booking in &page.bookings {
            let m = map_booking(booking, at, &relay.rules, &relay.refs);
            if let Some(why) = m.skipped {
                skipped += 1;
                tracing::debug!(reason = why.as_str(), "booking_skipped");
            }
            events.extend(m.events);
            pairs.extend(m.patient.map(|(r, c)| (r.as_str().to_owned(), c)));
        }
        relay.remember(pairs).await?;
        send_all(relay.layer.as_ref(), &events).await?;
        b.pages += 1;
        b.bookings += page.bookings.len() as u64;
        b.events += events.len() as u64;
        b.skipped += skipped;
        report.backfill_pages += 1;
        report.backfill_bookings += page.bookings.len() as u64;
        report.backfill_events += events.len() as u64;
        report.backfill_skipped += skipped;
        match page.cursor.filter(|c| !c.is_empty()) {
            Some(c) => b.cursor = Some(c),
            None => {
                b.cursor = None;
                b.window_start = window_end;
                b.done = b.window_start >= b.until;
            }
        }
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
    let mut window_start = wm - LONGEST_VISIT;
    while window_start < cutoff {
        let window_end = (window_start + days(MAX_RANGE_DAYS)).min(cutoff);
        let mut cursor = None;
        loop {
            let page = relay
                .square
                .list_bookings(&BookingsQuery {
                    location_id: relay.location_id.clone(),
                    start_at_min: Some(window_start),
                    start_at_max: Some(window_end),
                    cursor: cursor.take(),
                })
                .await?;
            let mut events = Vec::new();
            let mut pairs = Vec::new();
            for booking in &page.bookings {
                let Some(end) = booking.end_at() else {
                    continue;
                };
                if end <= wm || end > cutoff {
                    continue;
                }
                let m = completions(booking, now, &relay.rules, &relay.refs);
                events.extend(m.events);
                pairs.extend(m.patient.map(|(r, c)| (r.as_str().to_owned(), c)));
            }
            relay.remember(pairs).await?;
            report.completions_sent += send_all(relay.layer.as_ref(), &events).await? as u64;
            match page.cursor.filter(|c| !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        window_start = window_end;
    }
    relay.store.put_watermark(cutoff).await?;
    Ok(())
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
