//! The hub task: one tokio task owns one [`Hub`] and is its only caller.
//!
//! Connection tasks and HTTP handlers talk to it through a bounded command channel
//! ([`HubHandle`]); it answers with per-connection outboxes. The hub's byte accounting bounds
//! each outbox: a frame is only put in an outbox when the connection's unflushed bytes stay under
//! `max_queued_bytes`, and the writer reports what it flushed. So the outbox channel, although
//! unbounded in message count, never holds more than that many bytes of frames (plus a ping and
//! a close).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hashbrown::HashMap;
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Frame, HttpRequest, HttpResponse, Hub, Instant, OpenError,
    OpenInfo, Output, Protocol, Publication, Stats,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Commands queued to the hub task; a full queue makes the sender wait (backpressure).
pub const COMMAND_QUEUE: usize = 4096;

/// The wall clock, as the hub takes it.
pub fn now() -> Instant {
    Instant::from(SystemTime::now())
}

/// What a connection's writer must do next.
#[derive(Debug)]
pub enum Out {
    /// Write a text frame.
    Frame(Utf8Bytes),
    /// Send a WebSocket ping.
    Ping,
    /// Send a close frame and stop.
    Close(CloseCode, String),
}

/// A connection's side of the hub: its handle, its outbox, and the signal the hub raises when it
/// closes the connection (so a writer stuck on a client that does not read can give up).
#[derive(Debug)]
pub struct Opened {
    /// The hub's handle for this connection.
    pub handle: ConnectionHandle,
    /// Frames to write, in order.
    pub outbox: mpsc::UnboundedReceiver<Out>,
    /// Raised when the hub closed the connection.
    pub closed: Arc<Notify>,
    /// Flushed bytes are reported to the hub once at least this many have accumulated (or the
    /// outbox ran dry), so a stream of small frames costs one hub command per batch, not per
    /// frame. The hub may therefore over-count a connection's queue by less than this.
    pub report_every: usize,
}

/// What a hub task hands to a cluster backplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// A local publication to carry to the other nodes.
    Publish(Publication),
    /// A room got its first local member: start receiving it from other nodes.
    RoomOpened(String),
    /// A room lost its last local member: stop receiving it.
    RoomClosed(String),
}

enum Command {
    Open(OpenInfo, oneshot::Sender<Result<Opened, OpenError>>),
    Frame(ConnectionHandle, Frame),
    Activity(ConnectionHandle),
    Flushed(ConnectionHandle, usize),
    Closed(ConnectionHandle),
    Http(Box<HttpRequest>, oneshot::Sender<Option<HttpResponse>>),
    Publish(Publication, Option<oneshot::Sender<usize>>),
    Remote(Publication),
    Stats(oneshot::Sender<Stats>),
    Rooms(oneshot::Sender<Vec<String>>),
    CloseAll(CloseCode, &'static str, oneshot::Sender<()>),
}

/// The hub task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hub task has stopped")]
pub struct HubGone;

/// A cloneable handle to a running hub task.
#[derive(Debug, Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    name: &'static str,
}

struct Entry {
    outbox: mpsc::UnboundedSender<Out>,
    closed: Arc<Notify>,
}

/// Start a hub task for `protocol`. `replicate`, if given, receives every local publication and
/// room change (for a cluster backplane; `config.replicate` is turned on); when it is full a
/// publication is not replicated and counted, and a room change is left for the backplane's
/// periodic reconciliation with [`HubHandle::rooms`].
pub fn spawn_hub(
    mut config: Config,
    protocol: Box<dyn Protocol + Send>,
    replicate: Option<mpsc::Sender<Replication>>,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let name = protocol.name();
    config.replicate = replicate.is_some();
    let hub = Hub::new(config, protocol, now());
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let task = tokio::spawn(run(hub, rx, replicate));
    (HubHandle { tx, name }, task)
}

impl HubHandle {
    /// The protocol's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HubGone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    async fn tell(&self, cmd: Command) -> Result<(), HubGone> {
        self.tx.send(cmd).await.map_err(|_| HubGone)
    }

    /// Register a new connection; the protocol's greeting is already in the outbox.
    pub async fn open(&self, info: OpenInfo) -> Result<Result<Opened, OpenError>, HubGone> {
        self.call(|tx| Command::Open(info, tx)).await
    }

    /// A frame arrived.
    pub async fn frame(&self, conn: ConnectionHandle, frame: Frame) -> Result<(), HubGone> {
        self.tell(Command::Frame(conn, frame)).await
    }

    /// The peer showed life without a message (a pong).
    pub async fn activity(&self, conn: ConnectionHandle) -> Result<(), HubGone> {
        self.tell(Command::Activity(conn)).await
    }

    /// The writer put `bytes` of frames on the socket.
    pub async fn flushed(&self, conn: ConnectionHandle, bytes: usize) -> Result<(), HubGone> {
        self.tell(Command::Flushed(conn, bytes)).await
    }

    /// The peer closed or the socket failed.
    pub async fn closed(&self, conn: ConnectionHandle) -> Result<(), HubGone> {
        self.tell(Command::Closed(conn)).await
    }

    /// Ask the protocol to answer an HTTP request.
    pub async fn http(&self, req: HttpRequest) -> Result<Option<HttpResponse>, HubGone> {
        self.call(|tx| Command::Http(Box::new(req), tx)).await
    }

    /// Publish from the server side; returns the number of local deliveries.
    pub async fn publish(&self, publication: Publication) -> Result<usize, HubGone> {
        self.call(|tx| Command::Publish(publication, Some(tx)))
            .await
    }

    /// Inject a publication from another node (never replicated again).
    pub async fn remote(&self, publication: Publication) -> Result<(), HubGone> {
        self.tell(Command::Remote(publication)).await
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
}

