//! Narrow ports, one per capability. AWS adapters implement them (infra/pil-aws); unit tests use
//! in-memory fakes. Each handler's IAM policy follows the ports it takes.

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionKind};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::practice::{Practice, SecretKind, TriggerUrl};
use crate::state::{Appointment, Entity, EntityKey, Stored};

/// A storage failure. Messages carry error codes, never item contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost a race: re-read and try again.
    #[error("conditional write conflict")]
    Conflict,
    /// Throttling, 5xx, timeouts, network: the caller retries (HTTP 503 / SQS redelivery).
    #[error("transient storage failure: {0}")]
    Transient(String),
    /// Anything a retry will not fix.
    #[error("storage failure: {0}")]
    Permanent(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Conflict)
    }
}

/// A failure of a queue, bus, mailer or key service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("failure: {0}")]
    Permanent(String),
}

impl From<StoreError> for PortError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict | StoreError::Transient(_) => Self::Transient(e.to_string()),
            StoreError::Permanent(m) => Self::Permanent(m),
        }
    }
}

#[async_trait]
pub trait PracticeRepo: Send + Sync {
    async fn get_practice(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError>;
    /// The practice as stored up to about a second ago: an eventually consistent read, half
    /// the read units of [`Self::get_practice`]. For the receiver, where a change a second old
    /// may be missed: a practice onboarded a second ago answers as an unknown one (401) and the
    /// PMS retries; a rotated webhook secret overlaps the one it replaces. The default reads
    /// consistently.
    async fn get_practice_recent(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        self.get_practice(id).await
    }
    /// Writes the practice if its stored version is `expected` (`None`: it must not exist).
    /// The stored version becomes `practice.version`.
    async fn put_practice(
        &self,
        practice: &Practice,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn list_practices(&self) -> Result<Vec<PracticeId>, StoreError>;
}

#[async_trait]
pub trait EntityRepo: Send + Sync {
    async fn get_entity(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError>;
    /// The record as stored up to about a second ago (eventually consistent: half the read
    /// units). Only for a read-merge-conditional-write whose write would fail on a stale
    /// version, and whose retry reads with [`Self::get_entity`]. The default reads
    /// consistently.
    async fn get_entity_recent(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        self.get_entity(practice, key).await
    }
    /// Writes `entity` if the stored version is `expected` (`None`: must not exist).
    /// `due_on` places the record in the due index (`None` removes it).
    async fn put_entity(
        &self,
        practice: &PracticeId,
        entity: &Entity,
        expected: Option<u64>,
        due_on: Option<Date>,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait DueIndex: Send + Sync {
    /// Keys of records whose due date is on or before `day`, at most `limit`.
    async fn due_keys(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<EntityKey>, StoreError>;
    /// Like [`Self::due_keys`], from after `after` (a cursor this method returned), with the
    /// cursor of the page's last entry: pages through what is due even when the records read
    /// stay in the index (the scan keeps its proposals there until it has ranked them all).
    async fn due_page(
        &self,
        practice: &PracticeId,
        day: Date,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EntityKey>, Option<String>), StoreError>;
    /// The records [`Self::due_keys`] names, read in bulk and eventually consistent (the
    /// owner's full list page: what waits for a later night). A record deleted since the
    /// index was read is left out.
    async fn due_records(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<Stored<Entity>>, StoreError>;
}

/// What slot fill reads: the pool of due and overdue patients per treatment, and open slots
/// by provider and start (so a booking can fill one).
#[async_trait]
pub trait SlotIndex: Send + Sync {
    /// Ids of actions in the slot-fill pool ([`Action::in_slot_pool`]) for `treatment` whose
    /// gap opened on or before `through`, most overdue first, at most `limit`.
    async fn slot_pool(
        &self,
        practice: &PracticeId,
        treatment: crate::treatment::Treatment,
        through: Date,
        limit: usize,
    ) -> Result<Vec<ActionId>, StoreError>;
    /// Refs of slot records at this provider and start.
    async fn slots_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError>;
    /// Refs of appointments placed at this provider and start
    /// ([`crate::state::Appointment::placed_at`], whatever their status; eventually
    /// consistent): the caller reads each and checks [`crate::state::Appointment::holds`].
    async fn appointments_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError>;
}

/// The per-practice audit hash chain (see [`crate::audit`]).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends one record after the current head (retrying a concurrent append).
    async fn append(
        &self,
        practice: &PracticeId,
        event: &crate::audit::AuditEvent,
        at: Timestamp,
    ) -> Result<crate::audit::AuditRecord, StoreError>;
    /// Every stored record, and the head (last sequence number and hash appended).
    async fn audit_trail(
        &self,
        practice: &PracticeId,
    ) -> Result<(Vec<crate::audit::AuditRecord>, Option<(u64, String)>), StoreError>;
    /// Appends `event` to the practice's chain after the state change it records. A failed
    /// append does not undo that change: it is logged with `alert = "audit_append_failed"` (an
    /// alarm on that log line is the operator's cue; see docs/operations.md).
    async fn record(&self, practice: &PracticeId, event: crate::audit::AuditEvent, at: Timestamp) {
        if let Err(e) = self.append(practice, &event, at).await {
            tracing::error!(practice_id = %practice, event = event.event, error = %e,
                alert = "audit_append_failed", "audit record not written");
        }
    }
}

#[async_trait]
pub trait PatientIndex: Send + Sync {
    async fn appointments_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Appointment>, StoreError>;
    /// The patient's actions, any status (cooldown and the monthly cap count them).
    async fn actions_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Action>, StoreError>;
}

/// Where one patient-linked record sits: an entity's key, or an action's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Entity(EntityKey),
    Action(ActionId),
}

impl RecordKey {
    /// The sort key inside the practice's partition.
    pub fn sort_key(&self) -> String {
        match self {
            Self::Entity(k) => k.sort_key(),
            Self::Action(id) => format!("ACTION#{id}"),
        }
    }
}

/// One record stored for a patient, with the version a delete or rewrite is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientRecord {
    /// A patient × treatment record, the consent record, or an appointment of the patient.
    Entity(Stored<Entity>),
    /// An action for the patient, in any state; its revision is `rev`.
    Action(Action),
}

impl PatientRecord {
    pub fn key(&self) -> RecordKey {
        match self {
            Self::Entity(s) => RecordKey::Entity(s.value.key()),
            Self::Action(a) => RecordKey::Action(a.id.clone()),
        }
    }

    /// The stored version (`ver`) of an entity, the revision (`rev`) of an action.
    pub fn version(&self) -> u64 {
        match self {
            Self::Entity(s) => s.version,
            Self::Action(a) => a.rev,
        }
    }
}

/// Everything stored for one patient ref, for rotation and erasure (docs/design.md §2.6).
#[async_trait]
pub trait PatientRecords: Send + Sync {
    /// Every record of `patient`: its patient × treatment records, its consent record, the
    /// appointments whose patient it is, and the actions for it (any state). Records found
    /// through an index may lag a write by a moment; callers re-read before they give up.
    async fn records_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<PatientRecord>, StoreError>;
    /// Deletes the record if its stored version (revision, for an action) is still
    /// `expected`. `Ok(false)` when it changed or is gone: re-read and decide again.
    async fn delete_record(
        &self,
        practice: &PracticeId,
        key: &RecordKey,
        expected: u64,
    ) -> Result<bool, StoreError>;
}

/// Tombstones of erased and rotated refs (see [`crate::tombstone`]).
#[async_trait]
pub trait TombstoneRepo: Send + Sync {
    /// The tombstones among `ids` (a consistent read; missing ones are absent).
    async fn tombstones(
        &self,
        practice: &PracticeId,
        ids: &[crate::tombstone::TombstoneId],
    ) -> Result<Vec<crate::tombstone::Tombstone>, StoreError>;
    /// One tombstone, read consistently.
    async fn tombstone(
        &self,
        practice: &PracticeId,
        id: &crate::tombstone::TombstoneId,
    ) -> Result<Option<crate::tombstone::Tombstone>, StoreError>;
    /// Writes (or overwrites) a tombstone.
    async fn put_tombstone(
        &self,
        practice: &PracticeId,
        tombstone: &crate::tombstone::Tombstone,
    ) -> Result<(), StoreError>;
    /// The rotation tombstones that point to `to` (found through the per-patient index;
    /// may lag a write by a moment).
    async fn tombstones_to(
        &self,
        practice: &PracticeId,
        to: &OpaqueRef,
    ) -> Result<Vec<crate::tombstone::Tombstone>, StoreError>;
}

#[async_trait]
pub trait ActionRepo: Send + Sync {
    /// Creates the action unless one with its id exists; `Ok(false)` when it did.
    async fn create_action(&self, action: &Action) -> Result<bool, StoreError>;
    async fn get_action(
        &self,
        practice: &PracticeId,
        id: &ActionId,
    ) -> Result<Option<Action>, StoreError>;
    /// Replaces the action if the stored revision is still `action.rev` (what the caller read),
    /// storing it as `action.rev + 1`. `Ok(false)` when someone else changed it first.
    async fn update_action(&self, action: &Action) -> Result<bool, StoreError>;
    /// Counts `action` among the auto-approvals of `kind` on the practice-local `day`, unless
    /// `max` others were counted already (`Ok(false)`). Idempotent: counting an action that
    /// was counted before answers `Ok(true)` and counts nothing more (a redelivered or retried
    /// approval, or a write whose answer was lost).
    async fn reserve_auto_approval(
        &self,
        practice: &PracticeId,
        kind: ActionKind,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError>;
    /// Counts `action` among the proposals of the practice-local scan `day`, unless `max`
    /// others were counted already (`Ok(false)`; the first is always counted, so callers
    /// with a budget of 0 do not ask). Idempotent like [`Self::reserve_auto_approval`]: a
    /// re-run after a crash counts its proposals once.
    async fn reserve_nightly(
        &self,
        practice: &PracticeId,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError>;
}

/// Reading a practice's actions in bulk (the report, the digest's day summary). Cost grows
/// with the practice's actions, never with its patients.
#[async_trait]
pub trait ActionLog: Send + Sync {
    /// Every action of the practice, any state.
    async fn practice_actions(&self, practice: &PracticeId) -> Result<Vec<Action>, StoreError>;
    /// The practice's actions in the approval outbox ([`Action::in_outbox`]) decided
    /// before `decided_before`, oldest first.
    async fn outbox(
        &self,
        practice: &PracticeId,
        decided_before: Timestamp,
    ) -> Result<Vec<Action>, StoreError>;
    /// The practice's delivered actions whose `delivered_at` falls on a UTC date in
    /// `from..=to` (callers pad the range to cover the practice's own days).
    async fn delivered_between(
        &self,
        practice: &PracticeId,
        from: Date,
        to: Date,
    ) -> Result<Vec<Action>, StoreError>;
}

#[async_trait]
pub trait TokenLedger: Send + Sync {
    /// Marks a token nonce used. `Ok(false)` when it was used before. Kept until `keep_until`.
    async fn consume_token(
        &self,
        practice: &PracticeId,
        nonce: &str,
        keep_until: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// The scan's hand-over to approval-check: one message per scan with the new action ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateBatch {
    pub practice_id: PracticeId,
    pub scan_date: Date,
    pub action_ids: Vec<ActionId>,
    /// Gaps due that night over the practice's nightly budget, waiting for the next nights
    /// (the digest says so).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[async_trait]
pub trait CandidateSink: Send + Sync {
    async fn send_candidates(&self, batch: &CandidateBatch) -> Result<(), PortError>;
}

/// Events other parts react to, published on the bus. PHI-free by construction: ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    #[serde(rename = "slot.opened")]
    SlotOpened {
        practice_id: PracticeId,
        slot_ref: OpaqueRef,
    },
    /// A booking took an open slot: its pending offers are withdrawn (once the booking is
    /// seen to hold the slot).
    #[serde(rename = "slot.filled")]
    SlotFilled {
        practice_id: PracticeId,
        slot_ref: OpaqueRef,
        /// The appointment that took it (absent: any appointment at the slot's provider and
        /// start may have).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        appointment_ref: Option<OpaqueRef>,
    },
    #[serde(rename = "action.approved")]
    ActionApproved {
        practice_id: PracticeId,
        action_id: ActionId,
    },
    /// An owner asked for a settings link (the approval pages): approval-check e-mails one to
    /// each of the practice's owners. `requested_by` is the asking owner's approver id (a
    /// hash, never the address).
    #[serde(rename = "settings_link.requested")]
    SettingsLinkRequested {
        practice_id: PracticeId,
        requested_by: String,
    },
    /// The practice's PMS answered 410 to a trigger: triggers stopped. approval-check tells
    /// the owners, once (the emitter sends it only when it retires the endpoint).
    #[serde(rename = "trigger_endpoint.retired")]
    EndpointRetired { practice_id: PracticeId },
    /// A practice's night was scanned: approval-check sends its technical contacts the PMS
    /// integration report if its PMS had deliveries refused in the last 24 hours (once per
    /// practice and date).
    #[serde(rename = "integration_report.due")]
    IntegrationReportDue { practice_id: PracticeId, date: Date },
    /// A trigger failed for good (other than a retired endpoint): approval-check tells the
    /// owners, once per practice and practice-local day. `reason` is the failure's code
    /// (`http_400`, `retries_exhausted`, …).
    #[serde(rename = "triggers.failing")]
    TriggersFailing {
        practice_id: PracticeId,
        date: Date,
        reason: String,
    },
}

impl DomainEvent {
    /// EventBridge `source`.
    pub fn source(&self) -> &'static str {
        match self {
            Self::SlotOpened { .. } | Self::SlotFilled { .. } => "pil.receiver",
            Self::ActionApproved { .. } | Self::SettingsLinkRequested { .. } => "pil.approval",
            Self::EndpointRetired { .. } | Self::TriggersFailing { .. } => "pil.emitter",
            Self::IntegrationReportDue { .. } => "pil.scan",
        }
    }
    /// EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Self::SlotOpened { .. } => "slot.opened",
            Self::SlotFilled { .. } => "slot.filled",
            Self::ActionApproved { .. } => "action.approved",
            Self::SettingsLinkRequested { .. } => "settings_link.requested",
            Self::EndpointRetired { .. } => "trigger_endpoint.retired",
            Self::IntegrationReportDue { .. } => "integration_report.due",
            Self::TriggersFailing { .. } => "triggers.failing",
        }
    }
}

/// One count of refused signed deliveries: the hour (UTC) it fell in, the refusal's code and
/// rule, and the field path (indices dropped: `events[].data.patient_ref`). Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    pub hour: Timestamp,
    pub code: String,
    pub rule: String,
    pub path: String,
    pub count: u64,
}

/// Counts of a practice's refused signed deliveries, for `pil status` and the integration
/// report: what a PMS team needs to fix a leak the day it starts (rules and field paths;
/// nothing of the payload). Kept 35 days.
#[async_trait]
pub trait RefusalLog: Send + Sync {
    async fn count_refusal(
        &self,
        practice: &PracticeId,
        at: Timestamp,
        code: &'static str,
        rule: &'static str,
        path: &str,
    ) -> Result<(), StoreError>;
    /// The counts of the hours from `since`'s on, oldest first.
    async fn refusals(
        &self,
        practice: &PracticeId,
        since: Timestamp,
    ) -> Result<Vec<RefusalCount>, StoreError>;
}

/// Where the emitter hands what the owners must be told (approval-check e-mails them).
#[async_trait]
pub trait NoticeSink: Send + Sync {
    async fn notice(&self, event: &DomainEvent) -> Result<(), PortError>;
}

#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PortError>;
}

/// An e-mail to the owner: no PHI by construction (short codes, kinds, values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &Mail) -> Result<(), PortError>;
}

/// What a sealed secret is bound to: its practice and its purpose. KMS takes it as the
/// encryption context `{"practice": <practice id>, "purpose": <webhook|trigger|link>}` on
/// both seal and open, so a sealed value opens only under the context it was sealed with (a
/// value copied to another practice, or to another secret's place, does not open), and IAM
/// can grant a function `kms:Decrypt` for one purpose only (`kms:EncryptionContext:purpose`
/// in template.yaml). The constructors name the purpose (`for_webhook`, `for_trigger`,
/// `for_link`; `for_any` takes it as an argument): the IAM check reads which of them a
/// function's code can reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretContext {
    pub practice: PracticeId,
    pub purpose: SecretKind,
}

