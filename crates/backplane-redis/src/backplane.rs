//! The Redis driver of the backplane's state machine ([`switchboard_backplane::Backplane`]): one
//! task carries out its commands on two Redis connections and feeds it what happens; an
//! injector task hands remote publications to the hub through a bounded queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisResult};
use switchboard_backplane::{
    node_key_prefix, nodes_key, random_u64, Batch, Command, Config, Instances, InstancesError,
    NodeId, Sent, Sharded as Machine, Side, Status, ToHub, ALIVE, BATCH, LEASE,
};
use switchboard_hub::cluster::{NodeSummary, MAX_NODES};
use switchboard_hub::history::Epoch;
use switchboard_runtime::backplane::Replication;
use switchboard_runtime::clock::HubClock;
use switchboard_runtime::metrics::Exposition;
use switchboard_runtime::HubHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::history::{HistoryKeys, RedisHistory};
use crate::status;

/// Capacity of the queue from the Redis subscriber to the hub; when full, further remote
/// publications are dropped and counted in [`Status::dropped_inbound`].
pub const INBOUND_QUEUE: usize = 4096;
/// Limit on establishing one Redis connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit on one Redis round trip (a batch, a subscription change, a ping).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a shutdown waits for what the hub handed over to reach Redis.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// How a backplane runs, beyond its Redis and its hub.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The hub's history is shared through this Redis
    /// (`switchboard_hub::HistoryConfig::shared`): the backplane answers the hub's appends and
    /// fetches ([`Replication::Append`], [`Replication::Fetch`]) with a [`RedisHistory`]
    /// keeping streams as these keys say, and hands every positioned publication from the
    /// channels to the hub, its own included. While Redis is unreachable they are answered
    /// unavailable at once (during the first connection attempt they wait for it).
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
    /// The list of Redis URLs is empty, too long or names an instance twice.
    #[error("Redis URLs: {0}")]
    Instances(#[from] InstancesError),
}

/// A cheap, cloneable view of one backplane's state, for `/health` and `/metrics` handlers.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    shared: Arc<Mutex<Status>>,
}

impl StatusHandle {
    /// A snapshot of the counters and connection state.
    pub fn status(&self) -> Status {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
    node: NodeId,
    system: &'static str,
    /// Tells the driver to send what it holds and end.
    stop: Option<oneshot::Sender<()>>,
    /// The driver, then the injector.
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
        Self::spawn_sharded(&[redis_url], node_id, system, hub, replication, options)
    }

    /// [`Backplane::spawn_with`] over several Redis instances (at most
    /// [`switchboard_backplane::MAX_INSTANCES`], each `host:port` once): each stream — a room's
    /// channel, history and members, or the system's `all` channel and stream — lives on the
    /// instance [`Instances::of`] picks from the instances' `host:port`, and this node's lease is
    /// kept on every one. Every node of a cluster must be given the same instances (a node that
    /// sees another node's set differ logs a warning; the order does not change routing). One
    /// URL is exactly [`Backplane::spawn_with`].
    pub fn spawn_sharded(
        redis_urls: &[&str],
        node_id: NodeId,
        system: &'static str,
        hub: HubHandle,
        replication: mpsc::Receiver<Replication>,
        options: Options,
    ) -> Result<Backplane, Error> {
        let mut clients = Vec::with_capacity(redis_urls.len());
        let mut names = Vec::with_capacity(redis_urls.len());
        for url in redis_urls {
            let info = url.into_connection_info().map_err(Error::InvalidUrl)?;
            names.push(info.addr().to_string());
            // Small messages, latency first: no Nagle delay on either connection.
            let tcp = info.tcp_settings().clone().set_nodelay(true);
            clients
                .push(redis::Client::open(info.set_tcp_settings(tcp)).map_err(Error::InvalidUrl)?);
        }
        let instances = Instances::new(&names)?;
        let fingerprint =
            (instances.len() > 1).then(|| format!("{:016x}", instances.fingerprint()));
        let shared = Arc::new(Mutex::new(Status::new(system, node_id)));
        let clock = HubClock::default();
        let config = Config {
            system,
            node: node_id,
            every_room: options.every_room,
            history: options.history.is_some(),
            seed: random_u64(),
            lease: true,
        };
        let machine = Machine::new(config, instances, clock.now());
        let lease = Arc::new(Lease::new(system, node_id, fingerprint));
        let links = clients
            .into_iter()
            .map(|client| Link {
                client,
                publisher: None,
                engine: None,
                sink: None,
                stream: None,
                generation: [0, 0],
                lease: lease.clone(),
            })
            .collect();
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let driver = Driver {
            machine,
            clock,
            links,
            keys: options.history,
            hub: hub.clone(),
            inbound: inbound_tx,
            shared: shared.clone(),
            ops: FuturesUnordered::new(),
            turn: 0,
        };
        let (stop, stopped) = oneshot::channel();
        let tasks = vec![
            tokio::spawn(driver.run(replication, stopped)),
            tokio::spawn(injector(hub, inbound_rx)),
        ];
        tracing::info!(system, node = %node_id, "backplane started");
        Ok(Backplane {
            status: StatusHandle { shared },
            node: node_id,
            system,
            stop: Some(stop),
            tasks,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The system it serves.
    pub fn system(&self) -> &'static str {
        self.system
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

    /// Send what the hub handed over and is not in Redis yet (publications, appends: an
    /// acknowledged publication is not lost to a restart), waiting at most [`FLUSH_TIMEOUT`],
    /// then stop the tasks and wait for them to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            if let Some(driver) = self.tasks.first_mut() {
                if tokio::time::timeout(FLUSH_TIMEOUT, driver).await.is_ok() {
                    self.tasks.remove(0); // Ended: not to be awaited again.
                }
            }
        }
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut status = self
            .status
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.publisher_connected = false;
        status.subscriber_connected = false;
        status.connected = false;
    }
}

