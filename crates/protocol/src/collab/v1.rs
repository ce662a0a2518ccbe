//! Collab rooms, version 1: the Happy Robot project-collaboration server.
//!
//! A client is greeted with `CONNECTION_ESTABLISHED`, may name its user (`SET_USER`), joins
//! project rooms (`JOIN_PROJECT`, room `project:<projectId>`) and relays task, comment and project
//! edits to the other members of a project it has joined. Every join, leave, user change and
//! disconnect sends `USER_PRESENCE` to the project's members. Backends publish into a project with
//! `POST /broadcast`. Timestamps are JavaScript `Date.now()` numbers (milliseconds since the
//! epoch). See `docs/protocol/collab-v1.md`.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use switchboard_hub::{
    Config, ConnectionHandle, Context, Decode, Dialect, DynHub, HttpRequest, HttpResponse, Hub,
    Identity, Instant, OpenInfo, Protocol, Publication, Text, UnixTime,
};

use crate::codec;
use crate::error::DecodeError;
use crate::spec::{
    Auth, DecodedRequest, Direction, KeyRule, Options, OriginPolicy, PathPattern, Route,
    SystemSpec, MAX_STATUS_ENTRIES,
};

/// `GET /health`.
pub const HEALTH_ROUTE: Route = Route::get(PathPattern::Exact("/health"));
/// `GET /stats`: projects and their members, at most [`MAX_STATUS_ENTRIES`] projects.
pub const STATS_ROUTE: Route = Route::get(PathPattern::Exact("/stats"));
/// `POST /broadcast`: publish into a project; keyed once `COLLAB_API_KEY` is set.
pub const BROADCAST_ROUTE: Route =
    Route::publish(PathPattern::Exact("/broadcast"), KeyRule::IfConfigured);

/// The registry entry: port 3001 (`PORT`), WebSocket on `/ws`, browser origins from
/// `ALLOWED_ORIGINS`.
pub const SPEC: SystemSpec = SystemSpec {
    name: "collab",
    title: "Happy Robot collaboration rooms",
    about: "project rooms with presence; relays task, comment and project edits to the project",
    default_port: 3001,
    port_env: Some("PORT"),
    ws_path: Some("/ws"),
    auth: Auth::None,
    origins: Some(OriginPolicy {
        env: "ALLOWED_ORIGINS",
        default: "http://localhost:3000",
    }),
    api_key_env: "COLLAB_API_KEY",
    routes: &[HEALTH_ROUTE, STATS_ROUTE, BROADCAST_ROUTE],
    client_types: CLIENT_TYPES,
    server_types: SERVER_TYPES,
    round_trip,
    build,
    sse_setup,
};

/// A server-sent-event client's query as messages: a `JOIN_PROJECT` for each `projectId`
/// (in order), carrying `userId` when given. Nothing else: such a client cannot send
/// `SET_USER` or edits.
///
/// ```
/// let q = [("projectId".to_string(), "p-1".to_string()), ("userId".to_string(), "u".to_string())];
/// let setup = (switchboard_protocol::system("collab").unwrap().sse_setup)(&q);
/// assert_eq!(setup, [r#"{"projectId":"p-1","type":"JOIN_PROJECT","userId":"u"}"#]);
/// ```
pub fn sse_setup(query: &[(String, String)]) -> Vec<String> {
    let user = query.iter().find(|(k, _)| k == "userId").map(|(_, v)| v);
    query
        .iter()
        .filter(|(k, _)| k == "projectId")
        .map(|(_, project)| {
            let mut join = json!({ "type": "JOIN_PROJECT", "projectId": project });
            if let (Some(user), Value::Object(fields)) = (user, &mut join) {
                fields.insert("userId".into(), Value::String(user.clone()));
            }
            join.to_string()
        })
        .collect()
}

/// Every `type` a client may send.
pub const CLIENT_TYPES: &[&str] = &[
    "SET_USER",
    "JOIN_PROJECT",
    "LEAVE_PROJECT",
    "TASK_CREATE",
    "TASK_UPDATE",
    "TASK_DELETE",
    "COMMENT_CREATE",
    "COMMENT_UPDATE",
    "COMMENT_DELETE",
    "PROJECT_UPDATE",
];

/// Every `type` the server sends (a `POST /broadcast` may add others of the backend's choosing).
pub const SERVER_TYPES: &[&str] = &[
    "CONNECTION_ESTABLISHED",
    "USER_PRESENCE",
    "ERROR",
    "TASK_CREATE",
    "TASK_UPDATE",
    "TASK_DELETE",
    "COMMENT_CREATE",
    "COMMENT_UPDATE",
    "COMMENT_DELETE",
    "PROJECT_UPDATE",
];

