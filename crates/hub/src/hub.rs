//! The hub: connections in a slab, rooms, fan-out, timers, limits and the output queue.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Reverse;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashMap};
use indexmap::IndexSet;
use slab::Slab;

use crate::protocol::{Context, HttpRequest, HttpResponse, Protocol};
use crate::ratelimit::TokenBucket;
use crate::stats::{Counters, Stats};
use crate::{
    CloseCode, Config, ConnectionHandle, ConnectionInfo, Filter, Identity, Instant, OpenInfo,
    Publication, RateLimit, RatePolicy, SlowConsumerPolicy, Target, MAX_HELD_FRAMES,
};

/// A frame received from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (the transport has checked it is UTF-8).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
        }
    }
}

/// Something the driver must do. Drain with [`Hub::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write `payload` as a text frame to `connection`, then report it with [`Hub::handle_flushed`].
    Transmit {
        /// Recipient.
        connection: ConnectionHandle,
        /// The frame; shared with every other recipient of the same publication.
        payload: Bytes,
    },
    /// Send a WebSocket ping to `connection`.
    Ping {
        /// Recipient.
        connection: ConnectionHandle,
    },
    /// Stop reading from `connection` until `until`: it sends faster than the inbound rate
    /// ([`crate::RatePolicy::Throttle`]). Frames already on their way are still accepted (and
    /// held in order); a later `PauseReading` for the same connection moves the deadline.
    PauseReading {
        /// The connection.
        connection: ConnectionHandle,
        /// When reading may resume.
        until: Instant,
    },
    /// Close `connection` with `code` and `reason`. The hub has already forgotten it.
    Close {
        /// The connection.
        connection: ConnectionHandle,
        /// Close code.
        code: CloseCode,
        /// Human-readable reason (at most 123 bytes on the wire; the driver truncates).
        reason: Cow<'static, str>,
    },
    /// A local publication for the cluster backplane to carry to other nodes
    /// (only when [`Config::replicate`] is set).
    Replicate(Publication),
    /// A room got its first local member: a backplane should start receiving its publications
    /// (only when [`Config::replicate`] is set).
    RoomOpened(String),
    /// A room lost its last local member: a backplane may stop receiving its publications
    /// (only when [`Config::replicate`] is set).
    RoomClosed(String),
}

/// Why a connection was refused at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `max_connections` connections are already open.
    #[error("connection limit of {limit} reached")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The connection is already in `max_rooms_per_connection` rooms.
    #[error("a connection may be in at most {limit} rooms")]
    TooManyRooms {
        /// The configured limit.
        limit: usize,
    },
    /// The hub already has `max_rooms` rooms.
    #[error("the server has reached its limit of {limit} rooms")]
    TooManyRoomsInHub {
        /// The configured limit.
        limit: usize,
    },
    /// The handle does not name an open connection.
    #[error("no open connection for this handle")]
    UnknownConnection,
}

/// The handle does not name an open connection (it closed, or never existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no open connection for this handle")]
pub struct UnknownConnection;

pub(crate) struct Connection {
    pub(crate) serial: u64,
    pub(crate) client_id: String,
    pub(crate) identity: Option<Identity>,
    pub(crate) filter: Filter,
    rooms: Vec<String>,
    queued_bytes: usize,
    opened_at: Instant,
    last_activity: Instant,
    last_ping: Instant,
    /// The inbound rate's bucket (unused without a rate limit).
    bucket: TokenBucket,
    /// The deadline of this connection's live entry in the timer heap, if it has one.
    timer_at: Option<Instant>,
    /// Present while reading is paused for the inbound rate.
    throttle: Option<Box<Throttle>>,
}

/// A connection paused for sending above the inbound rate.
struct Throttle {
    /// Frames that arrived while paused, in arrival order.
    held: VecDeque<Frame>,
    /// When the bucket holds enough tokens for `held` and the resume level.
    until: Instant,
}

impl Connection {
    /// When the bucket will hold the tokens for every held frame plus the resume level (a tenth
    /// of a second's worth, so a throttled sender is paused and resumed a few times a second,
    /// not once per frame).
    fn resume_at(&self, rate: RateLimit, held: usize) -> Instant {
        let resume = u64::from((rate.per_second / 10).max(1));
        self.bucket.ready_at(rate, held as u64 + resume)
    }
}

