//! A system served on one listener, whichever transport serves it: the accept loop's task, its
//! place in the process's metrics, and how to stop it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::Either;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{accept_loop, shutdown_pair, RefusalAnswer, Shutdown, ShutdownHandle};
use crate::admission::Ticket;
use crate::hub_task::HubHandle;
use crate::process::Process;
use crate::stream::Stream;
use crate::system::System;
use crate::tls::Tls;

/// A TLS connection's task: the handshake (boxed, so its state is freed once done), then the
/// transport's `connection`. The ticket is held throughout: a socket mid-handshake counts
/// against the budget.
async fn handshake_first<F, Fut>(
    tls: Arc<Tls>,
    tcp: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    system: Arc<System>,
    connection: Arc<F>,
    stop: Shutdown,
) where
    F: Fn(Stream, SocketAddr, Ticket, Shutdown) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let accepted = Box::pin(tls.accept(tcp, peer, system.name(), system.tls_handshakes())).await;
    drop((tls, system));
    if let Some(stream) = accepted {
        let connected = connection(stream, peer, ticket, stop);
        drop(connection);
        connected.await;
    }
}

/// A system served on one listener by some transport.
#[derive(Debug)]
pub struct Serving {
    system: Arc<System>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Serve `system` on `listener` as one system of `process` (its socket budget, its metrics,
    /// its TLS): accept sockets and run `connection` for each one admitted, with its ticket and
    /// the shutdown signal, until shutdown; then close every connection and wait for them
    /// ([`System::drain`]: with 1001 at once, or with 1012 spread over the window of a drain
    /// begun with [`System::begin_drain`]). This is what a transport's `serve` is made of.
    ///
    /// With [`Process::tls`], each connection's task first runs the TLS handshake
    /// ([`Tls::accept`], within its timeout) and `connection` gets the TLS stream; a socket
    /// whose handshake fails never reaches it.
    pub fn spawn<F, Fut>(
        process: &Process,
        listener: TcpListener,
        system: Arc<System>,
        connection: F,
    ) -> io::Result<Serving>
    where
        F: Fn(Stream, SocketAddr, Ticket, Shutdown) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let local_addr = listener.local_addr()?;
        let (shutdown, signal) = shutdown_pair();
        let registration = process.metrics.register(system.clone());
        let admission = process.admission.clone();
        let tls = process.tls.clone();
        if tls.is_some() {
            system.tls_handshakes().enable();
        }
        let answer = match tls {
            Some(_) => RefusalAnswer::Close,
            None => RefusalAnswer::Http,
        };
        let connection = Arc::new(connection);
        let sys = system.clone();
        let task = tokio::spawn(async move {
            let refusals = sys.refusals().clone();
            let stop = signal.clone();
            let conns = accept_loop(
                listener,
                sys.name(),
                signal,
                &admission,
                &refusals,
                answer,
                |tcp, peer, ticket| match &tls {
                    None => {
                        Either::Left(connection(Stream::Plain(tcp), peer, ticket, stop.clone()))
                    }
                    // Boxed: a plain connection's task stays the size of its transport's
                    // future, not that plus the handshake's.
                    Some(tls) => Either::Right(Box::pin(handshake_first(
                        tls.clone(),
                        tcp,
                        peer,
                        ticket,
                        sys.clone(),
                        connection.clone(),
                        stop.clone(),
                    ))),
                },
            )
            .await;
            sys.drain(conns).await;
            drop(registration);
        });
        Ok(Serving {
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

    /// A handle that stops it.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stop accepting, close every connection (with 1001, unless a drain began), and wait (at
    /// most [`crate::system::SHUTDOWN_GRACE`] for the connections after the last close).
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Wait until it stops.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}
