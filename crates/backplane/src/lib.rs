//! The logic of switchboard's cluster backplane, without I/O.
//!
//! A cluster joins several switchboard nodes through Redis: each node publishes its hubs'
//! publications once, receives the others', and (with protocol v2) shares one history. What a
//! node must do about it — which channels to hold, what to send in which order, how to number
//! and check what arrives, when to reconnect, what to tell the hub — is decided here, by a
//! [`Backplane`] state machine per system, driven like the hub: inputs (`handle_*`), commands to
//! carry out ([`Backplane::poll_command`]), and a deadline ([`Backplane::poll_timeout`]) on a
//! clock the driver gives. There is no tokio and no Redis client in this crate; the
//! `switchboard-backplane-redis` crate is its driver, and the tests drive it with a fake clock.
//!
//! - [`wire`]: the message a node publishes (a compact header, then the payload unchanged).
//! - [`Interest`]: the rooms a node has local members in; [`Gaps`]: sequence checks per origin.
//! - [`Backoff`]: reconnect delays with jitter.
//! - [`Status`]: counters and connection states for `/health` and `/metrics`.
//! - [`Sharded`] and [`shard`]: one machine per Redis instance when a cluster spreads its
//!   streams over several, and which instance carries each stream.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backoff;
mod interest;
mod machine;
mod node;
pub mod shard;
mod sharded;
mod status;
pub mod wire;

pub use backoff::Backoff;
pub use interest::{Gaps, Interest, MAX_ORIGINS};
pub use machine::{
    all_channel, node_key_prefix, nodes_key, positioned, room_channel, Append, Backplane, Batch,
    Command, Config, Fetch, Sent, Side, ToHub, ALIVE, BATCH, LEASE, LEASE_EVERY,
    MAX_UNSENT_MEMBERS, MAX_WAITING, RECONCILE_EVERY, SUBSCRIBE_CHUNK,
};
pub use node::{random_u64, NodeId};
pub use shard::{Instances, InstancesError, MAX_INSTANCES};
pub use sharded::Sharded;
pub use status::Status;
