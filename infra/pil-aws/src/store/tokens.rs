//! Single-use link nonces.

#[allow(clippy::wildcard_imports)]
use super::*;

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
