//! The owner's path in a real browser (Debian's headless `chromium`): the digest e-mail at
//! phone and desktop width, approve and reject through its links, approve-all, the
//! already-decided, reused, expired and not-valid pages, and the settings: the digest's
//! request page, the settings link it has e-mailed, the settings page and its save; each
//! asserts on what a person sees, on the state afterwards, and saves screenshots under
//! `target/screenshots/`.
//!
//! Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (NUL-separated
//! JSON on file descriptors 3 and 4), so clicks are real mouse events and a form's button
//! really POSTs; no WebDriver and no WebSocket crate. Without chromium the test is skipped
//! with a message, unless `CI` is set, where it fails (`make browser-tools` installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use shared::action::ActionKind;
use shared::action::ActionStatus;
use shared::ids::ActionId;
use shared::ports::{ActionRepo, AuditLog, PracticeRepo};
use shared::practice::Mode;
use shared::token::{self, Claims, Decision};
use tests::{TestStack, WAIT, completed, eventually, new_ref, workspace_root};

use cdp::{Browser, Viewport};

const PHONE: Viewport = Viewport {
    width: 390,
    height: 844,
    mobile: true,
};
const DESKTOP: Viewport = Viewport {
    width: 1280,
    height: 900,
    mobile: false,
};

/// Whether `CI` is set to a true value (not empty, `0`, `false`, `no` or `off`).
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

fn chromium_or_skip() -> Option<PathBuf> {
    match cdp::find_chromium() {
        Some(p) => Some(p),
        None if ci() => panic!(
            "chromium is not installed but CI is set, so the browser tests must run: \
             install it with `make browser-tools` (apt-get install chromium)"
        ),
        None => {
            eprintln!(
                "SKIPPED the browser tests: no chromium on PATH (install it with \
                 `make browser-tools`; with CI set this is a failure)"
            );
            None
        }
    }
}

fn claims_of(link: &str) -> Claims {
    let raw = link.rsplit('/').next().unwrap_or_default();
    let body = raw.split('.').next().unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64 claims")).expect("claims")
}

fn approvals_url(ts: &TestStack, token: &str) -> String {
    format!("{}/v1/approvals/{token}", ts.stack.api_url)
}

async fn status(ts: &TestStack, id: &ActionId) -> ActionStatus {
    ts.store()
        .get_action(&ts.practice, id)
        .await
        .expect("store")
        .expect("action")
        .status
}

fn approved(s: ActionStatus) -> bool {
    matches!(s, ActionStatus::Approved | ActionStatus::Delivered)
}

/// Saves each page at phone and desktop width (the viewport changes, the page is not reloaded,
/// so a POST's answer is captured too), then returns to `back`.
async fn shoot(b: &mut Browser, dir: &Path, name: &str, back: Viewport) {
    for (vp, suffix) in [(PHONE, "phone"), (DESKTOP, "desktop")] {
        b.viewport(vp).await.expect("viewport");
        assert!(
            b.fits_width().await.expect("layout"),
            "{name} scrolls sideways at {} px",
            vp.width
        );
        b.screenshot(&dir.join(format!("{name}-{suffix}.png")))
            .await
            .expect("screenshot");
    }
    b.viewport(back).await.expect("viewport");
}

