//! `pil secret rotate` against the local stack, through the real receiver, emitter and PMS
//! simulator: events signed with the old webhook secret are accepted during the overlap and
//! refused after it; a trigger delivered during a trigger rotation's overlap verifies with
//! either secret, and after the overlap with the new one only; every rotation is audited and
//! no secret reaches stderr, `practice show` or the audit trail.

use crate::common;
use common::run;

use jiff::{SignedDuration, Timestamp};
use pil_local::pms::Received;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::ActionId;
use shared::ports::{ActionRepo, PracticeRepo};
use shared::practice::Mode;
use shared::signature::WebhookSecret;
use tests::{TestStack, WAIT, completed, eventually, new_ref};

/// `pil secret rotate` for test-clinic; the parsed new secret and the output.
async fn rotate(ts: &TestStack, extra: &[&str]) -> (WebhookSecret, serde_json::Value) {
    let mut args = vec!["secret", "rotate", "--practice-id", ts.practice.as_str()];
    args.extend(extra);
    let (ok, out, err) = run(&ts.stack.env, &args).await;
    assert!(ok, "{err}");
    assert!(!err.contains("whsec_"), "no secret on stderr: {err}");
    let secret = WebhookSecret::parse(out["secret"].as_str().unwrap()).unwrap();
    (secret, out)
}

