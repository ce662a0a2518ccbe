//! What goes in (frames) and what comes out (outputs) besides the calls themselves, and the
//! errors a caller can get.

use alloc::borrow::Cow;
use alloc::string::String;
use bytes::Bytes;

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
}

impl<M> Frame<M> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
            Frame::Decoded { len, .. } => *len,
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
    /// (only when [`crate::Config::replicate`] is set).
    Replicate(Publication),
    /// A room got its first local member: a backplane should start receiving its publications
    /// (only when [`crate::Config::replicate`] is set).
    RoomOpened(String),
    /// A room lost its last local member: a backplane may stop receiving its publications
    /// (only when [`crate::Config::replicate`] is set).
    RoomClosed(String),
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

/// The handle names no connection the hub knows: it never existed, or it closed and the driver
/// has already been told (a stale handle, e.g. from a reused slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no open connection for this handle")]
pub struct UnknownConnection;
