//! Actions: created, decided, delivered; counters; the delivery and outbox index.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// A conditional write's outcome: `Ok(false)` when the condition did not hold.
pub(super) fn won(r: Result<(), StoreError>) -> Result<bool, StoreError> {
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn action_of(item: &Item) -> Result<Action, StoreError> {
    let mut a: Action = from_doc(item)?;
    a.rev = num(item, "rev");
    Ok(a)
}

pub(super) fn delivery_key(practice: &PracticeId) -> String {
    format!("P#{practice}#DLV")
}

pub(super) fn outbox_key(practice: &PracticeId) -> String {
    format!("P#{practice}#OBX")
}

/// Seconds since the epoch, zero-padded, so the sort keys order by time.
pub(super) fn outbox_sort_prefix(at: Timestamp) -> String {
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
        // The index's sort key holds the decision's second: read through the end of
        // `decided_before`'s second, then keep what was decided before it (an approval made
        // earlier in that same second is in the outbox too).
        let through = Timestamp::from_second(decided_before.as_second().saturating_add(1))
            .unwrap_or(decided_before);
        let items = self
            .query_all(
                Some(BY_DELIVERY),
                "gsi3pk = :p AND gsi3sk < :before",
                vec![
                    (":p", s(outbox_key(practice))),
                    (":before", s(outbox_sort_prefix(through))),
                ],
                None,
            )
            .await?;
        let found: Vec<Action> = items.iter().map(action_of).collect::<Result<_, _>>()?;
        // The index lags a write by a moment: what left the outbox meanwhile is dropped.
        Ok(found
            .into_iter()
            .filter(|a| a.in_outbox() && a.decided_at.unwrap_or(a.created_at) < decided_before)
            .collect())
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

pub(super) fn action_item(a: &Action, rev: u64) -> Result<Item, StoreError> {
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
