//! What a cluster backplane sees of a hub task, and how it feeds one.
//!
//! A backplane receives [`Replication`]s from the hub task through a bounded channel (given to
//! [`crate::hub_task::spawn_hub`]) and feeds publications from other nodes back with
//! [`crate::HubHandle::remote`]; [`crate::HubHandle::rooms`] tells it which rooms have local
//! members. Nothing here knows Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;
use switchboard_hub::cluster::Members;
use switchboard_hub::history::{Entry, FetchId, Position};
use switchboard_hub::{Output, Publication, Target};
use tokio::sync::mpsc;

/// Capacity of the channel from a hub task to its backplane.
pub const REPLICATION_QUEUE: usize = 4096;

/// What a hub task hands to a cluster backplane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replication {
    /// A local publication to carry to the other nodes.
    Publish(Publication),
    /// A room got its first local member: start receiving it from other nodes.
    RoomOpened(String),
    /// A room lost its last local member: stop receiving it.
    RoomClosed(String),
    /// This node's members of a room changed: tell the other nodes (see
    /// [`switchboard_hub::Output::Members`]).
    Members {
        /// The room.
        room: String,
        /// Its local members now.
        members: Members,
        /// It just got its first local member.
        hello: bool,
    },
    /// With a shared history: keep `entry` as the next publication of `stream`, publish it to
    /// every node (this one too) with its position, and answer with
    /// [`crate::HubHandle::appended`], in order per stream. `target` is whom it is for.
    Append {
        /// The stream.
        stream: String,
        /// The publication as kept.
        entry: Arc<Entry>,
        /// Its target (its room, or everyone or a user for the system stream).
        target: Target,
    },
    /// With a shared history: fetch what was missed of `stream` since `since` and answer with
    /// [`crate::HubHandle::fetched`].
    Fetch {
        /// Names the answer.
        id: FetchId,
        /// The stream.
        stream: String,
        /// From where (`None`: only the top).
        since: Option<Position>,
    },
}

/// A new replication channel: the sender goes to the hub task, the receiver to the backplane.
pub fn replication_channel() -> (mpsc::Sender<Replication>, mpsc::Receiver<Replication>) {
    mpsc::channel(REPLICATION_QUEUE)
}

fn room_change(room: String, opened: bool) -> Replication {
    if opened {
        Replication::RoomOpened(room)
    } else {
        Replication::RoomClosed(room)
    }
}

/// The hub task's end of the replication channel.
#[derive(Debug)]
pub(crate) struct Replicator {
    tx: Option<mpsc::Sender<Replication>>,
    /// Publications the channel could not take, for a log line at each power of two.
    dropped: u64,
    /// Room changes the full channel could not take yet: each room's latest state (`true`:
    /// opened), sent as soon as the channel has room. At most one entry per room the hub may
    /// have, so bounded; a subscription change is late, never lost.
    rooms: HashMap<String, bool>,
    /// Members announcements the full channel could not take yet: each room's latest (a
    /// `hello` kept), sent as soon as the channel has room. At most one entry per room, so
    /// bounded; an announcement is late, never lost (a node that greets a newcomer announces
    /// every room at once).
    members: HashMap<String, (Members, bool)>,
    /// Raised while the channel is more than seven eighths full (see [`Replicator::note_fill`]),
    /// for the connections' readers to look at with a load instead of asking the channel.
    behind: Arc<AtomicBool>,
}

/// Whether the queue to the backplane is more than seven eighths full: past it, what the hub
/// hands over might not fit, so publishers are held back (see `crate::System::backplane_saturated`).
pub(crate) fn nearly_full(tx: &mpsc::Sender<Replication>) -> bool {
    tx.capacity() < tx.max_capacity() / 8
}

impl Replicator {
    pub(crate) fn new(tx: Option<mpsc::Sender<Replication>>) -> Self {
        Replicator {
            tx,
            dropped: 0,
            rooms: HashMap::new(),
            members: HashMap::new(),
            behind: Arc::default(),
        }
    }

    /// The flag [`Replicator::note_fill`] keeps.
    pub(crate) fn behind(&self) -> Arc<AtomicBool> {
        self.behind.clone()
    }

    /// Whether the channel is more than seven eighths full now, in the flag: a hint, set and
    /// cleared once per drain of the hub task (the one place that fills the channel). Whoever
    /// finds it raised asks the channel itself (`crate::System::backplane_saturated`), so a
    /// flag left raised while the hub task is idle holds nobody back.
    pub(crate) fn note_fill(&self) {
        if let Some(tx) = &self.tx {
            let behind = nearly_full(tx);
            if self.behind.load(Ordering::Relaxed) != behind {
                self.behind.store(behind, Ordering::Relaxed);
            }
        }
    }

    /// Send the room changes, then the members announcements, that waited for room in the
    /// channel, as far as it takes them.
    pub(crate) fn flush(&mut self) {
        self.flush_rooms();
        if self.rooms.is_empty() {
            self.flush_members();
        }
    }

