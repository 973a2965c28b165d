//! scheduler-scan's domain: turn what is due into candidate actions.
//!
//! Reads only the due index (cost grows with due items, not with patients), checks each due
//! record against consent and bookings ahead, creates actions with deterministic ids, marks
//! the record as actioned (which takes it out of the index), and hands the new actions to
//! approval-check in one message. A re-run for the same practice and date adds nothing.
//!
//! A gap that is due but not acted on (opted out, booked ahead, kind off, cooldown, monthly
//! cap, superseded) is recorded too: an action in status `Suppressed` with its reason, under
//! the id the action would have had, so the report counts it once however often the scan
//! runs. If the gap may be acted on at a later look, that record becomes the action.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionKind, ActionStatus};
use crate::ids::OpaqueRef;
use crate::ids::{ActionId, PracticeId};
use crate::ports::{
    ActionLog, ActionRepo, CandidateBatch, CandidateSink, Clock, DomainEvent, DueIndex, EntityRepo,
    EventPublisher, PatientIndex, PortError, PracticeRepo, StoreError,
};
use crate::practice::Mode;
use crate::practice::Practice;
use crate::rules::{self, Gap};
use crate::state::{Entity, EntityKey};
use crate::treatment::Treatment;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;

pub struct ScanDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub entities: &'a dyn EntityRepo,
    pub due: &'a dyn DueIndex,
    pub patients: &'a dyn PatientIndex,
    pub actions: &'a dyn ActionRepo,
    pub candidates: &'a dyn CandidateSink,
    /// The approval outbox: approved actions no emitter took are published again.
    pub log: &'a dyn ActionLog,
    pub bus: &'a dyn EventPublisher,
    /// An approval younger than this is left to the publish that recorded it
    /// ([`OUTBOX_GRACE_SECONDS`] unless configured).
    pub outbox_grace_seconds: i64,
    /// Due-index entries read per page ([`DUE_PAGE`] unless configured).
    pub page_size: usize,
    /// How long one invocation reads before it hands the rest of the night on
    /// ([`TIME_BUDGET`] unless configured; see [`ScanReport::continue_after`]).
    pub time_budget: std::time::Duration,
    pub clock: &'a dyn Clock,
}

/// Ten seconds: the functions time out at fifteen, and what follows the reading (ranking,
/// creating tonight's proposals, the hand-over) must fit in the rest.
pub const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

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

pub use crate::action::Suppression;

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
    /// Each suppressed gap, with its kind and reason.
    pub suppressed: Vec<(ActionKind, Suppression)>,
    /// Approved actions found in the outbox and published again (see [`republish_outbox`]).
    #[serde(default)]
    pub republished: usize,
    /// Gaps due tonight over the practice's nightly budget: not proposed, ranked again
    /// tomorrow.
    #[serde(default)]
    pub deferred: usize,
    /// The night is not done: its time budget ran out with more due. The scan for the same
    /// day runs again (a continuation message) and starts over: everything this part read
    /// has left the night's due entries (proposed, suppressed or parked), so the next part
    /// reads what is left, and no cursor (which would name a ref) travels in a message. What
    /// this part proposed counts against the same nightly budget.
    #[serde(default)]
    pub more: bool,
}

/// An approval younger than this is left to the publish that recorded it (the default of
/// [`ScanDeps::outbox_grace_seconds`]; `OUTBOX_GRACE_SECONDS` in the function's environment).
/// Thirteen hours: an action waiting out quiet hours sits in the outbox too (no attempt yet),
/// and its own message comes back within SQS's 12-hour visibility limit; publishing it again
/// before that would start a second retry chain beside the first.
pub const OUTBOX_GRACE_SECONDS: i64 = 13 * 3600;

