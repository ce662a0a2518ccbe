//! What an operator's inspector reads of a running hub: owned copies made in the hub task
//! ([`crate::HubHandle::inspect`], [`crate::HubHandle::connection_detail`],
//! [`crate::HubHandle::tail`]), every list capped and every string cut short, so a look at a hub
//! of any size costs a bounded copy.

use serde::Serialize;
use switchboard_hub::cluster::ClusterTotals;
use switchboard_hub::{ConnectionInfo, Instant, RateLimit, Stats, Text};

/// Rooms an inspection lists at most.
pub const MAX_ROOMS_LISTED: usize = 100;
/// Connections an inspection lists at most.
pub const MAX_CONNECTIONS_LISTED: usize = 200;
/// Bytes of a room search that count; the rest is ignored.
pub const MAX_SEARCH_BYTES: usize = 128;
/// Bytes shown of a name: a room, a client id, a user id, a claim, a filter entry.
pub const MAX_NAME_BYTES: usize = 128;
/// Claims, filter entries and rooms shown of one connection.
pub const MAX_DETAIL_ITEMS: usize = 64;
/// How often a tail shows a room's publications at most: ten a second, one at a time.
pub const TAIL_RATE: RateLimit = RateLimit {
    per_second: 10,
    burst: 1,
};
/// Bytes shown of a tailed publication.
pub const TAIL_PAYLOAD_BYTES: usize = 256;
/// Tailed publications waiting for a slow watcher; more are counted as passed over.
pub const TAIL_QUEUE: usize = 16;

/// What to list besides the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Rooms whose name contains this (ASCII letters without case; cut to
    /// [`MAX_SEARCH_BYTES`]).
    pub search: String,
    /// How many of the largest rooms to list (at most [`MAX_ROOMS_LISTED`]).
    pub rooms: usize,
    /// How many of the connections open longest to list (at most
    /// [`MAX_CONNECTIONS_LISTED`]).
    pub connections: usize,
}

impl Query {
    /// Counters only.
    pub fn counters() -> Self {
        Query::default()
    }

    /// Counters and the longest lists, rooms matching `search`.
    pub fn lists(search: &str) -> Self {
        Query {
            search: clip_bare(search, MAX_SEARCH_BYTES).to_string(),
            rooms: MAX_ROOMS_LISTED,
            connections: MAX_CONNECTIONS_LISTED,
        }
    }
}

/// A hub's counters and the lists a [`Query`] asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Counters and gauges (with the history's, when the hub task runs one).
    pub stats: Stats,
    /// The largest rooms matching the search, largest first.
    pub rooms: Vec<RoomSize>,
    /// How many rooms match the search in all.
    pub rooms_matching: usize,
    /// The connections open longest, oldest first.
    pub connections: Vec<ConnectionView>,
    /// The rooms tapped now (someone watches their tail).
    pub tapped: Vec<String>,
    /// The cluster's other live nodes, summed (zero on a single node).
    pub cluster: ClusterTotals,
}

/// A room and its local member count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSize {
    /// Its name (cut to [`MAX_NAME_BYTES`]).
    pub name: String,
    /// Its local members.
    pub members: usize,
}

/// One connection in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionView {
    /// Its serial: unique in its hub, never reused ([`crate::HubHandle::connection_detail`]).
    pub id: u64,
    /// The id its protocol gave it.
    pub client_id: String,
    /// Its user, if known.
    pub user: Option<String>,
    /// How many rooms it is in.
    pub rooms: usize,
    /// Bytes queued to it and not flushed yet.
    pub queued_bytes: usize,
    /// Seconds since it opened.
    pub age_secs: u64,
}

impl ConnectionView {
    /// The view of `info`, in `rooms` rooms, at `now`.
    pub fn of(info: &ConnectionInfo<'_>, rooms: usize, now: Instant) -> Self {
        ConnectionView {
            id: info.handle.serial(),
            client_id: clip(info.client_id, MAX_NAME_BYTES),
            user: info.identity.map(|i| clip(&i.user, MAX_NAME_BYTES)),
            rooms,
            queued_bytes: info.queued_bytes,
            age_secs: now.saturating_since(info.opened_at).as_secs(),
        }
    }
}

