//! The inbound hot path: Standard Webhooks verify + closed-schema parse + PHI guard.
//! Goal (issue 3): ≤ 10 µs for a 1 KB body on one core.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pil_shared::inbound::parse_body;
use pil_shared::signature::{SignedHeaders, WebhookSecret, verify};
use serde_json::json;
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
    c.bench_function("guard_only/1KB_body_parse", |bench| {
        bench.iter(|| black_box(parse_body(one.as_bytes(), now_ts).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
