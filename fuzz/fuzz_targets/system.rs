//! Every system in `SYSTEMS`, picked by the input's first byte (`SYSTEMS[data[0] % len]`): the
//! rest goes to the system's round trip in every direction, to its hub as a raw frame and HTTP
//! bodies (decoded on and off the hub, compared), and as a structured session
//! (see `switchboard_fuzz::system`). A new system is fuzzed as soon as it is registered.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_fuzz::system(data));
