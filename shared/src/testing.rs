//! In-memory implementations of every port, for tests (`#[cfg(test)]` here, the `testing`
//! feature elsewhere). Never built into a Lambda.
//!
//! [`MemStore`] keeps what the DynamoDB adapter (`infra/pil-aws/src/store/`) keeps, and answers
//! as it does:
//!
//! - every record is one item in the practice's partition, keyed by the adapter's sort key;
//!   its domain value goes through serde on every write and read (as the adapter's `doc`
//!   map does), so a field serde would lose is lost here too;
//! - writes are conditional exactly where the adapter's are: `put_entity` and
//!   `put_practice` fail with [`StoreError::Conflict`] when the stored version is not the
//!   expected one (or the record exists when `None` was expected); `create_action`,
//!   `update_action`, `delete_record`, `consume_token` and `reserve_auto_approval` answer
//!   `Ok(false)` where the adapter maps its failed condition to `false`;
//! - entity versions are `expected + 1` (1 on create), action revisions 0 on create and
//!   `rev + 1` on update, the practice's version is the one it carries;
//! - the indexes hold what the adapter's sparse indexes hold, in their sort order: the due
//!   index sorts by `"{due}#{sort key}"` (the `due_on` given to the last `put_entity`; a put
//!   without one takes the record out), the slot pool by `"{due_since}#{action id}"`, the
//!   per-patient index by sort key. Unlike DynamoDB's global indexes they are never stale.
//!
//! The other fakes record what they were given: [`MemBus`] (candidates, domain events, mail),
//! [`MemTransport`] (trigger posts, with scripted replies), [`FixedClock`], and [`MemKeys`]
//! (a reversible "seal", for secrets at rest). [`World`] wires them together and builds each
//! service's deps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::action::{Action, ActionKind, ActionStatus};
use crate::ids::{ActionId, OpaqueRef, PracticeId};
use crate::ports::{
    ActionRepo, CandidateBatch, CandidateSink, Clock, DomainEvent, DueIndex, EntityRepo,
    EventPublisher, KeyService, Mail, Mailer, PatientIndex, PatientRecord, PatientRecords,
    PortError, PracticeRepo, RecordKey, SlotIndex, StoreError, TokenLedger, TransportError,
    TransportReply, TriggerTransport,
};
use crate::practice::{Practice, TriggerUrl};
use crate::secrets::SecretCache;
use crate::service::emitter::{EmitterDeps, RetryPolicy};
use crate::service::receiver::ReceiverDeps;
use crate::service::scan::ScanDeps;
use crate::service::slots::SlotDeps;
use crate::state::{Appointment, Entity, EntityKey, Stored};
use crate::treatment::Treatment;

/// Sorts after every date in the due index's sort keys (as in the adapter).
const DUE_KEY_END: &str = "~";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock has failed already; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `doc` round trip: what the adapter stores is what serde makes of the value.
fn doc<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, StoreError> {
    let json = serde_json::to_value(v).map_err(|_| StoreError::Permanent("serialize".into()))?;
    serde_json::from_value(json).map_err(|_| StoreError::Permanent("deserialize".into()))
}

/// One item of a practice's partition.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// `ver` is the version; `due` the due-index date (`gsi2`), if any.
    Entity {
        value: Entity,
        ver: u64,
        due: Option<Date>,
    },
    /// `rev` is the revision (the stored `doc.rev` is ignored, as the adapter does).
    Action { value: Action, rev: u64 },
}

impl Item {
    /// The per-patient index key (`gsi1pk` minus the practice), if the item is in it.
    fn patient(&self) -> Option<&OpaqueRef> {
        match self {
            Self::Entity {
                value: e @ Entity::Appointment(_),
                ..
            } => e.patient(),
            Self::Action { value, .. } => Some(&value.patient_ref),
            Self::Entity { .. } => None,
        }
    }

    fn action(&self) -> Option<Action> {
        match self {
            Self::Action { value, rev } => Some(Action {
                rev: *rev,
                ..value.clone()
            }),
            Self::Entity { .. } => None,
        }
    }

