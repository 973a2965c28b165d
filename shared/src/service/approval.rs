//! approval-check's domain: apply the owner's policy to candidates, e-mail the owner the rest,
//! and serve the approve/reject links (GET shows, POST decides).

use jiff::{SignedDuration, Timestamp};

use crate::action::{Action, ActionKind, ActionStatus, Decider, Withdrawal};
use crate::ids::{ActionId, PracticeId};
use crate::ports::{
    ActionLog, ActionRepo, CandidateBatch, Clock, DomainEvent, EntityRepo, EventPublisher, Mail,
    Mailer, PortError, PracticeRepo, StoreError, TokenLedger,
};
use crate::practice::{Mode, Practice};
use crate::secrets::SecretCache;
use crate::service::consent;
use crate::service::report;
use crate::views::{ActionGroup, ActionView, Digest, Notice, money, page, plural, unavailable};
// The pages' kit, where the functions and the tests have always found it.
use crate::service::scan::Suppression;
use crate::token::{self, Claims, Decision, TokenError};
pub use crate::views::{Page, page_css, page_style_csp_source};

pub struct ApprovalDeps<'a> {
    pub practices: &'a dyn PracticeRepo,
    pub actions: &'a dyn ActionRepo,
    /// Consent is read again before anything is approved or mailed.
    pub entities: &'a dyn EntityRepo,
    /// The full list page reads what waits for a later night from the due index.
    pub due: &'a dyn crate::ports::DueIndex,
    /// The digest's "Yesterday" line reads the recent deliveries.
    pub log: &'a dyn ActionLog,
    pub tokens: &'a dyn TokenLedger,
    /// Every decision is appended to the practice's audit chain.
    pub audit: &'a dyn crate::ports::AuditLog,
    /// The settings page saves the policy (audited) through this.
    pub admin: &'a dyn crate::service::admin::AdminStore,
    pub bus: &'a dyn EventPublisher,
    pub mailer: &'a dyn Mailer,
    pub secrets: &'a SecretCache,
    pub clock: &'a dyn Clock,
    /// Public base URL of the API (links in e-mails).
    pub base_url: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("unknown practice")]
    UnknownPractice,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("port: {0}")]
    Port(#[from] PortError),
}

impl ApprovalError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::UnknownPractice | Self::Port(PortError::Permanent(_)) => false,
            Self::Store(e) => e.is_transient(),
            Self::Port(PortError::Transient(_)) => true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateReport {
    pub auto_approved: Vec<ActionId>,
    pub pending: Vec<ActionId>,
    pub suppressed: Vec<ActionId>,
    /// The patient opted out after the scan: withdrawn, neither approved nor mailed.
    pub withdrawn: Vec<ActionId>,
    /// Over an auto-approval limit, so they went to the owner instead.
    pub fell_back: usize,
    pub mailed: bool,
}

