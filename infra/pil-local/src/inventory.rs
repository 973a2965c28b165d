//! The data inventory (`docs/data-inventory.md`): every attribute the layer stores, and what
//! its queues, events, triggers, e-mails and logs carry, derived from the code.
//!
//! Stored attributes are not listed by hand: a fully populated sample of every item type is
//! written through the real [`DynamoStore`] methods (the code path the functions use) into an
//! SDK client whose HTTP connection captures the requests instead of sending them; the items
//! in the captured `PutItem` / `TransactWriteItems` / `UpdateItem` requests are walked into
//! attribute paths (`doc.policy.kinds.*.mode`: maps as dotted paths, lists as `[]`). Each path
//! is joined with [`ATTRIBUTES`], the description table: a path without a description, a
//! description whose path no longer exists, and a sample that leaves an optional field unset
//! (a `NULL` in the item) are errors, so the document cannot drift from the code. The samples
//! are exhaustive struct literals and `match`es: a new field or variant does not compile until
//! the sample sets it, and then has no description until one is written.
//!
//! Messages (SQS bodies, EventBridge events, the trigger) are serialized from samples of their
//! types the same way; log fields are read from the `tracing` macros in the functions' source.
//!
//! `cargo run -q -p pil-bench --bin data-inventory > docs/data-inventory.md` writes it;
//! `infra/pil-local/tests/data_inventory.rs` fails when the checked-in file is not current.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use jiff::Timestamp;
use jiff::civil::Date;
use pil_aws::{DynamoStore, Meter};
use serde_json::Value;
use shared::action::{Action, ActionKind, ActionStatus, Conversion, Decider, Reason, SlotDetails};
use shared::audit::AuditEvent;
use shared::ids::{ActionId, OpaqueRef, PracticeId};
use shared::ports::{
    ActionRepo, AuditLog, CandidateBatch, DomainEvent, EntityRepo, PracticeRepo, TokenLedger,
    TombstoneRepo,
};
use shared::practice::{KindPolicy, Mode, Policy, Practice, PreviousSecret, SealedSecrets};
use shared::service::scan::Suppression;
use shared::state::{
    Ahead, Appointment, AppointmentStatus, Completion, Consent, Entity, Lww, PatientTreatment,
    PatientTreatmentKey, Seen, Slot, SlotTime,
};
use shared::treatment::Treatment;

// ---------------------------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------------------------

/// What an attribute may hold about a patient. Nothing stored is PHI: the PMS sends opaque
/// refs, categories and dates through the closed schema and PHI guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// Not about a patient.
    No,
    /// An opaque patient ref (or a key containing one): erased and rotated with the ref.
    Ref,
    /// Patient-linked through the item's ref: a category, a status, a count.
    Fact,
    /// A patient-linked date, at the precision the rules need (a day; a start minute only
    /// while a cancelled booking's slot lies ahead).
    Date,
    /// A KMS-sealed secret of the practice (ciphertext only).
    Sealed,
    /// The practice owner's contact (not a patient's): the digest's recipients.
    Owner,
}

impl Linked {
    fn label(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Ref => "**opaque ref**",
            Self::Fact => "via ref",
            Self::Date => "date via ref",
            Self::Sealed => "no (sealed secret)",
            Self::Owner => "no (owner e-mail)",
        }
    }
}

/// An item type: how its key looks, why it exists, how long it is kept, who writes and reads it.
pub struct ItemType {
    pub name: &'static str,
    /// How the item is recognised: an exact `sk`, or its prefix (ending in `#`), or
    /// `pk=VALUE`.
    pub key: &'static str,
    pub purpose: &'static str,
    pub retention: &'static str,
    pub written_by: &'static str,
    pub read_by: &'static str,
}

pub const ITEM_TYPES: &[ItemType] = &[
    ItemType {
        name: "practice config",
        key: "CONFIG",
        purpose: "A practice's configuration: time zone, owner e-mails, trigger URL, sealed secrets, policy, rule overrides.",
        retention: "While the practice is a customer (no TTL); deleted by hand on offboarding.",
        written_by: "`pil practice create/update`, `pil secret rotate`, `pil policy set`; approval-page (settings page); scheduler-scan (`last_scan_date`); trigger-emitter (`endpoint_retired` on 410)",
        read_by: "all five functions, `pil`",
    },
    ItemType {
        name: "practice list entry",
        key: "pk=PRACTICES",
        purpose: "Lists the practices (the hourly scan tick fans out over it).",
        retention: "As the practice config.",
        written_by: "`pil practice create` (with the config, in one transaction)",
        read_by: "scheduler-scan (tick)",
    },
    ItemType {
        name: "appointment",
        key: "APPT#",
        purpose: "One PMS appointment, merged last-writer-wins per field from appointment.* events: its patient and category, day, status, provider and (while ahead) a cancelled booking's start minute.",
        retention: "Until `patient.erased` for its patient (no TTL); re-keyed by `patient.ref_rotated`.",
        written_by: "webhook-receiver",
        read_by: "webhook-receiver, scheduler-scan (no-show and booked-ahead checks)",
    },
    ItemType {
        name: "patient × treatment",
        key: "PT#",
        purpose: "Per patient and category: the last completion (day, series, cycle override) the gap rules run on, and what was last actioned.",
        retention: "Until `patient.erased` (no TTL); moved to the new ref by `patient.ref_rotated`.",
        written_by: "webhook-receiver (completions, rotation), scheduler-scan (`actioned_due`, `recheck_on`)",
        read_by: "scheduler-scan, webhook-receiver",
    },
    ItemType {
        name: "consent",
        key: "CONSENT#",
        purpose: "Whether the patient opted out of nudges (`patient.opted_out` / `opted_in`).",
        retention: "Until `patient.erased` (no TTL); moved by `patient.ref_rotated`.",
        written_by: "webhook-receiver",
        read_by: "scheduler-scan, webhook-receiver (rotation, erasure)",
    },
    ItemType {
        name: "slot",
        key: "SLOT#",
        purpose: "An open slot (`slot.opened`, or a cancellation that reopens one) and the offers made for it.",
        retention: "No TTL (not patient-linked); kept with the practice.",
        written_by: "webhook-receiver, scheduler-scan (offers, filled)",
        read_by: "scheduler-scan, trigger-emitter (re-check before sending an offer)",
    },
    ItemType {
        name: "action",
        key: "ACTION#",
        purpose: "A gap turned into a candidate action (or a suppressed gap), its decision, delivery and attribution.",
        retention: "Until `patient.erased` for its patient (no TTL); re-keyed by `patient.ref_rotated`. Reports read the history.",
        written_by: "scheduler-scan (create, suppress, offers), approval-check and approval-page (decide), trigger-emitter (lease, deliver, fail), webhook-receiver (attribution, rotation, withdrawal)",
        read_by: "all five functions, `pil report`",
    },
    ItemType {
        name: "approval-link nonce",
        key: "TOKEN#",
        purpose: "Makes an approval or settings link single-use: the nonce is written with a condition when the link is used. `TOKEN#settings_mail:<minute>` limits settings-link e-mails to one request per practice and minute.",
        retention: "TTL: the link's expiry + 1 day.",
        written_by: "approval-page",
        read_by: "approval-page (the conditional write)",
    },
    ItemType {
        name: "nightly budget counter",
        key: "NIGHT#",
        purpose: "The actions the scan proposed on a practice-local night (`nightly_budget`); a set, so a re-run after a crash counts its proposals once.",
        retention: "TTL: 3 days.",
        written_by: "scheduler-scan",
        read_by: "scheduler-scan (the conditional update)",
    },
    ItemType {
        name: "refusal counts",
        key: "REFUSALS#",
        purpose: "How many of a practice's signed deliveries were refused per UTC hour, by refusal code, rule and field path (`pil status`, `pil report --integration`): what a PMS team needs to fix a leak. Nothing of a refused body: no value, no ref, no id from it.",
        retention: "TTL: 35 days.",
        written_by: "webhook-receiver (a refused signed delivery)",
        read_by: "`pil status`, `pil report --integration`",
    },
    ItemType {
        name: "auto-approval counter",
        key: "AUTO#",
        purpose: "The actions auto-approved per practice-local day and kind (`max_auto_per_day`); a set, so a retried approval counts once.",
        retention: "TTL: 3 days.",
        written_by: "approval-check",
        read_by: "approval-check (the conditional update)",
    },
    ItemType {
        name: "tombstone",
        key: "TOMB#",
        purpose: "What `patient.erased` and `patient.ref_rotated` leave behind, keyed by a keyed hash of the old ref (or of an erased appointment's ref), never the ref: a later event about an erased ref is dropped, one about a rotated-away ref applies to the ref it became (docs/contracts.md, Erasure and rotation).",
        retention: "TTL: 400 days (`tombstone::RETENTION_DAYS`).",
        written_by: "webhook-receiver (erasure, rotation; rewritten when the ref a rotation points to is rotated or erased)",
        read_by: "webhook-receiver (every delivery's refs, in one batch read)",
    },
    ItemType {
        name: "audit record",
        key: "AUDIT#",
        purpose: "One link of the practice's tamper-evident audit hash chain (docs/design.md §2.7). Names actions by id, never a patient ref.",
        retention: "TTL: six years (`audit::RETENTION_DAYS`).",
        written_by: "approval-check, approval-page, scheduler-scan, trigger-emitter, `pil`",
        read_by: "`pil audit verify/show`",
    },
    ItemType {
        name: "audit chain head",
        key: "AUDITHEAD",
        purpose: "The chain's last sequence number and hash; appends are conditional on it.",
        retention: "While the practice is a customer (no TTL).",
        written_by: "every audit append (with the record, in one transaction)",
        read_by: "every audit append, `pil audit verify`",
    },
];

