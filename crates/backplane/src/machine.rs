//! One system's backplane as a state machine: the two Redis connections' states, what to send on
//! them, which channels to hold, what to hand to the hub. Time and I/O come from the driver.
//!
//! The driver opens connections and runs commands when [`Backplane::poll_command`] asks, reports
//! how they went (`handle_*`), feeds it what the hub hands over and what the subscription
//! receives, and calls [`Backplane::handle_timeout`] at [`Backplane::poll_timeout`]. At most one
//! [`Command::Send`] and one subscription change are in flight at a time, so what goes out on each
//! connection goes in order; the driver bounds every command's duration (a command that does not
//! answer is a failed connection).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hashbrown::HashSet;
use switchboard_hub::cluster::{Members, NodeSummary};
use switchboard_hub::history::{Entry, Epoch, FetchId, Fetched, HistoryError, Position, SessionId};
use switchboard_hub::{Instant, Publication, Target};

use crate::backoff::Backoff;
use crate::interest::{Gaps, Interest};
use crate::node::NodeId;
use crate::status::Status;
use crate::wire::{self, Envelope, MembersMessage};

/// How often room subscriptions are reconciled with the hub's rooms, and how often an idle
/// connection is pinged to notice a dead peer.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Most publications, appends and fetches in one [`Command::Send`].
pub const BATCH: usize = 256;
/// Most channels named in one subscribe or unsubscribe.
pub const SUBSCRIBE_CHUNK: usize = 512;
/// How often a node renews its lease: writes its summary and reads the other live nodes'.
pub const LEASE_EVERY: Duration = Duration::from_secs(2);
/// How long a node's summary lives in Redis without renewal (its key's TTL).
pub const LEASE: Duration = switchboard_hub::cluster::LEASE;
/// How long after a renewal a node counts as alive in every other node's lease read: three
/// renewal periods, so two missed renewals do not drop it, and short enough that a node killed
/// without a word is gone from every other node's counts and presence within [`LEASE`] of its
/// death (its last renewal, plus this, plus one read: at most 9 s after it).
pub const ALIVE: Duration = Duration::from_secs(7);

const _: () = assert!(ALIVE.as_millis() + LEASE_EVERY.as_millis() < LEASE.as_millis());
/// Rooms whose members announcement waits for the publishing connection at most (each room's
/// latest); past it an announcement is dropped and counted in `dropped_while_down`.
pub const MAX_UNSENT_MEMBERS: usize = 65_536;
/// Publications, appends and fetches waiting for the publishing connection at most; the driver
/// stops taking more from the hub while it is full ([`Backplane::wants_input`]).
pub const MAX_WAITING: usize = 4 * BATCH;

/// The Redis sorted set of `system`'s live nodes (node id → lease end, Unix ms).
pub fn nodes_key(system: &str) -> String {
    format!("sb:{system}:nodes")
}

/// The prefix of `system`'s node summary keys: `sb:<system>:n:<node id>`.
pub fn node_key_prefix(system: &str) -> String {
    format!("sb:{system}:n:")
}

/// The Redis channel carrying `system`'s publications to everyone and to users.
pub fn all_channel(system: &str) -> String {
    format!("sb:{system}:all")
}

/// The Redis channel carrying `system`'s publications to `room` (`*`: the pattern of every room).
pub fn room_channel(system: &str, room: &str) -> String {
    format!("sb:{system}:room:{room}")
}

/// One of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Publishes, appends and fetches (a multiplexed connection).
    Publisher,
    /// Holds the subscriptions.
    Subscriber,
}

/// How a backplane runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The system it serves.
    pub system: &'static str,
    /// This node.
    pub node: NodeId,
    /// Receive every room's channel through one pattern, not only the rooms with local members.
    pub every_room: bool,
    /// The hub's history is shared through this Redis: answer its appends and fetches, and
    /// hand it positioned publications, its own included.
    pub history: bool,
    /// Seed of the reconnect jitter.
    pub seed: u64,
    /// Keep a lease on this node's summary in Redis and read the other live nodes' with it
    /// (every [`LEASE_EVERY`]): cluster-wide counts and presence ([`Command::Summarize`]).
    pub lease: bool,
}