/// Publishes `action.approved` again for every action approved more than
/// [`ScanDeps::outbox_grace_seconds`] ago that no emitter has taken: an approval whose publish failed
/// after the approval was recorded (the page or approval-check answered, the bus did not) is
/// delivered by the next scan instead of stranded. The emitter delivers an action once, so
/// publishing one that was published already (one deferred by quiet hours) sends nothing twice.
pub async fn republish_outbox(
    deps: &ScanDeps<'_>,
    practice_id: &PracticeId,
) -> Result<usize, ScanError> {
    let before = deps.clock.now() - jiff::SignedDuration::from_secs(deps.outbox_grace_seconds);
    let stranded = deps.log.outbox(practice_id, before).await?;
    if stranded.is_empty() {
        return Ok(0);
    }
    let events: Vec<DomainEvent> = stranded
        .iter()
        .map(|a| DomainEvent::ActionApproved {
            practice_id: practice_id.clone(),
            action_id: a.id.clone(),
        })
        .collect();
    deps.bus.publish(&events).await?;
    tracing::info!(practice_id = %practice_id, republished = events.len(), reason = "outbox",
        "approved actions published again");
    Ok(events.len())
}

/// Page size for reading the due index (the default of [`ScanDeps::page_size`]).
pub const DUE_PAGE: usize = 500;
/// After a suppression for opt-out or a kind switched off, look again in this many days.
const RECHECK_DAYS: i64 = 7;

pub async fn scan_practice(
    deps: &ScanDeps<'_>,
    practice_id: &PracticeId,
    day: Date,
) -> Result<ScanReport, ScanError> {
    let mut total = scan_part(deps, practice_id, day, 0).await?;
    let mut part = 0;
    while total.more && part < MAX_PARTS {
        part += 1;
        let next = scan_part(deps, practice_id, day, part).await?;
        total.absorb(next);
    }
    Ok(total)
}

impl ScanReport {
    /// Adds a later part of the same night.
    pub fn absorb(&mut self, part: ScanReport) {
        self.due_read += part.due_read;
        self.created.extend(part.created);
        self.handed_over += part.handed_over;
        self.suppressed.extend(part.suppressed);
        self.republished += part.republished;
        self.deferred += part.deferred;
        self.more = part.more;
    }
}

/// Parts one night may take before it stops (a guard: each part settles or parks what it
/// reads, so a night needs about one part per ten seconds of reading).
pub const MAX_PARTS: u32 = 10_000;

/// Records worked on at once. Each due record is read, with what its gap is checked against,
/// and written back independently of the others; what a record decides for its patient
/// (cooldown, the cap) is decided in index order between the reads and the writes, so the
/// outcome is the same as one record at a time.
pub const CONCURRENCY: usize = 8;

