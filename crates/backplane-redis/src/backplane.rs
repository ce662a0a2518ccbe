//! The backplane's three tasks: outbound (hub → Redis), subscriber (Redis → queue) and injector
//! (queue → hub).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hashbrown::HashSet;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisResult};
use switchboard_hub::history::{Epoch, HistoryError as Unavailable, Position};
use switchboard_hub::{Publication, Target};
use switchboard_runtime::backplane::Replication;
use switchboard_runtime::metrics::Exposition;
use switchboard_runtime::HubHandle;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::history::{positioned, HistoryKeys, RedisHistory};
use crate::interest::{Gaps, Interest};
use crate::node::random_u64;
use crate::node::NodeId;
use crate::status::{self, Shared, Status};
use crate::wire;

/// Capacity of the queue from the Redis subscriber to the hub; when full, further remote
/// publications are dropped and counted in [`Status::dropped_inbound`].
pub const INBOUND_QUEUE: usize = 4096;
/// How often the wanted room channels are reconciled with the hub's rooms, and how often each
/// idle Redis connection is pinged to notice a dead peer.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Limit on establishing one Redis connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit on one Redis round trip (PUBLISH batch, SUBSCRIBE, PING).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most publications sent to Redis in one pipelined round trip.
const BATCH: usize = 256;
/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const SUBSCRIBE_CHUNK: usize = 512;

/// The Redis channel carrying `system`'s publications to everyone and to users.
pub fn all_channel(system: &str) -> String {
    format!("sb:{system}:all")
}

/// The Redis channel carrying `system`'s publications to `room`.
pub fn room_channel(system: &str, room: &str) -> String {
    format!("sb:{system}:room:{room}")
}

/// How a backplane runs, beyond its Redis and its hub.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The hub's history is shared through this Redis
    /// (`switchboard_hub::HistoryConfig::shared`): the backplane answers the hub's appends and
    /// fetches ([`Replication::Append`], [`Replication::Fetch`]) with a [`RedisHistory`]
    /// keeping streams as these keys say, and hands every positioned publication from the
    /// channels to the hub, its own included. While Redis is unreachable they are answered
    /// unavailable at once.
    pub history: Option<HistoryKeys>,
    /// Receive every room's channel through one pattern subscription (`sb:<system>:room:*`)
    /// instead of subscribing to each room when it gets its first local member. A join then
    /// never races its node's subscription (a publication made on another node right after a
    /// join is never missed), at the cost of every node receiving every room's publications.
    pub every_room: bool,
}

/// Why a backplane could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis URL does not parse (e.g. not `redis://host:port/`).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
}

/// Everything the tasks share.
struct Ctx {
    system: &'static str,
    node: NodeId,
    all_channel: String,
    shared: Arc<Shared>,
    interest: Mutex<Interest>,
    /// Raised by the outbound task when [`Interest`] changed.
    interest_changed: Notify,
    /// Raised by the subscriber after (re)subscribing: the outbound task reconciles rooms.
    resync: Notify,
    /// Raised by the subscriber when its connection failed: the outbound task checks its own
    /// (an idle publishing connection would otherwise look up until its next keepalive).
    check_publisher: Notify,
    /// How the shared history keeps streams, if the hub's history is shared.
    history: Option<HistoryKeys>,
    /// Receive every room's channel (one pattern subscription), not only the joined ones.
    every_room: bool,
    /// Set when a positioned publication could not be queued to the hub: the injector asks
    /// the hub to check its streams.
    check_history: std::sync::atomic::AtomicBool,
}

impl Ctx {
    fn interest(&self) -> MutexGuard<'_, Interest> {
        // Interest is a pair of sets updated in single calls; a panic cannot leave it torn.
        self.interest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cheap, cloneable view of one backplane's state, for `/health` and `/metrics` handlers.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    system: &'static str,
    node: NodeId,
    shared: Arc<Shared>,
}

impl StatusHandle {
    /// A snapshot of the counters and connection state.
    pub fn status(&self) -> Status {
        status::snapshot(self.system, self.node, &self.shared)
    }