    fn stored_entity(&self) -> Option<Stored<Entity>> {
        match self {
            Self::Entity { value, ver, .. } => Some(Stored {
                value: value.clone(),
                version: *ver,
            }),
            Self::Action { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Tables {
    /// Practice configs with their `ver`.
    practices: BTreeMap<PracticeId, (Practice, u64)>,
    /// `(practice, sort key)` → item: entities (`APPT#`, `PT#`, `CONSENT#`, `SLOT#`) and
    /// actions (`ACTION#`).
    items: BTreeMap<(PracticeId, String), Item>,
    /// Auto-approval counters, `(practice, "{day}#{kind}")` → n.
    auto: BTreeMap<(PracticeId, String), BTreeSet<ActionId>>,
    /// Used token nonces.
    tokens: BTreeSet<(PracticeId, String)>,
    /// Audit chains, per practice, in append order.
    audit: BTreeMap<PracticeId, Vec<crate::audit::AuditRecord>>,
    /// Tombstones of erased and rotated refs.
    tombstones: BTreeMap<(PracticeId, crate::tombstone::TombstoneId), crate::tombstone::Tombstone>,
    /// Refusal counts: `(practice, hour, code, rule, path)` → n.
    refusals: BTreeMap<(PracticeId, Timestamp, String, String, String), u64>,
}

/// A record as a test reads it back: the value, its version, its due-index date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub sort_key: String,
    pub entity: Entity,
    pub version: u64,
    pub due_on: Option<Date>,
}

/// The in-memory store: every storage port, with the DynamoDB adapter's semantics.
#[derive(Debug, Default)]
pub struct MemStore {
    t: Mutex<Tables>,
    writes: Mutex<usize>,
    /// Fail the write with this (0-based) number, once, with a transient error.
    fail_write: Mutex<Option<usize>>,
    /// Stale "recent" reads: how many writes they may miss, and the states they read from.
    lag: Mutex<Option<(usize, Vec<Tables>)>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes write number `n` (counting from 0 over every conditional write this store has
    /// seen) fail once with [`StoreError::Transient`], before it takes effect.
    pub fn fail_write_at(&self, n: usize) {
        *lock(&self.fail_write) = Some(n);
    }

    /// Writes attempted so far (including failed ones).
    pub fn writes(&self) -> usize {
        *lock(&self.writes)
    }

    /// From now on, `get_practice_recent` and `get_entity_recent` read a state up to `writes`
    /// writes old (as an eventually consistent read may): never older than now, never the
    /// current one once a write has happened. Consistent reads stay current.
    pub fn lag_recent_reads(&self, writes: usize) {
        let now = lock(&self.t).clone();
        *lock(&self.lag) = (writes > 0).then(|| (writes, vec![now]));
    }

    /// `f` over the tables a "recent" read sees (the current ones unless reads lag).
    fn with_recent<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        match &*lock(&self.lag) {
            Some((n, states)) => f(&states[states.len().saturating_sub(*n)]),
            None => f(&lock(&self.t)),
        }
    }

    fn write(&self) -> Result<(), StoreError> {
        // The state before this write, once (a failed conditional write changes nothing, so
        // retries do not bring the stale reads closer to now).
        // Only the last `n` states can be read, so only those are kept.
        if let Some((n, states)) = &mut *lock(&self.lag) {
            let now = lock(&self.t).clone();
            if states.last() != Some(&now) {
                states.push(now);
                if states.len() > *n {
                    states.remove(0);
                }
            }
        }
        let n = {
            let mut w = lock(&self.writes);
            *w += 1;
            *w - 1
        };
        let mut f = lock(&self.fail_write);
        if *f == Some(n) {
            *f = None;
            return Err(StoreError::Transient("injected failure".into()));
        }
        Ok(())
    }

    /// Every entity of the practice, in sort-key order.
    pub fn entities(&self, practice: &PracticeId) -> Vec<EntityRow> {
        lock(&self.t)
            .items
            .iter()
            .filter(|((p, _), _)| p == practice)
            .filter_map(|((_, sk), item)| match item {
                Item::Entity { value, ver, due } => Some(EntityRow {
                    sort_key: sk.clone(),
                    entity: value.clone(),
                    version: *ver,
                    due_on: *due,
                }),
                Item::Action { .. } => None,
            })
            .collect()
    }

    /// Every action of the practice (with its revision), in id order.
    /// The practice's tombstones, by id.
    pub fn tombstones(&self, practice: &PracticeId) -> Vec<crate::tombstone::Tombstone> {
        lock(&self.t)
            .tombstones
            .iter()
            .filter(|((p, _), _)| p == practice)
            .map(|(_, t)| t.clone())
            .collect()
    }

    pub fn actions(&self, practice: &PracticeId) -> Vec<Action> {
        lock(&self.t)
            .items
            .iter()
            .filter(|((p, _), _)| p == practice)
            .filter_map(|(_, item)| item.action())
            .collect()
    }

    /// The practice's due index as DynamoDB would list it: `(due date, key)`, ascending.
    pub fn due_index(&self, practice: &PracticeId) -> Vec<(Date, EntityKey)> {
        let t = lock(&self.t);
        let mut rows: Vec<(String, Date, EntityKey)> = t
            .items
            .iter()
            .filter(|((p, _), _)| p == practice)
            .filter_map(|((_, sk), item)| match item {
                Item::Entity {
                    value,
                    due: Some(d),
                    ..
                } => Some((format!("{d}#{sk}"), *d, value.key())),
                _ => None,
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().map(|(_, d, k)| (d, k)).collect()
    }

    fn items_of<'a>(
        t: &'a Tables,
        practice: &'a PracticeId,
    ) -> impl Iterator<Item = (&'a String, &'a Item)> + 'a {
        t.items
            .range((practice.clone(), String::new())..)
            .take_while(move |((p, _), _)| p == practice)
            .map(|((_, sk), item)| (sk, item))
    }

    /// The per-patient index (`ByPatient`) for one patient: `(gsi1sk, item)` in index order.
    fn by_patient<'a>(
        t: &'a Tables,
        practice: &'a PracticeId,
        patient: &'a OpaqueRef,
    ) -> Vec<(&'a String, &'a Item)> {
        // gsi1sk is the item's sort key, so partition order is index order.
        Self::items_of(t, practice)
            .filter(|(_, item)| item.patient() == Some(patient))
            .collect()
    }
}

fn practice_in(t: &Tables, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
    match t.practices.get(id) {
        Some((p, ver)) => {
            let mut p = doc(p)?;
            p.version = *ver;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

fn entity_in(
    t: &Tables,
    practice: &PracticeId,
    key: &EntityKey,
) -> Result<Option<Stored<Entity>>, StoreError> {
    match t.items.get(&(practice.clone(), key.sort_key())) {
        // An action's sort key never parses as an entity key, so this is an entity.
        Some(item) => match item.stored_entity() {
            Some(s) => Ok(Some(Stored {
                value: doc(&s.value)?,
                version: s.version,
            })),
            None => Err(StoreError::Permanent("deserialize".into())),
        },
        None => Ok(None),
    }
}

#[async_trait]
impl PracticeRepo for MemStore {
    async fn get_practice(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        practice_in(&lock(&self.t), id)
    }

    async fn get_practice_recent(&self, id: &PracticeId) -> Result<Option<Practice>, StoreError> {
        self.with_recent(|t| practice_in(t, id))
    }

    async fn put_practice(
        &self,
        practice: &Practice,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let value = doc(practice)?;
        self.write()?;
        let mut t = lock(&self.t);
        let current = t.practices.get(&practice.id).map(|(_, v)| *v);
        // `Some`: `#v = :v` (fails when absent); `None`: config and listing must not exist.
        if current != expected {
            return Err(StoreError::Conflict);
        }
        t.practices
            .insert(practice.id.clone(), (value, practice.version));
        Ok(())
    }

    async fn list_practices(&self) -> Result<Vec<PracticeId>, StoreError> {
        Ok(lock(&self.t).practices.keys().cloned().collect())
    }
}

#[async_trait]
impl EntityRepo for MemStore {
    async fn get_entity(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        entity_in(&lock(&self.t), practice, key)
    }

    async fn get_entity_recent(
        &self,
        practice: &PracticeId,
        key: &EntityKey,
    ) -> Result<Option<Stored<Entity>>, StoreError> {
        self.with_recent(|t| entity_in(t, practice, key))
    }

    async fn put_entity(
        &self,
        practice: &PracticeId,
        entity: &Entity,
        expected: Option<u64>,
        due_on: Option<Date>,
    ) -> Result<(), StoreError> {
        let value = doc(entity)?;
        self.write()?;
        let mut t = lock(&self.t);
        let k = (practice.clone(), entity.key().sort_key());
        let current = match t.items.get(&k) {
            Some(Item::Entity { ver, .. }) => Some(Some(*ver)),
            // An item without `ver`: `#v = :v` fails, and so does `attribute_not_exists(pk)`.
            Some(Item::Action { .. }) => Some(None),
            None => None,
        };
        let holds = match (expected, current) {
            (Some(v), Some(Some(cur))) => v == cur,
            (None, None) => true,
            _ => false,
        };
        if !holds {
            return Err(StoreError::Conflict);
        }
        t.items.insert(
            k,
            Item::Entity {
                value,
                ver: expected.map_or(1, |v| v + 1),
                due: due_on,
            },
        );
        Ok(())
    }
}

#[async_trait]
impl crate::ports::RefusalLog for MemStore {
    async fn count_refusal(
        &self,
        practice: &PracticeId,
        at: Timestamp,
        code: &'static str,
        rule: &'static str,
        path: &str,
    ) -> Result<(), StoreError> {
        let hour =
            Timestamp::from_second(at.as_second() - at.as_second().rem_euclid(3600)).unwrap_or(at);
        let mut t = lock(&self.t);
        *t.refusals
            .entry((
                practice.clone(),
                hour,
                code.to_owned(),
                rule.to_owned(),
                path.to_owned(),
            ))
            .or_default() += 1;
        Ok(())
    }

    async fn refusals(
        &self,
        practice: &PracticeId,
        since: Timestamp,
    ) -> Result<Vec<crate::ports::RefusalCount>, StoreError> {
        let from = since.as_second() - since.as_second().rem_euclid(3600);
        let t = lock(&self.t);
        Ok(t.refusals
            .iter()
            .filter(|((p, h, ..), _)| p == practice && h.as_second() >= from)
            .map(
                |((_, hour, code, rule, path), n)| crate::ports::RefusalCount {
                    hour: *hour,
                    code: code.clone(),
                    rule: rule.clone(),
                    path: path.clone(),
                    count: *n,
                },
            )
            .collect())
    }
}

#[async_trait]
impl DueIndex for MemStore {
    async fn due_keys(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<EntityKey>, StoreError> {
        let bound = format!("{day}#{DUE_KEY_END}");
        let t = lock(&self.t);
        let mut rows: Vec<(String, &String)> = Self::items_of(&t, practice)
            .filter_map(|(sk, item)| match item {
                Item::Entity { due: Some(d), .. } => Some((format!("{d}#{sk}"), sk)),
                _ => None,
            })
            .filter(|(gsi2sk, _)| *gsi2sk <= bound)
            .collect();
        rows.sort();
        // The adapter's query asks for at least one item even when `limit` is 0.
        Ok(rows
            .into_iter()
            .take(limit.max(1))
            .filter_map(|(_, sk)| EntityKey::parse_sort_key(sk))
            .collect())
    }

    async fn due_records(
        &self,
        practice: &PracticeId,
        day: Date,
        limit: usize,
    ) -> Result<Vec<Stored<Entity>>, StoreError> {
        let mut out = Vec::new();
        for key in self.due_keys(practice, day, limit).await? {
            if let Some(e) = self.get_entity(practice, &key).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn due_page(
        &self,
        practice: &PracticeId,
        day: Date,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EntityKey>, Option<String>), StoreError> {
        let bound = format!("{day}#{DUE_KEY_END}");
        let t = lock(&self.t);
        let mut rows: Vec<(String, &String)> = Self::items_of(&t, practice)
            .filter_map(|(sk, item)| match item {
                Item::Entity { due: Some(d), .. } => Some((format!("{d}#{sk}"), sk)),
                _ => None,
            })
            .filter(|(gsi2sk, _)| *gsi2sk <= bound && after.is_none_or(|a| gsi2sk.as_str() > a))
            .collect();
        rows.sort();
        rows.truncate(limit.max(1));
        let cursor = (rows.len() >= limit)
            .then(|| rows.last().map(|(c, _)| c.clone()))
            .flatten();
        Ok((
            rows.into_iter()
                .filter_map(|(_, sk)| EntityKey::parse_sort_key(sk))
                .collect(),
            cursor,
        ))
    }
}

#[async_trait]
impl SlotIndex for MemStore {
    async fn slot_pool(
        &self,
        practice: &PracticeId,
        treatment: Treatment,
        through: Date,
        limit: usize,
    ) -> Result<Vec<ActionId>, StoreError> {
        let bound = format!("{through}#{DUE_KEY_END}");
        let t = lock(&self.t);
        let mut rows: Vec<(String, ActionId)> = Self::items_of(&t, practice)
            .filter_map(|(_, item)| item.action())
            .filter(|a| a.in_slot_pool() && a.treatment == treatment)
            .map(|a| (format!("{}#{}", a.due_since, a.id), a.id))
            .filter(|(gsi2sk, _)| *gsi2sk <= bound)
            .collect();
        rows.sort();
        Ok(rows
            .into_iter()
            .take(limit.max(1))
            .map(|(_, id)| id)
            .collect())
    }

    async fn slots_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError> {
        let mut slots = self.filed_at(practice, provider, starts_at, |e| match e {
            Entity::Slot(s) => Some((s.slot_ref.clone(), &s.provider_ref, s.starts_at)),
            _ => None,
        });
        slots.truncate(10);
        Ok(slots)
    }

    async fn appointments_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
    ) -> Result<Vec<OpaqueRef>, StoreError> {
        Ok(self.filed_at(practice, provider, starts_at, |e| match e {
            Entity::Appointment(a) => a
                .placed_at()
                .map(|(p, at)| (a.appointment_ref.clone(), p, at)),
            _ => None,
        }))
    }
}

impl MemStore {
    /// The records `place` files at this provider and start, as the adapter keys them (the
    /// start in whole seconds).
    fn filed_at(
        &self,
        practice: &PracticeId,
        provider: &OpaqueRef,
        starts_at: Timestamp,
        place: impl Fn(&Entity) -> Option<(OpaqueRef, &OpaqueRef, Timestamp)>,
    ) -> Vec<OpaqueRef> {
        let t = lock(&self.t);
        Self::items_of(&t, practice)
            .filter_map(|(_, item)| match item {
                Item::Entity { value, .. } => place(value),
                _ => None,
            })
            .filter(|(_, p, at)| *p == provider && at.as_second() == starts_at.as_second())
            .map(|(r, _, _)| r)
            .collect()
    }
}

#[async_trait]
impl PatientIndex for MemStore {
    async fn appointments_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Appointment>, StoreError> {
        let t = lock(&self.t);
        Self::by_patient(&t, practice, patient)
            .into_iter()
            .filter(|(sk, _)| sk.starts_with("APPT#"))
            .filter_map(|(_, item)| match item {
                Item::Entity {
                    value: Entity::Appointment(a),
                    ..
                } => Some(doc(a)),
                _ => None,
            })
            .collect()
    }

    async fn actions_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Action>, StoreError> {
        let t = lock(&self.t);
        Self::by_patient(&t, practice, patient)
            .into_iter()
            .filter(|(sk, _)| sk.starts_with("ACTION#"))
            .filter_map(|(_, item)| item.action())
            .map(|a| {
                let rev = a.rev;
                doc(&a).map(|a| Action { rev, ..a })
            })
            .collect()
    }
}

#[async_trait]
impl crate::ports::TombstoneRepo for MemStore {
    async fn tombstones(
        &self,
        practice: &PracticeId,
        ids: &[crate::tombstone::TombstoneId],
    ) -> Result<Vec<crate::tombstone::Tombstone>, StoreError> {
        let t = lock(&self.t);
        let unique: BTreeSet<&crate::tombstone::TombstoneId> = ids.iter().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| t.tombstones.get(&(practice.clone(), id.clone())).cloned())
            .collect())
    }

    async fn tombstone(
        &self,
        practice: &PracticeId,
        id: &crate::tombstone::TombstoneId,
    ) -> Result<Option<crate::tombstone::Tombstone>, StoreError> {
        Ok(lock(&self.t)
            .tombstones
            .get(&(practice.clone(), id.clone()))
            .cloned())
    }

    async fn put_tombstone(
        &self,
        practice: &PracticeId,
        tombstone: &crate::tombstone::Tombstone,
    ) -> Result<(), StoreError> {
        self.write()?;
        lock(&self.t)
            .tombstones
            .insert((practice.clone(), tombstone.id.clone()), tombstone.clone());
        Ok(())
    }

    async fn tombstones_to(
        &self,
        practice: &PracticeId,
        to: &OpaqueRef,
    ) -> Result<Vec<crate::tombstone::Tombstone>, StoreError> {
        Ok(lock(&self.t)
            .tombstones
            .iter()
            .filter(|((p, _), t)| p == practice && t.to() == Some(to))
            .map(|(_, t)| t.clone())
            .collect())
    }
}

#[async_trait]
impl PatientRecords for MemStore {
    async fn records_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<PatientRecord>, StoreError> {
        let t = lock(&self.t);
        let pt_prefix = format!("PT#{patient}#");
        let consent_key = EntityKey::Consent(patient.clone()).sort_key();
        // As the adapter: the `PT#{ref}#` items, the consent item, then the per-patient index
        // (appointments and actions, in index order).
        let mut out = Vec::new();
        for (_, item) in Self::items_of(&t, practice).filter(|(sk, _)| sk.starts_with(&pt_prefix)) {
            out.extend(item.stored_entity().map(PatientRecord::Entity));
        }
        if let Some(item) = t.items.get(&(practice.clone(), consent_key)) {
            out.extend(item.stored_entity().map(PatientRecord::Entity));
        }
        for (sk, item) in Self::by_patient(&t, practice, patient) {
            if sk.starts_with("APPT#") {
                out.extend(item.stored_entity().map(PatientRecord::Entity));
            } else if sk.starts_with("ACTION#") {
                out.extend(item.action().map(PatientRecord::Action));
            }
        }
        Ok(out)
    }

    async fn delete_record(
        &self,
        practice: &PracticeId,
        key: &RecordKey,
        expected: u64,
    ) -> Result<bool, StoreError> {
        self.write()?;
        let mut t = lock(&self.t);
        let k = (practice.clone(), key.sort_key());
        // `#v = :v` on `ver` for an entity key, on `rev` for an action key.
        let current = match (key, t.items.get(&k)) {
            (RecordKey::Entity(_), Some(Item::Entity { ver, .. })) => Some(*ver),
            (RecordKey::Action(_), Some(Item::Action { rev, .. })) => Some(*rev),
            _ => None,
        };
        if current != Some(expected) {
            return Ok(false);
        }
        t.items.remove(&k);
        Ok(true)
    }
}

#[async_trait]
impl ActionRepo for MemStore {
    async fn create_action(&self, action: &Action) -> Result<bool, StoreError> {
        let value = doc(action)?;
        self.write()?;
        let mut t = lock(&self.t);
        let k = (action.practice_id.clone(), format!("ACTION#{}", action.id));
        if t.items.contains_key(&k) {
            return Ok(false);
        }
        t.items.insert(k, Item::Action { value, rev: 0 });
        Ok(true)
    }

    async fn get_action(
        &self,
        practice: &PracticeId,
        id: &ActionId,
    ) -> Result<Option<Action>, StoreError> {
        let found = lock(&self.t)
            .items
            .get(&(practice.clone(), format!("ACTION#{id}")))
            .and_then(Item::action);
        match found {
            Some(a) => {
                let rev = a.rev;
                Ok(Some(Action { rev, ..doc(&a)? }))
            }
            None => Ok(None),
        }
    }

    async fn update_action(&self, action: &Action) -> Result<bool, StoreError> {
        let value = doc(action)?;
        self.write()?;
        let mut t = lock(&self.t);
        let k = (action.practice_id.clone(), format!("ACTION#{}", action.id));
        match t.items.get(&k) {
            Some(Item::Action { rev, .. }) if *rev == action.rev => {}
            _ => return Ok(false),
        }
        t.items.insert(
            k,
            Item::Action {
                value,
                rev: action.rev + 1,
            },
        );
        Ok(true)
    }

    async fn reserve_auto_approval(
        &self,
        practice: &PracticeId,
        kind: ActionKind,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        self.reserve_in_set(practice, format!("{day}#{kind}"), max, action)
    }

    async fn reserve_nightly(
        &self,
        practice: &PracticeId,
        day: Date,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        self.reserve_in_set(practice, format!("NIGHT#{day}"), max, action)
    }
}

impl MemStore {
    /// As the adapter's id-set counters: `attribute_not_exists(ids) OR size(ids) < :max OR
    /// contains(ids, :id)`, then `ADD ids :id`. The first reservation is granted even when
    /// `max` is 0, as in the adapter.
    fn reserve_in_set(
        &self,
        practice: &PracticeId,
        key: String,
        max: u32,
        action: &ActionId,
    ) -> Result<bool, StoreError> {
        self.write()?;
        let mut t = lock(&self.t);
        let ids = t.auto.entry((practice.clone(), key)).or_default();
        if ids.is_empty() || ids.len() < max as usize || ids.contains(action) {
            ids.insert(action.clone());
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

#[async_trait]
impl crate::ports::ActionLog for MemStore {
    async fn practice_actions(&self, practice: &PracticeId) -> Result<Vec<Action>, StoreError> {
        Ok(self.actions(practice))
    }

    async fn outbox(
        &self,
        practice: &PracticeId,
        decided_before: Timestamp,
    ) -> Result<Vec<Action>, StoreError> {
        let mut found: Vec<Action> = self
            .practice_actions(practice)
            .await?
            .into_iter()
            .filter(|a| a.in_outbox() && a.decided_at.unwrap_or(a.created_at) < decided_before)
            .collect();
        found.sort_by_key(|a| a.decided_at);
        Ok(found)
    }

    async fn delivered_between(
        &self,
        practice: &PracticeId,
        from: Date,
        to: Date,
    ) -> Result<Vec<Action>, StoreError> {
        Ok(self
            .practice_actions(practice)
            .await?
            .into_iter()
            .filter(|a| {
                a.status == ActionStatus::Delivered
                    && a.delivered_at.is_some_and(|at| {
                        let day = at.to_zoned(jiff::tz::TimeZone::UTC).date();
                        from <= day && day <= to
                    })
            })
            .collect())
    }
}

#[async_trait]
impl TokenLedger for MemStore {
    async fn consume_token(
        &self,
        practice: &PracticeId,
        nonce: &str,
        _keep_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write()?;
        Ok(lock(&self.t)
            .tokens
            .insert((practice.clone(), nonce.to_owned())))
    }
}

#[async_trait]
impl crate::ports::AuditLog for MemStore {
    async fn append(
        &self,
        practice: &PracticeId,
        event: &crate::audit::AuditEvent,
        at: Timestamp,
    ) -> Result<crate::audit::AuditRecord, StoreError> {
        self.write()?;
        let mut t = lock(&self.t);
        let chain = t.audit.entry(practice.clone()).or_default();
        let prev = chain.last().map(|r| (r.seq, r.hash.clone()));
        let r = crate::audit::AuditRecord::next(
            practice,
            prev.as_ref().map(|(s, h)| (*s, h.as_str())),
            event,
            at,
        );
        chain.push(r.clone());
        Ok(r)
    }

    async fn audit_trail(
        &self,
        practice: &PracticeId,
    ) -> Result<(Vec<crate::audit::AuditRecord>, Option<(u64, String)>), StoreError> {
        let t = lock(&self.t);
        let chain = t.audit.get(practice).cloned().unwrap_or_default();
        let head = chain.last().map(|r| (r.seq, r.hash.clone()));
        Ok((chain, head))
    }
}

/// Records what the services hand on: candidate batches, domain events, mail.
#[derive(Debug, Default)]
pub struct MemBus {
    candidates: Mutex<Vec<CandidateBatch>>,
    events: Mutex<Vec<DomainEvent>>,
    notices: Mutex<Vec<DomainEvent>>,
    mail: Mutex<Vec<Mail>>,
}

impl MemBus {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn candidates(&self) -> Vec<CandidateBatch> {
        lock(&self.candidates).clone()
    }
    pub fn events(&self) -> Vec<DomainEvent> {
        lock(&self.events).clone()
    }
    pub fn mail(&self) -> Vec<Mail> {
        lock(&self.mail).clone()
    }
    pub fn notices(&self) -> Vec<DomainEvent> {
        lock(&self.notices).clone()
    }
}

#[async_trait]
impl crate::ports::NoticeSink for MemBus {
    async fn notice(&self, event: &DomainEvent) -> Result<(), PortError> {
        lock(&self.notices).push(event.clone());
        Ok(())
    }
}

#[async_trait]
impl CandidateSink for MemBus {
    async fn send_candidates(&self, batch: &CandidateBatch) -> Result<(), PortError> {
        lock(&self.candidates).push(batch.clone());
        Ok(())
    }
}

#[async_trait]
impl EventPublisher for MemBus {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PortError> {
        lock(&self.events).extend_from_slice(events);
        Ok(())
    }
}

#[async_trait]
impl Mailer for MemBus {
    async fn send(&self, mail: &Mail) -> Result<(), PortError> {
        lock(&self.mail).push(mail.clone());
        Ok(())
    }
}

/// One trigger post as the PMS would have received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// A PMS endpoint: records posts and answers with the scripted replies, then 200.
#[derive(Debug, Default)]
pub struct MemTransport {
    replies: Mutex<VecDeque<Result<TransportReply, TransportError>>>,
    posts: Mutex<Vec<Post>>,
}

impl MemTransport {
    pub fn new() -> Self {
        Self::default()
    }
    /// Queues the answer to a coming post.
    pub fn reply(&self, r: Result<TransportReply, TransportError>) {
        lock(&self.replies).push_back(r);
    }
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.posts).clone()
    }
}

#[async_trait]
impl TriggerTransport for MemTransport {
    async fn post(
        &self,
        url: &TriggerUrl,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<TransportReply, TransportError> {
        lock(&self.posts).push(Post {
            url: url.as_str().to_owned(),
            headers: headers.to_vec(),
            body,
        });
        lock(&self.replies)
            .pop_front()
            .unwrap_or(Ok(TransportReply {
                status: 200,
                retry_after: None,
            }))
    }
}

/// A clock that reads what it was set to.
#[derive(Debug)]
pub struct FixedClock(Mutex<Timestamp>);

impl FixedClock {
    pub fn new(now: Timestamp) -> Self {
        Self(Mutex::new(now))
    }
    pub fn set(&self, now: Timestamp) {
        *lock(&self.0) = now;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *lock(&self.0)
    }
}

/// A key service whose "sealed" form is `mem:`, the context it was sealed under
/// (`practice/purpose`), `:` and the base64 of the plaintext. Like KMS with an encryption
/// context, it opens a value only under the context it was sealed with. A value sealed
/// without one (`mem:` and the base64: [`MemKeys::seal_unbound`], what records written before
/// contexts hold) opens only through [`KeyService::open_unbound`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MemKeys;

const SEALED_PREFIX: &str = "mem:";

impl MemKeys {
    /// Seals without a context, as secrets were sealed before they were bound to one.
    pub fn seal_unbound(plaintext: &[u8]) -> String {
        format!("{SEALED_PREFIX}{}", STANDARD.encode(plaintext))
    }
}

fn mem_context(c: &crate::ports::SecretContext) -> String {
    format!("{}/{}", c.practice, c.purpose.as_str())
}

#[async_trait]
impl KeyService for MemKeys {
    async fn seal(
        &self,
        context: &crate::ports::SecretContext,
        plaintext: &[u8],
    ) -> Result<String, PortError> {
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            mem_context(context),
            STANDARD.encode(plaintext)
        ))
    }
    async fn open(
        &self,
        context: &crate::ports::SecretContext,
        sealed: &str,
    ) -> Result<Vec<u8>, PortError> {
        sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .filter(|(c, _)| *c == mem_context(context))
            .and_then(|(_, b)| STANDARD.decode(b).ok())
            .ok_or_else(|| PortError::Permanent("not sealed by MemKeys under this context".into()))
    }
    async fn open_unbound(&self, sealed: &str) -> Result<Vec<u8>, PortError> {
        sealed
            .strip_prefix(SEALED_PREFIX)
            .filter(|b| !b.contains(':'))
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(|| PortError::Permanent("not sealed by MemKeys without a context".into()))
    }
}

/// Every fake, wired: one store, one bus, one clock, one key service.
pub struct World {
    pub store: MemStore,
    pub bus: MemBus,
    pub transport: MemTransport,
    pub clock: FixedClock,
    pub secrets: SecretCache,
}

impl World {
    pub fn new(now: Timestamp) -> Self {
        Self {
            store: MemStore::new(),
            bus: MemBus::new(),
            transport: MemTransport::new(),
            clock: FixedClock::new(now),
            secrets: SecretCache::new(Arc::new(MemKeys), Duration::from_secs(300)),
        }
    }

    pub fn keys(&self) -> &dyn KeyService {
        self.secrets.keys()
    }

    pub fn receiver(&self) -> ReceiverDeps<'_> {
        ReceiverDeps {
            practices: &self.store,
            entities: &self.store,
            actions: &self.store,
            records: &self.store,
            tombstones: &self.store,
            patients: &self.store,
            bus: &self.bus,
            slots: &self.store,
            audit: &self.store,
            secrets: &self.secrets,
            clock: &self.clock,
            refusals: &self.store,
        }
    }

    pub fn scan(&self) -> ScanDeps<'_> {
        ScanDeps {
            practices: &self.store,
            entities: &self.store,
            due: &self.store,
            patients: &self.store,
            actions: &self.store,
            candidates: &self.bus,
            log: &self.store,
            bus: &self.bus,
            outbox_grace_seconds: crate::service::scan::OUTBOX_GRACE_SECONDS,
            page_size: crate::service::scan::DUE_PAGE,
            time_budget: crate::service::scan::TIME_BUDGET,
            clock: &self.clock,
        }
    }

    /// The emitter's deps with the default retry policy.
    pub fn emitter(&self) -> EmitterDeps<'_> {
        EmitterDeps {
            practices: &self.store,
            entities: &self.store,
            slots: &self.store,
            actions: &self.store,
            transport: &self.transport,
            audit: &self.store,
            secrets: &self.secrets,
            clock: &self.clock,
            policy: RetryPolicy::default(),
            notices: &self.bus,
        }
    }

    /// approval-check's deps (digest, pages, settings links), links under
    /// `https://pil.example`.
    pub fn approval(&self) -> crate::service::approval::ApprovalDeps<'_> {
        crate::service::approval::ApprovalDeps {
            practices: &self.store,
            actions: &self.store,
            entities: &self.store,
            due: &self.store,
            log: &self.store,
            tokens: &self.store,
            audit: &self.store,
            admin: &self.store,
            bus: &self.bus,
            mailer: &self.bus,
            secrets: &self.secrets,
            clock: &self.clock,
            base_url: "https://pil.example",
        }
    }

    pub fn slots(&self) -> SlotDeps<'_> {
        SlotDeps {
            practices: &self.store,
            entities: &self.store,
            slots: &self.store,
            patients: &self.store,
            actions: &self.store,
            candidates: &self.bus,
            audit: &self.store,
            clock: &self.clock,
        }
    }
}

