//! The hub task's table of its connections' links, indexed like the hub's own table.

use std::sync::Arc;

use switchboard_hub::ConnectionHandle;

use crate::outbox::Outbox;

/// A connection as the hub task reaches it: where its frames go and how its reads are paced.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its write side, which also holds its read pace ([`Outbox::pacing`]).
    pub outbox: Arc<Outbox>,
}

/// Each open connection's [`Link`], found from its handle without hashing: at the index of its
/// slot ([`ConnectionHandle::slot`]), checked against the whole handle. The hub task looks one
/// up for every delivery, and every open connection has an entry (24 bytes).
#[derive(Debug, Default)]
pub struct Links {
    slots: Vec<Option<(ConnectionHandle, Link)>>,
}

impl Links {
    /// Keep `link` for `conn`, replacing whatever its slot held.
    pub fn insert(&mut self, conn: ConnectionHandle, link: Link) {
        let i = conn.slot();
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some((conn, link));
    }

    /// `conn`'s link, if it is open.
    pub fn get(&self, conn: &ConnectionHandle) -> Option<&Link> {
        match self.slots.get(conn.slot())? {
            Some((held, link)) if held == conn => Some(link),
            _ => None,
        }
    }

    /// Forget `conn`, returning its link if it was open.
    pub fn remove(&mut self, conn: &ConnectionHandle) -> Option<Link> {
        let slot = self.slots.get_mut(conn.slot())?;
        match slot {
            Some((held, _)) if held == conn => slot.take().map(|(_, link)| link),
            _ => None,
        }
    }

    /// The handles of every open connection.
    pub fn handles(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.slots.iter().flatten().map(|(conn, _)| *conn)
    }
}
