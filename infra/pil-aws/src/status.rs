//! `pil status` and the end of `make run`: each practice's health, the queues' depths and,
//! on the local stack, the metrics of the last 24 hours. Counts, ids and rules only.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};
use shared::ids::PracticeId;
use shared::ports::{PracticeRepo, StoreError};
use shared::service::ops::{self, PracticeStatus};

use crate::{Config, DynamoStore};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("practice {0} not found")]
    UnknownPractice(PracticeId),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("reading {queue}'s depth: {reason}")]
    Queue { queue: &'static str, reason: String },
    #[error("reading the metrics file: {0}")]
    Metrics(#[from] std::io::Error),
}

/// The template's queues: name, the variable a deployed stack's outputs fill, and whether it
/// is a dead-letter queue.
pub const QUEUES: &[(&str, &str)] = &[
    ("ScanQueue", "SCAN_QUEUE_URL"),
    ("CandidatesQueue", "CANDIDATES_QUEUE_URL"),
    ("TriggersQueue", "TRIGGERS_QUEUE_URL"),
    ("ScanDLQ", "SCAN_DLQ_URL"),
    ("CandidatesDLQ", "CANDIDATES_DLQ_URL"),
    ("TriggersDLQ", "TRIGGERS_DLQ_URL"),
    ("EventsDLQ", "EVENTS_DLQ_URL"),
];

/// A queue's URL: the stack output's variable, or the local stack's `PIL_QUEUE_<NAME>`.
pub fn queue_url(config: &Config, name: &str) -> Option<String> {
    let var = QUEUES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)?;
    config
        .opt(var)
        .or_else(|| config.opt(&format!("PIL_QUEUE_{}", name.to_uppercase())))
        .map(str::to_owned)
}

/// `pil status`: each practice's health, the queues' depths and, on the local stack, the
/// metrics of the last 24 hours.
pub async fn stack_status(
    store: &DynamoStore,
    sqs: &aws_sdk_sqs::Client,
    config: &Config,
    only: Option<&PracticeId>,
    now: jiff::Timestamp,
) -> Result<Value, StatusError> {
    let ids = match only {
        Some(id) => vec![id.clone()],
        None => store.list_practices().await?,
    };
    let mut practices: Vec<PracticeStatus> = Vec::new();
    for id in &ids {
        match ops::practice_status(store, store, store, id, now).await? {
            Some(s) => practices.push(s),
            None if only.is_some() => return Err(StatusError::UnknownPractice(id.clone())),
            None => {}
        }
    }
    let mut queues = BTreeMap::new();
    for (name, _) in QUEUES {
        let Some(url) = queue_url(config, name) else {
            continue;
        };
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| StatusError::Queue {
                queue: name,
                reason: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })?;
        let get = |a: QueueAttributeName| -> u64 {
            attrs
                .attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        queues.insert(
            (*name).to_owned(),
            json!({
                "visible": get(QueueAttributeName::ApproximateNumberOfMessages),
                "in_flight": get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            }),
        );
    }
    let mut out = json!({
        "at": now,
        "practices": practices,
        "queues": queues,
    });
    if let Some(path) = config.opt("PIL_METRICS_FILE") {
        out["metrics_24h"] = metrics_24h(std::path::Path::new(path), now)?;
    }
    Ok(out)
}

/// `function/metric` → the sum of its values in the metrics file over the last 24 hours.
fn metrics_24h(path: &std::path::Path, now: jiff::Timestamp) -> Result<Value, StatusError> {
    let since = now.as_millisecond() - 24 * 3_600_000;
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in crate::metrics::read_file(path)? {
        if line["_aws"]["Timestamp"].as_i64().is_none_or(|t| t < since) {
            continue;
        }
        let function = line["Function"].as_str().unwrap_or("-");
        for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(name) = m["Name"].as_str()
                && let Some(v) = line[name].as_f64()
                && m["Unit"] == "Count"
            {
                *sums.entry(format!("{function}/{name}")).or_default() += v;
            }
        }
    }
    Ok(json!(sums))
}

/// The status as text.
pub fn stack_status_table(v: &Value) -> String {
    let mut out = String::new();
    for p in v["practices"].as_array().into_iter().flatten() {
        let actions: Vec<String> = p["actions"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let refused: Vec<String> = p["refusals_24h"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.push_str(&format!(
            "{}{}\n  last scan: {}{}\n  trigger endpoint: {}\n  actions: {}\n  refused in 24 h: {}\n",
            p["practice_id"].as_str().unwrap_or("-"),
            if p["disabled"] == true {
                " (disabled)"
            } else {
                ""
            },
            p["last_scan_date"].as_str().unwrap_or("never"),
            if p["night_late"] == true {
                " — LATE: last night not scanned"
            } else {
                ""
            },
            p["trigger_endpoint"].as_str().unwrap_or("-"),
            if actions.is_empty() {
                "none".to_owned()
            } else {
                actions.join(", ")
            },
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            },
        ));
    }
    out.push_str("queues (visible / in flight):\n");
    for (name, q) in v["queues"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "  {name:<16} {} / {}\n",
            q["visible"], q["in_flight"]
        ));
    }
    if let Some(m) = v["metrics_24h"].as_object() {
        out.push_str("metrics, last 24 h:\n");
        for (k, n) in m {
            out.push_str(&format!("  {k:<40} {n}\n"));
        }
    }
    out
}
