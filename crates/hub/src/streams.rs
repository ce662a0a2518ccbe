//! The state of protocol v2 in a hub that keeps history: sessions, each v2 connection's stream
//! subscriptions, appends waiting for their position, fetches in flight. [`crate::v2`] acts on
//! it.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use chacha20::rand_core::{Rng, SeedableRng};
use chacha20::ChaCha20Rng;
use hashbrown::{DefaultHashBuilder, HashMap};
use indexmap::IndexSet;

use crate::history::{Entry, Epoch, FetchId, Position, SessionId};
use crate::wire::{MAX_POSITIONS, MAX_STREAM_NAME_BYTES};
use crate::{ConnectionHandle, Filter, HistoryConfig, Instant, Text};

/// A session's memory of one client message id.
pub(crate) enum Acked {
    /// Being processed: its publication waits for a position.
    Pending,
    /// Acked, with the position its publication got, if it made one.
    Done(Option<(String, Position)>),
}

pub(crate) struct Session {
    /// Its connection, while it has one.
    pub(crate) conn: Option<ConnectionHandle>,
    /// The user it was created for; a resume from another identity gets a new session.
    pub(crate) user: Option<String>,
    /// The connection's filter, restored on resume (before any replay).
    pub(crate) filter: Filter,
    /// Recent client message ids, oldest first.
    pub(crate) acks: VecDeque<(String, Acked)>,
    /// When it lost its connection.
    pub(crate) detached_at: Option<Instant>,
    /// What it was charged against the detached sessions' byte budget when it lost its
    /// connection (given back when it resumes or is forgotten).
    pub(crate) charged: usize,
}

impl Session {
    /// A session of `user` with no connection yet, no filter and no message ids.
    pub(crate) fn new(user: Option<String>) -> Self {
        Session {
            conn: None,
            user,
            filter: Filter::any(),
            acks: VecDeque::new(),
            detached_at: None,
            charged: 0,
        }
    }

    /// Bytes it holds beyond its fixed size: its message ids and the stream names of their acks
    /// (a pending ack may still get a stream name: charged as the longest).
    pub(crate) fn bytes(&self) -> usize {
        const PER_ACK: usize = 64;
        let acks: usize = self
            .acks
            .iter()
            .map(|(id, acked)| {
                let stream = match acked {
                    Acked::Pending => MAX_STREAM_NAME_BYTES,
                    Acked::Done(p) => p.as_ref().map_or(0, |(s, _)| s.len()),
                };
                PER_ACK + id.len() + stream
            })
            .sum();
        SESSION_BYTES + acks + self.user.as_ref().map_or(0, String::len)
    }
}

/// What a session costs without its ids: the map entry, its filter and ack queue headers.
pub(crate) const SESSION_BYTES: usize = 256;

/// A kept publication waiting for its position.
pub(crate) struct Pending {
    pub(crate) entry: Arc<Entry>,
    /// The client message that published it, to ack with the position.
    pub(crate) origin: Option<(SessionId, String)>,
}

/// The client message being processed, for `re` on replies and its ack.
pub(crate) struct Current {
    pub(crate) conn: ConnectionHandle,
    pub(crate) session: SessionId,
    pub(crate) id: String,
    pub(crate) published: bool,
}

/// A v2 connection's subscription to one stream.
pub(crate) struct Sub {
    pub(crate) stream: Cow<'static, str>,
    /// Set until the connection has caught up and gets the stream live.
    pub(crate) catching: Option<Box<Catching>>,
    /// Offsets of this stream that were for the connection and were dropped, not yet reported.
    pub(crate) gap: Option<(Position, u64)>,
    /// The latest position the connection was given (its `subscribed` top, then each live
    /// publication): a position at or below it is never sent again, whichever order the
    /// engine's answers came in.
    pub(crate) last: Option<Position>,
}

/// Whether `position` is at or below `last` in the same epoch (already given).
pub(crate) fn covered(position: Option<Position>, last: Option<Position>) -> bool {
    matches!((position, last), (Some(p), Some(l)) if p.epoch == l.epoch && p.offset <= l.offset)
}

