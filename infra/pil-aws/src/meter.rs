//! Read and write units, counted from the items the SDK sends and gets back, by DynamoDB's
//! published rules (the emulator's ConsumedCapacity is not faithful):
//!
//! - item size: the sum of attribute name lengths and value sizes (strings and binaries by
//!   length, numbers about 1 byte per 2 digits + 1, maps and lists 3 bytes + 1 per element
//!   plus their contents);
//! - a write costs one unit per started KiB; a transactional write twice that;
//! - each global secondary index the write touches costs one index write per started KiB of
//!   the projected item; changing an index key costs two (delete of the old entry, put of the
//!   new); a put that removes the key costs one;
//! - a strongly consistent read costs one unit per started 4 KiB (eventually consistent
//!   half); a query is charged on the summed size of the items it returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;

type Item = HashMap<String, AttributeValue>;

/// An index of the table and what it projects.
#[derive(Debug, Clone, Copy)]
pub struct IndexDef {
    pub pk: &'static str,
    pub sk: &'static str,
    pub projects_all: bool,
}

/// The table's indexes as the meter prices them (a test checks them against the template).
pub const INDEXES: [IndexDef; 4] = [
    // ByPatient: keys only.
    IndexDef {
        pk: "gsi1pk",
        sk: "gsi1sk",
        projects_all: false,
    },
    // DueIndex: keys only.
    IndexDef {
        pk: "gsi2pk",
        sk: "gsi2sk",
        projects_all: false,
    },
    // ByDelivery: delivered actions, whole item.
    IndexDef {
        pk: "gsi3pk",
        sk: "gsi3sk",
        projects_all: true,
    },
    // ByStart: appointments by provider and start minute, keys only.
    IndexDef {
        pk: "gsi4pk",
        sk: "gsi4sk",
        projects_all: false,
    },
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub write_units: f64,
    pub index_write_units: f64,
    pub read_units: f64,
    pub write_requests: u64,
    pub read_requests: u64,
    /// Items returned by gets and queries (what the read units paid for).
    pub items_read: u64,
}

impl Counts {
    pub fn total_write_units(&self) -> f64 {
        self.write_units + self.index_write_units
    }
}

/// Shared counters; a no-op when disabled (production Lambdas).
#[derive(Debug, Clone, Default)]
pub struct Meter(Option<Arc<Mutex<Counts>>>);

impl Meter {
    pub fn enabled() -> Self {
        Self(Some(Arc::new(Mutex::new(Counts::default()))))
    }

    pub fn snapshot(&self) -> Counts {
        self.0
            .as_ref()
            .and_then(|m| m.lock().ok().map(|c| c.clone()))
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Some(m) = &self.0
            && let Ok(mut c) = m.lock()
        {
            *c = Counts::default();
        }
    }

    fn with(&self, f: impl FnOnce(&mut Counts)) {
        if let Some(m) = &self.0
            && let Ok(mut c) = m.lock()
        {
            f(&mut c);
        }
    }

    /// A put of `new` that replaced `old` (as returned with ReturnValues=ALL_OLD).
    pub fn write(&self, new: &Item, old: Option<&Item>) {
        let size = item_size(new);
        let base = units(size, 1024);
        let mut index = 0.0;
        for ix in INDEXES {
            let key = |it: &Item| match (it.get(ix.pk), it.get(ix.sk)) {
                (Some(a), Some(b)) => Some((a.clone(), b.clone())),
                _ => None,
            };
            let projected = if ix.projects_all {
                size
            } else {
                key_size(new, ix)
            };
            match (old.and_then(key), key(new)) {
                (None, None) => {}
                (None, Some(_)) => index += units(projected, 1024),
                (Some(_), None) => index += 1.0,
                (Some(o), Some(n)) if o != n => index += 1.0 + units(projected, 1024),
                (Some(_), Some(_)) => {
                    if ix.projects_all {
                        index += units(projected, 1024);
                    }
                }
            }
        }
        self.with(|c| {
            c.write_units += base;
            c.index_write_units += index;
            c.write_requests += 1;
        });
    }

    /// A delete of `old` (as returned with ReturnValues=ALL_OLD): one unit per started KiB of
    /// the deleted item, and one index write for each index entry it had.
    pub fn delete(&self, old: Option<&Item>) {
        let base = units(old.map_or(0, item_size), 1024);
        let index = old.map_or(0.0, |it| {
            INDEXES
                .iter()
                .filter(|ix| it.contains_key(ix.pk) && it.contains_key(ix.sk))
                .count() as f64
        });
        self.with(|c| {
            c.write_units += base;
            c.index_write_units += index;
            c.write_requests += 1;
        });
    }

    /// A transactional write of these items (new items, no index keys).
    pub fn transact_write(&self, items: &[&Item]) {
        let total: f64 = items.iter().map(|i| 2.0 * units(item_size(i), 1024)).sum();
        self.with(|c| {
            c.write_units += total;
            c.write_requests += 1;
        });
    }

    /// An update whose cost is known to be `n` units (small counters).
    pub fn write_units(&self, n: u32) {
        self.with(|c| {
            c.write_units += f64::from(n);
            c.write_requests += 1;
        });
    }

    pub fn read(&self, item: Option<&Item>, consistent: bool) {
        let size = item.map_or(0, item_size);
        let u = units(size.max(1), 4096) * if consistent { 1.0 } else { 0.5 };
        self.with(|c| {
            c.read_units += u;
            c.read_requests += 1;
            c.items_read += u64::from(item.is_some());
        });
    }