    fn flush_members(&mut self) {
        let Some(tx) = self.tx.as_ref() else { return };
        while let Some(room) = self.members.keys().next().cloned() {
            let Some((members, hello)) = self.members.remove(&room) else {
                return;
            };
            match tx.try_send(Replication::Members {
                room,
                members,
                hello,
            }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Replication::Members {
                    room,
                    members,
                    hello,
                })) => {
                    self.members.insert(room, (members, hello));
                    return;
                }
                Err(_) => {
                    self.members.clear();
                    return;
                }
            }
        }
    }

    /// A room's local members changed: tell the backplane after what is waiting.
    fn members(&mut self, room: String, members: Members, hello: bool) {
        self.flush();
        let Some(tx) = self.tx.as_ref() else { return };
        if !self.members.is_empty() || !self.rooms.is_empty() {
            let was_hello = self.members.get(&room).is_some_and(|(_, h)| *h);
            self.members.insert(room, (members, hello || was_hello));
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(Replication::Members {
            room,
            members,
            hello,
        })) = tx.try_send(Replication::Members {
            room,
            members,
            hello,
        }) {
            self.members.insert(room, (members, hello));
        }
    }

    fn flush_rooms(&mut self) {
        let Some(tx) = self.tx.as_ref() else { return };
        if self.rooms.is_empty() {
            return;
        }
        let waiting: Vec<String> = self.rooms.keys().cloned().collect();
        for room in waiting {
            let opened = self.rooms[&room];
            match tx.try_send(room_change(room.clone(), opened)) {
                Ok(()) => {
                    self.rooms.remove(&room);
                }
                Err(mpsc::error::TrySendError::Full(_)) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.rooms.clear();
                    return;
                }
            }
        }
    }

    /// Hand a shared history's request to the backplane; given back if its queue cannot take
    /// it (the caller answers it as unavailable: never dropped silently).
    pub(crate) fn history(&mut self, request: Replication) -> Result<(), Replication> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(request);
        };
        tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }

    /// Hand a replication output to the backplane. A publication the full channel cannot take
    /// reached local connections only: returns `Some(1)` for the hub to count. A room change
    /// or a members announcement that does not fit waits in [`Replicator::flush`]'s lists (its
    /// latest state per room).
    pub(crate) fn forward(&mut self, out: Output) -> Option<u64> {
        let tx = self.tx.as_ref()?;
        let item = match out {
            Output::Replicate(p) => Replication::Publish(*p),
            Output::RoomOpened(room) => return self.room(room, true),
            Output::RoomClosed(room) => return self.room(room, false),
            Output::Members {
                room,
                members,
                hello,
            } => {
                self.members(room, members, hello);
                return None;
            }
            _ => return None,
        };
        if tx.try_send(item).is_ok() {
            return None;
        }
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            tracing::warn!(
                dropped = self.dropped,
                "backplane queue full; publication not replicated"
            );
        }
        Some(1)
    }

    /// A room's first member came or its last went: tell the backplane, after any change that
    /// is still waiting (so each room's changes keep their order).
    fn room(&mut self, room: String, opened: bool) -> Option<u64> {
        self.flush();
        let tx = self.tx.as_ref()?;
        if !self.rooms.is_empty() {
            self.rooms.insert(room, opened);
            return None;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) =
            tx.try_send(room_change(room.clone(), opened))
        {
            self.rooms.insert(room, opened);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Output {
        Output::Replicate(Box::new(Publication::to_all("{}".to_string())))
    }

    /// With the channel full, publications are dropped and counted, but room changes wait and
    /// go out (each room's latest state) as soon as the backplane has read.
    #[test]
    fn room_changes_wait_for_a_full_channel_and_are_never_lost() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut r = Replicator::new(Some(tx));
        assert_eq!(r.forward(publish()), None);
        assert_eq!(r.forward(publish()), None);
        assert_eq!(
            r.forward(publish()),
            Some(1),
            "a publication past a full queue is counted"
        );
        assert_eq!(r.forward(Output::RoomOpened("a".into())), None);
        assert_eq!(r.forward(Output::RoomOpened("b".into())), None);
        assert_eq!(r.forward(Output::RoomClosed("b".into())), None);
        assert_eq!(r.rooms.len(), 2, "waiting, not dropped");
        r.flush();
        assert_eq!(r.rooms.len(), 2, "still full");
        assert!(matches!(rx.try_recv(), Ok(Replication::Publish(_))));
        assert!(matches!(rx.try_recv(), Ok(Replication::Publish(_))));
        r.flush();
        let mut got = vec![rx.try_recv().unwrap(), rx.try_recv().unwrap()];
        got.sort_by_key(|g| format!("{g:?}"));
        assert_eq!(
            got,
            [
                Replication::RoomClosed("b".into()),
                Replication::RoomOpened("a".into()),
            ]
        );
        assert!(r.rooms.is_empty());
        // With room in the channel a change goes at once.
        assert_eq!(r.forward(Output::RoomClosed("a".into())), None);
        assert_eq!(rx.try_recv().unwrap(), Replication::RoomClosed("a".into()));
    }

    /// With the channel full, each room's latest members announcement waits (a `hello` kept)
    /// and goes out once the backplane has read: late, never lost, one per room.
    #[test]
    fn members_announcements_wait_for_a_full_channel() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut r = Replicator::new(Some(tx));
        let members = |n: u64| Output::Members {
            room: "a".into(),
            members: Members {
                listed: Vec::new(),
                total: n,
            },
            hello: n == 1,
        };
        assert_eq!(r.forward(publish()), None);
        assert_eq!(r.forward(members(1)), None);
        assert_eq!(r.forward(members(2)), None);
        assert_eq!(r.members.len(), 1, "the latest of the room waits");
        assert!(matches!(rx.try_recv(), Ok(Replication::Publish(_))));
        r.flush();
        let Ok(Replication::Members {
            room,
            members,
            hello,
        }) = rx.try_recv()
        else {
            panic!("the announcement went out")
        };
        assert_eq!((room.as_str(), members.total, hello), ("a", 2, true));
        assert!(r.members.is_empty());
    }
}
