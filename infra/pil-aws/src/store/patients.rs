//! Everything stored for one patient ref, through ByPatient.

#[allow(clippy::wildcard_imports)]
use super::*;

#[async_trait]
impl PatientIndex for DynamoStore {
    async fn appointments_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Appointment>, StoreError> {
        let items = self.patients_items(practice, patient, "APPT#").await?;
        items
            .iter()
            .map(from_doc::<Entity>)
            .filter_map(|e| match e {
                Ok(Entity::Appointment(a)) => Some(Ok(a)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    async fn actions_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<Action>, StoreError> {
        let items = self.patients_items(practice, patient, "ACTION#").await?;
        items.iter().map(action_of).collect()
    }
}

impl DynamoStore {
    /// The patient's items of one type (`APPT#`, `ACTION#`): their keys from ByPatient, then
    /// the items themselves.
    async fn patients_items(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
        sort_prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let keys = self
            .query_all(
                Some(BY_PATIENT),
                "gsi1pk = :p AND begins_with(gsi1sk, :a)",
                vec![
                    (":p", s(patient_key(practice, patient))),
                    (":a", s(sort_prefix)),
                ],
                None,
            )
            .await?;
        self.fetch_indexed(&keys).await
    }
}

#[async_trait]
impl PatientRecords for DynamoStore {
    async fn records_of(
        &self,
        practice: &PracticeId,
        patient: &OpaqueRef,
    ) -> Result<Vec<PatientRecord>, StoreError> {
        let treatments = self.query_all(
            None,
            "pk = :pk AND begins_with(sk, :pt)",
            vec![
                (":pk", s(pk(practice))),
                (":pt", s(format!("PT#{patient}#"))),
            ],
            None,
        );
        let consent = self.get(pk(practice), EntityKey::Consent(patient.clone()).sort_key());
        let indexed = self.query_all(
            Some(BY_PATIENT),
            "gsi1pk = :p",
            vec![(":p", s(patient_key(practice, patient)))],
            None,
        );
        let (treatments, consent, indexed) = futures::try_join!(treatments, consent, indexed)?;
        let indexed = self.fetch_indexed(&indexed).await?;
        let entity = |item: &Item| -> Result<PatientRecord, StoreError> {
            Ok(PatientRecord::Entity(Stored {
                value: from_doc(item)?,
                version: num(item, "ver"),
            }))
        };
        let mut out = Vec::with_capacity(treatments.len() + indexed.len() + 1);
        for item in treatments.iter().chain(consent.iter()) {
            out.push(entity(item)?);
        }
        for item in &indexed {
            let sk = item.get("sk").and_then(|v| v.as_s().ok());
            match sk {
                Some(k) if k.starts_with("APPT#") => out.push(entity(item)?),
                Some(k) if k.starts_with("ACTION#") => {
                    out.push(PatientRecord::Action(action_of(item)?))
                }
                _ => {}
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
        let version_attr = match key {
            RecordKey::Entity(_) => "ver",
            RecordKey::Action(_) => "rev",
        };
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk(practice)))
            .key("sk", s(key.sort_key()))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", version_attr)
            .expression_attribute_values(":v", n(expected))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                self.meter.delete(out.attributes.as_ref());
                Ok(true)
            }
            Err(e) => match map_err(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }
}
