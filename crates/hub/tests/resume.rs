//! Resume, checked against a model of what each client is owed.
//!
//! Random sequences of connects, disconnects, joins, leaves, client and server publications, and
//! late answers from the history engine run against a hub with a small history. The engine
//! works as a remote one would: it keeps an append or answers a fetch at one moment, and the
//! hub hears of it later (positions in order per stream, fetch answers in any order), so a
//! fetch can already hold an entry whose position the hub has not heard of yet, or miss one
//! the hub is about to deliver live. Four v2 clients behave
//! as the shipped client libraries do: they keep the last position per stream, present their
//! session and positions when they reconnect, re-join their rooms (with their position), and
//! resend every message not acked yet.
//!
//! Checked on every frame a client receives:
//! - a `pub` is for a stream the client is subscribed to, is the entry the engine kept at that
//!   position, and is selected for this client (stream, user target, filter, not its own);
//! - within an epoch its offset is above the client's position, and no entry selected for the
//!   client lies between (no duplicate, in order, no gap);
//! - a `subscribed` frame with `recovered: true` leaves no selected entry between the client's
//!   position and the top unreplayed; a fresh one comes only to a client without a position;
//! - an `ack` names a message the client is waiting on, and its position holds that message.
//!
//! Checked at the end, once every client is back and every answer is in: no entry of a stream
//! a client is subscribed to is owed to it past its position, no message is left unacked, and
//! every message was published once however often it was resent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use switchboard_hub::history::{Audience, Entry, FetchId, Fetched, HistoryLimits, MemoryHistory};
use switchboard_hub::{
    Config, ConnectionHandle, Context, Dialect, Filter, Frame, HistoryConfig, Hub, Identity,
    Instant, OpenInfo, Output, Position, Protocol, Publication, RawText, Text,
};

const T0: Instant = Instant::from_millis(5_000_000);
const CLIENTS: usize = 4;
const ROOMS: [&str; 2] = ["ra", "rb"];
const USERS: [&str; 2] = ["u0", "u1"];
/// Client messages a client may have unacked at once (well inside the dedup window).
const MAX_UNACKED: usize = 16;

// ---------------------------------------------------------------------------------------------
// The protocol: one command per message, a JSON string.

struct Cmd;

fn json_str(s: &str) -> Text {
    Text::from(Value::String(s.to_string()).to_string())
}

