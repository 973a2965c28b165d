//! The owner's approval settings page. Settings links are e-mailed, never shown: the digest's
//! "Approval settings" is a request link (`Decision::SettingsRequest`), whose page has a button
//! that asks for one; approval-check then e-mails each of the practice's owners a settings
//! link of their own (`Decision::Settings`, no actions), which works for
//! [`SETTINGS_LINK_MINUTES`] and once. The settings page shows the policy per kind in words and
//! a form; GET changes nothing, POST saves. The same token rules as decisions: signed, bound to
//! the practice and an owner, expiring, single-use (consumed by a conditional write when a
//! valid form is saved; a form with a mistake is shown again with the mistake named and the
//! link still usable). Every save is audited with the approver (`admin::replace_policy`), every
//! link sent too (`settings_link_sent`). No page carries a link of any kind: each form posts
//! back to its page's own address.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use crate::action::ActionKind;
use crate::ids::PracticeId;
use crate::ports::{DomainEvent, Mail, PortError};
use crate::practice::{Mode, Policy, Practice};
use crate::service::admin::{self, AdminError, AdminStore};
use crate::service::approval::{ApprovalDeps, ApprovalError};
use crate::token::{self, Claims, Decision, SETTINGS_LINK_MINUTES};
use crate::views::settings::{SettingsLink, View, render};
use crate::views::{Page, page, unavailable};
// The policy in words, where the CLI and the tests have found it.
pub use crate::views::settings::{general_words, kind_words, window_words};

/// A settings link for the owner `approver_email`: it works for [`SETTINGS_LINK_MINUTES`]
/// from `now`, once. Only ever e-mailed to that owner ([`send_links`]).
pub fn settings_link(
    base_url: &str,
    p: &Practice,
    approver_email: &str,
    key: &token::LinkKey,
    now: Timestamp,
) -> String {
    let claims = Claims::new(
        p.id.clone(),
        Vec::new(),
        Decision::Settings,
        approver_email,
        now + SignedDuration::from_mins(SETTINGS_LINK_MINUTES),
    );
    format!(
        "{}/v1/approvals/{}",
        base_url.trim_end_matches('/'),
        token::sign(&claims, key)
    )
}

/// GET: the settings as they are, and the form. Changes nothing.
pub fn show(practice: &Practice) -> Page {
    render(
        practice,
        &practice.policy,
        View {
            status: 200,
            outcome: "settings",
            title: "Approval settings",
            message: "What is sent to your practice software automatically, and what waits for you.",
            badge: "Your settings",
            tone: "confirm",
            error: "",
            editing: true,
        },
    )
}

/// GET of a request link (the digest's "Approval settings"): what pressing its button does.
/// Changes nothing and shows no link.
pub fn link_request_page(practice: &Practice) -> Page {
    let message = format!(
        "For your security, approval settings open only from a link we e-mail to each of the practice's owners. It works for {SETTINGS_LINK_MINUTES} minutes, once."
    );
    page(
        200,
        "settings_request",
        "Change your approval settings",
        &message,
        practice.id.as_str(),
        &[],
        Some(("E-mail me a settings link", "")),
    )
}

/// A request link's button: asks approval-check (through the bus) to e-mail each owner a
/// settings link, at most once a minute per practice. Shows none.
pub async fn request_link(deps: &ApprovalDeps<'_>, practice: &Practice, claims: &Claims) -> Page {
    let now = deps.clock.now();
    // One request per practice and minute: a conditional write on the minute's marker.
    let minute = now.as_second().div_euclid(60);
    let fresh = deps
        .tokens
        .consume_token(
            &practice.id,
            &format!("settings_mail:{minute}"),
            now + SignedDuration::from_mins(1),
        )
        .await;
    match fresh {
        Ok(true) => {}
        Ok(false) => {
            return page(
                429,
                "settings_link_recent",
                "A settings link is on its way",
                "We e-mailed the practice's owners a settings link less than a minute ago. Check your inbox (and spam folder); you can ask for another in a minute.",
                practice.id.as_str(),
                &[],
                None,
            );
        }
        Err(_) => return unavailable(),
    }
    let asked = deps
        .bus
        .publish(&[DomainEvent::SettingsLinkRequested {
            practice_id: practice.id.clone(),
            requested_by: claims.approver.clone(),
        }])
        .await;
    if asked.is_err() {
        return unavailable();
    }
    tracing::info!(practice_id = %practice.id, approver = %claims.approver, outcome = "settings_link_requested", "settings link requested");
    let message = format!(
        "We are e-mailing a settings link to each of the practice's owners. It works for {SETTINGS_LINK_MINUTES} minutes, once; nothing has changed yet."
    );
    page(
        200,
        "settings_link_sent",
        "Check your e-mail",
        &message,
        practice.id.as_str(),
        &[],
        None,
    )
}

