//! The practices' configurations and their list.

#[allow(clippy::wildcard_imports)]
use super::*;

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