/// Types only the server itself sends; `POST /broadcast` refuses them.
pub const RESERVED_TYPES: &[&str] = &["CONNECTION_ESTABLISHED", "USER_PRESENCE", "ERROR"];

/// The prefix of every project room's name: `project:<projectId>`.
pub const ROOM_PREFIX: &str = "project:";

/// The hub room of a project.
pub fn room(project_id: &str) -> String {
    let mut r = String::with_capacity(ROOM_PREFIX.len() + project_id.len());
    r.push_str(ROOM_PREFIX);
    r.push_str(project_id);
    r
}

// ---------------------------------------------------------------------------------------------
// Client -> server
// ---------------------------------------------------------------------------------------------

/// The seven project edits a client relays to the other members of a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EditKind {
    /// `TASK_CREATE`
    #[serde(rename = "TASK_CREATE")]
    TaskCreate,
    /// `TASK_UPDATE`
    #[serde(rename = "TASK_UPDATE")]
    TaskUpdate,
    /// `TASK_DELETE`
    #[serde(rename = "TASK_DELETE")]
    TaskDelete,
    /// `COMMENT_CREATE`
    #[serde(rename = "COMMENT_CREATE")]
    CommentCreate,
    /// `COMMENT_UPDATE`
    #[serde(rename = "COMMENT_UPDATE")]
    CommentUpdate,
    /// `COMMENT_DELETE`
    #[serde(rename = "COMMENT_DELETE")]
    CommentDelete,
    /// `PROJECT_UPDATE`
    #[serde(rename = "PROJECT_UPDATE")]
    ProjectUpdate,
}

impl EditKind {
    /// Every edit kind.
    pub const ALL: [EditKind; 7] = [
        EditKind::TaskCreate,
        EditKind::TaskUpdate,
        EditKind::TaskDelete,
        EditKind::CommentCreate,
        EditKind::CommentUpdate,
        EditKind::CommentDelete,
        EditKind::ProjectUpdate,
    ];

    /// The wire tag, e.g. `TASK_UPDATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            EditKind::TaskCreate => "TASK_CREATE",
            EditKind::TaskUpdate => "TASK_UPDATE",
            EditKind::TaskDelete => "TASK_DELETE",
            EditKind::CommentCreate => "COMMENT_CREATE",
            EditKind::CommentUpdate => "COMMENT_UPDATE",
            EditKind::CommentDelete => "COMMENT_DELETE",
            EditKind::ProjectUpdate => "PROJECT_UPDATE",
        }
    }

    /// The kind with wire tag `tag`.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == tag)
    }
}

/// `SET_USER`: name the user behind this connection. The id is read from `payload.userId`,
/// else from the top-level `userId`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetUser {
    /// The user id, top-level form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user id, payload form (`payload` must be an object or `null`).
    #[serde(
        default,
        deserialize_with = "codec::object_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<UserRef>,
}

/// `{"userId": ..}` inside a `SET_USER` payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl SetUser {
    /// The user id: `payload.userId` if present and non-empty, else the top-level `userId`.
    pub fn user(&self) -> Option<&str> {
        let from_payload = self.payload.as_ref().and_then(|p| p.user_id.as_deref());
        from_payload
            .filter(|u| !u.is_empty())
            .or(self.user_id.as_deref().filter(|u| !u.is_empty()))
    }
}

/// `JOIN_PROJECT`: join a project's room, optionally naming the user first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinProject {
    /// The project to join.
    pub project_id: String,
    /// The user id, set before joining when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `LEAVE_PROJECT`: leave a project's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveProject {
    /// The project to leave.
    pub project_id: String,
}

/// A task, comment or project edit, relayed to the project's other members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edit {
    /// Which edit.
    #[serde(rename = "type")]
    pub kind: EditKind,
    /// The project it belongs to; the sender must have joined it.
    pub project_id: String,
    /// The edit itself (any JSON), relayed untouched.
    pub payload: Value,
    /// The client's id for this operation, relayed untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

/// A message a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `SET_USER`
    SetUser(SetUser),
    /// `JOIN_PROJECT`
    JoinProject(JoinProject),
    /// `LEAVE_PROJECT`
    LeaveProject(LeaveProject),
    /// One of the seven edits.
    Edit(Edit),
}

