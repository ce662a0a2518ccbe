//! The hub's state: connections in a slab, rooms, the user index, timers, fan-out and the output
//! queue. The [`crate::Hub`] drives it; protocols act on it through a [`crate::Context`].

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};
use indexmap::IndexSet;
use slab::Slab;

use crate::cluster::{self, Cluster, Member, Members, NodeClient, NodeSummary};
use crate::history::{Audience, Entry};
use crate::output::{JoinError, OpenError, Output};
use crate::ratelimit::TokenBucket;
use crate::stats::{Counters, Stats};
use crate::streams::{Streams, V2Conn};
use crate::tap::Taps;
use crate::wire;
use crate::{
    CloseCode, Config, ConnectionHandle, ConnectionInfo, Dialect, Filter, Identity, Instant,
    Publication, RateLimit, SlowConsumerPolicy, Target, Text, UnixTime,
};

pub(crate) struct Connection {
    pub(crate) serial: u64,
    /// Shared with the runtime's record of the connection (one allocation, not two).
    pub(crate) client_id: Arc<str>,
    /// Boxed: only systems that authenticate set it, and every connection has this slot.
    pub(crate) identity: Option<Box<Identity>>,
    pub(crate) filter: Filter,
    rooms: Vec<String>,
    pub(crate) queued_bytes: usize,
    opened_at: Instant,
    pub(crate) last_activity: Instant,
    pub(crate) last_ping: Instant,
    /// The inbound rate's bucket (unused without a rate limit).
    pub(crate) bucket: TokenBucket,
    /// The deadline of this connection's live entry in the timer heap, if it has one.
    pub(crate) timer_at: Option<Instant>,
    /// While reading is paused for the inbound rate: when it may resume.
    pub(crate) paused_until: Option<Instant>,
    /// The protocol dialect it speaks, chosen at open.
    pub(crate) dialect: Dialect,
    /// Its session and stream subscriptions, if it speaks v2.
    pub(crate) v2: Option<Box<V2Conn>>,
    /// It never sends ([`crate::OpenInfo::receive_only`]): no idle timeout.
    pub(crate) receive_only: bool,
}

impl Connection {
    /// When the bucket will hold the tokens for `held` frames plus the resume level (a tenth of
    /// a second's worth, so a throttled sender is paused and resumed a few times a second, not
    /// once per frame).
    pub(crate) fn resume_at(&self, rate: RateLimit, held: usize) -> Instant {
        let resume = u64::from((rate.per_second / 10).max(1));
        self.bucket.ready_at(rate, held as u64 + resume)
    }
}

#[derive(Default)]
pub(crate) struct Room {
    pub(crate) members: IndexSet<u32, DefaultHashBuilder>,
}

/// Where a publication comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Made on this node: replicated (when the hub replicates) and kept.
    Local,
    /// Carried from another node without a position: kept here as if made here.
    Remote,
    /// From a shared history, with its position: here only for v1 connections (v2 ones get
    /// it in order through [`Core::v2_sequenced`]); neither replicated nor kept again.
    Positioned,
}

