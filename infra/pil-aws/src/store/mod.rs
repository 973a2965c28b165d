//! DynamoDB adapter: one table, one partition per practice, four sparse indexes.
//!
//! | item | pk | sk | indexes |
//! |---|---|---|---|
//! | practice config | `P#{practice}` | `CONFIG` | |
//! | practice list entry | `PRACTICES` | `{practice}` | |
//! | appointment | `P#{practice}` | `APPT#{ref}` | ByPatient (once the patient is known); ByStart (while it keeps its start minute) |
//! | patient × treatment | `P#{practice}` | `PT#{patient}#{treatment}` | DueIndex (while something is due) |
//! | consent | `P#{practice}` | `CONSENT#{patient}` | |
//! | slot | `P#{practice}` | `SLOT#{ref}` | ByPatient (under its provider and start) |
//! | action | `P#{practice}` | `ACTION#{id}` | ByPatient; DueIndex (slot pool); ByDelivery (delivered, or in the outbox) |
//! | token nonce | `P#{practice}` | `TOKEN#{nonce}` | (TTL) |
//! | tombstone | `P#{practice}` | `TOMB#{keyed hash of the ref}` | ByPatient (a rotation's, under the new ref) (TTL) |
//! | auto-approval counter | `P#{practice}` | `AUTO#{day}#{kind}` | (TTL) |
//! | nightly budget counter | `P#{practice}` | `NIGHT#{day}` | (TTL) |
//! | refusal counts | `P#{practice}` | `REFUSALS#{UTC day}` | (TTL) |
//!
//! Each record's domain value sits in one `doc` map (serde_dynamo); `ver`/`rev` make every
//! write conditional on what was read.
//!
//! ByPatient (gsi1), DueIndex (gsi2) and ByStart (gsi4) project keys only: a write that changes a record
//! but not its index keys (a reschedule, a cancellation, an action's approval or delivery)
//! costs no index write, and a reader fetches the records the index names
//! ([`DynamoStore::fetch_indexed`], BatchGetItem). Half a read unit per record against one
//! index write per change.
//!
//! ByDelivery (gsi3) lists a practice's delivered actions by UTC delivery date
//! (`P#{practice}#DLV`, `{date}#{id}`), so the digest's day summary reads the last two weeks'
//! deliveries, however long the practice's history. The same index holds the approval outbox
//! (`P#{practice}#OBX`, `{decided second}#{id}`): approved actions no emitter has taken yet
//! ([`Action::in_outbox`]), which the scan publishes again once they are a few minutes old.
//!
//! ByStart (gsi4) files an appointment that keeps its start minute under
//! `P#{practice}#SLOTAT#{provider}#{start}`, the key a slot at that provider and start has in
//! ByPatient: a slot that opens after its booking arrived finds the booking. A cancellation
//! keeps the key (no index write); readers check the status.
//!
//! Everything stored for one patient ref (rotation, erasure): the `PT#{ref}#` items and the
//! `CONSENT#{ref}` item in the practice's partition, and whatever ByPatient lists under
//! `P#{practice}#PAT#{ref}` (appointments, actions).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, ReturnValue, TransactWriteItem,
    WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use jiff::civil::Date;
use serde_dynamo::aws_sdk_dynamodb_1::{from_attribute_value, to_attribute_value};
use shared::action::{Action, ActionKind, ActionStatus};
use shared::audit::{AuditEvent, AuditRecord};
use shared::ids::{ActionId, OpaqueRef, PracticeId};
use shared::ports::{
    ActionLog, ActionRepo, AuditLog, DueIndex, EntityRepo, PatientIndex, PatientRecord,
    PatientRecords, PracticeRepo, RecordKey, SlotIndex, StoreError, TokenLedger, TombstoneRepo,
};
use shared::practice::Practice;
use shared::state::{Appointment, Entity, EntityKey, Stored};
use shared::tombstone::{Tombstone, TombstoneId};
use shared::treatment::Treatment;

use crate::meter::Meter;

type Item = HashMap<String, AttributeValue>;

mod actions;
mod audit;
mod due;
mod entities;
mod patients;
mod practices;
mod refusals;
mod slots;
mod tokens;
mod tombstones;

// What more than one entity's store uses.
use actions::{action_of, won};

/// The DynamoDB store. Cheap to clone; built once per cold start.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    meter: Meter,
}

const BY_PATIENT: &str = "ByPatient";
const DUE_INDEX: &str = "DueIndex";
const BY_DELIVERY: &str = "ByDelivery";
const BY_START: &str = "ByStart";
/// Keys per BatchGetItem request (DynamoDB's limit).
const BATCH_GET_MAX: usize = 100;
/// BatchGetItem requests for one set of keys before unprocessed keys fail the read.
const BATCH_GET_ATTEMPTS: u32 = 5;
/// Sorts after every date in the due index's sort keys.
const DUE_KEY_END: &str = "~";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn pk(practice: &PracticeId) -> String {
    format!("P#{practice}")
}
fn patient_key(practice: &PracticeId, patient: &OpaqueRef) -> String {
    format!("P#{practice}#PAT#{patient}")
}
fn slot_key(practice: &PracticeId, provider: &OpaqueRef, starts_at: Timestamp) -> String {
    format!("P#{practice}#SLOTAT#{provider}#{}", starts_at.as_second())
}
fn pool_key(practice: &PracticeId, treatment: Treatment) -> String {
    format!("P#{practice}#POOL#{treatment}")
}

