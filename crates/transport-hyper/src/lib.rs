//! A thin HTTP + WebSocket transport for switchboard over hyper 1.x: each system's WebSocket and
//! HTTP endpoints on one port.
//!
//! hyper parses HTTP/1.1; everything else is the runtime's. On each connection:
//!
//! - a request with `Upgrade: websocket` is decided by
//!   [`switchboard_runtime::upgrade::decide`] (handshake, path, origin, token, and registration
//!   with the hub before the `101`, so a full server answers `503`), answered, and once hyper
//!   hands the socket back it runs as a hub connection
//!   ([`switchboard_runtime::upgrade::socket`], [`switchboard_runtime::reader::Task`]);
//! - a request for the system's server-sent-event stream (`<WebSocket path>/sse`) is decided
//!   by [`switchboard_runtime::sse::decide`]; a refusal is answered by hyper, an accepted stream
//!   is taken from hyper and run by [`switchboard_runtime::sse::run`];
//! - any other request is judged from its head by the system's
//!   [`switchboard_runtime::http::HttpPolicy`] (host, origin, route, key, rate), its body read
//!   within the policy's limits only then, and answered by the system's protocol or the
//!   runtime's own endpoints (`/metrics`, `/health`, `404`).
//!
//! On a TLS process ([`switchboard_runtime::Process::tls`]) the runtime runs each connection's
//! TLS handshake first, in the connection's task, and hands over the TLS stream.
//!
//! Request headers must arrive within [`HEADER_READ_TIMEOUT`]. Once shutdown starts, new
//! upgrades get `503`; idle keep-alive connections are closed and in-flight requests finished.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_runtime::{Endpoint, Process, System};
//! let spec = switchboard_protocol::system("afc").unwrap();
//! let process = Process::default();
//! let system = System::start(Endpoint::from_env(spec), Default::default(), Default::default(), process.clock.clone(), None);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4001").await?;
//! let server = switchboard_hyper::serve(&process, listener, system)?;
//! // Publish from the embedding service:
//! let event = switchboard_protocol::afc::v1::event_publication("todo-created", br#"{"id":1}"#).unwrap();
//! server.hub().publish(event).await.ok();
//! server.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod handover;
mod service;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use switchboard_runtime::http::HttpPolicy;
use switchboard_runtime::{Process, Serving, System};
use tokio::net::TcpListener;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A system served on one port by this transport.
pub type Server = Serving;

/// Serve `system` on `listener` (WebSocket upgrades and HTTP requests), as one system of
/// `process` (its socket budget, its metrics, its HTTP limits, and with [`Process::tls`] TLS
/// only: `wss://` and `https://`).
pub fn serve(process: &Process, listener: TcpListener, system: Arc<System>) -> io::Result<Server> {
    let shared = Arc::new(service::Shared {
        system: system.clone(),
        policy: HttpPolicy::new(process.http.clone()),
        metrics: process.metrics.clone(),
    });
    Serving::spawn(
        process,
        listener,
        system,
        move |stream, peer, ticket, stop| {
            service::serve_connection(stream, peer, ticket, shared.clone(), stop)
        },
    )
}
