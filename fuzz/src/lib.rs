//! Shared pieces of the fuzz targets: an invariant-checking output drain, a protocol session
//! driver behind the `system` target (one target for every system in `SYSTEMS`, picked by the
//! input's first byte; its sessions include other nodes' members and lease reads), the
//! operation sequence behind `hub_ops`, and the bytes from Redis behind `backplane_wire`.
//!
//! Invariants checked, for any protocol:
//! - every `Transmit`, `Ping` and `PauseReading` goes to a connection the hub has not let go of
//!   (or one the driver itself reported closed, for outputs queued before that report); a
//!   `Close` names such a connection and ends it, so nothing reaches it afterwards;
//! - the closing contract: a report about a connection (`handle_frame`, `handle_activity`,
//!   `handle_flushed`, `handle_close`) is `Ok` while the hub knows it, including after the hub
//!   queued its `Close` and until the driver drained that `Close`, and `UnknownConnection` after;
//!   sessions that drain lazily hold outputs back so that reports land in that window;
//! - the hub's open connections are exactly the ones the driver believes open;
//! - no connection's queued bytes exceed `max_queued_bytes`, and the stats sum them;
//! - with replication on, the rooms announced opened and not closed are exactly the rooms;
//! - for `hub_ops` (a typed hub), every room's member count matches its member list and the
//!   members' own room lists;
//! - with history (protocol v2): every `Append` and `Fetch` is answered by a real engine
//!   ([`MemoryHistory`]), appends in order, fetches late and in any order, some failing; each
//!   append answer is one the hub waits for; on every v2 connection, the publications of a stream
//!   come with offsets that only grow within an epoch, never below the connection's
//!   `subscribed` position (no duplicate, no going back), whatever resumes, fetches and drops did;
//! - for the systems: a documented round trip is stable (decode, encode, decode, encode gives
//!   the same bytes), and a frame or request decoded by the system's decoder off the hub
//!   (`Frame::Decoded`, `handle_request`) has exactly the effect of the hub decoding it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Number, Value};
use switchboard_hub::cluster::{Member, Members, NodeSummary};
use switchboard_hub::history::{
    Epoch, FetchId, HistoryError, HistoryLimits, MemoryHistory, Position,
};
use switchboard_hub::{
    Bytes, CloseCode, Config, ConnectionHandle, Context, Dialect, DynDecode, DynHub, Filter, Frame,
    HistoryConfig, HttpRequest, Hub, Identity, Instant, Limits, Method, OpenInfo, Output, Protocol,
    Publication, RateLimit, RatePolicy, RawText, SlowConsumerPolicy, Target, Text, UnixTime,
    UnknownConnection,
};
use switchboard_protocol::{Direction, Options, SystemSpec, SYSTEMS};

/// The monotonic clock at the start: an arbitrary origin.
pub const T0: Instant = Instant::from_millis(42_000);

/// The wall clock at [`T0`]: 2025-01-01T12:30:00Z.
pub const WALL0: UnixTime = UnixTime::from_millis(1_735_734_600_000);

/// The API key the fuzzed protocols are configured with when a session asks for one.
pub const API_KEY: &str = "fuzz-key";

// ---------------------------------------------------------------------------------------------
// The driver's view of the hub, and the invariant checks

/// What the driver knows: which connections the hub knows, and what it sent them.
#[derive(Default)]
pub struct Tracker {
    /// Handles the hub still accepts reports about, in opening order: open, or closed by the
    /// hub with their `Close` not drained yet.
    pub open: Vec<ConnectionHandle>,
    /// Handles that ended (most recent last; bounded).
    pub closed: Vec<ConnectionHandle>,
    /// Handles the driver reported closed while the hub had them open: outputs the hub queued
    /// before that report may still come out, until the queue is next empty.
    gone: BTreeSet<ConnectionHandle>,
    /// Serials ever handed out, to catch reuse.
    serials: BTreeSet<u64>,
    /// Rooms announced to the backplane as opened and not since closed.
    announced: BTreeSet<String>,
    /// Bytes transmitted to each known handle and not yet reported flushed.
    queued: BTreeMap<ConnectionHandle, usize>,
    /// Known handles the driver reported more bytes flushed for than it saw transmitted: the
    /// hub's count for them saturated, so the driver's is no longer exact.
    inexact: BTreeSet<ConnectionHandle>,
    /// The history engine, when the hub keeps history.
    engine: Option<MemoryHistory>,
    /// Appends the engine kept whose positions the hub has not been told yet, oldest first.
    appends: VecDeque<(String, Position)>,
    /// Fetches asked and not answered yet.
    fetches: VecDeque<(FetchId, String, Option<Position>)>,
    /// Connections opened as protocol v2.
    v2: BTreeSet<ConnectionHandle>,
    /// Session ids the hub named (most recent last; bounded), for resumes.
    pub sessions: Vec<String>,
    /// The latest position of each stream each v2 connection was given: (epoch, offset).
    positions: BTreeMap<(ConnectionHandle, String), (String, u64)>,
    /// Rooms the driver ever tapped (a tapped publication may still be queued after an untap).
    pub tapped: BTreeSet<String>,
}

impl Tracker {
    /// A tracker for a hub configured with `config`: with an engine when it keeps history.
    pub fn for_config(config: &Config) -> Self {
        Tracker {
            engine: config
                .history
                .as_ref()
                .map(|h| MemoryHistory::new(h.limits, 7)),
            ..Tracker::default()
        }
    }

    /// A connection was accepted as protocol v2.
    pub fn opened_v2(&mut self, h: ConnectionHandle) {
        self.opened(h);
        self.v2.insert(h);
    }

    /// Streams some v2 connection was given a position in, with the latest position seen.
    pub fn streams(&self) -> Vec<(String, String, u64)> {
        let mut out: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        for ((_, stream), (epoch, offset)) in &self.positions {
            out.insert(stream, (epoch, *offset));
        }
        out.into_iter()
            .map(|(s, (e, o))| (s.to_string(), e.to_string(), o))
            .collect()
    }

    /// Whether appends or fetches wait for their answer.
    pub fn unanswered(&self) -> bool {
        !self.appends.is_empty() || !self.fetches.is_empty()
    }

    /// Answer up to `n` appends (in order) and `n` fetches (oldest or, `reversed`, newest first);
    /// with `fail`, as the engine failing. A fetch is computed now, so it may hold entries the
    /// hub has not been told the positions of yet.
    pub fn answer(
        &mut self,
        hub: &mut dyn DynHub,
        now: Instant,
        n: usize,
        reversed: bool,
        fail: bool,
    ) {
        for _ in 0..n {
            let Some((stream, position)) = self.appends.pop_front() else {
                break;
            };
            let answer = if fail {
                Err(HistoryError::Unavailable)
            } else {
                Ok(position)
            };
            assert!(
                hub.handle_appended(now, &stream, answer).is_ok(),
                "the hub did not wait for the append of {stream:?} it asked for"
            );
        }
        let engine = self.engine.as_mut();
        let Some(engine) = engine else { return };
        for _ in 0..n {
            let next = if reversed {
                self.fetches.pop_back()
            } else {
                self.fetches.pop_front()
            };
            let Some((id, stream, since)) = next else {
                break;
            };
            let answer = if fail {
                Err(HistoryError::Unavailable)
            } else {
                Ok(engine.fetch(now, &stream, since))
            };
            hub.handle_fetched(now, id, answer);
        }
    }

