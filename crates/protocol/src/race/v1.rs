//! Race live updates, version 1: `{"type","data","timestamp"}` messages both ways.
//!
//! A client follows one or more race sessions (query parameter `sessionId` at connect and/or
//! `subscribe` messages); each session is the room `session:<id>`. Backends publish typed updates
//! (`lap_update`, `tire_change`, ...) with `POST /sessions/<id>/updates`, and only that session's
//! followers receive them. Clients may not publish. See `docs/protocol/race-v1.md`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_hub::{
    Config, ConnectionHandle, Context, Decode, Dialect, DynHub, HttpRequest, HttpResponse, Hub,
    Instant, OpenInfo, Protocol, Publication, Text, UnixTime,
};

use crate::codec;
use crate::error::DecodeError;
use crate::spec::{
    Auth, DecodedRequest, Direction, KeyRule, Options, PathPattern, Route, SystemSpec,
};
use crate::time::DateTime;

/// `POST /sessions/<sessionId>/updates`: publish an update; always keyed (`RACE_API_KEY`).
pub const PUBLISH_ROUTE: Route = Route::publish(
    PathPattern::Between("/sessions/", "/updates"),
    KeyRule::Required,
);
/// `GET /health`.
pub const HEALTH_ROUTE: Route = Route::get(PathPattern::Exact("/health"));

/// The registry entry: port 3000 (the seed's `VITE_WS_URL=ws://localhost:3000/ws`), path `/ws`.
pub const SPEC: SystemSpec = SystemSpec {
    name: "race",
    title: "Race live updates",
    about: "sends each session's live updates (POST /sessions/<id>/updates) to its followers",
    default_port: 3000,
    port_env: None,
    ws_path: Some("/ws"),
    auth: Auth::None,
    origins: None,
    api_key_env: "RACE_API_KEY",
    routes: &[PUBLISH_ROUTE, HEALTH_ROUTE],
    client_types: CLIENT_TYPES,
    server_types: SERVER_TYPES,
    round_trip,
    build,
    sse_setup: crate::spec::no_sse_setup,
};

/// Client message types.
pub const CLIENT_TYPES: &[&str] = &["subscribe", "unsubscribe", "ping"];
/// Server message types: the replies, then the eight update types.
pub const SERVER_TYPES: &[&str] = &[
    "subscribed",
    "unsubscribed",
    "pong",
    "error",
    "session_update",
    "driver_update",
    "position_change",
    "lap_update",
    "sector_update",
    "tire_change",
    "status_change",
    "drs_update",
];

/// The longest session id accepted, in bytes, whatever [`Options::max_id_bytes`] says: the
/// effective limit is the smaller of the two (see [`check_session_id`]).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The prefix of a session's room name: session `race-2024` is room `session:race-2024`.
pub const ROOM_PREFIX: &str = "session:";

/// The kind of a live update, as the seed's table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    /// `session_update`: session info (lap count, etc).
    SessionUpdate,
    /// `driver_update`: complete driver data.
    DriverUpdate,
    /// `position_change`: position changes.
    PositionChange,
    /// `lap_update`: lap time updates.
    LapUpdate,
    /// `sector_update`: sector time updates.
    SectorUpdate,
    /// `tire_change`: tire changes.
    TireChange,
    /// `status_change`: driver status (PIT, TRACK, OUT).
    StatusChange,
    /// `drs_update`: DRS availability.
    DrsUpdate,
}

impl UpdateType {
    /// Every update type, in the seed's order.
    pub const ALL: [UpdateType; 8] = [
        UpdateType::SessionUpdate,
        UpdateType::DriverUpdate,
        UpdateType::PositionChange,
        UpdateType::LapUpdate,
        UpdateType::SectorUpdate,
        UpdateType::TireChange,
        UpdateType::StatusChange,
        UpdateType::DrsUpdate,
    ];

    /// The wire tag, e.g. `lap_update`.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateType::SessionUpdate => "session_update",
            UpdateType::DriverUpdate => "driver_update",
            UpdateType::PositionChange => "position_change",
            UpdateType::LapUpdate => "lap_update",
            UpdateType::SectorUpdate => "sector_update",
            UpdateType::TireChange => "tire_change",
            UpdateType::StatusChange => "status_change",
            UpdateType::DrsUpdate => "drs_update",
        }
    }

    /// The update type with wire tag `tag`.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == tag)
    }
}

