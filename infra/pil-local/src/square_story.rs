//! The second part of `make run`: a practice on Square Appointments, through its relay
//! (infra/relay/template.yaml, deployed into the same emulator). Square's history is
//! backfilled (one 429 on the way), a booking and its cancellation arrive as Square webhooks,
//! the nightly scan finds a rebook due, the owner approves it, and the customer lands in the
//! Square customer group the practice's Square Marketing automation targets.

use std::time::Duration;

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use shared::ids::OpaqueRef;
use square_relay::jobs::BackfillSpan;
use square_sim::{BookingChange, NewBooking, Segment};

use crate::scenario::{Story, eventually, links_after, table_dump};
use crate::square_seller::{Seller, SquareSetup};
use crate::stack::Stack;

pub const SQUARE_PRACTICE: &str = "demo-square";
const TOKEN: &str = "EAAAl-sandbox-demo-access-token";
const SIGNATURE_KEY: &str = "demo-signature-key-from-the-square-dashboard";

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

pub async fn run(stack: &Stack, story: &mut Story) -> Result<()> {
    let now = Timestamp::now();
    // The seller's Square: a location, a provider, three services, three customers (their
    // profiles carry names, e-mails, phones and notes: PHI that must stay in Square).
    let seller = Seller::start(TOKEN).await?;
    story.say(format!(
        "\n16. A practice on Square Appointments, through its relay (infra/relay/template.yaml, \
         in the practice's own AWS account; here in the same emulator). Square simulator at {}.",
        seller.square.url
    ));
    let ana = seller.customer("Ana", "Whitfield");
    let ben = seller.customer("Ben", "Okafor");
    let cleo = seller.customer("Cleo", "Marchetti");
    // History, made before the relay subscribed (no webhooks): Ana's Botox 100 days ago;
    // Cleo's consultation (an unmapped service) 20 days ago; Ben cancelled a filler 150 days
    // ago.
    let square = &seller.square;
    let booking = |customer: &str, days_ago: i64, service: &str| {
        seller.booking(customer, now - days(days_ago), service, "ACCEPTED")
    };
    let (_, none) = square
        .create_booking(booking(&ana, 100, &seller.botox), now - days(120))
        .await;
    square
        .create_booking(booking(&cleo, 20, &seller.consult), now - days(25))
        .await;
    let (b, _) = square
        .create_booking(booking(&ben, 150, &seller.filler), now - days(170))
        .await;
    if let Some(id) = b["id"].as_str() {
        square
            .update_booking(
                id,
                BookingChange {
                    status: Some("CANCELLED_BY_CUSTOMER".into()),
                    ..Default::default()
                },
                now - days(160),
            )
            .await;
    }
    story.check(
        none.is_none(),
        "history made in Square before the relay subscribed",
    );

    // The practice's side: onboarded in the layer with the relay as its trigger endpoint,
    // the relay deployed with the practice's ref key and service map, Square subscribed.
    let sq = seller
        .connect(stack, SQUARE_PRACTICE, SIGNATURE_KEY)
        .await?;
    story.say(format!(
        "   Practice {SQUARE_PRACTICE} onboarded with the relay ({}) as its trigger URL; service \
         map: Botox → neurotoxin, Lip filler → dermal_filler (Consultation left unmapped).",
        sq.relay.url
    ));
    let result = square_part(stack, story, &sq, [&ana, &ben, &cleo]).await;
    sq.stop().await;
    result
}

