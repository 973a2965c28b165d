//! Revocable links and secrets bound to their practice and purpose, on the in-memory world
//! (a pinned clock, so overlaps and lifetimes end exactly when documented):
//! - a link works only while its approver is one of the practice's owners, and a removed
//!   owner's link gets the same page as an expired one, deciding nothing;
//! - `pil secret rotate --which link` keeps old links working for the overlap and stops them
//!   after it (at once with no overlap), audited;
//! - settings links are e-mailed to each owner on request, never shown on a page, and work
//!   for `SETTINGS_LINK_MINUTES`;
//! - `pil secret reseal` binds secrets sealed before contexts existed, without changing them.

use jiff::{SignedDuration, Timestamp};
use shared::action::ActionStatus;
use shared::ids::{OpaqueRef, PracticeId};
use shared::ports::{ActionRepo, AuditLog, DomainEvent, PracticeRepo};
use shared::practice::SecretKind;
use shared::service::admin::{self, NewPractice, PracticeUpdate};
use shared::service::approval::Page;
use shared::service::receiver::{self, Delivery};
use shared::service::settings;
use shared::signature::{SignedHeaders, WebhookSecret};
use shared::testing::{MemKeys, World, sample_action};
use shared::token::{self, Claims, Decision, SETTINGS_LINK_MINUTES};

const A: &str = "ana@links.example";
const B: &str = "ben@links.example";

fn run<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn pid() -> PracticeId {
    PracticeId::parse("links-clinic").unwrap()
}

fn noon() -> Timestamp {
    "2026-11-23T17:00:00Z".parse().unwrap()
}

/// A practice owned by A and B, with one pending action; its webhook secret in clear.
fn world() -> (World, shared::ids::ActionId, WebhookSecret) {
    let world = World::new(noon());
    let out = run(admin::create_practice(
        &world.store,
        world.keys(),
        NewPractice {
            id: pid(),
            time_zone: "America/New_York".into(),
            owner_emails: vec![A.into(), B.into()],
            trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
        },
    ))
    .unwrap();
    let patient = OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap();
    let mut action = sample_action("links-clinic", &patient, &["links", "1"]);
    action.status = ActionStatus::Pending;
    assert!(run(world.store.create_action(&action)).unwrap());
    (
        world,
        action.id,
        WebhookSecret::parse(&out.webhook_secret).unwrap(),
    )
}

fn now(w: &World) -> Timestamp {
    use shared::ports::Clock;
    w.clock.now()
}

/// A link signed with the practice's current link key.
fn link(w: &World, decision: Decision, actions: Vec<shared::ids::ActionId>, owner: &str) -> String {
    let p = run(w.store.get_practice(&pid())).unwrap().unwrap();
    let key = run(w.secrets.link(&p.id, &p.secrets)).unwrap();
    let claims = Claims::new(
        pid(),
        actions,
        decision,
        owner,
        now(w) + SignedDuration::from_hours(72),
    );
    token::sign(&claims, &key)
}

fn show(w: &World, t: &str) -> Page {
    run(shared::service::links::show(&w.approval(), t))
}

fn decide(w: &World, t: &str, body: &[u8]) -> Page {
    run(shared::service::links::decide(&w.approval(), t, body))
}

fn status(w: &World, id: &shared::ids::ActionId) -> ActionStatus {
    run(w.store.get_action(&pid(), id)).unwrap().unwrap().status
}

fn events(w: &World) -> Vec<String> {
    let (records, _) = run(w.store.audit_trail(&pid())).unwrap();
    let mut records = records;
    records.sort_by_key(|r| r.seq);
    records.into_iter().map(|r| r.event).collect()
}

