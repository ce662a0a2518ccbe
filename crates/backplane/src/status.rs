//! A backplane's counters and connection states, for `/health` and `/metrics`.

use crate::node::NodeId;

/// One system's backplane: its connections and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The system (hub protocol) this backplane serves, e.g. `collab`.
    pub system: &'static str,
    /// This node's id.
    pub node_id: NodeId,
    /// Both Redis connections are up: publications leave this node and others' arrive.
    pub connected: bool,
    /// The publishing connection is up.
    pub publisher_connected: bool,
    /// The subscribing connection is up and subscribed to the system's `all` channel.
    pub subscriber_connected: bool,
    /// Local publications handed to Redis.
    pub published: u64,
    /// Other nodes' publications injected into the local hub.
    pub received: u64,
    /// Local publications not sent because Redis was unreachable (or the PUBLISH failed).
    pub dropped_while_down: u64,
    /// Other nodes' publications dropped here because the local hub's queue was full.
    pub dropped_inbound: u64,
    /// Other nodes' publications on the `all` channel that never arrived (gaps in their
    /// sequence numbers: dropped by the sender while Redis was away, or lost with a connection).
    pub missed: u64,
    /// Messages on our channels that were not valid backplane messages.
    pub invalid: u64,
    /// Connections re-established after a loss (publisher and subscriber counted separately).
    pub reconnects: u64,
    /// Redis errors seen (failed connects, failed commands, lost connections).
    pub errors: u64,
    /// Room channels currently subscribed.
    pub room_subscriptions: u64,
    /// Other live nodes, as last read with this node's lease.
    pub nodes: u64,
    /// The last Redis error, if any.
    pub last_error: Option<String>,
    /// The Redis instance (`host:port`) of one instance's status inside
    /// [`Status::instances`]; `None` otherwise.
    pub address: Option<String>,
    /// With several Redis instances, each one's own status, in the order configured (empty
    /// with one: the status is that instance's).
    pub instances: Vec<Status>,
}

impl Status {
    /// A backplane of `system` on `node` with both connections down and nothing counted.
    pub fn new(system: &'static str, node_id: NodeId) -> Self {
        Status {
            system,
            node_id,
            connected: false,
            publisher_connected: false,
            subscriber_connected: false,
            published: 0,
            received: 0,
            dropped_while_down: 0,
            dropped_inbound: 0,
            missed: 0,
            invalid: 0,
            reconnects: 0,
            errors: 0,
            room_subscriptions: 0,
            nodes: 0,
            last_error: None,
            address: None,
            instances: Vec::new(),
        }
    }

    /// Count an error and keep it as the last one.
    pub fn error(&mut self, what: &str, error: &str) {
        self.errors += 1;
        self.last_error = Some(format!("{what}: {error}"));
    }

    /// `"up"` (every connection up), `"down"`, or with several Redis instances `"degraded"`
    /// (some instance is up and some is not).
    pub fn state(&self) -> &'static str {
        if self.connected {
            "up"
        } else if self.instances.iter().any(|s| s.connected) {
            "degraded"
        } else {
            "down"
        }
    }

    /// A JSON object for a `/health` response, e.g.
    /// `{"state":"up","node":"…","published":3,…,"last_error":null}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.fields();
        if !self.instances.is_empty() {
            let each: Vec<serde_json::Value> = self.instances.iter().map(Status::fields).collect();
            v["instances"] = serde_json::Value::Array(each);
        }
        v
    }

    /// This status's own fields (an instance's carry its `address`).
    fn fields(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "state": self.state(),
            "node": self.node_id.to_string(),
            "publisher": self.publisher_connected,
            "subscriber": self.subscriber_connected,
            "published": self.published,
            "received": self.received,
            "dropped_while_down": self.dropped_while_down,
            "dropped_inbound": self.dropped_inbound,
            "missed": self.missed,
            "invalid": self.invalid,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "room_subscriptions": self.room_subscriptions,
            "nodes": self.nodes,
            "last_error": self.last_error,
        });
        if let Some(address) = &self.address {
            v["address"] = serde_json::Value::from(address.as_str());
        }
        v
    }
}
