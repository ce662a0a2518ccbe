//! Fixtures shared by the benchmarks: a hub with one room of N members, one publication to it
//! with the outputs drained, and the protocol examples documented in `docs/protocol/*.md`.
//!
//! The bench targets live in `benches/`: `fanout` (criterion, cost per delivery), `protocol`
//! (criterion, decode and encode per message type) and `fanout_allocations` (heap allocations
//! per publication, counted by a global allocator). Run them with
//! `cargo bench -p switchboard-benches`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_hub::{
    Config, ConnectionHandle, Context, Filter, Hub, Instant, OpenInfo, Output, Protocol,
    Publication, RawText, Text,
};
use switchboard_protocol::{afc, collab, dcdock, laptimes, race, DecodeError, Direction};

/// The room every member of a [`FanOut`] hub is in.
pub const ROOM: &str = "bench";

/// The payload of every benchmark publication: a laptimes change notice, 77 bytes.
pub const PAYLOAD: &str =
    r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z"}"#;

/// A protocol that puts every connection in [`ROOM`] on open and gives it the filter
/// `team = <value>` when the upgrade carried a `team` query parameter. It ignores frames.
#[derive(Debug, Default)]
pub struct RoomMembers;

impl Protocol for RoomMembers {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "bench-room"
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, info: &OpenInfo) {
        // The fixture sizes its limits so that this join cannot be refused.
        cx.join(conn, ROOM)
            .expect("room limits are sized for the fixture");
        if let Some(team) = info.query_param("team") {
            cx.set_filter(conn, Filter::new([("team", team)]));
        }
    }

    fn on_message(&mut self, _: &mut Context<'_>, _: ConnectionHandle, _: Text) {}
}

/// A hub with `members` connections in [`ROOM`] and the publication the benchmarks send to it.
#[derive(Debug)]
pub struct FanOut {
    hub: Hub<RoomMembers>,
    now: Instant,
    publication: Publication,
    deliveries: usize,
}

impl FanOut {
    /// `members` connections in one room, and a room publication of [`PAYLOAD`].
    ///
    /// With `filtered`, every member has a filter and the publication is tagged `team = a`:
    /// even-numbered members filter on `team = a` (delivered), odd-numbered ones on `team = b`
    /// (skipped), so half the members (rounded up) receive it.
    pub fn new(members: usize, filtered: bool) -> Self {
        let now = Instant::from_millis(1_000);
        let mut config = Config::default();
        config.limits.max_connections = members + 1;
        config.heartbeat_interval = None;
        config.idle_timeout = None;
        let mut hub = Hub::new(config, RoomMembers, now);
        for i in 0..members {
            let mut info = OpenInfo::default();
            if filtered {
                let team = if i % 2 == 0 { "a" } else { "b" };
                info.query.push(("team".into(), team.into()));
            }
            hub.handle_open(now, info)
                .expect("max_connections is sized for the fixture");
        }
        // Nothing was queued on open; start from an empty output queue anyway.
        while hub.poll_output().is_some() {}
        let mut publication = Publication::to_room(ROOM, Text::from(PAYLOAD));
        if filtered {
            publication = publication.filtered(vec![("team".into(), "a".into())]);
        }
        let deliveries = if filtered {
            members.div_ceil(2)
        } else {
            members
        };
        FanOut {
            hub,
            now,
            publication,
            deliveries,
        }
    }

    /// How many connections each publication reaches.
    pub fn deliveries(&self) -> usize {
        self.deliveries
    }

    /// The hub.
    pub fn hub(&self) -> &Hub<RoomMembers> {
        &self.hub
    }

    /// Publish once and drain every output, reporting each delivery as flushed (as a driver
    /// does once the bytes are on the socket, so the per-connection budgets never fill).
    /// Returns the number of deliveries.
    ///
    /// The publication is cloned first, as a protocol builds a fresh one per message: that
    /// clones the room name and the tags (a few small allocations) and shares the payload.
    pub fn publish(&mut self) -> usize {
        let Self {
            hub,
            now,
            publication,
            ..
        } = self;
        hub.publish(*now, publication.clone());
        let mut transmits = 0;
        // Every recipient is open: nothing closes connections in this fixture.
        while let Some(out) = hub.poll_output() {
            // One recipient, or many sharing the payload (no clone per recipient).
            let (payload, one, many) = match out {
                Output::Transmit {
                    connection,
                    payload,
                } => (payload, Some(connection), Vec::new()),
                Output::Fanout {
                    payload,
                    recipients,
                } => (payload, None, recipients),
                _ => continue,
            };
            for connection in one.into_iter().chain(many) {
                transmits += 1;
                hub.handle_flushed(*now, connection, payload.len())
                    .expect("recipient is open");
            }
        }
        transmits
    }
}

/// One documented message, the first of its `type` for its system and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The system, e.g. `collab`.
    pub system: &'static str,
    /// Which way it travels (client to server, or server to client).
    pub direction: Direction,
    /// Its `type` tag, or `message` for a message without one (laptimes notices).
    pub tag: String,
    /// The JSON text as documented.
    pub json: String,
}

