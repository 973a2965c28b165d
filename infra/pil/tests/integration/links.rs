//! The link and secret commands of `pil` against the local stack, with the pages answering over
//! HTTP: `pil secret rotate --which link` (overlap 0) stops every outstanding link and shows no
//! key; `pil practice settings-link` e-mails each owner a settings link and prints none;
//! `pil practice update --owner-email` removing an owner stops that owner's links;
//! `pil secret reseal` leaves secrets that are bound already alone.

use crate::common;
use common::run;

use shared::token::{self, Claims, Decision};
use tests::{TestStack, WAIT, completed, eventually, new_ref};

fn claims_of(link: &str) -> Claims {
    let raw = link.rsplit('/').next().unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            raw.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_rotation_settings_links_owner_removal_and_reseal_through_the_cli() {
    let ts = TestStack::start().await.unwrap();
    let env = ts.stack.env.clone();
    let pid = ts.practice.as_str().to_owned();
    let owner = "owner@test-clinic.example";

    // A digest with links.
    let p = new_ref("p");
    ts.send("msg_1", &completed(&p, "neurotoxin", 100)).await;
    ts.scan_via_queue(ts.today()).await;
    let digest = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the digest");
    let approve = digest.links()[0].clone();
    assert_eq!(status(&approve).await, 200);

    // Rotating the link key with no overlap stops every outstanding link at once.
    let (ok, out, err) = run(
        &env,
        &[
            "secret",
            "rotate",
            "--practice-id",
            &pid,
            "--which",
            "link",
            "--overlap-hours",
            "0",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out["which"], "link");
    assert_eq!(
        out["secret"],
        serde_json::Value::Null,
        "a link key is never shown"
    );
    assert_eq!(out["overlap_hours"], 0);
    assert!(
        out["next_step"]
            .as_str()
            .unwrap()
            .contains("stopped working"),
        "{out}"
    );
    assert_eq!(status(&approve).await, 400);
    let (ok, shown, _) = run(&env, &["practice", "show", "--practice-id", &pid]).await;
    assert!(ok);
    assert_eq!(shown["link_previous_until"], serde_json::Value::Null);

    // `pil practice settings-link`: the owner gets a link by e-mail; none is printed.
    let (ok, out, err) = run(&env, &["practice", "settings-link", "--practice-id", &pid]).await;
    assert!(ok, "{err}");
    assert_eq!(out["owners_emailed"], 1);
    assert_eq!(out["valid_minutes"], token::SETTINGS_LINK_MINUTES);
    assert!(!out.to_string().contains("/v1/approvals") && !err.contains("/v1/approvals"));
    let mail = eventually(WAIT, || async {
        ts.emails()
            .await
            .into_iter()
            .find(|m| m.subject.contains("settings link"))
    })
    .await
    .expect("the settings link e-mail");
    assert_eq!(mail.to, [owner]);
    let settings = mail.links()[0].clone();
    let c = claims_of(&settings);
    assert_eq!(
        (c.decision, c.approver.clone()),
        (Decision::Settings, token::approver_id(owner))
    );
    assert_eq!(status(&settings).await, 200, "signed with the new key");

    // Removing the owner stops their links.
    let (ok, _, err) = run(
        &env,
        &[
            "practice",
            "update",
            "--practice-id",
            &pid,
            "--owner-email",
            "someone-else@test-clinic.example",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(status(&settings).await, 410);

    // The audit trail has the rotation and the link sent, neither with a key or a link.
    let (ok, trail, _) = run(&env, &["audit", "show", "--practice-id", &pid]).await;
    assert!(ok);
    let events: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert!(events.contains(&"secret_rotated") && events.contains(&"settings_link_sent"));
    assert!(!trail.to_string().contains("/v1/approvals"));

    // Secrets onboarded with a context need no resealing; the command says so and changes
    // nothing.
    let (ok, out, err) = run(&env, &["secret", "reseal", "--all"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        serde_json::json!([{"practice_id": pid, "resealed": 0, "already_bound": 4}])
    );
    let (ok, _, err) = run(&env, &["secret", "reseal"]).await;
    assert!(!ok && err.contains("--practice-id"), "{err}");
    ts.stop().await;
}