    /// Move the engine's clock (its age limit).
    pub fn engine_time(&mut self, now: Instant) {
        if let Some(engine) = &mut self.engine {
            engine.handle_timeout(now);
        }
    }

    /// A frame to a v2 connection: note sessions, and check that a stream's publications never
    /// go back or repeat.
    fn v2_frame(&mut self, h: ConnectionHandle, payload: &[u8]) {
        if !self.v2.contains(&h) {
            return;
        }
        let v: Value = serde_json::from_slice(payload)
            .unwrap_or_else(|e| panic!("a v2 frame that is not JSON ({e})"));
        let kind = v["sb"].as_str().expect("every v2 frame says what it is");
        let position = || {
            let stream = v["stream"].as_str()?.to_string();
            let epoch = v["epoch"].as_str()?.to_string();
            Some((stream, epoch, v["offset"].as_u64()?))
        };
        match kind {
            "session" => {
                if self.sessions.len() == 16 {
                    self.sessions.remove(0);
                }
                self.sessions
                    .push(v["session"].as_str().unwrap().to_string());
            }
            "pub" => {
                let (stream, epoch, offset) = position().expect("a publication has a position");
                let last = self.positions.get(&(h, stream.clone()));
                if let Some((e, o)) = last {
                    assert!(
                        *e != epoch || offset > *o,
                        "{h:?} got {stream:?} offset {offset} after {o} (epoch {epoch})"
                    );
                }
                self.positions.insert((h, stream), (epoch, offset));
            }
            "subscribed" => {
                if let Some((stream, epoch, offset)) = position() {
                    let last = self.positions.get(&(h, stream.clone()));
                    if let Some((e, o)) = last {
                        assert!(
                            *e != epoch || offset >= *o,
                            "{h:?} subscribed to {stream:?} at {offset}, below {o} it had"
                        );
                    }
                    self.positions.insert((h, stream), (epoch, offset));
                }
            }
            "msg" | "ack" | "gap" | "error" => {}
            other => panic!("an unknown v2 frame kind {other:?}"),
        }
    }

    /// A connection was accepted.
    pub fn opened(&mut self, h: ConnectionHandle) {
        assert!(
            self.serials.insert(h.serial()),
            "serial {h:?} handed out twice"
        );
        self.open.push(h);
    }

    /// Whether the hub must still accept reports about `h`.
    pub fn knows(&self, h: ConnectionHandle) -> bool {
        self.open.contains(&h)
    }

    /// `h` ended: its `Close` was drained, or the driver reported it closed.
    fn end(&mut self, h: ConnectionHandle) {
        let i = self
            .open
            .iter()
            .position(|o| *o == h)
            .unwrap_or_else(|| panic!("{h:?} ended but was not known"));
        self.open.remove(i);
        self.queued.remove(&h);
        self.inexact.remove(&h);
        self.v2.remove(&h);
        self.positions.retain(|(c, _), _| *c != h);
        if self.closed.len() == 64 {
            self.closed.remove(0);
        }
        self.closed.push(h);
    }

    /// Pick a handle (known or ended) from a byte, `None` if there are none.
    pub fn pick(&self, b: u8) -> Option<ConnectionHandle> {
        let n = self.open.len() + self.closed.len();
        if n == 0 {
            return None;
        }
        let i = usize::from(b) % n;
        Some(if i < self.open.len() {
            self.open[i]
        } else {
            self.closed[i - self.open.len()]
        })
    }

    /// The hub's answer to a report about `h` keeps the closing contract.
    pub fn expect(&self, h: ConnectionHandle, r: Result<(), UnknownConnection>, what: &str) {
        assert_eq!(
            r.is_ok(),
            self.knows(h),
            "{what} about {h:?} answered {r:?} (known: {})",
            self.knows(h)
        );
    }

    /// Report that the peer closed `h`.
    pub fn peer_close(&mut self, hub: &mut dyn DynHub, now: Instant, h: ConnectionHandle) {
        let was_open = hub.client_id(h).is_some();
        let r = hub.handle_close(now, h);
        self.expect(h, r, "a peer close");
        if was_open {
            // Gone at once. (Closed by the hub first, it stays known until its `Close` drains.)
            self.end(h);
            self.gone.insert(h);
        }
    }

    /// Report `n` bytes of `h` written; `beyond` allows more than the driver saw transmitted.
    pub fn flushed(
        &mut self,
        hub: &mut dyn DynHub,
        now: Instant,
        h: ConnectionHandle,
        n: usize,
        beyond: bool,
    ) {
        let sent = self.queued.get(&h).copied().unwrap_or(0);
        let n = if beyond { n } else { n.min(sent) };
        let r = hub.handle_flushed(now, h, n);
        self.expect(h, r, "a flush");
        if self.knows(h) {
            if n > sent {
                self.inexact.insert(h);
            }
            self.queued.insert(h, sent.saturating_sub(n));
        }
    }

    /// Check one frame the hub queued to `connection`, and report it written if `flush` says so.
    fn transmit(
        &mut self,
        hub: &mut dyn DynHub,
        now: Instant,
        max: usize,
        connection: ConnectionHandle,
        payload: &Text,
        flush: &mut impl FnMut(ConnectionHandle) -> bool,
    ) {
        if self.gone.contains(&connection) {
            let r = hub.handle_flushed(now, connection, payload.len());
            self.expect(connection, r, "a flush of a transmit queued before close");
            return;
        }
        assert!(
            self.knows(connection),
            "transmit to {connection:?}, which the hub let go"
        );
        self.v2_frame(connection, payload);
        let q = self.queued.entry(connection).or_default();
        *q += payload.len();
        assert!(
            self.inexact.contains(&connection) || *q <= max,
            "{connection:?} has {q} bytes queued, over the {max}-byte limit"
        );
        if flush(connection) {
            self.flushed(hub, now, connection, payload.len(), false);
        }
    }