    /// Append this backplane's Prometheus samples (with `# HELP`/`# TYPE` lines) to `out`. For
    /// several systems in one exposition use [`crate::render_prometheus`] instead, which writes
    /// each family header once.
    pub fn render_prometheus(&self, out: &mut Exposition) {
        status::render_prometheus(&[self.status()], out);
    }
}

/// One system's connection to the cluster: publishes the local hub's publications to Redis and
/// injects the other nodes' into the local hub. Dropping it stops its tasks.
#[derive(Debug)]
pub struct Backplane {
    status: StatusHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Backplane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Backplane {
    /// Start the backplane of `system` on this node. Must be called inside a Tokio runtime.
    ///
    /// `hub` is the system's hub and `replication` the receiver whose sender the hub task was
    /// started with. It never fails because Redis is unreachable: it serves on, dropping and
    /// counting what it cannot send, and keeps retrying (100 ms doubling to 5 s, jittered).
    /// Only a malformed `redis_url` is an error.
    pub fn spawn(
        redis_url: &str,
        node_id: NodeId,
        system: &'static str,
        hub: HubHandle,
        replication: mpsc::Receiver<Replication>,
    ) -> Result<Backplane, Error> {
        Self::spawn_with(
            redis_url,
            node_id,
            system,
            hub,
            replication,
            Options::default(),
        )
    }

    /// [`Backplane::spawn`] with [`Options`]: a history shared through this Redis, and which
    /// room channels to receive.
    pub fn spawn_with(
        redis_url: &str,
        node_id: NodeId,
        system: &'static str,
        hub: HubHandle,
        replication: mpsc::Receiver<Replication>,
        options: Options,
    ) -> Result<Backplane, Error> {
        let info = redis_url
            .into_connection_info()
            .map_err(Error::InvalidUrl)?;
        // Small messages, latency first: no Nagle delay on either connection.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(tcp)).map_err(Error::InvalidUrl)?;
        let shared = Arc::new(Shared::default());
        let ctx = Arc::new(Ctx {
            system,
            node: node_id,
            all_channel: all_channel(system),
            shared: shared.clone(),
            interest: Mutex::new(Interest::default()),
            interest_changed: Notify::new(),
            resync: Notify::new(),
            check_publisher: Notify::new(),
            history: options.history,
            every_room: options.every_room,
            check_history: std::sync::atomic::AtomicBool::new(false),
        });
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let tasks = vec![
            tokio::spawn(outbound(
                ctx.clone(),
                client.clone(),
                replication,
                hub.clone(),
            )),
            tokio::spawn(subscriber(ctx.clone(), client, inbound_tx)),
            tokio::spawn(injector(ctx, hub, inbound_rx)),
        ];
        tracing::info!(system, node = %node_id, "backplane started");
        Ok(Backplane {
            status: StatusHandle {
                system,
                node: node_id,
                shared,
            },
            tasks,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.status.node
    }

    /// The system it serves.
    pub fn system(&self) -> &'static str {
        self.status.system
    }

    /// A snapshot of the counters and connection state.
    pub fn status(&self) -> Status {
        self.status.status()
    }

    /// A handle that reads the status after the backplane has been moved elsewhere.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Append this backplane's Prometheus samples to `out` (see [`StatusHandle::render_prometheus`]).
    pub fn render_prometheus(&self, out: &mut Exposition) {
        self.status.render_prometheus(out);
    }

    /// Stop the tasks and wait for them to end. Publications still queued are dropped.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        self.status.shared.publisher_up.store(false, Relaxed);
        self.status.shared.subscriber_up.store(false, Relaxed);
    }
}

type Connecting = Pin<Box<dyn Future<Output = RedisResult<MultiplexedConnection>> + Send>>;

fn connect_publisher(client: redis::Client) -> Connecting {
    Box::pin(async move {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    })
}

/// The publishing side: drains the hub's replication channel at all times. While the
/// connection is up, publications go out in pipelined batches; while it is down they are
/// dropped and counted, and a reconnect is attempted in the background with backoff.
async fn outbound(
    ctx: Arc<Ctx>,
    client: redis::Client,
    mut rx: mpsc::Receiver<Replication>,
    hub: HubHandle,
) {
    let shared = &*ctx.shared;
    let mut conn: Option<MultiplexedConnection> = None;
    let mut engine: Option<RedisHistory> = None;
    let mut connecting: Option<Connecting> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut backoff = Backoff::new(random_u64());
    let mut ever_connected = false;
    let mut busy_since_tick = false;
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let mut requests = Vec::new();
    loop {
        if conn.is_none() && connecting.is_none() && tokio::time::Instant::now() >= retry_at {
            connecting = Some(connect_publisher(client.clone()));
        }
        let mut lost: Option<redis::RedisError> = None;
        tokio::select! {
            r = async { connecting.as_mut().expect("guarded by the condition").await },
                if connecting.is_some() =>
            {
                connecting = None;
                match r {
                    Ok(c) => {
                        engine = ctx.history.clone().map(|keys| RedisHistory::new(keys, c.clone()));
                        conn = Some(c);
                        backoff.reset();
                        shared.publisher_up.store(true, Relaxed);
                        if ever_connected {
                            Shared::add(&shared.reconnects, 1);
                            // Fetches of holes failed while it was down: the hub asks again.
                            if ctx.history.is_some() && hub.history_check().await.is_err() {
                                break;
                            }
                        }
                        ever_connected = true;
                        tracing::info!(system = ctx.system, "backplane publisher connected");
                    }
                    Err(e) => {
                        shared.error("publisher connect", &e);
                        retry_at = tokio::time::Instant::now() + backoff.next_delay();
                    }
                }
            }
            _ = tokio::time::sleep_until(retry_at), if conn.is_none() && connecting.is_none() => {}
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break; // The hub task is gone.
                }
                busy_since_tick = true;
                if let Err(e) = send_batch(&ctx, &mut batch, &mut requests, conn.as_mut(), &mut seq).await {
                    lost = Some(e);
                }
                if let Err(e) = answer_history(&ctx, &mut requests, engine.as_ref(), &hub).await {
                    lost.get_or_insert(e);
                }
            }
            _ = tick.tick() => {
                reconcile(&ctx, &hub).await;
                if let Some(c) = conn.as_mut() {
                    if !busy_since_tick {
                        if let Err(e) = redis::cmd("PING").query_async::<String>(c).await {
                            lost = Some(e);
                        }
                    }
                }
                busy_since_tick = false;
            }
            _ = ctx.resync.notified() => reconcile(&ctx, &hub).await,
            _ = ctx.check_publisher.notified() => {
                if let Some(c) = conn.as_mut() {
                    if let Err(e) = redis::cmd("PING").query_async::<String>(c).await {
                        lost = Some(e);
                    }
                }
            }
        }
        if let Some(e) = lost {
            shared.error("publisher", &e);
            conn = None;
            engine = None;
            shared.publisher_up.store(false, Relaxed);
            retry_at = tokio::time::Instant::now() + backoff.next_delay();
        }
    }
    shared.publisher_up.store(false, Relaxed);
}

