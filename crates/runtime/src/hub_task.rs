//! The hub task: one tokio task owns one system's hub and is its only caller.
//!
//! Connection tasks and HTTP handlers talk to it through a bounded command queue
//! ([`HubHandle`]). They decode what they received on their own thread with the protocol's
//! decoder before queueing it, so decoding runs on every core and the hub task only applies.
//! Each connection registers its [`Link`] (outbox and read pacing), and the hub task writes the
//! hub's output straight into the outbox: a fan-out is one `writev` per recipient from this
//! task, with no per-delivery hand-off. The hub's byte accounting bounds each outbox: a frame
//! reaches an outbox only while the connection's unflushed bytes stay under `max_queued_bytes`;
//! a frame written at once counts as flushed at once, a queued one when its flusher reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::Either;
use hashbrown::HashMap;
use switchboard_hub::cluster::{Members, NodeSummary};
use switchboard_hub::history::{
    Audience, FetchId, Fetched, HistoryError, MemoryHistory, Position, SessionId,
};
use switchboard_hub::{
    AnyMessage, Bytes, CloseCode, ConnectionHandle, Dialect, DynDecode, DynHub, Frame, HttpRequest,
    HttpResponse, IdempotencyKey, OpenError, OpenInfo, Output, Publication, Stats, TapError,
    Target, Text,
};
use tokio::sync::{mpsc, oneshot};

use crate::backplane::{Replication, Replicator};
use crate::clock::HubClock;
use crate::inspect::{
    ConnectionDetail, ConnectionView, Inspection, Query, RoomSize, TailEvent,
    MAX_CONNECTIONS_LISTED, MAX_NAME_BYTES, MAX_ROOMS_LISTED, TAIL_QUEUE, TAIL_RATE,
};
pub use crate::links::Link;
use crate::links::Links;
use crate::outbox::{Corks, FlushSink, Outbox};

/// Commands queued to the hub task; a full queue makes the sender wait (backpressure).
pub const COMMAND_QUEUE: usize = 4096;

/// Commands taken from the queue before the hub's output is drained, so a burst costs one drain.
const BATCH: usize = 64;

/// Connections a drain must have frames for before the hub task lets the ready readers hand
/// over their frames first (see [`HubTask::run`]): below it a write is cheap, and waiting would
/// only add latency.
const GATHER: usize = 64;

/// Fewest connections a share of a split fan-out gets: below it, a task hand-off costs more
/// than the sends it moves to another core.
const PARALLEL_SHARE: usize = 256;

/// A connection the hub accepted.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its handle.
    pub handle: ConnectionHandle,
    /// The id its protocol gave it (for logs).
    pub client_id: Arc<str>,
    /// The protocol version it speaks (its frames are decoded for it).
    pub dialect: Dialect,
    /// When it was accepted.
    pub at: std::time::Instant,
}

enum Command {
    Open(
        Box<OpenInfo>,
        Link,
        oneshot::Sender<Result<Opened, OpenError>>,
    ),
    Frame(ConnectionHandle, Frame<AnyMessage>),
    Activity(ConnectionHandle),
    Flushed(Vec<(ConnectionHandle, usize)>),
    Closed(ConnectionHandle),
    Request(
        AnyMessage,
        Option<IdempotencyKey>,
        oneshot::Sender<Option<HttpResponse>>,
    ),
    Publish(Publication, oneshot::Sender<usize>),
    Remote(Publication),
    Positioned(Box<Positioned>),
    Appended(String, Result<Position, HistoryError>),
    Fetched(FetchId, Result<Fetched, HistoryError>),
    HistoryCheck,
    RemoteMembers(Box<(u64, String, Members, bool)>),
    Cluster(Vec<(u64, NodeSummary)>),
    Summary(oneshot::Sender<NodeSummary>),
    Resync,
    Stats(oneshot::Sender<Stats>),
    Rooms(oneshot::Sender<Vec<String>>),
    CloseAll(CloseCode, &'static str, oneshot::Sender<()>),
    Connections(oneshot::Sender<Vec<ConnectionHandle>>),
    Close(ConnectionHandle, CloseCode, &'static str),
    Inspect(Box<Query>, oneshot::Sender<Inspection>),
    Detail(u64, oneshot::Sender<Option<ConnectionDetail>>),
    Tail(
        String,
        mpsc::Sender<TailEvent>,
        oneshot::Sender<Result<u64, TapError>>,
    ),
    Untail(String, u64),
}

/// A kept publication from a shared history, with its position.
struct Positioned {
    publication: Publication,
    position: Position,
    publisher: Option<SessionId>,
    from_here: bool,
}

/// The hub task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hub task has stopped")]
pub struct HubGone;

/// What [`HubHandle`]'s one-way commands return: ready at once unless the queue was full (then
/// the boxed send waits for room).
pub type Told = Either<
    std::future::Ready<Result<(), HubGone>>,
    Pin<Box<dyn Future<Output = Result<(), HubGone>> + Send>>,
>;

/// A cloneable handle to a running hub task, with the protocol's decoder.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    name: &'static str,
    decoder: Arc<dyn DynDecode>,
    /// Frames above it are not decoded (the hub closes their connection with 1009).
    max_frame_bytes: usize,
    /// The hub task's hint that its queue to the backplane is nearly full.
    backplane_behind: Arc<AtomicBool>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHandle")
            .field("system", &self.name)
            .finish_non_exhaustive()
    }
}

