//! DCDock assignments, version 1: live assignment changes for the dock board.
//!
//! The transport verifies the HS256 JWT in `?token=` and opens the connection with the user's
//! identity; the server greets with `connection_ack`. A client may `subscribe` with a direction
//! filter (`IB`/`OB`), `unsubscribe`, and `ping`. Backends publish `assignment_created`,
//! `assignment_updated`, `assignment_deleted` (fanned out to every client whose filter matches the
//! load's direction) and `conflict_detected` (to the connections of the one user concerned) with
//! `POST /api/ws/publish`, or in-process with [`event_publication`]. Timestamps are ISO 8601
//! seconds without a zone, as Python's `datetime.utcnow().isoformat()` prints them.
//! See `docs/protocol/dcdock-v1.md`.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Context, Decode, Dialect, DynHub, Filter, HttpRequest,
    HttpResponse, Hub, Instant, OpenInfo, Protocol, Publication, Tags, Text, UnixTime,
};

use crate::codec;
use crate::error::DecodeError;
use crate::spec::{
    Auth, DecodedRequest, Direction, KeyRule, Options, PathPattern, Route, SystemSpec,
    MAX_STATUS_ENTRIES,
};
use crate::time::DateTime;

/// `POST /api/ws/publish`: publish an event; always keyed (`DCDOCK_API_KEY`).
pub const PUBLISH_ROUTE: Route =
    Route::publish(PathPattern::Exact("/api/ws/publish"), KeyRule::Required);
/// `GET /api/ws/stats`: open, as in the seed; at most [`MAX_STATUS_ENTRIES`] clients.
pub const STATS_ROUTE: Route = Route::get(PathPattern::Exact("/api/ws/stats"));

/// The stream v2 clients resume: every assignment change and conflict.
pub const SYSTEM_STREAM: &str = "assignments";

/// The registry entry: port 8000, WebSocket on `/api/ws`, JWT in `?token=` signed with
/// `DCDOCK_JWT_SECRET`.
pub const SPEC: SystemSpec = SystemSpec {
    name: "dcdock",
    title: "DCDock real-time assignment updates",
    about: "sends assignment changes to JWT-authenticated clients by load direction, conflicts to their user",
    default_port: 8000,
    port_env: None,
    ws_path: Some("/api/ws"),
    auth: Auth::JwtQuery {
        param: "token",
        secret_env: "DCDOCK_JWT_SECRET",
        user_claims: &["user_id", "sub"],
        kept_claims: &["email", "role"],
    },
    origins: None,
    api_key_env: "DCDOCK_API_KEY",
    routes: &[PUBLISH_ROUTE, STATS_ROUTE],
    client_types: CLIENT_TYPES,
    server_types: SERVER_TYPES,
    round_trip,
    build,
    sse_setup,
};

/// A server-sent-event client's query as messages: `direction` (the first one) becomes a
/// `subscribe` with that direction filter; without it the client gets every direction.
///
/// ```
/// let q = [("token".to_string(), "t".to_string()), ("direction".to_string(), "IB".to_string())];
/// let setup = (switchboard_protocol::system("dcdock").unwrap().sse_setup)(&q);
/// assert_eq!(setup, [r#"{"filters":{"direction":"IB"},"type":"subscribe"}"#]);
/// ```
pub fn sse_setup(query: &[(String, String)]) -> Vec<String> {
    query
        .iter()
        .find(|(k, _)| k == "direction")
        .map(|(_, direction)| {
            json!({ "type": "subscribe", "filters": { "direction": direction } }).to_string()
        })
        .into_iter()
        .collect()
}

/// Every `type` a client may send.
pub const CLIENT_TYPES: &[&str] = &["subscribe", "unsubscribe", "ping"];

/// Every `type` the server sends.
pub const SERVER_TYPES: &[&str] = &[
    "connection_ack",
    "subscribed",
    "unsubscribed",
    "pong",
    "assignment_created",
    "assignment_updated",
    "assignment_deleted",
    "conflict_detected",
    "error",
];

/// The filter and tag name that carries a load's direction.
pub const DIRECTION_TAG: &str = "direction";

/// The reason a connection without a verified identity is closed with (code 1008).
pub const UNAUTHENTICATED_REASON: &str = "missing or invalid token";

/// The `message` of a `connection_ack`.
pub const ACK_MESSAGE: &str = "Connected to DCDock real-time updates";

// ---------------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------------

