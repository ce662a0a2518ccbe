//! AFC Stack events, version 1: `POST /events/<entity>-<action>` fans a JSON body out to every
//! socket as `{"type":"<entity>:<action>","payload":<body>}`.
//!
//! The seed's service has no client messages; we answer `{"type":"ping"}` with a `pong` and
//! anything else with an `error` frame to the sender alone. The event frame is assembled from
//! the request body's own bytes (validated, never re-serialised), encoded once and shared by
//! every recipient. See `docs/protocol/afc-v1.md`.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_hub::{
    Config, ConnectionHandle, Context, Decode, Dialect, DynHub, HttpRequest, HttpResponse, Hub,
    Instant, Protocol, Publication, Text,
};

use crate::codec;
use crate::error::DecodeError;
use crate::spec::{
    Auth, DecodedRequest, Direction, KeyRule, Options, PathPattern, Route, SystemSpec,
};
use crate::time::DateTime;

/// `POST /events/<entity>-<action>`: publish an event; keyed once `AFC_API_KEY` is set.
pub const EVENTS_ROUTE: Route =
    Route::publish(PathPattern::Prefix("/events/"), KeyRule::IfConfigured);
/// `GET /health`.
pub const HEALTH_ROUTE: Route = Route::get(PathPattern::Exact("/health"));

/// The stream v2 clients resume: every event.
pub const SYSTEM_STREAM: &str = "events";

/// The registry entry: `PORT`, default 4001, WebSocket on `/ws`, anyone may connect.
pub const SPEC: SystemSpec = SystemSpec {
    name: "afc",
    title: "AFC Stack event broadcaster",
    about: "fans each event a backend POSTs to /events/<entity>-<action> out to every socket",
    default_port: 4001,
    port_env: Some("PORT"),
    ws_path: Some("/ws"),
    auth: Auth::None,
    origins: None,
    api_key_env: "AFC_API_KEY",
    routes: &[EVENTS_ROUTE, HEALTH_ROUTE],
    client_types: CLIENT_TYPES,
    server_types: SERVER_TYPES,
    round_trip,
    build,
    sse_setup: crate::spec::no_sse_setup,
};

/// Client message types.
pub const CLIENT_TYPES: &[&str] = &["ping"];
/// Server message types with a fixed tag. Event frames carry `<entity>:<action>` tags, which are
/// open-ended (see [`EventType`]).
pub const SERVER_TYPES: &[&str] = &["pong", "error"];

/// Why an event could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event name is not `<entity>-<action>` made of ASCII letters, digits, `_` and `-`.
    #[error("invalid event name `{name}`: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The event name is longer than [`Options::max_id_bytes`].
    #[error("event name is longer than {max} bytes")]
    NameTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// The body is empty, not a single JSON value, or breaks
    /// [the JSON rule](crate::codec#the-json-rule).
    #[error("invalid event body: {reason}")]
    BadBody {
        /// What is wrong with it.
        reason: String,
    },
}

impl EventError {
    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::BadName { .. } => "bad_event_name",
            EventError::NameTooLong { .. } => "id_too_long",
            EventError::BadBody { .. } => "bad_event_body",
        }
    }
}

/// An event's `type`: an entity and an action, shown as `<entity>:<action>`.
///
/// Both parts are non-empty and made of ASCII letters, digits, `_` and `-`; the action contains
/// no `-` (the route name is split at its last hyphen).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType {
    entity: String,
    action: String,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

const NAME_CHARS: &str = "only ASCII letters, digits, `_` and `-` are allowed";
const NAME_SHAPE: &str = "expected `<entity>-<action>`, e.g. `todo-created`";
const NAME_EMPTY: &str = "entity and action must both be non-empty";
const TAG_SHAPE: &str = "expected `<entity>:<action>`, e.g. `todo:created`";
const ACTION_HYPHEN: &str = "the action may not contain `-`";

impl EventType {
    /// An event type from its parts.
    pub fn new(entity: &str, action: &str) -> Result<Self, EventError> {
        let bad = |reason| EventError::BadName {
            name: alloc::format!("{entity}-{action}"),
            reason,
        };
        if entity.is_empty() || action.is_empty() {
            return Err(bad(NAME_EMPTY));
        }
        if !entity.bytes().chain(action.bytes()).all(is_name_byte) {
            return Err(bad(NAME_CHARS));
        }
        if action.contains('-') {
            return Err(bad(ACTION_HYPHEN));
        }
        Ok(EventType {
            entity: entity.to_string(),
            action: action.to_string(),
        })
    }

