//! Time as the hub sees it: instants handed in by the driver, never read from a clock.
//!
//! Two clocks, kept apart as quinn and smoltcp keep them: [`Instant`] is monotonic (an arbitrary
//! origin; every timer, rate and idle check runs on it, so a step of the wall clock never closes
//! a connection or stalls a heartbeat), and [`UnixTime`] is the wall clock, read only when a
//! protocol stamps a message.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on a monotonic clock, in microseconds from an origin the driver chose (e.g. when
/// the process started), as supplied by the driver.
///
/// The hub never reads a clock, only compares instants, and treats an instant earlier than one
/// it has seen as "no time passed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// The instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// The instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1000
    }

    /// Whole seconds since the origin.
    pub const fn as_secs(self) -> u64 {
        self.micros / 1_000_000
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let add = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(add),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

/// A wall-clock time: microseconds since the Unix epoch (UTC), for stamping messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime {
    micros: u64,
}

impl UnixTime {
    /// The Unix epoch.
    pub const EPOCH: UnixTime = UnixTime { micros: 0 };

    /// `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        UnixTime { micros }
    }

    /// `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        UnixTime {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the Unix epoch (JavaScript's `Date.now()`).
    pub const fn as_millis(self) -> u64 {
        self.micros / 1000
    }

    /// Whole seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.micros / 1_000_000
    }
}

impl Add<Duration> for UnixTime {
    type Output = UnixTime;
    fn add(self, rhs: Duration) -> UnixTime {
        let add = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        UnixTime {
            micros: self.micros.saturating_add(add),
        }
    }
}

#[cfg(feature = "std")]
impl From<std::time::SystemTime> for UnixTime {
    fn from(t: std::time::SystemTime) -> Self {
        let micros = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        UnixTime { micros }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_micros(10);
        assert_eq!(Instant::from_micros(5) - t, Duration::ZERO);
        assert_eq!((t + Duration::MAX).as_micros(), u64::MAX);
    }
}