/// Evaluates each candidate against the policy. Auto-approved ones are published for the
/// emitter; the ones needing approval go to the owner in one e-mail.
pub async fn handle_candidates(
    deps: &ApprovalDeps<'_>,
    batch: &CandidateBatch,
) -> Result<CandidateReport, ApprovalError> {
    let practice = deps
        .practices
        .get_practice(&batch.practice_id)
        .await?
        .ok_or(ApprovalError::UnknownPractice)?;
    let mut report = CandidateReport::default();
    let mut for_owner = Vec::new();
    let now = deps.clock.now();
    let today = practice.local_date(now);
    for id in &batch.action_ids {
        let Some(action) = deps.actions.get_action(&practice.id, id).await? else {
            continue;
        };
        match action.status {
            ActionStatus::Proposed | ActionStatus::Pending => {}
            _ => continue,
        }
        // The scan read consent; an opt-out may have come since. Nothing for an opted-out
        // patient is approved or mailed.
        if consent::opted_out(deps.entities, &practice.id, &action.patient_ref).await? {
            if consent::withdraw(
                deps.actions,
                deps.audit,
                deps.clock,
                &practice.id,
                &action.id,
                Withdrawal::OptedOut,
            )
            .await?
            {
                report.withdrawn.push(action.id.clone());
            }
            continue;
        }
        // A redelivery after the e-mail went out but before the status moved: mail again.
        if action.status == ActionStatus::Pending {
            for_owner.push(action);
            continue;
        }
        let kp = practice.policy.for_kind(action.kind);
        match kp.mode {
            Mode::Off => {
                let mut next = action.clone();
                next.status = ActionStatus::Suppressed;
                next.suppression = Some(Suppression::KindOff);
                next.decided_by = Some(Decider::Policy {
                    rule: format!("{}:off", action.kind),
                });
                next.decided_at = Some(now);
                if deps.actions.update_action(&next).await? {
                    report.suppressed.push(action.id.clone());
                    deps.audit.record(&practice.id,
                        crate::audit::AuditEvent::new(
                            format!("policy:{}:off", action.kind),
                            "action_suppressed",
                        )
                        .action(&action.id)
                        .details(
                            serde_json::json!({"kind": action.kind.as_str(), "reason": "kind_off"}),
                        ),
                        now,
                    )
                    .await;
                }
            }
            Mode::Auto => {
                let within_value = action.value <= kp.max_auto_value;
                // A limit of 0 means none may be auto-approved (the store's counter would
                // otherwise grant the first).
                let within_day = within_value
                    && kp.max_auto_per_day > 0
                    && deps
                        .actions
                        .reserve_auto_approval(
                            &practice.id,
                            action.kind,
                            today,
                            kp.max_auto_per_day,
                            &action.id,
                        )
                        .await?;
                if within_value && within_day {
                    approve(
                        deps,
                        &action,
                        Decider::Policy {
                            rule: format!("{}:auto", action.kind),
                        },
                        now,
                    )
                    .await?;
                    report.auto_approved.push(action.id.clone());
                } else {
                    report.fell_back += 1;
                    let reason = if within_value {
                        "over_daily_auto_limit"
                    } else {
                        "over_auto_value_limit"
                    };
                    tracing::info!(practice_id = %practice.id, action_id = %action.id, reason,
                        "auto-approval limit reached; owner approval needed");
                    deps.audit
                        .record(
                            &practice.id,
                            crate::audit::AuditEvent::new(
                                format!("policy:{}:auto", action.kind),
                                "auto_limit_fell_back",
                            )
                            .action(&action.id)
                            .details(
                                serde_json::json!({"kind": action.kind.as_str(), "reason": reason}),
                            ),
                            now,
                        )
                        .await;
                    for_owner.push(action);
                }
            }
            Mode::Approve => for_owner.push(action),
        }
    }
    if !for_owner.is_empty() {
        if deps.base_url.is_empty() {
            return Err(ApprovalError::Port(PortError::Permanent(
                "PUBLIC_BASE_URL is not configured".into(),
            )));
        }
        let link = deps.secrets.link(&practice.id, &practice.secrets).await?;
        // The owner's yesterday. A failed read leaves the line out rather than the e-mail.
        let yesterday = match today.yesterday() {
            Ok(day) => match report::day_summary_of(deps.log, &practice, day).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(practice_id = %practice.id, error = %e, "digest without yesterday's figures");
                    None
                }
            },
            Err(_) => None,
        };
        let mail = digest(
            deps,
            &practice,
            &for_owner,
            &link,
            batch.scan_date,
            now,
            yesterday,
            batch.deferred,
        );
        deps.mailer.send(&mail).await?;
        report.mailed = true;
        for action in for_owner {
            if action.status == ActionStatus::Pending {
                report.pending.push(action.id.clone());
                continue;
            }
            let mut next = action.clone();
            next.status = ActionStatus::Pending;
            if deps.actions.update_action(&next).await? {
                report.pending.push(action.id.clone());
            }
        }
    }
    Ok(report)
}

