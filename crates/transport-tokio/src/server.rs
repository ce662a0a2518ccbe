//! A WebSocket-only server for one system: accept, check the upgrade, run the connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{CloseCode, Config};
use switchboard_protocol::Options;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::admission::{Admission, Refusals, Ticket};
use crate::connection;
use crate::driver::{spawn_hub, HubHandle};
use crate::gate::{handshake_problem, origin_header, Endpoint, RefusalReason, Verdict};
use crate::logging::{Clip, REFUSALS};
use crate::outbox::Outbox;

/// How long shutdown waits for connections to finish their close handshakes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Tells a running server to stop; cloneable, and dropping it does not stop the server.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

/// The receiving side of a [`ShutdownHandle`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new shutdown pair.
pub fn shutdown_pair() -> (ShutdownHandle, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownHandle { tx: Arc::new(tx) }, Shutdown { rx })
}

impl ShutdownHandle {
    /// Ask the server to stop accepting, close every connection with 1001, and return.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown was triggered. If every handle is dropped without triggering, it
    /// never resolves: dropping handles does not stop the server.
    pub async fn wait(&mut self) {
        if self.rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Bytes tungstenite reads from a socket at a time (a larger frame is still read whole: its
/// header makes tungstenite reserve room for it).
pub const READ_BUFFER_BYTES: usize = 1024;

/// The WebSocket settings a hub's limits imply. tungstenite refuses frames above twice the hub's
/// limit outright (bounding memory); frames between the two reach the hub, which closes with
/// 1009 and counts the error.
pub fn ws_config(config: &Config) -> WebSocketConfig {
    let hard = config.limits.max_frame_bytes.saturating_mul(2).max(1024);
    WebSocketConfig::default()
        // tungstenite zero-fills its whole read buffer before each read; the 128 KiB default
        // made that memset most of the server's CPU per delivery and kept ~128 KiB resident per
        // idle connection (docs/BENCHMARKS.md).
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
        // tungstenite writes only control frames (pongs, close replies) and hands each to the
        // outbox at once; the hub's frames bypass it (crate::outbox).
        .write_buffer_size(0)
}

/// A running system: its hub and its accept loop.
#[derive(Debug)]
pub struct Server {
    hub: HubHandle,
    refusals: Arc<Refusals>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Server {
    /// Start serving `endpoint` on `listener` with a fresh hub and the process's whole socket
    /// budget.
    pub fn start(
        listener: TcpListener,
        endpoint: Endpoint,
        options: &Options,
        config: Config,
    ) -> io::Result<Server> {
        Self::start_with(
            listener,
            endpoint,
            options,
            config,
            Admission::for_process(),
            None,
        )
    }

    /// As [`Server::start`], admitting sockets through `admission` (shared by every system of
    /// a process) and handing local publications and room changes to a backplane.
    pub fn start_with(
        listener: TcpListener,
        endpoint: Endpoint,
        options: &Options,
        config: Config,
        admission: Arc<Admission>,
        replicate: Option<mpsc::Sender<crate::driver::Replication>>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let ws = ws_config(&config);
        let (hub, _) = spawn_hub(config, (endpoint.spec.build)(options), replicate);
        let (shutdown, signal) = shutdown_pair();
        let refusals = Arc::new(Refusals::default());
        let shared = Arc::new(Accepting {
            endpoint,
            hub: hub.clone(),
            ws,
            refusals: refusals.clone(),
        });
        let task = tokio::spawn(serve(listener, shared, admission, signal));
        Ok(Server {
            hub,
            refusals,
            local_addr,
            shutdown,
            task,
        })
    }

    /// What this system refused so far.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// The hub, for publishing from the embedding service.
    pub fn hub(&self) -> &HubHandle {
        &self.hub
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stop and wait until every connection is closed (at most [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Wait until the server stops.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}

/// Accept WebSocket connections until `shutdown`, then close them all with 1001.
async fn serve(
    listener: TcpListener,
    shared: Arc<Accepting>,
    admission: Arc<Admission>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let hub = shared.hub.clone();
    let refusals = shared.refusals.clone();
    let conns = accept_loop(
        listener,
        hub.name(),
        shutdown,
        &admission,
        &refusals,
        |tcp, peer, ticket| connect(tcp, peer, ticket, shared.clone()),
    )
    .await;
    drain(&hub, conns).await;
    Ok(())
}

/// How long the accept loop pauses after `accept` fails (e.g. `EMFILE`): long enough not to spin
/// a core while the process is out of file descriptors, short enough to recover at once.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accept TCP connections until `shutdown`, running `handle` for each admitted socket in its own
/// task (with its [`Ticket`], held until the task ends); sockets over `admission`'s limits are
/// answered `503`/`429` and closed, and counted in `refusals` (kind `socket`). Returns the tasks
/// still running, for [`drain`]. Shared by both transports.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    system: &'static str,
    mut shutdown: Shutdown,
    admission: &Arc<Admission>,
    refusals: &Refusals,
    mut handle: F,
) -> JoinSet<()>
where
    F: FnMut(TcpStream, SocketAddr, Ticket) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match admission.admit(peer.ip()) {
                    Ok(ticket) => {
                        let _ = tcp.set_nodelay(true);
                        conns.spawn(handle(tcp, peer, ticket));
                    }
                    Err(why) => {
                        refusals.count("socket", why.reason());
                        if REFUSALS.allow() {
                            tracing::warn!(system, %peer, reason = why.reason(), "connection refused at accept");
                        }
                        admission.refuse(tcp, why);
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // keep listening.
                    if REFUSALS.allow() {
                        tracing::warn!(system, error = %e, "accept failed");
                    }
                    refusals.count("socket", "accept_error");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(system, error = %e, "connection task failed");
                }
            }
            _ = shutdown.wait() => break,
        }
    }
    conns
}

/// Close every connection with 1001 and wait for their tasks, up to [`SHUTDOWN_GRACE`].
pub async fn drain(hub: &HubHandle, mut conns: JoinSet<()>) {
    let _ = hub
        .close_all(CloseCode::GOING_AWAY, "server shutting down")
        .await;
    let done = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if done.is_err() {
        conns.abort_all();
    }
}

/// What every connection of one [`serve`] shares.
struct Accepting {
    endpoint: Endpoint,
    hub: HubHandle,
    ws: WebSocketConfig,
    refusals: Arc<Refusals>,
}

/// One connection's task: the upgrade and registration, boxed so their state is freed once
/// done, then the connection itself. Every connection holds this future for its whole life,
/// hence a plain `fn` around an `async` block (an `async fn` would keep a second copy of its
/// arguments) and one shared `Arc` instead of per-connection copies of the settings.
// Not an `async fn` on purpose (see above).
#[allow(clippy::manual_async_fn)]
fn connect(
    tcp: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    shared: Arc<Accepting>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let _ticket = ticket;
        let Some((mut ws, opened)) = Box::pin(upgrade(tcp, peer, &shared)).await else {
            return;
        };
        connection::run(&mut ws, &shared.hub, &opened, peer).await;
    }
}

// tungstenite's handshake callback must return its (large) `ErrorResponse` by value.
#[allow(clippy::result_large_err)]
async fn upgrade(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Accepting,
) -> Option<(connection::Socket, crate::driver::Opened)> {
    let mut verdict = None;
    let system = shared.hub.name();
    let callback = |req: &Request, resp: Response| {
        // tungstenite has checked the method, version, upgrade headers and key by now.
        let v = match handshake_problem(req.method(), req.version(), req.headers()) {
            Some((status, reason)) => {
                Verdict::Refuse(status, reason.to_string(), RefusalReason::Handshake)
            }
            None => shared.endpoint.check(
                req.uri().path(),
                req.uri().query(),
                origin_header(req.headers()),
            ),
        };
        let refused = match &v {
            Verdict::Refuse(status, reason, why) => Some((*status, reason.clone(), *why)),
            _ => None,
        };
        verdict = Some(v);
        match refused {
            None => Ok(resp),
            Some((status, reason, why)) => {
                shared.refusals.count("upgrade", why.as_str());
                if REFUSALS.allow() {
                    tracing::info!(system, %peer, status, reason = %Clip(&reason), "upgrade refused");
                }
                let mut r = ErrorResponse::new(Some(reason));
                *r.status_mut() =
                    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FORBIDDEN);
                Err(r)
            }
        }
    };
    let (duplex, out) = Outbox::split(tcp, shared.hub.clone());
    let mut ws =
        match tokio_tungstenite::accept_hdr_async_with_config(duplex, callback, Some(shared.ws))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if verdict.is_none() {
                    // tungstenite refused the handshake before asking us.
                    shared
                        .refusals
                        .count("upgrade", RefusalReason::Handshake.as_str());
                }
                tracing::debug!(%peer, error = %e, "upgrade refused or failed");
                // Let the refusal (an HTTP error response) go out, then let go of the socket.
                let _ = tokio::time::timeout(connection::CLOSE_GRACE, out.drained()).await;
                out.abandon();
                return None;
            }
        };
    drop(out);
    let verdict = verdict.expect("the handshake callback runs before a successful upgrade");
    let opened =
        connection::register(&mut ws, verdict, &shared.hub, peer, &shared.refusals).await?;
    Some((ws, opened))
}
