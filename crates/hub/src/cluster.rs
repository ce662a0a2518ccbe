//! What this node knows of the other nodes of its cluster: their members of shared rooms (for
//! presence) and their counts (for the stats endpoints), each node's under a lease.
//!
//! A cluster backplane feeds it ([`crate::Hub::handle_remote_members`],
//! [`crate::Hub::handle_cluster`]); the hub expires a node whose lease ran out at
//! [`crate::Hub::handle_timeout`]. Everything is bounded: [`MAX_NODES`] nodes, each node's rooms
//! by the hub's own room limit, [`MAX_MEMBERS`] members listed per room and node,
//! [`MAX_CLIENTS`] clients listed per node.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};

use crate::{Instant, Tags};

/// How long another node counts without news of it: its lease.
pub const LEASE: Duration = Duration::from_secs(10);
/// Other nodes remembered at most; more are ignored until one expires.
pub const MAX_NODES: usize = 64;
/// Members of one room on one node listed at most (the count covers them all).
pub const MAX_MEMBERS: usize = 1000;
/// Clients of one node listed at most in its summary (the count covers them all).
pub const MAX_CLIENTS: usize = 1000;
/// Largest count (of a room's members, a node's connections or rooms) taken from another node:
/// what any node can hold, and small enough that sums over every node and room never overflow.
pub const MAX_COUNT: u64 = 1 << 32;

/// One member of a room on some node, as the cluster shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The connection's client id (unique across nodes).
    pub client_id: String,
    /// Its user, if it has one.
    pub user: Option<String>,
    /// When its connection opened, Unix milliseconds.
    pub joined_at: u64,
}

/// A node's members of one room: the first [`MAX_MEMBERS`] (in the order they opened) and how
/// many there are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    /// The members listed.
    pub listed: Vec<Member>,
    /// How many members the room has on that node (at least `listed.len()`).
    pub total: u64,
}

/// One client of a node, as its summary lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClient {
    /// Its client id.
    pub client_id: String,
    /// Its filter's entries.
    pub filter: Tags,
    /// When it opened, Unix milliseconds.
    pub opened_at: u64,
}

/// What a node tells the cluster about itself, renewed with its lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSummary {
    /// Open connections.
    pub connections: u64,
    /// Non-empty rooms.
    pub rooms: u64,
    /// Its oldest [`MAX_CLIENTS`] connections, oldest first.
    pub clients: Vec<NodeClient>,
}

/// The other live nodes of the cluster, summed from their summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterTotals {
    /// Other nodes known (live within their lease).
    pub nodes: usize,
    /// Their open connections.
    pub connections: u64,
    /// Their non-empty rooms (a room on two nodes counts twice).
    pub rooms: u64,
}

/// Another node, as this one knows it.
#[derive(Debug, Default)]
struct Node {
    /// When it is forgotten without news.
    expires: Option<Instant>,
    /// Its last summary.
    summary: Option<NodeSummary>,
    /// The rooms it has members in (keys of [`Cluster::rooms`]).
    rooms: HashSet<String, DefaultHashBuilder>,
    /// This node announced its members to it (it was seen in a summary).
    greeted: bool,
}

/// What a change to the table means to the hub.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    /// Rooms whose remote members changed.
    pub(crate) rooms: Vec<String>,
    /// Nodes seen in a summary for the first time: they need this node's members.
    pub(crate) greet: bool,
}

/// The other nodes and their members of shared rooms.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    nodes: HashMap<u64, Node, DefaultHashBuilder>,
    rooms: HashMap<String, HashMap<u64, Members, DefaultHashBuilder>, DefaultHashBuilder>,
}

impl Cluster {
    fn node(&mut self, now: Instant, node: u64) -> Option<&mut Node> {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= MAX_NODES {
            return None;
        }
        let n = self.nodes.entry(node).or_default();
        n.expires = Some(now + LEASE);
        Some(n)
    }

    /// `node`'s members of `room` are now `members` (none: it has left). `max_rooms` bounds the
    /// rooms one node may fill the table with. Whether anything changed.
    pub(crate) fn set_members(
        &mut self,
        now: Instant,
        node: u64,
        room: &str,
        mut members: Members,
        max_rooms: usize,
    ) -> bool {
        members.listed.truncate(MAX_MEMBERS);
        members.total = members
            .total
            .max(members.listed.len() as u64)
            .min(MAX_COUNT);
        let Some(n) = self.node(now, node) else {
            return false;
        };
        if members.total == 0 {
            if !n.rooms.remove(room) {
                return false;
            }
            if let Some(r) = self.rooms.get_mut(room) {
                r.remove(&node);
                if r.is_empty() {
                    self.rooms.remove(room);
                }
            }
            return true;
        }
        if !n.rooms.contains(room) {
            if n.rooms.len() >= max_rooms {
                return false;
            }
            n.rooms.insert(room.into());
        }
        let r = self.rooms.entry_ref(room).or_default();
        if r.get(&node) == Some(&members) {
            return false;
        }
        r.insert(node, members);
        true
    }

