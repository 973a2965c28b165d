//! The inbound parser and PHI guard on arbitrary bytes: no input may panic, an accepted body
//! is a batch of 1-100 events, and a refusal names a rule from the fixed vocabulary. Every
//! UTF-8 input is also fed to the ref guard on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{guard, inbound};

fuzz_target!(|data: &[u8]| {
    let now = jiff::Timestamp::from_second(1_795_000_000).expect("a valid instant");
    match inbound::parse_body(data, now) {
        Ok(events) => assert!(!events.is_empty() && events.len() <= 100),
        Err(refusal) => assert!(!refusal.rule.is_empty()),
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = guard::check_ref(s);
    }
});
