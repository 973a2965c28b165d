//! The parts of Square's payloads the relay reads. Everything else Square sends (notes,
//! addresses, names, creator details) is never deserialized: serde skips unknown fields, so
//! it is not even held in a typed value, and it has no way out of the relay.

use jiff::Timestamp;
use serde::Deserialize;

/// A webhook notification (`booking.created`, `booking.updated`, …).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub data: Option<NotificationData>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationData {
    /// The object's id (a booking's, a customer's).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub object: Option<NotificationObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationObject {
    #[serde(default)]
    pub booking: Option<Booking>,
}

/// A booking's status as Square reports it. Square has no "completed": see
/// [`crate::mapping`] for the rule that recognises a visit that took place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    Pending,
    CancelledByCustomer,
    CancelledBySeller,
    Declined,
    Accepted,
    NoShow,
    /// A status added to Square's API after this relay was written: skipped and counted.
    #[serde(other)]
    Unknown,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::CancelledByCustomer => "cancelled_by_customer",
            Self::CancelledBySeller => "cancelled_by_seller",
            Self::Declined => "declined",
            Self::Accepted => "accepted",
            Self::NoShow => "no_show",
            Self::Unknown => "unknown",
        }
    }
}

/// A booking: its ids, status, times and services.
#[derive(Debug, Clone, Deserialize)]
pub struct Booking {
    pub id: String,
    #[serde(default)]
    pub version: Option<i64>,
    pub status: BookingStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub start_at: Option<Timestamp>,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub all_day: Option<bool>,
    #[serde(default)]
    pub appointment_segments: Vec<Segment>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    #[serde(default)]
    pub duration_minutes: Option<i64>,
    #[serde(default)]
    pub intermission_minutes: Option<i64>,
    #[serde(default)]
    pub service_variation_id: Option<String>,
    #[serde(default)]
    pub team_member_id: Option<String>,
}

impl Booking {
    /// Minutes from the start to the end of the last segment (intermissions included).
    pub fn total_minutes(&self) -> i64 {
        self.appointment_segments
            .iter()
            .map(|s| s.duration_minutes.unwrap_or(0) + s.intermission_minutes.unwrap_or(0))
            .sum()
    }

    /// When the visit ends: the start plus every segment.
    pub fn end_at(&self) -> Option<Timestamp> {
        let start = self.start_at?;
        start
            .checked_add(jiff::SignedDuration::from_mins(self.total_minutes()))
            .ok()
    }
}

/// `ListBookings`' answer.
#[derive(Debug, Clone, Deserialize)]
pub struct BookingsPage {
    #[serde(default)]
    pub bookings: Vec<Booking>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A customer group.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerGroup {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupsPage {
    #[serde(default)]
    pub groups: Vec<CustomerGroup>,
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupCreated {
    pub group: CustomerGroup,
}

/// Square's error body: only the category and code are read (the `detail` text may echo
/// input).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEntry {
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub code: String,
}
