//! The tamper-evident audit trail (docs/design.md §2.7): every decision about what may reach
//! a patient (policy changes, approvals by the owner or by policy, rejections, deliveries, failures,
//! withdrawals) appends one record to a per-practice hash chain. Each record carries the hash
//! of the one before and its own hash over every field, so a changed, removed or reordered
//! record breaks the chain at that point ([`verify`]).
//!
//! No patient ref appears in the trail: records name actions by their id (a one-way
//! derivation), so once a patient is erased (their actions deleted) nothing in the trail can be
//! joined back to them. `details` is JSON text without PHI (kinds, modes, reason codes,
//! statuses, counts); it is stored as text so the hashed bytes never change in storage.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ActionId, PracticeId};

/// The actor for a decider: `owner:<approver hash>` or `policy:<rule>`.
pub fn actor_of(d: &crate::action::Decider) -> String {
    match d {
        crate::action::Decider::Owner { approver } => format!("owner:{approver}"),
        crate::action::Decider::Policy { rule } => format!("policy:{rule}"),
    }
}

/// Records are kept six years (TTL); a chain may then start after record 1.
pub const RETENTION_DAYS: i64 = 6 * 366;

/// The hash the first record points back to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is being recorded (the store assigns `seq`, `prev` and `hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who decided: `policy:<kind>:auto`, `owner:<approver hash>`, `admin`, `emitter`, …
    pub actor: String,
    /// What: `policy_changed`, `action_approved`, `action_rejected`, `action_delivered`, …
    pub event: &'static str,
    pub action_id: Option<ActionId>,
    /// JSON text, no PHI.
    pub details: String,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, event: &'static str) -> Self {
        Self {
            actor: actor.into(),
            event,
            action_id: None,
            details: "{}".into(),
        }
    }
    pub fn action(mut self, id: &ActionId) -> Self {
        self.action_id = Some(id.clone());
        self
    }
    pub fn details(mut self, v: serde_json::Value) -> Self {
        self.details = v.to_string();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub practice_id: PracticeId,
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    pub event: String,
    #[serde(default)]
    pub action_id: Option<ActionId>,
    pub details: String,
    /// Hash of the record before (hex SHA-256), [`GENESIS`] for the first.
    pub prev: String,
    /// Hash of this record's fields and `prev` (hex SHA-256).
    pub hash: String,
}

