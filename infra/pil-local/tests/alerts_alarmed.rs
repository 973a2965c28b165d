//! Every `alert` the code writes reaches someone: read from the source (every `alert = "…"`
//! field of a tracing call in the functions, the adapters and the domain), each one is in
//! docs/operations.md's Alerts table with what to do, and in template.yaml every function's log
//! group has a metric filter on `alert` with an alarm to the alarm topic (the domain code runs
//! in any function, so every function needs one). Every metric alarm of the template has a
//! runbook in docs/operations.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `alert = "name"` in the code that runs in the functions.
fn alerts_in_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in ["shared/src", "infra/pil-aws/src", "functions"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("alert = \"") {
            let rest = &text[i + "alert = \"".len()..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}: alert {name:?} is not a snake_case name",
                f.display()
            );
            found.insert(name);
        }
    }
    found
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// A reference (`!Ref X`, read as a tagged value) to a resource's logical id.
fn ref_of(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "!Ref" => t.value.as_str().map(str::to_owned),
        _ => None,
    }
}

#[test]
fn every_alert_is_documented_and_every_function_alarms_on_alerts() {
    let alerts = alerts_in_code();
    assert!(
        alerts.len() >= 6,
        "the source scan found too few alerts: {alerts:?}"
    );
    let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let missing: Vec<&String> = alerts
        .iter()
        .filter(|a| !ops.contains(&format!("| `{a}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts without a row in docs/operations.md, Alerts: {missing:?}"
    );

    let t = template();
    let resources = t["Resources"].as_mapping().unwrap();
    let of_type = |ty: &str| -> Vec<(String, &Value)> {
        resources
            .iter()
            .filter(|(_, r)| r["Type"] == ty)
            .map(|(k, r)| (k.as_str().unwrap().to_owned(), r))
            .collect()
    };
    let functions: BTreeSet<String> = of_type("AWS::Serverless::Function")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(functions.len() >= 5);
    let alarms = of_type("AWS::CloudWatch::Alarm");
    for f in &functions {
        // The function's log group names it (`/aws/lambda/${Function}`).
        let group = of_type("AWS::Logs::LogGroup")
            .into_iter()
            .find(|(_, g)| {
                serde_yaml::to_string(&g["Properties"]["LogGroupName"])
                    .unwrap()
                    .contains(&format!("${{{f}}}"))
            })
            .map(|(k, _)| k)
            .unwrap_or_else(|| panic!("{f} has no log group of its own"));
        let filter = of_type("AWS::Logs::MetricFilter")
            .into_iter()
            .find(|(_, m)| ref_of(&m["Properties"]["LogGroupName"]).as_deref() == Some(&group))
            .unwrap_or_else(|| panic!("{f}'s log group {group} has no metric filter"));
        let props = &filter.1["Properties"];
        assert_eq!(
            props["FilterPattern"].as_str(),
            Some(r#"{ $.alert = "*" }"#),
            "{f}'s filter counts alert lines"
        );
        let metric = props["MetricTransformations"][0]["MetricName"]
            .as_str()
            .unwrap();
        let alarm = alarms
            .iter()
            .find(|(_, a)| a["Properties"]["MetricName"].as_str() == Some(metric))
            .unwrap_or_else(|| panic!("no alarm on {metric} ({f})"));
        let actions = &alarm.1["Properties"]["AlarmActions"];
        assert_eq!(
            ref_of(&actions[0]).as_deref(),
            Some("AlarmTopic"),
            "{} alarms to the alarm topic",
            alarm.0
        );
        assert_eq!(alarm.1["Properties"]["Threshold"].as_i64(), Some(0));
    }

    // Every alarm goes to the topic and has its runbook.
    for (name, a) in &alarms {
        assert_eq!(
            ref_of(&a["Properties"]["AlarmActions"][0]).as_deref(),
            Some("AlarmTopic"),
            "{name}"
        );
        let documented = ops.contains(&format!("`{name}`"))
            || a["Properties"]["MetricName"]
                .as_str()
                .is_some_and(|m| m.ends_with("Alerts"));
        assert!(documented, "{name} has no runbook in docs/operations.md");
    }
}
