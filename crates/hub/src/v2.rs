//! The hub's half of protocol v2: sessions, streams with positions, resume, acks and gaps.
//!
//! A publication a protocol marks [`crate::Publication::kept`] belongs to a stream (its room, or
//! the protocol's system stream). v1 connections get it at once, as always. The hub asks the
//! history engine to append it ([`Output::Append`]); when its position comes back
//! ([`crate::Hub::handle_appended`]) the v2 connections subscribed to the stream get it as a
//! `pub` frame carrying that position, under the same rules (sender exclusion by session,
//! filters, user targets).
//!
//! A v2 connection subscribes to a stream when it joins the room (or, for the system stream,
//! when it opens). The hub asks the engine for what the connection missed since the position
//! it presented ([`Output::Fetch`]); until the answer is in and replayed, live publications of
//! that stream are held for the connection (counted against its queue). Then, in order: the
//! replayed entries, a `subscribed` frame (the position the connection now has), the held live
//! ones above it, and live delivery. A replay larger than the queue budget goes out as the
//! queue drains.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::history::{Audience, Entry, Epoch, FetchId, Fetched, HistoryError, Position, SessionId};
use crate::output::Output;
use crate::state::{count, emit, Connection, Core};
use crate::streams::{
    covered, Acked, Answer, Catching, Current, Fetcher, Pending, Session, Sub, V2Conn,
};
use crate::wire::{self, Outcome, MAX_POSITIONS};
use crate::{CloseCode, ConnectionHandle, Filter, Instant, OpenInfo, SlowConsumerPolicy, Text};

/// What to do with a v2 message that carries an id.
pub(crate) enum Seen {
    /// Process it.
    New,
    /// Already processed (or being processed): do not process it again.
    Again,
}

/// The open connection `h` names, from the slab directly (so other fields of the core stay free
/// to borrow).
fn conn_mut(conns: &mut slab::Slab<Connection>, h: ConnectionHandle) -> Option<&mut Connection> {
    conns
        .get_mut(h.slot as usize)
        .filter(|c| c.serial == h.serial)
}

/// `h`'s v2 state, if `h` is open and speaks v2.
fn v2_mut(conns: &mut slab::Slab<Connection>, h: ConnectionHandle) -> Option<&mut V2Conn> {
    conn_mut(conns, h).and_then(|c| c.v2.as_deref_mut())
}

/// Queue `frame` to `c` unconditionally, counting it.
fn transmit(
    core_outputs: &mut VecDeque<Output>,
    counters: &mut crate::Counters,
    h: ConnectionHandle,
    c: &mut Connection,
    frame: Text,
) {
    count(counters, c, frame.len());
    core_outputs.push_back(Output::Transmit {
        connection: h,
        payload: frame,
    });
}

/// Whether `len` more bytes fit `c`'s queue. The bound is the one of every frame, v1's too:
/// queued bytes never pass `max_queued_bytes`. A frame larger than the whole budget never fits
/// (see [`pump_sub`]); any other fits once the client has read what is queued.
fn fits(c: &Connection, len: usize, max: usize) -> bool {
    c.queued_bytes.saturating_add(len) <= max
}

/// Note offset `position` of a stream as skipped, for the next gap report.
fn skipped(gap: &mut Option<(Position, u64)>, position: Position) {
    match gap {
        Some((from, to)) if from.epoch == position.epoch => *to = (*to).max(position.offset),
        gap => *gap = Some((position, position.offset)),
    }
}

/// Whether `entry` is for the connection `c` of `session`, by the live rules.
fn selected(entry: &Entry, session: SessionId, c: &Connection) -> bool {
    if entry.publisher == Some(session) {
        return false;
    }
    if let Audience::User(user) = &entry.audience {
        if c.identity.as_ref().map(|i| &i.user) != Some(user) {
            return false;
        }
    }
    entry
        .tags
        .as_ref()
        .is_none_or(|tags| c.filter.matches(tags))
}