/// A load's direction: inbound or outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadDirection {
    /// `IB`
    #[serde(rename = "IB")]
    Inbound,
    /// `OB`
    #[serde(rename = "OB")]
    Outbound,
}

impl LoadDirection {
    /// The wire form, `IB` or `OB`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadDirection::Inbound => "IB",
            LoadDirection::Outbound => "OB",
        }
    }
}

/// A record id as the backend writes it: a JSON integer (`7`) or a non-empty string (`"7"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Id {
    /// An integer id.
    Number(i64),
    /// A string id.
    Text(String),
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a non-empty string")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Id, E> {
                Ok(Id::Number(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Id, E> {
                i64::try_from(n)
                    .map(Id::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id, E> {
                if s.is_empty() {
                    return Err(E::invalid_value(serde::de::Unexpected::Str(s), &self));
                }
                Ok(Id::Text(s.to_owned()))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// What an assignment event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `CREATE`
    #[serde(rename = "CREATE")]
    Create,
    /// `UPDATE`
    #[serde(rename = "UPDATE")]
    Update,
    /// `DELETE`
    #[serde(rename = "DELETE")]
    Delete,
}

/// A subscription filter. Keys other than `direction` are accepted and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filters {
    /// Only loads in this direction; `None`: every direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<LoadDirection>,
}

impl Filters {
    /// The hub filter this subscription stands for.
    pub fn to_filter(self) -> Filter {
        match self.direction {
            Some(d) => Filter::new([(DIRECTION_TAG, d.as_str())]),
            None => Filter::any(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client -> server
// ---------------------------------------------------------------------------------------------

/// `subscribe`: replace this connection's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subscribe {
    /// The filter; absent, `null` or `{}` receives everything. Anything but an object (or
    /// `null`) is refused.
    #[serde(
        default,
        deserialize_with = "codec::object_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub filters: Option<Filters>,
}

/// A message a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage {
    /// `subscribe`
    Subscribe(Subscribe),
    /// `unsubscribe`: clear the filter.
    Unsubscribe,
    /// `ping`: ask for a `pong`.
    Ping,
}

// ---------------------------------------------------------------------------------------------
// Server -> client
// ---------------------------------------------------------------------------------------------

/// `connection_ack`: the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionAck {
    /// ISO 8601 seconds, no zone.
    pub timestamp: String,
    /// `user_<user id>_<serial>`.
    pub client_id: String,
    /// Always [`ACK_MESSAGE`].
    pub message: String,
}

/// `subscribed`: the filter now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// ISO 8601 seconds, no zone.
    pub timestamp: String,
    /// The filter applied (`{}`: everything).
    pub filters: Filters,
}

/// A reply that carries only a timestamp: `unsubscribed` and `pong`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// ISO 8601 seconds, no zone.
    pub timestamp: String,
}

/// An assignment was created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentChange {
    /// ISO 8601 seconds, no zone; filled with the current time when a publisher leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The assignment.
    pub assignment_id: Id,
    /// What happened; must agree with the message type.
    pub action: Action,
    /// Who did it.
    pub user_id: Id,
    /// Their email.
    pub user_email: String,
    /// The full assignment (before deletion, for `assignment_deleted`). `load.direction`
    /// decides which direction filters it passes.
    pub data: Map<String, Value>,
}

impl AssignmentChange {
    /// The load's direction, `data.load.direction`, if it is a string.
    pub fn direction(&self) -> Option<&str> {
        self.data
            .get("load")
            .and_then(|l| l.get(DIRECTION_TAG))
            .and_then(Value::as_str)
    }
}

/// An update lost an optimistic-locking race; sent only to the user who attempted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// ISO 8601 seconds, no zone; filled with the current time when a publisher leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The assignment.
    pub assignment_id: Id,
    /// The version stored now.
    pub current_version: i64,
    /// The version the user's update was based on.
    pub attempted_version: i64,
    /// The assignment as stored now.
    pub current_data: Map<String, Value>,
    /// A sentence for the user.
    pub message: String,
    /// The user whose update conflicted (our addition: it picks the recipients).
    pub user_id: Id,
}

/// An event a backend publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// `assignment_created` (action `CREATE`).
    AssignmentCreated(AssignmentChange),
    /// `assignment_updated` (action `UPDATE`).
    AssignmentUpdated(AssignmentChange),
    /// `assignment_deleted` (action `DELETE`).
    AssignmentDeleted(AssignmentChange),
    /// `conflict_detected`.
    ConflictDetected(Conflict),
}