/// The state the protocol may act on through a [`crate::Context`]; everything but the protocol
/// itself.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) conns: Slab<Connection>,
    pub(crate) rooms: HashMap<String, Room>,
    /// The slots of each user's connections, ascending, so `Target::User` costs the user's
    /// connections and not a scan of all of them.
    pub(crate) users: HashMap<String, Vec<u32>>,
    pub(crate) outputs: VecDeque<Output>,
    /// One entry per connection with timers: (deadline, slot, serial); stale entries are skipped.
    pub(crate) timers: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    /// Connections removed since the protocol last heard of it: handle and the rooms it was in.
    pub(crate) closed: Vec<(ConnectionHandle, Vec<String>)>,
    /// Connections the hub closed whose `Close` output has not been drained yet: reports about
    /// them are still expected, and accepted.
    pub(crate) closing: HashSet<ConnectionHandle, DefaultHashBuilder>,
    /// Scratch list of slow consumers found during one fan-out (kept to avoid reallocating).
    pub(crate) victims: Vec<ConnectionHandle>,
    /// Scratch list of slots for a fan-out to v2 subscribers.
    pub(crate) scratch: Vec<u32>,
    /// Scratch lists of a publication's recipients: of its frame, and of the `msg` wrapping
    /// v2 connections get when it is not kept (or, for a kept one, of its positioned frame).
    pub(crate) fanout: [Vec<ConnectionHandle>; 2],
    /// Sessions, streams and history requests, when the hub keeps history (v2).
    pub(crate) streams: Option<Box<Streams>>,
    /// Rooms whose publications the driver watches ([`Output::Tapped`]).
    pub(crate) taps: Taps,
    next_serial: u64,
    pub(crate) started_at: Instant,
    pub(crate) last_now: Instant,
    /// The wall clock at a monotonic instant, as the driver last told it.
    pub(crate) wall: (Instant, UnixTime),
    pub(crate) counters: Counters,
    /// The other nodes of the cluster and their members of shared rooms.
    pub(crate) cluster: Cluster,
    /// Tell the cluster about this node's members of its rooms ([`Output::Members`]): the
    /// protocol shares them and the hub replicates.
    pub(crate) share_members: bool,
    /// Rooms whose local members changed since the last [`Core::flush_members`], and whether
    /// the room just got its first member (its announcement asks the others for theirs).
    pub(crate) members_dirty: HashMap<String, bool>,
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
        identity: c.identity.as_deref(),
        filter: &c.filter,
        queued_bytes: c.queued_bytes,
        opened_at: c.opened_at,
    }
}

/// Count one frame of `len` bytes into `conn`'s queue if it fits within its byte limit; past
/// it, the slow-consumer policy. Whether it fits.
#[inline]
fn admit(
    h: ConnectionHandle,
    conn: &mut Connection,
    len: usize,
    (max_queued, policy): (usize, SlowConsumerPolicy),
    counters: &mut Counters,
    victims: &mut Vec<ConnectionHandle>,
) -> bool {
    if conn.queued_bytes.saturating_add(len) > max_queued {
        match policy {
            SlowConsumerPolicy::Drop => counters.dropped_deliveries += 1,
            SlowConsumerPolicy::Close => victims.push(h),
        }
        return false;
    }
    count(counters, conn, len);
    true
}

/// Count a frame of `len` bytes into `conn`'s queue and the hub's counters.
#[inline]
pub(crate) fn count(counters: &mut Counters, conn: &mut Connection, len: usize) {
    conn.queued_bytes += len;
    counters.deliveries += 1;
    counters.bytes_out += len as u64;
}

/// Queue `payload` to the recipients gathered in `to` (emptied): an [`Output::Transmit`] for
/// one, an [`Output::Fanout`] with a list of its own for more.
pub(crate) fn emit(outputs: &mut VecDeque<Output>, payload: &Text, to: &mut Vec<ConnectionHandle>) {
    match to.as_slice() {
        [] => {}
        [connection] => outputs.push_back(Output::Transmit {
            connection: *connection,
            payload: payload.clone(),
        }),
        recipients => outputs.push_back(Output::Fanout {
            payload: payload.clone(),
            recipients: recipients.to_vec(),
        }),
    }
    to.clear();
}

impl Core {
    pub(crate) fn new(config: Config, now: Instant) -> Self {
        Core {
            config,
            conns: Slab::new(),
            rooms: HashMap::default(),
            users: HashMap::default(),
            outputs: VecDeque::new(),
            timers: BinaryHeap::new(),
            closed: Vec::new(),
            closing: HashSet::default(),
            victims: Vec::new(),
            scratch: Vec::new(),
            fanout: Default::default(),
            streams: None,
            taps: Taps::default(),
            next_serial: 1,
            started_at: now,
            last_now: now,
            // Until the driver says otherwise, the monotonic origin is taken as the Unix epoch
            // (what a test's fake clock wants).
            wall: (now, UnixTime::from_micros(now.as_micros())),
            counters: Counters::default(),
            cluster: Cluster::default(),
            share_members: false,
            members_dirty: HashMap::default(),
        }
    }