/// Records the approval, then publishes it for the emitter. The record is the outbox: an
/// approved action no emitter has taken is published again by the scan
/// ([`crate::service::scan::republish_outbox`]), so a publish that fails after the record
/// strands nothing. The approval stands either way, and the caller says so.
async fn approve(
    deps: &ApprovalDeps<'_>,
    action: &Action,
    by: Decider,
    now: Timestamp,
) -> Result<bool, ApprovalError> {
    let mut next = action.clone();
    next.status = ActionStatus::Approved;
    let actor = crate::audit::actor_of(&by);
    next.decided_by = Some(by);
    next.decided_at = Some(now);
    if !deps.actions.update_action(&next).await? {
        return Ok(false);
    }
    deps.audit
        .record(
            &action.practice_id,
            crate::audit::AuditEvent::new(actor, "action_approved")
                .action(&action.id)
                .details(serde_json::json!({"kind": action.kind.as_str(), "value": action.value})),
            now,
        )
        .await;
    if let Err(e) = deps
        .bus
        .publish(&[DomainEvent::ActionApproved {
            practice_id: action.practice_id.clone(),
            action_id: action.id.clone(),
        }])
        .await
    {
        // Approved and recorded; the outbox publishes it with the next scan.
        tracing::warn!(practice_id = %action.practice_id, action_id = %action.id, error = %e,
            alert = "approval_publish_deferred", "approval recorded, publish failed: the outbox will publish it");
    }
    Ok(true)
}

fn link(deps: &ApprovalDeps<'_>, claims: &Claims, key: &token::LinkKey) -> String {
    format!(
        "{}/v1/approvals/{}",
        deps.base_url.trim_end_matches('/'),
        token::sign(claims, key)
    )
}

/// What the nightly budget held back, in the owner's words.
fn waiting_line(deferred: usize, budget: u32) -> String {
    if deferred == 0 {
        return String::new();
    }
    let budget = budget.max(1) as usize;
    let nights = deferred.div_ceil(budget);
    format!(
        "{} more due {} over the nightly limit of {budget}: they come in the next {}, most valuable and longest overdue first",
        deferred,
        if deferred == 1 {
            "patient waits"
        } else {
            "patients wait"
        },
        plural(nights, "night", "nights")
    )
}

