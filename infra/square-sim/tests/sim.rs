//! The simulator against the behaviour Square documents (README.md): authorization,
//! ListBookings' range and pagination, rate limiting, customer groups and signed webhooks.

mod common;

use std::collections::HashSet;

use common::{Receiver, TOKEN, call, get, seller, ts};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};
use square_relay::square::signature::{HEADER, SignatureKey};
use square_sim::{BookingChange, Person, SquareSim};

fn error_code(v: &Value) -> (&str, &str) {
    let e = &v["errors"][0];
    (
        e["category"].as_str().unwrap_or_default(),
        e["code"].as_str().unwrap_or_default(),
    )
}

fn booking(id: &str, start_at: &str, location: &str, customer: &str, team_member: &str) -> Value {
    json!({
        "id": id,
        "version": 3,
        "status": "ACCEPTED",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "start_at": start_at,
        "location_id": location,
        "customer_id": customer,
        "appointment_segments": [{
            "duration_minutes": 30,
            "service_variation_id": "RU3PBTZTK7DXZDQFCJHOK2MC",
            "team_member_id": team_member,
            "service_variation_version": 1,
        }],
    })
}

#[tokio::test]
async fn requests_need_the_bearer_token() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v2/customers/groups", sim.url);

    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(error_code(&body), ("AUTHENTICATION_ERROR", "UNAUTHORIZED"));

    let wrong = client.get(&url).bearer_auth("other").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let malformed = client
        .get(&url)
        .header("authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 401);
    let body: Value = malformed.json().await.unwrap();
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );

    let ok = client
        .get(&url)
        .bearer_auth(TOKEN)
        .header("Square-Version", "2025-08-20")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({}));

    let recorded = sim.requests();
    let statuses: Vec<u16> = recorded.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 401, 200]);
    assert_eq!(recorded[3].square_version.as_deref(), Some("2025-08-20"));
    assert_eq!(recorded[0].square_version, None);
    assert_eq!(recorded[3].method, "GET");
    assert_eq!(recorded[3].path, "/v2/customers/groups");
    sim.stop().await;
}

#[tokio::test]
async fn a_malformed_square_version_and_unknown_paths_are_refused() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/v2/bookings/abc", sim.url))
        .bearer_auth(TOKEN)
        .header("Square-Version", "August 2025")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        error_code(&body),
        ("INVALID_REQUEST_ERROR", "INVALID_SQUARE_VERSION_FORMAT")
    );
    let (s, v) = get(&sim, "/v2/bookings/nosuchbooking").await;
    assert_eq!(
        (s, error_code(&v)),
        (404, ("INVALID_REQUEST_ERROR", "NOT_FOUND"))
    );
    let (s, v) = get(&sim, "/v2/payments").await;
    assert_eq!((s, error_code(&v).1), (404, "NOT_FOUND"));
    let (s, _, v) = call(&sim, Method::DELETE, "/v2/bookings", None).await;
    assert_eq!((s, error_code(&v).1), (405, "METHOD_NOT_ALLOWED"));
    sim.stop().await;
}

