//! `pil conformance` against the local PMS simulator (which verifies triggers and
//! de-duplicates by `webhook-id`, as the contract asks) and against two broken endpoints: one
//! that takes everything, one that answers too slowly.

use std::process::Command;

use tests::TestStack;

async fn conformance(env: Vec<(String, String)>, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_pil"))
            .arg("conformance")
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// An endpoint that answers every POST with `status` after `delay`.
async fn endpoint(status: u16, delay: std::time::Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        axum::http::StatusCode::from_u16(status).unwrap()
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/triggers", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_conforms_and_broken_endpoints_are_named() {
    let ts = TestStack::start().await.unwrap();
    let secret_file =
        std::env::temp_dir().join(format!("pil-conformance-{}.secret", std::process::id()));
    std::fs::write(&secret_file, ts.trigger_secret.expose()).unwrap();
    let env = vec![("PIL_ALLOW_LOOPBACK_HTTP".to_owned(), "1".to_owned())];
    let args = |url: &str, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "--url".to_owned(),
            url.to_owned(),
            "--practice-id".to_owned(),
            ts.practice.as_str().to_owned(),
            "--secret-file".to_owned(),
            secret_file.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };

    // The simulator: every check passes.
    let sim = format!("{}/triggers", ts.stack.pms.url);
    let (ok, card, err) = conformance(env.clone(), args(&sim, &[])).await;
    assert!(ok, "{card}{err}");
    assert!(card.contains("meets the trigger contract"), "{card}");
    assert_eq!(card.matches('✓').count(), 7, "{card}");
    let (ok, json, _) = conformance(env.clone(), args(&sim, &["--json"])).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["passed"], true);
    // Its triggers reached the simulator, and no real patient's ref was named.
    let received = ts.stack.pms.received();
    assert!(received.len() >= 6, "{}", received.len());
    assert!(received.iter().all(|r| {
        r.body["patient_ref"]
            .as_str()
            .is_some_and(|p| p.starts_with("p_conformance_"))
    }));

    // Takes everything: the refusals it owes are named.
    let lax = endpoint(200, std::time::Duration::ZERO).await;
    let (ok, json, _) = conformance(env.clone(), args(&lax, &["--json"])).await;
    assert!(!ok, "exit code 1 when a check fails");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        vec![
            "bad_signature_refused",
            "missing_signature_refused",
            "stale_timestamp_refused"
        ]
    );

    // Too slow for the layer: every answer is a timeout.
    let slow = endpoint(200, std::time::Duration::from_secs(3)).await;
    let (ok, card, _) = conformance(env.clone(), args(&slow, &["--timeout-seconds", "1"])).await;
    assert!(!ok);
    assert!(
        card.contains("✗ answers_within_timeout") && card.contains("no answer: timeout"),
        "{card}"
    );

    // Refused on the URL's rules, naming the rule (plain http off loopback mode).
    let (ok, _, err) = conformance(Vec::new(), args(&sim, &[])).await;
    assert!(!ok && err.contains("--url"), "{err}");
    let _ = std::fs::remove_file(&secret_file);
    ts.stop().await;
}

/// The Square relay as a PMS's trigger endpoint: with a test customer's ref it meets the
/// contract (and the customer joins the group for the triggers' ten minutes); with a ref it
/// never sent, the card names the one thing it does differently (404 for an unknown patient).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_square_relay_conforms() {
    let ts = TestStack::start().await.unwrap();
    let sq = tests::square_setup(&ts.stack, "square-conformance")
        .await
        .unwrap();
    let now = jiff::Timestamp::now();
    let test_customer = sq.customer("Test", "Testperson");
    let (_, st) = sq
        .square
        .create_booking(
            sq.booking(
                &test_customer,
                now + jiff::SignedDuration::from_hours(24 * 30),
                &sq.botox,
                "ACCEPTED",
            ),
            now,
        )
        .await;
    assert_eq!(st, Some(200));
    let patient = sq.relay.http.refs.patient(&test_customer);
    let secret_file = std::env::temp_dir().join(format!(
        "pil-conformance-relay-{}.secret",
        std::process::id()
    ));
    std::fs::write(&secret_file, sq.practice.trigger_secret.expose()).unwrap();
    let env = vec![("PIL_ALLOW_LOOPBACK_HTTP".to_owned(), "1".to_owned())];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "--url".to_owned(),
            sq.relay.trigger_url(),
            "--practice-id".to_owned(),
            sq.practice.practice.as_str().to_owned(),
            "--secret-file".to_owned(),
            secret_file.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let (ok, card, err) =
        conformance(env.clone(), args(&["--patient-ref", patient.as_str()])).await;
    assert!(ok, "{card}{err}");
    assert_eq!(card.matches('✓').count(), 7, "{card}");
    assert_eq!(
        sq.square.group_names_of(&test_customer),
        ["Rebook due: neurotoxin"]
    );
    // Without a ref it knows, the valid triggers name no customer: the card says so.
    let (ok, json, _) = conformance(env, args(&["--json"])).await;
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        vec![
            "valid_signature_accepted",
            "repeated_webhook_id_is_one_delivery",
            "either_signature_during_rotation"
        ]
    );
    assert!(json.contains("404"), "{json}");
    let _ = std::fs::remove_file(&secret_file);
    sq.stop().await;
    ts.stop().await;
}
