//! Counters and gauges for `/metrics` and the seeds' stats endpoints.

use alloc::collections::BTreeMap;

use crate::history::HistoryStats;

/// Monotonic counters since the hub was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted.
    pub connections_opened: u64,
    /// Connections gone, for any reason.
    pub connections_closed: u64,
    /// Frames received.
    pub messages_in: u64,
    /// Bytes of frames received.
    pub bytes_in: u64,
    /// Publications fanned out (direct replies are not counted).
    pub publications: u64,
    /// Frames queued to connections (each recipient of a publication counts once).
    pub deliveries: u64,
    /// Bytes queued to connections.
    pub bytes_out: u64,
    /// Deliveries skipped by the `Drop` slow-consumer policy.
    pub dropped_deliveries: u64,
    /// Connections closed by the `Close` slow-consumer policy.
    pub slow_consumer_closes: u64,
    /// Times a connection was paused for sending above the inbound rate
    /// ([`crate::RatePolicy::Throttle`]).
    pub throttled: u64,
    /// Connections closed for idleness.
    pub idle_timeouts: u64,
    /// Local publications the driver could not hand to the cluster backplane (its queue was
    /// full), as reported with [`crate::Hub::handle_replication_dropped`].
    pub replication_dropped: u64,
    /// v2 sessions taken up again by a reconnecting client.
    pub sessions_resumed: u64,
    /// Kept publications handed to the history engine ([`crate::Output::Append`]).
    pub appended: u64,
    /// Stream subscriptions that resumed from a position and recovered everything missed.
    pub resumed: u64,
    /// Stream subscriptions whose missed publications could not be replayed (told
    /// `recovered: false`).
    pub not_recovered: u64,
    /// Publications replayed from history.
    pub replayed: u64,
    /// Gap reports sent to v2 connections that missed publications while connected.
    pub gaps: u64,
    /// Holes in a shared history's stream (publications this node's channel lost) fetched
    /// before delivering on.
    pub holes: u64,
    /// Offsets of such holes the history no longer had: reported to v2 clients as gaps.
    pub holes_lost: u64,
    /// v2 client messages recognised as resends and not processed again.
    pub duplicates: u64,
    /// HTTP requests answered from an earlier request with the same `Idempotency-Key`.
    pub idempotent_replays: u64,
    /// Errors by kind (`not_json`, `unknown_type`, `frame_too_large`, `rate_limited`, ...).
    pub errors: BTreeMap<&'static str, u64>,
}

/// A snapshot of the hub's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub connections: usize,
    /// Non-empty rooms.
    pub rooms: usize,
    /// Outbound bytes queued across all connections and not yet flushed.
    pub queued_bytes: usize,
    /// v2 sessions, with a connection or waiting for their client to come back.
    pub sessions: usize,
    /// The history engine's counts and sizes: filled by the driver that runs the engine (the
    /// hub only asks it questions), zero without history.
    pub history: HistoryStats,
    /// Counters.
    pub counters: Counters,
}