/// Start a task owning `hub`, reading time from `clock`. `replicate`, if given, receives every
/// local publication and room change (for a cluster backplane): a publication the full channel
/// cannot take is counted by the hub, a room change is left to the backplane's reconciliation.
/// `history`, if given, answers the hub's appends and fetches (protocol v2), in the same turn.
pub fn spawn_hub(
    hub: Box<dyn DynHub>,
    clock: HubClock,
    replicate: Option<mpsc::Sender<Replication>>,
    history: Option<MemoryHistory>,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let name = hub.protocol_name();
    let decoder = hub.decoder();
    let max_frame_bytes = hub.config().limits.max_frame_bytes;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let replicator = Replicator::new(replicate);
    let backplane_behind = replicator.behind();
    let task = HubTask {
        hub,
        clock,
        links: Links::default(),
        corks: Corks::default(),
        replicator,
        history,
        loopback: tx.downgrade(),
        workers: tokio::runtime::Handle::current().metrics().num_workers(),
        tails: HashMap::default(),
        next_watcher: 0,
    };
    let task = tokio::spawn(task.run(rx));
    let handle = HubHandle {
        tx,
        name,
        decoder,
        max_frame_bytes,
        backplane_behind,
    };
    (handle, task)
}

impl HubHandle {
    /// The protocol's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the hub task last saw its queue to the cluster backplane more than seven eighths
    /// full (a hint, a load: see `crate::System::backplane_saturated`).
    pub fn backplane_behind(&self) -> bool {
        self.backplane_behind.load(Ordering::Relaxed)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HubGone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    /// Queue `cmd` now; the future only waits if the queue is full. Every connection task
    /// awaits one of these per inbound frame, so it is kept small: a ready value, or a boxed
    /// send in the rare case the hub is behind.
    fn tell(&self, cmd: Command) -> Told {
        match self.tx.try_send(cmd) {
            Ok(()) => Either::Left(std::future::ready(Ok(()))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Either::Left(std::future::ready(Err(HubGone)))
            }
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let tx = self.tx.clone();
                Either::Right(Box::pin(
                    async move { tx.send(cmd).await.map_err(|_| HubGone) },
                ))
            }
        }
    }

    /// Register a new connection reached through `link`; the protocol's greeting is already in
    /// its outbox (or on the socket) when this returns.
    pub async fn open(
        &self,
        info: OpenInfo,
        link: Link,
    ) -> Result<Result<Opened, OpenError>, HubGone> {
        self.call(|tx| Command::Open(Box::new(info), link, tx))
            .await
    }

    /// A text frame arrived from `conn` (speaking `dialect`): decoded here, on the caller's
    /// thread, and queued to the hub.
    pub fn text(&self, conn: ConnectionHandle, dialect: Dialect, text: Text) -> Told {
        let len = text.len();
        let frame = if len > self.max_frame_bytes {
            Frame::Text(text) // Not worth decoding: the hub closes the connection.
        } else {
            self.decoder.decode_frame(dialect, text)
        };
        self.tell(Command::Frame(conn, frame))
    }

