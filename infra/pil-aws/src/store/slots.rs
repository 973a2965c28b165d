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

    async fn appointments_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError> {
        let items = self
            .query_all(
                Some(BY_START),
                "gsi4pk = :p",
                vec![(":p", s(slot_key(practice, provider, starts_at)))],
                None,
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(
                |i| match EntityKey::parse_sort_key(i.get("sk")?.as_s().ok()?) {
                    Some(EntityKey::Appointment(r)) => Some(r),
                    _ => None,
                },
            )
            .collect())
    }
}
