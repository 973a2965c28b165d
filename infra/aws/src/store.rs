//! DynamoDB adapter: one table, one partition per practice, three sparse indexes.
//!
//! | item | pk | sk | indexes |
//! |---|---|---|---|
//! | practice config | `P#{practice}` | `CONFIG` | |
//! | practice list entry | `PRACTICES` | `{practice}` | |
//! | appointment | `P#{practice}` | `APPT#{ref}` | ByPatient (once the patient is known) |
//! | patient × treatment | `P#{practice}` | `PT#{patient}#{treatment}` | DueIndex (while something is due) |
//! | consent | `P#{practice}` | `CONSENT#{patient}` | |
//! | slot | `P#{practice}` | `SLOT#{ref}` | |
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
//! ByPatient (gsi1) and DueIndex (gsi2) project keys only: a write that changes a record
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
use pil_shared::action::{Action, ActionKind, ActionStatus};
use pil_shared::audit::{AuditEvent, AuditRecord};
use pil_shared::ids::{ActionId, OpaqueRef, PracticeId};
use pil_shared::ports::{
    ActionLog, ActionRepo, AuditLog, DueIndex, EntityRepo, PatientIndex, PatientRecord,
    PatientRecords, PracticeRepo, RecordKey, SlotIndex, StoreError, TokenLedger, TombstoneRepo,
};
use pil_shared::practice::Practice;
use pil_shared::state::{Appointment, Entity, EntityKey, Stored};
use pil_shared::tombstone::{Tombstone, TombstoneId};
use pil_shared::treatment::Treatment;
use serde_dynamo::aws_sdk_dynamodb_1::{from_attribute_value, to_attribute_value};

use crate::meter::Meter;

type Item = HashMap<String, AttributeValue>;

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

#[async_trait]
impl PracticeRepo for DynamoStore {
    async fn get_practice(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        self.practice_read(id, true).await
    }

    async fn get_practice_recent(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        self.practice_read(id, false).await
    }

    async fn put_practice(
        &self,
        practice: &Practice,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut item: Item = HashMap::new();
        item.insert("pk".into(), s(pk(&practice.id)));
        item.insert("sk".into(), s("CONFIG"));
        item.insert("doc".into(), to_doc(practice)?);
        item.insert("ver".into(), n(practice.version));
        match expected {
            Some(v) => self.put(item, "#v = :v", Some(("ver", v))).await,
            None => {
                // Create: the config and its entry in the practice list, together.
                let listing: Item = [
                    ("pk".to_owned(), s("PRACTICES")),
                    ("sk".to_owned(), s(practice.id.as_str())),
                ]
                .into();
                let put = |it: Item, cond: &str| -> Result<TransactWriteItem, StoreError> {
                    let p = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(it))
                        .condition_expression(cond)
                        .build()
                        .map_err(|_| StoreError::Permanent("build".into()))?;
                    Ok(TransactWriteItem::builder().put(p).build())
                };
                self.client
                    .transact_write_items()
                    .transact_items(put(item.clone(), "attribute_not_exists(pk)")?)
                    .transact_items(put(listing.clone(), "attribute_not_exists(pk)")?)
                    .send()
                    .await
                    .map_err(map_err)?;
                self.meter.transact_write(&[&item, &listing]);
                Ok(())
            }
        }
    }

    async fn list_practices(&self) -> Result<Vec<PracticeId>, StoreError> {
        let items = self
            .query_all(None, "pk = :pk", vec![(":pk", s("PRACTICES"))], None)
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|v| PracticeId::parse(v).ok())
            })
            .collect())
    }
}

#[async_trait]
impl EntityRepo for DynamoStore {
    async fn get_entity(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        self.entity_read(practice, key, true).await
    }

    async fn get_entity_recent(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        self.entity_read(practice, key, false).await
    }

