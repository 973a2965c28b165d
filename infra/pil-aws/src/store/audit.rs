//! The audit hash chain: records and the head they append after.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const AUDIT_HEAD: &str = "AUDITHEAD";

/// An audit record's sort key: zero-padded, so the records sort in sequence order.
pub(super) fn audit_sk(seq: u64) -> String {
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
            let ttl = at.as_second() + shared::audit::RETENTION_DAYS * 86_400;
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
