//! `pil conformance`: checks a PMS's trigger endpoint against the trigger contract
//! (docs/contracts.md, Triggers) by sending it signed test triggers, and prints a card of what
//! it got right and wrong. For a PMS team before go-live; it needs the endpoint and the
//! practice's trigger secret, nothing of the layer.
//!
//! The test triggers are real triggers of the contract's shape for a patient ref no practice
//! has (`p_conformance_…`), a rebook nudge that expires in ten minutes: an endpoint that acts
//! on them finds no patient. Point it at a staging endpoint where that matters. An endpoint
//! that acts on triggers (the Square relay) refuses a ref it never sent: `--patient-ref`
//! names a test patient it knows instead.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::json;
use shared::ids::PracticeId;
use shared::practice::TriggerUrl;
use shared::signature::{self, WebhookSecret};

/// One check of the card.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked, in a word (`valid_signature_accepted`, …).
    pub name: &'static str,
    pub passed: bool,
    /// What the contract expects.
    pub expected: &'static str,
    /// What the endpoint answered (`200`, `401`, `no answer: timeout`), and how fast.
    pub got: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Card {
    pub fn text(&self) -> String {
        let mut out = String::from("Trigger endpoint conformance\n\n");
        for c in &self.checks {
            out.push_str(&format!(
                "{} {:<32} expected {:<28} got {}\n",
                if c.passed { "✓" } else { "✗" },
                c.name,
                c.expected,
                c.got
            ));
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        out.push_str(&if failed == 0 {
            "\nThe endpoint meets the trigger contract.\n".to_owned()
        } else {
            format!(
                "\n{failed} of {} checks failed: see docs/contracts.md, Triggers.\n",
                self.checks.len()
            )
        });
        out
    }
}

/// An answer, or why there was none, and how long it took.
struct Answer {
    status: Option<u16>,
    why: String,
    took: Duration,
}

impl Answer {
    fn shown(&self) -> String {
        match self.status {
            Some(s) => format!("{s} in {} ms", self.took.as_millis()),
            None => format!("no answer: {}", self.why),
        }
    }
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
    fn refused(&self) -> bool {
        self.status
            .is_some_and(|s| (400..500).contains(&s) && s != 409 && s != 410 && s != 429)
    }
}

/// 20 random lowercase hex digits (from the secret generator's randomness).
fn new_id() -> String {
    WebhookSecret::generate().key_bytes()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A test trigger of the contract's shape, for `patient` or else a ref no practice has.
fn trigger(practice: &PracticeId, trigger_id: &str, patient: Option<&str>) -> Vec<u8> {
    let now = jiff::Timestamp::now();
    let expires = now + jiff::SignedDuration::from_mins(10);
    json!({
        "type": "action.rebook_nudge",
        "trigger_id": trigger_id,
        "practice_id": practice.as_str(),
        "patient_ref": patient.map_or_else(|| format!("p_conformance_{}", new_id()), str::to_owned),
        "treatment": "neurotoxin",
        "reason": "cycle_due",
        "due_since": now.to_zoned(jiff::tz::TimeZone::UTC).date().to_string(),
        "template": "rebook_default",
        "slot": null,
        "expires_at": expires.to_string(),
    })
    .to_string()
    .into_bytes()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> Answer {
    let started = Instant::now();
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header(signature::HEADER_ID, id)
        .header(signature::HEADER_TIMESTAMP, timestamp.to_string())
        .header(signature::HEADER_SIGNATURE, signature)
        .body(body.to_vec())
        .send()
        .await;
    let took = started.elapsed();
    match r {
        Ok(r) => Answer {
            status: Some(r.status().as_u16()),
            why: String::new(),
            took,
        },
        Err(e) if e.is_timeout() => Answer {
            status: None,
            why: "timeout".into(),
            took,
        },
        Err(e) if e.is_connect() => Answer {
            status: None,
            why: "could not connect".into(),
            took,
        },
        Err(_) => Answer {
            status: None,
            why: "request failed".into(),
            took,
        },
    }
}

/// Runs every check against `url` with the practice's trigger `secret`; `timeout` is the
/// layer's (10 s unless `TRIGGER_TIMEOUT_SECONDS` says otherwise). `patient`: the ref the
/// test triggers name (`--patient-ref`).
pub async fn run(
    url: &TriggerUrl,
    practice: &PracticeId,
    secret: &WebhookSecret,
    timeout: Duration,
    patient: Option<&str>,
) -> Result<Card> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        // Redirects are not followed by the layer either.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = url.as_str();
    let sign = |s: &WebhookSecret, id: &str, ts: i64, body: &[u8]| {
        s.sign(id, ts, body)
            .ok_or_else(|| anyhow!("the test trigger is not UTF-8"))
    };
    let now = || jiff::Timestamp::now().as_second();
    let mut checks = Vec::new();
    let mut answers = Vec::new();

    // 1. A valid trigger is taken.
    let id = format!("trg_conformance_{}", new_id());
    let body = trigger(practice, &id, patient);
    let ts = now();
    let a = post(&http, url, &id, ts, &sign(secret, &id, ts, &body)?, &body).await;
    checks.push(Check {
        name: "valid_signature_accepted",
        passed: a.ok(),
        expected: "2xx",
        got: a.shown(),
    });
    answers.push(a);

    // 2. The same trigger again (a retry: same webhook-id, a new attempt's timestamp) is one
    // delivery: 2xx or 409.
    let ts = now();
    let a = post(&http, url, &id, ts, &sign(secret, &id, ts, &body)?, &body).await;
    checks.push(Check {
        name: "repeated_webhook_id_is_one_delivery",
        passed: a.ok() || a.status == Some(409),
        expected: "2xx or 409",
        got: a.shown(),
    });
    answers.push(a);

    // 3. A signature made with another secret is refused.
    let id = format!("trg_conformance_{}", new_id());
    let body = trigger(practice, &id, patient);
    let stranger = WebhookSecret::generate();
    let ts = now();
    let a = post(
        &http,
        url,
        &id,
        ts,
        &sign(&stranger, &id, ts, &body)?,
        &body,
    )
    .await;
    checks.push(Check {
        name: "bad_signature_refused",
        passed: a.refused(),
        expected: "4xx (not 409, 410, 429)",
        got: a.shown(),
    });
    answers.push(a);

    // 4. No signature at all is refused.
    let a = post(&http, url, &id, now(), "", &body).await;
    checks.push(Check {
        name: "missing_signature_refused",
        passed: a.refused(),
        expected: "4xx (not 409, 410, 429)",
        got: a.shown(),
    });
    answers.push(a);

    // 5. A correct signature over a timestamp ten minutes old (a replay) is refused.
    let ts = now() - 600;
    let a = post(&http, url, &id, ts, &sign(secret, &id, ts, &body)?, &body).await;
    checks.push(Check {
        name: "stale_timestamp_refused",
        passed: a.refused(),
        expected: "4xx (not 409, 410, 429)",
        got: a.shown(),
    });
    answers.push(a);

    // 6. During a secret rotation the header carries two signatures, the new secret's first:
    // the endpoint holding either one takes the trigger.
    let id = format!("trg_conformance_{}", new_id());
    let body = trigger(practice, &id, patient);
    let ts = now();
    let both = format!(
        "{} {}",
        sign(&WebhookSecret::generate(), &id, ts, &body)?,
        sign(secret, &id, ts, &body)?
    );
    let a = post(&http, url, &id, ts, &both, &body).await;
    checks.push(Check {
        name: "either_signature_during_rotation",
        passed: a.ok(),
        expected: "2xx",
        got: a.shown(),
    });
    answers.push(a);

    // 7. Every answer came within the layer's timeout (a missing one is a retry for the layer).
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let all_answered = answers.iter().all(|a| a.status.is_some());
    checks.push(Check {
        name: "answers_within_timeout",
        passed: all_answered && slowest < timeout,
        expected: "every answer in time",
        got: if all_answered {
            format!("slowest {} ms", slowest.as_millis())
        } else {
            format!(
                "{} of {} unanswered",
                answers.iter().filter(|a| a.status.is_none()).count(),
                answers.len()
            )
        },
    });
    Ok(Card {
        passed: checks.iter().all(|c| c.passed),
        checks,
    })
}