impl Protocol for Cmd {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "cmd"
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn system_stream(&self) -> Option<&'static str> {
        Some("all")
    }

    fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
        let cmd: String = serde_json::from_slice(&frame).expect("commands are JSON strings");
        let (op, arg) = cmd.split_at(1);
        let payload = |p: &str| json_str(p);
        match op {
            "f" => {
                let (k, v) = arg.split_once('=').expect("k=v");
                cx.set_filter(conn, Filter::new([(k, v)]));
            }
            "j" => {
                cx.join(conn, arg).expect("within the limits");
            }
            "l" => {
                cx.leave(conn, arg);
            }
            // The payload is the whole command, so every publication is unique and traceable.
            "A" => {
                cx.publish(Publication::to_all(payload(&cmd)).except(conn).keep());
            }
            "R" => {
                let room = arg.split('|').next().expect("room first");
                cx.publish(
                    Publication::to_room(room, payload(&cmd))
                        .except(conn)
                        .keep(),
                );
            }
            "U" => {
                let user = arg.split('|').next().expect("user first");
                cx.publish(Publication::to_user(user, payload(&cmd)).keep());
            }
            "T" => {
                let v = arg.split('|').next().expect("tag value first");
                let tags = vec![("k".to_string(), v.to_string())];
                cx.publish(Publication::to_all(payload(&cmd)).filtered(tags).keep());
            }
            _ => panic!("unknown command {cmd}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients, as the client libraries behave.

#[derive(Debug, Default)]
struct Client {
    user: &'static str,
    /// The value of filter `k`, if it sets one.
    filter: Option<&'static str>,
    conn: Option<ConnectionHandle>,
    session: Option<String>,
    /// Rooms it wants to be in (joined on every connect).
    rooms: BTreeSet<usize>,
    /// Last position per stream: (epoch, offset).
    pos: HashMap<String, (String, u64)>,
    unacked: Vec<(String, String)>,
    next_id: u64,
}

impl Client {
    fn subscribed(&self, stream: &str) -> bool {
        stream == "all" || self.rooms.iter().any(|&r| ROOMS[r] == stream)
    }
}

/// What the engine kept at a position, as the test understands it.
#[derive(Debug, Clone)]
struct Kept {
    payload: String,
    audience: Audience,
    tags: Option<String>,
    publisher: Option<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    All,
    Room(usize),
    User(usize),
    Tagged(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Disconnect(usize),
    Join(usize, usize),
    Leave(usize, usize),
    Publish(usize, Kind),
    Server(Kind),
    EngineFetch(usize),
    DeliverFetch(usize),
    EngineAppend(usize),
    DeliverAppend(usize),
    Advance(u64),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::All),
        (0..ROOMS.len()).prop_map(Kind::Room),
        (0..USERS.len()).prop_map(Kind::User),
        (1..3usize).prop_map(Kind::Tagged),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        3 => c.clone().prop_map(Op::Connect),
        2 => c.clone().prop_map(Op::Disconnect),
        1 => (c.clone(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Join(c, r)),
        1 => (c.clone(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Leave(c, r)),
        5 => (c, kind()).prop_map(|(c, k)| Op::Publish(c, k)),
        2 => kind().prop_map(Op::Server),
        2 => any::<usize>().prop_map(Op::EngineFetch),
        2 => any::<usize>().prop_map(Op::DeliverFetch),
        3 => any::<usize>().prop_map(Op::EngineAppend),
        3 => any::<usize>().prop_map(Op::DeliverAppend),
        1 => (1..30_000u64).prop_map(Op::Advance),
    ]
}

struct World {
    hub: Hub<Cmd>,
    engine: MemoryHistory,
    now: Instant,
    clients: Vec<Client>,
    owner: HashMap<ConnectionHandle, usize>,
    /// Fetches asked, and answered by the engine but not yet delivered to the hub.
    fetches: Vec<(FetchId, String, Option<Position>)>,
    fetched: Vec<(FetchId, Fetched)>,
    /// Appends asked, and kept by the engine whose position the hub does not know yet.
    appends: BTreeMap<String, VecDeque<Arc<Entry>>>,
    appended: BTreeMap<String, VecDeque<Position>>,
    /// Every entry the engine kept, by stream and offset.
    kept: HashMap<(String, u64), Kept>,
    /// Payloads appended, to prove each message was published once.
    published: HashSet<String>,
    server_n: u64,
}

fn tags_of(entry: &Entry) -> Option<String> {
    entry.tags.as_ref().map(|t| {
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "k");
        t[0].1.clone()
    })
}

impl World {
    fn new(max_entries: usize) -> Self {
        let config = Config {
            history: Some(HistoryConfig {
                // Sessions never expire here: a session's loss is tested on its own.
                session_ttl: Duration::from_secs(1_000_000),
                ..HistoryConfig::with_seed([3; 32])
            }),
            // Clients here are silent between ops: nobody is idle-closed.
            idle_timeout: None,
            ..Config::default()
        };
        let limits = HistoryLimits {
            max_entries,
            ..HistoryLimits::default()
        };
        let clients = (0..CLIENTS)
            .map(|i| Client {
                user: USERS[i % USERS.len()],
                filter: [None, Some("1"), Some("2")][i % 3],
                ..Client::default()
            })
            .collect();
        World {
            hub: Hub::new(config, Cmd, T0),
            engine: MemoryHistory::new(limits, 11),
            now: T0,
            clients,
            owner: HashMap::new(),
            fetches: Vec::new(),
            fetched: Vec::new(),
            appends: BTreeMap::new(),
            appended: BTreeMap::new(),
            kept: HashMap::new(),
            published: HashSet::new(),
            server_n: 0,
        }
    }

    fn pump(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            for out in out.split() {
                match out {
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        let _ = self.hub.handle_flushed(self.now, connection, payload.len());
                        let c = *self.owner.get(&connection).expect("a client's connection");
                        assert_eq!(
                            self.clients[c].conn,
                            Some(connection),
                            "to a live connection"
                        );
                        let v: Value = serde_json::from_slice(&payload).expect("JSON");
                        self.receive(c, v);
                    }
                    Output::Append { stream, entry } => {
                        let payload: String = serde_json::from_slice(&entry.payload).unwrap();
                        assert!(
                            self.published.insert(payload.clone()),
                            "published twice: {payload}"
                        );
                        self.appends.entry(stream).or_default().push_back(entry);
                    }
                    Output::Fetch { id, stream, since } => self.fetches.push((id, stream, since)),
                    Output::Close { .. } => panic!("no connection is closed by the hub here"),
                    _ => {}
                }
            }
        }
    }

    /// Whether entry `(stream, offset)` is for client `c`.
    fn selected(&self, c: usize, stream: &str, offset: u64) -> bool {
        let k = &self.kept[&(stream.to_string(), offset)];
        let client = &self.clients[c];
        if k.publisher.is_some() && k.publisher == client.session {
            return false;
        }
        if let Audience::User(u) = &k.audience {
            if u != client.user {
                return false;
            }
        }
        // A client without a filter gets every tagged publication (the empty filter matches all).
        match (&k.tags, client.filter) {
            (Some(v), Some(f)) => v == f,
            _ => true,
        }
    }

    /// No entry of `stream` in `(from, to)` (exclusive) is for client `c`.
    fn nothing_owed(&self, c: usize, stream: &str, from: u64, to: u64) {
        for o in from + 1..to {
            if self.kept.contains_key(&(stream.to_string(), o)) {
                assert!(
                    !self.selected(c, stream, o),
                    "client {c} skipped {stream}@{o} ({:?})",
                    self.kept[&(stream.to_string(), o)]
                );
            }
        }
    }

    fn receive(&mut self, c: usize, v: Value) {
        let sb = v["sb"].as_str().expect("sb").to_string();
        match sb.as_str() {
            "session" => {
                let id = v["session"].as_str().unwrap().to_string();
                let had = self.clients[c].session.clone();
                assert_eq!(v["resumed"], had.is_some(), "sessions never expire here");
                if let Some(had) = had {
                    assert_eq!(had, id);
                }
                self.clients[c].session = Some(id);
            }
            "pub" => {
                let stream = v["stream"].as_str().unwrap().to_string();
                let epoch = v["epoch"].as_str().unwrap().to_string();
                let offset = v["offset"].as_u64().unwrap();
                assert!(self.clients[c].subscribed(&stream), "{c} not in {stream}");
                let k = &self.kept[&(stream.clone(), offset)];
                assert_eq!(
                    v["msg"].as_str(),
                    Some(k.payload.as_str()),
                    "the kept entry"
                );
                assert!(self.selected(c, &stream, offset), "{c} got {k:?}");
                let (e, p) = self.clients[c]
                    .pos
                    .get(&stream)
                    .cloned()
                    .expect("a pub comes after a position (subscribed or resume)");
                assert_eq!(e, epoch, "one epoch per stream here");
                assert!(
                    offset > p,
                    "client {c}: {stream}@{offset} after {p}: duplicate"
                );
                self.nothing_owed(c, &stream, p, offset);
                self.clients[c].pos.insert(stream, (epoch, offset));
            }
            "subscribed" => {
                let stream = v["stream"].as_str().unwrap().to_string();
                let epoch = v["epoch"].as_str().unwrap().to_string();
                let top = v["offset"].as_u64().unwrap();
                assert!(self.clients[c].subscribed(&stream));
                let had = self.clients[c].pos.get(&stream).cloned();
                match v.get("recovered").and_then(Value::as_bool) {
                    None => assert!(had.is_none(), "fresh only without a position"),
                    Some(true) => {
                        let (e, p) = had.expect("recovered from a position");
                        assert_eq!(e, epoch);
                        self.nothing_owed(c, &stream, p, top + 1);
                    }
                    Some(false) => {
                        assert!(had.is_some());
                        let reason = v["reason"].as_str().unwrap();
                        assert!(["trimmed", "epoch", "ahead"].contains(&reason), "{reason}");
                    }
                }
                self.clients[c].pos.insert(stream, (epoch, top));
            }
            "ack" => {
                let id = v["id"].as_str().unwrap();
                let client = &mut self.clients[c];
                let at = client
                    .unacked
                    .iter()
                    .position(|(i, _)| i == id)
                    .unwrap_or_else(|| panic!("ack of {id}, not waited on"));
                let (_, cmd) = client.unacked.remove(at);
                match v.get("offset").and_then(Value::as_u64) {
                    Some(offset) => {
                        let stream = v["stream"].as_str().unwrap().to_string();
                        assert_eq!(self.kept[&(stream, offset)].payload, cmd);
                    }
                    None => assert!(!cmd.starts_with(['A', 'R', 'U', 'T']), "{cmd} unpositioned"),
                }
            }
            other => panic!("unexpected frame {other}: {v}"),
        }
    }

    fn send(&mut self, c: usize, frame: Value) {
        let conn = self.clients[c].conn.expect("connected");
        let text = Text::from(frame.to_string());
        self.hub
            .handle_frame(self.now, conn, Frame::Text(text))
            .unwrap();
        self.pump();
    }

    /// A message with a fresh id, kept until acked.
    fn say(&mut self, c: usize, cmd: String) {
        let client = &mut self.clients[c];
        client.next_id += 1;
        let id = format!("m{}", client.next_id);
        client.unacked.push((id.clone(), cmd.clone()));
        self.send(c, json!({"sb": "msg", "id": id, "msg": cmd}));
    }

    fn join(&mut self, c: usize, r: usize) {
        let stream = ROOMS[r];
        let since: Vec<Value> = self.clients[c]
            .pos
            .get(stream)
            .map(|(e, o)| json!({"stream": stream, "epoch": e, "offset": o}))
            .into_iter()
            .collect();
        self.clients[c].rooms.insert(r);
        let cmd = format!("j{stream}");
        self.send(c, json!({"sb": "msg", "since": since, "msg": cmd}));
    }

    fn connect(&mut self, c: usize) {
        if self.clients[c].conn.is_some() {
            return;
        }
        let client = &self.clients[c];
        let mut query = Vec::new();
        if let Some(s) = &client.session {
            query.push(("sb_session".to_string(), s.clone()));
        }
        // The system stream is resumed from the upgrade; rooms from their joins.
        if let Some((e, o)) = client.pos.get("all") {
            query.push(("sb_since".to_string(), format!("all~{e}~{o}")));
        }
        let info = OpenInfo {
            path: "/".into(),
            query,
            identity: Some(Identity::user(client.user)),
            dialect: Dialect::V2,
            receive_only: false,
        };
        let h = self.hub.handle_open(self.now, info).expect("opens");
        self.owner.insert(h, c);
        self.clients[c].conn = Some(h);
        self.pump();
        if let Some(v) = self.clients[c].filter {
            let cmd = format!("fk={v}");
            self.send(c, json!({"sb": "msg", "msg": cmd}));
        }
        let rooms: Vec<usize> = self.clients[c].rooms.iter().copied().collect();
        for r in rooms {
            self.join(c, r);
        }
        for (id, cmd) in self.clients[c].unacked.clone() {
            self.send(c, json!({"sb": "msg", "id": id, "msg": cmd}));
        }
    }

    fn disconnect(&mut self, c: usize) {
        if let Some(h) = self.clients[c].conn.take() {
            self.hub.handle_close(self.now, h).unwrap();
            self.pump();
        }
    }

    fn payload(&mut self, from: &str, kind: &Kind) -> String {
        self.server_n += 1;
        let n = self.server_n;
        match kind {
            Kind::All => format!("A|{from}#{n}"),
            Kind::Room(r) => format!("R{}|{from}#{n}", ROOMS[*r]),
            Kind::User(u) => format!("U{}|{from}#{n}", USERS[*u]),
            Kind::Tagged(v) => format!("T{v}|{from}#{n}"),
        }
    }

    /// The engine answers one fetch asked (the answer reaches the hub later).
    fn engine_fetch(&mut self, i: usize) {
        if self.fetches.is_empty() {
            return;
        }
        let (id, stream, since) = self.fetches.remove(i % self.fetches.len());
        let answer = self.engine.fetch(self.now, &stream, since);
        self.fetched.push((id, answer));
    }

    /// One fetch answer reaches the hub (in any order).
    fn deliver_fetch(&mut self, i: usize) {
        if self.fetched.is_empty() {
            return;
        }
        let (id, answer) = self.fetched.remove(i % self.fetched.len());
        self.hub.handle_fetched(self.now, id, Ok(answer));
        self.pump();
    }

    /// The engine keeps the oldest waiting append of one stream (its position reaches the hub
    /// later).
    fn engine_append(&mut self, i: usize) {
        if self.appends.is_empty() {
            return;
        }
        let stream = self
            .appends
            .keys()
            .nth(i % self.appends.len())
            .unwrap()
            .clone();
        let queue = self.appends.get_mut(&stream).unwrap();
        let entry = queue.pop_front().unwrap();
        if queue.is_empty() {
            self.appends.remove(&stream);
        }
        let position = self.engine.append(self.now, &stream, entry.clone());
        let payload: String = serde_json::from_slice(&entry.payload).unwrap();
        let publisher = entry.publisher.map(|s| s.to_string());
        // Sender exclusion is by session for client notes to everyone and to rooms.
        if payload.starts_with(['A', 'R']) && !payload.contains("|server#") {
            assert!(publisher.is_some(), "{payload} has its publisher's session");
        }
        self.kept.insert(
            (stream.clone(), position.offset),
            Kept {
                payload,
                audience: entry.audience.clone(),
                tags: tags_of(&entry),
                publisher,
            },
        );
        self.appended.entry(stream).or_default().push_back(position);
    }

    /// The oldest position kept for one stream reaches the hub (in order per stream).
    fn deliver_append(&mut self, i: usize) {
        if self.appended.is_empty() {
            return;
        }
        let stream = self
            .appended
            .keys()
            .nth(i % self.appended.len())
            .unwrap()
            .clone();
        let queue = self.appended.get_mut(&stream).unwrap();
        let position = queue.pop_front().unwrap();
        if queue.is_empty() {
            self.appended.remove(&stream);
        }
        self.hub
            .handle_appended(self.now, &stream, Ok(position))
            .expect("an append was waiting");
        self.pump();
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect(c) => self.connect(*c),
            Op::Disconnect(c) => self.disconnect(*c),
            Op::Join(c, r) => {
                if self.clients[*c].conn.is_some() && !self.clients[*c].rooms.contains(r) {
                    self.join(*c, *r);
                }
            }
            Op::Leave(c, r) => {
                if self.clients[*c].conn.is_some() && self.clients[*c].rooms.remove(r) {
                    let cmd = format!("l{}", ROOMS[*r]);
                    self.send(*c, json!({"sb": "msg", "msg": cmd}));
                }
            }
            Op::Publish(c, kind) => {
                let client = &self.clients[*c];
                let allowed = match kind {
                    Kind::Room(r) => client.rooms.contains(r),
                    _ => true,
                };
                if client.conn.is_some() && allowed && client.unacked.len() < MAX_UNACKED {
                    let cmd = self.payload(&format!("c{c}"), kind);
                    self.say(*c, cmd);
                }
            }
            Op::Server(kind) => {
                let cmd = self.payload("server", kind);
                let body = json_str(&cmd);
                let p = match kind {
                    Kind::All => Publication::to_all(body),
                    Kind::Room(r) => Publication::to_room(ROOMS[*r], body),
                    Kind::User(u) => Publication::to_user(USERS[*u], body),
                    Kind::Tagged(v) => {
                        Publication::to_all(body).filtered(vec![("k".into(), v.to_string())])
                    }
                };
                self.hub.publish(self.now, p.keep());
                self.pump();
            }
            Op::EngineFetch(i) => self.engine_fetch(*i),
            Op::DeliverFetch(i) => self.deliver_fetch(*i),
            Op::EngineAppend(i) => self.engine_append(*i),
            Op::DeliverAppend(i) => self.deliver_append(*i),
            Op::Advance(ms) => {
                self.now = self.now + Duration::from_millis(*ms);
                self.hub.handle_timeout(self.now);
                self.engine.handle_timeout(self.now);
                self.pump();
            }
        }
    }

    fn quiet(&self) -> bool {
        self.fetches.is_empty()
            && self.fetched.is_empty()
            && self.appends.is_empty()
            && self.appended.is_empty()
    }

    /// Answer everything, bring every client back, answer everything again.
    fn settle(&mut self) {
        for round in 0..2 {
            while !self.quiet() {
                self.engine_append(0);
                self.deliver_append(0);
                self.engine_fetch(0);
                self.deliver_fetch(0);
            }
            if round == 0 {
                for c in 0..CLIENTS {
                    self.connect(c);
                }
            }
        }
    }

    fn check_end(&self) {
        for (c, client) in self.clients.iter().enumerate() {
            if client.session.is_none() {
                continue; // Never connected.
            }
            assert!(
                client.unacked.is_empty(),
                "client {c} unacked: {:?}",
                client.unacked
            );
            let streams = std::iter::once("all").chain(client.rooms.iter().map(|&r| ROOMS[r]));
            for stream in streams {
                let top = self.engine.top(stream).expect("subscribed streams exist");
                let (e, o) = client.pos.get(stream).expect("a position per stream");
                assert_eq!(*e, top.epoch.to_string());
                assert!(*o <= top.offset);
                // Entries after its position may exist, but none is for it.
                self.nothing_owed(c, stream, *o, top.offset + 1);
            }
        }
        assert_eq!(
            self.hub.stats().counters.appended as usize,
            self.published.len()
        );
    }
}

