//! The owner's full list (docs/contracts.md, Approval links): the page the digest's "See the
//! full list" link opens. It shows every action of the practice that awaits the owner's
//! decision, grouped by the night it was proposed, and what waits for a later night over the
//! nightly budget, in the order the scan will propose it and grouped by the night it is
//! expected. A page to read: it decides nothing and carries no link.
//!
//! What waits is not stored anywhere: the page reads it from the due index as the next night's
//! scan will find it (records due by then, each with its winning gap, past-window gaps left
//! out), ranks it as the scan ranks (highest estimated value, then the longest overdue, then
//! the action id), and deals it out over the nights at the practice's nightly budget. The
//! checks the scan makes on the night itself (consent, a booking ahead, cooldown, the monthly
//! cap) are made then, so a night's list can shrink; the page says so.

use jiff::ToSpan;
use jiff::civil::Date;

use crate::action::{Action, ActionStatus};
use crate::ids::ActionId;
use crate::practice::Practice;
use crate::rules;
use crate::service::approval::ApprovalDeps;
use crate::service::report::money;
use crate::state::Entity;
use crate::views::list::{List, ListGroup};
use crate::views::{ActionView, Page, unavailable};

/// Due records the page reads at most (one BatchGetItem per 100): a bound on what one page
/// view costs. A practice with more due than this (a very large first night) sees the first
/// ones the due index names ranked, and a line saying more are due.
pub const WAITING_READ_MAX: usize = 5_000;
/// Waiting records shown as rows; the rest are counted per night (a page stays light on a
/// phone however long the queue).
pub const WAITING_SHOWN: usize = 250;

/// What waits: one record's gap as the next night's scan would propose it.
struct Waiting {
    id: ActionId,
    view: ActionView,
    value: u32,
    due_since: Date,
}

fn night_label(d: Date) -> String {
    d.strftime("%A, %B %-d").to_string()
}

/// The scan's order: highest value, then longest overdue, then id.
fn rank_key(value: u32, due_since: Date, id: &ActionId) -> (std::cmp::Reverse<u32>, Date, String) {
    (std::cmp::Reverse(value), due_since, id.as_str().to_owned())
}

/// The practice's next night not yet scanned (the first night a waiting record can come).
fn next_night(practice: &Practice, today: Date) -> Date {
    match practice.last_scan_date {
        Some(d) if d >= today => d.saturating_add(1.days()),
        _ => today,
    }
}

fn waiting_of(practice: &Practice, entity: &Entity, night: Date) -> Option<Waiting> {
    let (gap, patient, treatment) = match entity {
        Entity::PatientTreatment(pt) if pt.recheck_on.is_none_or(|r| r <= night) => {
            let (gap, _) = rules::due_on_day(pt, practice, night)?;
            (gap, pt.patient_ref.clone(), pt.treatment)
        }
        Entity::Appointment(a) if a.recheck_on.is_none_or(|r| r <= night) => {
            let gap = rules::no_show_gap(a, practice).filter(|g| g.due <= night)?;
            let p = a.patient.as_ref()?;
            (gap, p.value.patient_ref.clone(), p.value.treatment)
        }
        _ => return None,
    };
    // Past its window on that night: the scan settles it as stale, nothing is sent.
    if gap.is_stale(practice, night) {
        return None;
    }
    let value = practice.avg_ticket(treatment);
    let reason = gap.reason.plain_words();
    Some(Waiting {
        id: crate::service::scan::gap_id(practice, &gap, &patient, treatment),
        view: ActionView {
            kind_label: gap.kind.label(),
            patient_code: patient.short_code(),
            treatment_label: treatment.label(),
            reason,
            reason_sentence: crate::views::sentence(reason),
            due_since: gap.due.strftime("%b %-d, %Y").to_string(),
            value,
            value_display: money(u64::from(value)),
            status: "waiting",
            status_label: "Waiting",
            approve_url: String::new(),
            reject_url: String::new(),
        },
        value,
        due_since: gap.due,
    })
}

fn group(id: String, label: String, rows: Vec<ActionView>, count: usize, value: u64) -> ListGroup {
    ListGroup {
        id,
        label,
        count,
        value_display: money(value),
        actions: rows,
    }
}