#[derive(Default)]
struct Room {
    members: IndexSet<u32, DefaultHashBuilder>,
}

/// The state the protocol may act on through a [`Context`]; everything but the protocol itself.
pub(crate) struct Core {
    config: Config,
    conns: Slab<Connection>,
    rooms: HashMap<String, Room>,
    /// The slots of each user's connections, ascending, so `Target::User` costs the user's
    /// connections and not a scan of all of them.
    users: HashMap<String, Vec<u32>>,
    outputs: VecDeque<Output>,
    /// One entry per connection with timers: (deadline, slot, serial); stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    /// Connections removed since the protocol last heard of it: handle and the rooms it was in.
    closed: Vec<(ConnectionHandle, Vec<String>)>,
    /// Scratch list of slow consumers found during one fan-out (kept to avoid reallocating).
    victims: Vec<ConnectionHandle>,
    next_serial: u64,
    pub(crate) started_at: Instant,
    last_now: Instant,
    counters: Counters,
}

fn handle(slot: usize, conn: &Connection) -> ConnectionHandle {
    ConnectionHandle {
        // Slots are bounded by `max_connections`, which the open path checks first.
        slot: u32::try_from(slot).expect("slot index fits u32 (bounded by max_connections)"),
        serial: conn.serial,
    }
}

fn info(slot: usize, c: &Connection) -> ConnectionInfo<'_> {
    ConnectionInfo {
        handle: handle(slot, c),
        client_id: &c.client_id,
        identity: c.identity.as_ref(),
        filter: &c.filter,
        queued_bytes: c.queued_bytes,
        opened_at: c.opened_at,
    }
}

/// Queue one delivery to one connection, applying the exclusion, the filter and the byte limit.
#[allow(clippy::too_many_arguments)]
#[inline]
fn offer(
    h: ConnectionHandle,
    conn: &mut Connection,
    publication: &Publication,
    max_queued: usize,
    policy: SlowConsumerPolicy,
    outputs: &mut VecDeque<Output>,
    counters: &mut Counters,
    victims: &mut Vec<ConnectionHandle>,
) -> bool {
    if publication.except == Some(h) {
        return false;
    }
    if let Some(tags) = &publication.tags {
        if !conn.filter.matches(tags) {
            return false;
        }
    }
    let len = publication.payload.len();
    if conn.queued_bytes.saturating_add(len) > max_queued {
        match policy {
            SlowConsumerPolicy::Drop => counters.dropped_deliveries += 1,
            SlowConsumerPolicy::Close => victims.push(h),
        }
        return false;
    }
    conn.queued_bytes += len;
    counters.deliveries += 1;
    counters.bytes_out += len as u64;
    outputs.push_back(Output::Transmit {
        connection: h,
        payload: publication.payload.clone(),
    });
    true
}

impl Core {
    fn new(config: Config, now: Instant) -> Self {
        Core {
            config,
            conns: Slab::new(),
            rooms: HashMap::default(),
            users: HashMap::default(),
            outputs: VecDeque::new(),
            timers: BinaryHeap::new(),
            closed: Vec::new(),
            victims: Vec::new(),
            next_serial: 1,
            started_at: now,
            last_now: now,
            counters: Counters::default(),
        }
    }

    pub(crate) fn get(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns
            .get(h.slot as usize)
            .filter(|c| c.serial == h.serial)
    }

    pub(crate) fn get_mut(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        self.conns
            .get_mut(h.slot as usize)
            .filter(|c| c.serial == h.serial)
    }

    fn next_deadline(&self, c: &Connection) -> Option<Instant> {
        let ping = self.config.heartbeat_interval.map(|d| c.last_ping + d);
        let idle = self.config.idle_timeout.map(|d| c.last_activity + d);
        let resume = c.throttle.as_ref().map(|t| t.until);
        [ping, idle, resume].into_iter().flatten().min()
    }

    /// Make sure `h`'s timer entry fires no later than its next deadline. Each connection has at
    /// most one live entry (the one at `timer_at`); an entry superseded by an earlier one is
    /// skipped when it comes up.
    fn arm(&mut self, h: ConnectionHandle) {
        let Some(c) = self.get(h) else { return };
        let Some(next) = self.next_deadline(c) else {
            return;
        };
        if c.timer_at.is_some_and(|t| t <= next) {
            return;
        }
        if let Some(c) = self.get_mut(h) {
            c.timer_at = Some(next);
        }
        self.timers.push(Reverse((next, h.slot, h.serial)));
    }

