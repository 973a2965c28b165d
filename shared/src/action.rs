//! Candidate actions: what the scan proposes and the approval and delivery states it moves through.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::treatment::Treatment;

/// Why a due gap did not become an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    OptedOut,
    BookedAhead,
    KindOff,
    /// The patient had a nudge within the policy's cooldown.
    Cooldown,
    /// The patient reached the policy's nudges per 30 days.
    MonthlyCap,
    /// Another gap of the same record won (one message per patient and category).
    Superseded,
    /// Past its kind's window (docs/contracts.md, Windows): too late to be worth sending.
    Stale,
}

impl Suppression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::BookedAhead => "booked_ahead",
            Self::KindOff => "kind_off",
            Self::Cooldown => "cooldown",
            Self::MonthlyCap => "monthly_cap",
            Self::Superseded => "superseded",
            Self::Stale => "stale",
        }
    }
}

/// The kinds of trigger (docs/design.md §4.1), without the `action.` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RebookNudge,
    SlotOffer,
    FollowUp,
    NoShowRecovery,
    WinBack,
    SeriesContinue,
}

impl ActionKind {
    pub const ALL: [ActionKind; 6] = [
        Self::RebookNudge,
        Self::SlotOffer,
        Self::FollowUp,
        Self::NoShowRecovery,
        Self::WinBack,
        Self::SeriesContinue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RebookNudge => "rebook_nudge",
            Self::SlotOffer => "slot_offer",
            Self::FollowUp => "follow_up",
            Self::NoShowRecovery => "no_show_recovery",
            Self::WinBack => "win_back",
            Self::SeriesContinue => "series_continue",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The trigger `type` on the wire.
    pub fn wire_type(self) -> String {
        format!("action.{}", self.as_str())
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::RebookNudge => "Rebook nudge",
            Self::SlotOffer => "Slot offer",
            Self::FollowUp => "Follow-up",
            Self::NoShowRecovery => "No-show recovery",
            Self::WinBack => "Win-back",
            Self::SeriesContinue => "Series continuation",
        }
    }

    /// The kind as a heading over several ("Rebook nudges").
    pub fn plural_label(self) -> &'static str {
        match self {
            Self::RebookNudge => "Rebook nudges",
            Self::SlotOffer => "Slot offers",
            Self::FollowUp => "Follow-ups",
            Self::NoShowRecovery => "No-show recoveries",
            Self::WinBack => "Win-backs",
            Self::SeriesContinue => "Series continuations",
        }
    }

    pub fn default_template(self) -> &'static str {
        match self {
            Self::RebookNudge => "rebook_default",
            Self::SlotOffer => "slot_offer_default",
            Self::FollowUp => "follow_up_default",
            Self::NoShowRecovery => "no_show_default",
            Self::WinBack => "win_back_default",
            Self::SeriesContinue => "series_continue_default",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an action was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    CycleDue,
    FollowUpDue,
    SeriesNextDue,
    Lapsed,
    NoShow,
    /// A slot opened that fits a treatment the patient is due or overdue for.
    SlotOpen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CycleDue => "cycle_due",
            Self::FollowUpDue => "follow_up_due",
            Self::SeriesNextDue => "series_next_due",
            Self::Lapsed => "lapsed",
            Self::NoShow => "no_show",
            Self::SlotOpen => "slot_open",
        }
    }
    pub fn plain_words(self) -> &'static str {
        match self {
            Self::CycleDue => "treatment cycle has passed and nothing is booked",
            Self::FollowUpDue => "due for the post-treatment check-in",
            Self::SeriesNextDue => "next session of a series is due and not booked",
            Self::Lapsed => "no visit for two cycles",
            Self::NoShow => "missed an appointment and has not rebooked",
            Self::SlotOpen => "a slot opened that fits a treatment they are due for",
        }
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Created by the scan, not yet evaluated against the policy.
    Proposed,
    /// Waiting for the owner.
    Pending,
    /// Approved (by the owner or by a policy rule); waiting for delivery.
    Approved,
    /// The owner said no.
    Rejected,
    /// Not sent: the scan suppressed the gap (opted out, booked ahead, cooldown, …: see
    /// [`Action::suppression`]) or the policy turned the kind off before approval.
    Suppressed,
    /// The PMS acknowledged the trigger.
    Delivered,
    /// Delivery failed for good.
    Failed,
    /// Nobody decided before it expired.
    Expired,
    /// Taken back before it went out: the slot was booked (a slot offer), or the patient
    /// opted out ([`Action::withdrawal`] says which).
    Withdrawn,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Suppressed => "suppressed",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected
                | Self::Suppressed
                | Self::Delivered
                | Self::Failed
                | Self::Expired
                | Self::Withdrawn
        )
    }
}

