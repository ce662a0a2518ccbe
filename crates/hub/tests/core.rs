//! Deterministic, socket-free tests of the hub core, driven through a sixth protocol that lives
//! entirely in this file.
//!
//! The `Chat` protocol below is not one of the five systems the server ships: it is defined here,
//! in a test crate, against nothing but the public `switchboard_hub` API (`Protocol`, `Context`,
//! `Publication`). That it plugs in and exercises every fan-out rule, room, filter, identity,
//! limit and timer is the proof that a new protocol needs no change to the core.
//!
//! Its text commands (one per frame):
//!
//! | frame                    | effect                                                  |
//! |--------------------------|---------------------------------------------------------|
//! | `join:<room>`            | join (an error is replied as `error:<why>`)             |
//! | `leave:<room>`           | leave                                                   |
//! | `say:<room>:<text>`      | to the room, except the sender                          |
//! | `room:<room>:<text>`     | to the room, sender included                            |
//! | `all:<text>`             | to every connection                                     |
//! | `others:<text>`          | to every connection except the sender                   |
//! | `filter:k=v,k2=v2`       | replace the sender's filter (`filter:` matches all)     |
//! | `tag:k=v,k2=v2:<text>`   | to every connection whose filter matches the tags       |
//! | `user:<id>`              | set the sender's identity                               |
//! | `dm:<user>:<text>`       | to every connection of a user                           |
//! | `to:<serial>:<text>`     | to one connection, by serial                            |
//! | `bye`                    | the server closes the sender with 1000                  |
//! | `quitjoin:<room>`        | close the sender, then try to join with the dead handle |
//!
//! On open it greets with `welcome:<serial>` and joins the room in query parameter `room`.
//! Over HTTP: `GET /stats` and `POST /publish/<room>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_hub::{
    Bytes, CloseCode, Config, ConnectionHandle, Context, Filter, Frame, HttpRequest, HttpResponse,
    Hub, Identity, Instant, JoinError, Limits, Method, OpenError, OpenInfo, Output, Protocol,
    Publication, RateLimit, RatePolicy, RawText, SlowConsumerPolicy, Target, Text,
    UnknownConnection,
};

/// 2025-01-01T12:30:00Z
const T0: Instant = Instant::from_millis(1_735_734_600_000);

/// What the protocol saw, for the tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Closed(ConnectionHandle, Vec<String>),
    Joined(ConnectionHandle, String, Result<bool, JoinError>),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// The sixth protocol: a tiny chat.
struct Chat {
    log: Log,
}

fn tags(spec: &str) -> Vec<(String, String)> {
    spec.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Protocol for Chat {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "chat"
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, info: &OpenInfo) {
        cx.send(conn, format!("welcome:{}", conn.serial()));
        if let Some(room) = info.query_param("room") {
            let r = cx.join(conn, room);
            self.log
                .lock()
                .unwrap()
                .push(Event::Joined(conn, room.to_string(), r));
        }
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
        let text = frame.as_str();
        // Payloads are slices of the received frame: relayed without a copy.
        let body = |s: &str| frame.slice_ref(s);
        let (cmd, rest) = text.split_once(':').unwrap_or((text, ""));
        match cmd {
            "join" => {
                let r = cx.join(conn, rest);
                if let Err(e) = r {
                    cx.send(conn, format!("error:{e}"));
                }
                self.log
                    .lock()
                    .unwrap()
                    .push(Event::Joined(conn, rest.to_string(), r));
            }
            "leave" => {
                if !cx.leave(conn, rest) {
                    cx.send(conn, "error:not a member");
                }
            }
            "say" | "room" => {
                if let Some((room, msg)) = rest.split_once(':') {
                    let p = Publication::to_room(room, body(msg));
                    cx.publish(if cmd == "say" { p.except(conn) } else { p });
                }
            }
            "all" => {
                cx.publish(Publication::to_all(body(rest)));
            }
            "others" => {
                cx.publish(Publication::to_all(body(rest)).except(conn));
            }
            "filter" => cx.set_filter(conn, Filter::new(tags(rest))),
            "tag" => {
                if let Some((spec, msg)) = rest.split_once(':') {
                    cx.publish(Publication::to_all(body(msg)).filtered(tags(spec)));
                }
            }
            "user" => cx.set_identity(conn, Identity::user(rest)),
            "dm" => {
                if let Some((user, msg)) = rest.split_once(':') {
                    cx.publish(Publication::to_user(user, body(msg)));
                }
            }
            "to" => {
                let target = rest.split_once(':').and_then(|(serial, msg)| {
                    let serial: u64 = serial.parse().ok()?;
                    let h = cx
                        .connections()
                        .find(|c| c.handle.serial() == serial)?
                        .handle;
                    Some((h, msg))
                });
                match target {
                    Some((h, msg)) => {
                        cx.publish(Publication::new(Target::Connection(h), body(msg)));
                    }
                    None => {
                        cx.send(conn, "error:no such connection");
                    }
                }
            }
            "bye" => cx.close(conn, CloseCode::NORMAL, "bye"),
            "quitjoin" => {
                cx.close(conn, CloseCode::NORMAL, "bye");
                let r = cx.join(conn, rest);
                self.log
                    .lock()
                    .unwrap()
                    .push(Event::Joined(conn, rest.to_string(), r));
            }
            _ => {
                cx.count_error("unknown_command");
                cx.send(conn, "error:unknown command");
            }
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, conn: ConnectionHandle, rooms: &[String]) {
        self.log
            .lock()
            .unwrap()
            .push(Event::Closed(conn, rooms.to_vec()));
    }

    fn on_http(&mut self, cx: &mut Context<'_>, req: HttpRequest) -> Option<HttpResponse> {
        match (req.method, req.path.as_str()) {
            (Method::Get, "/stats") => {
                let s = cx.stats();
                Some(HttpResponse::text(
                    200,
                    format!("connections={} rooms={}", s.connections, s.rooms),
                ))
            }
            (Method::Post, path) => {
                let room = path.strip_prefix("/publish/")?;
                let body = Text::from_utf8(req.body.clone()).ok()?;
                let n = cx.publish(Publication::to_room(room, body));
                Some(HttpResponse::json(202, format!("{{\"delivered\":{n}}}")))
            }
            _ => None,
        }
    }
}

/// A hub running `Chat`, a fake clock, and the protocol's log.
struct Rig {
    hub: Hub<Chat>,
    now: Instant,
    log: Log,
}

impl Rig {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        let log = Log::default();
        let hub = Hub::new(config, Chat { log: log.clone() }, T0);
        Rig { hub, now: T0, log }
    }

    fn with_limits(f: impl FnOnce(&mut Limits)) -> Self {
        let mut config = Config::default();
        f(&mut config.limits);
        Self::with(config)
    }

    /// Open a connection, drain and flush its greeting.
    fn open(&mut self) -> ConnectionHandle {
        self.open_with(OpenInfo::default())
    }

    fn open_with(&mut self, info: OpenInfo) -> ConnectionHandle {
        let h = self
            .hub
            .handle_open(self.now, info)
            .expect("under the limit");
        let outs = self.drain();
        assert!(
            outs.contains(&transmit(h, &format!("welcome:{}", h.serial()))),
            "greeting missing: {outs:?}"
        );
        self.flush(&outs);
        h
    }

    fn open_user(&mut self, user: &str) -> ConnectionHandle {
        self.open_with(OpenInfo {
            identity: Some(Identity::user(user)),
            ..OpenInfo::default()
        })
    }

    /// Send a text frame; the connection must be open.
    fn text(&mut self, h: ConnectionHandle, s: &str) {
        self.hub
            .handle_frame(self.now, h, Frame::Text(Text::from(s.to_string())))
            .expect("open connection");
    }

    /// Send a text frame, drain, flush everything, return what was transmitted.
    fn say(&mut self, h: ConnectionHandle, s: &str) -> Vec<(ConnectionHandle, String)> {
        self.text(h, s);
        let outs = self.drain();
        self.flush(&outs);
        texts(&outs)
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.hub.poll_output())
            .flat_map(Output::split)
            .collect()
    }

    /// Report every transmit in `outs` as written.
    fn flush(&mut self, outs: &[Output]) {
        for o in outs {
            if let Output::Transmit {
                connection,
                payload,
            } = o
            {
                // A connection closed later in the same batch is gone: ignore the error.
                let _ = self
                    .hub
                    .handle_flushed(self.now, *connection, payload.len());
            }
        }
    }

    fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn rooms(&self) -> Vec<(String, usize)> {
        let mut r: Vec<_> = self.hub.rooms().map(|(n, c)| (n.to_string(), c)).collect();
        r.sort();
        r
    }

    fn members(&self, room: &str) -> Vec<ConnectionHandle> {
        let mut m: Vec<_> = self.hub.room_members(room).map(|c| c.handle).collect();
        m.sort();
        m
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }
}

