//! A lock-free log-linear histogram of nanosecond latencies.
//!
//! 64 linear sub-buckets per power of two: a recorded value is reported within 1/128 (0.8 %) of
//! itself. Every task records into the same histogram with one relaxed atomic add.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`: values below 64 are exact, then 58 powers of two of 64 each.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Latency histogram shared by every connection task.
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket holding `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) + sub as usize
}

/// The smallest and largest value in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < SUB as usize {
        return (i as u64, i as u64);
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let sub = (i as u64) & (SUB - 1);
    let low = (SUB + sub) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// Record one value.
    pub fn record(&self, v: u64) {
        self.counts[index(v)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// The largest value recorded (exact), or 0.
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The mean, or 0 when empty.
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Relaxed) as f64 / n as f64
        }
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding the rank-`ceil(q*n)`
    /// value, capped at the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                let (low, high) = bounds(i);
                return (low + (high - low) / 2).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it() {
        let mut v = 0u64;
        while v < u64::MAX / 3 {
            let (low, high) = bounds(index(v));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
            // Bucket width is at most 1/64 of its lower bound: 0.8 % either side of the middle.
            assert!((high - low) <= low / SUB, "bucket of {v} too wide");
            v = v * 3 / 2 + 1;
        }
        assert!(index(u64::MAX) < BUCKETS);
        assert_eq!(bounds(index(u64::MAX)).1, u64::MAX);
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for i in 1..BUCKETS {
            assert_eq!(bounds(i).0, bounds(i - 1).1 + 1, "gap before bucket {i}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = Histogram::default();
        assert_eq!((h.quantile(0.5), h.max(), h.mean()), (0, 0, 0.0));
        // 1..=10_000 microseconds, in nanoseconds.
        for us in 1..=10_000u64 {
            h.record(us * 1_000);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000_000);
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 / 100.0;
        for (q, want) in [
            (0.5, 5_000_000),
            (0.99, 9_900_000),
            (0.999, 9_990_000),
            (1.0, 10_000_000),
        ] {
            assert!(
                close(h.quantile(q), want),
                "q{q}: {} vs {want}",
                h.quantile(q)
            );
        }
        assert!((h.mean() - 5_000_500.0).abs() < 1.0);
    }

    #[test]
    fn small_values_are_exact() {
        let h = Histogram::default();
        for v in [3, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!(
            (h.quantile(0.5), h.quantile(0.75), h.quantile(1.0)),
            (3, 3, 7)
        );
    }
}