/// Part `part` (0 first) of a night's scan: reads due entries until the index is done or
/// [`ScanDeps::time_budget`] has passed, then ranks, proposes within what is left of the
/// nightly budget, and hands over. A night too large for one invocation is ranked part by
/// part (each part by value, then by how long overdue); the budget and every id hold across
/// parts, and a part run twice (a redelivered continuation) creates nothing twice.
pub async fn scan_part(
    deps: &ScanDeps<'_>,
    practice_id: &PracticeId,
    day: Date,
    part: u32,
) -> Result<ScanReport, ScanError> {
    let started = std::time::Instant::now();
    let first_part = part == 0;
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
    if first_part {
        report.republished = republish_outbox(deps, practice_id).await?;
    }
    let mut run = Run {
        practice: &practice,
        day,
        report: &mut report,
        hand_over: Vec::new(),
        nudged: HashMap::new(),
        held: Vec::new(),
        proposed: std::collections::HashSet::new(),
    };
    // Suppressions are settled as they are found; what would become an action is collected,
    // so the nightly budget can pick the most valuable and most overdue of all of them.
    let mut proposals = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (keys, next) = deps
            .due
            .due_page(practice_id, day, after.as_deref(), deps.page_size.max(1))
            .await?;
        run.report.due_read += keys.len();
        let fetched: Vec<Fetched> = stream::iter(keys)
            .map(|key| fetch(deps, &practice, day, key))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut writes = Vec::with_capacity(fetched.len());
        for f in fetched {
            let (proposal, w) = decide(deps, &mut run, f);
            proposals.extend(proposal);
            if !w.is_empty() {
                writes.push(w);
            }
        }
        stream::iter(writes)
            .map(|w| write_in_order(deps, &practice, w))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        match next {
            Some(_) if started.elapsed() >= deps.time_budget => {
                run.report.more = true;
                break;
            }
            Some(c) => after = Some(c),
            None => break,
        }
    }
    // Highest estimated value first, then the longest overdue, then by id: the same order
    // every night, so what waits comes first the next night.
    proposals.sort_by(|a, b| {
        b.action
            .value
            .cmp(&a.action.value)
            .then(a.action.due_since.cmp(&b.action.due_since))
            .then_with(|| a.action.id.as_str().cmp(b.action.id.as_str()))
    });
    let budget = practice.policy.nightly_budget;
    let mut rest = proposals.into_iter();
    // In rank order until the budget is full (each reservation is counted once per night and
    // action: a re-run after a crash counts nothing twice).
    if budget > 0 {
        for p in rest.by_ref() {
            if deps
                .actions
                .reserve_nightly(&practice.id, day, budget, &p.action.id)
                .await?
            {
                propose(deps, &mut run, p).await?;
            } else {
                defer(deps, &practice, day, p).await?;
                run.report.deferred += 1;
                break;
            }
        }
    }
    // The budget is full: a reservation now only confirms one an earlier run of tonight
    // made (a re-run after a crash), whatever the order, so the rest are asked at once and
    // the ones not reserved wait for the next night.
    let late: Vec<Option<Proposal>> = stream::iter(rest)
        .map(|p| async {
            let within = budget > 0
                && deps
                    .actions
                    .reserve_nightly(&practice.id, day, budget, &p.action.id)
                    .await?;
            if within {
                return Ok::<_, ScanError>(Some(p));
            }
            defer(deps, &practice, day, p).await?;
            Ok(None)
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    for slot in late {
        match slot {
            Some(p) => propose(deps, &mut run, p).await?,
            None => run.report.deferred += 1,
        }
    }
    release_held(deps, &mut run).await?;
    if run.report.deferred > 0 {
        tracing::info!(practice_id = %practice.id, deferred = run.report.deferred, budget,
            reason = "nightly_budget", "proposals over the nightly budget wait for the next night");
    }
    let hand_over = std::mem::take(&mut run.hand_over);
    if !hand_over.is_empty() {
        report.handed_over = hand_over.len();
        for chunk in hand_over.chunks(100) {
            let batch = CandidateBatch {
                practice_id: practice_id.clone(),
                scan_date: day,
                action_ids: chunk.to_vec(),
                deferred: report.deferred,
            };
            deps.candidates.send_candidates(&batch).await?;
        }
    }
    Ok(report)
}

/// One scan's working state.
struct Run<'a> {
    practice: &'a Practice,
    day: Date,
    report: &'a mut ScanReport,
    hand_over: Vec<ActionId>,
    /// Actions given to each patient in this run (the patient index may lag behind our own
    /// writes, so cooldown and the cap count these themselves).
    nudged: HashMap<OpaqueRef, Vec<ActionId>>,
    /// Records parked by cooldown or the cap while one of tonight's proposals for the same
    /// patient counted: if the budget defers that proposal, they wait one night, not the
    /// whole cooldown ([`release_held`]).
    held: Vec<(OpaqueRef, EntityKey)>,
    /// Patients one of tonight's proposals was made for.
    proposed: std::collections::HashSet<OpaqueRef>,
}

/// A gap that would become an action tonight, with the record it came from (not written
/// yet: the budget decides between [`propose`] and [`defer`]).
struct Proposal {
    action: Action,
    key: EntityKey,
    entity: Entity,
    version: u64,
}