    async fn put_entity(
        &self,
        practice: &PracticeId,
        entity: &Entity,
        expected: Option<u64>,
        due_on: Option<Date>,
    ) -> Result<(), StoreError> {
        let item = entity_item(practice, entity, expected.map_or(1, |v| v + 1), due_on)?;
        match expected {
            Some(v) => self.put(item, "#v = :v", Some(("ver", v))).await,
            None => self.put(item, "attribute_not_exists(pk)", None).await,
        }
    }
}

#[async_trait]
impl DueIndex for DynamoStore {
    async fn due_keys(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<EntityKey>, StoreError> {
        let items = self
            .query_all(
                Some(DUE_INDEX),
                "gsi2pk = :p AND gsi2sk <= :d",
                vec![
                    (":p", s(format!("P#{practice}#DUE"))),
                    (":d", s(format!("{day}#{DUE_KEY_END}"))),
                ],
                Some(limit),
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| EntityKey::parse_sort_key(sk))
            })
            .collect())
    }

    async fn due_page(
        &self,
        practice: &PracticeId,
        day: Date,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EntityKey>, Option<String>), StoreError> {
        let end = s(format!("{day}#{DUE_KEY_END}"));
        let pk = (":p", s(format!("P#{practice}#DUE")));
        let items = match after {
            // The smallest key after the cursor: the cursor and a space (every key character
            // sorts after a space).
            Some(c) => {
                self.query_all(
                    Some(DUE_INDEX),
                    "gsi2pk = :p AND gsi2sk BETWEEN :a AND :d",
                    vec![pk, (":a", s(format!("{c} "))), (":d", end)],
                    Some(limit),
                )
                .await?
            }
            None => {
                self.query_all(
                    Some(DUE_INDEX),
                    "gsi2pk = :p AND gsi2sk <= :d",
                    vec![pk, (":d", end)],
                    Some(limit),
                )
                .await?
            }
        };
        // A cursor only after a full page (counted in items, not in keys that parsed).
        let cursor = (items.len() >= limit)
            .then(|| items.last())
            .flatten()
            .and_then(|i| i.get("gsi2sk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        let keys = items
            .iter()
            .filter_map(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| EntityKey::parse_sort_key(sk))
            })
            .collect();
        Ok((keys, cursor))
    }

    async fn due_records(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<Stored<Entity>>, StoreError> {
        let found = self
            .query_all(
                Some(DUE_INDEX),
                "gsi2pk = :p AND gsi2sk <= :d",
                vec![
                    (":p", s(format!("P#{practice}#DUE"))),
                    (":d", s(format!("{day}#{DUE_KEY_END}"))),
                ],
                Some(limit),
            )
            .await?;
        self.fetch_indexed(&found)
            .await?
            .iter()
            .map(|item| {
                Ok(Stored {
                    value: from_doc(item)?,
                    version: num(item, "ver"),
                })
            })
            .collect()
    }
}

const AUDIT_HEAD: &str = "AUDITHEAD";

