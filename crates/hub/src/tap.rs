//! Taps: a few rooms whose publications the driver asked to see as they pass (an operator's live
//! tail of a room), each sampled by its own token bucket, so a busy room costs the hub at most
//! its tap's rate of outputs.

use alloc::string::String;
use alloc::vec::Vec;

use crate::ratelimit::TokenBucket;
use crate::{Instant, RateLimit};

/// Rooms one hub taps at once; one more is refused with [`TapError::TooManyTaps`].
pub const MAX_TAPS: usize = 8;

/// Why a tap was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// [`MAX_TAPS`] rooms are tapped already.
    #[error("at most {limit} rooms may be tapped at once")]
    TooManyTaps {
        /// The limit.
        limit: usize,
    },
}

/// One tapped room.
#[derive(Debug)]
struct Tap {
    room: String,
    rate: RateLimit,
    bucket: TokenBucket,
    /// Publications passed over since the last one sampled.
    skipped: u64,
}

/// The tapped rooms: at most [`MAX_TAPS`], so a linear scan.
#[derive(Debug, Default)]
pub(crate) struct Taps {
    taps: Vec<Tap>,
}

impl Taps {
    /// Whether no room is tapped (the fan-out's only cost when nobody watches).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// Tap `room` at `rate` from `now`; a room tapped already gets the new rate.
    pub(crate) fn tap(
        &mut self,
        now: Instant,
        room: &str,
        rate: RateLimit,
    ) -> Result<(), TapError> {
        if let Some(tap) = self.taps.iter_mut().find(|t| t.room == room) {
            tap.rate = rate;
            return Ok(());
        }
        if self.taps.len() >= MAX_TAPS {
            return Err(TapError::TooManyTaps { limit: MAX_TAPS });
        }
        self.taps.push(Tap {
            room: room.into(),
            rate,
            bucket: TokenBucket::full(rate, now),
            skipped: 0,
        });
        Ok(())
    }

    /// Stop tapping `room`; whether it was tapped.
    pub(crate) fn untap(&mut self, room: &str) -> bool {
        let before = self.taps.len();
        self.taps.retain(|t| t.room != room);
        self.taps.len() != before
    }

    /// The tapped rooms.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &str> + '_ {
        self.taps.iter().map(|t| t.room.as_str())
    }

    /// A publication to `room` at `now`: `Some(skipped)` when it is sampled (with the number
    /// passed over since the last one sampled), `None` when the room is not tapped or its tap
    /// is over its rate (then it is counted for the next one).
    pub(crate) fn sample(&mut self, now: Instant, room: &str) -> Option<u64> {
        let tap = self.taps.iter_mut().find(|t| t.room == room)?;
        if tap.bucket.take(now, tap.rate) {
            Some(core::mem::take(&mut tap.skipped))
        } else {
            tap.skipped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    const RATE: RateLimit = RateLimit {
        per_second: 10,
        burst: 1,
    };

    #[test]
    fn samples_at_the_rate_and_counts_what_it_passed_over() {
        let t0 = Instant::from_millis(1_000);
        let mut taps = Taps::default();
        assert!(taps.is_empty());
        taps.tap(t0, "r", RATE).unwrap();
        assert_eq!(taps.sample(t0, "other"), None, "not tapped");
        assert_eq!(taps.sample(t0, "r"), Some(0));
        assert_eq!(taps.sample(t0, "r"), None);
        assert_eq!(taps.sample(t0 + Duration::from_millis(50), "r"), None);
        assert_eq!(taps.sample(t0 + Duration::from_millis(100), "r"), Some(2));
        assert!(taps.untap("r"));
        assert!(!taps.untap("r"));
        assert!(taps.is_empty());
    }

    #[test]
    fn at_most_max_taps_rooms_and_a_retap_changes_the_rate() {
        let now = Instant::ZERO;
        let mut taps = Taps::default();
        for i in 0..MAX_TAPS {
            taps.tap(now, &alloc::format!("r{i}"), RATE).unwrap();
        }
        assert_eq!(
            taps.tap(now, "one more", RATE),
            Err(TapError::TooManyTaps { limit: MAX_TAPS })
        );
        let faster = RateLimit {
            per_second: 1000,
            burst: 1,
        };
        taps.tap(now, "r0", faster).unwrap();
        assert_eq!(taps.rooms().count(), MAX_TAPS);
        assert_eq!(taps.sample(now, "r0"), Some(0));
        assert_eq!(taps.sample(now + Duration::from_millis(1), "r0"), Some(0));
    }
}
