//! The simulator against Square's own examples (functions/square-relay/tests/data/square/,
//! README.md there gives each file's source): every key of an example is in the simulator's
//! answer, with the same JSON type, recursively; the simulator's bookings carry no field the
//! reference does not have; and its ids have the shapes of the examples' ids.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Receiver, TOKEN, call, get, seller, ts};
use reqwest::Method;
use serde_json::{Value, json};
use square_sim::{BookingChange, SquareSim};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../functions/square-relay/tests/data/square")
}

fn fixture(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `example` (those whose value is not `null`, Square's "not set") is in
/// `actual` with a value of the same JSON type; arrays: each element of `actual` against each
/// element of `example`. Keys listed in `exempt` (`path.to.key`, `[]` for array elements)
/// are skipped.
fn missing(example: &Value, actual: &Value, path: &str, exempt: &[&str], out: &mut Vec<String>) {
    match (example, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if ev.is_null() || exempt.contains(&p.as_str()) {
                    continue;
                }
                match a.get(k) {
                    None => out.push(format!("{p}: missing")),
                    Some(av) => missing(ev, av, &p, exempt, out),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if !e.is_empty() && a.is_empty() {
                out.push(format!(
                    "{path}: empty in the simulator's answer, nothing to compare"
                ));
            }
            let p = format!("{path}[]");
            for ev in e {
                for av in a {
                    missing(ev, av, &p, exempt, out);
                }
            }
        }
        (e, a) if kind(e) != kind(a) => {
            out.push(format!(
                "{path}: {} in the example, {} in the simulator",
                kind(e),
                kind(a)
            ));
        }
        _ => {}
    }
}

fn assert_covers(name: &str, actual: &Value, exempt: &[&str]) {
    let mut out = Vec::new();
    missing(&fixture(name), actual, "", exempt, &mut out);
    assert!(
        out.is_empty(),
        "the simulator's answer lacks keys of Square's example {name}:\n  {}\nanswer: {actual:#}",
        out.join("\n  ")
    );
}

/// Keys of `v` (recursively, `[]` for array elements), to check the simulator invents none.
fn keys(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                keys(x, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                keys(x, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Same length, and only the kinds of characters (lower, upper, digit, `-`) the example has.
fn same_shape(what: &str, example: &Value, actual: &Value) {
    let (e, a) = (example.as_str().unwrap(), actual.as_str().unwrap());
    let class = |c: char| {
        if c.is_ascii_lowercase() {
            'a'
        } else if c.is_ascii_uppercase() {
            'A'
        } else if c.is_ascii_digit() {
            '0'
        } else {
            c
        }
    };
    let allowed: BTreeSet<char> = e.chars().map(class).collect();
    assert_eq!(
        a.len(),
        e.len(),
        "{what}: {a:?} is not as long as Square's {e:?}"
    );
    assert!(
        a.chars().map(class).all(|c| allowed.contains(&c)),
        "{what}: {a:?} has characters Square's {e:?} has not"
    );
}

#[test]
fn every_fixture_parses_and_has_its_source_in_the_readme() {
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            fixture(&name);
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md gives no source for {name}"
            );
            n += 1;
        }
    }
    assert!(n >= 9, "only {n} fixtures");
}

#[tokio::test]
async fn the_simulator_answers_like_squares_examples() {
    let sim = SquareSim::start(0, TOKEN).await.unwrap();
    let who = seller(&sim);
    let receiver = Receiver::start("/square/webhook").await;
    sim.subscribe(&receiver.url, "a-signature-key");
    let at = ts("2025-05-01T09:00:00Z");
    sim.set_now(at);

    // Notifications.
    let (b, _) = sim
        .create_booking(who.booking(ts("2025-05-20T16:00:00Z")), at)
        .await;
    let id = b["id"].as_str().unwrap().to_owned();
    sim.update_booking(
        &id,
        BookingChange {
            status: Some("CANCELLED_BY_SELLER".into()),
            ..BookingChange::default()
        },
        at,
    )
    .await;
    let got = receiver.deliveries();
    let (created, updated) = (got[0].json(), got[1].json());
    assert_covers("booking-created.json", &created, &[]);
    assert_covers("booking-updated.json", &updated, &[]);
    assert_eq!(created["type"], fixture("booking-created.json")["type"]);
    assert_eq!(updated["type"], fixture("booking-updated.json")["type"]);
    assert_eq!(created["data"]["type"], "booking");

    // Bookings.
    let (s, list) = get(&sim, "/v2/bookings?start_at_min=2025-05-01T00:00:00Z").await;
    assert_eq!(s, 200);
    assert_covers("list-bookings.json", &list, &[]);
    let (s, one) = get(&sim, &format!("/v2/bookings/{id}")).await;
    assert_eq!(s, 200);
    assert_covers("retrieve-booking.json", &one, &[]);
    assert_covers("retrieve-booking-all-fields.json", &one, &[]);
    // No field the reference's Booking lacks (address: only CUSTOMER_LOCATION bookings).
    let mut reference = BTreeSet::new();
    keys(
        &fixture("retrieve-booking-all-fields.json"),
        "",
        &mut reference,
    );
    reference.insert("booking.address".to_owned());
    let mut ours = BTreeSet::new();
    keys(&one, "", &mut ours);
    let invented: Vec<_> = ours.difference(&reference).collect();
    assert!(
        invented.is_empty(),
        "fields Square's Booking has not: {invented:?}"
    );

    // Ids shaped like the examples'.
    let ex = fixture("booking-created.json");
    let eb = &ex["data"]["object"]["booking"];
    let ob = &created["data"]["object"]["booking"];
    same_shape("booking id", &eb["id"], &ob["id"]);
    same_shape("location id", &eb["location_id"], &ob["location_id"]);
    same_shape("customer id", &eb["customer_id"], &ob["customer_id"]);
    same_shape(
        "service variation id",
        &eb["appointment_segments"][0]["service_variation_id"],
        &ob["appointment_segments"][0]["service_variation_id"],
    );
    same_shape("merchant id", &ex["merchant_id"], &created["merchant_id"]);
    same_shape("event id", &ex["event_id"], &created["event_id"]);
    let ts_ex = fixture("list-bookings.json")["bookings"][0]["created_at"].clone();
    same_shape("timestamp", &ts_ex, &list["bookings"][0]["created_at"]);
    same_shape(
        "team member id",
        &json!("TMXUrsBWWcHTt79t"),
        &ob["appointment_segments"][0]["team_member_id"],
    );

    // Customer groups: Square's own CreateCustomerGroup request example is accepted.
    let (s, _, group) = call(
        &sim,
        Method::POST,
        "/v2/customers/groups",
        Some(fixture("create-customer-group-request.json")),
    )
    .await;
    assert_eq!(s, 200, "{group}");
    assert_covers("create-customer-group.json", &group, &[]);
    same_shape(
        "group id",
        &fixture("create-customer-group.json")["group"]["id"],
        &group["group"]["id"],
    );
    let (_, groups) = get(&sim, "/v2/customers/groups").await;
    assert_covers("list-customer-groups.json", &groups, &[]);
    same_shape(
        "group created_at",
        &fixture("list-customer-groups.json")["groups"][0]["created_at"],
        &groups["groups"][0]["created_at"],
    );

    // Memberships and the customer.
    let gid = group["group"]["id"].as_str().unwrap();
    let path = format!("/v2/customers/{}/groups/{gid}", who.customer);
    let (_, _, added) = call(&sim, Method::PUT, &path, None).await;
    assert_eq!(added, fixture("add-group-to-customer.json"));
    let (_, customer) = get(&sim, &format!("/v2/customers/{}", who.customer)).await;
    // The simulator's customers have no address, reference id or segments: the relay reads
    // none of them (it reads `id` and `group_ids`).
    assert_covers(
        "retrieve-customer.json",
        &customer,
        &[
            "customer.address",
            "customer.reference_id",
            "customer.segment_ids",
        ],
    );
    let (_, _, removed) = call(&sim, Method::DELETE, &path, None).await;
    assert_eq!(removed, fixture("remove-group-from-customer.json"));

    // Errors.
    sim.rate_limit_next(1, Some(1));
    let (s, limited) = get(&sim, "/v2/customers/groups").await;
    assert_eq!(s, 429);
    assert_covers("error-429.json", &limited, &[]);
    let e429 = &fixture("error-429.json")["errors"][0];
    assert_eq!(limited["errors"][0]["category"], e429["category"]);
    assert_eq!(limited["errors"][0]["code"], e429["code"]);
    let unauthorized: Value = reqwest::Client::new()
        .get(format!("{}/v2/bookings", sim.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unauthorized, fixture("error-401.json"));
    sim.stop().await;
}
