//! The full list page through the real stack: the digest links to it; it shows what awaits the
//! owner's decision and what waits for later nights, in the order the scan will propose it,
//! with the night each is expected; it changes nothing; and a tampered, expired, revoked or
//! rotated-out link is refused exactly as an approve link is.

use serde_json::json;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::OpaqueRef;
use shared::ports::ActionLog;
use shared::practice::SecretKind;
use shared::service::admin::{self, KindChange};
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

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), csp, r.text().await.unwrap())
}

async fn post(url: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn url(ts: &TestStack, claims: &Claims, key: &token::LinkKey) -> String {
    format!(
        "{}/v1/approvals/{}",
        ts.stack.api_url,
        token::sign(claims, key)
    )
}

fn code(r: &str) -> String {
    OpaqueRef::parse(r).unwrap().short_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_links_to_the_full_list_in_rank_order_and_bad_links_are_refused() {
    let ts = TestStack::start().await.unwrap();
    admin::set_policy(
        ts.store(),
        &ts.practice,
        None,
        KindChange {
            nightly_budget: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Five neurotoxin rebooks due, overdue by 0 to 20 days: the two most overdue tonight, the
    // other three wait (two tomorrow, one the night after), most overdue first.
    let patients: Vec<String> = (0..5).map(|_| new_ref("p")).collect();
    let events: Vec<serde_json::Value> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| completed(p, "neurotoxin", 90 + 5 * i as i64))
        .collect();
    assert_eq!(
        ts.send("msg_list", &json!({ "events": events }))
            .await
            .status,
        202
    );
    ts.scan_via_queue(ts.today()).await;
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the digest");
    assert!(email.subject.starts_with("2 actions"), "{}", email.subject);
    let links = email.links();
    let list = links
        .iter()
        .find(|l| claims_of(l).decision == Decision::List)
        .expect("the digest links to the full list")
        .clone();
    let approve = links[0].clone();
    assert!(email.body.contains("See the full list"));
    let claims = claims_of(&list);
    assert!(claims.action_ids.is_empty());
    assert_eq!(claims.expires, claims_of(&approve).expires, "lives as long");
    // Wait until the digest's actions are pending (the e-mail goes out just before).
    eventually(WAIT, || async {
        let all = ts.store().practice_actions(&ts.practice).await.unwrap();
        (all.iter()
            .filter(|a| a.status == ActionStatus::Pending)
            .count()
            == 2)
            .then_some(())
    })
    .await
    .expect("pending");

    // The page: GET, read twice (a mail scanner's prefetch changes nothing).
    let (status, csp, page) = get(&list).await;
    assert_eq!(status, 200, "{page}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(get(&list).await.2, page, "the same page again");
    assert!(page.contains("Everything open, and what waits"), "{page}");
    assert!(page.contains("2 awaiting your decision"), "{page}");
    assert!(page.contains("3 waiting"), "{page}");
    assert!(
        !page.contains("href=") && !page.contains("<form"),
        "no link, no form"
    );
    // Only short codes, never a ref.
    for p in &patients {
        assert!(!page.contains(p.as_str()), "a ref on the page");
    }
    // Tonight's two (the most overdue), then the three that wait, in order, by night.
    let at = |p: &String| page.find(&format!("#{}", code(p))).expect("every patient");
    let order: Vec<usize> = patients.iter().rev().map(at).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "rank order: {order:?}"
    );
    let tomorrow = ts.today().tomorrow().unwrap();
    let after = tomorrow.tomorrow().unwrap();
    let night = |d: jiff::civil::Date| format!("id=\"night-{d}\"");
    assert!(page.contains(&night(tomorrow)) && page.contains(&night(after)));
    assert!(at(&patients[2]) < page.find(&night(after)).unwrap());
    assert!(at(&patients[0]) > page.find(&night(after)).unwrap());

    // It decides nothing: a POST is refused and changes nothing.
    let (status, _) = post(&list).await;
    assert_eq!(status, 405);
    let pending = ts
        .store()
        .practice_actions(&ts.practice)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.status == ActionStatus::Pending && a.kind == ActionKind::RebookNudge)
        .count();
    assert_eq!(pending, 2);

    // Tampered: the claims changed under the same signature; the same page as an approve
    // link's tampering.
    let tamper = |link: &str| {
        let (body, mac) = link.rsplit('/').next().unwrap().split_once('.').unwrap();
        let mut c: Claims = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body)
                .unwrap(),
        )
        .unwrap();
        c.expires += 3600;
        let body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&c).unwrap(),
        );
        format!("{}/v1/approvals/{body}.{mac}", ts.stack.api_url)
    };
    let (status, _, refused) = get(&tamper(&list)).await;
    assert_eq!(status, 400);
    assert!(refused.contains("This link is not valid"));
    assert_eq!(
        get(&tamper(&approve)).await.2,
        refused,
        "as an approve link"
    );

    // Expired: the same page as an expired approve link.
    let key = ts.link_key().await;
    let mut expired = claims_of(&list);
    expired.expires = jiff::Timestamp::now().as_second() - 1;
    let (status, _, gone) = get(&url(&ts, &expired, &key)).await;
    assert_eq!(status, 410);
    assert!(gone.contains("This link is no longer valid"));
    let mut expired_approve = claims_of(&approve);
    expired_approve.expires = expired.expires;
    assert_eq!(get(&url(&ts, &expired_approve, &key)).await.2, gone);

    // Revoked: the owner is no longer one of the practice's; the same page, for both links.
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
    assert_eq!(get(&list).await.0, 410);
    assert_eq!(get(&list).await.2, gone);
    assert_eq!(get(&approve).await.2, gone);
    // The new owner's list link works.
    let mut theirs = claims_of(&list);
    theirs.approver = token::approver_id("new-owner@test-clinic.example");
    let theirs = url(&ts, &theirs, &key);
    assert_eq!(get(&theirs).await.0, 200);

    // `pil secret rotate --which link --overlap-hours 0`: every outstanding link stops.
    let keys = ts.stack.scan_deps().unwrap().adapters.secrets.clone();
    admin::rotate_secret(
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
    let (status, _, page) = get(&theirs).await;
    assert_eq!((status, page), (400, refused));
    ts.stop().await;
}
