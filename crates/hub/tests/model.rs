//! Model-based property test: random operation sequences run against the [`Hub`] and against a
//! deliberately naive reference model (a `Vec` of every connection ever opened, linear scans for
//! rooms, users and filters, no heap of timers, no slab, no index). After every step both must
//! agree on: what was transmitted to whom (as a multiset), pings, closes and their codes,
//! replications, rooms announced opened or closed to the backplane, what the protocol was told
//! (joins, leaves, closes with rooms), room membership, each connection's rooms in join order,
//! filter, identity and queued bytes, and every counter.
//!
//! Connections act on rooms, filters and identity through a tiny command protocol defined here
//! (`j<room>`, `l<room>`, `f<k>=<v>,..`, `u<user>`, `e<text>` echo, `x` quit); publications go
//! through [`Hub::publish`] and [`Hub::handle_remote`] directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use switchboard_hub::{
    Bytes, CloseCode, Config, ConnectionHandle, Context, Counters, Filter, Frame, Hub, Identity,
    Instant, JoinError, Limits, OpenError, OpenInfo, Output, Protocol, Publication, RateLimit,
    RatePolicy, RawText, SlowConsumerPolicy, Target, Text, UnknownConnection, MAX_HELD_FRAMES,
};

const T0: Instant = Instant::from_millis(1_700_000_000_000);
const ROOMS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const KEYS: [&str; 2] = ["k", "z"];
const VALUES: [&str; 2] = ["1", "2"];

// ---------------------------------------------------------------------------------------------
// The protocol under test

/// What the protocol heard; compared as a multiset per step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Join(ConnectionHandle, String, Result<bool, JoinError>),
    Leave(ConnectionHandle, String, bool),
    Closed(ConnectionHandle, Vec<String>),
}

type Log = Arc<Mutex<Vec<Ev>>>;

struct Cmd {
    log: Log,
}

fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Protocol for Cmd {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "cmd"
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
                let r = cx.join(conn, arg);
                self.log.lock().unwrap().push(Ev::Join(conn, arg.into(), r));
            }
            Some('l') => {
                let r = cx.leave(conn, arg);
                self.log
                    .lock()
                    .unwrap()
                    .push(Ev::Leave(conn, arg.into(), r));
            }
            Some('f') => cx.set_filter(conn, Filter::new(parse_pairs(arg))),
            Some('u') => cx.set_identity(conn, Identity::user(arg)),
            Some('e') => {
                cx.send(
                    conn,
                    frame.slice_from(1).expect("after an ASCII command letter"),
                );
            }
            Some('x') => cx.close(conn, CloseCode::NORMAL, "quit"),
            _ => cx.count_error("unknown"),
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnectionHandle, rooms: &[String]) {
        self.log
            .lock()
            .unwrap()
            .push(Ev::Closed(conn, rooms.to_vec()));
    }
}

// ---------------------------------------------------------------------------------------------
// The naive reference model

const TOKEN: u128 = 1_000_000;

#[derive(Debug, Clone)]
struct MConn {
    h: ConnectionHandle,
    open: bool,
    rooms: Vec<String>,
    filter: Vec<(String, String)>,
    user: Option<String>,
    queued: usize,
    opened_at: Instant,
    last_activity: Instant,
    last_ping: Instant,
    /// Rate-limit tokens in millionths of a message.
    tokens: u128,
    tokens_at: Instant,
    /// While paused for the inbound rate: the frames held (`None` for a ping or pong, which
    /// only costs its token), and when reading resumes.
    throttle: Option<(Vec<Option<Frame<Text>>>, Instant)>,
}

struct Model {
    config: Config,
    now: Instant,
    /// Every connection ever opened, in order; closed ones stay with `open: false`.
    conns: Vec<MConn>,
    counters: Counters,
    outputs: Vec<Output>,
    log: Vec<Ev>,
}

fn since(later: Instant, earlier: Instant) -> Duration {
    Duration::from_micros(later.as_micros().saturating_sub(earlier.as_micros()))
}

impl Model {
    fn new(config: Config) -> Self {
        Model {
            config,
            now: T0,
            conns: Vec::new(),
            counters: Counters::default(),
            outputs: Vec::new(),
            log: Vec::new(),
        }
    }

    fn tick(&mut self, t: Instant) -> Instant {
        if t > self.now {
            self.now = t;
        }
        self.now
    }

    fn find(&mut self, h: ConnectionHandle) -> Option<usize> {
        (0..self.conns.len()).find(|&i| self.conns[i].h == h && self.conns[i].open)
    }

    fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.open).count()
    }

    fn room_exists(&self, room: &str) -> bool {
        self.conns
            .iter()
            .any(|c| c.open && c.rooms.iter().any(|r| r == room))
    }

    /// With replication on, a room that just lost its last member is announced closed.
    fn announce_if_empty(&mut self, room: &str) {
        if self.config.replicate && !self.room_exists(room) {
            self.outputs.push(Output::RoomClosed(room.to_string()));
        }
    }

    fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in self.conns.iter().filter(|c| c.open) {
            for r in &c.rooms {
                if !names.contains(r) {
                    names.push(r.clone());
                }
            }
        }
        names.sort();
        names
    }

    /// Predict whether an open is accepted; on acceptance the caller reports the handle.
    fn can_open(&self) -> Result<(), OpenError> {
        let limit = self.config.limits.max_connections;
        if self.open_count() >= limit {
            Err(OpenError::TooManyConnections { limit })
        } else {
            Ok(())
        }
    }

    fn opened(&mut self, t: Instant, h: ConnectionHandle, user: Option<&str>) {
        let now = self.tick(t);
        let burst = self
            .config
            .limits
            .inbound_rate
            .map_or(0, |r| u128::from(r.burst) * TOKEN);
        self.conns.push(MConn {
            h,
            open: true,
            rooms: Vec::new(),
            filter: Vec::new(),
            user: user.map(str::to_string),
            queued: 0,
            opened_at: now,
            last_activity: now,
            last_ping: now,
            tokens: burst,
            tokens_at: now,
            throttle: None,
        });
        self.counters.connections_opened += 1;
    }

    /// Remove a connection; `code` is `None` for a peer close (no Close output).
    fn close(&mut self, h: ConnectionHandle, code: Option<CloseCode>) {
        let Some(i) = self.find(h) else { return };
        let c = &mut self.conns[i];
        c.open = false;
        let rooms = std::mem::take(&mut c.rooms);
        self.counters.connections_closed += 1;
        for r in &rooms {
            self.announce_if_empty(r);
        }
        if let Some(code) = code {
            self.outputs.push(Output::Close {
                connection: h,
                code,
                reason: "".into(),
            });
        }
        self.log.push(Ev::Closed(h, rooms));
    }

    fn publish(&mut self, p: &Publication, local: bool) -> usize {
        if !matches!(p.target, Target::Connection(_)) {
            self.counters.publications += 1;
        }
        let max = self.config.limits.max_queued_bytes;
        let mut victims = Vec::new();
        let mut delivered = 0;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if !c.open {
                continue;
            }
            let targeted = match &p.target {
                Target::All => true,
                Target::Room(r) => c.rooms.contains(r),
                Target::User(u) => c.user.as_deref() == Some(u.as_str()),
                Target::Connection(h) => c.h == *h,
                other => unreachable!("the model knows no target {other:?}"),
            };
            if !targeted || p.except == Some(c.h) {
                continue;
            }
            if let Some(tags) = &p.tags {
                let matches = c.filter.iter().all(|f| tags.contains(f));
                if !matches {
                    continue;
                }
            }
            let len = p.payload.len();
            if c.queued + len > max {
                match self.config.limits.slow_consumer {
                    SlowConsumerPolicy::Drop => self.counters.dropped_deliveries += 1,
                    SlowConsumerPolicy::Close => victims.push(c.h),
                }
                continue;
            }
            let h = c.h;
            self.conns[i].queued += len;
            self.counters.deliveries += 1;
            self.counters.bytes_out += len as u64;
            self.outputs.push(Output::Transmit {
                connection: h,
                payload: p.payload.clone(),
            });
            delivered += 1;
        }
        for h in victims {
            self.counters.slow_consumer_closes += 1;
            self.close(h, Some(CloseCode::SLOW_CONSUMER));
        }
        if local && self.config.replicate && !matches!(p.target, Target::Connection(_)) {
            self.outputs.push(Output::Replicate(Box::new(p.clone())));
        }
        delivered
    }

    fn error(&mut self, kind: &'static str) {
        *self.counters.errors.entry(kind).or_insert(0) += 1;
    }

    fn frame(
        &mut self,
        t: Instant,
        h: ConnectionHandle,
        frame: &Frame<Text>,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(t);
        let i = self.find(h).ok_or(UnknownConnection)?;
        let len = match frame {
            Frame::Text(b) => b.len(),
            Frame::Binary(b) => b.len(),
            _ => unreachable!("the model sends text and binary frames only"),
        };
        let limits = self.config.limits.clone();
        self.conns[i].last_activity = now;
        self.counters.messages_in += 1;
        self.counters.bytes_in += len as u64;
        if len > limits.max_frame_bytes {
            self.error("frame_too_large");
            self.close(h, Some(CloseCode::MESSAGE_TOO_BIG));
            return Ok(());
        }
        let Some(rate) = limits.inbound_rate else {
            self.dispatch(i, frame);
            return Ok(());
        };
        if self.conns[i].throttle.is_some() {
            self.hold(now, i, rate, Some(frame.clone()));
            return Ok(());
        }
        if self.take_token(now, i, rate) {
            self.dispatch(i, frame);
            if limits.rate_policy == RatePolicy::Throttle {
                self.pause_if_empty(now, i, rate);
            }
        } else if limits.rate_policy == RatePolicy::Throttle {
            self.pause(i, rate, Some(frame.clone()));
        } else {
            self.over_rate(h);
        }
        Ok(())
    }

    /// A paused connection sent `item`: it is held (at most MAX_HELD_FRAMES, else the
    /// connection is closed), and released if the pause is over.
    fn hold(&mut self, now: Instant, i: usize, rate: RateLimit, item: Option<Frame<Text>>) {
        let h = self.conns[i].h;
        let (held, until) = self.conns[i].throttle.as_mut().expect("paused");
        if held.len() >= MAX_HELD_FRAMES {
            self.over_rate(h);
            return;
        }
        held.push(item);
        if now >= *until {
            self.release(now, i, rate);
        }
    }

    fn over_rate(&mut self, h: ConnectionHandle) {
        self.error("rate_limited");
        self.close(h, Some(CloseCode::POLICY_VIOLATION));
    }

    fn refill(&mut self, now: Instant, i: usize, rate: RateLimit) {
        let c = &mut self.conns[i];
        let elapsed = since(now, c.tokens_at).as_micros();
        let cap = u128::from(rate.burst) * TOKEN;
        c.tokens = (c.tokens + elapsed * u128::from(rate.per_second)).min(cap);
        c.tokens_at = now;
    }

    fn take_token(&mut self, now: Instant, i: usize, rate: RateLimit) -> bool {
        self.refill(now, i, rate);
        let c = &mut self.conns[i];
        if c.tokens >= TOKEN {
            c.tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// When the bucket holds tokens for `held` frames plus a tenth of a second's worth
    /// (at least one, at most the burst).
    fn resume_at(&self, i: usize, rate: RateLimit, held: usize) -> Instant {
        let c = &self.conns[i];
        let burst = u128::from(rate.burst.max(1));
        let resume = u128::from(rate.per_second / 10).clamp(1, burst);
        let need = (held as u128 + resume).min(burst) * TOKEN;
        let per_micro = u128::from(rate.per_second.max(1));
        let wait = need.saturating_sub(c.tokens).div_ceil(per_micro);
        c.tokens_at + Duration::from_micros(wait as u64)
    }

    fn pause(&mut self, i: usize, rate: RateLimit, frame: Option<Frame<Text>>) {
        let held: Vec<Option<Frame<Text>>> = frame.into_iter().map(Some).collect();
        let until = self.resume_at(i, rate, held.len());
        self.conns[i].throttle = Some((held, until));
        self.counters.throttled += 1;
        self.outputs.push(Output::PauseReading {
            connection: self.conns[i].h,
            until,
        });
    }

    fn pause_if_empty(&mut self, now: Instant, i: usize, rate: RateLimit) {
        if !self.conns[i].open {
            return;
        }
        self.refill(now, i, rate);
        if self.conns[i].tokens < TOKEN && self.conns[i].throttle.is_none() {
            self.pause(i, rate, None);
        }
    }

    /// Process held frames while tokens last, then resume or pause again.
    fn release(&mut self, now: Instant, i: usize, rate: RateLimit) {
        loop {
            if !self.conns[i].open {
                return;
            }
            self.refill(now, i, rate);
            let c = &mut self.conns[i];
            let Some((held, _)) = &mut c.throttle else {
                return;
            };
            if c.tokens < TOKEN || held.is_empty() {
                break;
            }
            let item = held.remove(0);
            c.tokens -= TOKEN;
            if let Some(frame) = item {
                self.dispatch(i, &frame);
            }
        }
        if !self.conns[i].open {
            return;
        }
        let held = self.conns[i].throttle.as_ref().map_or(0, |(h, _)| h.len());
        let until = self.resume_at(i, rate, held);
        if held == 0 && until <= now {
            self.conns[i].throttle = None;
            return;
        }
        if let Some((_, u)) = &mut self.conns[i].throttle {
            *u = until;
        }
        self.outputs.push(Output::PauseReading {
            connection: self.conns[i].h,
            until,
        });
    }

    /// An accepted frame: binary frames close with 1003, text frames are commands.
    fn dispatch(&mut self, i: usize, frame: &Frame<Text>) {
        match frame {
            Frame::Binary(_) => {
                self.error("binary_frame");
                self.close(self.conns[i].h, Some(CloseCode::UNSUPPORTED_DATA));
            }
            Frame::Text(text) => self.command(i, text),
            _ => unreachable!("the model sends text and binary frames only"),
        }
    }

    fn activity(&mut self, t: Instant, h: ConnectionHandle) -> Result<(), UnknownConnection> {
        let now = self.tick(t);
        let i = self.find(h).ok_or(UnknownConnection)?;
        self.conns[i].last_activity = now;
        let limits = self.config.limits.clone();
        let Some(rate) = limits.inbound_rate else {
            return Ok(());
        };
        if self.conns[i].throttle.is_some() {
            self.hold(now, i, rate, None);
            return Ok(());
        }
        if self.take_token(now, i, rate) {
            if limits.rate_policy == RatePolicy::Throttle {
                self.pause_if_empty(now, i, rate);
            }
        } else if limits.rate_policy == RatePolicy::Throttle {
            self.pause(i, rate, None);
        } else {
            self.over_rate(h);
        }
        Ok(())
    }

    fn command(&mut self, i: usize, bytes: &Text) {
        let h = self.conns[i].h;
        let text = bytes.as_str();
        let arg = text.get(1..).unwrap_or("");
        match text.chars().next() {
            Some('j') => {
                let limits = &self.config.limits;
                let exists = self.room_exists(arg);
                let room_count = self.room_names().len();
                let c = &mut self.conns[i];
                let r = if c.rooms.iter().any(|r| r == arg) {
                    Ok(false)
                } else if c.rooms.len() >= limits.max_rooms_per_connection {
                    Err(JoinError::TooManyRooms {
                        limit: limits.max_rooms_per_connection,
                    })
                } else if !exists && room_count >= limits.max_rooms {
                    Err(JoinError::TooManyRoomsInHub {
                        limit: limits.max_rooms,
                    })
                } else {
                    c.rooms.push(arg.to_string());
                    if !exists && self.config.replicate {
                        self.outputs.push(Output::RoomOpened(arg.to_string()));
                    }
                    Ok(true)
                };
                self.log.push(Ev::Join(h, arg.into(), r));
            }
            Some('l') => {
                let c = &mut self.conns[i];
                let before = c.rooms.len();
                c.rooms.retain(|r| r != arg);
                let left = c.rooms.len() != before;
                if left {
                    self.announce_if_empty(arg);
                }
                self.log.push(Ev::Leave(h, arg.into(), left));
            }
            Some('f') => {
                let mut f: Vec<(String, String)> = Vec::new();
                for (k, v) in parse_pairs(arg) {
                    match f.iter_mut().find(|(fk, _)| *fk == k) {
                        Some(e) => e.1 = v,
                        None => f.push((k, v)),
                    }
                }
                self.conns[i].filter = f;
            }
            Some('u') => self.conns[i].user = Some(arg.to_string()),
            Some('e') => {
                self.publish(
                    &Publication::new(Target::Connection(h), bytes.slice_from(1).unwrap()),
                    false,
                );
            }
            Some('x') => self.close(h, Some(CloseCode::NORMAL)),
            _ => self.error("unknown"),
        }
    }

    fn timeout(&mut self, t: Instant) {
        let now = self.tick(t);
        let (heartbeat, idle) = (self.config.heartbeat_interval, self.config.idle_timeout);
        let mut idle_closed = Vec::new();
        let mut resumed = Vec::new();
        for c in self.conns.iter_mut().filter(|c| c.open) {
            if idle.is_some_and(|d| since(now, c.last_activity) >= d) {
                idle_closed.push(c.h);
                continue;
            }
            if c.throttle.as_ref().is_some_and(|(_, until)| *until <= now) {
                resumed.push(c.h);
            }
            if heartbeat.is_some_and(|d| since(now, c.last_ping) >= d) {
                c.last_ping = now;
                self.outputs.push(Output::Ping { connection: c.h });
            }
        }
        self.counters.idle_timeouts += idle_closed.len() as u64;
        for h in idle_closed {
            self.close(h, Some(CloseCode::IDLE_TIMEOUT));
        }
        // The hub lets paused connections go on in handle order.
        resumed.sort();
        if let Some(rate) = self.config.limits.inbound_rate {
            for h in resumed {
                if let Some(i) = self.find(h) {
                    self.release(now, i, rate);
                }
            }
        }
    }

    /// The earliest instant at which some open connection is due a ping or an idle close.
    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| c.open)
            .flat_map(|c| {
                [
                    self.config.heartbeat_interval.map(|d| c.last_ping + d),
                    self.config.idle_timeout.map(|d| c.last_activity + d),
                    c.throttle.as_ref().map(|(_, until)| *until),
                ]
            })
            .flatten()
            .min()
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

/// Picks one of the handles opened so far (modulo their number): stale ones included.
#[derive(Debug, Clone, Copy)]
struct Ix(usize);

#[derive(Debug, Clone)]
enum Tgt {
    All,
    Room(usize),
    User(usize),
    Conn(Ix),
}

#[derive(Debug, Clone)]
enum Op {
    Open(Option<usize>),
    PeerClose(Ix),
    ServerClose(Ix),
    Join(Ix, usize),
    Leave(Ix, usize),
    SetFilter(Ix, Vec<(usize, usize)>),
    SetIdentity(Ix, usize),
    Echo(Ix, usize),
    Unknown(Ix),
    Binary(Ix),
    Quit(Ix),
    Publish {
        target: Tgt,
        except: Option<Ix>,
        tags: Option<Vec<(usize, usize)>>,
        len: usize,
        remote: bool,
    },
    Flushed(Ix, usize),
    Activity(Ix),
    Advance(u64),
    Rewind(u64),
    ToDeadline,
}

fn pairs() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let i = || any::<usize>().prop_map(Ix);
    let target = prop_oneof![
        Just(Tgt::All),
        (0..ROOMS.len()).prop_map(Tgt::Room),
        (0..USERS.len()).prop_map(Tgt::User),
        i().prop_map(Tgt::Conn),
    ];
    prop_oneof![
        4 => prop::option::of(0..USERS.len()).prop_map(Op::Open),
        1 => i().prop_map(Op::PeerClose),
        1 => i().prop_map(Op::ServerClose),
        5 => (i(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Join(c, r)),
        3 => (i(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Leave(c, r)),
        2 => (i(), pairs()).prop_map(|(c, f)| Op::SetFilter(c, f)),
        2 => (i(), 0..USERS.len()).prop_map(|(c, u)| Op::SetIdentity(c, u)),
        1 => (i(), 0..12usize).prop_map(|(c, n)| Op::Echo(c, n)),
        1 => i().prop_map(Op::Unknown),
        1 => i().prop_map(Op::Binary),
        1 => i().prop_map(Op::Quit),
        8 => (target, prop::option::of(i()), prop::option::of(pairs()), 0..16usize, prop::bool::weighted(0.2))
            .prop_map(|(target, except, tags, len, remote)| Op::Publish { target, except, tags, len, remote }),
        3 => (i(), 0..24usize).prop_map(|(c, n)| Op::Flushed(c, n)),
        1 => i().prop_map(Op::Activity),
        3 => (0..4_000u64).prop_map(Op::Advance),
        1 => (0..3_000u64).prop_map(Op::Rewind),
        2 => Just(Op::ToDeadline),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    let secs = |max: u64| (0..=max * 1000).prop_map(Duration::from_millis);
    (
        (1..=6usize, 2..=4usize, 2..=5usize, 0..=40usize, 4..=16usize),
        prop_oneof![
            Just(SlowConsumerPolicy::Drop),
            Just(SlowConsumerPolicy::Close)
        ],
        prop::option::of((1..=3u32, 1..=4u32, any::<bool>())),
        // Now and then a zero interval: every handle_timeout pings every connection.
        prop::option::of(prop_oneof![1 => Just(Duration::ZERO), 9 => secs(5)]),
        prop::option::of(secs(10)),
        any::<bool>(),
    )
        .prop_map(
            |(
                (conns, per_conn, rooms, queued, frame),
                policy,
                rate,
                heartbeat,
                idle,
                replicate,
            )| {
                Config {
                    history: None,
                    limits: Limits {
                        max_frame_bytes: frame,
                        max_connections: conns,
                        max_rooms_per_connection: per_conn,
                        max_rooms: rooms,
                        max_queued_bytes: queued,
                        slow_consumer: policy,
                        inbound_rate: rate
                            .map(|(per_second, burst, _)| RateLimit { per_second, burst }),
                        rate_policy: match rate {
                            Some((_, _, true)) => RatePolicy::Close,
                            _ => RatePolicy::Throttle,
                        },
                    },
                    heartbeat_interval: heartbeat,
                    idle_timeout: idle,
                    replicate,
                }
            },
        )
}

fn pairs_text(p: &[(usize, usize)]) -> String {
    p.iter()
        .map(|(k, v)| format!("{}={}", KEYS[*k], VALUES[*v]))
        .collect::<Vec<_>>()
        .join(",")
}

fn pairs_tags(p: &[(usize, usize)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (KEYS[*k].to_string(), VALUES[*v].to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running both side by side

struct World {
    hub: Hub<Cmd>,
    log: Log,
    model: Model,
    /// Every handle ever returned, for ops to pick from (closed ones included: stale handles).
    handles: Vec<ConnectionHandle>,
    /// The driver's clock; may go backwards.
    t: Instant,
}

/// Outputs in a comparable form: each kind as a sorted list.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    transmits: Vec<(ConnectionHandle, Text)>,
    pings: Vec<ConnectionHandle>,
    pauses: Vec<(ConnectionHandle, Instant)>,
    closes: Vec<(ConnectionHandle, CloseCode)>,
    replicated: Vec<Publication>,
    rooms_opened: Vec<String>,
    rooms_closed: Vec<String>,
    events: Vec<String>,
}

fn step_of(outputs: Vec<Output>, events: Vec<Ev>) -> Step {
    let mut s = Step {
        transmits: Vec::new(),
        pings: Vec::new(),
        pauses: Vec::new(),
        closes: Vec::new(),
        replicated: Vec::new(),
        rooms_opened: Vec::new(),
        rooms_closed: Vec::new(),
        events: events.iter().map(|e| format!("{e:?}")).collect(),
    };
    for o in outputs.into_iter().flat_map(Output::split) {
        match o {
            Output::Transmit {
                connection,
                payload,
            } => s.transmits.push((connection, payload)),
            Output::Ping { connection } => s.pings.push(connection),
            Output::PauseReading { connection, until } => s.pauses.push((connection, until)),
            Output::Close {
                connection, code, ..
            } => s.closes.push((connection, code)),
            Output::Replicate(p) => s.replicated.push(*p),
            Output::RoomOpened(r) => s.rooms_opened.push(r),
            Output::RoomClosed(r) => s.rooms_closed.push(r),
            other => panic!("an output the model does not know: {other:?}"),
        }
    }
    s.transmits.sort();
    s.pings.sort();
    s.pauses.sort();
    s.closes.sort();
    s.rooms_opened.sort();
    s.rooms_closed.sort();
    s.events.sort();
    s
}

impl World {
    fn new(config: Config) -> Self {
        let log = Log::default();
        let hub = Hub::new(config.clone(), Cmd { log: log.clone() }, T0);
        World {
            hub,
            log,
            model: Model::new(config),
            handles: Vec::new(),
            t: T0,
        }
    }

    fn pick(&self, i: &Ix) -> Option<ConnectionHandle> {
        (!self.handles.is_empty()).then(|| self.handles[i.0 % self.handles.len()])
    }

    fn frame(&mut self, i: &Ix, frame: Frame<Text>) {
        let Some(h) = self.pick(i) else { return };
        let got = self.hub.handle_frame(self.t, h, frame.clone());
        let want = self.model.frame(self.t, h, &frame);
        assert_eq!(got, want, "handle_frame result for {h:?}");
    }

    fn apply(&mut self, op: &Op, n: usize) {
        let t = self.t;
        match op {
            Op::Open(user) => {
                let identity = user.map(|u| Identity::user(USERS[u]));
                let info = OpenInfo {
                    identity,
                    ..OpenInfo::default()
                };
                let want = self.model.can_open();
                let got = self.hub.handle_open(t, info);
                assert_eq!(got.map(|_| ()), want, "handle_open result");
                if let Ok(h) = got {
                    assert!(!self.handles.contains(&h), "a handle was reused: {h:?}");
                    self.handles.push(h);
                    self.model.opened(t, h, user.map(|u| USERS[u]));
                }
            }
            Op::PeerClose(i) => {
                let Some(h) = self.pick(i) else { return };
                let want = self.model.find(h).map(|_| ()).ok_or(UnknownConnection);
                self.model.tick(t);
                self.model.close(h, None);
                assert_eq!(self.hub.handle_close(t, h), want);
            }
            Op::ServerClose(i) => {
                let Some(h) = self.pick(i) else { return };
                self.hub.close(t, h, CloseCode::GOING_AWAY, "server close");
                self.model.tick(t);
                self.model.close(h, Some(CloseCode::GOING_AWAY));
            }
            Op::Join(i, r) => self.frame(i, Frame::Text(format!("j{}", ROOMS[*r]).into())),
            Op::Leave(i, r) => self.frame(i, Frame::Text(format!("l{}", ROOMS[*r]).into())),
            Op::SetFilter(i, f) => self.frame(i, Frame::Text(format!("f{}", pairs_text(f)).into())),
            Op::SetIdentity(i, u) => self.frame(i, Frame::Text(format!("u{}", USERS[*u]).into())),
            Op::Echo(i, len) => {
                let body: String = std::iter::repeat_n('e', *len).collect();
                self.frame(i, Frame::Text(format!("e{body}").into()));
            }
            Op::Unknown(i) => self.frame(i, Frame::Text("?".into())),
            Op::Binary(i) => self.frame(i, Frame::Binary(Bytes::from_static(b"\x00"))),
            Op::Quit(i) => self.frame(i, Frame::Text("x".into())),
            Op::Publish {
                target,
                except,
                tags,
                len,
                remote,
            } => {
                let target = match target {
                    Tgt::All => Target::All,
                    Tgt::Room(r) => Target::Room(ROOMS[*r].into()),
                    Tgt::User(u) => Target::User(USERS[*u].into()),
                    Tgt::Conn(i) => match self.pick(i) {
                        Some(h) => Target::Connection(h),
                        None => return,
                    },
                };
                // A payload distinct per step, so transmits of different steps never compare equal.
                let payload = Text::from(format!("{n:04}{}", "p".repeat(*len)));
                let p = Publication {
                    target,
                    except: except.as_ref().and_then(|i| self.pick(i)),
                    tags: tags.as_ref().map(|t| pairs_tags(t)),
                    payload,
                    // Without history, keeping changes nothing.
                    kept: len % 2 == 0,
                };
                self.model.tick(t);
                if *remote {
                    let got = self.hub.handle_remote(t, p.clone());
                    let want = if matches!(p.target, Target::Connection(_)) {
                        0
                    } else {
                        let p = Publication { except: None, ..p };
                        self.model.publish(&p, false)
                    };
                    assert_eq!(got, want, "handle_remote deliveries");
                } else {
                    let got = self.hub.publish(t, p.clone());
                    let want = self.model.publish(&p, true);
                    assert_eq!(got, want, "publish deliveries");
                }
            }
            Op::Flushed(i, bytes) => {
                let Some(h) = self.pick(i) else { return };
                let got = self.hub.handle_flushed(t, h, *bytes);
                self.model.tick(t);
                let want = match self.model.find(h) {
                    Some(k) => {
                        let c = &mut self.model.conns[k];
                        c.queued = c.queued.saturating_sub(*bytes);
                        Ok(())
                    }
                    None => Err(UnknownConnection),
                };
                assert_eq!(got, want);
            }
            Op::Activity(i) => {
                let Some(h) = self.pick(i) else { return };
                let got = self.hub.handle_activity(t, h);
                let want = self.model.activity(t, h);
                assert_eq!(got, want);
            }
            Op::Advance(ms) => {
                self.t = self.t + Duration::from_millis(*ms);
                self.hub.handle_timeout(self.t);
                self.model.timeout(self.t);
            }
            Op::Rewind(ms) => {
                self.t = Instant::from_micros(
                    self.t
                        .as_micros()
                        .saturating_sub(ms * 1000)
                        .max(T0.as_micros()),
                );
            }
            Op::ToDeadline => {
                if let Some(d) = self.hub.poll_timeout() {
                    self.t = self.t.max(d);
                    self.hub.handle_timeout(self.t);
                    self.model.timeout(self.t);
                }
            }
        }
    }

    /// Everything observable must agree.
    fn check(&mut self, op: &Op) {
        let outputs: Vec<_> = std::iter::from_fn(|| self.hub.poll_output()).collect();
        let events = std::mem::take(&mut *self.log.lock().unwrap());
        let got = step_of(outputs, events);
        let want = step_of(
            std::mem::take(&mut self.model.outputs),
            std::mem::take(&mut self.model.log),
        );
        assert_eq!(got, want, "outputs after {op:?}");

        let m = &self.model;
        let mut open: Vec<_> = self.hub.connections().map(|c| c.handle).collect();
        open.sort();
        let mut want_open: Vec<_> = m.conns.iter().filter(|c| c.open).map(|c| c.h).collect();
        want_open.sort();
        assert_eq!(open, want_open, "open connections");
        for c in m.conns.iter().filter(|c| c.open) {
            let info = self.hub.connection(c.h).expect("open in the hub");
            assert_eq!(self.hub.rooms_of(c.h), &c.rooms[..], "rooms of {:?}", c.h);
            assert_eq!(info.filter.entries(), &c.filter[..], "filter of {:?}", c.h);
            assert_eq!(info.identity.map(|i| i.user.as_str()), c.user.as_deref());
            assert_eq!(info.queued_bytes, c.queued, "queued bytes of {:?}", c.h);
            assert!(info.queued_bytes <= m.config.limits.max_queued_bytes);
            assert_eq!(info.opened_at, c.opened_at);
        }
        for c in m.conns.iter().filter(|c| !c.open) {
            assert!(self.hub.connection(c.h).is_none());
            assert!(self.hub.rooms_of(c.h).is_empty());
        }

        let mut rooms: Vec<_> = self.hub.rooms().map(|(r, n)| (r.to_string(), n)).collect();
        rooms.sort();
        let want_rooms: Vec<_> = m
            .room_names()
            .into_iter()
            .map(|r| {
                let n = m
                    .conns
                    .iter()
                    .filter(|c| c.open && c.rooms.contains(&r))
                    .count();
                (r, n)
            })
            .collect();
        assert_eq!(rooms, want_rooms, "rooms and member counts");
        for (room, _) in &want_rooms {
            let mut members: Vec<_> = self.hub.room_members(room).map(|c| c.handle).collect();
            members.sort();
            let mut want: Vec<_> = m
                .conns
                .iter()
                .filter(|c| c.open && c.rooms.contains(room))
                .map(|c| c.h)
                .collect();
            want.sort();
            assert_eq!(members, want, "members of {room}");
        }

        let stats = self.hub.stats();
        assert_eq!(stats.connections, want_open.len());
        assert_eq!(stats.rooms, want_rooms.len());
        assert_eq!(
            stats.queued_bytes,
            m.conns
                .iter()
                .filter(|c| c.open)
                .map(|c| c.queued)
                .sum::<usize>()
        );
        assert_eq!(stats.counters, m.counters, "counters");

        if let Some(d) = m.next_deadline() {
            let hub_deadline = self.hub.poll_timeout();
            assert!(
                hub_deadline.is_some_and(|h| h <= d),
                "poll_timeout {hub_deadline:?} is later than the next due work at {d:?}"
            );
        }
    }
}

fn run(config: Config, ops: Vec<Op>) {
    let mut world = World::new(config);
    for (n, op) in ops.iter().enumerate() {
        world.apply(op, n);
        world.check(op);
    }
    // Shutdown closes everyone, and the model agrees.
    let t = world.t;
    world.hub.close_all(t, CloseCode::GOING_AWAY, "bye");
    world.model.tick(t);
    let open: Vec<_> = world
        .model
        .conns
        .iter()
        .filter(|c| c.open)
        .map(|c| c.h)
        .collect();
    for h in open {
        world.model.close(h, Some(CloseCode::GOING_AWAY));
    }
    world.check(&Op::ToDeadline);
    assert_eq!(world.hub.stats().connections, 0);
}

proptest! {
    // 256 cases by default (a few seconds); `PROPTEST_CASES=N` runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hub_matches_the_naive_model(config in config(), ops in prop::collection::vec(op(), 1..80)) {
        run(config, ops);
    }
}

/// A fixed busy scenario, so a regression shows up even before proptest finds it.
#[test]
fn model_agrees_on_a_scripted_scenario() {
    let i = Ix;
    let config = Config {
        history: None,
        limits: Limits {
            max_queued_bytes: 12,
            slow_consumer: SlowConsumerPolicy::Close,
            max_frame_bytes: 16,
            max_connections: 4,
            max_rooms_per_connection: 3,
            max_rooms: 3,
            inbound_rate: Some(RateLimit {
                per_second: 4,
                burst: 4,
            }),
            rate_policy: RatePolicy::Throttle,
        },
        heartbeat_interval: Some(Duration::from_secs(1)),
        idle_timeout: Some(Duration::from_secs(3)),
        replicate: true,
    };
    let ops = vec![
        Op::Open(Some(0)),
        Op::Open(None),
        Op::Open(Some(1)),
        Op::Join(i(0), 0),
        Op::Join(i(3), 0),
        Op::SetFilter(i(5), vec![(0, 1)]),
        Op::Publish {
            target: Tgt::Room(0),
            except: Some(i(0)),
            tags: None,
            len: 4,
            remote: false,
        },
        Op::Publish {
            target: Tgt::All,
            except: None,
            tags: Some(vec![(0, 1)]),
            len: 6,
            remote: true,
        },
        Op::Advance(1500),
        Op::ToDeadline,
        Op::Join(i(0), 1),
        Op::Join(i(0), 2),
        Op::Join(i(0), 3),
        Op::Leave(i(0), 0),
        Op::Join(i(1), 3),
        Op::Rewind(2000),
        Op::Activity(i(3)),
        Op::Publish {
            target: Tgt::User(1),
            except: None,
            tags: None,
            len: 9,
            remote: false,
        },
        Op::Advance(5000),
        Op::ToDeadline,
        Op::Open(Some(2)),
    ];
    run(config, ops);
}