    /// Parse the last path segment of `POST /events/<name>`: split at the last hyphen,
    /// `line-item-created` is entity `line-item`, action `created`.
    pub fn from_route(name: &str) -> Result<Self, EventError> {
        let bad = |reason| EventError::BadName {
            name: name.to_string(),
            reason,
        };
        if !name.bytes().all(is_name_byte) {
            return Err(bad(NAME_CHARS));
        }
        let (entity, action) = name.rsplit_once('-').ok_or_else(|| bad(NAME_SHAPE))?;
        if entity.is_empty() || action.is_empty() {
            return Err(bad(NAME_EMPTY));
        }
        Self::new(entity, action)
    }

    /// Parse a frame's `type` tag, `<entity>:<action>`.
    pub fn from_tag(tag: &str) -> Result<Self, EventError> {
        let (entity, action) = tag.split_once(':').ok_or_else(|| EventError::BadName {
            name: tag.to_string(),
            reason: TAG_SHAPE,
        })?;
        Self::new(entity, action)
    }

    /// The entity, e.g. `line-item`.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The action, e.g. `created`.
    pub fn action(&self) -> &str {
        &self.action
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity, self.action)
    }
}

/// A client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"ping"}`: asks for a `pong`.
    Ping,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// A published event: `{"type":"<entity>:<action>","payload":<body>}`.
    Event {
        /// The event's type.
        kind: EventType,
        /// The body the backend POSTed.
        payload: Value,
    },
    /// The reply to a ping: `{"type":"pong","payload":{"timestamp":..}}`.
    Pong {
        /// Server time, `2025-01-01T12:30:00.000Z`.
        timestamp: String,
    },
    /// The reply to a frame the server could not accept: `{"type":"error","payload":{..}}`.
    Error {
        /// What was wrong, for people.
        message: String,
        /// Detail from the decoder.
        details: String,
    },
}

/// `{"type": <tag>, "payload": <payload>}` for the fixed-tag messages.
#[derive(Serialize)]
struct Envelope<'a, P> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: P,
}

/// The `payload` of a server message, when decoding.
#[derive(Deserialize)]
struct PayloadOf<P> {
    payload: P,
}

#[derive(Serialize, Deserialize)]
struct PongPayload {
    timestamp: String,
}

#[derive(Serialize, Deserialize)]
struct ErrorPayload {
    message: String,
    details: String,
}

/// Decode a client frame.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    match codec::type_tag(&obj)? {
        "ping" => Ok(ClientMessage::Ping),
        other => Err(DecodeError::UnknownType(other.to_string())),
    }
}

/// Encode a client frame (for clients written in Rust, and the tests).
pub fn encode_client(msg: &ClientMessage) -> Text {
    match msg {
        ClientMessage::Ping => Text::from(r#"{"type":"ping"}"#),
    }
}

/// Decode a server frame (for clients written in Rust, and the tests).
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?.to_string();
    match tag.as_str() {
        "pong" => {
            let p: PayloadOf<PongPayload> = codec::from_object(obj)?;
            Ok(ServerMessage::Pong {
                timestamp: p.payload.timestamp,
            })
        }
        "error" => {
            let p: PayloadOf<ErrorPayload> = codec::from_object(obj)?;
            Ok(ServerMessage::Error {
                message: p.payload.message,
                details: p.payload.details,
            })
        }
        _ if tag.contains(':') => {
            let kind =
                EventType::from_tag(&tag).map_err(|e| DecodeError::Invalid(e.to_string()))?;
            let p: PayloadOf<Value> = codec::from_object(obj)?;
            Ok(ServerMessage::Event {
                kind,
                payload: p.payload,
            })
        }
        _ => Err(DecodeError::UnknownType(tag)),
    }
}

/// Encode a server frame.
pub fn encode_server(msg: &ServerMessage) -> Text {
    match msg {
        ServerMessage::Event { kind, payload } => {
            // A `Value` always serialises (its map keys are strings).
            let payload = serde_json::to_string(payload).expect("a Value serialises");
            event_frame(kind, &payload)
        }
        ServerMessage::Pong { timestamp } => codec::to_text(&Envelope {
            kind: "pong",
            payload: PongPayload {
                timestamp: timestamp.clone(),
            },
        }),
        ServerMessage::Error { message, details } => codec::to_text(&Envelope {
            kind: "error",
            payload: ErrorPayload {
                message: message.clone(),
                details: details.clone(),
            },
        }),
    }
}