proptest! {
    // 192 cases by default (about a second); `PROPTEST_CASES=N` runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(192),
        ..ProptestConfig::default()
    })]

    #[test]
    fn resumed_clients_get_everything_for_them_once_in_order(
        max_entries in 1usize..24,
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let mut world = World::new(max_entries);
        for op in &ops {
            world.apply(op);
        }
        world.settle();
        world.check_end();
    }
}

/// A fixed busy scenario, so a regression shows even before proptest finds it.
#[test]
fn a_scripted_scenario_holds() {
    use Kind::*;
    use Op::*;
    let mut world = World::new(5);
    let ops = [
        Connect(0),
        Connect(1),
        Connect(2),
        Join(0, 0),
        Join(1, 0),
        Publish(0, All),
        Publish(1, Room(0)),
        EngineAppend(0),
        DeliverAppend(0),
        Disconnect(1),
        Server(Tagged(1)),
        Server(User(1)),
        Publish(0, Room(0)),
        EngineAppend(0),
        EngineAppend(1),
        DeliverAppend(1),
        Connect(1),
        EngineFetch(0),
        Publish(2, All),
        EngineAppend(0),
        DeliverFetch(0),
        DeliverAppend(0),
        EngineFetch(0),
        DeliverAppend(0),
        DeliverFetch(0),
        Disconnect(0),
        Server(All),
        Server(All),
        EngineAppend(0),
        Connect(0),
        EngineFetch(0),
        DeliverAppend(0),
        DeliverFetch(0),
    ];
    for op in &ops {
        world.apply(op);
    }
    world.settle();
    world.check_end();
    assert!(
        world.hub.stats().counters.replayed > 0,
        "the scenario replays"
    );
}
