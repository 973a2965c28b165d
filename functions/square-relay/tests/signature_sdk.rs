//! The relay's Square webhook signature against Square's official Python SDK
//! (`squareup`, pinned in infra/python/requirements-local.txt; its helper
//! `square.utils.webhooks_helper.verify_signature`): random keys, notification URLs and
//! bodies, signed with `SignatureKey::sign`, and tampered copies of each (one character of
//! the body, the URL, the key or the signature changed). The SDK must accept every untampered
//! signature and agree with `SignatureKey::verify` on every case.
//!
//! One known difference: the SDK refuses any empty body (`if not request_body: return
//! False`) before it looks at the signature; for an empty body only the SDK's `false` is
//! asserted.
//!
//! Needs the project's venv (`make setup`); without it the test is skipped with a message,
//! or fails when `CI` is set. `SIGNATURE_SDK_SEED=<n>` replays a run.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use square_relay::square::signature::SignatureKey;

const CASES: usize = 300;

/// Whether `CI` is set to a true value (not empty, `0`, `false`, `no` or `off`).
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python with the SDK, or `None` (skipped) when it is missing outside CI.
fn sdk_or_skip() -> Option<PathBuf> {
    let python = root().join(".venv/bin/python");
    let script = root().join("infra/python/square_signature_check.py");
    let version = Command::new(&python)
        .arg(&script)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    match version {
        Some(o) => {
            eprintln!(
                "squareup {} at {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                python.display()
            );
            Some(python)
        }
        None if ci() => panic!(
            "Square's Python SDK is not in {} but CI is set, so the signature cross-check must \
             run: `make setup` installs it (infra/python/requirements-local.txt)",
            python.display()
        ),
        None => {
            eprintln!(
                "SKIPPED the Square SDK signature cross-check: no squareup SDK in {} (run `make \
                 setup`; with CI set this is a failure)",
                python.display()
            );
            None
        }
    }
}

/// Characters the generated strings are made of: ASCII, JSON's special characters, controls,
/// line and paragraph separators, accented letters, CJK and emoji.
const CHARS: &[char] = &[
    'a',
    'b',
    'z',
    'A',
    'Q',
    'Z',
    '0',
    '7',
    '9',
    ' ',
    '-',
    '_',
    '.',
    '~',
    '+',
    '/',
    '=',
    '%',
    '&',
    '?',
    '#',
    ':',
    '@',
    '"',
    '\\',
    '{',
    '}',
    '[',
    ']',
    ',',
    '\n',
    '\r',
    '\t',
    '\u{0}',
    '\u{1f}',
    '\u{7f}',
    '\u{a0}',
    '\u{2028}',
    '\u{2029}',
    'é',
    'ü',
    'ß',
    'Ö',
    'ñ',
    'ж',
    'ψ',
    '日',
    '本',
    '語',
    '\u{200b}',
    '\u{feff}',
    '😀',
    '🦷',
    '\u{10ffff}',
];
const URL_CHARS: &[char] = &[
    'a', 'k', 'z', 'A', 'Z', '0', '5', '-', '_', '.', '~', '%', '2', 'F', 'é', 'ü', '日', '😀',
];
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

fn text(rng: &mut StdRng, chars: &[char], max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| *chars.choose(rng).unwrap_or(&'a')).collect()
}

fn key(rng: &mut StdRng) -> String {
    loop {
        let k = match rng.random_range(0..3) {
            // Like Square's: 22 characters of base64url.
            0 => (0..22)
                .map(|_| {
                    char::from(
                        *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                            .choose(rng)
                            .unwrap_or(&b'a'),
                    )
                })
                .collect(),
            1 => text(rng, CHARS, 80),
            _ => format!(" {} ", text(rng, CHARS, 8)),
        };
        if SignatureKey::new(k.clone()).is_ok() {
            return k;
        }
    }
}

fn url(rng: &mut StdRng) -> String {
    let host = *[
        "example.com",
        "relay.practice.example",
        "abc123.execute-api.eu-west-1.amazonaws.com",
        "127.0.0.1:8443",
        "xn--bcher-kva.example",
        "bücher.example",
    ]
    .choose(rng)
    .unwrap_or(&"example.com");
    let scheme = if rng.random_bool(0.9) {
        "https"
    } else {
        "http"
    };
    let mut u = format!("{scheme}://{host}");
    for _ in 0..rng.random_range(0..4) {
        u.push('/');
        u.push_str(&text(rng, URL_CHARS, 12));
    }
    if rng.random_bool(0.2) {
        u.push('/');
    }
    if rng.random_bool(0.4) {
        u.push('?');
        for i in 0..rng.random_range(1..4) {
            if i > 0 {
                u.push('&');
            }
            u.push_str(&format!(
                "{}={}",
                text(rng, URL_CHARS, 6),
                text(rng, URL_CHARS, 10)
            ));
        }
    }
    if rng.random_bool(0.05) {
        u.push_str("#frag");
    }
    u
}

