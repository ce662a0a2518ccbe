//! A thin HTTP + WebSocket transport for switchboard over hyper 1.x: each system's WebSocket and
//! HTTP endpoints on one port.
//!
//! hyper parses HTTP/1.1; everything else is the runtime's. On each connection:
//!
//! - a request with `Upgrade: websocket` is decided by
//!   [`switchboard_runtime::upgrade::decide`] (handshake, path, origin, token, and registration
//!   with the hub before the `101`, so a full server answers `503`), answered, and once hyper
//!   hands the socket back it runs as a hub connection
//!   ([`switchboard_runtime::upgrade::socket`], [`switchboard_runtime::reader::run`]);
//! - any other request is judged from its head by the system's
//!   [`switchboard_runtime::http::HttpPolicy`] (host, origin, route, key, rate), its body read
//!   within the policy's limits only then, and answered by the system's protocol or the
//!   runtime's own endpoints (`/metrics`, `/health`, `404`).
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
//! let server = switchboard_hyper::Server::start(&process, listener, system)?;
//! // Publish from the embedding service:
//! let event = switchboard_protocol::afc::v1::event_publication("todo-created", br#"{"id":1}"#).unwrap();
//! server.hub().publish(event).await.ok();
//! server.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod service;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_runtime::accept::{accept_loop, shutdown_pair, ShutdownHandle};
use switchboard_runtime::http::HttpPolicy;
use switchboard_runtime::{HubHandle, Process, System};
use tokio::net::TcpListener;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A system served on one port: WebSocket upgrades and HTTP requests.
#[derive(Debug)]
pub struct Server {
    system: Arc<System>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serve `system` on `listener`, as one system of `process` (its socket budget, its metrics,
    /// its HTTP limits).
    pub fn start(
        process: &Process,
        listener: TcpListener,
        system: Arc<System>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let (shutdown, signal) = shutdown_pair();
        let registration = process.metrics.register(system.clone());
        let shared = Arc::new(service::Shared {
            system: system.clone(),
            policy: HttpPolicy::new(process.http.clone()),
            metrics: process.metrics.clone(),
        });
        let admission = process.admission.clone();
        let task = tokio::spawn(async move {
            let (sys, stop) = (shared.system.clone(), signal.clone());
            let refusals = sys.refusals().clone();
            let conns = accept_loop(
                listener,
                sys.name(),
                signal,
                &admission,
                &refusals,
                |tcp, peer, ticket| {
                    service::serve_connection(tcp, peer, ticket, shared.clone(), stop.clone())
                },
            )
            .await;
            sys.drain(conns).await;
            drop(registration);
        });
        Ok(Server {
            system,
            local_addr,
            shutdown,
            task,
        })
    }

    /// The system served.
    pub fn system(&self) -> &Arc<System> {
        &self.system
    }

    /// The system's hub, for publishing from the embedding service.
    pub fn hub(&self) -> &HubHandle {
        self.system.hub()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stop accepting, close every WebSocket with 1001, finish in-flight HTTP requests, and wait
    /// (at most [`switchboard_runtime::system::SHUTDOWN_GRACE`] for connections).
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Wait until the server stops.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}