/// Every booking in the range is listed exactly once across the pages, in start order, the
/// last page has no cursor, and a cursor only continues the request it came from.
#[tokio::test]
async fn pagination_visits_every_booking_once() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let min = ts("2025-03-01T00:00:00Z");
    let mut expected = HashSet::new();
    for i in 0..257i64 {
        // Pairs share their start, so the order needs the id as a tie-break.
        let start = min + SignedDuration::from_mins((i / 2) * 150);
        let id = format!("bk{i:04}");
        sim.insert_booking(booking(&id, &start.to_string(), "L1", "C1", "TM1"));
        expected.insert(id);
    }
    // Outside the range: before it, and after it.
    sim.insert_booking(booking("early", "2025-02-28T23:59:59Z", "L1", "C1", "TM1"));
    sim.insert_booking(booking("late", "2025-03-31T00:00:01Z", "L1", "C1", "TM1"));
    // Not listable: no start.
    sim.insert_booking(json!({"id": "nostart", "status": "ACCEPTED"}));

    let base = "/v2/bookings?start_at_min=2025-03-01T00:00:00Z&start_at_max=2025-03-31T00:00:00Z";
    for limit in [None, Some(1), Some(10), Some(100), Some(1000)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = base.to_owned();
            if let Some(l) = limit {
                q.push_str(&format!("&limit={l}"));
            }
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let (s, v) = get(&sim, &q).await;
            assert_eq!(s, 200, "{v}");
            let page = v["bookings"].as_array().unwrap();
            assert!(!page.is_empty(), "no empty page");
            assert!(page.len() <= limit.unwrap_or(100).min(100));
            seen.extend(page.iter().map(|b| {
                (
                    b["start_at"]
                        .as_str()
                        .unwrap()
                        .parse::<Timestamp>()
                        .unwrap(),
                    b["id"].as_str().unwrap().to_owned(),
                )
            }));
            pages += 1;
            match v.get("cursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let ids: HashSet<String> = seen.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(
            ids.len(),
            seen.len(),
            "limit {limit:?}: a booking listed twice"
        );
        assert_eq!(ids, expected, "limit {limit:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in start order");
        let per_page = limit.unwrap_or(100).min(100);
        assert_eq!(pages, 257_usize.div_ceil(per_page), "limit {limit:?}");
    }

    // A cursor with another request, or one not issued by Square, is refused.
    let (_, v) = get(&sim, &format!("{base}&limit=5")).await;
    let c = v["cursor"].as_str().unwrap().to_owned();
    let (s, v) = get(&sim, &format!("{base}&location_id=L2&cursor={c}")).await;
    assert_eq!((s, error_code(&v).1), (400, "INVALID_CURSOR"));
    let (s, v) = get(&sim, &format!("{base}&cursor=x{c}")).await;
    assert_eq!((s, error_code(&v).1), (400, "INVALID_CURSOR"));
    // The limit may change from page to page.
    let (s, v) = get(&sim, &format!("{base}&limit=7&cursor={c}")).await;
    assert_eq!((s, v["bookings"].as_array().unwrap().len()), (200, 7));
    // limit below 1, or not a number.
    let (s, v) = get(&sim, &format!("{base}&limit=0")).await;
    assert_eq!((s, error_code(&v).1), (400, "VALUE_TOO_LOW"));
    let (s, v) = get(&sim, &format!("{base}&limit=ten")).await;
    assert_eq!((s, error_code(&v).1), (400, "EXPECTED_INTEGER"));
    sim.stop().await;
}

