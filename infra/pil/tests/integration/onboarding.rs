//! docs/onboarding.md, followed against the local stack: the practice is created with the
//! CLI, and the doc's own shell snippets (read from the file, run with bash) send a signed
//! event (202; 401 with a wrong secret; 202 while disabled; 202 with the old and the new
//! secret after a rotation) and verify triggers signed with one or two secrets. Its Python and
//! JavaScript ref recipes (run with `python3` and `node`) make the refs `pil ref derive` makes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common;

use pil_local::stack::{Stack, StackOptions, workspace_root};
use shared::signature::{self, WebhookSecret};

/// `pil ARGS`, which must succeed; its JSON output.
async fn run(env: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = common::run(env, args).await;
    assert!(ok, "{err}");
    out
}

/// The ```sh block after `<!-- snippet: NAME` in docs/onboarding.md.
fn snippet(name: &str) -> String {
    snippet_in(name, "sh")
}

/// The ```LANG block after `<!-- snippet: NAME` in docs/onboarding.md.
fn snippet_in(name: &str, lang: &str) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/onboarding.md")).unwrap();
    let marker = format!("<!-- snippet: {name}");
    let after = &doc[doc.find(&marker).expect("snippet marker")..];
    let fence = format!("```{lang}\n");
    let start = after.find(&fence).expect("code block") + fence.len();
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
    // Unknown practice: answered as a bad signature (401), so ids cannot be enumerated.
    let out = send_event(&stack, "not-onboarded", &webhook).await;
    assert!(
        out.contains("HTTP 401") && out.contains("signature_mismatch"),
        "{out}"
    );

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

/// Whether `CI` is set to a true value (not empty, `0`, `false`, `no` or `off`).
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// Whether `program` runs; when it does not, the test is skipped with a message, or fails
/// when CI is set.
fn tool_or_skip(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !ci(),
            "{program} is not installed but CI is set, so the onboarding doc's ref snippet must run"
        );
        eprintln!(
            "SKIPPED the {program} ref snippet: no {program} on PATH (with CI set this is a failure)"
        );
    }
    found
}

/// Runs `program file` with the key (and prefix) in the environment and `ids` on stdin, as
/// the doc says to; its stdout.
fn run_recipe(program: &str, file: &Path, key: &str, prefix: Option<&str>, ids: &str) -> String {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.arg(file)
        .env_clear()
        .env("PIL_REF_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // PATH, and what a version manager's shim needs to find the interpreter.
    for (k, v) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str == "PATH"
            || k_str == "HOME"
            || k_str.starts_with("PYENV")
            || k_str.starts_with("NVM")
        {
            cmd.env(k, v);
        }
    }
    if let Some(p) = prefix {
        cmd.env("REF_PREFIX", p);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ids.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The doc's Python and JavaScript recipes, saved as the doc says and run with a key and ids
/// (non-ASCII, spaces, punctuation), print exactly what `pil ref derive` prints.
#[test]
fn the_ref_recipes_in_python_and_javascript_match_pil_ref_derive() {
    let dir = std::env::temp_dir().join(format!("pil-onboarding-refs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ids = "12345\nZo\u{eb}-\u{d1}\u{fa}\u{f1}ez/7\n  AB 12  \nMRN 0048213\n\u{674e}\u{5c0f}\u{9f8d}-42\n\u{1f9b7} tooth\npat:00042\n";
    let fixed = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let fresh = shared::refkey::RefKey::generate().expose();
    // The fresh key in standard, padded base64: the recipes accept that spelling too.
    let fresh_std = {
        let mut s = fresh.replace('-', "+").replace('_', "/");
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    };
    let recipes = [
        ("python3", "pil_ref.py", snippet_in("ref-python", "python")),
        ("node", "pil-ref.js", snippet_in("ref-javascript", "js")),
    ];
    let mut ran = 0;
    for (program, file_name, code) in recipes {
        if !tool_or_skip(program) {
            continue;
        }
        let file = dir.join(file_name);
        std::fs::write(&file, code).unwrap();
        for (key, prefix) in [
            (fixed, None),
            (fixed, Some("p")),
            (fresh.as_str(), Some("appt")),
            (fresh_std.as_str(), None),
        ] {
            let mut args = vec!["ref", "derive"];
            if let Some(p) = prefix {
                args.extend(["--prefix", p]);
            }
            let (ok, expected, err) =
                common::pil_text(&[("PIL_REF_KEY", key)], &args, ids.as_bytes());
            assert!(ok, "{err}");
            assert_eq!(expected.lines().count(), ids.lines().count());
            let got = run_recipe(program, &file, key, prefix, ids);
            assert_eq!(got, expected, "{program}, prefix {prefix:?}");
        }
        ran += 1;
    }
    // The fixed vector, computed independently: the first id's ref under the fixed key.
    let (_, first, _) =
        common::pil_text(&[("PIL_REF_KEY", fixed)], &["ref", "derive", "12345"], b"");
    assert_eq!(first, "36e295174c2947fbba5ff2d280b635a4\n");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ran > 0 || !ci());
}
