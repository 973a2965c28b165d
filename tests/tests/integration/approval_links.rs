//! Approval links: GET never changes state; tampered, cross-practice, expired and reused
//! tokens change nothing; a link works only while its approver is an owner and while the key
//! that signed it is the practice's (a link-key rotation's overlap included); settings links
//! come by e-mail on request, live `SETTINGS_LINK_MINUTES` and appear on no page.

use shared::action::ActionStatus;
use shared::ports::{ActionRepo, PracticeRepo};
use shared::practice::SecretKind;
use shared::service::admin;
use shared::token::{self, Claims, Decision};
use tests::{TestStack, WAIT, completed, eventually, new_ref};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_changes_nothing() {
    let ts = TestStack::start().await.unwrap();
    let p = new_ref("p");
    ts.send("msg_1", &completed(&p, "neurotoxin", 100)).await;
    ts.scan_via_queue(ts.today()).await;
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("e-mail");
    let links = email.links();
    assert_eq!(
        links.len(),
        4,
        "one action: approve and reject, no approve-all; the full list; the settings request link"
    );
    let approve = links[0].clone();
    let action_id = {
        let raw = approve.rsplit('/').next().unwrap();
        let claims_json = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            raw.split('.').next().unwrap(),
        )
        .unwrap();
        let c: Claims = serde_json::from_slice(&claims_json).unwrap();
        c.action_ids[0].clone()
    };
    let status = || async {
        ts.store()
            .get_action(&ts.practice, &action_id)
            .await
            .unwrap()
            .unwrap()
            .status
    };
    let http = reqwest::Client::new();

    // A prefetching mail scanner: many GETs, nothing changes.
    for _ in 0..3 {
        let r = http.get(&approve).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY");
    }
    // (The e-mail goes out just before the action is marked pending.)
    let mut st = status().await;
    for _ in 0..50 {
        if st != ActionStatus::Proposed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        st = status().await;
    }
    assert_eq!(st, ActionStatus::Pending);

    // Tampered: flip the decision inside the claims.
    let raw = approve.rsplit('/').next().unwrap();
    let (body, mac) = raw.split_once('.').unwrap();
    let mut c: Claims = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).unwrap(),
    )
    .unwrap();
    c.decision = Decision::Reject;
    let forged = format!(
        "{}.{mac}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&c).unwrap()
        )
    );
    let r = http
        .post(format!("{}/v1/approvals/{forged}", ts.stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("not valid"));

    // Cross-practice: the same claims signed with another practice's key.
    let other = shared::token::LinkKey::generate();
    let cross = token::sign(&c, &other);
    let r = http
        .post(format!("{}/v1/approvals/{cross}", ts.stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Expired: signed with the practice's real key, expiry in the past.
    let practice = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    let link = ts
        .stack
        .scan_deps()
        .unwrap()
        .adapters
        .secrets
        .link(&practice.id, &practice.secrets)
        .await
        .unwrap();
    let mut expired = c.clone();
    expired.decision = Decision::Approve;
    expired.expires = jiff::Timestamp::now().as_second() - 1;
    let r = http
        .post(format!(
            "{}/v1/approvals/{}",
            ts.stack.api_url,
            token::sign(&expired, &link)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 410);
    assert_eq!(
        status().await,
        ActionStatus::Pending,
        "no bad token changed anything"
    );

    // The real one works once; a reuse changes nothing.
    assert_eq!(
        http.post(&approve).send().await.unwrap().status().as_u16(),
        200
    );
    assert_eq!(
        http.post(&approve).send().await.unwrap().status().as_u16(),
        409
    );
    let reject = links[1].clone();
    assert_eq!(
        http.post(&reject).send().await.unwrap().status().as_u16(),
        409,
        "already decided"
    );
    let s = status().await;
    assert!(
        matches!(s, ActionStatus::Approved | ActionStatus::Delivered),
        "{s:?}"
    );
    ts.stop().await;
}

/// The claims of a link or token, read without verifying.
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

/// One due patient, the night's scan through its queue, the digest: its (approve, reject,
/// settings request) links, once the action is pending.
async fn digest_links(ts: &TestStack) -> (String, String, String) {
    let p = new_ref("p");
    ts.send(&format!("msg_{p}"), &completed(&p, "neurotoxin", 100))
        .await;
    ts.scan_via_queue(ts.today()).await;
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the digest");
    let links = email.links();
    assert_eq!(links.len(), 4, "approve, reject, the full list, settings");
    let id = claims_of(&links[0]).action_ids[0].clone();
    eventually(WAIT, || async {
        (ts.store()
            .get_action(&ts.practice, &id)
            .await
            .unwrap()?
            .status
            == ActionStatus::Pending)
            .then_some(())
    })
    .await
    .expect("pending");
    (links[0].clone(), links[1].clone(), links[3].clone())
}

async fn action_status(ts: &TestStack, link: &str) -> ActionStatus {
    let id = claims_of(link).action_ids[0].clone();
    ts.store()
        .get_action(&ts.practice, &id)
        .await
        .unwrap()
        .unwrap()
        .status
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(url: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn audit_events(ts: &TestStack) -> Vec<shared::audit::AuditRecord> {
    use shared::ports::AuditLog;
    let (mut records, _) = ts.store().audit_trail(&ts.practice).await.unwrap();
    records.sort_by_key(|r| r.seq);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_owners_links_are_refused_on_show_and_decide() {
    let ts = TestStack::start().await.unwrap();
    let (approve, reject, request) = digest_links(&ts).await;
    let owner = "owner@test-clinic.example";
    assert_eq!(claims_of(&approve).approver, token::approver_id(owner));
    assert_eq!(get(&approve).await.0, 200);

    // `pil practice update --owner-email`: the digest's owner is replaced.
    admin::update_practice(
        ts.store(),
        &ts.practice,
        admin::PracticeUpdate {
            owner_emails: Some(vec!["new-owner@test-clinic.example".into()]),
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();

    // What an expired link of the practice shows.
    let mut expired = claims_of(&approve);
    expired.expires = jiff::Timestamp::now().as_second() - 1;
    let expired_url = format!(
        "{}/v1/approvals/{}",
        ts.stack.api_url,
        token::sign(&expired, &ts.link_key().await)
    );
    let (status, expired_page) = get(&expired_url).await;
    assert_eq!(status, 410);
    assert!(expired_page.contains("This link is no longer valid"));

    // The removed owner's links: the same page, on GET and on POST; nothing decided.
    for link in [&approve, &reject, &request] {
        assert_eq!(get(link).await, (410, expired_page.clone()), "GET {link}");
        assert_eq!(
            post(link, "").await,
            (410, expired_page.clone()),
            "POST {link}"
        );
    }
    assert_eq!(action_status(&ts, &approve).await, ActionStatus::Pending);
    // No settings link was asked for either (a request is queued before the answer).
    ts.settled().await;
    assert_eq!(
        ts.handled("CandidatesQueue", "settings_link.requested"),
        0,
        "a settings link was requested"
    );
    assert_eq!(ts.emails().await.len(), 1, "the digest only");

    // A link of the new owner works.
    let mut theirs = claims_of(&approve);
    theirs.approver = token::approver_id("new-owner@test-clinic.example");
    let theirs = format!(
        "{}/v1/approvals/{}",
        ts.stack.api_url,
        token::sign(&theirs, &ts.link_key().await)
    );
    assert_eq!(post(&theirs, "").await.0, 200);
    assert!(matches!(
        action_status(&ts, &approve).await,
        ActionStatus::Approved | ActionStatus::Delivered
    ));
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_rotation_stops_old_links_when_the_overlap_ends_or_at_once_without_one() {
    let ts = TestStack::start().await.unwrap();
    let (approve, reject, _) = digest_links(&ts).await;
    let keys = ts.stack.scan_deps().unwrap().adapters.secrets.clone();
    let overlap_end = |out: &admin::SecretRotation| out.old_valid_until;

    // Overlap N (1 h), as if rotated 1 h - 4 s ago: the digest's links still work now, and
    // stop when the overlap ends, 4 s from now.
    let rotated_at =
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 3600 + 4).unwrap();
    let out = admin::rotate_secret(
        ts.store(),
        keys.keys(),
        &ts.practice,
        SecretKind::Link,
        1,
        false,
        rotated_at,
    )
    .await
    .unwrap();
    assert!(out.secret.is_none());
    assert!(overlap_end(&out) > jiff::Timestamp::now());
    assert_eq!(get(&approve).await.0, 200, "during the overlap");
    assert_eq!(get(&reject).await.0, 200, "during the overlap");
    // A link signed with the new key works too.
    let mut fresh = claims_of(&approve);
    fresh.nonce = "fresh".into();
    let fresh = format!(
        "{}/v1/approvals/{}",
        ts.stack.api_url,
        token::sign(&fresh, &ts.link_key().await)
    );
    assert_eq!(get(&fresh).await.0, 200);
    let wait = overlap_end(&out).duration_since(jiff::Timestamp::now());
    tokio::time::sleep(std::time::Duration::from_secs_f64(
        wait.as_secs_f64().max(0.0) + 1.0,
    ))
    .await;
    for link in [&approve, &reject] {
        let (status, page) = get(link).await;
        assert_eq!(status, 400, "after the overlap");
        assert!(page.contains("This link is not valid"));
        assert_eq!(post(link, "").await.0, 400);
    }
    assert_eq!(action_status(&ts, &approve).await, ActionStatus::Pending);
    assert_eq!(get(&fresh).await.0, 200, "the new key's links work");

    // Overlap 0: every outstanding link stops at once.
    let out = admin::rotate_secret(
        ts.store(),
        keys.keys(),
        &ts.practice,
        SecretKind::Link,
        0,
        false,
        jiff::Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(overlap_end(&out) <= jiff::Timestamp::now());
    assert_eq!(get(&fresh).await.0, 400);
    assert_eq!(post(&fresh, "").await.0, 400);
    assert_eq!(action_status(&ts, &approve).await, ActionStatus::Pending);

    // Both rotations audited like the other secrets', without the key.
    let rotations: Vec<serde_json::Value> = audit_events(&ts)
        .await
        .iter()
        .filter(|r| r.event == "secret_rotated")
        .map(|r| serde_json::from_str(&r.details).unwrap())
        .collect();
    assert_eq!(rotations.len(), 2);
    assert!(rotations.iter().all(|d| d["which"] == "link"));
    assert_eq!(
        (
            &rotations[0]["overlap_hours"],
            &rotations[1]["overlap_hours"]
        ),
        (&serde_json::json!(1), &serde_json::json!(0))
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_links_are_emailed_on_request_and_never_shown_on_a_page() {
    let ts = TestStack::start().await.unwrap();
    let (_, _, request) = digest_links(&ts).await;
    assert_eq!(claims_of(&request).decision, Decision::SettingsRequest);
    let owner = "owner@test-clinic.example";

    // The request link's page: a button, and no link of any kind.
    let (status, page) = get(&request).await;
    assert_eq!(status, 200);
    assert!(page.contains("E-mail me a settings link"), "{page}");
    assert!(
        !page.contains("/v1/approvals") && !page.contains("href="),
        "{page}"
    );

    // Its button: the owner gets a settings link by e-mail; the page shows none.
    let (status, page) = post(&request, "").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Check your e-mail"), "{page}");
    assert!(
        !page.contains("/v1/approvals") && !page.contains("href="),
        "{page}"
    );
    let mail = eventually(WAIT, || async {
        ts.emails()
            .await
            .into_iter()
            .find(|m| m.subject.contains("settings link"))
    })
    .await
    .expect("the settings link e-mail");
    assert_eq!(mail.to, [owner]);
    let links = mail.links();
    assert_eq!(links.len(), 1, "{}", mail.body);
    let settings = links[0].clone();
    let c = claims_of(&settings);
    assert_eq!(c.decision, Decision::Settings);
    assert_eq!(c.approver, token::approver_id(owner));
    let lifetime = c.expires - jiff::Timestamp::now().as_second();
    assert!(
        (token::SETTINGS_LINK_MINUTES * 60 - 120..=token::SETTINGS_LINK_MINUTES * 60)
            .contains(&lifetime),
        "{lifetime} s"
    );

    // Once a minute at most: a second press now sends nothing more.
    assert_eq!(post(&request, "").await.0, 429);
    ts.settled().await;
    assert_eq!(
        ts.handled("CandidatesQueue", "settings_link.requested"),
        1,
        "the first press's request only"
    );
    assert_eq!(
        ts.emails().await.len(),
        2,
        "the digest and one settings link"
    );

    // The settings page (and what follows it) never carries a token or a link.
    let token = settings.rsplit('/').next().unwrap().to_owned();
    let (status, page) = get(&settings).await;
    assert_eq!(status, 200);
    assert!(page.contains("Approval settings"));
    let no_link =
        |p: &str| !p.contains(&token) && !p.contains("/v1/approvals") && !p.contains("href=");
    assert!(no_link(&page), "{page}");
    let (status, bad) = post(&settings, "cooldown_days=999").await;
    assert_eq!(status, 422);
    let (status, saved) = post(&settings, "cooldown_days=9").await;
    assert_eq!(status, 200, "{saved}");
    assert!(saved.contains("Settings saved"));
    let (status, reused) = post(&settings, "cooldown_days=3").await;
    assert_eq!(status, 409);
    for p in [&bad, &saved, &reused] {
        assert!(no_link(p), "{p}");
    }
    assert_eq!(
        ts.store()
            .get_practice(&ts.practice)
            .await
            .unwrap()
            .unwrap()
            .policy
            .cooldown_days,
        9
    );
    // Audited: the link sent (by the owner who asked), the settings saved (by the owner).
    let records = audit_events(&ts).await;
    let sent = records
        .iter()
        .find(|r| r.event == "settings_link_sent")
        .expect("settings_link_sent");
    let saved = records
        .iter()
        .rfind(|r| r.event == "policy_changed")
        .expect("policy_changed");
    let actor = format!("owner:{}", token::approver_id(owner));
    assert_eq!((&sent.actor, &saved.actor), (&actor, &actor));
    assert!(!sent.details.contains(owner) && !sent.details.contains(&token));

    // A settings link past its lifetime: the expired page, nothing saved.
    let mut late = c.clone();
    late.nonce = "late".into();
    late.expires = jiff::Timestamp::now().as_second() - 1;
    let late = format!(
        "{}/v1/approvals/{}",
        ts.stack.api_url,
        token::sign(&late, &ts.link_key().await)
    );
    let (status, page) = get(&late).await;
    assert_eq!(status, 410);
    assert!(page.contains("no longer valid"));
    assert_eq!(post(&late, "cooldown_days=3").await.0, 410);
    assert_eq!(
        ts.store()
            .get_practice(&ts.practice)
            .await
            .unwrap()
            .unwrap()
            .policy
            .cooldown_days,
        9
    );
    ts.stop().await;
}
