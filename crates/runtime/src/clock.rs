//! The two clocks the runtime reads for the hub: a monotonic one for every timer, and the wall
//! clock, which only stamps messages.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchboard_hub::{Instant, UnixTime};

/// Where the runtime reads time. The hub gets the monotonic reading as its `now` and the wall
/// clock separately, so a step of the wall clock (NTP, a VM resumed) moves timestamps and
/// nothing else.
pub trait Clock: Send + Sync + 'static {
    /// The monotonic clock.
    fn monotonic(&self) -> tokio::time::Instant;
    /// The wall clock.
    fn wall(&self) -> SystemTime;
}

/// The process's real clocks: tokio's monotonic clock (which tests may pause) and `SystemTime`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock as the hub sees it: monotonic instants counted from when it was made.
#[derive(Clone)]
pub struct HubClock {
    clock: Arc<dyn Clock>,
    origin: tokio::time::Instant,
}

impl std::fmt::Debug for HubClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClock")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Default for HubClock {
    fn default() -> Self {
        HubClock::new(Arc::new(SystemClock))
    }
}

impl HubClock {
    /// Hub time read from `clock`, with its origin now.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let origin = clock.monotonic();
        HubClock { clock, origin }
    }

    /// The hub's `now`.
    pub fn now(&self) -> Instant {
        let elapsed = self
            .clock
            .monotonic()
            .saturating_duration_since(self.origin);
        Instant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    /// The wall clock now.
    pub fn wall(&self) -> UnixTime {
        UnixTime::from(self.clock.wall())
    }

    /// The tokio instant of hub instant `at`, for sleeping until it.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_micros(at.as_micros())
    }
}
