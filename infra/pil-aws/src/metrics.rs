//! Metrics in CloudWatch's embedded metric format (EMF): one JSON line per outcome, written to
//! stdout in Lambda (CloudWatch Logs turns it into metrics, no API call on the hot path) and
//! appended to `METRICS_FILE` when that is set (the local stack: `target/local/metrics.jsonl`,
//! which `pil status` and the tests read).
//!
//! Written by hand rather than through the `metrics` facade and `metrics_cloudwatch_embedded`:
//! a line is a dozen fields of `serde_json`, which every handler links already, while the
//! facade, its recorder and the crate's Lambda layer would add to bootstraps that have to stay
//! under 8 MB (the receiver's is within 40 KB of it), and its per-invocation flush would need
//! a wrapper around each handler. What the crate would give beyond that (aggregation within an
//! invocation) these handlers do not need: each writes one line per message it handles.
//!
//! What may become a dimension is bounded by the types: the function's name, static reason
//! vocabularies (`&'static str`), and the practice id, only where the handler has
//! authenticated it (its cardinality is the number of practices: each practice adds one
//! custom metric per metric it appears in, about $0.30 a month each at CloudWatch's list
//! price). Nothing of a request body is ever a dimension or a value: values are counts and
//! durations.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shared::ids::PracticeId;

use crate::Config;

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::None => "None",
        }
    }
}

/// One value of one line: its name, the value and its unit.
pub type Value = (&'static str, f64, Unit);

#[derive(Debug)]
enum Sink {
    Stdout,
    File(Mutex<std::fs::File>),
}

#[derive(Debug)]
struct Inner {
    namespace: String,
    function: &'static str,
    sink: Sink,
}

/// Built once per cold start; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    /// `METRICS_NAMESPACE` (the template sets `pil-<stack>`; `pil` otherwise), and
    /// `METRICS_FILE` for a file instead of stdout. A file that cannot be opened falls back to
    /// stdout (metrics never stop a handler).
    pub fn new(config: &Config, function: &'static str) -> Self {
        let namespace = config.get("METRICS_NAMESPACE").unwrap_or("pil").to_owned();
        let sink = config
            .get("METRICS_FILE")
            .ok()
            .map(PathBuf::from)
            .and_then(|p| {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            })
            .map_or(Sink::Stdout, |f| Sink::File(Mutex::new(f)));
        Self(Arc::new(Inner {
            namespace,
            function,
            sink,
        }))
    }

    /// Writes one line: `values` under the dimensions `Function` plus `dims` (and `Practice`
    /// when given), and also under `Function` alone when there are more (the roll-up the
    /// alarms and the dashboard read). Nothing is written when `values` is empty.
    pub fn emit(
        &self,
        practice: Option<&PracticeId>,
        dims: &[(&'static str, &'static str)],
        values: &[Value],
    ) {
        if values.is_empty() {
            return;
        }
        let line = self.line(practice, dims, values, jiff::Timestamp::now());
        let mut text = line.to_string();
        text.push('\n');
        match &self.0.sink {
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(text.as_bytes());
                }
            }
        }
    }

    fn line(
        &self,
        practice: Option<&PracticeId>,
        dims: &[(&'static str, &'static str)],
        values: &[Value],
        at: jiff::Timestamp,
    ) -> serde_json::Value {
        let mut names: Vec<&str> = vec!["Function"];
        let mut root = serde_json::Map::new();
        root.insert("Function".into(), self.0.function.into());
        for (k, v) in dims {
            names.push(k);
            root.insert((*k).into(), (*v).into());
        }
        if let Some(p) = practice {
            names.push("Practice");
            root.insert("Practice".into(), p.as_str().into());
        }
        let metrics: Vec<serde_json::Value> = values
            .iter()
            .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        for (name, v, _) in values {
            root.insert((*name).into(), serde_json::json!(v));
        }
        root.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": at.as_millisecond(),
                "CloudWatchMetrics": [{
                    "Namespace": self.0.namespace,
                    "Dimensions": if names.len() > 1 {
                        serde_json::json!([["Function"], names])
                    } else {
                        serde_json::json!([names])
                    },
                    "Metrics": metrics,
                }],
            }),
        );
        serde_json::Value::Object(root)
    }
}

/// The lines of a metrics file (`METRICS_FILE`), parsed: what `pil status` and the tests read.
/// Lines that are not EMF objects are skipped.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_line_is_embedded_metric_format() {
        let m = Metrics::new(&Config::from_map(HashMap::new()), "webhook-receiver");
        let p = PracticeId::parse("glow-clinic").unwrap();
        let at: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let line = m.line(
            Some(&p),
            &[("Status", "422"), ("Rule", "phi_detected:email")],
            &[("WebhooksRefused", 1.0, Unit::Count)],
            at,
        );
        assert_eq!(
            line,
            serde_json::json!({
                "Function": "webhook-receiver",
                "Status": "422",
                "Rule": "phi_detected:email",
                "Practice": "glow-clinic",
                "WebhooksRefused": 1.0,
                "_aws": {
                    "Timestamp": at.as_millisecond(),
                    "CloudWatchMetrics": [{
                        "Namespace": "pil",
                        "Dimensions": [["Function"], ["Function", "Status", "Rule", "Practice"]],
                        "Metrics": [{"Name": "WebhooksRefused", "Unit": "Count"}],
                    }],
                },
            })
        );
    }

    #[test]
    fn a_file_sink_appends_lines_that_read_back() {
        let dir = std::env::temp_dir().join(format!("pil-metrics-{}", std::process::id()));
        let path = dir.join("m.jsonl");
        let _ = std::fs::remove_file(&path);
        let config = Config::from_map(HashMap::from([
            ("METRICS_FILE".to_owned(), path.display().to_string()),
            ("METRICS_NAMESPACE".to_owned(), "pil-test".to_owned()),
        ]));
        let m = Metrics::new(&config, "trigger-emitter");
        m.emit(None, &[], &[("TriggersDelivered", 1.0, Unit::Count)]);
        m.emit(None, &[], &[]);
        m.emit(
            None,
            &[("Outcome", "retry")],
            &[("TriggersRetried", 1.0, Unit::Count)],
        );
        let lines = read_file(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["TriggersDelivered"], 1.0);
        assert_eq!(lines[1]["Outcome"], "retry");
        assert_eq!(
            lines[1]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "pil-test"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
