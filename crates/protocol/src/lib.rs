//! The message schemas of every system the hub serves, one versioned module per system.
//!
//! Each `<system>::v1` module holds the typed messages of that system's seed documentation
//! (serde, field names and casing exactly as documented), decode functions with typed
//! [`DecodeError`]s, and a [`switchboard_hub::Protocol`] implementation that gives the system its
//! behaviour on the hub. [`registry::SYSTEMS`] lists them with their documented ports and paths.
//!
//! No I/O, no clock, no threads: `no_std` + `alloc`. Timestamps come from the hub's `now`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod codec;
mod error;
pub mod registry;

pub mod afc;
pub mod collab;
pub mod dcdock;
pub mod laptimes;
pub mod race;

pub use error::{DecodeError, MAX_KEY_IN_ERROR};
pub use registry::{system, Options, SystemSpec, SYSTEMS};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by a client to the server.
    ClientToServer,
    /// Sent by the server to a client.
    ServerToClient,
    /// A body a backend POSTs to the system's HTTP publish endpoint.
    Publish,
}

/// Decode a documented example and encode it again, for the doc-vector tests: `Ok` holds the
/// re-encoded bytes. Each module implements this for its own messages.
pub type RoundTrip = fn(Direction, &[u8]) -> Result<alloc::vec::Vec<u8>, DecodeError>;
