//! `pil import`: a practice's history through the events API, in signed batches.
//!
//! The history is newline-delimited JSON, one event per line, exactly as the events API takes
//! them (docs/contracts.md). It is sent in batches of up to 100 events, each signed with the
//! practice's webhook secret like any PMS delivery. Importing creates state only (the scan
//! turns it into actions, within the nightly budget), and it is safe to run again: every
//! write is a merge, and each batch's `webhook-id` is derived from its bytes, so a re-run
//! sends the same deliveries again and changes nothing.
//!
//! A refused batch stops the import, naming the line, the field and the rule (never a value);
//! the lines before it are in. 503 and 429 are retried with backoff (`Retry-After` honoured).

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use shared::signature::{self, WebhookSecret};

/// The events API's limit per delivery.
pub const MAX_BATCH: usize = 100;
/// Attempts per batch while the API answers 503, 429 or cannot be reached.
const ATTEMPTS: u32 = 8;

pub struct Import<'a> {
    pub api_url: &'a str,
    pub practice_id: &'a str,
    pub secret: &'a WebhookSecret,
    pub batch_size: usize,
}

/// Reads the events: one JSON object per non-empty line. Returns (line number, event).
pub fn read_events(input: impl BufRead) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("line {n}: not UTF-8"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|_| anyhow!("line {n}: not a JSON object (one event per line)"))?;
        if !v.is_object() {
            bail!("line {n}: not a JSON object (one event per line)");
        }
        out.push((n, v));
    }
    Ok(out)
}

/// The `webhook-id` of a batch: derived from its bytes, so a re-run repeats it.
fn batch_id(body: &str) -> String {
    let d = Sha256::digest(body.as_bytes());
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("imp_{hex}")
}

/// Maps a refusal's `events[i]…` field to the line it came from.
fn line_of(field: &str, lines: &[usize]) -> Option<usize> {
    let rest = field.strip_prefix("events[")?;
    let i: usize = rest.split(']').next()?.parse().ok()?;
    lines.get(i).copied()
}

impl Import<'_> {
    /// Sends every event; progress on stderr. Returns the summary `pil import` prints.
    pub async fn run(&self, events: &[(usize, serde_json::Value)]) -> Result<serde_json::Value> {
        let size = self.batch_size.clamp(1, MAX_BATCH);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = format!(
            "{}/v1/practices/{}/events",
            self.api_url.trim_end_matches('/'),
            self.practice_id
        );
        let total = events.len();
        let batches = total.div_ceil(size);
        let (mut sent, mut retries) = (0usize, 0u32);
        for (b, chunk) in events.chunks(size).enumerate() {
            let lines: Vec<usize> = chunk.iter().map(|(n, _)| *n).collect();
            let body = serde_json::json!({
                "events": chunk.iter().map(|(_, v)| v).collect::<Vec<_>>()
            })
            .to_string();
            let id = batch_id(&body);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let ts = jiff::Timestamp::now().as_second();
                let sig = self
                    .secret
                    .sign(&id, ts, body.as_bytes())
                    .ok_or_else(|| anyhow!("batch {}: body is not UTF-8", b + 1))?;
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(signature::HEADER_ID, &id)
                    .header(signature::HEADER_TIMESTAMP, ts.to_string())
                    .header(signature::HEADER_SIGNATURE, sig)
                    .body(body.clone())
                    .send()
                    .await;
                let (status, retry_after, reply) = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_after = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let reply: serde_json::Value = r.json().await.unwrap_or_default();
                        (status, retry_after, reply)
                    }
                    Err(_) => (0, None, serde_json::Value::Null),
                };
                match status {
                    202 => break,
                    0 | 429 | 500..=599 if attempt < ATTEMPTS => {
                        retries += 1;
                        let wait = retry_after.unwrap_or(1 << attempt.min(5)).min(60);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                    0 => bail!(
                        "batch {} (lines {}-{}): the API cannot be reached; {sent} events are in, run again to finish",
                        b + 1,
                        lines[0],
                        lines[lines.len() - 1]
                    ),
                    _ => {
                        let err = &reply["error"];
                        let field = err["field"].as_str().unwrap_or("");
                        let at = line_of(field, &lines)
                            .map(|n| format!("line {n}"))
                            .unwrap_or_else(|| {
                                format!("lines {}-{}", lines[0], lines[lines.len() - 1])
                            });
                        bail!(
                            "{at}: refused with HTTP {status} ({} at `{field}`: {}); the {sent} events before this batch are in",
                            err["code"].as_str().unwrap_or("error"),
                            err["rule"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            sent += chunk.len();
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "pil import: {sent} of {total} events ({} of {batches} batches)",
                    b + 1
                );
            }
        }
        Ok(serde_json::json!({
            "practice_id": self.practice_id,
            "events": total,
            "batches": batches,
            "retries": retries,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_blank_ones_skipped_and_a_bad_one_named_without_its_text() {
        let input = "{\"type\":\"a\"}\n\n{\"type\":\"b\"}\n";
        let ev = read_events(input.as_bytes()).unwrap();
        assert_eq!(ev.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
        let err = read_events("{\"a\":1}\njane@example.com\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "line 2: not a JSON object (one event per line)");
    }

    #[test]
    fn a_batch_id_is_stable_and_a_refusal_names_its_line() {
        assert_eq!(batch_id("x"), batch_id("x"));
        assert_ne!(batch_id("x"), batch_id("y"));
        assert!(batch_id("x").starts_with("imp_"));
        assert_eq!(line_of("events[2].data.patient_ref", &[4, 9, 12]), Some(12));
        assert_eq!(line_of("body", &[4]), None);
    }
}
