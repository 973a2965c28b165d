//! What the owner sees, apart from what decides it: the pages' kit (one stylesheet and its
//! CSP hash, the page template, the answer to a link), the action cards, the digest's and the
//! notices' templates, and the words and money they are written in. The services fill them;
//! nothing here reads or writes state.

use askama::Template;

// A template wrapper reads its content's fields (the templates name them directly).
macro_rules! reads_through {
    ($outer:ident, $field:ident, $inner:ident) => {
        impl<'a> std::ops::Deref for $outer<'a> {
            type Target = $inner<'a>;

            fn deref(&self) -> &$inner<'a> {
                self.$field
            }
        }
    };
}

pub mod integration;
pub mod list;
pub mod settings;

use crate::action::{Action, ActionStatus, Withdrawal};

/// `$1,350`: whole currency units with thousands separators.
pub fn money(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    out.push('$');
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone)]
pub struct ActionView {
    pub kind_label: &'static str,
    pub patient_code: String,
    pub treatment_label: &'static str,
    pub reason: &'static str,
    /// The reason as a sentence ("Treatment cycle has passed and nothing is booked.").
    pub reason_sentence: String,
    pub due_since: String,
    pub value: u32,
    /// The value with a currency sign and thousands separators ("$1,350").
    pub value_display: String,
    pub status: &'static str,
    /// The status in the owner's words ("Awaiting your decision").
    pub status_label: &'static str,
    pub approve_url: String,
    pub reject_url: String,
}

impl ActionView {
    pub(crate) fn of(a: &Action) -> Self {
        Self {
            kind_label: a.kind.label(),
            patient_code: a.patient_ref.short_code(),
            treatment_label: a.treatment.label(),
            reason: a.reason.plain_words(),
            reason_sentence: sentence(a.reason.plain_words()),
            due_since: a.due_since.strftime("%b %-d, %Y").to_string(),
            value: a.value,
            value_display: money(u64::from(a.value)),
            status: a.status.as_str(),
            status_label: status_label(a.status, a.withdrawal),
            approve_url: String::new(),
            reject_url: String::new(),
        }
    }
}

pub(crate) fn status_label(s: ActionStatus, withdrawal: Option<Withdrawal>) -> &'static str {
    match s {
        ActionStatus::Proposed | ActionStatus::Pending => "Awaiting your decision",
        ActionStatus::Approved => "Approved",
        ActionStatus::Delivered => "Approved · sent to your software",
        ActionStatus::Rejected => "Rejected",
        ActionStatus::Suppressed => "Not needed",
        ActionStatus::Failed => "Approved · delivery failed",
        ActionStatus::Expired => "Expired",
        ActionStatus::Withdrawn if withdrawal == Some(Withdrawal::OptedOut) => {
            "Withdrawn · the patient opted out"
        }
        ActionStatus::Withdrawn if withdrawal == Some(Withdrawal::SlotErased) => {
            "Withdrawn · the slot's records were erased"
        }
        ActionStatus::Withdrawn => "Withdrawn · the slot was booked",
    }
}

pub(crate) fn sentence(words: &str) -> String {
    let mut c = words.chars();
    match c.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), c.as_str()),
        None => String::new(),
    }
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The digest's pending actions of one kind.
#[derive(Debug, Clone)]
pub struct ActionGroup {
    pub label: &'static str,
    pub count: usize,
    pub value_display: String,
    pub actions: Vec<ActionView>,
}

/// What the digest e-mail says, in HTML and in text.
pub(crate) struct Digest<'a> {
    pub(crate) headline: &'a str,
    pub(crate) practice_id: &'a str,
    pub(crate) scan_date: String,
    pub(crate) expires: String,
    pub(crate) total_display: &'a str,
    pub(crate) count: usize,
    pub(crate) groups: &'a [ActionGroup],
    pub(crate) approve_all_url: &'a str,
    /// The signed link that asks for a settings link by e-mail (never a settings link).
    pub(crate) settings_url: &'a str,
    /// The signed link to the full list (everything open, and what waits).
    pub(crate) list_url: &'a str,
    /// How long the e-mailed settings link works.
    pub(crate) settings_minutes: i64,
    /// "Yesterday: 2 triggers delivered, $900 recovered" (empty when unknown).
    pub(crate) yesterday: &'a str,
    /// "312 more due patients wait: …" (empty when nothing waits).
    pub(crate) waiting: &'a str,
    /// Triggers stopped ([`TRIGGERS_STOPPED`]; empty while they flow).
    pub(crate) notice: &'a str,
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a> {
    digest: &'a Digest<'a>,
    subject: &'a str,
    preheader: &'a str,
}

#[derive(Template)]
#[template(path = "digest.txt")]
struct DigestText<'a> {
    digest: &'a Digest<'a>,
}

impl Digest<'_> {
    /// The e-mail's HTML and text parts; `preheader` is the inbox preview line.
    pub(crate) fn parts(&self, subject: &str, preheader: &str) -> (String, String) {
        let html = DigestHtml {
            digest: self,
            subject,
            preheader,
        }
        .render()
        .unwrap_or_default();
        let text = DigestText { digest: self }.render().unwrap_or_default();
        (html, text)
    }
}

