//! The scripted scenario `make run` plays against a running local stack, told as a story.
//! Every expected outcome is checked; the run fails if any did not happen.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use jiff::{SignedDuration, Timestamp};
use pil_shared::action::{ActionKind, ActionStatus};
use pil_shared::ids::{ActionId, OpaqueRef, PracticeId};
use pil_shared::ports::{ActionRepo, EntityRepo, PracticeRepo};
use pil_shared::practice::Mode;
use pil_shared::service::admin::{self, KindChange, NewPractice};
use pil_shared::signature::WebhookSecret;
use pil_shared::state::EntityKey;
use pil_shared::treatment::Treatment;
use rand::Rng;
use serde_json::json;

use crate::pms::{PmsClient, Scripted};
use crate::stack::Stack;

/// What happened, line by line, and which expectations failed.
#[derive(Debug, Default)]
pub struct Story {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Story {
    fn say(&mut self, s: impl Into<String>) {
        let s = s.into();
        tracing::debug!(line = %s, "story");
        self.lines.push(s);
    }
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.lines.push(format!("   ✓ {what}"));
        } else {
            self.lines.push(format!("   ✗ {what}"));
            self.failures.push(what.to_owned());
        }
    }
    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        if self.failures.is_empty() {
            out.push_str("\nEvery expected outcome happened.\n");
        } else {
            out.push_str(&format!(
                "\n{} expected outcome(s) did not happen:\n",
                self.failures.len()
            ));
            for f in &self.failures {
                out.push_str(&format!("  - {f}\n"));
            }
        }
        out
    }
}

/// A random-looking opaque ref, as a PMS would issue.
pub fn new_ref(prefix: &str) -> String {
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut r = rand::rng();
    loop {
        let body: String = (0..20)
            .map(|_| A[r.random_range(0..A.len())] as char)
            .collect();
        // Make sure it mixes letters and digits, as the guard expects of an opaque id.
        let candidate = format!("{prefix}_{}7{}", &body[..10], &body[10..]);
        // Roughly one draw in a million has a run of nine digits, which the guard refuses as
        // an identifier from another system: draw again (bulk loads make that many refs).
        if OpaqueRef::parse(&candidate).is_ok() {
            return candidate;
        }
    }
}

pub async fn eventually<F, Fut, T>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ago(days: i64) -> String {
    (Timestamp::now() - SignedDuration::from_hours(24 * days)).to_string()
}

fn completed(patient: &str, t: Treatment, days_ago: i64) -> serde_json::Value {
    json!({"type": "appointment.completed", "occurred_at": ago(days_ago),
           "data": {"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": t.as_str()}})
}

pub const DEMO_PRACTICE: &str = "demo-aesthetics";
pub const DEMO_OWNER: &str = "owner@demo-aesthetics.example";

