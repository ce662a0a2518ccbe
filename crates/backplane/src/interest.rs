//! Which room channels this node wants, and which gaps it saw in other nodes' sequences.
//!
//! Both are plain data structures with no I/O, driven by the backplane's tasks.

use hashbrown::{HashMap, HashSet};

use crate::node::NodeId;

/// The rooms this node has local members in (so it must receive their channels), plus the
/// rooms whose wanted state changed since the subscriber last looked.
#[derive(Debug, Default)]
pub struct Interest {
    desired: HashSet<String>,
    dirty: HashSet<String>,
}

impl Interest {
    /// A room got its first local member.
    pub fn open(&mut self, room: String) {
        if self.desired.insert(room.clone()) {
            self.dirty.insert(room);
        }
    }

    /// A room lost its last local member.
    pub fn close(&mut self, room: &str) {
        if self.desired.remove(room) {
            self.dirty.insert(room.to_owned());
        }
    }

    /// Replace the wanted rooms with the hub's own list (reconciliation after dropped room
    /// events or a reconnect). Returns how many rooms changed.
    pub fn replace(&mut self, rooms: impl IntoIterator<Item = String>) -> usize {
        let fresh: HashSet<String> = rooms.into_iter().collect();
        let mut changed = 0;
        for gone in self.desired.difference(&fresh) {
            self.dirty.insert(gone.clone());
            changed += 1;
        }
        for new in fresh.difference(&self.desired) {
            self.dirty.insert(new.clone());
            changed += 1;
        }
        self.desired = fresh;
        changed
    }

    /// Whether `room` is wanted.
    pub fn wants(&self, room: &str) -> bool {
        self.desired.contains(room)
    }

    /// Every wanted room.
    pub fn desired(&self) -> impl Iterator<Item = &String> + '_ {
        self.desired.iter()
    }

    /// The rooms that changed since the last call (wanted or not: check [`Interest::wants`]).
    pub fn take_dirty(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Forget what changed (after a reconnect the subscriber starts from [`Interest::desired`]).
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }
}

/// Origins tracked at most; a cluster has a handful of nodes, but restarted nodes come back with
/// new ids, so the table is cleared when it fills up (losing only the gap baseline).
pub const MAX_ORIGINS: usize = 1024;

/// The last sequence number seen from each origin on the `all` channel, to count what was
/// missed (published by the origin, or dropped by it while Redis was away, and never received).
#[derive(Debug, Default)]
pub struct Gaps {
    last: HashMap<NodeId, u64>,
}

impl Gaps {
    /// Record `seq` from `origin`; returns how many of its earlier numbers never arrived.
    /// The first message seen from an origin sets the baseline and counts nothing.
    pub fn observe(&mut self, origin: NodeId, seq: u64) -> u64 {
        if seq == 0 {
            return 0;
        }
        if let Some(last) = self.last.get_mut(&origin) {
            if seq > *last {
                let missed = seq - *last - 1;
                *last = seq;
                return missed;
            }
            return 0; // Not newer: nothing to learn.
        }
        if self.last.len() >= MAX_ORIGINS {
            self.last.clear();
        }
        self.last.insert(origin, seq);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_tracks_changes() {
        let mut i = Interest::default();
        i.open("a".into());
        i.open("a".into());
        i.open("b".into());
        let d = i.take_dirty();
        assert_eq!(d.len(), 2);
        assert!(i.take_dirty().is_empty());
        i.close("a");
        i.close("zzz"); // Not wanted: no change.
        assert_eq!(i.take_dirty().into_iter().collect::<Vec<_>>(), vec!["a"]);
        assert!(!i.wants("a") && i.wants("b"));
        // The hub says: b is gone, c exists.
        assert_eq!(i.replace(["c".to_string()]), 2);
        let d = i.take_dirty();
        assert!(d.contains("b") && d.contains("c"));
        assert!(i.wants("c") && !i.wants("b"));
        assert_eq!(i.replace(["c".to_string()]), 0);
        assert_eq!(i.desired().count(), 1);
    }

    #[test]
    fn gaps_count_missing_sequence_numbers() {
        let mut g = Gaps::default();
        let a = NodeId::new(1);
        let b = NodeId::new(2);
        assert_eq!(g.observe(a, 5), 0, "baseline");
        assert_eq!(g.observe(a, 6), 0);
        assert_eq!(g.observe(a, 10), 3);
        assert_eq!(g.observe(a, 9), 0, "older: ignored");
        assert_eq!(g.observe(b, 1), 0);
        assert_eq!(g.observe(b, 3), 1);
        assert_eq!(g.observe(a, 0), 0, "room channels carry no sequence");
        for n in 0..MAX_ORIGINS as u64 + 5 {
            g.observe(NodeId::new(100 + n), 1);
        }
        assert!(g.last.len() <= MAX_ORIGINS);
    }
}
