//! The fuzz corpus (`fuzz/corpus/inbound`, grown by `make fuzz`) replayed on stable Rust: every
//! input goes through the inbound parser and, when it is UTF-8, through the ref guard on its
//! own. No input may panic, an accepted body is a batch of 1–100 events, and every refusal
//! names a rule from the vocabulary docs/contracts.md documents for its code ("Responses").

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use shared::{guard, inbound};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `code → rules`, read from the Responses table of docs/contracts.md: each row's second cell
/// is the code and its fourth lists the rules, each in backticks.
fn documented_rules() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("docs/contracts.md")).expect("contracts");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 422 | `phi_detected` | field | rules |" splits into 6 cells, the first empty.
        if cells.len() != 6 || !cells[1].chars().all(|c| c.is_ascii_digit()) || cells[1].is_empty()
        {
            continue;
        }
        if let Some(code) = ticked(cells[2]).into_iter().next() {
            rules.entry(code).or_default().extend(ticked(cells[4]));
        }
    }
    rules
}

#[test]
fn the_documented_vocabulary_is_read() {
    let rules = documented_rules();
    for (code, rule) in [
        ("malformed_json", "json"),
        ("schema_violation", "duplicate_key"),
        ("schema_violation", "ref_format"),
        ("phi_detected", "encoded_text"),
        ("phi_detected", "person_name"),
    ] {
        assert!(
            rules.get(code).is_some_and(|r| r.contains(rule)),
            "{code}: {rule}"
        );
    }
}

#[test]
fn the_fuzz_corpus_replays_with_documented_rules_only() {
    let rules = documented_rules();
    let dir = root().join("fuzz/corpus/inbound");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the fuzz corpus at {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    // The corpus is kept in git: a replay over nothing would prove nothing.
    assert!(files.len() >= 1_000, "{} corpus files", files.len());
    let now = jiff::Timestamp::from_second(1_795_000_000).expect("a valid instant");
    let guard_rules = &rules["phi_detected"];
    let (mut accepted, mut refused) = (0usize, 0usize);
    for path in &files {
        let data = std::fs::read(path).expect("a corpus file");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match inbound::parse_body(&data, now) {
            Ok(events) => {
                assert!((1..=100).contains(&events.len()), "{name:?}");
                accepted += 1;
            }
            Err(r) => {
                let code = r.code.as_str();
                assert!(
                    rules.get(code).is_some_and(|set| set.contains(r.rule)),
                    "{name:?}: `{code}` with undocumented rule `{}`",
                    r.rule
                );
                refused += 1;
            }
        }
        if let Ok(s) = std::str::from_utf8(&data)
            && let Err(rule) = guard::check_ref(s)
        {
            let code = rule.code();
            assert!(
                guard_rules.contains(code) || code == "ref_format",
                "{name:?}: the guard's rule `{code}` is not documented"
            );
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}
