//! `guard-bench`: the PHI guard's accuracy (`make bench-guard`; docs/guard.md, "How it is
//! measured"). Runs `shared::guard::check_ref` over the two corpora of
//! `pil_bench::guard_corpus` — valid ids from real generators, every one of which must be
//! accepted, and PHI-derived refs in named spellings, which must be refused — and prints a
//! Markdown table per generator (refusals and their rules) and per spelling (misses), the
//! worst generator and the weakest spelling. Writes target/bench/guard.json (read by
//! bench-report) and exits non-zero when a goal is missed: no valid id refused, at least
//! 99.5 % of PHI-derived refs refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use pil_bench::guard_corpus::{self, DEFAULT_SEED, Tally};
use pil_local::stack::workspace_root;
use serde_json::{Value, json};

/// Least share of PHI-derived refs the guard must refuse.
const PHI_GOAL: f64 = 0.995;

#[derive(Parser, Debug)]
#[command(
    name = "guard-bench",
    about = "The PHI guard against generated valid ids and PHI-derived refs"
)]
struct Cli {
    /// Valid ids per generator.
    #[arg(long, default_value_t = 10_000)]
    per_generator: usize,
    /// PHI-derived refs per spelling (and as many again for its `p_` twin).
    #[arg(long, default_value_t = 100)]
    per_spelling: usize,
    /// Seed of both corpora.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Print this many example misses per generator and spelling (development only: the
    /// values are synthetic, but they are the guard's blind spots).
    #[arg(long, default_value_t = 0)]
    show_misses: usize,
    /// Where to write the figures (default target/bench/guard.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn check(v: &str) -> Result<(), &'static str> {
    shared::guard::check_ref(v).map_err(|r| r.code())
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("guard-bench: a goal is missed (see the tables)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("guard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let cli = Cli::parse();
    let keep = cli.show_misses;

    // Valid ids.
    let gens = guard_corpus::id_generators();
    let mut valid: Vec<(Tally, &'static str)> = Vec::new();
    for g in &gens {
        let ids = g.generate(cli.seed, cli.per_generator);
        valid.push((Tally::of(g.name, &ids, check, false, keep), g.about));
    }
    // The guard's cost per valid id (what every accepted webhook pays per ref field): one
    // more pass over the corpus, timed, the results kept so the work is not optimised away.
    let all_ids: Vec<String> = gens
        .iter()
        .flat_map(|g| g.generate(cli.seed, cli.per_generator))
        .collect();
    let started = std::time::Instant::now();
    let accepted = all_ids
        .iter()
        .filter(|v| std::hint::black_box(shared::guard::check_ref(v)).is_ok())
        .count();
    let ns_per_ref = started.elapsed().as_nanos() as f64 / all_ids.len().max(1) as f64;
    // The margin: how close the valid ids came to the randomness test's threshold.
    let closest = gens
        .iter()
        .flat_map(|g| {
            g.generate(cli.seed, cli.per_generator)
                .into_iter()
                .map(move |v| (shared::guard::randomness_ratio(&v), g.name, v))
        })
        .fold(
            ((f32::MIN, 0.0), "", String::new()),
            |best, ((r, t), name, v)| {
                if r > best.0.0 {
                    ((r, t), name, v)
                } else {
                    best
                }
            },
        );
    let v_n: usize = valid.iter().map(|(t, _)| t.n).sum();
    let v_refused: usize = valid.iter().map(|(t, _)| t.refused).sum();
    let worst = valid
        .iter()
        .map(|(t, _)| t)
        .max_by(|a, b| a.refused.cmp(&b.refused).then(b.name.cmp(&a.name)))
        .cloned()
        .unwrap_or_default();

    println!("## Valid ids: every one must be accepted\n");
    println!(
        "{} generators × {} ids, seed {}.\n",
        gens.len(),
        cli.per_generator,
        cli.seed
    );
    println!("| generator | what | n | refused | rate | refusals by rule |");
    println!("|---|---|---:|---:|---:|---|");
    for (t, about) in &valid {
        println!(
            "| {} | {about} | {} | {} | {} | {} |",
            t.name,
            t.n,
            t.refused,
            pct(t.refusal_rate()),
            t.rules_line()
        );
    }
    println!(
        "| **all** | | **{v_n}** | **{v_refused}** | **{}** | |\n",
        pct(v_refused as f64 / v_n.max(1) as f64)
    );
    println!(
        "Guard cost: {ns_per_ref:.0} ns per valid id ({accepted} of {} accepted on the timed pass).\n",
        all_ids.len()
    );
    println!(
        "Randomness margin: the valid id closest to the threshold ({:.1} nats) scored {:.1} ({}, `{}`).\n",
        closest.0.1, closest.0.0, closest.1, closest.2
    );
    println!(
        "Worst generator: {} ({} of {} refused, {}).\n",
        worst.name,
        worst.refused,
        worst.n,
        pct(worst.refusal_rate())
    );
    if keep > 0 {
        for (t, _) in valid.iter().filter(|(t, _)| !t.wrong.is_empty()) {
            println!("- {} refused: {}", t.name, t.wrong.join("  "));
        }
        println!();
    }

    // PHI-derived refs.
    let corpus = guard_corpus::phi_corpus(cli.seed, cli.per_spelling);
    let phi: Vec<(Tally, &guard_corpus::PhiSpelling)> = corpus
        .iter()
        .map(|s| (Tally::of(&s.name, &s.values, check, true, keep), s))
        .collect();
    let p_n: usize = phi.iter().map(|(t, _)| t.n).sum();
    let p_refused: usize = phi.iter().map(|(t, _)| t.refused).sum();
    let p_rate = p_refused as f64 / p_n.max(1) as f64;
    let weakest = phi
        .iter()
        .map(|(t, _)| t)
        .min_by(|a, b| {
            a.refusal_rate()
                .total_cmp(&b.refusal_rate())
                .then(a.name.cmp(&b.name))
        })
        .cloned()
        .unwrap_or_default();
    // Spellings as weak as the weakest (often several at 0 %).
    let as_weak = phi
        .iter()
        .filter(|(t, _)| t.refusal_rate() <= weakest.refusal_rate())
        .count();
    let by_name: BTreeMap<&str, &Tally> = phi.iter().map(|(t, _)| (t.name.as_str(), t)).collect();

    println!("## PHI-derived refs: every one must be refused\n");
    println!(
        "{} spellings, each also with a `p_` prefix, × {} refs, seed {}; only refs that fit the \
         wire contract (16-64 of `[A-Za-z0-9_-]`). Word lists: {}.\n",
        corpus.len() / 2,
        cli.per_spelling,
        cli.seed,
        guard_corpus::word_list_sizes()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| spelling | example | n | missed | refused | `p_` missed | `p_` refused | refusals by rule |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for (t, s) in phi.iter().filter(|(t, _)| !t.name.starts_with("p_/")) {
        let twin = by_name.get(format!("p_/{}", t.name).as_str());
        let mut rules = t.rules.clone();
        if let Some(tw) = twin {
            for (k, v) in &tw.rules {
                *rules.entry(k.clone()).or_default() += v;
            }
        }
        let joined = Tally {
            rules,
            ..Tally::default()
        };
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            t.name,
            s.example,
            t.n,
            t.accepted(),
            pct(t.refusal_rate()),
            twin.map_or("-".into(), |w| w.accepted().to_string()),
            twin.map_or("-".into(), |w| pct(w.refusal_rate())),
            joined.rules_line()
        );
    }
    println!();
    println!("| family | n | missed | refused |");
    println!("|---|---:|---:|---:|");
    let mut families: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (t, s) in &phi {
        let f = families.entry(s.family).or_default();
        f.0 += t.n;
        f.1 += t.accepted();
    }
    for (f, (n, missed)) in &families {
        println!(
            "| {f} | {n} | {missed} | {} |",
            pct(1.0 - *missed as f64 / (*n).max(1) as f64)
        );
    }
    println!(
        "| **all** | **{p_n}** | **{}** | **{}** |\n",
        p_n - p_refused,
        pct(p_rate)
    );
    println!(
        "Weakest spelling: {} ({} of {} missed, {} refused; {as_weak} spellings as weak).\n",
        weakest.name,
        weakest.accepted(),
        weakest.n,
        pct(weakest.refusal_rate())
    );
    if keep > 0 {
        for (t, _) in phi.iter().filter(|(t, _)| !t.wrong.is_empty()) {
            println!("- {} accepted: {}", t.name, t.wrong.join("  "));
        }
        println!();
    }

    let valid_ok = v_refused == 0;
    let phi_ok = p_rate >= PHI_GOAL;
    println!(
        "Goals: valid ids refused {v_refused} of {v_n} (goal 0): {}; PHI-derived refs refused {} \
         (goal ≥ {}): {}.",
        if valid_ok { "pass" } else { "FAIL" },
        pct(p_rate),
        pct(PHI_GOAL),
        if phi_ok { "pass" } else { "FAIL" }
    );

    let tally_json = |t: &Tally| -> Value {
        json!({"name": t.name, "n": t.n, "refused": t.refused, "accepted": t.accepted(),
               "refusal_rate": t.refusal_rate(), "rules": t.rules})
    };
    let report = json!({
        "seed": cli.seed,
        "per_generator": cli.per_generator,
        "per_spelling": cli.per_spelling,
        "ns_per_valid_ref": ns_per_ref,
        "valid": {
            "n": v_n,
            "refused": v_refused,
            "goal_refused_max": 0,
            "pass": valid_ok,
            "worst": tally_json(&worst),
            "generators": valid.iter().map(|(t, about)| {
                let mut j = tally_json(t);
                j["about"] = json!(about);
                j
            }).collect::<Vec<_>>(),
        },
        "phi": {
            "n": p_n,
            "refused": p_refused,
            "missed": p_n - p_refused,
            "refusal_rate": p_rate,
            "goal_refusal_rate_min": PHI_GOAL,
            "pass": phi_ok,
            "weakest": tally_json(&weakest),
            "spellings_as_weak": as_weak,
            "families": families.iter().map(|(f, (n, missed))| {
                (f.to_string(), json!({"n": n, "missed": missed}))
            }).collect::<serde_json::Map<_, _>>(),
            "spellings": phi.iter().map(|(t, s)| {
                let mut j = tally_json(t);
                j["family"] = json!(s.family);
                j["example"] = json!(s.example);
                j
            }).collect::<Vec<_>>(),
        },
    });
    let out = cli
        .out
        .unwrap_or_else(|| workspace_root().join("target/bench/guard.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("guard-bench: figures in {}", out.display());
    Ok(valid_ok && phi_ok)
}
