//! scheduler-scan's domain: turn what is due into candidate actions.
//!
//! Reads only the due index (cost grows with due items, not with patients), checks each due
//! record against consent and bookings ahead, creates actions with deterministic ids, marks
//! the record as actioned (which takes it out of the index), and hands the new actions to
//! approval-check in one message. A re-run for the same practice and date adds nothing.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionKind, ActionStatus, Reason};
use crate::ids::{ActionId, PracticeId};
use crate::ports::{
    ActionRepo, CandidateBatch, CandidateSink, Clock, DueIndex, EntityRepo, PatientIndex,
    PortError, PracticeRepo, StoreError,
};
use crate::practice::Practice;
use crate::state::{Consent, Entity, EntityKey, PatientTreatment};

pub struct ScanDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub entities: &'a dyn EntityRepo,
    pub due: &'a dyn DueIndex,
    pub patients: &'a dyn PatientIndex,
    pub actions: &'a dyn ActionRepo,
    pub candidates: &'a dyn CandidateSink,
    pub clock: &'a dyn Clock,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("unknown practice")]
    UnknownPractice,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Port(#[from] PortError),
}

impl ScanError {
    /// Retry (leave the message on the queue) or give up.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::UnknownPractice => false,
            Self::Store(e) => e.is_transient(),
            Self::Port(PortError::Transient(_)) => true,
            Self::Port(PortError::Permanent(_)) => false,
        }
    }
}

/// Why a due gap did not become an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    OptedOut,
    BookedAhead,
    KindOff,
}

impl Suppression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::BookedAhead => "booked_ahead",
            Self::KindOff => "kind_off",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    pub practice_id: Option<PracticeId>,
    pub scan_date: Option<Date>,
    /// Due-index entries read.
    pub due_read: usize,
    /// Actions created by this run.
    pub created: Vec<ActionId>,
    /// Actions handed to approval-check (new ones, and ones a crashed run left behind).
    pub handed_over: usize,
    pub suppressed: Vec<Suppression>,
}

/// Page size for reading the due index.
const DUE_PAGE: usize = 500;
/// How long a rebook nudge stays actionable for the PMS.
const REBOOK_VALID_DAYS: i64 = 14;
/// After a suppression for opt-out, look again in this many days.
const OPTED_OUT_RECHECK_DAYS: i64 = 7;

pub async fn scan_practice(
    deps: &ScanDeps<'_>,
    practice_id: &PracticeId,
    day: Date,
) -> Result<ScanReport, ScanError> {
    let practice = deps
        .practices
        .get_practice(practice_id)
        .await?
        .ok_or(ScanError::UnknownPractice)?;
    let mut report = ScanReport {
        practice_id: Some(practice_id.clone()),
        scan_date: Some(day),
        ..Default::default()
    };
    if practice.disabled {
        return Ok(report);
    }
    let mut hand_over = Vec::new();
    loop {
        let keys = deps.due.due_keys(practice_id, day, DUE_PAGE).await?;
        let n = keys.len();
        report.due_read += n;
        for key in keys {
            if let EntityKey::PatientTreatment(..) = key {
                evaluate(deps, &practice, &key, day, &mut report, &mut hand_over).await?;
            }
        }
        // Every evaluated record leaves the index (actioned, or parked until a later date),
        // so the next page read starts with what is left.
        if n < DUE_PAGE {
            break;
        }
    }
    if !hand_over.is_empty() {
        report.handed_over = hand_over.len();
        for chunk in hand_over.chunks(100) {
            let batch = CandidateBatch {
                practice_id: practice_id.clone(),
                scan_date: day,
                action_ids: chunk.to_vec(),
            };
            deps.candidates.send_candidates(&batch).await?;
        }
    }
    Ok(report)
}