#[test]
fn a_removed_owners_links_get_the_expired_page_and_decide_nothing() {
    let (w, id, _) = world();
    let approve_a = link(&w, Decision::Approve, vec![id.clone()], A);
    let reject_b = link(&w, Decision::Reject, vec![id.clone()], B);
    let settings_a = link(&w, Decision::Settings, vec![], A);
    assert_eq!(show(&w, &approve_a).status, 200);
    assert_eq!(show(&w, &settings_a).status, 200);

    // A is no longer an owner (`pil practice update --owner-email B`).
    run(admin::update_practice(
        &w.store,
        &pid(),
        PracticeUpdate {
            owner_emails: Some(vec![B.into()]),
            ..Default::default()
        },
        "admin",
    ))
    .unwrap();

    // The page an expired link gets, byte for byte.
    let mut expired: Claims = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            approve_a.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    expired.approver = token::approver_id(B);
    expired.expires = now(&w).as_second() - 1;
    let p = run(w.store.get_practice(&pid())).unwrap().unwrap();
    let key = run(w.secrets.link(&p.id, &p.secrets)).unwrap();
    let expired_page = show(&w, &token::sign(&expired, &key));
    assert_eq!(expired_page.status, 410);
    assert!(expired_page.html.contains("This link is no longer valid"));

    for (t, body) in [
        (&approve_a, &b""[..]),
        (&settings_a, &b"cooldown_days=3"[..]),
    ] {
        for page in [show(&w, t), decide(&w, t, body)] {
            assert_eq!(page.status, 410, "{}", page.outcome);
            assert_eq!(page.outcome, "revoked");
            assert_eq!(page.html, expired_page.html, "the same neutral page");
        }
    }
    assert_eq!(status(&w, &id), ActionStatus::Pending, "nothing decided");
    assert_eq!(
        run(w.store.get_practice(&pid()))
            .unwrap()
            .unwrap()
            .policy
            .cooldown_days,
        14,
        "nothing saved"
    );
    assert!(w.bus.events().is_empty());

    // B, still an owner, decides with B's link.
    assert_eq!(decide(&w, &reject_b, b"").outcome, "rejected");
    assert_eq!(status(&w, &id), ActionStatus::Rejected);
}

#[test]
fn a_link_key_rotation_keeps_old_links_for_the_overlap_only() {
    let (w, id, _) = world();
    let old = link(&w, Decision::Approve, vec![id.clone()], A);
    let old_settings = link(&w, Decision::Settings, vec![], A);

    let out = run(admin::rotate_secret(
        &w.store,
        w.keys(),
        &pid(),
        SecretKind::Link,
        1,
        false,
        now(&w),
    ))
    .unwrap();
    assert!(out.secret.is_none(), "a link key is never shown");
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["secret"], serde_json::Value::Null);
    assert_eq!(json["which"], "link");
    assert_eq!(out.old_valid_until, now(&w) + SignedDuration::from_hours(1));

    // During the overlap: old and new links work.
    let new = link(&w, Decision::Approve, vec![id.clone()], A);
    assert_ne!(old, new);
    assert_eq!(show(&w, &old).status, 200);
    assert_eq!(show(&w, &old_settings).status, 200);
    assert_eq!(show(&w, &new).status, 200);
    // A second rotation now is refused unless forced.
    let again = run(admin::rotate_secret(
        &w.store,
        w.keys(),
        &pid(),
        SecretKind::Link,
        1,
        false,
        now(&w),
    ));
    assert!(
        matches!(
            again,
            Err(admin::RotateError::OverlapRunning { which: "link", .. })
        ),
        "{again:?}"
    );

    // From the end of the overlap on: the old links are not valid; the new ones are.
    w.clock.set(out.old_valid_until);
    for t in [&old, &old_settings] {
        let page = show(&w, t);
        assert_eq!((page.status, page.outcome), (400, "invalid"));
        assert_eq!(decide(&w, t, b"").status, 400);
    }
    assert_eq!(status(&w, &id), ActionStatus::Pending);
    assert_eq!(show(&w, &new).status, 200);

    // No overlap: every outstanding link stops at once.
    let out = run(admin::rotate_secret(
        &w.store,
        w.keys(),
        &pid(),
        SecretKind::Link,
        0,
        false,
        now(&w),
    ))
    .unwrap();
    assert_eq!(out.old_valid_until, now(&w));
    assert_eq!(show(&w, &new).status, 400);
    assert_eq!(decide(&w, &new, b"").status, 400);
    assert_eq!(status(&w, &id), ActionStatus::Pending);
    let fresh = link(&w, Decision::Approve, vec![id.clone()], A);
    assert_eq!(decide(&w, &fresh, b"").outcome, "approved");

    // Audited like the other rotations, without the key.
    let (records, _) = run(w.store.audit_trail(&pid())).unwrap();
    let rotations: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.event == "secret_rotated")
        .map(|r| serde_json::from_str(&r.details).unwrap())
        .collect();
    assert_eq!(rotations.len(), 2);
    assert!(rotations.iter().all(|d| d["which"] == "link"));
    assert_eq!(rotations[1]["overlap_hours"], 0);
}

/// The links a page's HTML carries: none may lead to settings (or anywhere).
fn assert_no_link(page: &Page) {
    assert!(!page.html.contains("/v1/approvals"), "{}", page.html);
    assert!(!page.html.contains("href="), "{}", page.html);
    assert!(!page.html.contains("action="), "{}", page.html);
}

