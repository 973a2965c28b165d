//! The `pil` CLI's tests, one binary (a module per area): each runs the `pil` binary as
//! outside scripts do, against its own local stack.

mod audit;
mod cli;
mod common;
mod conformance;
mod import;
mod links;
mod onboarding;
mod ops;
mod refs;
mod report;
mod rotate;
