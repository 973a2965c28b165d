//! `pil status` and `pil dlq`: an operator's view of a running stack, and dead letters moved
//! back to their queues. Message bodies are never printed: only the ids and kinds parsed
//! from them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use pil_aws::{Config, DynamoStore};
use pil_shared::ids::{ActionId, PracticeId};
use pil_shared::ports::PracticeRepo;
use pil_shared::service::ops::{self, PracticeStatus, Retry};
use serde_json::{Value, json};

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
pub async fn status(
    store: &DynamoStore,
    sqs: &aws_sdk_sqs::Client,
    config: &Config,
    only: Option<&PracticeId>,
    now: jiff::Timestamp,
) -> Result<Value> {
    let ids = match only {
        Some(id) => vec![id.clone()],
        None => store.list_practices().await?,
    };
    let mut practices: Vec<PracticeStatus> = Vec::new();
    for id in &ids {
        match ops::practice_status(store, store, store, id, now).await? {
            Some(s) => practices.push(s),
            None if only.is_some() => return Err(anyhow!("practice {id} not found")),
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
            .with_context(|| format!("reading {name}'s depth"))?;
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
fn metrics_24h(path: &std::path::Path, now: jiff::Timestamp) -> Result<Value> {
    let since = now.as_millisecond() - 24 * 3_600_000;
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in pil_aws::metrics::read_file(path)? {
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
    Ok(serde_json::to_value(sums)?)
}

/// The status as text.
pub fn status_table(v: &Value) -> String {
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

/// What a message is about, parsed from its body: ids and kinds, never the body.
pub fn summary(body: &str) -> Value {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return json!({"unrecognised": true, "bytes": body.len()});
    };
    let pick = |v: &Value, keys: &[&str]| -> Value {
        let mut m = serde_json::Map::new();
        for k in keys {
            if let Some(x) = v.get(*k).filter(|x| x.is_string() || x.is_number()) {
                m.insert((*k).to_owned(), x.clone());
            }
        }
        Value::Object(m)
    };
    if let Some(d) = v.get("detail") {
        let mut s = pick(d, &["type", "practice_id", "action_id"]);
        s["kind"] = json!("event");
        return s;
    }
    if let Some(ids) = v.get("action_ids").and_then(Value::as_array) {
        let mut s = pick(&v, &["practice_id", "scan_date"]);
        s["kind"] = json!("candidates");
        s["actions"] = json!(ids.len());
        return s;
    }
    if v.get("kind").is_some() {
        return pick(&v, &["kind", "practice_id", "date", "part"]);
    }
    json!({"unrecognised": true, "bytes": body.len()})
}

/// Where a dead letter goes back to: each DLQ's queue; the events DLQ's by the event's type.
fn target(dlq: &str, body: &str) -> Option<&'static str> {
    match dlq {
        "ScanDLQ" => Some("ScanQueue"),
        "CandidatesDLQ" => Some("CandidatesQueue"),
        "TriggersDLQ" => Some("TriggersQueue"),
        "EventsDLQ" => {
            let v: Value = serde_json::from_str(body).ok()?;
            match v["detail"]["type"].as_str()? {
                "slot.opened" | "slot.filled" => Some("ScanQueue"),
                "action.approved" => Some("TriggersQueue"),
                "settings_link.requested" | "trigger_endpoint.retired" => Some("CandidatesQueue"),
                _ => None,
            }
        }
        _ => None,
    }
}

pub fn dlq_name(arg: &str) -> Result<&'static str> {
    match arg {
        "scan" => Ok("ScanDLQ"),
        "candidates" => Ok("CandidatesDLQ"),
        "triggers" => Ok("TriggersDLQ"),
        "events" => Ok("EventsDLQ"),
        _ => Err(anyhow!(
            "--queue: one of scan, candidates, triggers, events"
        )),
    }
}

/// Reads up to `max` messages of the queue, each once, hidden for `hide_seconds`.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: usize,
    hide_seconds: i32,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < max {
        let r = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((max - out.len()).min(10) as i32)
            .visibility_timeout(hide_seconds)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .context("reading the dead-letter queue")?;
        let batch = r.messages.unwrap_or_default();
        let fresh: Vec<_> = batch
            .into_iter()
            .filter(|m| seen.insert(m.message_id.clone().unwrap_or_default()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        out.extend(fresh);
    }
    Ok(out)
}

fn describe(m: &aws_sdk_sqs::types::Message) -> Value {
    let attr = |a: MessageSystemAttributeName| {
        m.attributes()
            .and_then(|x| x.get(&a))
            .cloned()
            .unwrap_or_default()
    };
    let sent = attr(MessageSystemAttributeName::SentTimestamp)
        .parse::<i64>()
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
    json!({
        "message_id": m.message_id(),
        "sent_at": sent,
        "receive_count": attr(MessageSystemAttributeName::ApproximateReceiveCount).parse::<u64>().ok(),
        "about": summary(m.body().unwrap_or("")),
    })
}

/// `pil dlq show`: the dead letters (up to `max`), left in the queue.
pub async fn show(
    sqs: &aws_sdk_sqs::Client,
    config: &Config,
    dlq: &str,
    max: usize,
) -> Result<Value> {
    let url = queue_url(config, dlq).ok_or_else(|| anyhow!("{dlq}: no URL configured"))?;
    let msgs = receive(sqs, &url, max, 30).await?;
    let listed: Vec<Value> = msgs.iter().map(describe).collect();
    // Visible again at once: showing changes nothing.
    for m in &msgs {
        if let Some(rh) = m.receipt_handle() {
            let _ = sqs
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(rh)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
    Ok(json!({"queue": dlq, "messages": listed}))
}

/// `pil dlq redrive`: each dead letter is sent back to its queue, then deleted from the DLQ
/// (sent first: a crash in between redrives it twice, and every consumer has one effect per
/// message). With `retry_failed`, a dead-lettered trigger whose action failed is approved again
/// first ([`ops::retry_failed`]); without it the emitter finds the action failed and sends
/// nothing.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    store: &DynamoStore,
    config: &Config,
    dlq: &str,
    max: usize,
    retry_failed: bool,
) -> Result<Value> {
    let url = queue_url(config, dlq).ok_or_else(|| anyhow!("{dlq}: no URL configured"))?;
    let msgs = receive(sqs, &url, max, 120).await?;
    let mut moved = Vec::new();
    let mut left = 0usize;
    for m in &msgs {
        let body = m.body().unwrap_or("");
        let Some(to) = target(dlq, body) else {
            left += 1;
            continue;
        };
        let to_url = queue_url(config, to).ok_or_else(|| anyhow!("{to}: no URL configured"))?;
        let mut entry = describe(m);
        if retry_failed && to == "TriggersQueue" {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let ids = (
                v["detail"]["practice_id"]
                    .as_str()
                    .and_then(|p| PracticeId::parse(p).ok()),
                v["detail"]["action_id"]
                    .as_str()
                    .and_then(|a| ActionId::parse(a).ok()),
            );
            if let (Some(p), Some(a)) = ids {
                let r = ops::retry_failed(store, store, &p, &a, jiff::Timestamp::now()).await?;
                entry["retry"] = serde_json::to_value(r)?;
                if r == Retry::Expired {
                    entry["note"] = json!("expired: left failed");
                }
            }
        }
        sqs.send_message()
            .queue_url(&to_url)
            .message_body(body)
            .send()
            .await
            .with_context(|| format!("sending back to {to}"))?;
        if let Some(rh) = m.receipt_handle() {
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(rh)
                .send()
                .await
                .context("deleting the redriven message")?;
        }
        entry["to"] = json!(to);
        moved.push(entry);
    }
    Ok(json!({"queue": dlq, "redriven": moved, "left": left}))
}
