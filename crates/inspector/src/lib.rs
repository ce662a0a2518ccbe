//! The admin listener: a live, read-only inspector page of every system running in the process,
//! on its own address (`--admin-bind`, docs/inspector.md).
//!
//! Per system the page shows connections, rooms, messages in and out per second (small charts),
//! deliveries, drops and slow-consumer closes, refusals and errors by reason, and the backplane's
//! state; the largest rooms (searchable), the connections open longest and one connection in
//! detail; and, on request, a sampled live tail of one room. It updates itself from server-sent
//! events sent by this listener; its HTML, script and style sheet are embedded in the binary.
//!
//! Routes (all `GET` or `HEAD`; anything else is `405`):
//!
//! | Path | What |
//! | --- | --- |
//! | `/` | the page |
//! | `/inspector.js`, `/inspector.css` | its script and style sheet |
//! | `/login?token=` | with the right token: the `sb_admin` cookie, and on to `/` |
//! | `/api/snapshot?system=&q=` | one snapshot, JSON |
//! | `/api/events?system=&q=` | a snapshot a second, as server-sent events |
//! | `/api/connection?system=&id=` | one connection in detail, JSON |
//! | `/api/tail?system=&room=` | a room's publications (sampled, cut short), as server-sent events |
//!
//! What it refuses: without a token, any `Host` but a loopback one (`403`); with one, a request
//! that presents neither `Authorization: Bearer <token>` nor the cookie (`401`); a request
//! another site's page made (`Sec-Fetch-Site`, `Origin`: `403`); more than
//! [`service::MAX_CONNECTIONS`] connections, [`service::MAX_STREAMS`] streams (`503`), a request
//! head over [`service::MAX_HEAD_BYTES`] (`431`).
//!
//! ```no_run
//! # async fn demo(systems: Vec<std::sync::Arc<switchboard_runtime::System>>) -> std::io::Result<()> {
//! let process = switchboard_runtime::Process::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! let admin = switchboard_inspector::serve(listener, &process, systems, None)?;
//! // ... until the process stops:
//! admin.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod assets;
pub mod auth;
pub mod guard;
pub mod service;
pub mod snapshot;
pub mod sse;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_runtime::accept::{shutdown_pair, ShutdownHandle};
use switchboard_runtime::{Process, System};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::{BadToken, Token};

/// The address the admin listener binds by default.
pub const DEFAULT_BIND: &str = "127.0.0.1:9090";

/// An address off loopback needs a token, and none was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsToken(pub SocketAddr);

impl std::fmt::Display for NeedsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the admin listener on {} is not on loopback: set SWITCHBOARD_ADMIN_TOKEN (or use --admin-bind 127.0.0.1:9090, or off)",
            self.0
        )
    }
}

impl std::error::Error for NeedsToken {}

/// Whether the admin listener may run on `bind` with `token`: off loopback it needs one.
pub fn check(bind: SocketAddr, token: Option<&Token>) -> Result<(), NeedsToken> {
    if token.is_none() && !bind.ip().is_loopback() {
        return Err(NeedsToken(bind));
    }
    Ok(())
}

/// The admin listener, running.
#[derive(Debug)]
pub struct Admin {
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, end every connection (live streams too), and wait.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
    }
}

/// Serve the inspector of `systems` (with `process`'s metrics and socket counts) on `listener`,
/// guarded by `token` when given. Refused ([`NeedsToken`], as `InvalidInput`) on an address off
/// loopback without a token.
pub fn serve(
    listener: TcpListener,
    process: &Process,
    systems: Vec<Arc<System>>,
    token: Option<Token>,
) -> io::Result<Admin> {
    let local_addr = listener.local_addr()?;
    check(local_addr, token.as_ref())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(service::Shared {
        systems,
        metrics: process.metrics.clone(),
        admission: process.admission.clone(),
        token,
        streams: Arc::new(Semaphore::new(service::MAX_STREAMS)),
    });
    let (shutdown, signal) = shutdown_pair();
    let task = tokio::spawn(service::accept_loop(listener, shared, signal));
    Ok(Admin {
        local_addr,
        shutdown,
        task,
    })
}