#[allow(clippy::too_many_arguments)]
fn digest(
    deps: &ApprovalDeps<'_>,
    p: &Practice,
    actions: &[Action],
    key: &token::LinkKey,
    scan_date: jiff::civil::Date,
    now: Timestamp,
    yesterday: Option<report::DaySummary>,
    deferred: usize,
) -> Mail {
    let expiry = now + SignedDuration::from_hours(i64::from(p.policy.approval_expiry_hours));
    let approver = p
        .owner_emails
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    // Grouped by kind, in the order each kind first appears; per-action links follow the
    // patient code they belong to.
    let mut groups: Vec<(ActionKind, ActionGroup, u64)> = Vec::new();
    for a in actions {
        let mut v = ActionView::of(a);
        let c = |d| Claims::new(p.id.clone(), vec![a.id.clone()], d, approver, expiry);
        v.approve_url = link(deps, &c(Decision::Approve), key);
        v.reject_url = link(deps, &c(Decision::Reject), key);
        let i = match groups.iter().position(|(k, _, _)| *k == a.kind) {
            Some(i) => i,
            None => {
                groups.push((
                    a.kind,
                    ActionGroup {
                        label: a.kind.plural_label(),
                        count: 0,
                        value_display: String::new(),
                        actions: Vec::new(),
                    },
                    0,
                ));
                groups.len() - 1
            }
        };
        let (_, g, total) = &mut groups[i];
        g.count += 1;
        *total += u64::from(a.value);
        g.value_display = money(*total);
        g.actions.push(v);
    }
    let groups: Vec<ActionGroup> = groups.into_iter().map(|(_, g, _)| g).collect();
    let all = Claims::new(
        p.id.clone(),
        actions.iter().map(|a| a.id.clone()).collect(),
        Decision::Approve,
        approver,
        expiry,
    );
    let approve_all_url = link(deps, &all, key);
    // Not a settings link: its page has one e-mailed to the owners (settings links are
    // short-lived and never travel anywhere but an owner's inbox on request).
    let ask = Claims::new(
        p.id.clone(),
        Vec::new(),
        Decision::SettingsRequest,
        approver,
        expiry,
    );
    let settings_url = link(deps, &ask, key);
    // The full list: everything awaiting a decision and what waits, for as long as the
    // approve and reject links work.
    let list = Claims::new(p.id.clone(), Vec::new(), Decision::List, approver, expiry);
    let list_url = link(deps, &list, key);
    let total = money(actions.iter().map(|a| u64::from(a.value)).sum());
    let n = actions.len();
    let subject = format!(
        "{} awaiting approval · {total} at stake",
        plural(n, "action", "actions")
    );
    let headline = format!(
        "{} could be brought back, worth about {total}.",
        plural(n, "patient", "patients")
    );
    let preheader = format!(
        "{} to review. Patients appear only as short codes; nothing is sent until you approve.",
        plural(n, "action", "actions")
    );
    let expires = expiry
        .to_zoned(p.tz())
        .strftime("%b %-d, %-I:%M %p %Z")
        .to_string();
    let scan_date = scan_date.strftime("%A, %B %-d").to_string();
    let yesterday = yesterday.map(|y| y.line("Yesterday")).unwrap_or_default();
    let waiting = waiting_line(deferred, p.policy.nightly_budget);
    let digest = Digest {
        headline: &headline,
        practice_id: p.id.as_str(),
        scan_date,
        expires,
        total_display: &total,
        count: n,
        groups: &groups,
        approve_all_url: &approve_all_url,
        settings_url: &settings_url,
        list_url: &list_url,
        settings_minutes: token::SETTINGS_LINK_MINUTES,
        yesterday: &yesterday,
        waiting: &waiting,
        notice: if p.endpoint_retired {
            TRIGGERS_STOPPED
        } else {
            ""
        },
    };
    let (html, text) = digest.parts(&subject, &preheader);
    Mail {
        to: p.owner_emails.clone(),
        subject,
        html,
        text,
    }
}

/// What the owners are told while triggers are stopped (the digest says it too).
pub const TRIGGERS_STOPPED: &str = "Triggers to your practice software have stopped: \
its trigger endpoint answered that it is gone (HTTP 410). Nothing you approve reaches \
patients until it has a new endpoint.";

/// What to do about it.
pub const TRIGGERS_STOPPED_TODO: &str = "Ask your practice software's team (or your \
integrator) for the new trigger endpoint and send it to your Practice Intelligence \
operator, who updates it; triggers flow again from the next approval. Actions approved \
meanwhile are marked failed, not lost: they come back as new gaps on later nights.";

/// A notice to the practice's owners: what happened, and what to do.
fn notice_mail(p: &Practice, subject: &str, what: &str, todo: &str) -> Mail {
    let notice = Notice {
        subject,
        practice_id: p.id.as_str(),
        what,
        todo,
    };
    let (html, text) = notice.parts();
    Mail {
        to: p.owner_emails.clone(),
        subject: subject.to_owned(),
        html,
        text,
    }
}

/// Tells the owners, in one e-mail, that triggers stopped (the emitter retired the endpoint
/// after a 410). Nothing is sent if the endpoint was set again meanwhile.
pub async fn endpoint_retired(
    deps: &ApprovalDeps<'_>,
    practice_id: &PracticeId,
) -> Result<usize, ApprovalError> {
    let p = deps
        .practices
        .get_practice(practice_id)
        .await?
        .ok_or(ApprovalError::UnknownPractice)?;
    if !p.endpoint_retired || p.owner_emails.is_empty() {
        return Ok(0);
    }
    let subject = "Triggers to your practice software have stopped";
    deps.mailer
        .send(&notice_mail(
            &p,
            subject,
            TRIGGERS_STOPPED,
            TRIGGERS_STOPPED_TODO,
        ))
        .await?;
    Ok(p.owner_emails.len())
}

