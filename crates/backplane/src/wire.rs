//! The message a node publishes to Redis: a compact header, then the payload bytes unchanged.
//!
//! ```text
//! offset  size     field
//! 0       1        version (1)
//! 1       8        origin node id, big-endian
//! 9       8        sequence number on the system's `all` channel, big-endian (0: not counted)
//! 17      1        flags: bits 0-1 target (0 All, 1 Room, 2 User); bit 2 tags present;
//!                  bit 3 kept (the receiving node keeps it in its stream's history);
//!                  bit 4 publisher present
//! 18      varint   [Room, User] length of the room or user id, then its UTF-8 bytes
//!         varint   [tags present] number of tags, then per tag: varint length + name,
//!                  varint length + value (UTF-8)
//!         16       [publisher present] the v2 session that published it, big-endian (it
//!                  never gets its own publication back, on any node)
//!         rest     the payload: the frame every recipient gets, byte for byte
//! ```
//!
//! Varints are unsigned LEB128 (at most 10 bytes). Decoding never panics and never allocates
//! more than the message's own length: every declared length is checked against the bytes that
//! remain.

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::cluster::{
    Member, Members, NodeClient, NodeSummary, MAX_CLIENTS, MAX_MEMBERS,
};
use switchboard_hub::history::SessionId;
use switchboard_hub::{Publication, Tags, Target, Text};

use crate::node::NodeId;

/// The only format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Header bytes before the variable part.
const FIXED: usize = 18;
const TARGET_MASK: u8 = 0b011;
const TAGS_FLAG: u8 = 0b100;
const KEPT_FLAG: u8 = 0b1000;
const PUBLISHER_FLAG: u8 = 0b1_0000;
const TARGET_ALL: u8 = 0;
const TARGET_ROOM: u8 = 1;
const TARGET_USER: u8 = 2;

/// A publication as it travels between nodes: who sent it, its place in the sender's sequence,
/// and the publication itself (with no sender exclusion: that only means something on the
/// sender's node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub origin: NodeId,
    /// Its number in the origin's sequence on the `all` channel; 0 on room channels.
    pub seq: u64,
    /// The publication; `except` is always `None` after decoding.
    pub publication: Publication,
    /// The v2 session that published it, if one did.
    pub publisher: Option<SessionId>,
}

/// Why a publication cannot be put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// [`Target::Connection`] names a connection on this node only; it is never replicated.
    #[error("a publication to one connection cannot be replicated")]
    ConnectionTarget,
}

/// Why bytes received from Redis are not a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header says.
    #[error("message truncated")]
    Truncated,
    /// Written by an incompatible version of this crate.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// The target bits name no known target.
    #[error("unknown target kind {0}")]
    Target(u8),
    /// A varint longer than 10 bytes or larger than the message.
    #[error("malformed length")]
    Length,
    /// A room, user or tag that is not UTF-8.
    #[error("a room, user or tag is not UTF-8")]
    Utf8,
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_varint(out, s.len() as u64);
    out.put_slice(s.as_bytes());
}

/// Encode `publication` as published by `origin` with sequence number `seq`, by the v2 session
/// `publisher` if one did.
pub fn encode(
    origin: NodeId,
    seq: u64,
    publication: &Publication,
    publisher: Option<SessionId>,
) -> Result<Bytes, EncodeError> {
    let (kind, name) = match &publication.target {
        Target::All => (TARGET_ALL, None),
        Target::Room(room) => (TARGET_ROOM, Some(room.as_str())),
        Target::User(user) => (TARGET_USER, Some(user.as_str())),
        _ => return Err(EncodeError::ConnectionTarget),
    };
    let str_len = |s: &str| varint_len(s.len() as u64) + s.len();
    let mut len = FIXED
        + name.map_or(0, str_len)
        + publication.payload.len()
        + if publisher.is_some() { 16 } else { 0 };
    if let Some(tags) = &publication.tags {
        len += varint_len(tags.len() as u64);
        len += tags
            .iter()
            .map(|(k, v)| str_len(k) + str_len(v))
            .sum::<usize>();
    }
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(VERSION);
    out.put_u64(origin.get());
    out.put_u64(seq);
    let flags =
        kind | if publication.tags.is_some() {
            TAGS_FLAG
        } else {
            0
        } | if publication.kept { KEPT_FLAG } else { 0 }
            | if publisher.is_some() {
                PUBLISHER_FLAG
            } else {
                0
            };
    out.put_u8(flags);
    if let Some(name) = name {
        put_str(&mut out, name);
    }
    if let Some(tags) = &publication.tags {
        put_varint(&mut out, tags.len() as u64);
        for (k, v) in tags {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
    }
    if let Some(session) = publisher {
        out.put_u128(session.0);
    }
    out.put_slice(&publication.payload);
    debug_assert_eq!(out.len(), len, "capacity computed exactly");
    Ok(out.freeze())
}

/// A cursor over received bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Length)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::Length); // Would overflow 64 bits.
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Length)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let remaining = self.buf.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= remaining)
            .ok_or(DecodeError::Length)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8)
    }
}

