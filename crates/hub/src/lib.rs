//! A sans-IO real-time hub: connections, rooms, filters, fan-out rules, heartbeats and limits.
//!
//! The hub does no I/O, reads no clock, spawns nothing and holds no locks. A driver (a transport)
//! feeds it what happened — a connection opened, a frame arrived, bytes were flushed, time
//! passed — and drains what it must do next: transmit a frame, send a ping, close a connection.
//! Time is an argument (`now`, monotonic); the next deadline comes out of [`Hub::poll_timeout`].
//! The wall clock, which only stamps messages, is a separate input ([`Hub::set_wall_clock`]).
//!
//! What one system's clients say is not the hub's business: a [`Protocol`] implementation decodes
//! frames with its [`Decode`] half (pure, so drivers run it on whatever thread the bytes arrived
//! on) and acts on the decoded messages through a [`Context`] (join a room, set a filter,
//! publish). The hub applies the fan-out rules ([`Target`], sender exclusion, filters), encodes
//! nothing itself, and hands every recipient a clone of the same [`Text`] buffer.
//!
//! Every queue is bounded: each connection's unflushed outbound bytes are counted against
//! [`Limits::max_queued_bytes`], and the [`SlowConsumerPolicy`] decides what happens at the limit.
//!
//! # The drive loop
//!
//! ```
//! use switchboard_hub::{Config, Context, ConnectionHandle, Frame, Hub, Instant, OpenInfo, Output};
//! use switchboard_hub::{Protocol, RawText, Text};
//! struct Echo;
//! impl Protocol for Echo {
//!     type Decoder = RawText; // Frames arrive as their text.
//!     fn name(&self) -> &'static str { "echo" }
//!     fn decoder(&self) -> RawText { RawText }
//!     fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
//!         cx.send(conn, frame);
//!     }
//! }
//! # fn clock() -> Instant { Instant::from_millis(1_000) }
//! # fn write(_: ConnectionHandle, _: &[u8]) {}
//!
//! let mut hub = Hub::new(Config::default(), Echo, clock());
//! let conn = hub.handle_open(clock(), OpenInfo::default()).expect("under the connection limit");
//! hub.handle_frame(clock(), conn, Frame::Text(r#"{"type":"ping"}"#.into())).unwrap();
//! loop {
//!     // Every input is followed by a full drain of the output queue.
//!     while let Some(out) = hub.poll_output() {
//!         match out {
//!             Output::Transmit { connection, payload } => {
//!                 write(connection, &payload);
//!                 hub.handle_flushed(clock(), connection, payload.len()).ok();
//!             }
//!             // A publication to many: the same frame to each.
//!             Output::Fanout { payload, recipients } => {
//!                 for connection in recipients {
//!                     write(connection, &payload);
//!                     hub.handle_flushed(clock(), connection, payload.len()).ok();
//!                 }
//!             }
//!             _ => {}
//!         }
//!     }
//!     // Sleep until the next deadline (or the next input), then:
//!     if hub.poll_timeout().is_some_and(|t| t <= clock()) {
//!         hub.handle_timeout(clock());
//!     }
//! #   break;
//! }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

mod close;
pub mod cluster;
mod config;
mod connection;
mod context;
mod erased;
pub mod history;
mod http;
mod hub;
mod idempotency;
mod inspect;
mod output;
mod protocol;
mod publication;
mod ratelimit;
mod sequence;
mod state;
mod stats;
mod streams;
mod tap;
mod text;
pub mod time;
mod v2;
pub mod wire;

pub use bytes::Bytes;
pub use close::CloseCode;
pub use config::{
    Config, HistoryConfig, Limits, RateLimit, RatePolicy, Seed, SlowConsumerPolicy, MAX_HELD_FRAMES,
};
pub use connection::{ConnectionHandle, ConnectionInfo, Dialect, Filter, Identity, OpenInfo, Tags};
pub use context::Context;
pub use erased::{AnyMessage, DynDecode, DynHub};
pub use history::{Epoch, Position, SessionId};
pub use http::{
    HttpRequest, HttpResponse, IdempotencyKey, Method, BAD_IDEMPOTENCY_KEY,
    MAX_IDEMPOTENCY_KEY_BYTES,
};
pub use hub::{Hub, MessageOf, RequestOf};
pub use output::{Frame, JoinError, NothingPending, OpenError, Output, UnknownConnection};
pub use protocol::{decode_frame, Decode, Protocol, RawText};
pub use publication::{Publication, Target};
pub use ratelimit::{RateLimiter, TokenBucket};
pub use stats::{Counters, Stats};
pub use tap::{TapError, MAX_TAPS};
pub use text::Text;
pub use time::{Instant, UnixTime};
