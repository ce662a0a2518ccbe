//! The backplane's state for `/health` and `/metrics`: shared atomics, read without locking the
//! tasks that update them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use switchboard_runtime::metrics::{Exposition, Kind};

use crate::node::NodeId;

/// Counters and flags the backplane's tasks update.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) publisher_up: AtomicBool,
    pub(crate) subscriber_up: AtomicBool,
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped_while_down: AtomicU64,
    pub(crate) dropped_inbound: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) room_subscriptions: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let text = format!("{what}: {e}");
        tracing::warn!(error = %text, "backplane");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

/// A snapshot of one system's backplane.
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
    /// The last Redis error, if any.
    pub last_error: Option<String>,
}

impl Status {
    /// `"up"` or `"down"`.
    pub fn state(&self) -> &'static str {
        if self.connected {
            "up"
        } else {
            "down"
        }
    }

    /// A JSON object for a `/health` response, e.g.
    /// `{"state":"up","node":"…","published":3,…,"last_error":null}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
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
            "last_error": self.last_error,
        })
    }
}

pub(crate) fn snapshot(system: &'static str, node_id: NodeId, s: &Shared) -> Status {
    let publisher_connected = s.publisher_up.load(Relaxed);
    let subscriber_connected = s.subscriber_up.load(Relaxed);
    Status {
        system,
        node_id,
        connected: publisher_connected && subscriber_connected,
        publisher_connected,
        subscriber_connected,
        published: s.published.load(Relaxed),
        received: s.received.load(Relaxed),
        dropped_while_down: s.dropped_while_down.load(Relaxed),
        dropped_inbound: s.dropped_inbound.load(Relaxed),
        missed: s.missed.load(Relaxed),
        invalid: s.invalid.load(Relaxed),
        reconnects: s.reconnects.load(Relaxed),
        errors: s.errors.load(Relaxed),
        room_subscriptions: s.room_subscriptions.load(Relaxed),
        last_error: s
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    }
}

type Field = fn(&Status) -> u64;

/// The metric families, in exposition order.
const FAMILIES: &[(&str, &str, &str, Field)] = &[
    (
        "switchboard_backplane_up",
        "gauge",
        "1 when both Redis connections of the backplane are up, else 0.",
        |s| u64::from(s.connected),
    ),
    (
        "switchboard_backplane_published_total",
        "counter",
        "Local publications handed to Redis.",
        |s| s.published,
    ),
    (
        "switchboard_backplane_received_total",
        "counter",
        "Other nodes' publications injected into the local hub.",
        |s| s.received,
    ),
    (
        "switchboard_backplane_dropped_while_down_total",
        "counter",
        "Local publications not replicated because Redis was unreachable.",
        |s| s.dropped_while_down,
    ),
    (
        "switchboard_backplane_dropped_inbound_total",
        "counter",
        "Other nodes' publications dropped because the local hub's queue was full.",
        |s| s.dropped_inbound,
    ),
    (
        "switchboard_backplane_missed_total",
        "counter",
        "Other nodes' broadcast publications that never arrived (sequence gaps).",
        |s| s.missed,
    ),
    (
        "switchboard_backplane_invalid_total",
        "counter",
        "Messages on backplane channels that could not be decoded.",
        |s| s.invalid,
    ),
    (
        "switchboard_backplane_reconnects_total",
        "counter",
        "Redis connections re-established after a loss.",
        |s| s.reconnects,
    ),
    (
        "switchboard_backplane_errors_total",
        "counter",
        "Redis errors: failed connects, failed commands, lost connections.",
        |s| s.errors,
    ),
    (
        "switchboard_backplane_room_subscriptions",
        "gauge",
        "Room channels this node is subscribed to.",
        |s| s.room_subscriptions,
    ),
];

/// Write the families of several backplanes, one sample per system in each family.
pub fn render_prometheus(statuses: &[Status], out: &mut Exposition) {
    for (name, kind, help, field) in FAMILIES {
        let kind = if *kind == "gauge" {
            Kind::Gauge
        } else {
            Kind::Counter
        };
        out.family(name, kind, help);
        for s in statuses {
            out.sample(name, &[("system", s.system)], field(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(system: &'static str, up: bool) -> Status {
        let shared = Shared::default();
        shared.publisher_up.store(up, Relaxed);
        shared.subscriber_up.store(up, Relaxed);
        Shared::add(&shared.published, 7);
        Shared::add(&shared.dropped_while_down, 2);
        shared.error("connect", &"connection refused \"quoted\"");
        snapshot(system, NodeId::new(1), &shared)
    }

    #[test]
    fn json_and_prometheus() {
        let up = status("collab", true);
        assert_eq!(up.state(), "up");
        let v = up.to_json();
        assert_eq!(v["state"], "up");
        assert_eq!(v["published"], 7);
        assert_eq!(v["dropped_while_down"], 2);
        assert_eq!(v["last_error"], "connect: connection refused \"quoted\"");
        assert_eq!(v["node"], "0000000000000001");
        let down = status("race", false);
        assert_eq!(down.state(), "down");
        let mut out = Exposition::default();
        render_prometheus(&[up, down], &mut out);
        let out = out.finish();
        assert!(out.contains("switchboard_backplane_up{system=\"collab\"} 1\n"));
        assert!(out.contains("switchboard_backplane_up{system=\"race\"} 0\n"));
        assert!(out.contains("switchboard_backplane_published_total{system=\"race\"} 7\n"));
        assert_eq!(
            out.matches("# TYPE switchboard_backplane_up gauge").count(),
            1
        );
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