async fn evaluate(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    key: &EntityKey,
    day: Date,
    report: &mut ScanReport,
    hand_over: &mut Vec<ActionId>,
) -> Result<(), ScanError> {
    let Some(stored) = deps.entities.get_entity(&practice.id, key).await? else {
        return Ok(());
    };
    let Entity::PatientTreatment(mut pt) = stored.value else {
        return Ok(());
    };
    let cycle = practice.cycle_days(pt.treatment);
    let (Some(due), Some(last)) = (pt.due_on(cycle), pt.last.as_ref().map(|l| l.value.on)) else {
        return rewrite(deps, practice, &pt, stored.version, cycle).await;
    };
    if due > day || pt.actioned_due == Some(due) || pt.recheck_on.is_some_and(|r| r > day) {
        // A stale index entry (a newer completion moved the date): put it right.
        return rewrite(deps, practice, &pt, stored.version, cycle).await;
    }

    if let Some(reason) = suppression(deps, practice, &pt, day).await? {
        report.suppressed.push(reason);
        pt.recheck_on = Some(match reason {
            Suppression::BookedAhead => booked_until(deps, practice, &pt, day)
                .await?
                .saturating_add(1.day()),
            Suppression::OptedOut | Suppression::KindOff => {
                day.saturating_add(OPTED_OUT_RECHECK_DAYS.days())
            }
        });
        tracing::info!(practice_id = %practice.id, kind = "rebook_nudge", reason = reason.as_str(), "gap suppressed");
        return rewrite(deps, practice, &pt, stored.version, cycle).await;
    }

    let kind = ActionKind::RebookNudge;
    let id = ActionId::derive(&[
        practice.id.as_str(),
        kind.as_str(),
        pt.patient_ref.as_str(),
        pt.treatment.as_str(),
        &due.to_string(),
    ]);
    let now = deps.clock.now();
    let action = Action {
        id: id.clone(),
        practice_id: practice.id.clone(),
        kind,
        patient_ref: pt.patient_ref.clone(),
        treatment: pt.treatment,
        reason: Reason::CycleDue,
        evidence_date: last,
        due_since: due,
        value: practice.avg_ticket(pt.treatment),
        status: ActionStatus::Proposed,
        created_at: now,
        expires_at: local_midnight(practice, day.saturating_add(REBOOK_VALID_DAYS.days())),
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        rev: 0,
    };
    if deps.actions.create_action(&action).await? {
        report.created.push(id.clone());
        hand_over.push(id);
    } else if let Some(existing) = deps.actions.get_action(&practice.id, &id).await?
        && existing.status == ActionStatus::Proposed
    {
        // A run that crashed after creating it never handed it over.
        hand_over.push(id);
    }
    pt.actioned_due = Some(due);
    pt.recheck_on = None;
    rewrite(deps, practice, &pt, stored.version, cycle).await
}

async fn suppression(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    pt: &PatientTreatment,
    day: Date,
) -> Result<Option<Suppression>, ScanError> {
    if practice.policy.for_kind(ActionKind::RebookNudge).mode == crate::practice::Mode::Off {
        return Ok(Some(Suppression::KindOff));
    }
    let consent = deps
        .entities
        .get_entity(&practice.id, &EntityKey::Consent(pt.patient_ref.clone()))
        .await?;
    if let Some(Entity::Consent(c)) = consent.map(|s| s.value)
        && Consent::is_opted_out(&c)
    {
        return Ok(Some(Suppression::OptedOut));
    }
    if booked_ahead(deps, practice, pt, day).await?.is_some() {
        return Ok(Some(Suppression::BookedAhead));
    }
    Ok(None)
}

/// The latest date of a booked appointment of the same category on or after `day`.
async fn booked_ahead(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    pt: &PatientTreatment,
    day: Date,
) -> Result<Option<Date>, ScanError> {
    let appts = deps
        .patients
        .appointments_of(&practice.id, &pt.patient_ref)
        .await?;
    Ok(appts
        .iter()
        .filter(|a| a.treatment() == Some(pt.treatment) && a.is_booked_from(day))
        .filter_map(|a| a.starts_on.as_ref().map(|d| d.value))
        .max())
}

async fn booked_until(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    pt: &PatientTreatment,
    day: Date,
) -> Result<Date, ScanError> {
    Ok(booked_ahead(deps, practice, pt, day).await?.unwrap_or(day))
}