/// E-mails each of the practice's owners a settings link of their own (bound to them, so it
/// stops working when they stop being an owner), for [`SETTINGS_LINK_MINUTES`]. `actor` is who
/// asked: `owner:<approver id>` from a request link (still an owner, or nothing is sent), or
/// `admin` (`pil practice settings-link`). Appends `settings_link_sent` (who asked, how many
/// owners, until when; never an address or a link) to the audit chain. Returns how many were
/// sent.
pub async fn send_links(
    deps: &ApprovalDeps<'_>,
    practice_id: &PracticeId,
    actor: &str,
) -> Result<usize, ApprovalError> {
    if deps.base_url.is_empty() {
        return Err(ApprovalError::Port(PortError::Permanent(
            "PUBLIC_BASE_URL is not configured".into(),
        )));
    }
    let practice = deps
        .practices
        .get_practice(practice_id)
        .await?
        .ok_or(ApprovalError::UnknownPractice)?;
    if let Some(approver) = actor.strip_prefix("owner:")
        && !practice
            .owner_emails
            .iter()
            .any(|e| token::approver_id(e) == approver)
    {
        tracing::warn!(practice_id = %practice.id, approver, reason = "not_an_owner", "settings link not sent");
        return Ok(0);
    }
    let key = deps.secrets.link(&practice.id, &practice.secrets).await?;
    let now = deps.clock.now();
    let until = now + SignedDuration::from_mins(SETTINGS_LINK_MINUTES);
    let expires = until
        .to_zoned(practice.tz())
        .strftime("%b %-d, %-I:%M %p %Z")
        .to_string();
    let subject =
        format!("Your approval settings link (works for {SETTINGS_LINK_MINUTES} minutes)");
    for owner in &practice.owner_emails {
        let url = settings_link(deps.base_url, &practice, owner, &key, now);
        let (html, text) = SettingsLink {
            subject: &subject,
            practice_id: practice.id.as_str(),
            url: &url,
            expires: &expires,
            minutes: SETTINGS_LINK_MINUTES,
        }
        .parts();
        deps.mailer
            .send(&Mail {
                to: vec![owner.clone()],
                subject: subject.clone(),
                html,
                text,
            })
            .await?;
    }
    let sent = practice.owner_emails.len();
    deps.audit
        .record(
            &practice.id,
            crate::audit::AuditEvent::new(actor, "settings_link_sent").details(serde_json::json!({
                "owners": sent,
                "valid_until": until,
            })),
            now,
        )
        .await;
    tracing::info!(practice_id = %practice.id, event = "settings_link_sent", owners = sent, "settings links e-mailed");
    Ok(sent)
}

/// A form field that did not parse: the field's label and the rule.
fn field_error(field: &str, rule: &str) -> String {
    format!("{field}: {rule}. Nothing was saved; correct it and save again.")
}

/// The policy the form describes, or what is wrong with it (named, never echoed).
fn parse_form(current: &Policy, body: &[u8]) -> Result<Policy, String> {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let num = |name: &str, label: &str, lo: u32, hi: u32| -> Result<Option<u32>, String> {
        match form.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(field_error(
                    label,
                    &format!("a whole number from {lo} to {hi}"),
                )),
            },
        }
    };
    let mut p = current.clone();
    for k in ActionKind::ALL {
        let mut kp = p.for_kind(k);
        let label = k.plural_label();
        if let Some(m) = form.get(&format!("mode.{}", k.as_str())) {
            kp.mode = Mode::parse(m)
                .ok_or_else(|| field_error(label, "choose approve, automatic or off"))?;
        }
        if let Some(n) = num(
            &format!("max_auto_per_day.{}", k.as_str()),
            &format!("{label}, most a day"),
            0,
            1000,
        )? {
            kp.max_auto_per_day = n;
        }
        if let Some(n) = num(
            &format!("max_auto_value.{}", k.as_str()),
            &format!("{label}, largest value"),
            0,
            100_000,
        )? {
            kp.max_auto_value = n;
        }
        p.kinds.insert(k, kp);
    }
    if let Some(n) = num("cooldown_days", "Days between two messages", 0, 365)? {
        p.cooldown_days = n;
    }
    if let Some(n) = num("max_nudges_per_30_days", "Most messages in 30 days", 1, 30)? {
        p.max_nudges_per_30_days = n;
    }
    if let Some(n) = num("approval_expiry_hours", "Hours a link works", 1, 720)? {
        p.approval_expiry_hours = n;
    }
    if let Some(n) = num("slot_fill_k", "Patients offered a slot", 1, 20)? {
        p.slot_fill_k = n;
    }
    if let Some(n) = num("nightly_budget", "Most new actions a night", 1, 500)? {
        p.nightly_budget = n;
    }
    if let Some(q) = form.get("quiet_hours").map(|v| v.trim()) {
        p.quiet_hours = match q {
            "" | "off" => None,
            q => crate::practice::parse_quiet_hours(q).map_err(|()| {
                field_error(
                    "Quiet hours",
                    "two different hours 0-23 as START-END (e.g. 20-8), or none",
                )
            })?,
        };
    }
    Ok(p)
}

