//! The inbound hot path: Standard Webhooks verify + closed-schema parse + PHI guard.
//! Goal: ≤ 10 µs for a 1 KB body on one core.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use shared::inbound::parse_body;
use shared::signature::{SignedHeaders, WebhookSecret, verify};
use std::hint::black_box;

fn event(i: usize) -> serde_json::Value {
    json!({"type": "appointment.booked", "occurred_at": "2026-11-20T15:04:05Z",
        "data": {"appointment_ref": format!("appt_Qm8Zr2Lx7Vt4Nw9Kc{i:04}"), "patient_ref": format!("p_7Hq2kX9mZ4rT1vB8yW{i:04}"),
                 "treatment": "neurotoxin", "provider_ref": "prov_Zx3Vb7Nm1Qw9Er5Ty2", "starts_at": "2026-12-01T15:00:00-05:00", "duration_min": 30}})
}

fn body(n: usize) -> String {
    if n == 1 {
        event(0).to_string()
    } else {
        json!({"events": (0..n).map(event).collect::<Vec<_>>()}).to_string()
    }
}

fn bench(c: &mut Criterion) {
    let secret = WebhookSecret::generate();
    let now_ts: jiff::Timestamp = "2026-11-21T00:00:00Z"
        .parse()
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let now = now_ts.as_second();
    let mut g = c.benchmark_group("verify_parse_guard");
    // 1 event (~330 B), 3 events (~1 KB), 100 events (~33 KB).
    for n in [1usize, 3, 100] {
        let b = body(n);
        let sig = secret
            .sign("msg_bench", now, b.as_bytes())
            .unwrap_or_default();
        let ts = now.to_string();
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("events", format!("{n} ({} B)", b.len())),
            &b,
            |bench, b| {
                bench.iter(|| {
                    let h = SignedHeaders {
                        id: Some("msg_bench"),
                        timestamp: Some(&ts),
                        signature: Some(&sig),
                    };
                    let v = verify(h, b.as_bytes(), std::slice::from_ref(&secret), now);
                    let parsed = parse_body(b.as_bytes(), now_ts);
                    black_box((v.is_ok(), parsed.map(|p| p.len())))
                });
            },
        );
    }
    g.finish();
    let one = body(3);
    let sig = secret
        .sign("msg_bench", now, one.as_bytes())
        .unwrap_or_default();
    let ts = now.to_string();
    c.bench_function("verify_only/1KB_body", |bench| {
        bench.iter(|| {
            let h = SignedHeaders {
                id: Some("msg_bench"),
                timestamp: Some(&ts),
                signature: Some(&sig),
            };
            black_box(verify(h, one.as_bytes(), std::slice::from_ref(&secret), now).is_ok())
        })
    });
    // The guard on one ref of each common shape (what each ref field of an event costs).
    let mut g = c.benchmark_group("check_ref");
    for (name, r) in [
        ("uuid", "3f6c2a9e-8b1d-4e57-a0c4-9d2b7e1f5a38"),
        ("recipe_hex", "p_3f6c2a9e8b1d4e57a0c49d2b7e1f5a38"),
        ("prefixed_base62", "p_7Hq2kX9mZ4rT1vB8yW3n"),
        ("nanoid", "V1StGXR8_Z5jdHi6B-myT"),
        ("square", "JDKYHBWT1D4F8MFH63DBMEN8Y4"),
        // The three refs of each event of the 1 KB body.
        ("body_appointment", "appt_Qm8Zr2Lx7Vt4Nw9Kc0001"),
        ("body_patient", "p_7Hq2kX9mZ4rT1vB8yW0001"),
        ("body_provider", "prov_Zx3Vb7Nm1Qw9Er5Ty2"),
    ] {
        g.bench_function(name, |bench| {
            bench.iter(|| black_box(shared::guard::check_ref(black_box(r)).is_ok()))
        });
    }
    g.finish();
    c.bench_function("guard_only/1KB_body_parse", |bench| {
        bench.iter(|| black_box(parse_body(one.as_bytes(), now_ts).is_ok()))
    });
}

/// The whole receiver in-process (verify, parse, guard, secrets, the merges, the bus), its
/// storage and bus ports faked in memory (`shared::testing`): what the handler costs apart
/// from DynamoDB's and EventBridge's latency. Every iteration delivers new events (fresh refs),
/// so each is a first delivery that writes.
fn bench_handler(c: &mut Criterion) {
    use shared::service::admin::{NewPractice, create_practice};
    use shared::service::receiver::{Delivery, receive};
    use shared::testing::World;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now: jiff::Timestamp = "2026-11-21T00:00:00Z".parse().expect("now");
    let world = World::new(now);
    let made = rt
        .block_on(create_practice(
            &world.store,
            world.keys(),
            NewPractice {
                id: shared::ids::PracticeId::parse("bench-clinic").expect("id"),
                time_zone: "America/New_York".into(),
                owner_emails: vec!["owner@bench-clinic.example".into()],
                trigger_url: "https://pms.example/triggers".parse().expect("url"),
            },
        ))
        .expect("onboarded");
    let secret = WebhookSecret::parse(&made.webhook_secret).expect("secret");
    let ts = now.as_second().to_string();
    let mut n = 0usize;
    let mut fresh = |events: usize| {
        let evs: Vec<serde_json::Value> = (0..events)
            .map(|_| {
                n += 1;
                json!({"type": "appointment.completed", "occurred_at": "2026-11-20T15:04:05Z",
                    "data": {"appointment_ref": format!("appt_Qm8Zr2Lx7Vt{n:08}"),
                             "patient_ref": format!("p_7Hq2kX9mZ4rT{n:08}"), "treatment": "neurotoxin"}})
            })
            .collect();
        let body = json!({ "events": evs }).to_string();
        let sig = secret
            .sign("msg_bench", now.as_second(), body.as_bytes())
            .unwrap_or_default();
        (body, sig)
    };
    let mut g = c.benchmark_group("receiver_handler");
    // Four completions make a ~0.9 KB body.
    for (id, events) in [("single_1KB", 4usize), ("batch_100", 100)] {
        g.bench_function(id, |b| {
            b.iter_batched(
                || fresh(events),
                |(body, sig)| {
                    let d = Delivery {
                        practice_id: Some("bench-clinic"),
                        content_type: Some("application/json"),
                        headers: SignedHeaders {
                            id: Some("msg_bench"),
                            timestamp: Some(&ts),
                            signature: Some(&sig),
                        },
                        body: body.as_bytes(),
                    };
                    let r = rt.block_on(receive(&world.receiver(), d));
                    black_box(r.is_ok())
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_handler);
criterion_main!(benches);