fn transmit(h: ConnectionHandle, s: &str) -> Output {
    Output::Transmit {
        connection: h,
        payload: Text::from(s.to_string()),
    }
}

/// The transmits in `outs` as (recipient, text), sorted.
fn texts(outs: &[Output]) -> Vec<(ConnectionHandle, String)> {
    let mut v: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                connection,
                payload,
            } => Some((
                *connection,
                String::from_utf8(payload.to_vec()).expect("chat sends UTF-8"),
            )),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn closes(outs: &[Output]) -> Vec<(ConnectionHandle, CloseCode)> {
    let mut v: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Close {
                connection, code, ..
            } => Some((*connection, *code)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn to(hs: &[ConnectionHandle], s: &str) -> Vec<(ConnectionHandle, String)> {
    let mut v: Vec<_> = hs.iter().map(|h| (*h, s.to_string())).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Handles

#[test]
fn stale_handle_after_slot_reuse_cannot_reach_the_new_connection() {
    let mut rig = Rig::new();
    let old = rig.open();
    rig.text(old, "join:lobby");
    rig.hub.handle_close(rig.now, old).unwrap();
    let new = rig.open();
    rig.drain();
    // The slab reused the slot; the serial tells them apart.
    assert_eq!(
        format!("{old:?}").split(',').next(),
        format!("{new:?}").split(',').next()
    );
    assert_ne!(old, new);
    assert_ne!(old.serial(), new.serial());

    let now = rig.now;
    let hub = &mut rig.hub;
    assert_eq!(
        hub.handle_frame(now, old, Frame::Text("all:x".into())),
        Err(UnknownConnection)
    );
    assert_eq!(hub.handle_activity(now, old), Err(UnknownConnection));
    assert_eq!(hub.handle_flushed(now, old, 1), Err(UnknownConnection));
    assert_eq!(hub.handle_close(now, old), Err(UnknownConnection));
    assert_eq!(
        hub.publish(now, Publication::new(Target::Connection(old), "x")),
        0
    );
    hub.close(now, old, CloseCode::NORMAL, "stale");
    assert!(hub.connection(old).is_none());
    assert!(hub.rooms_of(old).is_empty());
    assert_eq!(rig.drain(), vec![]);
    // The new connection is untouched and works.
    assert!(rig.hub.connection(new).is_some());
    assert_eq!(rig.say(new, "all:hi"), to(&[new], "hi"));
}

// ---------------------------------------------------------------------------------------------
// Fan-out rules

#[test]
fn fan_out_all_includes_the_sender() {
    let mut rig = Rig::new();
    let hs: Vec<_> = (0..4).map(|_| rig.open()).collect();
    assert_eq!(rig.say(hs[0], "all:hello"), to(&hs, "hello"));
}

#[test]
fn fan_out_all_but_sender() {
    let mut rig = Rig::new();
    let hs: Vec<_> = (0..4).map(|_| rig.open()).collect();
    assert_eq!(
        rig.say(hs[1], "others:hello"),
        to(&[hs[0], hs[2], hs[3]], "hello")
    );
}

#[test]
fn fan_out_room_includes_the_sender_and_only_members() {
    let mut rig = Rig::new();
    let (a, b, c) = (rig.open(), rig.open(), rig.open());
    rig.say(a, "join:r");
    rig.say(b, "join:r");
    rig.say(c, "join:other");
    assert_eq!(rig.say(a, "room:r:hi"), to(&[a, b], "hi"));
    // A non-member may publish to a room; it does not receive it.
    assert_eq!(
        rig.say(c, "room:r:from outside"),
        to(&[a, b], "from outside")
    );
    // An unknown room reaches nobody.
    assert_eq!(rig.say(a, "room:nowhere:x"), vec![]);
}

#[test]
fn fan_out_room_but_sender() {
    let mut rig = Rig::new();
    let (a, b, c) = (rig.open(), rig.open(), rig.open());
    for h in [a, b, c] {
        rig.say(h, "join:r");
    }
    assert_eq!(rig.say(b, "say:r:yo"), to(&[a, c], "yo"));
}

#[test]
fn fan_out_user_reaches_every_connection_of_that_user() {
    let mut rig = Rig::new();
    let a1 = rig.open_user("alice");
    let a2 = rig.open();
    rig.say(a2, "user:alice");
    let b = rig.open_user("bob");
    let anon = rig.open();
    assert_eq!(rig.say(b, "dm:alice:psst"), to(&[a1, a2], "psst"));
    assert_eq!(rig.say(anon, "dm:bob:hey"), to(&[b], "hey"));
    assert_eq!(rig.say(anon, "dm:carol:hey"), vec![]);
    assert_eq!(
        rig.hub.connection(a1).unwrap().identity.unwrap().user,
        "alice"
    );
}

#[test]
fn fan_out_connection_reaches_one_connection() {
    let mut rig = Rig::new();
    let (a, b, c) = (rig.open(), rig.open(), rig.open());
    let cmd = format!("to:{}:just you", c.serial());
    assert_eq!(rig.say(a, &cmd), to(&[c], "just you"));
    let _ = b;
    // A direct send is not a publication.
    assert_eq!(rig.hub.stats().counters.publications, 0);
}

#[test]
fn fan_out_filtered_by_tags() {
    let mut rig = Rig::new();
    let (any, ib, ob, ib_dock1) = (rig.open(), rig.open(), rig.open(), rig.open());
    rig.say(ib, "filter:dir=IB");
    rig.say(ob, "filter:dir=OB");
    rig.say(ib_dock1, "filter:dir=IB,dock=1");
    assert_eq!(
        rig.hub.connection(ib_dock1).unwrap().filter.entries(),
        &tags("dir=IB,dock=1")[..]
    );
    assert_eq!(rig.say(any, "tag:dir=IB:truck"), to(&[any, ib], "truck"));
    assert_eq!(
        rig.say(any, "tag:dir=IB,dock=1:at dock 1"),
        to(&[any, ib, ib_dock1], "at dock 1")
    );
    assert_eq!(rig.say(any, "tag:dock=1:no dir"), to(&[any], "no dir"));
    // Unfiltered publications ignore filters.
    assert_eq!(
        rig.say(any, "all:everyone"),
        to(&[any, ib, ob, ib_dock1], "everyone")
    );
    // Clearing the filter matches everything again.
    rig.say(ob, "filter:");
    assert_eq!(
        rig.say(any, "tag:dir=IB:again"),
        to(&[any, ib, ob], "again")
    );
}

#[test]
fn a_fan_out_is_one_output_naming_each_recipient_once_and_one_recipient_a_transmit() {
    let mut rig = Rig::new();
    let hs: Vec<_> = (0..4).map(|_| rig.open()).collect();
    let raw =
        |rig: &mut Rig| -> Vec<Output> { std::iter::from_fn(|| rig.hub.poll_output()).collect() };
    rig.text(hs[1], "others:hello");
    let outs = raw(&mut rig);
    assert_eq!(
        outs,
        vec![Output::Fanout {
            payload: Text::from("hello"),
            recipients: vec![hs[0], hs[2], hs[3]],
        }],
        "one output, in the order the hub holds its connections"
    );
    rig.flush(&outs.into_iter().flat_map(Output::split).collect::<Vec<_>>());
    // A room of two, less the sender: one recipient, a plain transmit.
    rig.text(hs[2], "join:r");
    rig.text(hs[3], "join:r");
    rig.text(hs[2], "say:r:just you");
    assert_eq!(raw(&mut rig), vec![transmit(hs[3], "just you")]);
    // Nobody left to get it: no output at all.
    rig.text(hs[2], "leave:r");
    rig.text(hs[3], "say:r:alone");
    assert_eq!(raw(&mut rig), vec![]);
}

#[test]
fn fan_out_shares_one_buffer_with_every_recipient() {
    let mut rig = Rig::new();
    let hs: Vec<_> = (0..5).map(|_| rig.open()).collect();
    rig.text(hs[0], "all:shared");
    let ptrs: Vec<_> = rig
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit { payload, .. } => Some(payload.as_ptr()),
            _ => None,
        })
        .collect();
    assert_eq!(ptrs.len(), 5);
    assert!(ptrs.iter().all(|p| *p == ptrs[0]));
}

// ---------------------------------------------------------------------------------------------
// Rooms

#[test]
fn close_leaves_every_room_and_tells_the_protocol_in_join_order() {
    let mut rig = Rig::new();
    let (a, b) = (rig.open(), rig.open());
    for r in ["x", "y", "z"] {
        rig.say(a, &format!("join:{r}"));
    }
    rig.say(b, "join:y");
    rig.events();
    rig.hub.handle_close(rig.now, a).unwrap();
    // A peer close produces no Close output: the socket is already gone.
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(
        rig.events(),
        vec![Event::Closed(a, vec!["x".into(), "y".into(), "z".into()])]
    );
    assert_eq!(rig.rooms(), vec![("y".to_string(), 1)]);
    assert_eq!(rig.members("y"), vec![b]);
    assert_eq!(rig.say(b, "room:x:anyone?"), vec![]);
}

#[test]
fn server_close_from_the_protocol_emits_close_and_leaves_rooms() {
    let mut rig = Rig::new();
    let a = rig.open_with(OpenInfo {
        query: vec![("room".into(), "lobby".into())],
        ..OpenInfo::default()
    });
    assert_eq!(rig.rooms(), vec![("lobby".to_string(), 1)]);
    rig.events();
    rig.text(a, "bye");
    assert_eq!(closes(&rig.drain()), vec![(a, CloseCode::NORMAL)]);
    assert_eq!(rig.events(), vec![Event::Closed(a, vec!["lobby".into()])]);
    assert_eq!(rig.rooms(), vec![]);
}

#[test]
fn room_is_removed_when_its_last_member_leaves() {
    let mut rig = Rig::new();
    let (a, b) = (rig.open(), rig.open());
    rig.say(a, "join:r");
    rig.say(b, "join:r");
    assert_eq!(rig.rooms(), vec![("r".to_string(), 2)]);
    assert_eq!(rig.members("r"), vec![a, b]);
    rig.say(a, "leave:r");
    assert_eq!(rig.rooms(), vec![("r".to_string(), 1)]);
    rig.say(b, "leave:r");
    assert_eq!(rig.rooms(), vec![]);
    assert_eq!(rig.members("r"), vec![]);
    assert_eq!(rig.hub.stats().rooms, 0);
    // Leaving again is refused politely.
    assert_eq!(rig.say(b, "leave:r"), to(&[b], "error:not a member"));
}

#[test]
fn rooms_of_keeps_join_order_after_a_leave() {
    let mut rig = Rig::new();
    let a = rig.open();
    for r in ["a", "b", "c", "d"] {
        rig.say(a, &format!("join:{r}"));
    }
    rig.say(a, "leave:a");
    assert_eq!(rig.hub.rooms_of(a), ["b", "c", "d"]);
    rig.say(a, "leave:c");
    rig.say(a, "join:a");
    assert_eq!(rig.hub.rooms_of(a), ["b", "d", "a"]);
}

#[test]
fn join_errors_respect_the_limits() {
    let mut rig = Rig::with_limits(|l| {
        l.max_rooms_per_connection = 2;
        l.max_rooms = 3;
    });
    let (a, b) = (rig.open(), rig.open());
    rig.say(a, "join:r1");
    rig.say(a, "join:r2");
    rig.events();
    // Joining a room again is Ok(false), even at the limit.
    rig.say(a, "join:r1");
    assert_eq!(rig.events(), vec![Event::Joined(a, "r1".into(), Ok(false))]);
    assert_eq!(
        rig.say(a, "join:r3"),
        to(&[a], "error:a connection may be in at most 2 rooms")
    );
    assert_eq!(
        rig.events(),
        vec![Event::Joined(
            a,
            "r3".into(),
            Err(JoinError::TooManyRooms { limit: 2 })
        )]
    );
    rig.say(b, "join:r3");
    assert_eq!(rig.events(), vec![Event::Joined(b, "r3".into(), Ok(true))]);
    rig.say(b, "join:r4");
    assert_eq!(
        rig.events(),
        vec![Event::Joined(
            b,
            "r4".into(),
            Err(JoinError::TooManyRoomsInHub { limit: 3 })
        )]
    );
    // An existing room can still be joined when the hub is full.
    rig.say(b, "join:r1");
    assert_eq!(rig.events(), vec![Event::Joined(b, "r1".into(), Ok(true))]);
    // A handle that closed cannot join.
    rig.say(a, "quitjoin:r3");
    let ev = rig.events();
    assert!(ev.contains(&Event::Joined(
        a,
        "r3".into(),
        Err(JoinError::UnknownConnection)
    )));
    assert_eq!(rig.rooms(), vec![("r1".into(), 1), ("r3".into(), 1)]);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn open_is_refused_at_max_connections() {
    let mut rig = Rig::with_limits(|l| l.max_connections = 2);
    let a = rig.open();
    rig.open();
    assert_eq!(
        rig.hub.handle_open(rig.now, OpenInfo::default()),
        Err(OpenError::TooManyConnections { limit: 2 })
    );
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(rig.hub.stats().connections, 2);
    rig.hub.handle_close(rig.now, a).unwrap();
    rig.open();
    assert_eq!(rig.hub.stats().counters.connections_opened, 3);
}

#[test]
fn frame_too_large_closes_with_1009() {
    let mut rig = Rig::with_limits(|l| l.max_frame_bytes = 16);
    let (a, b) = (rig.open(), rig.open());
    let at_limit = "all:123456789012"; // 16 bytes
    assert_eq!(rig.say(a, at_limit), to(&[a, b], "123456789012"));
    rig.text(a, "all:1234567890123");
    let outs = rig.drain();
    assert_eq!(texts(&outs), vec![], "the oversized frame is not processed");
    assert_eq!(closes(&outs), vec![(a, CloseCode::MESSAGE_TOO_BIG)]);
    assert_eq!(
        rig.hub.stats().counters.errors.get("frame_too_large"),
        Some(&1)
    );
    assert!(rig.hub.connection(b).is_some());
}

#[test]
fn inbound_rate_limit_closes_with_1008_and_refills_over_time() {
    let mut rig = Rig::with_limits(|l| {
        l.inbound_rate = Some(RateLimit {
            per_second: 2,
            burst: 3,
        });
        l.rate_policy = RatePolicy::Close;
    });
    let (a, b) = (rig.open(), rig.open());
    for _ in 0..3 {
        assert_eq!(rig.say(a, "others:x"), to(&[b], "x"));
    }
    // Half a second refills one message.
    rig.advance(Duration::from_millis(500));
    assert_eq!(rig.say(a, "others:y"), to(&[b], "y"));
    rig.text(a, "others:z");
    let outs = rig.drain();
    assert_eq!(texts(&outs), vec![]);
    assert_eq!(closes(&outs), vec![(a, CloseCode::POLICY_VIOLATION)]);
    assert_eq!(
        rig.hub.stats().counters.errors.get("rate_limited"),
        Some(&1)
    );
    // Another connection has its own bucket.
    assert_eq!(rig.say(b, "all:fine"), to(&[b], "fine"));
}

#[test]
fn throttle_pauses_a_fast_sender_and_loses_nothing() {
    let rate = RateLimit {
        per_second: 100,
        burst: 20,
    };
    let mut rig = Rig::with(Config {
        heartbeat_interval: None,
        idle_timeout: None,
        limits: Limits {
            inbound_rate: Some(rate),
            rate_policy: RatePolicy::Throttle,
            ..Limits::default()
        },
        ..Config::default()
    });
    let (sender, receiver) = (rig.open(), rig.open());
    let start = rig.now;
    let frames: Vec<String> = (0..300).map(|i| format!("others:{i}")).collect();
    // Record what the receiver got and when, to check the bucket's bound at every delivery.
    let mut got: Vec<(Instant, String)> = Vec::new();
    let mut paused_until: Option<Instant> = None;
    let mut sent = 0;
    let mut pauses = 0;
    while got.len() < frames.len() {
        if let Some(until) = paused_until.take() {
            rig.now = rig.now.max(until);
        }
        rig.hub.handle_timeout(rig.now);
        for frame in frames[sent..].iter().take(4) {
            rig.text(sender, frame);
            sent += 1;
        }
        let outs = rig.drain();
        rig.flush(&outs);
        for o in &outs {
            match o {
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    assert_eq!(*connection, receiver);
                    got.push((rig.now, String::from_utf8(payload.to_vec()).unwrap()));
                }
                Output::PauseReading { connection, until } => {
                    assert_eq!(*connection, sender);
                    assert!(*until > rig.now, "a pause ends in the future");
                    pauses += 1;
                    paused_until = Some(*until);
                }
                Output::Close { .. } => panic!("nobody is closed: {o:?}"),
                _ => {}
            }
        }
        if paused_until.is_none() {
            // Held frames wait for the hub's timer.
            match rig.hub.poll_timeout() {
                Some(t) if sent == frames.len() => rig.now = rig.now.max(t),
                _ => rig.advance(Duration::from_micros(100)),
            }
        }
        assert!(rig.now < start + Duration::from_secs(60), "stalled");
    }
    // Everything arrived, once, in order.
    let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(texts, want);
    // At no point more than burst + rate x elapsed was accepted.
    for (n, (at, _)) in got.iter().enumerate() {
        let elapsed = (*at - start).as_micros() as u64;
        let allowed = u64::from(rate.burst) + elapsed * u64::from(rate.per_second) / 1_000_000;
        assert!(
            (n as u64) < allowed,
            "delivery {} at {elapsed} us exceeds the bucket ({allowed})",
            n + 1
        );
    }
    assert!(pauses > 0);
    let counters = rig.hub.stats().counters;
    assert!((1..=pauses).contains(&counters.throttled), "{counters:?}");
    assert_eq!(counters.errors.get("rate_limited"), None);
    assert!(
        rig.hub.connection(sender).is_some(),
        "the sender stays connected"
    );
}

#[test]
fn a_sender_that_ignores_the_pause_is_closed_once_its_held_frames_are_full() {
    let mut rig = Rig::with_limits(|l| {
        l.inbound_rate = Some(RateLimit {
            per_second: 10,
            burst: 2,
        });
        l.rate_policy = RatePolicy::Throttle;
    });
    let (rude, other) = (rig.open(), rig.open());
    // Two frames use the burst and pause the sender.
    assert_eq!(rig.say(rude, "others:a"), to(&[other], "a"));
    let outs = {
        rig.text(rude, "others:b");
        rig.drain()
    };
    assert_eq!(texts(&outs), to(&[other], "b"));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::PauseReading { connection, .. } if *connection == rude)));
    // It keeps sending: frames are held, in order, up to the bound.
    for i in 0..switchboard_hub::MAX_HELD_FRAMES {
        rig.text(rude, &format!("others:{i}"));
        assert_eq!(rig.drain(), vec![], "held, not processed");
    }
    rig.text(rude, "others:one too many");
    let outs = rig.drain();
    assert_eq!(closes(&outs), vec![(rude, CloseCode::POLICY_VIOLATION)]);
    assert_eq!(
        texts(&outs),
        vec![],
        "held frames of a closed sender are dropped"
    );
    assert_eq!(
        rig.hub.stats().counters.errors.get("rate_limited"),
        Some(&1)
    );
    assert_eq!(rig.say(other, "all:still here"), to(&[other], "still here"));
}

