//! The `pil` CLI, driven only through stack.env as outside scripts do.

use crate::common;
use common::pil;

use pil_local::stack::{Stack, StackOptions, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_set_policy_and_scan_through_the_cli() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let env = stack.env.clone();
    let trigger = stack.pms.trigger_url();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || {
            pil(
                &env,
                &[
                    "practice",
                    "create",
                    "--practice-id",
                    "cli-clinic",
                    "--time-zone",
                    "Europe/London",
                    "--owner-email",
                    "owner@cli.example",
                    "--trigger-url",
                    &trigger,
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out["practice_id"], "cli-clinic");
    assert!(
        out["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert!(
        out["trigger_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert!(!err.contains("whsec_"), "secrets never reach stderr/logs");

    let run = |args: Vec<&'static str>| {
        let env = env.clone();
        tokio::task::spawn_blocking(move || pil(&env, &args))
    };
    let (ok, out, _) = run(vec![
        "practice",
        "create",
        "--practice-id",
        "cli-clinic",
        "--time-zone",
        "Europe/London",
        "--owner-email",
        "o@x.example",
        "--trigger-url",
        "https://pms.example/t",
    ])
    .await
    .unwrap();
    assert!(!ok && out.is_null(), "a second create is refused");
    let (ok, _, err) = run(vec![
        "practice",
        "create",
        "--practice-id",
        "bad-tz",
        "--time-zone",
        "Mars/Base",
        "--owner-email",
        "o@x.example",
        "--trigger-url",
        "https://pms.example/t",
    ])
    .await
    .unwrap();
    assert!(!ok && err.contains("time_zone"), "{err}");
    let (ok, _, err) = run(vec![
        "practice",
        "create",
        "--practice-id",
        "plain-http",
        "--time-zone",
        "UTC",
        "--owner-email",
        "o@x.example",
        "--trigger-url",
        "http://pms.example/t",
    ])
    .await
    .unwrap();
    assert!(!ok && err.contains("https"), "{err}");

    // Unsafe trigger URLs are refused by create and update alike, even with the local stack's
    // switch on (it allows loopback only): the error names the rule, never the URL.
    for (url, rule) in [
        ("https://10.1.2.3/t", "private_address"),
        ("https://192.168.0.10/t", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "link_local_address",
        ),
        ("https://[::ffff:169.254.169.254]/t", "link_local_address"),
        ("https://user:pass@pms.example/t", "userinfo"),
        ("http://pms.example/t", "https_required"),
    ] {
        let (ok, out, err) = run(vec![
            "practice",
            "update",
            "--practice-id",
            "cli-clinic",
            "--trigger-url",
            url,
        ])
        .await
        .unwrap();
        assert!(!ok && out.is_null(), "{url} was accepted: {out}");
        assert!(
            err.contains(&format!("trigger_url: {rule}")),
            "{url}: {err}"
        );
        assert!(
            !err.contains(url) && !err.contains("pass") && !err.contains("169.254"),
            "{err}"
        );
    }
    let (ok, _, err) = run(vec![
        "practice",
        "create",
        "--practice-id",
        "metadata-clinic",
        "--time-zone",
        "UTC",
        "--owner-email",
        "o@x.example",
        "--trigger-url",
        "https://[::ffff:a9fe:a9fe]/latest",
    ])
    .await
    .unwrap();
    assert!(
        !ok && err.contains("trigger_url: link_local_address"),
        "{err}"
    );
    let (ok, out, _) = run(vec!["practice", "show", "--practice-id", "cli-clinic"])
        .await
        .unwrap();
    assert!(
        ok && out["trigger_url"] == stack.pms.trigger_url(),
        "the URL is unchanged: {out}"
    );
    let (ok, _, _) = run(vec!["practice", "show", "--practice-id", "metadata-clinic"])
        .await
        .unwrap();
    assert!(!ok, "nothing was created");

    let (ok, out, err) = run(vec![
        "policy",
        "set",
        "--practice-id",
        "cli-clinic",
        "--kind",
        "rebook_nudge",
        "--mode",
        "auto",
        "--max-auto-value",
        "500",
    ])
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out["policy"]["kinds"]["rebook_nudge"]["mode"], "auto");
    assert_eq!(
        out["policy"]["kinds"]["rebook_nudge"]["max_auto_value"],
        500
    );
    let (ok, _, err) = run(vec![
        "policy",
        "set",
        "--practice-id",
        "cli-clinic",
        "--kind",
        "rebook",
        "--mode",
        "auto",
    ])
    .await
    .unwrap();
    assert!(!ok && err.contains("--kind"), "{err}");
    let (ok, out, _) = run(vec!["policy", "show", "--practice-id", "cli-clinic"])
        .await
        .unwrap();
    assert!(
        ok && out["policy"]["kinds"]["slot_offer"]["mode"] == "approve",
        "other kinds keep the default"
    );

    let (ok, out, err) = run(vec![
        "scan",
        "--practice-id",
        "cli-clinic",
        "--date",
        "2026-11-23",
    ])
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out["scan_date"], "2026-11-23");
    assert_eq!(out["created"].as_array().map(Vec::len), Some(0));
    let (ok, out, _) = run(vec!["practice", "show", "--practice-id", "cli-clinic"])
        .await
        .unwrap();
    assert!(ok && out["last_scan_date"] == "2026-11-23");
    assert!(
        !out.to_string().contains("whsec_"),
        "show never prints secrets"
    );
    stack.stop().await;
}