/// One connection in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionDetail {
    /// What a list shows of it.
    #[serde(flatten)]
    pub view: ConnectionView,
    /// Its identity's claims (at most [`MAX_DETAIL_ITEMS`]).
    pub claims: Vec<(String, String)>,
    /// Its filter's entries (at most [`MAX_DETAIL_ITEMS`]); empty matches everything.
    pub filter: Vec<(String, String)>,
    /// The rooms it is in, in join order (at most [`MAX_DETAIL_ITEMS`]).
    pub room_names: Vec<String>,
}

impl ConnectionDetail {
    /// The detail of `info`, in `rooms`, at `now`.
    pub fn of(info: &ConnectionInfo<'_>, rooms: &[String], now: Instant) -> Self {
        let pairs = |items: &[(String, String)]| {
            items
                .iter()
                .take(MAX_DETAIL_ITEMS)
                .map(|(k, v)| (clip(k, MAX_NAME_BYTES), clip(v, MAX_NAME_BYTES)))
                .collect()
        };
        ConnectionDetail {
            view: ConnectionView::of(info, rooms.len(), now),
            claims: info.identity.map_or_else(Vec::new, |i| pairs(&i.claims)),
            filter: pairs(info.filter.entries()),
            room_names: rooms
                .iter()
                .take(MAX_DETAIL_ITEMS)
                .map(|r| clip(r, MAX_NAME_BYTES))
                .collect(),
        }
    }
}

/// A publication to a tailed room, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailEvent {
    /// The room.
    pub room: String,
    /// When the hub saw it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Its first [`TAIL_PAYLOAD_BYTES`] bytes at most (cut at a character boundary).
    pub payload: String,
    /// Its whole length in bytes.
    pub bytes: usize,
    /// Whether `payload` was cut short.
    pub truncated: bool,
    /// Publications to the room not shown to this watcher since the previous one shown (passed
    /// over by the sampling, or while it was not reading).
    pub skipped: u64,
}

impl TailEvent {
    /// The event for a tapped publication.
    pub fn of(room: &str, payload: &Text, skipped: u64, at_ms: u64) -> Self {
        let shown = clip_bare(payload.as_str(), TAIL_PAYLOAD_BYTES);
        TailEvent {
            room: clip(room, MAX_NAME_BYTES),
            at_ms,
            truncated: shown.len() < payload.len(),
            payload: shown.to_string(),
            bytes: payload.len(),
            skipped,
        }
    }
}

/// The longest start of `s` of at most `max` bytes that ends at a character boundary.
fn clip_bare(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s`, cut to at most `max` bytes at a character boundary, marked with `…` when cut (the mark
/// counts in `max`).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut out = clip_bare(s, max.saturating_sub('…'.len_utf8())).to_string();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789ab", 10), "0123456…");
        assert_eq!(clip("ééééé", 8), "éé…");
        assert!(clip(&"é".repeat(300), MAX_NAME_BYTES).len() <= MAX_NAME_BYTES);
        assert_eq!(clip_bare("aé", 2), "a");
    }

    #[test]
    fn a_tail_event_shows_the_start_of_a_long_payload() {
        let long = Text::from("x".repeat(1000));
        let e = TailEvent::of("r", &long, 3, 7);
        assert_eq!(e.payload.len(), TAIL_PAYLOAD_BYTES);
        assert_eq!(
            (e.bytes, e.truncated, e.skipped, e.at_ms),
            (1000, true, 3, 7)
        );
        let short = TailEvent::of("r", &Text::from("{}"), 0, 7);
        assert_eq!((short.payload.as_str(), short.truncated), ("{}", false));
    }

    #[test]
    fn a_search_is_cut_short() {
        let q = Query::lists(&"a".repeat(1000));
        assert!(q.search.len() <= MAX_SEARCH_BYTES);
        assert_eq!(q.rooms, MAX_ROOMS_LISTED);
        assert_eq!(Query::counters().rooms, 0);
    }
}