/// POST: validates the form, consumes the link, saves and audits with the approver. The saved
/// page shows the settings in words and no link: a new settings link comes by e-mail.
pub async fn save(
    deps: &ApprovalDeps<'_>,
    admin_store: &dyn AdminStore,
    practice: &Practice,
    claims: &Claims,
    body: &[u8],
) -> Page {
    let invalid = |e: &str| {
        render(
            practice,
            &practice.policy,
            View {
                status: 422,
                outcome: "settings_invalid",
                title: "Approval settings",
                message: "One setting needs a correction.",
                badge: "Not saved",
                tone: "confirm-reject",
                error: e,
                editing: true,
            },
        )
    };
    let policy = match parse_form(&practice.policy, body) {
        Ok(p) => p,
        Err(e) => return invalid(&e),
    };
    match deps
        .tokens
        .consume_token(&practice.id, &claims.nonce, claims.expires_at())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return render(
                practice,
                &practice.policy,
                View {
                    status: 409,
                    outcome: "reused",
                    title: "This link was already used",
                    message: "Each settings link works once. Nothing was changed; these are your settings now.",
                    badge: "Link already used",
                    tone: "settled",
                    error: "",
                    editing: false,
                },
            );
        }
        Err(_) => return settings_unavailable(practice),
    }
    let actor = format!("owner:{}", claims.approver);
    let saved = match admin::replace_policy(admin_store, &practice.id, policy, &actor).await {
        Ok(p) => p,
        // Checked above already; kept for completeness.
        Err(AdminError::Invalid { field, rule }) => return invalid(&field_error(field, rule)),
        Err(_) => return settings_unavailable(practice),
    };
    tracing::info!(practice_id = %practice.id, approver = %claims.approver, outcome = "settings_saved", "owner saved settings");
    render(
        practice,
        &saved,
        View {
            status: 200,
            outcome: "settings_saved",
            title: "Settings saved",
            message: "From now on:",
            badge: "Saved",
            tone: "approved",
            error: "",
            editing: false,
        },
    )
}

fn settings_unavailable(practice: &Practice) -> Page {
    render(
        practice,
        &practice.policy,
        View {
            status: 503,
            outcome: "unavailable",
            title: "Please try again",
            message: "We could not reach our records just now. Nothing was changed.",
            badge: "Nothing changed",
            tone: "settled",
            error: "",
            editing: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::practice::KindPolicy;

    #[test]
    fn the_form_parses_into_a_policy_and_names_a_bad_field() {
        let cur = Policy::default();
        let p = parse_form(
            &cur,
            b"mode.rebook_nudge=auto&max_auto_per_day.rebook_nudge=5&max_auto_value.rebook_nudge=600&quiet_hours=21-7&cooldown_days=10&slot_fill_k=4",
        )
        .unwrap();
        let k = p.for_kind(ActionKind::RebookNudge);
        assert_eq!(
            (k.mode, k.max_auto_per_day, k.max_auto_value),
            (Mode::Auto, 5, 600)
        );
        assert_eq!(p.quiet_hours, Some((21, 7)));
        assert_eq!((p.cooldown_days, p.slot_fill_k), (10, 4));
        assert_eq!(
            p.for_kind(ActionKind::WinBack),
            cur.for_kind(ActionKind::WinBack)
        );
        let none = parse_form(&cur, b"quiet_hours=none").unwrap();
        assert_eq!(none.quiet_hours, None);
        let e = parse_form(&cur, b"quiet_hours=25-3").unwrap_err();
        assert!(e.starts_with("Quiet hours:") && !e.contains("25"), "{e}");
        let e = parse_form(&cur, b"max_auto_value.win_back=lots").unwrap_err();
        assert!(
            e.starts_with("Win-backs, largest value:") && !e.contains("lots"),
            "{e}"
        );
        let e = parse_form(&cur, b"mode.follow_up=sometimes").unwrap_err();
        assert!(e.starts_with("Follow-ups:"), "{e}");
    }

    #[test]
    fn policies_read_in_words() {
        let mut k = KindPolicy::default();
        assert_eq!(kind_words(&k), "I approve each one");
        k.mode = Mode::Auto;
        assert_eq!(
            kind_words(&k),
            "Sent automatically, up to 20 a day and $1,000 each; the rest come to me"
        );
        k.mode = Mode::Off;
        assert_eq!(kind_words(&k), "Off: never proposed");
    }
}