    /// The live nodes and their summaries, as read from the cluster: each is renewed; a node
    /// that was among them before and is not now is gone (one known only from its `Members`,
    /// whose first lease may not be written yet, waits for its own lease to end).
    pub(crate) fn set_summaries(
        &mut self,
        now: Instant,
        summaries: Vec<(u64, NodeSummary)>,
    ) -> Changed {
        let mut changed = Changed::default();
        let live: HashSet<u64, DefaultHashBuilder> = summaries.iter().map(|(n, _)| *n).collect();
        let gone: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(n, node)| node.greeted && !live.contains(*n))
            .map(|(n, _)| *n)
            .collect();
        for node in gone {
            self.forget(node, &mut changed.rooms);
        }
        for (node, mut summary) in summaries {
            summary.clients.truncate(MAX_CLIENTS);
            summary.connections = summary.connections.min(MAX_COUNT);
            summary.rooms = summary.rooms.min(MAX_COUNT);
            let Some(n) = self.node(now, node) else {
                continue;
            };
            n.summary = Some(summary);
            if !n.greeted {
                n.greeted = true;
                changed.greet = true;
            }
        }
        changed
    }

    /// Forget `node`, adding the rooms it was in to `changed`.
    fn forget(&mut self, node: u64, changed: &mut Vec<String>) {
        let Some(n) = self.nodes.remove(&node) else {
            return;
        };
        for room in n.rooms {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.remove(&node);
                if r.is_empty() {
                    self.rooms.remove(&room);
                }
            }
            changed.push(room);
        }
    }

    /// Forget every node whose lease ended by `now`; the rooms that changed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        let due: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.expires.is_some_and(|e| e <= now))
            .map(|(id, _)| *id)
            .collect();
        for node in due {
            self.forget(node, &mut changed);
        }
        changed
    }

    /// The earliest lease end.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.nodes.values().filter_map(|n| n.expires).min()
    }

    /// Every other node's members of `room`.
    pub(crate) fn members(&self, room: &str) -> impl Iterator<Item = &Member> + '_ {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.values())
            .flat_map(|m| m.listed.iter())
    }

    /// How many members `room` has on the other nodes.
    pub(crate) fn member_count(&self, room: &str) -> u64 {
        self.rooms
            .get(room)
            .map_or(0, |r| r.values().map(|m| m.total).sum())
    }

    /// Every room with members on another node, and how many it has there.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.rooms
            .iter()
            .map(|(room, r)| (room.as_str(), r.values().map(|m| m.total).sum()))
    }

    /// The other nodes' summaries.
    pub(crate) fn summaries(&self) -> impl Iterator<Item = &NodeSummary> + '_ {
        self.nodes.values().filter_map(|n| n.summary.as_ref())
    }

    /// The other nodes, summed.
    pub(crate) fn totals(&self) -> ClusterTotals {
        let mut t = ClusterTotals {
            nodes: self.nodes.len(),
            ..ClusterTotals::default()
        };
        for s in self.summaries() {
            t.connections += s.connections;
            t.rooms += s.rooms;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn members(ids: &[&str]) -> Members {
        Members {
            listed: ids
                .iter()
                .map(|id| Member {
                    client_id: id.to_string(),
                    user: None,
                    joined_at: 1,
                })
                .collect(),
            total: ids.len() as u64,
        }
    }

    #[test]
    fn bounded_per_node_and_per_room() {
        let mut c = Cluster::default();
        let t = Instant::ZERO;
        assert!(c.set_members(t, 1, "a", members(&["x"]), 2));
        assert!(c.set_members(t, 1, "b", members(&["y"]), 2));
        assert!(
            !c.set_members(t, 1, "c", members(&["z"]), 2),
            "over the room cap"
        );
        assert_eq!(c.rooms().count(), 2);
        let mut huge = members(&["x"]);
        huge.total = u64::MAX;
        c.set_members(t, 2, "z", huge, 2);
        assert_eq!(
            c.member_count("z"),
            MAX_COUNT,
            "clamped: sums never overflow"
        );
        let many: Vec<String> = (0..MAX_MEMBERS + 5).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(c.set_members(t, 1, "a", members(&refs), 2));
        assert_eq!(c.members("a").count(), MAX_MEMBERS);
        assert_eq!(c.member_count("a"), (MAX_MEMBERS + 5) as u64);
        for n in 0..MAX_NODES as u64 + 3 {
            c.set_members(t, 100 + n, "d", members(&["w"]), 2);
        }
        assert_eq!(c.totals().nodes, MAX_NODES);
    }

    #[test]
    fn a_lease_that_ends_drops_the_nodes_rooms() {
        let mut c = Cluster::default();
        let t = Instant::from_millis(1_000);
        c.set_members(t, 7, "a", members(&["x"]), 10);
        assert_eq!(c.next_expiry(), Some(t + LEASE));
        assert!(c.expire(Instant::from_millis(10_999)).is_empty());
        assert_eq!(c.expire(t + LEASE), vec!["a".to_string()]);
        assert_eq!(c.members("a").count(), 0);
        assert_eq!(c.next_expiry(), None);
    }

    #[test]
    fn summaries_renew_greet_and_drop_the_missing() {
        let mut c = Cluster::default();
        let t = Instant::ZERO;
        c.set_members(t, 7, "a", members(&["x"]), 10);
        let s = |n| (n, NodeSummary::default());
        let changed = c.set_summaries(t, vec![s(7), s(8)]);
        assert!(changed.greet && changed.rooms.is_empty());
        assert!(!c.set_summaries(t, vec![s(7), s(8)]).greet, "greeted once");
        let changed = c.set_summaries(t, vec![s(8)]);
        assert_eq!(changed.rooms, vec!["a".to_string()]);
        assert_eq!(c.totals().nodes, 1);
        // A node heard of only through its members is not dropped by a read that predates
        // its first lease: its own lease (renewed by what it sends) decides.
        c.set_members(t, 9, "b", members(&["y"]), 10);
        assert!(c.set_summaries(t, vec![s(8)]).rooms.is_empty());
        assert_eq!(c.members("b").count(), 1);
        assert_eq!(c.expire(t + LEASE), vec!["b".to_string()]);
    }
}