    /// The wall clock at `now`, extrapolated from the driver's last reading.
    pub(crate) fn wall_clock(&self, now: Instant) -> UnixTime {
        let (at, wall) = self.wall;
        if now >= at {
            wall + now.saturating_since(at)
        } else {
            UnixTime::from_micros(
                wall.as_micros()
                    .saturating_sub(at.saturating_since(now).as_micros() as u64),
            )
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

    pub(crate) fn next_deadline(&self, c: &Connection) -> Option<Instant> {
        let ping = self.config.heartbeat_interval.map(|d| c.last_ping + d);
        let idle = self
            .config
            .idle_timeout
            .filter(|_| !c.receive_only)
            .map(|d| c.last_activity + d);
        [ping, idle, c.paused_until].into_iter().flatten().min()
    }

    /// Make sure `h`'s timer entry fires no later than its next deadline. Each connection has at
    /// most one live entry (the one at `timer_at`); an entry superseded by an earlier one is
    /// skipped when it comes up.
    pub(crate) fn arm(&mut self, h: ConnectionHandle) {
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

    pub(crate) fn open(
        &mut self,
        now: Instant,
        dialect: Dialect,
        receive_only: bool,
    ) -> Result<ConnectionHandle, OpenError> {
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
            client_id: serial.to_string().into(),
            identity: None,
            filter: Filter::any(),
            rooms: Vec::new(),
            queued_bytes: 0,
            opened_at: now,
            last_activity: now,
            last_ping: now,
            bucket,
            timer_at: None,
            paused_until: None,
            dialect,
            v2: None,
            receive_only,
        };
        let slot = self.conns.insert(conn);
        let h = handle(slot, &self.conns[slot]);
        self.arm(h);
        self.counters.connections_opened += 1;
        Ok(h)
    }

    /// Forget a connection: leave its rooms, free its slot. Returns the rooms it was in.
    pub(crate) fn remove(&mut self, h: ConnectionHandle) -> Option<Vec<String>> {
        self.get(h)?;
        let mut conn = self.conns.remove(h.slot as usize);
        for room in &conn.rooms {
            self.drop_member(room, h.slot);
        }
        if let Some(identity) = &conn.identity {
            self.unindex_user(&identity.user, h.slot);
        }
        if let Some(v2) = conn.v2.take() {
            self.v2_remove(self.last_now, h, *v2);
        }
        self.counters.connections_closed += 1;
        Some(conn.rooms)
    }

    /// Replace a connection's filter (a v2 connection's session remembers it for a resume).
    pub(crate) fn set_filter(&mut self, h: ConnectionHandle, filter: Filter) {
        let Some(c) = self.get_mut(h) else { return };
        if let Some(session) = c.v2.as_ref().map(|v| v.session) {
            self.v2_remember_filter(session, &filter);
        }
        if let Some(c) = self.get_mut(h) {
            c.filter = filter;
        }
    }

    /// Set a connection's identity, keeping the user index in step.
    pub(crate) fn set_identity(&mut self, h: ConnectionHandle, identity: Identity) {
        let Some(c) = self.get_mut(h) else { return };
        let changed = c.identity.as_ref().map(|i| &i.user) != Some(&identity.user);
        let user = changed.then(|| identity.user.clone());
        let old = c.identity.replace(Box::new(identity));
        let Some(user) = user else { return };
        if self.share_members {
            let rooms = self.rooms_of(h).to_vec();
            for room in rooms {
                self.members_changed(&room, false);
            }
        }
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
        self.members_changed(room, false);
        let now_empty = match self.rooms.get_mut(room) {
            Some(r) => {
                r.members.swap_remove(&slot);
                r.members.is_empty()
            }
            None => panic!("connection lists room {room:?} that does not exist"),
        };
        if now_empty {
            self.rooms.remove(room);
            self.v2_forget_order(room);
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
            self.closing.insert(h);
            self.outputs.push_back(Output::Close {
                connection: h,
                code,
                reason,
            });
            self.closed.push((h, rooms));
        }
    }

    pub(crate) fn send(&mut self, to: ConnectionHandle, payload: Text) -> bool {
        self.publish(
            Publication::new(Target::Connection(to), payload),
            Source::Remote,
        ) == 1
    }

    pub(crate) fn publish(&mut self, mut p: Publication, source: Source) -> usize {
        let limits = &self.config.limits;
        let bound = (limits.max_queued_bytes, limits.slow_consumer);
        // A kept publication reaches v2 connections once it has its position (`v2_appended`).
        let stream = match (&self.streams, p.kept) {
            (Some(streams), true) => streams.stream_of(&p.target).map(Cow::into_owned),
            _ => None,
        };
        let kept = stream.is_some();
        let direct = matches!(p.target, Target::Connection(_));
        let mut delivered = 0;
        {
            let Core {
                conns,
                rooms,
                users,
                outputs,
                counters,
                victims,
                streams,
                fanout: [to_plain, to_wrapped],
                ..
            } = self;
            counters.publications += u64::from(!direct);
            // v2 connections get one shared `msg` wrapping, or their own with `re` for a reply.
            let mut wrapped: Option<Text> = None;
            let streams = streams.as_deref();
            let mut offer_to = |h: ConnectionHandle, c: &mut Connection| {
                if p.except == Some(h) {
                    return;
                }
                if let Some(tags) = &p.tags {
                    if !c.filter.matches(tags) {
                        return;
                    }
                }
                let (len, to) = match &c.v2 {
                    None => (p.payload.len(), &mut *to_plain),
                    Some(_) if kept => {
                        delivered += 1; // Counted now, delivered with its position.
                        return;
                    }
                    Some(_) => {
                        let frame = wrapped.get_or_insert_with(|| {
                            let re = streams.filter(|_| direct).and_then(|s| s.reply_id(h));
                            wire::message(re, &p.payload)
                        });
                        (frame.len(), &mut *to_wrapped)
                    }
                };
                if admit(h, c, len, bound, counters, victims) {
                    delivered += 1;
                    to.push(h);
                }
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
            // Each connection gets one frame of a publication, so the two lists' order
            // between them does not matter.
            emit(outputs, &p.payload, to_plain);
            if let Some(wrapped) = &wrapped {
                emit(outputs, wrapped, to_wrapped);
            }
        }
        if !self.taps.is_empty() {
            self.tap(&p);
        }
        self.close_victims();
        // With a shared history, appending a kept publication carries it to the other nodes.
        let shared = self
            .streams
            .as_ref()
            .is_some_and(|s| s.config.shared && kept);
        let replicate = source == Source::Local && self.config.replicate && !direct && !shared;
        let stream = stream.filter(|_| source != Source::Positioned);
        let entry = stream.map(|stream| {
            let tags = if replicate {
                p.tags.clone()
            } else {
                p.tags.take()
            };
            let entry = Entry {
                payload: p.payload.clone(),
                audience: Audience::of(&p.target),
                tags,
                publisher: p.except.and_then(|h| self.session_of(h)),
            };
            (stream, entry)
        });
        if replicate {
            self.outputs.push_back(Output::Replicate(Box::new(p)));
        }
        if let Some((stream, entry)) = entry {
            self.v2_append(stream, entry);
        }
        delivered
    }

    /// Show a publication to a tapped room to the driver, if its tap samples it.
    #[cold]
    fn tap(&mut self, p: &Publication) {
        let Target::Room(room) = &p.target else {
            return;
        };
        if let Some(skipped) = self.taps.sample(self.last_now, room) {
            self.outputs.push_back(Output::Tapped {
                room: room.clone(),
                payload: p.payload.clone(),
                skipped,
            });
        }
    }

    /// Close the slow consumers a fan-out found.
    pub(crate) fn close_victims(&mut self) {
        while let Some(h) = self.victims.pop() {
            self.counters.slow_consumer_closes += 1;
            let reason = "outbound queue full: client is not reading fast enough";
            self.close(h, CloseCode::SLOW_CONSUMER, Cow::Borrowed(reason));
        }
    }

    pub(crate) fn join(&mut self, h: ConnectionHandle, room: &str) -> Result<bool, JoinError> {
        let limits = &self.config.limits;
        let (per_conn, per_hub) = (limits.max_rooms_per_connection, limits.max_rooms);
        let room_exists = self.rooms.contains_key(room);
        let conn = self
            .conns
            .get_mut(h.slot as usize)
            .filter(|c| c.serial == h.serial)
            .ok_or(JoinError::UnknownConnection)?;
        if conn.rooms.iter().any(|r| r == room) {
            return Ok(false);
        }
        if conn.rooms.len() >= per_conn {
            return Err(JoinError::TooManyRooms { limit: per_conn });
        }
        if !room_exists && self.rooms.len() >= per_hub {
            return Err(JoinError::TooManyRoomsInHub { limit: per_hub });
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
        self.members_changed(room, !room_exists);
        self.v2_subscribe(h, room);
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
        self.v2_unsubscribe(h, room);
        true
    }

    /// `room`'s local members changed (`first`: it just got its first one).
    fn members_changed(&mut self, room: &str, first: bool) {
        if self.share_members {
            *self.members_dirty.entry_ref(room).or_default() |= first;
        }
    }

    /// Every local room, to announce to a node that just appeared (`hello`: or to ask every
    /// node for its members again).
    pub(crate) fn announce_all(&mut self, hello: bool) {
        if !self.share_members {
            return;
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            *self.members_dirty.entry(room).or_default() |= hello;
        }
    }

    /// This node's members of `room`, as the cluster shares them: the first
    /// [`cluster::MAX_MEMBERS`] in the order they opened, and how many there are.
    pub(crate) fn local_members(&self, now: Instant, room: &str) -> Members {
        let mut members: Vec<(u64, Member)> = self
            .room_members(room)
            .map(|m| {
                let member = Member {
                    client_id: m.client_id.to_string(),
                    user: m.identity.map(|i| i.user.clone()),
                    joined_at: self.wall_millis_at(now, m.opened_at),
                };
                (m.handle.serial(), member)
            })
            .collect();
        let total = members.len() as u64;
        if members.len() > cluster::MAX_MEMBERS {
            members.select_nth_unstable_by_key(cluster::MAX_MEMBERS, |(s, _)| *s);
            members.truncate(cluster::MAX_MEMBERS);
        }
        members.sort_unstable_by_key(|(s, _)| *s);
        Members {
            listed: members.into_iter().map(|(_, m)| m).collect(),
            total,
        }
    }

    /// Wall-clock milliseconds at monotonic instant `at` (earlier than `now`).
    pub(crate) fn wall_millis_at(&self, now: Instant, at: Instant) -> u64 {
        let ago = now.saturating_since(at);
        let ago = u64::try_from(ago.as_micros()).unwrap_or(u64::MAX);
        UnixTime::from_micros(self.wall_clock(now).as_micros().saturating_sub(ago)).as_millis()
    }

    /// Announce every room whose local members changed ([`Output::Members`]).
    pub(crate) fn flush_members(&mut self, now: Instant) {
        if self.members_dirty.is_empty() {
            return;
        }
        let dirty = core::mem::take(&mut self.members_dirty);
        for (room, first) in dirty {
            let members = self.local_members(now, &room);
            self.outputs.push_back(Output::Members {
                room,
                members,
                hello: first,
            });
        }
    }

    /// This node's summary for the cluster: its counts and its oldest clients.
    pub(crate) fn summary(&self, now: Instant) -> NodeSummary {
        let oldest = crate::inspect::first_opened(self.connections(), cluster::MAX_CLIENTS);
        NodeSummary {
            connections: self.conns.len() as u64,
            rooms: self.rooms.len() as u64,
            clients: oldest
                .iter()
                .map(|c| NodeClient {
                    client_id: c.client_id.to_string(),
                    filter: c.filter.entries().to_vec(),
                    opened_at: self.wall_millis_at(now, c.opened_at),
                })
                .collect(),
        }
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
            sessions: self.streams.as_ref().map_or(0, |s| s.sessions()),
            history: Default::default(),
            counters: self.counters.clone(),
        }
    }
}