pub(crate) struct Catching {
    /// The fetch in flight, until it is answered.
    pub(crate) fetch: Option<FetchId>,
    /// Whether the connection presented a position (a resume) or not (fresh).
    pub(crate) resuming: bool,
    /// Why a resume cannot recover whatever the answer (`session`: presented without one).
    pub(crate) lost: Option<&'static str>,
    /// The answer, once it came.
    pub(crate) answer: Option<Answer>,
    /// Fetched entries not yet sent (or skipped by the rules).
    pub(crate) replay: VecDeque<(u64, Arc<Entry>)>,
    pub(crate) replayed: u64,
    /// Whether the `subscribed` frame went out.
    pub(crate) announced: bool,
    /// Live publications held meanwhile (with their positions), and their bytes.
    pub(crate) held: VecDeque<(Option<Position>, Text)>,
    pub(crate) held_bytes: usize,
    /// The stream's history started afresh under the connection: what the fetch returns of the
    /// new epoch is replayed, and the outcome is `recovered: false` (`epoch`) all the same.
    pub(crate) rebase: bool,
}

impl Catching {
    /// Waiting for fetch `fetch`; `resuming` if the client presented a position, `lost` if it
    /// cannot be recovered whatever the answer.
    pub(crate) fn fetching(fetch: FetchId, resuming: bool, lost: Option<&'static str>) -> Self {
        Catching {
            fetch: Some(fetch),
            resuming,
            lost,
            answer: None,
            replay: VecDeque::new(),
            replayed: 0,
            announced: false,
            held: VecDeque::new(),
            held_bytes: 0,
            rebase: false,
        }
    }
}

/// What a fetch answered.
pub(crate) struct Answer {
    /// The stream's top (`None` if history was unavailable).
    pub(crate) top: Option<Position>,
    /// Why what was missed cannot be replayed, if it cannot.
    pub(crate) lost: Option<&'static str>,
}

/// What a v2 connection adds to [`Connection`].
pub(crate) struct V2Conn {
    pub(crate) session: SessionId,
    pub(crate) subs: Vec<Sub>,
    /// Positions presented (in the upgrade, or with a message) for streams not subscribed yet.
    pub(crate) since: Vec<(String, Position)>,
    /// Streams this connection left (at most [`MAX_POSITIONS`], oldest forgotten first): it was
    /// given their positions in this session, so a re-join may present them.
    pub(crate) left: Vec<Cow<'static, str>>,
    /// Subscriptions still catching up, or with a gap to report.
    pub(crate) busy: usize,
    /// Whether it resumed a session. Positions are honoured only within the session that
    /// received them (its sender exclusion and filter decide what a replay holds); without it
    /// a resume is answered `recovered: false`, reason `session`.
    pub(crate) resumed: bool,
}

impl V2Conn {
    pub(crate) fn sub(&mut self, stream: &str) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|s| s.stream == stream)
    }

    pub(crate) fn note_since(&mut self, positions: impl IntoIterator<Item = (String, Position)>) {
        for (stream, position) in positions {
            self.since.retain(|(s, _)| *s != stream);
            if self.since.len() >= MAX_POSITIONS {
                self.since.remove(0);
            }
            self.since.push((stream, position));
        }
    }
}

/// Who asked for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetcher {
    /// A connection catching up on a stream it subscribed.
    Conn(ConnectionHandle),
    /// The stream's [`Order`], for a hole in what the shared history delivered.
    Stream,
}

/// Kept publications held above a hole, per stream, before the hole is given up as a gap.
pub(crate) const MAX_HELD: usize = 1024;

/// A stream's order in a shared history ([`HistoryConfig::shared`]): the offset this node
/// delivers next, and what came above a hole while the hole is fetched.
pub(crate) struct Order {
    pub(crate) epoch: Epoch,
    /// The offset delivered next; everything below it was delivered (or reported as a gap).
    pub(crate) next: u64,
    /// Publications above `next`, by offset, waiting for the hole below them.
    pub(crate) held: BTreeMap<u64, Arc<Entry>>,
    /// The fetch of the hole, while in flight.
    pub(crate) fetch: Option<FetchId>,
}

impl Order {
    /// A stream whose next offset to deliver is `next` of `epoch`.
    pub(crate) fn at(epoch: Epoch, next: u64) -> Self {
        Order {
            epoch,
            next,
            held: BTreeMap::new(),
            fetch: None,
        }
    }
}

