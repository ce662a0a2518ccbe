//! The switchboard runtime: everything between the sans-IO hub and the sockets that a transport
//! should not have to write again.
//!
//! - [`hub_task`]: one tokio task per system owns its [`switchboard_hub::Hub`] (through
//!   [`switchboard_hub::DynHub`]) and writes the hub's frames straight onto the sockets;
//!   [`HubHandle`] is how everything else talks to it. Frames and requests are decoded by the
//!   caller, on its own thread, with the protocol's decoder.
//! - [`reader`]: a WebSocket connection's task, which only reads (paced by [`pacing`]) and
//!   decodes; [`outbox`]: its write side.
//! - [`sse`]: a system's server-sent-event stream (the same admission as the upgrade, the
//!   same hub connection, written by the same outbox as events; [`event_id`] for v2's ids);
//! - [`gate`] and [`upgrade`]: the one upgrade decision (handshake, path, origin, token,
//!   connection limit) made before any `101`; [`http`]: the one judgement of plain HTTP
//!   requests (host, origin, route, key, rate, body budget).
//! - [`accept`]: the accept loop with [`admission`] (the process's socket budget); [`tls`]: the
//!   certificate and the handshake each connection's task runs first on a TLS port;
//!   [`stream`]: a connection's bytes, plain or TLS; [`system`]:
//!   a running system and its shutdown, a plain stop or a [`drain`] (closes spread over a
//!   window); [`metrics`]: the Prometheus renderer; [`logging`]:
//!   bounded log lines; [`clock`]: monotonic and wall time kept apart; [`backplane`]: what a
//!   cluster backplane plugs into; [`inspect`]: bounded copies of a hub's state and live tails
//!   of its rooms, for an operator's inspector.
//!
//! A transport serves a listener with [`Serving::spawn`] (the accept loop and, on a TLS port,
//! the handshake), which hands it each connection as a [`Stream`]; it answers upgrades with
//! [`upgrade::decide`], makes their socket with [`upgrade::socket`] and runs it with
//! [`reader::Task`], and (if it speaks HTTP) judges other
//! requests with [`http::HttpPolicy`]. It depends on this crate; nothing here depends on a
//! transport.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod accept;
pub mod admission;
pub mod backplane;
pub mod clock;
pub mod drain;
pub mod event_id;
pub mod gate;
pub mod http;
pub mod hub_task;
pub mod inspect;
mod links;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod pacing;
pub mod process;
pub mod reader;
pub mod serving;
pub mod sse;
pub mod stream;
pub mod system;
pub mod tls;
pub mod upgrade;

pub use gate::Endpoint;
pub use hub_task::{HubGone, HubHandle, Tail};
pub use process::Process;
pub use serving::Serving;
pub use stream::Stream;
pub use system::System;
pub use tokio_tungstenite::{self, tungstenite};
