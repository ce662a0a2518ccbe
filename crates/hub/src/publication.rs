//! Publications: one encoded payload and the rule that picks its recipients.

use crate::{ConnectionHandle, Tags, Text};
use alloc::string::String;

/// Which connections a publication is for, before the sender exclusion and filters apply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Every open connection.
    All,
    /// Every member of one room.
    Room(String),
    /// Every connection whose identity's user id equals this (found through an index: the cost
    /// is that user's connections, not a scan of all of them).
    User(String),
    /// One connection (local only: never replicated to other nodes).
    Connection(ConnectionHandle),
}

/// One message for many recipients, encoded once.
///
/// Every recipient gets a clone of `payload`, which shares the same buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Who it is for.
    pub target: Target,
    /// A connection that must not receive it (the sender, for "everyone but the sender").
    pub except: Option<ConnectionHandle>,
    /// When `Some`, only connections whose filter matches these tags receive it; when `None`,
    /// filters do not apply.
    pub tags: Option<Tags>,
    /// The encoded frame. In a hub with history it must be one JSON value (every protocol's
    /// frames are): a v2 connection receives it inside the envelope, `{"sb":"pub",...,"msg":`
    /// payload `}`, as it is, without a check per delivery.
    pub payload: Text,
    /// Whether its stream's history keeps it (for v2 positions and resume): the stream is its
    /// room, or the protocol's system stream for [`Target::All`] and [`Target::User`]. Replies
    /// and state such as presence are not kept.
    pub kept: bool,
}

impl Publication {
    /// A publication for `target`, no exclusion, filters not applied.
    pub fn new(target: Target, payload: impl Into<Text>) -> Self {
        Publication {
            target,
            except: None,
            tags: None,
            payload: payload.into(),
            kept: false,
        }
    }

    /// For every connection.
    pub fn to_all(payload: impl Into<Text>) -> Self {
        Self::new(Target::All, payload)
    }

    /// For every member of `room`.
    pub fn to_room(room: impl Into<String>, payload: impl Into<Text>) -> Self {
        Self::new(Target::Room(room.into()), payload)
    }

    /// For every connection of user `user`.
    pub fn to_user(user: impl Into<String>, payload: impl Into<Text>) -> Self {
        Self::new(Target::User(user.into()), payload)
    }

    /// Leave out `sender`.
    pub fn except(mut self, sender: ConnectionHandle) -> Self {
        self.except = Some(sender);
        self
    }

    /// Keep it in its stream's history (see [`Publication::kept`]).
    pub fn keep(mut self) -> Self {
        self.kept = true;
        self
    }

    /// Deliver only to connections whose filter matches `tags`.
    pub fn filtered(mut self, tags: Tags) -> Self {
        self.tags = Some(tags);
        self
    }
}