    fn open(&mut self, now: Instant) -> Result<ConnectionHandle, OpenError> {
        let limit = self.config.limits.max_connections;
        if self.conns.len() >= limit {
            return Err(OpenError::TooManyConnections { limit });
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let bucket = self
            .config
            .limits
            .inbound_rate
            .map_or(TokenBucket::empty(now), |r| TokenBucket::full(r, now));
        let conn = Connection {
            serial,
            client_id: serial.to_string(),
            identity: None,
            filter: Filter::any(),
            rooms: Vec::new(),
            queued_bytes: 0,
            opened_at: now,
            last_activity: now,
            last_ping: now,
            bucket,
            timer_at: None,
            throttle: None,
        };
        let slot = self.conns.insert(conn);
        let h = handle(slot, &self.conns[slot]);
        self.arm(h);
        self.counters.connections_opened += 1;
        Ok(h)
    }

    /// Forget a connection: leave its rooms, free its slot. Returns the rooms it was in.
    fn remove(&mut self, h: ConnectionHandle) -> Option<Vec<String>> {
        self.get(h)?;
        let conn = self.conns.remove(h.slot as usize);
        for room in &conn.rooms {
            self.drop_member(room, h.slot);
        }
        if let Some(identity) = &conn.identity {
            self.unindex_user(&identity.user, h.slot);
        }
        self.counters.connections_closed += 1;
        Some(conn.rooms)
    }

    /// Set a connection's identity, keeping the user index in step.
    pub(crate) fn set_identity(&mut self, h: ConnectionHandle, identity: Identity) {
        let Some(c) = self.get_mut(h) else { return };
        let changed = c.identity.as_ref().map(|i| &i.user) != Some(&identity.user);
        let user = changed.then(|| identity.user.clone());
        let old = c.identity.replace(identity);
        let Some(user) = user else { return };
        if let Some(old) = old {
            self.unindex_user(&old.user, h.slot);
        }
        let slots = self.users.entry(user).or_default();
        if let Err(at) = slots.binary_search(&h.slot) {
            slots.insert(at, h.slot);
        }
    }

    fn unindex_user(&mut self, user: &str, slot: u32) {
        if let Some(slots) = self.users.get_mut(user) {
            if let Ok(at) = slots.binary_search(&slot) {
                slots.remove(at);
            }
            if slots.is_empty() {
                self.users.remove(user);
            }
        }
    }

    fn drop_member(&mut self, room: &str, slot: u32) {
        let now_empty = match self.rooms.get_mut(room) {
            Some(r) => {
                r.members.swap_remove(&slot);
                r.members.is_empty()
            }
            None => panic!("connection lists room {room:?} that does not exist"),
        };
        if now_empty {
            self.rooms.remove(room);
            if self.config.replicate {
                self.outputs.push_back(Output::RoomClosed(room.to_string()));
            }
        }
    }

    pub(crate) fn close(
        &mut self,
        h: ConnectionHandle,
        code: CloseCode,
        reason: Cow<'static, str>,
    ) {
        if let Some(rooms) = self.remove(h) {
            self.outputs.push_back(Output::Close {
                connection: h,
                code,
                reason,
            });
            self.closed.push((h, rooms));
        }
    }

    pub(crate) fn send(&mut self, to: ConnectionHandle, payload: Bytes) -> bool {
        self.publish(Publication::new(Target::Connection(to), payload), false) == 1
    }

    pub(crate) fn publish(&mut self, p: Publication, local: bool) -> usize {
        let limits = &self.config.limits;
        let (max_queued, policy) = (limits.max_queued_bytes, limits.slow_consumer);
        let mut delivered = 0;
        {
            let Core {
                conns,
                rooms,
                users,
                outputs,
                counters,
                victims,
                ..
            } = self;
            counters.publications += u64::from(!matches!(p.target, Target::Connection(_)));
            let mut offer_to = |h, c: &mut Connection| {
                delivered += usize::from(offer(
                    h, c, &p, max_queued, policy, outputs, counters, victims,
                ));
            };
            match &p.target {
                Target::All => {
                    for (slot, c) in conns.iter_mut() {
                        offer_to(handle(slot, c), c);
                    }
                }
                Target::Room(name) => {
                    if let Some(room) = rooms.get(name.as_str()) {
                        for &slot in &room.members {
                            let c = conns
                                .get_mut(slot as usize)
                                .expect("room member slot holds an open connection");
                            offer_to(handle(slot as usize, c), c);
                        }
                    }
                }
                Target::User(user) => {
                    for &slot in users.get(user.as_str()).into_iter().flatten() {
                        let c = conns
                            .get_mut(slot as usize)
                            .expect("user index slot holds an open connection");
                        offer_to(handle(slot as usize, c), c);
                    }
                }
                Target::Connection(h) => {
                    if let Some(c) = conns
                        .get_mut(h.slot as usize)
                        .filter(|c| c.serial == h.serial)
                    {
                        offer_to(*h, c);
                    }
                }
            }
        }
        while let Some(h) = self.victims.pop() {
            self.counters.slow_consumer_closes += 1;
            let reason = "outbound queue full: client is not reading fast enough";
            self.close(h, CloseCode::SLOW_CONSUMER, Cow::Borrowed(reason));
        }
        if local && self.config.replicate && !matches!(p.target, Target::Connection(_)) {
            self.outputs.push_back(Output::Replicate(p));
        }
        delivered
    }

    pub(crate) fn join(
        &mut self,
        h: ConnectionHandle,
        room: &str,
    ) -> Result<bool, crate::JoinError> {
        let limits = &self.config.limits;
        let (per_conn, per_hub) = (limits.max_rooms_per_connection, limits.max_rooms);
        let room_exists = self.rooms.contains_key(room);
        let conn = self
            .conns
            .get_mut(h.slot as usize)
            .filter(|c| c.serial == h.serial)
            .ok_or(crate::JoinError::UnknownConnection)?;
        if conn.rooms.iter().any(|r| r == room) {
            return Ok(false);
        }
        if conn.rooms.len() >= per_conn {
            return Err(crate::JoinError::TooManyRooms { limit: per_conn });
        }
        if !room_exists && self.rooms.len() >= per_hub {
            return Err(crate::JoinError::TooManyRoomsInHub { limit: per_hub });
        }
        conn.rooms.push(room.to_string());
        self.rooms
            .entry_ref(room)
            .or_default()
            .members
            .insert(h.slot);
        if !room_exists && self.config.replicate {
            self.outputs.push_back(Output::RoomOpened(room.to_string()));
        }
        Ok(true)
    }

    pub(crate) fn leave(&mut self, h: ConnectionHandle, room: &str) -> bool {
        let Some(conn) = self.get_mut(h) else {
            return false;
        };
        let Some(pos) = conn.rooms.iter().position(|r| r == room) else {
            return false;
        };
        // `remove`, not `swap_remove`: `rooms_of` promises join order (at most
        // `max_rooms_per_connection` entries to shift).
        conn.rooms.remove(pos);
        self.drop_member(room, h.slot);
        true
    }

    pub(crate) fn is_member(&self, h: ConnectionHandle, room: &str) -> bool {
        self.get(h)
            .is_some_and(|c| c.rooms.iter().any(|r| r == room))
    }

    pub(crate) fn rooms_of(&self, h: ConnectionHandle) -> &[String] {
        self.get(h).map_or(&[], |c| c.rooms.as_slice())
    }

    pub(crate) fn count_error(&mut self, kind: &'static str) {
        *self.counters.errors.entry(kind).or_insert(0) += 1;
    }

    pub(crate) fn connections(&self) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.conns.iter().map(|(slot, c)| info(slot, c))
    }

