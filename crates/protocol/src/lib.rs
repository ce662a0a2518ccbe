//! The message schemas of every system the hub serves, one versioned module per system.
//!
//! Each `<system>::v1` module holds the typed messages of that system's seed documentation
//! (serde, field names and casing exactly as documented), decode functions with typed
//! [`DecodeError`]s, and the system's two halves on the hub:
//!
//! - a decoder ([`switchboard_hub::Decode`]): pure, `Clone + Send + Sync`, run wherever the bytes
//!   arrive. It turns a client's frame into a typed message or a [`DecodeError`], and an HTTP
//!   request into a [`DecodedRequest`]: routed through the system's route table, its key
//!   checked, its body decoded and validated. Every JSON parse and every check happens here.
//! - a [`switchboard_hub::Protocol`] that only applies what was decoded: joins, filters,
//!   publications, replies (an error reply too, so it goes out in order with the others).
//!
//! [`SYSTEMS`] lists them with their documented ports and paths ([`SystemSpec`]).
//!
//! No I/O, no clock, no threads: `no_std` + `alloc`. Timestamps come from the hub's wall clock
//! ([`switchboard_hub::Context::wall_clock`]), formatted by [`time::DateTime`].
//!
//! Files depend one way only: `error` ← `codec` ← `spec`, `time` ← each system's module ←
//! `registry`; this file only declares and re-exports.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod codec;
mod error;
pub mod registry;
pub mod spec;
pub mod time;

pub mod afc;
pub mod collab;
pub mod dcdock;
pub mod laptimes;
pub mod race;

pub use error::{DecodeError, MAX_KEY_IN_ERROR};
pub use registry::{system, SYSTEMS};
pub use spec::{Auth, Build, DecodedRequest, Direction, Options, RoundTrip, SystemSpec};