// ---------------------------------------------------------------------------------------------
// Server -> client
// ---------------------------------------------------------------------------------------------

/// `CONNECTION_ESTABLISHED`: the greeting, with the id the server gave this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEstablished {
    /// `client_<unix ms>_<serial>`.
    pub client_id: String,
    /// Unix milliseconds.
    pub timestamp: u64,
}

/// `USER_PRESENCE`: who is in a project now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    /// The project and its identified members.
    pub payload: Presence,
    /// `presence-<unix ms>`.
    pub operation_id: String,
    /// Unix milliseconds.
    pub timestamp: u64,
}

/// The body of a `USER_PRESENCE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The project.
    pub project_id: String,
    /// Members that have a user id, in the order their connections opened.
    pub active_users: Vec<ActiveUser>,
    /// The length of `active_users`.
    pub user_count: usize,
}

/// One identified member of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveUser {
    /// The user id from `SET_USER` / `JOIN_PROJECT`.
    pub user_id: String,
    /// The connection's client id.
    pub client_id: String,
    /// When the connection opened (Unix milliseconds).
    pub joined_at: u64,
}

/// An edit relayed from a client, or a backend's `POST /broadcast`, as the members receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectUpdate {
    /// The message type: an edit kind, or what the backend chose.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload; `None` when the backend sent none (the key is then absent).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Value>,
    /// The operation id; absent when the sending client gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Unix milliseconds.
    pub timestamp: u64,
    /// The project (our addition to the original's shape).
    pub project_id: String,
    /// The sender's user id, or `null` (our addition to the original's shape).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `ERROR`: a reply to input the server could not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong.
    pub message: String,
    /// More detail (e.g. the decoder's explanation).
    pub details: String,
    /// The same text as `message` (the original server's field).
    pub error: String,
    /// Unix milliseconds.
    pub timestamp: u64,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `CONNECTION_ESTABLISHED`
    ConnectionEstablished(ConnectionEstablished),
    /// `USER_PRESENCE`
    UserPresence(UserPresence),
    /// An edit or a backend broadcast.
    Update(ProjectUpdate),
    /// `ERROR`
    Error(ErrorFrame),
}

// ---------------------------------------------------------------------------------------------
// HTTP publish
// ---------------------------------------------------------------------------------------------

/// The body of `POST /broadcast`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastRequest {
    /// The message type the members receive.
    #[serde(rename = "type")]
    pub kind: String,
    /// The project whose members receive it.
    pub project_id: String,
    /// The payload, relayed untouched; absent stays absent.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Value>,
    /// Defaults to `broadcast-<unix ms>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Unix milliseconds; defaults to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// The acting user; defaults to `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// A server-side publication into one project (what `POST /broadcast` carries, minus the project).
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The message type the members receive.
    pub kind: String,
    /// The payload; `None` leaves the key out.
    pub payload: Option<Value>,
    /// Defaults to `broadcast-<unix ms>`.
    pub operation_id: Option<String>,
    /// Unix milliseconds; defaults to now.
    pub timestamp: Option<u64>,
    /// The acting user; defaults to `null`.
    pub user_id: Option<String>,
}

impl BroadcastRequest {
    /// The project and the broadcast.
    pub fn into_parts(self) -> (String, Broadcast) {
        (
            self.project_id,
            Broadcast {
                kind: self.kind,
                payload: self.payload,
                operation_id: self.operation_id,
                timestamp: self.timestamp,
                user_id: self.user_id,
            },
        )
    }
}

/// Deserialize a present field (even `null`) as `Some`, so absent and `null` stay distinct.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A message with its `type` tag written first, for messages whose struct has no tag field.
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

// ---------------------------------------------------------------------------------------------
// Decode / encode
// ---------------------------------------------------------------------------------------------

use codec::non_empty;

/// Decode a client's message.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    let tag = codec::type_tag(&obj)?;
    match tag {
        "SET_USER" => {
            let m: SetUser = codec::from_object(obj)?;
            if m.user().is_none() {
                return Err(DecodeError::MissingField("userId".to_string()));
            }
            Ok(ClientMessage::SetUser(m))
        }
        "JOIN_PROJECT" => {
            let m: JoinProject = codec::from_object(obj)?;
            non_empty("projectId", &m.project_id)?;
            if let Some(u) = &m.user_id {
                non_empty("userId", u)?;
            }
            Ok(ClientMessage::JoinProject(m))
        }
        "LEAVE_PROJECT" => {
            let m: LeaveProject = codec::from_object(obj)?;
            non_empty("projectId", &m.project_id)?;
            Ok(ClientMessage::LeaveProject(m))
        }
        other => {
            if EditKind::from_tag(other).is_none() {
                return Err(DecodeError::UnknownType(other.to_string()));
            }
            let m: Edit = codec::from_object(obj)?;
            non_empty("projectId", &m.project_id)?;
            Ok(ClientMessage::Edit(m))
        }
    }
}