#[test]
fn pings_count_against_the_inbound_rate() {
    for policy in [RatePolicy::Throttle, RatePolicy::Close] {
        let mut rig = Rig::with_limits(|l| {
            l.inbound_rate = Some(RateLimit {
                per_second: 5,
                burst: 10,
            });
            l.rate_policy = policy;
        });
        let (pinger, other) = (rig.open(), rig.open());
        let mut outs = Vec::new();
        // The burst, and a few that were already on their way when the pause went out.
        for _ in 0..15 {
            if rig.hub.handle_activity(rig.now, pinger).is_err() {
                break;
            }
            outs.extend(rig.drain());
        }
        match policy {
            RatePolicy::Throttle => {
                let pauses: Vec<_> = outs
                    .iter()
                    .filter(|o| matches!(o, Output::PauseReading { .. }))
                    .collect();
                assert_eq!(pauses.len(), 1, "paused once, after the burst: {outs:?}");
                assert!(rig.hub.connection(pinger).is_some());
                // Pings keep coming although reading is paused: they wait for tokens like
                // frames, and past the held limit the pinger is closed.
                for _ in 0..switchboard_hub::MAX_HELD_FRAMES {
                    let _ = rig.hub.handle_activity(rig.now, pinger);
                    outs.extend(rig.drain());
                }
                assert_eq!(closes(&outs), vec![(pinger, CloseCode::POLICY_VIOLATION)]);
            }
            _ => {
                assert_eq!(closes(&outs), vec![(pinger, CloseCode::POLICY_VIOLATION)]);
                assert!(rig.hub.connection(pinger).is_none());
            }
        }
        assert!(rig.hub.connection(other).is_some());
    }
}

