//! The last step of `make bench`: one table of every performance and cost figure with a goal
//! (figure, goal, measured, pass/fail), read from what the benches wrote:
//! target/bench/guard.json (guard-bench), criterion's estimates (target/criterion),
//! target/bench/scan.json (scan-bench), target/bench/first-night.json (first-night),
//! target/bench/cold-start.json (cold-start) and target/bench/cost.json (cost-model).
//! Exits non-zero when a goal is missed or a figure is missing.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Criterion's median estimate for a benchmark, in nanoseconds.
fn criterion_median_ns(root: &Path, group: &str, id: &str) -> Option<f64> {
    let p = root
        .join("target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    read(&p)?["median"]["point_estimate"].as_f64()
}

struct Row {
    figure: String,
    goal: String,
    measured: String,
    pass: Option<bool>,
}

fn main() -> ExitCode {
    let root = pil_local::stack::workspace_root();
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |figure: &str, goal: &str, measured: Option<String>, pass: Option<bool>| {
        rows.push(Row {
            figure: figure.to_owned(),
            goal: goal.to_owned(),
            measured: measured.unwrap_or_else(|| "not measured".into()),
            pass,
        });
    };

    // The PHI guard's accuracy (guard-bench).
    let guard = read(&root.join("target/bench/guard.json"));
    let g = |k: &str| guard.as_ref().map(|j| j[k].clone());
    let valid = g("valid");
    let v_refused = valid.as_ref().and_then(|v| v["refused"].as_u64());
    row(
        "guard: valid ids refused (generated UUIDs, ULIDs, KSUIDs, nanoids, HMAC refs...)",
        "0",
        valid.as_ref().and_then(|v| {
            let w = &v["worst"];
            Some(format!(
                "{} of {} (worst generator: {}, {} of {})",
                v["refused"].as_u64()?,
                v["n"].as_u64()?,
                w["name"].as_str()?,
                w["refused"].as_u64()?,
                w["n"].as_u64()?
            ))
        }),
        v_refused.map(|r| r == 0),
    );
    let phi = g("phi");
    let p_rate = phi.as_ref().and_then(|p| p["refusal_rate"].as_f64());
    row(
        "guard: PHI-derived refs refused (names, e-mails, phones, SSNs, DOBs, addresses, MRNs in many spellings)",
        "≥ 99.5 %",
        phi.as_ref().and_then(|p| {
            let w = &p["weakest"];
            Some(format!(
                "{:.2} % of {} (weakest spelling: {}, {:.0} % refused; {} spellings as weak)",
                p["refusal_rate"].as_f64()? * 100.0,
                p["n"].as_u64()?,
                w["name"].as_str()?,
                w["refusal_rate"].as_f64()? * 100.0,
                p["spellings_as_weak"].as_u64().unwrap_or(1)
            ))
        }),
        p_rate.map(|r| r >= 0.995),
    );

    // 1. The inbound hot path (criterion).
    let crit_dir = root.join("target/criterion/verify_parse_guard/events");
    let find = |prefix: &str| -> Option<String> {
        std::fs::read_dir(&crit_dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(prefix))
    };
    let kb =
        find("3 (").and_then(|id| criterion_median_ns(&root, "verify_parse_guard/events", &id));
    row(
        "verify + parse + guard, one 1 KB webhook body",
        "≤ 10 µs (≥ 100,000/s on one core)",
        kb.map(|ns| format!("{:.1} µs ({:.0}/s)", ns / 1e3, 1e9 / ns)),
        kb.map(|ns| ns <= 10_000.0),
    );
    let batch =
        find("100 (").and_then(|id| criterion_median_ns(&root, "verify_parse_guard/events", &id));
    row(
        "verify + parse + guard, 100-event batch",
        "well under 1 ms",
        batch.map(|ns| format!("{:.0} µs", ns / 1e3)),
        batch.map(|ns| ns < 1e6),
    );
    for (group, id, label) in [
        (
            "receiver_handler",
            "single_1KB",
            "whole receiver in-process (storage faked), 1 KB webhook",
        ),
        (
            "receiver_handler",
            "batch_100",
            "whole receiver in-process (storage faked), 100-event batch",
        ),
    ] {
        if let Some(ns) = criterion_median_ns(&root, group, id) {
            row(
                label,
                "(profile)",
                Some(format!("{:.1} µs", ns / 1e3)),
                None,
            );
        }
    }

    // 2. Cold start, size, memory.
    let cold = read(&root.join("target/bench/cold-start.json"));
    let fns = cold
        .as_ref()
        .and_then(|c| c["functions"].as_array().cloned())
        .unwrap_or_default();
    if fns.is_empty() {
        row(
            "cold start, size, memory (make bench-cold)",
            "",
            None,
            Some(false),
        );
    }
    // The two hello-world baselines are the reference, not subjects.
    let baseline = |f: &Value| {
        f["function"]
            .as_str()
            .is_some_and(|n| n.starts_with("hello-lambda"))
    };
    for f in fns.iter().filter(|f| !baseline(f)) {
        let name = f["function"].as_str().unwrap_or("?");
        let size = f["size_bytes"].as_f64();
        row(
            &format!("{name}: stripped bootstrap"),
            "≤ 8 MB (8,000,000 bytes)",
            size.map(|b| format!("{:.2} MiB ({b:.0} bytes)", b / 1_048_576.0)),
            size.map(|b| b <= 8_000_000.0),
        );
        let ratio = f["init_ratio"].as_f64();
        row(
            &format!("{name}: init vs hello-world"),
            "≤ 1.5×",
            ratio.map(|r| {
                let paired = f["init_ratio_paired"]
                    .as_f64()
                    .map(|p| format!("{p:.2}× paired by round; "))
                    .unwrap_or_default();
                format!(
                    "{r:.2}× ({:.1} ms; {paired}{:.2}× the current-thread hello-world)",
                    f["init_median_ms"].as_f64().unwrap_or(0.0),
                    f["init_ratio_current_thread"].as_f64().unwrap_or(0.0)
                )
            }),
            ratio.map(|r| r <= 1.5),
        );
        let rss = f["peak_rss_kib"].as_f64();
        let mem = f["memory_size_mb"].as_f64();
        row(
            &format!("{name}: peak RSS under load vs MemorySize"),
            "fits MemorySize",
            rss.map(|k| format!("{:.1} MB of {} MB", k / 1024.0, mem.unwrap_or(0.0))),
            rss.zip(mem).map(|(k, m)| k / 1024.0 <= m),
        );
    }

    // 3. Units per operation.
    let scan = read(&root.join("target/bench/scan.json"));
    // Rotation and erasure touch every record of the patient by design: listed apart.
    let privacy = |k: &str| k.starts_with("patient.erased") || k.starts_with("patient.ref_rotated");
    let per_event: Vec<(String, f64)> = scan
        .as_ref()
        .and_then(|s| s["units"]["per_event"].as_object().cloned())
        .map(|o| {
            o.into_iter()
                .map(|(k, v)| (k, v["wru"].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let state: Vec<&(String, f64)> = per_event.iter().filter(|(k, _)| !privacy(k)).collect();
    let wru = (!state.is_empty()).then(|| state.iter().map(|(_, w)| *w).fold(0.0, f64::max));
    let over: Vec<String> = state
        .iter()
        .filter(|(_, w)| *w > 2.0)
        .map(|(k, w)| format!("{k}: {w}"))
        .collect();
    row(
        "write units per accepted single-event webhook (worst event type)",
        "≤ 2",
        wru.map(|w| {
            if over.is_empty() {
                format!("{w} ({} event types)", state.len())
            } else {
                format!(
                    "{w} (over 2: {}; the other {} types ≤ 2)",
                    over.join("; "),
                    state.len() - over.len()
                )
            }
        }),
        wru.map(|w| w <= 2.0),
    );
    for (k, w) in per_event.iter().filter(|(k, _)| privacy(k)) {
        row(
            &format!("write units: {k}"),
            "(every record of the patient)",
            Some(format!("{w}")),
            None,
        );
    }
    let refused = scan
        .as_ref()
        .and_then(|s| s["units"]["max_wru_refused"].as_f64());
    row(
        "write units per refused webhook",
        "0",
        refused.map(|w| format!("{w}")),
        refused.map(|w| w == 0.0),
    );
    let redelivery = scan
        .as_ref()
        .and_then(|s| s["units"]["max_wru_redelivery"].as_f64());
    row(
        "write units per redelivered webhook",
        "0",
        redelivery.map(|w| format!("{w}")),
        redelivery.map(|w| w == 0.0),
    );
    let ratio = scan
        .as_ref()
        .and_then(|s| s["scan_read_ratio"]["read_units_ratio"].as_f64());
    row(
        "scan reads, 100,000 vs 10,000 patients, same due count",
        "≤ 1.2×",
        ratio.map(|r| format!("{r:.3}×")),
        ratio.map(|r| r <= 1.2),
    );

    // 4. A practice's first night (figures, no goal but finishing in parts of 10 s).
    let night = read(&root.join("target/bench/first-night.json"));
    let runs: Vec<Value> = night
        .as_ref()
        .and_then(|n| n["runs"].as_array().cloned())
        .unwrap_or_default();
    let latency = night
        .as_ref()
        .and_then(|n| n["latency_ms"].as_f64())
        .unwrap_or(5.0);
    for size in [10_000u64, 100_000] {
        // A night the bench stopped early has two rows: what it read, and the whole night
        // (modelled); the import is the same in both.
        let of_size = |r: &&Value| r["patients"].as_u64() == Some(size);
        let r = runs
            .iter()
            .filter(of_size)
            .find(|r| r["figures"].as_str() != Some("Sample"));
        let imported = r.is_some_and(|r| r["measured"].as_bool() == Some(true));
        let how = if imported { "measured" } else { "extrapolated" };
        let night = match r.and_then(|r| r["figures"].as_str()) {
            Some("Measured") => "measured",
            Some("WholeNight") => "modelled from its measured due count",
            _ => "extrapolated",
        };
        let f = |k: &str| r.and_then(|r| r[k].as_f64());
        row(
            &format!("first night, {size} patients: history import ({how})"),
            "(figure)",
            f("import_wru_per_event").map(|w| {
                format!(
                    "{} events/s on moto, {w:.2} WRU/event, {:.2} RRU/event",
                    f("import_events_per_s").map_or("–".into(), |e| format!("{e:.0}")),
                    f("import_rru_per_event").unwrap_or(0.0)
                )
            }),
            None,
        );
        let modelled = f("scan_modelled_s");
        row(
            &format!("first night, {size} patients: first scan ({night})"),
            "parts of ≤ 10 s, each well inside Lambda's 15 s",
            modelled.map(|m| {
                format!(
                    "{} requests, {:.0} RRU, {:.0} WRU; modelled DynamoDB {m:.0} s at {latency} ms ({} parts); moto {}",
                    f("scan_read_requests").unwrap_or(0.0) + f("scan_write_requests").unwrap_or(0.0),
                    f("scan_rru").unwrap_or(0.0),
                    f("scan_wru").unwrap_or(0.0),
                    (m / 10.0).ceil().max(1.0),
                    f("scan_wall_s").map_or("not run to the end".into(), |w| format!("{w:.0} s"))
                )
            }),
            None,
        );
        row(
            &format!(
                "first night, {size} patients: onboarding cost, DynamoDB on demand + API ({night})"
            ),
            "(figure)",
            f("onboarding_usd").map(|d| format!("${d:.3}")),
            None,
        );
    }

    // 5. Cost.
    let cost = read(&root.join("target/bench/cost.json"));
    let num = |k: &str| cost.as_ref().and_then(|c| c[k].as_f64());
    let (per_m, naive) = (
        num("per_million_webhooks_usd"),
        num("naive_per_million_webhooks_usd"),
    );
    row(
        "cost per 1 million webhooks, all-in, DynamoDB on demand (template default)",
        "≤ $3.00",
        per_m.map(|d| format!("${d:.2} (naive design ${:.2})", naive.unwrap_or(0.0))),
        per_m.map(|d| d <= 3.0),
    );
    let prov = num("provisioned_per_million_webhooks_usd");
    let (use_, goal_use) = (num("provisioned_use"), num("provisioned_goal_use"));
    row(
        &format!(
            "cost per 1 million webhooks, all-in, DynamoDB provisioned with auto scaling at {:.0} % use (`TableCapacity=provisioned`)",
            use_.unwrap_or(0.0) * 100.0
        ),
        "≤ $3.00",
        prov.map(|d| {
            format!(
                "${d:.2} (goal met from {} use)",
                goal_use.map_or("no".to_owned(), |u| format!("{:.0} %", u * 100.0))
            )
        }),
        prov.map(|d| d <= 3.0),
    );
    for (key, label) in [
        (
            "small_practice_month_usd",
            "small practice (2,000 patients), per month",
        ),
        (
            "medium_practice_month_usd",
            "medium practice (20,000 patients), per month",
        ),
        (
            "rollup_100_month_usd",
            "roll-up of 100 practices, per month",
        ),
        (
            "rollup_100_month_provisioned_usd",
            "roll-up of 100 practices, per month, provisioned (floors included)",
        ),
    ] {
        row(label, "cents", num(key).map(|d| format!("${d:.3}")), None);
    }

    println!("| figure | goal | measured | result |");
    println!("|---|---|---|---|");
    let mut ok = true;
    for r in &rows {
        let result = match r.pass {
            Some(true) => "pass",
            Some(false) => {
                ok = false;
                "FAIL"
            }
            None if r.measured == "not measured" => {
                ok = false;
                "missing"
            }
            None => "(figure)",
        };
        println!("| {} | {} | {} | {result} |", r.figure, r.goal, r.measured);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench-report: not every goal is met (see the table)");
        ExitCode::FAILURE
    }
}
