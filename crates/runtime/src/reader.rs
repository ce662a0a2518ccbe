//! One WebSocket connection's task: read frames, decode them here, hand them to the hub, and end
//! the connection cleanly.
//!
//! Writes do not happen here: the hub task writes the hub's frames straight into the
//! connection's [`Outbox`]. This task only reads (so a delivery never wakes it) and decodes (so
//! every core decodes, not just the hub task's).
//!
//! Reading holds no buffer of the connection's own: the socket is read into one buffer per
//! thread, and the framing ([`switchboard_ws::Reader`]) keeps only the bytes of a
//! frame still arriving. A quiet connection costs its task, its outbox and the hub's record of
//! it, not a read buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use switchboard_hub::{CloseCode, Config, Text};
use switchboard_ws::{Limits, Message};
use tokio::io::ReadBuf;

use crate::admission::Ticket;
use crate::hub_task::Opened;
use crate::logging::{Clip, CONNECTIONS};
use crate::outbox::Outbox;
use crate::system::System;

/// How long a reader waits before it looks again whether the cluster backplane caught up.
const BACKPLANE_WAIT: Duration = Duration::from_millis(2);

/// How long a close handshake may take before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Bytes read from a socket at once, into the thread's buffer: what one read may add to a
/// connection's queue of decoded messages before the hub's pacing is asked again.
pub const READ_BYTES: usize = 8 * 1024;

thread_local! {
    /// The buffer every connection on this thread reads into. Borrowed only inside one poll,
    /// never across an `await`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

/// The WebSocket limits a hub's configuration implies. Frames up to twice the hub's limit are
/// read and handed over (the hub closes with 1009 and counts the error); larger ones are refused
/// from their header, bounding memory.
pub fn limits(config: &Config) -> Limits {
    let hard = config.limits.max_frame_bytes.saturating_mul(2).max(1024);
    Limits {
        max_frame: hard,
        max_message: hard,
    }
}

/// The server side of an upgraded connection: its socket's read half, the framing, messages
/// decoded but not handed over yet, and the outbox its writes go through.
#[derive(Debug)]
pub struct Socket {
    /// Its outbox, whose socket it reads too.
    out: Arc<Outbox>,
    frames: switchboard_ws::Reader,
    /// Decoded from one read, handed to the hub one at a time as pacing allows. Boxed, and
    /// only while it holds something: 8 bytes in every connection's task instead of 32, and
    /// most connections are quiet most of the time.
    queue: Option<Queue>,
}

/// Messages decoded and not handed over yet. The box is the point (see [`Socket`]'s `queue`).
#[allow(clippy::box_collection)]
type Queue = Box<VecDeque<Message>>;

/// Queue a decoded message, making the queue if there is none.
fn push(queue: &mut Option<Queue>, message: Message) {
    queue.get_or_insert_default().push_back(message);
}

/// What reading gave.
enum Read {
    Message(Message),
    Violation(switchboard_ws::Error),
    /// End of stream or a failed socket.
    Gone,
}

impl Socket {
    /// The socket of an upgraded connection: reading and writing through `out` (connected),
    /// with `leftover` (what the client sent after its request head) read first.
    pub fn new(out: Arc<Outbox>, leftover: &[u8], limits: Limits) -> Socket {
        let mut socket = Socket {
            out,
            frames: switchboard_ws::Reader::new(limits),
            queue: None,
        };
        let queue = &mut socket.queue;
        // A violation is kept by the reader and reported after the messages before it.
        let _ = socket.frames.feed(leftover, &mut |m| push(queue, m));
        socket
    }

    /// The outbox its writes go through.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.out
    }

    /// The next message: a decoded one, or the next read's first.
    async fn next(&mut self) -> Read {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        loop {
            if let Some(queue) = &mut self.queue {
                let message = queue.pop_front();
                if queue.is_empty() {
                    self.queue = None; // Quiet again: hold nothing.
                }
                if let Some(message) = message {
                    return Poll::Ready(Read::Message(message));
                }
            }
            if let Some(e) = self.frames.error() {
                return Poll::Ready(Read::Violation(e));
            }
            if self.frames.is_done() {
                return Poll::Ready(Read::Gone); // After a close frame, nothing more is read.
            }
            match ready!(self.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) | Err(_) => return Poll::Ready(Read::Gone),
            }
        }
    }

    /// Read once and decode what came; `false` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Socket { out, frames, queue } = self;
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(out.poll_read(cx, &mut buf))?;
            let input = buf.filled();
            if input.is_empty() {
                return Poll::Ready(Ok(false));
            }
            // A violation is kept by the reader and reported after the messages before it.
            let _ = frames.feed(input, &mut |m| push(queue, m));
            Poll::Ready(Ok(true))
        })
    }
}

/// Send a close frame after whatever is queued, give it [`CLOSE_GRACE`] to go out, and stop
/// writing (used for connections the hub never registered). The caller then drops `ws`.
pub async fn close_with(ws: &mut Socket, code: CloseCode, reason: &str) {
    let out = ws.out.clone();
    out.close(code, reason);
    finish(ws, &out).await;
}

