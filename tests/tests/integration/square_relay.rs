//! The Square relay end to end on the local stack: Square's signed webhooks and history in,
//! through the relay (its template deployed into the emulator, its secrets opened with KMS),
//! into the layer; the layer's triggers out, into Square customer groups.

use jiff::{SignedDuration, Timestamp};
use shared::ids::OpaqueRef;
use shared::ports::EntityRepo;
use shared::signature::WebhookSecret;
use shared::state::{AppointmentStatus, Entity, EntityKey};
use shared::treatment::Treatment;
use square_relay::jobs::{BackfillSpan, JobReport};
use square_relay::square::signature::SignatureKey;
use square_sim::BookingChange;
use tests::{SquareSetup, TestStack, eventually, table_dump};

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

async fn appointment_status(
    ts: &TestStack,
    sq: &SquareSetup,
    booking_id: &str,
) -> Option<AppointmentStatus> {
    let appt = OpaqueRef::parse(sq.relay.http.refs.appointment(booking_id).as_str()).ok()?;
    match ts
        .store()
        .get_entity(&sq.practice.practice, &EntityKey::Appointment(appt))
        .await
        .ok()??
        .value
    {
        Entity::Appointment(a) => a.status.map(|s| s.value),
        _ => None,
    }
}

async fn last_completion(
    ts: &TestStack,
    sq: &SquareSetup,
    customer: &str,
    t: Treatment,
) -> Option<jiff::civil::Date> {
    let p = OpaqueRef::parse(sq.relay.http.refs.patient(customer).as_str()).ok()?;
    match ts
        .store()
        .get_entity(&sq.practice.practice, &EntityKey::PatientTreatment(p, t))
        .await
        .ok()??
        .value
    {
        Entity::PatientTreatment(pt) => pt.last.map(|l| l.value.on),
        _ => None,
    }
}