/// A notice to the owners (a stopped endpoint, failing triggers), in HTML and in text.
pub(crate) struct Notice<'a> {
    pub(crate) subject: &'a str,
    pub(crate) practice_id: &'a str,
    pub(crate) what: &'a str,
    pub(crate) todo: &'a str,
}

#[derive(Template)]
#[template(path = "notice.html")]
struct NoticeHtml<'a> {
    notice: &'a Notice<'a>,
}

#[derive(Template)]
#[template(path = "notice.txt")]
struct NoticeText<'a> {
    notice: &'a Notice<'a>,
}

impl Notice<'_> {
    /// The e-mail's HTML and text parts.
    pub(crate) fn parts(&self) -> (String, String) {
        let html = NoticeHtml { notice: self }.render().unwrap_or_default();
        let text = NoticeText { notice: self }.render().unwrap_or_default();
        (html, text)
    }
}

reads_through!(DigestHtml, digest, Digest);
reads_through!(DigestText, digest, Digest);
reads_through!(NoticeHtml, notice, Notice);
reads_through!(NoticeText, notice, Notice);

/// The page an approval link leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
    /// What happened, for logs and tests (never PHI).
    pub outcome: &'static str,
}

/// The pages' whole stylesheet, exactly as it appears inside their one `<style>` element:
/// the vendored fonts as `data:` URIs (the CSP allows nothing to be fetched), then
/// `templates/page.css`. Built by `build.rs`.
pub fn page_css() -> &'static str {
    include_str!(concat!(env!("OUT_DIR"), "/page.css"))
}

/// The CSP source that allows exactly the pages' `<style>` element: `'sha256-…'`.
/// `pil_aws::lambda::page_headers` puts it in the pages' CSP.
pub fn page_style_csp_source() -> String {
    // The stylesheet's SHA-256 in base64, computed by `build.rs` (a test recomputes it).
    format!(
        "'sha256-{}'",
        include_str!(concat!(env!("OUT_DIR"), "/page.css.sha256"))
    )
}

#[derive(Template)]
#[template(path = "page.html")]
pub(crate) struct PageHtml<'a> {
    pub(crate) css: &'static str,
    pub(crate) title: &'a str,
    pub(crate) message: &'a str,
    pub(crate) practice_id: &'a str,
    pub(crate) badge: &'a str,
    pub(crate) tone: &'a str,
    pub(crate) summary: &'a str,
    pub(crate) actions: &'a [ActionView],
    pub(crate) button: Option<&'a str>,
    pub(crate) button_class: &'a str,
}

pub(crate) fn page(
    status: u16,
    outcome: &'static str,
    title: &str,
    message: &str,
    practice: &str,
    actions: &[ActionView],
    button: Option<(&str, &str)>,
) -> Page {
    // The button's form posts back to the page's own address (no `action`): the page carries
    // no link of any kind.
    let (label, class) = match button {
        Some((l, c)) => (Some(l), c),
        None => (None, ""),
    };
    // What happened, at a glance: a badge and a colour per outcome.
    let (badge, tone) = match outcome {
        "confirm" if class == "reject" => ("Please confirm", "confirm-reject"),
        "confirm" => ("Please confirm", "confirm"),
        "approved" => ("Approved", "approved"),
        "rejected" => ("Rejected", "rejected"),
        "already_decided" => ("Already decided", "settled"),
        "reused" => ("Link already used", "settled"),
        "expired" | "revoked" => ("Link no longer valid", "settled"),
        "settings_request" => ("Your settings", "confirm"),
        "settings_link_sent" => ("Check your e-mail", "approved"),
        "settings_link_recent" => ("Check your e-mail", "settled"),
        "invalid" => ("Link not valid", "invalid"),
        "unavailable" => ("Nothing changed", "settled"),
        "opted_out" => ("Patient opted out", "settled"),
        _ => ("", "settled"),
    };
    let total = money(actions.iter().map(|a| u64::from(a.value)).sum());
    let summary = match (outcome, actions.len()) {
        (_, 0) => String::new(),
        ("confirm", n) => format!("{} · {total} at stake", plural(n, "action", "actions")),
        ("approved", n) => format!("{} approved · {total}", plural(n, "action", "actions")),
        ("rejected", n) => format!("{} rejected", plural(n, "action", "actions")),
        (_, n) => plural(n, "action", "actions"),
    };
    let html = PageHtml {
        css: page_css(),
        title,
        message,
        practice_id: practice,
        badge,
        tone,
        summary: &summary,
        actions,
        button: label,
        button_class: class,
    }
    .render()
    .unwrap_or_default();
    Page {
        status,
        html,
        outcome,
    }
}

pub(crate) fn unavailable() -> Page {
    page(
        503,
        "unavailable",
        "Please try again",
        "We could not reach our records just now. Nothing was changed.",
        "",
        &[],
        None,
    )
}