/// A practice for unit tests: New York, the default policy and settings, one owner, a trigger
/// URL, no sealed secrets.
pub fn practice(id: &str) -> Practice {
    Practice::new(
        PracticeId::parse(id).expect("a valid practice id"),
        "America/New_York".into(),
        vec!["o@x.example".into()],
        "https://pms.example/t".parse().expect("a valid URL"),
        crate::practice::SealedSecrets::default(),
    )
}

/// A proposed neurotoxin rebook nudge (value 450; gap opened 2026-10-30, evidence
/// 2026-08-01; created 2026-11-01 08:00 UTC, expiring 2026-11-15 05:00 UTC) with every optional
/// field empty and revision 0. Tests set what they need with struct-update syntax.
pub fn sample_action(practice: &str, patient: &OpaqueRef, id: &[&str]) -> Action {
    let date = |s: &str| s.parse::<Date>().expect("a date");
    let at = |s: &str| s.parse::<Timestamp>().expect("an instant");
    Action {
        id: ActionId::derive(id),
        practice_id: PracticeId::parse(practice).expect("a practice id"),
        kind: ActionKind::RebookNudge,
        patient_ref: patient.clone(),
        treatment: Treatment::Neurotoxin,
        reason: crate::action::Reason::CycleDue,
        evidence_date: date("2026-08-01"),
        due_since: date("2026-10-30"),
        value: 450,
        status: crate::action::ActionStatus::Proposed,
        created_at: at("2026-11-01T08:00:00Z"),
        expires_at: at("2026-11-15T05:00:00Z"),
        decided_by: None,
        decided_at: None,
        delivered_at: None,
        attempts: 0,
        last_error: None,
        lease_until: None,
        suppression: None,
        converted: None,
        rev: 0,
        slot: None,
        withdrawal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionStatus;
    use crate::state::{Consent, Lww, PatientTreatment};

    fn r(s: &str) -> OpaqueRef {
        OpaqueRef::parse(s).unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }
    fn pid() -> PracticeId {
        PracticeId::parse("mem-clinic").unwrap()
    }
    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    fn action(p: &OpaqueRef, due: &str) -> Action {
        Action {
            evidence_date: d("2026-01-01"),
            due_since: d(due),
            created_at: "2026-05-03T08:00:00Z".parse().unwrap(),
            expires_at: "2026-05-17T04:00:00Z".parse().unwrap(),
            rev: 7,
            ..super::sample_action(
                "mem-clinic",
                p,
                &["mem-clinic", "rebook_nudge", p.as_str(), due],
            )
        }
    }

    #[test]
    fn entity_writes_are_conditional_on_the_version_read() {
        let m = MemStore::new();
        let p = r("p_7Hq2kX9mZ4rT1vB8yW3n");
        let e = Entity::Consent(Consent {
            patient_ref: p.clone(),
            opted_out: None,
        });
        run(async {
            // GIVEN nothing stored: a write expecting a version conflicts, a create succeeds
            assert_eq!(
                m.put_entity(&pid(), &e, Some(1), None).await,
                Err(StoreError::Conflict)
            );
            m.put_entity(&pid(), &e, None, None).await.unwrap();
            // THEN a second create conflicts, and the version moves one by one
            assert_eq!(
                m.put_entity(&pid(), &e, None, None).await,
                Err(StoreError::Conflict)
            );
            m.put_entity(&pid(), &e, Some(1), None).await.unwrap();
            assert_eq!(
                m.put_entity(&pid(), &e, Some(1), None).await,
                Err(StoreError::Conflict)
            );
            let got = m
                .get_entity(&pid(), &EntityKey::Consent(p))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.version, 2);
        });
    }

    #[test]
    fn the_due_index_follows_the_last_put_and_sorts_by_date_then_key() {
        let m = MemStore::new();
        let rec = |who: &str| {
            let mut pt = PatientTreatment::new(r(who), Treatment::Facial);
            pt.recheck_on = None;
            Entity::PatientTreatment(pt)
        };
        let (a, b, c) = (
            rec("p_7Hq2kX9mZ4rT1vB8yW3n"),
            rec("p_Q2w8ErT5yU1iO3pA6sDf"),
            rec("p_Oth5Tr6yU2iO8pA3sD7"),
        );
        run(async {
            m.put_entity(&pid(), &a, None, Some(d("2026-03-02")))
                .await
                .unwrap();
            m.put_entity(&pid(), &b, None, Some(d("2026-03-01")))
                .await
                .unwrap();
            m.put_entity(&pid(), &c, None, Some(d("2026-03-05")))
                .await
                .unwrap();
            let keys = m.due_keys(&pid(), d("2026-03-02"), 10).await.unwrap();
            assert_eq!(keys, vec![b.key(), a.key()]);
            assert_eq!(
                m.due_keys(&pid(), d("2026-03-02"), 1).await.unwrap(),
                vec![b.key()]
            );
            // A put without a due date takes the record out.
            m.put_entity(&pid(), &b, Some(1), None).await.unwrap();
            assert_eq!(
                m.due_keys(&pid(), d("2026-12-31"), 10).await.unwrap(),
                vec![a.key(), c.key()]
            );
            assert!(
                m.due_keys(
                    &PracticeId::parse("other-clinic").unwrap(),
                    d("2026-12-31"),
                    10
                )
                .await
                .unwrap()
                .is_empty()
            );
        });
    }

    #[test]
    fn actions_are_created_once_and_updated_by_revision() {
        let m = MemStore::new();
        let p = r("p_7Hq2kX9mZ4rT1vB8yW3n");
        let a = action(&p, "2026-04-01");
        run(async {
            assert!(m.create_action(&a).await.unwrap());
            assert!(!m.create_action(&a).await.unwrap());
            let mut got = m.get_action(&pid(), &a.id).await.unwrap().unwrap();
            assert_eq!(got.rev, 0, "created at revision 0 whatever it carried");
            got.status = ActionStatus::Pending;
            assert!(m.update_action(&got).await.unwrap());
            assert!(!m.update_action(&got).await.unwrap(), "stale revision");
            let now = m.get_action(&pid(), &a.id).await.unwrap().unwrap();
            assert_eq!((now.rev, now.status), (1, ActionStatus::Pending));
            assert!(
                !m.update_action(&action(&p, "2026-09-09")).await.unwrap(),
                "an update never creates"
            );
            assert_eq!(m.actions_of(&pid(), &p).await.unwrap(), vec![now.clone()]);
            assert_eq!(
                m.slot_pool(&pid(), Treatment::Neurotoxin, d("2026-04-01"), 10)
                    .await
                    .unwrap(),
                vec![a.id.clone()]
            );
            assert!(
                m.slot_pool(&pid(), Treatment::Neurotoxin, d("2026-03-31"), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            // Deletes are conditional on the revision.
            let key = RecordKey::Action(a.id.clone());
            assert!(!m.delete_record(&pid(), &key, 0).await.unwrap());
            assert!(m.delete_record(&pid(), &key, 1).await.unwrap());
            assert!(m.records_of(&pid(), &p).await.unwrap().is_empty());
        });
    }

    #[test]
    fn auto_approvals_and_tokens_are_counted_once() {
        let m = MemStore::new();
        run(async {
            let day = d("2026-05-01");
            let id = |n: u8| {
                ActionId::parse(&format!("act_{}", "a".repeat(25) + &n.to_string())).unwrap()
            };
            for n in 0..2 {
                assert!(
                    m.reserve_auto_approval(&pid(), ActionKind::FollowUp, day, 2, &id(n))
                        .await
                        .unwrap()
                );
            }
            assert!(
                m.reserve_auto_approval(&pid(), ActionKind::FollowUp, day, 2, &id(1))
                    .await
                    .unwrap(),
                "the same action again: granted, not counted twice"
            );
            assert!(
                !m.reserve_auto_approval(&pid(), ActionKind::FollowUp, day, 2, &id(2))
                    .await
                    .unwrap()
            );
            let now = Timestamp::UNIX_EPOCH;
            assert!(m.consume_token(&pid(), "n1", now).await.unwrap());
            assert!(!m.consume_token(&pid(), "n1", now).await.unwrap());
        });
    }

    #[test]
    fn appointments_are_indexed_by_patient_once_known() {
        let m = MemStore::new();
        let p = r("p_7Hq2kX9mZ4rT1vB8yW3n");
        let mut appt = Appointment::new(r("appt_K3j9Hg2Fd8Sa7Lk4"));
        run(async {
            m.put_entity(&pid(), &Entity::Appointment(appt.clone()), None, None)
                .await
                .unwrap();
            assert!(m.appointments_of(&pid(), &p).await.unwrap().is_empty());
            appt.patient = Some(Lww::new(
                crate::state::PatientTreatmentKey {
                    patient_ref: p.clone(),
                    treatment: Treatment::Facial,
                },
                Timestamp::UNIX_EPOCH,
            ));
            m.put_entity(&pid(), &Entity::Appointment(appt.clone()), Some(1), None)
                .await
                .unwrap();
            assert_eq!(m.appointments_of(&pid(), &p).await.unwrap(), vec![appt]);
            assert_eq!(m.records_of(&pid(), &p).await.unwrap().len(), 1);
        });
    }

    #[test]
    fn an_injected_failure_fails_one_write_before_it_lands() {
        let m = MemStore::new();
        let e = Entity::Consent(Consent {
            patient_ref: r("p_7Hq2kX9mZ4rT1vB8yW3n"),
            opted_out: None,
        });
        m.fail_write_at(0);
        run(async {
            assert!(matches!(
                m.put_entity(&pid(), &e, None, None).await,
                Err(StoreError::Transient(_))
            ));
            assert!(m.entities(&pid()).is_empty());
            m.put_entity(&pid(), &e, None, None).await.unwrap();
        });
        assert_eq!(m.writes(), 2);
    }
}
