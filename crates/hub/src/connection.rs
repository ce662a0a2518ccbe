//! Connections as the hub sees them: a handle, an identity, a filter, the rooms it is in.

use alloc::string::String;
use alloc::vec::Vec;

/// A `Copy` handle to one connection.
///
/// It names a slot and the serial number of the connection that was opened in it; once that
/// connection closes, the handle stops resolving even if a new connection reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle {
    pub(crate) slot: u32,
    pub(crate) serial: u64,
}

impl ConnectionHandle {
    /// The connection's serial number: unique within one hub for its whole life, never reused.
    pub fn serial(self) -> u64 {
        self.serial
    }

    /// The index of its slot: small (below the most connections ever open at once) and reused
    /// once the connection closes, so a driver can keep its own per-connection table as a
    /// vector indexed by it, checking the whole handle.
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

/// Who is on the other end, as established by the transport (e.g. JWT claims) or the protocol
/// (e.g. collab `SET_USER`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The user id publications can target with [`crate::Target::User`].
    pub user: String,
    /// Other verified facts about the user (e.g. `email`), as name/value pairs.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// An identity with a user id and no further claims.
    pub fn user(user: impl Into<String>) -> Self {
        Identity {
            user: user.into(),
            claims: Vec::new(),
        }
    }

    /// The value of a claim, if present.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Name/value pairs a publication carries so that connection filters can select it.
pub type Tags = Vec<(String, String)>;

/// A connection's subscription filter: every entry must be matched by a publication's tags.
///
/// The empty filter matches every publication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    entries: Vec<(String, String)>,
}

impl Filter {
    /// The filter that matches everything.
    pub fn any() -> Self {
        Filter::default()
    }

    /// A filter requiring each `(name, value)` pair; a later duplicate name replaces an earlier one.
    pub fn new<K: Into<String>, V: Into<String>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut f = Filter::default();
        for (k, v) in entries {
            f.set(k.into(), v.into());
        }
        f
    }

    /// Require `name == value`.
    pub fn set(&mut self, name: String, value: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// Whether the filter matches everything.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The required pairs, in the order they were set.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Whether a publication with these tags passes this filter.
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        self.entries
            .iter()
            .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
    }
}

/// Which version of its system's protocol a connection speaks, chosen at the upgrade (from
/// `Sec-WebSocket-Protocol`); `Dialect(0)` is v1, what the seeds' clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dialect(pub u8);

impl Dialect {
    /// Version 1: the seeds' wire format.
    pub const V1: Dialect = Dialect(0);
    /// Version 2: v1's messages inside the hub's envelope, with sessions, positions and resume
    /// (`Sec-WebSocket-Protocol: switchboard.v2`; see [`crate::wire`]).
    pub const V2: Dialect = Dialect(1);
}

/// Everything the transport knows about a connection when it opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenInfo {
    /// The request path of the upgrade, e.g. `/ws`.
    pub path: String,
    /// The decoded query parameters of the upgrade request.
    pub query: Vec<(String, String)>,
    /// The identity the transport verified (e.g. from a JWT), if any.
    pub identity: Option<Identity>,
    /// The protocol version it speaks.
    pub dialect: Dialect,
    /// The client never sends (a server-sent-event stream): it is not closed for idleness,
    /// and its liveness shows only in whether writes to it fail.
    pub receive_only: bool,
}

impl OpenInfo {
    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A read-only view of one open connection, for stats and protocol decisions.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo<'a> {
    /// Its handle.
    pub handle: ConnectionHandle,
    /// The id the protocol gave it (shown to clients and in stats).
    pub client_id: &'a str,
    /// Its identity, if known.
    pub identity: Option<&'a Identity>,
    /// Its filter.
    pub filter: &'a Filter,
    /// Bytes handed to the driver and not yet reported flushed.
    pub queued_bytes: usize,
    /// When it opened.
    pub opened_at: crate::Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn filter_matching() {
        let tags: Tags = alloc::vec![("direction".to_string(), "IB".to_string())];
        assert!(Filter::any().matches(&tags));
        assert!(Filter::any().matches(&[]));
        assert!(Filter::new([("direction", "IB")]).matches(&tags));
        assert!(!Filter::new([("direction", "OB")]).matches(&tags));
        assert!(!Filter::new([("direction", "IB")]).matches(&[]));
        let f = Filter::new([("direction", "OB"), ("direction", "IB")]);
        assert_eq!(f.entries().len(), 1);
        assert!(f.matches(&tags));
    }
}