impl SecretContext {
    /// The inbound webhook secrets (the receiver).
    pub fn for_webhook(practice: &PracticeId) -> Self {
        Self {
            practice: practice.clone(),
            purpose: SecretKind::Webhook,
        }
    }
    /// The trigger signing secrets (the emitter).
    pub fn for_trigger(practice: &PracticeId) -> Self {
        Self {
            practice: practice.clone(),
            purpose: SecretKind::Trigger,
        }
    }
    /// The approval and settings link keys (the digest and the pages).
    pub fn for_link(practice: &PracticeId) -> Self {
        Self {
            practice: practice.clone(),
            purpose: SecretKind::Link,
        }
    }
    /// The tombstone hash key (the receiver).
    pub fn for_tombstone(practice: &PracticeId) -> Self {
        Self {
            practice: practice.clone(),
            purpose: SecretKind::Tombstone,
        }
    }
    /// Any purpose (onboarding, rotation and resealing, from the CLI).
    pub fn for_any(practice: &PracticeId, purpose: SecretKind) -> Self {
        Self {
            practice: practice.clone(),
            purpose,
        }
    }
    /// The encryption context's pairs, as KMS takes them.
    pub fn pairs(&self) -> [(&'static str, &str); 2] {
        [
            ("practice", self.practice.as_str()),
            ("purpose", self.purpose.as_str()),
        ]
    }
}

/// Envelope encryption of secrets at rest (KMS in AWS), each value bound to its
/// [`SecretContext`].
#[async_trait]
pub trait KeyService: Send + Sync {
    async fn seal(&self, context: &SecretContext, plaintext: &[u8]) -> Result<String, PortError>;
    /// Fails unless `sealed` was sealed under exactly `context`.
    async fn open(&self, context: &SecretContext, sealed: &str) -> Result<Vec<u8>, PortError>;
    /// Opens a value sealed before secrets were bound to a context (no encryption context).
    /// Only `pil secret reseal` calls it, to seal such a value again under its context; the
    /// functions never do, and their IAM policies would refuse it.
    async fn open_unbound(&self, sealed: &str) -> Result<Vec<u8>, PortError>;
}

/// What the PMS answered to a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportReply {
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connect,
    /// The transport does not send to this URL (an http URL outside the local stack): nothing
    /// was sent, and a retry would not change that.
    #[error("trigger URL refused")]
    Refused,
}

#[async_trait]
pub trait TriggerTransport: Send + Sync {
    async fn post(
        &self,
        url: &TriggerUrl,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<TransportReply, TransportError>;
}

/// The clock, so tests and `pil scan --date` can pin time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
