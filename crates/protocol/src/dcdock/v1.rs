//! Placeholder: being written.
use crate::registry::{Auth, Options, SystemSpec};
use crate::{DecodeError, Direction};
use alloc::boxed::Box;
use alloc::vec::Vec;
use bytes::Bytes;
use switchboard_hub::{ConnectionHandle, Context, Protocol};

/// Registry entry.
pub const SPEC: SystemSpec = SystemSpec {
    name: "dcdock",
    title: "dcdock",
    default_port: 0,
    port_env: None,
    ws_path: Some("/ws"),
    auth: Auth::None,
    origins: None,
    api_key_env: "X",
    build,
};
/// Client types.
pub const CLIENT_TYPES: &[&str] = &[];
/// Server types.
pub const SERVER_TYPES: &[&str] = &[];
/// Round trip.
pub fn round_trip(_: Direction, _: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Err(DecodeError::NotAnObject)
}
struct Stub;
fn build(_: &Options) -> Box<dyn Protocol + Send> {
    Box::new(Stub)
}
impl Protocol for Stub {
    fn name(&self) -> &'static str {
        "dcdock"
    }
    fn on_text(&mut self, _: &mut Context<'_>, _: ConnectionHandle, _: &Bytes) {}
}
