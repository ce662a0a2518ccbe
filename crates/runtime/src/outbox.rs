//! A connection's write side: frames go straight onto the socket from whichever task produces
//! them, and are queued only while the socket would block.
//!
//! The hub task fans a publication out by staging it for each recipient in its [`Corks`] (its
//! own memory, not the recipient's outbox) and, after the drain, handing each connection its
//! frames with [`Corks::write`]: one lock of the outbox, and when nothing is queued there the
//! frames are written at once with one non-blocking `sendmsg` (frame headers and the
//! publications' shared payloads; a small batch copied into one segment), so a delivery costs
//! no channel push, no task wake-up and no report back to the hub. Only when the socket would block is the rest queued
//! and a short-lived flusher task spawned; it waits until the socket is writable, drains the
//! queue in batches, reports the bytes it wrote through the outbox's [`FlushSink`], and exits.
//!
//! The connection's reader ([`crate::reader`]) answers pings and a peer's close through the same
//! outbox ([`Outbox::pong`], [`Outbox::answer_close`]), so whole frames never interleave.
//!
//! Over TLS the same holds with "the socket" read as "rustls and the socket": a write hands the
//! frames to rustls, which encrypts them and puts on the socket what it takes now; records left
//! in rustls' buffer keep the flusher running until they are out ([`Shared::try_flush`]).
//!
//! A server-sent-event stream ([`Framing::Sse`], [`Framing::SseV2`]) goes through the same
//! outbox: each hub frame is written as an event (`data: `, the frame, `\n\n`, in the same
//! write, the frame's shared bytes not copied unless it holds a line break, and then once per
//! publication, see [`Corks`]), a ping as a comment line, and a close as a comment naming the
//! code and reason, after which the connection's task ends the stream. With v2 each `session`,
//! `pub` and `subscribed` event carries an `id:` ([`crate::event_id`]).
//!
//! Bounds: data frames are bounded by the hub's accounting (`Limits::max_queued_bytes`, enforced
//! before a frame reaches the outbox); everything else queued is bounded by [`RAW_LIMIT`]; a TLS
//! connection's records waiting in rustls by its buffer limit.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use switchboard_hub::{CloseCode, ConnectionHandle, Text};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::event_id::{EventIds, Move};
use crate::pacing::{Pace, Pacing};
use crate::stream::{Shared, Stream};

/// Where a flusher reports the hub bytes it put on the socket (the hub task's command queue).
pub trait FlushSink: Send + Sync + std::fmt::Debug + 'static {
    /// `bytes` of `conn`'s queued hub frames were written; resolves once the report is queued.
    fn flushed(
        &self,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    /// The system's name, for logs.
    fn system(&self) -> &'static str;
}

/// Most bytes of control frames (pongs, close replies, event-stream comments) queued for a peer
/// that does not read; past it the connection fails (a peer flooding pings without reading the
/// pongs).
pub const RAW_LIMIT: usize = 64 * 1024;
/// The longest header of an unmasked frame: two bytes and a 64-bit length.
pub const HEAD_MAX: usize = 10;
/// Frames gathered into one `writev` by the flusher.
const BATCH: usize = 32;
/// A batch of at most this many bytes (a few frames of a fan-out, the common case) is copied into
/// one buffer and sent as one segment: the kernel copies one segment faster than each frame's
/// header and payload apart, and the copy costs less than what it saves.
const COPY_MAX: usize = 1024;

thread_local! {
    /// The buffer of [`COPY_MAX`]-byte batches, one per thread that writes.
    static COPY: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(COPY_MAX));
}

/// How an outbox puts the hub's frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// WebSocket text frames.
    WebSocket,
    /// Server-sent events, one per frame.
    Sse,
    /// Server-sent events of protocol v2 frames, with the session's positions as event ids.
    SseV2,
}

/// What opens a server-sent event without an id.
const SSE_DATA: &[u8] = b"data: ";
/// What ends a server-sent event.
const SSE_END: &[u8] = b"\n\n";
/// A server-sent-event comment: the heartbeat.
const SSE_PING: &[u8] = b":\n\n";

/// One frame (or raw bytes) waiting for the socket: a header, a shared body and, for an event,
/// its end. Kept at the size it had before events existed: a connection's queue keeps its
/// allocation while the connection is idle.
struct Chunk {
    head: [u8; HEAD_MAX],
    head_len: u8,
    /// A server-sent event: [`SSE_END`] follows the body.
    event: bool,
    /// Bytes that are neither a hub frame nor part of one (control frames, comments): bounded by
    /// [`RAW_LIMIT`].
    raw: bool,
    body: Bytes,
    /// Payload bytes the hub counted for this frame; reported once the frame is written.
    hub_bytes: usize,
}