    /// Drain up to `budget` outputs (`None`: all), checking each against what the hub knows; a
    /// transmit to a connection for which `flush` says yes is reported written at once. `eager`
    /// says the outputs were queued at `now` (drained right after the input that made them).
    /// Returns the replicated publications and whether the queue is now empty.
    pub fn drain(
        &mut self,
        hub: &mut dyn DynHub,
        now: Instant,
        eager: bool,
        budget: Option<usize>,
        mut flush: impl FnMut(ConnectionHandle) -> bool,
    ) -> (Vec<Publication>, bool) {
        let mut replicated = Vec::new();
        let max = hub.config().limits.max_queued_bytes;
        for _ in 0..budget.unwrap_or(usize::MAX) {
            let Some(out) = hub.poll_output() else {
                self.gone.clear();
                return (replicated, true);
            };
            match out {
                Output::Transmit {
                    connection,
                    payload,
                } => self.transmit(hub, now, max, connection, &payload, &mut flush),
                Output::Fanout {
                    payload,
                    recipients,
                } => {
                    assert!(recipients.len() >= 2, "a fan-out to {recipients:?}");
                    let distinct: BTreeSet<_> = recipients.iter().collect();
                    assert_eq!(distinct.len(), recipients.len(), "a recipient twice");
                    for connection in recipients {
                        self.transmit(hub, now, max, connection, &payload, &mut flush);
                    }
                }
                Output::Ping { connection } => {
                    assert!(
                        self.knows(connection) || self.gone.contains(&connection),
                        "ping to {connection:?}, which the hub let go"
                    );
                }
                Output::PauseReading { connection, until } => {
                    assert!(
                        self.knows(connection) || self.gone.contains(&connection),
                        "pause of {connection:?}, which the hub let go"
                    );
                    if eager && hub.client_id(connection).is_some() {
                        // At the end of time (`Clock::Anywhere(u64::MAX)`) nothing is later.
                        let end_of_time = until == Instant::from_micros(u64::MAX);
                        assert!(until > now || end_of_time, "a pause that is already over");
                        assert!(
                            hub.poll_timeout().is_some_and(|t| t <= until),
                            "no timer for a paused connection"
                        );
                    }
                }
                Output::Close { connection, .. } => {
                    assert!(
                        !self.gone.contains(&connection),
                        "close of {connection:?} after the driver reported it closed"
                    );
                    self.end(connection);
                    assert_eq!(
                        hub.handle_flushed(now, connection, 0),
                        Err(UnknownConnection),
                        "{connection:?} still known after its Close was drained"
                    );
                }
                Output::Replicate(p) => {
                    assert!(
                        !matches!(p.target, Target::Connection(_)),
                        "a connection-targeted publication was replicated"
                    );
                    replicated.push(*p);
                }
                Output::RoomOpened(r) => {
                    assert!(
                        self.announced.insert(r.clone()),
                        "{r:?} announced opened twice"
                    );
                }
                Output::RoomClosed(r) => {
                    assert!(
                        self.announced.remove(&r),
                        "{r:?} announced closed but not open"
                    );
                }
                Output::Append { stream, entry } => {
                    let engine = self.engine.as_mut().expect("an append without history");
                    let position = engine.append(now, &stream, entry);
                    self.appends.push_back((stream, position));
                }
                Output::Fetch { id, stream, since } => {
                    assert!(self.engine.is_some(), "a fetch without history");
                    self.fetches.push_back((id, stream, since));
                }
                Output::Tapped { room, .. } => {
                    assert!(self.tapped.contains(&room), "{room:?} tapped but not asked");
                }
                // A protocol that shares its members (collab) tells a cluster of them.
                Output::Members { room, .. } => {
                    assert!(
                        hub.config().replicate,
                        "members of {room:?} shared without a cluster"
                    );
                }
                other => panic!("an output this harness does not know: {other:?}"),
            }
        }
        (replicated, false)
    }

    /// After a full drain: the hub agrees with the driver, through the view every hub has.
    pub fn check(&self, hub: &dyn DynHub) {
        let stats = hub.stats();
        assert_eq!(
            stats.connections,
            self.open.len(),
            "the hub's open connections differ from the driver's"
        );
        for h in &self.open {
            assert!(
                hub.client_id(*h).is_some(),
                "{h:?} is open but does not resolve"
            );
        }
        for h in &self.closed {
            assert!(hub.client_id(*h).is_none(), "closed {h:?} still resolves");
        }
        if self.inexact.is_empty() {
            assert_eq!(
                stats.queued_bytes,
                self.queued.values().sum::<usize>(),
                "queued bytes differ from what was sent and not flushed"
            );
        }
        let rooms: BTreeSet<String> = hub.room_names().into_iter().collect();
        assert_eq!(stats.rooms, rooms.len());
        // With replication on, the backplane has heard of exactly the rooms that exist.
        let existing = if hub.config().replicate {
            rooms
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            self.announced, existing,
            "announced rooms differ from the hub's rooms"
        );
    }

