//! Wall-clock timestamps as the systems write them.
//!
//! The hub's [`switchboard_hub::Instant`] is monotonic and is only for durations; every
//! timestamp a protocol writes comes from [`switchboard_hub::Context::wall_clock`] (a
//! [`UnixTime`]) and is formatted here.

use alloc::format;
use alloc::string::String;
use switchboard_hub::UnixTime;

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

impl From<UnixTime> for DateTime {
    fn from(t: UnixTime) -> Self {
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
    pub fn iso_seconds(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `2025-10-25T12:34:56.789Z`: milliseconds and a `Z`, as JavaScript's `toISOString()` prints.
    pub fn iso_millis_z(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// `2024-01-01T12:00:00Z`: seconds precision with a `Z`.
    pub fn iso_seconds_z(&self) -> String {
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
        let t = UnixTime::from_millis(1_735_734_600_123); // 2025-01-01T12:30:00.123Z
        let d = DateTime::from(t);
        assert_eq!(d.iso_seconds(), "2025-01-01T12:30:00");
        assert_eq!(d.iso_millis_z(), "2025-01-01T12:30:00.123Z");
        assert_eq!(
            DateTime::from(UnixTime::EPOCH).iso_seconds_z(),
            "1970-01-01T00:00:00Z"
        );
        // A leap day.
        let leap = DateTime::from(UnixTime::from_micros(1_709_164_800 * 1_000_000));
        assert_eq!((leap.year, leap.month, leap.day), (2024, 2, 29));
    }
}
