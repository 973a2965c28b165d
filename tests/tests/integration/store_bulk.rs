//! The store's bulk load (what scan-bench seeds practices with) writes the same items a
//! webhook's put would: readable as entities, listed in the due index, metered alike.

use jiff::{SignedDuration, Timestamp};
use pil_aws::Meter;
use shared::ids::OpaqueRef;
use shared::ports::{DueIndex, EntityRepo, PracticeRepo};
use shared::rules;
use shared::state::{Completion, Entity, PatientTreatment};
use shared::treatment::Treatment;
use tests::{TestStack, new_ref};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loaded_records_are_the_records_a_put_writes() {
    let ts = TestStack::start().await.unwrap();
    let store = ts.store();
    let practice = store.get_practice(&ts.practice).await.unwrap().unwrap();
    let now = Timestamp::now();
    let record = |t: Treatment, days: i64| {
        let mut pt = PatientTreatment::new(OpaqueRef::parse(&new_ref("p")).unwrap(), t);
        let at = now - SignedDuration::from_hours(24 * days);
        pt.merge_completion(Completion::new(practice.local_date(at), None, None), at);
        let e = Entity::PatientTreatment(pt);
        let due = rules::due_index_date(&practice, &e);
        (e, due)
    };
    // 30 records (two BatchWriteItem requests): 3 due tonight, the rest weeks ahead.
    let records: Vec<_> = (0..30)
        .map(|i| {
            if i % 10 == 0 {
                record(Treatment::ChemicalPeel, 30)
            } else {
                record(Treatment::Facial, 2)
            }
        })
        .collect();
    let loaded = store
        .load_entities(&ts.practice, &records, 2)
        .await
        .unwrap();
    assert_eq!(loaded, 30);

    for (e, _) in &records {
        let stored = store
            .get_entity(&ts.practice, &e.key())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&stored.value, stored.version), (e, 1));
    }
    let mut due = store.due_keys(&ts.practice, ts.today(), 100).await.unwrap();
    let mut want: Vec<_> = records
        .iter()
        .filter(|(_, d)| d.is_some_and(|d| d <= ts.today()))
        .map(|(e, _)| e.key())
        .collect();
    let by_key = |k: &shared::state::EntityKey| k.sort_key();
    due.sort_by_key(by_key);
    want.sort_by_key(by_key);
    assert_eq!(due, want);
    assert_eq!(due.len(), 3);

    // Metered as the conditional put of a new record would be.
    let bulk = Meter::enabled();
    let single = Meter::enabled();
    let client = ts.stack.clients.dynamodb.clone();
    let table_name = ts
        .stack
        .deployed
        .functions
        .iter()
        .find_map(|f| f.env.get("TABLE_NAME").cloned())
        .unwrap();
    let bulk_store = pil_aws::DynamoStore::new(client.clone(), &table_name, bulk.clone());
    let single_store = pil_aws::DynamoStore::new(client, &table_name, single.clone());
    let (a, a_due) = record(Treatment::ChemicalPeel, 30);
    let (b, b_due) = record(Treatment::ChemicalPeel, 30);
    bulk_store
        .load_entities(&ts.practice, &[(a, a_due)], 1)
        .await
        .unwrap();
    single_store
        .put_entity(&ts.practice, &b, None, b_due)
        .await
        .unwrap();
    let (x, y) = (bulk.snapshot(), single.snapshot());
    assert_eq!(
        (x.write_units, x.index_write_units),
        (y.write_units, y.index_write_units)
    );
    assert_eq!(y.total_write_units(), 2.0, "record + due index entry");
    ts.stop().await;
}