/// Maps SDK errors to the domain's retry decisions. Uses error codes only: messages could in
/// principle quote a request.
fn map_err<E: ProvideErrorMetadata>(
    e: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StoreError {
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_owned();
            match code.as_str() {
                "ConditionalCheckFailedException" | "TransactionConflictException" => {
                    StoreError::Conflict
                }
                "TransactionCanceledException" => {
                    let msg = se.err().message().unwrap_or("");
                    // A condition failed, or another transaction was writing the same item:
                    // either way nothing was written, and the caller re-reads and retries.
                    if msg.contains("ConditionalCheckFailed") || msg.contains("TransactionConflict")
                    {
                        StoreError::Conflict
                    } else {
                        StoreError::Transient(code)
                    }
                }
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "LimitExceededException" => StoreError::Transient(code),
                _ => {
                    if se.raw().status().as_u16() >= 500 {
                        StoreError::Transient(code)
                    } else {
                        StoreError::Permanent(code)
                    }
                }
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Transient("network".into())
        }
        _ => StoreError::Permanent("sdk".into()),
    }
}

fn to_doc<T: serde::Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    to_attribute_value(v).map_err(|_| StoreError::Permanent("serialize".into()))
}
fn from_doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let doc = item
        .get("doc")
        .cloned()
        .ok_or_else(|| StoreError::Permanent("item without doc".into()))?;
    from_attribute_value(doc).map_err(|_| StoreError::Permanent("deserialize".into()))
}
fn num(item: &Item, key: &str) -> u64 {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, meter: Meter) -> Self {
        Self {
            client,
            table: table.into(),
            meter,
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        self.get_with(pk, sk, true).await
    }

    /// A get, strongly or eventually consistent (half the read units).
    async fn get_with(
        &self,
        pk: String,
        sk: String,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(map_err)?;
        self.meter.read(out.item.as_ref(), consistent);
        Ok(out.item)
    }

    /// The practice's config, read strongly or eventually consistent.
    async fn practice_read(
        &self,
        id: &PracticeId,
        consistent: bool,
    ) -> Result<Option<Practice>, StoreError> {
        let Some(item) = self.get_with(pk(id), "CONFIG".into(), consistent).await? else {
            return Ok(None);
        };
        let mut p: Practice = from_doc(&item)?;
        p.version = num(&item, "ver");
        Ok(Some(p))
    }

    /// A record with its version, read strongly or eventually consistent.
    async fn entity_read(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
        consistent: bool,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        let Some(item) = self
            .get_with(pk(practice), key.sort_key(), consistent)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Stored {
            value: from_doc(&item)?,
            version: num(&item, "ver"),
        }))
    }

    /// A conditional put that reports the write units it cost (base table and indexes).
    /// `version` names the attribute `#v` in `condition` stands for (`ver` or `rev`).
    async fn put(
        &self,
        item: Item,
        condition: &str,
        version: Option<(&str, u64)>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression(condition)
            .return_values(ReturnValue::AllOld);
        if let Some((attr, v)) = version {
            req = req
                .expression_attribute_names("#v", attr)
                .expression_attribute_values(":v", n(v));
        }
        let out = req.send().await.map_err(map_err)?;
        self.meter.write(&item, out.attributes.as_ref());
        Ok(())
    }

    /// The items an index query returned the keys of (ByPatient projects keys only), read
    /// with BatchGetItem, eventually consistent like the index itself, in sort-key order. An
    /// item deleted since the query is left out; keys DynamoDB leaves unprocessed (throttling)
    /// are asked for again, a few times, then the read fails as transient.
    async fn fetch_indexed(&self, found: &[Item]) -> Result<Vec<Item>, StoreError> {
        self.fetch_keys(found, false).await
    }

    /// BatchGetItem of the items `found` names (their `pk` and `sk`), strongly or eventually
    /// consistent.
    async fn fetch_keys(&self, found: &[Item], consistent: bool) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::with_capacity(found.len());
        let keys: Vec<Item> = found
            .iter()
            .filter_map(|i| {
                Some(
                    [
                        ("pk".to_owned(), i.get("pk")?.clone()),
                        ("sk".to_owned(), i.get("sk")?.clone()),
                    ]
                    .into(),
                )
            })
            .collect();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                let asked = pending.len();
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|_| StoreError::Permanent("batch get request".into()))?;
                let resp = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(map_err)?;
                let got = resp
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default();
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                let missing = asked.saturating_sub(got.len() + pending.len());
                self.meter.batch_read(&got, missing, consistent);
                out.extend(got);
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt >= BATCH_GET_ATTEMPTS {
                        return Err(StoreError::Transient("unprocessed keys".into()));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
            }
        }
        fn sk(i: &Item) -> Option<&str> {
            i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str)
        }
        out.sort_by(|a, b| sk(a).cmp(&sk(b)));
        Ok(out)
    }

    async fn query_all(
        &self,
        index: Option<&str>,
        key_cond: &str,
        values: Vec<(&str, AttributeValue)>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // Strongly consistent on the table (as metered); indexes only offer eventual.
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key_cond)
                .consistent_read(index.is_none());
            if let Some(i) = index {
                req = req.index_name(i);
            }
            for (k, v) in &values {
                req = req.expression_attribute_values(*k, v.clone());
            }
            if let Some(l) = limit {
                req = req.limit(
                    i32::try_from(l.saturating_sub(items.len()))
                        .unwrap_or(i32::MAX)
                        .max(1),
                );
            }
            let out = req
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(map_err)?;
            let page = out.items.unwrap_or_default();
            self.meter.query(&page, index.is_none());
            items.extend(page);
            match out.last_evaluated_key {
                Some(k) if limit.is_none_or(|l| items.len() < l) => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }
}
