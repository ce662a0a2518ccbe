//! Prometheus text exposition (format 0.0.4) for every system running in the process.
//!
//! Each [`crate::Server`] registers its hub in a [`Metrics`] registry for as long as it runs;
//! servers started together ([`crate::Server::start_all`]) share one registry, so `/metrics` on
//! any of their ports shows every system, each sample labelled `system="<name>"`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use switchboard_hub::Stats;
use switchboard_tokio::admission::Refusals;
use switchboard_tokio::HubHandle;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry of running hubs, shared by the servers of one process. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

/// Writes extra exposition text, e.g. a cluster backplane's families.
type Section = Arc<dyn Fn(&mut String) + Send + Sync>;

/// A JSON value `/health` adds under a key for one system, e.g. its backplane state.
type HealthSection = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    hubs: Vec<(u64, HubHandle, Arc<Refusals>)>,
    sections: Vec<(u64, Section)>,
    health: Vec<(u64, &'static str, &'static str, HealthSection)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("hubs", &self.hubs)
            .field("sections", &self.sections.len())
            .finish()
    }
}

/// Keeps a hub or section in its registry; dropping it removes it (when its server stops).
#[derive(Debug)]
pub struct Registration {
    metrics: Metrics,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.metrics.lock();
        registry.hubs.retain(|(id, ..)| *id != self.id);
        registry.sections.retain(|(id, _)| *id != self.id);
        registry.health.retain(|(id, ..)| *id != self.id);
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry is a plain list; a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn registration(&self, add: impl FnOnce(&mut Registry, u64)) -> Registration {
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        add(&mut registry, id);
        Registration {
            metrics: self.clone(),
            id,
        }
    }

    /// Add a hub and its system's refusal counts until the returned registration is dropped.
    pub fn register(&self, hub: HubHandle, refusals: Arc<Refusals>) -> Registration {
        self.registration(|r, id| r.hubs.push((id, hub, refusals)))
    }

    /// Append `section`'s text (whole families, `# HELP`/`# TYPE` included) to every render
    /// until the returned registration is dropped; for state outside the hubs, such as a cluster
    /// backplane.
    pub fn register_section(
        &self,
        section: impl Fn(&mut String) + Send + Sync + 'static,
    ) -> Registration {
        let section: Section = Arc::new(section);
        self.registration(|r, id| r.sections.push((id, section)))
    }

    /// Add `key: section()` to the JSON `/health` answers of `system` until the returned
    /// registration is dropped; e.g. `backplane` with the cluster link's state.
    pub fn register_health(
        &self,
        system: &'static str,
        key: &'static str,
        section: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Registration {
        let section: HealthSection = Arc::new(section);
        self.registration(|r, id| r.health.push((id, system, key, section)))
    }

    /// The extra `/health` fields registered for `system`.
    pub fn health_of(&self, system: &str) -> Vec<(&'static str, serde_json::Value)> {
        let sections: Vec<_> = {
            let registry = self.lock();
            registry
                .health
                .iter()
                .filter(|(_, s, ..)| *s == system)
                .map(|(_, _, key, f)| (*key, f.clone()))
                .collect()
        };
        sections.into_iter().map(|(key, f)| (key, f())).collect()
    }

    /// Snapshot every registered hub (ordered by system name) and render the exposition, then
    /// the registered sections. A hub that has stopped meanwhile is left out.
    pub async fn render(&self) -> String {
        let (hubs, sections): (Vec<(HubHandle, Arc<Refusals>)>, Vec<Section>) = {
            let registry = self.lock();
            (
                registry
                    .hubs
                    .iter()
                    .map(|(_, h, r)| (h.clone(), r.clone()))
                    .collect(),
                registry.sections.iter().map(|(_, s)| s.clone()).collect(),
            )
        };
        let mut systems = Vec::with_capacity(hubs.len());
        let mut refused = Vec::new();
        for (hub, refusals) in hubs {
            if let Ok(stats) = hub.stats().await {
                systems.push((hub.name(), stats));
            }
            refused.push((hub.name(), refusals.snapshot()));
        }
        systems.sort_by_key(|(name, _)| *name);
        refused.sort_by_key(|(name, _)| *name);
        let mut out = render(&systems);
        render_refusals(&mut out, &refused);
        for section in sections {
            section(&mut out);
        }
        out
    }
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Stats) -> u64,
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
        value,
    }
}

const fn counter(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: "counter",
        help,
        value,
    }
}