#[test]
fn binary_frames_close_with_1003_by_default() {
    let mut rig = Rig::new();
    let (a, b) = (rig.open(), rig.open());
    rig.hub
        .handle_frame(rig.now, a, Frame::Binary(Bytes::from_static(b"\x00\x01")))
        .unwrap();
    let outs = rig.drain();
    assert_eq!(closes(&outs), vec![(a, CloseCode::UNSUPPORTED_DATA)]);
    assert_eq!(
        rig.hub.stats().counters.errors.get("binary_frame"),
        Some(&1)
    );
    assert!(rig.hub.connection(b).is_some());
}

#[test]
fn slow_consumer_drop_skips_deliveries_until_flushed() {
    let mut rig = Rig::with_limits(|l| {
        l.max_queued_bytes = 10;
        l.slow_consumer = SlowConsumerPolicy::Drop;
    });
    let (a, b) = (rig.open(), rig.open());
    // `b` never flushes the first delivery.
    rig.text(a, "others:123456");
    assert_eq!(texts(&rig.drain()), to(&[b], "123456"));
    assert_eq!(rig.hub.connection(b).unwrap().queued_bytes, 6);
    assert_eq!(rig.hub.stats().queued_bytes, 6);
    // 6 + 6 > 10: dropped for `b`, still delivered to `a`.
    assert_eq!(rig.say(b, "all:abcdef"), to(&[a], "abcdef"));
    assert_eq!(rig.hub.stats().counters.dropped_deliveries, 1);
    // Exactly at the limit is allowed.
    rig.text(a, "others:1234");
    assert_eq!(texts(&rig.drain()), to(&[b], "1234"));
    assert_eq!(rig.hub.connection(b).unwrap().queued_bytes, 10);
    // The driver reports the bytes written: budget is released.
    rig.hub.handle_flushed(rig.now, b, 10).unwrap();
    assert_eq!(rig.hub.connection(b).unwrap().queued_bytes, 0);
    assert_eq!(rig.say(a, "others:again"), to(&[b], "again"));
    // Over-reporting saturates at zero.
    rig.hub.handle_flushed(rig.now, b, 1000).unwrap();
    assert_eq!(rig.hub.connection(b).unwrap().queued_bytes, 0);
    assert!(rig.hub.connection(b).is_some(), "Drop never closes");
    assert_eq!(rig.hub.stats().counters.slow_consumer_closes, 0);
}