/// (item type, attribute path, patient-linked, description). `*` stands for one map key.
pub const ATTRIBUTES: &[(&str, &str, Linked, &str)] = &[
    // Keys and index keys.
    (
        "*",
        "pk",
        Linked::No,
        "Partition key: `P#{practice}` (every practice's items in its own partition), or `PRACTICES`.",
    ),
    (
        "*",
        "sk",
        Linked::Ref,
        "Sort key: the item type and its id (`APPT#{ref}`, `PT#{patient ref}#{treatment}`, `ACTION#{id}`, ...); holds the patient ref for `PT#` and `CONSENT#` items.",
    ),
    (
        "*",
        "ver",
        Linked::No,
        "Version: every write is conditional on the version read.",
    ),
    (
        "*",
        "rev",
        Linked::No,
        "Revision of an action: every update is conditional on the revision read.",
    ),
    (
        "*",
        "ttl",
        Linked::No,
        "Expiry (epoch seconds), DynamoDB TTL.",
    ),
    (
        "*",
        "gsi1pk",
        Linked::Ref,
        "ByPatient index: `P#{practice}#PAT#{patient ref}` (appointments, actions), or `P#{practice}#SLOTAT#{provider}#{start}` (slots).",
    ),
    (
        "*",
        "gsi1sk",
        Linked::No,
        "ByPatient index sort key: the item's `sk`.",
    ),
    (
        "*",
        "gsi2pk",
        Linked::No,
        "DueIndex: `P#{practice}#DUE` while a record has a gap due, or `P#{practice}#POOL#{treatment}` for an action in the slot-fill pool.",
    ),
    (
        "*",
        "gsi2sk",
        Linked::Ref,
        "DueIndex sort key: `{due date}#{sk}` (holds the record's `sk`, so the ref for `PT#` items).",
    ),
    (
        "*",
        "gsi3pk",
        Linked::No,
        "ByDelivery index: `P#{practice}#DLV` once an action is delivered; `P#{practice}#OBX` while it is in the approval outbox (approved, not yet taken by an emitter).",
    ),
    (
        "*",
        "gsi3sk",
        Linked::No,
        "ByDelivery sort key: `{UTC delivery date}#{action id}`, or in the outbox `{decision time, epoch seconds}#{action id}`.",
    ),
    (
        "*",
        "gsi4pk",
        Linked::No,
        "ByStart index: `P#{practice}#SLOTAT#{provider}#{start}` while an appointment keeps its start minute (a slot opening there finds it).",
    ),
    (
        "*",
        "gsi4sk",
        Linked::No,
        "ByStart sort key: the item's `sk`.",
    ),
    (
        "*",
        "status",
        Linked::Fact,
        "An action's status, outside `doc` for filtering.",
    ),
    // Practice.
    ("practice config", "doc.id", Linked::No, "Practice id."),
    (
        "practice config",
        "doc.time_zone",
        Linked::No,
        "IANA time zone: scans run at its night, quiet hours are local.",
    ),
    (
        "practice config",
        "doc.owner_emails[]",
        Linked::Owner,
        "Where the digest e-mails go.",
    ),
    (
        "practice config",
        "doc.technical_contacts[]",
        Linked::Owner,
        "Where the daily PMS integration report goes (refusals by rule and field path), on days with refusals.",
    ),
    (
        "practice config",
        "doc.trigger_url",
        Linked::No,
        "The PMS trigger endpoint: https to a host name or a public IP address (docs/contracts.md, Triggers).",
    ),
    (
        "practice config",
        "doc.secrets.webhook[]",
        Linked::Sealed,
        "Inbound webhook secrets, KMS-sealed; two during a rotation overlap.",
    ),
    (
        "practice config",
        "doc.secrets.webhook_previous_until",
        Linked::No,
        "End of the webhook secret's rotation overlap.",
    ),
    (
        "practice config",
        "doc.secrets.trigger",
        Linked::Sealed,
        "Trigger signing secret, KMS-sealed.",
    ),
    (
        "practice config",
        "doc.secrets.trigger_previous.sealed",
        Linked::Sealed,
        "The replaced trigger secret during its overlap, KMS-sealed.",
    ),
    (
        "practice config",
        "doc.secrets.trigger_previous.until",
        Linked::No,
        "End of that overlap.",
    ),
    (
        "practice config",
        "doc.secrets.link",
        Linked::Sealed,
        "Approval- and settings-link signing key, KMS-sealed.",
    ),
    (
        "practice config",
        "doc.secrets.link_previous.sealed",
        Linked::Sealed,
        "The replaced link key during its overlap (links signed with it still verify), KMS-sealed.",
    ),
    (
        "practice config",
        "doc.secrets.link_previous.until",
        Linked::No,
        "End of that overlap.",
    ),
    (
        "practice config",
        "doc.secrets.tombstone",
        Linked::Sealed,
        "Key for tombstone hashes of erased and rotated refs, KMS-sealed.",
    ),
    (
        "practice config",
        "doc.policy.kinds.*.mode",
        Linked::No,
        "Per action kind: auto / approve / off.",
    ),
    (
        "practice config",
        "doc.policy.kinds.*.max_auto_per_day",
        Linked::No,
        "Per kind: auto-approvals per local day.",
    ),
    (
        "practice config",
        "doc.policy.kinds.*.max_auto_value",
        Linked::No,
        "Per kind: largest auto-approved value.",
    ),
    (
        "practice config",
        "doc.policy.cooldown_days",
        Linked::No,
        "Days between nudges to one patient.",
    ),
    (
        "practice config",
        "doc.policy.max_nudges_per_30_days",
        Linked::No,
        "Nudges per patient in 30 days.",
    ),
    (
        "practice config",
        "doc.policy.quiet_hours[]",
        Linked::No,
        "Local quiet hours [start, end).",
    ),
    (
        "practice config",
        "doc.policy.approval_expiry_hours",
        Linked::No,
        "Approval links' lifetime.",
    ),
    (
        "practice config",
        "doc.policy.slot_fill_k",
        Linked::No,
        "Patients an opened slot is offered to.",
    ),
    (
        "practice config",
        "doc.policy.nightly_budget",
        Linked::No,
        "Most actions one night's scan proposes.",
    ),
    (
        "practice config",
        "doc.cycle_days.*",
        Linked::No,
        "Per treatment: cycle override (days).",
    ),
    (
        "practice config",
        "doc.avg_ticket.*",
        Linked::No,
        "Per treatment: average ticket (value estimates).",
    ),
    (
        "practice config",
        "doc.follow_up_days.*",
        Linked::No,
        "Per treatment: follow-up interval override.",
    ),
    (
        "practice config",
        "doc.stale_after_days.*",
        Linked::No,
        "Per action kind: days past its due date a gap stays actionable (override).",
    ),
    (
        "practice config",
        "doc.win_back_multiple",
        Linked::No,
        "Win-back after this many cycles.",
    ),
    (
        "practice config",
        "doc.disabled",
        Linked::No,
        "Scans and sending stopped (`pil practice disable`).",
    ),
    (
        "practice config",
        "doc.endpoint_retired",
        Linked::No,
        "The PMS answered 410: no triggers until the URL changes.",
    ),
    (
        "practice config",
        "doc.last_scan_date",
        Linked::No,
        "Last local date the nightly scan ran for.",
    ),
    (
        "practice config",
        "doc.version",
        Linked::No,
        "The version inside the record (the item's `ver` is authoritative).",
    ),
    // Entities (`doc.entity` tells which).
    (
        "*",
        "doc.entity",
        Linked::No,
        "Which entity the record is: appointment, patient_treatment, consent, slot.",
    ),
    (
        "appointment",
        "doc.appointment_ref",
        Linked::No,
        "The PMS's opaque appointment ref.",
    ),
    (
        "appointment",
        "doc.patient.value.patient_ref",
        Linked::Ref,
        "The appointment's patient.",
    ),
    (
        "appointment",
        "doc.patient.value.treatment",
        Linked::Fact,
        "The appointment's treatment category.",
    ),
    (
        "appointment",
        "doc.patient.at",
        Linked::No,
        "When the PMS said so (`occurred_at`, no later than its receipt; last-writer-wins).",
    ),
    (
        "appointment",
        "doc.patient.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "appointment",
        "doc.patient.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "appointment",
        "doc.patient.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "appointment",
        "doc.starts_on.value",
        Linked::Date,
        "The appointment's day.",
    ),
    (
        "appointment",
        "doc.starts_on.at",
        Linked::No,
        "`occurred_at` of that fact, no later than its receipt (last-writer-wins).",
    ),
    (
        "appointment",
        "doc.starts_on.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "appointment",
        "doc.starts_on.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "appointment",
        "doc.starts_on.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "appointment",
        "doc.status.value",
        Linked::Fact,
        "booked / cancelled / completed / no_show.",
    ),
    (
        "appointment",
        "doc.status.at",
        Linked::No,
        "`occurred_at` of that fact, no later than its receipt (last-writer-wins).",
    ),
    (
        "appointment",
        "doc.status.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "appointment",
        "doc.status.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "appointment",
        "doc.status.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "appointment",
        "doc.recovery_settled",
        Linked::Fact,
        "A no-show's recovery was decided.",
    ),
    (
        "appointment",
        "doc.recheck_on",
        Linked::Date,
        "Day a suppressed no-show gap is looked at again.",
    ),
    (
        "appointment",
        "doc.slot_start.value.starts_at",
        Linked::Date,
        "A booking's start minute, kept only while it lies ahead (a cancellation hands it to the slot).",
    ),
    (
        "appointment",
        "doc.slot_start.value.duration_min",
        Linked::Fact,
        "Its length.",
    ),
    (
        "appointment",
        "doc.slot_start.at",
        Linked::No,
        "`occurred_at` of that fact, no later than its receipt (last-writer-wins).",
    ),
    (
        "appointment",
        "doc.slot_start.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "appointment",
        "doc.slot_start.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "appointment",
        "doc.slot_start.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "appointment",
        "doc.provider_ref.value",
        Linked::No,
        "The PMS's opaque provider (staff) ref.",
    ),
    (
        "appointment",
        "doc.provider_ref.at",
        Linked::No,
        "`occurred_at` of that fact, no later than its receipt (last-writer-wins).",
    ),
    (
        "appointment",
        "doc.provider_ref.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "appointment",
        "doc.provider_ref.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "appointment",
        "doc.provider_ref.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "patient × treatment",
        "doc.patient_ref",
        Linked::Ref,
        "The patient.",
    ),
    (
        "patient × treatment",
        "doc.treatment",
        Linked::Fact,
        "The category.",
    ),
    (
        "patient × treatment",
        "doc.last.value.on",
        Linked::Date,
        "Day of the last completion (day precision).",
    ),
    (
        "patient × treatment",
        "doc.last.value.series_index",
        Linked::Fact,
        "Session number in a series.",
    ),
    (
        "patient × treatment",
        "doc.last.value.series_of",
        Linked::Fact,
        "Sessions in the series.",
    ),
    (
        "patient × treatment",
        "doc.last.value.cycle_days",
        Linked::Fact,
        "Per-event cycle override.",
    ),
    (
        "patient × treatment",
        "doc.last.at",
        Linked::No,
        "`occurred_at` of the completion event, no later than its receipt.",
    ),
    (
        "patient × treatment",
        "doc.last.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "patient × treatment",
        "doc.last.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "patient × treatment",
        "doc.last.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "patient × treatment",
        "doc.actioned_due",
        Linked::Date,
        "The gap date last turned into an action (re-runs add nothing).",
    ),
    (
        "patient × treatment",
        "doc.recheck_on",
        Linked::Date,
        "Day a suppressed gap is looked at again.",
    ),
    ("consent", "doc.patient_ref", Linked::Ref, "The patient."),
    (
        "consent",
        "doc.opted_out.value",
        Linked::Fact,
        "Opted out of nudges.",
    ),
    (
        "consent",
        "doc.opted_out.at",
        Linked::No,
        "`occurred_at` of that fact, no later than its receipt (last-writer-wins).",
    ),
    (
        "consent",
        "doc.opted_out.ahead.reported",
        Linked::No,
        "The `occurred_at` the value's event reported, when it was ahead of its receipt (`at` is then the receipt).",
    ),
    (
        "consent",
        "doc.opted_out.ahead.seen[].occurred_at",
        Linked::No,
        "An event dated ahead of its receipt, kept until the register's time passes it (a redelivery ranks where it first did): its `occurred_at`.",
    ),
    (
        "consent",
        "doc.opted_out.ahead.seen[].ranked_at",
        Linked::No,
        "Its first receipt: the time it ranks at.",
    ),
    (
        "slot",
        "doc.slot_ref",
        Linked::No,
        "The PMS's opaque slot ref.",
    ),
    (
        "slot",
        "doc.provider_ref",
        Linked::No,
        "Opaque provider ref.",
    ),
    (
        "slot",
        "doc.starts_at",
        Linked::No,
        "Start (a slot, not a patient's booking).",
    ),
    ("slot", "doc.duration_min", Linked::No, "Length."),
    (
        "slot",
        "doc.treatments[]",
        Linked::No,
        "Categories the slot fits.",
    ),
    (
        "slot",
        "doc.opened_at",
        Linked::No,
        "`occurred_at` of slot.opened, no later than its receipt.",
    ),
    (
        "slot",
        "doc.offers[]",
        Linked::No,
        "Ids of the actions that offered it.",
    ),
    ("slot", "doc.filled", Linked::No, "A booking took the slot."),
    // Action.
    (
        "action",
        "doc.id",
        Linked::No,
        "Deterministic action id (a hash of practice, kind, ref and gap: no ref can be read back).",
    ),
    ("action", "doc.practice_id", Linked::No, "Practice id."),
    (
        "action",
        "doc.kind",
        Linked::Fact,
        "rebook_nudge, slot_offer, follow_up, no_show_recovery, win_back, series_continue.",
    ),
    (
        "action",
        "doc.patient_ref",
        Linked::Ref,
        "The patient the trigger is for.",
    ),
    ("action", "doc.treatment", Linked::Fact, "The category."),
    (
        "action",
        "doc.reason",
        Linked::Fact,
        "Reason code (cycle_due, ...).",
    ),
    (
        "action",
        "doc.evidence_date",
        Linked::Date,
        "The completion day the gap is computed from.",
    ),
    (
        "action",
        "doc.due_since",
        Linked::Date,
        "The day the gap opened.",
    ),
    (
        "action",
        "doc.value",
        Linked::No,
        "Estimated value (the practice's average ticket).",
    ),
    (
        "action",
        "doc.status",
        Linked::Fact,
        "proposed, pending, approved, delivered, rejected, expired, failed, suppressed, withdrawn.",
    ),
    (
        "action",
        "doc.created_at",
        Linked::No,
        "When the action was created.",
    ),
    (
        "action",
        "doc.expires_at",
        Linked::No,
        "When the trigger stops making sense.",
    ),
    (
        "action",
        "doc.decided_by.by",
        Linked::No,
        "owner or policy.",
    ),
    (
        "action",
        "doc.decided_by.approver",
        Linked::No,
        "Hash of the approving owner's address (never the address).",
    ),
    (
        "action",
        "doc.decided_by.rule",
        Linked::No,
        "The policy rule that auto-approved.",
    ),
    (
        "action",
        "doc.decided_at",
        Linked::No,
        "When it was decided.",
    ),
    (
        "action",
        "doc.delivered_at",
        Linked::No,
        "When the PMS accepted the trigger.",
    ),
    ("action", "doc.attempts", Linked::No, "Delivery attempts."),
    (
        "action",
        "doc.last_error",
        Linked::No,
        "Last delivery error as a reason code (an HTTP status, `timeout`), never a response body.",
    ),
    (
        "action",
        "doc.lease_until",
        Linked::No,
        "Delivery lease (one emitter at a time).",
    ),
    (
        "action",
        "doc.suppression",
        Linked::Fact,
        "Why a gap was not acted on (opted_out, cooldown, ...).",
    ),
    (
        "action",
        "doc.converted.on",
        Linked::Date,
        "Day of the attributed booking.",
    ),
    (
        "action",
        "doc.converted.value",
        Linked::No,
        "Recovered revenue (the estimated value).",
    ),
    (
        "action",
        "doc.rev",
        Linked::No,
        "The revision inside the record (the item's `rev` is authoritative).",
    ),
    (
        "action",
        "doc.slot.slot_ref",
        Linked::No,
        "A slot offer's slot.",
    ),
    ("action", "doc.slot.starts_at", Linked::No, "Its start."),
    (
        "action",
        "doc.withdrawal",
        Linked::Fact,
        "Why it was withdrawn: `slot_filled`, `opted_out` or `slot_erased`.",
    ),
    (
        "action",
        "doc.slot.provider_ref",
        Linked::No,
        "Its provider.",
    ),
    // Tombstone.
    (
        "tombstone",
        "doc.id",
        Linked::No,
        "HMAC-SHA256 of the old ref under the practice's tombstone key, 128 bits in hex (not reversible without the key).",
    ),
    (
        "tombstone",
        "doc.fate",
        Linked::No,
        "`erased` or `rotated_to`.",
    ),
    (
        "tombstone",
        "doc.to",
        Linked::Ref,
        "A rotation's new ref (live; rewritten when that ref is rotated or erased).",
    ),
    (
        "tombstone",
        "doc.at",
        Linked::No,
        "When the erasure or rotation was applied.",
    ),
    (
        "tombstone",
        "ttl",
        Linked::No,
        "Expiry for DynamoDB TTL (epoch seconds).",
    ),
    // Nightly budget counter.
    (
        "nightly budget counter",
        "ids",
        Linked::No,
        "The action ids proposed that night (a string set; its size is the count).",
    ),
    // Refusal counts.
    (
        "refusal counts",
        "r:*",
        Linked::No,
        "One count per UTC hour, refusal code, rule and field path: `r:{HH}|{code}|{rule}|{path}`, the path with indices dropped and `/` for `.` (`events[]/data/patient_ref`).",
    ),
    // Auto-approval counter.
    (
        "auto-approval counter",
        "ids",
        Linked::No,
        "The action ids auto-approved that day for that kind (a string set; its size is the count).",
    ),
    // Audit.
    (
        "audit record",
        "doc.practice_id",
        Linked::No,
        "Practice id.",
    ),
    (
        "audit record",
        "doc.seq",
        Linked::No,
        "Position in the chain.",
    ),
    ("audit record", "doc.at", Linked::No, "When."),
    (
        "audit record",
        "doc.actor",
        Linked::No,
        "Who: `policy:<rule>`, `owner:<approver hash>`, `admin`, `emitter`, ...",
    ),
    (
        "audit record",
        "doc.event",
        Linked::No,
        "What: policy_changed, action_approved, action_delivered, ...",
    ),
    (
        "audit record",
        "doc.action_id",
        Linked::No,
        "The action concerned (an id; no ref).",
    ),
    (
        "audit record",
        "doc.details",
        Linked::No,
        "JSON text without PHI: kinds, modes, reason codes, statuses, counts.",
    ),
    (
        "audit record",
        "doc.prev",
        Linked::No,
        "Hash of the record before.",
    ),
    (
        "audit record",
        "doc.hash",
        Linked::No,
        "This record's hash.",
    ),
    (
        "audit chain head",
        "seq",
        Linked::No,
        "Last sequence number.",
    ),
    (
        "audit chain head",
        "hash",
        Linked::No,
        "Last record's hash.",
    ),
];