impl ClientMessage {
    /// Refuse a `projectId` or `userId` longer than `max_id_bytes` (what
    /// [`Options::max_id_bytes`] configures; [`decode_client`] applies no length limit).
    pub fn check_ids(&self, max_id_bytes: usize) -> Result<(), DecodeError> {
        let check = |field, id: &str| codec::check_id(field, id, max_id_bytes);
        match self {
            ClientMessage::SetUser(m) => {
                let nested = m.payload.as_ref().and_then(|p| p.user_id.as_deref());
                for user in [m.user_id.as_deref(), nested].into_iter().flatten() {
                    check("userId", user)?;
                }
                Ok(())
            }
            ClientMessage::JoinProject(m) => {
                check("projectId", &m.project_id)?;
                m.user_id.as_deref().map_or(Ok(()), |u| check("userId", u))
            }
            ClientMessage::LeaveProject(m) => check("projectId", &m.project_id),
            ClientMessage::Edit(m) => check("projectId", &m.project_id),
        }
    }
}

/// Encode a client's message (for clients written in Rust, and the tests).
pub fn encode_client(msg: &ClientMessage) -> Text {
    match msg {
        ClientMessage::SetUser(m) => tagged("SET_USER", m),
        ClientMessage::JoinProject(m) => tagged("JOIN_PROJECT", m),
        ClientMessage::LeaveProject(m) => tagged("LEAVE_PROJECT", m),
        ClientMessage::Edit(m) => codec::to_text(m),
    }
}

/// Decode a server message (for clients written in Rust, and the tests). Any type other than
/// `CONNECTION_ESTABLISHED`, `USER_PRESENCE` and `ERROR` is a [`ProjectUpdate`], since a backend's
/// `POST /broadcast` may choose its own types.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    match codec::type_tag(&obj)? {
        "CONNECTION_ESTABLISHED" => {
            codec::from_object(obj).map(ServerMessage::ConnectionEstablished)
        }
        "USER_PRESENCE" => codec::from_object(obj).map(ServerMessage::UserPresence),
        "ERROR" => codec::from_object(obj).map(ServerMessage::Error),
        _ => codec::from_object(obj).map(ServerMessage::Update),
    }
}

/// Encode a server message.
pub fn encode_server(msg: &ServerMessage) -> Text {
    match msg {
        ServerMessage::ConnectionEstablished(m) => tagged("CONNECTION_ESTABLISHED", m),
        ServerMessage::UserPresence(m) => tagged("USER_PRESENCE", m),
        ServerMessage::Update(m) => codec::to_text(m),
        ServerMessage::Error(m) => tagged("ERROR", m),
    }
}

/// Decode a `POST /broadcast` body. `type` and `projectId` must be non-empty strings
/// (else `MissingField`), `type` must not be one of [`RESERVED_TYPES`], and `userId`, when
/// given, must not be empty.
pub fn decode_broadcast(bytes: &[u8]) -> Result<BroadcastRequest, DecodeError> {
    let obj = codec::object(bytes)?;
    for field in ["type", "projectId"] {
        match obj.get(field) {
            None | Some(Value::Null) => return Err(DecodeError::MissingField(field.to_string())),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(DecodeError::MissingField(field.to_string()))
            }
            _ => {}
        }
    }
    let req: BroadcastRequest = codec::from_object(obj)?;
    if RESERVED_TYPES.contains(&req.kind.as_str()) {
        return Err(DecodeError::Invalid(format!(
            "type `{}` is reserved for the server",
            req.kind
        )));
    }
    if let Some(user) = &req.user_id {
        non_empty("userId", user)?;
    }
    Ok(req)
}

impl BroadcastRequest {
    /// Refuse a `projectId` or `userId` longer than `max_id_bytes`.
    pub fn check_ids(&self, max_id_bytes: usize) -> Result<(), DecodeError> {
        codec::check_id("projectId", &self.project_id, max_id_bytes)?;
        match &self.user_id {
            Some(user) => codec::check_id("userId", user, max_id_bytes),
            None => Ok(()),
        }
    }
}

