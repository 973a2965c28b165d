//! The due index: what the nightly scan reads.

#[allow(clippy::wildcard_imports)]
use super::*;

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