/// The v2 state of a hub that keeps history.
pub(crate) struct Streams {
    pub(crate) config: HistoryConfig,
    pub(crate) rng: ChaCha20Rng,
    /// The protocol's system-wide stream, which every v2 connection gets from its open.
    pub(crate) system: Option<&'static str>,
    pub(crate) sessions: HashMap<SessionId, Session, DefaultHashBuilder>,
    /// Detached sessions by the time they lost their connection (stale entries skipped).
    pub(crate) detached: VecDeque<(Instant, SessionId)>,
    pub(crate) detached_count: usize,
    /// What the detached sessions were charged, in all.
    pub(crate) detached_bytes: usize,
    pub(crate) appending: HashMap<String, VecDeque<Pending>, DefaultHashBuilder>,
    pub(crate) fetches: HashMap<FetchId, (Fetcher, String), DefaultHashBuilder>,
    /// Per stream, with a shared history: the order kept publications are delivered in. One
    /// per stream this node receives (the system stream, rooms with local members).
    pub(crate) order: HashMap<String, Order, DefaultHashBuilder>,
    pub(crate) next_fetch: u64,
    /// Slots of the open v2 connections (the audience of the system stream).
    pub(crate) members: IndexSet<u32, DefaultHashBuilder>,
    pub(crate) current: Option<Current>,
}

impl Streams {
    pub(crate) fn new(config: HistoryConfig, system: Option<&'static str>) -> Self {
        Streams {
            rng: ChaCha20Rng::from_seed(config.seed.0),
            config,
            system,
            sessions: HashMap::default(),
            detached: VecDeque::new(),
            detached_count: 0,
            detached_bytes: 0,
            appending: HashMap::default(),
            fetches: HashMap::default(),
            order: HashMap::default(),
            next_fetch: 1,
            members: IndexSet::default(),
            current: None,
        }
    }

    /// The stream a kept publication for `target` belongs to.
    pub(crate) fn stream_of<'a>(&self, target: &'a crate::Target) -> Option<Cow<'a, str>> {
        match target {
            crate::Target::Room(room) => Some(Cow::Borrowed(room.as_str())),
            crate::Target::All | crate::Target::User(_) => self.system.map(Cow::Borrowed),
            crate::Target::Connection(_) => None,
        }
    }

    /// The id of the client message being processed, if it came from `h` (for `re`).
    pub(crate) fn reply_id(&self, h: ConnectionHandle) -> Option<&str> {
        let current = self.current.as_ref()?;
        (current.conn == h).then_some(current.id.as_str())
    }

    /// A new fetch for `fetcher` of `stream`.
    pub(crate) fn fetch_for(&mut self, fetcher: Fetcher, stream: &str) -> FetchId {
        let id = FetchId(self.next_fetch);
        self.next_fetch += 1;
        self.fetches.insert(id, (fetcher, stream.into()));
        id
    }

    /// With a shared history, a connection learnt that `stream` is at `top`: if this node has
    /// no order for it yet, it delivers from the offset after `top` (so a publication this node
    /// has not received yet is fetched rather than skipped).
    pub(crate) fn order_from(&mut self, stream: &str, top: Position) {
        if self.config.shared && !self.order.contains_key(stream) {
            self.order
                .insert(stream.into(), Order::at(top.epoch, top.offset + 1));
        }
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// When the oldest detached session expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.detached
            .front()
            .map(|(at, _)| *at + self.config.session_ttl)
    }

    pub(crate) fn new_session_id(&mut self) -> SessionId {
        loop {
            let id =
                SessionId(u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()));
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// `id` lost its connection at `now`: it waits, charged against the budget.
    pub(crate) fn detach(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.conn = None;
        s.detached_at = Some(now);
        s.charged = s.bytes();
        self.detached_bytes += s.charged;
        self.detached_count += 1;
        self.detached.push_back((now, id));
        self.expire(now, 0);
    }

    /// `id` got a connection again (if it was waiting): give back its charge.
    pub(crate) fn attach(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if s.detached_at.take().is_some() {
                self.detached_count -= 1;
                self.detached_bytes -= core::mem::take(&mut s.charged);
            }
        }
    }

    /// Forget the oldest detached sessions beyond the count or byte limit, and those past their
    /// time.
    pub(crate) fn expire(&mut self, now: Instant, room_for: usize) {
        let ttl = self.config.session_ttl;
        let max = self.config.max_detached_sessions.saturating_sub(room_for);
        let max_bytes = self.config.max_detached_bytes;
        while let Some(&(at, id)) = self.detached.front() {
            let within = self.detached_count <= max && self.detached_bytes <= max_bytes;
            if at + ttl > now && within {
                break;
            }
            self.detached.pop_front();
            let live = self
                .sessions
                .get(&id)
                .is_some_and(|s| s.conn.is_none() && s.detached_at == Some(at));
            if live {
                let gone = self.sessions.remove(&id).expect("checked above");
                self.detached_count -= 1;
                self.detached_bytes -= gone.charged;
            }
        }
    }
}