impl Core {
    /// Set up a v2 connection just opened: its session (new, or resumed from the upgrade's
    /// `sb_session`) and the positions of `sb_since`; send the `session` frame.
    pub(crate) fn v2_open(&mut self, now: Instant, h: ConnectionHandle, info: &OpenInfo) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let user = info.identity.as_ref().map(|i| i.user.clone());
        let presented = info
            .query_param("sb_session")
            .and_then(SessionId::parse)
            .filter(|id| {
                // Another identity's session is never resumed. With a shared history, a session
                // this node does not know was made on another node: taken over by id.
                streams
                    .sessions
                    .get(id)
                    .map_or(streams.config.shared, |s| s.user == user)
            });
        if let Some(id) = presented.filter(|id| !streams.sessions.contains_key(id)) {
            streams.expire(now, 1);
            streams.sessions.insert(id, Session::new(user.clone()));
        }
        let mut positions = Vec::new();
        for (k, v) in &info.query {
            if k == "sb_since" {
                match wire::parse_since(v) {
                    Some(p) if positions.len() < MAX_POSITIONS => positions.push(p),
                    Some(_) => {}
                    None => *self.counters.errors.entry("bad_since").or_insert(0) += 1,
                }
            }
        }
        let (id, resumed, taken_from) = match presented {
            Some(id) => {
                streams.attach(id);
                let s = streams.sessions.get_mut(&id).expect("checked above");
                (id, true, s.conn.replace(h))
            }
            None => {
                streams.expire(now, 1);
                let id = streams.new_session_id();
                let mut session = Session::new(user);
                session.conn = Some(h);
                streams.sessions.insert(id, session);
                (id, false, None)
            }
        };
        let filter = streams.sessions[&id].filter.clone();
        streams.members.insert(h.slot);
        if resumed {
            self.counters.sessions_resumed += 1;
        }
        let Some(c) = conn_mut(&mut self.conns, h) else {
            return;
        };
        let mut v2 = V2Conn {
            session: id,
            subs: Vec::new(),
            since: Vec::new(),
            left: Vec::new(),
            busy: 0,
            resumed,
        };
        v2.note_since(positions);
        c.v2 = Some(Box::new(v2));
        c.filter = filter;
        // Within the queue bound like every frame. The queue is empty (nothing was sent yet),
        // so only a budget smaller than this frame refuses it, and a v2 client that does not
        // know its session cannot be served: closed, whatever the slow-consumer policy.
        let frame = wire::session(id, resumed);
        if frame.len() <= self.config.limits.max_queued_bytes {
            transmit(&mut self.outputs, &mut self.counters, h, c, frame);
        } else {
            self.counters.slow_consumer_closes += 1;
            self.close(
                h,
                CloseCode::SLOW_CONSUMER,
                Cow::Borrowed("the outbound queue limit is smaller than the session frame"),
            );
            return;
        }
        if let Some(old) = taken_from {
            // The client came back before its old socket was found dead. The session is no
            // longer the old connection's, so its close leaves the session alone.
            self.close(
                old,
                CloseCode::SESSION_TAKEN_OVER,
                Cow::Borrowed("session resumed by a new connection"),
            );
        }
    }

    /// A v2 connection's slot is being freed: detach its session, forget its fetches.
    pub(crate) fn v2_remove(&mut self, now: Instant, h: ConnectionHandle, v2: V2Conn) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        streams.members.swap_remove(&h.slot);
        for sub in &v2.subs {
            if let Some(id) = sub.catching.as_ref().and_then(|c| c.fetch) {
                streams.fetches.remove(&id);
            }
        }
        if streams
            .sessions
            .get(&v2.session)
            .is_some_and(|s| s.conn == Some(h))
        {
            streams.detach(now, v2.session);
        }
    }

    /// Forget sessions past their time.
    pub(crate) fn v2_expire(&mut self, now: Instant) {
        if let Some(streams) = self.streams.as_deref_mut() {
            streams.expire(now, 0);
        }
    }

    /// `h` joined a room, or opened: if it speaks v2, subscribe it to `stream`, resuming from
    /// the position it presented, if any.
    pub(crate) fn v2_subscribe(&mut self, h: ConnectionHandle, stream: &str) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(v2) = v2_mut(&mut self.conns, h) else {
            return;
        };
        if v2.sub(stream).is_some() {
            return;
        }
        let presented = v2
            .since
            .iter()
            .position(|(s, _)| s == stream)
            .map(|i| v2.since.remove(i).1);
        // Without its session a position cannot be honoured: fetch only the top, and say why.
        // The session is this one when it was resumed, or when this connection was given
        // positions of the stream before (it left the stream and joins again).
        let known = v2.resumed || v2.left.iter().any(|s| s == stream);
        let (since, lost) = match presented {
            Some(_) if !known => (None, Some("session")),
            since => (since, None),
        };
        let id = streams.fetch_for(Fetcher::Conn(h), stream);
        // Most connections follow one or two streams: grow one at a time (a first push would
        // reserve four), an idle connection's memory is what scales.
        v2.subs.reserve_exact(1);
        // The system stream's name is static: a connection that follows only it allocates
        // no name.
        let name = match streams.system {
            Some(system) if system == stream => Cow::Borrowed(system),
            _ => Cow::Owned(stream.to_string()),
        };
        v2.subs.push(Sub {
            stream: name,
            catching: Some(Box::new(Catching::fetching(id, presented.is_some(), lost))),
            gap: None,
            last: None,
        });
        v2.busy += 1;
        self.outputs.push_back(Output::Fetch {
            id,
            stream: stream.to_string(),
            since,
        });
    }

    /// `h` left a room: drop its subscription to the room's stream.
    pub(crate) fn v2_unsubscribe(&mut self, h: ConnectionHandle, stream: &str) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(v2) = v2_mut(&mut self.conns, h) else {
            return;
        };
        let Some(at) = v2.subs.iter().position(|s| s.stream == stream) else {
            return;
        };
        let sub = v2.subs.swap_remove(at);
        if sub.catching.is_some() || sub.gap.is_some() {
            v2.busy -= 1;
        }
        if let Some(id) = sub.catching.and_then(|c| c.fetch) {
            streams.fetches.remove(&id);
        }
        // Positions of this stream were given in this session: a re-join may present them.
        if !v2.left.contains(&sub.stream) {
            if v2.left.len() == MAX_POSITIONS {
                v2.left.remove(0);
            }
            v2.left.push(sub.stream);
        }
    }

    /// Positions a v2 client presented with a message, for streams it is about to subscribe.
    pub(crate) fn v2_note_since(&mut self, h: ConnectionHandle, since: Vec<(String, Position)>) {
        if let Some(v2) = self.get_mut(h).and_then(|c| c.v2.as_deref_mut()) {
            v2.note_since(since);
        }
    }

    /// A v2 message with client id `id` from `h` is about to be processed. A resend of one its
    /// session already has is answered (acked again, or left to the pending ack) and not
    /// processed again.
    pub(crate) fn v2_begin(&mut self, h: ConnectionHandle, id: String) -> Seen {
        let Some(session) = self.get(h).and_then(|c| c.v2.as_ref()).map(|v| v.session) else {
            return Seen::New;
        };
        let Some(streams) = self.streams.as_deref_mut() else {
            return Seen::New;
        };
        let window = streams.config.dedup_window;
        let Some(s) = streams.sessions.get_mut(&session) else {
            return Seen::New;
        };
        if let Some((_, acked)) = s.acks.iter().find(|(i, _)| *i == id) {
            self.counters.duplicates += 1;
            if let Acked::Done(position) = acked {
                let position = position.as_ref().map(|(s, p)| (s.as_str(), *p));
                let frame = wire::ack(&id, position, true);
                self.send_control(h, frame);
            }
            return Seen::Again;
        }
        if window > 0 {
            if s.acks.len() >= window {
                s.acks.pop_front();
            }
            s.acks.push_back((id.clone(), Acked::Pending));
        }
        streams.current = Some(Current {
            conn: h,
            session,
            id,
            published: false,
        });
        Seen::New
    }

    /// The message begun with [`Core::v2_begin`] was processed: ack it now unless it published
    /// into a stream (then the ack waits for the position).
    pub(crate) fn v2_end(&mut self) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(current) = streams.current.take() else {
            return;
        };
        if current.published {
            return;
        }
        self.acked(current.session, &current.id, None);
    }

    /// Record the ack of `id` in `session`'s window and send it to the session's connection.
    fn acked(&mut self, session: SessionId, id: &str, position: Option<(&str, Position)>) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(s) = streams.sessions.get_mut(&session) else {
            return;
        };
        if let Some((_, acked)) = s.acks.iter_mut().find(|(i, _)| i == id) {
            *acked = Acked::Done(position.map(|(s, p)| (s.to_string(), p)));
        }
        if let Some(conn) = s.conn {
            let frame = wire::ack(id, position, false);
            self.send_control(conn, frame);
        }
    }

    /// Queue a small frame of the v2 envelope to `h` under the slow-consumer policy.
    pub(crate) fn send_control(&mut self, h: ConnectionHandle, frame: Text) {
        let max = self.config.limits.max_queued_bytes;
        let policy = self.config.limits.slow_consumer;
        let Some(c) = conn_mut(&mut self.conns, h) else {
            return;
        };
        if fits(c, frame.len(), max) {
            transmit(&mut self.outputs, &mut self.counters, h, c, frame);
        } else if policy == SlowConsumerPolicy::Close {
            self.counters.slow_consumer_closes += 1;
            self.close(
                h,
                CloseCode::SLOW_CONSUMER,
                Cow::Borrowed("outbound queue full: client is not reading fast enough"),
            );
        } else {
            self.counters.dropped_deliveries += 1;
        }
    }

    /// `session`'s connection set its filter: a resume restores it.
    pub(crate) fn v2_remember_filter(&mut self, session: SessionId, filter: &Filter) {
        if let Some(s) = self
            .streams
            .as_deref_mut()
            .and_then(|s| s.sessions.get_mut(&session))
        {
            s.filter = filter.clone();
        }
    }

    /// A kept publication into `stream` was delivered to v1 connections: ask for its position.
    /// Its publisher's session is `publisher`.
    pub(crate) fn v2_append(&mut self, stream: String, entry: Entry) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let entry = Arc::new(entry);
        // The first kept publication a client message makes is what its ack reports.
        let origin = match streams.current.as_mut() {
            Some(cur) if !cur.published => {
                cur.published = true;
                Some((cur.session, cur.id.clone()))
            }
            _ => None,
        };
        streams
            .appending
            .entry_ref(stream.as_str())
            .or_default()
            .push_back(Pending {
                entry: entry.clone(),
                origin,
            });
        self.counters.appended += 1;
        self.outputs.push_back(Output::Append { stream, entry });
    }

    /// The session of `h`, if it speaks v2.
    pub(crate) fn session_of(&self, h: ConnectionHandle) -> Option<SessionId> {
        self.get(h).and_then(|c| c.v2.as_ref()).map(|v| v.session)
    }

    /// Whether an append of `stream` is waiting for its position.
    pub(crate) fn v2_is_appending(&self, stream: &str) -> bool {
        self.streams
            .as_ref()
            .and_then(|s| s.appending.get(stream))
            .is_some_and(|q| !q.is_empty())
    }

    /// The oldest append of `stream` got `result`: deliver it to the v2 subscribers, ack it.
    /// With a shared history the position only acks it: the subscribers get it, with every
    /// other node's, from the history's channel ([`Core::v2_sequenced`]).
    pub(crate) fn v2_appended(&mut self, stream: &str, result: Result<Position, HistoryError>) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(queue) = streams.appending.get_mut(stream) else {
            return;
        };
        let Some(pending) = queue.pop_front() else {
            return;
        };
        if queue.is_empty() {
            streams.appending.remove(stream);
        }
        let position = result.ok();
        // Without a position it still reaches this node's live subscribers, unnumbered.
        if !streams.config.shared || position.is_none() {
            self.v2_fan_out(stream, position, &pending.entry);
        }
        if let Some((session, id)) = pending.origin {
            self.acked(session, &id, position.map(|p| (stream, p)));
        }
    }

    /// Deliver one kept publication of `stream` to its v2 subscribers, with its position (or
    /// unnumbered, without one).
    pub(crate) fn v2_fan_out(&mut self, stream: &str, position: Option<Position>, entry: &Entry) {
        let Some(streams) = self.streams.as_deref() else {
            return;
        };
        let frame = match position {
            Some(p) => wire::publication(stream, p, &entry.payload),
            None => wire::message(None, &entry.payload),
        };
        let system = streams.system == Some(stream);
        let mut slots = core::mem::take(&mut self.scratch);
        slots.clear();
        match (&entry.audience, system) {
            (_, false) => {
                slots.extend(self.rooms.get(stream).iter().flat_map(|r| r.members.iter()))
            }
            (Audience::Everyone, true) => slots.extend(streams.members.iter()),
            (Audience::User(u), true) => {
                slots.extend(self.users.get(u.as_str()).into_iter().flatten())
            }
        }
        let mut rebased = Vec::new();
        let mut to = core::mem::take(&mut self.fanout[0]);
        for &slot in &slots {
            if self.deliver_positioned(slot, stream, position, entry, &frame, &mut to) {
                rebased.push(slot);
            }
        }
        // After any gap each recipient was sent first.
        emit(&mut self.outputs, &frame, &mut to);
        self.fanout[0] = to;
        self.scratch = slots;
        if let Some(p) = position {
            for slot in rebased {
                self.v2_rebase(slot, stream, p.epoch);
            }
        }
        self.close_victims();
    }

    /// The stream's history was started afresh as `epoch` (a store that lost its data): the
    /// connection in `slot`, which holds a position of the old epoch, gets everything of the new
    /// one the history has, then is told it did not recover (reason `epoch`: what the old one
    /// held after its position is gone), then goes on live.
    fn v2_rebase(&mut self, slot: u32, stream: &str, epoch: Epoch) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let h = ConnectionHandle {
            slot,
            serial: c.serial,
        };
        let Some(sub) = c.v2.as_deref_mut().and_then(|v| v.sub(stream)) else {
            return;
        };
        if sub.catching.is_some() {
            return; // Already catching up: its answer decides.
        }
        let id = streams.fetch_for(Fetcher::Conn(h), stream);
        let mut catching = Catching::fetching(id, true, None);
        catching.rebase = true;
        sub.catching = Some(Box::new(catching));
        if sub.gap.take().is_none() {
            c.v2.as_deref_mut().expect("found above").busy += 1;
        }
        self.outputs.push_back(Output::Fetch {
            id,
            stream: stream.to_string(),
            since: Some(Position { epoch, offset: 0 }),
        });
    }

    /// Deliver one positioned publication to the v2 connection in `slot`, if it is for it: live
    /// (counted in its queue and added to `to`, the publication's recipients), or held while
    /// its subscription catches up.
    /// Returns whether the connection holds a position of another epoch of the stream (to be
    /// rebased; nothing was sent).
    fn deliver_positioned(
        &mut self,
        slot: u32,
        stream: &str,
        position: Option<Position>,
        entry: &Entry,
        frame: &Text,
        to: &mut Vec<ConnectionHandle>,
    ) -> bool {
        let max = self.config.limits.max_queued_bytes;
        let policy = self.config.limits.slow_consumer;
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return false;
        };
        let h = ConnectionHandle {
            slot,
            serial: c.serial,
        };
        let Some(session) = c.v2.as_ref().map(|v| v.session) else {
            return false;
        };
        if !selected(entry, session, c) {
            return false;
        }
        let queued = c.queued_bytes;
        let v2 = c.v2.as_deref_mut().expect("checked above");
        let Some(sub) = v2.sub(stream) else {
            return false; // Not subscribed (yet).
        };
        if let (Some(p), Some(last), None) = (position, sub.last, &sub.catching) {
            if p.epoch != last.epoch {
                return true;
            }
        }
        let len = frame.len();
        if let Some(catching) = sub.catching.as_deref_mut() {
            // Held in the hub, beside the queue: as many bytes as the queue may hold.
            if catching.held_bytes.saturating_add(len) <= max {
                catching.held_bytes += len;
                catching.held.push_back((position, frame.clone()));
                return false;
            }
        } else {
            if covered(position, sub.last) {
                return false; // The replay already gave it (the fetch saw it before we did).
            }
            let gap = sub
                .gap
                .map(|(from, to)| wire::gap(stream, from.epoch, from.offset, to));
            let need = len + gap.as_ref().map_or(0, Text::len);
            if queued.saturating_add(need) <= max {
                if position.is_some() {
                    sub.last = position;
                }
                if sub.gap.take().is_some() {
                    v2.busy -= 1;
                }
                if let Some(gap) = gap {
                    self.counters.gaps += 1;
                    transmit(&mut self.outputs, &mut self.counters, h, c, gap);
                }
                count(&mut self.counters, c, len);
                to.push(h);
                return false;
            }
        }
        // It does not fit: the slow-consumer policy decides.
        match policy {
            SlowConsumerPolicy::Close => self.victims.push(h),
            SlowConsumerPolicy::Drop => {
                self.counters.dropped_deliveries += 1;
                let (Some(p), Some(v2)) = (position, c.v2.as_deref_mut()) else {
                    return false;
                };
                let sub = v2.sub(stream).expect("found above");
                let newly_busy = sub.gap.is_none() && sub.catching.is_none();
                skipped(&mut sub.gap, p);
                v2.busy += usize::from(newly_busy);
            }
        }
        false
    }

    /// Offsets `from..=to` of `stream` were lost before this node could deliver them: the
    /// connection in `slot` gets a `gap` for them, unless it was given them (or is catching up,
    /// which its own fetch decides).
    pub(crate) fn v2_skip_range(&mut self, slot: u32, stream: &str, from: Position, to: u64) {
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let h = ConnectionHandle {
            slot,
            serial: c.serial,
        };
        let Some(v2) = c.v2.as_deref_mut() else {
            return;
        };
        let Some(sub) = v2.sub(stream) else {
            return;
        };
        let last = Position {
            epoch: from.epoch,
            offset: to,
        };
        if sub.catching.is_some() || covered(Some(last), sub.last) {
            return;
        }
        if sub.last.is_some_and(|l| l.epoch != from.epoch) {
            // Its position is of an older history: a gap in the new one would not say so.
            self.v2_rebase(slot, stream, from.epoch);
            return;
        }
        let newly_busy = sub.gap.is_none();
        skipped(&mut sub.gap, from);
        skipped(&mut sub.gap, last);
        sub.last = Some(last);
        v2.busy += usize::from(newly_busy);
        self.v2_pump(h);
    }

    /// The answer to fetch `id` came: replay what it gave, as far as the queue allows.
    pub(crate) fn v2_fetched(&mut self, id: FetchId, result: Result<Fetched, HistoryError>) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let (h, stream) = match streams.fetches.remove(&id) {
            Some((Fetcher::Conn(h), stream)) => (h, stream),
            Some((Fetcher::Stream, stream)) => return self.v2_hole_fetched(id, &stream, result),
            None => return, // Its connection left the stream, or closed.
        };
        if let Ok(Fetched { top, .. }) = &result {
            // The connection is at `top` from here: the stream's order starts there at the latest.
            streams.order_from(&stream, *top);
        }
        let Some(v2) = v2_mut(&mut self.conns, h) else {
            return;
        };
        let Some(catching) = v2
            .sub(&stream)
            .and_then(|s| s.catching.as_deref_mut())
            .filter(|c| c.fetch == Some(id))
        else {
            return;
        };
        catching.fetch = None;
        let (top, lost) = match result {
            Ok(Fetched { top, entries }) => match (catching.lost, entries) {
                (Some(why), _) => (Some(top), Some(why)),
                (None, Ok(entries)) => {
                    catching.replay = entries.into();
                    // A rebase replays the new epoch, and still was not a recovery.
                    (Some(top), catching.rebase.then_some("epoch"))
                }
                (None, Err(why)) => (Some(top), Some(why.as_str())),
            },
            Err(_) => (None, Some("unavailable")),
        };
        if lost.is_some() {
            self.counters.not_recovered += 1;
        } else {
            self.counters.resumed += u64::from(catching.resuming);
        }
        catching.answer = Some(Answer { top, lost });
        self.v2_pump(h);
    }

    /// Move `h`'s busy subscriptions on as far as its queue allows: replay, the `subscribed`
    /// frame, held live publications, pending gap reports.
    pub(crate) fn v2_pump(&mut self, h: ConnectionHandle) {
        let budget = Budget {
            max: self.config.limits.max_queued_bytes,
            policy: self.config.limits.slow_consumer,
        };
        let mut stuck = false;
        let Core {
            conns,
            outputs,
            counters,
            ..
        } = self;
        let Some(c) = conn_mut(conns, h) else {
            return;
        };
        let Some(mut v2) = c.v2.take() else { return };
        if v2.busy > 0 {
            for sub in &mut v2.subs {
                match pump_sub(h, c, v2.session, sub, budget, outputs, counters) {
                    Pumped::Done => v2.busy -= 1,
                    Pumped::Waiting => {}
                    Pumped::Stuck => stuck = true,
                }
            }
        }
        c.v2 = Some(v2);
        if stuck {
            self.counters.slow_consumer_closes += 1;
            self.close(
                h,
                CloseCode::SLOW_CONSUMER,
                Cow::Borrowed("a v2 control frame is larger than the outbound queue allows"),
            );
        }
    }
}