fn body(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => String::new(),
        1..=5 => {
            // A notification like Square's, with random text in its fields.
            let v = json!({
                "merchant_id": text(rng, CHARS, 13),
                "type": "booking.updated",
                "event_id": text(rng, CHARS, 36),
                "created_at": "2025-05-01T09:00:00Z",
                "data": {
                    "type": "booking",
                    "id": format!("{}:{}", text(rng, CHARS, 14), rng.random_range(0..9)),
                    "object": {"booking": {
                        "customer_note": text(rng, CHARS, 60),
                        "seller_note": text(rng, CHARS, 20),
                        "version": rng.random_range(0..100),
                    }},
                },
            });
            if rng.random_bool(0.5) {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                v.to_string()
            }
        }
        _ => text(rng, CHARS, 400),
    }
}

/// `s` with the character at a random position replaced by another one (or one appended
/// to an empty `s`).
fn change_one(rng: &mut StdRng, s: &str, pool: &[char]) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return pool.choose(rng).map(|c| c.to_string()).unwrap_or_default();
    }
    let i = rng.random_range(0..chars.len());
    loop {
        let c = *pool.choose(rng).unwrap_or(&'a');
        if c != chars[i] {
            chars[i] = c;
            return chars.into_iter().collect();
        }
    }
}

struct Case {
    what: &'static str,
    body: String,
    signature_header: String,
    signature_key: String,
    notification_url: String,
    tampered: bool,
}

fn cases(rng: &mut StdRng) -> Vec<Case> {
    let b64: Vec<char> = B64.iter().map(|b| char::from(*b)).collect();
    let mut out = Vec::new();
    for _ in 0..CASES {
        let (k, u, b) = (key(rng), url(rng), body(rng));
        let sig = SignatureKey::new(k.clone())
            .expect("a non-blank key")
            .sign(&u, b.as_bytes());
        let case = |what, body: &str, sig: &str, key: &str, url: &str, tampered| Case {
            what,
            body: body.to_owned(),
            signature_header: sig.to_owned(),
            signature_key: key.to_owned(),
            notification_url: url.to_owned(),
            tampered,
        };
        out.push(case("untampered", &b, &sig, &k, &u, false));
        out.push(case(
            "body",
            &change_one(rng, &b, CHARS),
            &sig,
            &k,
            &u,
            true,
        ));
        out.push(case(
            "url",
            &b,
            &sig,
            &k,
            &change_one(rng, &u, URL_CHARS),
            true,
        ));
        let other_key = loop {
            let k2 = change_one(rng, &k, CHARS);
            if SignatureKey::new(k2.clone()).is_ok() {
                break k2;
            }
        };
        out.push(case("key", &b, &sig, &other_key, &u, true));
        out.push(case(
            "signature",
            &b,
            &change_one(rng, &sig, &b64),
            &k,
            &u,
            true,
        ));
    }
    out
}

#[test]
fn the_sdk_and_the_relay_agree_on_signatures() {
    let Some(python) = sdk_or_skip() else {
        return;
    };
    let seed = std::env::var("SIGNATURE_SDK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    let mut rng = StdRng::seed_from_u64(seed);
    let cases = cases(&mut rng);

    let mut input = Vec::new();
    for c in &cases {
        let line = json!({
            "body": c.body,
            "signature_header": c.signature_header,
            "signature_key": c.signature_key,
            "notification_url": c.notification_url,
        });
        serde_json::to_writer(&mut input, &line).expect("a JSON line");
        input.push(b'\n');
    }
    let mut child = Command::new(&python)
        .arg(root().join("infra/python/square_signature_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the SDK script starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the SDK script ends");
    writer
        .join()
        .expect("writer")
        .expect("the cases are written");
    assert!(
        output.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<bool> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| match l {
            "true" => true,
            "false" => false,
            other => panic!("the SDK script printed {other:?}"),
        })
        .collect();
    assert_eq!(answers.len(), cases.len(), "one answer per case");

    let mut empty_body_accepted_by_relay = 0;
    for (c, sdk) in cases.iter().zip(&answers) {
        let relay = SignatureKey::new(c.signature_key.clone())
            .expect("a non-blank key")
            .verify(&c.notification_url, c.body.as_bytes(), &c.signature_header);
        let show = || {
            format!(
                "seed {seed} (SIGNATURE_SDK_SEED={seed} replays it), {} case: key {:?}, url \
                 {:?}, body {:?}, signature {:?}: SDK {sdk}, relay {relay}",
                c.what, c.signature_key, c.notification_url, c.body, c.signature_header
            )
        };
        if c.body.is_empty() {
            assert!(!sdk, "the SDK refuses an empty body: {}", show());
            if relay {
                empty_body_accepted_by_relay += 1;
            }
            continue;
        }
        assert_eq!(
            *sdk,
            relay,
            "the SDK and SignatureKey::verify disagree: {}",
            show()
        );
        if !c.tampered {
            assert!(
                sdk,
                "the SDK refuses a signature SignatureKey::sign made: {}",
                show()
            );
        }
    }
    if empty_body_accepted_by_relay > 0 {
        eprintln!(
            "NOTE: SignatureKey::verify accepted {empty_body_accepted_by_relay} signed empty \
             bodies that Square's SDK refuses (it answers false for any empty body)"
        );
    }
    let untampered = cases.iter().filter(|c| !c.tampered).count();
    eprintln!(
        "seed {seed}: {} cases ({untampered} untampered) checked against squareup",
        cases.len()
    );
}
