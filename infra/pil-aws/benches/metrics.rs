//! What a metric line costs a handler: building one embedded-metric-format line and writing it
//! (to /dev/null here; stdout in Lambda, where CloudWatch Logs takes it). The receiver writes
//! one line per accepted delivery, two per refused signed one.

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use pil_aws::Config;
use pil_aws::metrics::{Metrics, Unit};
use shared::ids::PracticeId;

fn bench(c: &mut Criterion) {
    let config = Config::from_map(HashMap::from([
        ("METRICS_FILE".to_owned(), "/dev/null".to_owned()),
        ("METRICS_NAMESPACE".to_owned(), "pil-bench".to_owned()),
    ]));
    let m = Metrics::new(&config, "webhook-receiver");
    let practice = PracticeId::parse("glow-clinic").unwrap();
    c.bench_function("metrics/accepted_line", |b| {
        b.iter(|| {
            m.emit(
                None,
                &[],
                &[
                    ("WebhooksAccepted", 1.0, Unit::Count),
                    ("Events", 100.0, Unit::Count),
                    ("RecordsChanged", 37.0, Unit::Count),
                ],
            );
        });
    });
    c.bench_function("metrics/refused_lines", |b| {
        b.iter(|| {
            m.emit(
                None,
                &[
                    ("Status", "422"),
                    ("Code", "phi_detected"),
                    ("Rule", "email"),
                ],
                &[("WebhooksRefused", 1.0, Unit::Count)],
            );
            m.emit(
                Some(&practice),
                &[],
                &[("PracticeRefusals", 1.0, Unit::Count)],
            );
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