    /// After a full drain, for a typed hub: rooms, members and queued bytes inside it.
    pub fn check_structure<P: Protocol>(&self, hub: &Hub<P>) {
        let mut open: Vec<_> = hub.connections().map(|c| c.handle).collect();
        open.sort();
        let mut mine = self.open.clone();
        mine.sort();
        assert_eq!(
            open, mine,
            "the hub's open connections differ from the driver's"
        );
        for h in &self.closed {
            assert!(hub.connection(*h).is_none(), "closed {h:?} still resolves");
            assert!(hub.rooms_of(*h).is_empty());
        }
        let max = hub.config().limits.max_queued_bytes;
        let mut memberships = 0;
        for c in hub.connections() {
            assert!(
                c.queued_bytes <= max,
                "{:?} has {} bytes queued, over the {max}-byte limit",
                c.handle,
                c.queued_bytes
            );
            if !self.inexact.contains(&c.handle) {
                assert_eq!(
                    Some(&c.queued_bytes),
                    self.queued.get(&c.handle).or(Some(&0)),
                    "{:?}: queued bytes differ from what was sent and not flushed",
                    c.handle
                );
            }
            memberships += hub.rooms_of(c.handle).len();
        }
        let mut members_total = 0;
        for (room, n) in hub.rooms() {
            assert!(n > 0, "empty room {room:?} kept");
            let members: Vec<_> = hub.room_members(room).map(|c| c.handle).collect();
            assert_eq!(members.len(), n, "member count of {room:?}");
            for m in members {
                assert!(
                    hub.rooms_of(m).iter().any(|r| r == room),
                    "{m:?} is listed in {room:?} but does not list it"
                );
            }
            members_total += n;
        }
        assert_eq!(
            members_total, memberships,
            "room lists and member lists disagree"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Structured inputs

/// A small config: limits low enough to be hit.
#[derive(Debug, Arbitrary)]
pub struct FuzzConfig {
    pub max_frame: u16,
    pub max_connections: u8,
    pub rooms_per_conn: u8,
    pub max_rooms: u8,
    pub max_queued: u16,
    pub close_slow: bool,
    pub rate: Option<(u8, u8)>,
    pub close_fast: bool,
    pub heartbeat_ms: Option<u16>,
    pub idle_ms: Option<u16>,
    pub replicate: bool,
    /// History (protocol v2): publications kept per stream, and the age (and session life) in
    /// steps of 50 ms.
    pub history: Option<(u8, u8)>,
    /// The history is shared by a cluster (positioned publications arrive with
    /// [`Step::Positioned`]).
    pub shared: bool,
}

impl FuzzConfig {
    /// The hub config it describes.
    pub fn build(&self) -> Config {
        Config {
            limits: Limits {
                max_frame_bytes: usize::from(self.max_frame),
                max_connections: usize::from(self.max_connections % 16) + 1,
                max_rooms_per_connection: usize::from(self.rooms_per_conn % 8),
                max_rooms: usize::from(self.max_rooms % 16),
                max_queued_bytes: usize::from(self.max_queued),
                slow_consumer: if self.close_slow {
                    SlowConsumerPolicy::Close
                } else {
                    SlowConsumerPolicy::Drop
                },
                inbound_rate: self.rate.map(|(p, b)| RateLimit {
                    per_second: u32::from(p),
                    burst: u32::from(b),
                }),
                rate_policy: if self.close_fast {
                    RatePolicy::Close
                } else {
                    RatePolicy::Throttle
                },
            },
            heartbeat_interval: self.heartbeat_ms.map(|ms| Duration::from_millis(ms.into())),
            idle_timeout: self.idle_ms.map(|ms| Duration::from_millis(ms.into())),
            replicate: self.replicate,
            history: self.history.map(|(entries, age)| {
                let age = Duration::from_millis(u64::from(age) * 50 + 1);
                HistoryConfig {
                    limits: HistoryLimits {
                        max_entries: usize::from(entries % 8),
                        max_age: age,
                        max_bytes: 4096,
                        max_streams: 4,
                    },
                    session_ttl: age,
                    max_detached_sessions: 3,
                    max_detached_bytes: 2048,
                    dedup_window: 4,
                    max_idempotency_keys: 4,
                    shared: self.shared,
                    ..HistoryConfig::with_seed([1; 32])
                }
            }),
        }
    }
}

/// How far the clock moves.
#[derive(Debug, Arbitrary)]
pub enum Clock {
    /// Forward by milliseconds.
    Forward(u16),
    /// Forward by seconds.
    ForwardSecs(u16),
    /// Backwards by milliseconds (the hub must treat it as no time passing).
    Back(u16),
    /// To the hub's next deadline.
    ToDeadline,
    /// To any instant at all, including the end of time.
    Anywhere(u64),
}

impl Clock {
    /// The new driver time.
    pub fn apply(&self, now: Instant, hub: &dyn DynHub) -> Instant {
        match *self {
            Clock::Forward(ms) => now + Duration::from_millis(ms.into()),
            Clock::ForwardSecs(s) => now + Duration::from_secs(s.into()),
            Clock::Back(ms) => {
                Instant::from_micros(now.as_micros().saturating_sub(u64::from(ms) * 1000))
            }
            Clock::ToDeadline => hub.poll_timeout().unwrap_or(now),
            Clock::Anywhere(t) => Instant::from_micros(t),
        }
    }
}

/// A JSON value for a structured frame or body.
#[derive(Debug, Arbitrary)]
pub enum Json {
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (non-finite ones become null).
    Float(f64),
    /// A string from the word list.
    Word(u8),
    /// Any string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object.
    Object(Vec<(Key, Json)>),
}

/// An object key: usually a common field name, sometimes anything.
#[derive(Debug, Arbitrary)]
pub enum Key {
    /// From the word list.
    Word(u8),
    /// Any string.
    Any(String),
}

/// Field names and values the seeds' messages use, so structured frames get past the first check.
const WORDS: &[&str] = &[
    "type",
    "id",
    "room",
    "rooms",
    "project",
    "projectId",
    "userId",
    "user",
    "userName",
    "name",
    "email",
    "session",
    "sessionId",
    "sessions",
    "channel",
    "topic",
    "data",
    "payload",
    "filter",
    "filters",
    "direction",
    "dock",
    "dockId",
    "event",
    "entity",
    "action",
    "table",
    "operation",
    "timestamp",
    "message",
    "token",
    "content",
    "cursor",
    "position",
    "x",
    "y",
    "status",
    "IB",
    "OB",
    "CHANGE",
    "cars",
    "times",
    "all",
    "*",
    "",
    "ping",
];

fn word(i: u8, extra: &[&str]) -> String {
    let i = usize::from(i) % (WORDS.len() + extra.len());
    WORDS
        .get(i)
        .copied()
        .unwrap_or_else(|| extra[i - WORDS.len()])
        .to_string()
}

impl Json {
    /// As a `serde_json::Value`, with `types` joining the word list.
    pub fn value(&self, types: &[&str]) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::Number((*i).into()),
            Json::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Word(w) => Value::String(word(*w, types)),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(a) => Value::Array(a.iter().map(|j| j.value(types)).collect()),
            Json::Object(o) => Value::Object(object(o, types)),
        }
    }
}

fn object(fields: &[(Key, Json)], types: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| {
            let k = match k {
                Key::Word(w) => word(*w, types),
                Key::Any(s) => s.clone(),
            };
            (k, v.value(types))
        })
        .collect()
}

/// A frame body: raw text, or a JSON object with a `type` from the protocol's client types.
#[derive(Debug, Arbitrary)]
pub enum Body {
    /// Any text.
    Text(String),
    /// `{"type": <one of the client types>, ...fields}`.
    Typed(u8, Vec<(Key, Json)>),
    /// Any JSON.
    Json(Json),
}

impl Body {
    /// The text.
    pub fn text(&self, types: &[&str]) -> String {
        match self {
            Body::Text(s) => s.clone(),
            Body::Typed(t, fields) => {
                let mut obj = object(fields, types);
                if !types.is_empty() {
                    let ty = types[usize::from(*t) % types.len()];
                    obj.insert("type".into(), Value::String(ty.into()));
                }
                Value::Object(obj).to_string()
            }
            Body::Json(j) => j.value(types).to_string(),
        }
    }
}

/// One step of a protocol session.
#[derive(Debug, Arbitrary)]
pub enum Step {
    /// Open a connection.
    Open {
        /// Query parameters: a word or any name, with any value.
        query: Vec<(Key, String)>,
        /// A verified identity.
        user: Option<String>,
        /// The dialect chosen at the upgrade.
        dialect: u8,
        /// Resume a session the hub named (picked by the byte), presenting positions of the
        /// streams seen, each this far back.
        resume: Option<(u8, Vec<u8>)>,
    },
    /// A v2 envelope around a message: an id from a small set (so resends happen), positions of
    /// streams seen (this far back), the message.
    Enveloped {
        conn: u8,
        id: Option<u8>,
        since: Vec<(u8, u8)>,
        body: Body,
    },
    /// The history engine answers up to `n` appends and fetches.
    Answer { n: u8, reversed: bool, fail: bool },
    /// A text frame, decoded by the hub or (`true`) by the system's decoder off the hub.
    Text(u8, Body, bool),
    /// A binary frame.
    Binary(u8, Vec<u8>),
    /// A pong or other sign of life.
    Activity(u8),
    /// The peer went away.
    Close(u8),
    /// The driver wrote `n` bytes (`true`: whatever it saw transmitted or not).
    Flushed(u8, u16, bool),
    /// An HTTP request.
    Http {
        /// Method selector.
        method: u8,
        /// A known path, or any.
        path: Result<u8, String>,
        /// Suffix appended to a known path (e.g. an id segment).
        suffix: Option<String>,
        /// Query parameters.
        query: Vec<(Key, String)>,
        /// Send the API key (and in which header).
        key: Option<bool>,
        /// The body.
        body: Body,
        /// Decoded off the hub (`handle_request`) rather than by it (`handle_http`).
        decoded: bool,
    },
    /// Publish from the server side.
    Publish(Body),
    /// A publication from another node.
    Remote(Body),
    /// Move the clock and run timers.
    Time(Clock),
    /// Drain up to `n` outputs (lazy sessions; the others drain after every step).
    Drain(u8),
    /// A kept publication to everyone from a shared history, at the offset `delta` away from
    /// the last one given (holes, repeats, going back), in the same epoch or a new one, made on
    /// this node or another.
    Positioned {
        body: Body,
        delta: i8,
        new_epoch: bool,
        from_here: bool,
    },
    /// Another node's members of a room (a project picked by the byte, or any room), as its
    /// `Members` message said: client ids, users and joined-at of its choosing, any total.
    RemoteMembers {
        node: u8,
        room: Result<u8, String>,
        members: Vec<(String, Option<String>, u64)>,
        total: u64,
        hello: bool,
    },
    /// A lease read: these nodes are live, with these connection counts (the others are gone).
    Cluster(Vec<(u8, u64)>),
}