async fn rewrite(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    pt: &PatientTreatment,
    version: u64,
    cycle: Option<u32>,
) -> Result<(), ScanError> {
    let due = pt.due_index_date(cycle);
    match deps
        .entities
        .put_entity(
            &practice.id,
            &Entity::PatientTreatment(pt.clone()),
            Some(version),
            due,
        )
        .await
    {
        // A webhook changed the record meanwhile; the next scan sees the new state.
        Ok(()) | Err(StoreError::Conflict) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn local_midnight(practice: &Practice, day: Date) -> Timestamp {
    day.to_zoned(practice.tz())
        .map(|z| z.timestamp())
        .unwrap_or_else(|_| Timestamp::now())
}

/// The hourly tick's decision: has this practice reached its local night for a date not
/// scanned yet? Local hour 03:00 or later, and the local date is after the last scan date.
/// Comparing dates (not clock readings) makes DST transitions neither skip nor repeat a scan.
pub fn due_for_nightly_scan(practice: &Practice, now: Timestamp) -> Option<Date> {
    const SCAN_HOUR: i8 = 3;
    let local = now.to_zoned(practice.tz());
    let today = local.date();
    // Before 03:00 the night being finished belongs to yesterday's scan.
    let scan_day = if local.hour() >= SCAN_HOUR {
        today
    } else {
        today.yesterday().ok()?
    };
    match practice.last_scan_date {
        Some(last) if last >= scan_day => None,
        _ if local.hour() < SCAN_HOUR && practice.last_scan_date.is_none() => None,
        _ => Some(scan_day),
    }
}

/// The hourly fan-out tick: scans every practice that has reached its local night for a date
/// it has not scanned, and records the date. One practice failing does not stop the others;
/// the tick reports the first error so the queue retries it (re-runs add nothing).
pub async fn nightly_tick(
    deps: &ScanDeps<'_>,
    now: Timestamp,
) -> Result<Vec<ScanReport>, ScanError> {
    let mut reports = Vec::new();
    let mut first_error = None;
    for id in deps.practices.list_practices().await? {
        let Some(practice) = deps.practices.get_practice(&id).await? else {
            continue;
        };
        let Some(day) = due_for_nightly_scan(&practice, now) else {
            continue;
        };
        match scan_practice(deps, &id, day).await {
            Ok(r) => {
                mark_scanned(deps, &id, day).await?;
                reports.push(r);
            }
            Err(e) => {
                tracing::error!(practice_id = %id, error = %e, "nightly scan failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// Records that `day` was scanned (never moving the date backwards).
pub async fn mark_scanned(
    deps: &ScanDeps<'_>,
    id: &PracticeId,
    day: Date,
) -> Result<(), ScanError> {
    for _ in 0..5 {
        let Some(mut p) = deps.practices.get_practice(id).await? else {
            return Ok(());
        };
        if p.last_scan_date.is_some_and(|d| d >= day) {
            return Ok(());
        }
        let expected = p.version;
        p.last_scan_date = Some(day);
        p.version += 1;
        match deps.practices.put_practice(&p, Some(expected)).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::practice::{Policy, SealedSecrets};
    use std::collections::BTreeMap;

    fn practice(tz: &str, last: Option<&str>) -> Practice {
        Practice {
            id: PracticeId::parse("tz-clinic").unwrap(),
            time_zone: tz.into(),
            owner_emails: vec!["o@x.example".into()],
            trigger_url: "https://pms.example/t".into(),
            secrets: SealedSecrets {
                webhook: vec![],
                trigger: String::new(),
                link: String::new(),
            },
            policy: Policy::default(),
            cycle_days: BTreeMap::new(),
            avg_ticket: BTreeMap::new(),
            disabled: false,
            endpoint_retired: false,
            last_scan_date: last.map(|d| d.parse().unwrap()),
            version: 1,
        }
    }

    /// Runs the hourly tick across `hours` hours from `start`, recording each scan.
    fn ticks(tz: &str, start: &str, hours: i64) -> Vec<Date> {
        let mut p = practice(tz, Some("2026-03-06"));
        let mut t: Timestamp = start.parse().unwrap();
        let mut scanned = Vec::new();
        for _ in 0..hours {
            if let Some(d) = due_for_nightly_scan(&p, t) {
                scanned.push(d);
                p.last_scan_date = Some(d);
            }
            t += jiff::SignedDuration::from_hours(1);
        }
        scanned
    }

    #[test]
    fn spring_forward_night_is_scanned_once() {
        // America/New_York springs forward on 2026-03-08 at 02:00.
        let days = ticks("America/New_York", "2026-03-07T00:05:00Z", 24 * 4);
        let expect: Vec<Date> = ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]
            .iter()
            .map(|d| d.parse().unwrap())
            .collect();
        assert_eq!(days, expect);
    }

    #[test]
    fn fall_back_night_is_scanned_once() {
        // Europe/London falls back on 2026-10-25 at 02:00; the 01:00 hour repeats.
        let mut p = practice("Europe/London", Some("2026-10-23"));
        let mut t: Timestamp = "2026-10-23T12:05:00Z".parse().unwrap();
        let mut days = Vec::new();
        for _ in 0..(24 * 3) {
            if let Some(d) = due_for_nightly_scan(&p, t) {
                days.push(d.to_string());
                p.last_scan_date = Some(d);
            }
            t += jiff::SignedDuration::from_hours(1);
        }
        assert_eq!(days, vec!["2026-10-24", "2026-10-25", "2026-10-26"]);
    }

    #[test]
    fn a_missed_night_is_caught_up_and_a_new_practice_waits_for_its_night() {
        let p = practice("Asia/Tokyo", Some("2026-11-20"));
        // 01:00 local on the 23rd: the 22nd was never scanned (ticks lost): catch up now.
        assert_eq!(
            due_for_nightly_scan(&p, "2026-11-22T16:00:00Z".parse().unwrap()),
            Some("2026-11-22".parse().unwrap())
        );
        let fresh = practice("Asia/Tokyo", None);
        assert_eq!(
            due_for_nightly_scan(&fresh, "2026-11-22T16:00:00Z".parse().unwrap()),
            None
        );
        assert_eq!(
            due_for_nightly_scan(&fresh, "2026-11-22T18:30:00Z".parse().unwrap()),
            Some("2026-11-23".parse().unwrap())
        );
    }
}