/// What the record says, once the gap is decided.
enum Outcome {
    Act(Gap),
    Suppress(Gap, Suppression, Date),
}

/// The gap a record has due on `day`: the winner, the gaps it supersedes, whose it is, the
/// treatment and the date the gap is evidenced by.
struct DueGap {
    gap: Gap,
    superseded: Vec<Gap>,
    patient: OpaqueRef,
    treatment: Treatment,
    evidence: Option<Date>,
}

fn due_gap(entity: &Entity, practice: &Practice, day: Date) -> Option<DueGap> {
    match entity {
        Entity::PatientTreatment(pt) if pt.recheck_on.is_none_or(|r| r <= day) => {
            rules::due_on_day(pt, practice, day).map(|(g, _)| {
                // The gaps due with the winner lose to it (one message per category).
                let superseded: Vec<Gap> = rules::open_gaps(pt, practice)
                    .into_iter()
                    .filter(|o| o.due <= day && *o != g)
                    .collect();
                DueGap {
                    gap: g,
                    superseded,
                    patient: pt.patient_ref.clone(),
                    treatment: pt.treatment,
                    evidence: pt.last.as_ref().map(|l| l.value.on),
                }
            })
        }
        Entity::Appointment(a) if a.recheck_on.is_none_or(|r| r <= day) => {
            rules::no_show_gap(a, practice)
                .filter(|g| g.due <= day)
                .and_then(|g| {
                    a.patient.as_ref().map(|p| DueGap {
                        gap: g,
                        superseded: Vec::new(),
                        patient: p.value.patient_ref.clone(),
                        treatment: p.value.treatment,
                        evidence: a.starts_on.as_ref().map(|s| s.value),
                    })
                })
        }
        _ => None,
    }
}

/// A due-index entry as read: its record, and what its gap is checked against.
struct Fetched {
    key: EntityKey,
    stored: Option<crate::state::Stored<Entity>>,
    patient: Option<PatientView>,
}

/// What the store says about a patient whose gap may be acted on: read only for a gap that
/// is neither stale nor of a kind switched off, and only as far as needed (an opt-out needs
/// nothing more, a booking ahead no actions).
#[derive(Default)]
struct PatientView {
    opted_out: bool,
    appointments: Vec<crate::state::Appointment>,
    actions: Vec<Action>,
}

async fn fetch(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    day: Date,
    key: EntityKey,
) -> Result<Fetched, ScanError> {
    let stored = deps.entities.get_entity(&practice.id, &key).await?;
    let Some(due) = stored
        .as_ref()
        .and_then(|s| due_gap(&s.value, practice, day))
    else {
        return Ok(Fetched {
            key,
            stored,
            patient: None,
        });
    };
    if due.gap.is_stale(practice, day) || practice.policy.for_kind(due.gap.kind).mode == Mode::Off {
        return Ok(Fetched {
            key,
            stored,
            patient: None,
        });
    }
    let mut view = PatientView::default();
    let consent = deps
        .entities
        .get_entity(&practice.id, &EntityKey::Consent(due.patient.clone()))
        .await?;
    if let Some(Entity::Consent(c)) = consent.map(|s| s.value)
        && c.is_opted_out()
    {
        view.opted_out = true;
    } else {
        view.appointments = deps
            .patients
            .appointments_of(&practice.id, &due.patient)
            .await?;
        if booked_until(&view.appointments, &due.gap, due.treatment, day).is_none() {
            view.actions = deps.patients.actions_of(&practice.id, &due.patient).await?;
        }
    }
    Ok(Fetched {
        key,
        stored,
        patient: Some(view),
    })
}

/// A write the scan makes for one record; a record's writes are made in order.
enum Write {
    /// A suppressed gap, kept under the id its action would have had.
    Suppression(Action, Suppression),
    /// The record, settled, parked or put right in the due index.
    Record(Entity, u64),
}