impl Chunk {
    fn raw(body: Bytes) -> Chunk {
        Chunk {
            head: [0; HEAD_MAX],
            head_len: 0,
            event: false,
            raw: true,
            body,
            hub_bytes: 0,
        }
    }

    /// An unmasked, final text frame around `payload`.
    fn text(payload: Bytes) -> Chunk {
        let (head, head_len) = text_head(payload.len());
        Chunk {
            head,
            head_len: head_len as u8,
            event: false,
            raw: false,
            hub_bytes: payload.len(),
            body: payload,
        }
    }

    /// A server-sent event whose data is `body` ([`event_body`] of a hub frame of `hub_bytes`).
    fn event(body: Bytes, hub_bytes: usize) -> Chunk {
        let mut head = [0; HEAD_MAX];
        head[..SSE_DATA.len()].copy_from_slice(SSE_DATA);
        Chunk {
            head,
            head_len: SSE_DATA.len() as u8,
            event: true,
            raw: false,
            body,
            hub_bytes,
        }
    }

    /// The `id:` line that opens the next event: part of a hub frame, so bounded with it by the
    /// hub's accounting, not by [`RAW_LIMIT`].
    fn event_id(id: &str) -> Chunk {
        // Exactly as long as the line, so that `Bytes` takes the buffer as it is.
        let mut line = Vec::with_capacity(b"id: \n".len() + id.len());
        line.extend_from_slice(b"id: ");
        line.extend_from_slice(id.as_bytes());
        line.push(b'\n');
        Chunk {
            raw: false,
            ..Chunk::raw(Bytes::from(line))
        }
    }

    fn tail(&self) -> &'static [u8] {
        if self.event {
            SSE_END
        } else {
            &[]
        }
    }

    fn len(&self) -> usize {
        self.head_len as usize + self.body.len() + self.tail().len()
    }

    /// The unwritten part, as at most three slices, given `done` bytes already written.
    fn slices(&self, mut done: usize) -> [IoSlice<'_>; 3] {
        let head = &self.head[..self.head_len as usize];
        [head, &self.body[..], self.tail()].map(|part| {
            let skip = done.min(part.len());
            done -= skip;
            IoSlice::new(&part[skip..])
        })
    }
}

/// The header of an unmasked, final text frame of `len` payload bytes (RFC 6455 section 5.2:
/// FIN and opcode 1, then the length in 7 bits, or 126 and 16 bits, or 127 and 64 bits), and
/// how many of its bytes are used.
pub fn text_head(len: usize) -> ([u8; HEAD_MAX], usize) {
    let mut head = [0; HEAD_MAX];
    head[0] = 0x81;
    let used = head_len(len);
    match used {
        2 => head[1] = len as u8,
        4 => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
    (head, used)
}

/// Bytes of an unmasked frame header for `len` payload bytes.
fn head_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// A hub frame as the data of a server-sent event: a payload with line breaks is copied, each
/// break turned into a new `data:` line (the client joins them with `\n`); any other is sent as
/// it is, shared.
fn event_body(payload: &Bytes) -> Bytes {
    if payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        data_lines(payload)
    } else {
        payload.clone()
    }
}

/// A payload's event-stream form, made once per payload of a sweep and shared by its recipients:
/// every recipient is handed the same payload (one shared `Bytes`), so the event body it becomes
/// (`event_body`, a copy when it holds line breaks) and the position it moves (v2, a JSON parse)
/// are worked out for the first stream that needs them, not redone per recipient.
#[derive(Debug)]
struct EventForm {
    body: Bytes,
    /// What it moves, once a v2 stream asked.
    moved: Option<Option<Move>>,
}

impl EventForm {
    fn of(payload: &Bytes) -> Box<EventForm> {
        Box::new(EventForm {
            body: event_body(payload),
            moved: None,
        })
    }
}

/// No frame: the end of a connection's list in [`Corks`].
const NONE: u32 = u32::MAX;

/// The frames a hub drain produced, kept by the hub task per connection until its sweep writes
/// them. Staging a frame touches only this (the hub task's own memory, warm in its cache), not
/// the recipient's outbox: each outbox is locked once per write, when its frames are queued and
/// written together, not once per frame and again to write. A connection is known by its `C`
/// (the hub's handle) and the index of its slot, which is where its entry is found. A payload
/// is kept once per sweep ([`Corks::add`]) and its recipients' frames name it, so a fan-out
/// stages no reference count per recipient; a payload's event-stream form (`EventForm`) is
/// made once too, and shared by its recipients.
///
/// A connection's frames go out in the order they were staged, and before anything the hub
/// task queues for it afterwards: it writes them first ([`Corks::index_of`]) when it closes the
/// connection. A control frame the connection's own reader sends meanwhile (a pong) may go out
/// ahead of them, which WebSocket allows; after the reader answered the peer's close, they
/// are dropped, as any frame queued after a close is.
#[derive(Debug)]
pub struct Corks<C> {
    /// Each connection with staged frames this sweep, in the order of its first one.
    conns: Vec<Staged<C>>,
    /// The staged frames, each connection's threaded through `next`.
    frames: Vec<StagedFrame>,
    /// Per connection slot: one more than its entry in `conns`, or 0.
    at: Vec<u32>,
    /// The sweep's payloads, each once, with its event-stream form once a stream needs it.
    payloads: Vec<(Bytes, Option<Box<EventForm>>)>,
    /// Where a connection's frames are put together for one send ([`Corks::write`]).
    wire: Vec<u8>,
}

