//! Laptimes relay, version 1: `{table, operation, timestamp}` change notices.
//!
//! A client's notice is validated, then relayed byte for byte (extra fields included) to every
//! other connected client; the sender never receives its own notice. Bad input gets an
//! `{"type":"error",...}` frame to the sender alone (the seed defines no error message; see
//! `docs/protocol/laptimes-v1.md`).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::convert::Infallible;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_hub::{
    Config, ConnectionHandle, Context, Decode, Dialect, DynHub, HttpRequest, HttpResponse, Hub,
    Instant, Protocol, Publication, Text,
};

use crate::codec;
use crate::error::DecodeError;
use crate::spec::{Auth, DecodedRequest, Direction, Options, SystemSpec};

/// The registry entry: `WS_PORT`, default 3002, upgrades accepted on any path.
pub const SPEC: SystemSpec = SystemSpec {
    name: "laptimes",
    title: "PC2 Laptimes change-notice relay",
    about: "relays each client's change notice, byte for byte, to every other client",
    default_port: 3002,
    port_env: Some("WS_PORT"),
    ws_path: None,
    auth: Auth::None,
    origins: None,
    api_key_env: "LAPTIMES_API_KEY",
    routes: &[],
    client_types: CLIENT_TYPES,
    server_types: SERVER_TYPES,
    round_trip,
    build,
    sse_setup: crate::spec::no_sse_setup,
};

/// The stream v2 clients resume: every relayed notice.
pub const SYSTEM_STREAM: &str = "all";

/// Message types with a `type` tag (only the server's error reply has one).
pub const CLIENT_TYPES: &[&str] = &[];
/// Server message types.
pub const SERVER_TYPES: &[&str] = &["error"];

/// A change notice, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// The table that changed: `cars`, `tracks`, `drivers`, `times` (others are relayed too).
    pub table: String,
    /// The kind of change; always `CHANGE` in the seed.
    pub operation: String,
    /// When the change happened (ISO 8601), as the client wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Fields beyond the documented three, relayed untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply to a frame the relay could not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: ErrorTag,
    /// What was wrong.
    pub message: String,
    /// Detail from the decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The `error` type tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorTag {
    /// `"error"`
    #[serde(rename = "error")]
    Error,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// Another client's notice, relayed.
    Change(ChangeNotice),
    /// A reply to bad input.
    Error(ErrorReply),
}

/// Decode a client's notice: [the JSON rule](crate::codec#the-json-rule), then non-empty string
/// `table` and `operation`, and a string or `null` `timestamp`.
pub fn decode_client(bytes: &[u8]) -> Result<ChangeNotice, DecodeError> {
    let obj = codec::object(bytes)?;
    let notice: ChangeNotice = codec::from_object(obj)?;
    codec::non_empty("table", &notice.table)?;
    codec::non_empty("operation", &notice.operation)?;
    Ok(notice)
}

/// Decode a server message (for clients written in Rust, and the tests).
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let obj = codec::object(bytes)?;
    if obj.get("type").and_then(Value::as_str) == Some("error") && !obj.contains_key("table") {
        codec::from_object(obj).map(ServerMessage::Error)
    } else {
        codec::from_object(obj).map(ServerMessage::Change)
    }
}

/// Encode a server message.
pub fn encode_server(msg: &ServerMessage) -> Text {
    match msg {
        ServerMessage::Change(n) => codec::to_text(n),
        ServerMessage::Error(e) => codec::to_text(e),
    }
}

/// Decode and re-encode one documented example.
pub fn round_trip(dir: Direction, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match dir {
        Direction::ClientToServer => decode_client(bytes).map(|m| codec::to_vec(&m)),
        Direction::ServerToClient => decode_server(bytes).map(|m| encode_server(&m).to_vec()),
        Direction::Publish => Err(DecodeError::UnknownType("publish".into())),
    }
}

/// The relay's decoder: checks a notice and keeps its frame for the byte-for-byte relay.
#[derive(Debug, Clone, Copy, Default)]
pub struct LaptimesDecoder;

impl Decode for LaptimesDecoder {
    /// The frame itself when it is a valid notice (relayed as it is), else why not.
    type Message = Result<Text, DecodeError>;
    /// The relay has no HTTP endpoints: every request is [`DecodedRequest::NotFound`] (or a
    /// refusal, should the route table ever list one).
    type Request = DecodedRequest<Infallible>;

    /// Only v1 exists: every dialect decodes as v1.
    fn decode(&self, _: Dialect, frame: &Text) -> Self::Message {
        decode_client(frame).map(|_| frame.clone())
    }

    fn decode_request(&self, request: HttpRequest) -> Self::Request {
        SPEC.decode_request(&Options::default(), &request, |_, _| {
            DecodedRequest::NotFound
        })
    }
}

/// The relay.
#[derive(Debug, Default)]
pub struct Laptimes;

fn build(_: &Options, config: Config, now: Instant) -> Box<dyn DynHub> {
    Box::new(Hub::new(config, Laptimes, now))
}

impl Protocol for Laptimes {
    type Decoder = LaptimesDecoder;

    fn name(&self) -> &'static str {
        "laptimes"
    }

    fn decoder(&self) -> LaptimesDecoder {
        LaptimesDecoder
    }

    /// Every notice is kept in one stream, `all` (v2 clients resume it).
    fn system_stream(&self) -> Option<&'static str> {
        Some(SYSTEM_STREAM)
    }

    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: Result<Text, DecodeError>,
    ) {
        match message {
            // Relay the client's own bytes: one buffer shared by every recipient, nothing re-encoded.
            Ok(frame) => {
                cx.publish(Publication::to_all(frame).except(conn).keep());
            }
            Err(e) => {
                cx.count_error(e.kind());
                let reply = ErrorReply {
                    kind: ErrorTag::Error,
                    message: String::from("Invalid change notice"),
                    details: Some(e.to_string()),
                };
                cx.send(conn, codec::to_text(&reply));
            }
        }
    }

    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: DecodedRequest<Infallible>,
    ) -> Option<HttpResponse> {
        match request.accept(cx) {
            Ok(never) => match never {},
            Err(answer) => answer,
        }
    }
}