async fn write_in_order(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    writes: Vec<Write>,
) -> Result<(), ScanError> {
    for w in writes {
        match w {
            Write::Suppression(a, reason) => record_suppression(deps, a, reason).await?,
            Write::Record(entity, version) => rewrite(deps, practice, &entity, version).await?,
        }
    }
    Ok(())
}

/// Decides a fetched record: a proposal for tonight's ranking, or its suppressions and the
/// record's new state to write.
fn decide(deps: &ScanDeps<'_>, run: &mut Run<'_>, f: Fetched) -> (Option<Proposal>, Vec<Write>) {
    let Fetched {
        key,
        stored,
        patient: view,
    } = f;
    let Some(stored) = stored else {
        return (None, Vec::new());
    };
    let version = stored.version;
    let mut entity = stored.value;
    let (practice, day) = (run.practice, run.day);
    let Some(DueGap {
        gap,
        superseded,
        patient,
        treatment,
        evidence,
    }) = due_gap(&entity, practice, day)
    else {
        // A stale index entry (a newer event moved the date): put it right.
        return (None, vec![Write::Record(entity, version)]);
    };
    let evidence = evidence.unwrap_or(gap.due);
    let mut writes = Vec::new();
    for lost in &superseded {
        suppressed(run, lost.kind, Suppression::Superseded);
        let a = new_action(deps, practice, lost, &patient, treatment, evidence, day);
        writes.push(Write::Suppression(a, Suppression::Superseded));
    }
    let outcome = if gap.is_stale(practice, day) {
        Outcome::Suppress(gap, Suppression::Stale, day)
    } else {
        let view = view.unwrap_or_default();
        match suppression(run, &gap, &patient, treatment, &view) {
            Some((reason, recheck)) => Outcome::Suppress(gap, reason, recheck),
            None => Outcome::Act(gap),
        }
    };
    match outcome {
        Outcome::Suppress(gap, reason, recheck) => {
            if matches!(reason, Suppression::Cooldown | Suppression::MonthlyCap)
                && run.nudged.contains_key(&patient)
            {
                run.held.push((patient.clone(), key));
            }
            suppressed(run, gap.kind, reason);
            let a = new_action(deps, practice, &gap, &patient, treatment, evidence, day);
            tracing::info!(practice_id = %practice.id, action_id = %a.id, kind = gap.kind.as_str(), reason = reason.as_str(), "gap suppressed");
            writes.push(Write::Suppression(a, reason));
            park(&mut entity, practice, day, reason, recheck);
            writes.push(Write::Record(entity, version));
            (None, writes)
        }
        Outcome::Act(gap) => {
            let action = new_action(deps, practice, &gap, &patient, treatment, evidence, day);
            // Cooldown and the cap count it from here on, even if the budget defers it
            // (the patient then waits a night longer, which they would anyway).
            run.nudged
                .entry(patient)
                .or_default()
                .push(action.id.clone());
            let p = Proposal {
                action,
                key,
                entity,
                version,
            };
            (Some(p), writes)
        }
    }
}

/// Within tonight's budget: the action is created (or a suppressed record of the same gap
/// revived, or a crashed run's action handed over again) and the record settled.
async fn propose(deps: &ScanDeps<'_>, run: &mut Run<'_>, p: Proposal) -> Result<(), ScanError> {
    let (practice, day) = (run.practice, run.day);
    let Proposal {
        action,
        key,
        mut entity,
        version,
    } = p;
    // The record as evaluated, still: ranking can take a while on a large night, and an
    // erasure, a rotation or a new event may have come meanwhile. Gone or changed: nothing is
    // created now; a changed record is evaluated again by the next scan.
    match deps.entities.get_entity(&practice.id, &key).await? {
        Some(s) if s.version == version => {}
        _ => return Ok(()),
    }
    let id = action.id.clone();
    run.proposed.insert(action.patient_ref.clone());
    if deps.actions.create_action(&action).await? {
        run.report.created.push(id.clone());
        run.hand_over.push(id);
    } else if let Some(existing) = deps.actions.get_action(&practice.id, &id).await? {
        match existing.status {
            // A run that crashed after creating it never handed it over.
            ActionStatus::Proposed => run.hand_over.push(id),
            // Suppressed on an earlier night, due now: the record becomes the action.
            ActionStatus::Suppressed if existing.suppressed_by_scan() => {
                let revived = Action {
                    rev: existing.rev,
                    ..action.clone()
                };
                if deps.actions.update_action(&revived).await? {
                    run.report.created.push(id.clone());
                    run.hand_over.push(id);
                }
            }
            _ => {}
        }
    }
    settle(&mut entity, practice, day);
    rewrite(deps, practice, &entity, version).await
}

