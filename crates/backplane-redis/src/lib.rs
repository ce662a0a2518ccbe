//! A Redis pub/sub backplane that joins several switchboard nodes into one cluster.
//!
//! Each node runs its own hubs. For every system, the node's [`Backplane`] takes the hub's local
//! publications (the hub's [`Replication`] output) and publishes each **once** to Redis; it
//! subscribes to what the other nodes publish and feeds it into the local hub through the hub's
//! own sans-IO input ([`switchboard_hub::Hub::handle_remote`], via [`HubHandle::remote`]), so
//! there is exactly one fan-out path and every rule (everyone-but-sender, rooms, filters,
//! users) holds across nodes as on one node.
//!
//! # Channels
//!
//! Per system: `sb:<system>:all` carries publications to everyone and to users (every node
//! subscribes); `sb:<system>:room:<room>` carries one room's publications. With
//! [`Options::every_room`] a node holds one pattern subscription to every room's channel; without
//! it, only nodes with a local member of a room subscribe to its channel: a node subscribes when
//! the hub reports a room's first member and unsubscribes when its last member leaves, and
//! reconciles with the hub's room list every [`RECONCILE_EVERY`] and after every reconnect.
//!
//! # Several Redis instances
//!
//! [`Backplane::spawn_sharded`] takes a list of URLs (at most [`MAX_INSTANCES`]): each stream
//! (a room's channel, history and members; the system's `all` channel and stream) lives on the
//! instance [`Instances::of`] picks by rendezvous hashing of its name over the instances'
//! `host:port`, each instance has its own two connections, and this node's lease is kept on
//! every instance (the hub gets the union of the live nodes they list). Losing one instance
//! costs only its streams. One URL is exactly the single-Redis backplane.
//!
//! # Logic and driver
//!
//! What to do is decided by the sans-IO state machine of `switchboard-backplane`; this crate is
//! its driver (one task per system carrying out its commands on two Redis connections) and the
//! shared history's scripts ([`history`]).
//!
//! # Wire format
//!
//! A compact header (version, origin node id, sequence number, target, filter tags), then the
//! payload bytes unchanged (see [`wire`]). A node ignores its own messages when Redis echoes
//! them back.
//!
//! # Faults
//!
//! The backplane never stops local delivery and never buffers without bound. While Redis is
//! unreachable it keeps draining the hub's bounded replication channel and **drops** what it
//! cannot send, counting it ([`Status::dropped_while_down`]); receivers count what never arrived
//! from each origin ([`Status::missed`]). Both connections are re-established with exponential
//! backoff (100 ms doubling to 5 s, jittered). [`Backplane::status`] and
//! [`Backplane::render_prometheus`] report the state for `/health` and `/metrics`.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_backplane_redis::{replication_channel, Backplane, NodeId};
//! use switchboard_runtime::{Endpoint, Process, System};
//!
//! let node = NodeId::random(); // One per process; shared by all of its systems.
//! let spec = switchboard_protocol::system("collab").unwrap();
//! let process = Process::default();
//! let (tx, rx) = replication_channel();
//! let system = System::start(Endpoint::from_env(spec), Default::default(), Default::default(), process.clock.clone(), Some(tx));
//! // Never fails because Redis is down: it retries in the background.
//! let backplane = Backplane::spawn("redis://127.0.0.1:6379/", node, spec.name, system.hub().clone(), rx)?;
//! // For /health and /metrics:
//! let status = backplane.status_handle();
//! println!("{}", status.status().to_json());
//! // ... serve `system` with a transport; at shutdown:
//! backplane.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backplane;
pub mod history;
mod status;

pub use backplane::{
    Backplane, Error, Options, StatusHandle, CONNECT_TIMEOUT, FLUSH_TIMEOUT, INBOUND_QUEUE,
    RESPONSE_TIMEOUT,
};
pub use status::render_prometheus;
pub use switchboard_backplane::{
    all_channel, room_channel, wire, Instances, NodeId, Status, MAX_INSTANCES, RECONCILE_EVERY,
};
pub use switchboard_runtime::backplane::{replication_channel, Replication, REPLICATION_QUEUE};
pub use switchboard_runtime::HubHandle;
