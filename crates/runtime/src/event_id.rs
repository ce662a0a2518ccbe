//! Server-sent-event ids for protocol v2: every stream position a session holds, so that the
//! `Last-Event-ID` a reconnecting `EventSource` sends is a whole resume.
//!
//! An id reads `<session>` before the session holds any position, then
//! `<session>.<stream>~<epoch>~<offset>[,<stream>~<epoch>~<offset>...]`, the stream names
//! percent-encoded (so neither `.`, `,` nor `~` inside a name can be misread, and an id never
//! holds a line break). [`EventIds`] writes them from the v2 frames a connection is sent;
//! [`resume`] turns one back into the upgrade's `sb_session` and `sb_since` parameters.

use serde::Deserialize;
use switchboard_hub::history::{Epoch, SessionId};
use switchboard_hub::wire::{self, MAX_POSITIONS};

/// The longest `Last-Event-ID` accepted, in bytes: 64 positions of long stream names fit.
pub const MAX_LAST_EVENT_ID_BYTES: usize = 32 * 1024;

/// The positions one server-sent-event stream's session holds, as the frames written to it
/// tell them.
#[derive(Debug, Default)]
pub struct EventIds {
    session: Option<String>,
    /// Stream (percent-encoded), epoch, offset; at most [`MAX_POSITIONS`].
    positions: Vec<(String, String, u64)>,
}

/// The parts of a v2 frame that move a position.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    sb: &'a str,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
}

/// What one v2 frame does to the positions a session holds. Read once per publication (every
/// recipient is sent the same frame, see [`crate::outbox::Corks`]) and applied per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// A `session` frame: the session's id.
    Session(String),
    /// A `pub` or `subscribed` frame: a stream is at this epoch and offset.
    Position {
        /// The stream, percent-encoded.
        stream: String,
        /// Its epoch.
        epoch: String,
        /// The offset reached.
        offset: u64,
    },
}

impl Move {
    /// What the v2 frame `payload` moves, if it is a `session`, `pub` or `subscribed` frame
    /// (every other kind moves no position and carries no id, so the client's last id stays as
    /// it was).
    pub fn of(payload: &[u8]) -> Option<Move> {
        // Most frames are `pub`: look before parsing.
        let kind = payload.strip_prefix(br#"{"sb":""#)?;
        if !(kind.starts_with(b"pub\"")
            || kind.starts_with(b"subscribed\"")
            || kind.starts_with(b"session\""))
        {
            return None;
        }
        let frame: Frame<'_> = serde_json::from_slice(payload).ok()?;
        match frame.sb {
            "session" => Some(Move::Session(frame.session?)),
            "pub" | "subscribed" => Some(Move::Position {
                stream: encode(&frame.stream?),
                epoch: frame.epoch?,
                offset: frame.offset?,
            }),
            _ => None,
        }
    }
}

impl EventIds {
    /// Note the v2 frame `payload` about to be written; the id its event carries, if any (see
    /// [`Move::of`]).
    pub fn note(&mut self, payload: &[u8]) -> Option<String> {
        self.apply(&Move::of(payload)?)
    }

    /// Apply `moved` to the positions held; the id the event carries.
    pub fn apply(&mut self, moved: &Move) -> Option<String> {
        match moved {
            Move::Session(session) => self.session = Some(session.clone()),
            Move::Position {
                stream,
                epoch,
                offset,
            } => {
                let full = self.positions.len() >= MAX_POSITIONS;
                match self.positions.iter_mut().find(|(s, ..)| s == stream) {
                    Some(held) => {
                        held.1.clone_from(epoch);
                        held.2 = *offset;
                    }
                    None if !full => self
                        .positions
                        .push((stream.clone(), epoch.clone(), *offset)),
                    None => {}
                }
            }
        }
        let session = self.session.as_deref()?;
        let mut id = String::with_capacity(session.len() + 48 * self.positions.len());
        id.push_str(session);
        for (i, (stream, epoch, offset)) in self.positions.iter().enumerate() {
            use std::fmt::Write as _;
            let _ = write!(
                id,
                "{}{stream}~{epoch}~{offset}",
                if i == 0 { '.' } else { ',' }
            );
        }
        Some(id)
    }
}

/// A stream name as an id holds it.
fn encode(stream: &str) -> String {
    form_urlencoded::byte_serialize(stream.as_bytes()).collect()
}

/// The query parameters a `Last-Event-ID` stands for (`sb_session`, then one `sb_since` per
/// position), or why it cannot be one of ours (for a `400`).
pub fn resume(id: &str) -> Result<Vec<(String, String)>, &'static str> {
    if id.len() > MAX_LAST_EVENT_ID_BYTES {
        return Err("Last-Event-ID is too long");
    }
    let (session, positions) = match id.split_once('.') {
        Some((session, positions)) => (session, Some(positions)),
        None => (id, None),
    };
    if SessionId::parse(session).is_none() || session.len() != 32 {
        return Err("Last-Event-ID does not start with a session (32 hex digits)");
    }
    let mut query = vec![("sb_session".to_string(), session.to_string())];
    for position in positions.into_iter().flat_map(|p| p.split(',')) {
        if query.len() > MAX_POSITIONS {
            return Err("Last-Event-ID holds more than 64 positions");
        }
        let malformed = "Last-Event-ID holds a malformed position";
        let mut parts = position.split('~');
        let (Some(stream), Some(epoch), Some(offset), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed);
        };
        let stream = form_urlencoded::parse(stream.as_bytes())
            .next()
            .map(|(name, _)| name.into_owned())
            .ok_or(malformed)?;
        let since = format!("{stream}~{epoch}~{offset}");
        if Epoch::parse(epoch).is_none() || wire::parse_since(&since).is_none() {
            return Err(malformed);
        }
        query.push(("sb_since".to_string(), since));
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "3865b85aa318fb113d43cb337c20004a";

