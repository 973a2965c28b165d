//! What the relay keeps (docs/square-relay-data-inventory.md, generated from [`ITEMS`]): the
//! patient ref ↔ Square customer id map (to carry out a trigger), the customer groups it
//! made, the group memberships it added with their expiry, the triggers it carried out (for
//! one effect per `webhook-id`), and its cursors. No booking, no name, no time of a visit.
//!
//! [`RelayStore`] is the port; [`crate::dynamo::DynamoRelayStore`] keeps it in the relay's
//! DynamoDB table, [`MemoryStore`] in memory for unit tests of the logic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB throttled, timed out or failed: try again.
    #[error("store unavailable ({0})")]
    Unavailable(String),
    /// An item that does not read as its type.
    #[error("store item unreadable ({0})")]
    Corrupt(&'static str),
}

/// A customer in a group the relay added them to, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub group_id: String,
    pub customer_id: String,
    pub expires_at: Timestamp,
}

/// A backfill's progress: `[since, until)` walked in windows of Square's widest range, each
/// paged by Square's cursor. Saved after each page's events were taken by the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub since: Timestamp,
    pub until: Timestamp,
    /// The start of the window being read.
    pub window_start: Timestamp,
    /// Square's cursor within that window (`None`: its first page).
    pub cursor: Option<String>,
    pub done: bool,
    pub pages: u64,
    pub bookings: u64,
    pub events: u64,
    pub skipped: u64,
}

/// Every item type and attribute, with its purpose and how long it is kept.
pub struct ItemDoc {
    pub key: &'static str,
    pub what: &'static str,
    pub kept: &'static str,
    pub attributes: &'static [(&'static str, &'static str)],
}

pub const ITEMS: &[ItemDoc] = &[
    ItemDoc {
        key: "REF#<patient ref>",
        what: "which Square customer a patient ref stands for, so a trigger (which names the ref) reaches the customer",
        kept: "as long as the relay runs; deleted with the customer's erasure (docs/square-relay.md)",
        attributes: &[
            ("pk", "the item's key"),
            ("sk", "always `-`"),
            ("customer_id", "the Square customer id"),
        ],
    },
    ItemDoc {
        key: "GROUP#<group name>",
        what: "the Square customer group made for an action kind and treatment (\"Rebook due: neurotoxin\")",
        kept: "as long as the relay runs",
        attributes: &[
            (
                "pk",
                "the item's key (the group's name: an action kind and a treatment category)",
            ),
            ("sk", "always `-`"),
            ("group_id", "Square's id of the group"),
        ],
    },
    ItemDoc {
        key: "MEMBER / <group id>#<customer id>",
        what: "a customer the relay added to a group, removed from it when the trigger expires",
        kept: "until the expiry sweep removes the customer from the group",
        attributes: &[
            ("pk", "always `MEMBER`"),
            ("sk", "the group id and the customer id"),
            ("group_id", "Square's id of the group"),
            ("customer_id", "the Square customer id"),
            (
                "expires_at",
                "when the membership ends (the latest trigger's `expires_at`)",
            ),
        ],
    },
    ItemDoc {
        key: "TRIGGER#<trigger id>",
        what: "a trigger carried out, so a redelivery has no second effect",
        kept: "30 days after the trigger's expiry (DynamoDB TTL)",
        attributes: &[
            ("pk", "the item's key (the trigger's `webhook-id`)"),
            ("sk", "always `-`"),
            ("expires_at", "the trigger's `expires_at`"),
            ("ttl", "when DynamoDB deletes the item (Unix seconds)"),
        ],
    },
    ItemDoc {
        key: "CURSOR#backfill",
        what: "the backfill's progress, so it resumes where it stopped",
        kept: "as long as the relay runs",
        attributes: &[
            ("pk", "the item's key"),
            ("sk", "always `-`"),
            ("since", "the earliest start read"),
            ("until", "the latest start read"),
            ("window_start", "the window being read"),
            ("cursor", "Square's page cursor within the window"),
            ("done", "whether the backfill finished"),
            ("pages", "pages read (a count)"),
            ("bookings", "bookings read (a count)"),
            ("events", "events sent (a count)"),
            ("skipped", "bookings skipped (a count)"),
        ],
    },
    ItemDoc {
        key: "CURSOR#completions",
        what: "up to when visits have been checked for completion",
        kept: "as long as the relay runs",
        attributes: &[
            ("pk", "the item's key"),
            ("sk", "always `-`"),
            ("watermark", "the end of the last window checked"),
        ],
    },
];

