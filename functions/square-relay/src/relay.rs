//! The relay's two inbound paths: Square's webhooks (bookings into events) and the layer's
//! triggers (into Square customer groups). HTTP answers are chosen in [`crate::http`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::signature::{self, SignatureError, SignedHeaders, WebhookSecret};
use shared::treatment::Treatment;

use crate::layer::{EventSink, LayerError, send_all};
use crate::mapping::{Refs, Rules, Skip, map_booking};
use crate::square::client::{SquareApi, SquareError};
use crate::square::model::Notification;
use crate::square::signature::SignatureKey;
use crate::store::{Membership, RelayStore, StoreError};

/// Everything a relay handler needs, built once per cold start.
pub struct RelayParts {
    pub practice_id: String,
    pub rules: Rules,
    pub refs: Refs,
    /// `None` in the jobs function, which takes no webhooks.
    pub signature_key: Option<SignatureKey>,
    /// The notification URL exactly as the practice entered it in Square (it is signed).
    pub notification_url: String,
    /// The trigger secret, and during a rotation the one it replaces.
    pub trigger_secrets: Vec<WebhookSecret>,
    pub location_id: Option<String>,
    pub square: Arc<dyn SquareApi>,
    pub layer: Arc<dyn EventSink>,
    pub store: Arc<dyn RelayStore>,
    /// Embedded-metric-format lines (CloudWatch), per function.
    pub metrics: pil_aws::metrics::Metrics,
}

/// The relay: its parts (read through `Deref`), and the patient refs this execution
/// environment has already remembered (each saves a write).
pub struct Relay {
    parts: RelayParts,
    remembered: Mutex<HashSet<String>>,
}

impl std::ops::Deref for Relay {
    type Target = RelayParts;
    fn deref(&self) -> &RelayParts {
        &self.parts
    }
}

impl Relay {
    pub fn new(parts: RelayParts) -> Self {
        Self {
            parts,
            remembered: Mutex::new(HashSet::new()),
        }
    }

