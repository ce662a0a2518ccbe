//! The connection's stream as hyper serves it, until a request is answered by a
//! server-sent-event stream: hyper keeps a connection it answers with `200` (only a `101` hands
//! the socket back), so the stream is taken from under it instead. The service sets the slot's
//! flag before returning the (`Connection: close`) answer; from hyper's next write on, the
//! stream waits in the slot for the connection's task, hyper's writes are swallowed and its
//! reads see the end, so it finishes the connection and lets go, and the runtime writes the
//! real answer ([`switchboard_runtime::sse::run`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use switchboard_runtime::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a stream taken from hyper waits, and the flag that takes it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    take: AtomicBool,
    stream: Mutex<Option<Stream>>,
}

impl Slot {
    /// Take the stream from hyper at its next write (the answer to the request being served).
    pub(crate) fn take_at_next_write(&self) {
        self.take.store(true, Ordering::Release);
    }

    /// The stream, once hyper wrote its answer (and so let go of it).
    pub(crate) fn taken(&self) -> Option<Stream> {
        self.stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A connection's stream, served by hyper until [`Slot::take_at_next_write`].
#[derive(Debug)]
pub(crate) struct Handover {
    stream: Option<Stream>,
    slot: std::sync::Arc<Slot>,
}

impl Handover {
    pub(crate) fn new(stream: Stream, slot: std::sync::Arc<Slot>) -> Handover {
        Handover {
            stream: Some(stream),
            slot,
        }
    }

    /// The stream, for a WebSocket hyper handed back after its `101`.
    pub(crate) fn into_inner(self) -> Option<Stream> {
        self.stream
    }

    /// The stream to write to, or `None` once it is (now) the slot's.
    fn live(&mut self) -> Option<&mut Stream> {
        if self.stream.is_some() && self.slot.take.load(Ordering::Acquire) {
            *self
                .slot
                .stream
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self.stream.take();
        }
        self.stream.as_mut()
    }
}

impl AsyncRead for Handover {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Some(stream) => Pin::new(stream).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Handover {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.live() {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.live() {
            Some(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.live() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.live() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
