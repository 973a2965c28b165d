//! The daily PMS integration report's e-mail to a practice's technical contacts: plain text,
//! and the same text preformatted as its HTML part.

use askama::Template;

/// One rule broken at a field path, as the e-mail lists it.
pub(crate) struct RefusalLine<'a> {
    pub(crate) count: u64,
    pub(crate) code: &'a str,
    pub(crate) rule: &'a str,
    pub(crate) path: &'a str,
    pub(crate) last_seen: String,
}

#[derive(Template)]
#[template(path = "integration.txt")]
pub(crate) struct IntegrationText<'a> {
    pub(crate) practice_id: &'a str,
    pub(crate) date: String,
    pub(crate) refused: u64,
    pub(crate) rows: &'a [RefusalLine<'a>],
}

#[derive(Template)]
#[template(path = "integration.html")]
struct IntegrationHtml<'a> {
    subject: &'a str,
    text: &'a str,
}

impl IntegrationText<'_> {
    /// The e-mail's HTML and text parts.
    pub(crate) fn parts(&self, subject: &str) -> (String, String) {
        let text = self.render().unwrap_or_default();
        let html = IntegrationHtml {
            subject,
            text: &text,
        }
        .render()
        .unwrap_or_default();
        (html, text)
    }
}