/// Encode a `POST /broadcast` body.
pub fn encode_broadcast(req: &BroadcastRequest) -> Text {
    codec::to_text(req)
}

/// Decode and re-encode one documented example.
pub fn round_trip(dir: Direction, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Ok(match dir {
        Direction::ClientToServer => encode_client(&decode_client(bytes)?),
        Direction::ServerToClient => encode_server(&decode_server(bytes)?),
        Direction::Publish => encode_broadcast(&decode_broadcast(bytes)?),
    }
    .to_vec())
}

/// The publication a backend's broadcast into `project_id` becomes: every member of the project
/// receives one [`ProjectUpdate`], with `operationId` defaulting to `broadcast-<ms>`, `timestamp`
/// to `now` (wall-clock time) and `userId` to `null`. The caller chooses `kind`; avoid
/// [`RESERVED_TYPES`].
pub fn project_publication(project_id: &str, broadcast: &Broadcast, now: UnixTime) -> Publication {
    let ms = now.as_millis();
    let update = ProjectUpdate {
        kind: broadcast.kind.clone(),
        payload: broadcast.payload.clone(),
        operation_id: Some(
            broadcast
                .operation_id
                .clone()
                .unwrap_or_else(|| format!("broadcast-{ms}")),
        ),
        timestamp: broadcast.timestamp.unwrap_or(ms),
        project_id: project_id.to_owned(),
        user_id: broadcast.user_id.clone(),
    };
    Publication::to_room(room(project_id), codec::to_text(&update)).keep()
}

