//! The Square relay: the practice-side piece that turns Square Appointments into the layer's
//! PHI-free events and the layer's triggers into Square customer-group memberships. It runs
//! in the practice's own AWS account, inside its PHI boundary: it sees Square's payloads, and
//! only ids made opaque with the practice's ref key leave it (docs/square-relay.md).
//!
//! Two functions share this library: `square-relay` (HTTP: Square's webhooks, the layer's
//! triggers; [`http`]) and `square-relay-jobs` (scheduled: backfill, completions, expiry;
//! [`jobs`]).

pub mod config;
pub mod dynamo;
pub mod http;
pub mod jobs;
pub mod layer;
pub mod mapping;
pub mod relay;
pub mod square;
pub mod store;
