//! A connection's byte stream, plain TCP or TLS over it, in the two shapes the runtime uses it:
//! owned by one task ([`Stream`], what a transport reads its requests from and answers on), and
//! shared ([`Shared`]: its outbox writes it from any task, its connection task reads it).
//!
//! The outbox writes a connection's frames from whichever task produces them with one
//! non-blocking `writev`, and waits for the socket only when it would block
//! ([`crate::outbox`]). A TLS connection offers the same: [`Shared::try_write_vectored`]
//! encrypts into rustls' buffer and puts on the socket what it takes now; what it does not take
//! stays in rustls' buffer (bounded by its buffer limit) until [`Shared::try_flush`]. Reads and
//! writes share one [`rustls::ServerConnection`] behind a mutex, held only while bytes are
//! copied and encrypted or decrypted, never across an `await`.
//!
//! A plain socket is not split into halves: tokio's halves share the socket through an `Arc`
//! (an allocation per connection), while a [`Shared`] is read and written through `&self`.

use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use rustix::net::SendFlags;
use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's byte stream: plain TCP, or TLS once its handshake is done.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, past its handshake.
    Tls(Arc<TlsSocket>),
}

impl Stream {
    /// A TLS stream over `tcp` whose handshake `conn` has completed.
    pub fn tls(tcp: TcpStream, conn: ServerConnection) -> Stream {
        Stream::Tls(Arc::new(TlsSocket {
            tcp,
            conn: Mutex::new(conn),
            close_sent: AtomicBool::new(false),
        }))
    }

    /// Whether it is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Self {
        Stream::Plain(tcp)
    }
}

/// A TLS connection past its handshake: the TCP socket and the rustls state both halves share.
#[derive(Debug)]
pub struct TlsSocket {
    tcp: TcpStream,
    conn: Mutex<ServerConnection>,
    /// Our `close_notify` is queued.
    close_sent: AtomicBool,
}