/// Tells the owners, in one e-mail a day, that triggers fail: the PMS refused one for good,
/// or it stayed unreachable past the retries (`reason`: `http_4xx`, `retries_exhausted`, …).
/// Nothing is sent twice for the same practice and practice-local `date`.
pub async fn triggers_failing(
    deps: &ApprovalDeps<'_>,
    practice_id: &PracticeId,
    date: jiff::civil::Date,
    reason: &str,
) -> Result<usize, ApprovalError> {
    let p = deps
        .practices
        .get_practice(practice_id)
        .await?
        .ok_or(ApprovalError::UnknownPractice)?;
    if p.owner_emails.is_empty() {
        return Ok(0);
    }
    let keep = deps.clock.now() + SignedDuration::from_hours(72);
    if !deps
        .tokens
        .consume_token(&p.id, &format!("triggers_failing:{date}"), keep)
        .await?
    {
        return Ok(0);
    }
    let subject = "Some approved messages could not be sent today";
    let why = match reason {
        "http_4xx" => "your practice software refused a trigger it should have taken",
        "retries_exhausted" | "retry_horizon_reached" => {
            "your practice software did not answer, or answered with errors, through every retry"
        }
        _ => "a trigger could not be sent to your practice software",
    };
    let what = format!(
        "At least one action you (or your settings) approved was not delivered: {why}. The \
         patient was not messaged."
    );
    let todo = "Ask your practice software's team (or your integrator) to check the trigger \
                endpoint's logs for today. Undelivered actions are marked failed, not lost: \
                their gaps come back on later nights, and your operator can send them again \
                once the cause is fixed. You get at most one of these e-mails a day.";
    deps.mailer
        .send(&notice_mail(&p, subject, &what, todo))
        .await?;
    Ok(p.owner_emails.len())
}

fn token_page(e: TokenError) -> Page {
    match e {
        TokenError::Expired => no_longer_valid("expired"),
        TokenError::Malformed | TokenError::BadSignature => page(
            400,
            "invalid",
            "This link is not valid",
            "It may have been changed, cut short or replaced by newer links, so nothing was changed. Use the links in your latest e-mail.",
            "",
            &[],
            None,
        ),
    }
}

/// The page of a link that was good and is no more: expired, or its approver is no longer one
/// of the practice's owners. One neutral page (same status, same words) for both: it does not
/// tell which. `outcome` (logs only) does.
fn no_longer_valid(outcome: &'static str) -> Page {
    page(
        410,
        outcome,
        "This link is no longer valid",
        "Links work for a limited time and only for the practice's owners, so nothing was changed. The next digest will list anything still waiting for you.",
        "",
        &[],
        None,
    )
}

/// Verifies a token against its practice's link key (during a link-key rotation's overlap,
/// the replaced key too), then that its approver is still one of the practice's owners.
/// Cross-practice, tampered, rotated-out, expired and revoked tokens fail here.
pub(crate) async fn check(deps: &ApprovalDeps<'_>, raw: &str) -> Result<(Practice, Claims), Page> {
    let practice_id = token::unverified_practice(raw).map_err(token_page)?;
    let practice = match deps.practices.get_practice(&practice_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(token_page(TokenError::BadSignature)),
        Err(_) => return Err(unavailable()),
    };
    let now = deps.clock.now();
    let link = deps
        .secrets
        .link(&practice.id, &practice.secrets)
        .await
        .map_err(|_| unavailable())?;
    let claims = match token::verify(raw, &link, now) {
        Err(TokenError::BadSignature) => {
            let previous = deps
                .secrets
                .link_previous(&practice.id, &practice.secrets, now)
                .await
                .map_err(|_| unavailable())?;
            match previous {
                Some(key) => token::verify(raw, &key, now),
                None => Err(TokenError::BadSignature),
            }
        }
        other => other,
    }
    .map_err(token_page)?;
    if !practice
        .owner_emails
        .iter()
        .any(|e| token::approver_id(e) == claims.approver)
    {
        return Err(no_longer_valid("revoked"));
    }
    Ok((practice, claims))
}