/// A payload kept for a sweep's staged frames ([`Corks::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload(u32);

#[derive(Debug)]
struct StagedFrame {
    payload: Payload,
    /// The next frame of the same connection, or [`NONE`].
    next: u32,
}

#[derive(Debug)]
struct Staged<C> {
    conn: C,
    slot: usize,
    first: u32,
    last: u32,
}

impl<C> Default for Corks<C> {
    fn default() -> Self {
        Corks {
            conns: Vec::new(),
            frames: Vec::new(),
            at: Vec::new(),
            payloads: Vec::new(),
            wire: Vec::new(),
        }
    }
}

impl<C: Copy + PartialEq> Corks<C> {
    /// Keep `payload` until the sweep ends, for [`Corks::stage`]. The same payload added again
    /// right after (one publication's recipients, one at a time) is kept once.
    pub fn add(&mut self, payload: Text) -> Payload {
        let payload = payload.into_bytes();
        let n = self.payloads.len();
        match self.payloads.last() {
            Some((last, _)) if last.as_ptr() == payload.as_ptr() && last.len() == payload.len() => {
                Payload(n as u32 - 1)
            }
            _ => {
                self.payloads.push((payload, None));
                Payload(n as u32)
            }
        }
    }

    /// Stage `payload` for `conn` (in slot `slot`), to go out after its frames staged before.
    pub fn stage(&mut self, conn: C, slot: usize, payload: Payload) {
        let frame = self.frames.len() as u32;
        self.frames.push(StagedFrame {
            payload,
            next: NONE,
        });
        if slot >= self.at.len() {
            self.at.resize(slot + 1, 0);
        }
        match self.at[slot]
            .checked_sub(1)
            .map(|i| &mut self.conns[i as usize])
        {
            Some(staged) if staged.conn == conn => {
                self.frames[staged.last as usize].next = frame;
                staged.last = frame;
            }
            // None yet, or a stale entry of the slot's previous connection (dropped, as that
            // connection is gone).
            _ => {
                self.at[slot] = self.conns.len() as u32 + 1;
                self.conns.push(Staged {
                    conn,
                    slot,
                    first: frame,
                    last: frame,
                });
            }
        }
    }

    /// Connections staged this sweep (whether written yet or not).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether nothing was staged this sweep.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connection of entry `i`.
    pub fn conn(&self, i: usize) -> C {
        self.conns[i].conn
    }

    /// The entry of `conn` (in slot `slot`) if it has frames waiting.
    pub fn index_of(&self, conn: C, slot: usize) -> Option<usize> {
        let i = self.at.get(slot)?.checked_sub(1)? as usize;
        (self.conns[i].conn == conn).then_some(i)
    }

    /// Write entry `i`'s frames to `outbox`'s socket as far as it takes them now, and leave the
    /// rest to a flusher, which reports it: sent straight from here when nothing waits in the
    /// outbox (the common case), else queued behind what waits. Returns the hub bytes written
    /// now, or `None` if the outbox did not take them (its connection is closing or its socket
    /// failed).
    pub fn write(&mut self, i: usize, outbox: &Arc<Outbox>) -> Option<usize> {
        let mut st = outbox.lock();
        if let Some(socket) = outbox.socket.get() {
            let idle = st.queue.is_empty() && !st.corked && !st.flushing;
            if idle && !st.closed && !st.failed && outbox.framing == Framing::WebSocket {
                if let Some(written) = self.write_direct(i, outbox, socket, &mut st) {
                    return Some(written);
                }
            }
        }
        if !self.queue(i, outbox, &mut st) {
            return None;
        }
        // Written by the uncork or flusher ahead of it, or once connected.
        if st.corked || st.flushing || outbox.socket.get().is_none() {
            return Some(0);
        }
        Some(outbox.write_now(&mut st))
    }

    /// Queue entry `i`'s frames in `outbox`, for [`Outbox::uncork`] (on another worker) to
    /// write.
    pub fn commit(&mut self, i: usize, outbox: &Arc<Outbox>) {
        let mut st = outbox.lock();
        if self.queue(i, outbox, &mut st) && !st.flushing && outbox.socket.get().is_some() {
            st.corked = true;
        }
    }

