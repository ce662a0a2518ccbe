//! History: where a stream's publications are kept so that a v2 client can resume, behind a
//! sans-IO interface.
//!
//! The hub never stores history itself. For every publication into a stream it emits
//! [`crate::Output::Append`] and waits for the position to come back through
//! [`crate::Hub::handle_appended`]; to resume a client it emits [`crate::Output::Fetch`] and takes
//! the answer through [`crate::Hub::handle_fetched`]. Whatever answers those (the
//! [`MemoryHistory`] here, a Redis engine on a cluster) is interchangeable, and a fetch in flight
//! is state of the hub, not of its driver.
//!
//! A stream's history is named by an [`Epoch`] (random, new whenever the history is started
//! afresh) and grows by exactly one [`Position::offset`] per publication, starting at 1: a
//! position `(epoch, n)` means "everything up to and including offset `n`".

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use hashbrown::HashMap;

use crate::{Instant, Tags, Target, Text};

/// Names one history of one stream. A new epoch means positions from an older one mean
/// nothing: the history was started afresh (restart, eviction, a store that lost its data).
///
/// On the wire it is 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Parse the wire form: 1 to 16 hex digits.
    pub fn parse(s: &str) -> Option<Epoch> {
        parse_hex(s, 16).map(|v| Epoch(v as u64))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a client is in a stream: everything up to and including `offset` of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Which history.
    pub epoch: Epoch,
    /// How far into it; 0 before the first publication.
    pub offset: u64,
}

/// A v2 client's session: it survives reconnects for a while, so that a resumed connection keeps
/// its sender exclusion, its filter and its recently acknowledged message ids.
///
/// Random (from the hub's seed) and unguessable; on the wire, 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

impl SessionId {
    /// Parse the wire form: exactly 32 hex digits.
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 32)
            .then(|| parse_hex(s, 32))
            .flatten()
            .map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn parse_hex(s: &str, max_digits: usize) -> Option<u128> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u128::from(d))
    })
}

/// Who in a stream a kept publication is for (before exclusion and filters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// Every subscriber of the stream.
    Everyone,
    /// The subscribers whose identity's user id is this.
    User(String),
}

impl Audience {
    /// Who in its stream a publication for `target` is for.
    pub(crate) fn of(target: &Target) -> Audience {
        match target {
            Target::User(user) => Audience::User(user.clone()),
            _ => Audience::Everyone,
        }
    }
}

/// One kept publication: what replay needs to apply the same rules as live delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The frame as a v1 client receives it (shared with live delivery: one encode).
    pub payload: Text,
    /// Who it is for.
    pub audience: Audience,
    /// Filter tags, when filters apply to it.
    pub tags: Option<Tags>,
    /// The session that published it, never replayed to that session.
    pub publisher: Option<SessionId>,
}

impl Entry {
    /// Bytes it holds, for history limits: its payload, tags and user, plus a fixed overhead for
    /// the structures around it.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 160;
        let tags = self
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>();
        let user = match &self.audience {
            Audience::User(u) => u.len(),
            Audience::Everyone => 0,
        };
        OVERHEAD + self.payload.len() + tags + user
    }
}

/// Entries with their offsets, oldest first.
pub type Entries = Vec<(u64, Arc<Entry>)>;

/// Names one fetch, so its answer finds the connection that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchId(pub u64);

/// Why a history cannot give back what a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unrecoverable {
    /// Entries after the client's position were already dropped (count, age or byte limit).
    #[error("trimmed")]
    Trimmed,
    /// The stream's history was started afresh since the client's position.
    #[error("epoch")]
    EpochChanged,
    /// The position is beyond the stream's top (a client from another history, or a bug).
    #[error("ahead")]
    Ahead,
}

impl Unrecoverable {
    /// Its name on the wire (the `reason` of a `subscribed` frame).
    pub fn as_str(self) -> &'static str {
        match self {
            Unrecoverable::Trimmed => "trimmed",
            Unrecoverable::EpochChanged => "epoch",
            Unrecoverable::Ahead => "ahead",
        }
    }
}

/// A history engine could not answer at all (part of a cluster's history is unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The store did not answer.
    #[error("history unavailable")]
    Unavailable,
}

/// The answer to a fetch: the stream's top, and the entries after the asked position when the
/// history still holds all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The stream's latest position when the fetch was answered.
    pub top: Position,
    /// Every entry after the asked position up to `top`, oldest first (empty for a fetch without
    /// a position), or why they cannot be given.
    pub entries: Result<Entries, Unrecoverable>,
}

