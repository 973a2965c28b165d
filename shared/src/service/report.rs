//! What the layer did for a practice: per action kind, the funnel from gap to recovered
//! revenue (`pil report`), and the day summary the owner's digest opens with.
//!
//! The report is a cohort: the actions **created** (proposed, or suppressed by the scan) on the
//! practice-local days `from..=to`, each counted by what became of it since. So `converted` is
//! always a part of `delivered`, and the conversion rate (converted / delivered) is that
//! cohort's, even when a booking comes after `to`. It reads the practice's actions and nothing
//! else: its cost grows with the practice's actions, not with its patients.
//!
//! The day summary is by event instead: triggers delivered on the day, and revenue of the
//! bookings made on the day that converted a trigger.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use crate::action::{ATTRIBUTION_DAYS, Action, ActionKind, ActionStatus, Decider};
use crate::ids::PracticeId;
use crate::ports::{ActionLog, PracticeRepo, StoreError};
use crate::practice::Practice;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("unknown practice")]
    UnknownPractice,
    #[error("--from must not be after --to")]
    EmptyPeriod,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// One kind's funnel (or the total over kinds).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindStats {
    /// Actions the scan proposed (went on to the policy and the owner).
    pub proposed: u64,
    /// Still waiting for the owner, not expired.
    pub pending: u64,
    /// Approved by the owner.
    pub approved: u64,
    /// Approved by a policy rule (auto mode, within its limits).
    pub auto_approved: u64,
    pub rejected: u64,
    /// Nobody decided before the action stopped making sense.
    pub expired: u64,
    /// Approved, but the PMS never took it (permanent failure, retired endpoint).
    pub failed: u64,
    /// Withdrawn before they went out: a slot offer whose slot was booked, or any action
    /// whose patient opted out after it was proposed.
    pub withdrawn: u64,
    /// `withdrawn` by reason code (`slot_filled`, `opted_out`).
    pub withdrawn_by_reason: BTreeMap<String, u64>,
    /// Gaps not acted on, by reason code (`opted_out`, `booked_ahead`, `kind_off`, `cooldown`,
    /// `monthly_cap`, `superseded`, …). Not part of `proposed`, except `kind_off` decided at
    /// approval time (the kind was switched off after the scan).
    pub suppressed: BTreeMap<String, u64>,
    pub delivered: u64,
    /// Delivered triggers followed by a booking (same patient, same category, ≤ 14 days).
    pub converted: u64,
    /// The converted actions' estimated values, in whole currency units.
    pub recovered_revenue: u64,
    /// converted / delivered; `None` when nothing was delivered.
    pub conversion_rate: Option<f64>,
}