#[test]
fn settings_links_are_emailed_to_each_owner_on_request_and_never_shown() {
    let (w, _, _) = world();
    let request = link(&w, Decision::SettingsRequest, vec![], A);

    // The request page: a button, no link; GET changes nothing.
    let page = show(&w, &request);
    assert_eq!((page.status, page.outcome), (200, "settings_request"));
    assert!(page.html.contains("E-mail me a settings link"));
    assert!(!page.html.contains(&request));
    assert_no_link(&page);
    assert!(w.bus.events().is_empty());

    // Its button asks for the links (through the bus), once a minute at most.
    let page = decide(&w, &request, b"");
    assert_eq!((page.status, page.outcome), (200, "settings_link_sent"));
    assert_no_link(&page);
    assert_eq!(
        w.bus.events(),
        [DomainEvent::SettingsLinkRequested {
            practice_id: pid(),
            requested_by: token::approver_id(A),
        }]
    );
    assert_eq!(decide(&w, &request, b"").status, 429);
    assert_eq!(w.bus.events().len(), 1);
    w.clock.set(now(&w) + SignedDuration::from_secs(60));
    assert_eq!(decide(&w, &request, b"").status, 200);
    assert_eq!(w.bus.events().len(), 2);

    // approval-check mails each owner a link of their own.
    let sent = run(settings::send_links(
        &w.approval(),
        &pid(),
        &format!("owner:{}", token::approver_id(A)),
    ))
    .unwrap();
    assert_eq!(sent, 2);
    let mail = w.bus.mail();
    assert_eq!(mail.len(), 2);
    let mut settings_links = Vec::new();
    for (m, owner) in mail.iter().zip([A, B]) {
        assert_eq!(m.to, [owner]);
        assert!(
            m.subject
                .contains(&format!("{SETTINGS_LINK_MINUTES} minutes"))
        );
        let url = m
            .text
            .split_whitespace()
            .find(|w| w.starts_with("https://pil.example/v1/approvals/"))
            .expect("a link in the e-mail")
            .to_owned();
        let t = url.rsplit('/').next().unwrap().to_owned();
        let c: Claims = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                t.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.decision, Decision::Settings);
        assert_eq!(c.approver, token::approver_id(owner), "bound to its owner");
        assert_eq!(
            c.expires,
            (now(&w) + SignedDuration::from_mins(SETTINGS_LINK_MINUTES)).as_second()
        );
        assert!(m.html.contains(&url));
        settings_links.push(t);
    }
    let (records, _) = run(w.store.audit_trail(&pid())).unwrap();
    let sent_record = records
        .iter()
        .find(|r| r.event == "settings_link_sent")
        .expect("audited");
    assert_eq!(
        sent_record.actor,
        format!("owner:{}", token::approver_id(A))
    );
    assert!(!sent_record.details.contains(A) && !sent_record.details.contains("approvals"));

    // The settings page and every page after it carry no link, not even their own.
    let t = &settings_links[0];
    let page = show(&w, t);
    assert_eq!((page.status, page.outcome), (200, "settings"));
    assert!(!page.html.contains(t.as_str()));
    assert_no_link(&page);
    let page = decide(&w, t, b"cooldown_days=999");
    assert_eq!(page.status, 422);
    assert_no_link(&page);
    let page = decide(&w, t, b"cooldown_days=9");
    assert_eq!((page.status, page.outcome), (200, "settings_saved"));
    assert_no_link(&page);
    assert_eq!(
        run(w.store.get_practice(&pid()))
            .unwrap()
            .unwrap()
            .policy
            .cooldown_days,
        9
    );
    let page = decide(&w, t, b"cooldown_days=3");
    assert_eq!(page.status, 409);
    assert_no_link(&page);
    assert_eq!(
        events(&w),
        ["settings_link_sent", "policy_changed"],
        "link sent and settings saved, audited"
    );

    // B's link lives SETTINGS_LINK_MINUTES: the last second works, then it expires.
    let b_link = &settings_links[1];
    w.clock.set(
        now(&w) + SignedDuration::from_mins(SETTINGS_LINK_MINUTES) - SignedDuration::from_secs(1),
    );
    assert_eq!(show(&w, b_link).status, 200);
    w.clock.set(now(&w) + SignedDuration::from_secs(1));
    let page = show(&w, b_link);
    assert_eq!((page.status, page.outcome), (410, "expired"));
    assert_eq!(decide(&w, b_link, b"cooldown_days=3").status, 410);
    assert_eq!(
        run(w.store.get_practice(&pid()))
            .unwrap()
            .unwrap()
            .policy
            .cooldown_days,
        9
    );

    // A request from someone who stopped being an owner sends nothing.
    let out = run(settings::send_links(
        &w.approval(),
        &pid(),
        "owner:ap_nobody",
    ))
    .unwrap();
    assert_eq!(out, 0);
    assert_eq!(w.bus.mail().len(), 2);
}