impl AuditRecord {
    /// The record that follows `prev` (`None`: the first of the chain).
    pub fn next(
        practice_id: &PracticeId,
        prev: Option<(u64, &str)>,
        event: &AuditEvent,
        at: Timestamp,
    ) -> Self {
        let (seq, prev) = prev.map_or((1, GENESIS), |(s, h)| (s + 1, h));
        let mut r = Self {
            practice_id: practice_id.clone(),
            seq,
            at,
            actor: event.actor.clone(),
            event: event.event.to_owned(),
            action_id: event.action_id.clone(),
            details: event.details.clone(),
            prev: prev.to_owned(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    /// SHA-256 over every field but `hash`, each length-prefixed (no ambiguity between fields).
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let seq = self.seq.to_string();
        let at = self.at.to_string();
        let action = self.action_id.as_ref().map_or("", ActionId::as_str);
        for part in [
            self.practice_id.as_str(),
            &seq,
            &at,
            &self.actor,
            &self.event,
            action,
            &self.details,
            &self.prev,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct AuditBreak {
    /// The first record that does not verify (or the first missing sequence number).
    pub seq: u64,
    pub reason: &'static str,
}

/// Summary of a chain that verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub records: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub head: String,
}

/// Walks the chain in sequence order. `records` as stored (any order); `head` the stored head
/// (the last sequence number and hash appended), which catches removal of the newest records.
/// A chain may start after record 1 only when its first record is older than the retention.
pub fn verify(
    records: &[AuditRecord],
    head: Option<(u64, &str)>,
    now: Timestamp,
) -> Result<AuditSummary, AuditBreak> {
    let mut sorted: Vec<&AuditRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.seq);
    let Some(first) = sorted.first() else {
        return match head {
            None => Ok(AuditSummary {
                records: 0,
                first_seq: 0,
                last_seq: 0,
                head: GENESIS.into(),
            }),
            Some((seq, _)) => Err(AuditBreak {
                seq: 1.min(seq),
                reason: "missing (the head names records that are gone)",
            }),
        };
    };
    if first.seq != 1 {
        let expired = now.duration_since(first.at).as_hours() >= RETENTION_DAYS * 24 - 24 * 7;
        if !expired {
            return Err(AuditBreak {
                seq: 1,
                reason: "missing (the chain does not start at 1 within the retention)",
            });
        }
    }
    let mut prev: Option<&AuditRecord> = None;
    for r in &sorted {
        if let Some(p) = prev {
            if r.seq == p.seq {
                return Err(AuditBreak {
                    seq: r.seq,
                    reason: "duplicated",
                });
            }
            if r.seq != p.seq + 1 {
                return Err(AuditBreak {
                    seq: p.seq + 1,
                    reason: "missing",
                });
            }
            if r.prev != p.hash {
                return Err(AuditBreak {
                    seq: r.seq,
                    reason: "does not follow the record before (reordered or replaced)",
                });
            }
        } else if r.seq == 1 && r.prev != GENESIS {
            return Err(AuditBreak {
                seq: 1,
                reason: "does not start the chain",
            });
        }
        if r.compute_hash() != r.hash {
            return Err(AuditBreak {
                seq: r.seq,
                reason: "changed (its hash does not match its contents)",
            });
        }
        prev = Some(r);
    }
    let last = prev.unwrap_or(first);
    if let Some((seq, hash)) = head {
        // The head names the last record, or (an append stopped between writing its record
        // and moving the head; the next append moves it) the one before it.
        let names = |r: &AuditRecord| r.seq == seq && r.hash == hash;
        let one_behind =
            seq + 1 == last.seq && sorted.iter().rev().nth(1).is_some_and(|r| names(r));
        if !names(last) && !one_behind {
            return Err(AuditBreak {
                seq: last.seq + 1,
                reason: "missing (the head names a later record)",
            });
        }
    }
    Ok(AuditSummary {
        records: sorted.len(),
        first_seq: first.seq,
        last_seq: last.seq,
        head: last.hash.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let p = PracticeId::parse("demo").unwrap();
        let mut out: Vec<AuditRecord> = Vec::new();
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let ev = AuditEvent::new("admin", "policy_changed")
                .details(serde_json::json!({"i": i, "mode": "auto"}));
            let r = AuditRecord::next(
                &p,
                prev,
                &ev,
                t0 + jiff::SignedDuration::from_secs(i as i64),
            );
            out.push(r);
        }
        out
    }

    fn head(c: &[AuditRecord]) -> Option<(u64, &str)> {
        c.last().map(|r| (r.seq, r.hash.as_str()))
    }

    fn now() -> Timestamp {
        "2026-11-24T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let s = verify(&c, head(&c), now()).unwrap();
        assert_eq!((s.records, s.first_seq, s.last_seq), (5, 1, 5));
        assert!(verify(&[], None, now()).is_ok());
    }

    #[test]
    fn a_changed_record_is_named() {
        let mut c = chain(5);
        let h = head(&c).map(|(s, h)| (s, h.to_owned()));
        c[2].details = r#"{"i":2,"mode":"off"}"#.into();
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!(e.seq, 3);
        // Rehashing the changed record breaks the link to the next one instead.
        c[2].hash = c[2].compute_hash();
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!(e.seq, 4);
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut c = chain(5);
        let h = head(&c).map(|(s, h)| (s, h.to_owned()));
        c.remove(1);
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!((e.seq, e.reason), (2, "missing"));
        // The newest removed: the head still names it.
        let mut c = chain(5);
        let h = head(&c).map(|(s, h)| (s, h.to_owned()));
        c.pop();
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!(e.seq, 5);
        // The first removed within the retention.
        let mut c = chain(3);
        let h = head(&c).map(|(s, h)| (s, h.to_owned()));
        c.remove(0);
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!(e.seq, 1);
        // ...but after six years the TTL may have taken it.
        let later = now() + jiff::SignedDuration::from_hours(24 * RETENTION_DAYS);
        assert!(verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), later).is_ok());
    }

    #[test]
    fn a_head_one_record_behind_verifies_and_no_further() {
        // An append that stopped between its record and the head: the next append moves the
        // head; until then the chain verifies with the head one behind.
        let c = chain(5);
        let behind = (c[3].seq, c[3].hash.clone());
        let s = verify(&c, Some((behind.0, behind.1.as_str())), now()).unwrap();
        assert_eq!(s.last_seq, 5);
        // Two behind: a record was removed after the head, or the head was rolled back.
        let two = (c[2].seq, c[2].hash.clone());
        assert!(verify(&c, Some((two.0, two.1.as_str())), now()).is_err());
        // One behind by number but naming another hash: not this chain's record.
        assert!(verify(&c, Some((4, c[2].hash.as_str())), now()).is_err());
        // The newest record removed while the head was one behind cannot be told from an
        // append in flight: the window is one record, for the moment between two writes.
        let mut short = c.clone();
        short.pop();
        assert!(verify(&short, Some((behind.0, behind.1.as_str())), now()).is_ok());
    }

    #[test]
    fn reordered_records_are_named() {
        let mut c = chain(5);
        let h = head(&c).map(|(s, h)| (s, h.to_owned()));
        // Swap the contents of records 2 and 3 but keep their sequence numbers.
        let (a, b) = (c[1].clone(), c[2].clone());
        c[1] = AuditRecord { seq: 2, ..b };
        c[2] = AuditRecord { seq: 3, ..a };
        let e = verify(&c, h.as_ref().map(|(s, h)| (*s, h.as_str())), now()).unwrap_err();
        assert_eq!(e.seq, 2);
    }
}