#[test]
fn slow_consumer_close_closes_with_4008_and_leaves_others_unharmed() {
    let mut rig = Rig::with_limits(|l| {
        l.max_queued_bytes = 10;
        l.slow_consumer = SlowConsumerPolicy::Close;
    });
    let (a, slow, c) = (rig.open(), rig.open(), rig.open());
    for h in [a, slow, c] {
        rig.say(h, "join:r");
    }
    rig.events();
    rig.text(a, "room:r:123456");
    let outs = rig.drain();
    // Everyone but `slow` flushes.
    for h in [a, c] {
        rig.hub.handle_flushed(rig.now, h, 6).unwrap();
    }
    assert_eq!(texts(&outs), to(&[a, slow, c], "123456"));
    rig.text(a, "room:r:abcdef");
    let outs = rig.drain();
    assert_eq!(texts(&outs), to(&[a, c], "abcdef"));
    assert_eq!(closes(&outs), vec![(slow, CloseCode::SLOW_CONSUMER)]);
    assert_eq!(rig.events(), vec![Event::Closed(slow, vec!["r".into()])]);
    assert_eq!(rig.members("r"), {
        let mut m = vec![a, c];
        m.sort();
        m
    });
    let s = rig.hub.stats();
    assert_eq!(s.counters.slow_consumer_closes, 1);
    assert_eq!(s.counters.dropped_deliveries, 0);
    // A direct send that overflows closes too.
    rig.flush(&outs);
    rig.text(a, &format!("to:{}:12345678901", c.serial()));
    assert_eq!(closes(&rig.drain()), vec![(c, CloseCode::SLOW_CONSUMER)]);
    assert_eq!(rig.say(a, "all:ok"), to(&[a], "ok"));
}

