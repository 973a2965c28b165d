//! `pil dlq`: dead letters shown and moved back to their queues. Message bodies are never
//! printed: only the ids and kinds parsed from them. (`pil status` is `pil_aws::status`.)

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use pil_aws::status::queue_url;
use pil_aws::{Config, DynamoStore};
use serde_json::{Value, json};
use shared::ids::{ActionId, PracticeId};
use shared::service::ops::{self, Retry};

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