    pub(crate) fn connection_info(&self, h: ConnectionHandle) -> Option<ConnectionInfo<'_>> {
        self.get(h).map(|c| info(h.slot as usize, c))
    }

    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.rooms
            .iter()
            .map(|(k, r)| (k.as_str(), r.members.len()))
    }

    pub(crate) fn room_members(&self, room: &str) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.iter())
            .map(|&slot| info(slot as usize, &self.conns[slot as usize]))
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            queued_bytes: self.conns.iter().map(|(_, c)| c.queued_bytes).sum(),
            counters: self.counters.clone(),
        }
    }
}

/// The sans-IO hub: feed it inputs with `handle_*`, drain [`Hub::poll_output`], sleep until
/// [`Hub::poll_timeout`], call [`Hub::handle_timeout`].
pub struct Hub {
    core: Core,
    protocol: Box<dyn Protocol + Send>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub")
            .field("protocol", &self.protocol.name())
            .field("connections", &self.core.conns.len())
            .field("rooms", &self.core.rooms.len())
            .finish()
    }
}

impl Hub {
    /// A hub serving `protocol` under `config`, created at `now`.
    pub fn new(config: Config, protocol: Box<dyn Protocol + Send>, now: Instant) -> Self {
        Hub {
            core: Core::new(config, now),
            protocol,
        }
    }