    /// A binary frame arrived.
    pub fn binary(&self, conn: ConnectionHandle, bytes: Bytes) -> Told {
        self.tell(Command::Frame(conn, Frame::Binary(bytes)))
    }

    /// The peer showed life without a message (a ping or a pong).
    pub fn activity(&self, conn: ConnectionHandle) -> Told {
        self.tell(Command::Activity(conn))
    }

    /// The peer closed or the socket failed.
    pub fn closed(&self, conn: ConnectionHandle) -> Told {
        self.tell(Command::Closed(conn))
    }

    /// Ask the protocol to answer an HTTP request (decoded here, on the caller's thread).
    pub async fn http(&self, req: HttpRequest) -> Result<Option<HttpResponse>, HubGone> {
        let request = self.decoder.decode_request(req);
        self.call(|tx| Command::Request(request, None, tx)).await
    }

    /// [`HubHandle::http`] for a request that may carry an `Idempotency-Key` (a publish the
    /// caller has authorized): a key the hub answered already gets that answer again.
    /// A malformed key is answered 400 (callers check it with the headers, before the body).
    pub async fn http_once(&self, req: HttpRequest) -> Result<Option<HttpResponse>, HubGone> {
        let key = match IdempotencyKey::of(&req) {
            Ok(key) => key,
            Err(why) => {
                let body = serde_json::json!({ "error": why }).to_string();
                return Ok(Some(HttpResponse::json(400, body)));
            }
        };
        let request = self.decoder.decode_request(req);
        self.call(|tx| Command::Request(request, key, tx)).await
    }

    /// Publish from the server side; returns the number of local deliveries.
    pub async fn publish(&self, publication: Publication) -> Result<usize, HubGone> {
        self.call(|tx| Command::Publish(publication, tx)).await
    }

    /// Inject a publication from another node (never replicated again).
    pub fn remote(
        &self,
        publication: Publication,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Remote(publication))
    }

    /// A kept publication at `position`, from a shared history (see
    /// [`switchboard_hub::Hub::handle_positioned`]); `from_here` if this node made it.
    pub fn positioned(
        &self,
        publication: Publication,
        position: Position,
        publisher: Option<SessionId>,
        from_here: bool,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Positioned(Box::new(Positioned {
            publication,
            position,
            publisher,
            from_here,
        })))
    }

    /// The shared history's answer to the oldest [`Replication::Append`] of `stream`.
    pub fn appended(
        &self,
        stream: String,
        result: Result<Position, HistoryError>,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Appended(stream, result))
    }

    /// The shared history's answer to [`Replication::Fetch`] `id`.
    pub fn fetched(
        &self,
        id: FetchId,
        result: Result<Fetched, HistoryError>,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Fetched(id, result))
    }

    /// The shared history's channel may have lost publications: re-fetch every stream (see
    /// [`switchboard_hub::Hub::handle_history_check`]).
    pub fn history_check(&self) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::HistoryCheck)
    }

    /// Node `node` has `members` in `room` now (see
    /// [`switchboard_hub::Hub::handle_remote_members`]).
    pub fn remote_members(
        &self,
        node: u64,
        room: String,
        members: Members,
        hello: bool,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::RemoteMembers(Box::new((
            node, room, members, hello,
        ))))
    }

    /// The other live nodes and their summaries, just read (see
    /// [`switchboard_hub::Hub::handle_cluster`]).
    pub fn cluster(
        &self,
        nodes: Vec<(u64, NodeSummary)>,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Cluster(nodes))
    }

    /// The backplane's subscription was re-established (see
    /// [`switchboard_hub::Hub::handle_resync`]).
    pub fn resync(&self) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Resync)
    }

    /// This node's summary for the cluster (see [`switchboard_hub::Hub::summary`]).
    pub async fn summary(&self) -> Result<NodeSummary, HubGone> {
        self.call(Command::Summary).await
    }

    /// A snapshot of counters and gauges.
    pub async fn stats(&self) -> Result<Stats, HubGone> {
        self.call(Command::Stats).await
    }

    /// The rooms that have local members.
    pub async fn rooms(&self) -> Result<Vec<String>, HubGone> {
        self.call(Command::Rooms).await
    }

    /// Close every connection (e.g. with 1001 at shutdown).
    pub async fn close_all(&self, code: CloseCode, reason: &'static str) -> Result<(), HubGone> {
        self.call(|tx| Command::CloseAll(code, reason, tx)).await
    }

    /// The connections open now (e.g. for a drain that closes them one at a time).
    pub async fn connections(&self) -> Result<Vec<ConnectionHandle>, HubGone> {
        self.call(Command::Connections).await
    }

    /// Close one connection with `code`, from the server side; one already gone is left alone.
    pub fn close(
        &self,
        conn: ConnectionHandle,
        code: CloseCode,
        reason: &'static str,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Close(conn, code, reason))
    }

    /// Counters and, as `query` asks, the largest rooms and the connections open longest: a
    /// bounded copy for an operator (see [`crate::inspect`]).
    pub async fn inspect(&self, query: Query) -> Result<Inspection, HubGone> {
        self.call(|tx| Command::Inspect(Box::new(query), tx)).await
    }

    /// The connection with serial `id` ([`ConnectionView::id`]) in detail, if it is open.
    pub async fn connection_detail(&self, id: u64) -> Result<Option<ConnectionDetail>, HubGone> {
        self.call(|tx| Command::Detail(id, tx)).await
    }

    /// Watch `room`'s publications as they pass, sampled ([`TAIL_RATE`]) and cut short
    /// ([`crate::inspect::TAIL_PAYLOAD_BYTES`]). The hub taps the room while at least one
    /// [`Tail`] of it is alive, and only then; refused when the hub taps as many rooms as it
    /// may ([`switchboard_hub::MAX_TAPS`]).
    pub async fn tail(&self, room: &str) -> Result<Result<Tail, TapError>, HubGone> {
        let (events, rx) = mpsc::channel(TAIL_QUEUE);
        let room = room.to_string();
        let id = self
            .call(|tx| Command::Tail(room.clone(), events, tx))
            .await?;
        Ok(id.map(|id| Tail {
            rx,
            room,
            id,
            hub: self.tx.clone(),
        }))
    }
}

