//! The owner's full list page (`service::full_list` decides what it shows).

use askama::Template;

use crate::views::{ActionView, Page, page_css};

/// One heading and its rows.
#[derive(Debug, Clone)]
pub struct ListGroup {
    pub id: String,
    pub label: String,
    pub count: usize,
    pub value_display: String,
    pub actions: Vec<ActionView>,
}

/// What the full list shows.
pub(crate) struct List<'a> {
    pub(crate) practice_id: &'a str,
    pub(crate) summary: &'a str,
    pub(crate) open: &'a [ListGroup],
    pub(crate) waiting: &'a [ListGroup],
    /// "…and 9,725 more over the following 389 nights" (empty when every row is shown).
    pub(crate) rest: &'a str,
    /// Said when more were due than the page reads.
    pub(crate) cut: &'a str,
    pub(crate) budget: u32,
    pub(crate) first_night: String,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListHtml<'a> {
    list: &'a List<'a>,
    css: &'static str,
}

reads_through!(ListHtml, list, List);

impl List<'_> {
    /// The page, with the pages' one stylesheet.
    pub(crate) fn page(&self) -> Page {
        Page {
            status: 200,
            html: ListHtml {
                list: self,
                css: page_css(),
            }
            .render()
            .unwrap_or_default(),
            outcome: "list",
        }
    }
}
