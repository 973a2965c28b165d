//! The Square relay: the practice-side piece that turns Square Appointments into the layer's
//! PHI-free events and the layer's triggers into Square customer-group memberships. It runs
//! in the practice's own AWS account, inside its PHI boundary: it sees Square's payloads, and
//! only ids made opaque with the practice's ref key leave it (docs/square-relay.md).

pub mod square;