/// The stored part of the data inventory as Markdown (`make relay-inventory` adds the log
/// fields and writes docs/square-relay-data-inventory.md; a test checks the file is current).
pub fn inventory_markdown() -> String {
    let mut out = String::from(
        "# Square relay: data inventory\n\nGenerated from `functions/square-relay/src/store.rs` \
         (`make relay-inventory`); a test fails when it is stale. Everything the relay stores, \
         in its own DynamoDB table in the practice's AWS account. Its secrets are not stored: \
         they are KMS ciphertexts in the function's configuration (docs/square-relay.md).\n",
    );
    for item in ITEMS {
        out.push_str(&format!(
            "\n## `{}`\n\n{}. Kept: {}.\n\n| attribute | purpose |\n|---|---|\n",
            item.key, item.what, item.kept
        ));
        for (a, why) in item.attributes {
            out.push_str(&format!("| `{a}` | {why} |\n"));
        }
    }
    out
}

#[async_trait]
pub trait RelayStore: Send + Sync {
    /// Remembers which customer each patient ref stands for.
    async fn remember_refs(&self, pairs: &[(String, String)]) -> Result<(), StoreError>;
    async fn customer_of(&self, patient_ref: &str) -> Result<Option<String>, StoreError>;
    /// Forgets a patient ref (the customer was deleted in Square).
    async fn forget_ref(&self, patient_ref: &str) -> Result<(), StoreError>;
    async fn group_id(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn put_group(&self, name: &str, group_id: &str) -> Result<(), StoreError>;
    async fn trigger_done(&self, trigger_id: &str) -> Result<bool, StoreError>;
    async fn put_trigger_done(
        &self,
        trigger_id: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Adds or extends a membership: its expiry becomes the later of the two.
    async fn extend_membership(&self, m: &Membership) -> Result<(), StoreError>;
    /// Memberships whose expiry is at or before `now`.
    async fn expired_memberships(&self, now: Timestamp) -> Result<Vec<Membership>, StoreError>;
    /// Deletes the membership if its expiry is still `m.expires_at`; `false` when a newer
    /// trigger extended it meanwhile.
    async fn end_membership(&self, m: &Membership) -> Result<bool, StoreError>;
    async fn backfill(&self) -> Result<Option<Backfill>, StoreError>;
    async fn put_backfill(&self, b: &Backfill) -> Result<(), StoreError>;
    async fn watermark(&self) -> Result<Option<Timestamp>, StoreError>;
    async fn put_watermark(&self, t: Timestamp) -> Result<(), StoreError>;
}

/// In memory: unit tests of the logic (the DynamoDB adapter has its own tests on moto).
#[derive(Debug, Default)]
pub struct MemoryStore {
    refs: Mutex<HashMap<String, String>>,
    groups: Mutex<HashMap<String, String>>,
    triggers: Mutex<HashMap<String, Timestamp>>,
    members: Mutex<BTreeMap<(String, String), Timestamp>>,
    backfill: Mutex<Option<Backfill>>,
    watermark: Mutex<Option<Timestamp>>,
}

#[async_trait]
impl RelayStore for MemoryStore {
    async fn remember_refs(&self, pairs: &[(String, String)]) -> Result<(), StoreError> {
        let mut refs = lock(&self.refs);
        for (r, c) in pairs {
            refs.insert(r.clone(), c.clone());
        }
        Ok(())
    }
    async fn customer_of(&self, patient_ref: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.refs).get(patient_ref).cloned())
    }
    async fn forget_ref(&self, patient_ref: &str) -> Result<(), StoreError> {
        lock(&self.refs).remove(patient_ref);
        Ok(())
    }
    async fn group_id(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.groups).get(name).cloned())
    }
    async fn put_group(&self, name: &str, group_id: &str) -> Result<(), StoreError> {
        lock(&self.groups).insert(name.to_owned(), group_id.to_owned());
        Ok(())
    }
    async fn trigger_done(&self, trigger_id: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.triggers).contains_key(trigger_id))
    }
    async fn put_trigger_done(
        &self,
        trigger_id: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        lock(&self.triggers).insert(trigger_id.to_owned(), expires_at);
        Ok(())
    }
    async fn extend_membership(&self, m: &Membership) -> Result<(), StoreError> {
        let mut members = lock(&self.members);
        let e = members
            .entry((m.group_id.clone(), m.customer_id.clone()))
            .or_insert(m.expires_at);
        *e = (*e).max(m.expires_at);
        Ok(())
    }
    async fn expired_memberships(&self, now: Timestamp) -> Result<Vec<Membership>, StoreError> {
        Ok(lock(&self.members)
            .iter()
            .filter(|(_, e)| **e <= now)
            .map(|((g, c), e)| Membership {
                group_id: g.clone(),
                customer_id: c.clone(),
                expires_at: *e,
            })
            .collect())
    }
    async fn end_membership(&self, m: &Membership) -> Result<bool, StoreError> {
        let mut members = lock(&self.members);
        let k = (m.group_id.clone(), m.customer_id.clone());
        if members.get(&k) == Some(&m.expires_at) {
            members.remove(&k);
            return Ok(true);
        }
        Ok(false)
    }
    async fn backfill(&self) -> Result<Option<Backfill>, StoreError> {
        Ok(lock(&self.backfill).clone())
    }
    async fn put_backfill(&self, b: &Backfill) -> Result<(), StoreError> {
        *lock(&self.backfill) = Some(b.clone());
        Ok(())
    }
    async fn watermark(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(*lock(&self.watermark))
    }
    async fn put_watermark(&self, t: Timestamp) -> Result<(), StoreError> {
        *lock(&self.watermark) = Some(t);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every field of the relay's log lines and what it holds (the data inventory lists them; a
/// test fails when the code logs a field missing here, or this names one no line has).
pub const LOG_FIELDS: &[(&str, &str)] = &[
    (
        "alert",
        "What needs a person (`layer_refused_events`, `square_unauthorized`, `square_rejected`, a jobs run's stop code): the alarm counts these lines.",
    ),
    (
        "attempt",
        "Count: the try of a Square call about to be retried.",
    ),
    ("attempts", "Count: tries of a Square call that gave up."),
    ("bookings", "Count: bookings a backfill read."),
    (
        "category",
        "Square's error category (e.g. `INVALID_REQUEST_ERROR`); never its `detail` text.",
    ),
    (
        "code",
        "An error code: Square's (e.g. `NOT_FOUND`) or the layer's (`schema_violation`).",
    ),
    ("events", "Count: events sent to the layer."),
    (
        "field",
        "A field path (the layer's refusal, or what is malformed in a request); never a value.",
    ),
    (
        "operation",
        "The DynamoDB operation that failed (`remember_refs`, `group`, ...).",
    ),
    (
        "outcome",
        "What a trigger led to: `added`, `duplicate`, `expired`.",
    ),
    ("pages", "Count: Square pages a backfill read."),
    (
        "reason",
        "A reason code (a skip, a refusal rule, a retry's cause) or an error's text, which names a cause, never a value.",
    ),
    (
        "report",
        "A jobs run's counts (pages, bookings, events, skipped, completions, memberships).",
    ),
    ("route", "`square_webhook` or `trigger`."),
    (
        "services",
        "Square service variation ids (catalog ids, no customer data) a skipped booking had and the service map lacks.",
    ),
    ("rule", "The rule a refusal names."),
    ("skipped", "Count: bookings a backfill skipped."),
    ("square_status", "The HTTP status Square answered."),
    ("status", "The HTTP status the layer answered."),
    ("wait_ms", "Milliseconds before a Square call is retried."),
];
