//! Square's side: webhook signatures, the booking payloads the relay reads, the API client.

pub mod client;
pub mod model;
pub mod signature;