// ---------------------------------------------------------------------------------------------
// Capturing what the store writes
// ---------------------------------------------------------------------------------------------

/// An HTTP client that records each request (its `x-amz-target` and JSON body) and answers
/// `200 {}`: nothing leaves the process.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, Value)>>>);

impl HttpConnector for Capture {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        self.0.lock().expect("capture lock").push((target, body));
        let status = 200u16.try_into().expect("a status");
        HttpConnectorFuture::ready(Ok(HttpResponse::new(status, SdkBody::from("{}"))))
    }
}

impl HttpClient for Capture {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// The items a request writes: (item, attributes an update expression sets).
fn written_items(target: &str, body: &Value) -> Vec<Value> {
    let op = target.rsplit('.').next().unwrap_or_default();
    match op {
        "PutItem" => vec![body["Item"].clone()],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("Put").map(|p| p["Item"].clone()))
            .collect(),
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .filter_map(|w| w.get("PutRequest").map(|p| p["Item"].clone()))
            .collect(),
        "UpdateItem" => {
            // The key plus the attributes the expression sets (`#name` resolved); values are
            // typed from the expression's placeholders.
            let mut item = body["Key"].as_object().cloned().unwrap_or_default();
            let expr = body["UpdateExpression"].as_str().unwrap_or_default();
            let names = &body["ExpressionAttributeNames"];
            let values = &body["ExpressionAttributeValues"];
            let tokens: Vec<&str> = expr
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .collect();
            for w in tokens.windows(2) {
                let (name, next) = (w[0], w[1]);
                if ["SET", "ADD", "REMOVE", "DELETE", "="].contains(&name) || name.starts_with(':')
                {
                    continue;
                }
                let attr = if name.starts_with('#') {
                    names[name].as_str().unwrap_or(name).to_owned()
                } else {
                    name.to_owned()
                };
                let value_ph = if next == "=" {
                    tokens
                        .iter()
                        .skip_while(|t| **t != name)
                        .nth(2)
                        .copied()
                        .unwrap_or_default()
                } else {
                    next
                };
                if let Some(v) = values.get(value_ph) {
                    item.insert(attr, v.clone());
                }
            }
            vec![Value::Object(item)]
        }
        _ => Vec::new(),
    }
}

