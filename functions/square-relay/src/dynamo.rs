//! [`RelayStore`] in the relay's DynamoDB table (`pk`, `sk`; TTL on `ttl`): items as
//! [`crate::store::ITEMS`] lists them, mapped with serde_dynamo.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::{Backfill, Membership, RelayStore, StoreError};

/// Days a carried-out trigger's record outlives the trigger.
const TRIGGER_KEEP_DAYS: i64 = 30;
const SINGLE: &str = "-";
const MEMBER_PK: &str = "MEMBER";
const BACKFILL_PK: &str = "CURSOR#backfill";
const COMPLETIONS_PK: &str = "CURSOR#completions";

#[derive(Debug, Clone)]
pub struct DynamoRelayStore {
    client: Client,
    table: String,
}

impl DynamoRelayStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// A failed call, logged by operation only (an SDK error's text may quote a key).
fn unavailable<E>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |_| {
        tracing::warn!(operation = what, "dynamodb_error");
        StoreError::Unavailable(what.to_owned())
    }
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

#[derive(Serialize, Deserialize)]
struct RefItem {
    pk: String,
    sk: String,
    customer_id: String,
}

#[derive(Serialize, Deserialize)]
struct GroupItem {
    pk: String,
    sk: String,
    group_id: String,
}

#[derive(Serialize, Deserialize)]
struct TriggerItem {
    pk: String,
    sk: String,
    expires_at: Timestamp,
    ttl: i64,
}

#[derive(Serialize, Deserialize)]
struct MemberItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    m: Membership,
}

#[derive(Serialize, Deserialize)]
struct BackfillItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    b: Backfill,
}

#[derive(Serialize, Deserialize)]
struct WatermarkItem {
    pk: String,
    sk: String,
    watermark: Timestamp,
}

fn member_sk(group_id: &str, customer_id: &str) -> String {
    format!("{group_id}#{customer_id}")
}

impl DynamoRelayStore {
    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        pk: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, SINGLE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable(what))?;
        out.item
            .map(|i| serde_dynamo::from_item(i).map_err(|_| StoreError::Corrupt(what)))
            .transpose()
    }

    async fn put<T: Serialize>(&self, item: &T, what: &'static str) -> Result<(), StoreError> {
        let item = serde_dynamo::to_item(item).map_err(|_| StoreError::Corrupt(what))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable(what))?;
        Ok(())
    }
}