// ---------------------------------------------------------------------------------------------
// Time

/// Step the fake clock to each deadline up to `until`, collecting (when, output).
fn step_deadlines(rig: &mut Rig, until: Instant) -> Vec<(Duration, Output)> {
    let mut seen = Vec::new();
    while let Some(t) = rig.hub.poll_timeout() {
        if t > until {
            break;
        }
        assert!(
            t >= rig.now,
            "a deadline in the past: {t:?} < {:?}",
            rig.now
        );
        rig.now = t;
        rig.hub.handle_timeout(t);
        for o in rig.drain() {
            seen.push((t - T0, o));
        }
    }
    seen
}

#[test]
fn heartbeat_pings_at_the_interval_and_idle_closes_with_4000() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(75)),
        ..Config::default()
    });
    let (quiet, alive) = (rig.open(), rig.open());
    assert_eq!(rig.hub.poll_timeout(), Some(T0 + Duration::from_secs(30)));
    let s = Duration::from_secs;
    let mut seen = step_deadlines(&mut rig, T0 + s(50));
    // `alive` answers a ping at 50 s.
    rig.now = T0 + s(50);
    rig.hub.handle_activity(rig.now, alive).unwrap();
    seen.extend(step_deadlines(&mut rig, T0 + s(200)));
    let ping = |h| Output::Ping { connection: h };
    let idle = |h| Output::Close {
        connection: h,
        code: CloseCode::IDLE_TIMEOUT,
        reason: "idle timeout: no traffic or pong received".into(),
    };
    let mut expect = vec![
        (s(30), ping(quiet)),
        (s(30), ping(alive)),
        (s(60), ping(quiet)),
        (s(60), ping(alive)),
        (s(75), idle(quiet)),
        (s(90), ping(alive)),
        (s(120), ping(alive)),
        (s(125), idle(alive)),
    ];
    let key = |(t, o): &(Duration, Output)| (*t, format!("{o:?}"));
    seen.sort_by_key(key);
    expect.sort_by_key(key);
    assert_eq!(seen, expect);
    assert_eq!(rig.hub.stats().counters.idle_timeouts, 2);
    assert_eq!(rig.hub.poll_timeout(), None);
    assert_eq!(
        rig.events(),
        vec![Event::Closed(quiet, vec![]), Event::Closed(alive, vec![])]
    );
}