/// Attribute paths of a DynamoDB item (`{"name": {"S": ..}}`) with their types.
fn attribute_paths(item: &Value, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    fn walk(prefix: &str, av: &Value, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let Some((ty, v)) = av.as_object().and_then(|m| m.iter().next()) else {
            return;
        };
        let t: &'static str = match ty.as_str() {
            "S" => "S",
            "N" => "N",
            "BOOL" => "BOOL",
            "NULL" => "NULL",
            "M" => "M",
            "L" => "L",
            "SS" => "SS",
            "NS" => "NS",
            "B" => "B",
            _ => "?",
        };
        // Leaves only: a map or list is listed through its members.
        match t {
            "M" if v.as_object().is_some_and(|m| !m.is_empty()) => {
                for (k, child) in v.as_object().into_iter().flatten() {
                    walk(&format!("{prefix}.{k}"), child, out);
                }
            }
            "L" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                for child in v.as_array().into_iter().flatten() {
                    walk(&format!("{prefix}[]"), child, out);
                }
            }
            _ => {
                out.entry(prefix.to_owned()).or_default().insert(t);
            }
        }
    }
    for (k, v) in item.as_object().into_iter().flatten() {
        walk(k, v, out);
    }
}

fn item_type_of(item: &Value) -> Option<&'static ItemType> {
    let pk = item["pk"]["S"].as_str().unwrap_or_default();
    let sk = item["sk"]["S"].as_str().unwrap_or_default();
    ITEM_TYPES.iter().find(|t| match t.key.strip_prefix("pk=") {
        Some(p) => pk == p,
        None if t.key.ends_with('#') => sk.starts_with(t.key),
        None => sk == t.key,
    })
}

// ---------------------------------------------------------------------------------------------
// Samples: every field set (exhaustive literals: a new field must be set here to compile)
// ---------------------------------------------------------------------------------------------

fn at(s: &str) -> Timestamp {
    s.parse().expect("an instant")
}
fn day(s: &str) -> Date {
    s.parse().expect("a date")
}
fn opaque(s: &str) -> OpaqueRef {
    OpaqueRef::parse(s).expect("an opaque ref")
}

pub fn sample_practice_id() -> PracticeId {
    PracticeId::parse("demo-aesthetics").expect("a practice id")
}

pub fn sample_practice() -> Practice {
    Practice {
        id: sample_practice_id(),
        time_zone: "America/Chicago".into(),
        owner_emails: vec!["owner@demo-aesthetics.example".into()],
        technical_contacts: vec!["it@pms-vendor.example".into()],
        trigger_url: Some(
            "https://pms.example/triggers"
                .parse()
                .expect("a trigger URL"),
        ),
        secrets: SealedSecrets {
            webhook: vec!["c2VhbGVkLW5ldw==".into(), "c2VhbGVkLW9sZA==".into()],
            webhook_previous_until: Some(at("2026-11-26T00:00:00Z")),
            trigger: "c2VhbGVkLXRyaWdnZXI=".into(),
            trigger_previous: Some(PreviousSecret {
                sealed: "c2VhbGVkLXByZXY=".into(),
                until: at("2026-11-26T00:00:00Z"),
            }),
            link: "c2VhbGVkLWxpbms=".into(),
            link_previous: Some(PreviousSecret {
                sealed: "c2VhbGVkLWxpbmstcHJldg==".into(),
                until: at("2026-11-26T00:00:00Z"),
            }),
            tombstone: Some("c2VhbGVkLXRvbWJzdG9uZQ==".into()),
        },
        policy: Policy {
            kinds: ActionKind::ALL
                .iter()
                .map(|k| {
                    (
                        *k,
                        KindPolicy {
                            mode: Mode::Approve,
                            max_auto_per_day: 20,
                            max_auto_value: 1000,
                        },
                    )
                })
                .collect(),
            cooldown_days: 14,
            max_nudges_per_30_days: 2,
            quiet_hours: Some((20, 8)),
            approval_expiry_hours: 72,
            slot_fill_k: 3,
            nightly_budget: 25,
        },
        cycle_days: [(Treatment::Neurotoxin, 100)].into(),
        avg_ticket: [(Treatment::Neurotoxin, 450)].into(),
        follow_up_days: [(Treatment::DermalFiller, 10)].into(),
        stale_after_days: [(ActionKind::WinBack, 120)].into(),
        win_back_multiple: Some(3),
        disabled: true,
        endpoint_retired: true,
        last_scan_date: Some(day("2026-11-22")),
        version: 1,
    }
}

