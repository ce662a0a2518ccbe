//! The hub with its protocol type erased, for drivers that serve systems chosen at run time
//! (the registry of systems, the runtime's hub tasks): decoded messages travel as
//! [`AnyMessage`] and are handed back to the protocol that decoded them.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use crate::cluster::{ClusterTotals, Members, NodeSummary};
use crate::history::{FetchId, Fetched, HistoryError, Position, SessionId};
use crate::hub::{MessageOf, RequestOf};
use crate::output::NothingPending;
use crate::tap::TapError;
use crate::{
    CloseCode, Config, ConnectionHandle, ConnectionInfo, Decode, Dialect, Frame, HttpRequest,
    HttpResponse, Hub, IdempotencyKey, Instant, OpenError, OpenInfo, Output, Protocol, Publication,
    RateLimit, Stats, Text, UnixTime, UnknownConnection,
};

/// A decoded frame or request of some protocol, on its way to that protocol's hub.
pub type AnyMessage = Box<dyn Any + Send>;

/// A protocol's decoder with its types erased: what a connection task or HTTP handler holds to
/// decode on its own thread.
pub trait DynDecode: Send + Sync {
    /// Decode a text frame from a connection speaking `dialect`.
    fn decode(&self, dialect: Dialect, frame: &Text) -> AnyMessage;
    /// Decode a text frame as [`crate::decode_frame`] does (a v2 envelope first).
    fn decode_frame(&self, dialect: Dialect, frame: Text) -> Frame<AnyMessage>;
    /// Decode an HTTP request.
    fn decode_request(&self, request: HttpRequest) -> AnyMessage;
}

impl<D: Decode> DynDecode for D {
    fn decode(&self, dialect: Dialect, frame: &Text) -> AnyMessage {
        Box::new(Decode::decode(self, dialect, frame))
    }

    fn decode_frame(&self, dialect: Dialect, frame: Text) -> Frame<AnyMessage> {
        match crate::decode_frame(self, dialect, frame) {
            Frame::Decoded { len, message } => Frame::Decoded {
                len,
                message: Box::new(message),
            },
            Frame::Enveloped {
                len,
                envelope,
                message,
            } => Frame::Enveloped {
                len,
                envelope,
                message: Box::new(message),
            },
            Frame::Malformed { len, error } => Frame::Malformed { len, error },
            Frame::Text(t) => Frame::Text(t),
            Frame::Binary(b) => Frame::Binary(b),
        }
    }

    fn decode_request(&self, request: HttpRequest) -> AnyMessage {
        Box::new(Decode::decode_request(self, request))
    }
}