#[tokio::test]
async fn list_bookings_filters() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let t = "2025-03-02T10:00:00Z";
    sim.insert_booking(booking("a", t, "L1", "C1", "TM1"));
    sim.insert_booking(booking("b", t, "L2", "C1", "TM2"));
    sim.insert_booking(booking("c", t, "L1", "C2", "TM2"));
    let range = "start_at_min=2025-03-01T00:00:00Z";
    let ids = |v: &Value| -> Vec<String> {
        v["bookings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = get(&sim, &format!("/v2/bookings?{range}&location_id=L1")).await;
    assert_eq!(ids(&v), ["a", "c"]);
    let (_, v) = get(&sim, &format!("/v2/bookings?{range}&customer_id=C1")).await;
    assert_eq!(ids(&v), ["a", "b"]);
    let (_, v) = get(&sim, &format!("/v2/bookings?{range}&team_member_id=TM2")).await;
    assert_eq!(ids(&v), ["b", "c"]);
    let (_, v) = get(
        &sim,
        &format!("/v2/bookings?{range}&team_member_id=TM2&location_id=L1"),
    )
    .await;
    assert_eq!(ids(&v), ["c"]);
    let (_, v) = get(&sim, &format!("/v2/bookings?{range}&customer_id=nobody")).await;
    assert_eq!(
        v,
        json!({"bookings": [], "errors": []}),
        "an empty page, no cursor"
    );
    sim.stop().await;
}

/// start_at_min defaults to now, start_at_max to 31 days after start_at_min, and a range
/// longer than 31 days (or reversed) is refused.
#[tokio::test]
async fn the_31_day_rule() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let now = ts("2025-06-01T12:00:00Z");
    sim.set_now(now);
    let day31 = now + SignedDuration::from_hours(31 * 24);
    for (id, t) in [
        ("before-now", now - SignedDuration::from_secs(1)),
        ("now", now),
        ("day-31", day31),
        ("after-day-31", day31 + SignedDuration::from_secs(1)),
    ] {
        sim.insert_booking(booking(id, &t.to_string(), "L1", "C1", "TM1"));
    }
    let (s, v) = get(&sim, "/v2/bookings").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["now", "day-31"],
        "defaults: [now, now + 31 days], both ends included"
    );

    // Exactly 31 days is allowed; a second more is not.
    let (s, _) = get(
        &sim,
        "/v2/bookings?start_at_min=2025-01-01T00:00:00Z&start_at_max=2025-02-01T00:00:00Z",
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = get(
        &sim,
        "/v2/bookings?start_at_min=2025-01-01T00:00:00Z&start_at_max=2025-02-01T00:00:01Z",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(error_code(&v), ("INVALID_REQUEST_ERROR", "INVALID_VALUE"));
    assert_eq!(v["errors"][0]["field"], "start_at_max");
    // start_at_max alone is measured from "now".
    let (s, _) = get(&sim, "/v2/bookings?start_at_max=2025-08-01T00:00:00Z").await;
    assert_eq!(s, 400);
    // Reversed.
    let (s, v) = get(
        &sim,
        "/v2/bookings?start_at_min=2025-01-02T00:00:00Z&start_at_max=2025-01-01T00:00:00Z",
    )
    .await;
    assert_eq!((s, error_code(&v).1), (400, "INVALID_TIME_RANGE"));
    // Not RFC 3339 (an unencoded `+` arrives as a space).
    let (s, v) = get(&sim, "/v2/bookings?start_at_min=2025-01-01T00:00:00+01:00").await;
    assert_eq!((s, error_code(&v).1), (400, "INVALID_TIME"));
    let (s, _) = get(
        &sim,
        "/v2/bookings?start_at_min=2025-01-01T00:00:00%2B01:00",
    )
    .await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test]
async fn rate_limited_requests_answer_429_with_retry_after() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    sim.rate_limit_next(2, Some(7));
    for _ in 0..2 {
        let (s, h, v) = call(&sim, Method::GET, "/v2/customers/groups", None).await;
        assert_eq!(s, 429);
        assert_eq!(h.get("retry-after").unwrap(), "7");
        assert_eq!(error_code(&v), ("RATE_LIMIT_ERROR", "RATE_LIMITED"));
    }
    let (s, _, _) = call(&sim, Method::GET, "/v2/customers/groups", None).await;
    assert_eq!(s, 200);

    // Without Retry-After; and an unauthorized request does not use up the 429s.
    sim.rate_limit_next(1, None);
    let unauthorized = reqwest::Client::new()
        .get(format!("{}/v2/customers/groups", sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let (s, h, _) = call(&sim, Method::GET, "/v2/bookings/abc", None).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_none());
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200, 401, 429]);
    sim.stop().await;
}