pub async fn run(stack: &Stack) -> Result<Story> {
    let mut story = Story::default();
    let store = &stack.scan_deps()?.adapters.store;
    let keys = stack.scan_deps()?.adapters.secrets.clone();
    let pid = PracticeId::parse(DEMO_PRACTICE)?;
    let tz = "America/New_York";
    let pms = PmsClient::new(&stack.api_url);

    story.say(format!(
        "Local stack up: API {}, emulator {}, PMS simulator {}",
        stack.api_url, stack.moto.url, stack.pms.url
    ));
    story.say(format!(
        "Resources created from template.yaml: {} functions, {} routes, {} queue mappings",
        stack.deployed.functions.len(),
        stack.deployed.routes.len(),
        stack.deployed.mappings.len()
    ));

    // 1. Onboarding.
    let onboarded = admin::create_practice(
        store,
        keys.keys(),
        NewPractice {
            id: pid.clone(),
            time_zone: tz.into(),
            owner_emails: vec![DEMO_OWNER.into()],
            trigger_url: stack.pms.trigger_url(),
        },
        true,
    )
    .await?;
    let secret = WebhookSecret::parse(&onboarded.webhook_secret).map_err(|e| anyhow!("{e}"))?;
    story.say(format!(
        "\n1. Onboarded practice {pid} ({tz}); policy: every action needs the owner's approval."
    ));

    // 2. A night's worth of events from the PMS.
    let (a, b, c, d, e) = (
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
    );
    let batch = json!({"events": [
        completed(&a, Treatment::Neurotoxin, 100),
        completed(&b, Treatment::Neurotoxin, 100),
        {"type": "appointment.booked", "occurred_at": ago(2),
         "data": {"appointment_ref": new_ref("appt"), "patient_ref": b, "treatment": "neurotoxin", "provider_ref": new_ref("prov"),
                  "starts_at": (Timestamp::now() + SignedDuration::from_hours(24 * 7)).to_string(), "duration_min": 30}},
        completed(&c, Treatment::DermalFiller, 200),
        completed(&d, Treatment::Neurotoxin, 10),
        completed(&e, Treatment::Neurotoxin, 120),
        {"type": "patient.opted_out", "occurred_at": ago(1), "data": {"patient_ref": e}},
    ]})
    .to_string();
    story.say(
        "\n2. The PMS sends a batch of 7 events (5 completed treatments, 1 booking, 1 opt-out):",
    );
    story.say("   #A neurotoxin 100 days ago · #B neurotoxin 100 days ago, rebooked for next week · #C filler 200 days ago");
    story.say("   #D neurotoxin 10 days ago · #E neurotoxin 120 days ago, opted out of nudges");
    let r = pms
        .send(pid.as_str(), &secret, "msg_batch_0001", &batch)
        .await?;
    story.check(r.status == 202, "signed batch accepted with 202");

    // 3. PHI is refused and leaves no trace.
    let phi = json!({"type": "patient.opted_out", "occurred_at": ago(0), "data": {"patient_ref": "jane.doe@example.com"}}).to_string();
    let r = pms
        .send(pid.as_str(), &secret, "msg_phi_0001", &phi)
        .await?;
    story.say(format!(
        "\n3. A PHI-laden payload (an e-mail address as patient_ref) → {} {}",
        r.status, r.body
    ));
    story.check(
        r.status == 422
            && r.body["error"]["field"] == "data.patient_ref"
            && r.body["error"]["rule"] == "email",
        "refused with 422 naming data.patient_ref and rule email",
    );
    story.check(
        !r.body.to_string().contains("jane"),
        "the refusal does not echo the value",
    );
    let dump = table_dump(stack).await?;
    story.check(
        !dump.contains("jane.doe"),
        "nothing of it is stored in the table",
    );

    // 4. A duplicate delivery has no second effect.
    let before = stack.meter.snapshot();
    let r = pms
        .send(pid.as_str(), &secret, "msg_batch_0001", &batch)
        .await?;
    let after = stack.meter.snapshot();
    story.say(format!(
        "\n4. The PMS retries the same batch (same webhook-id) → {}",
        r.status
    ));
    story.check(r.status == 202, "duplicate answered 202");
    story.check(
        after.write_requests == before.write_requests,
        "duplicate wrote nothing (no second effect)",
    );

    // 5. The nightly scan, through the scan queue as the schedule would.
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get(tz)?)
        .date();
    let scan_queue = stack.resource("ScanQueue")?.to_owned();
    let send_scan = || async {
        stack
            .clients
            .sqs
            .send_message()
            .queue_url(&scan_queue)
            .message_body(
                json!({"kind": "scan", "practice_id": pid.as_str(), "date": today.to_string()})
                    .to_string(),
            )
            .send()
            .await
    };
    send_scan().await?;
    story.say(format!(
        "\n5. Nightly scan for {pid} on {today} (practice-local date), via the scan queue."
    ));
    let email = eventually(Duration::from_secs(30), || async {
        stack
            .moto
            .sent_emails()
            .await
            .ok()
            .and_then(|m| m.into_iter().last())
    })
    .await;
    let Some(email) = email else {
        story.check(false, "the owner receives an approval e-mail");
        return Ok(story);
    };
    story.say(format!(
        "   Owner e-mail to {}: \"{}\"",
        email.to.join(", "),
        email.subject
    ));
    let links = email.links();
    story.check(
        email.subject.starts_with("2 actions"),
        "two actions await approval (#A rebook, #C rebook)",
    );
    story.check(
        links.len() == 5,
        "per-action Approve/Reject links and Approve all",
    );
    for r in [&a, &b, &c, &d, &e] {
        if email.body.contains(r.as_str()) {
            story.check(false, "the e-mail carries no patient ref");
        }
    }
    let code = |r: &str| {
        OpaqueRef::parse(r)
            .map(|x| x.short_code())
            .unwrap_or_default()
    };
    story.check(
        email.body.contains(&code(&a)) && email.body.contains(&code(&c)),
        "patients appear only as short codes",
    );
    let action = |r: &str, t: Treatment, days: i64| {
        let last = (Timestamp::now() - SignedDuration::from_hours(24 * days))
            .to_zoned(jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC))
            .date();
        let due = last.saturating_add(jiff::Span::new().days(t.default_cycle_days().unwrap_or(0)));
        ActionId::derive(&[
            pid.as_str(),
            ActionKind::RebookNudge.as_str(),
            r,
            t.as_str(),
            &due.to_string(),
        ])
    };
    let (act_a, act_c) = (
        action(&a, Treatment::Neurotoxin, 100),
        action(&c, Treatment::DermalFiller, 200),
    );
    story.check(
        action_status(store, &pid, act_a.clone()).await == Some(ActionStatus::Pending),
        "#A's rebook nudge is pending approval",
    );
    story.check(
        action_status(store, &pid, action(&b, Treatment::Neurotoxin, 100))
            .await
            .is_none(),
        "#B: suppressed, a neurotoxin visit is booked ahead",
    );
    story.check(
        action_status(store, &pid, action(&e, Treatment::Neurotoxin, 120))
            .await
            .is_none(),
        "#E: suppressed, opted out",
    );
    story.check(
        action_status(store, &pid, action(&d, Treatment::Neurotoxin, 10))
            .await
            .is_none(),
        "#D: nothing due yet (follow-up at 14 days, rebook at 90)",
    );

    // 6. Approval through the e-mail link.
    let http = reqwest::Client::new();
    let approve_a = links_after(&email.body, &code(&a))
        .first()
        .cloned()
        .unwrap_or_default();
    let reject_c = links_after(&email.body, &code(&c))
        .get(1)
        .cloned()
        .unwrap_or_default();
    let page = http.get(&approve_a).send().await?;
    let headers = page.headers().clone();
    let html = page.text().await?;
    story.say("\n6. The owner opens #A's Approve link (GET shows a confirmation page).");
    story.check(
        html.contains("Approve this action?"),
        "confirmation page shown",
    );
    story.check(
        headers
            .get("cache-control")
            .is_some_and(|v| v == "no-store")
            && headers
                .get("referrer-policy")
                .is_some_and(|v| v == "no-referrer"),
        "page sent with no-store and no-referrer",
    );
    story.check(
        action_status(store, &pid, act_a.clone()).await == Some(ActionStatus::Pending),
        "GET changed nothing (mail scanners prefetch links)",
    );
    stack.pms.script([Scripted {
        status: 503,
        retry_after: Some(1),
    }]);
    let resp = http.post(&approve_a).send().await?;
    story.say(format!(
        "   The owner presses Approve (POST) → {}. The PMS will answer 503 once.",
        resp.status().as_u16()
    ));
    story.check(resp.status().as_u16() == 200, "approved");
    let trig_id = act_a.trigger_id();
    let delivered = eventually(Duration::from_secs(30), || async {
        stack
            .pms
            .received()
            .into_iter()
            .find(|r| r.webhook_id == trig_id && r.status == 200)
    })
    .await;
    let attempts = stack
        .pms
        .received()
        .iter()
        .filter(|r| r.webhook_id == trig_id)
        .count();
    story.check(
        delivered.as_ref().is_some_and(|r| r.verified),
        "the PMS received #A's trigger with a valid signature",
    );
    story.check(
        attempts == 2,
        "the 503 was retried with backoff and delivered on the second attempt",
    );
    if let Some(r) = &delivered {
        story.say(format!("   Trigger: {}", r.body));
        story.check(
            r.body["type"] == "action.rebook_nudge" && r.body["reason"] == "cycle_due",
            "trigger carries kind and reason",
        );
    }
    let fin = eventually(Duration::from_secs(10), || async {
        (action_status(store, &pid, act_a.clone()).await == Some(ActionStatus::Delivered))
            .then_some(())
    })
    .await;
    story.check(fin.is_some(), "#A recorded as delivered");
    let again = http.post(&approve_a).send().await?;
    story.check(
        again.status().as_u16() == 409,
        "the same link used again changes nothing (409)",
    );

    // 7. A rejection.
    let resp = http.post(&reject_c).send().await?;
    story.say(format!(
        "\n7. The owner rejects #C through its Reject link → {}",
        resp.status().as_u16()
    ));
    story.check(
        action_status(store, &pid, act_c.clone()).await == Some(ActionStatus::Rejected),
        "#C rejected; nothing will be sent",
    );

    // 8. An auto-approved kind.
    admin::set_kind_policy(
        store,
        &pid,
        ActionKind::RebookNudge,
        KindChange {
            mode: Some(Mode::Auto),
            ..Default::default()
        },
    )
    .await?;
    story.say("\n8. The owner sets rebook nudges to auto-approve (pil policy set --kind rebook_nudge --mode auto).");
    let f = new_ref("p");
    let before = stack.meter.snapshot();
    let single = completed(&f, Treatment::Neurotoxin, 95).to_string();
    let r = pms
        .send(pid.as_str(), &secret, "msg_single_0002", &single)
        .await?;
    let after = stack.meter.snapshot();
    let wcu = after.total_write_units() - before.total_write_units();
    story.say(format!(
        "   The PMS reports #F's neurotoxin visit 95 days ago → {} ({wcu} write units)",
        r.status
    ));
    let emails_before = stack.moto.sent_emails().await?.len();
    send_scan().await?;
    let act_f = action(&f, Treatment::Neurotoxin, 95);
    let f_trig = act_f.trigger_id();
    let got = eventually(Duration::from_secs(30), || async {
        stack
            .pms
            .received()
            .into_iter()
            .find(|r| r.webhook_id == f_trig && r.verified)
    })
    .await;
    story.check(
        got.is_some(),
        "#F's rebook nudge was auto-approved and delivered",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    story.check(
        stack.moto.sent_emails().await?.len() == emails_before,
        "no e-mail for an auto-approved action",
    );

    // 9. A re-run adds nothing.
    let practice = store
        .get_practice(&pid)
        .await?
        .ok_or_else(|| anyhow!("practice vanished"))?;
    let report = stack.scan_deps()?.scan(&pid, today).await?;
    story.say(format!(
        "\n9. The scan for {today} runs again (as `pil scan` would) → {} new actions.",
        report.created.len()
    ));
    story.check(
        report.created.is_empty(),
        "a re-run for the same date adds nothing",
    );
    story.check(
        practice.last_scan_date == Some(today),
        "the practice records the scanned date",
    );
    let pt = store
        .get_entity(
            &pid,
            &EntityKey::PatientTreatment(OpaqueRef::parse(&a)?, Treatment::Neurotoxin),
        )
        .await?;
    story.check(
        pt.is_some(),
        "state is kept per patient and treatment at day precision",
    );
    let triggers = stack.pms.received();
    let unique: std::collections::HashSet<_> = triggers
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.webhook_id.clone())
        .collect();
    story.check(
        unique.len() == 2 && triggers.iter().all(|r| r.verified),
        "exactly two triggers delivered (#A, #F), all signed",
    );
    story.say(format!(
        "\nFigures: one accepted single-event webhook cost {wcu} DynamoDB write units (goal ≤ 2)."
    ));
    Ok(story)
}

async fn action_status(
    store: &pil_aws::DynamoStore,
    pid: &PracticeId,
    id: ActionId,
) -> Option<ActionStatus> {
    store
        .get_action(pid, &id)
        .await
        .ok()
        .flatten()
        .map(|x| x.status)
}

/// The approval links that follow `marker` (a patient's short code) in an e-mail body.
pub fn links_after(body: &str, marker: &str) -> Vec<String> {
    let Some(i) = body.find(marker) else {
        return vec![];
    };
    crate::moto::SentEmail {
        to: vec![],
        subject: String::new(),
        body: body[i..].to_owned(),
    }
    .links()
}

/// Everything in the state table, as text (to search for values that must not be there).
pub async fn table_dump(stack: &Stack) -> Result<String> {
    let table = stack.resource("StateTable")?;
    let mut out = String::new();
    let mut start = None;
    loop {
        let page = stack
            .clients
            .dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items.unwrap_or_default() {
            out.push_str(&format!("{item:?}\n"));
        }
        match page.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    Ok(out)
}