/// The records cooldown or the cap parked because of a proposal of tonight that the budget
/// then deferred: nothing reached the patient, so they are looked at again tomorrow (their
/// suppression record stays, and becomes the action if they win then).
async fn release_held(deps: &ScanDeps<'_>, run: &mut Run<'_>) -> Result<(), ScanError> {
    let (practice, day) = (run.practice, run.day);
    let tomorrow = day.saturating_add(1.days());
    for (patient, key) in std::mem::take(&mut run.held) {
        if run.proposed.contains(&patient) {
            continue;
        }
        let Some(stored) = deps.entities.get_entity(&practice.id, &key).await? else {
            continue;
        };
        let mut entity = stored.value;
        if recheck(&mut entity, tomorrow) {
            rewrite(deps, practice, &entity, stored.version).await?;
        }
    }
    Ok(())
}

/// Over tonight's budget: nothing is created; the record waits for tomorrow's scan, where it
/// is ranked again with whatever else is due then.
async fn defer(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    day: Date,
    p: Proposal,
) -> Result<(), ScanError> {
    let Proposal {
        mut entity,
        version,
        ..
    } = p;
    recheck(&mut entity, day.saturating_add(1.days()));
    rewrite(deps, practice, &entity, version).await
}

fn suppressed(run: &mut Run<'_>, kind: ActionKind, reason: Suppression) {
    run.report.suppressed.push((kind, reason));
}

/// Keeps a suppressed gap as an action in status `Suppressed`, under the id the action would
/// have had: a re-run or a redelivered scan message finds it and adds nothing. A gap parked
/// and suppressed again later keeps one record, with the latest reason.
async fn record_suppression(
    deps: &ScanDeps<'_>,
    mut action: Action,
    reason: Suppression,
) -> Result<(), ScanError> {
    action.status = ActionStatus::Suppressed;
    action.suppression = Some(reason);
    if deps.actions.create_action(&action).await? {
        return Ok(());
    }
    if let Some(existing) = deps
        .actions
        .get_action(&action.practice_id, &action.id)
        .await?
        && existing.suppressed_by_scan()
        && existing.suppression != Some(reason)
    {
        let mut next = existing;
        next.suppression = Some(reason);
        // Lost a race: the other writer's state stands; the next scan looks again.
        deps.actions.update_action(&next).await?;
    }
    Ok(())
}

/// Marks the gaps due on `day` as settled (the record leaves the index until its next gap).
fn settle(entity: &mut Entity, practice: &Practice, day: Date) {
    match entity {
        Entity::PatientTreatment(pt) => {
            pt.actioned_due = rules::settled_through(pt, practice, day).max(pt.actioned_due);
            pt.recheck_on = None;
        }
        Entity::Appointment(a) => {
            a.recovery_settled = true;
            a.recheck_on = None;
        }
        _ => {}
    }
}

/// A suppressed gap: settled for good when it cannot come back (superseded, a no-show the
/// patient rebooked after), parked until `recheck` otherwise.
fn park(entity: &mut Entity, practice: &Practice, day: Date, reason: Suppression, on: Date) {
    match (entity, reason) {
        // Too late now, too late later: settled for good.
        (e, Suppression::Stale) => settle(e, practice, day),
        (e @ Entity::Appointment(_), Suppression::BookedAhead) => settle(e, practice, day),
        (e, _) => {
            recheck(e, on);
        }
    }
}

