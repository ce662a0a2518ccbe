//! One look at every system of the process, as the page shows it: per system its gauges,
//! counters, rates (from the change of the counters since the previous look of the same
//! stream), errors and refusals by reason, backplane state; for the system the page selected,
//! its largest rooms (with the page's search) and its connections open longest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use switchboard_hub::cluster::ClusterTotals;
use switchboard_hub::Stats;
use switchboard_runtime::admission::Admission;
use switchboard_runtime::inspect::{Query, MAX_CONNECTIONS_LISTED, MAX_ROOMS_LISTED};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::System;

/// What the page looks at besides every system's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The system whose rooms and connections are listed (the first one when unset or unknown).
    pub system: Option<String>,
    /// Only rooms whose name contains this.
    pub search: String,
}

/// A counter as the page names it, and how to read it.
type Counter = (&'static str, fn(&Stats) -> u64);

/// The counters a rate is shown for.
const RATED: &[Counter] = &[
    ("messages_in", |s| s.counters.messages_in),
    ("messages_out", |s| s.counters.deliveries),
    ("publications", |s| s.counters.publications),
    ("dropped", |s| s.counters.dropped_deliveries),
    ("slow_closes", |s| s.counters.slow_consumer_closes),
];

/// The counters shown as totals.
const TOTALS: &[Counter] = &[
    ("connections_opened", |s| s.counters.connections_opened),
    ("connections_closed", |s| s.counters.connections_closed),
    ("messages_in", |s| s.counters.messages_in),
    ("bytes_in", |s| s.counters.bytes_in),
    ("publications", |s| s.counters.publications),
    ("deliveries", |s| s.counters.deliveries),
    ("bytes_out", |s| s.counters.bytes_out),
    ("dropped_deliveries", |s| s.counters.dropped_deliveries),
    ("slow_consumer_closes", |s| s.counters.slow_consumer_closes),
    ("throttled", |s| s.counters.throttled),
    ("idle_timeouts", |s| s.counters.idle_timeouts),
    ("replication_dropped", |s| s.counters.replication_dropped),
    ("sessions_resumed", |s| s.counters.sessions_resumed),
    ("replayed", |s| s.counters.replayed),
    ("gaps", |s| s.counters.gaps),
];

/// Each system's rated counters at the previous look of one stream.
#[derive(Debug, Default)]
pub struct Rates {
    previous: HashMap<&'static str, (Instant, Vec<u64>)>,
}

impl Rates {
    /// Per-second rates of `system`'s counters since the previous call (`null` the first
    /// time), remembering these for the next.
    fn of(&mut self, system: &'static str, stats: &Stats, now: Instant) -> Value {
        let values: Vec<u64> = RATED.iter().map(|(_, f)| f(stats)).collect();
        let previous = self.previous.insert(system, (now, values.clone()));
        let mut out = Map::new();
        for (i, (name, _)) in RATED.iter().enumerate() {
            let rate = previous.as_ref().and_then(|(at, before)| {
                let secs = now.saturating_duration_since(*at).as_secs_f64();
                (secs > 0.0).then(|| values[i].saturating_sub(before[i]) as f64 / secs)
            });
            out.insert((*name).to_string(), json!(rate.map(round)));
        }
        Value::Object(out)
    }
}

/// `x` to two decimals.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What the process shares, for the page's header.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    /// Event streams open now.
    pub open: usize,
    /// At most this many at once.
    pub limit: usize,
}

/// Every live node's connections and rooms (this one's and the others' last summaries), and
/// how many nodes; `null` on a single node, or when no other node is live.
fn cluster(stats: &Stats, others: ClusterTotals) -> Value {
    if others.nodes == 0 {
        return Value::Null;
    }
    json!({
        "nodes": others.nodes + 1,
        "connections": stats.connections as u64 + others.connections,
        "rooms": stats.rooms as u64 + others.rooms,
    })
}

/// One look at `systems` as JSON (see the module docs), with rates relative to `rates`' last
/// look. A system whose hub has stopped is left out.
pub async fn snapshot(
    systems: &[Arc<System>],
    metrics: &Metrics,
    admission: &Admission,
    selection: &Selection,
    rates: &mut Rates,
    streams: Streams,
) -> Value {
    let selected = selection
        .system
        .as_deref()
        .and_then(|want| systems.iter().find(|s| s.name() == want))
        .or_else(|| systems.first())
        .map(|s| s.name());
    let mut cards = Vec::with_capacity(systems.len());
    let mut lists = Value::Null;
    for system in systems {
        let name = system.name();
        let query = if Some(name) == selected {
            Query::lists(&selection.search)
        } else {
            Query::counters()
        };
        let Ok(inspection) = system.hub().inspect(query.clone()).await else {
            continue;
        };
        let stats = &inspection.stats;
        let now = Instant::now();
        let totals: Map<String, Value> = TOTALS
            .iter()
            .map(|(n, f)| ((*n).to_string(), json!(f(stats))))
            .collect();
        let errors: Map<String, Value> = stats
            .counters
            .errors
            .iter()
            .map(|(kind, n)| ((*kind).to_string(), json!(n)))
            .collect();
        let refusals: Vec<Value> = system
            .refusals()
            .snapshot()
            .into_iter()
            .map(|(kind, reason, count)| json!({ "kind": kind, "reason": reason, "count": count }))
            .collect();
        let backplane = metrics
            .health_of(name)
            .into_iter()
            .find(|(key, _)| *key == "backplane")
            .map_or(Value::Null, |(_, v)| v);
        cards.push(json!({
            "name": name,
            "title": system.spec.title,
            "ready": system.is_ready(),
            "v2": system.speaks_v2(),
            "connections": stats.connections,
            "rooms": stats.rooms,
            "queued_bytes": stats.queued_bytes,
            "sessions": stats.sessions,
            "totals": totals,
            "rates": rates.of(name, stats, now),
            "errors": errors,
            "refusals": refusals,
            "backplane": backplane,
            "cluster": cluster(stats, inspection.cluster),
            "tapped": inspection.tapped,
        }));
        if Some(name) == selected {
            lists = json!({
                "system": name,
                "search": query.search,
                "rooms": inspection.rooms,
                "rooms_matching": inspection.rooms_matching,
                "rooms_total": stats.rooms,
                "connections": inspection.connections,
                "connections_total": stats.connections,
                "limits": { "rooms": MAX_ROOMS_LISTED, "connections": MAX_CONNECTIONS_LISTED },
            });
        }
    }
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    json!({
        "at_ms": at_ms,
        "version": env!("CARGO_PKG_VERSION"),
        "process": {
            "sockets_open": admission.open(),
            "socket_budget": admission.budget(),
            "streams_open": streams.open,
            "streams_limit": streams.limit,
        },
        "systems": cards,
        "selected": lists,
    })
}