impl ServerEvent {
    /// The wire type.
    pub fn type_tag(&self) -> &'static str {
        match self {
            ServerEvent::AssignmentCreated(_) => "assignment_created",
            ServerEvent::AssignmentUpdated(_) => "assignment_updated",
            ServerEvent::AssignmentDeleted(_) => "assignment_deleted",
            ServerEvent::ConflictDetected(_) => "conflict_detected",
        }
    }

    fn timestamp_mut(&mut self) -> &mut Option<String> {
        match self {
            ServerEvent::AssignmentCreated(c)
            | ServerEvent::AssignmentUpdated(c)
            | ServerEvent::AssignmentDeleted(c) => &mut c.timestamp,
            ServerEvent::ConflictDetected(c) => &mut c.timestamp,
        }
    }
}

/// `error`: a reply to a frame the server could not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// ISO 8601 seconds, no zone.
    pub timestamp: String,
    /// Always `Invalid message format`.
    pub message: String,
    /// What was wrong.
    pub details: String,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `connection_ack`
    ConnectionAck(ConnectionAck),
    /// `subscribed`
    Subscribed(Subscribed),
    /// `unsubscribed`
    Unsubscribed(Stamp),
    /// `pong`
    Pong(Stamp),
    /// One of the four published events.
    Event(ServerEvent),
    /// `error`
    Error(ErrorFrame),
}

/// A message with its `type` tag written first.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

fn tagged<T: Serialize>(kind: &str, body: &T) -> Text {
    codec::to_text(&Tagged { kind, body })
}

/// An empty body, for messages that are only a `type`.
#[derive(Serialize)]
struct Empty {}

// ---------------------------------------------------------------------------------------------
// Decode / encode
// ---------------------------------------------------------------------------------------------

/// Decode a client's message.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    match codec::type_tag(&obj)? {
        "subscribe" => codec::from_object(obj).map(ClientMessage::Subscribe),
        "unsubscribe" => Ok(ClientMessage::Unsubscribe),
        "ping" => Ok(ClientMessage::Ping),
        other => Err(DecodeError::UnknownType(other.to_string())),
    }
}

/// Encode a client's message (for clients written in Rust, and the tests).
pub fn encode_client(msg: &ClientMessage) -> Text {
    match msg {
        ClientMessage::Subscribe(m) => tagged("subscribe", m),
        ClientMessage::Unsubscribe => tagged("unsubscribe", &Empty {}),
        ClientMessage::Ping => tagged("ping", &Empty {}),
    }
}

fn assignment(
    obj: Map<String, Value>,
    expected: Action,
    tag: &str,
) -> Result<AssignmentChange, DecodeError> {
    let change: AssignmentChange = codec::from_object(obj)?;
    if change.action != expected {
        return Err(DecodeError::Invalid(format!(
            "action {:?} does not match type `{tag}`",
            change.action
        )));
    }
    Ok(change)
}

fn decode_event(obj: Map<String, Value>, tag: &str) -> Result<ServerEvent, DecodeError> {
    Ok(match tag {
        "assignment_created" => {
            ServerEvent::AssignmentCreated(assignment(obj, Action::Create, tag)?)
        }
        "assignment_updated" => {
            ServerEvent::AssignmentUpdated(assignment(obj, Action::Update, tag)?)
        }
        "assignment_deleted" => {
            ServerEvent::AssignmentDeleted(assignment(obj, Action::Delete, tag)?)
        }
        "conflict_detected" => ServerEvent::ConflictDetected(codec::from_object(obj)?),
        other => return Err(DecodeError::UnknownType(other.to_string())),
    })
}

/// Encode one event as clients receive it (with whatever timestamp it carries).
pub fn encode_event(event: &ServerEvent) -> Text {
    match event {
        ServerEvent::AssignmentCreated(c)
        | ServerEvent::AssignmentUpdated(c)
        | ServerEvent::AssignmentDeleted(c) => tagged(event.type_tag(), c),
        ServerEvent::ConflictDetected(c) => tagged(event.type_tag(), c),
    }
}

/// Decode a server message (for clients written in Rust, and the tests).
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?.to_owned();
    match tag.as_str() {
        "connection_ack" => codec::from_object(obj).map(ServerMessage::ConnectionAck),
        "subscribed" => codec::from_object(obj).map(ServerMessage::Subscribed),
        "unsubscribed" => codec::from_object(obj).map(ServerMessage::Unsubscribed),
        "pong" => codec::from_object(obj).map(ServerMessage::Pong),
        "error" => codec::from_object(obj).map(ServerMessage::Error),
        _ => decode_event(obj, &tag).map(ServerMessage::Event),
    }
}

