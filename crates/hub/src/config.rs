//! Limits and timing, all with defaults a public-facing server can start from.

use core::time::Duration;

use crate::history::HistoryLimits;

/// What the hub does when a connection's outbound queue would exceed [`Limits::max_queued_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Skip this delivery for that connection only and count it in `dropped_deliveries`.
    Drop,
    /// Close that connection with [`crate::CloseCode::SLOW_CONSUMER`].
    Close,
}

/// What the hub does with a connection that sends faster than [`Limits::inbound_rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RatePolicy {
    /// Stop reading it until its bucket has refilled ([`crate::Output::PauseReading`]). Frames
    /// that were already on their way wait in the hub (at most [`MAX_HELD_FRAMES`]) and are
    /// processed in order as tokens arrive; TCP backpressure does the rest. Nothing is lost.
    #[default]
    Throttle,
    /// Close it with `POLICY_VIOLATION` (1008).
    Close,
}

/// Frames a throttled connection may have waiting in the hub. A driver that honours
/// [`crate::Output::PauseReading`] and keeps a few frames in flight never reaches it; a
/// connection that does is closed with `POLICY_VIOLATION` (1008).
pub const MAX_HELD_FRAMES: usize = 32;

/// A token bucket on inbound messages per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages that may arrive at once above the sustained rate.
    pub burst: u32,
}

/// Limits on what one connection, or all of them, may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest inbound frame in bytes; larger closes the connection with `MESSAGE_TOO_BIG` (1009).
    pub max_frame_bytes: usize,
    /// Open connections; one more is refused at open with [`crate::OpenError::TooManyConnections`].
    pub max_connections: usize,
    /// Rooms one connection may be in; one more is refused with [`crate::JoinError::TooManyRooms`].
    pub max_rooms_per_connection: usize,
    /// Rooms in the whole hub; one more is refused with [`crate::JoinError::TooManyRoomsInHub`].
    pub max_rooms: usize,
    /// Outbound bytes handed to the driver and not yet reported flushed, per connection.
    pub max_queued_bytes: usize,
    /// What happens when `max_queued_bytes` would be exceeded.
    pub slow_consumer: SlowConsumerPolicy,
    /// Inbound rate per connection: every frame counts, control frames (pings, pongs)
    /// included. Above it, [`Limits::rate_policy`] applies. `None` disables the limit.
    pub inbound_rate: Option<RateLimit>,
    /// What happens to a connection above `inbound_rate`.
    pub rate_policy: RatePolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_connections: 100_000,
            max_rooms_per_connection: 64,
            max_rooms: 100_000,
            max_queued_bytes: 1024 * 1024,
            slow_consumer: SlowConsumerPolicy::Close,
            inbound_rate: Some(RateLimit {
                per_second: 100,
                burst: 200,
            }),
            rate_policy: RatePolicy::Throttle,
        }
    }
}

/// Secret randomness for the hub (session ids). Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// Sessions and streams of protocol v2, and the limits of the history that serves them (history
/// itself lives in an engine beside the hub: see [`crate::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// What the history engine keeps per stream and per system (the hub does not read them;
    /// the driver builds its engine with them).
    pub limits: HistoryLimits,
    /// How long a session outlives its connection, waiting for its client to resume it.
    pub session_ttl: Duration,
    /// Sessions kept without a connection; past it the oldest goes first.
    pub max_detached_sessions: usize,
    /// Bytes the sessions kept without a connection may hold in all (their message ids and
    /// acks); past it the oldest goes first.
    pub max_detached_bytes: usize,
    /// Client message ids a session remembers, to recognise a resend.
    pub dedup_window: usize,
    /// HTTP `Idempotency-Key`s remembered (for `session_ttl`); past it the oldest goes first.
    pub max_idempotency_keys: usize,
    /// Where session ids come from: use a random seed (session ids must be unguessable).
    pub seed: Seed,
    /// The history engine is shared by the nodes of a cluster and carries kept publications
    /// between them with their positions (the Redis engine). Then a kept publication is not
    /// [`crate::Output::Replicate`]d (appending it publishes it); v2 connections get every kept
    /// publication, this node's own included, from [`crate::Hub::handle_positioned`], in offset
    /// order per stream (a hole is fetched before anything after it goes out); and a session
    /// presented from another node is taken over by id (it was random and only its client knew
    /// it), so a client whose node died resumes on another one.
    pub shared: bool,
}

impl HistoryConfig {
    /// Defaults (history and sessions kept 5 minutes, 100 000 sessions, 64 message ids each)
    /// with `seed`.
    pub fn with_seed(seed: [u8; 32]) -> Self {
        let limits = HistoryLimits::default();
        HistoryConfig {
            limits,
            session_ttl: limits.max_age,
            max_detached_sessions: 100_000,
            max_detached_bytes: 64 << 20,
            dedup_window: 64,
            max_idempotency_keys: 10_000,
            seed: Seed(seed),
            shared: false,
        }
    }
}

/// Everything the hub needs to know up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Resource limits and the slow-consumer policy.
    pub limits: Limits,
    /// How often the driver is asked to send a WebSocket ping to each connection. `None`: never.
    pub heartbeat_interval: Option<Duration>,
    /// A connection with no inbound traffic (frames or pongs) for this long is closed with
    /// [`crate::CloseCode::IDLE_TIMEOUT`]. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Emit [`crate::Output::Replicate`] for every local publication, for a cluster backplane.
    pub replicate: bool,
    /// Keep history and serve protocol v2 (sessions, positions, resume). `None`: v1 only.
    pub history: Option<HistoryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            heartbeat_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(75)),
            replicate: false,
            history: None,
        }
    }
}
