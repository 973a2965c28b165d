//! What an operator asks of a running stack: how each practice is doing (`pil status`), what
//! its PMS sends that is refused (`pil report --integration`), and a failed trigger sent again
//! once its cause is fixed (`pil dlq redrive --retry-failed`). Counts, ids, rules and field
//! paths; never a ref or anything of a request body.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::action::ActionStatus;
use crate::ids::{ActionId, PracticeId};
use crate::ports::{
    ActionLog, ActionRepo, AuditLog, Mail, Mailer, PortError, PracticeRepo, RefusalLog, StoreError,
    TokenLedger,
};
use crate::views::integration::{IntegrationText, RefusalLine};

/// The trigger endpoint as the emitter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Set, and the PMS has not retired it.
    Active,
    /// The PMS answered 410: no triggers until it is set again.
    Retired,
    /// None set, or the stored one breaks the URL rules.
    Missing,
}

/// One practice's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PracticeStatus {
    pub practice_id: PracticeId,
    pub disabled: bool,
    pub time_zone: String,
    pub last_scan_date: Option<Date>,
    /// Its last night was not scanned by 06:00 local ([`crate::service::scan::missed_night`]).
    pub night_late: bool,
    /// Actions by status (`proposed`, `pending`, `approved`, …), every status listed.
    pub actions: BTreeMap<&'static str, usize>,
    pub trigger_endpoint: Endpoint,
    /// Refused signed deliveries in the last 24 hours, by `code:rule`.
    pub refusals_24h: BTreeMap<String, u64>,
}

const ALL_STATUSES: [ActionStatus; 9] = [
    ActionStatus::Proposed,
    ActionStatus::Pending,
    ActionStatus::Approved,
    ActionStatus::Rejected,
    ActionStatus::Suppressed,
    ActionStatus::Delivered,
    ActionStatus::Failed,
    ActionStatus::Expired,
    ActionStatus::Withdrawn,
];

pub async fn practice_status(
    practices: &dyn PracticeRepo,
    actions: &dyn ActionLog,
    refusals: &dyn RefusalLog,
    id: &PracticeId,
    now: Timestamp,
) -> Result<Option<PracticeStatus>, StoreError> {
    let Some(p) = practices.get_practice(id).await? else {
        return Ok(None);
    };
    let mut by_status: BTreeMap<&'static str, usize> =
        ALL_STATUSES.iter().map(|s| (s.as_str(), 0)).collect();
    for a in actions.practice_actions(id).await? {
        *by_status.entry(a.status.as_str()).or_default() += 1;
    }
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for r in refusals
        .refusals(id, now - SignedDuration::from_hours(24))
        .await?
    {
        *refused.entry(format!("{}:{}", r.code, r.rule)).or_default() += r.count;
    }
    let trigger_endpoint = if p.endpoint_retired {
        Endpoint::Retired
    } else if p.trigger_url.is_some() {
        Endpoint::Active
    } else {
        Endpoint::Missing
    };
    Ok(Some(PracticeStatus {
        night_late: !p.disabled && crate::service::scan::missed_night(&p, now),
        practice_id: p.id,
        disabled: p.disabled,
        time_zone: p.time_zone,
        last_scan_date: p.last_scan_date,
        actions: by_status,
        trigger_endpoint,
        refusals_24h: refused,
    }))
}

/// One row of the integration report: a rule broken at a field path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrationRow {
    pub code: String,
    pub rule: String,
    pub path: String,
    pub count: u64,
    /// The first and last hour (UTC) it was seen in.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// What a PMS team needs to fix its integration: the practice's refused signed deliveries
/// since `since`, by rule and field path, most frequent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrationReport {
    pub practice_id: PracticeId,
    pub since: Timestamp,
    pub refused: u64,
    pub rows: Vec<IntegrationRow>,
}

pub async fn integration_report(
    refusals: &dyn RefusalLog,
    id: &PracticeId,
    since: Timestamp,
) -> Result<IntegrationReport, StoreError> {
    let mut rows: BTreeMap<(String, String, String), IntegrationRow> = BTreeMap::new();
    for r in refusals.refusals(id, since).await? {
        let row = rows
            .entry((r.code.clone(), r.rule.clone(), r.path.clone()))
            .or_insert_with(|| IntegrationRow {
                code: r.code.clone(),
                rule: r.rule.clone(),
                path: r.path.clone(),
                count: 0,
                first_seen: r.hour,
                last_seen: r.hour,
            });
        row.count += r.count;
        row.first_seen = row.first_seen.min(r.hour);
        row.last_seen = row.last_seen.max(r.hour);
    }
    let mut rows: Vec<IntegrationRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.code, &a.rule, &a.path).cmp(&(&b.code, &b.rule, &b.path)))
    });
    Ok(IntegrationReport {
        practice_id: id.clone(),
        since,
        refused: rows.iter().map(|r| r.count).sum(),
        rows,
    })
}