async fn square_part(
    stack: &Stack,
    story: &mut Story,
    sq: &SquareSetup,
    [ana, ben, cleo]: [&String; 3],
) -> Result<()> {
    let (square, relay, pid) = (&sq.square, &sq.relay, &sq.practice.practice);
    let (botox, filler) = (&sq.botox, &sq.filler);
    let (location, provider) = (&sq.location, &sq.provider);
    let now = Timestamp::now();
    // a. The backfill, as the jobs function's first run does it; Square rate-limits once.
    square.rate_limit_next(1, Some(1));
    let report = relay
        .run_jobs(
            BackfillSpan {
                days_back: 200,
                days_ahead: 30,
            },
            now,
        )
        .await?;
    let limited = square.requests().iter().filter(|r| r.status == 429).count();
    story.say(format!(
        "   a. Backfill (the relay's jobs function): {} bookings in {} pages (31-day windows) → \
         {} events to the layer, {} skipped (unmapped service); Square answered 429 {} time(s), retried after \
         its Retry-After.",
        report.backfill_bookings,
        report.backfill_pages,
        report.backfill_events,
        report.backfill_skipped,
        limited
    ));
    story.check(
        report.backfill_done && report.backfill_bookings == 3 && report.backfill_skipped == 1,
        "the backfill read all three bookings and skipped the unmapped consultation",
    );
    story.check(limited == 1, "the 429 was retried, not lost");
    story.say(format!(
        "   The run's report lists the service variations the service map lacks, to map or \
         leave out: {:?}.",
        report.unmapped_services
    ));
    story.check(
        report.unmapped_services.iter().eq([&sq.consult]),
        "the unmapped service is named (the Consultation's variation id), for the ServiceMap",
    );

    // b. A booking made in Square → booking.created → the relay → the layer.
    let start = now + days(9);
    let (b, status) = square
        .create_booking(
            NewBooking {
                customer_id: ben.clone(),
                location_id: location.to_owned(),
                start_at: start,
                segments: vec![Segment {
                    service_variation_id: filler.clone(),
                    team_member_id: provider.to_owned(),
                    duration_minutes: 45,
                }],
                status: "ACCEPTED".into(),
                customer_note: Some("Ben Okafor, lips, 555-0100".into()),
                seller_note: None,
            },
            now,
        )
        .await;
    story.say(format!(
        "   b. Ben books a lip filler for next week in Square: booking.created → relay → {}.",
        status.map_or("no delivery".into(), |s| s.to_string())
    ));
    story.check(
        status == Some(200),
        "the relay verified Square's signature and the layer took the booking",
    );
    let appt = relay
        .http
        .refs
        .appointment(b["id"].as_str().unwrap_or_default());
    let booked = stored_status(stack, appt.as_str()).await;
    story.check(
        booked.as_deref() == Some("booked"),
        "the layer holds Ben's booking (as opaque refs)",
    );

    // c. Ben cancels in Square → booking.updated → cancelled, the slot reopens.
    let (_, status) = square
        .update_booking(
            b["id"].as_str().unwrap_or_default(),
            BookingChange {
                status: Some("CANCELLED_BY_CUSTOMER".into()),
                ..Default::default()
            },
            Timestamp::now(),
        )
        .await;
    story.say(format!(
        "   c. Ben cancels in Square: booking.updated (CANCELLED_BY_CUSTOMER) → relay → {}.",
        status.map_or("no delivery".into(), |s| s.to_string())
    ));
    let cancelled = eventually(Duration::from_secs(10), || async {
        (stored_status(stack, appt.as_str()).await.as_deref() == Some("cancelled")).then_some(())
    })
    .await;
    story.check(
        cancelled.is_some(),
        "the layer marks it cancelled and its slot open again (reopens_slot)",
    );
    let redelivered = square.redeliver(b["id"].as_str().unwrap_or_default()).await;
    story.check(
        redelivered == Some(200),
        "Square's redelivery of the same notification is taken again, with no second effect",
    );

    // d. The night: Ana's Botox was 100 days ago (a completion by the relay's rule).
    let mails_before = stack.moto.sent_emails().await?.len();
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("America/New_York")?)
        .date();
    stack
        .clients
        .sqs
        .send_message()
        .queue_url(stack.resource("ScanQueue")?)
        .message_body(
            json!({"kind": "scan", "practice_id": pid.as_str(), "date": today.to_string()})
                .to_string(),
        )
        .send()
        .await?;
    let ana_ref = relay.http.refs.patient(ana);
    let code = OpaqueRef::parse(ana_ref.as_str())
        .map(|r| r.short_code())
        .unwrap_or_default();
    let mail = eventually(Duration::from_secs(30), || async {
        let m = stack.moto.sent_emails().await.ok()?;
        m.into_iter()
            .skip(mails_before)
            .find(|m| m.to.iter().any(|t| t.contains(SQUARE_PRACTICE)))
    })
    .await;
    story.say(format!(
        "   d. Nightly scan for {pid}: {}",
        mail.as_ref().map_or("no e-mail".into(), |m| format!(
            "owner e-mail \"{}\"",
            m.subject
        ))
    ));
    let Some(mail) = mail else {
        story.check(false, "the owner is asked to approve Ana's rebook");
        return Ok(());
    };
    story.check(
        mail.body.contains(&code),
        "Ana's neurotoxin rebook is due and awaits the owner",
    );
    let approve = links_after(&mail.body, &code)
        .first()
        .cloned()
        .unwrap_or_default();
    let resp = reqwest::Client::new().post(&approve).send().await?;
    story.check(resp.status().as_u16() == 200, "the owner approves it");

    // e. The trigger reaches the relay; Ana joins the group.
    let group = "Rebook due: neurotoxin";
    let joined = eventually(Duration::from_secs(30), || async {
        square
            .group_names_of(ana)
            .iter()
            .any(|g| g == group)
            .then_some(())
    })
    .await;
    story.say(format!(
        "   e. The trigger reaches the relay (signature verified); in Square, Ana is now in the \
         customer group \"{group}\", which the practice's Square Marketing automation messages."
    ));
    story.check(joined.is_some(), "Ana is in the Square customer group");
    story.check(
        square.group_names_of(ben).is_empty() && square.group_names_of(cleo).is_empty(),
        "no one else was added",
    );

    // f. After the trigger's expiry the relay takes Ana out again.
    let later = Timestamp::now() + days(15);
    let mut report = square_relay::jobs::JobReport::default();
    square_relay::jobs::expire_memberships(&relay.jobs, later, &mut report)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    story.say("   f. Fifteen days later the trigger has expired: the relay's jobs run removes Ana from the group.");
    story.check(
        report.memberships_ended == 1 && square.group_names_of(ana).is_empty(),
        "Ana left the group when the trigger expired",
    );

    // Nothing of Square's customer profiles or notes reached the layer.
    let dump = table_dump(stack).await?;
    let secrets: [&str; 12] = [
        "Whitfield",
        "Okafor",
        "Marchetti",
        "whitfield@example.com",
        "5555550100",
        "lidocaine",
        "1984-03-02",
        ana,
        ben,
        cleo,
        botox,
        filler,
    ];
    let leaked = secrets.iter().filter(|s| dump.contains(**s)).count();
    story.check(
        leaked == 0,
        "no name, e-mail, phone, note or Square id is in the layer's table",
    );
    Ok(())
}

/// The status the layer stores for an appointment ref, if any.
async fn stored_status(stack: &Stack, appointment_ref: &str) -> Option<String> {
    let items = crate::scenario::table_items(stack).await.ok()?;
    items.into_iter().find_map(|i| {
        let text = i.to_string();
        if !text.contains(appointment_ref) {
            return None;
        }
        ["booked", "cancelled", "no_show"]
            .into_iter()
            .find(|s| text.contains(&format!("\"{s}\"")))
            .map(str::to_owned)
    })
}
