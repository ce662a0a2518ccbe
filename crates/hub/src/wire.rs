//! The v2 envelope: the hub's own wire around every system's messages.
//!
//! A v2 connection (`Sec-WebSocket-Protocol: switchboard.v2`) exchanges JSON objects whose `sb`
//! field says what they are; a system's own message travels inside as `msg`, byte for byte what
//! a v1 client would send or receive. See `docs/protocol/v2.md`.
//!
//! Client to server there is one kind, `{"sb":"msg","msg":...}`, with an optional `id` (acked,
//! and recognised when resent) and an optional `since` (positions to resume from). Everything
//! the server sends is built here: the v1 bytes are wrapped, never re-encoded.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::history::{Epoch, Position, SessionId};
use crate::Text;

/// The `Sec-WebSocket-Protocol` value a client offers to speak v2; the server echoes it.
pub const SUBPROTOCOL: &str = "switchboard.v2";

/// Longest client message id, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;
/// Longest stream name a client may name in a position, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 256;
/// Most positions one frame or one upgrade may carry.
pub const MAX_POSITIONS: usize = 64;
/// Longest error text sent back for a malformed envelope (parser messages can quote input).
const MAX_ERROR_BYTES: usize = 120;

/// What a v2 client's frame carries besides its message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The client's id for this message: the server acks it, and a resend with the same id in
    /// the same session is acked again instead of being processed twice.
    pub id: Option<String>,
    /// Positions to resume from, per stream, when those streams are subscribed.
    pub since: Vec<(String, Position)>,
}

/// Why a v2 frame's envelope could not be read; sent back to that client alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(pub String);