/// An audit record's sort key: zero-padded, so the records sort in sequence order.
fn audit_sk(seq: u64) -> String {
    format!("AUDIT#{seq:012}")
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(
        &self,
        practice: &PracticeId,
        event: &AuditEvent,
        at: Timestamp,
    ) -> Result<AuditRecord, StoreError> {
        // Two plain conditional writes, not a transaction (half the write units): the record
        // first (`attribute_not_exists`: one record per sequence number), then the head,
        // conditional on the sequence number it had. An append that stops between the two
        // leaves the head one record behind; the next append finds record head+1 taken,
        // moves the head onto it, and goes on; `audit::verify` accepts a head one behind
        // when the record after it follows the chain.
        for attempt in 0..20u64 {
            let head = self.get(pk(practice), AUDIT_HEAD.into()).await?;
            let prev = head.as_ref().map(|h| {
                (
                    num(h, "seq"),
                    h.get("hash")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default(),
                )
            });
            let record = AuditRecord::next(
                practice,
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                event,
                at,
            );
            let ttl = at.as_second() + pil_shared::audit::RETENTION_DAYS * 86_400;
            let mut item: Item = HashMap::new();
            item.insert("pk".into(), s(pk(practice)));
            item.insert("sk".into(), s(audit_sk(record.seq)));
            item.insert("doc".into(), to_doc(&record)?);
            item.insert("ttl".into(), n(u64::try_from(ttl).unwrap_or(0)));
            match self.put(item, "attribute_not_exists(pk)", None).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => {
                    // Record head+1 exists: ours (a retried put whose first answer was lost:
                    // same event, same time, same chain, so the same hash) or another
                    // append's whose head update is pending or under way.
                    let taken = self
                        .get(pk(practice), audit_sk(record.seq))
                        .await?
                        .ok_or(StoreError::Conflict)
                        .and_then(|it| from_doc::<AuditRecord>(&it))?;
                    if taken.hash != record.hash {
                        self.advance_audit_head(practice, prev.as_ref().map(|p| p.0), &taken)
                            .await?;
                        tokio::time::sleep(std::time::Duration::from_millis(5 + attempt * 7)).await;
                        continue;
                    }
                }
                Err(e) => return Err(e),
            }
            self.advance_audit_head(practice, prev.as_ref().map(|p| p.0), &record)
                .await?;
            return Ok(record);
        }
        Err(StoreError::Conflict)
    }

    async fn audit_trail(
        &self,
        practice: &PracticeId,
    ) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        let items = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :a)",
                vec![(":pk", s(pk(practice))), (":a", s("AUDIT#"))],
                None,
            )
            .await?;
        let records = items
            .iter()
            .map(from_doc::<AuditRecord>)
            .collect::<Result<Vec<_>, _>>()?;
        let head = self.get(pk(practice), AUDIT_HEAD.into()).await?.map(|h| {
            (
                num(&h, "seq"),
                h.get("hash")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default(),
            )
        });
        Ok((records, head))
    }
}

#[async_trait]
impl SlotIndex for DynamoStore {
    async fn slot_pool(
        &self,
        practice: &PracticeId,
        treatment: Treatment,
        through: Date,
        limit: usize,
    ) -> Result<Vec<ActionId>, StoreError> {
        let items = self
            .query_all(
                Some(DUE_INDEX),
                "gsi2pk = :p AND gsi2sk <= :d",
                vec![
                    (":p", s(pool_key(practice, treatment))),
                    (":d", s(format!("{through}#{DUE_KEY_END}"))),
                ],
                Some(limit),
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| sk.strip_prefix("ACTION#"))
                    .and_then(|id| ActionId::parse(id).ok())
            })
            .collect())
    }

    async fn slots_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError> {
        let items = self
            .query_all(
                Some(BY_PATIENT),
                "gsi1pk = :p",
                vec![(":p", s(slot_key(practice, provider, starts_at)))],
                Some(10),
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(
                |i| match EntityKey::parse_sort_key(i.get("sk")?.as_s().ok()?) {
                    Some(EntityKey::Slot(r)) => Some(r),
                    _ => None,
                },
            )
            .collect())
    }
}

