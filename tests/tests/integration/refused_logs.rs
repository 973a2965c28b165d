//! Property: no byte of a refused body's PHI reaches a log line, the response, or the table.
//! Random PHI-shaped values (e-mail, phone, SSN, name, date, MRN, URL) are put in random
//! places of otherwise valid bodies (a ref field of several event types, an unknown key of
//! the data object), after 0-3 valid events of the same batch, and posted over real HTTP to
//! the local stack, with every log line of every handler captured (debug level, JSON).

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tests::{Captured, TestStack, ago, completed, new_ref};

fn phi() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{2,8}\\.[a-z]{2,8}@[a-z]{3,8}\\.(com|org|net)",
        "\\([2-9][0-9]{2}\\) [2-9][0-9]{2}-[0-9]{4}",
        "[1-6][0-9]{2}-[0-9]{2}-[0-9]{4}",
        "(Mary|John|Ana|Luis|Grace|Omar) [A-Z][a-z]{3,9}",
        "19[5-9][0-9]-0[1-9]-[12][0-9]",
        "[1-9][0-9]{8,11}",
        "https://[a-z]{4,9}\\.(com|org)/[a-z]{3,8}",
    ]
}

/// A body with `value` in place number `place`, after `before` valid events.
fn body(value: &str, place: u8, before: usize) -> Value {
    let now = ago(0);
    let bad = match place {
        0 => {
            json!({"type": "patient.opted_out", "occurred_at": now, "data": {"patient_ref": value}})
        }
        1 => {
            json!({"type": "appointment.no_show", "occurred_at": now, "data": {"appointment_ref": value}})
        }
        2 => {
            json!({"type": "appointment.booked", "occurred_at": now, "data": {"appointment_ref": new_ref("appt"),
            "patient_ref": new_ref("p"), "treatment": "facial", "provider_ref": value,
            "starts_at": ago(-3), "duration_min": 30}})
        }
        3 => json!({"type": "slot.opened", "occurred_at": now, "data": {"slot_ref": value,
            "provider_ref": new_ref("prov"), "starts_at": ago(-3), "duration_min": 30, "treatments": ["facial"]}}),
        4 => {
            json!({"type": "patient.opted_in", "occurred_at": now, "data": {"patient_ref": new_ref("p"), value: 1}})
        }
        _ => {
            json!({"type": "patient.ref_rotated", "occurred_at": now, "data": {"old_ref": new_ref("p"), "new_ref": value}})
        }
    };
    let mut events: Vec<Value> = (0..before)
        .map(|_| completed(&new_ref("p"), "neurotoxin", 30))
        .collect();
    events.push(bad);
    json!({ "events": events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refused_value_reaches_a_log_line_the_response_or_the_table() {
    let logs = Captured::global();
    let ts = TestStack::start().await.unwrap();
    let handle = tokio::runtime::Handle::current();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(48),
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&(phi(), 0u8..6, 0usize..4), |(value, place, before)| {
            let b = body(&value, place, before);
            let r = handle.block_on(ts.send(&new_ref("msg"), &b));
            prop_assert_eq!(r.status, 422, "{} in place {}", &value, place);
            prop_assert!(
                !r.body.to_string().contains(&value),
                "the response quotes it"
            );
            sent.lock().unwrap().push(value);
            Ok(())
        })
    });
    result.unwrap();
    // Nothing was queued: every queue is empty and no function has handled a message.
    ts.settled().await;
    assert!(ts.stack.handled().is_empty(), "a refused body queued work");
    let logged = logs.text();
    assert!(
        logged.contains("webhook refused"),
        "the refusals were logged"
    );
    let table = tests::table_dump(&ts.stack).await.unwrap();
    for v in sent.lock().unwrap().iter() {
        assert!(!logged.contains(v.as_str()), "a log line carries {v:?}");
        assert!(!table.contains(v.as_str()), "the table carries {v:?}");
    }
    // Nothing of a refused batch is stored, the valid events before it included.
    assert!(!table.contains("PT#"), "a refused batch wrote state");
    ts.stop().await;
}
