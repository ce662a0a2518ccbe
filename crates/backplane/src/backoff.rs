//! Reconnect delays: exponential from 100 ms, doubling to at most 5 s, with jitter.

use std::time::Duration;

/// The first delay after a failure.
pub const INITIAL: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(5);

/// Exponential backoff with "equal jitter": each delay is drawn from `[d/2, d]` where `d`
/// doubles from [`INITIAL`] to [`MAX`], so nodes that lost Redis together do not all retry in
/// the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff whose jitter comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Backoff {
            next: INITIAL,
            rng: seed | 1,
        }
    }

    /// Start again from [`INITIAL`] (after a successful connection).
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(MAX);
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.rng % (span + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(12345);
        let mut ceiling = INITIAL;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(MAX);
        }
        assert_eq!(ceiling, MAX);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
        // Two seeds give different jitter.
        let mut a = Backoff::new(1);
        let mut c = Backoff::new(2);
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let dc: Vec<_> = (0..5).map(|_| c.next_delay()).collect();
        assert_ne!(da, dc);
    }
}