/// A whole session against one protocol.
#[derive(Debug, Arbitrary)]
pub struct Session {
    /// The hub's limits.
    pub config: FuzzConfig,
    /// Configure the API key.
    pub with_api_key: bool,
    /// Drain only on [`Step::Drain`] (and at the end), so that reports land while outputs,
    /// `Close`s included, are still queued.
    pub lazy: bool,
    /// What happens.
    pub steps: Vec<Step>,
}

fn method(m: u8) -> Method {
    [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Head,
        Method::Options,
        Method::Other,
    ][usize::from(m) % 7]
}

/// `spec`'s hub, started as the runtime starts it, its wall clock apart from its monotonic one.
fn start(spec: &SystemSpec, options: &Options, config: Config) -> Box<dyn DynHub> {
    let mut hub = (spec.build)(options, config, T0);
    hub.set_wall_clock(T0, WALL0);
    hub
}

/// The paths a session calls: the root, the WebSocket path, and each route's (with and without
/// a variable part), all from the spec.
fn paths(spec: &SystemSpec) -> Vec<String> {
    let mut paths = vec!["/".to_string(), "/health".to_string()];
    paths.extend(spec.ws_path.map(String::from));
    for route in spec.routes {
        for arg in ["", "todo-created"] {
            paths.push(route.path.sample(arg));
        }
    }
    paths
}

/// The `system` target: `data[0]` picks the system (`SYSTEMS[data[0] % len]`), the rest goes to
/// its round trip in every direction, to its hub as one raw frame and HTTP body (decoded on and
/// off the hub, compared), and then, read as a structured [`Session`], to a fresh hub.
/// Panics only on a broken invariant (which is the bug the fuzzer looks for).
pub fn system(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let spec = &SYSTEMS[usize::from(pick) % SYSTEMS.len()];
    round_trips(spec, data);
    raw(spec, data);
    if let Ok(session) = Session::arbitrary_take_rest(Unstructured::new(data)) {
        run_session(spec, &session);
    }
}

/// Whatever decodes re-encodes to bytes that decode and re-encode to the same bytes.
fn round_trips(spec: &SystemSpec, data: &[u8]) {
    for dir in [
        Direction::ClientToServer,
        Direction::ServerToClient,
        Direction::Publish,
    ] {
        if let Ok(once) = (spec.round_trip)(dir, data) {
            let twice = (spec.round_trip)(dir, &once).unwrap_or_else(|e| {
                panic!(
                    "{} {dir:?}: {:?} re-encoded does not decode: {e}",
                    spec.name,
                    String::from_utf8_lossy(&once)
                )
            });
            assert_eq!(
                String::from_utf8_lossy(&once),
                String::from_utf8_lossy(&twice),
                "{} {dir:?}: re-encoding is not stable",
                spec.name
            );
        }
    }
}

/// The raw bytes as a frame (text if UTF-8, else binary) and as an HTTP body to each path, on two
/// hubs: one decodes them itself, the other is handed what the decoder made of them elsewhere.
fn raw(spec: &SystemSpec, data: &[u8]) {
    let options = Options::default().with_api_key(API_KEY);
    let mut hub = start(spec, &options, Config::default());
    let mut twin = start(spec, &options, Config::default());
    let decoder = twin.decoder();
    let mut t = Tracker::default();
    let info = OpenInfo {
        path: spec.ws_path.unwrap_or("/").into(),
        identity: Some(Identity::user("fuzz")),
        ..OpenInfo::default()
    };
    let (Ok(h), Ok(twin_h)) = (
        hub.handle_open(T0, info.clone()),
        twin.handle_open(T0, info),
    ) else {
        panic!("the first connection is under every limit");
    };
    assert_eq!(h, twin_h);
    t.opened(h);
    let same = |hub: &mut Box<dyn DynHub>, twin: &mut Box<dyn DynHub>, t: &mut Tracker| {
        let mine: Vec<Output> = std::iter::from_fn(|| twin.poll_output()).collect();
        // The tracker drains the first hub (flushing everything), the twin is compared with it.
        let mut theirs = Vec::new();
        while let Some(out) = hub.poll_output() {
            if let Output::Close { connection, .. } = &out {
                t.end(*connection);
            }
            theirs.push(out.clone());
            for out in out.split() {
                if let Output::Transmit {
                    connection,
                    payload,
                } = out
                {
                    let _ = hub.handle_flushed(T0, connection, payload.len());
                    let _ = twin.handle_flushed(T0, connection, payload.len());
                }
            }
        }
        assert_eq!(
            theirs, mine,
            "{}: decoded off the hub, the outputs differ",
            spec.name
        );
        assert_eq!(hub.stats(), twin.stats());
    };
    same(&mut hub, &mut twin, &mut t);
    let bytes = Bytes::copy_from_slice(data);
    let (frame, twin_frame) = match Text::from_utf8(bytes.clone()) {
        Ok(text) => (
            Frame::Text(text.clone()),
            Frame::Decoded {
                len: text.len(),
                message: decoder.decode(Dialect::V1, &text),
            },
        ),
        Err(b) => (Frame::Binary(b.clone()), Frame::Binary(b)),
    };
    let r = hub.handle_frame(T0, h, frame);
    t.expect(h, r, "a frame");
    let r = twin.handle_frame(T0, h, twin_frame);
    t.expect(h, r, "a frame");
    same(&mut hub, &mut twin, &mut t);
    for path in paths(spec) {
        for m in [Method::Post, Method::Put, Method::Get] {
            let req = HttpRequest {
                method: m,
                path: path.clone(),
                query: Vec::new(),
                headers: vec![
                    ("x-api-key".into(), API_KEY.into()),
                    ("content-type".into(), "application/json".into()),
                ],
                body: bytes.clone(),
            };
            let decoded = decoder.decode_request(req.clone());
            let answer = hub.handle_http(T0, req);
            assert_eq!(
                answer,
                twin.handle_request(T0, decoded),
                "{}: {path}",
                spec.name
            );
            same(&mut hub, &mut twin, &mut t);
        }
    }
    t.check(&*hub);
}

