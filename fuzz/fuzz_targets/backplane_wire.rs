//! Arbitrary bytes from Redis, as the backplane receives them: every decoder of its wire
//! (publications, `Members`, node summaries) and the machine's own `handle_message` (which tells
//! them apart, and a position prefix), on a node with and without a shared history. Whatever
//! comes, an error or a counted invalid message, never a panic; what decodes encodes back to
//! what decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_fuzz::backplane_wire(data));