/// GET of a list link (already verified by the caller: signature, expiry, current owner).
pub async fn show(deps: &ApprovalDeps<'_>, practice: &Practice) -> Page {
    let now = deps.clock.now();
    let today = practice.local_date(now);
    // Awaiting the owner: proposed or mailed, not past the expiry the PMS would get.
    let mut open: Vec<Action> = match deps.log.practice_actions(&practice.id).await {
        Ok(all) => all
            .into_iter()
            .filter(|a| {
                matches!(a.status, ActionStatus::Proposed | ActionStatus::Pending)
                    && a.expires_at > now
            })
            .collect(),
        Err(_) => return unavailable(),
    };
    open.sort_by(|a, b| {
        practice
            .local_date(b.created_at)
            .cmp(&practice.local_date(a.created_at))
            .then(rank_key(a.value, a.due_since, &a.id).cmp(&rank_key(b.value, b.due_since, &b.id)))
    });
    let mut open_groups: Vec<ListGroup> = Vec::new();
    let mut open_value = 0u64;
    for a in &open {
        let day = practice.local_date(a.created_at);
        let label = if day == today {
            "Proposed today".to_owned()
        } else {
            format!("Proposed {}", night_label(day))
        };
        if open_groups.last().is_none_or(|g| g.label != label) {
            open_groups.push(group(format!("open-{day}"), label, Vec::new(), 0, 0));
        }
        if let Some(g) = open_groups.last_mut() {
            g.count += 1;
            g.actions.push(ActionView::of(a));
            let total: u64 = g.actions.iter().map(|v| u64::from(v.value)).sum();
            g.value_display = money(total);
        }
        open_value += u64::from(a.value);
    }

    // What waits, from the next night not yet scanned.
    let first = next_night(practice, today);
    let records = match deps
        .due
        .due_records(&practice.id, first, WAITING_READ_MAX + 1)
        .await
    {
        Ok(r) => r,
        Err(_) => return unavailable(),
    };
    let cut_short = records.len() > WAITING_READ_MAX;
    let open_ids: std::collections::HashSet<&str> = open.iter().map(|a| a.id.as_str()).collect();
    let mut waiting: Vec<Waiting> = records
        .iter()
        .take(WAITING_READ_MAX)
        .filter_map(|r| waiting_of(practice, &r.value, first))
        .filter(|w| !open_ids.contains(w.id.as_str()))
        .collect();
    waiting.sort_by(|a, b| {
        rank_key(a.value, a.due_since, &a.id).cmp(&rank_key(b.value, b.due_since, &b.id))
    });
    let budget = practice.policy.nightly_budget.max(1) as usize;
    let waiting_total = waiting.len();
    let waiting_value: u64 = waiting.iter().map(|w| u64::from(w.value)).sum();
    let mut waiting_groups: Vec<ListGroup> = Vec::new();
    let (mut rest_count, mut rest_last) = (0usize, first);
    for (rank, chunk) in waiting.chunks(budget).enumerate() {
        let night = first.saturating_add((rank as i64).days());
        let shown = WAITING_SHOWN.saturating_sub(rank * budget).min(chunk.len());
        if shown == 0 {
            rest_count += chunk.len();
            rest_last = night;
            continue;
        }
        let value: u64 = chunk.iter().map(|w| u64::from(w.value)).sum();
        let label = if night == today {
            "Expected tonight".to_owned()
        } else {
            format!("Expected {}", night_label(night))
        };
        let rows = chunk[..shown].iter().map(|w| w.view.clone()).collect();
        waiting_groups.push(group(
            format!("night-{night}"),
            label,
            rows,
            chunk.len(),
            value,
        ));
    }
    let hidden_in_groups = waiting_groups
        .iter()
        .map(|g| g.count - g.actions.len())
        .sum::<usize>();
    let rest = if rest_count + hidden_in_groups == 0 {
        String::new()
    } else {
        let nights = rest_count.div_ceil(budget);
        if rest_count == 0 {
            format!("…and {} more in the nights above.", hidden_in_groups)
        } else {
            format!(
                "…and {} more: {} over the following {} (through {}).",
                rest_count + hidden_in_groups,
                if hidden_in_groups > 0 {
                    format!("{hidden_in_groups} in the nights above and {rest_count}")
                } else {
                    rest_count.to_string()
                },
                crate::views::plural(nights, "night", "nights"),
                night_label(rest_last)
            )
        }
    };
    let cut = if cut_short {
        format!(
            "More than {WAITING_READ_MAX} records are due: this list ranks the first {WAITING_READ_MAX} the index holds; the rest are ranked on their nights."
        )
    } else {
        String::new()
    };
    let summary = format!(
        "{} awaiting your decision · {} · {} waiting · {}",
        open.len(),
        money(open_value),
        waiting_total,
        money(waiting_value)
    );
    // Counts only (no ref, no date).
    tracing::info!(practice_id = %practice.id, pending = open.len(), deferred = waiting_total,
        due_read = records.len().min(WAITING_READ_MAX), "full list shown");
    List {
        practice_id: practice.id.as_str(),
        summary: &summary,
        open: &open_groups,
        waiting: &waiting_groups,
        rest: &rest,
        cut: &cut,
        budget: practice.policy.nightly_budget,
        first_night: night_label(first),
    }
    .page()
}

/// POST of a list link: the list decides nothing.
pub fn post() -> Page {
    crate::views::page(
        405,
        "invalid",
        "Nothing to confirm",
        "This link shows a list; it changes nothing. Use the approve and reject links in your digest to decide.",
        "",
        &[],
        None,
    )
}