/// What the page shows, with the checks every approval page must pass in the browser: its
/// stylesheet applied under the strict CSP (cream background, the vendored fonts loaded).
async fn seen(b: &mut Browser, http_status: u16) -> String {
    assert_eq!(b.http_status().await.expect("status"), http_status);
    let styled = b
        .eval(
            "document.fonts.ready.then(() => getComputedStyle(document.body).backgroundColor \
             + '|' + document.fonts.check('16px Newsreader') \
             + '|' + document.fonts.check('600 16px \"JetBrains Mono\"'))",
        )
        .await
        .expect("eval");
    assert_eq!(
        styled,
        json!("rgb(246, 241, 231)|true|true"),
        "the page's stylesheet and fonts apply under its CSP"
    );
    b.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_decides_in_a_real_browser() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let started = Instant::now();
    let shots = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let ts = TestStack::start().await.expect("stack");

    // Four patients due for a rebook, one e-mail.
    let patients: Vec<String> = (0..4).map(|_| new_ref("p")).collect();
    for (i, (p, (treatment, days))) in patients
        .iter()
        .zip([
            ("neurotoxin", 100),
            ("dermal_filler", 200),
            ("neurotoxin", 130),
            ("neurotoxin", 110),
        ])
        .enumerate()
    {
        let r = ts
            .send(&format!("msg_{i}"), &completed(p, treatment, days))
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    let report = ts
        .stack
        .scan_deps()
        .expect("scan deps")
        .scan(&ts.practice, ts.today())
        .await
        .expect("scan");
    assert_eq!(report.created.len(), 4, "{report:?}");
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the digest e-mail");
    assert!(
        email.subject.starts_with("4 actions awaiting approval · $"),
        "{}",
        email.subject
    );

    // Which link does what, from the links' own claims.
    let links = email.links();
    assert_eq!(
        links.len(),
        11,
        "approve + reject per action, approve all, the full list, settings request"
    );
    let mut approve: BTreeMap<ActionId, String> = BTreeMap::new();
    let mut reject: BTreeMap<ActionId, String> = BTreeMap::new();
    let mut approve_all = String::new();
    let mut settings_request = String::new();
    for l in &links {
        let c = claims_of(l);
        match (c.decision, c.action_ids.as_slice()) {
            (Decision::Approve, [one]) => drop(approve.insert(one.clone(), l.clone())),
            (Decision::Reject, [one]) => drop(reject.insert(one.clone(), l.clone())),
            (Decision::Approve, many) if many.len() == 4 => approve_all = l.clone(),
            (Decision::SettingsRequest, []) => settings_request = l.clone(),
            (Decision::List, []) => {}
            other => panic!("unexpected link {other:?}"),
        }
    }
    let ids: Vec<ActionId> = approve.keys().cloned().collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(reject.len(), 4);
    let (a, b_, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let mut code = BTreeMap::new();
    for id in &ids {
        // The e-mail goes out just before the actions are marked pending.
        let action = eventually(WAIT, || async {
            ts.store()
                .get_action(&ts.practice, id)
                .await
                .unwrap()
                .filter(|a| a.status == ActionStatus::Pending)
        })
        .await
        .expect("pending");
        code.insert(id.clone(), action.patient_ref.short_code());
    }

    let mut b = Browser::launch(&chromium).await.expect("chromium starts");

    // 1. The digest, as the owner's mail app would show it.
    let digest = shots.join("digest.html");
    std::fs::write(&digest, &email.body).expect("write digest");
    let digest_url = format!("file://{}", digest.canonicalize().unwrap().display());
    b.viewport(PHONE).await.unwrap();
    b.goto(&digest_url).await.unwrap();
    let text = b.text().await.unwrap();
    assert!(
        text.contains("4 patients could be brought back, worth about $"),
        "{text}"
    );
    assert!(text.contains("REBOOK NUDGES · 4"), "{text}");
    assert!(text.contains("Approve all 4"), "{text}");
    for id in &ids {
        assert!(text.contains(&format!("PATIENT #{}", code[id])), "{text}");
    }
    for p in &patients {
        assert!(
            !email.body.contains(p.as_str()),
            "a patient ref in the e-mail"
        );
    }
    for (l, n) in [("Approve", 4), ("Reject", 4)] {
        let count = b
            .eval(&format!(
                "[...document.querySelectorAll('a')].filter(a => a.textContent.trim() === '{l}').length"
            ))
            .await
            .unwrap();
        assert_eq!(count, json!(n), "{l} buttons");
    }
    shoot(&mut b, &shots, "01-digest", PHONE).await;

    // 2. Approve one action: the digest's link opens a confirmation page; GET changes nothing.
    b.click_and_wait(&format!("a[href=\"{}\"]", approve[a]))
        .await
        .unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Approve this action?"), "{text}");
    assert!(text.contains("PLEASE CONFIRM"), "{text}");
    assert!(text.contains(&code[a]), "{text}");
    let form = b
        .eval(
            "(() => { const f = document.querySelector('form'); \
             return [f.method, f.action, f.querySelector('button').textContent]; })()",
        )
        .await
        .unwrap();
    assert_eq!(form, json!(["post", approve[a], "Approve"]));
    shoot(&mut b, &shots, "02-confirm-approve", PHONE).await;
    // A prefetching mail scanner: GET and HEAD, again and again.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(http.get(&approve[a]).send().await.unwrap().status(), 200);
        assert_eq!(http.head(&approve[a]).send().await.unwrap().status(), 200);
        assert_eq!(http.get(&reject[a]).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        status(&ts, a).await,
        ActionStatus::Pending,
        "GET changes nothing"
    );
    b.click_and_wait("#confirm").await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Approved"), "{text}");
    assert!(text.contains("software will send the message"), "{text}");
    assert!(text.contains(&code[a]), "{text}");
    assert!(approved(status(&ts, a).await));
    shoot(&mut b, &shots, "03-approved", PHONE).await;

    // 3. Reject another.
    b.goto(&digest_url).await.unwrap();
    b.click_and_wait(&format!("a[href=\"{}\"]", reject[b_]))
        .await
        .unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Reject this action?"), "{text}");
    assert_eq!(status(&ts, b_).await, ActionStatus::Pending);
    shoot(&mut b, &shots, "04-confirm-reject", PHONE).await;
    b.click_and_wait("#confirm").await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Rejected"), "{text}");
    assert!(text.contains("Nothing will be sent"), "{text}");
    assert_eq!(status(&ts, b_).await, ActionStatus::Rejected);
    shoot(&mut b, &shots, "05-rejected", PHONE).await;

    // 4. The first link again: already decided, and no button to press.
    b.goto(&approve[a]).await.unwrap();
    let text = seen(&mut b, 409).await;
    assert!(text.contains("Already decided"), "{text}");
    assert_eq!(b.eval("document.forms.length").await.unwrap(), json!(0));
    shoot(&mut b, &shots, "06-already-decided", PHONE).await;

    // 5. A used link's nonce on a still-open action (a replayed, re-signed link): the page
    //    asks, the button's POST is refused, nothing changes.
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
    let mut replay = claims_of(&approve[a]);
    replay.action_ids = vec![c.clone()];
    b.goto(&approvals_url(&ts, &token::sign(&replay, &link)))
        .await
        .unwrap();
    seen(&mut b, 200).await;
    b.click_and_wait("#confirm").await.unwrap();
    let text = seen(&mut b, 409).await;
    assert!(text.contains("This link was already used"), "{text}");
    assert!(text.contains("Nothing was changed"), "{text}");
    assert_eq!(status(&ts, c).await, ActionStatus::Pending);
    shoot(&mut b, &shots, "07-reused", PHONE).await;

    // 6. Expired.
    let mut expired = claims_of(&approve[c]);
    expired.expires = jiff::Timestamp::now().as_second() - 60;
    b.goto(&approvals_url(&ts, &token::sign(&expired, &link)))
        .await
        .unwrap();
    let text = seen(&mut b, 410).await;
    assert!(text.contains("This link is no longer valid"), "{text}");
    assert_eq!(b.eval("document.forms.length").await.unwrap(), json!(0));
    shoot(&mut b, &shots, "08-expired", PHONE).await;

    // 7. Not valid: tampered (approve-all turned into reject-all), and another practice's key.
    let mut forged = claims_of(&approve_all);
    forged.decision = Decision::Reject;
    let mac = approve_all.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{mac}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
    );
    b.goto(&approvals_url(&ts, &tampered)).await.unwrap();
    let text = seen(&mut b, 400).await;
    assert!(text.contains("This link is not valid"), "{text}");
    assert_eq!(b.eval("document.forms.length").await.unwrap(), json!(0));
    shoot(&mut b, &shots, "09-invalid", PHONE).await;
    let cross = token::sign(&forged, &token::LinkKey::generate());
    b.goto(&approvals_url(&ts, &cross)).await.unwrap();
    assert!(seen(&mut b, 400).await.contains("not valid"));
    for id in [c, d] {
        assert_eq!(status(&ts, id).await, ActionStatus::Pending);
    }

    // 8. Approve all, on a desktop: the page lists all four, the POST decides the two open.
    b.viewport(DESKTOP).await.unwrap();
    b.goto(&digest_url).await.unwrap();
    b.click_and_wait("a[href=\"".to_owned() + &approve_all + "\"]")
        .await
        .unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Approve these actions?"), "{text}");
    for id in &ids {
        assert!(text.contains(&code[id]), "{text}");
    }
    assert!(text.contains("Awaiting your decision"), "{text}");
    let button = b
        .eval("document.querySelector('#confirm').textContent")
        .await
        .unwrap();
    assert_eq!(button, json!("Approve all"));
    shoot(&mut b, &shots, "10-confirm-approve-all", DESKTOP).await;
    b.click_and_wait("#confirm").await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Approved"), "{text}");
    assert!(text.contains("2 actions approved"), "{text}");
    shoot(&mut b, &shots, "11-approved-all", DESKTOP).await;
    assert!(approved(status(&ts, c).await) && approved(status(&ts, d).await));
    assert_eq!(
        status(&ts, b_).await,
        ActionStatus::Rejected,
        "approve-all leaves a rejection alone"
    );

    // 8. Approval settings. The digest's link asks for a settings link by e-mail (its page
    //    shows none); the e-mailed link opens the settings: the policy in words, GET changes
    //    nothing, the form saves by POST (audited with the approver), the link works once, and
    //    no page carries a link of any kind.
    b.viewport(PHONE).await.unwrap();
    b.goto(&digest_url).await.unwrap();
    b.click_and_wait(format!("a[href=\"{settings_request}\"]"))
        .await
        .unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Change your approval settings"), "{text}");
    assert!(text.contains("30 minutes"), "{text}");
    let no_links = "(() => [document.links.length, \
                    [...document.forms].map(f => f.action === location.href), \
                    document.documentElement.outerHTML.includes('/v1/approvals')])()";
    assert_eq!(b.eval(no_links).await.unwrap(), json!([0, [true], false]));
    let button = b
        .eval("document.querySelector('#confirm').textContent")
        .await
        .unwrap();
    assert_eq!(button, json!("E-mail me a settings link"));
    shoot(&mut b, &shots, "12-settings-request", PHONE).await;
    assert_eq!(ts.emails().await.len(), 1, "GET asked for nothing");
    b.click_and_wait("#confirm").await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Check your e-mail"), "{text}");
    assert_eq!(b.eval(no_links).await.unwrap(), json!([0, [], false]));
    shoot(&mut b, &shots, "13-settings-link-requested", PHONE).await;

    // The settings link arrives by e-mail, to the owner, bound to them, for 30 minutes.
    let mail = eventually(WAIT, || async {
        ts.emails()
            .await
            .into_iter()
            .find(|m| m.subject.contains("settings link"))
    })
    .await
    .expect("the settings link e-mail");
    assert_eq!(mail.to, ["owner@test-clinic.example"]);
    let settings = mail.links().first().cloned().expect("a settings link");
    let claims = claims_of(&settings);
    assert_eq!(claims.decision, Decision::Settings);
    assert_eq!(
        claims.approver,
        token::approver_id("owner@test-clinic.example")
    );
    let settings_token = settings.rsplit('/').next().unwrap().to_owned();
    let mail_file = shots.join("settings-link.html");
    std::fs::write(&mail_file, &mail.body).expect("write the settings e-mail");
    let mail_url = format!("file://{}", mail_file.canonicalize().unwrap().display());
    b.goto(&mail_url).await.unwrap();
    let text = b.text().await.unwrap();
    assert!(text.contains("Your approval settings link"), "{text}");
    assert!(text.contains("30 minutes"), "{text}");
    shoot(&mut b, &shots, "14-settings-link-email", PHONE).await;

    b.click_and_wait(format!("a[href=\"{settings}\"]"))
        .await
        .unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Approval settings"), "{text}");
    assert!(text.contains("REBOOK NUDGES"), "{text}");
    assert!(text.contains("Now: I approve each one"), "{text}");
    assert_eq!(b.eval(no_links).await.unwrap(), json!([0, [true], false]));
    let carries_token = format!(
        "document.documentElement.outerHTML.includes({})",
        serde_json::to_string(&settings_token).unwrap()
    );
    assert_eq!(b.eval(&carries_token).await.unwrap(), json!(false));
    shoot(&mut b, &shots, "15-settings", PHONE).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(http.get(&settings).send().await.unwrap().status(), 200);
    }
    let policy = |ts: &TestStack| {
        let store = ts.store().clone();
        let id = ts.practice.clone();
        async move { store.get_practice(&id).await.unwrap().unwrap().policy }
    };
    let before = policy(&ts).await;
    assert_eq!(
        before.for_kind(ActionKind::RebookNudge).mode,
        Mode::Approve,
        "GET changed nothing"
    );
    // A mistake is named (never echoed) and nothing is saved; the link still works.
    // (The browser's own checks would stop 999 first; switch them off to reach the server's.)
    b.eval(
        "(() => { document.querySelector('#settings').noValidate = true; \
         document.querySelector('#cooldown').value = '999'; return true; })()",
    )
    .await
    .unwrap();
    b.click_and_wait("#save").await.unwrap();
    let text = seen(&mut b, 422).await;
    assert!(
        text.contains("Days between two messages: a whole number from 0 to 365"),
        "{text}"
    );
    assert!(!text.contains("999"), "the value is not echoed");
    assert_eq!(b.eval(&carries_token).await.unwrap(), json!(false));
    shoot(&mut b, &shots, "16-settings-mistake", PHONE).await;
    assert_eq!(policy(&ts).await, before, "nothing saved");
    // Rebook nudges automatic, at most 5 a day; cooldown 9 days.
    b.eval(
        "(() => { document.querySelector('#mode-rebook_nudge').value = 'auto'; \
         document.querySelector('#day-rebook_nudge').value = '5'; \
         document.querySelector('#cooldown').value = '9'; return true; })()",
    )
    .await
    .unwrap();
    b.click_and_wait("#save").await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Settings saved"), "{text}");
    assert!(
        text.contains("Sent automatically, up to 5 a day and $1,000 each; the rest come to me"),
        "{text}"
    );
    assert!(text.contains("at most one message every 9 days"), "{text}");
    assert!(text.contains("in your latest digest"), "{text}");
    // No fresh settings link on the saved page: a new one comes by e-mail.
    assert_eq!(b.eval(no_links).await.unwrap(), json!([0, [], false]));
    shoot(&mut b, &shots, "17-settings-saved", DESKTOP).await;
    let after = policy(&ts).await;
    let rebook = after.for_kind(ActionKind::RebookNudge);
    assert_eq!((rebook.mode, rebook.max_auto_per_day), (Mode::Auto, 5));
    assert_eq!(after.cooldown_days, 9);
    let (trail, _) = ts.store().audit_trail(&ts.practice).await.unwrap();
    let last = trail.iter().max_by_key(|r| r.seq).unwrap();
    assert_eq!(last.event, "policy_changed");
    assert!(last.actor.starts_with("owner:ap_"), "{}", last.actor);
    assert!(trail.iter().any(|r| r.event == "settings_link_sent"));
    // The used link changes nothing more.
    let again = http
        .post(&settings)
        .body("cooldown_days=3")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(policy(&ts).await.cooldown_days, 9);

    assert!(b.csp_violations().is_empty(), "{:?}", b.csp_violations());
    b.close().await;

    // 9. From digest to trigger: the three approvals reach the PMS, once each.
    for id in [a, c, d] {
        let delivered = eventually(WAIT, || async {
            (status(&ts, id).await == ActionStatus::Delivered).then_some(())
        })
        .await;
        assert!(delivered.is_some(), "{id} delivered");
    }
    let received = ts.stack.pms.received();
    assert_eq!(
        received
            .iter()
            .filter(|r| r.verified && !r.duplicate)
            .count(),
        3,
        "{received:?}"
    );
    ts.stop().await;
    eprintln!(
        "browser test: {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}

/// A practice's first night after a history import: the digest holds the nightly budget's
/// cards, says how many more wait, and reads on a phone and a desktop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_first_night_digest_reads_on_phone_and_desktop() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let shots = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let ts = TestStack::start().await.expect("stack");
    // 120 rebooks due (neurotoxin and filler, 95 days to a year ago), in batches of 100.
    let history: Vec<serde_json::Value> = (0..120)
        .map(|i| {
            let (t, base) = if i % 4 == 0 {
                ("dermal_filler", 185)
            } else {
                ("neurotoxin", 95)
            };
            completed(&new_ref("p"), t, base + i)
        })
        .collect();
    for (n, chunk) in history.chunks(100).enumerate() {
        let r = ts
            .send(&format!("msg_hist_{n}"), &json!({ "events": chunk }))
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    let report = ts
        .stack
        .scan_deps()
        .expect("scan deps")
        .scan(&ts.practice, ts.today())
        .await
        .expect("scan");
    assert_eq!((report.created.len(), report.deferred), (25, 95));
    let email = eventually(WAIT, || async { ts.emails().await.into_iter().next() })
        .await
        .expect("the digest e-mail");
    assert!(email.subject.starts_with("25 actions awaiting approval"));

    let mut b = Browser::launch(&chromium).await.expect("chromium starts");
    let digest = shots.join("first-night-digest.html");
    std::fs::write(&digest, &email.body).expect("write digest");
    let url = format!("file://{}", digest.canonicalize().unwrap().display());
    b.viewport(PHONE).await.unwrap();
    b.goto(&url).await.unwrap();
    let text = b.text().await.unwrap();
    assert!(text.contains("25 patients could be brought back"), "{text}");
    assert!(
        text.contains(
            "95 more due patients wait over the nightly limit of 25: they come in the next 4 nights"
        ),
        "{text}"
    );
    let approve = b
        .eval("[...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'Approve').length")
        .await
        .unwrap();
    assert_eq!(approve, json!(25), "one card per proposed action, no more");
    shoot(&mut b, &shots, "20-first-night-digest", PHONE).await;

    // The digest's full list, over the local API: today's 25 awaiting a decision, then the 95
    // that wait, in the order they will come, 25 a night.
    let list = email
        .links()
        .into_iter()
        .find(|l| claims_of(l).decision == Decision::List)
        .expect("the full list link");
    b.goto(&list).await.unwrap();
    let text = seen(&mut b, 200).await;
    assert!(text.contains("Everything open, and what waits"), "{text}");
    assert!(
        text.contains("25 awaiting your decision") && text.contains("95 waiting"),
        "{text}"
    );
    let counts = b
        .eval(
            "[document.querySelectorAll('#open article.card').length,              document.querySelectorAll('#waiting li.row').length,              document.querySelectorAll('#waiting h3.night').length,              document.querySelectorAll('a, form, script').length].join(',')",
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        json!("25,95,4,0"),
        "25 cards, 95 rows over 4 nights, no link, form or script"
    );
    shoot(&mut b, &shots, "21-first-night-full-list", PHONE).await;
    ts.stop().await;
}

/// A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`.
mod cdp {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::Duration;

    use anyhow::{Context, Result, anyhow, bail};
    use base64::Engine as _;
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::process::{Child, ChildStdin, Command};
    use tokio::sync::mpsc;

    const STEP: Duration = Duration::from_secs(15);

    #[derive(Debug, Clone, Copy)]
    pub struct Viewport {
        pub width: u32,
        pub height: u32,
        pub mobile: bool,
    }

    /// `$PIL_CHROMIUM`, else the first of Debian's and Google's names on `PATH`.
    pub fn find_chromium() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("PIL_CHROMIUM") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
    }

    pub struct Browser {
        child: Child,
        stdin: ChildStdin,
        rx: mpsc::UnboundedReceiver<Value>,
        events: Vec<Value>,
        csp: Vec<String>,
        next_id: u64,
        session: String,
        profile: PathBuf,
    }

    impl Browser {
        pub async fn launch(chromium: &Path) -> Result<Self> {
            let profile = std::env::temp_dir().join(format!(
                "pil-chromium-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_nanosecond()
            ));
            std::fs::create_dir_all(&profile)?;
            let log = std::fs::File::create(profile.join("chromium.log"))?;
            // bash hands our pipes to chromium as fds 3 (commands in) and 4 (replies out).
            let mut child = Command::new("bash")
                .arg("-c")
                .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
                .arg(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate,MediaRouter,OptimizationHints",
                    "--hide-scrollbars",
                    "--mute-audio",
                    "--password-store=basic",
                    "--remote-debugging-pipe",
                    "--window-size=390,844",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .context("spawn chromium")?;
            let stdin = child.stdin.take().context("stdin")?;
            let stdout = child.stdout.take().context("stdout")?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(0, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if buf.last() == Some(&0) {
                                buf.pop();
                            }
                            if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                                && tx.send(v).is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            });
            let mut b = Self {
                child,
                stdin,
                rx,
                events: Vec::new(),
                csp: Vec::new(),
                next_id: 0,
                session: String::new(),
                profile,
            };
            let target = b
                .call("Target.createTarget", json!({"url": "about:blank"}))
                .await?;
            let target_id = target["targetId"].as_str().context("targetId")?.to_owned();
            let attached = b
                .call(
                    "Target.attachToTarget",
                    json!({"targetId": target_id, "flatten": true}),
                )
                .await?;
            b.session = attached["sessionId"]
                .as_str()
                .context("sessionId")?
                .to_owned();
            b.call("Page.enable", json!({})).await?;
            b.call("Log.enable", json!({})).await?;
            b.call("Runtime.enable", json!({})).await?;
            Ok(b)
        }

        async fn next(&mut self) -> Result<Value> {
            let v = tokio::time::timeout(STEP, self.rx.recv())
                .await
                .map_err(|_| anyhow!("chromium did not answer within {STEP:?}"))?
                .ok_or_else(|| anyhow!("chromium exited"))?;
            let s = v.to_string();
            if s.contains("Content Security Policy") || s.contains("Content-Security-Policy") {
                self.csp.push(s);
            }
            Ok(v)
        }

        pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
            self.next_id += 1;
            let id = self.next_id;
            let mut msg = json!({"id": id, "method": method, "params": params});
            if !self.session.is_empty() {
                msg["sessionId"] = json!(self.session);
            }
            let mut bytes = serde_json::to_vec(&msg)?;
            bytes.push(0);
            self.stdin.write_all(&bytes).await?;
            self.stdin.flush().await?;
            loop {
                let v = self.next().await?;
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        bail!("{method}: {e}");
                    }
                    return Ok(v["result"].clone());
                }
                if v.get("method").is_some() {
                    self.events.push(v);
                }
            }
        }

        async fn wait_event(&mut self, method: &str) -> Result<Value> {
            loop {
                if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
                    return Ok(self.events.remove(i));
                }
                let v = self
                    .next()
                    .await
                    .with_context(|| format!("waiting for {method}"))?;
                if v.get("method").is_some() {
                    self.events.push(v);
                }
            }
        }

        pub async fn viewport(&mut self, vp: Viewport) -> Result<()> {
            self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": vp.width, "height": vp.height,
                       "deviceScaleFactor": if vp.mobile { 2 } else { 1 }, "mobile": vp.mobile}),
            )
            .await?;
            Ok(())
        }

        pub async fn goto(&mut self, url: &str) -> Result<()> {
            self.events.clear();
            let r = self.call("Page.navigate", json!({"url": url})).await?;
            if let Some(e) = r.get("errorText") {
                bail!("navigating to {url}: {e}");
            }
            self.wait_event("Page.loadEventFired").await?;
            Ok(())
        }

        pub async fn eval(&mut self, expression: &str) -> Result<Value> {
            let r = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
                )
                .await?;
            if let Some(e) = r.get("exceptionDetails") {
                bail!("{expression}: {e}");
            }
            Ok(r["result"]["value"].clone())
        }

        /// What a person reads: the rendered text (CSS text-transform applied).
        pub async fn text(&mut self) -> Result<String> {
            Ok(self
                .eval("document.body.innerText")
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }

        /// The HTTP status the current page was served with.
        pub async fn http_status(&mut self) -> Result<u16> {
            let v = self
                .eval("performance.getEntriesByType('navigation')[0].responseStatus")
                .await?;
            Ok(u16::try_from(v.as_u64().unwrap_or_default()).unwrap_or_default())
        }

        /// True when nothing is wider than the viewport (no sideways scrolling).
        pub async fn fits_width(&mut self) -> Result<bool> {
            let v = self
                .eval("document.documentElement.scrollWidth <= window.innerWidth")
                .await?;
            Ok(v == json!(true))
        }

        /// A real left click (mouse events at the element's centre), then waits for the page
        /// it leads to.
        pub async fn click_and_wait(&mut self, selector: impl AsRef<str>) -> Result<()> {
            let selector = selector.as_ref();
            let rect = self
                .eval(&format!(
                    "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                     e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                     return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                    serde_json::to_string(selector)?
                ))
                .await?;
            let (x, y) = match rect.as_array().map(Vec::as_slice) {
                Some([x, y]) => (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0)),
                _ => bail!("nothing on the page matches {selector}"),
            };
            self.events.clear();
            for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
                self.call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                )
                .await?;
            }
            self.wait_event("Page.loadEventFired").await?;
            Ok(())
        }

        /// A PNG of the whole page (not only the viewport).
        pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
            self.eval("document.fonts.ready.then(() => true)").await?;
            let m = self.call("Page.getLayoutMetrics", json!({})).await?;
            let width = m["cssLayoutViewport"]["clientWidth"]
                .as_f64()
                .unwrap_or(0.0);
            let height = m["cssContentSize"]["height"].as_f64().unwrap_or(0.0);
            let shot = self
                .call(
                    "Page.captureScreenshot",
                    json!({"format": "png", "captureBeyondViewport": true,
                           "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
                )
                .await?;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap_or_default())?;
            std::fs::write(path, png)?;
            Ok(())
        }

        /// Console reports of anything the page's CSP blocked.
        pub fn csp_violations(&self) -> &[String] {
            &self.csp
        }

        pub async fn close(mut self) {
            self.session.clear();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.call("Browser.close", json!({})),
            )
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
            let _ = self.child.kill().await;
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.child.start_kill();
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

#[allow(dead_code)]
fn _unused(_: Duration) {}