/// Run one [`Session`] against a fresh hub of `spec`'s system; what the driver saw.
pub fn run_session(spec: &SystemSpec, s: &Session) -> Tracker {
    let types = spec.client_types;
    let paths = paths(spec);
    let options = Options::default().with_api_keys(s.with_api_key.then_some(API_KEY));
    let config = s.config.build();
    let mut t = Tracker::for_config(&config);
    let mut hub = start(spec, &options, config);
    let decoder: Arc<dyn DynDecode> = hub.decoder();
    let mut dialects = BTreeMap::new();
    let mut now = T0;
    // Where the shared history's publications are ([`Step::Positioned`]).
    let mut positioned = Position {
        epoch: Epoch(1),
        offset: 0,
    };
    // Serials that are multiples of 3 never read on their own: they are the slow consumers.
    let reads = |h: ConnectionHandle| !h.serial().is_multiple_of(3);
    for step in &s.steps {
        match step {
            Step::Open {
                query,
                user,
                dialect,
                resume,
            } => {
                let mut query: Vec<(String, String)> = query
                    .iter()
                    .map(|(k, v)| (key(k, types), v.clone()))
                    .collect();
                if let (Some((pick, backs)), false) = (resume, t.sessions.is_empty()) {
                    let session = &t.sessions[usize::from(*pick) % t.sessions.len()];
                    query.push(("sb_session".into(), session.clone()));
                    for ((stream, epoch, offset), back) in t.streams().into_iter().zip(backs) {
                        let offset = offset.saturating_sub(u64::from(*back));
                        query.push(("sb_since".into(), format!("{stream}~{epoch}~{offset}")));
                    }
                }
                let info = OpenInfo {
                    path: spec.ws_path.unwrap_or("/").into(),
                    query,
                    identity: user.as_ref().map(Identity::user),
                    dialect: Dialect(*dialect),
                    receive_only: false,
                };
                if let Ok(h) = hub.handle_open(now, info) {
                    if Dialect(*dialect) == Dialect::V2 {
                        t.opened_v2(h);
                    } else {
                        t.opened(h);
                    }
                    dialects.insert(h, Dialect(*dialect));
                }
            }
            Step::Enveloped {
                conn,
                id,
                since,
                body,
            } => {
                if let Some(h) = t.pick(*conn) {
                    let mut envelope = Map::new();
                    envelope.insert("sb".into(), "msg".into());
                    if let Some(id) = id {
                        envelope.insert("id".into(), format!("m{}", id % 8).into());
                    }
                    let streams = t.streams();
                    if !since.is_empty() && !streams.is_empty() {
                        let positions = since
                            .iter()
                            .map(|(pick, back)| {
                                let (stream, epoch, offset) =
                                    &streams[usize::from(*pick) % streams.len()];
                                serde_json::json!({
                                    "stream": stream,
                                    "epoch": epoch,
                                    "offset": offset.saturating_sub(u64::from(*back)),
                                })
                            })
                            .collect();
                        envelope.insert("since".into(), Value::Array(positions));
                    }
                    let msg = body.text(types);
                    // The message as raw JSON text (or, when it is not JSON, as a string).
                    let msg = serde_json::from_str(&msg).unwrap_or(Value::String(msg));
                    envelope.insert("msg".into(), msg);
                    let text = Text::from(Value::Object(envelope).to_string());
                    let r = hub.handle_frame(now, h, Frame::Text(text));
                    t.expect(h, r, "an enveloped frame");
                }
            }
            Step::Answer { n, reversed, fail } => {
                t.answer(&mut *hub, now, usize::from(*n), *reversed, *fail);
            }
            Step::Text(c, body, off_hub) => {
                if let Some(h) = t.pick(*c) {
                    let text = Text::from(body.text(types));
                    let frame = if *off_hub {
                        let dialect = dialects.get(&h).copied().unwrap_or_default();
                        Frame::Decoded {
                            len: text.len(),
                            message: decoder.decode(dialect, &text),
                        }
                    } else {
                        Frame::Text(text)
                    };
                    let r = hub.handle_frame(now, h, frame);
                    t.expect(h, r, "a frame");
                }
            }
            Step::Binary(c, b) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_frame(now, h, Frame::Binary(b.clone().into()));
                    t.expect(h, r, "a binary frame");
                }
            }
            Step::Activity(c) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_activity(now, h);
                    t.expect(h, r, "activity");
                }
            }
            Step::Close(c) => {
                if let Some(h) = t.pick(*c) {
                    t.peer_close(&mut *hub, now, h);
                }
            }
            Step::Flushed(c, n, beyond) => {
                if let Some(h) = t.pick(*c) {
                    t.flushed(&mut *hub, now, h, usize::from(*n), *beyond);
                }
            }
            Step::Http {
                method: m,
                path,
                suffix,
                query,
                key: api_key,
                body,
                decoded,
            } => {
                let mut p = match path {
                    Ok(i) => paths[usize::from(*i) % paths.len()].clone(),
                    Err(s) => s.clone(),
                };
                if let Some(sfx) = suffix {
                    p.push_str(sfx);
                }
                let mut headers =
                    vec![("content-type".to_string(), "application/json".to_string())];
                match api_key {
                    Some(true) => headers.push(("x-api-key".into(), API_KEY.into())),
                    Some(false) => {
                        headers.push(("authorization".into(), format!("Bearer {API_KEY}")))
                    }
                    None => {}
                }
                let req = HttpRequest {
                    method: method(*m),
                    path: p,
                    query: query
                        .iter()
                        .map(|(k, v)| (key(k, types), v.clone()))
                        .collect(),
                    headers,
                    body: body.text(types).into_bytes().into(),
                };
                let _ = if *decoded {
                    hub.handle_request(now, decoder.decode_request(req))
                } else {
                    hub.handle_http(now, req)
                };
            }
            // Server-side payloads are JSON, as the hub requires with history (v2 wraps them).
            Step::Publish(body) => {
                hub.publish(now, Publication::to_all(json_text(body, types)));
            }
            Step::Remote(body) => {
                hub.handle_remote(now, Publication::to_all(json_text(body, types)));
            }
            Step::RemoteMembers {
                node,
                room,
                members,
                total,
                hello,
            } => {
                let room = match room {
                    Ok(b) => format!("project:p{}", b % 3),
                    Err(any) => any.clone(),
                };
                let listed = members
                    .iter()
                    .map(|(client_id, user, joined_at)| Member {
                        client_id: client_id.clone(),
                        user: user.clone(),
                        joined_at: *joined_at,
                    })
                    .collect();
                let members = Members {
                    listed,
                    total: *total,
                };
                hub.handle_remote_members(now, u64::from(*node % 4), &room, members, *hello);
            }
            Step::Cluster(nodes) => {
                let nodes = nodes
                    .iter()
                    .map(|(node, connections)| {
                        let summary = NodeSummary {
                            connections: *connections,
                            rooms: u64::MAX,
                            clients: Vec::new(),
                        };
                        (u64::from(*node % 4), summary)
                    })
                    .collect();
                hub.handle_cluster(now, nodes);
            }
            Step::Positioned {
                body,
                delta,
                new_epoch,
                from_here,
            } => {
                if *new_epoch {
                    positioned.epoch.0 += 1;
                }
                let offset = positioned.offset.saturating_add_signed(i64::from(*delta));
                positioned.offset = offset.max(1);
                let p = Publication::to_all(json_text(body, types)).keep();
                hub.handle_positioned(now, p, positioned, None, *from_here);
            }
            Step::Time(clock) => {
                now = clock.apply(now, &*hub);
                hub.handle_timeout(now);
                t.engine_time(now);
            }
            Step::Drain(n) => {
                let (_, empty) = t.drain(&mut *hub, now, false, Some(usize::from(*n)), reads);
                if empty {
                    t.check(&*hub);
                }
            }
        }
        if !s.lazy {
            t.drain(&mut *hub, now, true, None, reads);
            t.check(&*hub);
        }
    }
    t.drain(&mut *hub, now, !s.lazy, None, reads);
    // Every question to the engine gets its answer in the end (answers make new questions:
    // a replay's connection may join, a resend may publish).
    for _ in 0..64 {
        if !t.unanswered() {
            break;
        }
        t.answer(&mut *hub, now, usize::MAX, false, false);
        t.drain(&mut *hub, now, !s.lazy, None, reads);
    }
    t.check(&*hub);
    t
}