impl KindStats {
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }

    fn add(&mut self, o: &KindStats) {
        self.proposed += o.proposed;
        self.pending += o.pending;
        self.approved += o.approved;
        self.auto_approved += o.auto_approved;
        self.rejected += o.rejected;
        self.expired += o.expired;
        self.failed += o.failed;
        self.withdrawn += o.withdrawn;
        for (reason, n) in &o.withdrawn_by_reason {
            *self.withdrawn_by_reason.entry(reason.clone()).or_default() += n;
        }
        for (reason, n) in &o.suppressed {
            *self.suppressed.entry(reason.clone()).or_default() += n;
        }
        self.delivered += o.delivered;
        self.converted += o.converted;
        self.recovered_revenue += o.recovered_revenue;
    }

    fn finish(&mut self) {
        self.conversion_rate =
            (self.delivered > 0).then(|| self.converted as f64 / self.delivered as f64);
    }

    fn count(&mut self, a: &Action, now: Timestamp) {
        if a.status == ActionStatus::Suppressed {
            let reason = match (a.suppression, &a.decided_by) {
                (Some(r), _) => r.as_str(),
                (None, Some(_)) => "kind_off",
                (None, None) => "unknown",
            };
            *self.suppressed.entry(reason.to_owned()).or_default() += 1;
            if a.suppressed_by_scan() {
                return;
            }
        }
        self.proposed += 1;
        match a.status {
            ActionStatus::Proposed | ActionStatus::Pending if a.expires_at <= now => {
                self.expired += 1
            }
            ActionStatus::Proposed | ActionStatus::Pending => self.pending += 1,
            ActionStatus::Expired => self.expired += 1,
            ActionStatus::Rejected => self.rejected += 1,
            ActionStatus::Approved | ActionStatus::Delivered | ActionStatus::Failed => {
                match a.decided_by {
                    Some(Decider::Owner { .. }) => self.approved += 1,
                    Some(Decider::Policy { .. }) | None => self.auto_approved += 1,
                }
                match a.status {
                    ActionStatus::Delivered => self.delivered += 1,
                    ActionStatus::Failed => self.failed += 1,
                    _ => {}
                }
                if let (ActionStatus::Delivered, Some(c)) = (a.status, a.converted) {
                    self.converted += 1;
                    self.recovered_revenue += u64::from(c.value);
                }
            }
            ActionStatus::Withdrawn => {
                self.withdrawn += 1;
                // Withdrawals recorded before the reason was kept were all slot offers.
                let reason = a.withdrawal.map_or("slot_filled", |w| w.as_str());
                *self
                    .withdrawn_by_reason
                    .entry(reason.to_owned())
                    .or_default() += 1;
            }
            ActionStatus::Suppressed => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub practice_id: PracticeId,
    /// First and last practice-local day of the cohort (inclusive).
    pub from: Date,
    pub to: Date,
    pub time_zone: String,
    /// Every kind, in a fixed order, zeros included.
    pub kinds: BTreeMap<ActionKind, KindStats>,
    pub total: KindStats,
}

/// The report for the actions created on the practice-local days `from..=to`. `now` decides
/// which undecided actions have expired.
pub fn compute(
    practice: &Practice,
    actions: &[Action],
    from: Date,
    to: Date,
    now: Timestamp,
) -> Result<Report, ReportError> {
    if from > to {
        return Err(ReportError::EmptyPeriod);
    }
    let mut kinds: BTreeMap<ActionKind, KindStats> = ActionKind::ALL
        .into_iter()
        .map(|k| (k, KindStats::default()))
        .collect();
    for a in actions.iter().filter(|a| a.practice_id == practice.id) {
        let day = practice.local_date(a.created_at);
        if day < from || day > to {
            continue;
        }
        kinds.entry(a.kind).or_default().count(a, now);
    }
    let mut total = KindStats::default();
    for s in kinds.values_mut() {
        s.finish();
        total.add(s);
    }
    total.finish();
    Ok(Report {
        practice_id: practice.id.clone(),
        from,
        to,
        time_zone: practice.time_zone.clone(),
        kinds,
        total,
    })
}

/// Loads the practice and its actions, and computes the report.
pub async fn report(
    practices: &dyn PracticeRepo,
    log: &dyn ActionLog,
    practice_id: &PracticeId,
    from: Date,
    to: Date,
    now: Timestamp,
) -> Result<Report, ReportError> {
    if from > to {
        return Err(ReportError::EmptyPeriod);
    }
    let practice = practices
        .get_practice(practice_id)
        .await?
        .ok_or(ReportError::UnknownPractice)?;
    let actions = log.practice_actions(practice_id).await?;
    let report = compute(&practice, &actions, from, to, now)?;
    tracing::info!(practice_id = %practice_id, actions = actions.len(), delivered = report.total.delivered,
        converted = report.total.converted, "report computed");
    Ok(report)
}

pub use crate::views::money;

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

impl Report {
    /// The report as a plain-text table (what `pil report` prints without `--json`).
    pub fn table(&self) -> String {
        const HEAD: [&str; 11] = [
            "kind",
            "proposed",
            "approved",
            "auto",
            "rejected",
            "expired",
            "suppressed",
            "delivered",
            "converted",
            "recovered",
            "conv. rate",
        ];
        let row = |label: &str, s: &KindStats| -> [String; 11] {
            [
                label.to_owned(),
                s.proposed.to_string(),
                s.approved.to_string(),
                s.auto_approved.to_string(),
                s.rejected.to_string(),
                s.expired.to_string(),
                s.suppressed_total().to_string(),
                s.delivered.to_string(),
                s.converted.to_string(),
                money(s.recovered_revenue),
                rate(s.conversion_rate),
            ]
        };
        let mut rows: Vec<[String; 11]> = vec![HEAD.map(str::to_owned)];
        rows.extend(self.kinds.iter().map(|(k, s)| row(k.as_str(), s)));
        rows.push(row("total", &self.total));
        let widths: Vec<usize> = (0..HEAD.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} · actions created {} to {} ({})\n",
            self.practice_id, self.from, self.to, self.time_zone
        );
        for (i, r) in rows.iter().enumerate() {
            if i == rows.len() - 1 {
                let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(rule));
            }
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (v, w))| {
                    if c == 0 {
                        format!("{v:<w$}")
                    } else {
                        format!("{v:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        let reasons: Vec<String> = self
            .kinds
            .iter()
            .filter(|(_, s)| !s.suppressed.is_empty())
            .map(|(k, s)| {
                let by: Vec<String> = s
                    .suppressed
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect();
                format!("  {}: {}", k.as_str(), by.join(", "))
            })
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(out, "\nsuppressed by reason:\n{}", reasons.join("\n"));
        }
        let withdrawn: Vec<String> = self
            .kinds
            .iter()
            .filter(|(_, s)| s.withdrawn > 0)
            .map(|(k, s)| {
                let by: Vec<String> = s
                    .withdrawn_by_reason
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect();
                format!("  {}: {}", k.as_str(), by.join(", "))
            })
            .collect();
        if !withdrawn.is_empty() {
            let _ = writeln!(
                out,
                "\nwithdrawn before sending, by reason:\n{}",
                withdrawn.join("\n")
            );
        }
        let _ = writeln!(
            out,
            "\napproved: by the owner; auto: by a policy rule; conv. rate: converted / delivered \
             (a booking of the same category within {ATTRIBUTION_DAYS} days of the trigger)."
        );
        out
    }
}

/// One practice-local day, by event: what the digest's "Yesterday" line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DaySummary {
    pub day: Date,
    /// Triggers delivered on the day.
    pub delivered: u64,
    /// Estimated value of the triggers a booking made on the day converted.
    pub recovered: u64,
}