/// Decode a message received from Redis; the payload shares `message`'s buffer.
pub fn decode(message: Bytes) -> Result<Envelope, DecodeError> {
    let mut r = Reader {
        buf: &message,
        pos: 0,
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let origin = NodeId::new(r.u64()?);
    let seq = r.u64()?;
    let flags = r.u8()?;
    let target = match flags & TARGET_MASK {
        TARGET_ALL => Target::All,
        TARGET_ROOM => Target::Room(r.string()?),
        TARGET_USER => Target::User(r.string()?),
        other => return Err(DecodeError::Target(other)),
    };
    let tags = if flags & TAGS_FLAG != 0 {
        let count = r.len()?; // Each tag takes at least two bytes, so this bounds the Vec.
        let mut tags: Tags = Vec::with_capacity(count / 2);
        for _ in 0..count {
            let k = r.string()?;
            let v = r.string()?;
            tags.push((k, v));
        }
        Some(tags)
    } else {
        None
    };
    let publisher = if flags & PUBLISHER_FLAG != 0 {
        let b = r.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Some(SessionId(u128::from_be_bytes(a)))
    } else {
        None
    };
    let payload = Text::from_utf8(message.slice(r.pos..)).map_err(|_| DecodeError::Utf8)?;
    Ok(Envelope {
        origin,
        seq,
        publisher,
        publication: Publication {
            target,
            except: None,
            tags,
            payload,
            kept: flags & KEPT_FLAG != 0,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Cluster state: a node's members of a room, and its summary
// ---------------------------------------------------------------------------------------------

/// The first byte of a [`MembersMessage`] (never a publication's version).
pub const MEMBERS_KIND: u8 = 0x4d;
/// The first byte of a node's summary ([`encode_summary`]).
pub const SUMMARY_KIND: u8 = 0x53;
const HELLO_FLAG: u8 = 0b1;
/// Longest room, client, user or filter string a state message may carry (ids are capped far
/// lower where clients give them: `--max-id-bytes`).
pub const MAX_STATE_STRING: usize = 4096;

/// A string of a state message, within [`MAX_STATE_STRING`].
fn state_string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let s = r.string()?;
    if s.len() > MAX_STATE_STRING {
        return Err(DecodeError::Length);
    }
    Ok(s)
}

/// A node's members of one room, published on the room's channel whenever they change:
///
/// ```text
/// offset  size     field
/// 0       1        kind (0x4d, `M`)
/// 1       8        origin node id, big-endian
/// 9       1        flags: bit 0 hello (the room just got its first member on the origin:
///                  nodes with members of it answer with theirs)
/// 10      varint   room length, then its UTF-8 bytes
///         varint   how many members the room has on the origin
///         varint   how many are listed (at most 1000), then per member: varint length +
///                  client id, 1 byte (1: a user follows) [+ varint length + user id],
///                  varint joined-at (Unix ms)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersMessage {
    /// The node whose members these are.
    pub origin: NodeId,
    /// The room.
    pub room: String,
    /// Its members on the origin.
    pub members: Members,
    /// The room just got its first member on the origin.
    pub hello: bool,
}

/// Encode `origin`'s members of `room` (at most [`MAX_MEMBERS`] listed).
pub fn encode_members(origin: NodeId, room: &str, members: &Members, hello: bool) -> Bytes {
    let listed = &members.listed[..members.listed.len().min(MAX_MEMBERS)];
    let mut out = BytesMut::with_capacity(32 + room.len() + listed.len() * 48);
    out.put_u8(MEMBERS_KIND);
    out.put_u64(origin.get());
    out.put_u8(if hello { HELLO_FLAG } else { 0 });
    put_str(&mut out, room);
    put_varint(&mut out, members.total.max(listed.len() as u64));
    put_varint(&mut out, listed.len() as u64);
    for m in listed {
        put_str(&mut out, &m.client_id);
        match &m.user {
            Some(user) => {
                out.put_u8(1);
                put_str(&mut out, user);
            }
            None => out.put_u8(0),
        }
        put_varint(&mut out, m.joined_at);
    }
    out.freeze()
}

/// Decode a [`MembersMessage`]; never panics, never allocates more than the message's size.
pub fn decode_members(message: &[u8]) -> Result<MembersMessage, DecodeError> {
    let mut r = Reader {
        buf: message,
        pos: 0,
    };
    let kind = r.u8()?;
    if kind != MEMBERS_KIND {
        return Err(DecodeError::Version(kind));
    }
    let origin = NodeId::new(r.u64()?);
    let hello = r.u8()? & HELLO_FLAG != 0;
    let room = state_string(&mut r)?;
    let total = r.varint()?;
    // Each member takes at least three bytes, so this bounds the Vec.
    let count = r.len()?;
    if count > MAX_MEMBERS {
        return Err(DecodeError::Length);
    }
    let mut listed = Vec::with_capacity(count / 3);
    for _ in 0..count {
        let client_id = state_string(&mut r)?;
        let user = match r.u8()? {
            0 => None,
            1 => Some(state_string(&mut r)?),
            _ => return Err(DecodeError::Length),
        };
        let joined_at = r.varint()?;
        listed.push(Member {
            client_id,
            user,
            joined_at,
        });
    }
    if r.pos != message.len() {
        return Err(DecodeError::Length);
    }
    Ok(MembersMessage {
        origin,
        room,
        members: Members {
            total: total.max(listed.len() as u64),
            listed,
        },
        hello,
    })
}

/// Encode `node`'s summary, as its Redis key holds it:
///
/// ```text
/// offset  size     field
/// 0       1        kind (0x53, `S`)
/// 1       8        node id, big-endian
/// 9       varint   open connections
///         varint   non-empty rooms
///         varint   clients listed (at most 1000), then per client: varint length + client
///                  id, varint opened-at (Unix ms), varint filter entries, then per entry
///                  varint length + name, varint length + value
/// ```
pub fn encode_summary(node: NodeId, summary: &NodeSummary) -> Bytes {
    let clients = &summary.clients[..summary.clients.len().min(MAX_CLIENTS)];
    let mut out = BytesMut::with_capacity(32 + clients.len() * 48);
    out.put_u8(SUMMARY_KIND);
    out.put_u64(node.get());
    put_varint(&mut out, summary.connections);
    put_varint(&mut out, summary.rooms);
    put_varint(&mut out, clients.len() as u64);
    for c in clients {
        put_str(&mut out, &c.client_id);
        put_varint(&mut out, c.opened_at);
        put_varint(&mut out, c.filter.len() as u64);
        for (k, v) in &c.filter {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
    }
    out.freeze()
}

/// Decode a node's summary; never panics, never allocates more than the message's size.
pub fn decode_summary(message: &[u8]) -> Result<(NodeId, NodeSummary), DecodeError> {
    let mut r = Reader {
        buf: message,
        pos: 0,
    };
    let kind = r.u8()?;
    if kind != SUMMARY_KIND {
        return Err(DecodeError::Version(kind));
    }
    let node = NodeId::new(r.u64()?);
    let connections = r.varint()?;
    let rooms = r.varint()?;
    let count = r.len()?; // Each client takes at least three bytes.
    if count > MAX_CLIENTS {
        return Err(DecodeError::Length);
    }
    let mut clients = Vec::with_capacity(count / 3);
    for _ in 0..count {
        let client_id = state_string(&mut r)?;
        let opened_at = r.varint()?;
        let entries = r.len()?;
        let mut filter = Vec::with_capacity(entries / 2);
        for _ in 0..entries {
            let k = state_string(&mut r)?;
            let v = state_string(&mut r)?;
            filter.push((k, v));
        }
        clients.push(NodeClient {
            client_id,
            filter,
            opened_at,
        });
    }
    if r.pos != message.len() {
        return Err(DecodeError::Length);
    }
    Ok((
        node,
        NodeSummary {
            connections,
            rooms,
            clients,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_summaries_round_trip() {
        let members = Members {
            listed: vec![
                Member {
                    client_id: "client_1_1_ab".into(),
                    user: Some("ünï".into()),
                    joined_at: 1_735_734_600_000,
                },
                Member {
                    client_id: "client_1_2_ab".into(),
                    user: None,
                    joined_at: 0,
                },
            ],
            total: 5,
        };
        for hello in [false, true] {
            let bytes = encode_members(NodeId::new(9), "project:p", &members, hello);
            let m = decode_members(&bytes).unwrap();
            assert_eq!(
                m,
                MembersMessage {
                    origin: NodeId::new(9),
                    room: "project:p".into(),
                    members: members.clone(),
                    hello,
                }
            );
        }
        let summary = NodeSummary {
            connections: 3,
            rooms: 2,
            clients: vec![NodeClient {
                client_id: "user_3_1_ab".into(),
                filter: vec![("direction".into(), "IB".into())],
                opened_at: 7,
            }],
        };
        let bytes = encode_summary(NodeId::new(4), &summary);
        assert_eq!(decode_summary(&bytes).unwrap(), (NodeId::new(4), summary));
        // One kind is never taken for the other, nor for a publication.
        assert!(decode_members(&bytes).is_err());
        assert!(decode(bytes).is_err());
    }

    #[test]
    fn hostile_members_and_summaries_are_errors_never_panics() {
        let members = Members {
            listed: vec![Member {
                client_id: "c".into(),
                user: Some("u".into()),
                joined_at: 300,
            }],
            total: 1,
        };
        let good = encode_members(NodeId::new(1), "room", &members, true);
        let summary = NodeSummary {
            connections: 1,
            rooms: 1,
            clients: vec![NodeClient {
                client_id: "c".into(),
                filter: vec![("k".into(), "v".into())],
                opened_at: 1,
            }],
        };
        let good_summary = encode_summary(NodeId::new(1), &summary);
        for good in [&good, &good_summary] {
            for i in 0..good.len() {
                for b in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                    let mut m = good.to_vec();
                    m[i] = b;
                    let _ = decode_members(&m);
                    let _ = decode_summary(&m);
                }
                assert!(decode_members(&good[..i]).is_err(), "cut at {i}");
                assert!(decode_summary(&good[..i]).is_err(), "cut at {i}");
            }
        }
        // A member count far above what the bytes hold, or over the cap, is refused before
        // allocating.
        let mut many = good[..15].to_vec(); // kind, node, flags, room
        many.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode_members(&many), Err(DecodeError::Length));
        let over_cap: Vec<Member> = (0..MAX_MEMBERS + 1)
            .map(|_| Member {
                client_id: "c".into(),
                user: None,
                joined_at: 0,
            })
            .collect();
        let mut bytes = encode_members(
            NodeId::new(1),
            "r",
            &Members {
                listed: over_cap.clone(),
                total: 0,
            },
            false,
        )
        .to_vec();
        assert_eq!(
            decode_members(&bytes).unwrap().members.listed.len(),
            MAX_MEMBERS
        );
        // Rewrite the listed count to 1001 and append one more member by hand.
        bytes.truncate(12); // kind, node, flags, room "r"
        put_varint_vec(&mut bytes, 1001);
        put_varint_vec(&mut bytes, 1001);
        for _ in 0..1001 {
            bytes.extend_from_slice(&[1, b'c', 0, 0]);
        }
        assert_eq!(decode_members(&bytes), Err(DecodeError::Length));
        // Trailing bytes are refused.
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(decode_members(&trailing), Err(DecodeError::Length));
    }

    fn put_varint_vec(out: &mut Vec<u8>, v: u64) {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        out.extend_from_slice(&b);
    }

    fn round_trip(p: Publication) {
        for publisher in [
            None,
            Some(SessionId(0x0123_4567_89ab_cdef_0011_2233_4455_6677)),
        ] {
            let bytes = encode(NodeId::new(0xdead_beef_0102_0304), 42, &p, publisher).unwrap();
            let e = decode(bytes).unwrap();
            assert_eq!(e.origin, NodeId::new(0xdead_beef_0102_0304));
            assert_eq!(e.seq, 42);
            assert_eq!(e.publisher, publisher);
            assert_eq!(
                e.publication,
                Publication {
                    except: None,
                    ..p.clone()
                }
            );
        }
    }

    #[test]
    fn every_target_and_tags_round_trip() {
        round_trip(Publication::to_all("{\"a\":1}"));
        round_trip(Publication::to_room("project:p-1", "{}"));
        round_trip(Publication::to_user("3", "x"));
        round_trip(Publication::to_all(""));
        let tags = vec![("direction".to_string(), "IB".to_string())];
        round_trip(Publication::to_all("{\"t\":1}").filtered(tags));
        round_trip(Publication::to_all("{}").filtered(Vec::new()));
        let long = "r".repeat(70_000);
        round_trip(Publication::to_room(long, "7".repeat(300)));
        round_trip(Publication::to_room("ünïcødé ☃", "{}"));
        round_trip(Publication::to_room("project:p", "{}").keep());
        round_trip(Publication::to_all("{}").filtered(Vec::new()).keep());
    }

    #[test]
    fn the_payload_is_unchanged_and_shared() {
        let p = Publication::to_all("{\"table\":\"times\"}");
        let bytes = encode(NodeId::new(1), 0, &p, None).unwrap();
        let e = decode(bytes.clone()).unwrap();
        assert_eq!(e.publication.payload.as_str(), "{\"table\":\"times\"}");
        let start = bytes.len() - e.publication.payload.len();
        assert_eq!(e.publication.payload.as_ptr(), bytes[start..].as_ptr());
    }

    #[test]
    fn connection_targets_are_refused() {
        // A handle cannot be built outside the hub; an opened hub gives us one.
        use switchboard_hub::{Config, Hub, Instant, OpenInfo};
        let mut hub = Hub::new(Config::default(), Silent, Instant::ZERO);
        let h = hub.handle_open(Instant::ZERO, OpenInfo::default()).unwrap();
        let p = Publication::new(Target::Connection(h), "x");
        assert_eq!(
            encode(NodeId::new(1), 0, &p, None),
            Err(EncodeError::ConnectionTarget)
        );
    }

    /// A protocol that does nothing, to open a connection and get a handle.
    struct Silent;

    impl switchboard_hub::Protocol for Silent {
        type Decoder = switchboard_hub::RawText;
        fn name(&self) -> &'static str {
            "silent"
        }
        fn decoder(&self) -> switchboard_hub::RawText {
            switchboard_hub::RawText
        }
        fn on_message(
            &mut self,
            _: &mut switchboard_hub::Context<'_>,
            _: switchboard_hub::ConnectionHandle,
            _: switchboard_hub::Text,
        ) {
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(decode(Bytes::new()), Err(DecodeError::Truncated));
        assert_eq!(
            decode(Bytes::from_static(&[9; 20])),
            Err(DecodeError::Version(9))
        );
        let good = encode(
            NodeId::new(5),
            1,
            &Publication::to_room("room", "payload").filtered(vec![("k".into(), "v".into())]),
            None,
        )
        .unwrap();
        // Every truncation of the header fails cleanly (cutting into the payload is not
        // detectable, and is not an error: the payload has no length).
        for cut in 0..FIXED + 1 + 4 + 1 + 4 {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad_target = good.to_vec();
        bad_target[17] = 3;
        assert_eq!(decode(bad_target.into()), Err(DecodeError::Target(3)));
        let mut huge_len = good[..FIXED].to_vec();
        huge_len.extend_from_slice(&[0xff; 9]);
        huge_len.push(0x01);
        assert_eq!(decode(huge_len.into()), Err(DecodeError::Length));
        let mut overlong = good[..FIXED].to_vec();
        overlong.extend_from_slice(&[0x80; 11]);
        assert_eq!(decode(overlong.into()), Err(DecodeError::Length));
        let mut not_utf8 = good[..FIXED].to_vec();
        not_utf8.extend_from_slice(&[2, 0xff, 0xfe]);
        assert_eq!(decode(not_utf8.into()), Err(DecodeError::Utf8));
        // A tag count far above what the bytes could hold is refused before allocating.
        let mut many_tags = good[..FIXED].to_vec();
        many_tags[17] = TAGS_FLAG;
        many_tags.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(many_tags.into()), Err(DecodeError::Length));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep: every prefix and single-byte corruption of a valid message.
        let good = encode(
            NodeId::new(77),
            9,
            &Publication::to_user("user", "{\"x\":1}")
                .filtered(vec![("a".into(), "b".into()), ("c".into(), "d".into())]),
            Some(SessionId(7)),
        )
        .unwrap();
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut m = good.to_vec();
                m[i] = b;
                let _ = decode(m.into());
            }
            let _ = decode(good.slice(..i));
        }
    }
}