/// The socket as rustls' `Read`: non-blocking reads (`WouldBlock` when nothing is there).
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// The socket as rustls' `Write`: non-blocking writes (`WouldBlock` when it takes nothing).
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TlsSocket {
    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        // A panic while encrypting cannot leave the state half-updated in a way that matters:
        // the connection fails on its next use if rustls recorded an error.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Put rustls' pending records on the socket; `Ok(false)` when the socket would block first.
    fn flush_locked(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut TryWrite(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypt what rustls takes of `bufs` (after putting its earlier records on the socket)
    /// and put as much as the socket takes now on it. `WouldBlock` when it took nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.lock();
        if !self.flush_locked(&mut conn)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_locked(&mut conn)?;
        Ok(n)
    }

    /// Put rustls' pending records on the socket: `Ok(true)` once none are left.
    fn try_flush(&self) -> io::Result<bool> {
        let mut conn = self.lock();
        self.flush_locked(&mut conn)
    }

    /// Whether rustls holds records not yet on the socket.
    fn wants_flush(&self) -> bool {
        self.lock().wants_write()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut conn = self.lock();
                match conn.reader().read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    // The peer closed the TCP connection without a close_notify. WebSocket
                    // frames and HTTP/1.1 messages carry their own lengths, so a truncation
                    // shows at that layer: treat it as the end of the stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Poll::Ready(Ok(()))
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                match conn.read_tls(&mut TryRead(&self.tcp)) {
                    // The end: the next `reader().read` says how it ended.
                    Ok(0) => continue,
                    Ok(_) => {
                        let processed = conn.process_new_packets();
                        // Records rustls answers with (an alert, a key update): best effort
                        // now; the outbox's next write or flush sends what is left.
                        let flushed = self.flush_locked(&mut conn);
                        if let Err(e) = processed {
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                        flushed?;
                        continue;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            ready!(self.tcp.poll_read_ready(cx))?;
        }
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.try_write_vectored(bufs) {
                Err(e) if would_block(&e) => ready!(self.tcp.poll_write_ready(cx))?,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.try_flush()? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Once: a second call after a partial flush must not queue a second alert.
        if !self.close_sent.swap(true, Ordering::Relaxed) {
            self.lock().send_close_notify();
        }
        self.poll_flush(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut *self {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => tls.poll_write_vectored(cx, &[IoSlice::new(buf)]),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => tls.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => tls.poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => tls.poll_shutdown(cx),
        }
    }
}

/// `send()` on `tcp` at once, and again through tokio's `try_io` only if the socket refused it
/// (see [`Shared::try_write_vectored`]). The sends pass `MSG_NOSIGNAL`: no `SIGPIPE` if the
/// peer is gone.
fn send_now(tcp: &TcpStream, send: impl Fn() -> rustix::io::Result<usize>) -> io::Result<usize> {
    let send = || send().map_err(io::Error::from);
    match send() {
        Err(e) if would_block(&e) => tcp.try_io(tokio::io::Interest::WRITABLE, send),
        sent => sent,
    }
}

/// A connection's stream as its outbox holds it: non-blocking writes from any task, reads by
/// the connection's task, all through `&self`.
#[derive(Debug)]
pub enum Shared {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS: writes encrypt and reads decrypt, under the state they share.
    Tls(Arc<TlsSocket>),
}

impl From<Stream> for Shared {
    fn from(stream: Stream) -> Self {
        match stream {
            Stream::Plain(tcp) => Shared::Plain(tcp),
            Stream::Tls(tls) => Shared::Tls(tls),
        }
    }
}

impl Shared {
    /// Read what is there into `buf`, or wait for the socket to be readable (as
    /// [`AsyncRead::poll_read`]: nothing added means the end of the stream). Only one task may
    /// read.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Shared::Plain(tcp) => loop {
                ready!(tcp.poll_read_ready(cx))?;
                match tcp.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Shared::Tls(tls) => tls.poll_read(cx, buf),
        }
    }

    /// Whether a read left records to send (a TLS alert or key update).
    pub fn wants_flush(&self) -> bool {
        match self {
            Shared::Plain(_) => false,
            Shared::Tls(tls) => tls.wants_flush(),
        }
    }

    /// Write what the socket takes now of `bufs` (for TLS: what rustls takes, encrypted, as
    /// much of it on the socket as it takes; the rest waits for [`Shared::try_flush`]).
    /// `WouldBlock` when nothing was taken.
    ///
    /// Plain TCP is written with one `sendmsg` straight away, not through tokio's readiness
    /// check first: a fan-out writes thousands of sockets one after the other, and the check
    /// touches one more cold cache line per socket. Only a write the socket refused goes again
    /// through `try_io`, which clears tokio's write readiness so that a flusher's `writable`
    /// waits for the socket's next event instead of spinning (tokio notes the readiness event
    /// before the write it retries, so an event that arrives meanwhile is not lost).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Shared::Plain(tcp) => send_now(tcp, || {
                let mut control = rustix::net::SendAncillaryBuffer::default();
                rustix::net::sendmsg(tcp, bufs, &mut control, SendFlags::NOSIGNAL)
            }),
            Shared::Tls(tls) => tls.try_write_vectored(bufs),
        }
    }

    /// Write what the socket takes now of `buf`, as [`Shared::try_write_vectored`] (one `send`).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Shared::Plain(tcp) => {
                send_now(tcp, || rustix::net::send(tcp, buf, SendFlags::NOSIGNAL))
            }
            Shared::Tls(tls) => tls.try_write_vectored(&[IoSlice::new(buf)]),
        }
    }

    /// Put on the socket what was taken and not sent yet: `Ok(true)` once nothing is left
    /// (always, for plain TCP), `Ok(false)` when the socket would block first.
    pub fn try_flush(&self) -> io::Result<bool> {
        match self {
            Shared::Plain(_) => Ok(true),
            Shared::Tls(tls) => tls.try_flush(),
        }
    }

    /// End what is written: over TLS, send `close_notify` and flush it (a plain socket sends
    /// its FIN when it is closed).
    pub async fn shutdown(&self) -> io::Result<()> {
        match self {
            Shared::Plain(_) => Ok(()),
            Shared::Tls(tls) => std::future::poll_fn(|cx| tls.poll_shutdown(cx)).await,
        }
    }

    /// Wait until the socket may take more.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Shared::Plain(tcp) => tcp.writable().await,
            Shared::Tls(tls) => tls.tcp.writable().await,
        }
    }
}
