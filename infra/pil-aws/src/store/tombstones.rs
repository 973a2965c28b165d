//! Tombstones of erased and rotated refs.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn tombstone_sk(id: &TombstoneId) -> String {
    format!("TOMB#{id}")
}

pub(super) fn tombstone_of(item: &Item) -> Result<Tombstone, StoreError> {
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
