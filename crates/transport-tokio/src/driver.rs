//! The hub task: one tokio task owns one [`Hub`] and is its only caller.
//!
//! Connection tasks and HTTP handlers talk to it through a bounded command channel
//! ([`HubHandle`]). Each connection registers its [`Outbox`], and the hub task writes the hub's
//! output straight into it: a fan-out is one `writev` per recipient from this task, with no
//! per-delivery hand-off to another task. The hub's byte accounting bounds each outbox: a frame
//! reaches an outbox only while the connection's unflushed bytes stay under `max_queued_bytes`;
//! a frame written at once is counted as flushed at once, a queued one when its flusher reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::Either;
use hashbrown::HashMap;
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Frame, HttpRequest, HttpResponse, Hub, Instant, OpenError,
    OpenInfo, Output, Protocol, Publication, Stats,
};
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{Corked, Outbox};

/// Commands queued to the hub task; a full queue makes the sender wait (backpressure).
pub const COMMAND_QUEUE: usize = 4096;

/// The wall clock, as the hub takes it.
pub fn now() -> Instant {
    Instant::from(SystemTime::now())
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

/// A connection the hub accepted.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its handle.
    pub handle: ConnectionHandle,
    /// The id its protocol gave it (for logs).
    pub client_id: String,
    /// When it was accepted.
    pub at: std::time::Instant,
}

enum Command {
    Open(
        OpenInfo,
        Arc<Outbox>,
        oneshot::Sender<Result<Opened, OpenError>>,
    ),
    Frame(ConnectionHandle, Frame),
    Activity(ConnectionHandle),
    Flushed(ConnectionHandle, usize),
    FlushedMany(Vec<(ConnectionHandle, usize)>),
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

/// What [`HubHandle`]'s one-way commands return: ready at once unless the queue was full.
type Told = Either<
    std::future::Ready<Result<(), HubGone>>,
    Pin<Box<dyn Future<Output = Result<(), HubGone>> + Send>>,
>;

/// A cloneable handle to a running hub task.
#[derive(Debug, Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    name: &'static str,
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

    /// Register a new connection writing to `outbox`; the protocol's greeting is already in it
    /// (or on the socket) when this returns.
    pub async fn open(
        &self,
        info: OpenInfo,
        outbox: Arc<Outbox>,
    ) -> Result<Result<Opened, OpenError>, HubGone> {
        self.call(|tx| Command::Open(info, outbox, tx)).await
    }

    /// A frame arrived.
    pub fn frame(
        &self,
        conn: ConnectionHandle,
        frame: Frame,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Frame(conn, frame))
    }

    /// The peer showed life without a message (a pong).
    pub fn activity(
        &self,
        conn: ConnectionHandle,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Activity(conn))
    }

    /// A connection's flusher put `bytes` of queued frames on the socket.
    pub fn flushed(
        &self,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Flushed(conn, bytes))
    }

    /// The peer closed or the socket failed.
    pub fn closed(
        &self,
        conn: ConnectionHandle,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Closed(conn))
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
    pub fn remote(
        &self,
        publication: Publication,
    ) -> impl Future<Output = Result<(), HubGone>> + Send + 'static {
        self.tell(Command::Remote(publication))
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
    last: Option<(Bytes, bool)>,
}

impl TextCache {
    fn is_text(&mut self, payload: &Bytes) -> bool {
        if let Some((b, valid)) = &self.last {
            if b.as_ptr() == payload.as_ptr() && b.len() == payload.len() {
                return *valid;
            }
        }
        let valid = std::str::from_utf8(payload).is_ok();
        self.last = Some((payload.clone(), valid));
        valid
    }
}