/// Keeps a record out of the due index until `on` (treatment records and appointments, the
/// records with gaps). Returns whether the record has one.
fn recheck(entity: &mut Entity, on: Date) -> bool {
    match entity {
        Entity::PatientTreatment(pt) => pt.recheck_on = Some(on),
        Entity::Appointment(a) => a.recheck_on = Some(on),
        _ => return false,
    }
    true
}

fn new_action(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    gap: &Gap,
    patient: &OpaqueRef,
    treatment: Treatment,
    evidence: Date,
    day: Date,
) -> Action {
    Action {
        id: gap_id(practice, gap, patient, treatment),
        practice_id: practice.id.clone(),
        kind: gap.kind,
        patient_ref: patient.clone(),
        treatment,
        reason: gap.reason,
        evidence_date: evidence,
        due_since: gap.due,
        value: practice.avg_ticket(treatment),
        status: ActionStatus::Proposed,
        created_at: deps.clock.now(),
        expires_at: local_midnight(practice, day.saturating_add(gap.valid_days().days())),
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        suppression: None,
        converted: None,
        rev: 0,
        slot: None,
        withdrawal: None,
    }
}

/// The gap's deterministic action id (same gap, same id).
/// The id of the action a gap becomes (the same gap always gives the same id).
pub(crate) fn gap_id(
    practice: &Practice,
    gap: &Gap,
    patient: &OpaqueRef,
    treatment: Treatment,
) -> ActionId {
    ActionId::derive(&[
        practice.id.as_str(),
        gap.kind.as_str(),
        patient.as_str(),
        treatment.as_str(),
        &gap.due.to_string(),
    ])
}

/// The latest day the patient is booked for `treatment` in a way that settles `gap`: for a
/// no-show, any booking from the missed day on; otherwise one of the same category from
/// `day` on.
fn booked_until(
    appointments: &[crate::state::Appointment],
    gap: &Gap,
    treatment: Treatment,
    day: Date,
) -> Option<Date> {
    let from = if gap.kind == ActionKind::NoShowRecovery {
        gap.due.saturating_sub(rules::NO_SHOW_GRACE_DAYS.days())
    } else {
        day
    };
    appointments
        .iter()
        .filter(|a| a.treatment() == Some(treatment) && a.is_booked_from(from))
        .filter_map(|a| a.starts_on.as_ref().map(|d| d.value))
        .max()
}

/// Why the gap must not become an action now, and when to look again.
fn suppression(
    run: &Run<'_>,
    gap: &Gap,
    patient: &OpaqueRef,
    treatment: Treatment,
    view: &PatientView,
) -> Option<(Suppression, Date)> {
    let (practice, day) = (run.practice, run.day);
    let later = |n: i64| day.saturating_add(n.days());
    if practice.policy.for_kind(gap.kind).mode == Mode::Off {
        return Some((Suppression::KindOff, later(RECHECK_DAYS)));
    }
    if view.opted_out {
        return Some((Suppression::OptedOut, later(RECHECK_DAYS)));
    }
    if let Some(until) = booked_until(&view.appointments, gap, treatment, day) {
        return Some((
            Suppression::BookedAhead,
            until.max(day).saturating_add(1.day()),
        ));
    }
    // Cooldown and the monthly cap count every action that may reach the patient (not
    // suppressed gaps, and not this gap's own action, which a crashed run may have left).
    let policy = &practice.policy;
    let own = gap_id(practice, gap, patient, treatment);
    let this_run: &[ActionId] = run.nudged.get(patient).map_or(&[], Vec::as_slice);
    if policy.cooldown_days > 0 && !this_run.is_empty() {
        return Some((
            Suppression::Cooldown,
            later(i64::from(policy.cooldown_days)),
        ));
    }
    let mut nudges: Vec<Date> = view
        .actions
        .iter()
        .filter(|a| a.counts_as_nudge() && a.id != own && !this_run.contains(&a.id))
        .map(|a| practice.local_date(a.created_at))
        .filter(|d| *d > day.saturating_sub(30.days()) && *d <= day)
        .collect();
    nudges.extend(this_run.iter().map(|_| day));
    nudges.sort();
    let cooldown = i64::from(policy.cooldown_days);
    if let Some(last) = nudges.last()
        && *last > day.saturating_sub(cooldown.days())
    {
        return Some((Suppression::Cooldown, last.saturating_add(cooldown.days())));
    }
    if nudges.len() as u32 >= policy.max_nudges_per_30_days
        && let Some(first) = nudges.first()
    {
        return Some((Suppression::MonthlyCap, first.saturating_add(30.days())));
    }
    None
}