#[test]
fn a_receive_only_connection_is_pinged_but_never_idle_closed() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(75)),
        ..Config::default()
    });
    let stream = rig.open_with(OpenInfo {
        receive_only: true,
        ..OpenInfo::default()
    });
    let s = Duration::from_secs;
    let seen = step_deadlines(&mut rig, T0 + s(200));
    let ping = |t| (s(t), Output::Ping { connection: stream });
    assert_eq!(
        seen,
        vec![
            ping(30),
            ping(60),
            ping(90),
            ping(120),
            ping(150),
            ping(180)
        ]
    );
    assert_eq!(rig.hub.stats().counters.idle_timeouts, 0);
    assert_eq!(rig.hub.stats().connections, 1);
}

#[test]
fn frames_count_as_activity() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: None,
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let a = rig.open();
    for _ in 0..5 {
        rig.advance(Duration::from_secs(9));
        rig.say(a, "all:tick");
        rig.hub.handle_timeout(rig.now);
        assert_eq!(rig.drain(), vec![]);
    }
    let seen = step_deadlines(&mut rig, T0 + Duration::from_secs(1000));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Duration::from_secs(45 + 10));
}

#[test]
fn handle_timeout_early_or_twice_is_a_no_op() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::from_secs(5)),
        idle_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    });
    let a = rig.open();
    let deadline = rig.hub.poll_timeout().unwrap();
    rig.hub
        .handle_timeout(Instant::from_micros(deadline.as_micros() - 1));
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(rig.hub.poll_timeout(), Some(deadline));
    rig.hub.handle_timeout(deadline);
    assert_eq!(rig.drain(), vec![Output::Ping { connection: a }]);
    let next = rig.hub.poll_timeout().unwrap();
    assert_eq!(next, deadline + Duration::from_secs(5));
    rig.hub.handle_timeout(deadline);
    rig.hub.handle_timeout(deadline);
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(rig.hub.poll_timeout(), Some(next));
}

#[test]
fn time_going_backwards_is_harmless() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(60)),
        limits: Limits {
            inbound_rate: Some(RateLimit {
                per_second: 1,
                burst: 1,
            }),
            rate_policy: RatePolicy::Close,
            ..Limits::default()
        },
        ..Config::default()
    });
    rig.now = T0 + Duration::from_secs(100);
    let a = rig.open();
    let deadline = rig.hub.poll_timeout().unwrap();
    assert_eq!(deadline, T0 + Duration::from_secs(130));
    // A frame stamped in the past: processed as "no time passed", no panic, no new tokens.
    rig.now = T0;
    assert_eq!(rig.say(a, "all:one"), to(&[a], "one"));
    rig.text(a, "all:two");
    assert_eq!(closes(&rig.drain()), vec![(a, CloseCode::POLICY_VIOLATION)]);
    // Timers: handle_timeout in the past does nothing, and a connection opened "in the past"
    // is stamped with the latest time seen.
    let b = rig.open();
    rig.hub.handle_timeout(T0);
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(
        rig.hub.connection(b).unwrap().opened_at,
        T0 + Duration::from_secs(100)
    );
    assert_eq!(rig.hub.poll_timeout(), Some(deadline));
    rig.hub.handle_timeout(deadline);
    assert_eq!(rig.drain(), vec![Output::Ping { connection: b }]);
}

#[test]
fn a_zero_heartbeat_interval_does_not_hang_handle_timeout() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::ZERO),
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let a = rig.open();
    rig.hub.handle_timeout(rig.now);
    assert_eq!(rig.drain(), vec![Output::Ping { connection: a }]);
    // Time saturated at the end of the representable range terminates too.
    let end = Instant::from_micros(u64::MAX);
    rig.hub.handle_timeout(end);
    assert_eq!(closes(&rig.drain()), vec![(a, CloseCode::IDLE_TIMEOUT)]);
}

#[test]
fn saturated_time_does_not_hang_handle_timeout() {
    let mut rig = Rig::with(Config {
        heartbeat_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(75)),
        ..Config::default()
    });
    rig.now = Instant::from_micros(u64::MAX - 10);
    let a = rig.open();
    // Both deadlines saturate to the same instant as `now` will be.
    let end = Instant::from_micros(u64::MAX);
    rig.hub.handle_timeout(end);
    rig.hub.handle_timeout(end);
    rig.drain();
    assert!(rig.hub.connection(a).is_some());
}

// ---------------------------------------------------------------------------------------------
// Cluster, shutdown, HTTP, stats

#[test]
fn replicate_emits_local_publications_only_and_remote_ones_are_never_replicated() {
    let mut rig = Rig::with(Config {
        replicate: true,
        ..Config::default()
    });
    let (a, b) = (rig.open(), rig.open());
    rig.say(b, "join:r");
    // A publication made by the protocol on this node.
    rig.text(a, "say:r:local");
    let outs = rig.drain();
    let replicated: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Replicate(p) => Some((**p).clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        replicated,
        vec![Publication::to_room("r", "local").except(a)]
    );
    assert_eq!(texts(&outs), to(&[b], "local"));
    // A server-side publication is local too.
    rig.hub.publish(rig.now, Publication::to_all("server"));
    assert!(matches!(rig.drain().last(), Some(Output::Replicate(_))));
    // Direct sends and connection-targeted publications stay local.
    rig.text(a, &format!("to:{}:direct", b.serial()));
    let outs = rig.drain();
    assert_eq!(texts(&outs), to(&[b], "direct"));
    assert!(!outs.iter().any(|o| matches!(o, Output::Replicate(_))));
    // From another node: delivered locally (its `except` means nothing here), never re-replicated.
    let remote = Publication::to_all("remote").except(a);
    assert_eq!(rig.hub.handle_remote(rig.now, remote), 2);
    let outs = rig.drain();
    assert_eq!(texts(&outs), to(&[a, b], "remote"));
    assert!(!outs.iter().any(|o| matches!(o, Output::Replicate(_))));
    assert_eq!(
        rig.hub
            .handle_remote(rig.now, Publication::new(Target::Connection(a), "x")),
        0
    );
    assert_eq!(rig.drain(), vec![]);
}