fn lww<T>(value: T) -> Lww<T> {
    Lww {
        value,
        at: at("2026-11-20T15:04:05Z"),
        ahead: Some(Box::new(Ahead {
            reported: Some(at("2026-11-20T16:00:00Z")),
            seen: vec![Seen {
                occurred_at: at("2026-11-20T16:00:00Z"),
                ranked_at: at("2026-11-20T15:04:05Z"),
            }],
        })),
    }
}

/// One of each entity, and whether the store can list it in the due index
/// (`rules::due_index_date`: appointments and patient × treatment records only).
pub fn sample_entities() -> Vec<(Entity, bool)> {
    let patient = opaque("p_7Hq2kX9mZ4rT1vB8yW3n");
    let all = vec![
        Entity::Appointment(Appointment {
            appointment_ref: opaque("a_Jk3nW8qP2xR5tY9mB4vC"),
            patient: Some(lww(PatientTreatmentKey {
                patient_ref: patient.clone(),
                treatment: Treatment::Neurotoxin,
            })),
            starts_on: Some(lww(day("2026-12-01"))),
            status: Some(lww(AppointmentStatus::Cancelled)),
            recovery_settled: true,
            recheck_on: Some(day("2026-12-08")),
            slot_start: Some(lww(Some(SlotTime {
                starts_at: at("2026-12-01T15:00:00Z"),
                duration_min: 30,
            }))),
            provider_ref: Some(lww(opaque("pr_Zt6mQ2wK9xN4bV7cR1yH"))),
        }),
        Entity::PatientTreatment(PatientTreatment {
            patient_ref: patient.clone(),
            treatment: Treatment::Neurotoxin,
            last: Some(lww(Completion {
                on: day("2026-08-01"),
                series_index: Some(1),
                series_of: Some(3),
                cycle_days: Some(100),
            })),
            actioned_due: Some(day("2026-10-30")),
            recheck_on: Some(day("2026-11-06")),
        }),
        Entity::Consent(Consent {
            patient_ref: patient,
            opted_out: Some(lww(true)),
        }),
        Entity::Slot(Slot {
            slot_ref: opaque("s_Xw4rT8mN2kP6qZ9vB3cJ"),
            provider_ref: opaque("pr_Zt6mQ2wK9xN4bV7cR1yH"),
            starts_at: at("2026-12-01T15:00:00Z"),
            duration_min: 30,
            treatments: vec![Treatment::Neurotoxin, Treatment::DermalFiller],
            opened_at: at("2026-11-20T15:04:05Z"),
            offers: Some(vec![ActionId::derive(&["offer"])]),
            filled: true,
        }),
    ];
    all.into_iter()
        .map(|e| {
            let due = match &e {
                Entity::Appointment(_) | Entity::PatientTreatment(_) => true,
                Entity::Consent(_) | Entity::Slot(_) => false,
            };
            (e, due)
        })
        .collect()
}

/// Actions covering every field and every index: a delivered, converted, owner-approved one
/// (ByDelivery), and a pending slot-pool one decided by policy (DueIndex pool).
pub fn sample_actions() -> Vec<Action> {
    let full = Action {
        id: ActionId::derive(&["demo-aesthetics", "rebook_nudge", "p", "2026-10-30"]),
        practice_id: sample_practice_id(),
        kind: ActionKind::SlotOffer,
        patient_ref: opaque("p_7Hq2kX9mZ4rT1vB8yW3n"),
        treatment: Treatment::Neurotoxin,
        reason: Reason::SlotOpen,
        evidence_date: day("2026-08-01"),
        due_since: day("2026-10-30"),
        value: 450,
        status: ActionStatus::Delivered,
        created_at: at("2026-11-01T08:00:00Z"),
        expires_at: at("2026-11-15T05:00:00Z"),
        decided_by: Some(Decider::Owner {
            approver: "3f9a1c".into(),
        }),
        decided_at: Some(at("2026-11-01T09:00:00Z")),
        delivered_at: Some(at("2026-11-01T09:00:05Z")),
        attempts: 1,
        last_error: Some("http_503".into()),
        lease_until: Some(at("2026-11-01T09:01:00Z")),
        suppression: Some(Suppression::Cooldown),
        converted: Some(Conversion {
            on: day("2026-11-05"),
            value: 450,
        }),
        rev: 3,
        slot: Some(SlotDetails {
            slot_ref: opaque("s_Xw4rT8mN2kP6qZ9vB3cJ"),
            starts_at: at("2026-12-01T15:00:00Z"),
            provider_ref: Some(opaque("pr_Zt6mQ2wK9xN4bV7cR1yH")),
        }),
        withdrawal: Some(shared::action::Withdrawal::OptedOut),
    };
    let pooled = Action {
        id: ActionId::derive(&["demo-aesthetics", "rebook_nudge", "q", "2026-10-30"]),
        kind: ActionKind::RebookNudge,
        reason: Reason::CycleDue,
        status: ActionStatus::Pending,
        decided_by: Some(Decider::Policy {
            rule: "rebook_nudge:auto".into(),
        }),
        converted: None,
        ..full.clone()
    };
    // Every decider is sampled.
    for a in [&full, &pooled] {
        match &a.decided_by {
            Some(Decider::Owner { .. } | Decider::Policy { .. }) | None => {}
        }
    }
    vec![full, pooled]
}

/// A tombstone of each fate.
pub fn sample_tombstones() -> Vec<shared::tombstone::Tombstone> {
    use shared::tombstone::{Fate, Tombstone, TombstoneKey};
    let key = TombstoneKey::from_bytes(vec![9u8; 32]).expect("a 32-byte key");
    let old = opaque("p_Qm3vT8xK2nR7wY4bZ6cD");
    vec![
        Tombstone::new(key.patient(&old), Fate::Erased, at("2026-11-20T10:00:00Z")),
        Tombstone::new(
            key.patient(&opaque("p_Hn5wB2kX8rT3mV6yQ9zL")),
            Fate::RotatedTo {
                to: opaque("p_7Hq2kX9mZ4rT1vB8yW3n"),
            },
            at("2026-11-20T10:00:00Z"),
        ),
    ]
}

pub fn sample_audit_event() -> AuditEvent {
    AuditEvent {
        actor: "owner:3f9a1c".into(),
        event: "action_approved",
        action_id: Some(ActionId::derive(&["x"])),
        details: r#"{"kind":"rebook_nudge"}"#.into(),
    }
}