/// JSON's insignificant whitespace.
fn is_json_ws(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The body without leading and trailing JSON whitespace, checked to be exactly one JSON value
/// under [the JSON rule](crate::codec#the-json-rule) (depth, duplicate keys).
pub fn check_body(body: &[u8]) -> Result<&str, EventError> {
    let start = body
        .iter()
        .position(|b| !is_json_ws(b))
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !is_json_ws(b))
        .map_or(start, |i| i + 1);
    let trimmed = &body[start..end];
    if trimmed.is_empty() {
        return Err(EventError::BadBody {
            reason: "empty body: send one JSON value".to_string(),
        });
    }
    // The same one-pass reader as every other decode path (it checks every string's UTF-8); the
    // value is dropped, the frame embeds the body's own bytes.
    codec::value(trimmed).map_err(|e| EventError::BadBody {
        reason: e.to_string(),
    })?;
    // One JSON value is UTF-8 throughout (its strings were checked, the rest is ASCII): this
    // cannot fail, but costs a pass, so the frame needs no check of its own.
    core::str::from_utf8(trimmed).map_err(|_| EventError::BadBody {
        reason: "not UTF-8".to_string(),
    })
}

/// `{"type":"<entity>:<action>","payload":` + `payload` + `}`; `payload` must be one JSON value.
fn event_frame(kind: &EventType, payload: &str) -> Text {
    let mut buf = String::with_capacity(
        payload.len() + kind.entity.len() + kind.action.len() + r#"{"type":":","payload":}"#.len(),
    );
    // The tag is ASCII letters, digits, `_`, `-` and one `:` (checked by `EventType::new`), so
    // quoting it needs no escapes: this is exactly its JSON string.
    buf.push_str(r#"{"type":""#);
    buf.push_str(&kind.entity);
    buf.push(':');
    buf.push_str(&kind.action);
    buf.push_str(r#"","payload":"#);
    buf.push_str(payload);
    buf.push('}');
    Text::from(buf)
}

/// The publication for `POST /events/<name>` with `body`: an event frame for every socket.
///
/// The frame embeds the body's own bytes (trimmed), so the payload keys keep their order and
/// numbers their spelling. For embedding Rust services and the HTTP endpoint alike.
pub fn event_publication(name: &str, body: &[u8]) -> Result<Publication, EventError> {
    let kind = EventType::from_route(name)?;
    let payload = check_body(body)?;
    Ok(Publication::to_all(event_frame(&kind, payload)).keep())
}

/// Decode the body of `POST /events/<name>` (any JSON value), for Rust callers and the tests.
pub fn decode_publish(body: &[u8]) -> Result<Value, DecodeError> {
    codec::value(body)
}

/// Decode and re-encode one documented example.
pub fn round_trip(dir: Direction, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match dir {
        Direction::ClientToServer => decode_client(bytes).map(|m| encode_client(&m).to_vec()),
        Direction::ServerToClient => decode_server(bytes).map(|m| encode_server(&m).to_vec()),
        Direction::Publish => decode_publish(bytes).map(|v| codec::to_vec(&v)),
    }
}

/// What an AFC HTTP request asks the hub to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AfcRequest {
    /// `POST /events/<name>`: publish this event frame (already encoded) to every socket.
    Event(Publication),
    /// `GET /health`.
    Health,
}

/// The broadcaster's decoder: client frames, and `POST /events/*` checked (key, name, body)
/// and encoded into its frame where the request arrived.
#[derive(Debug, Clone, Default)]
pub struct AfcDecoder {
    options: Arc<Options>,
}

impl AfcDecoder {
    /// A decoder; `POST /events/*` requires one of `options.api_keys` when any is set, and
    /// refuses event names longer than `options.max_id_bytes`.
    pub fn new(options: &Options) -> Self {
        AfcDecoder {
            options: Arc::new(options.clone()),
        }
    }

    /// `POST /events/<name>`, method and key already checked.
    fn event(&self, name: &str, body: &[u8]) -> DecodedRequest<AfcRequest> {
        let max = self.options.max_id_bytes;
        let checked = if name.len() > max {
            Err(EventError::NameTooLong { max })
        } else {
            event_publication(name, body)
        };
        match checked {
            Ok(p) => DecodedRequest::Apply(AfcRequest::Event(p)),
            Err(e) => {
                let error = match e {
                    EventError::BadBody { .. } => "invalid body",
                    _ => "invalid event name",
                };
                let response = codec::http_error(400, error, Some(&e.to_string()));
                DecodedRequest::invalid(e.kind(), response)
            }
        }
    }
}

impl Decode for AfcDecoder {
    type Message = Result<ClientMessage, DecodeError>;
    type Request = DecodedRequest<AfcRequest>;

    /// Only v1 exists: every dialect decodes as v1.
    fn decode(&self, _: Dialect, frame: &Text) -> Self::Message {
        decode_client(frame)
    }

    fn decode_request(&self, request: HttpRequest) -> Self::Request {
        SPEC.decode_request(&self.options, &request, |route, arg| match route.path {
            p if p == EVENTS_ROUTE.path => self.event(arg, &request.body),
            p if p == HEALTH_ROUTE.path => DecodedRequest::Apply(AfcRequest::Health),
            _ => DecodedRequest::NotFound,
        })
    }
}

/// The event broadcaster.
#[derive(Debug, Default)]
pub struct Afc {
    decoder: AfcDecoder,
}

impl Afc {
    /// A broadcaster; `POST /events/*` requires one of `options.api_keys` when any is set, and
    /// refuses event names longer than `options.max_id_bytes`.
    pub fn new(options: &Options) -> Self {
        Afc {
            decoder: AfcDecoder::new(options),
        }
    }
}

fn build(options: &Options, config: Config, now: Instant) -> Box<dyn DynHub> {
    Box::new(Hub::new(config, Afc::new(options), now))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    clients: usize,
    uptime: f64,
}

impl Afc {
    fn reply_error(cx: &mut Context<'_>, conn: ConnectionHandle, e: &DecodeError) {
        cx.count_error(e.kind());
        let message = match e {
            DecodeError::UnknownType(_) => "Unknown message type",
            _ => "Invalid message",
        };
        let mut details = e.to_string();
        if matches!(e, DecodeError::UnknownType(_)) {
            details.push_str(r#"; the only client message is {"type":"ping"}"#);
        }
        let reply = ServerMessage::Error {
            message: message.to_string(),
            details,
        };
        cx.send(conn, encode_server(&reply));
    }

    fn health(cx: &Context<'_>) -> HttpResponse {
        let health = Health {
            status: "ok",
            clients: cx.connections().count(),
            uptime: cx.uptime().as_millis() as f64 / 1000.0,
        };
        HttpResponse::json(200, codec::to_text(&health))
    }
}

impl Protocol for Afc {
    type Decoder = AfcDecoder;

    fn name(&self) -> &'static str {
        "afc"
    }

    fn decoder(&self) -> AfcDecoder {
        self.decoder.clone()
    }

    /// Every event is kept in one stream, `events` (v2 clients resume it).
    fn system_stream(&self) -> Option<&'static str> {
        Some(SYSTEM_STREAM)
    }

    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: Result<ClientMessage, DecodeError>,
    ) {
        match message {
            Ok(ClientMessage::Ping) => {
                let pong = ServerMessage::Pong {
                    timestamp: DateTime::from(cx.wall_clock()).iso_millis_z(),
                };
                cx.send(conn, encode_server(&pong));
            }
            Err(e) => Self::reply_error(cx, conn, &e),
        }
    }

    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: DecodedRequest<AfcRequest>,
    ) -> Option<HttpResponse> {
        Some(match request.accept(cx) {
            Ok(AfcRequest::Event(p)) => {
                cx.publish(p);
                HttpResponse::empty(204)
            }
            Ok(AfcRequest::Health) => Self::health(cx),
            Err(answer) => return answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_split_at_the_last_hyphen() {
        let t = EventType::from_route("line-item-created").unwrap();
        assert_eq!((t.entity(), t.action()), ("line-item", "created"));
        assert_eq!(t.to_string(), "line-item:created");
        assert_eq!(
            EventType::from_route("todo_list-updated_2")
                .unwrap()
                .to_string(),
            "todo_list:updated_2"
        );
        for bad in [
            "",
            "todo",
            "todo-",
            "-created",
            "todo-cre ated",
            "a/b-c",
            "tödo-x",
            "%41-b",
        ] {
            assert!(
                matches!(EventType::from_route(bad), Err(EventError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tags_parse_back() {
        let t = EventType::from_tag("line-item:created").unwrap();
        assert_eq!(t, EventType::from_route("line-item-created").unwrap());
        assert!(EventType::from_tag("todo").is_err());
        assert!(EventType::from_tag("a:b-c").is_err());
        assert!(EventType::from_tag("a:b:c").is_err());
    }

    #[test]
    fn frame_embeds_the_body_bytes() {
        let p = event_publication("todo-created", b"  {\"b\":1,\"a\":1.50}\n").unwrap();
        assert_eq!(
            &p.payload[..],
            br#"{"type":"todo:created","payload":{"b":1,"a":1.50}}"#
        );
        let p = event_publication("todo-deleted", b"42").unwrap();
        assert_eq!(&p.payload[..], br#"{"type":"todo:deleted","payload":42}"#);
    }

    #[test]
    fn bodies_must_be_one_json_value() {
        for bad in [
            &b""[..],
            b"  \n",
            b"{",
            b"{} {}",
            b"nope",
            b"\"\xff\"",
            b"{\"a\":1}x",
        ] {
            assert!(
                matches!(check_body(bad), Err(EventError::BadBody { .. })),
                "{bad:?}"
            );
        }
    }
}
