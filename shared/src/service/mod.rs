//! The domain services the four handlers call. Each takes its ports by reference.

pub mod admin;
pub mod approval;
pub mod attribution;
pub mod consent;
pub mod emitter;
pub mod full_list;
pub mod links;
pub mod ops;
pub mod privacy;
pub mod receiver;
pub mod report;
pub mod scan;
pub mod settings;
pub mod slots;
pub mod withdrawal;