    /// Drop entry `i`'s frames (its connection is gone).
    pub fn discard(&mut self, i: usize) {
        self.unstage(i, |_, _| {});
    }

    /// Forget the sweep: every entry was written, committed or discarded.
    pub fn clear(&mut self) {
        debug_assert!(self.conns.iter().all(|c| c.first == NONE));
        self.conns.clear();
        self.frames.clear();
        self.payloads.clear();
    }

    /// The common case of [`Corks::write`]: nothing waits in the outbox, so entry `i`'s frames
    /// are put together here, header and payload, and sent at once, without a trip through the
    /// outbox's queue. What the socket does not take is queued behind what it took, for a
    /// flusher. Returns the hub bytes written now, or `None`, having touched nothing, when the
    /// frames are more than one copied send carries ([`COPY_MAX`]: the queue's path writes them
    /// from where they are).
    fn write_direct(
        &mut self,
        i: usize,
        outbox: &Arc<Outbox>,
        socket: &Shared,
        st: &mut State,
    ) -> Option<usize> {
        self.wire.clear();
        let mut next = self.conns[i].first;
        while next != NONE {
            let frame = &self.frames[next as usize];
            let payload = &self.payloads[frame.payload.0 as usize].0;
            let (head, used) = text_head(payload.len());
            if self.wire.len() + used + payload.len() > COPY_MAX {
                return None;
            }
            self.wire.extend_from_slice(&head[..used]);
            self.wire.extend_from_slice(payload);
            next = frame.next;
        }
        let mut sent = match socket.try_write(&self.wire) {
            Ok(n) => n,
            Err(e) if would_block(&e) => 0,
            Err(_) => {
                self.unstage(i, |_, _| {});
                outbox.fail(st);
                return Some(0);
            }
        };
        let mut written = 0;
        self.unstage(i, |payload, _| {
            let len = head_len(payload.len()) + payload.len();
            if sent >= len {
                sent -= len;
                written += payload.len();
            } else {
                // The first frame the socket did not take whole (what it took of it is noted
                // as done) and every frame after it wait in the queue, which was empty.
                if st.queue.is_empty() {
                    st.front_done = std::mem::take(&mut sent);
                }
                st.enqueue(Chunk::text(payload.clone()));
            }
        });
        if !st.queue.is_empty() || !outbox.flush_records(socket, st) {
            st.flushing = true;
            tokio::spawn(flush(outbox.clone()));
        }
        Some(written)
    }

    /// Queue entry `i`'s frames under `st`; whether the outbox took them (not if it is closed
    /// or failed).
    fn queue(&mut self, i: usize, outbox: &Outbox, st: &mut State) -> bool {
        let open = !st.closed && !st.failed;
        self.unstage(i, |payload, event| {
            if open {
                outbox.enqueue_frame(st, payload, event);
            }
        });
        open
    }

    /// Take entry `i`'s frames out, in order, each with its payload's event-stream form.
    fn unstage(&mut self, i: usize, mut each: impl FnMut(&Bytes, &mut Option<Box<EventForm>>)) {
        let staged = &mut self.conns[i];
        if self.at[staged.slot] == i as u32 + 1 {
            self.at[staged.slot] = 0;
        }
        let mut next = std::mem::replace(&mut staged.first, NONE);
        while next != NONE {
            let frame = &self.frames[next as usize];
            next = frame.next;
            let (payload, event) = &mut self.payloads[frame.payload.0 as usize];
            each(payload, event);
        }
    }
}

/// `payload` with every line break (`\r\n`, `\r` or `\n`, as the event-stream format reads
/// them) followed by `data: `, so that each line is a `data:` line of one event.
fn data_lines(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 16);
    let mut bytes = payload.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                out.push(b'\n');
                out.extend_from_slice(SSE_DATA);
            }
            b'\n' => {
                out.push(b'\n');
                out.extend_from_slice(SSE_DATA);
            }
            b => out.push(b),
        }
    }
    Bytes::from(out)
}

/// The comment that ends a server-sent-event stream closed by the server: `: close <code>
/// <reason>` (line breaks in the reason turned into spaces).
fn sse_close(code: CloseCode, reason: &str) -> Bytes {
    let reason: String = reason
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    Bytes::from(format!(": close {} {reason}\n\n", code.0))
}

/// A formatted control frame.
fn control(frame: Frame) -> Bytes {
    let mut buf = Vec::with_capacity(frame.len());
    frame
        .format(&mut buf)
        .expect("writing a frame into a Vec cannot fail");
    Bytes::from(buf)
}