/// Limits of a [`MemoryHistory`]: the oldest entries go first when any is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Entries kept per stream.
    pub max_entries: usize,
    /// How long an entry is kept.
    pub max_age: Duration,
    /// Bytes kept across all streams ([`Entry::size`]).
    pub max_bytes: usize,
    /// Streams remembered (an empty stream keeps only its epoch and top).
    pub max_streams: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_entries: 1000,
            max_age: Duration::from_secs(300),
            max_bytes: 64 * 1024 * 1024,
            max_streams: 100_000,
        }
    }
}

/// Counts and sizes of a [`MemoryHistory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Streams remembered.
    pub streams: usize,
    /// Entries kept.
    pub entries: usize,
    /// Bytes kept ([`Entry::size`]).
    pub bytes: usize,
    /// Entries dropped for a limit since creation.
    pub trimmed: u64,
}

struct Stored {
    offset: u64,
    entry: Arc<Entry>,
}

struct Log {
    epoch: Epoch,
    top: u64,
    entries: VecDeque<Stored>,
    used: Instant,
}

impl Log {
    fn first(&self) -> u64 {
        self.entries.front().map_or(self.top + 1, |s| s.offset)
    }
}

/// One kept entry in append order across all streams, for the age and byte limits. Entries
/// already dropped by their stream's own count limit stay here until they reach the front.
struct Kept {
    at: Instant,
    stream: Arc<str>,
    epoch: Epoch,
    offset: u64,
}

/// A history engine in memory: sans-IO (time is an argument), one per system.
///
/// A driver answers the hub's [`crate::Output::Append`] with [`MemoryHistory::append`] and its
/// [`crate::Output::Fetch`] with [`MemoryHistory::fetch`], at once, and calls
/// [`MemoryHistory::handle_timeout`] at [`MemoryHistory::poll_timeout`] so old entries go even
/// from streams nobody publishes to any more.
pub struct MemoryHistory {
    limits: HistoryLimits,
    streams: HashMap<Arc<str>, Log>,
    order: VecDeque<Kept>,
    entries: usize,
    bytes: usize,
    trimmed: u64,
    /// SplitMix64 state for new epochs.
    rng: u64,
}