/// A [`Hub`] with its protocol type erased. Each method is the [`Hub`] method of the same name;
/// messages and requests must come from this hub's own [`DynHub::decoder`] (anything else is a
/// driver bug, and panics).
pub trait DynHub: Send + core::fmt::Debug {
    /// See [`Hub::protocol_name`].
    fn protocol_name(&self) -> &'static str;
    /// The protocol's decoder, to share with the threads that read this system's sockets.
    fn decoder(&self) -> Arc<dyn DynDecode>;
    /// See [`Hub::config`].
    fn config(&self) -> &Config;
    /// See [`Hub::set_wall_clock`].
    fn set_wall_clock(&mut self, now: Instant, wall: UnixTime);
    /// See [`Hub::handle_open`].
    fn handle_open(&mut self, now: Instant, info: OpenInfo) -> Result<ConnectionHandle, OpenError>;
    /// See [`Hub::handle_frame`]; a `Decoded` message must come from [`DynHub::decoder`].
    fn handle_frame(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        frame: Frame<AnyMessage>,
    ) -> Result<(), UnknownConnection>;
    /// See [`Hub::handle_activity`].
    fn handle_activity(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection>;
    /// See [`Hub::handle_flushed`].
    fn handle_flushed(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Result<(), UnknownConnection>;
    /// See [`Hub::handle_close`].
    fn handle_close(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection>;
    /// See [`Hub::handle_appended`].
    fn handle_appended(
        &mut self,
        now: Instant,
        stream: &str,
        result: Result<Position, HistoryError>,
    ) -> Result<(), NothingPending>;
    /// See [`Hub::handle_fetched`].
    fn handle_fetched(&mut self, now: Instant, id: FetchId, result: Result<Fetched, HistoryError>);
    /// See [`Hub::handle_http`].
    fn handle_http(&mut self, now: Instant, req: HttpRequest) -> Option<HttpResponse>;
    /// See [`Hub::handle_request`]; `request` must come from [`DynHub::decoder`].
    fn handle_request(&mut self, now: Instant, request: AnyMessage) -> Option<HttpResponse>;
    /// See [`Hub::handle_request_once`]; `request` must come from [`DynHub::decoder`].
    fn handle_request_once(
        &mut self,
        now: Instant,
        key: Option<IdempotencyKey>,
        request: AnyMessage,
    ) -> Option<HttpResponse>;
    /// See [`Hub::publish`].
    fn publish(&mut self, now: Instant, publication: Publication) -> usize;
    /// See [`Hub::handle_remote`].
    fn handle_remote(&mut self, now: Instant, publication: Publication) -> usize;
    /// See [`Hub::system_stream`].
    fn system_stream(&self) -> Option<&'static str>;
    /// See [`Hub::handle_positioned`].
    fn handle_positioned(
        &mut self,
        now: Instant,
        publication: Publication,
        position: Position,
        publisher: Option<SessionId>,
        from_here: bool,
    ) -> usize;
    /// See [`Hub::handle_history_check`].
    fn handle_history_check(&mut self, now: Instant);
    /// See [`Hub::handle_remote_members`].
    fn handle_remote_members(
        &mut self,
        now: Instant,
        node: u64,
        room: &str,
        members: Members,
        hello: bool,
    );
    /// See [`Hub::handle_cluster`].
    fn handle_cluster(&mut self, now: Instant, nodes: Vec<(u64, NodeSummary)>);
    /// See [`Hub::summary`].
    fn summary(&self) -> NodeSummary;
    /// See [`Hub::handle_resync`].
    fn handle_resync(&mut self, now: Instant);
    /// See [`Hub::cluster_totals`].
    fn cluster_totals(&self) -> ClusterTotals;
    /// See [`Hub::handle_replication_dropped`].
    fn handle_replication_dropped(&mut self, count: u64);
    /// See [`Hub::close_all`].
    fn close_all(&mut self, now: Instant, code: CloseCode, reason: &'static str);
    /// See [`Hub::poll_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
    /// See [`Hub::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// See [`Hub::poll_output`].
    fn poll_output(&mut self) -> Option<Output>;
    /// See [`Hub::stats`].
    fn stats(&self) -> Stats;
    /// The rooms with local members.
    fn room_names(&self) -> Vec<String>;
    /// The client id of an open connection.
    fn client_id(&self, conn: ConnectionHandle) -> Option<Arc<str>>;
    /// See [`Hub::connection`].
    fn connection(&self, conn: ConnectionHandle) -> Option<ConnectionInfo<'_>>;
    /// See [`Hub::rooms_of`].
    fn rooms_of(&self, conn: ConnectionHandle) -> &[String];
    /// See [`Hub::largest_rooms`].
    fn largest_rooms(&self, search: &str, limit: usize) -> (Vec<(&str, usize)>, usize);
    /// See [`Hub::oldest_connections`].
    fn oldest_connections(&self, limit: usize) -> Vec<ConnectionInfo<'_>>;
    /// See [`Hub::tap`].
    fn tap(&mut self, now: Instant, room: &str, rate: RateLimit) -> Result<(), TapError>;
    /// See [`Hub::untap`].
    fn untap(&mut self, room: &str) -> bool;
}

fn unerase<T: 'static>(message: AnyMessage, what: &str) -> T {
    match message.downcast::<T>() {
        Ok(m) => *m,
        Err(_) => panic!("a {what} decoded by another protocol's decoder reached this hub"),
    }
}

impl<P: Protocol> DynHub for Hub<P> {
    fn protocol_name(&self) -> &'static str {
        Hub::protocol_name(self)
    }

    fn decoder(&self) -> Arc<dyn DynDecode> {
        Arc::new(Hub::decoder(self).clone())
    }

    fn config(&self) -> &Config {
        Hub::config(self)
    }

    fn set_wall_clock(&mut self, now: Instant, wall: UnixTime) {
        Hub::set_wall_clock(self, now, wall);
    }

    fn handle_open(&mut self, now: Instant, info: OpenInfo) -> Result<ConnectionHandle, OpenError> {
        Hub::handle_open(self, now, info)
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        frame: Frame<AnyMessage>,
    ) -> Result<(), UnknownConnection> {
        let frame = match frame {
            Frame::Text(t) => Frame::Text(t),
            Frame::Binary(b) => Frame::Binary(b),
            Frame::Decoded { len, message } => Frame::Decoded {
                len,
                message: unerase::<MessageOf<P>>(message, "frame"),
            },
            Frame::Enveloped {
                len,
                envelope,
                message,
            } => Frame::Enveloped {
                len,
                envelope,
                message: unerase::<MessageOf<P>>(message, "frame"),
            },
            Frame::Malformed { len, error } => Frame::Malformed { len, error },
        };
        Hub::handle_frame(self, now, conn, frame)
    }

    fn handle_activity(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection> {
        Hub::handle_activity(self, now, conn)
    }

    fn handle_flushed(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        bytes: usize,
    ) -> Result<(), UnknownConnection> {
        Hub::handle_flushed(self, now, conn, bytes)
    }

    fn handle_close(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
    ) -> Result<(), UnknownConnection> {
        Hub::handle_close(self, now, conn)
    }

    fn handle_appended(
        &mut self,
        now: Instant,
        stream: &str,
        result: Result<Position, HistoryError>,
    ) -> Result<(), NothingPending> {
        Hub::handle_appended(self, now, stream, result)
    }

    fn handle_fetched(&mut self, now: Instant, id: FetchId, result: Result<Fetched, HistoryError>) {
        Hub::handle_fetched(self, now, id, result);
    }

    fn handle_http(&mut self, now: Instant, req: HttpRequest) -> Option<HttpResponse> {
        Hub::handle_http(self, now, req)
    }

    fn handle_request(&mut self, now: Instant, request: AnyMessage) -> Option<HttpResponse> {
        let request = unerase::<RequestOf<P>>(request, "request");
        Hub::handle_request(self, now, request)
    }

    fn handle_request_once(
        &mut self,
        now: Instant,
        key: Option<IdempotencyKey>,
        request: AnyMessage,
    ) -> Option<HttpResponse> {
        let request = unerase::<RequestOf<P>>(request, "request");
        Hub::handle_request_once(self, now, key, request)
    }

    fn publish(&mut self, now: Instant, publication: Publication) -> usize {
        Hub::publish(self, now, publication)
    }

    fn handle_remote(&mut self, now: Instant, publication: Publication) -> usize {
        Hub::handle_remote(self, now, publication)
    }

    fn system_stream(&self) -> Option<&'static str> {
        Hub::system_stream(self)
    }

    fn handle_positioned(
        &mut self,
        now: Instant,
        publication: Publication,
        position: Position,
        publisher: Option<SessionId>,
        from_here: bool,
    ) -> usize {
        Hub::handle_positioned(self, now, publication, position, publisher, from_here)
    }

    fn handle_remote_members(
        &mut self,
        now: Instant,
        node: u64,
        room: &str,
        members: Members,
        hello: bool,
    ) {
        Hub::handle_remote_members(self, now, node, room, members, hello)
    }

    fn handle_cluster(&mut self, now: Instant, nodes: Vec<(u64, NodeSummary)>) {
        Hub::handle_cluster(self, now, nodes)
    }

    fn summary(&self) -> NodeSummary {
        Hub::summary(self)
    }

    fn handle_resync(&mut self, now: Instant) {
        Hub::handle_resync(self, now)
    }

    fn cluster_totals(&self) -> ClusterTotals {
        Hub::cluster_totals(self)
    }

    fn handle_history_check(&mut self, now: Instant) {
        Hub::handle_history_check(self, now);
    }

    fn handle_replication_dropped(&mut self, count: u64) {
        Hub::handle_replication_dropped(self, count);
    }

    fn close_all(&mut self, now: Instant, code: CloseCode, reason: &'static str) {
        Hub::close_all(self, now, code, reason);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Hub::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Hub::handle_timeout(self, now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        Hub::poll_output(self)
    }

    fn stats(&self) -> Stats {
        Hub::stats(self)
    }

    fn room_names(&self) -> Vec<String> {
        self.rooms().map(|(r, _)| r.to_string()).collect()
    }

    fn client_id(&self, conn: ConnectionHandle) -> Option<Arc<str>> {
        Hub::client_id(self, conn)
    }

    fn connection(&self, conn: ConnectionHandle) -> Option<ConnectionInfo<'_>> {
        Hub::connection(self, conn)
    }

    fn rooms_of(&self, conn: ConnectionHandle) -> &[String] {
        Hub::rooms_of(self, conn)
    }

    fn largest_rooms(&self, search: &str, limit: usize) -> (Vec<(&str, usize)>, usize) {
        Hub::largest_rooms(self, search, limit)
    }

    fn oldest_connections(&self, limit: usize) -> Vec<ConnectionInfo<'_>> {
        Hub::oldest_connections(self, limit)
    }

    fn tap(&mut self, now: Instant, room: &str, rate: RateLimit) -> Result<(), TapError> {
        Hub::tap(self, now, room, rate)
    }

    fn untap(&mut self, room: &str) -> bool {
        Hub::untap(self, room)
    }
}