/// A close frame with `reason` cut to the 123 bytes a control frame allows.
pub fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    control(Frame::close(Some(CloseFrame {
        code: WsCloseCode::from(code.0),
        reason: reason[..end].into(),
    })))
}

/// What became of a chunk handed to the outbox.
enum Pushed {
    /// Written to the socket now.
    Written,
    /// Queued behind a backlog.
    Queued,
    /// Not taken: the connection is closing or its socket failed.
    Dropped,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_done: usize,
    /// Bytes of queued chunks that are not hub frames, bounded by [`RAW_LIMIT`].
    raw_queued: usize,
    /// A flusher task is running.
    flushing: bool,
    /// Frames of the hub's current drain are queued for [`Outbox::uncork`] ([`Corks::commit`]).
    corked: bool,
    /// Our close frame is queued: nothing more is accepted.
    closed: bool,
    /// The code and reason of our close frame, for the disconnect log line (boxed: every
    /// connection has the slot, few fill it before they end).
    closed_with: Option<Box<(CloseCode, Box<str>)>>,
    /// The socket failed, or the connection gave up on it: nothing more is written.
    failed: bool,
    /// The hub's handle for this connection (see [`Outbox::attach`]).
    conn: Option<ConnectionHandle>,
    /// How many flushed bytes to report at once.
    report_every: u32,
    /// The positions a v2 event stream's session holds ([`Framing::SseV2`] only).
    ids: Option<Box<EventIds>>,
    /// The connection task waits in [`Outbox::drained`]: wake it when the queue runs dry.
    drain_waited: bool,
}

impl State {
    /// Queue `chunk`. A queue's first allocation holds two chunks, not the four a first
    /// `push_back` reserves: most connections never have more queued (a greeting, v2's
    /// `session` and `subscribed`), and what a queue once held stays allocated while the
    /// connection is idle.
    fn enqueue(&mut self, chunk: Chunk) {
        if self.queue.capacity() == 0 {
            self.queue.reserve_exact(2);
        }
        self.queue.push_back(chunk);
    }

    fn fail(&mut self) {
        self.failed = true;
        self.queue.clear();
        self.raw_queued = 0;
    }
}

