//! collab: arbitrary bytes to the collab decoders, then to a hub running that protocol, as frames and HTTP bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::collab::v1;

fuzz_target!(|data: &[u8]| {
    let _ = v1::decode_client(data);
    let _ = v1::decode_server(data);
    let _ = v1::decode_broadcast(data);
    switchboard_fuzz::drive_protocol(
        &v1::SPEC,
        v1::CLIENT_TYPES,
        &["/broadcast", "/stats", "/health", "/ws"],
        data,
    );
});
