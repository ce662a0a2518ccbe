//! Token buckets: one per connection inside the hub, and a bounded map of them keyed by anything
//! (a client address, an API key) for the transports' HTTP endpoints.

use core::hash::Hash;
use core::time::Duration;

use hashbrown::{DefaultHashBuilder, HashMap};

use crate::{Instant, RateLimit};

/// One message's worth of tokens; the bucket counts in millionths of a message.
pub(crate) const TOKEN: u64 = 1_000_000;

/// A token bucket: up to `burst` messages at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: u64::from(rate.burst) * TOKEN,
            at: now,
        }
    }

    /// An empty bucket at `now`.
    pub(crate) fn empty(now: Instant) -> Self {
        TokenBucket { tokens: 0, at: now }
    }

    /// Add the tokens earned since the last refill (none if `now` is earlier).
    pub fn refill(&mut self, now: Instant, rate: RateLimit) {
        let cap = u64::from(rate.burst) * TOKEN;
        let earned = (now.saturating_since(self.at).as_micros() as u64)
            .saturating_mul(u64::from(rate.per_second));
        self.tokens = self.tokens.saturating_add(earned).min(cap);
        self.at = self.at.max(now);
    }

    /// Take one message's token; `false` when the bucket holds less than one.
    pub fn take(&mut self, now: Instant, rate: RateLimit) -> bool {
        self.refill(now, rate);
        let ok = self.has_one();
        if ok {
            self.tokens -= TOKEN;
        }
        ok
    }

    /// Whether a whole token is there (as of the last refill).
    pub fn has_one(&self) -> bool {
        self.tokens >= TOKEN
    }

    /// Spend one token that [`TokenBucket::has_one`] said is there.
    pub(crate) fn spend(&mut self) {
        self.tokens -= TOKEN;
    }

    /// When the bucket will hold `messages` tokens (capped at the burst), counting from the
    /// last refill.
    pub fn ready_at(&self, rate: RateLimit, messages: u64) -> Instant {
        let need = messages.min(u64::from(rate.burst.max(1))) * TOKEN;
        let per_micro = u64::from(rate.per_second.max(1));
        let wait = need.saturating_sub(self.tokens).div_ceil(per_micro);
        self.at + Duration::from_micros(wait)
    }

    /// Whether the bucket is full by `now` (it has been idle long enough to forget).
    fn is_full_by(&self, now: Instant, rate: RateLimit) -> bool {
        let mut b = *self;
        b.refill(now, rate);
        b.tokens >= u64::from(rate.burst) * TOKEN
    }
}

/// Token buckets keyed by `K`, for rate limits per client address or per API key, holding at
/// most `max_keys` of them: when full, buckets that have refilled completely (idle keys) are
/// forgotten, and if none has, all are (the limit then forgives one burst rather than growing).
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    rate: RateLimit,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket, DefaultHashBuilder>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A limiter allowing `rate` per key, for at most `max_keys` keys at once.
    pub fn new(rate: RateLimit, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::default(),
        }
    }

    /// Count one request from `key` at `now`: `Ok` if allowed, else how long until it would be.
    pub fn check(&mut self, now: Instant, key: K) -> Result<(), Duration> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            let rate = self.rate;
            self.buckets.retain(|_, b| !b.is_full_by(now, rate));
            if self.buckets.len() >= self.max_keys {
                self.buckets.clear();
            }
        }
        let rate = self.rate;
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now));
        if bucket.take(now, rate) {
            Ok(())
        } else {
            Err(bucket.ready_at(rate, 1).saturating_since(now))
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Instant = Instant::from_millis(1_000_000);
    const RATE: RateLimit = RateLimit {
        per_second: 2,
        burst: 3,
    };

    #[test]
    fn a_key_gets_its_burst_then_the_rate() {
        let mut l = RateLimiter::new(RATE, 10);
        for _ in 0..3 {
            assert_eq!(l.check(T0, "a"), Ok(()));
        }
        assert_eq!(l.check(T0, "a"), Err(Duration::from_millis(500)));
        assert_eq!(l.check(T0, "b"), Ok(()), "another key has its own bucket");
        let later = T0 + Duration::from_millis(500);
        assert_eq!(l.check(later, "a"), Ok(()));
        assert!(l.check(later, "a").is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut l = RateLimiter::new(RATE, 4);
        for k in 0..1000u32 {
            let _ = l.check(T0, k);
            assert!(l.len() <= 4);
        }
        // Idle keys are forgotten first: after a while every bucket is full again.
        let later = T0 + Duration::from_secs(10);
        let _ = l.check(later, 5000);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let mut b = TokenBucket::full(RATE, T0);
        for _ in 0..3 {
            assert!(b.take(T0, RATE));
        }
        assert!(!b.take(Instant::from_millis(0), RATE));
        assert!(!b.take(T0, RATE));
    }
}
