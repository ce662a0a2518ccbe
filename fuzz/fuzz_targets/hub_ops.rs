//! The hub under arbitrary operation sequences, with its invariants checked after every step
//! (see `switchboard_fuzz::hub_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_fuzz::hub_ops(data));