#[async_trait]
impl RelayStore for DynamoRelayStore {
    async fn remember_refs(&self, pairs: &[(String, String)]) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut requests = Vec::new();
        for (r, c) in pairs {
            if !seen.insert(r.clone()) {
                continue;
            }
            let item = serde_dynamo::to_item(RefItem {
                pk: format!("REF#{r}"),
                sk: SINGLE.to_owned(),
                customer_id: c.clone(),
            })
            .map_err(|_| StoreError::Corrupt("ref"))?;
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|_| StoreError::Corrupt("ref"))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for attempt in 0..8 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(unavailable("remember_refs"))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if attempt == 7 {
                    return Err(StoreError::Unavailable("remember_refs_unprocessed".into()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }

    async fn customer_of(&self, patient_ref: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get::<RefItem>(&format!("REF#{patient_ref}"), "ref")
            .await?
            .map(|i| i.customer_id))
    }

    async fn forget_ref(&self, patient_ref: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&format!("REF#{patient_ref}"), SINGLE)))
            .send()
            .await
            .map_err(unavailable("forget_ref"))?;
        Ok(())
    }

    async fn group_id(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get::<GroupItem>(&format!("GROUP#{name}"), "group")
            .await?
            .map(|g| g.group_id))
    }

    async fn put_group(&self, name: &str, group_id: &str) -> Result<(), StoreError> {
        self.put(
            &GroupItem {
                pk: format!("GROUP#{name}"),
                sk: SINGLE.to_owned(),
                group_id: group_id.to_owned(),
            },
            "group",
        )
        .await
    }

    async fn trigger_done(&self, trigger_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .get::<TriggerItem>(&format!("TRIGGER#{trigger_id}"), "trigger")
            .await?
            .is_some())
    }

    async fn put_trigger_done(
        &self,
        trigger_id: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.put(
            &TriggerItem {
                pk: format!("TRIGGER#{trigger_id}"),
                sk: SINGLE.to_owned(),
                expires_at,
                ttl: expires_at.as_second() + TRIGGER_KEEP_DAYS * 86_400,
            },
            "trigger",
        )
        .await
    }

    async fn extend_membership(&self, m: &Membership) -> Result<(), StoreError> {
        // Set the expiry unless a later one is stored: the later trigger wins either way.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                MEMBER_PK,
                &member_sk(&m.group_id, &m.customer_id),
            )))
            .update_expression("SET group_id = :g, customer_id = :c, expires_at = :e")
            .condition_expression("attribute_not_exists(expires_at) OR expires_at < :e")
            .expression_attribute_values(":g", AttributeValue::S(m.group_id.clone()))
            .expression_attribute_values(":c", AttributeValue::S(m.customer_id.clone()))
            .expression_attribute_values(":e", AttributeValue::S(m.expires_at.to_string()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("extend_membership")(e)),
        }
    }

    async fn expired_memberships(&self, now: Timestamp) -> Result<Vec<Membership>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression("expires_at <= :now")
                .expression_attribute_values(":pk", AttributeValue::S(MEMBER_PK.to_owned()))
                .expression_attribute_values(":now", AttributeValue::S(now.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable("expired_memberships"))?;
            for item in page.items.unwrap_or_default() {
                let m: MemberItem =
                    serde_dynamo::from_item(item).map_err(|_| StoreError::Corrupt("member"))?;
                out.push(m.m);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn end_membership(&self, m: &Membership) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                MEMBER_PK,
                &member_sk(&m.group_id, &m.customer_id),
            )))
            .condition_expression("expires_at = :e")
            .expression_attribute_values(":e", AttributeValue::S(m.expires_at.to_string()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("end_membership")(e)),
        }
    }

    async fn backfill(&self) -> Result<Option<Backfill>, StoreError> {
        Ok(self
            .get::<BackfillItem>(BACKFILL_PK, "backfill")
            .await?
            .map(|i| i.b))
    }

    async fn put_backfill(&self, b: &Backfill) -> Result<(), StoreError> {
        self.put(
            &BackfillItem {
                pk: BACKFILL_PK.to_owned(),
                sk: SINGLE.to_owned(),
                b: b.clone(),
            },
            "backfill",
        )
        .await
    }

    async fn watermark(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .get::<WatermarkItem>(COMPLETIONS_PK, "watermark")
            .await?
            .map(|i| i.watermark))
    }

    async fn put_watermark(&self, t: Timestamp) -> Result<(), StoreError> {
        self.put(
            &WatermarkItem {
                pk: COMPLETIONS_PK.to_owned(),
                sk: SINGLE.to_owned(),
                watermark: t,
            },
            "watermark",
        )
        .await
    }
}

/// Serialized samples of every item type (the inventory test checks each attribute is
/// documented in [`crate::store::ITEMS`]).
pub fn sample_items() -> Vec<(&'static str, HashMap<String, AttributeValue>)> {
    let t = Timestamp::UNIX_EPOCH;
    let item = |v: serde_json::Value| -> HashMap<String, AttributeValue> {
        serde_dynamo::to_item(v).unwrap_or_default()
    };
    let ser = |v: &dyn erased::Ser| item(v.json());
    vec![
        (
            "REF#<patient ref>",
            ser(&RefItem {
                pk: "REF#p_x".into(),
                sk: SINGLE.into(),
                customer_id: "C".into(),
            }),
        ),
        (
            "GROUP#<group name>",
            ser(&GroupItem {
                pk: "GROUP#g".into(),
                sk: SINGLE.into(),
                group_id: "G".into(),
            }),
        ),
        (
            "MEMBER / <group id>#<customer id>",
            ser(&MemberItem {
                pk: MEMBER_PK.into(),
                sk: member_sk("G", "C"),
                m: Membership {
                    group_id: "G".into(),
                    customer_id: "C".into(),
                    expires_at: t,
                },
            }),
        ),
        (
            "TRIGGER#<trigger id>",
            ser(&TriggerItem {
                pk: "TRIGGER#t".into(),
                sk: SINGLE.into(),
                expires_at: t,
                ttl: 0,
            }),
        ),
        (
            "CURSOR#backfill",
            ser(&BackfillItem {
                pk: BACKFILL_PK.into(),
                sk: SINGLE.into(),
                b: Backfill {
                    since: t,
                    until: t,
                    window_start: t,
                    cursor: Some("c".into()),
                    done: false,
                    pages: 0,
                    bookings: 0,
                    events: 0,
                    skipped: 0,
                },
            }),
        ),
        (
            "CURSOR#completions",
            ser(&WatermarkItem {
                pk: COMPLETIONS_PK.into(),
                sk: SINGLE.into(),
                watermark: t,
            }),
        ),
    ]
}

mod erased {
    /// Any item type as JSON (the samples above).
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}