#[async_trait]
impl PatientIndex for DynamoStore {
    async fn appointments_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Appointment>, StoreError> {
        let items = self
            .query_all(
                Some(BY_PATIENT),
                "gsi1pk = :p AND begins_with(gsi1sk, :a)",
                vec![
                    (":p", s(patient_key(practice, patient))),
                    (":a", s("APPT#")),
                ],
                None,
            )
            .await?;
        let items = self.fetch_indexed(&items).await?;
        items
            .iter()
            .map(from_doc::<Entity>)
            .filter_map(|e| match e {
                Ok(Entity::Appointment(a)) => Some(Ok(a)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    async fn actions_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Action>, StoreError> {
        let items = self
            .query_all(
                Some(BY_PATIENT),
                "gsi1pk = :p AND begins_with(gsi1sk, :a)",
                vec![
                    (":p", s(patient_key(practice, patient))),
                    (":a", s("ACTION#")),
                ],
                None,
            )
            .await?;
        let items = self.fetch_indexed(&items).await?;
        items.iter().map(action_of).collect()
    }
}

#[async_trait]
impl PatientRecords for DynamoStore {
    async fn records_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<PatientRecord>, StoreError> {
        let treatments = self.query_all(
            None,
            "pk = :pk AND begins_with(sk, :pt)",
            vec![
                (":pk", s(pk(practice))),
                (":pt", s(format!("PT#{patient}#"))),
            ],
            None,
        );
        let consent = self.get(pk(practice), EntityKey::Consent(patient.clone()).sort_key());
        let indexed = self.query_all(
            Some(BY_PATIENT),
            "gsi1pk = :p",
            vec![(":p", s(patient_key(practice, patient)))],
            None,
        );
        let (treatments, consent, indexed) = futures::try_join!(treatments, consent, indexed)?;
        let indexed = self.fetch_indexed(&indexed).await?;
        let entity = |item: &Item| -> Result<PatientRecord, StoreError> {
            Ok(PatientRecord::Entity(Stored {
                value: from_doc(item)?,
                version: num(item, "ver"),
            }))
        };
        let mut out = Vec::with_capacity(treatments.len() + indexed.len() + 1);
        for item in treatments.iter().chain(consent.iter()) {
            out.push(entity(item)?);
        }
        for item in &indexed {
            let sk = item.get("sk").and_then(|v| v.as_s().ok());
            match sk {
                Some(k) if k.starts_with("APPT#") => out.push(entity(item)?),
                Some(k) if k.starts_with("ACTION#") => {
                    out.push(PatientRecord::Action(action_of(item)?))
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn delete_record(
        &self,
        practice: &PracticeId,
        key: &RecordKey,
        expected: u64,
    ) -> Result<bool, StoreError> {
        let version_attr = match key {
            RecordKey::Entity(_) => "ver",
            RecordKey::Action(_) => "rev",
        };
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk(practice)))
            .key("sk", s(key.sort_key()))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", version_attr)
            .expression_attribute_values(":v", n(expected))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                self.meter.delete(out.attributes.as_ref());
                Ok(true)
            }
            Err(e) => match map_err(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }
}

fn tombstone_sk(id: &TombstoneId) -> String {
    format!("TOMB#{id}")
}

fn tombstone_of(item: &Item) -> Result<Tombstone, StoreError> {
    from_doc(item)
}

#[async_trait]
impl TombstoneRepo for DynamoStore {
    async fn tombstones(
        &self,
        practice: &PracticeId,
        ids: &[TombstoneId],
    ) -> Result<Vec<Tombstone>, StoreError> {
        // BatchGetItem refuses a request naming one key twice.
        let unique: std::collections::BTreeSet<&TombstoneId> = ids.iter().collect();
        let keys: Vec<Item> = unique
            .into_iter()
            .map(|id| {
                [
                    ("pk".to_owned(), s(pk(practice))),
                    ("sk".to_owned(), s(tombstone_sk(id))),
                ]
                .into()
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Consistent: a tombstone written a moment ago (an erasure racing this delivery)
        // must be seen.
        self.fetch_keys(&keys, true)
            .await?
            .iter()
            .map(tombstone_of)
            .collect()
    }

    async fn tombstone(
        &self,
        practice: &PracticeId,
        id: &TombstoneId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.get(pk(practice), tombstone_sk(id))
            .await?
            .as_ref()
            .map(tombstone_of)
            .transpose()
    }

    async fn put_tombstone(&self, practice: &PracticeId, t: &Tombstone) -> Result<(), StoreError> {
        let mut item: Item = HashMap::new();
        item.insert("pk".into(), s(pk(practice)));
        item.insert("sk".into(), s(tombstone_sk(&t.id)));
        item.insert("doc".into(), to_doc(t)?);
        item.insert(
            "ttl".into(),
            n(u64::try_from(t.expires_at().as_second()).unwrap_or(0)),
        );
        // A rotation tombstone is listed under the ref it points to, so rotating or erasing
        // that ref finds it and rewrites it.
        if let Some(to) = t.to() {
            item.insert("gsi1pk".into(), s(patient_key(practice, to)));
            item.insert("gsi1sk".into(), s(tombstone_sk(&t.id)));
        }
        // Unconditional: a tombstone only ever moves forward (erased, or pointing to the
        // ref its target was rotated to), and writing the same one twice is harmless.
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(map_err)?;
        self.meter.write(&item, out.attributes.as_ref());
        Ok(())
    }

    async fn tombstones_to(
        &self,
        practice: &PracticeId,
        to: &OpaqueRef,
    ) -> Result<Vec<Tombstone>, StoreError> {
        let found = self
            .query_all(
                Some(BY_PATIENT),
                "gsi1pk = :p AND begins_with(gsi1sk, :t)",
                vec![(":p", s(patient_key(practice, to))), (":t", s("TOMB#"))],
                None,
            )
            .await?;
        let items = self.fetch_indexed(&found).await?;
        let all: Vec<Tombstone> = items.iter().map(tombstone_of).collect::<Result<_, _>>()?;
        // The index lags a write: keep only what still points there.
        Ok(all.into_iter().filter(|t| t.to() == Some(to)).collect())
    }
}

#[async_trait]
impl ActionRepo for DynamoStore {
    async fn create_action(&self, action: &Action) -> Result<bool, StoreError> {
        won(self
            .put(action_item(action, 0)?, "attribute_not_exists(pk)", None)
            .await)
    }

    async fn get_action(
        &self,
        practice: &PracticeId,
        id: &ActionId,
    ) -> Result<Option<Action>, StoreError> {
        let Some(item) = self.get(pk(practice), format!("ACTION#{id}")).await? else {
            return Ok(None);
        };
        action_of(&item).map(Some)
    }

    async fn update_action(&self, action: &Action) -> Result<bool, StoreError> {
        won(self
            .put(
                action_item(action, action.rev + 1)?,
                "#v = :v",
                Some(("rev", action.rev)),
            )
            .await)
    }

    async fn reserve_auto_approval(
        &self,
        practice: &PracticeId,
        kind: ActionKind,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        self.reserve_in_set(practice, format!("AUTO#{day}#{kind}"), max, action)
            .await
    }

    async fn reserve_nightly(
        &self,
        practice: &PracticeId,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        self.reserve_in_set(practice, format!("NIGHT#{day}"), max, action)
            .await
    }
}

impl DynamoStore {
    /// Adds `action` to the id set at `sk` unless it holds `max` others already (the first
    /// is always granted). Idempotent: an id in the set already is granted again.
    async fn reserve_in_set(
        &self,
        practice: &PracticeId,
        sk: String,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        let keep = Timestamp::now().as_second() + 3 * 86_400;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk(practice)))
            .key("sk", s(sk))
            // The set of the day's auto-approved action ids (not a counter): adding an id
            // that is in it already changes nothing, so a retried approval is counted once.
            .update_expression("ADD ids :ids SET #t = :ttl")
            .condition_expression(
                "attribute_not_exists(ids) OR size(ids) < :max OR contains(ids, :id)",
            )
            .expression_attribute_names("#t", "ttl")
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![action.to_string()]))
            .expression_attribute_values(":id", s(action.to_string()))
            .expression_attribute_values(":max", n(u64::from(max)))
            .expression_attribute_values(":ttl", n(keep.max(0) as u64))
            .send()
            .await;
        match res {
            Ok(_) => {
                self.meter.write_units(1);
                Ok(true)
            }
            Err(e) => match map_err(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }
}

/// An entity as stored: its `doc`, its version, and its index keys (ByPatient for an
/// appointment whose patient is known, DueIndex while something is due on `due_on`).
fn entity_item(
    practice: &PracticeId,
    entity: &Entity,
    version: u64,
    due_on: Option<Date>,
) -> Result<Item, StoreError> {
    let sk = entity.key().sort_key();
    let mut item: Item = HashMap::new();
    item.insert("pk".into(), s(pk(practice)));
    item.insert("sk".into(), s(sk.clone()));
    item.insert("doc".into(), to_doc(entity)?);
    item.insert("ver".into(), n(version));
    if let (Entity::Appointment(_), Some(patient)) = (entity, entity.patient()) {
        item.insert("gsi1pk".into(), s(patient_key(practice, patient)));
        item.insert("gsi1sk".into(), s(sk.clone()));
    }
    if let Entity::Slot(slot) = entity {
        // Found by provider and start when a booking takes the slot.
        item.insert(
            "gsi1pk".into(),
            s(slot_key(practice, &slot.provider_ref, slot.starts_at)),
        );
        item.insert("gsi1sk".into(), s(sk.clone()));
    }
    if let Some(due) = due_on {
        item.insert("gsi2pk".into(), s(format!("P#{practice}#DUE")));
        item.insert("gsi2sk".into(), s(format!("{due}#{sk}")));
    }
    Ok(item)
}

impl DynamoStore {
    /// Moves the audit head from sequence number `from` (none: no head yet) onto `record`.
    /// A head that already moved (another append got there first, helping this one or its
    /// own) is left as it is.
    async fn advance_audit_head(
        &self,
        practice: &PracticeId,
        from: Option<u64>,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        let head_item: Item = [
            ("pk".to_owned(), s(pk(practice))),
            ("sk".to_owned(), s(AUDIT_HEAD)),
            ("seq".to_owned(), n(record.seq)),
            ("hash".to_owned(), s(record.hash.clone())),
        ]
        .into();
        let res = match from {
            Some(seq) => self.put(head_item, "#v = :v", Some(("seq", seq))).await,
            None => self.put(head_item, "attribute_not_exists(pk)", None).await,
        };
        match res {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Items per BatchWriteItem request (DynamoDB's limit).
const BATCH_WRITE_MAX: usize = 25;

impl DynamoStore {
    /// Seeds a practice with new records in bulk (benches; an import into an empty practice):
    /// each `(entity, due_on)` is stored exactly as [`EntityRepo::put_entity`] would create
    /// it (version 1, same index keys), through BatchWriteItem, 25 items a request and
    /// `concurrency` requests at a time, retrying unprocessed items with backoff. The puts are
    /// unconditional: never use it where records may already exist. Returns the items written.
    pub async fn load_entities(
        &self,
        practice: &PracticeId,
        entities: &[(Entity, Option<Date>)],
        concurrency: usize,
    ) -> Result<usize, StoreError> {
        futures::stream::iter(entities.chunks(BATCH_WRITE_MAX).map(|chunk| async move {
            let items = chunk
                .iter()
                .map(|(e, due)| entity_item(practice, e, 1, *due))
                .collect::<Result<Vec<_>, _>>()?;
            self.batch_put(items).await
        }))
        .buffer_unordered(concurrency.max(1))
        .try_fold(0, |acc, n| async move { Ok(acc + n) })
        .await
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<usize, StoreError> {
        let total = items.len();
        let mut pending: Vec<WriteRequest> = items
            .iter()
            .map(|it| {
                PutRequest::builder()
                    .set_item(Some(it.clone()))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|_| StoreError::Permanent("build".into()))
            })
            .collect::<Result<_, _>>()?;
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..8 {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(map_err)?;
            pending = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if pending.is_empty() {
                for it in &items {
                    self.meter.write(it, None);
                }
                return Ok(total);
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(StoreError::Transient("unprocessed items".into()))
    }
}

/// A conditional write's outcome: `Ok(false)` when the condition did not hold.
fn won(r: Result<(), StoreError>) -> Result<bool, StoreError> {
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

fn action_of(item: &Item) -> Result<Action, StoreError> {
    let mut a: Action = from_doc(item)?;
    a.rev = num(item, "rev");
    Ok(a)
}

fn delivery_key(practice: &PracticeId) -> String {
    format!("P#{practice}#DLV")
}

fn outbox_key(practice: &PracticeId) -> String {
    format!("P#{practice}#OBX")
}

/// Seconds since the epoch, zero-padded, so the sort keys order by time.
fn outbox_sort_prefix(at: Timestamp) -> String {
    format!("{:012}", at.as_second().max(0))
}

#[async_trait]
impl ActionLog for DynamoStore {
    async fn practice_actions(&self, practice: &PracticeId) -> Result<Vec<Action>, StoreError> {
        let items = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :a)",
                vec![(":pk", s(pk(practice))), (":a", s("ACTION#"))],
                None,
            )
            .await?;
        items.iter().map(action_of).collect()
    }

    async fn outbox(
        &self,
        practice: &PracticeId,
        decided_before: Timestamp,
    ) -> Result<Vec<Action>, StoreError> {
        let items = self
            .query_all(
                Some(BY_DELIVERY),
                "gsi3pk = :p AND gsi3sk < :before",
                vec![
                    (":p", s(outbox_key(practice))),
                    (":before", s(outbox_sort_prefix(decided_before))),
                ],
                None,
            )
            .await?;
        let found: Vec<Action> = items.iter().map(action_of).collect::<Result<_, _>>()?;
        // The index lags a write by a moment: what left the outbox meanwhile is dropped.
        Ok(found.into_iter().filter(Action::in_outbox).collect())
    }

    async fn delivered_between(
        &self,
        practice: &PracticeId,
        from: Date,
        to: Date,
    ) -> Result<Vec<Action>, StoreError> {
        let items = self
            .query_all(
                Some(BY_DELIVERY),
                "gsi3pk = :p AND gsi3sk BETWEEN :from AND :to",
                vec![
                    (":p", s(delivery_key(practice))),
                    (":from", s(format!("{from}#"))),
                    (":to", s(format!("{to}#{DUE_KEY_END}"))),
                ],
                None,
            )
            .await?;
        items.iter().map(action_of).collect()
    }
}

fn action_item(a: &Action, rev: u64) -> Result<Item, StoreError> {
    let mut item: Item = HashMap::new();
    item.insert("pk".into(), s(pk(&a.practice_id)));
    item.insert("sk".into(), s(format!("ACTION#{}", a.id)));
    item.insert("doc".into(), to_doc(a)?);
    item.insert("rev".into(), n(rev));
    item.insert("status".into(), s(a.status.as_str()));
    item.insert(
        "gsi1pk".into(),
        s(patient_key(&a.practice_id, &a.patient_ref)),
    );
    item.insert("gsi1sk".into(), s(format!("ACTION#{}", a.id)));
    if a.in_slot_pool() {
        item.insert("gsi2pk".into(), s(pool_key(&a.practice_id, a.treatment)));
        item.insert("gsi2sk".into(), s(format!("{}#{}", a.due_since, a.id)));
    }
    if let (ActionStatus::Delivered, Some(at)) = (a.status, a.delivered_at) {
        let day = at.to_zoned(jiff::tz::TimeZone::UTC).date();
        item.insert("gsi3pk".into(), s(delivery_key(&a.practice_id)));
        item.insert("gsi3sk".into(), s(format!("{day}#{}", a.id)));
    } else if a.in_outbox() {
        // The approval outbox shares the index: `P#{practice}#OBX`, by decision time.
        let at = a.decided_at.unwrap_or(a.created_at);
        item.insert("gsi3pk".into(), s(outbox_key(&a.practice_id)));
        item.insert(
            "gsi3sk".into(),
            s(format!("{}#{}", outbox_sort_prefix(at), a.id)),
        );
    }
    Ok(item)
}

/// Refusal counts live one item per practice and UTC day, one number attribute per hour,
/// code, rule and field path (`r:{HH}|{code}|{rule}|{path}`, `/` for `.` in the path), kept
/// this many days.
const REFUSAL_DAYS: i64 = 35;
const REFUSAL_PREFIX: &str = "r:";

#[async_trait]
impl pil_shared::ports::RefusalLog for DynamoStore {
    async fn count_refusal(
        &self,
        practice: &PracticeId,
        at: Timestamp,
        code: &'static str,
        rule: &'static str,
        path: &str,
    ) -> Result<(), StoreError> {
        let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
        // No `.` in the name (`/` for it): the name is one attribute, not a document path.
        let name = format!(
            "{REFUSAL_PREFIX}{:02}|{code}|{rule}|{}",
            utc.hour(),
            path.replace('.', "/")
        );
        let keep = at.as_second() + REFUSAL_DAYS * 86_400;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk(practice)))
            .key("sk", s(format!("REFUSALS#{}", utc.date())))
            .update_expression("ADD #k :one SET #t = :ttl")
            .expression_attribute_names("#k", name)
            .expression_attribute_names("#t", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(keep.max(0) as u64))
            .send()
            .await
            .map_err(map_err)?;
        self.meter.write_units(1);
        Ok(())
    }

    async fn refusals(
        &self,
        practice: &PracticeId,
        since: Timestamp,
    ) -> Result<Vec<pil_shared::ports::RefusalCount>, StoreError> {
        let from = since.as_second() - since.as_second().rem_euclid(3600);
        let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut day = since.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut out = Vec::new();
        while day <= today {
            if let Some(item) = self
                .get_with(pk(practice), format!("REFUSALS#{day}"), false)
                .await?
            {
                for (k, v) in &item {
                    let Some(rest) = k.strip_prefix(REFUSAL_PREFIX) else {
                        continue;
                    };
                    let mut parts = rest.splitn(4, '|');
                    let (Some(hh), Some(code), Some(rule), Some(path)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let hour = hh
                        .parse::<i8>()
                        .ok()
                        .and_then(|h| day.at(h, 0, 0, 0).to_zoned(jiff::tz::TimeZone::UTC).ok())
                        .map(|z| z.timestamp());
                    let count = v.as_n().ok().and_then(|n| n.parse::<u64>().ok());
                    if let (Some(hour), Some(count)) = (hour, count)
                        && hour.as_second() >= from
                    {
                        out.push(pil_shared::ports::RefusalCount {
                            hour,
                            code: code.to_owned(),
                            rule: rule.to_owned(),
                            path: path.replace('/', "."),
                            count,
                        });
                    }
                }
            }
            let Ok(next) = day.tomorrow() else { break };
            day = next;
        }
        out.sort_by(|a, b| {
            (a.hour, &a.code, &a.rule, &a.path).cmp(&(b.hour, &b.code, &b.rule, &b.path))
        });
        Ok(out)
    }
}

#[async_trait]
impl TokenLedger for DynamoStore {
    async fn consume_token(
        &self,
        practice: &PracticeId,
        nonce: &str,
        keep_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut item: Item = HashMap::new();
        item.insert("pk".into(), s(pk(practice)));
        item.insert("sk".into(), s(format!("TOKEN#{nonce}")));
        item.insert(
            "ttl".into(),
            n(keep_until.as_second().max(0) as u64 + 86_400),
        );
        won(self.put(item, "attribute_not_exists(pk)", None).await)
    }
}
