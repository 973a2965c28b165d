//! The owner's settings page and settings-link e-mail, as the owner sees them: the policy in
//! words, the form, the page around them. `service::settings` decides what they show.

use askama::Template;

use crate::action::ActionKind;
use crate::practice::{KindPolicy, Mode, Policy, Practice};
use crate::token::SETTINGS_LINK_MINUTES;
use crate::views::{Page, money, page_css};

/// One kind's settings as the page shows them.
pub(crate) struct KindView {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) words: String,
    pub(crate) mode: &'static str,
    pub(crate) max_auto_per_day: u32,
    pub(crate) max_auto_value: u32,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub(crate) struct SettingsHtml<'a> {
    pub(crate) css: &'static str,
    pub(crate) title: &'a str,
    pub(crate) message: &'a str,
    pub(crate) badge: &'a str,
    pub(crate) tone: &'a str,
    pub(crate) error: &'a str,
    pub(crate) practice_id: &'a str,
    /// The form (posting back to the page's own address), or the policy in words.
    pub(crate) editing: bool,
    pub(crate) kinds: Vec<KindView>,
    pub(crate) general_words: String,
    /// How long each kind stays worth sending ([`window_words`]).
    pub(crate) window_words: String,
    pub(crate) cooldown_days: u32,
    pub(crate) max_nudges: u32,
    pub(crate) quiet_hours: String,
    pub(crate) expiry_hours: u32,
    pub(crate) slot_fill_k: u32,
    pub(crate) nightly_budget: u32,
    pub(crate) link_minutes: i64,
}

/// A kind's policy in the owner's words ("I approve each one").
pub fn kind_words(k: &KindPolicy) -> String {
    match k.mode {
        Mode::Approve => "I approve each one".into(),
        Mode::Off => "Off: never proposed".into(),
        Mode::Auto if k.max_auto_per_day == 0 => {
            "Automatic, but the daily limit is 0, so each one comes to me".into()
        }
        Mode::Auto => format!(
            "Sent automatically, up to {} a day and {} each; the rest come to me",
            k.max_auto_per_day,
            money(u64::from(k.max_auto_value))
        ),
    }
}

pub(crate) fn quiet_words(q: Option<(u8, u8)>) -> String {
    match q {
        Some((a, b)) => format!("{a:02}:00-{b:02}:00"),
        None => "none".into(),
    }
}

pub fn general_words(p: &Policy) -> String {
    format!(
        "at most one message every {} days and {} in 30 days; quiet hours {}; approval links work {} hours; an opened slot goes to {} patients; at most {} new actions a night",
        p.cooldown_days,
        p.max_nudges_per_30_days,
        quiet_words(p.quiet_hours),
        p.approval_expiry_hours,
        p.slot_fill_k,
        p.nightly_budget
    )
}

/// The practice's windows in words: how long past its due date each kind is still sent
/// (docs/contracts.md, Windows). Set with `pil practice update --stale-after-days`.
pub fn window_words(p: &Practice) -> String {
    let parts: Vec<String> = ActionKind::ALL
        .into_iter()
        .filter_map(|k| {
            p.stale_after_days(k).map(|d| {
                format!(
                    "{} up to {d} days after due",
                    k.plural_label().to_lowercase()
                )
            })
        })
        .collect();
    format!(
        "{}; rebooks and series sessions until a win-back takes over. Later than that, nothing is sent.",
        parts.join(", ")
    )
}

pub(crate) fn kinds(p: &Policy) -> Vec<KindView> {
    ActionKind::ALL
        .into_iter()
        .map(|k| {
            let kp = p.for_kind(k);
            KindView {
                key: k.as_str(),
                label: k.plural_label(),
                words: kind_words(&kp),
                mode: kp.mode.as_str(),
                max_auto_per_day: kp.max_auto_per_day,
                max_auto_value: kp.max_auto_value,
            }
        })
        .collect()
}

pub(crate) struct View<'a> {
    pub(crate) status: u16,
    pub(crate) outcome: &'static str,
    pub(crate) title: &'a str,
    pub(crate) message: &'a str,
    pub(crate) badge: &'a str,
    pub(crate) tone: &'a str,
    pub(crate) error: &'a str,
    pub(crate) editing: bool,
}

pub(crate) fn render(practice: &Practice, policy: &Policy, v: View<'_>) -> Page {
    let html = SettingsHtml {
        css: page_css(),
        title: v.title,
        message: v.message,
        badge: v.badge,
        tone: v.tone,
        error: v.error,
        practice_id: practice.id.as_str(),
        editing: v.editing,
        kinds: kinds(policy),
        general_words: general_words(policy),
        window_words: window_words(practice),
        cooldown_days: policy.cooldown_days,
        max_nudges: policy.max_nudges_per_30_days,
        quiet_hours: policy
            .quiet_hours
            .map_or_else(|| "none".into(), |(a, b)| format!("{a}-{b}")),
        expiry_hours: policy.approval_expiry_hours,
        slot_fill_k: policy.slot_fill_k,
        nightly_budget: policy.nightly_budget,
        link_minutes: SETTINGS_LINK_MINUTES,
    }
    .render()
    .unwrap_or_default();
    Page {
        status: v.status,
        html,
        outcome: v.outcome,
    }
}

/// The e-mail that carries one owner's settings link.
pub(crate) struct SettingsLink<'a> {
    pub(crate) subject: &'a str,
    pub(crate) practice_id: &'a str,
    pub(crate) url: &'a str,
    pub(crate) expires: &'a str,
    pub(crate) minutes: i64,
}

#[derive(Template)]
#[template(path = "settings_link.html")]
struct SettingsLinkHtml<'a> {
    link: &'a SettingsLink<'a>,
}

#[derive(Template)]
#[template(path = "settings_link.txt")]
struct SettingsLinkText<'a> {
    link: &'a SettingsLink<'a>,
}

reads_through!(SettingsLinkHtml, link, SettingsLink);
reads_through!(SettingsLinkText, link, SettingsLink);

impl SettingsLink<'_> {
    /// The e-mail's HTML and text parts.
    pub(crate) fn parts(&self) -> (String, String) {
        let html = SettingsLinkHtml { link: self }.render().unwrap_or_default();
        let text = SettingsLinkText { link: self }.render().unwrap_or_default();
        (html, text)
    }
}