    #[test]
    fn ids_carry_every_position_and_resume_reads_them_back() {
        let mut ids = EventIds::default();
        let session = format!(r#"{{"sb":"session","session":"{SESSION}","resumed":false}}"#);
        assert_eq!(ids.note(session.as_bytes()).as_deref(), Some(SESSION));
        let sub = br#"{"sb":"subscribed","stream":"all","epoch":"69cecfdf41150212","offset":41}"#;
        assert_eq!(
            ids.note(sub).unwrap(),
            format!("{SESSION}.all~69cecfdf41150212~41")
        );
        let odd = r#"{"sb":"pub","stream":"project:a.b,c~d\n","epoch":"0000000000000001","offset":7,"msg":{"x":"y"}}"#;
        let id = ids.note(odd.as_bytes()).unwrap();
        assert!(!id.contains('\n'), "{id}");
        let pubbed =
            br#"{"sb":"pub","stream":"all","epoch":"69cecfdf41150212","offset":42,"msg":1}"#;
        let id = ids.note(pubbed).unwrap();
        assert_eq!(
            resume(&id).unwrap(),
            vec![
                ("sb_session".to_string(), SESSION.to_string()),
                (
                    "sb_since".to_string(),
                    "all~69cecfdf41150212~42".to_string()
                ),
                (
                    "sb_since".to_string(),
                    "project:a.b,c~d\n~0000000000000001~7".to_string()
                ),
            ]
        );
        assert_eq!(ids.note(br#"{"sb":"msg","msg":{"type":"x"}}"#), None);
        assert_eq!(ids.note(br#"{"sb":"gap","stream":"all"}"#), None);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "nope",
            "3865b85aa318fb113d43cb337c20004",
            &format!("{SESSION}.all"),
            &format!("{SESSION}.all~zz~1"),
            &format!("{SESSION}.all~69cecfdf41150212~x"),
            &format!("{SESSION}.all~69cecfdf41150212~1~2"),
            &format!("{SESSION}.~69cecfdf41150212~1"),
            &"a".repeat(MAX_LAST_EVENT_ID_BYTES + 1),
        ] {
            assert!(resume(bad).is_err(), "{bad:?}");
        }
        let many = vec!["all~69cecfdf41150212~1"; 65].join(",");
        assert!(resume(&format!("{SESSION}.{many}")).is_err());
        assert_eq!(resume(SESSION).unwrap().len(), 1);
    }

    /// Arbitrary ids (built from the characters that matter to the format) are read or refused,
    /// never a panic, and what is read is what the hub accepts.
    #[test]
    fn arbitrary_ids_never_panic() {
        let alphabet: Vec<char> = "0123456789abcdef.,~%+ :\u{e9}\u{1f600}\nxyz"
            .chars()
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut id = String::from(if next() % 2 == 0 { SESSION } else { "" });
            for _ in 0..next() % 80 {
                id.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            if let Ok(query) = resume(&id) {
                assert!(query.len() <= MAX_POSITIONS + 1);
                for (k, v) in &query[1..] {
                    assert_eq!(k, "sb_since");
                    assert!(wire::parse_since(v).is_some(), "{v:?} from {id:?}");
                }
            }
        }
    }
}