/// A live tail of one room ([`HubHandle::tail`]); the room stays tapped while it is alive.
#[derive(Debug)]
pub struct Tail {
    rx: mpsc::Receiver<TailEvent>,
    room: String,
    id: u64,
    hub: mpsc::Sender<Command>,
}

impl Tail {
    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The next publication shown; `None` once the hub task has stopped.
    pub async fn next(&mut self) -> Option<TailEvent> {
        self.rx.recv().await
    }
}

impl Drop for Tail {
    /// Tell the hub task this watcher left, so the room is untapped once nobody watches. If its
    /// queue is full the message goes from a task; if it cannot go at all, the hub task finds
    /// the watcher gone at the room's next publication.
    fn drop(&mut self) {
        let cmd = Command::Untail(std::mem::take(&mut self.room), self.id);
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.hub.try_send(cmd) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let hub = self.hub.clone();
                runtime.spawn(async move {
                    let _ = hub.send(cmd).await;
                });
            }
        }
    }
}

/// One watcher of a tapped room.
struct Watcher {
    id: u64,
    events: mpsc::Sender<TailEvent>,
    /// Events its full queue could not take since the last one it got.
    missed: u64,
}

impl FlushSink for HubHandle {
    fn flushed(
        &self,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let told = self.tell(Command::Flushed(vec![(conn, bytes)]));
        Box::pin(async move {
            let _ = told.await;
        })
    }

    fn system(&self) -> &'static str {
        self.name
    }
}

/// The state of one hub task.
struct HubTask {
    hub: Box<dyn DynHub>,
    clock: HubClock,
    links: Links,
    /// The frames of the current drain, per connection, to write once it is done.
    corks: Corks<ConnectionHandle>,
    replicator: Replicator,
    /// The history engine of this system's streams, driven from here like the hub.
    history: Option<MemoryHistory>,
    /// For the tasks a split fan-out spawns to report what they wrote; weak, so the hub task
    /// ends once every [`HubHandle`] is gone.
    loopback: mpsc::WeakSender<Command>,
    workers: usize,
    /// Who watches each tapped room.
    tails: HashMap<String, Vec<Watcher>>,
    next_watcher: u64,
}

