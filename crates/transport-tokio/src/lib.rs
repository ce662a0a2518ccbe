//! A thin tokio driver for the switchboard hub.
//!
//! One task owns each system's [`switchboard_hub::Hub`] ([`driver`]) and writes its frames
//! straight onto the sockets through each connection's [`outbox`]; each WebSocket connection
//! runs a task that reads frames into the hub ([`connection`]). [`gate`] decides whether an upgrade is accepted (path, origin, JWT), and
//! [`server`] is a WebSocket-only accept loop. The hyper transport reuses all of it and adds the
//! HTTP endpoints.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_tokio::{gate::Endpoint, server::Server};
//! let spec = switchboard_protocol::system("laptimes").unwrap();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
//! let server = Server::start(listener, Endpoint::from_env(spec), &Default::default(), Default::default())?;
//! // ... later:
//! server.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod connection;
pub mod driver;
pub mod gate;
pub mod logging;
pub mod outbox;
pub mod server;

pub use driver::{HubGone, HubHandle};
pub use gate::Endpoint;
pub use server::{Server, Shutdown, ShutdownHandle};
