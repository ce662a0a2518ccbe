//! Time as the hub sees it: an instant handed in by the driver, never read from a clock.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, in microseconds since the Unix epoch, as supplied by the driver.
///
/// The hub never reads a clock. Drivers pass wall-clock time so that protocol modules can stamp
/// messages with real timestamps; the hub itself only compares instants and treats a step
/// backwards as "no time passed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The Unix epoch.
    pub const EPOCH: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1000
    }

    /// Whole seconds since the Unix epoch.
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

#[cfg(feature = "std")]
impl From<std::time::SystemTime> for Instant {
    fn from(t: std::time::SystemTime) -> Self {
        let micros = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Instant { micros }
    }
}

/// A UTC calendar date and time of day, for formatting timestamps without `std`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year, e.g. 2025.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of month, 1 to 31.
    pub day: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute, 0 to 59.
    pub minute: u32,
    /// Second, 0 to 59.
    pub second: u32,
    /// Millisecond, 0 to 999.
    pub millis: u32,
}

impl From<Instant> for DateTime {
    fn from(t: Instant) -> Self {
        // Days-from-civil inverse (Howard Hinnant's algorithm), valid for the whole u64 range we use.
        let secs = t.as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            millis: (t.as_micros() / 1000 % 1000) as u32,
        }
    }
}

impl DateTime {
    /// `2025-01-01T12:30:00`: seconds precision, no zone (as Python's `isoformat()` prints UTC).
    pub fn iso_seconds(&self) -> alloc::string::String {
        alloc::format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `2025-10-25T12:34:56.789Z`: milliseconds and a `Z`, as JavaScript's `toISOString()` prints.
    pub fn iso_millis_z(&self) -> alloc::string::String {
        alloc::format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.millis
        )
    }

    /// `2024-01-01T12:00:00Z`: seconds precision with a `Z`.
    pub fn iso_seconds_z(&self) -> alloc::string::String {
        let mut s = self.iso_seconds();
        s.push('Z');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        let t = Instant::from_millis(1_735_734_600_123); // 2025-01-01T12:30:00.123Z
        let d = DateTime::from(t);
        assert_eq!(d.iso_seconds(), "2025-01-01T12:30:00");
        assert_eq!(d.iso_millis_z(), "2025-01-01T12:30:00.123Z");
        assert_eq!(
            DateTime::from(Instant::EPOCH).iso_seconds_z(),
            "1970-01-01T00:00:00Z"
        );
        // A leap day.
        let leap = DateTime::from(Instant::from_micros(1_709_164_800 * 1_000_000));
        assert_eq!((leap.year, leap.month, leap.day), (2024, 2, 29));
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_micros(10);
        assert_eq!(Instant::from_micros(5) - t, Duration::ZERO);
        assert_eq!((t + Duration::MAX).as_micros(), u64::MAX);
    }
}
