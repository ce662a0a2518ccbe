//! The full switchboard server: every system's WebSocket endpoint and HTTP endpoints on one port,
//! served by hyper.
//!
//! This crate adds HTTP to the `switchboard-tokio` driver and reuses all of it: the hub task
//! ([`switchboard_tokio::driver`]), the upgrade gate ([`switchboard_tokio::gate`]), the
//! connection task ([`switchboard_tokio::connection`]) and its outbox
//! ([`switchboard_tokio::outbox`]; after the `101` the TCP stream is taken back from hyper so the
//! hub task can write to it directly). On each system's port:
//!
//! - a WebSocket upgrade on the system's path is checked by the gate, registered with the hub
//!   *before* the `101` is sent (so a full server answers `503`), and then run as a hub connection;
//! - any other request is read in full (at most [`service::MAX_BODY_BYTES`]) and offered to the
//!   system's protocol ([`switchboard_hub::Protocol::on_http`]); what it does not answer falls
//!   back to `GET /metrics` (Prometheus text for every system in the process, [`metrics`]),
//!   `GET /health`, or `404`;
//! - systems with a browser-origin policy get CORS headers for allowed origins.
//!
//! # Decisions
//!
//! - Any request with `Upgrade: websocket` is treated as an upgrade: a malformed handshake gets
//!   `400` with the reason (`426` and `Sec-WebSocket-Version: 13` for another version), a path
//!   other than the system's WebSocket path `404`, a refused origin `403`, a full server `503`
//!   (`connection limit of N reached`), and a refused DCDock token `101` then close `1008`.
//! - CORS (origin-policy systems only): a request from an allowed `Origin` gets
//!   `Access-Control-Allow-Origin: <origin>`, `Vary: Origin` and
//!   `Access-Control-Allow-Credentials: true`; a disallowed origin is served without them (a
//!   browser then hides the answer; server-side callers are unaffected). `OPTIONS` preflights get
//!   `204` with [`service::CORS_METHODS`] and [`service::CORS_HEADERS`], or `403` with a JSON
//!   reason for a disallowed origin.
//! - Request bodies above [`service::MAX_BODY_BYTES`] (declared or streamed) get `413`; request
//!   headers must arrive within [`service::HEADER_READ_TIMEOUT`].
//! - Once shutdown starts, new upgrades get `503`; idle keep-alive HTTP connections are closed
//!   and in-flight requests finished; a stopped system leaves the shared `/metrics`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_hyper::Server;
//! use switchboard_tokio::Endpoint;
//! let spec = switchboard_protocol::system("afc").unwrap();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4001").await?;
//! let server = Server::start(listener, Endpoint::from_env(spec), &Default::default(), Default::default())?;
//! // Publish from the embedding service:
//! let event = switchboard_protocol::afc::v1::event_publication("todo-created", br#"{"id":1}"#).unwrap();
//! server.hub().publish(event).await.ok();
//! server.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod metrics;
pub mod server;
pub mod service;

pub use metrics::Metrics;
pub use server::{Process, Server};
pub use service::HttpLimits;
