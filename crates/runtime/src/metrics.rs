//! Prometheus text exposition (format 0.0.4) for every system running in the process: the one
//! renderer ([`Exposition`]) every part of the server writes its families with, and the registry
//! ([`Metrics`]) of what is running.
//!
//! Each [`System`] is registered for as long as it runs; systems of one process share one
//! registry, so `/metrics` on any of their ports shows every system, each sample labelled
//! `system="<name>"`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use switchboard_hub::Stats;

use crate::system::System;
use crate::tls::{HandshakeFailure, Handshakes, ReloadCounts};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry of running hubs, shared by the servers of one process. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

/// Writes extra families, e.g. a cluster backplane's.
type Section = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// A JSON value `/health` adds under a key for one system, e.g. its backplane state.
type HealthSection = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    systems: Vec<(u64, Arc<System>)>,
    sections: Vec<(u64, Section)>,
    health: Vec<(u64, &'static str, &'static str, HealthSection)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("systems", &self.systems.len())
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
        registry.systems.retain(|(id, _)| *id != self.id);
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

    /// Add a system until the returned registration is dropped.
    pub fn register(&self, system: Arc<System>) -> Registration {
        self.registration(|r, id| r.systems.push((id, system)))
    }

    /// Let `section` write its families into every render until the returned registration is
    /// dropped; for state outside the hubs, such as a cluster backplane.
    pub fn register_section(
        &self,
        section: impl Fn(&mut Exposition) + Send + Sync + 'static,
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

    /// Snapshot every registered system (ordered by name) and render the exposition, then the
    /// registered sections. A hub that has stopped meanwhile is left out.
    pub async fn render(&self) -> String {
        let (systems, sections): (Vec<Arc<System>>, Vec<Section>) = {
            let registry = self.lock();
            (
                registry.systems.iter().map(|(_, s)| s.clone()).collect(),
                registry.sections.iter().map(|(_, s)| s.clone()).collect(),
            )
        };
        let mut snapshots = Vec::with_capacity(systems.len());
        let mut refused = Vec::with_capacity(systems.len());
        for system in &systems {
            if let Ok(stats) = system.hub().stats().await {
                snapshots.push((system.name(), stats));
            }
            refused.push((system.name(), system.refusals().snapshot()));
        }
        snapshots.sort_by_key(|(name, _)| *name);
        refused.sort_by_key(|(name, _)| *name);
        let mut out = Exposition::default();
        render_hubs(&mut out, &snapshots);
        render_refusals(&mut out, &refused);
        let mut sse: Vec<(&str, u64, u64)> = systems
            .iter()
            .map(|s| (s.name(), s.sse_streams().open(), s.sse_streams().total()))
            .collect();
        sse.sort_by_key(|(name, ..)| *name);
        render_sse(&mut out, &sse);
        let mut tls: Vec<(&str, &Handshakes)> = systems
            .iter()
            .map(|s| (s.name(), s.tls_handshakes()))
            .filter(|(_, h)| h.is_enabled())
            .collect();
        tls.sort_by_key(|(name, _)| *name);
        if !tls.is_empty() {
            render_handshakes(&mut out, &tls);
        }
        for section in sections {
            section(&mut out);
        }
        out.finish()
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up.
    Counter,
}

/// Prometheus text (format 0.0.4) being written: each family's `# HELP` and `# TYPE` once, then
/// its samples, label values escaped.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Start family `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of family `name` with `labels`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&Stats) -> u64,
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
        value,
    }
}

const fn counter(name: &'static str, help: &'static str, value: fn(&Stats) -> u64) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
        value,
    }
}