impl DaySummary {
    /// "Yesterday: 2 triggers delivered, $900 recovered"
    pub fn line(&self, label: &str) -> String {
        let n = self.delivered;
        format!(
            "{label}: {n} {} delivered, {} recovered",
            if n == 1 { "trigger" } else { "triggers" },
            money(self.recovered)
        )
    }
}

/// The day summary from delivered actions (any superset of those delivered from
/// [`ATTRIBUTION_DAYS`] days before `day` up to `day`).
pub fn day_summary(practice: &Practice, delivered: &[Action], day: Date) -> DaySummary {
    let mut s = DaySummary {
        day,
        delivered: 0,
        recovered: 0,
    };
    for a in delivered
        .iter()
        .filter(|a| a.status == ActionStatus::Delivered && a.practice_id == practice.id)
    {
        if a.delivered_at
            .is_some_and(|t| practice.local_date(t) == day)
        {
            s.delivered += 1;
        }
        if let Some(c) = a.converted.filter(|c| c.on == day) {
            s.recovered += u64::from(c.value);
        }
    }
    s
}

/// Reads what [`day_summary`] needs: the deliveries of the attribution window before `day`,
/// one UTC day of margin on each side for the practice's offset. Bounded by the deliveries of
/// those days, however long the practice's history.
pub async fn day_summary_of(
    log: &dyn ActionLog,
    practice: &Practice,
    day: Date,
) -> Result<DaySummary, StoreError> {
    let from = day.saturating_sub((ATTRIBUTION_DAYS + 1).days());
    let to = day.saturating_add(1.day());
    let delivered = log.delivered_between(&practice.id, from, to).await?;
    Ok(day_summary(practice, &delivered, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Conversion;
    use crate::ids::OpaqueRef;

    use crate::service::scan::Suppression;

    fn practice() -> Practice {
        crate::testing::practice("report-clinic")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-11-30T12:00:00Z";

    /// An action of `kind` created at `created` (value 450), in `status`.
    fn action(n: u32, kind: ActionKind, created: &str, status: ActionStatus) -> Action {
        Action {
            kind,
            status,
            created_at: ts(created),
            expires_at: ts("2026-12-15T05:00:00Z"),
            ..crate::testing::sample_action(
                "report-clinic",
                &OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(),
                &["report-clinic", &n.to_string()],
            )
        }
    }

    fn by(a: Action, d: Decider) -> Action {
        Action {
            decided_by: Some(d),
            ..a
        }
    }
    fn owner() -> Decider {
        Decider::Owner {
            approver: "h".into(),
        }
    }
    fn auto() -> Decider {
        Decider::Policy {
            rule: "rebook_nudge:auto".into(),
        }
    }
    fn delivered(a: Action, at: &str) -> Action {
        Action {
            delivered_at: Some(ts(at)),
            ..a
        }
    }
    fn converted(a: Action, on: &str) -> Action {
        let value = a.value;
        Action {
            converted: Some(Conversion { on: d(on), value }),
            ..a
        }
    }
    fn suppressed(a: Action, r: Suppression) -> Action {
        Action {
            suppression: Some(r),
            ..a
        }
    }

    fn fixture() -> Vec<Action> {
        use ActionKind::*;
        use ActionStatus::*;
        const IN: &str = "2026-11-10T14:00:00Z";
        vec![
            // Rebook: 5 proposed → 1 owner-approved + delivered + converted, 1 auto delivered,
            // 1 rejected, 1 pending, 1 auto approved then failed; 3 suppressed.
            converted(
                delivered(
                    by(action(1, RebookNudge, IN, Delivered), owner()),
                    "2026-11-11T15:00:00Z",
                ),
                "2026-11-14",
            ),
            delivered(
                by(action(2, RebookNudge, IN, Delivered), auto()),
                "2026-11-11T15:00:00Z",
            ),
            by(action(3, RebookNudge, IN, Rejected), owner()),
            action(4, RebookNudge, IN, Pending),
            by(action(5, RebookNudge, IN, Failed), auto()),
            suppressed(
                action(6, RebookNudge, IN, Suppressed),
                Suppression::Cooldown,
            ),
            suppressed(
                action(7, RebookNudge, IN, Suppressed),
                Suppression::Cooldown,
            ),
            suppressed(
                action(8, RebookNudge, IN, Suppressed),
                Suppression::OptedOut,
            ),
            // Follow-up: one expired (undecided past its expiry), one switched off at approval.
            Action {
                expires_at: ts("2026-11-20T05:00:00Z"),
                ..action(9, FollowUp, IN, Pending)
            },
            suppressed(
                by(
                    action(10, FollowUp, IN, Suppressed),
                    Decider::Policy {
                        rule: "follow_up:off".into(),
                    },
                ),
                Suppression::KindOff,
            ),
            // Outside the period (practice-local): Oct 31 23:30 in New York, Dec 1.
            action(11, RebookNudge, "2026-11-01T03:30:00Z", Pending),
            action(12, RebookNudge, "2026-12-01T12:00:00Z", Pending),
        ]
    }

    fn run() -> Report {
        compute(
            &practice(),
            &fixture(),
            d("2026-11-01"),
            d("2026-11-30"),
            ts(NOW),
        )
        .unwrap()
    }

    #[test]
    fn the_funnel_counts_each_action_once_by_what_became_of_it() {
        let r = run();
        let rebook = &r.kinds[&ActionKind::RebookNudge];
        assert_eq!(
            (
                rebook.proposed,
                rebook.approved,
                rebook.auto_approved,
                rebook.rejected,
                rebook.pending,
                rebook.failed,
                rebook.delivered,
                rebook.converted,
                rebook.recovered_revenue
            ),
            (5, 1, 2, 1, 1, 1, 2, 1, 450)
        );
        assert_eq!(
            rebook.suppressed,
            BTreeMap::from([("cooldown".into(), 2), ("opted_out".into(), 1)])
        );
        assert_eq!(rebook.conversion_rate, Some(0.5));
        let fu = &r.kinds[&ActionKind::FollowUp];
        assert_eq!((fu.proposed, fu.expired, fu.pending), (2, 1, 0));
        assert_eq!(
            fu.suppressed,
            BTreeMap::from([("kind_off".into(), 1)]),
            "switched off after the scan: proposed, then suppressed"
        );
        assert_eq!(fu.conversion_rate, None, "nothing delivered: no rate");
    }

    #[test]
    fn totals_add_up_and_every_kind_is_listed() {
        let r = run();
        assert_eq!(r.kinds.len(), ActionKind::ALL.len());
        assert_eq!(r.total.proposed, 7);
        assert_eq!(r.total.suppressed_total(), 4);
        assert_eq!((r.total.delivered, r.total.converted), (2, 1));
        assert_eq!(r.total.recovered_revenue, 450);
        assert_eq!(r.total.conversion_rate, Some(0.5));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kinds"]["rebook_nudge"]["suppressed"]["cooldown"], 2);
        assert_eq!(
            json["kinds"]["slot_offer"]["conversion_rate"],
            serde_json::Value::Null
        );
        assert_eq!(json["total"]["recovered_revenue"], 450);
    }

    #[test]
    fn the_period_is_practice_local_and_inclusive() {
        let p = practice();
        let a = fixture();
        let one_day = |day: &str| {
            compute(&p, &a, d(day), d(day), ts(NOW))
                .unwrap()
                .total
                .proposed
        };
        assert_eq!(
            one_day("2026-10-31"),
            1,
            "03:30Z on Nov 1 is Oct 31 in New York"
        );
        assert_eq!(one_day("2026-12-01"), 1);
        assert_eq!(one_day("2026-11-09"), 0);
        assert_eq!(
            compute(&p, &a, d("2026-11-02"), d("2026-11-01"), ts(NOW)),
            Err(ReportError::EmptyPeriod)
        );
    }

    #[test]
    fn the_table_has_a_row_per_kind_a_total_and_the_reasons() {
        let t = run().table();
        assert!(t.contains("rebook_nudge"), "{t}");
        let total = t.lines().find(|l| l.starts_with("total")).unwrap();
        assert!(total.contains("$450") && total.ends_with("50.0%"), "{t}");
        assert!(t.contains("rebook_nudge: cooldown 2, opted_out 1"), "{t}");
        assert!(t.contains("follow_up: kind_off 1"), "{t}");
    }

    #[test]
    fn the_day_summary_counts_deliveries_and_conversions_of_that_local_day() {
        use ActionStatus::Delivered;
        let p = practice();
        let a = [
            // Delivered Nov 24 local (late evening in New York, Nov 25 in UTC), converted Nov 24.
            converted(
                delivered(
                    action(1, ActionKind::RebookNudge, NOW, Delivered),
                    "2026-11-25T03:00:00Z",
                ),
                "2026-11-24",
            ),
            // Delivered Nov 20, converted Nov 24.
            converted(
                delivered(
                    action(2, ActionKind::FollowUp, NOW, Delivered),
                    "2026-11-20T15:00:00Z",
                ),
                "2026-11-24",
            ),
            // Delivered Nov 24, not converted; delivered Nov 25.
            delivered(
                action(3, ActionKind::WinBack, NOW, Delivered),
                "2026-11-24T15:00:00Z",
            ),
            delivered(
                action(4, ActionKind::WinBack, NOW, Delivered),
                "2026-11-25T15:00:00Z",
            ),
        ];
        let s = day_summary(&p, &a, d("2026-11-24"));
        assert_eq!((s.delivered, s.recovered), (2, 900));
        assert_eq!(
            s.line("Yesterday"),
            "Yesterday: 2 triggers delivered, $900 recovered"
        );
        let one = DaySummary {
            day: d("2026-11-24"),
            delivered: 1,
            recovered: 0,
        };
        assert_eq!(
            one.line("Yesterday"),
            "Yesterday: 1 trigger delivered, $0 recovered"
        );
        assert_eq!(money(1_234_567), "$1,234,567");
    }
}
