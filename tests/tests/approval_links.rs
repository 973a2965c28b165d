//! Approval links: GET never changes state; tampered, cross-practice, expired and reused
//! tokens change nothing.

use pil_shared::action::ActionStatus;
use pil_shared::ports::{ActionRepo, PracticeRepo};
use pil_shared::token::{self, Claims, Decision};
use pil_tests::{TestStack, WAIT, completed, eventually, new_ref};

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
        3,
        "one action: approve and reject, no approve-all; the settings link"
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
    let other = pil_shared::token::LinkKey::generate();
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
        .link(&practice.secrets)
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