async fn run(
    mut hub: Hub,
    mut rx: mpsc::Receiver<Command>,
    replicate: Option<mpsc::Sender<Replication>>,
) {
    let mut conns: HashMap<ConnectionHandle, Arc<Outbox>> = HashMap::default();
    let mut cache = TextCache::default();
    let mut corked: Vec<(ConnectionHandle, Arc<Outbox>)> = Vec::new();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
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
            _ = async { sleep.expect("guarded by the if below").await }, if sleep.is_some() => {}
        }
        // Whichever woke us: commands arriving more often than the sleep's 1 ms floor would
        // otherwise starve the timers (heartbeats, idle closes, throttled connections resuming).
        if hub.poll_timeout().is_some_and(|deadline| deadline <= now()) {
            hub.handle_timeout(now());
        }
        let t = now();
        while let Some(out) = hub.poll_output() {
            match out {
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    let Some(outbox) = conns.get(&connection) else {
                        continue;
                    };
                    if !cache.is_text(&payload) {
                        tracing::error!(
                            system = hub.protocol_name(),
                            "dropped a non-UTF-8 text frame"
                        );
                        continue;
                    }
                    if outbox.frame_corked(payload) == Corked::First {
                        corked.push((connection, outbox.clone()));
                    }
                }
                Output::Ping { connection } => {
                    if let Some(outbox) = conns.get(&connection) {
                        outbox.ping();
                    }
                }
                Output::PauseReading { connection, until } => {
                    if let Some(outbox) = conns.get(&connection) {
                        let wait = until.saturating_since(t);
                        outbox.pause_reading(tokio::time::Instant::now() + wait);
                    }
                }
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    if let Some(outbox) = conns.remove(&connection) {
                        outbox.close(code, &reason);
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
        // One `writev` per connection for all the frames this drain gave it.
        // A large fan-out is split over the runtime's workers: the kernel's send is most of a
        // delivery's cost, and sends to different sockets run in parallel.
        let shares = workers.min(corked.len() / PARALLEL_SHARE).max(1);
        if shares > 1 {
            let per = corked.len().div_ceil(shares);
            while corked.len() > per {
                let share = corked.split_off(corked.len() - per);
                tokio::spawn(uncork_share(share));
            }
        }
        for (connection, outbox) in corked.drain(..) {
            let bytes = outbox.uncork();
            if bytes > 0 {
                let _ = hub.handle_flushed(t, connection, bytes);
            }
        }
        cache.last = None;
    }
}

/// Fewest connections a share of a split fan-out gets: below it, a task hand-off costs more
/// than the sends it moves to another core.
const PARALLEL_SHARE: usize = 256;

/// Write a share of a drain's connections on another worker, and report what went out.
async fn uncork_share(share: Vec<(ConnectionHandle, Arc<Outbox>)>) {
    let written: Vec<_> = share
        .iter()
        .map(|(conn, outbox)| (*conn, outbox.uncork()))
        .filter(|&(_, bytes)| bytes > 0)
        .collect();
    if let (Some((_, outbox)), false) = (share.first(), written.is_empty()) {
        let _ = outbox.hub().tell(Command::FlushedMany(written)).await;
    }
}

fn apply(hub: &mut Hub, conns: &mut HashMap<ConnectionHandle, Arc<Outbox>>, cmd: Command) {
    let t = now();
    match cmd {
        Command::Open(info, outbox, reply) => {
            let result = hub.handle_open(t, info).map(|handle| {
                // A flusher reports a sixteenth of the queue budget at a time, at most 16 KiB.
                let report_every = (hub.config().limits.max_queued_bytes / 16).clamp(1, 16 * 1024);
                outbox.attach(handle, report_every);
                conns.insert(handle, outbox);
                Opened {
                    handle,
                    client_id: hub
                        .connection(handle)
                        .map(|c| c.client_id.to_owned())
                        .unwrap_or_default(),
                    at: std::time::Instant::now(),
                }
            });
            let _ = reply.send(result);
        }
        // Stale handles (the hub closed the connection meanwhile) are expected and ignored.
        Command::Frame(conn, frame) => {
            let _ = hub.handle_frame(t, conn, frame);
            if let Some(outbox) = conns.get(&conn) {
                outbox.processed_by_hub();
            }
        }
        Command::Activity(conn) => {
            let _ = hub.handle_activity(t, conn);
            if let Some(outbox) = conns.get(&conn) {
                outbox.processed_by_hub();
            }
        }
        Command::Flushed(conn, bytes) => {
            let _ = hub.handle_flushed(t, conn, bytes);
        }
        Command::FlushedMany(written) => {
            for (conn, bytes) in written {
                let _ = hub.handle_flushed(t, conn, bytes);
            }
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
