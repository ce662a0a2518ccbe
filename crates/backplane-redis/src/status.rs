//! The backplane's state for `/health` and `/metrics`: shared atomics, read without locking the
//! tasks that update them.

use switchboard_backplane::Status;
use switchboard_runtime::metrics::{Exposition, Kind};

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
    (
        "switchboard_backplane_nodes",
        "gauge",
        "Other live nodes of the cluster, as last read with this node's lease.",
        |s| s.nodes,
    ),
];

/// The per-instance families, with several Redis instances (label `redis`: the instance's
/// `host:port`; at most 16 per system).
const INSTANCE_FAMILIES: &[(&str, &str, &str, Field)] = &[
    (
        "switchboard_backplane_instance_up",
        "gauge",
        "1 when both connections to this Redis instance are up, else 0.",
        |s| u64::from(s.connected),
    ),
    (
        "switchboard_backplane_instance_published_total",
        "counter",
        "Local publications handed to this Redis instance.",
        |s| s.published,
    ),
    (
        "switchboard_backplane_instance_received_total",
        "counter",
        "Other nodes' publications received from this Redis instance.",
        |s| s.received,
    ),
    (
        "switchboard_backplane_instance_dropped_while_down_total",
        "counter",
        "Local publications not replicated because this Redis instance was unreachable.",
        |s| s.dropped_while_down,
    ),
    (
        "switchboard_backplane_instance_errors_total",
        "counter",
        "Errors on this Redis instance's connections.",
        |s| s.errors,
    ),
];

/// Write the families of several backplanes, one sample per system in each family (and, for a
/// system spread over several Redis instances, one per instance in the instance families).
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
    if statuses.iter().all(|s| s.instances.is_empty()) {
        return; // One Redis: exactly the families above.
    }
    for (name, kind, help, field) in INSTANCE_FAMILIES {
        let kind = if *kind == "gauge" {
            Kind::Gauge
        } else {
            Kind::Counter
        };
        out.family(name, kind, help);
        for s in statuses {
            for i in &s.instances {
                let redis = i.address.as_deref().unwrap_or("");
                out.sample(name, &[("system", s.system), ("redis", redis)], field(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_backplane::NodeId;

    fn status(system: &'static str, up: bool) -> Status {
        let mut s = Status::new(system, NodeId::new(1));
        s.publisher_connected = up;
        s.subscriber_connected = up;
        s.connected = up;
        s.published = 7;
        s.dropped_while_down = 2;
        s.error("connect", "connection refused \"quoted\"");
        s
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
        assert!(!out.contains("instance"), "one Redis: no instance families");
    }

    #[test]
    fn several_instances_have_a_sample_each() {
        let mut total = status("race", false);
        total.instances = vec![status("race", true), status("race", false)];
        total.instances[0].address = Some("127.0.0.1:7001".into());
        total.instances[1].address = Some("127.0.0.1:7002".into());
        assert_eq!(total.state(), "degraded");
        let mut out = Exposition::default();
        render_prometheus(&[total], &mut out);
        let out = out.finish();
        assert!(out.contains(
            "switchboard_backplane_instance_up{system=\"race\",redis=\"127.0.0.1:7001\"} 1\n"
        ));
        assert!(out.contains(
            "switchboard_backplane_instance_up{system=\"race\",redis=\"127.0.0.1:7002\"} 0\n"
        ));
    }
}
