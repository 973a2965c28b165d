//! The domain library's modules depend on each other one way only: no module reaches, through
//! `crate::` paths (in `use` items or inline), a module that reaches it back. Read from the
//! source files, test modules included (a test may use only what its module may).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// `src/service/scan.rs` → `service::scan`; `src/guard/mod.rs` → `guard`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file that the library is built from: comments (doc links name modules
/// without importing them) and the `#[cfg(test)]` module at its end left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string (a URL) is rare in this code; a path after it is dropped
            // with the comment, which only loses an edge.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `a, b::{c, d}, e` at its top-level commas.
fn top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut from, mut out) = (0usize, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[from..]);
    out
}

/// The paths of a use tree (`a::b`, `a::{b, c::{d}}`) after `prefix`.
fn tree(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
    let s = s.trim();
    let mut segs = prefix.to_vec();
    let mut r = s;
    loop {
        if let Some(group) = r.strip_prefix('{') {
            let inner = &group[..group.rfind('}').unwrap_or(group.len())];
            for member in top_level(inner) {
                tree(&segs, member, out);
            }
            return;
        }
        let seg: String = r.chars().take_while(|c| ident(*c)).collect();
        if seg.is_empty() {
            break;
        }
        r = &r[seg.len()..];
        segs.push(seg);
        match r.strip_prefix("::") {
            Some(next) => r = next,
            None => break,
        }
    }
    if segs.len() > prefix.len() {
        out.push(segs);
    }
}

/// Every `crate::…` path in `text`, as its segments (each member of a `use crate::{…}` tree).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if i > 0
            && text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| ident(c) || c == '$')
        {
            continue; // `pil_crate::`, `$crate::`
        }
        let rest = &text[i + "crate::".len()..];
        // The tree runs to the end of its braces, or of the path.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                c if depth == 0 && !(ident(c) || c == ':') => {
                    end = j;
                    break;
                }
                _ => {}
            }
        }
        tree(&[], &rest[..end], &mut out);
    }
    out
}

/// The module graph: each module → the modules its `crate::` paths name (the longest module
/// prefix of each path; a module's own submodules and ancestors are not edges).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The in-memory doubles for tests depend on everything by design; nothing the functions
    // run uses them.
    files.retain(|f| module_of(&src, f) != "testing");
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        let edges = g.entry(from.clone()).or_default();
        for segs in crate_paths(&text) {
            let to = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(to) = to {
                let related = to == from
                    || to.starts_with(&format!("{from}::"))
                    || from.starts_with(&format!("{to}::"));
                if !related && !to.is_empty() {
                    edges.insert(to);
                }
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let g = graph();
    assert!(g.len() >= 20, "the source scan found {} modules", g.len());
    assert!(
        g.get("service::scan")
            .is_some_and(|e| e.contains("rules") && e.contains("action")),
        "the scan's edges were read: {:?}",
        g.get("service::scan")
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    assert_eq!(
        crate_paths("use crate::{action::{Action, Suppression}, ids::PracticeId};"),
        vec![
            p(&["action", "Action"]),
            p(&["action", "Suppression"]),
            p(&["ids", "PracticeId"])
        ]
    );
    assert_eq!(
        crate_paths("let x = crate::service::scan::gap_id(p);"),
        vec![p(&["service", "scan", "gap_id"])]
    );
}

/// Presentation stays in `views`: no service defines or renders a template (askama), and none
/// writes HTML by hand.
#[test]
fn services_leave_presentation_to_the_views() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("service"), &mut files);
    assert!(
        files.len() >= 10,
        "the scan found {} service files",
        files.len()
    );
    for f in &files {
        let text = code(&std::fs::read_to_string(f).unwrap());
        for marker in ["askama", "Template", "<!DOCTYPE", "<html", "&lt;"] {
            assert!(
                !text.contains(marker),
                "{} has `{marker}`: presentation belongs in src/views",
                f.display()
            );
        }
    }
}