#[test]
fn replicate_announces_rooms_as_they_gain_their_first_and_lose_their_last_member() {
    let mut rig = Rig::with(Config {
        replicate: true,
        ..Config::default()
    });
    let (a, b) = (rig.open(), rig.open());
    rig.text(a, "join:r");
    assert_eq!(rig.drain(), vec![Output::RoomOpened("r".into())]);
    rig.text(b, "join:r");
    rig.text(b, "join:s");
    assert_eq!(rig.drain(), vec![Output::RoomOpened("s".into())]);
    rig.text(a, "leave:r");
    assert_eq!(rig.drain(), vec![]);
    rig.text(b, "leave:r");
    assert_eq!(rig.drain(), vec![Output::RoomClosed("r".into())]);
    // A close empties rooms too.
    rig.hub.handle_close(rig.now, b).unwrap();
    assert_eq!(rig.drain(), vec![Output::RoomClosed("s".into())]);
    // A refused join announces nothing.
    let mut rig = Rig::with(Config {
        replicate: true,
        limits: Limits {
            max_rooms: 0,
            ..Limits::default()
        },
        ..Config::default()
    });
    let a = rig.open();
    rig.text(a, "join:r");
    assert_eq!(
        rig.drain(),
        vec![transmit(
            a,
            "error:the server has reached its limit of 0 rooms"
        )]
    );
}

#[test]
fn no_replication_unless_configured() {
    let mut rig = Rig::new();
    let a = rig.open();
    rig.text(a, "join:r");
    rig.text(a, "all:x");
    rig.text(a, "leave:r");
    let outs = rig.drain();
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::Replicate(_) | Output::RoomOpened(_) | Output::RoomClosed(_)
    )));
}

#[test]
fn close_all_closes_everyone_and_empties_rooms() {
    let mut rig = Rig::new();
    let hs: Vec<_> = (0..3).map(|_| rig.open()).collect();
    rig.say(hs[0], "join:r");
    rig.events();
    rig.hub
        .close_all(rig.now, CloseCode::GOING_AWAY, "shutting down");
    let outs = rig.drain();
    let mut expect: Vec<_> = hs.iter().map(|h| (*h, CloseCode::GOING_AWAY)).collect();
    expect.sort();
    assert_eq!(closes(&outs), expect);
    assert_eq!(rig.events().len(), 3);
    let s = rig.hub.stats();
    assert_eq!((s.connections, s.rooms), (0, 0));
    assert_eq!(
        rig.hub.poll_timeout().map(|_| ()),
        Some(()),
        "stale timers may remain"
    );
    rig.hub.handle_timeout(T0 + Duration::from_secs(3600));
    assert_eq!(rig.drain(), vec![]);
    assert_eq!(rig.hub.poll_timeout(), None);
}

#[test]
fn http_requests_reach_the_protocol() {
    let mut rig = Rig::new();
    let (a, b) = (rig.open(), rig.open());
    rig.say(a, "join:news");
    let req = |method, path: &str, body: &'static str| HttpRequest {
        method,
        path: path.into(),
        query: vec![],
        headers: vec![],
        body: Bytes::from_static(body.as_bytes()),
    };
    let resp = rig
        .hub
        .handle_http(rig.now, req(Method::Post, "/publish/news", "extra!"))
        .unwrap();
    assert_eq!(resp, HttpResponse::json(202, "{\"delivered\":1}"));
    assert_eq!(texts(&rig.drain()), to(&[a], "extra!"));
    let resp = rig
        .hub
        .handle_http(rig.now, req(Method::Get, "/stats", ""))
        .unwrap();
    assert_eq!(resp.body, Bytes::from_static(b"connections=2 rooms=1"));
    assert_eq!(
        rig.hub.handle_http(rig.now, req(Method::Get, "/nope", "")),
        None
    );
    let _ = b;
}

#[test]
fn stats_count_what_happened() {
    let mut rig = Rig::with_limits(|l| {
        l.max_queued_bytes = 16;
        l.slow_consumer = SlowConsumerPolicy::Drop;
    });
    let (a, b, c) = (rig.open(), rig.open(), rig.open()); // greetings, flushed
    let frames = [
        "join:r",
        "join:r",
        "say:r:hey",      // 1 publication, 1 delivery of 3 bytes
        "all:12345",      // 1 publication, 3 deliveries of 5 bytes
        "all:1234567",    // 1 publication, 3 deliveries of 7 bytes, left unflushed
        "all:1234567890", // 1 publication: 7 + 10 > 16, dropped for all three
        "what",           // unknown: a 21-byte error reply, 7 + 21 > 16, dropped
    ];
    rig.say(a, frames[0]);
    rig.say(b, frames[1]);
    rig.say(a, frames[2]);
    rig.say(c, frames[3]);
    rig.text(c, frames[4]);
    rig.drain();
    rig.say(c, frames[5]);
    rig.say(c, frames[6]);
    rig.hub.handle_close(rig.now, b).unwrap();
    rig.hub.handle_replication_dropped(2);
    let s = rig.hub.stats();
    assert_eq!(s.counters.replication_dropped, 2);
    assert_eq!(s.connections, 2);
    assert_eq!(s.rooms, 1);
    assert_eq!(s.queued_bytes, 14);
    let k = &s.counters;
    assert_eq!(k.connections_opened, 3);
    assert_eq!(k.connections_closed, 1);
    assert_eq!(k.messages_in, 7);
    assert_eq!(
        k.bytes_in,
        frames.iter().map(|s| s.len() as u64).sum::<u64>()
    );
    assert_eq!(k.publications, 4);
    assert_eq!(k.deliveries, 3 + 1 + 3 + 3);
    let welcome: u64 = [a, b, c]
        .iter()
        .map(|h| format!("welcome:{}", h.serial()).len() as u64)
        .sum();
    assert_eq!(k.bytes_out, welcome + 3 + 3 * 5 + 3 * 7);
    assert_eq!(k.dropped_deliveries, 4);
    assert_eq!(k.slow_consumer_closes, 0);
    assert_eq!(k.idle_timeouts, 0);
    assert_eq!(k.errors.get("unknown_command"), Some(&1));
    assert_eq!(k.errors.len(), 1);
}