/// A connection's outbound budget and what happens past it.
#[derive(Clone, Copy)]
struct Budget {
    max: usize,
    policy: SlowConsumerPolicy,
}

/// What moving a subscription on came to.
enum Pumped {
    /// Nothing left to do (it was busy before).
    Done,
    /// More to send when the queue drains (or the fetch is answered).
    Waiting,
    /// A control frame (`subscribed`, `gap`) is larger than the whole budget and the policy is
    /// to close: the connection cannot be served.
    Stuck,
}

/// Move one subscription on, within the budget. A publication larger than the whole budget can
/// never be queued: it is skipped and reported as a gap (as a live one is under `drop`); a
/// control frame that large is dropped under `drop` and closes the connection under `close`.
fn pump_sub(
    h: ConnectionHandle,
    c: &mut Connection,
    session: SessionId,
    sub: &mut Sub,
    budget: Budget,
    outputs: &mut VecDeque<Output>,
    counters: &mut crate::Counters,
) -> Pumped {
    let max = budget.max;
    // A control frame that can never fit: dropped (and counted), or the connection is stuck.
    let oversized = |counters: &mut crate::Counters| match budget.policy {
        SlowConsumerPolicy::Drop => {
            counters.dropped_deliveries += 1;
            None
        }
        SlowConsumerPolicy::Close => Some(Pumped::Stuck),
    };
    if let Some(catching) = sub.catching.as_deref_mut() {
        let Some(answer) = &catching.answer else {
            return Pumped::Waiting; // The fetch is in flight.
        };
        let top = answer.top;
        while let Some((offset, entry)) = catching.replay.front() {
            if !selected(entry, session, c) {
                catching.replay.pop_front();
                continue;
            }
            let Some(top) = top else { break };
            let position = Position {
                epoch: top.epoch,
                offset: *offset,
            };
            let frame = wire::publication(&sub.stream, position, &entry.payload);
            if frame.len() > max {
                catching.replay.pop_front();
                counters.dropped_deliveries += 1;
                skipped(&mut sub.gap, position);
                continue;
            }
            if !fits(c, frame.len(), max) {
                return Pumped::Waiting;
            }
            catching.replay.pop_front();
            catching.replayed += 1;
            counters.replayed += 1;
            transmit(outputs, counters, h, c, frame);
        }
        if !catching.announced {
            let outcome = match (answer.lost, catching.resuming) {
                (Some(why), _) => Outcome::NotRecovered(why),
                (None, true) => Outcome::Recovered {
                    replayed: catching.replayed,
                },
                (None, false) => Outcome::Fresh,
            };
            let frame = wire::subscribed(&sub.stream, top, outcome);
            if frame.len() > max {
                if let Some(stuck) = oversized(counters) {
                    return stuck;
                }
            } else if !fits(c, frame.len(), max) {
                return Pumped::Waiting;
            } else {
                transmit(outputs, counters, h, c, frame);
            }
            catching.announced = true;
            if top.is_some() {
                sub.last = top;
            }
        }
        while let Some((position, frame)) = catching.held.front() {
            // Held publications the replay already covered are not sent twice.
            let given = covered(*position, sub.last);
            if !given && !fits(c, frame.len(), max) {
                return Pumped::Waiting;
            }
            let (position, frame) = catching.held.pop_front().expect("front exists");
            catching.held_bytes -= frame.len();
            if !given {
                if position.is_some() {
                    sub.last = position;
                }
                transmit(outputs, counters, h, c, frame);
            }
        }
        sub.catching = None;
        if sub.gap.is_none() {
            return Pumped::Done;
        }
        // Still busy: the gap is reported next.
    }
    if let Some((from, to)) = sub.gap {
        let frame = wire::gap(&sub.stream, from.epoch, from.offset, to);
        if frame.len() > max {
            if let Some(stuck) = oversized(counters) {
                return stuck;
            }
        } else if !fits(c, frame.len(), max) {
            return Pumped::Waiting;
        } else {
            counters.gaps += 1;
            transmit(outputs, counters, h, c, frame);
        }
        sub.gap = None;
        return Pumped::Done;
    }
    Pumped::Waiting
}
