//! What a cluster backplane sees of a hub task, and how it feeds one.
//!
//! A backplane receives [`Replication`]s from the hub task through a bounded channel (given to
//! [`crate::hub_task::spawn_hub`]) and feeds publications from other nodes back with
//! [`crate::HubHandle::remote`]; [`crate::HubHandle::rooms`] tells it which rooms have local
//! members. Nothing here knows Redis.

use switchboard_hub::{Output, Publication};
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
}

/// A new replication channel: the sender goes to the hub task, the receiver to the backplane.
pub fn replication_channel() -> (mpsc::Sender<Replication>, mpsc::Receiver<Replication>) {
    mpsc::channel(REPLICATION_QUEUE)
}

/// The hub task's end of the replication channel.
#[derive(Debug)]
pub(crate) struct Replicator {
    tx: Option<mpsc::Sender<Replication>>,
    /// Publications the channel could not take, for a log line at each power of two.
    dropped: u64,
}

impl Replicator {
    pub(crate) fn new(tx: Option<mpsc::Sender<Replication>>) -> Self {
        Replicator { tx, dropped: 0 }
    }

    /// Hand a replication output to the backplane. A publication the full channel cannot take
    /// reached local connections only: returns `Some(1)` for the hub to count. A room change
    /// that does not fit is left to the backplane's periodic reconciliation with
    /// [`crate::HubHandle::rooms`].
    pub(crate) fn forward(&mut self, out: Output) -> Option<u64> {
        let tx = self.tx.as_ref()?;
        let item = match out {
            Output::Replicate(p) => Replication::Publish(p),
            Output::RoomOpened(room) => Replication::RoomOpened(room),
            Output::RoomClosed(room) => Replication::RoomClosed(room),
            _ => return None,
        };
        let is_publication = matches!(item, Replication::Publish(_));
        if tx.try_send(item).is_ok() || !is_publication {
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
}
