//! Shared pieces of the fuzz targets: an invariant-checking output drain, a protocol session
//! driver for the `decode_<system>` targets, and the operation sequence behind `hub_ops`.
//!
//! Invariants checked after every input, for any protocol:
//! - every `Transmit` and `Ping` goes to a connection that is open at that point of the drain;
//!   a `Close` names an open connection and ends it (so a closed handle never receives anything);
//! - the hub's open connections are exactly the ones the driver believes open;
//! - no connection's queued bytes exceed `max_queued_bytes`, and the stats sum them;
//! - every room's member count matches its member list and the members' own room lists;
//! - with replication on, the rooms announced opened and not closed are exactly the rooms.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Number, Value};
use switchboard_hub::{
    Bytes, CloseCode, Config, ConnectionHandle, Context, Filter, Frame, HttpRequest, Hub, Identity,
    Instant, Limits, Method, OpenInfo, Output, Protocol, Publication, RateLimit,
    RatePolicy, SlowConsumerPolicy, Target,
};
use switchboard_protocol::{Options, SystemSpec};

/// 2025-01-01T12:30:00Z
pub const T0: Instant = Instant::from_millis(1_735_734_600_000);

/// The API key the fuzzed protocols are configured with when a session asks for one.
pub const API_KEY: &str = "fuzz-key";

// ---------------------------------------------------------------------------------------------
// The driver's view of the hub, and the invariant checks

/// What the driver knows: which connections are open.
#[derive(Default)]
pub struct Tracker {
    /// Handles open as far as the driver knows, in opening order.
    pub open: Vec<ConnectionHandle>,
    /// Handles that closed (most recent last; bounded).
    pub closed: Vec<ConnectionHandle>,
    /// Serials ever handed out, to catch reuse.
    serials: BTreeSet<u64>,
    /// Rooms announced to the backplane as opened and not since closed.
    announced: BTreeSet<String>,
}

impl Tracker {
    /// A connection was accepted.
    pub fn opened(&mut self, h: ConnectionHandle) {
        assert!(
            self.serials.insert(h.serial()),
            "serial {h:?} handed out twice"
        );
        self.open.push(h);
    }

    /// A connection ended (peer close, or a `Close` output).
    pub fn ended(&mut self, h: ConnectionHandle) {
        let i = self
            .open
            .iter()
            .position(|o| *o == h)
            .unwrap_or_else(|| panic!("{h:?} ended but was not open"));
        self.open.remove(i);
        if self.closed.len() == 64 {
            self.closed.remove(0);
        }
        self.closed.push(h);
    }

    /// Pick a handle (open or closed) from a byte, `None` if there are none.
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

    /// Drain every output, checking each against what is open; a transmit to a connection for
    /// which `flush` says yes is reported written at once. Returns the replicated publications.
    pub fn drain(
        &mut self,
        hub: &mut Hub,
        now: Instant,
        mut flush: impl FnMut(ConnectionHandle) -> bool,
    ) -> Vec<Publication> {
        let mut replicated = Vec::new();
        while let Some(out) = hub.poll_output() {
            match out {
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    assert!(
                        self.open.contains(&connection),
                        "transmit to {connection:?}, which is not open"
                    );
                    if flush(connection) {
                        hub.handle_flushed(now, connection, payload.len())
                            .expect("open connections accept flushes");
                    }
                }
                Output::Ping { connection } => {
                    assert!(
                        self.open.contains(&connection),
                        "ping to {connection:?}, which is not open"
                    );
                }
                Output::PauseReading { connection, until } => {
                    assert!(
                        self.open.contains(&connection),
                        "pause of {connection:?}, which is not open"
                    );
                    assert!(until > now, "a pause that is already over");
                    assert!(
                        hub.poll_timeout().is_some_and(|t| t <= until),
                        "no timer for a paused connection"
                    );
                }
                Output::Close { connection, .. } => self.ended(connection),
                Output::Replicate(p) => {
                    assert!(
                        !matches!(p.target, Target::Connection(_)),
                        "a connection-targeted publication was replicated"
                    );
                    replicated.push(p);
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
            }
        }
        replicated
    }