async fn load(
    deps: &ApprovalDeps<'_>,
    practice: &PracticeId,
    ids: &[ActionId],
) -> Result<Vec<Action>, Page> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match deps.actions.get_action(practice, id).await {
            Ok(Some(a)) => out.push(a),
            Ok(None) => {}
            Err(_) => return Err(unavailable()),
        }
    }
    Ok(out)
}

fn open_for_decision(a: &Action) -> bool {
    matches!(a.status, ActionStatus::Pending | ActionStatus::Proposed)
}

/// GET of an approve or reject link ([`crate::service::links::show`] routes it here): shows
/// what the link would do. Never changes anything (mail scanners prefetch links).
pub(crate) async fn show_decision(
    deps: &ApprovalDeps<'_>,
    practice: &Practice,
    claims: &Claims,
) -> Page {
    let actions = match load(deps, &practice.id, &claims.action_ids).await {
        Ok(a) => a,
        Err(p) => return p,
    };
    let views: Vec<ActionView> = actions.iter().map(ActionView::of).collect();
    if !actions.iter().any(open_for_decision) {
        return page(
            409,
            "already_decided",
            "Already decided",
            "Every action on this link has been decided already. Nothing more to do.",
            practice.id.as_str(),
            &views,
            None,
        );
    }
    let (title, label, class) = match claims.decision {
        Decision::Approve if actions.len() > 1 => ("Approve these actions?", "Approve all", ""),
        Decision::Approve => ("Approve this action?", "Approve", ""),
        Decision::Reject => ("Reject this action?", "Reject", "reject"),
        // Answered above with their own pages.
        Decision::Settings | Decision::SettingsRequest | Decision::List => return unavailable(),
    };
    page(
        200,
        "confirm",
        title,
        "Nothing has changed yet. Press the button to confirm.",
        practice.id.as_str(),
        &views,
        Some((label, class)),
    )
}