const FAMILIES: &[Family] = &[
    gauge(
        "switchboard_connections",
        "Open WebSocket connections.",
        |s| s.connections as u64,
    ),
    gauge("switchboard_rooms", "Non-empty rooms.", |s| s.rooms as u64),
    gauge(
        "switchboard_queued_bytes",
        "Outbound bytes queued to connections and not yet flushed.",
        |s| s.queued_bytes as u64,
    ),
    counter(
        "switchboard_connections_opened_total",
        "Connections accepted.",
        |s| s.counters.connections_opened,
    ),
    counter(
        "switchboard_connections_closed_total",
        "Connections gone, for any reason.",
        |s| s.counters.connections_closed,
    ),
    counter(
        "switchboard_messages_in_total",
        "Frames received from clients.",
        |s| s.counters.messages_in,
    ),
    counter(
        "switchboard_bytes_in_total",
        "Bytes of frames received from clients.",
        |s| s.counters.bytes_in,
    ),
    counter(
        "switchboard_publications_total",
        "Publications fanned out (direct replies not counted).",
        |s| s.counters.publications,
    ),
    counter(
        "switchboard_deliveries_total",
        "Frames queued to connections.",
        |s| s.counters.deliveries,
    ),
    counter(
        "switchboard_bytes_out_total",
        "Bytes of frames queued to connections.",
        |s| s.counters.bytes_out,
    ),
    counter(
        "switchboard_dropped_deliveries_total",
        "Deliveries skipped because a client's outbound queue was full (drop policy).",
        |s| s.counters.dropped_deliveries,
    ),
    counter(
        "switchboard_replication_dropped_total",
        "Local publications not carried to other nodes because the backplane's queue was full.",
        |s| s.counters.replication_dropped,
    ),
    counter(
        "switchboard_slow_consumer_closes_total",
        "Connections closed because their outbound queue was full (close policy, code 4008).",
        |s| s.counters.slow_consumer_closes,
    ),
    counter(
        "switchboard_throttled_total",
        "Times a client was paused for sending above the inbound rate (throttle policy).",
        |s| s.counters.throttled,
    ),
    counter(
        "switchboard_idle_timeouts_total",
        "Connections closed for idleness (code 4000).",
        |s| s.counters.idle_timeouts,
    ),
];

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Render snapshots of named systems as Prometheus text.
pub fn render(systems: &[(&str, Stats)]) -> String {
    let mut out = String::with_capacity(256 + systems.len() * 1024);
    // Writing to a String cannot fail.
    for f in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (system, stats) in systems {
            let _ = writeln!(
                out,
                "{}{{system=\"{}\"}} {}",
                f.name,
                label(system),
                (f.value)(stats)
            );
        }
    }
    let name = "switchboard_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Errors by kind (bad client input, refused requests, limits hit)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (system, stats) in systems {
        for (kind, n) in &stats.counters.errors {
            let _ = writeln!(
                out,
                "{name}{{system=\"{}\",kind=\"{}\"}} {n}",
                label(system),
                label(kind)
            );
        }
    }
    out
}

/// One system's refusal counts: (kind, reason, count).
pub type RefusalCounts = Vec<(&'static str, &'static str, u64)>;

/// Render what each system refused: `switchboard_refused_total{system, kind, reason}`, where
/// kind is `socket` (at accept), `upgrade` or `http`.
pub fn render_refusals(out: &mut String, systems: &[(&str, RefusalCounts)]) {
    let name = "switchboard_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Sockets, upgrades and HTTP requests refused, by kind and reason."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (system, counts) in systems {
        for (kind, reason, n) in counts {
            let _ = writeln!(
                out,
                "{name}{{system=\"{}\",kind=\"{}\",reason=\"{}\"}} {n}",
                label(system),
                label(kind),
                label(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_per_system() {
        let mut a = Stats {
            connections: 3,
            ..Stats::default()
        };
        a.counters.slow_consumer_closes = 1;
        a.counters.errors.insert("not_json", 2);
        let text = render(&[("collab", a), ("race", Stats::default())]);
        assert!(text.contains("# TYPE switchboard_connections gauge\n"));
        assert!(text.contains("switchboard_connections{system=\"collab\"} 3\n"));
        assert!(text.contains("switchboard_connections{system=\"race\"} 0\n"));
        assert!(text.contains("switchboard_slow_consumer_closes_total{system=\"collab\"} 1\n"));
        assert!(text.contains("switchboard_errors_total{system=\"collab\",kind=\"not_json\"} 2\n"));
        for f in FAMILIES {
            assert!(text.contains(&format!("# HELP {} ", f.name)), "{}", f.name);
            assert!(text.contains(&format!("# TYPE {} {}\n", f.name, f.kind)));
        }
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn sections_render_until_dropped() {
        let metrics = Metrics::new();
        let section = metrics.register_section(|out| out.push_str("extra_up 1\n"));
        assert!(metrics.render().await.ends_with("extra_up 1\n"));
        drop(section);
        assert!(!metrics.render().await.contains("extra_up"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