#[tokio::test]
async fn customer_groups_and_memberships() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    sim.set_now(ts("2025-04-13T21:54:57.863Z"));
    let customer = sim.add_customer(Person {
        given_name: Some("Amelia".into()),
        ..Person::default()
    });

    let create = |key: &str, name: &str| json!({"idempotency_key": key, "group": {"name": name}});
    let (s, _, v) = call(
        &sim,
        Method::POST,
        "/v2/customers/groups",
        Some(create("k1", "pil-recall-due")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let group = v["group"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["group"]["name"], "pil-recall-due");
    assert_eq!(v["group"]["created_at"], "2025-04-13T21:54:57.863Z");
    // The same idempotency key returns the same group; reused for another name, 400.
    let (_, _, again) = call(
        &sim,
        Method::POST,
        "/v2/customers/groups",
        Some(create("k1", "pil-recall-due")),
    )
    .await;
    assert_eq!(again, v);
    let (s, _, e) = call(
        &sim,
        Method::POST,
        "/v2/customers/groups",
        Some(create("k1", "other")),
    )
    .await;
    assert_eq!((s, error_code(&e).1), (400, "IDEMPOTENCY_KEY_REUSED"));
    let (s, _, e) = call(
        &sim,
        Method::POST,
        "/v2/customers/groups",
        Some(json!({"group": {}})),
    )
    .await;
    assert_eq!((s, error_code(&e).1), (400, "MISSING_REQUIRED_PARAMETER"));
    assert_eq!(sim.groups(), [(group.clone(), "pil-recall-due".to_owned())]);

    // Membership: PUT adds, DELETE removes, each answering {}.
    let path = format!("/v2/customers/{customer}/groups/{group}");
    let (s, _, v) = call(&sim, Method::PUT, &path, None).await;
    assert_eq!((s, v), (200, json!({})));
    let (s, _, v) = call(&sim, Method::PUT, &path, None).await;
    assert_eq!((s, v), (200, json!({})), "adding twice is fine");
    assert_eq!(sim.group_names_of(&customer), ["pil-recall-due"]);
    let (_, c) = get(&sim, &format!("/v2/customers/{customer}")).await;
    assert_eq!(c["customer"]["group_ids"], json!([group]));
    assert_eq!(c["customer"]["given_name"], "Amelia");
    let (s, _, v) = call(&sim, Method::DELETE, &path, None).await;
    assert_eq!((s, v), (200, json!({})));
    assert!(sim.group_names_of(&customer).is_empty());
    let (_, c) = get(&sim, &format!("/v2/customers/{customer}")).await;
    assert!(c["customer"].get("group_ids").is_none());
    assert_eq!(c["customer"]["version"], 2);

    // Unknown customer or group: 404 NOT_FOUND.
    for p in [
        format!("/v2/customers/NOSUCHCUSTOMER/groups/{group}"),
        format!("/v2/customers/{customer}/groups/NOSUCHGROUP"),
    ] {
        for m in [Method::PUT, Method::DELETE] {
            let (s, _, v) = call(&sim, m, &p, None).await;
            assert_eq!(
                (s, error_code(&v)),
                (404, ("INVALID_REQUEST_ERROR", "NOT_FOUND"))
            );
        }
    }
    let (s, _) = get(&sim, "/v2/customers/NOSUCHCUSTOMER").await;
    assert_eq!(s, 404);

    // ListCustomerGroups pages (limit 1 to 50).
    for i in 0..4 {
        call(
            &sim,
            Method::POST,
            "/v2/customers/groups",
            Some(create(&format!("g{i}"), &format!("group {i}"))),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut q = "/v2/customers/groups?limit=2".to_owned();
    loop {
        let (s, v) = get(&sim, &q).await;
        assert_eq!(s, 200);
        names.extend(
            v["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["name"].as_str().unwrap().to_owned()),
        );
        match v.get("cursor").and_then(Value::as_str) {
            Some(c) => q = format!("/v2/customers/groups?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        names,
        ["pil-recall-due", "group 0", "group 1", "group 2", "group 3"]
    );
    let (s, v) = get(&sim, "/v2/customers/groups?limit=51").await;
    assert_eq!((s, error_code(&v).1), (400, "VALUE_TOO_HIGH"));
    let (s, v) = get(&sim, "/v2/customers/groups?limit=0").await;
    assert_eq!((s, error_code(&v).1), (400, "VALUE_TOO_LOW"));
    sim.stop().await;
}

/// booking.created and booking.updated reach a local receiver, signed over the notification
/// URL and the body; a redelivery keeps its event_id.
#[tokio::test]
async fn webhooks_are_signed_and_redelivered() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let who = seller(&sim);
    let at = ts("2025-05-01T09:00:00Z");
    let start = ts("2025-05-20T16:00:00Z");

    // Not subscribed: no delivery.
    let (b0, status) = sim.create_booking(who.booking(start), at).await;
    assert_eq!(status, None);
    assert_eq!(b0["version"], 0);

    let receiver = Receiver::start("/square/webhook").await;
    let key = SignatureKey::new("sig-key-Ö-123").unwrap();
    sim.subscribe(&receiver.url, "sig-key-Ö-123");

    let (b, status) = sim.create_booking(who.booking(start), at).await;
    assert_eq!(status, Some(200));
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["status"], "ACCEPTED");
    assert_eq!(b["created_at"], "2025-05-01T09:00:00Z");
    assert_eq!(b["start_at"], "2025-05-20T16:00:00Z");

    let (updated, status) = sim
        .update_booking(
            &id,
            BookingChange {
                status: Some("CANCELLED_BY_CUSTOMER".into()),
                ..BookingChange::default()
            },
            at + SignedDuration::from_mins(5),
        )
        .await;
    assert_eq!(status, Some(200));
    assert_eq!(updated["version"], 1);
    assert_eq!(updated["updated_at"], "2025-05-01T09:05:00Z");
    assert_eq!(updated["created_at"], "2025-05-01T09:00:00Z");

    let got = receiver.deliveries();
    assert_eq!(got.len(), 2);
    for d in &got {
        let sig = d.header(HEADER).unwrap();
        assert!(
            key.verify(&receiver.url, &d.body, sig),
            "the signature verifies"
        );
        assert!(!key.verify(&format!("{}/", receiver.url), &d.body, sig));
        assert_eq!(d.header("content-type"), Some("application/json"));
        assert!(d.header("square-retry-number").is_none());
    }
    let created = got[0].json();
    assert_eq!(created["type"], "booking.created");
    assert_eq!(created["merchant_id"], sim.merchant_id());
    assert_eq!(created["location_id"], who.location.as_str());
    assert_eq!(created["created_at"], "2025-05-01T09:00:00Z");
    assert_eq!(created["data"]["type"], "booking");
    assert_eq!(created["data"]["id"], format!("{id}:0"));
    assert_eq!(created["data"]["object"]["booking"], b);
    let changed = got[1].json();
    assert_eq!(changed["type"], "booking.updated");
    assert_eq!(changed["data"]["id"], format!("{id}:1"));
    assert_eq!(
        changed["data"]["object"]["booking"]["status"],
        "CANCELLED_BY_CUSTOMER"
    );
    assert_ne!(
        created["event_id"], changed["event_id"],
        "a fresh event_id each"
    );

    // A redelivery: the same bytes, so the same event_id, and a retry number.
    receiver.answer(500);
    assert_eq!(sim.redeliver(&id).await, Some(500));
    receiver.answer(200);
    assert_eq!(sim.redeliver(&id).await, Some(200));
    let got = receiver.deliveries();
    assert_eq!(got.len(), 4);
    assert_eq!(got[2].body, got[1].body);
    assert_eq!(got[3].body, got[1].body);
    assert_eq!(got[2].header("square-retry-number"), Some("1"));
    assert_eq!(got[3].header("square-retry-number"), Some("2"));
    assert_eq!(
        got[3].header("square-initial-delivery-timestamp"),
        Some("2025-05-01T09:05:00Z")
    );
    assert!(key.verify(&receiver.url, &got[3].body, got[3].header(HEADER).unwrap()));
    assert_eq!(sim.redeliver("nosuchbooking").await, None);

    // The receiver's answer is what create_booking reports; none at all is 0.
    receiver.answer(503);
    let (_, status) = sim.create_booking(who.booking(start), at).await;
    assert_eq!(status, Some(503));
    sim.subscribe("http://127.0.0.1:9/unreachable", "k");
    let (_, status) = sim.create_booking(who.booking(start), at).await;
    assert_eq!(status, Some(0));
    sim.stop().await;
}

/// A change of time and of segments, and the booking as RetrieveBooking and ListBookings
/// answer it afterwards.
#[tokio::test]
async fn updates_change_the_booking_everywhere() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let who = seller(&sim);
    let at = ts("2025-05-01T09:00:00Z");
    let (b, _) = sim
        .create_booking(who.booking(ts("2025-05-20T16:00:00Z")), at)
        .await;
    let id = b["id"].as_str().unwrap();
    let other = sim.add_team_member();
    let (u, _) = sim
        .update_booking(
            id,
            BookingChange {
                status: None,
                start_at: Some(ts("2025-05-21T08:30:00Z")),
                segments: Some(vec![square_sim::Segment {
                    service_variation_id: who.service.clone(),
                    team_member_id: other.clone(),
                    duration_minutes: 45,
                }]),
            },
            at + SignedDuration::from_hours(1),
        )
        .await;
    assert_eq!(u["start_at"], "2025-05-21T08:30:00Z");
    assert_eq!(
        u["appointment_segments"][0]["team_member_id"],
        other.as_str()
    );
    assert_eq!(u["appointment_segments"][0]["duration_minutes"], 45);
    assert_eq!(u["status"], "ACCEPTED");
    let (s, r) = get(&sim, &format!("/v2/bookings/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(r["booking"], u);
    assert_eq!(sim.booking(id), Some(u.clone()));
    let (_, l) = get(
        &sim,
        &format!("/v2/bookings?start_at_min=2025-05-01T00:00:00Z&team_member_id={other}"),
    )
    .await;
    assert_eq!(l["bookings"], json!([u]));
    sim.stop().await;
}