impl HubTask {
    /// Until every handle is gone: take a batch of input, run due timers, drain the output,
    /// write what the drain queued.
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while self.take_input(&mut rx).await {
            self.run_timers();
            let mut gathered = false;
            // A write reported flushed can let a paced replay go on: drain until quiet.
            loop {
                self.drain();
                self.replicator.note_fill();
                if !gathered && self.corks.len() >= GATHER {
                    // A large fan-out is about to be written: first let the readers that are
                    // ready hand over what they read (another publisher's frames, say), so that
                    // each socket gets them in the same write. `yield_now` runs this task again
                    // after the tasks queued now and a poll of the I/O driver.
                    gathered = true;
                    tokio::task::yield_now().await;
                    self.take_ready(&mut rx);
                    continue;
                }
                if !self.uncork(&mut rx).await {
                    break;
                }
            }
        }
    }

    /// Apply up to [`BATCH`] commands that are queued now, without waiting.
    fn take_ready(&mut self, rx: &mut mpsc::Receiver<Command>) {
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(cmd) => self.apply(cmd),
                Err(_) => break,
            }
        }
    }

    /// Wait for a command or the hub's next deadline, then apply up to [`BATCH`] commands that
    /// are already queued. `false` once the queue is closed and empty.
    async fn take_input(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let history = self.history.as_ref().and_then(MemoryHistory::poll_timeout);
        let deadline = self
            .hub
            .poll_timeout()
            .into_iter()
            .chain(history)
            .min()
            .map(|t| self.clock.deadline(t));
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => Some(cmd),
                None => return false,
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => None,
        };
        let now = self.clock.now();
        self.hub.set_wall_clock(now, self.clock.wall());
        if let Some(cmd) = first {
            self.apply(cmd);
            self.take_ready(rx);
        }
        true
    }

    /// Run the hub's timers if one is due, whatever woke the task (a steady stream of commands
    /// must not starve heartbeats, idle closes and throttled connections).
    fn run_timers(&mut self) {
        let now = self.clock.now();
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.hub.handle_timeout(now);
        }
        if let Some(history) = &mut self.history {
            if history.poll_timeout().is_some_and(|t| t <= now) {
                history.handle_timeout(now);
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        let now = self.clock.now();
        let hub = &mut self.hub;
        match cmd {
            Command::Open(info, link, reply) => {
                let dialect = info.dialect;
                let result = hub.handle_open(now, *info).map(|handle| {
                    // A flusher reports a sixteenth of the queue budget at a time, at most 16 KiB.
                    let every = (hub.config().limits.max_queued_bytes / 16).clamp(1, 16 * 1024);
                    link.outbox.attach(handle, every);
                    self.links.insert(handle, link);
                    Opened {
                        handle,
                        client_id: hub.client_id(handle).unwrap_or_else(|| "".into()),
                        dialect,
                        at: std::time::Instant::now(),
                    }
                });
                let _ = reply.send(result);
            }
            // Reports about a connection the hub closed meanwhile are accepted by the hub; a
            // stale handle is an error only the hub cares about.
            Command::Frame(conn, frame) => {
                let _ = hub.handle_frame(now, conn, frame);
                self.processed(conn);
            }
            Command::Activity(conn) => {
                let _ = hub.handle_activity(now, conn);
                self.processed(conn);
            }
            Command::Flushed(written) => {
                for (conn, bytes) in written {
                    let _ = hub.handle_flushed(now, conn, bytes);
                }
            }
            Command::Closed(conn) => {
                self.links.remove(&conn);
                let _ = hub.handle_close(now, conn);
            }
            Command::Request(request, key, reply) => {
                let _ = reply.send(hub.handle_request_once(now, key, request));
            }
            Command::Publish(p, reply) => {
                let _ = reply.send(hub.publish(now, p));
            }
            Command::Remote(p) => {
                hub.handle_remote(now, p);
            }
            Command::Positioned(p) => {
                let Positioned {
                    publication,
                    position,
                    publisher,
                    from_here,
                } = *p;
                hub.handle_positioned(now, publication, position, publisher, from_here);
            }
            Command::Appended(stream, result) => {
                let _ = hub.handle_appended(now, &stream, result);
            }
            Command::Fetched(id, result) => hub.handle_fetched(now, id, result),
            Command::HistoryCheck => hub.handle_history_check(now),
            Command::RemoteMembers(m) => {
                let (node, room, members, hello) = *m;
                hub.handle_remote_members(now, node, &room, members, hello);
            }
            Command::Cluster(nodes) => hub.handle_cluster(now, nodes),
            Command::Resync => hub.handle_resync(now),
            Command::Summary(reply) => {
                let _ = reply.send(hub.summary());
            }
            Command::Stats(reply) => {
                let mut stats = hub.stats();
                if let Some(history) = &self.history {
                    stats.history = history.stats();
                }
                let _ = reply.send(stats);
            }
            Command::Rooms(reply) => {
                let _ = reply.send(hub.room_names());
            }
            Command::CloseAll(code, reason, reply) => {
                hub.close_all(now, code, reason);
                let _ = reply.send(());
            }
            Command::Connections(reply) => {
                let _ = reply.send(self.links.handles().collect());
            }
            Command::Close(conn, code, reason) => self.close_one(now, conn, code, reason),
            Command::Inspect(query, reply) => {
                let _ = reply.send(self.inspect(now, &query));
            }
            Command::Detail(id, reply) => {
                let _ = reply.send(self.detail(now, id));
            }
            Command::Tail(room, events, reply) => {
                let _ = reply.send(self.watch(now, room, events));
            }
            Command::Untail(room, id) => self.unwatch(&room, id),
        }
    }

    /// Counters, and the lists `query` asks for (capped whatever it asks).
    fn inspect(&self, now: switchboard_hub::Instant, query: &Query) -> Inspection {
        let hub = &self.hub;
        let mut stats = hub.stats();
        if let Some(history) = &self.history {
            stats.history = history.stats();
        }
        let (rooms, rooms_matching) = if query.rooms > 0 {
            let (rooms, matching) =
                hub.largest_rooms(&query.search, query.rooms.min(MAX_ROOMS_LISTED));
            let rooms = rooms
                .into_iter()
                .map(|(name, members)| RoomSize {
                    name: crate::inspect::clip(name, MAX_NAME_BYTES),
                    members,
                })
                .collect();
            (rooms, matching)
        } else {
            (Vec::new(), 0)
        };
        let connections = hub
            .oldest_connections(query.connections.min(MAX_CONNECTIONS_LISTED))
            .iter()
            .map(|c| ConnectionView::of(c, hub.rooms_of(c.handle).len(), now))
            .collect();
        Inspection {
            stats,
            rooms,
            rooms_matching,
            connections,
            tapped: self.tails.keys().cloned().collect(),
            cluster: hub.cluster_totals(),
        }
    }

    /// The connection with serial `id`, in detail.
    fn detail(&self, now: switchboard_hub::Instant, id: u64) -> Option<ConnectionDetail> {
        let handle = self.links.handles().find(|h| h.serial() == id)?;
        let info = self.hub.connection(handle)?;
        Some(ConnectionDetail::of(&info, self.hub.rooms_of(handle), now))
    }

    /// A new watcher of `room`: the room is tapped with its first.
    fn watch(
        &mut self,
        now: switchboard_hub::Instant,
        room: String,
        events: mpsc::Sender<TailEvent>,
    ) -> Result<u64, TapError> {
        if !self.tails.contains_key(&room) {
            self.hub.tap(now, &room, TAIL_RATE)?;
        }
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.tails.entry(room).or_default().push(Watcher {
            id,
            events,
            missed: 0,
        });
        Ok(id)
    }

    /// Watcher `id` of `room` left: the room is untapped with its last.
    fn unwatch(&mut self, room: &str, id: u64) {
        let Some(watchers) = self.tails.get_mut(room) else {
            return;
        };
        watchers.retain(|w| w.id != id);
        if watchers.is_empty() {
            self.tails.remove(room);
            self.hub.untap(room);
        }
    }

    /// Hand a tapped publication to the room's watchers. A watcher gone is forgotten (the room
    /// untapped with the last); one not reading misses it, and is told how many it missed.
    fn show_tapped(&mut self, room: String, payload: &Text, skipped: u64) {
        let Some(watchers) = self.tails.get_mut(&room) else {
            self.hub.untap(&room); // Nobody asked for it (any more).
            return;
        };
        let at_ms = self.clock.wall().as_millis();
        let event = TailEvent::of(&room, payload, skipped, at_ms);
        watchers.retain_mut(|w| {
            let mut event = event.clone();
            event.skipped += w.missed;
            match w.events.try_send(event) {
                Ok(()) => {
                    w.missed = 0;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.missed += 1 + skipped;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if watchers.is_empty() {
            self.tails.remove(&room);
            self.hub.untap(&room);
        }
    }

    /// The hub took a frame from `conn`: its reader may send another.
    fn processed(&self, conn: ConnectionHandle) {
        if let Some(link) = self.links.get(&conn) {
            link.outbox.processed_by_hub();
        }
    }

    /// Carry out everything the hub asked for. Frames are staged per connection, to go out in
    /// one write each at [`HubTask::uncork`].
    fn drain(&mut self) {
        let now = self.clock.now();
        while let Some(out) = self.hub.poll_output() {
            match out {
                // A frame staged for a connection that has gone meanwhile is dropped when its
                // turn to be written comes.
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    let payload = self.corks.add(payload);
                    self.corks.stage(connection, connection.slot(), payload);
                }
                Output::Fanout {
                    payload,
                    recipients,
                } => {
                    let payload = self.corks.add(payload);
                    for conn in recipients {
                        self.corks.stage(conn, conn.slot(), payload);
                    }
                }
                Output::Ping { connection } => {
                    if let Some(link) = self.links.get(&connection) {
                        link.outbox.ping();
                    }
                }
                Output::PauseReading { connection, until } => {
                    if let Some(link) = self.links.get(&connection) {
                        let wait = until.saturating_since(now);
                        link.outbox
                            .pause_reading(tokio::time::Instant::now() + wait);
                    }
                }
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    self.write_staged(now, connection);
                    if let Some(link) = self.links.remove(&connection) {
                        link.outbox.close(code, &reason);
                    }
                }
                // The in-memory engine answers at once; the hub queues what follows. A shared
                // history is asked through the backplane and answers later.
                Output::Append { stream, entry } => match &mut self.history {
                    Some(history) => {
                        let position = history.append(now, &stream, entry);
                        let _ = self.hub.handle_appended(now, &stream, Ok(position));
                    }
                    None => {
                        let target = match (&entry.audience, self.hub.system_stream()) {
                            (Audience::User(user), Some(s)) if s == stream => {
                                Target::User(user.clone())
                            }
                            (_, Some(s)) if s == stream => Target::All,
                            _ => Target::Room(stream.clone()),
                        };
                        let request = Replication::Append {
                            stream,
                            entry,
                            target,
                        };
                        if let Err(Replication::Append { stream, .. }) =
                            self.replicator.history(request)
                        {
                            let unavailable = Err(HistoryError::Unavailable);
                            let _ = self.hub.handle_appended(now, &stream, unavailable);
                        }
                    }
                },
                Output::Fetch { id, stream, since } => match &mut self.history {
                    Some(history) => {
                        let answer = history.fetch(now, &stream, since);
                        self.hub.handle_fetched(now, id, Ok(answer));
                    }
                    None => {
                        let request = Replication::Fetch { id, stream, since };
                        if self.replicator.history(request).is_err() {
                            self.hub
                                .handle_fetched(now, id, Err(HistoryError::Unavailable));
                        }
                    }
                },
                Output::Tapped {
                    room,
                    payload,
                    skipped,
                } => self.show_tapped(room, &payload, skipped),
                other => {
                    if let Some(dropped) = self.replicator.forward(other) {
                        self.hub.handle_replication_dropped(dropped);
                    }
                }
            }
        }
        // Room changes that waited for the backplane's queue go as soon as it has room.
        self.replicator.flush();
    }

    /// Write each staged connection's frames in one write. A large fan-out is split over the
    /// runtime's workers: the kernel's send is most of a delivery's cost, and sends to different
    /// sockets run in parallel (the other shares' frames are queued in their outboxes here, and
    /// their tasks write them). Whether a write was reported to the hub from here (which may
    /// have given it more to do).
    ///
    /// A long sweep takes new input every [`GATHER`] writes: what the readers handed over
    /// meanwhile (the next publication, say) joins the frames of the sockets not written yet,
    /// so they get it in this sweep's write instead of a write of its own in the next sweep,
    /// and sooner. The sockets already written are staged again and written at the end of
    /// this sweep. Input is taken only during the sweep's first pass, so a sweep writes each
    /// socket at most twice, and timers still run between sweeps.
    async fn uncork(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let total = self.corks.len();
        let shares = self.workers.min(total / PARALLEL_SHARE).max(1);
        let first_pass = total.div_ceil(shares);
        if shares > 1 {
            // The other shares' frames are queued here and written by their tasks.
            let mut share = Vec::with_capacity(first_pass);
            for i in first_pass..total {
                let conn = self.corks.conn(i);
                match self.links.get(&conn) {
                    Some(link) => {
                        self.corks.commit(i, &link.outbox);
                        share.push((conn, link.outbox.clone()));
                    }
                    None => self.corks.discard(i),
                }
                if share.len() == first_pass || i + 1 == total {
                    let share = std::mem::replace(&mut share, Vec::with_capacity(first_pass));
                    tokio::spawn(uncork_share(share, self.loopback.clone()));
                }
            }
        }
        let mut now = self.clock.now();
        let mut reported = false;
        for i in 0..first_pass {
            reported |= self.write_entry(now, i);
            let done = i + 1;
            if done % GATHER == 0 && done + GATHER <= first_pass {
                tokio::task::yield_now().await;
                self.take_ready(rx);
                self.drain();
                self.replicator.note_fill();
                now = self.clock.now();
            }
        }
        // What the first pass took for connections it had written, or another share's task
        // writes.
        for i in total..self.corks.len() {
            reported |= self.write_entry(now, i);
        }
        self.corks.clear();
        reported
    }

    /// Write entry `i` of the staged frames and report it to the hub; whether anything was written.
    fn write_entry(&mut self, now: switchboard_hub::Instant, i: usize) -> bool {
        let conn = self.corks.conn(i);
        let Some(link) = self.links.get(&conn) else {
            self.corks.discard(i);
            return false;
        };
        match self.corks.write(i, &link.outbox) {
            Some(bytes @ 1..) => {
                let _ = self.hub.handle_flushed(now, conn, bytes);
                true
            }
            _ => false,
        }
    }

    /// Write what is staged for `conn` now, ahead of what the hub task does to it next (a
    /// close).
    fn write_staged(&mut self, now: switchboard_hub::Instant, conn: ConnectionHandle) {
        if let Some(i) = self.corks.index_of(conn, conn.slot()) {
            self.write_entry(now, i);
        }
    }

    /// Close `conn` from the server side. The hub forgets it as it forgets a connection whose
    /// peer left (its rooms, its v2 session, what the protocol tells the others), and its
    /// outbox sends the close frame after whatever is queued. (`DynHub` has no `close` of one
    /// connection; the reader's later `Closed` report finds nothing to do.)
    fn close_one(
        &mut self,
        now: switchboard_hub::Instant,
        conn: ConnectionHandle,
        code: CloseCode,
        reason: &str,
    ) {
        self.write_staged(now, conn);
        if let Some(link) = self.links.remove(&conn) {
            let _ = self.hub.handle_close(now, conn);
            link.outbox.close(code, reason);
        }
    }
}

/// Write a share of a drain's connections on another worker, and report what went out.
async fn uncork_share(
    share: Vec<(ConnectionHandle, Arc<Outbox>)>,
    loopback: mpsc::WeakSender<Command>,
) {
    let written: Vec<_> = share
        .iter()
        .map(|(conn, outbox)| (*conn, outbox.uncork()))
        .filter(|&(_, bytes)| bytes > 0)
        .collect();
    if let (false, Some(tx)) = (written.is_empty(), loopback.upgrade()) {
        let _ = tx.send(Command::Flushed(written)).await;
    }
}