/// The directory holding `docs/protocol/<system>-v1.md`.
pub fn protocol_docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol")
}

/// Every documented WebSocket message of every system, one per (system, direction, type):
/// the fenced blocks tagged `json client-to-server` and `json server-to-client`.
pub fn examples(docs: &Path) -> std::io::Result<Vec<Example>> {
    let mut out = Vec::new();
    for codec in CODECS {
        let doc = std::fs::read_to_string(docs.join(format!("{}-v1.md", codec.name)))?;
        for (direction, json) in tagged_blocks(&doc) {
            let tag = serde_json::from_str::<Value>(&json)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "message".to_owned());
            let seen = out.iter().any(|e: &Example| {
                e.system == codec.name && e.direction == direction && e.tag == tag
            });
            if !seen {
                out.push(Example {
                    system: codec.name,
                    direction,
                    tag,
                    json,
                });
            }
        }
    }
    Ok(out)
}

/// The fenced blocks of a protocol doc tagged with a WebSocket direction, in order.
fn tagged_blocks(doc: &str) -> Vec<(Direction, String)> {
    let mut out = Vec::new();
    let mut current: Option<(Direction, String)> = None;
    for line in doc.lines() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                current = match trimmed {
                    "```json client-to-server" => Some((Direction::ClientToServer, String::new())),
                    "```json server-to-client" => Some((Direction::ServerToClient, String::new())),
                    _ => None,
                };
            }
            Some((_, body)) if trimmed == "```" => {
                let body = core::mem::take(body);
                let (direction, _) = current.take().expect("inside a block");
                out.push((direction, body));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// Encodes one decoded server message again, as the server does before every send.
pub type Encoder = Box<dyn Fn() -> Text>;

/// One system's codec, as the server uses it.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// The system.
    pub name: &'static str,
    /// Decode a frame from a client (what the server does on every inbound frame).
    pub decode_client: fn(&[u8]) -> Result<(), DecodeError>,
    /// Decode a server message and return a closure that encodes it (the send path).
    pub encoder: fn(&[u8]) -> Result<Encoder, DecodeError>,
}

macro_rules! codec {
    ($name:literal, $m:ident) => {
        Codec {
            name: $name,
            decode_client: |b| {
                $m::v1::decode_client(b).map(|m| {
                    std::hint::black_box(&m);
                })
            },
            encoder: |b| {
                let m = $m::v1::decode_server(b)?;
                Ok(Box::new(move || $m::v1::encode_server(&m)))
            },
        }
    };
}

/// Every system's codec.
pub const CODECS: &[Codec] = &[
    codec!("laptimes", laptimes),
    codec!("afc", afc),
    codec!("race", race),
    codec!("collab", collab),
    codec!("dcdock", dcdock),
];

/// The codec of `system`.
pub fn codec(system: &str) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.name == system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_reaches_every_member() {
        let mut f = FanOut::new(10, false);
        assert_eq!(f.hub().rooms().collect::<Vec<_>>(), vec![(ROOM, 10)]);
        assert_eq!((f.deliveries(), f.publish(), f.publish()), (10, 10, 10));
        let stats = f.hub().stats();
        assert_eq!((stats.counters.deliveries, stats.queued_bytes), (20, 0));
    }

    #[test]
    fn filtered_fan_out_reaches_the_matching_half() {
        for (members, expected) in [(1, 1), (2, 1), (7, 4), (10, 5)] {
            let mut f = FanOut::new(members, true);
            assert_eq!(f.deliveries(), expected, "{members} members");
            assert_eq!(f.publish(), expected, "{members} members");
        }
    }

    #[test]
    fn finds_one_example_per_type_and_they_decode() {
        let examples = examples(&protocol_docs()).expect("protocol docs are readable");
        for c in CODECS {
            assert!(
                examples.iter().any(|e| e.system == c.name),
                "no examples for {}",
                c.name
            );
        }
        let notice = examples
            .iter()
            .find(|e| e.system == "laptimes" && e.direction == Direction::ClientToServer)
            .expect("laptimes documents a client notice");
        assert_eq!(notice.tag, "message");
        assert_eq!(
            (codec("laptimes").unwrap().decode_client)(notice.json.as_bytes()),
            Ok(())
        );
        let error = examples
            .iter()
            .find(|e| e.system == "laptimes" && e.tag == "error")
            .expect("laptimes documents its error reply");
        let encode = (codec("laptimes").unwrap().encoder)(error.json.as_bytes()).unwrap();
        let a: Value = serde_json::from_slice(&encode()).unwrap();
        let b: Value = serde_json::from_str(&error.json).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn tagged_blocks_reads_only_websocket_directions() {
        let doc = "x\n```json client-to-server\n{\"a\":1}\n```\n```json publish\n{}\n```\n\
                   ```json server-to-client\n{\"type\":\"t\"}\n```\n";
        assert_eq!(
            tagged_blocks(doc),
            vec![
                (Direction::ClientToServer, "{\"a\":1}\n".to_string()),
                (Direction::ServerToClient, "{\"type\":\"t\"}\n".to_string()),
            ]
        );
    }
}