/// A kept publication to append to the shared history, published with its position.
#[derive(Debug, Clone)]
pub struct Append {
    /// Its stream.
    pub stream: String,
    /// What the history keeps.
    pub entry: Arc<Entry>,
    /// The channel the append publishes it on.
    pub channel: String,
    /// What it publishes (the wire message, which the append prefixes with the position).
    pub message: Bytes,
    /// A fresh epoch for a stream the history does not know.
    pub candidate: Epoch,
}

/// A fetch from the shared history.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Names the answer.
    pub id: FetchId,
    /// The stream.
    pub stream: String,
    /// From where (`None`: only the top).
    pub since: Option<Position>,
    /// A fresh epoch for a stream the history does not know.
    pub candidate: Epoch,
}

/// One round trip on the publishing connection: publications (pipelined, in order), then
/// appends (in order), and fetches.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `(channel, message)` pairs to `PUBLISH`.
    pub publishes: Vec<(String, Bytes)>,
    /// Appends, answered in this order.
    pub appends: Vec<Append>,
    /// Fetches.
    pub fetches: Vec<Fetch>,
    /// This node's summary to write with its lease ([`LEASE`]), reading every live node's in
    /// the same script ([`Sent::cluster`]).
    pub lease: Option<Bytes>,
}

/// How a [`Batch`] went.
#[derive(Debug)]
pub struct Sent {
    /// Whether the publications went out (an error loses them all: which ones Redis took is
    /// unknown).
    pub published: Result<(), String>,
    /// Each append's answer, in the batch's order.
    pub appended: Vec<Result<Position, String>>,
    /// Each fetch's answer, in the batch's order.
    pub fetched: Vec<Result<Fetched, String>>,
    /// The live nodes' summaries (this one's included), when the batch renewed the lease.
    pub cluster: Option<Result<Vec<Bytes>, String>>,
    /// The connection failed (a timeout, a closed socket): it must be opened again.
    pub lost: Option<String>,
}

/// What the hub is handed.
#[derive(Debug)]
pub enum ToHub {
    /// Another node's publication, without a position.
    Remote(Publication),
    /// A kept publication of the shared history, with its position (`from_here`: this node made
    /// it).
    Positioned {
        /// The publication.
        publication: Publication,
        /// Its position.
        position: Position,
        /// The session that published it.
        publisher: Option<SessionId>,
        /// Made on this node.
        from_here: bool,
    },
    /// The answer to the oldest append of `stream`.
    Appended(String, Result<Position, HistoryError>),
    /// The answer to fetch `id`.
    Fetched(FetchId, Result<Fetched, HistoryError>),
    /// The history's channels may have lost publications, or its fetches failed: the hub
    /// fetches each stream from where it is.
    Check,
    /// Another node's members of a room.
    Members(MembersMessage),
    /// The subscription was re-established: `Members` may have gone by meanwhile. The hub
    /// announces its members of every room again, asking the others for theirs (`hello`).
    Resync,
    /// The other live nodes and their summaries, just read.
    Cluster(Vec<(u64, NodeSummary)>),
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Command {
    /// Open this connection; report with [`Backplane::handle_connected`] or
    /// [`Backplane::handle_failed`].
    Connect(Side),
    /// Run this batch on the publishing connection; report with [`Backplane::handle_sent`].
    Send(Batch),
    /// Subscribe the subscribing connection to these channels (`pattern`: one pattern); report
    /// with [`Backplane::handle_subscribed`].
    Subscribe {
        /// Channel names, or one pattern.
        channels: Vec<String>,
        /// Whether `channels` is a pattern subscription.
        pattern: bool,
    },
    /// Unsubscribe from these channels; report with [`Backplane::handle_subscribed`].
    Unsubscribe(Vec<String>),
    /// Ping this connection; report failure with [`Backplane::handle_failed`] (success needs
    /// no report).
    Ping(Side),
    /// Ask the hub which rooms have local members; answer with [`Backplane::handle_rooms`].
    ListRooms,
    /// Ask the hub for this node's summary; answer with [`Backplane::handle_summary`].
    Summarize,
    /// Hand this to the hub (through a bounded queue: if it is full, report with
    /// [`Backplane::handle_hub_full`]).
    Deliver(ToHub),
}

/// What a batch in flight asked, to pair its answers with.
#[derive(Debug)]
struct InFlight {
    publishes: usize,
    lease: bool,
    appends: Vec<String>,
    fetches: Vec<FetchId>,
}

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Down; a new attempt is due at this instant.
    Down(Instant),
    /// An attempt is under way.
    Connecting,
    /// Up (for the subscriber: once subscribed to the `all` channel and its rooms).
    Up,
}