/// The write side of one WebSocket connection, shared by the hub task, the connection task and
/// (while there is a backlog) a flusher task.
pub struct Outbox {
    framing: Framing,
    socket: OnceLock<Shared>,
    sink: Arc<dyn FlushSink>,
    state: Mutex<State>,
    /// The connection task, woken when the hub closed the connection or the socket failed,
    /// when the queue ran dry while it waited for that, and when its read pace changed. One
    /// waker, not a `Notify` each: only that task waits, and every connection has an outbox.
    task: AtomicWaker,
    /// A flusher waiting for the socket, woken when the outbox is abandoned.
    flusher: AtomicWaker,
    /// The connection's read pace, set by the hub task.
    pacing: Pacing,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("system", &self.sink.system())
            .field("connected", &self.socket.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox reporting its flushes to `sink`, with no socket yet: frames wait until
    /// [`Outbox::connect`] (a connection is registered with its hub before the `101` goes out).
    pub fn new(sink: Arc<dyn FlushSink>) -> Arc<Outbox> {
        Outbox::framed(sink, Framing::WebSocket)
    }

    /// [`Outbox::new`] writing frames as `framing` says.
    pub fn framed(sink: Arc<dyn FlushSink>, framing: Framing) -> Arc<Outbox> {
        Arc::new(Outbox {
            framing,
            socket: OnceLock::new(),
            sink,
            state: Mutex::default(),
            task: AtomicWaker::new(),
            flusher: AtomicWaker::new(),
            pacing: Pacing::default(),
        })
    }

    /// An outbox writing to `stream` (which its connection task reads through
    /// [`Outbox::poll_read`]).
    pub fn over(stream: impl Into<Stream>, sink: Arc<dyn FlushSink>) -> Arc<Outbox> {
        let out = Outbox::new(sink);
        out.connect(stream.into());
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Give the outbox its socket and start writing what was queued meanwhile.
    pub fn connect(self: &Arc<Self>, stream: Stream) {
        let mut st = self.lock();
        if self.socket.set(stream.into()).is_ok() && !st.queue.is_empty() && !st.flushing {
            st.flushing = true;
            tokio::spawn(flush(self.clone()));
        }
    }

    /// Read from the socket into `buf` (as [`tokio::io::AsyncRead::poll_read`]: nothing added
    /// means the end of the stream). Only the connection task reads; before [`Outbox::connect`]
    /// there is nothing to read from.
    pub fn poll_read(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(socket) = self.socket.get() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let polled = socket.poll_read(cx, buf);
        if socket.wants_flush() {
            self.kick(); // A TLS read may leave records to send (an alert, a key update).
        }
        polled
    }

    /// Make sure a flusher runs, for records the socket's read side left to send (a TLS alert
    /// or key update) while nothing else is being written.
    pub fn kick(self: &Arc<Self>) {
        let mut st = self.lock();
        if !st.flushing && !st.corked && !st.failed && self.socket.get().is_some() {
            st.flushing = true;
            tokio::spawn(flush(self.clone()));
        }
    }

    /// Tell the outbox which hub connection it serves, so the flusher can report written bytes
    /// (at least `report_every` at a time, or when the queue runs dry).
    pub fn attach(&self, conn: ConnectionHandle, report_every: usize) {
        let mut st = self.lock();
        st.conn = Some(conn);
        st.report_every = u32::try_from(report_every.max(1)).unwrap_or(u32::MAX);
    }

    /// How it writes frames.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Send a ping with an empty payload (on an event stream, a comment line).
    pub fn ping(self: &Arc<Self>) {
        let ping = match self.framing {
            Framing::WebSocket => control(Frame::ping(Bytes::new())),
            Framing::Sse | Framing::SseV2 => Bytes::from_static(SSE_PING),
        };
        let _ = self.push_raw(ping);
    }

    /// Answer a WebSocket peer's ping with its payload.
    pub fn pong(self: &Arc<Self>, payload: Bytes) {
        let _ = self.push_raw(control(Frame::pong(payload)));
    }

    /// Answer a WebSocket peer's close frame: its code and reason back, or an empty close frame
    /// for an empty one. Nothing is accepted after it.
    pub fn answer_close(self: &Arc<Self>, frame: Option<(CloseCode, &str)>) {
        match frame {
            Some((code, reason)) => self.close(code, reason),
            None => self.close_with_frame(control(Frame::close(None)), None),
        }
    }

    /// Queue a close frame after everything already queued (on an event stream, a comment
    /// naming the code and reason; the stream ends once it is written); nothing is accepted
    /// after it. Wakes [`Outbox::ended`].
    pub fn close(self: &Arc<Self>, code: CloseCode, reason: &str) {
        let frame = match self.framing {
            Framing::WebSocket => close_frame(code, reason),
            Framing::Sse | Framing::SseV2 => sse_close(code, reason),
        };
        self.close_with_frame(frame, Some((code, reason)));
    }

    fn close_with_frame(self: &Arc<Self>, frame: Bytes, said: Option<(CloseCode, &str)>) {
        let frame = Chunk::raw(frame);
        let mut st = self.lock();
        self.push_locked(&mut st, frame);
        if !st.closed {
            st.closed_with = said.map(|(code, reason)| Box::new((code, reason.into())));
        }
        st.closed = true;
        self.task.wake();
    }

    /// Resolves when the hub closed the connection or the socket failed. Only one task may wait
    /// (the connection's): a second waiter takes the wake-up from the first.
    pub async fn ended(&self) {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }

    /// [`Outbox::ended`] as a poll: ready once a close frame is queued or the socket failed;
    /// otherwise `cx` is woken when that happens.
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.task.register(cx.waker());
        match self.is_ended() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// The code and reason of the close frame we queued, if any.
    pub fn closed_with(&self) -> Option<(CloseCode, Box<str>)> {
        self.lock().closed_with.as_deref().cloned()
    }

    /// Whether a close frame is queued or the socket failed.
    pub fn is_ended(&self) -> bool {
        let st = self.lock();
        st.closed || st.failed
    }

    /// Wait until everything queued was written (or the outbox failed). Only the connection
    /// task may wait (it shares the waker of [`Outbox::ended`]).
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            let mut st = self.lock();
            // A flusher with an empty queue still has TLS records to send.
            let done = (st.queue.is_empty() && !st.flushing) || st.failed;
            // Asks the writers for a wake-up when it runs dry (they do not wake the task for
            // every write).
            st.drain_waited = !done;
            if done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The connection's read pace.
    pub fn pacing(&self) -> &Pacing {
        &self.pacing
    }

    /// The hub processed a frame from this connection: its reader may take another.
    pub fn processed_by_hub(&self) {
        if self.pacing.processed_by_hub() {
            self.task.wake();
        }
    }

    /// The hub asks not to read from this connection before `until`.
    pub fn pause_reading(&self, until: tokio::time::Instant) {
        self.pacing.pause_until(until);
        self.task.wake();
    }

    /// Resolves `true` once the reader may take the next frame (see [`Pacing::pace`]), or
    /// `false` once the outbox ended. Only the connection task may wait.
    pub async fn readable(&self) -> bool {
        let sleep = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed = None;
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            loop {
                if self.is_ended() {
                    return Poll::Ready(false);
                }
                match self.pacing.pace() {
                    Pace::Read => return Poll::Ready(true),
                    Pace::Wait => return Poll::Pending,
                    Pace::Paused(until) => {
                        if armed != Some(until) {
                            sleep.as_mut().reset(until);
                            armed = Some(until);
                        }
                        if std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
            }
        })
        .await
    }

    /// End the written stream once everything is drained (an event stream's end): see
    /// [`Shared::shutdown`].
    pub async fn shutdown(&self) {
        if let Some(socket) = self.socket.get() {
            let _ = socket.shutdown().await;
        }
    }

    /// Stop writing: drop the queue and stop the flusher. The socket closes once the connection
    /// task and the hub let go of the outbox.
    pub fn abandon(&self) {
        self.lock().fail();
        self.flusher.wake();
        self.task.wake();
    }

    /// Control bytes (pings, pongs, close frames, event-stream comments). Silently discarded
    /// once our close frame is queued.
    fn push_raw(self: &Arc<Self>, bytes: Bytes) -> io::Result<()> {
        let mut st = self.lock();
        if st.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if st.closed {
            return Ok(());
        }
        if st.raw_queued + bytes.len() > RAW_LIMIT {
            self.fail(&mut st);
            return Err(io::Error::other(
                "the peer does not read its control frames",
            ));
        }
        match self.push_locked(&mut st, Chunk::raw(bytes)) {
            Pushed::Dropped => Err(io::ErrorKind::BrokenPipe.into()),
            _ => Ok(()),
        }
    }

    /// Write `chunk` now if nothing is queued ahead of it, else queue it and make sure a
    /// flusher runs. Wakes under the lock, which [`AtomicWaker`] allows.
    fn push_locked(self: &Arc<Self>, st: &mut State, chunk: Chunk) -> Pushed {
        if st.closed || st.failed {
            return Pushed::Dropped;
        }
        if st.corked {
            // Goes out behind the corked frames at `uncork`.
            if chunk.raw {
                st.raw_queued += chunk.len();
            }
            st.enqueue(chunk);
            return Pushed::Queued;
        }
        let mut done = 0;
        // Never while a flusher runs: it owns the wait for the socket (a TLS one may hold
        // records back with nothing queued here).
        if let (true, false, Some(socket)) = (st.queue.is_empty(), st.flushing, self.socket.get()) {
            match socket.try_write_vectored(&chunk.slices(0)) {
                Ok(n) if n == chunk.len() => {
                    if !matches!(socket.try_flush(), Ok(true)) {
                        // Records left in rustls (or a failure, which the flusher finds).
                        st.flushing = true;
                        tokio::spawn(flush(self.clone()));
                    }
                    return Pushed::Written;
                }
                Ok(n) => done = n,
                Err(e) if would_block(&e) => {}
                Err(_) => {
                    self.fail(st);
                    return Pushed::Dropped;
                }
            }
        }
        if st.queue.is_empty() {
            st.front_done = done;
        }
        if chunk.raw {
            st.raw_queued += chunk.len();
        }
        st.enqueue(chunk);
        if !st.flushing && self.socket.get().is_some() {
            st.flushing = true;
            tokio::spawn(flush(self.clone()));
        }
        Pushed::Queued
    }

    /// Queue hub frame `payload` as this outbox frames it. `event` is the payload's event-stream
    /// form, shared by its recipients: made here if it is empty and a stream needs it.
    fn enqueue_frame(&self, st: &mut State, payload: &Bytes, event: &mut Option<Box<EventForm>>) {
        let chunk = match self.framing {
            Framing::WebSocket => Chunk::text(payload.clone()),
            Framing::Sse => {
                let event = event.get_or_insert_with(|| EventForm::of(payload));
                Chunk::event(event.body.clone(), payload.len())
            }
            Framing::SseV2 => {
                let event = event.get_or_insert_with(|| EventForm::of(payload));
                let moved = event.moved.get_or_insert_with(|| Move::of(payload));
                let ids = st.ids.get_or_insert_default();
                if let Some(id) = moved.as_ref().and_then(|m| ids.apply(m)) {
                    st.enqueue(Chunk::event_id(&id));
                }
                Chunk::event(event.body.clone(), payload.len())
            }
        };
        st.enqueue(chunk);
    }

    /// Write what [`Corks::commit`] queued; returns the hub bytes written now (the rest is left
    /// to a flusher, which reports it).
    pub fn uncork(self: &Arc<Self>) -> usize {
        let mut st = self.lock();
        if !std::mem::take(&mut st.corked) || st.flushing {
            return 0;
        }
        self.write_now(&mut st)
    }

    /// Write the queue as far as the socket takes it now, and leave the rest to a flusher.
    /// Returns the hub bytes written now.
    fn write_now(self: &Arc<Self>, st: &mut State) -> usize {
        let (written, idle) = self.write_locked(st);
        if !idle {
            st.flushing = true;
            tokio::spawn(flush(self.clone()));
        }
        written
    }

    /// Write as much of the queue as the socket takes now (the flusher's step). Returns the hub
    /// bytes written and whether the flusher is done (the queue is empty or the socket failed).
    fn write_queued(&self) -> (usize, bool) {
        let mut st = self.lock();
        let (written, idle) = if self.socket.get().is_some() {
            self.write_locked(&mut st)
        } else {
            (0, true)
        };
        if idle {
            st.flushing = false;
        }
        (written, idle)
    }

    /// Write queued chunks until the queue is empty or the socket would block. Returns the hub
    /// bytes written and whether nothing is left to write.
    fn write_locked(&self, st: &mut State) -> (usize, bool) {
        let Some(socket) = self.socket.get() else {
            return (0, false);
        };
        let mut written = 0;
        while !st.failed && !st.queue.is_empty() {
            let batch = || {
                st.queue.iter().take(BATCH).enumerate().map(|(i, chunk)| {
                    let done = if i == 0 { st.front_done } else { 0 };
                    chunk.slices(done)
                })
            };
            let pending =
                st.queue.iter().take(BATCH).map(Chunk::len).sum::<usize>() - st.front_done;
            if pending == 0 {
                // Nothing to put on the socket (a write of nothing would loop here forever).
                for _ in 0..BATCH.min(st.queue.len()) {
                    let chunk = st.queue.pop_front().expect("counted");
                    written += chunk.hub_bytes;
                }
                st.front_done = 0;
                continue;
            }
            let sent = if pending <= COPY_MAX {
                COPY.with_borrow_mut(|buf| {
                    buf.clear();
                    for part in batch().flatten() {
                        buf.extend_from_slice(&part);
                    }
                    socket.try_write(buf)
                })
            } else {
                let mut slices = [IoSlice::new(&[]); 3 * BATCH];
                let mut n = 0;
                for part in batch().flatten().filter(|part| !part.is_empty()) {
                    slices[n] = part;
                    n += 1;
                }
                socket.try_write_vectored(&slices[..n])
            };
            match sent {
                Ok(mut n) => {
                    while n > 0 {
                        let left = st.queue[0].len() - st.front_done;
                        if n < left {
                            st.front_done += n;
                            break;
                        }
                        n -= left;
                        st.front_done = 0;
                        let chunk = st
                            .queue
                            .pop_front()
                            .expect("the queue holds what was written");
                        if chunk.raw {
                            st.raw_queued -= chunk.len();
                        }
                        written += chunk.hub_bytes;
                    }
                }
                Err(e) if would_block(&e) => return (written, false),
                Err(_) => {
                    self.fail(st);
                }
            }
        }
        // Let go of the memory of a large backlog once it is written.
        if st.queue.capacity() > 64 {
            st.queue = VecDeque::new();
        }
        if !st.failed && !self.flush_records(socket, st) {
            return (written, false);
        }
        if std::mem::take(&mut st.drain_waited) {
            self.task.wake();
        }
        (written, true)
    }

    /// The socket failed under `st`: nothing more is written, and the connection task is told.
    fn fail(&self, st: &mut State) {
        st.fail();
        self.task.wake();
    }

    /// Put what TLS still holds on the socket: whether it is all out (or the socket failed), or
    /// a flusher has to wait for it.
    fn flush_records(&self, socket: &Shared, st: &mut State) -> bool {
        match socket.try_flush() {
            Ok(done) => done,
            Err(_) => {
                self.fail(st);
                true
            }
        }
    }

    fn report_to(&self) -> Option<(ConnectionHandle, usize)> {
        let st = self.lock();
        Some((st.conn?, st.report_every as usize))
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Drain an outbox's backlog as the socket accepts it, then exit.
async fn flush(out: Arc<Outbox>) {
    let socket = out
        .socket
        .get()
        .expect("a flusher starts only once connected");
    let mut unreported = 0;
    loop {
        // Abandoned: stop (the state says so; the waker only makes sure it is seen).
        let abandoned = std::future::poll_fn(|cx| {
            out.flusher.register(cx.waker());
            match out.lock().failed {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        tokio::select! {
            biased;
            _ = abandoned => {
                out.lock().flushing = false;
                out.task.wake();
                return;
            }
            ready = socket.writable() => if ready.is_err() {
                let mut st = out.lock();
                st.fail();
                st.flushing = false;
                drop(st);
                out.task.wake();
                return;
            }
        }
        let (written, idle) = out.write_queued();
        unreported += written;
        if let Some((conn, every)) = out.report_to() {
            if unreported > 0 && (idle || unreported >= every) {
                out.sink.flushed(conn, unreported).await;
                unreported = 0;
            }
        }
        if idle {
            return;
        }
    }
}