/// Every stored item type, written through the store. Returns item type name → attribute
/// path → DynamoDB types.
pub async fn stored_attributes()
-> Result<BTreeMap<&'static str, BTreeMap<String, BTreeSet<&'static str>>>, String> {
    let capture = Capture::default();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "inventory",
            "inventory",
            None,
            None,
            "inventory",
        ))
        .endpoint_url("http://inventory.invalid")
        .http_client(capture.clone())
        .build();
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::from_conf(conf),
        "inventory",
        Meter::default(),
    );
    let pid = sample_practice_id();
    fn e(what: &'static str) -> impl Fn(shared::ports::StoreError) -> String {
        move |err| format!("{what}: {err:?}")
    }
    store
        .put_practice(&sample_practice(), None)
        .await
        .map_err(e("put_practice"))?;
    store
        .put_practice(&sample_practice(), Some(1))
        .await
        .map_err(e("put_practice"))?;
    for (entity, due) in sample_entities() {
        let due_on = due.then(|| day("2026-11-20"));
        store
            .put_entity(&pid, &entity, None, due_on)
            .await
            .map_err(e("put_entity"))?;
        store
            .put_entity(&pid, &entity, Some(1), due_on)
            .await
            .map_err(e("put_entity"))?;
    }
    for a in sample_actions() {
        store.create_action(&a).await.map_err(e("create_action"))?;
        store.update_action(&a).await.map_err(e("update_action"))?;
    }
    store
        .consume_token(&pid, "n0nce", at("2026-11-25T00:00:00Z"))
        .await
        .map_err(e("consume_token"))?;
    store
        .reserve_auto_approval(
            &pid,
            ActionKind::RebookNudge,
            day("2026-11-22"),
            20,
            &sample_actions()[0].id,
        )
        .await
        .map_err(e("reserve_auto_approval"))?;
    store
        .reserve_nightly(&pid, day("2026-11-22"), 25, &sample_actions()[0].id)
        .await
        .map_err(e("reserve_nightly"))?;
    shared::ports::RefusalLog::count_refusal(
        &store,
        &pid,
        at("2026-11-22T14:05:00Z"),
        "phi_detected",
        "email",
        "events[].data.patient_ref",
    )
    .await
    .map_err(e("count_refusal"))?;
    for t in sample_tombstones() {
        store
            .put_tombstone(&pid, &t)
            .await
            .map_err(e("put_tombstone"))?;
    }
    store
        .append(&pid, &sample_audit_event(), at("2026-11-22T08:00:00Z"))
        .await
        .map_err(e("append"))?;

    let mut out: BTreeMap<&'static str, BTreeMap<String, BTreeSet<&'static str>>> = BTreeMap::new();
    let requests = capture.0.lock().expect("capture lock").clone();
    for (target, body) in &requests {
        for item in written_items(target, body) {
            let t = item_type_of(&item).ok_or_else(|| {
                format!(
                    "an item of no known type (add it to ITEM_TYPES): pk {} sk {}",
                    item["pk"], item["sk"]
                )
            })?;
            attribute_paths(&item, out.entry(t.name).or_default());
        }
    }
    for t in ITEM_TYPES {
        if !out.contains_key(t.name) {
            return Err(format!(
                "item type {:?} was not written by any sample: add one to stored_attributes",
                t.name
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// A message channel, what it carries and a description per JSON path.
pub struct Channel {
    pub name: &'static str,
    pub carries: &'static str,
    pub fields: &'static [(&'static str, Linked, &'static str)],
}

pub const CHANNELS: &[Channel] = &[
    Channel {
        name: "CandidatesQueue (SQS): scheduler-scan → approval-check",
        carries: "One message per scan with the new action ids (`CandidateBatch`). Retention: SQS default (4 days), then CandidatesDLQ (14 days).",
        fields: &[
            ("practice_id", Linked::No, "Practice id."),
            ("scan_date", Linked::No, "The practice-local date scanned."),
            (
                "action_ids[]",
                Linked::No,
                "Ids of the candidate actions (no refs).",
            ),
            (
                "deferred",
                Linked::No,
                "Gaps over the nightly budget, waiting for later nights (a count).",
            ),
        ],
    },
    Channel {
        name: "ScanQueue (SQS): EventBridge Scheduler, `pil scan`, SlotOpenedRule, scheduler-scan itself → scheduler-scan",
        carries: "The hourly tick, a practice's night (the tick's fan-out, or a continuation), or a `slot.opened`/`slot.filled` event (see the bus below).",
        fields: &[
            ("kind", Linked::No, "`tick` or `scan`."),
            ("practice_id", Linked::No, "Practice id (explicit scan)."),
            (
                "date",
                Linked::No,
                "The local date to scan as (explicit scan).",
            ),
            (
                "part",
                Linked::No,
                "A continuation's part number (a night too large for one invocation).",
            ),
        ],
    },
    Channel {
        name: "EventBridge bus `pil-<stack>` (events, `detail`); TriggersQueue and TriggersDLQ carry the `action.approved` event, CandidatesQueue `settings_link.requested`, and (sent to it directly) `trigger_endpoint.retired`, `triggers.failing` and `integration_report.due`",
        carries: "Domain events with ids only (`DomainEvent`): `slot.opened`, `slot.filled` (source `pil.receiver`), `action.approved`, `settings_link.requested` (source `pil.approval`); `trigger_endpoint.retired` and `triggers.failing` (trigger-emitter) and `integration_report.due` (scheduler-scan, when a night is done) go to CandidatesQueue as `{\"detail-type\", \"detail\"}`.",
        fields: &[
            (
                "type",
                Linked::No,
                "The event type (also the `detail-type`).",
            ),
            ("practice_id", Linked::No, "Practice id."),
            ("slot_ref", Linked::No, "Opaque slot ref."),
            (
                "appointment_ref",
                Linked::No,
                "`slot.filled`: the opaque ref of the appointment that took the slot.",
            ),
            ("action_id", Linked::No, "The approved action's id."),
            (
                "requested_by",
                Linked::No,
                "Hash of the owner who asked for a settings link (never the address).",
            ),
            (
                "date",
                Linked::No,
                "The practice-local day an integration report or a failing-triggers notice is for.",
            ),
            (
                "reason",
                Linked::No,
                "Why a trigger failed for good, as a code (`http_4xx`, `retries_exhausted`, …).",
            ),
        ],
    },
    Channel {
        name: "Trigger (signed HTTPS POST to the PMS; docs/contracts.md, Triggers)",
        carries: "The anonymized trigger; the PMS resolves the ref to its patient. Not stored by the layer beyond the action.",
        fields: &[
            ("type", Linked::Fact, "`action.<kind>`."),
            (
                "trigger_id",
                Linked::No,
                "Stable across retries (`webhook-id`).",
            ),
            ("practice_id", Linked::No, "Practice id."),
            (
                "patient_ref",
                Linked::Ref,
                "The PMS's own opaque ref, returned to it.",
            ),
            ("treatment", Linked::Fact, "Category."),
            ("reason", Linked::Fact, "Reason code."),
            ("due_since", Linked::Date, "Day the gap opened."),
            ("template", Linked::No, "The PMS template to use."),
            ("slot.slot_ref", Linked::No, "A slot offer's slot."),
            ("slot.starts_at", Linked::No, "Its start."),
            ("slot.provider_ref", Linked::No, "Its provider."),
            ("expires_at", Linked::No, "Drop after this."),
        ],
    },
];

fn json_paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                json_paths(&p, c, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                json_paths(&format!("{prefix}[]"), c, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// Every JSON path each channel carries, from samples of its types.
pub fn channel_paths() -> Result<Vec<BTreeSet<String>>, String> {
    let pid = sample_practice_id();
    let ser = |v: &dyn erased::Ser| v.json();
    let mut candidates = BTreeSet::new();
    json_paths(
        "",
        &ser(&CandidateBatch {
            practice_id: pid.clone(),
            scan_date: day("2026-11-22"),
            action_ids: vec![ActionId::derive(&["x"])],
            deferred: 312,
        }),
        &mut candidates,
    );
    // The scan queue's own messages (the consumer's `ScanMessage` only deserializes: these
    // samples are checked against it).
    let mut scan = BTreeSet::new();
    for m in [
        serde_json::json!({"kind": "tick"}),
        serde_json::json!({"kind": "scan", "practice_id": "demo-aesthetics", "date": "2026-11-22"}),
        serde_json::json!({"kind": "scan", "practice_id": "demo-aesthetics", "date": "2026-11-22", "part": 2}),
    ] {
        serde_json::from_value::<scheduler_scan::ScanMessage>(m.clone())
            .map_err(|e| format!("scan message sample does not parse: {e}"))?;
        json_paths("", &m, &mut scan);
    }
    let mut events = BTreeSet::new();
    let slot = opaque("s_Xw4rT8mN2kP6qZ9vB3cJ");
    for ev in [
        DomainEvent::SlotOpened {
            practice_id: pid.clone(),
            slot_ref: slot.clone(),
        },
        DomainEvent::SlotFilled {
            practice_id: pid.clone(),
            slot_ref: slot,
            appointment_ref: Some(opaque("a_Xw4rT8mN2kP6qZ9vB3cJ")),
        },
        DomainEvent::ActionApproved {
            practice_id: pid.clone(),
            action_id: ActionId::derive(&["x"]),
        },
        DomainEvent::SettingsLinkRequested {
            practice_id: pid.clone(),
            requested_by: shared::token::approver_id("owner@demo-aesthetics.example"),
        },
        DomainEvent::EndpointRetired {
            practice_id: pid.clone(),
        },
        DomainEvent::IntegrationReportDue {
            practice_id: pid.clone(),
            date: day("2026-11-22"),
        },
        DomainEvent::TriggersFailing {
            practice_id: pid.clone(),
            date: day("2026-11-22"),
            reason: "http_4xx".into(),
        },
    ] {
        // Every variant is sampled.
        match &ev {
            DomainEvent::SlotOpened { .. }
            | DomainEvent::SlotFilled { .. }
            | DomainEvent::ActionApproved { .. }
            | DomainEvent::SettingsLinkRequested { .. }
            | DomainEvent::EndpointRetired { .. }
            | DomainEvent::IntegrationReportDue { .. }
            | DomainEvent::TriggersFailing { .. } => {}
        }
        json_paths("", &ser(&ev), &mut events);
    }
    let mut trigger = BTreeSet::new();
    for a in sample_actions() {
        json_paths(
            "",
            &ser(&shared::service::emitter::Trigger::of(&a)),
            &mut trigger,
        );
    }
    Ok(vec![candidates, scan, events, trigger])
}

/// `serde_json::to_value` through a trait object.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("serializable")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// Structured log fields (`tracing` macros in the functions, the domain library and the
/// adapters) and what each carries. A field not listed fails the generator.
pub const LOG_FIELDS: &[(&str, &str)] = &[
    ("action_id", "Action id."),
    ("actions", "Count."),
    (
        "actor",
        "Who made an admin change (`admin`, `owner:<approver hash>`).",
    ),
    (
        "after",
        "The policy after a change (JSON: modes and limits, no PHI).",
    ),
    (
        "approver",
        "Hash of the approving owner's address (never the address).",
    ),
    ("before", "The policy before a change."),
    ("converted", "Count."),
    ("decision", "approve / reject (owner decisions)."),
    ("deleted", "Count of records deleted (erasure)."),
    ("delivered", "Count."),
    ("event_type", "Inbound event type (`patient.erased`, ...)."),
    (
        "fields",
        "Names of the practice settings changed (not their values).",
    ),
    ("kind", "Action kind."),
    ("old_valid_until", "End of a rotated secret's overlap."),
    (
        "older_dropped",
        "Whether a rotation cut an older secret short.",
    ),
    ("overlap_hours", "A secret rotation's overlap."),
    ("records", "Count of records found for a ref."),
    ("budget", "The practice's nightly budget."),
    ("part", "Which part of a night's scan (0 first)."),
    ("practices", "Count of practices a tick fanned out to."),
    (
        "deferred",
        "Count of gaps over the nightly budget, waiting for the next night.",
    ),
    (
        "dropped",
        "Count of a delivery's events about erased refs (accepted, not applied).",
    ),
    (
        "redirected",
        "Count of a delivery's events applied to the ref a rotation made of theirs.",
    ),
    (
        "republished",
        "Count of approved actions published again from the outbox.",
    ),
    ("rekeyed", "Count of records moved to a new ref."),
    ("treatment", "Treatment category."),
    ("value", "An action's estimated value."),
    ("which", "webhook, trigger or link (secret rotation)."),
    (
        "already_bound",
        "Count of a practice's sealed secrets already bound to their context (reseal).",
    ),
    (
        "owners",
        "Count of owners e-mailed (a settings link, or the notice that triggers stopped).",
    ),
    (
        "contacts",
        "Count of technical contacts sent the integration report.",
    ),
    (
        "resealed",
        "Count of a practice's sealed secrets sealed again under their context.",
    ),
    ("after_seconds", "Retry or deferral delay."),
    (
        "alert",
        "Alarm key (`trigger_dead_lettered`, `audit_append_failed`, ...).",
    ),
    ("auto_approved", "Count."),
    ("candidates", "Count."),
    ("changed", "Count of records changed."),
    ("created", "Count."),
    ("detail_type", "EventBridge detail-type."),
    ("due_read", "Count of due-index items read."),
    (
        "error",
        "An error's display: reason codes and kinds (`storage: conflict`), never a payload.",
    ),
    ("event", "Audit event name."),
    ("events", "Count of events in a webhook."),
    (
        "fell_back",
        "Count of auto-approvals that fell back to the owner.",
    ),
    ("handed_over", "Whether candidates were handed over."),
    ("mailed", "Whether a digest was mailed."),
    ("message_id", "SQS message id."),
    ("method", "HTTP method of an approval page request."),
    (
        "notice",
        "The owners' notice that could not be queued (`trigger_endpoint.retired`, `triggers.failing`).",
    ),
    ("offers", "Count."),
    ("outcome", "Outcome code (`delivered`, `retry`, ...)."),
    ("pending", "Count."),
    ("pool_read", "Count of pool items read."),
    ("practice_id", "Practice id."),
    ("published", "Count of events published."),
    (
        "reason",
        "Reason code (`unrecognised_scan_message`, a refusal code, ...).",
    ),
    ("scan_date", "Local date scanned."),
    ("skipped", "Reason codes of skipped slot candidates."),
    ("status", "HTTP status."),
    ("suppressed", "Count."),
    (
        "webhook_id",
        "The `webhook-id` header, only when it is a well-formed id.",
    ),
    ("withdrawn", "Count."),
];

/// The Square relay's sources: it runs in the practice's own account, and its data inventory is
/// its own (docs/square-relay-data-inventory.md, [`render_relay`]).
pub const RELAY_SOURCES: [&str; 2] = ["functions/square-relay/", "functions/square-relay-jobs/"];

/// The Square relay's data inventory: its items (`square_relay::store::ITEMS`) and its log
/// fields, each field found in its code described in `square_relay::store::LOG_FIELDS`.
pub fn render_relay(root: &Path) -> Result<String, String> {
    let fields = log_fields(
        root,
        &[
            "functions/square-relay/src",
            "functions/square-relay-jobs/src",
        ],
    );
    let described = square_relay::store::LOG_FIELDS;
    let mut errors = Vec::new();
    for (name, files) in &fields {
        if !described.iter().any(|(f, _)| f == name) {
            errors.push(format!(
                "relay log field {name} (in {files:?}) has no description: add it to LOG_FIELDS in functions/square-relay/src/store.rs"
            ));
        }
    }
    for (f, _) in described {
        if !fields.contains_key(*f) {
            errors.push(format!(
                "the relay's LOG_FIELDS describes {f}, which no log line has"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let mut md = square_relay::store::inventory_markdown();
    md.push_str(
        "\n## Log fields\n\nEvery field of the relay's log lines (JSON in Lambda), found in its code. \
         No log line carries a request body, a ref, a Square id or a secret.\n\n| field | what |\n|---|---|\n",
    );
    for (f, what) in described {
        md.push_str(&format!("| `{f}` | {what} |\n"));
    }
    Ok(md)
}

/// The `tracing` macros whose fields are read: events' fields, and spans' (a span's fields
/// are on every line logged inside it).
const LOG_MACROS: [&str; 10] = [
    "error",
    "warn",
    "info",
    "debug",
    "trace",
    "error_span",
    "warn_span",
    "info_span",
    "debug_span",
    "trace_span",
];

/// Field names in the `tracing` macros of the source trees `dirs` (relative to `root`), with
/// the files (relative to `root`) they appear in. Each file is parsed with `syn`; items under
/// `#[cfg(test)]` log nothing in production and are left out. A macro's arguments are read
/// as `tracing` reads them: fields (`name = value`, `name`, `%name`, `?name`, dotted names)
/// up to the message literal; what follows the message is its format arguments.
pub fn log_fields(root: &Path, dirs: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    log_fields_except(root, dirs, &[])
}

/// [`log_fields`] without the files under any of `skip` (relative paths' prefixes).
pub fn log_fields_except(
    root: &Path,
    dirs: &[&str],
    skip: &[&str],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let mut files = Vec::new();
    for d in dirs {
        collect_rs(&root.join(d), &mut files);
    }
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(&f)
            .to_string_lossy()
            .replace('\\', "/");
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let Ok(file) = syn::parse_file(&text) else {
            // Not Rust the compiler accepts: cargo build fails on it first.
            continue;
        };
        let mut scan = LogScan {
            rel: &rel,
            out: &mut out,
        };
        syn::visit::Visit::visit_file(&mut scan, &file);
    }
    out
}

struct LogScan<'a> {
    rel: &'a str,
    out: &'a mut BTreeMap<String, BTreeSet<String>>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

impl<'ast> syn::visit::Visit<'ast> for LogScan<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let name = m.path.segments.last().map(|s| s.ident.to_string());
        if let Some(n) = name.as_deref().filter(|n| LOG_MACROS.contains(n)) {
            self.fields(m.tokens.clone(), n.ends_with("_span"));
        }
        // Log calls inside another macro's tokens (`tokio::select!`, a log call's own
        // arguments never hold one).
        self.nested(m.tokens.clone());
    }
}

impl LogScan<'_> {
    /// Tracing macros inside an unparsed token stream: `name ! ( … )`.
    fn nested(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree;
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, t) in trees.iter().enumerate() {
            match t {
                TokenTree::Ident(id)
                    if LOG_MACROS.contains(&id.to_string().as_str())
                        && matches!(trees.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!') =>
                {
                    if let Some(TokenTree::Group(g)) = trees.get(i + 2) {
                        self.fields(g.stream(), id.to_string().ends_with("_span"));
                    }
                }
                TokenTree::Group(g) => self.nested(g.stream()),
                _ => {}
            }
        }
    }

    /// The field names of one macro's arguments. An event's fields end at its message; a
    /// span's name (a literal) comes before its fields.
    fn fields(&mut self, tokens: proc_macro2::TokenStream, span: bool) {
        use proc_macro2::TokenTree;
        let mut segments: Vec<Vec<TokenTree>> = vec![Vec::new()];
        for t in tokens {
            match &t {
                TokenTree::Punct(p) if p.as_char() == ',' => segments.push(Vec::new()),
                _ => segments
                    .last_mut()
                    .into_iter()
                    .for_each(|s| s.push(t.clone())),
            }
        }
        for seg in segments {
            let mut it = seg.iter().peekable();
            let Some(first) = it.next() else { continue };
            let mut name = String::new();
            match first {
                TokenTree::Literal(_) if span => continue,
                // The message: the fields end here.
                TokenTree::Literal(_) => break,
                TokenTree::Punct(p) if matches!(p.as_char(), '%' | '?') => {
                    if let Some(TokenTree::Ident(id)) = it.next() {
                        name.push_str(&id.to_string());
                    }
                }
                TokenTree::Ident(id) => name.push_str(&id.to_string()),
                _ => continue,
            }
            // A dotted name (`a.b`).
            while let Some(TokenTree::Punct(p)) = it.peek()
                && p.as_char() == '.'
            {
                it.next();
                match it.next() {
                    Some(TokenTree::Ident(id)) => {
                        name.push('.');
                        name.push_str(&id.to_string());
                    }
                    _ => break,
                }
            }
            let is_field = match it.next() {
                None => true,
                Some(TokenTree::Punct(p)) => p.as_char() == '=',
                Some(_) => false,
            };
            if is_field && !name.is_empty() && name != "target" && name != "parent" {
                self.out
                    .entry(name)
                    .or_default()
                    .insert(self.rel.to_owned());
            }
        }
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs")
            && p.file_name().is_some_and(|n| n != "testing.rs")
        {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), path.split('.').collect());
    // A segment `*` matches any segment; `prefix*` any segment that starts with `prefix`.
    p.len() == q.len()
        && p.iter().zip(&q).all(|(a, b)| {
            a == b
                || *a == "*"
                || a.strip_suffix('*')
                    .is_some_and(|pre| !pre.is_empty() && b.starts_with(pre))
        })
}

/// The whole document. `root` is the workspace root (for the log scan).
pub async fn render(root: &Path) -> Result<String, String> {
    let mut errors = Vec::new();
    let stored = stored_attributes().await?;
    let mut used = vec![false; ATTRIBUTES.len()];
    let mut md = String::new();
    md.push_str(
        "# Data inventory\n\n\
         <!-- Generated by `make data-inventory` (cargo run -q -p pil-bench --bin data-inventory); \
         do not edit. `cargo test -p pil-local --test data_inventory` fails when it is not current. -->\n\n\
         Everything the layer stores, sends and logs, generated from the code: each stored item type \
         is written through the DynamoDB store's own methods with every field set, and the \
         attributes of the captured requests are listed here (each record's domain value is one `doc` map; its members are listed as `doc.…`) with their descriptions \
         (`infra/pil-local/src/inventory.rs`). A new field without a description fails the generator \
         and the test.\n\n\
         **No PHI is stored.** The PMS sends opaque refs, treatment categories and dates through a \
         closed schema and a PHI guard (docs/design.md §2). The *patient-linked* column says what \
         an attribute could tell about a patient to someone who can also resolve the PMS's refs: \
         **opaque ref** (the PMS's ref, or a key containing it; re-keyed by `patient.ref_rotated`, \
         deleted by `patient.erased`), *via ref* (a category, status or count about the item's \
         ref), *date via ref* (a patient-linked day; a start minute only while a cancelled booking's \
         slot lies ahead), or *no*. Owner e-mail addresses (the practice's staff, not patients) \
         and KMS-sealed practice secrets are marked as such.\n\n\
         All items live in one DynamoDB table (`StateTable`, KMS-encrypted with the stack's key, \
         point-in-time recovery on); one partition per practice (`pk = P#{practice}`).\n\n",
    );
    md.push_str("## Stored items\n\n| item type | key | purpose | retention | written by | read by |\n|---|---|---|---|---|---|\n");
    for t in ITEM_TYPES {
        let key = match t.key.strip_prefix("pk=") {
            Some(p) => format!("`pk = {p}`"),
            None if t.key.ends_with('#') => format!("`sk = {}…`", t.key),
            None => format!("`sk = {}`", t.key),
        };
        md.push_str(&format!(
            "| {} | {key} | {} | {} | {} | {} |\n",
            t.name, t.purpose, t.retention, t.written_by, t.read_by
        ));
    }
    md.push_str("\n## Stored attributes\n\nTypes are DynamoDB's (`S` string, `N` number, `M` map, `L` list, `BOOL`). `*` is any map key (a treatment or an action kind); `[]` a list element.\n");
    for t in ITEM_TYPES {
        let Some(paths) = stored.get(t.name) else {
            continue;
        };
        md.push_str(&format!(
            "\n### {} (`{}`)\n\n| attribute | type | patient-linked | description |\n|---|---|---|---|\n",
            t.name, t.key
        ));
        let mut rows: BTreeMap<String, (BTreeSet<&str>, Linked, &str)> = BTreeMap::new();
        for (path, types) in paths {
            if types.contains("NULL") {
                errors.push(format!(
                    "{}: {path} is null in the sample: set it in the sample so its shape is listed",
                    t.name
                ));
            }
            // The most specific description: the item's own, else the shared one.
            let found = ATTRIBUTES
                .iter()
                .enumerate()
                .filter(|(_, (it, p, _, _))| *it == t.name && matches(p, path))
                .chain(
                    ATTRIBUTES
                        .iter()
                        .enumerate()
                        .filter(|(_, (it, p, _, _))| *it == "*" && matches(p, path)),
                )
                .next();
            match found {
                Some((i, (_, pattern, linked, desc))) => {
                    used[i] = true;
                    let row = rows
                        .entry((*pattern).to_owned())
                        .or_insert((BTreeSet::new(), *linked, desc));
                    row.0.extend(types.iter().copied());
                }
                None => errors.push(format!(
                    "{}: attribute {path} has no description: add it to ATTRIBUTES in infra/pil-local/src/inventory.rs",
                    t.name
                )),
            }
        }
        for (pattern, (types, linked, desc)) in rows {
            let types: Vec<&str> = types.into_iter().collect();
            md.push_str(&format!(
                "| `{pattern}` | {} | {} | {desc} |\n",
                types.join(", "),
                linked.label()
            ));
        }
    }
    for (i, (it, p, _, _)) in ATTRIBUTES.iter().enumerate() {
        if !used[i] {
            errors.push(format!(
                "ATTRIBUTES describes {it} {p}, which no item has (remove or fix it)"
            ));
        }
    }

    md.push_str("\n## Queues, events and triggers\n\nMessage bodies, from samples of their types. SQS queues and the alarm topic are KMS-encrypted with the stack's key; every queue has a DLQ (14 days' retention).\n");
    let paths = channel_paths()?;
    for (c, seen) in CHANNELS.iter().zip(paths) {
        md.push_str(&format!(
            "\n### {}\n\n{}\n\n| field | patient-linked | description |\n|---|---|---|\n",
            c.name, c.carries
        ));
        for p in &seen {
            if !c.fields.iter().any(|(f, _, _)| f == p) {
                errors.push(format!("{}: field {p} has no description", c.name));
            }
        }
        for (f, linked, desc) in c.fields {
            if !seen.contains(*f) {
                errors.push(format!("{}: described field {f} is not sent", c.name));
            }
            md.push_str(&format!("| `{f}` | {} | {desc} |\n", linked.label()));
        }
    }
    md.push_str(&format!(
        "\n### E-mail (SESv2, approval-check)\n\n\
         Four kinds to the practice's `owner_emails`, one to its `technical_contacts`. The digest: subject with the count and \
         value at stake; HTML and text parts listing pending actions by kind, reason in words, \
         treatment, estimated value and the patient only as a short code derived from the ref \
         (not the ref); signed approve/reject links and a settings request link (tokens bound to \
         practice, actions and an approver hash). The settings link, on request: one e-mail per \
         owner, to that owner only, with a settings link bound to them ({} minutes, once). When the \
         PMS retires its trigger endpoint (410): one notice to the owners that triggers stopped and \
         what to do; when triggers fail for good otherwise, at most one notice a day. On days the practice's PMS had deliveries refused: the integration report to \
         the technical contacts, refusals counted by code, rule and field path (never a value). No \
         names, contacts, notes or dates of birth exist to be mailed.\n",
        shared::token::SETTINGS_LINK_MINUTES
    ));

    md.push_str("\n## Logs\n\nStructured fields of the functions' log lines (JSON in Lambda; log groups KMS-encrypted, 365 days). Request and message bodies are never logged; a refused webhook is logged by reason code and field path only. Read from the `tracing` macros in `functions/`, `shared/src` and `infra/pil-aws/src`; a span's fields (an SQS message's: `message_id`, and `practice_id` and `action_id` once known) are under `span` on every line logged inside it.\n\n| field | carries | logged in |\n|---|---|---|\n");
    // The Square relay runs in the practice's account: its logs are in its own inventory.
    let fields = log_fields_except(
        root,
        &["functions", "shared/src", "infra/pil-aws/src"],
        &RELAY_SOURCES,
    );
    for (name, files) in &fields {
        match LOG_FIELDS.iter().find(|(f, _)| f == name) {
            Some((_, desc)) => {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                md.push_str(&format!("| `{name}` | {desc} | {} |\n", files.join(", ")));
            }
            None => errors.push(format!(
                "log field {name} (in {files:?}) has no description: add it to LOG_FIELDS"
            )),
        }
    }
    for (f, _) in LOG_FIELDS {
        if !fields.contains_key(*f) {
            errors.push(format!("LOG_FIELDS describes {f}, which no log line has"));
        }
    }
    if errors.is_empty() {
        Ok(md)
    } else {
        Err(errors.join("\n"))
    }
}