fn id(b: &serde_json::Value) -> String {
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_square_status_reaches_the_layer_as_its_event() {
    let ts = TestStack::start().await.unwrap();
    let sq = tests::square_setup(&ts.stack, "square-statuses")
        .await
        .unwrap();
    let now = Timestamp::now();
    let ana = sq.customer("Ana", "Testperson");

    // ACCEPTED ahead → booked; moved in Square → still booked (the later start wins).
    let b = sq.book(&ana, now + days(5), &sq.botox).await.unwrap();
    assert_eq!(
        appointment_status(&ts, &sq, &id(&b)).await,
        Some(AppointmentStatus::Booked)
    );
    let (_, st) = sq
        .square
        .update_booking(
            &id(&b),
            BookingChange {
                start_at: Some(now + days(6)),
                ..Default::default()
            },
            now + SignedDuration::from_secs(5),
        )
        .await;
    assert_eq!(st, Some(200));

    // PENDING → booked; DECLINED → cancelled.
    let (p, st) = sq
        .square
        .create_booking(sq.booking(&ana, now + days(8), &sq.filler, "PENDING"), now)
        .await;
    assert_eq!(st, Some(200));
    assert_eq!(
        appointment_status(&ts, &sq, &id(&p)).await,
        Some(AppointmentStatus::Booked)
    );
    for (status, booking) in [("DECLINED", &p), ("CANCELLED_BY_SELLER", &b)] {
        let (_, st) = sq
            .square
            .update_booking(
                &id(booking),
                BookingChange {
                    status: Some(status.into()),
                    ..Default::default()
                },
                now + SignedDuration::from_secs(10),
            )
            .await;
        assert_eq!(st, Some(200), "{status}");
        assert_eq!(
            appointment_status(&ts, &sq, &id(booking)).await,
            Some(AppointmentStatus::Cancelled),
            "{status}"
        );
    }

    // NO_SHOW, reported the day after a visit.
    let ben = sq.customer("Ben", "Testperson");
    let (n, _) = sq
        .square
        .create_booking(
            sq.booking(&ben, now - days(1), &sq.botox, "ACCEPTED"),
            now - days(10),
        )
        .await;
    let (_, st) = sq
        .square
        .update_booking(
            &id(&n),
            BookingChange {
                status: Some("NO_SHOW".into()),
                ..Default::default()
            },
            now,
        )
        .await;
    assert_eq!(st, Some(200));
    assert_eq!(
        appointment_status(&ts, &sq, &id(&n)).await,
        Some(AppointmentStatus::NoShow)
    );

    // A visit that took place: ACCEPTED, and its end passes the completion mark. The sweep
    // (the jobs function) sends it once the mark is behind it, and not before.
    let cleo = sq.customer("Cleo", "Testperson");
    let visit_start = now - SignedDuration::from_hours(10);
    let (v, st) = sq
        .square
        .create_booking(
            sq.booking(&cleo, visit_start, &sq.botox, "ACCEPTED"),
            now - days(3),
        )
        .await;
    assert_eq!(st, Some(200));
    assert_eq!(
        appointment_status(&ts, &sq, &id(&v)).await,
        Some(AppointmentStatus::Booked)
    );
    // The first jobs run sets the watermark (and backfills nothing: a span of zero days).
    let none = BackfillSpan {
        days_back: 0,
        days_ahead: 0,
    };
    sq.relay.run_jobs(none, now).await.unwrap();
    let jobs = sq.relay.jobs.clone();
    let sweep = |at: Timestamp| {
        let jobs = jobs.clone();
        async move {
            let mut report = JobReport::default();
            square_relay::jobs::sweep_completions(&jobs, at, &mut report)
                .await
                .unwrap();
            report.completions_sent
        }
    };
    // Its end (now − 9.5 h) is not 24 h behind yet.
    assert_eq!(sweep(now + SignedDuration::from_hours(10)).await, 0);
    assert_eq!(
        last_completion(&ts, &sq, &cleo, Treatment::Neurotoxin).await,
        None
    );
    assert_eq!(sweep(now + SignedDuration::from_hours(16)).await, 1);
    assert!(
        last_completion(&ts, &sq, &cleo, Treatment::Neurotoxin)
            .await
            .is_some()
    );
    // Again: the watermark moved, nothing is sent twice.
    assert_eq!(sweep(now + SignedDuration::from_hours(17)).await, 0);

    // An unmapped service is skipped: acknowledged to Square, nothing in the layer.
    let c = sq.book(&cleo, now + days(3), &sq.consult).await.unwrap();
    assert_eq!(appointment_status(&ts, &sq, &id(&c)).await, None);

    // A notification whose signature does not match (another key, or another URL) is refused.
    let body = br#"{"merchant_id":"M","type":"booking.created","event_id":"e1","data":{}}"#;
    let http = reqwest::Client::new();
    for (key, url) in [
        ("another-key", sq.relay.notification_url()),
        (
            tests::SQUARE_SIGNATURE_KEY,
            format!("{}/", sq.relay.notification_url()),
        ),
    ] {
        let sig = SignatureKey::new(key).unwrap().sign(&url, body);
        let r = http
            .post(sq.relay.notification_url())
            .header(square_relay::square::signature::HEADER, sig)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }

    // A customer deleted in Square: the layer erases the patient, the relay forgets the ref.
    let ana_ref = sq.relay.http.refs.patient(&ana);
    assert!(
        sq.relay
            .http
            .store
            .customer_of(ana_ref.as_str())
            .await
            .unwrap()
            .is_some()
    );
    let body = serde_json::json!({
        "merchant_id": sq.square.merchant_id(), "type": "customer.deleted",
        "event_id": "6a8f5f28-54a1-4eb0-a98a-3111513fd4fc", "created_at": now.to_string(),
        "data": {"type": "customer", "id": ana, "deleted": true, "object": {"customer": {"id": ana}}}
    })
    .to_string();
    let sig = SignatureKey::new(tests::SQUARE_SIGNATURE_KEY)
        .unwrap()
        .sign(&sq.relay.notification_url(), body.as_bytes());
    let r = http
        .post(sq.relay.notification_url())
        .header(square_relay::square::signature::HEADER, sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        sq.relay
            .http
            .store
            .customer_of(ana_ref.as_str())
            .await
            .unwrap()
            .is_none()
    );
    let erased = eventually(tests::WAIT, || async {
        (appointment_status(&ts, &sq, &id(&b)).await.is_none()).then_some(())
    })
    .await;
    assert!(erased.is_some(), "the layer erased Ana's appointments");

    // Nothing of Square's profiles, notes or ids is in the layer.
    let dump = table_dump(&ts.stack).await.unwrap();
    for s in [
        "Testperson",
        "lidocaine",
        "1984-03-02",
        "555-0100",
        "@example.com",
        ana.as_str(),
        ben.as_str(),
        cleo.as_str(),
        &id(&b),
        &sq.botox,
        &sq.provider,
    ] {
        assert!(!dump.contains(s), "{s} reached the layer");
    }
    sq.stop().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_pages_through_history_survives_rate_limits_and_resumes() {
    let ts = TestStack::start().await.unwrap();
    let sq = tests::square_setup(&ts.stack, "square-backfill")
        .await
        .unwrap();
    sq.square.unsubscribe();
    let now = Timestamp::now();
    // 230 past visits in one 31-day window (three pages of 100), 40 the month before.
    let customers: Vec<String> = (0..60)
        .map(|i| sq.customer(&format!("C{i}"), "Testperson"))
        .collect();
    for i in 0..270i64 {
        let start = if i < 230 {
            now - days(2) - SignedDuration::from_mins(i * 90)
        } else {
            now - days(40) - SignedDuration::from_mins(i * 30)
        };
        let c = &customers[(i as usize) % customers.len()];
        sq.square
            .create_booking(sq.booking(c, start, &sq.botox, "ACCEPTED"), start - days(7))
            .await;
    }
    let span = BackfillSpan {
        days_back: 60,
        days_ahead: 0,
    };
    // Square rate-limits longer than the relay's retries: the run stops, its progress saved.
    sq.square.rate_limit_next(2, Some(1));
    let first = sq.relay.run_jobs(span, now).await.unwrap();
    assert!(first.backfill_done);
    let limited = sq
        .square
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(limited, 2, "both 429s were answered and retried");
    assert_eq!(first.backfill_bookings, 270);
    let pages = sq
        .square
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/bookings" && r.status == 200)
        .count();
    assert_eq!(
        pages, 4,
        "one page for the older window, three of 100 for the newer"
    );
    // Every visit reached the layer as booked + completed (270 bookings, 60 customers).
    for c in &customers {
        assert!(
            last_completion(&ts, &sq, c, Treatment::Neurotoxin)
                .await
                .is_some(),
            "a customer's completion is missing"
        );
    }

    // A backfill that stops mid-way (the run's deadline, then Square answering 429 past the
    // relay's retries) keeps its cursor and the next run continues from that page: no page is
    // read twice, none skipped.
    let saved = sq.relay.jobs.store.backfill().await.unwrap().unwrap();
    let mut restart = saved.clone();
    restart.done = false;
    restart.window_start = saved.since;
    restart.cursor = None;
    restart.pages = 0;
    restart.bookings = 0;
    sq.relay.jobs.store.put_backfill(&restart).await.unwrap();
    let first_request = sq.square.requests().len();
    // A clock that passes the deadline after the first page.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let clock = || {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < 2 { now } else { now + days(1) }
    };
    let mut report = JobReport::default();
    square_relay::jobs::backfill(
        &sq.relay.jobs,
        span,
        &clock,
        now + SignedDuration::from_hours(1),
        &mut report,
    )
    .await
    .unwrap();
    assert_eq!(report.backfill_pages, 1);
    let after_one = sq.relay.jobs.store.backfill().await.unwrap().unwrap();
    assert!(!after_one.done);
    sq.square.rate_limit_next(100, Some(0));
    let err = sq.relay.run_jobs(span, now).await.unwrap_err();
    assert!(err.to_string().contains("square unavailable"), "{err}");
    let stuck = sq.relay.jobs.store.backfill().await.unwrap().unwrap();
    assert_eq!(stuck, after_one, "a failed page changes nothing saved");
    sq.square.rate_limit_next(0, None);
    let done = sq.relay.run_jobs(span, now).await.unwrap();
    assert!(done.backfill_done);
    let finished = sq.relay.jobs.store.backfill().await.unwrap().unwrap();
    assert_eq!(
        finished.bookings, 270,
        "every booking read once over the three runs"
    );
    let ok_pages: Vec<String> = sq.square.requests()[first_request..]
        .iter()
        .filter(|r| r.path == "/v2/bookings" && r.status == 200)
        .map(|r| r.query.clone())
        .collect();
    let distinct: std::collections::HashSet<&String> = ok_pages.iter().collect();
    assert_eq!(
        distinct.len(),
        ok_pages.len(),
        "no page read twice: {ok_pages:?}"
    );
    sq.stop().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_put_customers_into_groups_once_until_they_expire() {
    let ts = TestStack::start().await.unwrap();
    let sq = tests::square_setup(&ts.stack, "square-triggers")
        .await
        .unwrap();
    let now = Timestamp::now();
    let ana = sq.customer("Ana", "Testperson");
    // The relay learns Ana's ref from her booking.
    sq.book(&ana, now + days(30), &sq.botox).await.unwrap();
    let ana_ref = sq.relay.http.refs.patient(&ana);
    let secret = &sq.practice.trigger_secret;
    let http = reqwest::Client::new();
    let url = sq.relay.trigger_url();
    let send = |id: String, body: serde_json::Value, secrets: Vec<WebhookSecret>, at: i64| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = body.to_string();
            let refs: Vec<&WebhookSecret> = secrets.iter().collect();
            let headers =
                shared::signature::signed_headers(&refs, &id, at, body.as_bytes()).unwrap();
            let mut req = http.post(&url).header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = req.body(body).send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let trigger = |id: &str, kind: &str, patient: &str, expires: Timestamp| {
        serde_json::json!({
            "type": kind, "trigger_id": id, "practice_id": sq.practice.practice.as_str(),
            "patient_ref": patient, "treatment": "neurotoxin", "reason": "cycle_due",
            "due_since": "2026-11-01", "template": "rebook_default", "slot": null,
            "expires_at": expires.to_string(),
        })
    };
    let t = now.as_second();
    let expires = now + days(14);
    let puts = || {
        sq.square
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count()
    };

    let (s, body) = send(
        "trg_a1".into(),
        trigger("trg_a1", "action.rebook_nudge", ana_ref.as_str(), expires),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!((s, body["status"].as_str()), (200, Some("added")));
    assert_eq!(sq.square.group_names_of(&ana), ["Rebook due: neurotoxin"]);
    assert_eq!(puts(), 1);
    // The same webhook-id again (a retry): one effect.
    let (s, body) = send(
        "trg_a1".into(),
        trigger("trg_a1", "action.rebook_nudge", ana_ref.as_str(), expires),
        vec![secret.clone()],
        t + 30,
    )
    .await;
    assert_eq!((s, body["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(puts(), 1, "Square was not called again");
    // Another kind, signed with two secrets as during a rotation: a second group.
    let (s, _) = send(
        "trg_a2".into(),
        trigger("trg_a2", "action.win_back", ana_ref.as_str(), now + days(3)),
        vec![WebhookSecret::generate(), secret.clone()],
        t,
    )
    .await;
    assert_eq!(s, 200);
    let mut groups = sq.square.group_names_of(&ana);
    groups.sort();
    assert_eq!(groups, ["Rebook due: neurotoxin", "Win back: neurotoxin"]);
    assert_eq!(
        sq.square.groups().len(),
        2,
        "one group per kind and treatment"
    );

    // Refusals: a stranger's signature, a stale timestamp, an unknown ref, another practice,
    // an unknown kind. None of them reaches Square.
    let before = puts();
    let stranger = send(
        "trg_x1".into(),
        trigger("trg_x1", "action.rebook_nudge", ana_ref.as_str(), expires),
        vec![WebhookSecret::generate()],
        t,
    )
    .await;
    assert_eq!(stranger.0, 401);
    let stale = send(
        "trg_x2".into(),
        trigger("trg_x2", "action.rebook_nudge", ana_ref.as_str(), expires),
        vec![secret.clone()],
        t - 600,
    )
    .await;
    assert_eq!(stale.0, 401);
    assert_eq!(stale.1["error"]["rule"], "stale_timestamp");
    let unknown = send(
        "trg_x3".into(),
        trigger(
            "trg_x3",
            "action.rebook_nudge",
            "p_00000000000000000000000000000000",
            expires,
        ),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!(unknown.0, 404);
    let mut other = trigger("trg_x4", "action.rebook_nudge", ana_ref.as_str(), expires);
    other["practice_id"] = "another-practice".into();
    let other = send("trg_x4".into(), other, vec![secret.clone()], t).await;
    assert_eq!(
        (other.0, other.1["error"]["field"].as_str()),
        (422, Some("practice_id"))
    );
    let kind = send(
        "trg_x5".into(),
        trigger("trg_x5", "action.sell_more", ana_ref.as_str(), expires),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!(
        (kind.0, kind.1["error"]["field"].as_str()),
        (422, Some("type"))
    );
    // Expired on arrival: dropped, answered 2xx so the layer stops.
    let late = send(
        "trg_x6".into(),
        trigger(
            "trg_x6",
            "action.follow_up",
            ana_ref.as_str(),
            now - days(1),
        ),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!((late.0, late.1["status"].as_str()), (200, Some("expired")));
    assert_eq!(puts(), before);

    // Square unavailable: 503 with Retry-After, so the layer retries.
    sq.square.rate_limit_next(10, Some(60));
    let bob = sq.customer("Bob", "Testperson");
    let (_, st) = sq
        .square
        .create_booking(sq.booking(&bob, now + days(30), &sq.botox, "ACCEPTED"), now)
        .await;
    assert_eq!(st, Some(200), "webhooks do not call Square's API");
    let bob_ref = sq.relay.http.refs.patient(&bob);
    let busy = send(
        "trg_b1".into(),
        trigger("trg_b1", "action.rebook_nudge", bob_ref.as_str(), expires),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!(busy.0, 503);
    sq.square.rate_limit_next(0, None);

    // Expiry: the win-back (3 days) ends first; the rebook (14 days) later.
    let mut report = JobReport::default();
    square_relay::jobs::expire_memberships(&sq.relay.jobs, now + days(4), &mut report)
        .await
        .unwrap();
    assert_eq!(report.memberships_ended, 1);
    assert_eq!(sq.square.group_names_of(&ana), ["Rebook due: neurotoxin"]);
    // A newer rebook trigger extends the membership: the old expiry removes nothing.
    let (s, _) = send(
        "trg_a3".into(),
        trigger(
            "trg_a3",
            "action.rebook_nudge",
            ana_ref.as_str(),
            now + days(20),
        ),
        vec![secret.clone()],
        t,
    )
    .await;
    assert_eq!(s, 200);
    let mut report = JobReport::default();
    square_relay::jobs::expire_memberships(&sq.relay.jobs, now + days(15), &mut report)
        .await
        .unwrap();
    assert_eq!(report.memberships_ended, 0);
    assert_eq!(sq.square.group_names_of(&ana), ["Rebook due: neurotoxin"]);
    let mut report = JobReport::default();
    square_relay::jobs::expire_memberships(&sq.relay.jobs, now + days(21), &mut report)
        .await
        .unwrap();
    assert_eq!(report.memberships_ended, 1);
    assert!(sq.square.group_names_of(&ana).is_empty());
    // Each answer was counted by outcome (embedded-metric-format lines).
    let lines = pil_aws::metrics::read_file(&sq.relay.metrics_file).unwrap();
    let count = |outcome: &str| {
        lines
            .iter()
            .filter(|l| l["Outcome"] == outcome)
            .map(|l| l["Triggers"].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    assert_eq!(
        (count("added"), count("duplicate"), count("expired")),
        (3.0, 1.0, 1.0)
    );
    assert_eq!(count("signature_refused"), 2.0);
    let _ = table_dump;
    sq.stop().await;
    ts.stop().await;
}