/// Apply room events and publish publications of one batch. Returns the Redis error if the
/// connection failed (the batch's publications are then counted as dropped).
async fn send_batch(
    ctx: &Ctx,
    batch: &mut Vec<Replication>,
    requests: &mut Vec<Replication>,
    conn: Option<&mut MultiplexedConnection>,
    seq: &mut u64,
) -> RedisResult<()> {
    let shared = &*ctx.shared;
    let mut pipe = redis::pipe();
    let mut count = 0u64;
    let mut dropped = 0u64;
    let mut rooms_changed = false;
    for r in batch.drain(..) {
        match r {
            Replication::RoomOpened(room) => {
                ctx.interest().open(room);
                rooms_changed = true;
            }
            Replication::RoomClosed(room) => {
                ctx.interest().close(&room);
                rooms_changed = true;
            }
            r @ (Replication::Append { .. } | Replication::Fetch { .. }) => requests.push(r),
            Replication::Publish(p) => {
                let (channel, n) = match &p.target {
                    Target::All | Target::User(_) => {
                        *seq += 1;
                        (ctx.all_channel.clone(), *seq)
                    }
                    Target::Room(room) => (room_channel(ctx.system, room), 0),
                    _ => continue, // The hub never replicates a connection's own frames.
                };
                if conn.is_none() {
                    dropped += 1;
                    continue;
                }
                match wire::encode(ctx.node, n, &p, None) {
                    Ok(message) => {
                        pipe.cmd("PUBLISH").arg(channel).arg(&message[..]).ignore();
                        count += 1;
                    }
                    Err(e) => shared.error("encode", &e),
                }
            }
            _ => {}
        }
    }
    if rooms_changed {
        ctx.interest_changed.notify_one();
    }
    Shared::add(&shared.dropped_while_down, dropped);
    let Some(conn) = conn else { return Ok(()) };
    if count == 0 {
        return Ok(());
    }
    match pipe.query_async::<()>(conn).await {
        Ok(()) => {
            Shared::add(&shared.published, count);
            Ok(())
        }
        Err(e) => {
            // Redis may have delivered some of them; we cannot know which, so all count as lost.
            Shared::add(&shared.dropped_while_down, count);
            Err(e)
        }
    }
}