/// An `ERROR` frame, stamped `now` (wall-clock time).
pub fn error_frame(message: &str, details: &str, now: UnixTime) -> Text {
    tagged(
        "ERROR",
        &ErrorFrame {
            message: message.to_owned(),
            details: details.to_owned(),
            error: message.to_owned(),
            timestamp: now.as_millis(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Behaviour
// ---------------------------------------------------------------------------------------------

/// What a collab HTTP request asks the hub to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CollabRequest {
    /// `GET /health`.
    Health,
    /// `GET /stats`.
    Stats,
    /// `POST /broadcast`: publish into a project (defaults filled in on the hub, which knows
    /// the time).
    Broadcast {
        /// The project, checked.
        project_id: String,
        /// What to publish, checked.
        broadcast: Broadcast,
    },
}

/// The collab decoder: client frames and `POST /broadcast` bodies, decoded and checked (ids
/// capped at `options.max_id_bytes`, the key on `/broadcast`) where they arrived.
#[derive(Debug, Clone, Default)]
pub struct CollabDecoder {
    options: Arc<Options>,
}

impl CollabDecoder {
    /// A decoder; `POST /broadcast` requires one of `options.api_keys` when any is set;
    /// project and user ids are capped at `options.max_id_bytes`.
    pub fn new(options: &Options) -> Self {
        CollabDecoder {
            options: Arc::new(options.clone()),
        }
    }

    /// `POST /broadcast`, method and key already checked.
    fn broadcast(&self, body: &[u8]) -> DecodedRequest<CollabRequest> {
        let max = self.options.max_id_bytes;
        match decode_broadcast(body).and_then(|b| b.check_ids(max).map(|()| b)) {
            Ok(b) => {
                let (project_id, broadcast) = b.into_parts();
                DecodedRequest::Apply(CollabRequest::Broadcast {
                    project_id,
                    broadcast,
                })
            }
            Err(e) => DecodedRequest::invalid(e.kind(), broadcast_error(&e)),
        }
    }
}

impl Decode for CollabDecoder {
    type Message = Result<ClientMessage, DecodeError>;
    type Request = DecodedRequest<CollabRequest>;

    /// Only v1 exists: every dialect decodes as v1.
    fn decode(&self, _: Dialect, frame: &Text) -> Self::Message {
        let max = self.options.max_id_bytes;
        decode_client(frame).and_then(|m| m.check_ids(max).map(|()| m))
    }

    fn decode_request(&self, request: HttpRequest) -> Self::Request {
        SPEC.decode_request(&self.options, &request, |route, _| match route.path {
            p if p == HEALTH_ROUTE.path => DecodedRequest::Apply(CollabRequest::Health),
            p if p == STATS_ROUTE.path => DecodedRequest::Apply(CollabRequest::Stats),
            p if p == BROADCAST_ROUTE.path => self.broadcast(&request.body),
            _ => DecodedRequest::NotFound,
        })
    }
}

/// The collab protocol.
#[derive(Debug, Default)]
pub struct Collab {
    decoder: CollabDecoder,
}

impl Collab {
    /// A collab protocol; `POST /broadcast` requires one of `options.api_keys` when any is set;
    /// project and user ids are capped at `options.max_id_bytes`.
    pub fn new(options: &Options) -> Self {
        Collab {
            decoder: CollabDecoder::new(options),
        }
    }
}

fn build(options: &Options, config: Config, now: Instant) -> Box<dyn DynHub> {
    Box::new(Hub::new(config, Collab::new(options), now))
}

/// Reply with an `ERROR` to the sender alone.
fn reject(cx: &mut Context<'_>, conn: ConnectionHandle, message: &str, details: &str) {
    let frame = error_frame(message, details, cx.wall_clock());
    cx.send(conn, frame);
}

/// Send `USER_PRESENCE` for `project_id` to this node's members of it: its identified members
/// on every node of the cluster, in the order their connections opened. Each node tells its own
/// members, so the publication never leaves this node.
fn announce_presence(cx: &mut Context<'_>, project_id: &str) {
    let room = room(project_id);
    if cx.room_members(&room).next().is_none() {
        return; // Nobody here to tell.
    }
    // (joined at, this node's serial or 0 for another node's, the user)
    let mut members: Vec<(u64, u64, ActiveUser)> = cx
        .room_members(&room)
        .filter_map(|m| {
            let user = m.identity?.user.clone();
            Some((
                cx.wall_millis_at(m.opened_at),
                m.handle.serial(),
                ActiveUser {
                    user_id: user,
                    client_id: m.client_id.to_owned(),
                    joined_at: cx.wall_millis_at(m.opened_at),
                },
            ))
        })
        .collect();
    let local = members.len();
    members.extend(cx.remote_members(&room).filter_map(|m| {
        let user = m.user.clone()?;
        Some((
            m.joined_at,
            0,
            ActiveUser {
                user_id: user,
                client_id: m.client_id.clone(),
                joined_at: m.joined_at,
            },
        ))
    }));
    if members.len() == local {
        // One node: the order the connections opened in here.
        members.sort_unstable_by_key(|(_, serial, _)| *serial);
    } else {
        members.sort_by(|a, b| (a.0, a.1, &a.2.client_id).cmp(&(b.0, b.1, &b.2.client_id)));
    }
    let active_users: Vec<ActiveUser> = members.into_iter().map(|(_, _, u)| u).collect();
    let ms = cx.wall_clock().as_millis();
    let presence = UserPresence {
        payload: Presence {
            project_id: project_id.to_owned(),
            user_count: active_users.len(),
            active_users,
        },
        operation_id: format!("presence-{ms}"),
        timestamp: ms,
    };
    cx.publish_here(Publication::to_room(
        room,
        tagged("USER_PRESENCE", &presence),
    ));
}

impl Protocol for Collab {
    type Decoder = CollabDecoder;

    fn name(&self) -> &'static str {
        "collab"
    }

    fn decoder(&self) -> CollabDecoder {
        self.decoder.clone()
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, _info: &OpenInfo) {
        let ms = cx.wall_clock().as_millis();
        let client_id = self
            .decoder
            .options
            .client_id(format!("client_{ms}_{}", conn.serial()));
        let hello = ConnectionEstablished {
            client_id: client_id.clone(),
            timestamp: ms,
        };
        cx.set_client_id(conn, client_id);
        cx.send(conn, tagged("CONNECTION_ESTABLISHED", &hello));
    }

    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: Result<ClientMessage, DecodeError>,
    ) {
        let msg = match message {
            Ok(m) => m,
            Err(e) => {
                cx.count_error(e.kind());
                let message = match e {
                    DecodeError::UnknownType(_) => "Unknown message type",
                    _ => "Invalid message format",
                };
                reject(cx, conn, message, &e.to_string());
                return;
            }
        };
        match msg {
            ClientMessage::SetUser(m) => {
                // decode_client guarantees a user id.
                let Some(user) = m.user() else { return };
                cx.set_identity(conn, Identity::user(user));
                let projects: Vec<String> = cx
                    .rooms_of(conn)
                    .iter()
                    .filter_map(|r| r.strip_prefix(ROOM_PREFIX))
                    .map(ToOwned::to_owned)
                    .collect();
                for p in projects {
                    announce_presence(cx, &p);
                }
            }
            ClientMessage::JoinProject(m) => {
                if let Some(user) = m.user_id {
                    cx.set_identity(conn, Identity::user(user));
                }
                match cx.join(conn, &room(&m.project_id)) {
                    Ok(_) => announce_presence(cx, &m.project_id),
                    Err(e) => {
                        cx.count_error("join_refused");
                        let details = format!("could not join project `{}`", m.project_id);
                        reject(cx, conn, &e.to_string(), &details);
                    }
                }
            }
            ClientMessage::LeaveProject(m) => {
                if cx.leave(conn, &room(&m.project_id)) {
                    announce_presence(cx, &m.project_id);
                }
            }
            ClientMessage::Edit(m) => {
                let room = room(&m.project_id);
                if !cx.is_member(conn, &room) {
                    cx.count_error("not_a_member");
                    let details = format!(
                        "send JOIN_PROJECT for `{}` before {}",
                        m.project_id,
                        m.kind.as_str()
                    );
                    reject(cx, conn, "Not a member of this project", &details);
                    return;
                }
                let update = ProjectUpdate {
                    kind: m.kind.as_str().to_owned(),
                    payload: Some(m.payload),
                    operation_id: m.operation_id,
                    timestamp: cx.wall_clock().as_millis(),
                    project_id: m.project_id,
                    user_id: cx.identity(conn).map(|i| i.user.clone()),
                };
                cx.publish(
                    Publication::to_room(room, codec::to_text(&update))
                        .except(conn)
                        .keep(),
                );
            }
        }
    }

    fn shares_members(&self) -> bool {
        true
    }

    fn on_members_changed(&mut self, cx: &mut Context<'_>, room: &str) {
        if let Some(project) = room.strip_prefix(ROOM_PREFIX) {
            announce_presence(cx, project);
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _conn: ConnectionHandle, rooms: &[String]) {
        for r in rooms {
            if let Some(p) = r.strip_prefix(ROOM_PREFIX) {
                announce_presence(cx, p);
            }
        }
    }

    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: DecodedRequest<CollabRequest>,
    ) -> Option<HttpResponse> {
        Some(match request.accept(cx) {
            Ok(CollabRequest::Health) => health(cx),
            Ok(CollabRequest::Stats) => stats(cx),
            Ok(CollabRequest::Broadcast {
                project_id,
                broadcast,
            }) => broadcast_into(cx, &project_id, &broadcast),
            Err(answer) => return answer,
        })
    }
}

fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse::json(status, codec::to_text(body))
}

