//! Laptimes: arbitrary bytes to the client decoder, then to a hub running the relay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::laptimes::v1;

fuzz_target!(|data: &[u8]| {
    let _ = v1::decode_client(data);
    let _ = v1::decode_server(data);
    switchboard_fuzz::drive_protocol(&v1::SPEC, v1::CLIENT_TYPES, &["/", "/health"], data);
});
