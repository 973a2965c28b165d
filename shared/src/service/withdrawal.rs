//! Taking an open action back before it reaches the PMS: one mechanism for every reason
//! (a slot offer whose slot was booked, a patient who opted out).

use crate::action::{Action, ActionStatus, Withdrawal};
use crate::ids::{ActionId, PracticeId};
use crate::ports::{ActionRepo, StoreError};

/// Conditional writes that lost a race are re-read and retried this many times.
const MAX_CONFLICT_RETRIES: usize = 5;

/// Withdraws the action for `why` unless it is final already (a delivered trigger stays
/// delivered). Re-reads on a lost race (an emitter taking its lease, say). Returns the action
/// as it was when this call withdrew it; `None` when it was gone or final.
pub async fn withdraw(
    actions: &dyn ActionRepo,
    practice: &PracticeId,
    id: &ActionId,
    why: Withdrawal,
) -> Result<Option<Action>, StoreError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(a) = actions.get_action(practice, id).await? else {
            return Ok(None);
        };
        if a.status.is_final() {
            return Ok(None);
        }
        let mut next = a.clone();
        next.status = ActionStatus::Withdrawn;
        next.withdrawal = Some(why);
        next.lease_until = None;
        next.last_error = Some(why.as_str().into());
        if actions.update_action(&next).await? {
            return Ok(Some(a));
        }
    }
    Err(StoreError::Conflict)
}
