//! Race live updates (`race-live.md`): clients follow race sessions and receive typed
//! `{type, data, timestamp}` updates published for those sessions.
pub mod v1;