const FAMILIES: &[Family] = &[
    gauge(
        "switchboard_connections",
        "Open connections (WebSocket and server-sent-event streams).",
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
    gauge(
        "switchboard_sessions",
        "Protocol v2 sessions, connected or waiting for their client to resume them.",
        |s| s.sessions as u64,
    ),
    counter(
        "switchboard_sessions_resumed_total",
        "Protocol v2 sessions taken up again by a reconnecting client.",
        |s| s.counters.sessions_resumed,
    ),
    counter(
        "switchboard_kept_publications_total",
        "Publications handed to the history (protocol v2 streams).",
        |s| s.counters.appended,
    ),
    counter(
        "switchboard_recovered_total",
        "Stream subscriptions that resumed from a position and got everything missed.",
        |s| s.counters.resumed,
    ),
    counter(
        "switchboard_not_recovered_total",
        "Stream subscriptions told `recovered: false` (missed publications not in the history).",
        |s| s.counters.not_recovered,
    ),
    counter(
        "switchboard_replayed_total",
        "Publications replayed from the history to resuming clients.",
        |s| s.counters.replayed,
    ),
    counter(
        "switchboard_gaps_total",
        "Gap reports sent to v2 clients that missed publications while connected.",
        |s| s.counters.gaps,
    ),
    counter(
        "switchboard_history_holes_total",
        "Holes in a shared history's stream this node's channel lost and fetched before going on.",
        |s| s.counters.holes,
    ),
    counter(
        "switchboard_history_holes_lost_total",
        "Offsets of such holes the history no longer had (reported to v2 clients as gaps).",
        |s| s.counters.holes_lost,
    ),
    counter(
        "switchboard_duplicates_total",
        "v2 client messages recognised as resends and not processed again.",
        |s| s.counters.duplicates,
    ),
    counter(
        "switchboard_idempotent_replays_total",
        "HTTP publish requests answered from an earlier one with the same Idempotency-Key.",
        |s| s.counters.idempotent_replays,
    ),
    gauge(
        "switchboard_history_streams",
        "Streams the history remembers.",
        |s| s.history.streams as u64,
    ),
    gauge(
        "switchboard_history_entries",
        "Publications the history keeps.",
        |s| s.history.entries as u64,
    ),
    gauge(
        "switchboard_history_bytes",
        "Bytes the history keeps.",
        |s| s.history.bytes as u64,
    ),
    counter(
        "switchboard_history_trimmed_total",
        "Publications the history dropped for its count, age or bytes limit.",
        |s| s.history.trimmed,
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

/// Write the hub families for snapshots of named systems.
pub fn render_hubs(out: &mut Exposition, systems: &[(&str, Stats)]) {
    for f in FAMILIES {
        out.family(f.name, f.kind, f.help);
        for (system, stats) in systems {
            out.sample(f.name, &[("system", system)], (f.value)(stats));
        }
    }
    let name = "switchboard_errors_total";
    out.family(
        name,
        Kind::Counter,
        "Errors by kind (bad client input, refused requests, limits hit).",
    );
    for (system, stats) in systems {
        for (kind, n) in &stats.counters.errors {
            out.sample(name, &[("system", system), ("kind", kind)], *n);
        }
    }
}

/// One system's refusal counts: (kind, reason, count).
pub type RefusalCounts = Vec<(&'static str, &'static str, u64)>;

/// Write what each system refused: `switchboard_refused_total{system, kind, reason}`, where
/// kind is `socket` (at accept), `upgrade` or `http`.
pub fn render_refusals(out: &mut Exposition, systems: &[(&str, RefusalCounts)]) {
    let name = "switchboard_refused_total";
    out.family(
        name,
        Kind::Counter,
        "Sockets, upgrades and HTTP requests refused, by kind and reason.",
    );
    for (system, counts) in systems {
        for (kind, reason, n) in counts {
            out.sample(
                name,
                &[("system", system), ("kind", kind), ("reason", reason)],
                *n,
            );
        }
    }
}

/// Write each system's server-sent-event streams: `switchboard_sse_connections{system}` (open
/// now; each is also one of `switchboard_connections`) and
/// `switchboard_sse_connections_opened_total{system}`.
pub fn render_sse(out: &mut Exposition, systems: &[(&str, u64, u64)]) {
    let name = "switchboard_sse_connections";
    out.family(
        name,
        Kind::Gauge,
        "Open server-sent-event streams (counted in switchboard_connections too).",
    );
    for (system, open, _) in systems {
        out.sample(name, &[("system", system)], *open);
    }
    let name = "switchboard_sse_connections_opened_total";
    out.family(name, Kind::Counter, "Server-sent-event streams answered.");
    for (system, _, total) in systems {
        out.sample(name, &[("system", system)], *total);
    }
}

/// Write each TLS system's handshakes: `switchboard_tls_handshakes_total{system}` and
/// `switchboard_tls_handshake_failures_total{system, reason}` (every reason, zeros included).
pub fn render_handshakes(out: &mut Exposition, systems: &[(&str, &Handshakes)]) {
    let name = "switchboard_tls_handshakes_total";
    out.family(name, Kind::Counter, "TLS handshakes completed.");
    for (system, h) in systems {
        out.sample(name, &[("system", system)], h.completed());
    }
    let name = "switchboard_tls_handshake_failures_total";
    out.family(
        name,
        Kind::Counter,
        "TLS handshakes failed, by reason (timeout, closed, not_tls, peer_alert, protocol).",
    );
    for (system, h) in systems {
        for reason in HandshakeFailure::ALL {
            let labels = [("system", *system), ("reason", reason.as_str())];
            out.sample(name, &labels, h.failed(reason));
        }
    }
}

/// Write how the TLS certificate reloads went: `switchboard_tls_reloads_total{result}` and
/// `switchboard_tls_last_reload_successful`.
pub fn render_reloads(out: &mut Exposition, counts: ReloadCounts) {
    let name = "switchboard_tls_reloads_total";
    out.family(
        name,
        Kind::Counter,
        "TLS certificate reloads (SIGHUP), by result; a failed one keeps the certificate in use.",
    );
    out.sample(name, &[("result", "ok")], counts.ok);
    out.sample(name, &[("result", "error")], counts.failed);
    let name = "switchboard_tls_last_reload_successful";
    out.family(
        name,
        Kind::Gauge,
        "1 if the last TLS certificate reload (or the load at start) succeeded, else 0.",
    );
    out.sample(name, &[], u64::from(counts.last_ok));
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
        let mut out = Exposition::default();
        render_hubs(&mut out, &[("collab", a), ("race", Stats::default())]);
        let text = out.finish();
        assert!(text.contains("# TYPE switchboard_connections gauge\n"));
        assert!(text.contains("switchboard_connections{system=\"collab\"} 3\n"));
        assert!(text.contains("switchboard_connections{system=\"race\"} 0\n"));
        assert!(text.contains("switchboard_slow_consumer_closes_total{system=\"collab\"} 1\n"));
        assert!(text.contains("switchboard_errors_total{system=\"collab\",kind=\"not_json\"} 2\n"));
        for f in FAMILIES {
            assert!(text.contains(&format!("# HELP {} ", f.name)), "{}", f.name);
            let kind = if f.kind == Kind::Gauge {
                "gauge"
            } else {
                "counter"
            };
            assert!(text.contains(&format!("# TYPE {} {kind}\n", f.name)));
        }
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn sections_render_until_dropped() {
        let metrics = Metrics::new();
        let section = metrics.register_section(|out| out.sample("extra_up", &[], 1));
        assert!(metrics.render().await.ends_with("extra_up 1\n"));
        drop(section);
        assert!(!metrics.render().await.contains("extra_up"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