/// The body's text if it is JSON, else the text as a JSON string.
fn json_text(body: &Body, types: &[&str]) -> String {
    let text = body.text(types);
    match serde_json::from_str::<Value>(&text) {
        Ok(_) => text,
        Err(_) => Value::String(text).to_string(),
    }
}

fn key(k: &Key, types: &[&str]) -> String {
    match k {
        Key::Word(w) => word(*w, types),
        Key::Any(s) => s.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// hub_ops: the hub itself under a command protocol

/// A protocol whose clients act on rooms, filters and identity directly:
/// `j<room>`, `l<room>`, `f<k>=<v>,..`, `u<user>`, `e<text>` (echo), `x` (quit).
pub struct Commands;

impl Protocol for Commands {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "commands"
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
        let text = frame.as_str();
        let mut chars = text.chars();
        let cmd = chars.next();
        let arg = chars.as_str();
        match cmd {
            Some('j') => {
                let _ = cx.join(conn, arg);
            }
            Some('l') => {
                cx.leave(conn, arg);
            }
            Some('f') => cx.set_filter(
                conn,
                Filter::new(
                    arg.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                ),
            ),
            Some('u') => cx.set_identity(conn, Identity::user(arg)),
            Some('e') => {
                // `e` is one byte: the rest starts at a character boundary.
                cx.send(conn, frame.slice_from(1).expect("after an ASCII letter"));
            }
            Some('x') => cx.close(conn, CloseCode::NORMAL, "quit"),
            _ => cx.count_error("unknown"),
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, rooms: &[String]) {
        // The rooms were left before the protocol hears of the close.
        for r in rooms {
            assert!(!cx.is_member(conn, r), "closed {conn:?} still in {r:?}");
        }
        assert!(
            cx.connection(conn).is_none(),
            "closed {conn:?} still resolves"
        );
    }
}

/// A small name, so that rooms, users and tags collide.
fn small(b: u8) -> String {
    format!("n{}", b % 5)
}

/// One hub operation.
#[derive(Debug, Arbitrary)]
pub enum HubOp {
    /// Open, with an optional identity.
    Open(Option<u8>),
    /// Peer close.
    PeerClose(u8),
    /// Server close.
    ServerClose(u8, u16),
    /// Join a room.
    Join(u8, u8),
    /// Leave a room.
    Leave(u8, u8),
    /// Replace the filter.
    Filter(u8, Vec<(u8, u8)>),
    /// Set the identity.
    User(u8, u8),
    /// Echo `n` bytes back.
    Echo(u8, u8),
    /// Any text frame, decoded by the hub or (`true`) handed over decoded.
    Text(u8, String, bool),
    /// Any binary frame.
    Binary(u8, Vec<u8>),
    /// Sign of life.
    Activity(u8),
    /// Report bytes written (`true`: whatever was transmitted or not).
    Flushed(u8, u16, bool),
    /// Publish.
    Publish {
        /// 0 all, 1 room, 2 user, 3 connection.
        target: (u8, u8),
        /// Leave one connection out.
        except: Option<u8>,
        /// Filter tags.
        tags: Option<Vec<(u8, u8)>>,
        /// Payload size.
        len: u16,
        /// As if from another node.
        remote: bool,
    },
    /// Move the clock and run timers.
    Time(Clock),
    /// Shut down.
    CloseAll,
    /// Drain up to `n` outputs (lazy runs; the others drain after every operation).
    Drain(u8),
    /// Tap a room at up to this many publications a second (an inspector's tail).
    Tap(u8, u8),
    /// Untap a room.
    Untap(u8),
}

/// A config and a sequence of operations.
#[derive(Debug, Arbitrary)]
pub struct HubOps {
    /// The hub's limits.
    pub config: FuzzConfig,
    /// Drain only on [`HubOp::Drain`] (and at the end).
    pub lazy: bool,
    /// What happens.
    pub ops: Vec<HubOp>,
}

/// Run `data` as a [`HubOps`] sequence, checking the invariants after every full drain.
pub fn hub_ops(data: &[u8]) {
    if let Ok(input) = HubOps::arbitrary_take_rest(Unstructured::new(data)) {
        run_hub_ops(&input);
    }
}

/// Run one [`HubOps`] sequence, checking the invariants after every full drain.
pub fn run_hub_ops(input: &HubOps) {
    let config = input.config.build();
    let mut t = Tracker::for_config(&config);
    let mut hub = Hub::new(config, Commands, T0);
    let mut now = T0;
    // Serials that are multiples of 4 never read: they are the slow consumers.
    let reads = |h: ConnectionHandle| !h.serial().is_multiple_of(4);
    let mut replicated = Vec::new();
    let mut remote = false;
    // The rooms tapped now.
    let mut taps = BTreeSet::new();
    for op in &input.ops {
        let frame = |hub: &mut Hub<Commands>, t: &Tracker, c: u8, f: Frame<Text>| {
            if let Some(h) = t.pick(c) {
                let r = hub.handle_frame(now, h, f);
                t.expect(h, r, "a frame");
            }
        };
        match op {
            HubOp::Open(user) => {
                let info = OpenInfo {
                    identity: user.map(|u| Identity::user(small(u))),
                    ..OpenInfo::default()
                };
                let full = hub.stats().connections >= hub.config().limits.max_connections;
                match hub.handle_open(now, info) {
                    Ok(h) => {
                        assert!(!full, "opened past max_connections");
                        t.opened(h);
                    }
                    Err(_) => assert!(full, "refused under max_connections"),
                }
            }
            HubOp::PeerClose(c) => {
                if let Some(h) = t.pick(*c) {
                    t.peer_close(&mut hub, now, h);
                }
            }
            HubOp::ServerClose(c, code) => {
                if let Some(h) = t.pick(*c) {
                    hub.close(now, h, CloseCode(*code), "fuzz");
                }
            }
            HubOp::Join(c, r) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(text(format!("j{}", small(*r)))),
            ),
            HubOp::Leave(c, r) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(text(format!("l{}", small(*r)))),
            ),
            HubOp::Filter(c, f) => {
                let spec: Vec<_> = f
                    .iter()
                    .map(|(k, v)| format!("{}={}", small(*k), small(*v)))
                    .collect();
                frame(
                    &mut hub,
                    &t,
                    *c,
                    Frame::Text(text(format!("f{}", spec.join(",")))),
                );
            }
            HubOp::User(c, u) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(text(format!("u{}", small(*u)))),
            ),
            HubOp::Echo(c, n) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(text(format!("e{}", "e".repeat(usize::from(*n))))),
            ),
            HubOp::Text(c, s, decoded) => {
                let s = text(s.clone());
                let f = if *decoded {
                    Frame::Decoded {
                        len: s.len(),
                        message: s,
                    }
                } else {
                    Frame::Text(s)
                };
                frame(&mut hub, &t, *c, f);
            }
            HubOp::Binary(c, b) => frame(&mut hub, &t, *c, Frame::Binary(b.clone().into())),
            HubOp::Activity(c) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_activity(now, h);
                    t.expect(h, r, "activity");
                }
            }
            HubOp::Flushed(c, n, beyond) => {
                if let Some(h) = t.pick(*c) {
                    t.flushed(&mut hub, now, h, usize::from(*n), *beyond);
                }
            }
            HubOp::Publish {
                target: (kind, arg),
                except,
                tags,
                len,
                remote: from_remote,
            } => {
                let target = match kind % 4 {
                    0 => Target::All,
                    1 => Target::Room(small(*arg)),
                    2 => Target::User(small(*arg)),
                    _ => match t.pick(*arg) {
                        Some(h) => Target::Connection(h),
                        None => Target::All,
                    },
                };
                let p = Publication {
                    target,
                    except: except.and_then(|e| t.pick(e)),
                    tags: tags
                        .as_ref()
                        .map(|tags| tags.iter().map(|(k, v)| (small(*k), small(*v))).collect()),
                    payload: text("p".repeat(usize::from(*len))),
                    // Without history, keeping must change nothing.
                    kept: *len % 2 == 1,
                };
                let delivered = if *from_remote {
                    remote = true;
                    hub.handle_remote(now, p)
                } else {
                    hub.publish(now, p)
                };
                assert!(delivered <= t.open.len());
            }
            HubOp::Time(clock) => {
                now = clock.apply(now, &hub);
                hub.handle_timeout(now);
                t.engine_time(now);
                // The engine answers now and then (here: when time moves).
                t.answer(&mut hub, now, usize::MAX, false, false);
            }
            HubOp::CloseAll => hub.close_all(now, CloseCode::GOING_AWAY, "shutdown"),
            HubOp::Tap(r, per_second) => {
                let rate = RateLimit {
                    per_second: u32::from(*per_second),
                    burst: 1,
                };
                // Fewer room names (five) than taps allowed: never refused.
                hub.tap(now, &small(*r), rate).expect("under MAX_TAPS");
                taps.insert(small(*r));
                t.tapped.insert(small(*r));
            }
            HubOp::Untap(r) => {
                assert_eq!(hub.untap(&small(*r)), taps.remove(&small(*r)));
            }
            HubOp::Drain(n) => {
                let (r, empty) = t.drain(&mut hub, now, false, Some(usize::from(*n)), reads);
                replicated.extend(r);
                if empty {
                    t.check(&hub);
                    t.check_structure(&hub);
                }
            }
        }
        if !input.lazy {
            let (r, _) = t.drain(&mut hub, now, true, None, reads);
            // A publication from another node is never replicated again.
            assert!(
                !remote || r.is_empty(),
                "a remote publication replicated: {r:?}"
            );
            replicated.extend(r);
            t.check(&hub);
            t.check_structure(&hub);
        }
        remote = false;
        let tapped: BTreeSet<String> = hub.tapped().map(String::from).collect();
        assert_eq!(tapped, taps, "the hub taps what it was asked to");
        assert!(
            hub.config().replicate || replicated.is_empty(),
            "replicated without replication on: {replicated:?}"
        );
        replicated.clear();
    }
    let (r, _) = t.drain(&mut hub, now, !input.lazy, None, reads);
    assert!(
        hub.config().replicate || r.is_empty(),
        "replicated without replication on: {r:?}"
    );
    t.answer(&mut hub, now, usize::MAX, false, false);
    t.drain(&mut hub, now, !input.lazy, None, reads);
    assert!(!t.unanswered(), "answers to the engine made more questions");
    t.check(&hub);
    t.check_structure(&hub);
}

