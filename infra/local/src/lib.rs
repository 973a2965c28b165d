//! The local stack (no AWS account, no Docker): moto on loopback, resources from
//! template.yaml, the four handlers in-process, a PMS simulator, and the scripted scenario
//! `make run` plays.

pub mod capture;
pub mod fault;
pub mod inventory;
pub mod moto;
pub mod pms;
pub mod scenario;
pub mod stack;
pub mod template;
