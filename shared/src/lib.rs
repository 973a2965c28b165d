//! The Practice Intelligence Layer's domain: boundary types, the inbound parser and PHI guard,
//! state merges, rules, policy, approval tokens, triggers, and the services the Lambda
//! handlers call. Nothing here knows about AWS; the ports in [`ports`] are implemented by
//! `infra/pil-aws`.

pub mod action;
pub mod audit;
pub mod guard;
pub mod ids;
pub mod inbound;
pub mod ports;
pub mod practice;
pub mod refkey;
pub mod rules;
pub mod secrets;
pub mod service;
pub mod signature;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;
pub mod tombstone;
pub mod treatment;
pub mod views;