fn refuse(why: impl core::fmt::Display) -> EnvelopeError {
    let mut s = String::new();
    let _ = write!(s, "{why}");
    if s.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    EnvelopeError(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFrame<'a> {
    #[serde(borrow)]
    sb: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    since: Option<Vec<PositionIn<'a>>>,
    #[serde(default, borrow)]
    msg: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionIn<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
    offset: u64,
}

/// Check a client-chosen stream name in a position.
fn stream_name(s: &str) -> Result<(), EnvelopeError> {
    if s.is_empty() || s.len() > MAX_STREAM_NAME_BYTES {
        return Err(refuse(format_args!(
            "a stream name has 1 to {MAX_STREAM_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Read a v2 client frame: its envelope, and its message as a slice of the same buffer.
pub fn open(frame: &Text) -> Result<(Envelope, Text), EnvelopeError> {
    let parsed: ClientFrame<'_> = serde_json::from_slice(frame).map_err(refuse)?;
    if parsed.sb != "msg" {
        return Err(refuse(format_args!(
            "unknown sb {:?}: a client sends only \"msg\"",
            parsed.sb
        )));
    }
    let msg = parsed
        .msg
        .ok_or_else(|| refuse("missing field `msg`: the message goes in msg"))?;
    let id = match parsed.id {
        Some(id) if id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES => {
            return Err(refuse(format_args!(
                "id has 1 to {MAX_MESSAGE_ID_BYTES} bytes"
            )))
        }
        id => id.map(Cow::into_owned),
    };
    let since = parsed.since.unwrap_or_default();
    if since.len() > MAX_POSITIONS {
        return Err(refuse(format_args!(
            "since names at most {MAX_POSITIONS} streams"
        )));
    }
    let since = since
        .into_iter()
        .map(|p| {
            stream_name(&p.stream)?;
            let epoch =
                Epoch::parse(&p.epoch).ok_or_else(|| refuse("epoch is 1 to 16 hex digits"))?;
            Ok((
                p.stream.into_owned(),
                Position {
                    epoch,
                    offset: p.offset,
                },
            ))
        })
        .collect::<Result<Vec<_>, EnvelopeError>>()?;
    // `msg` borrows from `frame`: share its buffer rather than copy.
    let message = frame.slice_ref(msg.get());
    Ok((Envelope { id, since }, message))
}

/// Read one `sb_since` query value, `<stream>~<epoch>~<offset>` (split from the right, so a
/// stream name may itself contain `~`).
pub fn parse_since(value: &str) -> Option<(String, Position)> {
    let (rest, offset) = value.rsplit_once('~')?;
    let (stream, epoch) = rest.rsplit_once('~')?;
    stream_name(stream).ok()?;
    let offset = offset.parse().ok().filter(|_| !offset.starts_with('+'))?;
    Some((
        stream.into(),
        Position {
            epoch: Epoch::parse(epoch)?,
            offset,
        },
    ))
}

/// Append `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `"stream":S,"epoch":E,"offset":N` (no braces).
fn push_position(out: &mut String, stream: &str, position: Position) {
    out.push_str("\"stream\":");
    push_json_str(out, stream);
    let _ = write!(
        out,
        ",\"epoch\":\"{}\",\"offset\":{}",
        position.epoch, position.offset
    );
}

fn close_with_msg(mut out: String, msg: &[u8]) -> Text {
    out.push_str(",\"msg\":");
    let mut bytes = Vec::with_capacity(out.len() + msg.len() + 1);
    bytes.extend_from_slice(out.as_bytes());
    bytes.extend_from_slice(msg);
    bytes.push(b'}');
    Text::from_utf8(bytes.into()).expect("JSON built from UTF-8 parts")
}

/// `{"sb":"session","session":ID,"resumed":B}`: the first frame of every v2 connection.
pub fn session(id: SessionId, resumed: bool) -> Text {
    let mut out = String::with_capacity(80);
    let _ = write!(
        out,
        "{{\"sb\":\"session\",\"session\":\"{id}\",\"resumed\":{resumed}}}"
    );
    out.into()
}

/// `{"sb":"pub","stream":S,"epoch":E,"offset":N,"msg":M}`: a publication of a stream.
pub fn publication(stream: &str, position: Position, msg: &Text) -> Text {
    let mut out = String::with_capacity(64 + stream.len());
    out.push_str("{\"sb\":\"pub\",");
    push_position(&mut out, stream, position);
    close_with_msg(out, msg)
}

/// `{"sb":"msg","msg":M}`, or with `"re":ID` when it answers the client's message `ID`.
pub fn message(re: Option<&str>, msg: &Text) -> Text {
    let mut out = String::with_capacity(24 + re.map_or(0, str::len));
    out.push_str("{\"sb\":\"msg\"");
    if let Some(id) = re {
        out.push_str(",\"re\":");
        push_json_str(&mut out, id);
    }
    close_with_msg(out, msg)
}

/// `{"sb":"ack","id":ID}` plus the position its publication got, if it published one, and
/// `"duplicate":true` when it answers a resend.
pub fn ack(id: &str, published: Option<(&str, Position)>, duplicate: bool) -> Text {
    let mut out = String::with_capacity(96);
    out.push_str("{\"sb\":\"ack\",\"id\":");
    push_json_str(&mut out, id);
    if let Some((stream, position)) = published {
        out.push(',');
        push_position(&mut out, stream, position);
    }
    if duplicate {
        out.push_str(",\"duplicate\":true");
    }
    out.push('}');
    out.into()
}

/// How a subscription to a stream began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No position was given: live from the top.
    Fresh,
    /// Every publication after the given position was replayed (this many, after the rules).
    Recovered {
        /// Frames replayed.
        replayed: u64,
    },
    /// What was missed cannot be given back (`trimmed`, `epoch`, `ahead`, `unavailable`): live
    /// from the top.
    NotRecovered(&'static str),
}

/// `{"sb":"subscribed","stream":S,"epoch":E,"offset":N,...}`: the connection has everything of
/// the stream up to `offset` that was for it; later publications follow live. Without a
/// position (history unavailable) only the stream is named.
pub fn subscribed(stream: &str, top: Option<Position>, outcome: Outcome) -> Text {
    let mut out = String::with_capacity(96 + stream.len());
    out.push_str("{\"sb\":\"subscribed\",");
    match top {
        Some(top) => push_position(&mut out, stream, top),
        None => {
            out.push_str("\"stream\":");
            push_json_str(&mut out, stream);
        }
    }
    match outcome {
        Outcome::Fresh => {}
        Outcome::Recovered { replayed } => {
            let _ = write!(out, ",\"recovered\":true,\"replayed\":{replayed}");
        }
        Outcome::NotRecovered(why) => {
            let _ = write!(out, ",\"recovered\":false,\"reason\":\"{why}\"");
        }
    }
    out.push('}');
    out.into()
}

/// `{"sb":"gap","stream":S,"epoch":E,"from":A,"to":B}`: offsets A to B of the stream were
/// for this connection and were not delivered.
pub fn gap(stream: &str, epoch: Epoch, from: u64, to: u64) -> Text {
    let mut out = String::with_capacity(96 + stream.len());
    out.push_str("{\"sb\":\"gap\",\"stream\":");
    push_json_str(&mut out, stream);
    let _ = write!(out, ",\"epoch\":\"{epoch}\",\"from\":{from},\"to\":{to}}}");
    out.into()
}

/// `{"sb":"error","error":WHY}`: the frame's envelope could not be read.
pub fn error(why: &str) -> Text {
    let mut out = String::with_capacity(32 + why.len());
    out.push_str("{\"sb\":\"error\",\"error\":");
    push_json_str(&mut out, why);
    out.push('}');
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(t: &Text) -> Value {
        serde_json::from_slice(t).expect("valid JSON")
    }

    #[test]
    fn a_client_frame_opens_to_its_envelope_and_message() {
        let frame = Text::from(
            r#"{"sb":"msg","id":"c-1","since":[{"stream":"project:p","epoch":"a1","offset":4}],"msg":{"type":"X", "n":[1,2]}}"#,
        );
        let (env, msg) = open(&frame).unwrap();
        assert_eq!(env.id.as_deref(), Some("c-1"));
        assert_eq!(
            env.since,
            [(
                "project:p".into(),
                Position {
                    epoch: Epoch(0xa1),
                    offset: 4
                }
            )]
        );
        assert_eq!(
            msg.as_str(),
            r#"{"type":"X", "n":[1,2]}"#,
            "the bytes as sent"
        );
        assert_eq!(
            msg.as_bytes().as_ptr(),
            frame.as_bytes()[frame.len() - msg.len() - 1..].as_ptr(),
            "a slice of the frame's buffer"
        );
        let (env, _) = open(&Text::from(r#"{"msg":1,"sb":"msg"}"#)).unwrap();
        assert_eq!(env, Envelope::default());
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_short_reason() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"sb":"msg"}"#,
            r#"{"sb":"pub","msg":{}}"#,
            r#"{"sb":"msg","msg":{},"extra":1}"#,
            r#"{"sb":"msg","sb":"msg","msg":{}}"#,
            r#"{"sb":"msg","id":"","msg":{}}"#,
            r#"{"sb":"msg","id":7,"msg":{}}"#,
            r#"{"sb":"msg","since":[{"stream":"s","epoch":"zz","offset":1}],"msg":{}}"#,
            r#"{"sb":"msg","since":[{"stream":"","epoch":"1","offset":1}],"msg":{}}"#,
            r#"{"sb":"msg","since":[{"stream":"s","epoch":"1","offset":-1}],"msg":{}}"#,
            r#"{"sb":"msg","msg":{}} trailing"#,
        ] {
            let e = open(&Text::from(bad)).expect_err(bad);
            assert!(
                !e.0.is_empty() && e.0.len() <= MAX_ERROR_BYTES + 3,
                "{bad}: {e}"
            );
        }
        let long_id = alloc::format!(r#"{{"sb":"msg","id":"{}","msg":{{}}}}"#, "i".repeat(65));
        assert!(open(&Text::from(long_id)).is_err());
        let long_field = alloc::format!(r#"{{"{}":1}}"#, "f".repeat(10_000));
        let e = open(&Text::from(long_field)).unwrap_err();
        assert!(e.0.len() <= MAX_ERROR_BYTES + 3, "bounded: {}", e.0.len());
        let many = (0..65)
            .map(|i| alloc::format!(r#"{{"stream":"s{i}","epoch":"1","offset":1}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let frame = alloc::format!(r#"{{"sb":"msg","since":[{many}],"msg":{{}}}}"#);
        assert!(open(&Text::from(frame)).is_err());
    }

    #[test]
    fn query_positions_split_from_the_right() {
        assert_eq!(
            parse_since("room~with~tildes~00ff~12"),
            Some((
                "room~with~tildes".into(),
                Position {
                    epoch: Epoch(0xff),
                    offset: 12
                }
            ))
        );
        for bad in ["", "s~1", "~1~2", "s~zz~1", "s~1~-1", "s~1~+1", "s~1~x"] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_frames_are_json_with_the_message_inside_unchanged() {
        let msg = Text::from(r#"{"table":"cars","operation":"CHANGE"}"#);
        let p = Position {
            epoch: Epoch(1),
            offset: 9,
        };
        let stream = "project:\"q\"\n";
        let v = json(&publication(stream, p, &msg));
        assert_eq!(v["sb"], "pub");
        assert_eq!(v["stream"], stream);
        assert_eq!(v["epoch"], "0000000000000001");
        assert_eq!(v["offset"], 9);
        assert_eq!(v["msg"]["table"], "cars");
        let v = json(&message(Some("a\"b"), &msg));
        assert_eq!(
            (v["sb"].as_str(), v["re"].as_str()),
            (Some("msg"), Some("a\"b"))
        );
        assert!(json(&message(None, &msg)).get("re").is_none());
        let v = json(&ack("x", Some(("s", p)), true));
        assert_eq!(v["offset"], 9);
        assert_eq!(v["duplicate"], true);
        assert!(json(&ack("x", None, false)).get("stream").is_none());
        let v = json(&subscribed(
            "s",
            Some(p),
            Outcome::Recovered { replayed: 3 },
        ));
        assert_eq!(
            (v["recovered"].as_bool(), v["replayed"].as_u64()),
            (Some(true), Some(3))
        );
        let v = json(&subscribed("s", Some(p), Outcome::NotRecovered("trimmed")));
        assert_eq!(v["reason"], "trimmed");
        assert!(json(&subscribed("s", Some(p), Outcome::Fresh))
            .get("recovered")
            .is_none());
        let v = json(&subscribed("s", None, Outcome::NotRecovered("unavailable")));
        assert!(v.get("offset").is_none());
        let v = json(&gap("s", Epoch(2), 4, 6));
        assert_eq!((v["from"].as_u64(), v["to"].as_u64()), (Some(4), Some(6)));
        let v = json(&session(SessionId(5), true));
        assert_eq!(v["session"], "00000000000000000000000000000005");
        assert_eq!(json(&error("bad \u{1}"))["error"], "bad \u{1}");
    }
}