impl fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    /// An empty history; `seed` makes its epochs (use a random one: epochs must differ across
    /// restarts).
    pub fn new(limits: HistoryLimits, seed: u64) -> Self {
        MemoryHistory {
            limits,
            streams: HashMap::new(),
            order: VecDeque::new(),
            entries: 0,
            bytes: 0,
            trimmed: 0,
            rng: seed,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    fn new_epoch(&mut self) -> Epoch {
        // SplitMix64: epochs only need to differ, not to be secret.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Epoch(z ^ (z >> 31))
    }

    /// The stream's log, created with a new epoch if it is not remembered.
    fn log(&mut self, now: Instant, stream: &str) -> &mut Log {
        if !self.streams.contains_key(stream) {
            self.make_room_for_a_stream();
            let epoch = self.new_epoch();
            let log = Log {
                epoch,
                top: 0,
                entries: VecDeque::new(),
                used: now,
            };
            self.streams.insert(Arc::from(stream), log);
        }
        let log = self
            .streams
            .get_mut(stream)
            .expect("inserted above if it was missing");
        log.used = now;
        log
    }

    /// Keep the number of streams under the limit: forget the least recently used empty
    /// streams (an eighth of the limit at once, so this scan is rare), after dropping the
    /// oldest entries if no stream is empty.
    fn make_room_for_a_stream(&mut self) {
        if self.streams.len() < self.limits.max_streams.max(1) {
            return;
        }
        while !self.streams.values().any(|l| l.entries.is_empty()) {
            if !self.drop_oldest() {
                break;
            }
        }
        let mut empty: Vec<(Instant, Arc<str>)> = self
            .streams
            .iter()
            .filter(|(_, l)| l.entries.is_empty())
            .map(|(k, l)| (l.used, k.clone()))
            .collect();
        empty.sort();
        let forget = (self.limits.max_streams / 8).max(1);
        for (_, name) in empty.into_iter().take(forget) {
            self.streams.remove(&name);
        }
    }

    /// Keep `entry` as the next publication of `stream`; its position.
    pub fn append(&mut self, now: Instant, stream: &str, entry: Arc<Entry>) -> Position {
        self.expire(now);
        let size = entry.size();
        let max_entries = self.limits.max_entries;
        let log = self.log(now, stream);
        log.top += 1;
        let position = Position {
            epoch: log.epoch,
            offset: log.top,
        };
        log.entries.push_back(Stored {
            offset: log.top,
            entry,
        });
        let (mut dropped, mut dropped_bytes) = (0, 0);
        while log.entries.len() > max_entries {
            let gone = log.entries.pop_front().expect("longer than the limit");
            dropped += 1;
            dropped_bytes += gone.entry.size();
        }
        self.entries = self.entries + 1 - dropped;
        self.trimmed += dropped as u64;
        self.bytes = self.bytes + size - dropped_bytes;
        let name = self
            .streams
            .get_key_value(stream)
            .map(|(k, _)| k.clone())
            .expect("the log exists");
        self.order.push_back(Kept {
            at: now,
            stream: name,
            epoch: position.epoch,
            offset: position.offset,
        });
        while self.bytes > self.limits.max_bytes {
            if !self.drop_oldest() {
                break;
            }
        }
        self.compact();
        position
    }

    /// What a client at `since` missed of `stream` (or, without a position, only the top).
    pub fn fetch(&mut self, now: Instant, stream: &str, since: Option<Position>) -> Fetched {
        self.expire(now);
        let log = self.log(now, stream);
        let top = Position {
            epoch: log.epoch,
            offset: log.top,
        };
        let entries = match since {
            None => Ok(Vec::new()),
            Some(p) if p.epoch != log.epoch => Err(Unrecoverable::EpochChanged),
            Some(p) if p.offset > log.top => Err(Unrecoverable::Ahead),
            Some(p) if p.offset + 1 < log.first() => Err(Unrecoverable::Trimmed),
            Some(p) => {
                let skip = (p.offset + 1 - log.first()) as usize;
                Ok(log
                    .entries
                    .iter()
                    .skip(skip)
                    .map(|s| (s.offset, s.entry.clone()))
                    .collect())
            }
        };
        Fetched { top, entries }
    }

    /// When the oldest entry reaches its age limit (possibly earlier: an early
    /// [`MemoryHistory::handle_timeout`] is a no-op).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order.front().map(|k| k.at + self.limits.max_age)
    }

    /// Drop entries that reached their age limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|k| k.at + self.limits.max_age <= now)
        {
            self.drop_oldest();
        }
    }

    /// Drop the oldest kept entry of all streams. `false` if there is none.
    fn drop_oldest(&mut self) -> bool {
        while let Some(k) = self.order.pop_front() {
            let Some(log) = self.streams.get_mut(&k.stream) else {
                continue; // The stream was forgotten.
            };
            if log.epoch != k.epoch || log.entries.front().is_none_or(|s| s.offset != k.offset) {
                continue; // Already dropped by the stream's count limit.
            }
            let gone = log.entries.pop_front().expect("checked above");
            self.bytes -= gone.entry.size();
            self.entries -= 1;
            self.trimmed += 1;
            return true;
        }
        false
    }

    /// Forget the order records of entries their stream's count limit already dropped, once
    /// they outnumber the live ones (so the record stays within twice the entries kept).
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.entries + 1024 {
            return;
        }
        let streams = &self.streams;
        self.order.retain(|k| {
            streams
                .get(&k.stream)
                .is_some_and(|l| l.epoch == k.epoch && k.offset >= l.first())
        });
    }

    /// The stream's latest position, if it is remembered.
    pub fn top(&self, stream: &str) -> Option<Position> {
        self.streams.get(stream).map(|l| Position {
            epoch: l.epoch,
            offset: l.top,
        })
    }

    /// Counts and sizes.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            streams: self.streams.len(),
            entries: self.entries,
            bytes: self.bytes,
            trimmed: self.trimmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn entry(s: &str) -> Arc<Entry> {
        Arc::new(Entry {
            payload: Text::from(s.to_string()),
            audience: Audience::Everyone,
            tags: None,
            publisher: None,
        })
    }

    fn at(secs: u64) -> Instant {
        Instant::from_millis(secs * 1000)
    }

    fn offsets(f: &Fetched) -> Vec<u64> {
        f.entries
            .as_ref()
            .expect("recoverable")
            .iter()
            .map(|(o, _)| *o)
            .collect()
    }

    #[test]
    fn wire_forms_round_trip() {
        let e = Epoch(0xab);
        assert_eq!(e.to_string(), "00000000000000ab");
        assert_eq!(Epoch::parse(&e.to_string()), Some(e));
        assert_eq!(Epoch::parse(""), None);
        assert_eq!(Epoch::parse("00000000000000000"), None, "17 digits");
        assert_eq!(Epoch::parse("xyz"), None);
        let s = SessionId(u128::MAX - 5);
        assert_eq!(SessionId::parse(&s.to_string()), Some(s));
        assert_eq!(SessionId::parse("ab"), None, "exactly 32 digits");
        assert_eq!(SessionId::parse("+0000000000000000000000000000001"), None);
    }

    #[test]
    fn offsets_grow_by_one_and_fetch_returns_what_follows() {
        let mut h = MemoryHistory::new(HistoryLimits::default(), 7);
        let fresh = h.fetch(at(0), "s", None);
        assert_eq!(fresh.top.offset, 0);
        let epoch = fresh.top.epoch;
        for i in 1..=5 {
            let p = h.append(at(1), "s", entry("x"));
            assert_eq!(p, Position { epoch, offset: i });
        }
        let f = h.fetch(at(2), "s", Some(Position { epoch, offset: 2 }));
        assert_eq!(offsets(&f), [3, 4, 5]);
        assert_eq!(f.top.offset, 5);
        let none = h.fetch(at(2), "s", Some(Position { epoch, offset: 5 }));
        assert_eq!(offsets(&none), Vec::<u64>::new());
        let ahead = h.fetch(at(2), "s", Some(Position { epoch, offset: 6 }));
        assert_eq!(ahead.entries, Err(Unrecoverable::Ahead));
        let other = h.fetch(
            at(2),
            "s",
            Some(Position {
                epoch: Epoch(epoch.0 ^ 1),
                offset: 1,
            }),
        );
        assert_eq!(other.entries, Err(Unrecoverable::EpochChanged));
        assert_ne!(
            h.fetch(at(2), "t", None).top.epoch,
            epoch,
            "each stream its own epoch"
        );
    }

    #[test]
    fn count_age_and_bytes_limits_trim_the_oldest() {
        let limits = HistoryLimits {
            max_entries: 3,
            max_age: Duration::from_secs(10),
            max_bytes: usize::MAX,
            max_streams: 10,
        };
        let mut h = MemoryHistory::new(limits, 1);
        let epoch = h.fetch(at(0), "s", None).top.epoch;
        for _ in 0..5 {
            h.append(at(0), "s", entry("x"));
        }
        let p = |offset| Some(Position { epoch, offset });
        assert_eq!(
            h.fetch(at(1), "s", p(1)).entries,
            Err(Unrecoverable::Trimmed)
        );
        assert_eq!(offsets(&h.fetch(at(1), "s", p(2))), [3, 4, 5]);
        h.append(at(5), "s", entry("y"));
        assert_eq!(h.poll_timeout(), Some(at(10)));
        h.handle_timeout(at(10));
        assert_eq!(
            h.stats().entries,
            1,
            "only the entry of t=5 is younger than 10 s"
        );
        assert_eq!(offsets(&h.fetch(at(10), "s", p(5))), [6]);
        assert_eq!(
            h.fetch(at(10), "s", p(4)).entries,
            Err(Unrecoverable::Trimmed)
        );
        h.handle_timeout(at(15));
        assert_eq!(h.stats().entries, 0);
        assert_eq!(
            offsets(&h.fetch(at(15), "s", p(6))),
            Vec::<u64>::new(),
            "an empty stream still knows its top: a client at the top recovers"
        );

        let size = entry("x").size();
        let limits = HistoryLimits {
            max_bytes: 2 * size,
            ..HistoryLimits::default()
        };
        let mut h = MemoryHistory::new(limits, 1);
        h.append(at(0), "a", entry("x"));
        h.append(at(1), "b", entry("x"));
        h.append(at(2), "a", entry("x"));
        assert_eq!(h.stats().entries, 2);
        assert_eq!(h.stats().bytes, 2 * size);
        let a = h.top("a").unwrap().epoch;
        assert_eq!(
            h.fetch(
                at(3),
                "a",
                Some(Position {
                    epoch: a,
                    offset: 0
                })
            )
            .entries,
            Err(Unrecoverable::Trimmed),
            "the oldest entry of all streams went first"
        );
    }

    #[test]
    fn forgotten_streams_come_back_with_a_new_epoch() {
        let limits = HistoryLimits {
            max_streams: 2,
            ..HistoryLimits::default()
        };
        let mut h = MemoryHistory::new(limits, 3);
        let a = h.fetch(at(0), "a", None).top;
        h.fetch(at(1), "b", None);
        h.fetch(at(2), "c", None); // Forgets "a", the least recently used empty stream.
        assert_eq!(h.stats().streams, 2);
        let again = h.fetch(at(3), "a", Some(a));
        assert_eq!(again.entries, Err(Unrecoverable::EpochChanged));
    }

    #[test]
    fn order_records_stay_bounded_under_the_count_limit() {
        let limits = HistoryLimits {
            max_entries: 2,
            ..HistoryLimits::default()
        };
        let mut h = MemoryHistory::new(limits, 3);
        for _ in 0..10_000 {
            h.append(at(0), "s", entry("x"));
        }
        assert!(h.order.len() <= 2 * h.stats().entries + 1024);
        assert_eq!(h.stats().entries, 2);
    }
}
