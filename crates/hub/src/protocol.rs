//! The one interface through which a system's protocol plugs into the hub.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use core::time::Duration;

use crate::hub::Core;
use crate::{
    CloseCode, ConnectionHandle, ConnectionInfo, Filter, Identity, Instant, JoinError, OpenInfo,
    Publication, Stats,
};

/// A system's behaviour: how it greets, what its clients may send, what its HTTP endpoints do.
///
/// The hub calls these with a [`Context`] through which the protocol acts on the hub. Everything
/// protocol-specific (message schemas, reply shapes, room naming) lives behind this trait; the
/// hub core knows only connections, rooms, filters and fan-out rules.
pub trait Protocol {
    /// A short stable name, e.g. `"collab"`; used in logs and metrics labels.
    fn name(&self) -> &'static str;

    /// A connection was accepted; typically sends a greeting and applies `info` (e.g. a query
    /// parameter that picks a room).
    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, info: &OpenInfo) {
        let _ = (cx, conn, info);
    }

    /// A text frame arrived from `conn` (within the frame-size limit and the rate limit).
    fn on_text(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: &Bytes);

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

    /// An HTTP request on this system's port that is not a WebSocket upgrade. `None` lets the
    /// transport answer (its own `/metrics`, `/health`, or 404).
    fn on_http(&mut self, cx: &mut Context<'_>, req: &HttpRequest) -> Option<HttpResponse> {
        let _ = (cx, req);
        None
    }
}

/// HTTP methods the hub distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Anything else.
    Other,
}

/// An HTTP request, already read in full by the transport (body bounded by the transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The path, without the query, e.g. `/events/todo-created`.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpRequest {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response for the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if there is a body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Bytes,
    /// Extra response headers (lower-case names), e.g. `("allow", "GET, HEAD")` on a 405.
    pub headers: Vec<(&'static str, String)>,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            content_type: Some("application/json"),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A response with no body.
    pub fn empty(status: u16) -> Self {
        HttpResponse {
            status,
            content_type: None,
            body: Bytes::new(),
            headers: Vec::new(),
        }
    }

    /// The same response with one more header.
    ///
    /// ```
    /// use switchboard_hub::HttpResponse;
    /// let r = HttpResponse::empty(405).with_header("allow", "POST");
    /// assert_eq!(r.header("allow"), Some("POST"));
    /// assert!(HttpResponse::empty(204).headers.is_empty());
    /// ```
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The first extra header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The protocol's view of the hub during one callback: act on connections and rooms, publish,
/// and read state. Nothing here does I/O; every effect becomes hub output.
pub struct Context<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) now: Instant,
}

impl Context<'_> {
    /// The current time, as passed in by the driver.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time since the hub was created.
    pub fn uptime(&self) -> Duration {
        self.now.saturating_since(self.core.started_at)
    }

    /// Send one frame to one connection (subject to its queue limit). Returns whether it was queued.
    pub fn send(&mut self, to: ConnectionHandle, payload: impl Into<Bytes>) -> bool {
        self.core.send(to, payload.into())
    }

    /// Fan a publication out to local connections (and to the backplane, if replicating).
    /// Returns the number of local deliveries.
    pub fn publish(&mut self, publication: Publication) -> usize {
        self.core.publish(publication, true)
    }

    /// Put `conn` in `room`. `Ok(true)` if it joined, `Ok(false)` if it was already a member.
    pub fn join(&mut self, conn: ConnectionHandle, room: &str) -> Result<bool, JoinError> {
        self.core.join(conn, room)
    }

    /// Take `conn` out of `room`. Returns whether it was a member.
    pub fn leave(&mut self, conn: ConnectionHandle, room: &str) -> bool {
        self.core.leave(conn, room)
    }

    /// Whether `conn` is in `room`.
    pub fn is_member(&self, conn: ConnectionHandle, room: &str) -> bool {
        self.core.is_member(conn, room)
    }

    /// The rooms `conn` is in, in the order it joined them.
    pub fn rooms_of(&self, conn: ConnectionHandle) -> &[String] {
        self.core.rooms_of(conn)
    }

    /// Replace `conn`'s filter.
    pub fn set_filter(&mut self, conn: ConnectionHandle, filter: Filter) {
        if let Some(c) = self.core.get_mut(conn) {
            c.filter = filter;
        }
    }

    /// Set `conn`'s identity.
    pub fn set_identity(&mut self, conn: ConnectionHandle, identity: Identity) {
        self.core.set_identity(conn, identity);
    }

    /// `conn`'s identity, if known.
    pub fn identity(&self, conn: ConnectionHandle) -> Option<&Identity> {
        self.core.get(conn).and_then(|c| c.identity.as_ref())
    }

    /// Set the id `conn` is shown as to clients and in stats.
    pub fn set_client_id(&mut self, conn: ConnectionHandle, client_id: String) {
        if let Some(c) = self.core.get_mut(conn) {
            c.client_id = client_id;
        }
    }

    /// The id `conn` is shown as.
    pub fn client_id(&self, conn: ConnectionHandle) -> Option<&str> {
        self.core.get(conn).map(|c| c.client_id.as_str())
    }

    /// Close `conn` with `code` and `reason`; it leaves all rooms at once.
    pub fn close(
        &mut self,
        conn: ConnectionHandle,
        code: CloseCode,
        reason: impl Into<Cow<'static, str>>,
    ) {
        self.core.close(conn, code, reason.into());
    }

    /// Count one protocol error of `kind` (e.g. `"not_json"`) for metrics.
    pub fn count_error(&mut self, kind: &'static str) {
        self.core.count_error(kind);
    }

    /// Every open connection.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.core.connections()
    }

    /// One connection, if open.
    pub fn connection(&self, conn: ConnectionHandle) -> Option<ConnectionInfo<'_>> {
        self.core.connection_info(conn)
    }

    /// Every non-empty room with its member count.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.core.rooms()
    }

    /// The members of `room`.
    pub fn room_members(&self, room: &str) -> impl Iterator<Item = ConnectionInfo<'_>> + '_ {
        self.core.room_members(room)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}
