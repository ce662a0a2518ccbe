//! What a protocol sees of the hub during one callback.

use alloc::borrow::Cow;
use alloc::string::String;
use core::time::Duration;

use crate::cluster::{Member, NodeSummary};
use crate::output::JoinError;
use crate::state::{Core, Source};
use crate::{
    CloseCode, ConnectionHandle, ConnectionInfo, Dialect, Filter, Identity, Instant, Publication,
    Stats, Text, UnixTime,
};

/// The protocol's view of the hub during one callback: act on connections and rooms, publish,
/// and read state. Nothing here does I/O; every effect becomes hub output.
pub struct Context<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) now: Instant,
}

impl Context<'_> {
    /// The current monotonic time, as passed in by the driver.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The wall-clock time now, for stamping messages (never for timers: it may step).
    pub fn wall_clock(&self) -> UnixTime {
        self.core.wall_clock(self.now)
    }

    /// Time since the hub was created.
    pub fn uptime(&self) -> Duration {
        self.now.saturating_since(self.core.started_at)
    }

    /// Send one frame to one connection (subject to its queue limit). Returns whether it was queued.
    pub fn send(&mut self, to: ConnectionHandle, payload: impl Into<Text>) -> bool {
        self.core.send(to, payload.into())
    }

    /// Fan a publication out to local connections (and to the backplane, if replicating).
    /// Returns the number of local deliveries.
    pub fn publish(&mut self, publication: Publication) -> usize {
        self.core.publish(publication, Source::Local)
    }

    /// Fan a publication out to this node's connections only, never to other nodes (what
    /// each node computes for its own members, such as presence).
    pub fn publish_here(&mut self, publication: Publication) -> usize {
        self.core.publish(publication, Source::Remote)
    }

    /// `room`'s members on the other nodes of the cluster (at most
    /// [`crate::cluster::MAX_MEMBERS`] per node), for a protocol that shares its members.
    pub fn remote_members(&self, room: &str) -> impl Iterator<Item = &Member> + '_ {
        self.core.cluster.members(room)
    }

    /// How many members `room` has on the other nodes.
    pub fn remote_member_count(&self, room: &str) -> u64 {
        self.core.cluster.member_count(room)
    }

    /// Every room with members on another node, and how many it has there.
    pub fn remote_rooms(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.core.cluster.rooms()
    }

    /// The other live nodes' summaries (their counts and oldest clients).
    pub fn remote_nodes(&self) -> impl Iterator<Item = &NodeSummary> + '_ {
        self.core.cluster.summaries()
    }

    /// Wall-clock milliseconds at monotonic instant `at` (earlier than now): when a local
    /// connection opened, as the cluster shares it.
    pub fn wall_millis_at(&self, at: Instant) -> u64 {
        self.core.wall_millis_at(self.now, at)
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
        self.core.set_filter(conn, filter);
    }

    /// Set `conn`'s identity.
    pub fn set_identity(&mut self, conn: ConnectionHandle, identity: Identity) {
        self.core.set_identity(conn, identity);
    }

    /// `conn`'s identity, if known.
    pub fn identity(&self, conn: ConnectionHandle) -> Option<&Identity> {
        self.core.get(conn).and_then(|c| c.identity.as_deref())
    }

    /// Set the id `conn` is shown as to clients and in stats.
    pub fn set_client_id(&mut self, conn: ConnectionHandle, client_id: String) {
        if let Some(c) = self.core.get_mut(conn) {
            c.client_id = client_id.into();
        }
    }

    /// The id `conn` is shown as.
    pub fn client_id(&self, conn: ConnectionHandle) -> Option<&str> {
        self.core.get(conn).map(|c| &*c.client_id)
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

    /// The dialect `conn` speaks (chosen at open), if it is open.
    pub fn dialect(&self, conn: ConnectionHandle) -> Option<Dialect> {
        self.core.get(conn).map(|c| c.dialect)
    }
}
