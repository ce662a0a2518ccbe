//! The hub: the inputs a driver feeds, the protocol callbacks they cause, and the throttle.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

use hashbrown::{DefaultHashBuilder, HashMap};

use crate::cluster::{ClusterTotals, Members, NodeSummary};
use crate::context::Context;
use crate::history::{Audience, Entry, FetchId, Fetched, HistoryError, Position, SessionId};
use crate::http::{HttpRequest, HttpResponse, IdempotencyKey};
use crate::idempotency::{Idempotency, Recall};
use crate::inspect;
use crate::output::{Frame, NothingPending, OpenError, Output, UnknownConnection};
use crate::protocol::{decode_frame, Decode, Protocol};
use crate::state::{Core, Source};
use crate::stats::Stats;
use crate::streams::Streams;
use crate::tap::TapError;
use crate::v2::Seen;
use crate::wire::{self, Envelope};
use crate::{
    CloseCode, Config, ConnectionHandle, ConnectionInfo, Dialect, Instant, OpenInfo, Publication,
    RateLimit, RatePolicy, Target, UnixTime, MAX_HELD_FRAMES,
};

/// What a text frame decodes to under protocol `P`.
pub type MessageOf<P> = <<P as Protocol>::Decoder as Decode>::Message;
/// What an HTTP request decodes to under protocol `P`.
pub type RequestOf<P> = <<P as Protocol>::Decoder as Decode>::Request;

/// Something a paused connection sent: it waits its turn and its token.
enum Held<M> {
    /// A frame, processed when its turn comes.
    Frame(Frame<M>),
    /// A ping or pong: it only costs its token.
    Control,
}

/// The sans-IO hub: feed it inputs with `handle_*`, drain [`Hub::poll_output`], sleep until
/// [`Hub::poll_timeout`], call [`Hub::handle_timeout`].
///
/// # Handles after a close
///
/// A connection the hub closes (a [`Output::Close`] is queued) is gone at once for the protocol
/// and for fan-out, but the driver may still report about it until it has drained that `Close`
/// (a flush of a `Transmit` queued before it, a frame that was already on its way): such reports
/// are accepted and ignored. Once the `Close` was drained, or for a connection that never
/// existed or whose slot was reused, a report is [`UnknownConnection`].
pub struct Hub<P: Protocol> {
    core: Core,
    protocol: P,
    decoder: P::Decoder,
    /// What throttled connections sent while paused, in arrival order.
    held: HashMap<ConnectionHandle, VecDeque<Held<MessageOf<P>>>, DefaultHashBuilder>,
    /// Answers of recent requests with an `Idempotency-Key`, when the hub keeps history.
    idempotency: Option<Idempotency>,
}