    /// One BatchGetItem: each key is charged as a GetItem of it would be (its item's size
    /// rounded up to 4 KiB on its own; a key that found nothing at the minimum).
    pub fn batch_read(&self, found: &[Item], missing: usize, consistent: bool) {
        let per = if consistent { 1.0 } else { 0.5 };
        let u = per
            * (found
                .iter()
                .map(|i| units(item_size(i).max(1), 4096))
                .sum::<f64>()
                + missing as f64);
        self.with(|c| {
            c.read_units += u;
            c.read_requests += 1;
            c.items_read += found.len() as u64;
        });
    }

    pub fn query(&self, items: &[Item], consistent: bool) {
        let size: usize = items.iter().map(item_size).sum();
        let u = units(size.max(1), 4096) * if consistent { 1.0 } else { 0.5 };
        self.with(|c| {
            c.read_units += u;
            c.read_requests += 1;
            c.items_read += items.len() as u64;
        });
    }
}

fn units(size: usize, per: usize) -> f64 {
    size.div_ceil(per).max(1) as f64
}

fn key_size(item: &Item, ix: IndexDef) -> usize {
    ["pk", "sk", ix.pk, ix.sk]
        .iter()
        .filter_map(|k| item.get(*k).map(|v| k.len() + value_size(v)))
        .sum()
}

pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len()).sum(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn counts_base_and_index_writes() {
        let m = Meter::enabled();
        let mut item: Item = [("pk".to_owned(), s("P#x")), ("sk".to_owned(), s("PT#a"))].into();
        m.write(&item, None);
        assert_eq!(m.snapshot().total_write_units(), 1.0);
        item.insert("gsi2pk".into(), s("P#x#DUE"));
        item.insert("gsi2sk".into(), s("2026-01-01#PT#a"));
        let old = item.clone();
        m.reset();
        m.write(&item, None);
        assert_eq!(
            m.snapshot().total_write_units(),
            2.0,
            "new item + new index entry"
        );
        m.reset();
        item.insert("gsi2sk".into(), s("2026-02-01#PT#a"));
        m.write(&item, Some(&old));
        assert_eq!(
            m.snapshot().total_write_units(),
            3.0,
            "index key moved: delete + put"
        );
        m.reset();
        item.insert("big".into(), s(&"x".repeat(1500)));
        m.write(&item, None);
        assert_eq!(m.snapshot().write_units, 2.0, "1.5 KiB item is two units");
    }

    #[test]
    fn a_keys_only_index_costs_nothing_while_its_keys_stay() {
        let m = Meter::enabled();
        let old: Item = [
            ("pk".to_owned(), s("P#x")),
            ("sk".to_owned(), s("APPT#a")),
            ("gsi1pk".to_owned(), s("P#x#PAT#p")),
            ("gsi1sk".to_owned(), s("APPT#a")),
            ("doc".to_owned(), s("booked")),
        ]
        .into();
        m.write(&old, None);
        assert_eq!(
            m.snapshot().total_write_units(),
            2.0,
            "item + ByPatient entry"
        );
        m.reset();
        let mut new = old.clone();
        new.insert("doc".into(), s("cancelled"));
        m.write(&new, Some(&old));
        assert_eq!(
            m.snapshot().total_write_units(),
            1.0,
            "a change outside the keys: the item only"
        );
        m.reset();
        new.insert("gsi2pk".into(), s("P#x#DUE"));
        new.insert("gsi2sk".into(), s("2026-01-01#APPT#a"));
        m.write(&new, Some(&old));
        assert_eq!(
            m.snapshot().total_write_units(),
            2.0,
            "a no-show: the item and its new DueIndex entry"
        );
    }

    #[test]
    fn a_batch_get_charges_each_key_as_a_get() {
        let m = Meter::enabled();
        let small: Item = [("pk".to_owned(), s("P#x")), ("sk".to_owned(), s("A"))].into();
        let big: Item = [
            ("pk".to_owned(), s("P#x")),
            ("sk".to_owned(), s(&"y".repeat(5000))),
        ]
        .into();
        m.batch_read(&[small, big], 1, false);
        let c = m.snapshot();
        assert_eq!(
            c.read_units,
            0.5 + 1.0 + 0.5,
            "½ + two 4 KiB halves + ½ for the miss"
        );
        assert_eq!((c.read_requests, c.items_read), (1, 2));
    }

    #[test]
    fn counts_read_units_and_items_read() {
        let m = Meter::enabled();
        let item: Item = [("pk".to_owned(), s("P#x")), ("sk".to_owned(), s("PT#a"))].into();
        m.read(Some(&item), true);
        m.read(None, true);
        m.query(&[item.clone(), item.clone(), item], false);
        let c = m.snapshot();
        assert_eq!(
            (c.read_units, c.read_requests, c.items_read),
            (2.5, 3, 4),
            "a miss costs a unit and reads no item; an index query is eventually consistent"
        );
    }

    #[test]
    fn counts_deletes_by_old_size_and_index_entries() {
        let m = Meter::enabled();
        let mut item: Item = [("pk".to_owned(), s("P#x")), ("sk".to_owned(), s("APPT#a"))].into();
        m.delete(Some(&item));
        assert_eq!(m.snapshot().total_write_units(), 1.0);
        item.insert("gsi1pk".into(), s("P#x#PAT#p"));
        item.insert("gsi1sk".into(), s("APPT#a"));
        item.insert("big".into(), s(&"x".repeat(1500)));
        m.reset();
        m.delete(Some(&item));
        let c = m.snapshot();
        assert_eq!(
            (c.write_units, c.index_write_units, c.write_requests),
            (2.0, 1.0, 1),
            "two KiB of item, one index entry removed"
        );
        m.reset();
        m.delete(None);
        assert_eq!(
            m.snapshot().total_write_units(),
            1.0,
            "nothing there still costs one"
        );
    }
}
