//! The gap rules (docs/design.md §4) for one record, as pure functions of its state and the
//! practice's configuration.
//!
//! A completed treatment opens a sequence of gaps with increasing due dates: the follow-up
//! check-in (neurotoxin and filler, 14 days), then either the next series session (while a
//! series is unfinished) or the rebook (one cycle), then the win-back (two cycles). The record
//! keeps one watermark, `actioned_due`: every gap due on or before it is settled. When several
//! gaps are due at once (a practice onboarded late, a scan missed), one action wins by
//! precedence — win-back over series continuation over rebook over follow-up — and the others
//! are settled as superseded, so a patient never gets two messages for one category.
//!
//! No-show recovery belongs to the appointment record: due two days after the no-show unless
//! the patient rebooked.

use jiff::ToSpan;
use jiff::civil::Date;

use crate::action::{ActionKind, Reason};
use crate::practice::Practice;
use crate::state::{Appointment, AppointmentStatus, Entity, PatientTreatment};

pub use crate::practice::{
    DEFAULT_WIN_BACK_MULTIPLE, default_follow_up_days, default_series_interval,
    default_stale_after_days,
};

/// Days after a no-show before recovery, if nothing was rebooked.
pub const NO_SHOW_GRACE_DAYS: i64 = 2;

/// One gap a record opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub kind: ActionKind,
    pub reason: Reason,
    pub due: Date,
}

impl Gap {
    /// Higher wins when several are due together.
    pub fn precedence(&self) -> u8 {
        match self.kind {
            ActionKind::WinBack => 4,
            ActionKind::SeriesContinue => 3,
            ActionKind::RebookNudge => 2,
            ActionKind::FollowUp => 1,
            ActionKind::NoShowRecovery | ActionKind::SlotOffer => 0,
        }
    }

    /// How long the PMS may act on the trigger.
    pub fn valid_days(&self) -> i64 {
        match self.kind {
            ActionKind::FollowUp | ActionKind::NoShowRecovery => 7,
            ActionKind::WinBack => 30,
            _ => 14,
        }
    }
}

impl Gap {
    /// Stale on `day`: more than the practice's window for its kind past its due date.
    pub fn is_stale(&self, practice: &Practice, day: Date) -> bool {
        practice
            .stale_after_days(self.kind)
            .and_then(|n| plus(self.due, n))
            .is_some_and(|last| day > last)
    }
}

fn plus(d: Date, days: u32) -> Option<Date> {
    d.checked_add(i64::from(days).days()).ok()
}

/// Every gap the record's last completion opens, in due-date order.
pub fn gaps(pt: &PatientTreatment, practice: &Practice) -> Vec<Gap> {
    let Some(last) = pt.last.as_ref().map(|l| &l.value) else {
        return vec![];
    };
    let t = pt.treatment;
    let cycle = last
        .cycle_days
        .map(u32::from)
        .or_else(|| practice.cycle_days(t));
    let mut out = Vec::with_capacity(3);
    let in_series = matches!((last.series_index, last.series_of), (Some(i), Some(of)) if i < of);
    if !in_series
        && let Some(days) = practice.follow_up_days(t)
        && let Some(due) = plus(last.on, days)
    {
        out.push(Gap {
            kind: ActionKind::FollowUp,
            reason: Reason::FollowUpDue,
            due,
        });
    }
    if in_series {
        let interval = practice.series_interval(t).or(cycle);
        if let Some(due) = interval.and_then(|d| plus(last.on, d)) {
            out.push(Gap {
                kind: ActionKind::SeriesContinue,
                reason: Reason::SeriesNextDue,
                due,
            });
        }
    } else if let Some(due) = cycle.and_then(|d| plus(last.on, d)) {
        out.push(Gap {
            kind: ActionKind::RebookNudge,
            reason: Reason::CycleDue,
            due,
        });
    }
    if let Some(due) =
        cycle.and_then(|d| plus(last.on, d.saturating_mul(practice.win_back_multiple())))
    {
        out.push(Gap {
            kind: ActionKind::WinBack,
            reason: Reason::Lapsed,
            due,
        });
    }
    out.sort_by_key(|g| (g.due, g.precedence()));
    out
}

/// The gaps not settled yet.
pub fn open_gaps(pt: &PatientTreatment, practice: &Practice) -> Vec<Gap> {
    gaps(pt, practice)
        .into_iter()
        .filter(|g| pt.actioned_due.is_none_or(|a| g.due > a))
        .collect()
}