/// Encode a server message.
pub fn encode_server(msg: &ServerMessage) -> Text {
    match msg {
        ServerMessage::ConnectionAck(m) => tagged("connection_ack", m),
        ServerMessage::Subscribed(m) => tagged("subscribed", m),
        ServerMessage::Unsubscribed(m) => tagged("unsubscribed", m),
        ServerMessage::Pong(m) => tagged("pong", m),
        ServerMessage::Event(e) => encode_event(e),
        ServerMessage::Error(m) => tagged("error", m),
    }
}

/// Decode a `POST /api/ws/publish` body: one of the four events; `timestamp` optional,
/// `user_id` required (for `conflict_detected` it picks the recipients).
pub fn decode_publish(bytes: &[u8]) -> Result<ServerEvent, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?.to_owned();
    decode_event(obj, &tag)
}

/// Decode and re-encode one documented example.
pub fn round_trip(dir: Direction, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Ok(match dir {
        Direction::ClientToServer => encode_client(&decode_client(bytes)?),
        Direction::ServerToClient => encode_server(&decode_server(bytes)?),
        Direction::Publish => encode_event(&decode_publish(bytes)?),
    }
    .to_vec())
}

/// `now` (wall-clock time) as this system writes timestamps: `2025-01-01T12:30:00`.
pub fn timestamp(now: UnixTime) -> String {
    DateTime::from(now).iso_seconds()
}