impl<P: Protocol> core::fmt::Debug for Hub<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub")
            .field("protocol", &self.protocol.name())
            .field("connections", &self.core.stats().connections)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Hub<P> {
    /// A hub serving `protocol` under `config`, created at `now`.
    pub fn new(config: Config, protocol: P, now: Instant) -> Self {
        let decoder = protocol.decoder();
        let mut core = Core::new(config, now);
        core.streams = core
            .config
            .history
            .clone()
            .map(|h| Box::new(Streams::new(h, protocol.system_stream())));
        core.share_members = core.config.replicate && protocol.shares_members();
        let idempotency = core
            .config
            .history
            .as_ref()
            .map(|h| Idempotency::new(h.session_ttl, h.max_idempotency_keys));
        Hub {
            core,
            protocol,
            decoder,
            held: HashMap::default(),
            idempotency,
        }
    }

    /// The protocol's system-wide stream (kept publications to everyone and to users), when it
    /// keeps history and has one.
    pub fn system_stream(&self) -> Option<&'static str> {
        self.core.streams.as_deref().and_then(|s| s.system)
    }

    /// The protocol's name.
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }

    /// The protocol's decoder, for drivers that decode where the bytes arrive.
    pub fn decoder(&self) -> &P::Decoder {
        &self.decoder
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

    /// The wall clock read `wall` at monotonic instant `now`. Protocols stamp messages with the
    /// wall clock extrapolated from the latest reading ([`Context::wall_clock`]); timers never
    /// look at it, so a step of the wall clock moves timestamps and nothing else. Until it is
    /// first called, the monotonic origin is taken to be the Unix epoch.
    pub fn set_wall_clock(&mut self, now: Instant, wall: UnixTime) {
        self.core.wall = (now, wall);
    }

    /// Run a protocol callback, then tell the protocol of every connection that closed meanwhile.
    fn with_protocol<R>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut P, &mut Context<'_>) -> R,
    ) -> R {
        let mut cx = Context {
            core: &mut self.core,
            now,
        };
        let r = f(&mut self.protocol, &mut cx);
        while let Some((h, rooms)) = cx.core.closed.pop() {
            self.held.remove(&h);
            self.protocol.on_close(&mut cx, h, &rooms);
        }
        cx.core.flush_members(now);
        r
    }

    /// Tell the protocol that these rooms' remote members changed.
    fn members_changed(&mut self, now: Instant, rooms: Vec<String>) {
        if rooms.is_empty() || !self.core.share_members {
            return;
        }
        self.with_protocol(now, |p, cx| {
            for room in &rooms {
                p.on_members_changed(cx, room);
            }
        });
    }

    /// Whether `conn` was closed by the hub and its `Close` is not drained yet.
    fn is_closing(&self, conn: ConnectionHandle) -> bool {
        self.core.closing.contains(&conn)
    }

    /// `Ok` for a report about a connection that is closing, else the error for an unknown one.
    fn closing_or_unknown(&self, conn: ConnectionHandle) -> Result<(), UnknownConnection> {
        if self.is_closing(conn) {
            Ok(())
        } else {
            Err(UnknownConnection)
        }
    }

    /// A transport accepted a connection. The protocol greets it; an `Err` means refuse it.
    pub fn handle_open(
        &mut self,
        now: Instant,
        info: OpenInfo,
    ) -> Result<ConnectionHandle, OpenError> {
        let now = self.tick(now);
        let v2 = info.dialect == Dialect::V2;
        if v2 && self.core.streams.is_none() {
            return Err(OpenError::V2WithoutHistory);
        }
        let h = self.core.open(now, info.dialect, info.receive_only)?;
        if let Some(identity) = info.identity.clone() {
            self.core.set_identity(h, identity);
        }
        if v2 {
            // Its session first, so the greeting and everything after belong to it.
            self.with_protocol(now, |_, cx| cx.core.v2_open(now, h, &info));
        }
        self.with_protocol(now, |p, cx| p.on_open(cx, h, &info));
        let system = self.core.streams.as_ref().and_then(|s| s.system);
        if let (true, Some(stream)) = (v2, system) {
            self.core.v2_subscribe(h, stream);
        }
        Ok(h)
    }

    /// A frame arrived from `conn`.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        frame: Frame<MessageOf<P>>,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(now);
        let limits = &self.core.config.limits;
        let (max_frame, rate, policy) = (
            limits.max_frame_bytes,
            limits.inbound_rate,
            limits.rate_policy,
        );
        let Some(c) = self.core.get_mut(conn) else {
            return self.closing_or_unknown(conn);
        };
        c.last_activity = now;
        let len = frame.len();
        let paused = c.paused_until.is_some();
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
        if paused {
            // Paused: frames already on their way wait their turn, in order.
            self.hold(now, conn, rate, Held::Frame(frame));
            return Ok(());
        }
        let c = self.core.get_mut(conn).expect("resolved above");
        if c.bucket.take(now, rate) {
            self.dispatch(now, conn, frame);
            if policy == RatePolicy::Throttle {
                self.pause_if_empty(now, conn, rate);
            }
        } else if policy == RatePolicy::Throttle {
            self.held
                .entry(conn)
                .or_default()
                .push_back(Held::Frame(frame));
            self.pause(conn, rate);
        } else {
            self.over_rate(now, conn, "");
        }
        Ok(())
    }

    /// Hand an accepted frame to the protocol, decoding it first if the driver did not.
    fn dispatch(&mut self, now: Instant, conn: ConnectionHandle, frame: Frame<MessageOf<P>>) {
        let frame = match frame {
            Frame::Text(text) => {
                let dialect = self.core.get(conn).map(|c| c.dialect).unwrap_or_default();
                decode_frame(&self.decoder, dialect, text)
            }
            other => other,
        };
        let message = match frame {
            Frame::Decoded { message, .. } => message,
            Frame::Enveloped {
                envelope, message, ..
            } => {
                let Envelope { id, since } = *envelope;
                self.core.v2_note_since(conn, since);
                let Some(id) = id else {
                    self.with_protocol(now, |p, cx| p.on_message(cx, conn, message));
                    return;
                };
                if let Seen::Again = self.core.v2_begin(conn, id) {
                    return;
                }
                self.with_protocol(now, |p, cx| {
                    p.on_message(cx, conn, message);
                    cx.core.v2_end();
                });
                return;
            }
            Frame::Malformed { error, .. } => {
                self.core.count_error("bad_envelope");
                let frame = wire::error(&error.0);
                self.with_protocol(now, |_, cx| cx.core.send_control(conn, frame));
                return;
            }
            Frame::Binary(bytes) => {
                self.with_protocol(now, |p, cx| p.on_binary(cx, conn, &bytes));
                return;
            }
            Frame::Text(_) => unreachable!("decoded above"),
        };
        self.with_protocol(now, |p, cx| p.on_message(cx, conn, message));
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

    /// Hold what a paused connection sent (at most [`MAX_HELD_FRAMES`]; past that it is closed)
    /// and let it go on if its pause is over.
    fn hold(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        rate: RateLimit,
        item: Held<MessageOf<P>>,
    ) {
        let held = self.held.entry(conn).or_default();
        if held.len() >= MAX_HELD_FRAMES {
            self.over_rate(now, conn, "kept sending while paused for the inbound rate");
            return;
        }
        held.push_back(item);
        let due = self
            .core
            .get(conn)
            .and_then(|c| c.paused_until)
            .is_some_and(|until| now >= until);
        if due {
            self.release_held(now, conn, rate);
        }
    }

    /// Pause `conn` until its bucket has refilled for its held frames and the resume level.
    fn pause(&mut self, conn: ConnectionHandle, rate: RateLimit) {
        let held = self.held.get(&conn).map_or(0, VecDeque::len);
        let Some(c) = self.core.get_mut(conn) else {
            return;
        };
        let until = c.resume_at(rate, held);
        c.paused_until = Some(until);
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
            if !c.bucket.has_one() && c.paused_until.is_none() {
                self.pause(conn, rate);
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
            if c.paused_until.is_none() || !c.bucket.has_one() {
                break;
            }
            let Some(item) = self.held.get_mut(&conn).and_then(VecDeque::pop_front) else {
                break;
            };
            c.bucket.spend();
            if let Held::Frame(frame) = item {
                self.dispatch(now, conn, frame);
            }
        }
        let held = self.held.get(&conn).map_or(0, VecDeque::len);
        let Some(c) = self.core.get_mut(conn) else {
            return;
        };
        if c.paused_until.is_none() {
            return;
        }
        let until = c.resume_at(rate, held);
        if held == 0 && until <= now {
            // The driver resumes reading at the `until` it was given.
            c.paused_until = None;
            self.held.remove(&conn);
            return;
        }
        c.paused_until = Some(until);
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
        let Some(c) = self.core.get_mut(conn) else {
            return self.closing_or_unknown(conn);
        };
        c.last_activity = now;
        let Some(rate) = rate else { return Ok(()) };
        if c.paused_until.is_some() {
            // Already paused: it was on its way; it waits for its token like a frame.
            self.hold(now, conn, rate, Held::Control);
            return Ok(());
        }
        if c.bucket.take(now, rate) {
            if policy == RatePolicy::Throttle {
                self.pause_if_empty(now, conn, rate);
            }
        } else if policy == RatePolicy::Throttle {
            self.pause(conn, rate);
        } else {
            self.over_rate(now, conn, "");
        }
        Ok(())
    }

    /// The driver wrote `bytes` of earlier [`Output::Transmit`] and [`Output::Fanout`] payloads
    /// to `conn`'s socket.
    /// Accepted (and ignored) for a connection the hub closed whose `Close` is not drained yet.
    pub fn handle_flushed(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Result<(), UnknownConnection> {
        self.tick(now);
        let Some(c) = self.core.get_mut(conn) else {
            return self.closing_or_unknown(conn);
        };
        c.queued_bytes = c.queued_bytes.saturating_sub(bytes);
        if c.v2.as_ref().is_some_and(|v| v.busy > 0) {
            // Room in its queue: a replay or a gap report may go on.
            self.core.v2_pump(conn);
        }
        Ok(())
    }

    /// The history engine kept the oldest publication of `stream` still waiting (an
    /// [`Output::Append`]) at `result`. Answers come in the order of the appends, per stream.
    /// The v2 subscribers get it now, with its position, and its publisher's ack.
    pub fn handle_appended(
        &mut self,
        now: Instant,
        stream: &str,
        result: Result<Position, HistoryError>,
    ) -> Result<(), NothingPending> {
        let now = self.tick(now);
        if !self.core.v2_is_appending(stream) {
            return Err(NothingPending);
        }
        self.with_protocol(now, |_, cx| cx.core.v2_appended(stream, result));
        Ok(())
    }

    /// The history engine answered the [`Output::Fetch`] named `id` (answers may come in any
    /// order; one for a connection that left the stream or closed is ignored).
    pub fn handle_fetched(
        &mut self,
        now: Instant,
        id: FetchId,
        result: Result<Fetched, HistoryError>,
    ) {
        let now = self.tick(now);
        self.with_protocol(now, |_, cx| cx.core.v2_fetched(id, result));
    }

    /// The peer closed, or its socket failed. The protocol hears of it; rooms are left.
    pub fn handle_close(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection> {
        let now = self.tick(now);
        let Some(rooms) = self.core.remove(conn) else {
            return self.closing_or_unknown(conn);
        };
        self.core.closed.push((conn, rooms));
        self.with_protocol(now, |_, _| ());
        Ok(())
    }

    /// An HTTP request for this system; `None` if the protocol has no such endpoint. Decoded
    /// here; drivers that decode where the request arrived use [`Hub::handle_request`].
    pub fn handle_http(&mut self, now: Instant, req: HttpRequest) -> Option<HttpResponse> {
        let request = self.decoder.decode_request(req);
        self.handle_request(now, request)
    }

    /// An HTTP request the driver already decoded with the protocol's decoder.
    pub fn handle_request(&mut self, now: Instant, request: RequestOf<P>) -> Option<HttpResponse> {
        let now = self.tick(now);
        self.with_protocol(now, |p, cx| p.on_http(cx, request))
    }

    /// An HTTP request that may carry an `Idempotency-Key` ([`IdempotencyKey::of`], taken before
    /// decoding): when the hub keeps history, a key it answered with a 2xx within the session
    /// age gets that answer again, with `idempotent-replayed: true`, and nothing happens; the
    /// same key with another request gets a 422. Without a key, or without history, this is
    /// [`Hub::handle_request`].
    ///
    /// The driver must have authorized the request first (the runtime judges the route, the API
    /// key and the rate from the headers before it reads the body): the hub answers a key it
    /// knows without asking the protocol.
    pub fn handle_request_once(
        &mut self,
        now: Instant,
        key: Option<IdempotencyKey>,
        request: RequestOf<P>,
    ) -> Option<HttpResponse> {
        let now = self.tick(now);
        let (Some(key), Some(answers)) = (key, self.idempotency.as_mut()) else {
            return self.handle_request(now, request);
        };
        match answers.recall(now, &key) {
            Recall::Replay(response) => {
                self.core.counters.idempotent_replays += 1;
                return Some(response.with_header("idempotent-replayed", "true"));
            }
            Recall::Conflict => {
                return Some(HttpResponse::json(
                    422,
                    "{\"error\":\"this Idempotency-Key was used with another request\"}",
                ))
            }
            Recall::New => {}
        }
        let response = self.handle_request(now, request);
        if let (Some(r), Some(answers)) = (&response, self.idempotency.as_mut()) {
            if (200..300).contains(&r.status) {
                answers.remember(now, key, r.clone());
            }
        }
        response
    }

    /// `Idempotency-Key`s remembered now.
    pub fn idempotency_keys(&self) -> usize {
        self.idempotency.as_ref().map_or(0, Idempotency::len)
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
        self.with_protocol(now, |_, cx| cx.core.publish(publication, Source::Remote))
    }

    /// A kept publication at `position` of its stream, from a shared history
    /// ([`crate::HistoryConfig::shared`]); `from_here` when this node made it (its v1
    /// connections had it at once, as always). v1 connections get another node's at once; v2
    /// connections get each stream's publications in offset order, a hole first fetched from
    /// the history ([`Output::Fetch`]) or reported as a gap. `publisher` is the session that
    /// published it, which never gets it back. Without a shared history, or for a publication
    /// of no stream, this is [`Hub::handle_remote`] (nothing, `from_here`). Returns the local
    /// v1 deliveries.
    pub fn handle_positioned(
        &mut self,
        now: Instant,
        mut publication: Publication,
        position: Position,
        publisher: Option<SessionId>,
        from_here: bool,
    ) -> usize {
        let stream = self
            .core
            .streams
            .as_deref()
            .filter(|s| s.config.shared)
            .and_then(|s| s.stream_of(&publication.target))
            .map(Cow::into_owned);
        let Some(stream) = stream else {
            return if from_here {
                0
            } else {
                self.handle_remote(now, publication)
            };
        };
        let now = self.tick(now);
        publication.except = None;
        publication.kept = true;
        let entry = Arc::new(Entry {
            payload: publication.payload.clone(),
            audience: Audience::of(&publication.target),
            tags: publication.tags.clone(),
            publisher,
        });
        self.with_protocol(now, |_, cx| {
            let delivered = if from_here {
                0
            } else {
                cx.core.publish(publication, Source::Positioned)
            };
            cx.core.v2_sequenced(&stream, position, entry);
            delivered
        })
    }

    /// The shared history's channel may have lost publications (the driver's subscription to it
    /// was re-established, or its queue overflowed): every stream this node follows is fetched
    /// from where it is, so that nothing published meanwhile is missed, even at the end.
    pub fn handle_history_check(&mut self, now: Instant) {
        let now = self.tick(now);
        self.with_protocol(now, |_, cx| cx.core.v2_check_streams());
    }

    /// Node `node` of the cluster has `members` in `room` now (none: it has left), as its
    /// [`Output::Members`] said; `hello` asks this node for its own members of the room, if it
    /// has any. Renews `node`'s lease ([`crate::cluster::LEASE`]). Bounded: at most
    /// [`crate::cluster::MAX_NODES`] nodes, each with at most as many rooms as this hub may
    /// have, each with at most [`crate::cluster::MAX_MEMBERS`] members listed.
    pub fn handle_remote_members(
        &mut self,
        now: Instant,
        node: u64,
        room: &str,
        members: Members,
        hello: bool,
    ) {
        let now = self.tick(now);
        if !self.core.share_members {
            return;
        }
        let max_rooms = self.core.config.limits.max_rooms;
        let changed = self
            .core
            .cluster
            .set_members(now, node, room, members, max_rooms);
        if hello && self.core.rooms.contains_key(room) {
            self.core.members_dirty.entry_ref(room).or_default();
        }
        let rooms = if changed {
            vec![room.to_string()]
        } else {
            Vec::new()
        };
        self.members_changed(now, rooms);
        self.core.flush_members(now);
    }

    /// The cluster's other live nodes and their summaries, as just read: each one's lease is
    /// renewed, a node listed before and missing now is gone (its members leave their rooms;
    /// one known only from its members waits for its own lease), and a node seen for the first
    /// time gets this node's members of every room.
    pub fn handle_cluster(&mut self, now: Instant, nodes: Vec<(u64, NodeSummary)>) {
        let now = self.tick(now);
        let changed = self.core.cluster.set_summaries(now, nodes);
        if changed.greet {
            self.core.announce_all(false);
        }
        self.members_changed(now, changed.rooms);
        self.core.flush_members(now);
    }

    /// The backplane's subscription was re-established: other nodes' announcements may have
    /// gone by. This node announces its members of every room again, each asking the nodes
    /// with members of it for theirs.
    pub fn handle_resync(&mut self, now: Instant) {
        let now = self.tick(now);
        self.core.announce_all(true);
        self.core.flush_members(now);
    }

    /// What this node tells the cluster about itself: its counts and its oldest
    /// [`crate::cluster::MAX_CLIENTS`] clients.
    pub fn summary(&self) -> NodeSummary {
        self.core.summary(self.core.last_now)
    }

    /// The other live nodes of the cluster (within their lease), summed.
    pub fn cluster_totals(&self) -> ClusterTotals {
        self.core.cluster.totals()
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

    /// The earliest instant at which [`Hub::handle_timeout`] has work to do (possibly earlier:
    /// an early call is a no-op).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.core.timers.peek().map(|Reverse((d, _, _))| *d);
        let session = self.core.streams.as_ref().and_then(|s| s.next_expiry());
        let lease = self.core.cluster.next_expiry();
        timer.into_iter().chain(session).chain(lease).min()
    }

    /// Send due heartbeats, close idle connections, and let throttled connections go on.
    /// Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        self.core.v2_expire(now);
        let gone = self.core.cluster.expire(now);
        self.members_changed(now, gone);
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
            if !c.receive_only && idle.is_some_and(|d| now.saturating_since(c.last_activity) >= d) {
                idle_closed.push(h);
                continue;
            }
            if c.paused_until.is_some_and(|until| until <= now) {
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
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.core.outputs.pop_front()?;
        if let Output::Close { connection, .. } = &out {
            self.core.closing.remove(connection);
        }
        Some(out)
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

    /// An open connection's client id, shared (the driver keeps it for its log lines without a
    /// copy of its own).
    pub fn client_id(&self, conn: ConnectionHandle) -> Option<Arc<str>> {
        self.core.get(conn).map(|c| c.client_id.clone())
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

    /// The `limit` largest rooms whose name contains `search` (ASCII letters without case; an
    /// empty search matches every room), largest first and equal sizes by name, with their
    /// member counts; and how many rooms match in all. Costs one pass over the rooms and
    /// copies out at most `limit` of them.
    pub fn largest_rooms(&self, search: &str, limit: usize) -> (Vec<(&str, usize)>, usize) {
        inspect::largest(self.core.rooms(), search, limit)
    }

    /// The `limit` connections open longest, oldest first.
    pub fn oldest_connections(&self, limit: usize) -> Vec<ConnectionInfo<'_>> {
        inspect::first_opened(self.core.connections(), limit)
    }

    /// Tap `room`: from now on its publications (made here or carried from other nodes) also
    /// come out as [`Output::Tapped`], at most `rate` of them (the others are counted in the
    /// next one's `skipped`), until [`Hub::untap`]. For a driver that shows an operator a
    /// room's traffic while someone watches. Tapping a tapped room changes its rate; at most
    /// [`crate::MAX_TAPS`] rooms are tapped at once.
    pub fn tap(&mut self, now: Instant, room: &str, rate: RateLimit) -> Result<(), TapError> {
        let now = self.tick(now);
        self.core.taps.tap(now, room, rate)
    }

    /// Stop tapping `room`; whether it was tapped.
    pub fn untap(&mut self, room: &str) -> bool {
        self.core.taps.untap(room)
    }

    /// The tapped rooms.
    pub fn tapped(&self) -> impl Iterator<Item = &str> + '_ {
        self.core.taps.rooms()
    }
}
