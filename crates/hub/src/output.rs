//! What goes in (frames) and what comes out (outputs) besides the calls themselves, and the
//! errors a caller can get.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use bytes::Bytes;

use crate::cluster::Members;
use crate::history::{Entry, FetchId, Position};
use crate::wire::{Envelope, EnvelopeError};
use crate::{CloseCode, ConnectionHandle, Instant, Publication, Text};

/// A frame received from a connection: as it arrived, or already decoded where it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<M> {
    /// A text frame, to be decoded by the hub with the protocol's decoder.
    Text(Text),
    /// A binary frame.
    Binary(Bytes),
    /// A text frame of `len` bytes that the driver already decoded with the protocol's
    /// [`crate::Decode`] (on whatever thread the bytes arrived on).
    Decoded {
        /// Its length on the wire, for the frame-size limit and the byte counters.
        len: usize,
        /// What it decoded to.
        message: M,
    },
    /// A v2 frame already opened and decoded ([`crate::decode_frame`]): its envelope, and the
    /// message inside.
    Enveloped {
        /// Its length on the wire.
        len: usize,
        /// Its id and positions.
        envelope: Box<Envelope>,
        /// What the message inside decoded to.
        message: M,
    },
    /// A v2 frame whose envelope could not be read; the client is told why.
    Malformed {
        /// Its length on the wire.
        len: usize,
        /// Why.
        error: EnvelopeError,
    },
}

impl<M> Frame<M> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
            Frame::Decoded { len, .. }
            | Frame::Enveloped { len, .. }
            | Frame::Malformed { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Something the driver must do. Drain with [`crate::Hub::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Write `payload` as a text frame to `connection`, then report it with
    /// [`crate::Hub::handle_flushed`].
    Transmit {
        /// Recipient.
        connection: ConnectionHandle,
        /// The frame; shared with every other recipient of the same publication.
        payload: Text,
    },
    /// Write `payload` as a text frame to each of `recipients`, then report each as
    /// [`Output::Transmit`] asks: a publication's fan-out in one output, its payload shared
    /// once rather than once per recipient. The recipients are distinct, at least two, and in
    /// the order the hub took them (which matters only for the time each frame leaves).
    Fanout {
        /// The frame.
        payload: Text,
        /// Who gets it.
        recipients: Vec<ConnectionHandle>,
    },
    /// Send a WebSocket ping to `connection`.
    Ping {
        /// Recipient.
        connection: ConnectionHandle,
    },
    /// Stop reading from `connection` until `until`: it sends faster than the inbound rate
    /// ([`crate::RatePolicy::Throttle`]). Frames already on their way are still accepted (and
    /// held in order); a later `PauseReading` for the same connection moves the deadline.
    PauseReading {
        /// The connection.
        connection: ConnectionHandle,
        /// When reading may resume.
        until: Instant,
    },
    /// Close `connection` with `code` and `reason`. The hub has already let go of it; reports
    /// about it are accepted and ignored until this output is drained (see
    /// [`crate::Hub::handle_flushed`]).
    Close {
        /// The connection.
        connection: ConnectionHandle,
        /// Close code.
        code: CloseCode,
        /// Human-readable reason (at most 123 bytes on the wire; the driver truncates).
        reason: Cow<'static, str>,
    },
    /// A local publication for the cluster backplane to carry to other nodes
    /// (only when [`crate::Config::replicate`] is set). Boxed: it is the largest output, and
    /// every output is as large as the largest.
    Replicate(Box<Publication>),
    /// A room got its first local member: a backplane should start receiving its publications
    /// (only when [`crate::Config::replicate`] is set).
    RoomOpened(String),
    /// A room lost its last local member: a backplane may stop receiving its publications
    /// (only when [`crate::Config::replicate`] is set).
    RoomClosed(String),
    /// This node's members of `room` changed (none left: it has no more): a backplane tells the
    /// other nodes, which answer with [`crate::Hub::handle_remote_members`] (only when
    /// [`crate::Config::replicate`] is set and the protocol shares its members,
    /// [`crate::Protocol::shares_members`]).
    Members {
        /// The room.
        room: String,
        /// Its local members now.
        members: Members,
        /// The room just got its first local member: nodes with members of it answer with
        /// theirs.
        hello: bool,
    },
    /// Keep `entry` as the next publication of `stream` and answer with its position through
    /// [`crate::Hub::handle_appended`], in order per stream (only with
    /// [`crate::Config::history`]).
    Append {
        /// The stream.
        stream: String,
        /// What replay needs.
        entry: Arc<Entry>,
    },
    /// Fetch what a connection missed of `stream` since `since` (or only the top, without a
    /// position) and answer through [`crate::Hub::handle_fetched`] with `id`, in any order,
    /// or never (only with [`crate::Config::history`]).
    Fetch {
        /// Names the answer.
        id: FetchId,
        /// The stream.
        stream: String,
        /// Where the connection was.
        since: Option<Position>,
    },
    /// A publication to a room the driver tapped ([`crate::Hub::tap`]), sampled at the tap's
    /// rate: show it to whoever watches the room. Made here or on another node.
    Tapped {
        /// The room.
        room: String,
        /// The publication's frame, as its v1 recipients get it (shared, not copied).
        payload: Text,
        /// Publications to the room passed over since the last one sampled.
        skipped: u64,
    },
}

impl Output {
    /// This output with a fan-out split into one [`Output::Transmit`] per recipient (the
    /// payload shared, not copied); any other output as it is. For a driver, or a test, that
    /// handles each delivery alone.
    pub fn split(self) -> impl Iterator<Item = Output> {
        let (one, many) = match self {
            Output::Fanout {
                payload,
                recipients,
            } => (None, Some((payload, recipients))),
            other => (Some(other), None),
        };
        let many = many.into_iter().flat_map(|(payload, recipients)| {
            recipients
                .into_iter()
                .map(move |connection| Output::Transmit {
                    connection,
                    payload: payload.clone(),
                })
        });
        one.into_iter().chain(many)
    }
}

/// Why a connection was refused at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `max_connections` connections are already open.
    #[error("connection limit of {limit} reached")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
    /// The connection speaks v2 and this hub keeps no history ([`crate::Config::history`]).
    #[error("protocol v2 needs history, which this hub does not keep")]
    V2WithoutHistory,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The connection is already in `max_rooms_per_connection` rooms.
    #[error("a connection may be in at most {limit} rooms")]
    TooManyRooms {
        /// The configured limit.
        limit: usize,
    },
    /// The hub already has `max_rooms` rooms.
    #[error("the server has reached its limit of {limit} rooms")]
    TooManyRoomsInHub {
        /// The configured limit.
        limit: usize,
    },
    /// The handle does not name an open connection.
    #[error("no open connection for this handle")]
    UnknownConnection,
}

/// [`crate::Hub::handle_appended`] named a stream with no append waiting for its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no append of this stream is waiting for its position")]
pub struct NothingPending;

/// The handle names no connection the hub knows: it never existed, or it closed and the driver
/// has already been told (a stale handle, e.g. from a reused slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no open connection for this handle")]
pub struct UnknownConnection;