/// The publication for one event: assignment events go to every connection whose filter matches
/// the load's direction (tag `direction` = `data.load.direction`, or no tags when it has none, so
/// only unfiltered clients get it); `conflict_detected` goes to every connection of `user_id`,
/// filters not applied. A missing timestamp is filled with `now` (wall-clock time). Encoded once.
pub fn event_publication(event: &ServerEvent, now: UnixTime) -> Publication {
    let mut event = event.clone();
    let ts = event.timestamp_mut();
    if ts.is_none() {
        *ts = Some(timestamp(now));
    }
    let payload = encode_event(&event);
    match &event {
        ServerEvent::ConflictDetected(c) => {
            Publication::to_user(c.user_id.to_string(), payload).keep()
        }
        ServerEvent::AssignmentCreated(c)
        | ServerEvent::AssignmentUpdated(c)
        | ServerEvent::AssignmentDeleted(c) => {
            let tags: Tags = c
                .direction()
                .map(|d| (DIRECTION_TAG.to_owned(), d.to_owned()))
                .into_iter()
                .collect();
            Publication::to_all(payload).filtered(tags).keep()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour
// ---------------------------------------------------------------------------------------------

/// What a DCDock HTTP request asks the hub to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DcDockRequest {
    /// `POST /api/ws/publish`: publish this event (its timestamp filled in on the hub when
    /// absent).
    Publish(ServerEvent),
    /// `GET /api/ws/stats`.
    Stats,
}

/// The DCDock decoder: client frames, and `POST /api/ws/publish` checked (key, body) where the
/// request arrived.
#[derive(Debug, Clone, Default)]
pub struct DcDockDecoder {
    options: Arc<Options>,
}

impl DcDockDecoder {
    /// A decoder; `POST /api/ws/publish` is refused (403) unless `options.api_keys` has a key,
    /// and needs one of them after that.
    pub fn new(options: &Options) -> Self {
        DcDockDecoder {
            options: Arc::new(options.clone()),
        }
    }
}

/// `POST /api/ws/publish`, method and key already checked.
fn decode_publish_request(body: &[u8]) -> DecodedRequest<DcDockRequest> {
    match decode_publish(body) {
        Ok(event) => DecodedRequest::Apply(DcDockRequest::Publish(event)),
        Err(e) => {
            let response = json_response(
                400,
                &json!({"error": "Invalid event", "details": e.to_string()}),
            );
            DecodedRequest::invalid(e.kind(), response)
        }
    }
}

impl Decode for DcDockDecoder {
    type Message = Result<ClientMessage, DecodeError>;
    type Request = DecodedRequest<DcDockRequest>;

    /// Only v1 exists: every dialect decodes as v1.
    fn decode(&self, _: Dialect, frame: &Text) -> Self::Message {
        decode_client(frame)
    }

    fn decode_request(&self, request: HttpRequest) -> Self::Request {
        SPEC.decode_request(&self.options, &request, |route, _| match route.path {
            p if p == PUBLISH_ROUTE.path => decode_publish_request(&request.body),
            p if p == STATS_ROUTE.path => DecodedRequest::Apply(DcDockRequest::Stats),
            _ => DecodedRequest::NotFound,
        })
    }
}

/// The DCDock protocol.
#[derive(Debug, Default)]
pub struct DcDock {
    decoder: DcDockDecoder,
}

impl DcDock {
    /// A DCDock protocol; `POST /api/ws/publish` is refused (403) unless `options.api_keys` has
    /// a key, and needs one of them after that; user ids are capped at `options.max_id_bytes`.
    pub fn new(options: &Options) -> Self {
        DcDock {
            decoder: DcDockDecoder::new(options),
        }
    }
}

/// The close reason for a verified user id longer than the configured limit.
pub const USER_ID_TOO_LONG_REASON: &str = "user id too long";

fn build(options: &Options, config: Config, now: Instant) -> Box<dyn DynHub> {
    Box::new(Hub::new(config, DcDock::new(options), now))
}

fn filters_of(filter: &Filter) -> Map<String, Value> {
    filter
        .entries()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

impl Protocol for DcDock {
    type Decoder = DcDockDecoder;

    fn name(&self) -> &'static str {
        "dcdock"
    }

    fn decoder(&self) -> DcDockDecoder {
        self.decoder.clone()
    }

    /// Every event is kept in one stream, `assignments`, with its direction tag and, for a
    /// conflict, its user: a v2 client's replay follows its filter and identity.
    fn system_stream(&self) -> Option<&'static str> {
        Some(SYSTEM_STREAM)
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, _info: &OpenInfo) {
        let Some(user) = cx.identity(conn).map(|i| i.user.clone()) else {
            cx.count_error("unauthenticated");
            cx.close(conn, CloseCode::POLICY_VIOLATION, UNAUTHENTICATED_REASON);
            return;
        };
        // The user id becomes this connection's client id (listed by /api/ws/stats): capped like
        // every other identifier, even though a verified token carries it.
        if user.len() > self.decoder.options.max_id_bytes {
            cx.count_error("id_too_long");
            cx.close(conn, CloseCode::POLICY_VIOLATION, USER_ID_TOO_LONG_REASON);
            return;
        }
        let client_id = self
            .decoder
            .options
            .client_id(format!("user_{user}_{}", conn.serial()));
        let ack = ConnectionAck {
            timestamp: timestamp(cx.wall_clock()),
            client_id: client_id.clone(),
            message: ACK_MESSAGE.to_owned(),
        };
        cx.set_client_id(conn, client_id);
        cx.send(conn, tagged("connection_ack", &ack));
    }

    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: Result<ClientMessage, DecodeError>,
    ) {
        let ts = timestamp(cx.wall_clock());
        let reply = match message {
            Ok(ClientMessage::Subscribe(s)) => {
                let filters = s.filters.unwrap_or_default();
                cx.set_filter(conn, filters.to_filter());
                tagged(
                    "subscribed",
                    &Subscribed {
                        timestamp: ts,
                        filters,
                    },
                )
            }
            Ok(ClientMessage::Unsubscribe) => {
                cx.set_filter(conn, Filter::any());
                tagged("unsubscribed", &Stamp { timestamp: ts })
            }
            Ok(ClientMessage::Ping) => tagged("pong", &Stamp { timestamp: ts }),
            Err(e) => {
                cx.count_error(e.kind());
                tagged(
                    "error",
                    &ErrorFrame {
                        timestamp: ts,
                        message: "Invalid message format".to_owned(),
                        details: e.to_string(),
                    },
                )
            }
        };
        cx.send(conn, reply);
    }

    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: DecodedRequest<DcDockRequest>,
    ) -> Option<HttpResponse> {
        Some(match request.accept(cx) {
            Ok(DcDockRequest::Publish(event)) => {
                let delivered = cx.publish(event_publication(&event, cx.wall_clock()));
                json_response(202, &json!({ "delivered": delivered }))
            }
            Ok(DcDockRequest::Stats) => stats(cx),
            Err(answer) => return answer,
        })
    }
}

fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse::json(status, codec::to_text(body))
}