/// What the scan does with a record on `day`: the gap that wins, and how many it supersedes.
pub fn due_on_day(pt: &PatientTreatment, practice: &Practice, day: Date) -> Option<(Gap, usize)> {
    let due: Vec<Gap> = open_gaps(pt, practice)
        .into_iter()
        .filter(|g| g.due <= day)
        .collect();
    let winner = due
        .iter()
        .copied()
        .max_by_key(|g| (g.precedence(), g.due))?;
    Some((winner, due.len() - 1))
}

/// The latest due date among the gaps due on `day` (the new watermark once they are settled).
pub fn settled_through(pt: &PatientTreatment, practice: &Practice, day: Date) -> Option<Date> {
    open_gaps(pt, practice)
        .into_iter()
        .filter(|g| g.due <= day)
        .map(|g| g.due)
        .max()
}

/// The no-show recovery gap of an appointment, if it has one and it is not settled.
pub fn no_show_gap(a: &Appointment, practice: &Practice) -> Option<Gap> {
    let status = a.status.as_ref()?;
    if status.value != AppointmentStatus::NoShow || a.patient.is_none() || a.recovery_settled {
        return None;
    }
    let due = practice
        .local_date(status.at)
        .checked_add(NO_SHOW_GRACE_DAYS.days())
        .ok()?;
    Some(Gap {
        kind: ActionKind::NoShowRecovery,
        reason: Reason::NoShow,
        due,
    })
}

