//! The relay reads Square's own example payloads (tests/data/square/, recorded from Square's
//! API reference): notifications, pages of bookings and groups, error bodies.

use square_relay::square::model::{
    BookingStatus, BookingsPage, ErrorBody, GroupCreated, GroupsPage, Notification,
};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/square/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn booking_notifications_read_as_bookings() {
    for (file, kind) in [
        ("booking-created.json", "booking.created"),
        ("booking-updated.json", "booking.updated"),
    ] {
        let n: Notification = serde_json::from_str(&example(file)).unwrap();
        assert_eq!(n.kind, kind);
        let b = n
            .data
            .and_then(|d| d.object)
            .and_then(|o| o.booking)
            .unwrap();
        assert!(!b.id.is_empty());
        assert!(b.customer_id.is_some() && b.start_at.is_some());
        assert_ne!(b.status, BookingStatus::Unknown);
        assert!(b.total_minutes() > 0);
        assert!(b.appointment_segments[0].service_variation_id.is_some());
        assert!(b.appointment_segments[0].team_member_id.is_some());
    }
}

#[test]
fn pages_groups_and_errors_read() {
    let page: BookingsPage = serde_json::from_str(&example("list-bookings.json")).unwrap();
    assert!(!page.bookings.is_empty());
    let all: serde_json::Value =
        serde_json::from_str(&example("retrieve-booking-all-fields.json")).unwrap();
    let b: square_relay::square::model::Booking =
        serde_json::from_value(all["booking"].clone()).unwrap();
    assert!(b.all_day.is_some());
    let groups: GroupsPage = serde_json::from_str(&example("list-customer-groups.json")).unwrap();
    assert!(
        groups
            .groups
            .iter()
            .all(|g| !g.id.is_empty() && !g.name.is_empty())
    );
    let created: GroupCreated =
        serde_json::from_str(&example("create-customer-group.json")).unwrap();
    assert!(!created.group.id.is_empty());
    for (file, category, code) in [
        ("error-401.json", "AUTHENTICATION_ERROR", "UNAUTHORIZED"),
        ("error-429.json", "RATE_LIMIT_ERROR", "RATE_LIMITED"),
    ] {
        let e: ErrorBody = serde_json::from_str(&example(file)).unwrap();
        assert_eq!(
            (e.errors[0].category.as_str(), e.errors[0].code.as_str()),
            (category, code)
        );
    }
}
