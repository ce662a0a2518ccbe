//! Accepting sockets and stopping: the accept loop both transports share (with admission at
//! accept) and the shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Refusals, Ticket};
use crate::logging::REFUSALS;

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
    /// Ask the server to stop accepting, close every connection (with 1001, unless a drain
    /// began: see [`crate::System::begin_drain`]), and return.
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

/// How long the accept loop pauses after `accept` fails (e.g. `EMFILE`): long enough not to spin
/// a core while the process is out of file descriptors, short enough to recover at once.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a socket refused at accept is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAnswer {
    /// A short plain HTTP error (`503`, `429`), then close.
    Http,
    /// Close at once: on a TLS port a plain answer means nothing to the client, and a handshake
    /// just to refuse would spend the CPU the refusal is there to save.
    Close,
}

/// Accept TCP connections until `shutdown`, running `handle` for each admitted socket in its own
/// task (with its [`Ticket`], held until the task ends); sockets over `admission`'s limits are
/// refused as `answer` says and counted in `refusals` (kind `socket`). Returns the tracker of the
/// tasks, for [`crate::System::drain`]. Shared by both transports.
///
/// A [`TaskTracker`] rather than a `JoinSet`: it counts the tasks, where a `JoinSet` keeps an
/// entry (about 80 bytes) per open connection. A connection task that panics is reported by the
/// panic hook; it cannot take others with it.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    system: &'static str,
    mut shutdown: Shutdown,
    admission: &Arc<Admission>,
    refusals: &Refusals,
    answer: RefusalAnswer,
    mut handle: F,
) -> TaskTracker
where
    F: FnMut(TcpStream, SocketAddr, Ticket) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let conns = TaskTracker::new();
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
                        match answer {
                            RefusalAnswer::Http => admission.refuse(tcp, why),
                            RefusalAnswer::Close => drop(tcp),
                        }
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
            _ = shutdown.wait() => break,
        }
    }
    conns
}
