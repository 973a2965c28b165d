//! The scripted scenario `make run` plays against a running local stack, told as a story.
//! Every expected outcome is checked; the run fails if any did not happen.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde_json::json;
use shared::action::{ActionKind, ActionStatus};
use shared::ids::{ActionId, OpaqueRef, PracticeId};
use shared::ports::{ActionRepo, EntityRepo, PracticeRepo};
use shared::practice::{Mode, TriggerUrl, TriggerUrlScope};
use shared::service::admin::{self, KindChange, NewPractice};
use shared::service::report;
use shared::service::scan::Suppression;
use shared::signature::WebhookSecret;
use shared::state::EntityKey;
use shared::treatment::Treatment;

use crate::pms::{PmsClient, Scripted};
use crate::stack::Stack;

/// What happened, line by line, and which expectations failed.
#[derive(Debug, Default)]
pub struct Story {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Story {
    pub(crate) fn say(&mut self, s: impl Into<String>) {
        let s = s.into();
        tracing::debug!(line = %s, "story");
        self.lines.push(s);
    }
    pub(crate) fn check(&mut self, ok: bool, what: &str) {
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
            trigger_url: TriggerUrl::parse(&stack.pms.trigger_url(), TriggerUrlScope::LocalStack)?,
        },
    )
    .await?;
    let secret = WebhookSecret::parse(&onboarded.webhook_secret).map_err(|e| anyhow!("{e}"))?;
    // The demo runs at any hour: no quiet hours, so triggers go out as soon as approved.
    admin::set_policy(
        store,
        &pid,
        None,
        admin::KindChange {
            quiet_hours: Some(None),
            ..Default::default()
        },
    )
    .await?;
    story.say(format!(
        "\n1. Onboarded practice {pid} ({tz}); policy: every action needs the owner's approval \
         (quiet hours off for the demo, so it runs at any hour)."
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
        links.len() == 7,
        "per-action Approve/Reject links, Approve all, the full list and the settings request link",
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
    // The e-mail goes out just before the action is marked pending.
    let pending = eventually(Duration::from_secs(5), || async {
        (action_status(store, &pid, act_a.clone()).await == Some(ActionStatus::Pending))
            .then_some(())
    })
    .await;
    story.check(pending.is_some(), "#A's rebook nudge is pending approval");
    story.check(
        suppression(store, &pid, action(&b, Treatment::Neurotoxin, 100)).await
            == Some(Suppression::BookedAhead),
        "#B: suppressed (recorded for the report), a neurotoxin visit is booked ahead",
    );
    story.check(
        suppression(store, &pid, action(&e, Treatment::Neurotoxin, 120)).await
            == Some(Suppression::OptedOut),
        "#E: suppressed (recorded for the report), opted out",
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
        delay_ms: None,
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

    // 10. Attribution: #A books the treatment the trigger nudged for.
    let booked = json!({"type": "appointment.booked", "occurred_at": Timestamp::now().to_string(),
        "data": {"appointment_ref": new_ref("appt"), "patient_ref": a, "treatment": "neurotoxin", "provider_ref": new_ref("prov"),
                 "starts_at": (Timestamp::now() + SignedDuration::from_hours(24 * 10)).to_string(), "duration_min": 45}})
    .to_string();
    let before = stack.meter.snapshot();
    let r = pms
        .send(pid.as_str(), &secret, "msg_booked_0003", &booked)
        .await?;
    let booking_wcu = stack.meter.snapshot().total_write_units() - before.total_write_units();
    story.say(format!(
        "\n10. The PMS reports that #A booked neurotoxin for next week → {} ({booking_wcu} write units)",
        r.status
    ));
    let converted = store
        .get_action(&pid, &act_a)
        .await?
        .and_then(|x| x.converted);
    story.check(
        converted.is_some(),
        "#A's delivered trigger is marked converted (same patient and category within 14 days)",
    );
    let r = report::report(
        store,
        store,
        &pid,
        today.saturating_sub(jiff::Span::new().days(1)),
        today,
        Timestamp::now(),
    )
    .await?;
    let rebook = &r.kinds[&ActionKind::RebookNudge];
    story.say(format!(
        "   pil report: rebook nudges {} proposed, {} delivered, {} converted, {} recovered; suppressed {:?}",
        rebook.proposed,
        rebook.delivered,
        rebook.converted,
        report::money(rebook.recovered_revenue),
        rebook.suppressed
    ));
    story.check(
        rebook.converted == 1 && rebook.recovered_revenue > 0,
        "the report shows the recovered revenue",
    );
    story.check(
        rebook.suppressed.get("booked_ahead") == Some(&1)
            && rebook.suppressed.get("opted_out") == Some(&1),
        "and the suppressed gaps by reason (#B booked ahead, #E opted out)",
    );

    // 11. Real-time slot fill.
    admin::set_kind_policy(
        store,
        &pid,
        ActionKind::SlotOffer,
        KindChange {
            mode: Some(Mode::Auto),
            ..Default::default()
        },
    )
    .await?;
    let (slot, provider) = (new_ref("slot"), new_ref("prov"));
    let starts_at = Timestamp::now() + SignedDuration::from_hours(26);
    let opened = json!({"type": "slot.opened", "occurred_at": ago(0), "data": {"slot_ref": slot,
        "provider_ref": provider, "starts_at": starts_at.to_string(), "duration_min": 30,
        "treatments": ["neurotoxin"]}})
    .to_string();
    story.say(
        "\n11. A neurotoxin slot opens for tomorrow (slot.opened); slot offers are set to auto.",
    );
    let sent = std::time::Instant::now();
    let r = pms
        .send(pid.as_str(), &secret, "msg_slot_0001", &opened)
        .await?;
    story.check(r.status == 202, "slot.opened accepted");
    let _first = eventually(Duration::from_secs(30), || async {
        let got: Vec<_> = stack
            .pms
            .received()
            .into_iter()
            .filter(|r| r.body["type"] == "action.slot_offer" && r.verified)
            .collect();
        (!got.is_empty()).then_some(got)
    })
    .await;
    // Let a second offer show up if one (wrongly) would.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let offers: Vec<_> = stack
        .pms
        .received()
        .into_iter()
        .filter(|r| r.body["type"] == "action.slot_offer" && r.verified)
        .collect();
    let to: std::collections::HashSet<String> = offers
        .iter()
        .filter_map(|r| r.body["patient_ref"].as_str().map(str::to_owned))
        .collect();
    story.say(format!(
        "   {} offer reached the PMS {:.1} s after the event: #F (due, not booked); #A and #B \
         are booked ahead, #E opted out, #C's gap was rejected, #D is not due.",
        offers.len(),
        sent.elapsed().as_secs_f64()
    ));
    story.check(
        to == [f.clone()].into_iter().collect(),
        "the slot was offered in real time to exactly the due, unbooked patients (#F)",
    );
    story.check(
        offers
            .iter()
            .all(|r| r.body["slot"]["slot_ref"] == slot.as_str()),
        "each offer names the slot",
    );

    // 12. A slot that is booked before the owner decides: the offer is withdrawn.
    admin::set_kind_policy(
        store,
        &pid,
        ActionKind::SlotOffer,
        KindChange {
            mode: Some(Mode::Approve),
            ..Default::default()
        },
    )
    .await?;
    let g = new_ref("p");
    let r = pms
        .send(
            pid.as_str(),
            &secret,
            "msg_single_0003",
            &completed(&g, Treatment::DermalFiller, 190).to_string(),
        )
        .await?;
    story.check(r.status == 202, "#G's filler visit 190 days ago accepted");
    stack.scan_deps()?.scan(&pid, today).await?;
    let (slot2, provider2) = (new_ref("slot"), new_ref("prov"));
    let starts2 = Timestamp::now() + SignedDuration::from_hours(50);
    let opened2 = json!({"type": "slot.opened", "occurred_at": ago(0), "data": {"slot_ref": slot2,
        "provider_ref": provider2, "starts_at": starts2.to_string(), "duration_min": 45,
        "treatments": ["dermal_filler"]}})
    .to_string();
    let emails_before = stack.moto.sent_emails().await?.len();
    pms.send(pid.as_str(), &secret, "msg_slot_0002", &opened2)
        .await?;
    let offer_mail = eventually(Duration::from_secs(30), || async {
        let m = stack.moto.sent_emails().await.ok()?;
        (m.len() > emails_before)
            .then(|| m.last().cloned())
            .flatten()
    })
    .await;
    story.say(
        "\n12. A filler slot opens (slot offers back to owner approval); #G, newly due, is offered it.",
    );
    story.check(
        offer_mail.is_some(),
        "the owner is e-mailed the slot offer right away",
    );
    let booking = json!({"type": "appointment.booked", "occurred_at": ago(0), "data": {
        "appointment_ref": new_ref("appt"), "patient_ref": new_ref("p"), "treatment": "dermal_filler",
        "provider_ref": provider2, "starts_at": starts2.to_string(), "duration_min": 45}})
    .to_string();
    pms.send(pid.as_str(), &secret, "msg_book_0004", &booking)
        .await?;
    let offer_id = ActionId::derive(&[pid.as_str(), ActionKind::SlotOffer.as_str(), &g, &slot2]);
    let withdrawn = eventually(Duration::from_secs(30), || async {
        (action_status(store, &pid, offer_id.clone()).await == Some(ActionStatus::Withdrawn))
            .then_some(())
    })
    .await;
    story.say("   Another patient books that slot at the PMS before the owner decides.");
    story.check(
        withdrawn.is_some(),
        "#G's pending offer was withdrawn when the slot was booked",
    );
    if let Some(m) = offer_mail {
        let approve = m.links().into_iter().next().unwrap_or_default();
        let resp = reqwest::Client::new().post(&approve).send().await?;
        story.check(
            resp.status().as_u16() == 409,
            "approving it afterwards changes nothing (409) and nothing is sent",
        );
    }
    story.check(
        !stack
            .pms
            .received()
            .iter()
            .any(|r| r.body["slot"]["slot_ref"] == slot2.as_str()),
        "no offer for the filled slot reached the PMS",
    );

    // 13. Every other rule fires once, and every suppression shows.
    let (h, i, j, k, l) = (
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
        new_ref("p"),
    );
    let missed = new_ref("appt");
    let batch = json!({"events": [
        completed(&h, Treatment::Neurotoxin, 15),
        {"type": "appointment.completed", "occurred_at": ago(45), "data": {"appointment_ref": new_ref("appt"),
            "patient_ref": i, "treatment": "laser_hair_removal", "series": {"index": 2, "of": 6}}},
        completed(&j, Treatment::DermalFiller, 400),
        {"type": "appointment.booked", "occurred_at": ago(20), "data": {"appointment_ref": missed, "patient_ref": k,
            "treatment": "facial", "provider_ref": new_ref("prov"), "starts_at": ago(4), "duration_min": 60}},
        {"type": "appointment.no_show", "occurred_at": ago(4), "data": {"appointment_ref": missed}},
        completed(&l, Treatment::Neurotoxin, 100),
        completed(&l, Treatment::ChemicalPeel, 40),
    ]})
    .to_string();
    pms.send(pid.as_str(), &secret, "msg_batch_0005", &batch)
        .await?;
    let r1 = stack.scan_deps()?.scan(&pid, today).await?;
    story.say(
        "\n13. More history: #H neurotoxin 15 days ago · #I laser hair removal session 2 of 6, \
         45 days ago · #J filler 400 days ago · #K missed a facial 4 days ago · #L neurotoxin \
         100 and a peel 40 days ago. The scan runs again:",
    );
    let kinds = created_kinds(store, &pid, &r1.created).await;
    story.say(format!("   created: {}", kinds.join(", ")));
    story.say(format!(
        "   suppressed: {}",
        suppressed_list(&r1.suppressed)
    ));
    for (kind, what) in [
        (ActionKind::FollowUp, "#H's two-week follow-up"),
        (ActionKind::SeriesContinue, "#I's next series session"),
        (ActionKind::WinBack, "#J's win-back"),
        (ActionKind::NoShowRecovery, "#K's no-show recovery"),
    ] {
        story.check(
            kinds.iter().filter(|k| **k == kind.as_str()).count() == 1,
            &format!("{what} fires once ({})", kind.as_str()),
        );
    }
    let has = |r: &[(ActionKind, shared::service::scan::Suppression)], s: &str| {
        r.iter().filter(|(_, x)| x.as_str() == s).count()
    };
    story.check(
        r1.suppressed
            .iter()
            .filter(|(k, x)| *k == ActionKind::RebookNudge && x.as_str() == "superseded")
            .count()
            == 1
            && has(&r1.suppressed, "superseded") == 3,
        "#J: follow-up and rebook superseded by the win-back; #L's follow-up by its rebook (one message per category)",
    );
    story.check(
        has(&r1.suppressed, "cooldown") == 1,
        "#L: one nudge tonight; the second category waits out the cooldown",
    );

    // Cooldown off, follow-ups off: the monthly cap and a switched-off kind.
    admin::set_policy(
        store,
        &pid,
        None,
        KindChange {
            cooldown_days: Some(0),
            ..Default::default()
        },
    )
    .await?;
    admin::set_kind_policy(
        store,
        &pid,
        ActionKind::FollowUp,
        KindChange {
            mode: Some(Mode::Off),
            ..Default::default()
        },
    )
    .await?;
    let (m, n) = (new_ref("p"), new_ref("p"));
    let batch = json!({"events": [
        completed(&m, Treatment::Neurotoxin, 100),
        completed(&m, Treatment::DermalFiller, 200),
        completed(&m, Treatment::ChemicalPeel, 40),
        completed(&n, Treatment::Neurotoxin, 15),
    ]})
    .to_string();
    pms.send(pid.as_str(), &secret, "msg_batch_0006", &batch)
        .await?;
    let r2 = stack.scan_deps()?.scan(&pid, today).await?;
    story.say(
        "   The owner sets the cooldown to 0 days and turns follow-ups off; #M is due in three \
         categories, #N for a follow-up. The scan runs again:",
    );
    story.say(format!(
        "   created: {}",
        created_kinds(store, &pid, &r2.created).await.join(", ")
    ));
    story.say(format!(
        "   suppressed: {}",
        suppressed_list(&r2.suppressed)
    ));
    story.check(
        r2.created.len() == 2 && has(&r2.suppressed, "monthly_cap") == 1,
        "#M: two nudges, the third stopped by the monthly cap (2 per 30 days)",
    );
    story.check(
        has(&r2.suppressed, "kind_off") == 1,
        "#N: follow-ups are off, so none is proposed",
    );
    story.say(
        "   (booked_ahead and opted_out: #B and #E in step 5; every suppression is counted by kind \
         and reason in the scan report and logs.)",
    );

    // 14. An opt-out after the digest withdraws what waits for the owner.
    admin::set_kind_policy(
        store,
        &pid,
        ActionKind::RebookNudge,
        KindChange {
            mode: Some(Mode::Approve),
            ..Default::default()
        },
    )
    .await?;
    let q = new_ref("p");
    let emails_before = stack.moto.sent_emails().await?.len();
    pms.send(
        pid.as_str(),
        &secret,
        "msg_single_0007",
        &completed(&q, Treatment::Neurotoxin, 100).to_string(),
    )
    .await?;
    let r3 = stack.scan_deps()?.scan(&pid, today).await?;
    let mut act_q = None;
    for id in &r3.created {
        if let Ok(Some(a)) = store.get_action(&pid, id).await
            && a.patient_ref.as_str() == q
        {
            act_q = Some(a.id);
        }
    }
    let q_mail = eventually(Duration::from_secs(30), || async {
        let m = stack.moto.sent_emails().await.ok()?;
        (m.len() > emails_before)
            .then(|| m.last().cloned())
            .flatten()
    })
    .await;
    story.say(
        "\n14. #Q had neurotoxin 100 days ago; rebook nudges are back to owner approval, so the \
         owner is e-mailed #Q's nudge. Before the owner decides, the PMS sends #Q's opt-out.",
    );
    let q_pending = match &act_q {
        Some(id) => eventually(Duration::from_secs(30), || async {
            (action_status(store, &pid, id.clone()).await == Some(ActionStatus::Pending))
                .then_some(())
        })
        .await
        .is_some(),
        None => false,
    };
    story.check(
        q_pending && q_mail.is_some(),
        "#Q's rebook nudge waits for the owner",
    );
    let opt_out = json!({"type": "patient.opted_out", "occurred_at": ago(0),
        "data": {"patient_ref": q}})
    .to_string();
    let r = pms
        .send(pid.as_str(), &secret, "msg_single_0008", &opt_out)
        .await?;
    story.check(r.status == 202, "#Q's opt-out accepted");
    let q_action = match &act_q {
        Some(id) => store.get_action(&pid, id).await?,
        None => None,
    };
    story.check(
        q_action.as_ref().is_some_and(|a| {
            a.status == ActionStatus::Withdrawn
                && a.withdrawal == Some(shared::action::Withdrawal::OptedOut)
        }),
        "#Q's pending nudge is withdrawn at once (status withdrawn, reason opted_out)",
    );
    if let Some(m) = q_mail {
        let approve = links_after(&m.body, &code(&q))
            .first()
            .cloned()
            .unwrap_or_default();
        let resp = reqwest::Client::new().post(&approve).send().await?;
        let status = resp.status().as_u16();
        let html = resp.text().await?;
        story.say(format!(
            "   The owner presses Approve on #Q afterwards → {status}: the page says the patient opted out."
        ));
        story.check(
            status == 409 && html.contains("The patient opted out since this was proposed"),
            "the approval page says #Q opted out and that nothing will be sent",
        );
    }
    story.check(
        !stack
            .pms
            .received()
            .iter()
            .any(|r| r.body["patient_ref"] == q.as_str()),
        "no trigger for #Q reached the PMS",
    );

    // 15. A second practice's first night: years of history in, a bounded digest out.
    let hist = PracticeId::parse("demo-first-night")?;
    let onboarded = admin::create_practice(
        store,
        keys.keys(),
        NewPractice {
            id: hist.clone(),
            time_zone: tz.into(),
            owner_emails: vec!["owner@demo-first-night.example".into()],
            trigger_url: TriggerUrl::parse(&stack.pms.trigger_url(), TriggerUrlScope::LocalStack)?,
        },
    )
    .await?;
    let hist_secret =
        WebhookSecret::parse(&onboarded.webhook_secret).map_err(|e| anyhow!("{e}"))?;
    // 120 patients due for a neurotoxin rebook (95 to 214 days ago), 30 whose two-week
    // follow-up passed weeks ago, 30 whose filler visit was three years ago.
    let mut history = Vec::new();
    for i in 0..120 {
        history.push(completed(&new_ref("p"), Treatment::Neurotoxin, 95 + i));
    }
    for i in 0..30 {
        history.push(completed(&new_ref("p"), Treatment::Neurotoxin, 30 + i % 10));
    }
    for i in 0..30 {
        history.push(completed(&new_ref("p"), Treatment::DermalFiller, 1_000 + i));
    }
    let mut accepted = 0;
    for (n, chunk) in history.chunks(100).enumerate() {
        let body = json!({ "events": chunk }).to_string();
        let r = pms
            .send(
                hist.as_str(),
                &hist_secret,
                &format!("imp_history_{n}"),
                &body,
            )
            .await?;
        accepted += usize::from(r.status == 202) * chunk.len();
    }
    story.say(format!(
        "\n15. A new practice, {hist}, connects with its history: its PMS sends {} past visits in \
         batches of 100 (what `pil import` does from a file).",
        history.len()
    ));
    story.check(
        accepted == history.len(),
        "every batch accepted; importing creates state only",
    );
    let mails_before = stack.moto.sent_emails().await?.len();
    let first = stack.scan_deps()?.scan(&hist, today).await?;
    let stale = has(&first.suppressed, "stale");
    story.say(format!(
        "   The first night: {} proposed, {} waiting for later nights, {} stale (too late to send).",
        first.created.len(),
        first.deferred,
        stale
    ));
    story.check(
        first.created.len() == 25 && first.deferred == 95,
        "the nightly budget (25) holds: the most valuable, longest-overdue 25 are proposed, 95 wait",
    );
    story.check(
        stale == 60,
        "stale gaps are not sent: 30 follow-ups weeks late, 30 win-backs years late",
    );
    let digest = eventually(Duration::from_secs(30), || async {
        let m = stack.moto.sent_emails().await.ok()?;
        m.into_iter()
            .skip(mails_before)
            .find(|m| m.to.iter().any(|t| t.contains("demo-first-night")))
    })
    .await;
    if let Some(m) = &digest {
        story.say(format!("   Digest: \"{}\"", m.subject));
    }
    story.check(
        digest.as_ref().is_some_and(|m| {
            m.subject.starts_with("25 actions awaiting approval")
                && m.body
                    .contains("95 more due patients wait over the nightly limit of 25")
        }),
        "the owner's first digest holds 25 cards and says 95 more come over the next 4 nights",
    );

    story.say(format!(
        "\nFigures: one accepted single-event webhook cost {wcu} DynamoDB write units (goal ≤ 2)."
    ));

    // The Square relay: a real PMS's bookings in, a nudge out into a Square customer group.
    crate::square_story::run(stack, &mut story).await?;

    // Health, as `pil status` shows it.
    story.say("\nHealth (`pil status`):");
    let config = pil_aws::Config::from_map(stack.env.iter().cloned().collect());
    match pil_aws::status::stack_status(store, &stack.clients.sqs, &config, None, Timestamp::now())
        .await
    {
        Ok(v) => {
            for line in pil_aws::status::stack_status_table(&v).lines() {
                story.say(format!("   {line}"));
            }
            let dead: u64 = ["ScanDLQ", "CandidatesDLQ", "TriggersDLQ", "EventsDLQ"]
                .iter()
                .map(|q| v["queues"][q]["visible"].as_u64().unwrap_or(0))
                .sum();
            story.check(dead == 0, "no message was dead-lettered");
            story.check(
                v["metrics_24h"]["trigger-emitter/TriggersDelivered"]
                    .as_f64()
                    .is_some_and(|n| n >= 1.0)
                    && v["metrics_24h"]["webhook-receiver/WebhooksAccepted"]
                        .as_f64()
                        .is_some_and(|n| n >= 1.0),
                "the handlers' metrics were written (target/local/metrics.jsonl)",
            );
        }
        Err(e) => story.check(false, &format!("pil status: {e}")),
    }
    Ok(story)
}

async fn created_kinds(
    store: &pil_aws::DynamoStore,
    pid: &PracticeId,
    ids: &[ActionId],
) -> Vec<&'static str> {
    let mut out = Vec::new();
    for id in ids {
        if let Ok(Some(a)) = store.get_action(pid, id).await {
            out.push(a.kind.as_str());
        }
    }
    out
}

fn suppressed_list(s: &[(ActionKind, shared::service::scan::Suppression)]) -> String {
    if s.is_empty() {
        return "none".into();
    }
    s.iter()
        .map(|(k, r)| format!("{} ({})", r.as_str(), k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
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

/// Why the action's gap was suppressed, if it was.
async fn suppression(
    store: &pil_aws::DynamoStore,
    pid: &PracticeId,
    id: ActionId,
) -> Option<Suppression> {
    store
        .get_action(pid, &id)
        .await
        .ok()
        .flatten()
        .filter(|x| x.status == ActionStatus::Suppressed)
        .and_then(|x| x.suppression)
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

/// Every item of the state table, as stored (through the stack's own client).
async fn scan_table(stack: &Stack) -> Result<Vec<HashMap<String, AttributeValue>>> {
    let table = stack.resource("StateTable")?;
    let mut out = Vec::new();
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
        out.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    Ok(out)
}

/// Every item of the state table as JSON.
pub async fn table_items(stack: &Stack) -> Result<Vec<serde_json::Value>> {
    scan_table(stack)
        .await?
        .into_iter()
        .map(|item| Ok(serde_dynamo::from_item(item)?))
        .collect()
}

/// Everything in the state table, as text (to search for values that must not be there).
pub async fn table_dump(stack: &Stack) -> Result<String> {
    Ok(scan_table(stack)
        .await?
        .iter()
        .map(|item| format!("{item:?}\n"))
        .collect())
}