    /// Check the hub's state against the driver's view and its own consistency.
    pub fn check(&self, hub: &Hub) {
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
        let mut queued = 0;
        let mut memberships = 0;
        for c in hub.connections() {
            assert!(
                c.queued_bytes <= max,
                "{:?} has {} bytes queued, over the {max}-byte limit",
                c.handle,
                c.queued_bytes
            );
            queued += c.queued_bytes;
            memberships += hub.rooms_of(c.handle).len();
        }
        let stats = hub.stats();
        assert_eq!(stats.queued_bytes, queued);
        assert_eq!(stats.connections, self.open.len());
        let mut members_total = 0;
        let mut rooms = 0;
        for (room, n) in hub.rooms() {
            rooms += 1;
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
        assert_eq!(stats.rooms, rooms);
        // With replication on, the backplane has heard of exactly the rooms that exist.
        let existing: BTreeSet<String> = if hub.config().replicate {
            hub.rooms().map(|(r, _)| r.to_string()).collect()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            self.announced, existing,
            "announced rooms differ from the hub's rooms"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Structured inputs

/// A small config: limits low enough to be hit.
#[derive(Debug, Arbitrary)]
pub struct FuzzConfig {
    max_frame: u16,
    max_connections: u8,
    rooms_per_conn: u8,
    max_rooms: u8,
    max_queued: u16,
    close_slow: bool,
    rate: Option<(u8, u8)>,
    close_fast: bool,
    heartbeat_ms: Option<u16>,
    idle_ms: Option<u16>,
    replicate: bool,
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
    pub fn apply(&self, now: Instant, hub: &Hub) -> Instant {
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
    /// The bytes.
    pub fn bytes(&self, types: &[&str]) -> Vec<u8> {
        match self {
            Body::Text(s) => s.clone().into_bytes(),
            Body::Typed(t, fields) => {
                let mut obj = object(fields, types);
                if !types.is_empty() {
                    let ty = types[usize::from(*t) % types.len()];
                    obj.insert("type".into(), Value::String(ty.into()));
                }
                serde_json::to_vec(&Value::Object(obj)).expect("a Value always serialises")
            }
            Body::Json(j) => serde_json::to_vec(&j.value(types)).expect("serialises"),
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
    },
    /// A text frame.
    Text(u8, Body),
    /// A binary frame.
    Binary(u8, Vec<u8>),
    /// A pong or other sign of life.
    Activity(u8),
    /// The peer went away.
    Close(u8),
    /// The driver wrote `n` bytes.
    Flushed(u8, u16),
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
    },
    /// Publish from the server side.
    Publish(Body),
    /// A publication from another node.
    Remote(Body),
    /// Move the clock and run timers.
    Time(Clock),
}

/// A whole session against one protocol.
#[derive(Debug, Arbitrary)]
pub struct Session {
    config: FuzzConfig,
    with_api_key: bool,
    steps: Vec<Step>,
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

/// Feed `data` to a hub running `spec`'s protocol: first the raw bytes as a frame (text if
/// UTF-8, else binary) and as an HTTP body to each path, then the same bytes read as a structured
/// [`Session`]. Panics only on a broken invariant (which is the bug the fuzzer looks for).
pub fn drive_protocol(spec: &SystemSpec, client_types: &[&str], paths: &[&str], data: &[u8]) {
    raw(spec, paths, data);
    if let Ok(session) = Session::arbitrary_take_rest(Unstructured::new(data)) {
        structured(spec, client_types, paths, &session);
    }
}

fn raw(spec: &SystemSpec, paths: &[&str], data: &[u8]) {
    let options = Options::default().with_api_key(API_KEY);
    let mut hub = Hub::new(Config::default(), (spec.build)(&options), T0);
    let mut t = Tracker::default();
    let info = OpenInfo {
        path: spec.ws_path.unwrap_or("/").into(),
        ..OpenInfo::default()
    };
    let Ok(h) = hub.handle_open(T0, info) else {
        return;
    };
    t.opened(h);
    t.drain(&mut hub, T0, |_| true);
    let body = Bytes::copy_from_slice(data);
    let frame = match std::str::from_utf8(data) {
        Ok(_) => Frame::Text(body.clone()),
        Err(_) => Frame::Binary(body.clone()),
    };
    if t.open.contains(&h) {
        hub.handle_frame(T0, h, frame).expect("open");
        t.drain(&mut hub, T0, |_| true);
    }
    for path in paths {
        for m in [Method::Post, Method::Put, Method::Get] {
            let req = HttpRequest {
                method: m,
                path: (*path).into(),
                query: Vec::new(),
                headers: vec![
                    ("x-api-key".into(), API_KEY.into()),
                    ("content-type".into(), "application/json".into()),
                ],
                body: body.clone(),
            };
            let _ = hub.handle_http(T0, &req);
            t.drain(&mut hub, T0, |_| true);
        }
    }
    t.check(&hub);
}

fn structured(spec: &SystemSpec, types: &[&str], paths: &[&str], s: &Session) {
    let options = Options {
        api_keys: s.with_api_key.then(|| API_KEY.to_string()).into_iter().collect(),
        ..Options::default()
    };
    let mut hub = Hub::new(s.config.build(), (spec.build)(&options), T0);
    let mut t = Tracker::default();
    let mut now = T0;
    for step in &s.steps {
        match step {
            Step::Open { query, user } => {
                let info = OpenInfo {
                    path: spec.ws_path.unwrap_or("/").into(),
                    query: query
                        .iter()
                        .map(|(k, v)| (key(k, types), v.clone()))
                        .collect(),
                    identity: user.as_ref().map(Identity::user),
                };
                if let Ok(h) = hub.handle_open(now, info) {
                    t.opened(h);
                }
            }
            Step::Text(c, body) => {
                if let Some(h) = t.pick(*c) {
                    let frame = Frame::Text(body.bytes(types).into());
                    let open = t.open.contains(&h);
                    assert_eq!(hub.handle_frame(now, h, frame).is_ok(), open);
                }
            }
            Step::Binary(c, b) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_frame(now, h, Frame::Binary(b.clone().into()));
                    assert_eq!(r.is_ok(), t.open.contains(&h));
                }
            }
            Step::Activity(c) => {
                if let Some(h) = t.pick(*c) {
                    assert_eq!(hub.handle_activity(now, h).is_ok(), t.open.contains(&h));
                }
            }
            Step::Close(c) => {
                if let Some(h) = t.pick(*c) {
                    let open = t.open.contains(&h);
                    assert_eq!(hub.handle_close(now, h).is_ok(), open);
                    if open {
                        t.ended(h);
                    }
                }
            }
            Step::Flushed(c, n) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_flushed(now, h, usize::from(*n));
                    assert_eq!(r.is_ok(), t.open.contains(&h));
                }
            }
            Step::Http {
                method: m,
                path,
                suffix,
                query,
                key: api_key,
                body,
            } => {
                let mut p = match path {
                    Ok(i) if !paths.is_empty() => paths[usize::from(*i) % paths.len()].to_string(),
                    Ok(_) => "/".into(),
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
                    body: body.bytes(types).into(),
                };
                let _ = hub.handle_http(now, &req);
            }
            Step::Publish(body) => {
                hub.publish(now, Publication::to_all(body.bytes(types)));
            }
            Step::Remote(body) => {
                hub.handle_remote(now, Publication::to_all(body.bytes(types)));
            }
            Step::Time(clock) => {
                now = clock.apply(now, &hub);
                hub.handle_timeout(now);
            }
        }
        // Serials that are multiples of 3 never read on their own: they are the slow consumers.
        t.drain(&mut hub, now, |h| h.serial() % 3 != 0);
        t.check(&hub);
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
    fn name(&self) -> &'static str {
        "commands"
    }

    fn on_text(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: &Bytes) {
        let text = std::str::from_utf8(frame).unwrap_or("");
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
                cx.send(conn, frame.slice(1..));
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
    /// Any text frame.
    Text(u8, String),
    /// Any binary frame.
    Binary(u8, Vec<u8>),
    /// Sign of life.
    Activity(u8),
    /// Report bytes written.
    Flushed(u8, u16),
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
}

/// A config and a sequence of operations.
#[derive(Debug, Arbitrary)]
pub struct HubOps {
    config: FuzzConfig,
    ops: Vec<HubOp>,
}

/// Run `data` as a [`HubOps`] sequence, checking the invariants after every operation.
pub fn hub_ops(data: &[u8]) {
    let Ok(input) = HubOps::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut hub = Hub::new(input.config.build(), Box::new(Commands), T0);
    let mut t = Tracker::default();
    let mut now = T0;
    for op in &input.ops {
        let frame = |hub: &mut Hub, t: &Tracker, c: u8, f: Frame| {
            if let Some(h) = t.pick(c) {
                assert_eq!(hub.handle_frame(now, h, f).is_ok(), t.open.contains(&h));
            }
        };
        let mut remote = false;
        match op {
            HubOp::Open(user) => {
                let info = OpenInfo {
                    identity: user.map(|u| Identity::user(small(u))),
                    ..OpenInfo::default()
                };
                let full = t.open.len() >= hub.config().limits.max_connections;
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
                    let open = t.open.contains(&h);
                    assert_eq!(hub.handle_close(now, h).is_ok(), open);
                    if open {
                        t.ended(h);
                    }
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
                Frame::Text(format!("j{}", small(*r)).into()),
            ),
            HubOp::Leave(c, r) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(format!("l{}", small(*r)).into()),
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
                    Frame::Text(format!("f{}", spec.join(",")).into()),
                );
            }
            HubOp::User(c, u) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(format!("u{}", small(*u)).into()),
            ),
            HubOp::Echo(c, n) => frame(
                &mut hub,
                &t,
                *c,
                Frame::Text(format!("e{}", "e".repeat(usize::from(*n))).into()),
            ),
            HubOp::Text(c, s) => frame(&mut hub, &t, *c, Frame::Text(s.clone().into())),
            HubOp::Binary(c, b) => frame(&mut hub, &t, *c, Frame::Binary(b.clone().into())),
            HubOp::Activity(c) => {
                if let Some(h) = t.pick(*c) {
                    assert_eq!(hub.handle_activity(now, h).is_ok(), t.open.contains(&h));
                }
            }
            HubOp::Flushed(c, n) => {
                if let Some(h) = t.pick(*c) {
                    let r = hub.handle_flushed(now, h, usize::from(*n));
                    assert_eq!(r.is_ok(), t.open.contains(&h));
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
                    payload: vec![b'p'; usize::from(*len)].into(),
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
            }
            HubOp::CloseAll => hub.close_all(now, CloseCode::GOING_AWAY, "shutdown"),
        }
        // Serials that are multiples of 4 never read: they are the slow consumers.
        let replicated = t.drain(&mut hub, now, |h| h.serial() % 4 != 0);
        if remote || !hub.config().replicate {
            assert!(
                replicated.is_empty(),
                "replicated without cause: {replicated:?}"
            );
        }
        t.check(&hub);
    }
}
