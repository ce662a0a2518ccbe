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

#[cfg(test)]
mod tests {
    use super::*;

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
