//! Counts of refused signed deliveries.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Refusal counts live one item per practice and UTC day, one number attribute per hour,
/// code, rule and field path (`r:{HH}|{code}|{rule}|{path}`, `/` for `.` in the path), kept
/// this many days.
pub(super) const REFUSAL_DAYS: i64 = 35;
pub(super) const REFUSAL_PREFIX: &str = "r:";

#[async_trait]
impl shared::ports::RefusalLog for DynamoStore {
    async fn count_refusal(
        &self,
        practice: &PracticeId,
        at: Timestamp,
        code: &'static str,
        rule: &'static str,
        path: &str,
    ) -> Result<(), StoreError> {
        let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
        // No `.` in the name (`/` for it): the name is one attribute, not a document path.
        let name = format!(
            "{REFUSAL_PREFIX}{:02}|{code}|{rule}|{}",
            utc.hour(),
            path.replace('.', "/")
        );
        let keep = at.as_second() + REFUSAL_DAYS * 86_400;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk(practice)))
            .key("sk", s(format!("REFUSALS#{}", utc.date())))
            .update_expression("ADD #k :one SET #t = :ttl")
            .expression_attribute_names("#k", name)
            .expression_attribute_names("#t", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(keep.max(0) as u64))
            .send()
            .await
            .map_err(map_err)?;
        self.meter.write_units(1);
        Ok(())
    }

    async fn refusals(
        &self,
        practice: &PracticeId,
        since: Timestamp,
    ) -> Result<Vec<shared::ports::RefusalCount>, StoreError> {
        let from = since.as_second() - since.as_second().rem_euclid(3600);
        let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut day = since.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut out = Vec::new();
        while day <= today {
            if let Some(item) = self
                .get_with(pk(practice), format!("REFUSALS#{day}"), false)
                .await?
            {
                for (k, v) in &item {
                    let Some(rest) = k.strip_prefix(REFUSAL_PREFIX) else {
                        continue;
                    };
                    let mut parts = rest.splitn(4, '|');
                    let (Some(hh), Some(code), Some(rule), Some(path)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let hour = hh
                        .parse::<i8>()
                        .ok()
                        .and_then(|h| day.at(h, 0, 0, 0).to_zoned(jiff::tz::TimeZone::UTC).ok())
                        .map(|z| z.timestamp());
                    let count = v.as_n().ok().and_then(|n| n.parse::<u64>().ok());
                    if let (Some(hour), Some(count)) = (hour, count)
                        && hour.as_second() >= from
                    {
                        out.push(shared::ports::RefusalCount {
                            hour,
                            code: code.to_owned(),
                            rule: rule.to_owned(),
                            path: path.replace('/', "."),
                            count,
                        });
                    }
                }
            }
            let Ok(next) = day.tomorrow() else { break };
            day = next;
        }
        out.sort_by(|a, b| {
            (a.hour, &a.code, &a.rule, &a.path).cmp(&(b.hour, &b.code, &b.rule, &b.path))
        });
        Ok(out)
    }
}
