//! Attribution (docs/contracts.md, Attribution): a booking of the same category by the same
//! ref within 14 days of a delivered trigger marks that action converted, with its estimated
//! value as recovered revenue.
//!
//! The receiver calls [`attribute`] for every `appointment.booked` event (redeliveries
//! included, so a crash between the appointment write and the conversion is finished by the
//! PMS's retry). Which action a booking converts depends only on the booking and the delivered
//! actions, never on what was converted before:
//!
//! - candidates: the patient's `Delivered` actions of the booked category whose trigger was
//!   delivered at or before the booking's `occurred_at`, at most [`ATTRIBUTION_DAYS`]
//!   practice-local days before it (day 14 in, day 15 out);
//! - the booking converts the newest candidate (latest `delivered_at`, then id) — and nothing
//!   if that one is converted already. So a duplicate or a second booking converts nothing
//!   more, and each action converts once;
//! - the conversion keeps the earliest booking day that chose the action, so the end state
//!   does not depend on the order bookings arrive in.
//!
//! The status stays `Delivered` (cooldown, the emitter and the owner's pages need no new
//! state); the conversion is the action's `converted` field, written by a conditional update
//! on the revision read.

use jiff::{Timestamp, ToSpan};

use crate::action::{ATTRIBUTION_DAYS, Action, ActionStatus, Conversion};
use crate::ids::{ActionId, OpaqueRef};
use crate::ports::{ActionRepo, PatientIndex, StoreError};
use crate::practice::Practice;
use crate::treatment::Treatment;

/// One `appointment.booked` event, as attribution needs it.
#[derive(Debug, Clone, Copy)]
pub struct Booking<'a> {
    pub patient: &'a OpaqueRef,
    pub treatment: Treatment,
    /// The event's `occurred_at`: when the patient booked (not when the visit is).
    pub booked_at: Timestamp,
}

/// The action `booking` converts, if any (see the module docs). Pure: the window edges are
/// unit-tested here.
pub fn converts<'a>(
    practice: &Practice,
    actions: &'a [Action],
    b: &Booking<'_>,
) -> Option<&'a Action> {
    let booked_on = practice.local_date(b.booked_at);
    let earliest = booked_on.saturating_sub(ATTRIBUTION_DAYS.days());
    actions
        .iter()
        .filter(|a| {
            a.status == ActionStatus::Delivered
                && a.treatment == b.treatment
                && &a.patient_ref == b.patient
        })
        .filter_map(|a| a.delivered_at.map(|at| (at, a)))
        .filter(|(at, _)| *at <= b.booked_at && practice.local_date(*at) >= earliest)
        .max_by(|(x, a), (y, b)| (x, &a.id).cmp(&(y, &b.id)))
        .map(|(_, a)| a)
}

/// Conditional writes that lost a race are re-read and retried this many times.
const MAX_CONFLICT_RETRIES: usize = 5;