impl fmt::Display for UpdateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An update as a backend publishes it: the body of `POST /sessions/<id>/updates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceUpdate {
    /// What kind of update.
    #[serde(rename = "type")]
    pub kind: UpdateType,
    /// The update itself, relayed as given.
    pub data: Value,
    /// When it happened (ISO 8601); the server stamps its own time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// A client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `{"type":"subscribe","data":{"sessionId":..}}`: follow a session.
    Subscribe {
        /// The session.
        session_id: String,
        /// The client's timestamp, if it sent one (ignored).
        timestamp: Option<String>,
    },
    /// `{"type":"unsubscribe","data":{"sessionId":..}}`: stop following a session.
    Unsubscribe {
        /// The session.
        session_id: String,
        /// The client's timestamp, if it sent one (ignored).
        timestamp: Option<String>,
    },
    /// `{"type":"ping","data":{}}`: heartbeat; asks for a `pong`.
    Ping {
        /// The `data` the client sent, if any (ignored).
        data: Option<Value>,
        /// The client's timestamp, if it sent one (ignored).
        timestamp: Option<String>,
    },
}

/// A message the server sends. Every one carries a server timestamp.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The client now follows `session_id`.
    Subscribed {
        /// The session.
        session_id: String,
        /// Server time.
        timestamp: String,
    },
    /// The client no longer follows `session_id`.
    Unsubscribed {
        /// The session.
        session_id: String,
        /// Server time.
        timestamp: String,
    },
    /// The reply to a `ping`; its `data` is `{}`.
    Pong {
        /// Server time.
        timestamp: String,
    },
    /// The reply to a message the server could not accept.
    Error {
        /// What was wrong, for people.
        message: String,
        /// Detail from the decoder or the hub.
        details: String,
        /// Server time.
        timestamp: String,
    },
    /// A live update for a session the client follows.
    Update {
        /// What kind of update.
        kind: UpdateType,
        /// The update as published.
        data: Value,
        /// The publisher's timestamp, or the server's time of publishing.
        timestamp: String,
    },
}

/// `{"type":..,"data":..,"timestamp":..}` on the way out.
#[derive(Serialize)]
struct Out<'a, D> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
}

/// A `subscribe`/`unsubscribe`: `data` (an object) and an optional `timestamp`.
#[derive(Deserialize)]
struct SessionIn {
    #[serde(deserialize_with = "codec::object_only")]
    data: SessionRef<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// A ping, whose `data` may be left out.
#[derive(Deserialize)]
struct PingIn {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// A server message's `data` and required `timestamp`.
#[derive(Deserialize)]
struct ServerIn<D> {
    data: D,
    timestamp: String,
}

/// A pong: `data` is `{}` and not looked at.
#[derive(Deserialize)]
struct PongIn {
    timestamp: String,
}

#[derive(Serialize, Deserialize)]
struct SessionRef<S> {
    #[serde(rename = "sessionId")]
    session_id: S,
}

#[derive(Serialize, Deserialize)]
struct ErrorData<S> {
    message: S,
    details: S,
}

/// Serialises as `{}`.
#[derive(Serialize)]
struct Empty {}

/// The longest session id accepted with `max_id_bytes` configured: the smaller of it and
/// [`MAX_SESSION_ID_LEN`].
pub fn session_id_limit(max_id_bytes: usize) -> usize {
    max_id_bytes.min(MAX_SESSION_ID_LEN)
}

/// Check a session id: at most [`session_id_limit`]`(max_id_bytes)` bytes (else
/// [`DecodeError::IdTooLong`]), at least one, only ASCII letters, digits, `_`, `-`, `.` and `:`,
/// and at least one letter or digit (so never `.` or `..`, which every HTTP client and proxy
/// rewrites in a path).
pub fn check_session_id(id: &str, max_id_bytes: usize) -> Result<(), DecodeError> {
    codec::check_id("sessionId", id, session_id_limit(max_id_bytes))?;
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        && id.bytes().any(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid(
            "`sessionId` must be A-Z, a-z, 0-9, `_`, `-`, `.` and `:`, with at least one letter \
             or digit"
                .to_string(),
        ))
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// Whether `s` is an ISO 8601 date-time with a zone: `2024-01-01T12:00:00Z`,
/// `2024-01-01T12:00:00.123Z` or `2024-01-01T14:00:00+02:00`.
pub fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let in_range = |range: core::ops::Range<usize>, lo: u32, hi: u32| {
        digits(&b[range]).is_some_and(|n| (lo..=hi).contains(&n))
    };
    if !(in_range(0..4, 0, 9999)
        && in_range(5..7, 1, 12)
        && in_range(8..10, 1, 31)
        && in_range(11..13, 0, 23)
        && in_range(14..16, 0, 59)
        && in_range(17..19, 0, 60))
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            digits(&[*h1, *h2]).is_some_and(|h| h <= 23)
                && digits(&[*m1, *m2]).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

fn client_may_not_publish(tag: &str) -> DecodeError {
    DecodeError::Invalid(format!(
        "`{tag}` is an update type: clients may not publish updates \
         (backends use POST /sessions/<sessionId>/updates)"
    ))
}

/// Decode a client frame.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?.to_string();
    match tag.as_str() {
        "subscribe" | "unsubscribe" => {
            let subscribe = tag == "subscribe";
            let m: SessionIn = codec::from_object(obj)?;
            check_session_id(&m.data.session_id, MAX_SESSION_ID_LEN)?;
            let (session_id, timestamp) = (m.data.session_id, m.timestamp);
            Ok(if subscribe {
                ClientMessage::Subscribe {
                    session_id,
                    timestamp,
                }
            } else {
                ClientMessage::Unsubscribe {
                    session_id,
                    timestamp,
                }
            })
        }
        "ping" => {
            let m: PingIn = codec::from_object(obj)?;
            Ok(ClientMessage::Ping {
                data: m.data,
                timestamp: m.timestamp,
            })
        }
        t if UpdateType::from_tag(t).is_some() => Err(client_may_not_publish(t)),
        t => Err(DecodeError::UnknownType(t.to_string())),
    }
}

impl ClientMessage {
    /// The session a `subscribe` or `unsubscribe` names.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            ClientMessage::Subscribe { session_id, .. }
            | ClientMessage::Unsubscribe { session_id, .. } => Some(session_id),
            ClientMessage::Ping { .. } => None,
        }
    }

    /// Refuse a session id longer than [`session_id_limit`]`(max_id_bytes)`.
    /// ([`decode_client`] applies [`MAX_SESSION_ID_LEN`] only.)
    pub fn check_ids(&self, max_id_bytes: usize) -> Result<(), DecodeError> {
        match self.session_id() {
            Some(id) => check_session_id(id, max_id_bytes),
            None => Ok(()),
        }
    }
}

/// Encode a client frame (for clients written in Rust, and the tests).
pub fn encode_client(msg: &ClientMessage) -> Text {
    match msg {
        ClientMessage::Subscribe {
            session_id,
            timestamp,
        }
        | ClientMessage::Unsubscribe {
            session_id,
            timestamp,
        } => codec::to_text(&Out {
            kind: if matches!(msg, ClientMessage::Subscribe { .. }) {
                "subscribe"
            } else {
                "unsubscribe"
            },
            data: SessionRef {
                session_id: session_id.as_str(),
            },
            timestamp: timestamp.as_deref(),
        }),
        ClientMessage::Ping { data, timestamp } => {
            #[derive(Serialize)]
            struct PingOut<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                data: Option<&'a Value>,
                #[serde(skip_serializing_if = "Option::is_none")]
                timestamp: Option<&'a str>,
            }
            codec::to_text(&PingOut {
                kind: "ping",
                data: data.as_ref(),
                timestamp: timestamp.as_deref(),
            })
        }
    }
}

/// Decode a server frame (for clients written in Rust, and the tests).
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?.to_string();
    match tag.as_str() {
        "subscribed" | "unsubscribed" => {
            let subscribed = tag == "subscribed";
            let m: ServerIn<SessionRef<String>> = codec::from_object(obj)?;
            let (session_id, timestamp) = (m.data.session_id, m.timestamp);
            Ok(if subscribed {
                ServerMessage::Subscribed {
                    session_id,
                    timestamp,
                }
            } else {
                ServerMessage::Unsubscribed {
                    session_id,
                    timestamp,
                }
            })
        }
        "pong" => {
            let m: PongIn = codec::from_object(obj)?;
            Ok(ServerMessage::Pong {
                timestamp: m.timestamp,
            })
        }
        "error" => {
            let m: ServerIn<ErrorData<String>> = codec::from_object(obj)?;
            Ok(ServerMessage::Error {
                message: m.data.message,
                details: m.data.details,
                timestamp: m.timestamp,
            })
        }
        t => match UpdateType::from_tag(t) {
            Some(kind) => {
                let m: ServerIn<Value> = codec::from_object(obj)?;
                Ok(ServerMessage::Update {
                    kind,
                    data: m.data,
                    timestamp: m.timestamp,
                })
            }
            None => Err(DecodeError::UnknownType(t.to_string())),
        },
    }
}

/// Encode a server frame.
pub fn encode_server(msg: &ServerMessage) -> Text {
    match msg {
        ServerMessage::Subscribed {
            session_id,
            timestamp,
        } => codec::to_text(&Out {
            kind: "subscribed",
            data: SessionRef {
                session_id: session_id.as_str(),
            },
            timestamp: Some(timestamp),
        }),
        ServerMessage::Unsubscribed {
            session_id,
            timestamp,
        } => codec::to_text(&Out {
            kind: "unsubscribed",
            data: SessionRef {
                session_id: session_id.as_str(),
            },
            timestamp: Some(timestamp),
        }),
        ServerMessage::Pong { timestamp } => codec::to_text(&Out {
            kind: "pong",
            data: Empty {},
            timestamp: Some(timestamp),
        }),
        ServerMessage::Error {
            message,
            details,
            timestamp,
        } => codec::to_text(&Out {
            kind: "error",
            data: ErrorData {
                message: message.as_str(),
                details: details.as_str(),
            },
            timestamp: Some(timestamp),
        }),
        ServerMessage::Update {
            kind,
            data,
            timestamp,
        } => codec::to_text(&Out {
            kind: kind.as_str(),
            data,
            timestamp: Some(timestamp),
        }),
    }
}

/// Decode the body of `POST /sessions/<id>/updates`.
pub fn decode_publish(bytes: &[u8]) -> Result<RaceUpdate, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?;
    if UpdateType::from_tag(tag).is_none() {
        return Err(DecodeError::UnknownType(tag.to_string()));
    }
    let update: RaceUpdate = codec::from_object(obj)?;
    if let Some(ts) = &update.timestamp {
        if !is_iso8601(ts) {
            return Err(DecodeError::Invalid(
                "`timestamp` must be ISO 8601 with a zone, e.g. 2024-01-01T12:00:00Z".to_string(),
            ));
        }
    }
    Ok(update)
}

/// Decode and re-encode one documented example.
pub fn round_trip(dir: Direction, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match dir {
        Direction::ClientToServer => decode_client(bytes).map(|m| encode_client(&m).to_vec()),
        Direction::ServerToClient => decode_server(bytes).map(|m| encode_server(&m).to_vec()),
        Direction::Publish => decode_publish(bytes).map(|u| codec::to_vec(&u)),
    }
}

/// The room of session `session_id`: `session:<id>`.
pub fn session_room(session_id: &str) -> String {
    format!("{ROOM_PREFIX}{session_id}")
}

fn now_iso(now: UnixTime) -> String {
    DateTime::from(now).iso_millis_z()
}

/// The publication of `update` to the followers of `session_id`, encoded once; the update's
/// timestamp, or `now` (wall-clock time) when it has none. For embedding Rust services and the
/// HTTP endpoint alike.
pub fn update_publication(session_id: &str, update: &RaceUpdate, now: UnixTime) -> Publication {
    let stamped;
    let timestamp = match &update.timestamp {
        Some(t) => t.as_str(),
        None => {
            stamped = now_iso(now);
            stamped.as_str()
        }
    };
    let frame = codec::to_text(&Out {
        kind: update.kind.as_str(),
        data: &update.data,
        timestamp: Some(timestamp),
    });
    Publication::to_room(session_room(session_id), frame).keep()
}

/// What a race HTTP request asks the hub to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RaceRequest {
    /// `POST /sessions/<id>/updates`: publish `update` to the session's followers (stamped with
    /// the hub's wall clock when it carries no timestamp).
    Publish {
        /// The session, checked.
        session_id: String,
        /// The update, decoded and checked.
        update: RaceUpdate,
    },
    /// `GET /health`.
    Health,
}

/// The live-update server's decoder: client frames (session ids capped at
/// [`session_id_limit`]`(options.max_id_bytes)`), and `POST /sessions/<id>/updates` checked
/// (key, session id, body) where the request arrived.
#[derive(Debug, Clone, Default)]
pub struct RaceDecoder {
    options: Arc<Options>,
}

impl RaceDecoder {
    /// A decoder; publishing requires one of `options.api_keys` and is refused (403) without
    /// any; session ids are capped at [`session_id_limit`]`(options.max_id_bytes)`.
    pub fn new(options: &Options) -> Self {
        RaceDecoder {
            options: Arc::new(options.clone()),
        }
    }

    /// `POST /sessions/<id>/updates`, method and key already checked.
    fn publish(&self, session_id: &str, body: &[u8]) -> DecodedRequest<RaceRequest> {
        if let Err(e) = check_session_id(session_id, self.options.max_id_bytes) {
            let response = codec::http_error(400, "invalid sessionId", Some(&e.to_string()));
            return DecodedRequest::invalid(e.kind(), response);
        }
        match decode_publish(body) {
            Ok(update) => DecodedRequest::Apply(RaceRequest::Publish {
                session_id: session_id.to_string(),
                update,
            }),
            Err(e) => {
                let response = codec::http_error(400, "invalid update", Some(&e.to_string()));
                DecodedRequest::invalid(e.kind(), response)
            }
        }
    }
}

impl Decode for RaceDecoder {
    type Message = Result<ClientMessage, DecodeError>;
    type Request = DecodedRequest<RaceRequest>;

    /// Only v1 exists: every dialect decodes as v1.
    fn decode(&self, _: Dialect, frame: &Text) -> Self::Message {
        let max = self.options.max_id_bytes;
        decode_client(frame).and_then(|m| m.check_ids(max).map(|()| m))
    }

    fn decode_request(&self, request: HttpRequest) -> Self::Request {
        SPEC.decode_request(&self.options, &request, |route, arg| match route.path {
            p if p == PUBLISH_ROUTE.path => self.publish(arg, &request.body),
            p if p == HEALTH_ROUTE.path => DecodedRequest::Apply(RaceRequest::Health),
            _ => DecodedRequest::NotFound,
        })
    }
}

/// The live-update server.
#[derive(Debug, Default)]
pub struct Race {
    decoder: RaceDecoder,
}

impl Race {
    /// A server; publishing requires one of `options.api_keys` and is refused (403) without
    /// any; session ids are capped at [`session_id_limit`]`(options.max_id_bytes)`.
    pub fn new(options: &Options) -> Self {
        Race {
            decoder: RaceDecoder::new(options),
        }
    }
}

fn build(options: &Options, config: Config, now: Instant) -> Box<dyn DynHub> {
    Box::new(Hub::new(config, Race::new(options), now))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    clients: usize,
    sessions: usize,
    uptime: f64,
}

#[derive(Serialize)]
struct Published<'a> {
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    delivered: usize,
}

fn send_error(cx: &mut Context<'_>, conn: ConnectionHandle, message: &str, details: String) {
    let reply = ServerMessage::Error {
        message: message.to_string(),
        details,
        timestamp: now_iso(cx.wall_clock()),
    };
    cx.send(conn, encode_server(&reply));
}

fn subscribe(cx: &mut Context<'_>, conn: ConnectionHandle, session_id: &str) {
    match cx.join(conn, &session_room(session_id)) {
        Ok(_) => {
            let reply = ServerMessage::Subscribed {
                session_id: session_id.to_string(),
                timestamp: now_iso(cx.wall_clock()),
            };
            cx.send(conn, encode_server(&reply));
        }
        Err(e) => {
            cx.count_error("room_limit");
            let details = format!("not subscribed to session `{session_id}`");
            send_error(cx, conn, &e.to_string(), details);
        }
    }
}

impl Race {
    /// `POST /sessions/<id>/updates`, decoded and checked.
    fn publish(cx: &mut Context<'_>, session_id: &str, update: &RaceUpdate) -> HttpResponse {
        let delivered = cx.publish(update_publication(session_id, update, cx.wall_clock()));
        let body = Published {
            session_id,
            delivered,
        };
        HttpResponse::json(202, codec::to_text(&body))
    }

    fn health(cx: &Context<'_>) -> HttpResponse {
        let health = Health {
            status: "ok",
            clients: cx.connections().count(),
            sessions: cx
                .rooms()
                .filter(|(name, members)| name.starts_with(ROOM_PREFIX) && *members > 0)
                .count(),
            uptime: cx.uptime().as_millis() as f64 / 1000.0,
        };
        HttpResponse::json(200, codec::to_text(&health))
    }
}

impl Protocol for Race {
    type Decoder = RaceDecoder;

    fn name(&self) -> &'static str {
        "race"
    }

    fn decoder(&self) -> RaceDecoder {
        self.decoder.clone()
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, info: &OpenInfo) {
        let max = self.decoder.options.max_id_bytes;
        for (_, id) in info.query.iter().filter(|(k, _)| k == "sessionId") {
            if id.is_empty() {
                continue; // `?sessionId=` picks nothing.
            }
            match check_session_id(id, max) {
                Ok(()) => subscribe(cx, conn, id),
                Err(e) => {
                    cx.count_error(e.kind());
                    send_error(cx, conn, "Invalid sessionId", e.to_string());
                }
            }
        }
    }

    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: Result<ClientMessage, DecodeError>,
    ) {
        match message {
            Ok(ClientMessage::Subscribe { session_id, .. }) => subscribe(cx, conn, &session_id),
            Ok(ClientMessage::Unsubscribe { session_id, .. }) => {
                cx.leave(conn, &session_room(&session_id));
                let reply = ServerMessage::Unsubscribed {
                    session_id,
                    timestamp: now_iso(cx.wall_clock()),
                };
                cx.send(conn, encode_server(&reply));
            }
            Ok(ClientMessage::Ping { .. }) => {
                let reply = ServerMessage::Pong {
                    timestamp: now_iso(cx.wall_clock()),
                };
                cx.send(conn, encode_server(&reply));
            }
            Err(e) => {
                cx.count_error(e.kind());
                send_error(cx, conn, "Invalid message", e.to_string());
            }
        }
    }

    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: DecodedRequest<RaceRequest>,
    ) -> Option<HttpResponse> {
        Some(match request.accept(cx) {
            Ok(RaceRequest::Publish { session_id, update }) => {
                Self::publish(cx, &session_id, &update)
            }
            Ok(RaceRequest::Health) => Self::health(cx),
            Err(answer) => return answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_tags_match_the_table() {
        for t in UpdateType::ALL {
            assert_eq!(UpdateType::from_tag(t.as_str()), Some(t));
            assert_eq!(codec::to_vec(&t), format!("\"{t}\"").into_bytes());
            assert!(SERVER_TYPES.contains(&t.as_str()));
        }
        assert_eq!(UpdateType::from_tag("subscribe"), None);
    }

    #[test]
    fn timestamps() {
        for ok in [
            "2024-01-01T12:00:00Z",
            "2024-01-01T12:00:00.123Z",
            "2024-12-31T23:59:60.1+02:00",
            "2024-01-01T12:00:00-05:30",
        ] {
            assert!(is_iso8601(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T12:00:00",
            "2024-13-01T12:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T12:00:00.Z",
            "2024-01-01 12:00:00Z",
            "2024-01-01T12:00:00+0200",
            "２024-01-01T12:00:00Z",
        ] {
            assert!(!is_iso8601(bad), "{bad}");
        }
    }

    #[test]
    fn session_ids() {
        let check = |id: &str| check_session_id(id, MAX_SESSION_ID_LEN);
        assert!(check("race-2024").is_ok());
        assert!(check("2024:monaco.R_1").is_ok());
        assert!(check("..a").is_ok());
        assert!(check(&"a".repeat(MAX_SESSION_ID_LEN)).is_ok());
        let long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        for bad in [
            "",
            "a b",
            "a/b",
            "ü",
            ".",
            "..",
            "...",
            "-",
            "_:-.",
            long.as_str(),
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check(&long),
            Err(DecodeError::IdTooLong {
                field: "sessionId",
                max: 128
            })
        );
        // The configured cap applies when it is the smaller one.
        assert_eq!(session_id_limit(256), 128);
        assert_eq!(session_id_limit(16), 16);
        assert!(check_session_id(&"a".repeat(16), 16).is_ok());
        assert_eq!(
            check_session_id(&"a".repeat(17), 16),
            Err(DecodeError::IdTooLong {
                field: "sessionId",
                max: 16
            })
        );
    }

    #[test]
    fn publication_targets_the_session_room_and_stamps_time() {
        let update = RaceUpdate {
            kind: UpdateType::LapUpdate,
            data: serde_json::json!({"driverId": "VER"}),
            timestamp: None,
        };
        let now = UnixTime::from_millis(1_735_734_600_123);
        let p = update_publication("race-2024", &update, now);
        assert_eq!(
            p.target,
            switchboard_hub::Target::Room("session:race-2024".into())
        );
        assert_eq!(
            &p.payload[..],
            br#"{"type":"lap_update","data":{"driverId":"VER"},"timestamp":"2025-01-01T12:30:00.123Z"}"#
        );
    }
}