/// Answer one batch's requests to the shared history: appends in order per stream (each
/// publishes its publication with its position on the stream's channel), fetches in any order.
/// Without a connection they are answered unavailable at once, never left waiting. Returns the
/// Redis error if the connection failed.
async fn answer_history(
    ctx: &Ctx,
    requests: &mut Vec<Replication>,
    engine: Option<&RedisHistory>,
    hub: &HubHandle,
) -> RedisResult<()> {
    if requests.is_empty() {
        return Ok(());
    }
    let shared = &*ctx.shared;
    let mut appends = Vec::new();
    let mut fetches = Vec::new();
    for r in requests.drain(..) {
        match r {
            Replication::Append {
                stream,
                entry,
                target,
            } => appends.push((stream, entry, target)),
            Replication::Fetch { id, stream, since } => fetches.push((id, stream, since)),
            _ => {}
        }
    }
    let Some(engine) = engine else {
        Shared::add(&shared.dropped_while_down, appends.len() as u64);
        for (stream, ..) in appends {
            let _ = hub.appended(stream, Err(Unavailable::Unavailable)).await;
        }
        for (id, ..) in fetches {
            let _ = hub.fetched(id, Err(Unavailable::Unavailable)).await;
        }
        return Ok(());
    };
    // Sent in this order on one multiplexed connection, so Redis runs them in this order.
    let appended = futures_util::future::join_all(appends.iter().map(|(stream, entry, target)| {
        let publication = Publication {
            target: target.clone(),
            except: None,
            tags: entry.tags.clone(),
            payload: entry.payload.clone(),
            kept: true,
        };
        let channel = match target {
            Target::Room(room) => room_channel(ctx.system, room),
            _ => ctx.all_channel.clone(),
        };
        let message = wire::encode(ctx.node, 0, &publication, entry.publisher);
        async move {
            let message =
                message.map_err(|_| crate::history::HistoryError::Malformed("not replicable"))?;
            let candidate = Epoch(random_u64());
            engine
                .append(stream, entry, candidate, Some((&channel, &message)))
                .await
        }
    }));
    let fetched = futures_util::future::join_all(
        fetches
            .iter()
            .map(|(_, stream, since)| engine.fetch(stream, *since, Epoch(random_u64()))),
    );
    let (appended, fetched) = futures_util::future::join(appended, fetched).await;
    let mut lost = None;
    let mut unavailable = |e: crate::history::HistoryError| {
        shared.error("history", &e);
        if let crate::history::HistoryError::Redis(e) = e {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                lost.get_or_insert(e);
            }
        }
        Unavailable::Unavailable
    };
    let mut kept = 0;
    for ((stream, ..), result) in appends.into_iter().zip(appended) {
        kept += u64::from(result.is_ok());
        let _ = hub.appended(stream, result.map_err(&mut unavailable)).await;
    }
    for ((id, ..), result) in fetches.into_iter().zip(fetched) {
        let _ = hub.fetched(id, result.map_err(&mut unavailable)).await;
    }
    Shared::add(&shared.published, kept);
    lost.map_or(Ok(()), Err)
}

