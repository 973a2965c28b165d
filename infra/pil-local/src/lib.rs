//! The local stack (no AWS account, no Docker): moto on loopback, resources from
//! template.yaml, the four handlers in-process, a PMS simulator, and the scripted scenario
//! `make run` plays.

pub mod capture;
pub mod fault;
pub mod inventory;
pub mod moto;
pub mod pms;
pub mod relay;
pub mod scenario;
pub mod square_seller;
pub mod square_story;
pub mod stack;
pub mod template;

/// Logs of the local tools (the stack, the benches) as compact text on stderr, filtered by
/// `RUST_LOG` or else `default` (e.g. "warn").
pub fn init_stderr_logging(default: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}