/// Every project room with its members on every node: this node's count plus the others'.
fn project_rooms<'a>(cx: &'a Context<'_>) -> BTreeMap<&'a str, u64> {
    let mut rooms: BTreeMap<&str, u64> = BTreeMap::new();
    let local = cx.rooms().map(|(r, n)| (r, n as u64));
    for (room, members) in local.chain(cx.remote_rooms()) {
        if room.starts_with(ROOM_PREFIX) {
            *rooms.entry(room).or_default() += members;
        }
    }
    rooms
}

/// Open connections on every node (this one, and the others' last summaries).
fn client_count(cx: &Context<'_>) -> u64 {
    let remote: u64 = cx.remote_nodes().map(|n| n.connections).sum();
    cx.stats().connections as u64 + remote
}

fn health(cx: &Context<'_>) -> HttpResponse {
    json_response(
        200,
        &json!({
            "status": "healthy",
            "timestamp": cx.wall_clock().as_millis(),
            "clients": client_count(cx),
            "projects": project_rooms(cx).len(),
            "uptime": cx.uptime().as_secs_f64(),
        }),
    )
}

/// `GET /stats`: every project, or the [`MAX_STATUS_ENTRIES`] with the most members (ties by
/// id) and `"truncated": true`; the totals count everything. On a cluster, every node's
/// members (each node's first [`switchboard_hub::cluster::MAX_MEMBERS`] of a project listed).
fn stats(cx: &Context<'_>) -> HttpResponse {
    let mut rooms: Vec<(u64, &str)> = project_rooms(cx)
        .into_iter()
        .map(|(room, members)| (members, room))
        .collect();
    let total_projects = rooms.len();
    let truncated = total_projects > MAX_STATUS_ENTRIES;
    if truncated {
        let by_size = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
        rooms.select_nth_unstable_by(MAX_STATUS_ENTRIES, by_size);
        rooms.truncate(MAX_STATUS_ENTRIES);
    }
    let mut projects: BTreeMap<String, Value> = BTreeMap::new();
    for (count, room) in rooms {
        let Some(project) = room.strip_prefix(ROOM_PREFIX) else {
            continue;
        };
        // (joined at, this node's serial or 0 for another node's, client id); on one node,
        // the order the connections opened in here.
        let clustered = cx.remote_member_count(room) > 0;
        let mut members: Vec<(u64, u64, String)> = cx
            .room_members(room)
            .map(|m| {
                let at = if clustered {
                    cx.wall_millis_at(m.opened_at)
                } else {
                    0
                };
                (at, m.handle.serial(), m.client_id.to_owned())
            })
            .collect();
        members.extend(
            cx.remote_members(room)
                .map(|m| (m.joined_at, 0, m.client_id.clone())),
        );
        members.sort_unstable();
        let clients: Vec<String> = members.into_iter().map(|(_, _, id)| id).collect();
        projects.insert(
            project.to_owned(),
            json!({"clientCount": count, "clients": clients}),
        );
    }
    let mut body = json!({
        "totalClients": client_count(cx),
        "totalProjects": total_projects,
        "projectStats": projects,
    });
    if truncated {
        body["truncated"] = Value::Bool(true);
    }
    json_response(200, &body)
}