/// POST of an approve or reject link ([`crate::service::links::decide`] routes it here):
/// decides. The token's nonce is consumed by a conditional write, so a link works once.
pub(crate) async fn decide_actions(
    deps: &ApprovalDeps<'_>,
    practice: &Practice,
    claims: &Claims,
) -> Page {
    let actions = match load(deps, &practice.id, &claims.action_ids).await {
        Ok(a) => a,
        Err(p) => return p,
    };
    let open: Vec<&Action> = actions.iter().filter(|a| open_for_decision(a)).collect();
    let opted_out_before = actions
        .iter()
        .filter(|a| a.withdrawal == Some(Withdrawal::OptedOut))
        .count();
    if open.is_empty() && opted_out_before > 0 {
        let views: Vec<ActionView> = actions.iter().map(ActionView::of).collect();
        let msg = if opted_out_before == actions.len() {
            "The patient opted out since this was proposed. Nothing will be sent."
        } else {
            "Every action on this link has been decided already; patients who opted out \
             since will not be sent anything. Nothing was changed."
        };
        return page(
            409,
            "opted_out",
            "Patient opted out",
            msg,
            practice.id.as_str(),
            &views,
            None,
        );
    }
    if open.is_empty() {
        let views: Vec<ActionView> = actions.iter().map(ActionView::of).collect();
        return page(
            409,
            "already_decided",
            "Already decided",
            "Every action on this link has been decided already. Nothing was changed.",
            practice.id.as_str(),
            &views,
            None,
        );
    }
    match deps
        .tokens
        .consume_token(&practice.id, &claims.nonce, claims.expires_at())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return page(
                409,
                "reused",
                "This link was already used",
                "Each link works once. Nothing was changed.",
                practice.id.as_str(),
                &[],
                None,
            );
        }
        Err(_) => return unavailable(),
    }
    let now = deps.clock.now();
    let mut decided = Vec::new();
    let mut opted_out = Vec::new();
    for a in open {
        let ok = match claims.decision {
            // Settings and list links returned above; they never reach a decision.
            Decision::Settings | Decision::SettingsRequest | Decision::List => Ok(false),
            Decision::Approve => {
                match consent::opted_out(deps.entities, &practice.id, &a.patient_ref).await {
                    // The patient opted out since the digest went out: nothing will be sent.
                    Ok(true) => match consent::withdraw(
                        deps.actions,
                        deps.audit,
                        deps.clock,
                        &practice.id,
                        &a.id,
                        Withdrawal::OptedOut,
                    )
                    .await
                    {
                        Ok(_) => {
                            let mut shown = a.clone();
                            shown.status = ActionStatus::Withdrawn;
                            shown.withdrawal = Some(Withdrawal::OptedOut);
                            opted_out.push(ActionView::of(&shown));
                            Ok(false)
                        }
                        Err(e) => Err(e.into()),
                    },
                    Ok(false) => {
                        approve(
                            deps,
                            a,
                            Decider::Owner {
                                approver: claims.approver.clone(),
                            },
                            now,
                        )
                        .await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Decision::Reject => {
                let mut next = a.clone();
                next.status = ActionStatus::Rejected;
                next.decided_by = Some(Decider::Owner {
                    approver: claims.approver.clone(),
                });
                next.decided_at = Some(now);
                let done = deps
                    .actions
                    .update_action(&next)
                    .await
                    .map_err(ApprovalError::from);
                if matches!(done, Ok(true)) {
                    deps.audit
                        .record(
                            &practice.id,
                            crate::audit::AuditEvent::new(
                                format!("owner:{}", claims.approver),
                                "action_rejected",
                            )
                            .action(&a.id)
                            .details(
                                serde_json::json!({"kind": a.kind.as_str(), "value": a.value}),
                            ),
                            now,
                        )
                        .await;
                }
                done
            }
        };
        match ok {
            Ok(true) => {
                tracing::info!(practice_id = %practice.id, action_id = %a.id, decision = claims.decision.as_str(), approver = %claims.approver, "owner decision");
                let mut shown = a.clone();
                shown.status = if claims.decision == Decision::Approve {
                    ActionStatus::Approved
                } else {
                    ActionStatus::Rejected
                };
                decided.push(ActionView::of(&shown));
            }
            Ok(false) => {}
            Err(_) => return unavailable(),
        }
    }
    if claims.decision == Decision::Approve && !opted_out.is_empty() {
        let msg = if decided.is_empty() {
            "The patient opted out since this was proposed. Nothing will be sent.".to_owned()
        } else {
            format!(
                "{} opted out since this was proposed: nothing will be sent to them. \
                 Your practice software will send the other messages.",
                plural(opted_out.len(), "patient", "patients")
            )
        };
        decided.extend(opted_out);
        return page(
            200,
            "opted_out",
            "Patient opted out",
            &msg,
            practice.id.as_str(),
            &decided,
            None,
        );
    }
    let (title, outcome, msg) = match claims.decision {
        Decision::Approve => (
            "Approved",
            "approved",
            "Your practice software will send the message to the patient.",
        ),
        Decision::Reject | Decision::Settings | Decision::SettingsRequest | Decision::List => (
            "Rejected",
            "rejected",
            "Nothing will be sent for this action.",
        ),
    };
    page(
        200,
        outcome,
        title,
        msg,
        practice.id.as_str(),
        &decided,
        None,
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use sha2::Digest as _;

    /// What build.rs made: every vendored font inlined, then the stylesheet, and the CSP
    /// hash of exactly that text.
    #[test]
    fn the_built_stylesheet_inlines_the_fonts_and_its_csp_hash_is_its_sha256() {
        let css = super::page_css();
        let fonts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fonts");
        let mut inlined = 0;
        for entry in std::fs::read_dir(fonts).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "woff2") {
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(std::fs::read(&path).unwrap());
                assert!(
                    css.contains(&format!("url(data:font/woff2;base64,{b64})")),
                    "{}",
                    path.display()
                );
                inlined += 1;
            }
        }
        assert_eq!(inlined, 4);
        assert!(css.ends_with(include_str!("../../templates/page.css")));
        let digest = sha2::Sha256::digest(css.as_bytes());
        assert_eq!(
            super::page_style_csp_source(),
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        );
    }
}