/// A subscription change waiting for its turn.
#[derive(Debug)]
enum Change {
    Subscribe(Vec<String>, bool),
    Unsubscribe(Vec<String>),
}

/// What happens when the subscriber's pending changes are all answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscribing {
    /// Nothing in flight.
    Idle,
    /// The first subscriptions after a connect: the subscriber is up once they are answered.
    Initial,
    /// A change while up.
    Change,
}

/// The logic of one system's backplane. See the module documentation.
#[derive(Debug)]
pub struct Backplane {
    config: Config,
    all: String,
    publisher: Conn,
    subscriber: Conn,
    publisher_backoff: Backoff,
    subscriber_backoff: Backoff,
    publisher_ever: bool,
    /// The publishing connection's first attempt has not ended yet: what needs it waits for it
    /// (at most [`MAX_WAITING`]) instead of being answered unavailable, so a node just started
    /// does not lose the publications it accepts in its first milliseconds.
    first_attempt: bool,
    subscriber_ever: bool,
    /// Rooms with local members, and which of them changed.
    interest: Interest,
    /// Rooms the subscribing connection holds.
    subscribed: HashSet<String>,
    gaps: Gaps,
    /// This node's sequence on the `all` channel.
    seq: u64,
    /// Waiting for the publishing connection.
    waiting: Batch,
    /// The batch in flight, if one is.
    sending: Option<InFlight>,
    /// Subscription changes to send, one at a time.
    changes: VecDeque<Change>,
    subscribing: Subscribing,
    /// Something was sent since the last tick (no ping needed).
    busy: bool,
    /// The subscriber failed: ping the publisher soon (an idle one would look up until then).
    check_publisher: bool,
    next_tick: Instant,
    /// When the lease is renewed next.
    next_lease: Instant,
    /// Members announcements made while the publishing connection was down: each room's
    /// latest, sent when it is back (so no other node keeps members this one no longer has).
    unsent: hashbrown::HashMap<String, (Members, bool)>,
    commands: VecDeque<Command>,
    status: Status,
}