/// `GET /api/ws/stats`: connections in the order they opened, at most [`MAX_STATUS_ENTRIES`]
/// of them (the oldest) and then `"truncated": true`; `active_connections` counts them all. On
/// a cluster, every node's (from each other node's last summary: its oldest
/// [`switchboard_hub::cluster::MAX_CLIENTS`]).
fn stats(cx: &Context<'_>) -> HttpResponse {
    let mut conns: Vec<(u64, ConnectionHandle)> = cx
        .connections()
        .map(|c| (c.handle.serial(), c.handle))
        .collect();
    let remote: u64 = cx.remote_nodes().map(|n| n.connections).sum();
    let total = conns.len() as u64 + remote;
    let truncated = total > MAX_STATUS_ENTRIES as u64;
    if conns.len() > MAX_STATUS_ENTRIES {
        conns.select_nth_unstable(MAX_STATUS_ENTRIES);
        conns.truncate(MAX_STATUS_ENTRIES);
    }
    conns.sort_unstable();
    let clients: Vec<Value> = if cx.remote_nodes().next().is_none() {
        conns
            .into_iter()
            .filter_map(|(_, handle)| cx.connection(handle))
            .map(|c| json!({"client_id": c.client_id, "filters": filters_of(c.filter)}))
            .collect()
    } else {
        // Every node's oldest, by when they opened (this node's first on a tie).
        let local = conns.into_iter().filter_map(|(serial, handle)| {
            let c = cx.connection(handle)?;
            let at = cx.wall_millis_at(c.opened_at);
            let filters: Map<String, Value> = filters_of(c.filter);
            Some(((at, 0u8, serial), c.client_id.to_owned(), filters))
        });
        let others = cx.remote_nodes().flat_map(|n| n.clients.iter()).map(|c| {
            let filters: Map<String, Value> = c
                .filter
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            ((c.opened_at, 1u8, 0), c.client_id.clone(), filters)
        });
        let mut all: Vec<_> = local.chain(others).collect();
        all.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        all.truncate(MAX_STATUS_ENTRIES);
        all.into_iter()
            .map(|(_, id, filters)| json!({"client_id": id, "filters": filters}))
            .collect()
    };
    let mut body = json!({"active_connections": total, "clients": clients});
    if truncated {
        body["truncated"] = Value::Bool(true);
    }
    json_response(200, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_numbers_and_strings() {
        let n: Id = serde_json::from_str("7").unwrap();
        let s: Id = serde_json::from_str("\"u-7\"").unwrap();
        assert_eq!((n.to_string(), s.to_string()), ("7".into(), "u-7".into()));
        assert!(serde_json::from_str::<Id>("7.5").is_err());
    }

    #[test]
    fn subscribe_forms() {
        assert_eq!(
            decode_client(br#"{"type":"subscribe"}"#),
            Ok(ClientMessage::Subscribe(Subscribe { filters: None }))
        );
        let with_extra = br#"{"type":"subscribe","filters":{"direction":"OB","status":"x"}}"#;
        assert_eq!(
            decode_client(with_extra),
            Ok(ClientMessage::Subscribe(Subscribe {
                filters: Some(Filters {
                    direction: Some(LoadDirection::Outbound)
                })
            }))
        );
        assert!(matches!(
            decode_client(br#"{"type":"subscribe","filters":{"direction":"XX"}}"#),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_client(br#"{"type":"subscribe","filters":"IB"}"#),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn action_must_match_type() {
        let body = br#"{"type":"assignment_created","assignment_id":1,"action":"DELETE","user_id":1,"user_email":"a@b","data":{}}"#;
        assert!(matches!(decode_publish(body), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn publication_tags_follow_the_load_direction() {
        let mut data = Map::new();
        data.insert("load".into(), json!({"direction": "OB"}));
        let change = AssignmentChange {
            timestamp: None,
            assignment_id: Id::Number(1),
            action: Action::Update,
            user_id: Id::Number(2),
            user_email: "a@b".into(),
            data,
        };
        let p = event_publication(
            &ServerEvent::AssignmentUpdated(change.clone()),
            UnixTime::from_millis(1_735_734_600_000),
        );
        assert_eq!(p.tags, Some(alloc::vec![("direction".into(), "OB".into())]));
        let sent: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(sent["timestamp"], "2025-01-01T12:30:00");
        let bare = AssignmentChange {
            data: Map::new(),
            ..change
        };
        let p = event_publication(&ServerEvent::AssignmentDeleted(bare), UnixTime::EPOCH);
        assert_eq!(p.tags, Some(Vec::new()));
    }
}
