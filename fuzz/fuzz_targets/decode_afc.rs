//! afc: arbitrary bytes to the afc decoders, then to a hub running that protocol, as frames and HTTP bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::afc::v1;

fuzz_target!(|data: &[u8]| {
    let _ = v1::decode_client(data);
    let _ = v1::decode_server(data);
    let _ = v1::decode_publish(data);
    switchboard_fuzz::drive_protocol(
        &v1::SPEC,
        v1::CLIENT_TYPES,
        &["/events/", "/events/todo-created", "/health", "/ws"],
        data,
    );
});