/// Marks the action `booking` converts, if any. Returns its id when this call changed it
/// (`None` for a booking that converts nothing, or nothing new: a redelivery).
pub async fn attribute(
    actions: &dyn ActionRepo,
    patients: &dyn PatientIndex,
    practice: &Practice,
    booking: &Booking<'_>,
) -> Result<Option<ActionId>, StoreError> {
    let found = patients.actions_of(&practice.id, booking.patient).await?;
    let Some(target) = converts(practice, &found, booking) else {
        return Ok(None);
    };
    let on = practice.local_date(booking.booked_at);
    // The index may lag; the first conditional write tells, and a re-read is consistent.
    let mut cur = target.clone();
    for _ in 0..MAX_CONFLICT_RETRIES {
        if cur.status != ActionStatus::Delivered
            || cur.converted.is_some_and(|c| c.on <= on)
            || &cur.patient_ref != booking.patient
        {
            return Ok(None);
        }
        let mut next = cur.clone();
        next.converted = Some(Conversion {
            on,
            value: cur.value,
        });
        if actions.update_action(&next).await? {
            tracing::info!(practice_id = %practice.id, action_id = %cur.id, kind = cur.kind.as_str(),
                treatment = cur.treatment.as_str(), value = cur.value, "trigger converted");
            return Ok(Some(cur.id));
        }
        match actions.get_action(&practice.id, &cur.id).await? {
            Some(a) => cur = a,
            // Erased meanwhile.
            None => return Ok(None),
        }
    }
    Err(StoreError::Conflict)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use jiff::civil::Date;

    use super::*;
    use crate::action::ActionKind;
    use crate::ids::PracticeId;

    use crate::state::Appointment;

    fn practice() -> Practice {
        crate::testing::practice("attr-clinic")
    }

    fn r(s: &str) -> OpaqueRef {
        OpaqueRef::parse(s).unwrap()
    }
    fn patient() -> OpaqueRef {
        r("p_7Hq2kX9mZ4rT1vB8yW3n")
    }
    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    /// A delivered rebook nudge for neurotoxin (value 450), delivered at `at`.
    fn delivered(tag: &str, at: &str) -> Action {
        Action {
            status: ActionStatus::Delivered,
            delivered_at: Some(ts(at)),
            attempts: 1,
            rev: 3,
            ..crate::testing::sample_action("attr-clinic", &patient(), &["attr-clinic", tag])
        }
    }

    fn booking(at: &str) -> Booking<'static> {
        static P: std::sync::OnceLock<OpaqueRef> = std::sync::OnceLock::new();
        Booking {
            patient: P.get_or_init(patient),
            treatment: Treatment::Neurotoxin,
            booked_at: ts(at),
        }
    }

    fn picked(actions: &[Action], b: &Booking<'_>) -> Option<ActionId> {
        converts(&practice(), actions, b).map(|a| a.id.clone())
    }

    // Delivered 2026-11-02 10:00 New York time (15:00Z).
    const DELIVERED: &str = "2026-11-02T15:00:00Z";

    #[test]
    fn day_14_is_in_and_day_15_is_out() {
        let a = [delivered("a", DELIVERED)];
        // Day 14 (Nov 16), late evening local time: in.
        assert_eq!(
            picked(&a, &booking("2026-11-17T04:30:00Z")),
            Some(a[0].id.clone())
        );
        // Day 15 (Nov 17), just after local midnight: out.
        assert_eq!(picked(&a, &booking("2026-11-17T05:30:00Z")), None);
        // Same day, after the delivery: in; before it: the trigger cannot have caused it.
        assert!(picked(&a, &booking("2026-11-02T15:00:00Z")).is_some());
        assert_eq!(picked(&a, &booking("2026-11-02T14:59:00Z")), None);
    }

    #[test]
    fn other_category_other_ref_and_undelivered_do_not_convert() {
        let mut filler = delivered("f", DELIVERED);
        filler.treatment = Treatment::DermalFiller;
        let mut other = delivered("o", DELIVERED);
        other.patient_ref = r("p_Oth5Tr6yU2iO8pA3sD7");
        let mut pending = delivered("p", DELIVERED);
        pending.status = ActionStatus::Approved;
        let b = booking("2026-11-05T15:00:00Z");
        assert_eq!(picked(&[filler], &b), None, "other category");
        assert_eq!(picked(&[other], &b), None, "other ref");
        assert_eq!(picked(&[pending], &b), None, "not delivered");
    }

    #[test]
    fn the_newest_delivered_trigger_wins_even_if_already_converted() {
        let old = delivered("old", "2026-11-01T15:00:00Z");
        let mut new = delivered("new", "2026-11-03T15:00:00Z");
        let b = booking("2026-11-05T15:00:00Z");
        assert_eq!(
            picked(&[old.clone(), new.clone()], &b),
            Some(new.id.clone())
        );
        new.converted = Some(Conversion {
            on: d("2026-11-04"),
            value: 450,
        });
        assert_eq!(
            picked(&[old, new.clone()], &b),
            Some(new.id),
            "a booking never falls through to an older trigger"
        );
    }

    /// Actions by id, for both ports; counts writes.
    #[derive(Default)]
    struct Mem {
        actions: Mutex<HashMap<ActionId, Action>>,
        writes: Mutex<usize>,
    }

    #[async_trait]
    impl ActionRepo for Mem {
        async fn create_action(&self, a: &Action) -> Result<bool, StoreError> {
            let mut m = self.actions.lock().unwrap();
            if m.contains_key(&a.id) {
                return Ok(false);
            }
            m.insert(a.id.clone(), a.clone());
            Ok(true)
        }
        async fn get_action(
            &self,
            _: &PracticeId,
            id: &ActionId,
        ) -> Result<Option<Action>, StoreError> {
            Ok(self.actions.lock().unwrap().get(id).cloned())
        }
        async fn update_action(&self, a: &Action) -> Result<bool, StoreError> {
            let mut m = self.actions.lock().unwrap();
            match m.get(&a.id) {
                Some(cur) if cur.rev == a.rev => {
                    let mut next = a.clone();
                    next.rev += 1;
                    m.insert(a.id.clone(), next);
                    *self.writes.lock().unwrap() += 1;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn reserve_auto_approval(
            &self,
            _: &PracticeId,
            _: ActionKind,
            _: Date,
            _: u32,
            _: &ActionId,
        ) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn reserve_nightly(
            &self,
            _: &PracticeId,
            _: Date,
            _: u32,
            _: &ActionId,
        ) -> Result<bool, StoreError> {
            Ok(true)
        }
    }

    #[async_trait]
    impl PatientIndex for Mem {
        async fn appointments_of(
            &self,
            _: &PracticeId,
            _: &OpaqueRef,
        ) -> Result<Vec<Appointment>, StoreError> {
            Ok(vec![])
        }
        async fn actions_of(
            &self,
            _: &PracticeId,
            p: &OpaqueRef,
        ) -> Result<Vec<Action>, StoreError> {
            Ok(self
                .actions
                .lock()
                .unwrap()
                .values()
                .filter(|a| &a.patient_ref == p)
                .cloned()
                .collect())
        }
    }

    impl Mem {
        fn with(actions: &[Action]) -> Self {
            let m = Self::default();
            for a in actions {
                m.actions.lock().unwrap().insert(a.id.clone(), a.clone());
            }
            m
        }
        fn get(&self, id: &ActionId) -> Action {
            self.actions.lock().unwrap()[id].clone()
        }
        fn writes(&self) -> usize {
            *self.writes.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn a_duplicate_booking_converts_once() {
        let a = delivered("a", DELIVERED);
        let m = Mem::with(std::slice::from_ref(&a));
        let p = practice();
        let b = booking("2026-11-05T15:00:00Z");
        assert_eq!(attribute(&m, &m, &p, &b).await.unwrap(), Some(a.id.clone()));
        let got = m.get(&a.id);
        assert_eq!(
            (got.status, got.converted),
            (
                ActionStatus::Delivered,
                Some(Conversion {
                    on: d("2026-11-05"),
                    value: 450
                })
            )
        );
        assert_eq!(attribute(&m, &m, &p, &b).await.unwrap(), None);
        assert_eq!(
            attribute(&m, &m, &p, &booking("2026-11-08T15:00:00Z"))
                .await
                .unwrap(),
            None,
            "a second booking converts nothing more"
        );
        assert_eq!(m.writes(), 1);
    }

    #[tokio::test]
    async fn bookings_in_any_order_end_in_the_same_state() {
        let a = delivered("a", DELIVERED);
        let (early, late) = (
            booking("2026-11-04T15:00:00Z"),
            booking("2026-11-09T15:00:00Z"),
        );
        let p = practice();
        let one = Mem::with(std::slice::from_ref(&a));
        attribute(&one, &one, &p, &early).await.unwrap();
        attribute(&one, &one, &p, &late).await.unwrap();
        let two = Mem::with(std::slice::from_ref(&a));
        attribute(&two, &two, &p, &late).await.unwrap();
        attribute(&two, &two, &p, &early).await.unwrap();
        assert_eq!(one.get(&a.id).converted, two.get(&a.id).converted);
        assert_eq!(one.get(&a.id).converted.unwrap().on, d("2026-11-04"));
    }

    #[tokio::test]
    async fn a_stale_index_read_is_retried_against_the_table() {
        let a = delivered("a", DELIVERED);
        let m = Mem::with(std::slice::from_ref(&a));
        // The table moved on (rev 4) while the index still shows rev 3.
        struct Stale(Action);
        #[async_trait]
        impl PatientIndex for Stale {
            async fn appointments_of(
                &self,
                _: &PracticeId,
                _: &OpaqueRef,
            ) -> Result<Vec<Appointment>, StoreError> {
                Ok(vec![])
            }
            async fn actions_of(
                &self,
                _: &PracticeId,
                _: &OpaqueRef,
            ) -> Result<Vec<Action>, StoreError> {
                Ok(vec![self.0.clone()])
            }
        }
        let mut bumped = a.clone();
        bumped.last_error = Some("x".into());
        m.update_action(&bumped).await.unwrap();
        let p = practice();
        let got = attribute(&m, &Stale(a.clone()), &p, &booking("2026-11-05T15:00:00Z"))
            .await
            .unwrap();
        assert_eq!(got, Some(a.id.clone()));
        assert_eq!(m.get(&a.id).rev, 5);
    }
}
