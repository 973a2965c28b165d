//! The integration tests, one binary (a module per area): each links the whole local stack,
//! so one binary links it once. Each test starts its own local stack on free ports.

mod approval_links;
mod browser;
mod budget;
mod consent;
mod emitter;
mod faults;
mod fixtures;
mod flow;
mod full_list;
mod metrics;
mod privacy;
mod privacy_ops;
mod receiver_http;
mod refused_logs;
mod rules;
mod secrets_kms;
mod slots;
mod square_relay;
mod store_bulk;
mod store_by_patient;
