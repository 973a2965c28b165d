//! The relay's data inventory is generated from its item types and cannot go stale: every
//! attribute an item is written with has a documented purpose, and every documented attribute
//! is written. (That docs/square-relay-data-inventory.md is current, log fields included, is
//! checked by infra/pil-local/tests/data_inventory.rs.)

use std::collections::BTreeSet;

use square_relay::dynamo::sample_items;
use square_relay::store::ITEMS;

#[test]
fn every_stored_attribute_is_documented_and_every_documented_one_stored() {
    let samples = sample_items();
    assert_eq!(samples.len(), ITEMS.len(), "one sample per item type");
    for (key, item) in samples {
        let doc = ITEMS
            .iter()
            .find(|d| d.key == key)
            .unwrap_or_else(|| panic!("{key}: no inventory entry"));
        let stored: BTreeSet<&str> = item.keys().map(String::as_str).collect();
        let documented: BTreeSet<&str> = doc.attributes.iter().map(|(a, _)| *a).collect();
        assert_eq!(stored, documented, "{key}: stored vs documented attributes");
    }
}