async fn rewrite(
    deps: &ScanDeps<'_>,
    practice: &Practice,
    entity: &Entity,
    version: u64,
) -> Result<(), ScanError> {
    let due = rules::due_index_date(practice, entity);
    match deps
        .entities
        .put_entity(&practice.id, entity, Some(version), due)
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

/// The practices whose night it is at `now` (the hourly tick puts one scan message on the
/// queue for each), each with the local date to scan.
pub async fn due_tonight(
    deps: &ScanDeps<'_>,
    now: Timestamp,
) -> Result<Vec<(PracticeId, Date)>, ScanError> {
    Ok(tonight(deps, now).await?.due)
}

/// What the hourly tick finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tonight {
    /// The practices whose night it is, each with the local date to scan.
    pub due: Vec<(PracticeId, Date)>,
    /// Practices (not disabled) whose last night was not scanned in time (see
    /// [`missed_night`]): what the missed-scan alarm counts.
    pub behind: usize,
}

pub async fn tonight(deps: &ScanDeps<'_>, now: Timestamp) -> Result<Tonight, ScanError> {
    let mut out = Tonight::default();
    for id in deps.practices.list_practices().await? {
        if let Some(practice) = deps.practices.get_practice(&id).await? {
            if let Some(day) = due_for_nightly_scan(&practice, now) {
                out.due.push((id, day));
            }
            if !practice.disabled && missed_night(&practice, now) {
                out.behind += 1;
            }
        }
    }
    Ok(out)
}

/// Local hour by which a night's scan has finished (it starts at 03:00; a night in parts takes
/// minutes).
pub const SCAN_DEADLINE_HOUR: i8 = 6;

/// Whether the practice's night is late: from 06:00 local, a practice scanned before (a new one
/// waits for its first night) whose last scan is older than today.
pub fn missed_night(practice: &Practice, now: Timestamp) -> bool {
    let local = now.to_zoned(practice.tz());
    local.hour() >= SCAN_DEADLINE_HOUR
        && practice
            .last_scan_date
            .is_some_and(|last| last < local.date())
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

    fn practice(tz: &str, last: Option<&str>) -> Practice {
        Practice {
            time_zone: tz.into(),
            last_scan_date: last.map(|d| d.parse().unwrap()),
            ..crate::testing::practice("tz-clinic")
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
    fn a_night_not_scanned_by_six_is_late() {
        let p = practice("Europe/London", Some("2026-12-05"));
        let at = |t: &str| missed_night(&p, t.parse().unwrap());
        // 05:59 on the 6th: the night may still be running.
        assert!(!at("2026-12-06T05:59:00Z"));
        // 06:00: the 6th was not scanned.
        assert!(at("2026-12-06T06:00:00Z"));
        let done = practice("Europe/London", Some("2026-12-06"));
        assert!(!missed_night(
            &done,
            "2026-12-06T18:00:00Z".parse().unwrap()
        ));
        let fresh = practice("Europe/London", None);
        assert!(!missed_night(
            &fresh,
            "2026-12-06T18:00:00Z".parse().unwrap()
        ));
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