impl Backplane {
    /// A backplane whose connections are both down, with a first attempt due at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        let status = Status::new(config.system, config.node);
        Backplane {
            all: all_channel(config.system),
            publisher: Conn::Down(now),
            subscriber: Conn::Down(now),
            publisher_backoff: Backoff::new(config.seed),
            subscriber_backoff: Backoff::new(config.seed.rotate_left(32)),
            publisher_ever: false,
            first_attempt: true,
            subscriber_ever: false,
            interest: Interest::default(),
            subscribed: HashSet::new(),
            gaps: Gaps::default(),
            seq: 0,
            waiting: Batch::default(),
            sending: None,
            changes: VecDeque::new(),
            subscribing: Subscribing::Idle,
            busy: false,
            check_publisher: false,
            next_tick: now + RECONCILE_EVERY,
            next_lease: now,
            unsent: hashbrown::HashMap::new(),
            commands: VecDeque::new(),
            status,
            config,
        }
    }

    /// The counters and connection states.
    pub fn status(&self) -> Status {
        let mut status = self.status.clone();
        status.connected = status.publisher_connected && status.subscriber_connected;
        status
    }

    /// Whether it takes more from the hub now (its queue for the publishing connection has
    /// room). While not, the hub's own bounded channel holds what comes.
    pub fn wants_input(&self) -> bool {
        self.waiting_len() < MAX_WAITING
    }

    fn waiting_len(&self) -> usize {
        let w = &self.waiting;
        w.publishes.len() + w.appends.len() + w.fetches.len()
    }

    /// Whether a batch has anything to carry.
    fn has_waiting(&self) -> bool {
        self.waiting_len() > 0 || self.waiting.lease.is_some()
    }

    /// Whether everything taken from the hub has been sent (or answered as unavailable), and
    /// nothing is in flight on the publishing connection: what a shutdown waits for.
    pub fn is_flushed(&self) -> bool {
        self.waiting_len() == 0 && self.sending.is_none()
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Backplane::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_tick.min(self.next_lease);
        for c in [self.publisher, self.subscriber] {
            if let Conn::Down(retry) = c {
                at = at.min(retry);
            }
        }
        Some(at)
    }

    /// Reconnects that are due, keepalives and reconciliation.
    pub fn handle_timeout(&mut self, now: Instant) {
        for side in [Side::Publisher, Side::Subscriber] {
            let conn = self.conn_mut(side);
            if matches!(*conn, Conn::Down(at) if at <= now) {
                *conn = Conn::Connecting;
                self.commands.push_back(Command::Connect(side));
            }
        }
        if now >= self.next_lease {
            self.next_lease = now + LEASE_EVERY;
            if self.publisher == Conn::Up && self.config.lease {
                self.commands.push_back(Command::Summarize);
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + RECONCILE_EVERY;
            if !self.config.every_room {
                self.commands.push_back(Command::ListRooms);
            }
            if self.publisher == Conn::Up && !self.busy && self.sending.is_none() {
                self.commands.push_back(Command::Ping(Side::Publisher));
            }
            self.busy = false;
            if self.subscriber == Conn::Up && self.subscribing == Subscribing::Idle {
                self.commands.push_back(Command::Ping(Side::Subscriber));
            }
        }
    }

    fn conn_mut(&mut self, side: Side) -> &mut Conn {
        match side {
            Side::Publisher => &mut self.publisher,
            Side::Subscriber => &mut self.subscriber,
        }
    }

    /// A connection attempt succeeded.
    pub fn handle_connected(&mut self, _now: Instant, side: Side) {
        match side {
            Side::Publisher => {
                self.publisher = Conn::Up;
                self.first_attempt = false;
                self.publisher_backoff.reset();
                self.status.publisher_connected = true;
                if self.publisher_ever {
                    self.status.reconnects += 1;
                    if self.config.history {
                        // Fetches failed while it was down: the hub asks again.
                        self.commands.push_back(Command::Deliver(ToHub::Check));
                    }
                }
                self.publisher_ever = true;
                for (room, (members, hello)) in std::mem::take(&mut self.unsent) {
                    let channel = room_channel(self.config.system, &room);
                    let message = wire::encode_members(self.config.node, &room, &members, hello);
                    self.waiting.publishes.push((channel, message));
                }
                if self.config.lease {
                    // Renew the lease at once: the other nodes see this one, and it sees them.
                    self.commands.push_back(Command::Summarize);
                }
                self.flush();
            }
            Side::Subscriber => {
                // Up once the `all` channel and the rooms are subscribed.
                self.subscribed.clear();
                self.interest.clear_dirty();
                self.changes.clear();
                self.changes
                    .push_back(Change::Subscribe(vec![self.all.clone()], false));
                if self.config.every_room {
                    let every = room_channel(self.config.system, "*");
                    self.changes.push_back(Change::Subscribe(vec![every], true));
                } else {
                    let rooms: Vec<String> = self.interest.desired().cloned().collect();
                    for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
                        self.changes
                            .push_back(Change::Subscribe(chunk.to_vec(), false));
                    }
                    self.subscribed.extend(rooms);
                }
                self.subscribing = Subscribing::Initial;
                self.next_change();
            }
        }
    }

    /// A connection failed (to open, or while up): it is opened again after a backoff.
    pub fn handle_failed(&mut self, now: Instant, side: Side, error: &str) {
        self.status.error(side_name(side), error);
        match side {
            Side::Publisher => {
                if let Some(batch) = self.sending.take() {
                    // Redis may have taken some of them; which ones is unknown: all count lost.
                    self.status.dropped_while_down += batch.publishes as u64;
                    self.answer(batch, Vec::new(), Vec::new());
                }
                self.publisher = Conn::Down(now + self.publisher_backoff.next_delay());
                self.first_attempt = false;
                self.status.publisher_connected = false;
                self.answer_unavailable();
            }
            Side::Subscriber => {
                self.subscriber = Conn::Down(now + self.subscriber_backoff.next_delay());
                self.status.subscriber_connected = false;
                self.status.room_subscriptions = 0;
                self.subscribing = Subscribing::Idle;
                self.changes.clear();
                self.subscribed.clear();
                // An idle publishing connection would look up until its next keepalive.
                if self.publisher == Conn::Up && self.sending.is_none() {
                    self.commands.push_back(Command::Ping(Side::Publisher));
                } else {
                    self.check_publisher = true;
                }
            }
        }
    }

    /// Whether what needs the publishing connection is taken now: while it is up, and during its
    /// first attempt (up to [`MAX_WAITING`]).
    fn takes(&self) -> bool {
        let held = || {
            let w = &self.waiting;
            w.publishes.len() + w.appends.len() + w.fetches.len()
        };
        self.publisher == Conn::Up || (self.first_attempt && held() < MAX_WAITING)
    }

    /// What waits for a publishing connection that is not there: publications are dropped and
    /// counted, appends and fetches answered unavailable (never left waiting).
    fn answer_unavailable(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        self.status.dropped_while_down += waiting.publishes.len() as u64;
        self.status.dropped_while_down += waiting.appends.len() as u64;
        for a in waiting.appends {
            let answer = ToHub::Appended(a.stream, Err(HistoryError::Unavailable));
            self.commands.push_back(Command::Deliver(answer));
        }
        for f in waiting.fetches {
            let answer = ToHub::Fetched(f.id, Err(HistoryError::Unavailable));
            self.commands.push_back(Command::Deliver(answer));
        }
    }

    /// A local publication to carry to the other nodes.
    pub fn handle_publish(&mut self, publication: &Publication) {
        let (channel, seq) = match &publication.target {
            Target::All | Target::User(_) => {
                self.seq += 1;
                (self.all.clone(), self.seq)
            }
            Target::Room(room) => (room_channel(self.config.system, room), 0),
            _ => return, // A connection's own frames are never replicated.
        };
        if !self.takes() {
            self.status.dropped_while_down += 1;
            return;
        }
        match wire::encode(self.config.node, seq, publication, None) {
            Ok(message) => self.waiting.publishes.push((channel, message)),
            Err(e) => self.status.error("encode", &e.to_string()),
        }
        self.flush();
    }

    /// This node's summary, as the hub gave it ([`Command::Summarize`]): written with the
    /// lease in the next batch, which reads every live node's.
    pub fn handle_summary(&mut self, summary: &NodeSummary) {
        if self.publisher != Conn::Up {
            return; // The other nodes' leases on this one run out: right, it cannot reach them.
        }
        self.waiting.lease = Some(wire::encode_summary(self.config.node, summary));
        self.flush();
    }

    /// This node's members of `room` changed ([`switchboard_hub::Output::Members`]): published
    /// on the room's channel, for the nodes with members of it (and every node, with every
    /// room's channel received).
    pub fn handle_members(&mut self, room: &str, members: &Members, hello: bool) {
        if self.publisher != Conn::Up {
            let was_hello = self.unsent.get(room).is_some_and(|(_, h)| *h);
            if self.unsent.contains_key(room) || self.unsent.len() < MAX_UNSENT_MEMBERS {
                self.unsent
                    .insert(room.to_owned(), (members.clone(), hello || was_hello));
            } else {
                self.status.dropped_while_down += 1;
            }
            return;
        }
        let channel = room_channel(self.config.system, room);
        let message = wire::encode_members(self.config.node, room, members, hello);
        self.waiting.publishes.push((channel, message));
        self.flush();
    }

    /// A kept publication of `stream` for the shared history (for `target`): appended and
    /// published with its position, then answered to the hub.
    pub fn handle_append(
        &mut self,
        stream: String,
        entry: Arc<Entry>,
        target: Target,
        epoch: Epoch,
    ) {
        let publication = Publication {
            target,
            except: None,
            tags: entry.tags.clone(),
            payload: entry.payload.clone(),
            kept: true,
        };
        let channel = match &publication.target {
            Target::Room(room) => room_channel(self.config.system, room),
            _ => self.all.clone(),
        };
        let message = wire::encode(self.config.node, 0, &publication, entry.publisher);
        match (self.takes(), message) {
            (true, Ok(message)) => {
                self.waiting.appends.push(Append {
                    stream,
                    entry,
                    channel,
                    message,
                    candidate: epoch,
                });
                self.flush();
            }
            _ => {
                self.status.dropped_while_down += 1;
                let answer = ToHub::Appended(stream, Err(HistoryError::Unavailable));
                self.commands.push_back(Command::Deliver(answer));
            }
        }
    }

    /// A fetch from the shared history, answered to the hub.
    pub fn handle_fetch(
        &mut self,
        id: FetchId,
        stream: String,
        since: Option<Position>,
        epoch: Epoch,
    ) {
        if !self.takes() {
            let answer = ToHub::Fetched(id, Err(HistoryError::Unavailable));
            self.commands.push_back(Command::Deliver(answer));
            return;
        }
        self.waiting.fetches.push(Fetch {
            id,
            stream,
            since,
            candidate: epoch,
        });
        self.flush();
    }

    /// A room got its first local member (`true`) or lost its last (`false`).
    pub fn handle_room(&mut self, room: String, opened: bool) {
        if opened {
            self.interest.open(room);
        } else {
            self.interest.close(&room);
        }
        self.follow_interest();
    }

    /// The hub's rooms, for reconciliation (room events may have been late or lost).
    pub fn handle_rooms(&mut self, rooms: Vec<String>) {
        if self.interest.replace(rooms) > 0 {
            self.follow_interest();
        }
    }

    /// Subscribe and unsubscribe room channels to match the interest (only while up, in
    /// `joined` mode: a connect subscribes to all of them anyway).
    fn follow_interest(&mut self) {
        if self.config.every_room || self.subscriber != Conn::Up {
            return;
        }
        let dirty = self.interest.take_dirty();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for room in dirty {
            match (self.interest.wants(&room), self.subscribed.contains(&room)) {
                (true, false) => add.push(room),
                (false, true) => remove.push(room),
                _ => {}
            }
        }
        for chunk in add.chunks(SUBSCRIBE_CHUNK) {
            self.subscribed.extend(chunk.iter().cloned());
            self.changes
                .push_back(Change::Subscribe(chunk.to_vec(), false));
        }
        for chunk in remove.chunks(SUBSCRIBE_CHUNK) {
            for r in chunk {
                self.subscribed.remove(r);
            }
            self.changes.push_back(Change::Unsubscribe(chunk.to_vec()));
        }
        if self.subscribing == Subscribing::Idle && !self.changes.is_empty() {
            self.subscribing = Subscribing::Change;
            self.next_change();
        }
    }

    /// Send the next subscription change, or finish.
    fn next_change(&mut self) {
        let Some(change) = self.changes.pop_front() else {
            let initial = self.subscribing == Subscribing::Initial;
            self.subscribing = Subscribing::Idle;
            self.status.room_subscriptions = self.subscribed.len() as u64;
            if initial {
                // May queue changes for room events that came while subscribing.
                self.subscriber_up();
            }
            return;
        };
        let command = match change {
            Change::Subscribe(channels, true) => Command::Subscribe {
                channels,
                pattern: true,
            },
            Change::Subscribe(rooms, false) => Command::Subscribe {
                channels: self.channels_of(rooms),
                pattern: false,
            },
            Change::Unsubscribe(rooms) => Command::Unsubscribe(self.channels_of(rooms)),
        };
        self.commands.push_back(command);
    }

    /// Room names to channel names (the `all` channel is named as is).
    fn channels_of(&self, rooms: Vec<String>) -> Vec<String> {
        rooms
            .into_iter()
            .map(|r| match r == self.all {
                true => r,
                false => room_channel(self.config.system, &r),
            })
            .collect()
    }

    fn subscriber_up(&mut self) {
        self.subscriber = Conn::Up;
        self.subscriber_backoff.reset();
        self.status.subscriber_connected = true;
        if self.subscriber_ever {
            self.status.reconnects += 1;
            if self.config.lease {
                // Other nodes' members may have changed meanwhile: ask them again.
                self.commands.push_back(Command::Deliver(ToHub::Resync));
            }
            if self.config.history {
                // Positioned publications may have gone by meanwhile.
                self.commands.push_back(Command::Deliver(ToHub::Check));
            }
        }
        self.subscriber_ever = true;
        // Rooms may have changed while it was away: reconcile now.
        if !self.config.every_room {
            self.commands.push_back(Command::ListRooms);
        }
        // Room events that came while subscribing.
        self.follow_interest();
    }

    /// The last subscription change went through (or failed: then the connection is lost).
    pub fn handle_subscribed(&mut self, now: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => self.next_change(),
            Err(e) => self.handle_failed(now, Side::Subscriber, &e),
        }
    }

    /// A message arrived on one of the subscribed channels.
    pub fn handle_message(&mut self, payload: Bytes) {
        if payload.first() == Some(&wire::MEMBERS_KIND) {
            match wire::decode_members(&payload) {
                Ok(m) if m.origin == self.config.node => {} // Our own, echoed back.
                Ok(m) => {
                    self.status.received += 1;
                    self.commands.push_back(Command::Deliver(ToHub::Members(m)));
                }
                Err(_) => self.status.invalid += 1,
            }
            return;
        }
        // A shared history's publication comes with its position in front; the rest is the
        // message, decoded in place (its payload shares `payload`'s buffer).
        let (position, start) = match positioned(&payload) {
            Some((p, rest)) if self.config.history => (Some(p), payload.len() - rest.len()),
            _ => (None, 0),
        };
        let env = match wire::decode(payload.slice(start..)) {
            Ok(env) => env,
            Err(_) => {
                self.status.invalid += 1;
                return;
            }
        };
        let Envelope {
            origin,
            seq,
            publication,
            publisher,
        } = env;
        let from_here = origin == self.config.node;
        let delivery = match position {
            Some(position) => ToHub::Positioned {
                publication,
                position,
                publisher,
                from_here,
            },
            None if from_here => return, // Our own, echoed back.
            None => {
                self.status.missed += self.gaps.observe(origin, seq);
                ToHub::Remote(publication)
            }
        };
        self.status.received += 1;
        self.commands.push_back(Command::Deliver(delivery));
    }

    /// The hub's queue could not take a delivery: it is dropped and counted, and a positioned
    /// one makes the hub check its streams (it will fetch what it missed).
    pub fn handle_hub_full(&mut self, dropped: &ToHub) {
        self.status.dropped_inbound += 1;
        self.status.received = self.status.received.saturating_sub(1);
        if matches!(dropped, ToHub::Positioned { .. }) {
            self.commands.push_back(Command::Deliver(ToHub::Check));
        }
    }

    /// The batch in flight was answered.
    pub fn handle_sent(&mut self, now: Instant, sent: Sent) {
        let Some(batch) = self.sending.take() else {
            return;
        };
        match sent.published {
            Ok(()) => self.status.published += batch.publishes as u64,
            Err(e) => {
                self.status.dropped_while_down += batch.publishes as u64;
                self.status.error("publish", &e);
            }
        }
        if batch.lease {
            match sent.cluster {
                Some(Ok(summaries)) => self.read_cluster(summaries),
                Some(Err(e)) => self.status.error("lease", &e),
                None => {}
            }
        }
        self.answer(batch, sent.appended, sent.fetched);
        match sent.lost {
            Some(e) => self.handle_failed(now, Side::Publisher, &e),
            None => {
                if std::mem::take(&mut self.check_publisher) {
                    self.commands.push_back(Command::Ping(Side::Publisher));
                }
                self.flush();
            }
        }
    }

    /// The live nodes' summaries as read with the lease: the others' go to the hub (an
    /// undecodable one is counted invalid and left out, as if that node were gone).
    fn read_cluster(&mut self, summaries: Vec<Bytes>) {
        let mut nodes = Vec::with_capacity(summaries.len());
        for bytes in summaries {
            match wire::decode_summary(&bytes) {
                Ok((node, _)) if node == self.config.node => {}
                Ok((node, summary)) => nodes.push((node.get(), summary)),
                Err(_) => self.status.invalid += 1,
            }
        }
        self.status.nodes = nodes.len() as u64;
        self.commands
            .push_back(Command::Deliver(ToHub::Cluster(nodes)));
    }

    /// Hand the hub every answer of `batch`, in order; one missing (a lost connection) is
    /// unavailable.
    fn answer(
        &mut self,
        batch: InFlight,
        appended: Vec<Result<Position, String>>,
        fetched: Vec<Result<Fetched, String>>,
    ) {
        let mut appended = appended.into_iter();
        for stream in batch.appends {
            let answer = match appended.next() {
                Some(Ok(p)) => {
                    self.status.published += 1;
                    Ok(p)
                }
                Some(Err(e)) => Err(self.unavailable("append", &e)),
                None => Err(HistoryError::Unavailable),
            };
            self.commands
                .push_back(Command::Deliver(ToHub::Appended(stream, answer)));
        }
        let mut fetched = fetched.into_iter();
        for id in batch.fetches {
            let answer = match fetched.next() {
                Some(Ok(f)) => Ok(f),
                Some(Err(e)) => Err(self.unavailable("fetch", &e)),
                None => Err(HistoryError::Unavailable),
            };
            self.commands
                .push_back(Command::Deliver(ToHub::Fetched(id, answer)));
        }
    }

    fn unavailable(&mut self, what: &str, error: &str) -> HistoryError {
        self.status.error(what, error);
        HistoryError::Unavailable
    }

    /// Start the next batch if the connection is up and free.
    fn flush(&mut self) {
        if self.publisher != Conn::Up || self.sending.is_some() || !self.has_waiting() {
            return;
        }
        let lease = self.waiting.lease.take();
        let w = &mut self.waiting;
        let n = w.publishes.len().min(BATCH);
        let publishes: Vec<_> = w.publishes.drain(..n).collect();
        let n = w.appends.len().min(BATCH);
        let appends: Vec<_> = w.appends.drain(..n).collect();
        let n = w.fetches.len().min(BATCH);
        let fetches: Vec<_> = w.fetches.drain(..n).collect();
        self.sending = Some(InFlight {
            publishes: publishes.len(),
            lease: lease.is_some(),
            appends: appends.iter().map(|a| a.stream.clone()).collect(),
            fetches: fetches.iter().map(|f| f.id).collect(),
        });
        self.busy = true;
        self.commands.push_back(Command::Send(Batch {
            publishes,
            appends,
            fetches,
            lease,
        }));
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Publisher => "publisher",
        Side::Subscriber => "subscriber",
    }
}

/// What a history append publishes: `P<epoch>:<offset>:` then the message. The position and
/// the message, `None` for anything else.
pub fn positioned(published: &[u8]) -> Option<(Position, &[u8])> {
    let rest = published.strip_prefix(b"P")?;
    let colon = rest.iter().position(|b| *b == b':')?;
    let epoch = Epoch::parse(std::str::from_utf8(&rest[..colon]).ok()?)?;
    let rest = &rest[colon + 1..];
    let colon = rest.iter().position(|b| *b == b':')?;
    let offset = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((Position { epoch, offset }, &rest[colon + 1..]))
}