/// Turns consecutive transmits of one publication into one UTF-8 check: every recipient of a
/// publication gets the same buffer, so it is validated once, not once per recipient.
#[derive(Default)]
struct TextCache {
    last: Option<(Bytes, Utf8Bytes)>,
}

impl TextCache {
    fn text(&mut self, payload: Bytes) -> Option<Utf8Bytes> {
        if let Some((b, t)) = &self.last {
            if b.as_ptr() == payload.as_ptr() && b.len() == payload.len() {
                return Some(t.clone());
            }
        }
        let text = Utf8Bytes::try_from(payload.clone()).ok()?;
        self.last = Some((payload, text.clone()));
        Some(text)
    }
}

async fn run(
    mut hub: Hub,
    mut rx: mpsc::Receiver<Command>,
    replicate: Option<mpsc::Sender<Replication>>,
) {
    let mut conns: HashMap<ConnectionHandle, Entry> = HashMap::default();
    let mut cache = TextCache::default();
    let mut replicate_dropped: u64 = 0;
    loop {
        let sleep = hub.poll_timeout().map(|t| {
            let wait = t.saturating_since(now());
            tokio::time::sleep(wait.max(Duration::from_millis(1)))
        });
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                apply(&mut hub, &mut conns, cmd);
                // Take what else is already waiting before draining, so a burst costs one drain.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(cmd) => apply(&mut hub, &mut conns, cmd),
                        Err(_) => break,
                    }
                }
            }
            _ = async { sleep.expect("guarded by the if below").await }, if sleep.is_some() => {
                hub.handle_timeout(now());
            }
        }
        while let Some(out) = hub.poll_output() {
            match out {
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    let Some(entry) = conns.get(&connection) else {
                        continue;
                    };
                    match cache.text(payload) {
                        Some(text) => {
                            let _ = entry.outbox.send(Out::Frame(text));
                        }
                        None => {
                            tracing::error!(
                                system = hub.protocol_name(),
                                "dropped a non-UTF-8 text frame"
                            );
                        }
                    }
                }
                Output::Ping { connection } => {
                    if let Some(entry) = conns.get(&connection) {
                        let _ = entry.outbox.send(Out::Ping);
                    }
                }
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    if let Some(entry) = conns.remove(&connection) {
                        let _ = entry.outbox.send(Out::Close(code, reason.into_owned()));
                        entry.closed.notify_one();
                    }
                }
                Output::Replicate(p) => {
                    if let Some(tx) = &replicate {
                        if tx.try_send(Replication::Publish(p)).is_err() {
                            hub.handle_replication_dropped(1);
                            replicate_dropped += 1;
                            if replicate_dropped.is_power_of_two() {
                                tracing::warn!(
                                    replicate_dropped,
                                    "backplane queue full; publication not replicated"
                                );
                            }
                        }
                    }
                }
                Output::RoomOpened(room) => {
                    if let Some(tx) = &replicate {
                        let _ = tx.try_send(Replication::RoomOpened(room));
                    }
                }
                Output::RoomClosed(room) => {
                    if let Some(tx) = &replicate {
                        let _ = tx.try_send(Replication::RoomClosed(room));
                    }
                }
            }
        }
        cache.last = None;
    }
}

fn apply(hub: &mut Hub, conns: &mut HashMap<ConnectionHandle, Entry>, cmd: Command) {
    let t = now();
    match cmd {
        Command::Open(info, reply) => {
            // A sixteenth of the queue budget, at most 16 KiB.
            let report_every = (hub.config().limits.max_queued_bytes / 16).clamp(1, 16 * 1024);
            let result = hub.handle_open(t, info).map(|handle| {
                let (tx, outbox) = mpsc::unbounded_channel();
                let closed = Arc::new(Notify::new());
                conns.insert(
                    handle,
                    Entry {
                        outbox: tx,
                        closed: closed.clone(),
                    },
                );
                Opened {
                    handle,
                    outbox,
                    closed,
                    report_every,
                }
            });
            let _ = reply.send(result);
        }
        // Stale handles (the hub closed the connection meanwhile) are expected and ignored.
        Command::Frame(conn, frame) => {
            let _ = hub.handle_frame(t, conn, frame);
        }
        Command::Activity(conn) => {
            let _ = hub.handle_activity(t, conn);
        }
        Command::Flushed(conn, bytes) => {
            let _ = hub.handle_flushed(t, conn, bytes);
        }
        Command::Closed(conn) => {
            conns.remove(&conn);
            let _ = hub.handle_close(t, conn);
        }
        Command::Http(req, reply) => {
            let _ = reply.send(hub.handle_http(t, &req));
        }
        Command::Publish(p, reply) => {
            let n = hub.publish(t, p);
            if let Some(reply) = reply {
                let _ = reply.send(n);
            }
        }
        Command::Remote(p) => {
            hub.handle_remote(t, p);
        }
        Command::Stats(reply) => {
            let _ = reply.send(hub.stats());
        }
        Command::Rooms(reply) => {
            let _ = reply.send(hub.rooms().map(|(r, _)| r.to_string()).collect());
        }
        Command::CloseAll(code, reason, reply) => {
            hub.close_all(t, code, reason);
            let _ = reply.send(());
        }
    }
}