/// A consent event signed with `secret`, through the receiver.
fn deliver(w: &World, secret: &WebhookSecret, id: &str) -> Result<(), receiver::ReceiveError> {
    let body = format!(
        r#"{{"type":"patient.opted_in","occurred_at":"{}","data":{{"patient_ref":"p_7Hq2kX9mZ4rT1vB8yW3n"}}}}"#,
        now(w)
    );
    let ts = now(w).as_second();
    let sig = secret.sign(id, ts, body.as_bytes()).unwrap();
    let ts = ts.to_string();
    let d = Delivery {
        practice_id: Some("links-clinic"),
        content_type: Some("application/json"),
        headers: SignedHeaders {
            id: Some(id),
            timestamp: Some(&ts),
            signature: Some(&sig),
        },
        body: body.as_bytes(),
    };
    run(receiver::receive(&w.receiver(), d)).map(|_| ())
}

#[test]
fn secrets_sealed_before_contexts_are_refused_until_resealed_and_then_unchanged() {
    let (w, id, webhook) = world();
    // What a record written before contexts holds: the same secrets, sealed without one.
    let mut p = run(w.store.get_practice(&pid())).unwrap().unwrap();
    let opened = run(shared::secrets::open_all(w.keys(), &pid(), &p.secrets)).unwrap();
    p.secrets.webhook = vec![MemKeys::seal_unbound(webhook.expose().as_bytes())];
    p.secrets.trigger = MemKeys::seal_unbound(opened.trigger.expose().as_bytes());
    p.secrets.link = MemKeys::seal_unbound(opened.link.expose());
    // Nor had it a tombstone key: the reseal gives it one.
    p.secrets.tombstone = None;
    let expected = p.version;
    p.version += 1;
    run(w.store.put_practice(&p, Some(expected))).unwrap();

    // No fallback: nothing opens them under a context.
    assert!(deliver(&w, &webhook, "msg_1").is_err());
    let approve = {
        let claims = Claims::new(
            pid(),
            vec![id.clone()],
            Decision::Approve,
            A,
            now(&w) + SignedDuration::from_hours(1),
        );
        token::sign(&claims, &opened.link)
    };
    assert_eq!(show(&w, &approve).status, 503);

    let out = run(admin::reseal_secrets(&w.store, w.keys(), &pid(), now(&w))).unwrap();
    assert_eq!((out.resealed, out.already_bound), (4, 0));
    // The same secrets, now bound: the PMS changes nothing, outstanding links still work.
    assert_eq!(deliver(&w, &webhook, "msg_2"), Ok(()));
    assert_eq!(show(&w, &approve).status, 200);
    let back = run(w.store.get_practice(&pid())).unwrap().unwrap();
    let reopened = run(shared::secrets::open_all(w.keys(), &pid(), &back.secrets)).unwrap();
    assert_eq!(reopened.trigger.expose(), opened.trigger.expose());
    // Idempotent, and audited once.
    let again = run(admin::reseal_secrets(&w.store, w.keys(), &pid(), now(&w))).unwrap();
    assert_eq!((again.resealed, again.already_bound), (0, 4));
    assert_eq!(
        events(&w)
            .iter()
            .filter(|e| *e == "secrets_resealed")
            .count(),
        1
    );

    // A value sealed for another practice opens neither way: refused, nothing written.
    let mut q = back.clone();
    q.secrets.trigger = run(w.keys().seal(
        &shared::ports::SecretContext::for_trigger(&PracticeId::parse("other-clinic").unwrap()),
        b"whsec_x",
    ))
    .unwrap();
    q.version += 1;
    run(w.store.put_practice(&q, Some(back.version))).unwrap();
    assert!(run(admin::reseal_secrets(&w.store, w.keys(), &pid(), now(&w))).is_err());
    assert_eq!(
        run(w.store.get_practice(&pid())).unwrap().unwrap().version,
        q.version
    );
}
