//! Benchmarks and reports run on the local stack (`pil-local`): each is a binary in
//! `src/bin/` behind a `make` target (docs/checks.md). The library holds what more than one of
//! them, or a test, shares: the PHI guard's evaluation corpora.

pub mod guard_corpus;