fn text(s: String) -> Text {
    Text::from(s)
}

// ---------------------------------------------------------------------------------------------
// The backplane's wire: what other nodes (or anyone who can publish to Redis) send

/// Feed `data` to every decoder of the backplane's wire and to its state machine's
/// `handle_message`: never a panic; a `Members` or summary that decodes encodes back to bytes
/// that decode the same (their lists capped as the decoder caps them).
pub fn backplane_wire(data: &[u8]) {
    use switchboard_backplane::{wire, Backplane, Command, Config, NodeId, Side};
    let bytes = Bytes::copy_from_slice(data);
    let _ = wire::decode(bytes.clone());
    if let Ok(m) = wire::decode_members(data) {
        let again = wire::encode_members(m.origin, &m.room, &m.members, m.hello);
        assert_eq!(
            wire::decode_members(&again).as_ref(),
            Ok(&m),
            "members round trip"
        );
    }
    if let Ok((node, summary)) = wire::decode_summary(data) {
        let again = wire::encode_summary(node, &summary);
        assert_eq!(
            wire::decode_summary(&again),
            Ok((node, summary)),
            "summary round trip"
        );
    }
    for history in [false, true] {
        let config = Config {
            system: "fuzz",
            node: NodeId::new(1),
            every_room: true,
            history,
            seed: 1,
            lease: true,
        };
        let mut m = Backplane::new(config, T0);
        m.handle_timeout(T0);
        m.handle_connected(T0, Side::Publisher);
        m.handle_connected(T0, Side::Subscriber);
        while m.poll_command().is_some() {}
        let before = m.status();
        m.handle_message(bytes.clone());
        let after = m.status();
        let delivered = std::iter::from_fn(|| m.poll_command())
            .filter(|c| matches!(c, Command::Deliver(_)))
            .count();
        // Each message is either handed over, skipped as this node's own, or counted invalid.
        assert!(delivered <= 1);
        assert!(after.invalid <= before.invalid + 1);
        assert!(delivered == 0 || after.invalid == before.invalid);
    }
}