/// What an operation on a connection came to, with its instance and the connection's
/// generation (a result from a connection replaced since is dropped).
enum Done {
    Publisher(usize, u64, RedisResult<MultiplexedConnection>),
    Subscriber(usize, u64, Result<(PubSubSink, PubSubStream), String>),
    Sent(usize, u64, Sent),
    Subscribed(usize, u64, Result<(), String>),
    Pinged(usize, Side, u64, Result<(), String>),
    Rooms(Vec<String>),
    Summary(usize, Option<NodeSummary>),
}

type Op = Pin<Box<dyn Future<Output = Done> + Send>>;

/// One Redis instance's two connections.
struct Link {
    client: redis::Client,
    publisher: Option<MultiplexedConnection>,
    engine: Option<RedisHistory>,
    sink: Option<PubSubSink>,
    stream: Option<PubSubStream>,
    /// Per side, how many connections were opened (names the current one).
    generation: [u64; 2],
    lease: Arc<Lease>,
}

/// The task that drives the state machine.
struct Driver {
    machine: Machine,
    clock: HubClock,
    /// One per Redis instance, in the configured order.
    links: Vec<Link>,
    keys: Option<HistoryKeys>,
    hub: HubHandle,
    inbound: mpsc::Sender<ToHub>,
    shared: Arc<Mutex<Status>>,
    ops: FuturesUnordered<Op>,
    /// Which instance's subscription is read first next (so a busy one cannot starve the rest).
    turn: usize,
}

fn slot(side: Side) -> usize {
    match side {
        Side::Publisher => 0,
        Side::Subscriber => 1,
    }
}