impl IntegrationReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Refused deliveries of {} since {}: {}\n",
            self.practice_id, self.since, self.refused
        );
        if self.rows.is_empty() {
            return out;
        }
        out.push_str(&format!(
            "\n{:>7}  {:<22} {:<26} {:<40} last seen (UTC hour)\n",
            "count", "code", "rule", "field"
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:>7}  {:<22} {:<26} {:<40} {}\n",
                r.count, r.code, r.rule, r.path, r.last_seen
            ));
        }
        out
    }
}

/// Whether [`retry_failed`] sent the action back to the emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Failed and not expired: approved again, its attempts reset.
    Approved,
    /// Not failed (delivered, approved, withdrawn, …): left as it is.
    NotFailed,
    /// Failed, but past its expiry: it stays failed (its gap comes back on a later night).
    Expired,
    Unknown,
}

/// Makes a failed action deliverable again (once its cause is fixed: a new endpoint, a PMS
/// back up): approved, attempts reset, audited. The emitter checks consent, quiet hours and
/// the endpoint again before it sends; an action that is not failed is left alone, so running
/// this twice, or for a message redriven twice, sends nothing twice.
pub async fn retry_failed(
    actions: &dyn ActionRepo,
    audit: &dyn AuditLog,
    practice: &PracticeId,
    id: &ActionId,
    now: Timestamp,
) -> Result<Retry, StoreError> {
    let Some(a) = actions.get_action(practice, id).await? else {
        return Ok(Retry::Unknown);
    };
    if a.status != ActionStatus::Failed {
        return Ok(Retry::NotFailed);
    }
    if now >= a.expires_at {
        return Ok(Retry::Expired);
    }
    let mut again = a.clone();
    again.status = ActionStatus::Approved;
    again.attempts = 0;
    again.last_error = None;
    again.lease_until = None;
    if !actions.update_action(&again).await? {
        // Changed meanwhile: whoever changed it decided.
        return Ok(Retry::NotFailed);
    }
    audit
        .record(
            practice,
            crate::audit::AuditEvent::new("admin", "trigger_retried")
                .action(id)
                .details(serde_json::json!({"kind": a.kind.as_str(), "last_error": a.last_error})),
            now,
        )
        .await;
    Ok(Retry::Approved)
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("mail: {0}")]
    Port(#[from] PortError),
}

impl MailError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Port(PortError::Transient(_)) => true,
            Self::Port(PortError::Permanent(_)) => false,
        }
    }
}

/// The daily PMS integration report to the practice's technical contacts, for the night of
/// `date`: sent when its PMS had signed deliveries refused in the 24 hours before `now`, at
/// most once per practice and date (a redelivered request sends nothing twice). Returns the
/// addresses mailed (0: no contact, nothing refused, or sent already).
pub async fn integration_mail(
    practices: &dyn PracticeRepo,
    refusals: &dyn RefusalLog,
    tokens: &dyn TokenLedger,
    mailer: &dyn Mailer,
    id: &PracticeId,
    date: Date,
    now: Timestamp,
) -> Result<usize, MailError> {
    let Some(p) = practices.get_practice(id).await? else {
        return Ok(0);
    };
    if p.technical_contacts.is_empty() {
        return Ok(0);
    }
    let report = integration_report(refusals, id, now - SignedDuration::from_hours(24)).await?;
    if report.refused == 0 {
        return Ok(0);
    }
    let keep = now + SignedDuration::from_hours(72);
    if !tokens
        .consume_token(id, &format!("integration_report:{date}"), keep)
        .await?
    {
        return Ok(0);
    }
    let subject = format!(
        "{}: {} deliveries refused in 24 hours",
        p.id, report.refused
    );
    let rows: Vec<RefusalLine> = report
        .rows
        .iter()
        .map(|r| RefusalLine {
            count: r.count,
            code: &r.code,
            rule: &r.rule,
            path: &r.path,
            last_seen: r.last_seen.to_string(),
        })
        .collect();
    let (html, text) = IntegrationText {
        practice_id: p.id.as_str(),
        date: date.to_string(),
        refused: report.refused,
        rows: &rows,
    }
    .parts(&subject);
    mailer
        .send(&Mail {
            to: p.technical_contacts.clone(),
            subject,
            html,
            text,
        })
        .await?;
    Ok(p.technical_contacts.len())
}