/// Who approved: a policy rule or an owner (by a hash of their address, never the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Decider {
    Policy { rule: String },
    Owner { approver: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: ActionId,
    pub practice_id: PracticeId,
    pub kind: ActionKind,
    pub patient_ref: OpaqueRef,
    pub treatment: Treatment,
    pub reason: Reason,
    /// Evidence: the last completed treatment date the gap is computed from.
    pub evidence_date: Date,
    /// The date the gap opened.
    pub due_since: Date,
    /// Estimated value in whole currency units.
    pub value: u32,
    pub status: ActionStatus,
    pub created_at: Timestamp,
    /// When the trigger stops making sense (the PMS should drop it after this).
    pub expires_at: Timestamp,
    #[serde(default)]
    pub decided_by: Option<Decider>,
    #[serde(default)]
    pub decided_at: Option<Timestamp>,
    #[serde(default)]
    pub delivered_at: Option<Timestamp>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Set while one emitter holds the delivery lease.
    #[serde(default)]
    pub lease_until: Option<Timestamp>,
    /// Why the gap was not acted on, when `status` is `Suppressed`. A suppressed gap is kept
    /// as an action with the id the action would have had, so re-runs count it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression: Option<Suppression>,
    /// Set when a booking of the same category by the same patient followed the delivered
    /// trigger within [`ATTRIBUTION_DAYS`] (the status stays `Delivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted: Option<Conversion>,
    /// Revision: every update is conditional on the revision it read.
    #[serde(default)]
    pub rev: u64,
    /// The slot a slot offer is for (the trigger's `slot`, docs/contracts.md); `None` for
    /// every other kind.
    #[serde(default)]
    pub slot: Option<SlotDetails>,
    /// Why the action was withdrawn, when `status` is `Withdrawn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal: Option<Withdrawal>,
}

/// Why an open action was taken back before it reached the PMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withdrawal {
    /// A slot offer whose slot was booked first.
    SlotFilled,
    /// The patient opted out: at approval, at the emitter, or by the opt-out itself.
    OptedOut,
    /// A slot offer whose slot was reopened by an appointment whose patient was erased since
    /// (the slot's ref is that appointment's).
    SlotErased,
}

impl Withdrawal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlotFilled => "slot_filled",
            Self::OptedOut => "opted_out",
            Self::SlotErased => "slot_erased",
        }
    }
}

impl Action {
    /// In the slot-fill pool: a gap that says the patient is due or overdue for a treatment
    /// (rebook, series, win-back, no-show) and that nobody closed (rejected, failed, withdrawn
    /// or suppressed gaps leave the pool). Slot fill still checks bookings, consent and recent
    /// offers before it offers a slot.
    pub fn in_slot_pool(&self) -> bool {
        self.converted.is_none()
            && matches!(
                self.kind,
                ActionKind::RebookNudge
                    | ActionKind::SeriesContinue
                    | ActionKind::WinBack
                    | ActionKind::NoShowRecovery
            )
            && matches!(
                self.status,
                ActionStatus::Proposed
                    | ActionStatus::Pending
                    | ActionStatus::Approved
                    | ActionStatus::Delivered
                    | ActionStatus::Expired
            )
    }
}

/// An open slot as a slot offer carries it (not patient-linked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotDetails {
    pub slot_ref: OpaqueRef,
    pub starts_at: Timestamp,
    pub provider_ref: Option<OpaqueRef>,
}

/// A booking attributed to a delivered trigger (docs/contracts.md, Attribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// The practice-local day of the booking (day precision is all the report needs).
    pub on: Date,
    /// Recovered revenue: the action's estimated value (a booking carries no price).
    pub value: u32,
}

/// A booking up to this many practice-local days after the trigger was delivered converts it.
pub const ATTRIBUTION_DAYS: i64 = 14;

impl Action {
    /// Suppressed by the scan: a gap that never became a proposal.
    pub fn suppressed_by_scan(&self) -> bool {
        self.status == ActionStatus::Suppressed && self.decided_by.is_none()
    }

    /// In the approval outbox: approved, and no emitter has taken it yet (no attempt, no
    /// lease). Normally for the seconds between the approval and the emitter's first lease;
    /// one that stays longer was never published (the publish failed after the approval was
    /// recorded), or waits out the practice's quiet hours, and the scan publishes it again
    /// (docs/reliability.md, Outbox). Publishing twice is harmless: the emitter delivers an
    /// action once.
    pub fn in_outbox(&self) -> bool {
        self.status == ActionStatus::Approved && self.attempts == 0 && self.lease_until.is_none()
    }

    /// May reach the patient (or has): what cooldown and the monthly cap count.
    pub fn counts_as_nudge(&self) -> bool {
        matches!(
            self.status,
            ActionStatus::Proposed
                | ActionStatus::Pending
                | ActionStatus::Approved
                | ActionStatus::Delivered
        )
    }
}