    /// Remembers the ref ↔ customer pairs not yet remembered by this environment.
    pub async fn remember(&self, pairs: Vec<(String, String)>) -> Result<(), StoreError> {
        let fresh: Vec<(String, String)> = {
            let known = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            pairs
                .into_iter()
                .filter(|(r, _)| !known.contains(r))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        self.store.remember_refs(&fresh).await?;
        let mut known = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(fresh.into_iter().map(|(r, _)| r));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Square webhooks

/// What a Square notification led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The booking's events were taken by the layer.
    Sent { events: usize },
    /// The booking sent nothing (counted by reason); for `unmapped_service`, its service
    /// variation ids.
    Skipped { why: Skip, services: Vec<String> },
    /// A customer deleted in Square: `patient.erased` sent, the ref forgotten.
    Erased,
    /// A notification type the relay does not act on.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the Square signature does not match")]
    Signature,
    #[error("the notification is not readable ({0})")]
    Malformed(&'static str),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Relay {
    /// A Square notification: verified against the signature key and the notification URL,
    /// then mapped and sent. Square retries anything not answered 2xx, and every event is a
    /// merge in the layer, so a failure here is simply answered for a retry.
    pub async fn square_webhook(
        &self,
        signature_header: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<WebhookOutcome, WebhookError> {
        let sig = signature_header.ok_or(WebhookError::Signature)?;
        let key = self.signature_key.as_ref().ok_or(WebhookError::Signature)?;
        if !key.verify(&self.notification_url, body, sig) {
            return Err(WebhookError::Signature);
        }
        let n: Notification =
            serde_json::from_slice(body).map_err(|_| WebhookError::Malformed("notification"))?;
        match n.kind.as_str() {
            "booking.created" | "booking.updated" => {
                let booking = n
                    .data
                    .and_then(|d| d.object)
                    .and_then(|o| o.booking)
                    .ok_or(WebhookError::Malformed("data.object.booking"))?;
                if let Some(loc) = &self.location_id
                    && booking.location_id.as_deref() != Some(loc.as_str())
                {
                    return Ok(WebhookOutcome::Ignored);
                }
                let mapped = map_booking(&booking, now, &self.rules, &self.refs);
                if let Some(why) = mapped.skipped {
                    return Ok(WebhookOutcome::Skipped {
                        why,
                        services: mapped.unmapped,
                    });
                }
                // The ref ↔ customer pair first: a trigger may follow the events at once.
                self.remember(
                    mapped
                        .patient
                        .iter()
                        .map(|(r, c)| (r.as_str().to_owned(), c.clone()))
                        .collect(),
                )
                .await?;
                let events = send_all(self.layer.as_ref(), &mapped.events).await?;
                Ok(WebhookOutcome::Sent { events })
            }
            "customer.deleted" => {
                let customer_id = n
                    .data
                    .and_then(|d| d.id)
                    .filter(|id| !id.is_empty())
                    .ok_or(WebhookError::Malformed("data.id"))?;
                let patient = self.refs.patient(&customer_id);
                let at = n.created_at.unwrap_or(now).min(now);
                let event = json!({
                    "type": "patient.erased",
                    "occurred_at": at.round(jiff::Unit::Second).unwrap_or(at).to_string(),
                    "data": {"patient_ref": patient.as_str()}
                });
                send_all(self.layer.as_ref(), &[event]).await?;
                self.store.forget_ref(patient.as_str()).await?;
                self.remembered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(patient.as_str());
                Ok(WebhookOutcome::Erased)
            }
            _ => Ok(WebhookOutcome::Ignored),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The layer's triggers

/// The trigger fields the relay uses (docs/contracts.md, "Triggers"); the others are read
/// by nobody. Unknown fields are allowed: the layer may add some.
#[derive(Debug, Clone, Deserialize)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: String,
    pub trigger_id: String,
    pub practice_id: String,
    pub patient_ref: String,
    pub treatment: String,
    pub expires_at: Timestamp,
}

/// The group a trigger's customer joins: one per action kind and treatment, named for the
/// practice's Square Marketing automations ("Rebook due: neurotoxin").
pub fn group_name(kind: &str, treatment: Treatment) -> Option<String> {
    let label = match kind {
        "action.rebook_nudge" => "Rebook due",
        "action.slot_offer" => "Open slot",
        "action.follow_up" => "Follow-up due",
        "action.no_show_recovery" => "Missed visit",
        "action.win_back" => "Win back",
        "action.series_continue" => "Series due",
        _ => return None,
    };
    Some(format!("{label}: {}", treatment.as_str()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// The customer is in the group (added now, or already).
    Added { group: String },
    /// The same `webhook-id` was carried out before.
    Duplicate,
    /// Arrived after its `expires_at`: dropped, as the contract asks.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("trigger signature: {0}")]
    Signature(SignatureError),
    /// The body is not a trigger: `field` names what is wrong, never its value.
    #[error("not a trigger ({field}: {rule})")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    /// The trigger names a patient ref this relay never sent.
    #[error("unknown patient ref")]
    UnknownPatient,
    #[error(transparent)]
    Square(SquareError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Relay {
    /// A trigger from the layer: verified (Standard Webhooks, either of the trigger secrets),
    /// then the customer joins the group of its kind and treatment until `expires_at`.
    /// Carrying it out twice has one effect: every step is idempotent, and a carried-out
    /// `webhook-id` is answered as a duplicate without calling Square.
    pub async fn trigger(
        &self,
        headers: SignedHeaders<'_>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<TriggerOutcome, TriggerError> {
        let verified = signature::verify(headers, body, &self.trigger_secrets, now.as_second())
            .map_err(TriggerError::Signature)?;
        let t: Trigger = serde_json::from_slice(body).map_err(|_| TriggerError::Invalid {
            field: "body",
            rule: "trigger_v1",
        })?;
        if t.trigger_id != verified.webhook_id {
            return Err(TriggerError::Invalid {
                field: "trigger_id",
                rule: "equals_webhook_id",
            });
        }
        if t.practice_id != self.practice_id {
            return Err(TriggerError::Invalid {
                field: "practice_id",
                rule: "this_relays_practice",
            });
        }
        let treatment = Treatment::parse(&t.treatment).ok_or(TriggerError::Invalid {
            field: "treatment",
            rule: "closed_vocabulary",
        })?;
        let group = group_name(&t.kind, treatment).ok_or(TriggerError::Invalid {
            field: "type",
            rule: "closed_vocabulary",
        })?;
        if self.store.trigger_done(&t.trigger_id).await? {
            return Ok(TriggerOutcome::Duplicate);
        }
        if t.expires_at <= now {
            return Ok(TriggerOutcome::Expired);
        }
        let customer = self
            .store
            .customer_of(&t.patient_ref)
            .await?
            .ok_or(TriggerError::UnknownPatient)?;
        let group_id = self.ensure_group(&group).await?;
        self.square
            .add_to_group(&customer, &group_id)
            .await
            .map_err(TriggerError::Square)?;
        self.store
            .extend_membership(&Membership {
                group_id,
                customer_id: customer,
                expires_at: t.expires_at,
            })
            .await?;
        self.store
            .put_trigger_done(&t.trigger_id, t.expires_at)
            .await?;
        Ok(TriggerOutcome::Added { group })
    }

    /// The group's Square id: remembered, or found by name in Square, or made (with an
    /// idempotency key derived from the name, so two relays racing make one group).
    async fn ensure_group(&self, name: &str) -> Result<String, TriggerError> {
        if let Some(id) = self.store.group_id(name).await? {
            return Ok(id);
        }
        let mut cursor: Option<String> = None;
        let found = loop {
            let page = self
                .square
                .list_groups(cursor.as_deref())
                .await
                .map_err(TriggerError::Square)?;
            if let Some(g) = page.groups.into_iter().find(|g| g.name == name) {
                break Some(g.id);
            }
            match page.cursor {
                Some(c) if !c.is_empty() => cursor = Some(c),
                _ => break None,
            }
        };
        let id = match found {
            Some(id) => id,
            None => {
                let digest = Sha256::digest(format!("{}:{name}", self.practice_id).as_bytes());
                let key: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                self.square
                    .create_group(name, &format!("pil-relay-{key}"))
                    .await
                    .map_err(TriggerError::Square)?
                    .id
            }
        };
        self.store.put_group(name, &id).await?;
        Ok(id)
    }
}
