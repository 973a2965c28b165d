//! Open slots and the slot-fill pool.

#[allow(clippy::wildcard_imports)]
use super::*;

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
        let keys = self
            .keys_at(
                BY_PATIENT,
                "gsi1pk",
                practice,
                provider,
                starts_at,
                Some(10),
            )
            .await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| match k {
                EntityKey::Slot(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    async fn appointments_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError> {
        let keys = self
            .keys_at(BY_START, "gsi4pk", practice, provider, starts_at, None)
            .await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| match k {
                EntityKey::Appointment(r) => Some(r),
                _ => None,
            })
            .collect())
    }
}

impl DynamoStore {
    /// The records an index files under a provider and start (`slot_key`).
    async fn keys_at(
        &self,
        index: &str,
        attribute: &str,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
        limit: Option<usize>,
    ) -> Result<Vec<EntityKey>, StoreError> {
        let items = self
            .query_all(
                Some(index),
                &format!("{attribute} = :p"),
                vec![(":p", s(slot_key(practice, provider, starts_at)))],
                limit,
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| EntityKey::parse_sort_key(i.get("sk")?.as_s().ok()?))
            .collect())
    }
}