/// The 400 for a `POST /broadcast` body that could not be used.
fn broadcast_error(e: &DecodeError) -> HttpResponse {
    match e {
        DecodeError::MissingField(f) if f == "type" || f == "projectId" => json_response(
            400,
            &json!({"error": "Missing required fields: type, projectId"}),
        ),
        _ => json_response(
            400,
            &json!({"error": "Invalid broadcast body", "details": e.to_string()}),
        ),
    }
}

/// `POST /broadcast`, decoded and checked.
fn broadcast_into(cx: &mut Context<'_>, project_id: &str, broadcast: &Broadcast) -> HttpResponse {
    let members = cx.room_members(&room(project_id)).count();
    cx.publish(project_publication(project_id, broadcast, cx.wall_clock()));
    json_response(
        200,
        &json!({
            "success": true,
            "message": "Broadcast sent",
            "projectId": project_id,
            "clientCount": members,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_user_prefers_the_payload_form() {
        let m = decode_client(br#"{"type":"SET_USER","userId":"a","payload":{"userId":"b"}}"#);
        let Ok(ClientMessage::SetUser(m)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(m.user(), Some("b"));
        let m = decode_client(br#"{"type":"SET_USER","userId":"a","payload":{}}"#);
        let Ok(ClientMessage::SetUser(m)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(m.user(), Some("a"));
        assert_eq!(
            decode_client(br#"{"type":"SET_USER","payload":{"userId":""}}"#),
            Err(DecodeError::MissingField("userId".into()))
        );
    }

    #[test]
    fn decode_errors_are_typed() {
        assert!(matches!(decode_client(b"{"), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode_client(br#"{"type":"NOPE"}"#),
            Err(DecodeError::UnknownType("NOPE".into()))
        );
        assert_eq!(
            decode_client(br#"{"type":"TASK_UPDATE","projectId":"p"}"#),
            Err(DecodeError::MissingField("payload".into()))
        );
        assert_eq!(
            decode_client(br#"{"type":"JOIN_PROJECT"}"#),
            Err(DecodeError::MissingField("projectId".into()))
        );
        assert!(matches!(
            decode_client(br#"{"type":"JOIN_PROJECT","projectId":""}"#),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_client(br#"{"type":"LEAVE_PROJECT","projectId":7}"#),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn payload_null_and_absent_stay_distinct() {
        let with_null = br#"{"type":"X","projectId":"p","payload":null}"#;
        let without = br#"{"type":"X","projectId":"p"}"#;
        assert_eq!(
            decode_broadcast(with_null).unwrap().payload,
            Some(Value::Null)
        );
        assert_eq!(decode_broadcast(without).unwrap().payload, None);
        for body in [&with_null[..], &without[..]] {
            let again = round_trip(Direction::Publish, body).unwrap();
            let a: Value = serde_json::from_slice(body).unwrap();
            let b: Value = serde_json::from_slice(&again).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn broadcast_body_rules() {
        for body in [
            &br#"{"projectId":"p"}"#[..],
            br#"{"type":"","projectId":"p"}"#,
            br#"{"type":"X","projectId":null}"#,
        ] {
            assert!(matches!(
                decode_broadcast(body),
                Err(DecodeError::MissingField(_))
            ));
        }
        assert!(matches!(
            decode_broadcast(br#"{"type":"USER_PRESENCE","projectId":"p"}"#),
            Err(DecodeError::Invalid(_))
        ));
    }
}