/// Bound `f` by [`RESPONSE_TIMEOUT`]; any failure as text.
async fn within<T>(f: impl Future<Output = RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

impl Driver {
    async fn run(
        mut self,
        mut replication: mpsc::Receiver<Replication>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut finishing = false;
        loop {
            // While finishing, the hub is usually gone already (the system stops before its
            // backplane): what was meant for it is dropped, and what it handed over still goes
            // to Redis. Ending here instead lost an acknowledged publication queued behind a
            // batch in flight (the batch's answer, for the gone hub, ended the driver).
            if !self.carry_out().await && !finishing {
                return; // The hub is gone.
            }
            if finishing && self.machine.is_flushed() {
                return; // Everything handed over reached Redis (or was answered).
            }
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = self.machine.status();
            let deadline = self.machine.poll_timeout().map(|t| self.clock.deadline(t));
            let wants = self.machine.wants_input();
            tokio::select! {
                // Not while finishing: what the hub queued was taken at the stop, and its
                // channel is closed once it is gone.
                n = replication.recv_many(&mut batch, BATCH), if wants && !finishing => {
                    if n == 0 {
                        return; // The hub task is gone.
                    }
                    for r in batch.drain(..) {
                        self.take(r);
                    }
                }
                (i, message) = next_message(&mut self.links, &mut self.turn) => match message {
                    Some(payload) => self.machine.handle_message(i, payload.into()),
                    None => self.lost(i, Side::Subscriber, "connection closed"),
                },
                Some(done) = self.ops.next() => self.done(done),
                _ = &mut stop, if !finishing => {
                    // Take what the hub already queued, then end once it is sent.
                    finishing = true;
                    while let Ok(r) = replication.try_recv() {
                        self.take(r);
                    }
                }
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    self.machine.handle_timeout(self.clock.now());
                }
            }
        }
    }

    /// One replication item from the hub.
    fn take(&mut self, r: Replication) {
        let m = &mut self.machine;
        match r {
            Replication::Publish(p) => m.handle_publish(&p),
            Replication::RoomOpened(room) => m.handle_room(room, true),
            Replication::RoomClosed(room) => m.handle_room(room, false),
            Replication::Members {
                room,
                members,
                hello,
            } => m.handle_members(&room, &members, hello),
            Replication::Append {
                stream,
                entry,
                target,
            } => m.handle_append(stream, entry, target, Epoch(random_u64())),
            Replication::Fetch { id, stream, since } => {
                m.handle_fetch(id, stream, since, Epoch(random_u64()))
            }
            _ => {}
        }
    }

    /// A connection of instance `i` failed outside of an operation (its stream ended).
    fn lost(&mut self, i: usize, side: Side, error: &str) {
        self.drop_connection(i, side);
        self.machine.handle_failed(self.clock.now(), i, side, error);
    }

    fn drop_connection(&mut self, i: usize, side: Side) {
        let link = &mut self.links[i];
        link.generation[slot(side)] += 1;
        match side {
            Side::Publisher => {
                link.publisher = None;
                link.engine = None;
            }
            Side::Subscriber => {
                link.sink = None;
                link.stream = None;
            }
        }
    }

    /// Carry out the machine's commands. `false` once the hub is gone.
    async fn carry_out(&mut self) -> bool {
        let mut hub_alive = true;
        while let Some((i, command)) = self.machine.poll_command() {
            match command {
                Command::Connect(side) => self.connect(i, side),
                Command::Send(batch) => self.send(i, batch),
                Command::Subscribe { channels, pattern } => {
                    self.subscription(i, move |mut sink| async move {
                        match pattern {
                            true => sink.psubscribe(&channels).await,
                            false => sink.subscribe(&channels).await,
                        }
                    })
                }
                Command::Unsubscribe(channels) => self
                    .subscription(i, move |mut sink| async move {
                        sink.unsubscribe(&channels).await
                    }),
                Command::Ping(side) => self.ping(i, side),
                Command::ListRooms => {
                    let hub = self.hub.clone();
                    self.ops.push(Box::pin(async move {
                        Done::Rooms(hub.rooms().await.unwrap_or_default())
                    }));
                }
                Command::Summarize => {
                    let hub = self.hub.clone();
                    self.ops.push(Box::pin(async move {
                        Done::Summary(i, hub.summary().await.ok())
                    }));
                }
                Command::Deliver(to_hub) => {
                    if hub_alive && !self.deliver(i, to_hub).await {
                        hub_alive = false; // The other commands are still carried out.
                    }
                }
            }
        }
        hub_alive
    }

    /// Hand something to the hub: answers (appends, fetches, checks) are never dropped, and
    /// wait if the hub's queue is full; publications go through the bounded inbound queue and
    /// are dropped and counted when it is full.
    async fn deliver(&mut self, i: usize, to_hub: ToHub) -> bool {
        let told = match to_hub {
            ToHub::Appended(stream, result) => self.hub.appended(stream, result).await,
            ToHub::Fetched(id, result) => self.hub.fetched(id, result).await,
            ToHub::Check => self.hub.history_check().await,
            ToHub::Cluster(nodes) => self.hub.cluster(nodes).await,
            ToHub::Resync => self.hub.resync().await,
            publication => match self.inbound.try_send(publication) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(dropped)) => {
                    self.machine.handle_hub_full(i, &dropped);
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            },
        };
        told.is_ok()
    }

    fn connect(&mut self, i: usize, side: Side) {
        self.drop_connection(i, side);
        let generation = self.links[i].generation[slot(side)];
        let client = self.links[i].client.clone();
        let op: Op = match side {
            Side::Publisher => Box::pin(async move {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await;
                Done::Publisher(i, generation, conn)
            }),
            Side::Subscriber => Box::pin(async move {
                let pubsub =
                    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
                        Ok(Ok(pubsub)) => Ok(pubsub.split()),
                        Ok(Err(e)) => Err(format!("connect: {e}")),
                        Err(_) => Err("connect: timed out".to_string()),
                    };
                Done::Subscriber(i, generation, pubsub)
            }),
        };
        self.ops.push(op);
    }

    /// Run a batch on the publishing connection: the publications in one pipeline, then the
    /// appends (sent in order on the multiplexed connection, so Redis runs them in order) and
    /// the fetches.
    fn send(&mut self, i: usize, batch: Batch) {
        let link = &self.links[i];
        let generation = link.generation[0];
        let (Some(conn), engine) = (link.publisher.clone(), link.engine.clone()) else {
            let sent = Sent {
                published: Err("not connected".into()),
                appended: Vec::new(),
                fetched: Vec::new(),
                cluster: None,
                lost: Some("not connected".into()),
            };
            self.ops
                .push(Box::pin(async move { Done::Sent(i, generation, sent) }));
            return;
        };
        let lease = link.lease.clone();
        self.ops.push(Box::pin(async move {
            Done::Sent(i, generation, run_batch(conn, engine, lease, batch).await)
        }));
    }

    fn subscription<F, Fut>(&mut self, i: usize, f: F)
    where
        F: FnOnce(PubSubSink) -> Fut,
        Fut: Future<Output = RedisResult<()>> + Send + 'static,
    {
        let generation = self.links[i].generation[1];
        let Some(sink) = self.links[i].sink.clone() else {
            let op: Op =
                Box::pin(
                    async move { Done::Subscribed(i, generation, Err("not connected".into())) },
                );
            self.ops.push(op);
            return;
        };
        let fut = f(sink);
        self.ops.push(Box::pin(async move {
            Done::Subscribed(i, generation, within(fut).await)
        }));
    }

    fn ping(&mut self, i: usize, side: Side) {
        let link = &self.links[i];
        let generation = link.generation[slot(side)];
        let op: Op = match side {
            Side::Publisher => {
                let Some(mut conn) = link.publisher.clone() else {
                    return;
                };
                Box::pin(async move {
                    let r = within(redis::cmd("PING").query_async::<String>(&mut conn)).await;
                    Done::Pinged(i, side, generation, r.map(drop))
                })
            }
            Side::Subscriber => {
                let Some(mut sink) = link.sink.clone() else {
                    return;
                };
                Box::pin(async move {
                    // Subscribed, Redis answers a PING with `["pong", ""]`: any answer will do.
                    let r = within(sink.ping::<redis::Value>()).await;
                    Done::Pinged(i, side, generation, r.map(drop))
                })
            }
        };
        self.ops.push(op);
    }

    /// An operation finished: tell the machine, unless its connection was replaced since.
    fn done(&mut self, done: Done) {
        let now = self.clock.now();
        let of = match &done {
            Done::Publisher(i, g, _) | Done::Sent(i, g, _) => Some((*i, Side::Publisher, *g)),
            Done::Subscriber(i, g, _) | Done::Subscribed(i, g, _) => {
                Some((*i, Side::Subscriber, *g))
            }
            Done::Pinged(i, side, g, _) => Some((*i, *side, *g)),
            Done::Rooms(_) | Done::Summary(..) => None,
        };
        if of.is_some_and(|(i, side, g)| self.links[i].generation[slot(side)] != g) {
            return; // From a connection replaced since.
        }
        let system = self.hub.name();
        match done {
            Done::Publisher(i, _, Ok(conn)) => {
                let link = &mut self.links[i];
                link.engine = self
                    .keys
                    .clone()
                    .map(|keys| RedisHistory::new(keys, conn.clone()));
                link.publisher = Some(conn);
                self.machine.handle_connected(now, i, Side::Publisher);
                tracing::info!(system, instance = i, "backplane publisher connected");
            }
            Done::Publisher(i, _, Err(e)) => {
                self.machine
                    .handle_failed(now, i, Side::Publisher, &format!("connect: {e}"));
            }
            Done::Subscriber(i, _, Ok((sink, stream))) => {
                self.links[i].sink = Some(sink);
                self.links[i].stream = Some(stream);
                self.machine.handle_connected(now, i, Side::Subscriber);
                tracing::info!(system, instance = i, "backplane subscriber connected");
            }
            Done::Subscriber(i, _, Err(e)) => {
                self.machine.handle_failed(now, i, Side::Subscriber, &e)
            }
            Done::Sent(i, _, sent) => {
                if sent.lost.is_some() {
                    self.drop_connection(i, Side::Publisher);
                }
                self.machine.handle_sent(now, i, sent);
            }
            Done::Subscribed(i, _, result) => {
                if result.is_err() {
                    self.drop_connection(i, Side::Subscriber);
                }
                self.machine.handle_subscribed(now, i, result);
            }
            Done::Pinged(_, _, _, Ok(())) => {}
            Done::Pinged(i, side, _, Err(e)) => self.lost(i, side, &format!("ping: {e}")),
            Done::Rooms(rooms) => self.machine.handle_rooms(rooms),
            Done::Summary(i, Some(summary)) => self.machine.handle_summary(i, &summary),
            Done::Summary(_, None) => {}
        }
    }
}

