//! The records events build (appointments, patient × treatment, consent, slots): one item each, conditional on its version; seeding in bulk.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// An entity as stored: its `doc`, its version, and its index keys (ByPatient for an
/// appointment whose patient is known and for a slot, ByStart for an appointment that keeps
/// its start minute, DueIndex while something is due on `due_on`).
pub(super) fn entity_item(
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
    if let Entity::Appointment(a) = entity
        && let Some((provider, starts_at)) = a.placed_at()
    {
        // Found by provider and start when a slot opens there.
        item.insert("gsi4pk".into(), s(slot_key(practice, provider, starts_at)));
        item.insert("gsi4sk".into(), s(sk.clone()));
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

/// Items per BatchWriteItem request (DynamoDB's limit).
pub(super) const BATCH_WRITE_MAX: usize = 25;

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