/// Make the wanted rooms equal the hub's rooms (room events may have been dropped).
async fn reconcile(ctx: &Ctx, hub: &HubHandle) {
    let Ok(rooms) = hub.rooms().await else {
        return; // The hub is stopping; the replication channel will close too.
    };
    let changed = ctx.interest().replace(rooms);
    if changed > 0 {
        tracing::debug!(
            system = ctx.system,
            changed,
            "backplane reconciled room subscriptions"
        );
        ctx.interest_changed.notify_one();
    }
}

/// How a subscriber session ended.
enum End {
    /// The local hub (injector) is gone: stop for good.
    HubGone,
    /// The Redis connection failed: reconnect.
    Lost(String),
}

/// The receiving side: one dedicated pub/sub connection, re-established with backoff.
async fn subscriber(ctx: Arc<Ctx>, client: redis::Client, inbound: mpsc::Sender<Inbound>) {
    let shared = &*ctx.shared;
    let mut backoff = Backoff::new(random_u64());
    let mut ever_connected = false;
    let mut gaps = Gaps::default();
    loop {
        let end = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                session(
                    &ctx,
                    &mut sink,
                    &mut stream,
                    &inbound,
                    &mut gaps,
                    &mut ever_connected,
                    &mut backoff,
                )
                .await
            }
            Ok(Err(e)) => End::Lost(format!("connect: {e}")),
            Err(_) => End::Lost("connect: timed out".into()),
        };
        shared.subscriber_up.store(false, Relaxed);
        shared.room_subscriptions.store(0, Relaxed);
        match end {
            End::HubGone => return,
            End::Lost(e) => shared.error("subscriber", &e),
        }
        ctx.check_publisher.notify_one();
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn within<T>(what: &str, f: impl Future<Output = RedisResult<T>>) -> Result<T, End> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(End::Lost(format!("{what}: {e}"))),
        Err(_) => Err(End::Lost(format!("{what}: timed out"))),
    }
}

