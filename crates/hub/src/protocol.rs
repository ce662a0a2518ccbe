//! The one interface through which a system's protocol plugs into the hub: a pure decoder that
//! runs wherever bytes arrive, and the behaviour that runs on the hub.

use alloc::boxed::Box;
use alloc::string::String;
use bytes::Bytes;

use crate::context::Context;
use crate::http::{HttpRequest, HttpResponse};
use crate::wire;
use crate::{CloseCode, ConnectionHandle, Dialect, Frame, OpenInfo, Text};

/// The pure half of a protocol: turns a client's text frame or an HTTP request into a typed
/// value. It holds no state of the hub, so drivers run it on whatever thread the bytes arrived on
/// (every core decodes) and hand the hub the result; an error is a value too, so the hub answers
/// it in order with the connection's other replies.
pub trait Decode: Clone + Send + Sync + 'static {
    /// What a text frame decodes to (typically `Result<ClientMessage, DecodeError>`).
    type Message: Send + 'static;
    /// What an HTTP request decodes to.
    type Request: Send + 'static;

    /// Decode a text frame from a connection speaking `dialect`.
    fn decode(&self, dialect: Dialect, frame: &Text) -> Self::Message;

    /// Decode an HTTP request (its body already read, within the transport's limits).
    fn decode_request(&self, request: HttpRequest) -> Self::Request;
}

/// A system's behaviour: how it greets, what its clients' messages do, what its HTTP endpoints
/// answer.
///
/// The hub calls these with a [`Context`] through which the protocol acts on the hub. Everything
/// protocol-specific (message schemas, reply shapes, room naming) lives behind this trait; the
/// hub core knows only connections, rooms, filters and fan-out rules.
pub trait Protocol: Send + 'static {
    /// The decoder, shared with every thread that reads this system's sockets.
    type Decoder: Decode;

    /// A short stable name, e.g. `"collab"`; used in logs and metrics labels.
    fn name(&self) -> &'static str;

    /// The decoder for frames and requests of this protocol.
    fn decoder(&self) -> Self::Decoder;

    /// The stream of this system's kept publications to [`crate::Target::All`] and
    /// [`crate::Target::User`], which every v2 connection gets from its open; `None` if it has
    /// none (kept publications then go to rooms only).
    fn system_stream(&self) -> Option<&'static str> {
        None
    }

    /// A connection was accepted; typically sends a greeting and applies `info` (e.g. a query
    /// parameter that picks a room).
    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, info: &OpenInfo) {
        let _ = (cx, conn, info);
    }

    /// A text frame from `conn`, decoded (within the frame-size limit and the rate limit).
    fn on_message(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnectionHandle,
        message: <Self::Decoder as Decode>::Message,
    );

    /// A binary frame arrived. By default the connection is closed with `UNSUPPORTED_DATA`
    /// (1003), as RFC 6455 suggests for a text-only endpoint.
    fn on_binary(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: &Bytes) {
        let _ = frame;
        cx.count_error("binary_frame");
        cx.close(
            conn,
            CloseCode::UNSUPPORTED_DATA,
            "binary frames are not supported; send JSON text",
        );
    }

    /// `conn` is gone; `rooms` are the rooms it was in (already left).
    fn on_close(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, rooms: &[String]) {
        let _ = (cx, conn, rooms);
    }

    /// Whether this protocol's rooms have members the other nodes of a cluster must know of
    /// (presence): the hub then announces each room's local members when they change
    /// ([`crate::Output::Members`]), and calls [`Protocol::on_members_changed`].
    fn shares_members(&self) -> bool {
        false
    }

    /// `room`'s members on other nodes changed (a node's announcement, a node gone when its
    /// lease ended), for a protocol that [shares its members](Protocol::shares_members).
    /// Read them with [`Context::remote_members`]; tell this node's own members only.
    fn on_members_changed(&mut self, cx: &mut Context<'_>, room: &str) {
        let _ = (cx, room);
    }

    /// An HTTP request on this system's port that is not a WebSocket upgrade, decoded. `None`
    /// lets the transport answer (its own `/metrics`, `/health`, or 404).
    fn on_http(
        &mut self,
        cx: &mut Context<'_>,
        request: <Self::Decoder as Decode>::Request,
    ) -> Option<HttpResponse> {
        let _ = (cx, request);
        None
    }
}

/// Decode a text frame from a connection speaking `dialect`: a v1 frame with `decoder`; a v2
/// frame's envelope first, then the message inside with `decoder`. Pure: drivers run it where
/// the bytes arrived.
pub fn decode_frame<D: Decode>(decoder: &D, dialect: Dialect, text: Text) -> Frame<D::Message> {
    let len = text.len();
    if dialect != Dialect::V2 {
        return Frame::Decoded {
            len,
            message: decoder.decode(dialect, &text),
        };
    }
    match wire::open(&text) {
        Ok((envelope, inner)) => Frame::Enveloped {
            len,
            envelope: Box::new(envelope),
            message: decoder.decode(dialect, &inner),
        },
        Err(error) => Frame::Malformed { len, error },
    }
}

/// The decoder that decodes nothing: frames reach [`Protocol::on_message`] as their [`Text`] and
/// requests as the [`HttpRequest`], for protocols that parse on the hub (tests, small embeds).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawText;

impl Decode for RawText {
    type Message = Text;
    type Request = HttpRequest;

    fn decode(&self, _: Dialect, frame: &Text) -> Text {
        frame.clone()
    }

    fn decode_request(&self, request: HttpRequest) -> HttpRequest {
        request
    }
}
