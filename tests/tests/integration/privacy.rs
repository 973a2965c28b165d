//! Black box: post every PHI example over real HTTP, run the night, then look everywhere a value
//! could have gone (every table item, every message and e-mail the handlers sent, every log
//! line) and find none. What the handlers sent is recorded by the fault proxy (no faults
//! injected) as it reached the emulator, so messages already handled and deleted are searched
//! too; the recording must hold the night's queue messages and e-mail for the search to count.

use serde_json::Value;
use tests::{Captured, TestStack, WAIT, completed, eventually, new_ref};

/// The string values of a body a sender chose: all but those under `type` (the schema's
/// event names) and the envelope's timestamps, which legitimately occur elsewhere.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "occurred_at" | "starts_at"))
            .flat_map(|(_, v)| strings(v))
            .collect(),
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_phi_appears_in_no_table_queue_email_or_log_line() {
    let logs = Captured::global();

    let ts = TestStack::start_recorded().await.unwrap();
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/vectors/phi-examples.json");
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(dir).expect("test vectors present")).unwrap();
    let mut values = Vec::new();
    for (i, case) in vectors["reject"].as_array().unwrap().iter().enumerate() {
        let r = ts.send(&format!("msg_phi_{i}"), &case["body"]).await;
        assert_eq!(r.status, 422, "{}", case["body"]);
        assert_eq!(r.body["error"]["field"], case["field"]);
        for s in strings(&case["body"]) {
            // PHI-shaped and free-text values; the vocabulary (treatments) and refs the guard
            // accepts legitimately occur elsewhere.
            let own_word = shared::treatment::Treatment::parse(&s).is_some()
                || shared::ids::OpaqueRef::parse(&s).is_ok();
            if !own_word {
                values.push(s);
            }
        }
    }
    assert!(values.len() >= 12, "collected the PHI values: {values:?}");

    // A real night on top, so e-mails, queues and triggers exist to be searched.
    let patient = new_ref("p");
    assert_eq!(
        ts.send("msg_ok", &completed(&patient, "neurotoxin", 100))
            .await
            .status,
        202
    );
    ts.scan_via_queue(ts.today()).await;
    eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("owner e-mail");
    ts.settled().await;

    let table = tests::table_dump(&ts.stack).await.unwrap();
    let sent = ts.sent_text();
    let emails: String = ts
        .emails()
        .await
        .iter()
        .map(|e| format!("{} {}", e.subject, e.body))
        .collect();
    assert!(!emails.is_empty(), "the owner's e-mail was read");
    let log_text = logs.text();
    assert!(log_text.contains("webhook refused"), "logs were captured");
    assert!(
        !emails.contains(&patient),
        "e-mails show short codes, never refs"
    );
    assert!(
        !sent.contains(&patient),
        "messages carry ids, e-mails short codes, never refs"
    );
    for v in &values {
        assert!(!table.contains(v.as_str()), "table holds a refused value");
        assert!(
            !sent.contains(v.as_str()),
            "a queue message, event or e-mail sent holds a refused value"
        );
        assert!(
            !emails.contains(v.as_str()),
            "an e-mail holds a refused value"
        );
        assert!(
            !log_text.contains(v.as_str()),
            "a log line holds a refused value"
        );
    }
    ts.stop().await;
}