async fn subscribe_rooms(
    ctx: &Ctx,
    sink: &mut PubSubSink,
    rooms: &[String],
    subscribe: bool,
) -> Result<(), End> {
    for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|r| room_channel(ctx.system, r)).collect();
        if subscribe {
            within("subscribe", sink.subscribe(&channels)).await?;
        } else {
            within("unsubscribe", sink.unsubscribe(&channels)).await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    ctx: &Ctx,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    inbound: &mpsc::Sender<Inbound>,
    gaps: &mut Gaps,
    ever_connected: &mut bool,
    backoff: &mut Backoff,
) -> End {
    let shared = &*ctx.shared;
    if let Err(end) = within("subscribe", sink.subscribe(&ctx.all_channel)).await {
        return end;
    }
    let rooms: Vec<String> = {
        let mut interest = ctx.interest();
        interest.clear_dirty();
        match ctx.every_room {
            true => Vec::new(),
            false => interest.desired().cloned().collect(),
        }
    };
    if ctx.every_room {
        let every = room_channel(ctx.system, "*");
        if let Err(end) = within("psubscribe", sink.psubscribe(every)).await {
            return end;
        }
    }
    if let Err(end) = subscribe_rooms(ctx, sink, &rooms, true).await {
        return end;
    }
    let mut subscribed: HashSet<String> = rooms.into_iter().collect();
    shared
        .room_subscriptions
        .store(subscribed.len() as u64, Relaxed);
    shared.subscriber_up.store(true, Relaxed);
    if *ever_connected {
        Shared::add(&shared.reconnects, 1);
        // Positioned publications may have gone by meanwhile: the hub fetches what it missed.
        if ctx.history.is_some() && inbound.send(Inbound::Check).await.is_err() {
            return End::HubGone;
        }
    }
    *ever_connected = true;
    backoff.reset();
    tracing::info!(
        system = ctx.system,
        rooms = subscribed.len(),
        "backplane subscriber connected"
    );
    // Rooms may have changed while we were away and their events been dropped: ask for a check.
    ctx.resync.notify_one();
    let mut keepalive = tokio::time::interval(RECONCILE_EVERY);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await; // The first tick is immediate.
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return End::Lost("connection closed".into());
                };
                let payload = msg.get_payload_bytes();
                // A shared history's publication comes with its position in front.
                let (position, bytes) = match positioned(payload) {
                    Some((p, rest)) if ctx.history.is_some() => (Some(p), rest),
                    _ => (None, payload),
                };
                match wire::decode(Bytes::copy_from_slice(bytes)) {
                    Err(e) => {
                        Shared::add(&shared.invalid, 1);
                        tracing::debug!(channel = msg.get_channel_name(), error = %e, "invalid backplane message");
                    }
                    // Our own, echoed back: only a positioned one means something here.
                    Ok(env) if env.origin == ctx.node && position.is_none() => {}
                    Ok(env) => {
                        let item = match position {
                            Some(position) => Inbound::Positioned {
                                from_here: env.origin == ctx.node,
                                position,
                                env,
                            },
                            None => {
                                Shared::add(&shared.missed, gaps.observe(env.origin, env.seq));
                                Inbound::Remote(env.publication)
                            }
                        };
                        match inbound.try_send(item) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(item)) => {
                                Shared::add(&shared.dropped_inbound, 1);
                                if matches!(item, Inbound::Positioned { .. }) {
                                    ctx.check_history.store(true, Relaxed);
                                }
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return End::HubGone,
                        }
                    }
                }
            }
            _ = ctx.interest_changed.notified(), if !ctx.every_room => {
                let (add, remove): (Vec<String>, Vec<String>) = {
                    let mut interest = ctx.interest();
                    let dirty = interest.take_dirty();
                    let add = dirty
                        .iter()
                        .filter(|r| interest.wants(r) && !subscribed.contains(*r))
                        .cloned()
                        .collect();
                    let remove = dirty
                        .into_iter()
                        .filter(|r| !interest.wants(r) && subscribed.contains(r))
                        .collect();
                    (add, remove)
                };
                if let Err(end) = subscribe_rooms(ctx, sink, &add, true).await {
                    return end;
                }
                subscribed.extend(add);
                if let Err(end) = subscribe_rooms(ctx, sink, &remove, false).await {
                    return end;
                }
                for r in &remove {
                    subscribed.remove(r);
                }
                shared.room_subscriptions.store(subscribed.len() as u64, Relaxed);
            }
            _ = keepalive.tick() => {
                if let Err(end) = within("ping", sink.ping::<String>()).await {
                    return end;
                }
            }
        }
    }
}

/// What the subscriber hands to the injector.
enum Inbound {
    /// Another node's publication, without a position.
    Remote(Publication),
    /// A shared history's publication with its position (`from_here`: this node made it).
    Positioned {
        env: wire::Envelope,
        position: Position,
        from_here: bool,
    },
    /// The subscription came back: the hub checks its streams.
    Check,
}

/// Hands remote publications to the hub, one at a time, waiting when the hub is busy (the
/// subscriber never waits: it drops into [`Status::dropped_inbound`] when this queue is full,
/// and a positioned publication dropped so makes the hub check its streams).
async fn injector(ctx: Arc<Ctx>, hub: HubHandle, mut rx: mpsc::Receiver<Inbound>) {
    while let Some(item) = rx.recv().await {
        let told = match item {
            Inbound::Remote(p) => hub.remote(p).await,
            Inbound::Positioned {
                env,
                position,
                from_here,
            } => {
                hub.positioned(env.publication, position, env.publisher, from_here)
                    .await
            }
            Inbound::Check => hub.history_check().await,
        };
        if told.is_err() {
            return;
        }
        Shared::add(&ctx.shared.received, 1);
        if ctx.check_history.swap(false, Relaxed) && hub.history_check().await.is_err() {
            return;
        }
    }
}
