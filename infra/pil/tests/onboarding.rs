//! docs/onboarding.md, followed against the local stack: the practice is created with the
//! CLI, and the doc's own shell snippets (read from the file, run with bash) send a signed
//! event (202; 401 with a wrong secret; 202 while disabled; 202 with the old and the new
//! secret after a rotation) and verify triggers signed with one or two secrets.

use std::path::PathBuf;
use std::process::Command;

mod common;

use pil_local::stack::{Stack, StackOptions, workspace_root};
use pil_shared::signature::{self, WebhookSecret};

/// `pil ARGS`, which must succeed; its JSON output.
async fn run(env: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = common::run(env, args).await;
    assert!(ok, "{err}");
    out
}

/// The ```sh block after `<!-- snippet: NAME` in docs/onboarding.md.
fn snippet(name: &str) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/onboarding.md")).unwrap();
    let marker = format!("<!-- snippet: {name}");
    let after = &doc[doc.find(&marker).expect("snippet marker")..];
    let start = after.find("```sh\n").expect("sh block") + "```sh\n".len();
    let len = after[start..].find("\n```").expect("block end");
    after[start..start + len].to_owned()
}

/// Runs a snippet with bash and only the given variables (plus PATH); exit status and output.
async fn bash(script: String, vars: Vec<(&'static str, String)>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

async fn send_event(stack: &Stack, practice: &str, secret: &str) -> String {
    let (ok, out) = bash(
        snippet("send-event"),
        vec![
            ("PIL_API_URL", stack.api_url.clone()),
            ("PRACTICE_ID", practice.to_owned()),
            ("WEBHOOK_SECRET", secret.to_owned()),
        ],
    )
    .await;
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_onboarding_doc_snippets_work_against_the_stack() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let env = stack.env.clone();
    let trigger = stack.pms.trigger_url();
    let created = run(
        &env,
        &[
            "practice",
            "create",
            "--practice-id",
            "my-clinic",
            "--time-zone",
            "America/Chicago",
            "--owner-email",
            "owner@my-clinic.example",
            "--trigger-url",
            &trigger,
        ],
    )
    .await;
    let webhook = created["webhook_secret"].as_str().unwrap().to_owned();
    let trigger_secret = created["trigger_secret"].as_str().unwrap().to_owned();

    // The integrator's first event.
    let out = send_event(&stack, "my-clinic", &webhook).await;
    assert!(out.contains("HTTP 202"), "{out}");
    assert!(out.contains(r#""accepted":1"#), "{out}");
    // Signed with the wrong secret: 401, the rule named.
    let out = send_event(&stack, "my-clinic", &trigger_secret).await;
    assert!(
        out.contains("HTTP 401") && out.contains("signature_mismatch"),
        "{out}"
    );
    // Unknown practice: 404.
    let out = send_event(&stack, "not-onboarded", &webhook).await;
    assert!(out.contains("HTTP 404"), "{out}");

    // Disabled: inbound events are still accepted (as the doc says).
    run(&env, &["practice", "disable", "--practice-id", "my-clinic"]).await;
    let out = send_event(&stack, "my-clinic", &webhook).await;
    assert!(out.contains("HTTP 202"), "{out}");
    run(&env, &["practice", "enable", "--practice-id", "my-clinic"]).await;

    // Rotation: old and new both accepted during the overlap.
    let rotated = run(
        &env,
        &[
            "secret",
            "rotate",
            "--practice-id",
            "my-clinic",
            "--which",
            "webhook",
        ],
    )
    .await;
    assert_eq!(rotated["overlap_hours"], 72);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    for s in [&webhook, &new] {
        let out = send_event(&stack, "my-clinic", s).await;
        assert!(out.contains("HTTP 202"), "{out}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_trigger_verification_snippet_accepts_either_signature_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("pil-onboarding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file: PathBuf = dir.join("trigger.json");
    let body = br#"{"type":"action.rebook_nudge","trigger_id":"trg_q4xw2m7kac3b5nep6r2t4v7yhz","practice_id":"my-clinic","patient_ref":"p_7Hq2kX9mZ4rT1vB8yW3n","treatment":"neurotoxin","reason":"cycle_due","due_since":"2026-11-01","template":"rebook_default","slot":null,"expires_at":"2026-11-29T06:00:00Z"}"#;
    std::fs::write(&body_file, body).unwrap();
    let (old, new, other) = (
        WebhookSecret::generate(),
        WebhookSecret::generate(),
        WebhookSecret::generate(),
    );
    let now = jiff::Timestamp::now().as_second();
    let id = "trg_q4xw2m7kac3b5nep6r2t4v7yhz";
    let check = |secret: &WebhookSecret, signers: &[&WebhookSecret], ts: i64| {
        let h = signature::signed_headers(signers, id, ts, body).unwrap();
        bash(
            snippet("verify-trigger"),
            vec![
                ("TRIGGER_SECRET", secret.expose().to_owned()),
                ("WEBHOOK_ID", h[0].1.clone()),
                ("WEBHOOK_TIMESTAMP", h[1].1.clone()),
                ("WEBHOOK_SIGNATURE", h[2].1.clone()),
                ("BODY_FILE", body_file.display().to_string()),
            ],
        )
    };
    // One signature (no rotation running).
    let (ok, out) = check(&old, &[&old], now).await;
    assert!(ok && out.contains("valid"), "{out}");
    // Two signatures during a rotation: a PMS holding either secret accepts.
    for s in [&old, &new] {
        let (ok, out) = check(s, &[&new, &old], now).await;
        assert!(ok, "{out}");
    }
    // Anything else is refused: another secret, a stale timestamp, a changed body.
    let (ok, out) = check(&other, &[&new, &old], now).await;
    assert!(!ok && out.contains("mismatch"), "{out}");
    let (ok, out) = check(&old, &[&old], now - 600).await;
    assert!(!ok && out.contains("stale"), "{out}");
    let h = signature::signed_headers(&[&old], id, now, b"{}").unwrap();
    let (ok, _) = bash(
        snippet("verify-trigger"),
        vec![
            ("TRIGGER_SECRET", old.expose().to_owned()),
            ("WEBHOOK_ID", h[0].1.clone()),
            ("WEBHOOK_TIMESTAMP", h[1].1.clone()),
            ("WEBHOOK_SIGNATURE", h[2].1.clone()),
            ("BODY_FILE", body_file.display().to_string()),
        ],
    )
    .await;
    assert!(!ok, "a body other than the signed one is refused");
    let _ = std::fs::remove_dir_all(&dir);
}