/// Where a record sits in the due index (`None`: not in it).
pub fn due_index_date(practice: &Practice, entity: &Entity) -> Option<Date> {
    match entity {
        Entity::PatientTreatment(pt) => {
            let next = open_gaps(pt, practice).first()?.due;
            Some(match pt.recheck_on {
                Some(r) if r > next => r,
                _ => next,
            })
        }
        Entity::Appointment(a) => no_show_gap(a, practice).map(|g| match a.recheck_on {
            Some(r) if r > g.due => r,
            _ => g.due,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OpaqueRef;
    use crate::inbound::Series;

    use crate::state::Completion;
    use crate::treatment::Treatment;

    pub(crate) fn practice() -> Practice {
        crate::testing::practice("rules-clinic")
    }

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn pt(t: Treatment, on: &str, series: Option<Series>) -> PatientTreatment {
        let mut pt = PatientTreatment::new(OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(), t);
        pt.merge_completion(
            Completion::new(d(on), series, None),
            "2026-01-01T12:00:00Z".parse().unwrap(),
        );
        pt
    }

    fn kinds(g: &[Gap]) -> Vec<(ActionKind, String)> {
        g.iter().map(|g| (g.kind, g.due.to_string())).collect()
    }

    #[test]
    fn each_kind_goes_stale_after_its_window_and_a_practice_may_change_it() {
        let mut p = practice();
        let gap = |kind, due: &str| Gap {
            kind,
            reason: Reason::CycleDue,
            due: d(due),
        };
        let fu = gap(ActionKind::FollowUp, "2026-01-15");
        assert!(
            !fu.is_stale(&p, d("2026-01-22")),
            "7 days after due: still sent"
        );
        assert!(fu.is_stale(&p, d("2026-01-23")));
        let ns = gap(ActionKind::NoShowRecovery, "2026-01-15");
        assert!(!ns.is_stale(&p, d("2026-01-27")));
        assert!(ns.is_stale(&p, d("2026-01-28")));
        let wb = gap(ActionKind::WinBack, "2026-01-15");
        assert!(!wb.is_stale(&p, d("2026-07-14")));
        assert!(wb.is_stale(&p, d("2026-07-15")));
        for kind in [ActionKind::RebookNudge, ActionKind::SeriesContinue] {
            assert!(!gap(kind, "2020-01-01").is_stale(&p, d("2026-01-01")));
        }
        p.stale_after_days.insert(ActionKind::FollowUp, 3);
        assert!(fu.is_stale(&p, d("2026-01-19")));
        assert!(!fu.is_stale(&p, d("2026-01-18")));
    }

    #[test]
    fn neurotoxin_opens_follow_up_rebook_and_win_back() {
        let p = practice();
        let g = gaps(&pt(Treatment::Neurotoxin, "2026-01-01", None), &p);
        assert_eq!(
            kinds(&g),
            vec![
                (ActionKind::FollowUp, "2026-01-15".into()),
                (ActionKind::RebookNudge, "2026-04-01".into()),
                (ActionKind::WinBack, "2026-06-30".into())
            ]
        );
    }

    #[test]
    fn an_unfinished_series_continues_instead_of_rebooking() {
        let p = practice();
        let g = gaps(
            &pt(
                Treatment::LaserHairRemoval,
                "2026-01-01",
                Some(Series { index: 2, of: 6 }),
            ),
            &p,
        );
        assert_eq!(
            kinds(&g),
            vec![
                (ActionKind::SeriesContinue, "2026-02-12".into()),
                (ActionKind::WinBack, "2026-03-26".into())
            ]
        );
        let done = gaps(
            &pt(
                Treatment::LaserHairRemoval,
                "2026-01-01",
                Some(Series { index: 6, of: 6 }),
            ),
            &p,
        );
        assert_eq!(
            done[0].kind,
            ActionKind::RebookNudge,
            "the last session of a series rebooks"
        );
    }

    #[test]
    fn one_action_wins_when_several_are_due_and_the_rest_are_settled() {
        let p = practice();
        let mut r = pt(Treatment::Neurotoxin, "2026-01-01", None);
        let (g, superseded) = due_on_day(&r, &p, d("2026-08-01")).unwrap();
        assert_eq!(
            (g.kind, superseded),
            (ActionKind::WinBack, 2),
            "win-back over rebook over follow-up"
        );
        r.actioned_due = settled_through(&r, &p, d("2026-08-01"));
        assert!(due_on_day(&r, &p, d("2026-12-31")).is_none());
        assert_eq!(
            due_index_date(&p, &Entity::PatientTreatment(r)),
            None,
            "nothing left to index"
        );
    }

    #[test]
    fn the_index_date_moves_to_the_next_open_gap() {
        let p = practice();
        let mut r = pt(Treatment::Neurotoxin, "2026-01-01", None);
        assert_eq!(
            due_index_date(&p, &Entity::PatientTreatment(r.clone())),
            Some(d("2026-01-15"))
        );
        r.actioned_due = Some(d("2026-01-15"));
        assert_eq!(
            due_index_date(&p, &Entity::PatientTreatment(r.clone())),
            Some(d("2026-04-01"))
        );
        r.recheck_on = Some(d("2026-04-10"));
        assert_eq!(
            due_index_date(&p, &Entity::PatientTreatment(r)),
            Some(d("2026-04-10"))
        );
    }

    fn appointment(status: AppointmentStatus, at: &str) -> Appointment {
        use crate::state::{Lww, PatientTreatmentKey};
        let mut a = Appointment::new(OpaqueRef::parse("appt_K3j9Hg2Fd8Sa7Lk4").unwrap());
        a.patient = Some(Lww::new(
            PatientTreatmentKey {
                patient_ref: OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(),
                treatment: Treatment::Neurotoxin,
            },
            "2026-03-01T15:00:00Z".parse().unwrap(),
        ));
        a.status = Some(Lww::new(status, at.parse().unwrap()));
        a
    }

    #[test]
    fn a_no_show_opens_recovery_two_local_days_later() {
        let p = practice();
        // 03:00 UTC is the evening before in New York: the grace counts from the local day.
        let a = appointment(AppointmentStatus::NoShow, "2026-03-10T03:00:00Z");
        assert_eq!(
            no_show_gap(&a, &p),
            Some(Gap {
                kind: ActionKind::NoShowRecovery,
                reason: Reason::NoShow,
                due: d("2026-03-11"),
            })
        );
        assert_eq!(
            due_index_date(&p, &Entity::Appointment(a.clone())),
            Some(d("2026-03-11"))
        );
        // A re-check date later than the gap moves it in the index; an earlier one does not.
        let mut later = a.clone();
        later.recheck_on = Some(d("2026-03-20"));
        assert_eq!(
            due_index_date(&p, &Entity::Appointment(later)),
            Some(d("2026-03-20"))
        );
        let mut earlier = a.clone();
        earlier.recheck_on = Some(d("2026-03-05"));
        assert_eq!(
            due_index_date(&p, &Entity::Appointment(earlier)),
            Some(d("2026-03-11"))
        );
        // No recovery for a kept or cancelled appointment, an unknown patient, or once settled.
        for status in [
            AppointmentStatus::Booked,
            AppointmentStatus::Cancelled,
            AppointmentStatus::Completed,
        ] {
            let other = appointment(status, "2026-03-10T03:00:00Z");
            assert_eq!(no_show_gap(&other, &p), None, "{status:?}");
            assert_eq!(due_index_date(&p, &Entity::Appointment(other)), None);
        }
        let mut unknown = a.clone();
        unknown.patient = None;
        assert_eq!(no_show_gap(&unknown, &p), None);
        let mut settled = a;
        settled.recovery_settled = true;
        assert_eq!(no_show_gap(&settled, &p), None);
        assert_eq!(due_index_date(&p, &Entity::Appointment(settled)), None);
    }

    #[test]
    fn a_recheck_date_before_the_next_gap_leaves_the_index_date() {
        let p = practice();
        let mut r = pt(Treatment::Neurotoxin, "2026-01-01", None);
        r.recheck_on = Some(d("2026-01-05"));
        assert_eq!(
            due_index_date(&p, &Entity::PatientTreatment(r)),
            Some(d("2026-01-15"))
        );
    }

    /// Precedence decides, not the due date: a gap of a higher kind that fell due earlier
    /// still wins over a lower one that fell due later.
    #[test]
    fn precedence_beats_a_later_due_date() {
        // A 10-day cycle: the rebook (day 10) falls due before the follow-up (day 14).
        let mut p = practice();
        p.cycle_days.insert(Treatment::Neurotoxin, 10);
        let r = pt(Treatment::Neurotoxin, "2026-01-01", None);
        let (g, superseded) = due_on_day(&r, &p, d("2026-01-16")).unwrap();
        assert_eq!(
            (g.kind, g.due, superseded),
            (ActionKind::RebookNudge, d("2026-01-11"), 1),
            "rebook over follow-up"
        );
        // A completion's own 10-day cycle: the win-back (day 20) falls due before the next
        // series session (the treatment's 42-day interval).
        let mut r = PatientTreatment::new(
            OpaqueRef::parse("p_7Hq2kX9mZ4rT1vB8yW3n").unwrap(),
            Treatment::LaserHairRemoval,
        );
        r.merge_completion(
            Completion::new(d("2026-01-01"), Some(Series { index: 2, of: 6 }), Some(10)),
            "2026-01-01T12:00:00Z".parse().unwrap(),
        );
        let (g, superseded) = due_on_day(&r, &practice(), d("2026-03-01")).unwrap();
        assert_eq!(
            (g.kind, g.due, superseded),
            (ActionKind::WinBack, d("2026-01-21"), 1),
            "win-back over series"
        );
    }

    /// How long the PMS may act on a trigger (its `expires_at`, docs/contracts.md): a week
    /// for a follow-up or a no-show recovery, a month for a win-back, two weeks otherwise.
    #[test]
    fn each_kind_is_valid_for_its_window() {
        for (kind, days) in [
            (ActionKind::FollowUp, 7),
            (ActionKind::NoShowRecovery, 7),
            (ActionKind::WinBack, 30),
            (ActionKind::RebookNudge, 14),
            (ActionKind::SeriesContinue, 14),
            (ActionKind::SlotOffer, 14),
        ] {
            let g = Gap {
                kind,
                reason: Reason::CycleDue,
                due: d("2026-01-01"),
            };
            assert_eq!(g.valid_days(), days, "{kind:?}");
        }
    }

    #[test]
    fn overrides_change_the_dates() {
        let mut p = practice();
        p.cycle_days.insert(Treatment::DermalFiller, 365);
        p.follow_up_days.insert(Treatment::DermalFiller, 10);
        p.win_back_multiple = Some(3);
        let g = gaps(&pt(Treatment::DermalFiller, "2026-01-01", None), &p);
        assert_eq!(
            kinds(&g),
            vec![
                (ActionKind::FollowUp, "2026-01-11".into()),
                (ActionKind::RebookNudge, "2027-01-01".into()),
                (ActionKind::WinBack, "2028-12-31".into())
            ]
        );
        assert!(
            gaps(&pt(Treatment::Consultation, "2026-01-01", None), &p).is_empty(),
            "no cycle, no gap"
        );
    }
}