fn at(v: &serde_json::Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn near(a: Timestamp, b: Timestamp) -> bool {
    a.duration_since(b).abs() < SignedDuration::from_mins(2)
}

async fn status_with(ts: &TestStack, secret: &WebhookSecret) -> (u16, serde_json::Value) {
    let p = new_ref("p");
    let body = completed(&p, "neurotoxin", 10).to_string();
    let r = ts
        .pms
        .send(ts.practice.as_str(), secret, &format!("msg_{p}"), &body)
        .await
        .unwrap();
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rotation_accepts_the_old_secret_during_the_overlap_and_refuses_it_after() {
    let ts = TestStack::start().await.unwrap();
    let env = ts.stack.env.clone();
    let old = ts.secret.clone();

    let (new, out) = rotate(&ts, &["--which", "webhook"]).await;
    assert_eq!(out["which"], "webhook");
    assert_eq!(out["overlap_hours"], 72, "the default overlap");
    assert!(near(
        at(&out["old_valid_until"]),
        Timestamp::now() + SignedDuration::from_hours(72)
    ));
    assert!(out["next_step"].as_str().unwrap().contains("PMS"));
    assert_ne!(new.expose(), old.expose());

    // During the overlap both secrets are accepted.
    assert_eq!(status_with(&ts, &old).await.0, 202);
    assert_eq!(status_with(&ts, &new).await.0, 202);

    // `practice show` tells the overlap, never a secret.
    let (ok, shown, _) = run(
        &env,
        &["practice", "show", "--practice-id", ts.practice.as_str()],
    )
    .await;
    assert!(ok && shown["webhook_secrets"] == 2, "{shown}");
    assert_eq!(
        at(&shown["webhook_previous_until"]),
        at(&out["old_valid_until"])
    );
    assert!(!shown.to_string().contains("whsec_"));

    // A second rotation while the overlap runs is refused, says why and what to do.
    let (ok, _, err) = run(
        &env,
        &[
            "secret",
            "rotate",
            "--practice-id",
            ts.practice.as_str(),
            "--which",
            "webhook",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("--force") && err.contains("still works until"),
        "{err}"
    );

    // The overlap ends (stored as if 72 hours had passed): the old secret gets 401.
    let store = ts.store();
    let mut p = store.get_practice(&ts.practice).await.unwrap().unwrap();
    p.secrets.webhook_previous_until = Some(Timestamp::now() - SignedDuration::from_secs(1));
    let expected = p.version;
    p.version += 1;
    store.put_practice(&p, Some(expected)).await.unwrap();
    let (status, body) = status_with(&ts, &old).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["rule"], "signature_mismatch", "{body}");
    assert_eq!(status_with(&ts, &new).await.0, 202);

    // No overlap: the replaced secret is refused at once (no --force needed: the last
    // overlap is over).
    let (newer, out) = rotate(&ts, &["--which", "webhook", "--overlap-hours", "0"]).await;
    assert_eq!(out["overlap_hours"], 0);
    assert!(near(at(&out["old_valid_until"]), Timestamp::now()));
    assert_eq!(status_with(&ts, &new).await.0, 401);
    assert_eq!(status_with(&ts, &newer).await.0, 202);

    // Bad input names the flag; an unknown practice says so; nothing changes.
    let (ok, _, err) = run(
        &env,
        &[
            "secret",
            "rotate",
            "--practice-id",
            ts.practice.as_str(),
            "--which",
            "webhook",
            "--overlap-hours",
            "1000",
        ],
    )
    .await;
    assert!(!ok && err.contains("--overlap-hours"), "{err}");
    let (ok, _, err) = run(
        &env,
        &[
            "secret",
            "rotate",
            "--practice-id",
            "no-such-clinic",
            "--which",
            "webhook",
        ],
    )
    .await;
    assert!(!ok && err.contains("not found"), "{err}");
    assert_eq!(status_with(&ts, &newer).await.0, 202);

    // Audited: which and the overlap, never the secret; the chain verifies.
    let (_, trail, _) = run(
        &env,
        &["audit", "show", "--practice-id", ts.practice.as_str()],
    )
    .await;
    let rotations: Vec<serde_json::Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "secret_rotated")
        .map(|r| serde_json::from_str(r["details"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(rotations.len(), 2, "{trail}");
    assert_eq!(rotations[0]["which"], "webhook");
    assert_eq!(rotations[0]["overlap_hours"], 72);
    assert_eq!(rotations[1]["overlap_hours"], 0);
    let text = trail.to_string();
    for s in [&old, &new, &newer] {
        assert!(!text.contains(s.expose().trim_start_matches("whsec_")));
    }
    let (ok, _, err) = run(
        &env,
        &["audit", "verify", "--practice-id", ts.practice.as_str()],
    )
    .await;
    assert!(ok, "{err}");
    ts.stop().await;
}

/// One auto-approved rebook nudge, delivered to the PMS simulator; what the PMS received.
async fn delivered_trigger(ts: &TestStack) -> Received {
    let p = new_ref("p");
    assert_eq!(
        ts.send(&format!("msg_{p}"), &completed(&p, "neurotoxin", 100))
            .await
            .status,
        202
    );
    let report = ts
        .stack
        .scan_deps()
        .unwrap()
        .scan(&ts.practice, ts.today())
        .await
        .unwrap();
    assert_eq!(report.created.len(), 1);
    let id: ActionId = report.created[0].clone();
    eventually(WAIT, || async {
        let a = ts.store().get_action(&ts.practice, &id).await.unwrap()?;
        (a.status == ActionStatus::Delivered).then_some(())
    })
    .await
    .expect("delivered");
    let trig = id.trigger_id();
    ts.stack
        .pms
        .received()
        .into_iter()
        .find(|r| r.webhook_id == trig)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_rotation_signs_with_both_secrets_during_the_overlap_and_the_new_one_after() {
    let ts = TestStack::start().await.unwrap();
    ts.set_mode(ActionKind::RebookNudge, Mode::Auto).await;
    let old = ts.trigger_secret.clone();

    let (new, out) = rotate(&ts, &["--which", "trigger", "--overlap-hours", "24"]).await;
    assert_eq!(out["which"], "trigger");
    assert!(near(
        at(&out["old_valid_until"]),
        Timestamp::now() + SignedDuration::from_hours(24)
    ));
    // The PMS holds the old secret and is given the new one: a trigger delivered now verifies
    // with each of them on its own.
    ts.stack
        .pms
        .trust_trigger_secrets(&ts.practice, vec![old.clone(), new.clone()]);
    let during = delivered_trigger(&ts).await;
    assert_eq!(during.signatures, 2);
    assert_eq!(during.verified_with, [0, 1], "old and new each verify");
    assert_eq!(during.status, 200);

    // A rotation without overlap (forced: the last one's is still running): one signature,
    // with the newest secret only.
    let (newest, _) = rotate(
        &ts,
        &["--which", "trigger", "--overlap-hours", "0", "--force"],
    )
    .await;
    ts.stack
        .pms
        .trust_trigger_secrets(&ts.practice, vec![old, new, newest]);
    let after = delivered_trigger(&ts).await;
    assert_eq!(after.signatures, 1);
    assert_eq!(after.verified_with, [2]);

    // The webhook secret was not touched.
    let p = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.secrets.webhook.len(), 1);
    assert_eq!(
        ts.send("msg_still", &completed(&new_ref("p"), "facial", 3))
            .await
            .status,
        202
    );
    ts.stop().await;
}