    /// The protocol's name.
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Time never goes backwards inside the hub: a step back is treated as no time passing.
    fn tick(&mut self, now: Instant) -> Instant {
        self.core.last_now = self.core.last_now.max(now);
        self.core.last_now
    }

    /// Run a protocol callback, then tell the protocol of every connection that closed meanwhile.
    fn with_protocol<R>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let mut cx = Context {
            core: &mut self.core,
            now,
        };
        let r = f(&mut *self.protocol, &mut cx);
        while let Some((h, rooms)) = cx.core.closed.pop() {
            self.protocol.on_close(&mut cx, h, &rooms);
        }
        r
    }

    /// A transport accepted a connection. The protocol greets it; an `Err` means refuse it.
    pub fn handle_open(
        &mut self,
        now: Instant,
        info: OpenInfo,
    ) -> Result<ConnectionHandle, OpenError> {
        let now = self.tick(now);
        let h = self.core.open(now)?;
        if let Some(identity) = info.identity.clone() {
            self.core.set_identity(h, identity);
        }
        self.with_protocol(now, |p, cx| p.on_open(cx, h, &info));
        Ok(h)
    }

    /// A frame arrived from `conn`.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        frame: Frame,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(now);
        let limits = &self.core.config.limits;
        let (max_frame, rate, policy) = (
            limits.max_frame_bytes,
            limits.inbound_rate,
            limits.rate_policy,
        );
        let c = self.core.get_mut(conn).ok_or(UnknownConnection)?;
        c.last_activity = now;
        let len = frame.len();
        self.core.counters.messages_in += 1;
        self.core.counters.bytes_in += len as u64;
        if len > max_frame {
            self.core.count_error("frame_too_large");
            let reason = format!("frame of {len} bytes exceeds the {max_frame}-byte limit");
            self.with_protocol(now, |_, cx| {
                cx.close(conn, CloseCode::MESSAGE_TOO_BIG, reason)
            });
            return Ok(());
        }
        let Some(rate) = rate else {
            self.dispatch(now, conn, frame);
            return Ok(());
        };
        let c = self.core.get_mut(conn).expect("resolved above");
        if let Some(t) = &mut c.throttle {
            // Paused: frames already on their way wait their turn, in order.
            if t.held.len() >= MAX_HELD_FRAMES {
                self.over_rate(now, conn, "kept sending while paused for the inbound rate");
            } else {
                t.held.push_back(frame);
                if now >= t.until {
                    self.release_held(now, conn, rate);
                }
            }
            return Ok(());
        }
        if c.bucket.take(now, rate) {
            self.dispatch(now, conn, frame);
            if policy == RatePolicy::Throttle {
                self.pause_if_empty(now, conn, rate);
            }
        } else if policy == RatePolicy::Throttle {
            self.pause(conn, rate, Some(frame));
        } else {
            self.over_rate(now, conn, "");
        }
        Ok(())
    }

    /// Hand an accepted frame to the protocol.
    fn dispatch(&mut self, now: Instant, conn: ConnectionHandle, frame: Frame) {
        self.with_protocol(now, |p, cx| match &frame {
            Frame::Text(b) => p.on_text(cx, conn, b),
            Frame::Binary(b) => p.on_binary(cx, conn, b),
        });
    }

    /// Close `conn` for sending above the inbound rate.
    fn over_rate(&mut self, now: Instant, conn: ConnectionHandle, why: &'static str) {
        self.core.count_error("rate_limited");
        let per_second = self
            .core
            .config
            .limits
            .inbound_rate
            .map_or(0, |r| r.per_second);
        let reason = if why.is_empty() {
            format!("more than {per_second} messages per second")
        } else {
            why.to_string()
        };
        self.with_protocol(now, |_, cx| {
            cx.close(conn, CloseCode::POLICY_VIOLATION, reason)
        });
    }

    /// Pause `conn` (holding `frame`, if any) until its bucket has refilled.
    fn pause(&mut self, conn: ConnectionHandle, rate: RateLimit, frame: Option<Frame>) {
        let Some(c) = self.core.get_mut(conn) else {
            return;
        };
        let held: VecDeque<Frame> = frame.into_iter().collect();
        let until = c.resume_at(rate, held.len());
        c.throttle = Some(Box::new(Throttle { held, until }));
        self.core.counters.throttled += 1;
        self.core.outputs.push_back(Output::PauseReading {
            connection: conn,
            until,
        });
        self.core.arm(conn);
    }

    /// Pause `conn` before it sends a frame it has no token for (it used its last one).
    fn pause_if_empty(&mut self, now: Instant, conn: ConnectionHandle, rate: RateLimit) {
        if let Some(c) = self.core.get_mut(conn) {
            c.bucket.refill(now, rate);
            if !c.bucket.has_one() && c.throttle.is_none() {
                self.pause(conn, rate, None);
            }
        }
    }

    /// Process held frames while tokens last; then resume `conn`, or pause it again.
    fn release_held(&mut self, now: Instant, conn: ConnectionHandle, rate: RateLimit) {
        loop {
            let Some(c) = self.core.get_mut(conn) else {
                return; // Closed by what a held frame did.
            };
            c.bucket.refill(now, rate);
            let Some(t) = &mut c.throttle else { return };
            if !c.bucket.has_one() {
                break;
            }
            let Some(frame) = t.held.pop_front() else {
                break;
            };
            c.bucket.spend();
            self.dispatch(now, conn, frame);
        }
        let Some(c) = self.core.get_mut(conn) else {
            return;
        };
        let Some(t) = &c.throttle else { return };
        let held = t.held.len();
        let until = c.resume_at(rate, held);
        if held == 0 && until <= now {
            // The driver resumes reading at the `until` it was given.
            c.throttle = None;
            return;
        }
        if let Some(t) = &mut c.throttle {
            t.until = until;
        }
        self.core.outputs.push_back(Output::PauseReading {
            connection: conn,
            until,
        });
        self.core.arm(conn);
    }

    /// `conn` showed it is alive without a message: a WebSocket ping or pong. It counts against
    /// the inbound rate like a message.
    pub fn handle_activity(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(now);
        let limits = &self.core.config.limits;
        let (rate, policy) = (limits.inbound_rate, limits.rate_policy);
        let c = self.core.get_mut(conn).ok_or(UnknownConnection)?;
        c.last_activity = now;
        let Some(rate) = rate else { return Ok(()) };
        if c.throttle.is_some() {
            return Ok(()); // Already paused.
        }
        if c.bucket.take(now, rate) {
            if policy == RatePolicy::Throttle {
                self.pause_if_empty(now, conn, rate);
            }
        } else if policy == RatePolicy::Throttle {
            self.pause(conn, rate, None);
        } else {
            self.over_rate(now, conn, "");
        }
        Ok(())
    }

    /// The driver wrote `bytes` of earlier [`Output::Transmit`] payloads to `conn`'s socket.
    pub fn handle_flushed(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Result<(), UnknownConnection> {
        self.tick(now);
        let c = self.core.get_mut(conn).ok_or(UnknownConnection)?;
        c.queued_bytes = c.queued_bytes.saturating_sub(bytes);
        Ok(())
    }

    /// The peer closed, or its socket failed. The protocol hears of it; rooms are left.
    pub fn handle_close(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(now);
        let rooms = self.core.remove(conn).ok_or(UnknownConnection)?;
        self.core.closed.push((conn, rooms));
        self.with_protocol(now, |_, _| ());
        Ok(())
    }

    /// An HTTP request for this system; `None` if the protocol has no such endpoint.
    pub fn handle_http(&mut self, now: Instant, req: &HttpRequest) -> Option<HttpResponse> {
        let now = self.tick(now);
        self.with_protocol(now, |p, cx| p.on_http(cx, req))
    }

    /// Publish from the server side (an embedding service, an HTTP publish endpoint).
    /// Returns the number of local deliveries.
    pub fn publish(&mut self, now: Instant, publication: Publication) -> usize {
        let now = self.tick(now);
        self.with_protocol(now, |_, cx| cx.publish(publication))
    }

    /// A publication another node made, carried here by the backplane. It is fanned out to local
    /// connections only and never replicated again.
    pub fn handle_remote(&mut self, now: Instant, mut publication: Publication) -> usize {
        let now = self.tick(now);
        if matches!(publication.target, Target::Connection(_)) {
            return 0; // A handle means nothing on another node.
        }
        publication.except = None; // The sender is on the other node.
        self.with_protocol(now, |_, cx| cx.core.publish(publication, false))
    }

    /// The driver could not hand `count` [`Output::Replicate`] publications to the backplane
    /// (its queue was full): they reached local connections only. Counted, never silent.
    pub fn handle_replication_dropped(&mut self, count: u64) {
        self.core.counters.replication_dropped += count;
    }

    /// Close every connection with `code` (e.g. [`CloseCode::GOING_AWAY`] at shutdown).
    pub fn close_all(&mut self, now: Instant, code: CloseCode, reason: &'static str) {
        let now = self.tick(now);
        let handles: Vec<_> = self.core.connections().map(|c| c.handle).collect();
        self.with_protocol(now, |_, cx| {
            for h in handles {
                cx.close(h, code, reason);
            }
        });
    }

    /// Close one connection from the server side.
    pub fn close(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        code: CloseCode,
        reason: &'static str,
    ) {
        let now = self.tick(now);
        self.with_protocol(now, |_, cx| cx.close(conn, code, reason));
    }

    /// The earliest instant at which [`Hub::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.timers.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Send due heartbeats, close idle connections, and let throttled connections go on.
    /// Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        let (heartbeat, idle, rate) = (
            self.core.config.heartbeat_interval,
            self.core.config.idle_timeout,
            self.core.config.limits.inbound_rate,
        );
        let mut idle_closed = Vec::new();
        let mut resumed = Vec::new();
        // Entries re-armed at or before `now` (a zero heartbeat interval, or time saturated at
        // the largest `Instant`) wait until the loop ends, so each connection is visited at most once
        // per call and the loop always terminates.
        let mut due_again = Vec::new();
        while let Some(&Reverse((deadline, slot, serial))) = self.core.timers.peek() {
            if deadline > now {
                break;
            }
            self.core.timers.pop();
            let h = ConnectionHandle { slot, serial };
            let Some(c) = self.core.get_mut(h) else {
                continue; // Closed since; its entry is stale.
            };
            if c.timer_at != Some(deadline) {
                continue; // Superseded by an earlier entry.
            }
            c.timer_at = None;
            if idle.is_some_and(|d| now.saturating_since(c.last_activity) >= d) {
                idle_closed.push(h);
                continue;
            }
            if c.throttle.as_ref().is_some_and(|t| t.until <= now) {
                resumed.push(h);
            }
            if heartbeat.is_some_and(|d| now.saturating_since(c.last_ping) >= d) {
                c.last_ping = now;
                self.core.outputs.push_back(Output::Ping { connection: h });
            }
            let c = self.core.get(h).expect("resolved above");
            if let Some(next) = self.core.next_deadline(c) {
                let at = next.max(now);
                if let Some(c) = self.core.get_mut(h) {
                    c.timer_at = Some(at);
                }
                if next > now {
                    self.core.timers.push(Reverse((next, slot, serial)));
                } else {
                    due_again.push(Reverse((now, slot, serial)));
                }
            }
        }
        self.core.timers.extend(due_again);
        if !idle_closed.is_empty() {
            self.core.counters.idle_timeouts += idle_closed.len() as u64;
            self.with_protocol(now, |_, cx| {
                for h in idle_closed {
                    cx.close(
                        h,
                        CloseCode::IDLE_TIMEOUT,
                        "idle timeout: no traffic or pong received",
                    );
                }
            });
        }
        if let Some(rate) = rate {
            resumed.sort(); // In handle order, whatever order the timers came up in.
            for h in resumed {
                self.release_held(now, h, rate);
            }
        }
    }

    /// The next thing the driver must do, or `None` when there is nothing.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Every open connection.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.core.connections()
    }

    /// One connection, if open.
    pub fn connection(&self, conn: ConnectionHandle) -> Option<ConnectionInfo<'_>> {
        self.core.connection_info(conn)
    }

    /// Every non-empty room and its member count.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.core.rooms()
    }

    /// The rooms `conn` is in.
    pub fn rooms_of(&self, conn: ConnectionHandle) -> &[String] {
        self.core.rooms_of(conn)
    }

    /// The members of `room`.
    pub fn room_members(&self, room: &str) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.core.room_members(room)
    }
}