/// Wait (at most [`CLOSE_GRACE`]) for the queue to drain and for the peer to answer our close,
/// reading and discarding whatever it still sends, so it sees our close frame rather than a
/// reset; then stop writing.
async fn finish(ws: &mut Socket, out: &Outbox) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        out.drained().await;
        while let Read::Message(msg) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    out.abandon();
}

/// How the read loop ended.
enum End {
    /// The hub closed the connection (its close frame is queued) or the socket failed.
    Hub,
    /// The peer sent a close frame (its code and reason); tungstenite has queued the reply.
    PeerClosed(Option<(u16, String)>),
    /// The peer broke the protocol; answer with this close frame.
    PeerError(CloseCode, &'static str),
    /// The socket ended without a close handshake, or the hub task is gone.
    Gone,
}

impl End {
    /// Who ended it, the close code and the reason, for the disconnect log line (1006: no close
    /// frame, as RFC 6455 reports it).
    fn describe(&self, out: &Outbox) -> (&'static str, u16, String) {
        match self {
            End::Hub => match out.closed_with() {
                Some((code, reason)) => ("server", code.0, reason.into()),
                None => ("server", 1006, "socket failed".into()),
            },
            End::PeerClosed(Some((code, reason))) => ("client", *code, reason.clone()),
            End::PeerClosed(None) => ("client", 1005, String::new()),
            End::PeerError(code, reason) => ("server", code.0, (*reason).into()),
            End::Gone => ("client", 1006, "connection lost".into()),
        }
    }
}

/// What a connection's opening (its HTTP handshake and upgrade) gives its [`Task`]: the socket,
/// the hub's answer, and the system it belongs to.
pub type Open = (Socket, Opened, Arc<System>);

/// A WebSocket connection's task, for its whole life: the opening (boxed: the handshake's state
/// is freed once done), then reading until either side ends it, then the ending (boxed too).
///
/// Every open connection holds one, so it is a hand-written future over what the connection
/// keeps, not an `async` block: those keep every suspension point's locals and every argument
/// side by side, which cost 488 bytes where this needs about 270 (and tokio rounds a task up to
/// a multiple of 128 bytes).
///
/// One `info` line is logged when the connection opens and one when it ends (system, client id,
/// peer; at the end who closed, the code, the reason and the duration), both under the
/// [`CONNECTIONS`] log budget.
pub struct Task(Phase);

enum Phase {
    Opening {
        opening: Pin<Box<dyn Future<Output = Option<Open>> + Send>>,
        peer: SocketAddr,
        /// The socket's place in the budget, held until the task ends.
        ticket: Ticket,
    },
    Reading(Connection),
    Ending(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

/// An open connection's reading phase.
struct Connection {
    ws: Socket,
    opened: Opened,
    system: Arc<System>,
    peer: SocketAddr,
    ticket: Ticket,
    /// What reading waits for before taking the next frame, boxed: rarely anything. The hub
    /// paused this connection or is behind on its frames (see [`Outbox::readable`]), or its
    /// queue was full when the last frame was handed over. `false`: the connection is over.
    wait: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl Task {
    /// The task of a connection that `opening` opens (or not: `None` ends the task), from
    /// `peer`, holding `ticket` until it ends.
    pub fn new(
        opening: impl Future<Output = Option<Open>> + Send + 'static,
        peer: SocketAddr,
        ticket: Ticket,
    ) -> Task {
        Task(Phase::Opening {
            opening: Box::pin(opening),
            peer,
            ticket,
        })
    }
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let phase = &mut self.get_mut().0;
        loop {
            match std::mem::replace(phase, Phase::Done) {
                Phase::Opening {
                    mut opening,
                    peer,
                    ticket,
                } => match opening.as_mut().poll(cx) {
                    Poll::Pending => {
                        *phase = Phase::Opening {
                            opening,
                            peer,
                            ticket,
                        };
                        return Poll::Pending;
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Ready(Some((ws, opened, system))) => {
                        if CONNECTIONS.allow() {
                            let client = Clip(&opened.client_id);
                            tracing::info!(system = system.name(), %client, %peer, "connected");
                        }
                        *phase = Phase::Reading(Connection {
                            ws,
                            opened,
                            system,
                            peer,
                            ticket,
                            wait: None,
                        });
                    }
                },
                Phase::Reading(mut conn) => match conn.poll_read(cx) {
                    Poll::Pending => {
                        *phase = Phase::Reading(conn);
                        return Poll::Pending;
                    }
                    Poll::Ready(end) => *phase = Phase::Ending(Box::pin(conn.end(end))),
                },
                Phase::Ending(mut ending) => {
                    if ending.as_mut().poll(cx).is_pending() {
                        *phase = Phase::Ending(ending);
                        return Poll::Pending;
                    }
                    return Poll::Ready(());
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Connection {
    /// Read frames and hand them to the hub until either side ends the connection. The hub's
    /// close first, then the socket.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            if let Some(wait) = &mut self.wait {
                let go_on = ready!(wait.as_mut().poll(cx));
                self.wait = None;
                if !go_on {
                    return Poll::Ready(End::Hub);
                }
            }
            let out = &self.ws.out;
            if !out.pacing().ready_now() {
                let out = out.clone();
                self.wait = Some(Box::pin(async move { out.readable().await }));
                continue;
            }
            if out.poll_ended(cx).is_ready() {
                return Poll::Ready(End::Hub);
            }
            if self.system.backplane_saturated() {
                // A publication taken now would reach this node's clients only: leave it in the
                // socket (the peer's TCP window fills: nothing lost) until the backplane caught
                // up, or the hub closes the connection.
                let out = out.clone();
                self.wait = Some(Box::pin(async move {
                    tokio::select! {
                        biased;
                        () = out.ended() => false,
                        () = tokio::time::sleep(BACKPLANE_WAIT) => true,
                    }
                }));
                continue;
            }
            let msg = ready!(self.ws.poll_next(cx));
            let (hub, out) = (self.system.hub(), &self.ws.out);
            let (handle, dialect) = (self.opened.handle, self.opened.dialect);
            let told = match msg {
                Read::Message(Message::Text(t)) => {
                    out.pacing().sent_to_hub();
                    // Checked by the framing already; checked again rather than trusted unchecked.
                    let Ok(text) = Text::from_utf8(t) else {
                        let e = switchboard_ws::Error::InvalidUtf8;
                        return Poll::Ready(End::PeerError(
                            CloseCode::INVALID_PAYLOAD,
                            violation(e),
                        ));
                    };
                    hub.text(handle, dialect, text)
                }
                Read::Message(Message::Binary(b)) => {
                    out.pacing().sent_to_hub();
                    hub.binary(handle, b)
                }
                // Both show the peer is alive, and both count against the inbound rate.
                Read::Message(Message::Ping(payload)) => {
                    out.pong(payload);
                    out.pacing().sent_to_hub();
                    hub.activity(handle)
                }
                Read::Message(Message::Pong(_)) => {
                    out.pacing().sent_to_hub();
                    hub.activity(handle)
                }
                Read::Message(Message::Close(frame)) => return Poll::Ready(End::PeerClosed(frame)),
                Read::Violation(e) => {
                    return Poll::Ready(End::PeerError(CloseCode(e.close_code()), violation(e)))
                }
                Read::Gone => return Poll::Ready(End::Gone),
            };
            match told {
                Either::Left(now) => {
                    if now.into_inner().is_err() {
                        hub_gone(out);
                        return Poll::Ready(End::Hub);
                    }
                }
                Either::Right(later) => {
                    let out = out.clone();
                    self.wait = Some(Box::pin(async move {
                        let sent = later.await.is_ok();
                        if !sent {
                            hub_gone(&out);
                        }
                        sent
                    }));
                }
            }
        }
    }

    /// Answer how the connection ended, tell the hub, log it, and let go of the ticket.
    async fn end(self, end: End) {
        let Connection {
            mut ws,
            opened,
            system,
            peer,
            ticket,
            wait: _,
        } = self;
        let hub = system.hub();
        let out = ws.out.clone();
        let (by, code, reason) = end.describe(&out);
        end_with(&mut ws, &out, &end).await;
        let _ = hub.closed(opened.handle).await;
        if CONNECTIONS.allow() {
            tracing::info!(
                system = hub.name(),
                client = %Clip(&opened.client_id),
                %peer,
                by,
                code,
                reason = %Clip(&reason),
                secs = opened.at.elapsed().as_secs_f64(),
                "disconnected"
            );
        }
        drop(ws);
        drop(ticket);
    }
}

async fn end_with(ws: &mut Socket, out: &Arc<Outbox>, end: &End) {
    match end {
        End::Hub => finish(ws, out).await,
        End::PeerClosed(frame) => {
            // The reply RFC 6455 asks for: the peer's code (and reason) back.
            out.answer_close(
                frame
                    .as_ref()
                    .map(|(code, reason)| (CloseCode(*code), &**reason)),
            );
            let _ = tokio::time::timeout(CLOSE_GRACE, out.drained()).await;
            out.abandon();
        }
        End::PeerError(code, reason) => {
            out.close(*code, reason);
            let _ = tokio::time::timeout(CLOSE_GRACE, out.drained()).await;
            out.abandon();
        }
        End::Gone => out.abandon(),
    }
}

/// The hub task is gone (the server is shutting down): say so to the peer.
fn hub_gone(out: &Arc<Outbox>) {
    out.close(CloseCode::GOING_AWAY, "server shutting down");
}

/// The reason in our close frame for a framing violation.
fn violation(e: switchboard_ws::Error) -> &'static str {
    match e {
        switchboard_ws::Error::TooBig => "frame exceeds the size limit",
        switchboard_ws::Error::InvalidUtf8 => "text frame is not valid UTF-8",
        switchboard_ws::Error::Protocol(why) => why,
    }
}
