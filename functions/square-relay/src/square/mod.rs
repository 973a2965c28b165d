//! Square's side: webhook signatures, the booking payloads the relay reads, the API client.

pub mod signature;