/// The next message's payload on any instance's subscribing connection, with the instance;
/// `None` when that connection ended; pending while none has one. Starts at `turn`, and moves
/// it past the instance that answered, so one busy instance cannot starve the others.
async fn next_message(links: &mut [Link], turn: &mut usize) -> (usize, Option<Vec<u8>>) {
    std::future::poll_fn(|cx| {
        let n = links.len();
        for k in 0..n {
            let i = (*turn + k) % n;
            let Some(stream) = links[i].stream.as_mut() else {
                continue;
            };
            if let Poll::Ready(m) = stream.poll_next_unpin(cx) {
                *turn = (i + 1) % n;
                return Poll::Ready((i, m.map(|m| m.get_payload_bytes().to_vec())));
            }
        }
        Poll::Pending
    })
    .await
}

/// Carry out one batch; a connection error or timeout is reported as lost.
async fn run_batch(
    mut conn: MultiplexedConnection,
    engine: Option<RedisHistory>,
    lease: Arc<Lease>,
    batch: Batch,
) -> Sent {
    let mut lost = None;
    let published = if batch.publishes.is_empty() {
        Ok(())
    } else {
        let mut pipe = redis::pipe();
        for (channel, message) in &batch.publishes {
            pipe.cmd("PUBLISH").arg(channel).arg(&message[..]).ignore();
        }
        let r = within(pipe.query_async::<()>(&mut conn)).await;
        if let Err(e) = &r {
            lost = Some(e.clone());
        }
        r
    };
    let (appended, fetched) = match engine {
        Some(engine) if lost.is_none() => {
            let appends = futures_util::future::join_all(batch.appends.iter().map(|a| {
                let channel = (a.channel.as_str(), &a.message[..]);
                engine.append(&a.stream, &a.entry, a.candidate, Some(channel))
            }));
            let fetches = futures_util::future::join_all(
                batch
                    .fetches
                    .iter()
                    .map(|f| engine.fetch(&f.stream, f.since, f.candidate)),
            );
            let (appended, fetched) = futures_util::future::join(appends, fetches).await;
            let mut text = |e: crate::history::HistoryError| {
                if let crate::history::HistoryError::Redis(e) = &e {
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                        lost.get_or_insert_with(|| e.to_string());
                    }
                }
                e.to_string()
            };
            let appended = appended.into_iter().map(|r| r.map_err(&mut text)).collect();
            let fetched = fetched.into_iter().map(|r| r.map_err(&mut text)).collect();
            (appended, fetched)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let cluster = match batch.lease {
        Some(summary) if lost.is_none() => {
            let r = within(lease.renew(&mut conn, &summary)).await;
            if let Err(e) = &r {
                lost.get_or_insert_with(|| e.clone());
            }
            Some(r)
        }
        _ => None,
    };
    Sent {
        published,
        appended,
        fetched,
        cluster,
        lost,
    }
}

/// Writes this node's summary with its lease and reads every live node's, in one script:
/// `sb:<system>:nodes` is a sorted set of node ids scored by lease end (Redis `TIME`, ms),
/// `sb:<system>:n:<node>` the node's summary, expiring with its lease (`PX`). Entries past
/// their lease are removed from the set as it is read; at most [`MAX_NODES`] are read.
///
/// With several instances the same is done on each, and the fingerprint of the instance list
/// is written beside it (`sb:<system>:instances`, `SET .. GET` with the lease's expiry): a
/// node that reads back another node's fingerprint logs a warning (once per fingerprint seen),
/// since the two route streams differently.
#[derive(Debug)]
struct Lease {
    nodes: String,
    key: String,
    prefix: String,
    node: String,
    /// `sb:<system>:instances` and this node's fingerprint (hex), with several instances.
    fingerprint: Option<(String, String)>,
    /// The last other fingerprint warned about.
    warned: Mutex<Option<String>>,
}

const LEASE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local alive = tonumber(ARGV[6])
redis.call('SET', KEYS[2], ARGV[2], 'PX', lease)
redis.call('ZADD', KEYS[1], now + alive, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], lease)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[5] .. id)
  if v then out[#out + 1] = v end
end
return out
"#;

impl Lease {
    fn new(system: &str, node: NodeId, fingerprint: Option<String>) -> Self {
        let prefix = node_key_prefix(system);
        Lease {
            nodes: nodes_key(system),
            key: format!("{prefix}{node}"),
            prefix,
            node: node.to_string(),
            fingerprint: fingerprint.map(|f| (format!("sb:{system}:instances"), f)),
            warned: Mutex::new(None),
        }
    }

    /// Write this node's fingerprint and warn if another node's was there.
    async fn check_fingerprint(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let Some((key, mine)) = &self.fingerprint else {
            return Ok(());
        };
        let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let before: Option<Vec<u8>> = redis::cmd("SET")
            .arg(key)
            .arg(mine)
            .arg("GET")
            .arg("PX")
            .arg(lease_ms)
            .query_async(conn)
            .await?;
        let Some(theirs) = before.filter(|b| b.as_slice() != mine.as_bytes()) else {
            return Ok(());
        };
        // At most 64 bytes of what another process wrote, shown lossily.
        let theirs = String::from_utf8_lossy(&theirs[..theirs.len().min(64)]).into_owned();
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.as_deref() != Some(theirs.as_str()) {
            tracing::warn!(
                mine = %mine,
                theirs = %theirs,
                "another node of this cluster was given a different list of Redis URLs: \
                 streams are routed differently on it; give every node the same list"
            );
            *warned = Some(theirs);
        }
        Ok(())
    }

    async fn renew(
        &self,
        conn: &mut MultiplexedConnection,
        summary: &[u8],
    ) -> RedisResult<Vec<Bytes>> {
        let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let alive_ms = u64::try_from(ALIVE.as_millis()).unwrap_or(u64::MAX);
        // Every 2 s, a few hundred bytes of script: `EVAL` costs Redis a cached compile.
        let read: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(LEASE_SCRIPT)
            .arg(2)
            .arg(&self.nodes)
            .arg(&self.key)
            .arg(&self.node)
            .arg(summary)
            .arg(lease_ms)
            .arg(MAX_NODES + 1) // The others, and this one.
            .arg(&self.prefix)
            .arg(alive_ms)
            .query_async(conn)
            .await?;
        self.check_fingerprint(conn).await?;
        Ok(read.into_iter().map(Bytes::from).collect())
    }
}

/// Hands remote publications to the hub, one at a time, waiting when the hub is busy (the
/// driver never waits on it: it drops into [`Status::dropped_inbound`] when this queue is full,
/// and a positioned publication dropped so makes the hub check its streams).
async fn injector(hub: HubHandle, mut rx: mpsc::Receiver<ToHub>) {
    while let Some(item) = rx.recv().await {
        let told = match item {
            ToHub::Remote(p) => hub.remote(p).await,
            ToHub::Positioned {
                publication,
                position,
                publisher,
                from_here,
            } => {
                hub.positioned(publication, position, publisher, from_here)
                    .await
            }
            ToHub::Appended(stream, result) => hub.appended(stream, result).await,
            ToHub::Fetched(id, result) => hub.fetched(id, result).await,
            ToHub::Check => hub.history_check().await,
            ToHub::Members(m) => {
                hub.remote_members(m.origin.get(), m.room, m.members, m.hello)
                    .await
            }
            ToHub::Cluster(nodes) => hub.cluster(nodes).await,
            ToHub::Resync => hub.resync().await,
        };
        if told.is_err() {
            return;
        }
    }
}
