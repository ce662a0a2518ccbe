//! A gentle drain: how a stopping system closes its connections, and when each one goes.
//!
//! A restart that closed every connection at once would send every client to the other nodes
//! in the same instant. A drain closes them with 1012 (service restart), each at its own
//! instant drawn uniformly at random within a window, so the reconnects arrive spread over it.
//! The schedule is pure: [`spread`] takes the connections, the window and a seed.

use std::time::Duration;

/// The reason sent with 1012 when a drain closes a connection.
pub const RESTART_REASON: &str = "server restarting: reconnect";

/// How a stopping system closes the connections it still has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// All at once with 1001 (going away): a plain stop.
    AtOnce,
    /// With 1012 (service restart), each at its own random instant within the window; a zero
    /// window (also what cutting a drain short sets) closes the rest at once.
    Spread(Duration),
}

/// Give each of `items` its own instant, drawn uniformly from `[0, window)` with `seed`,
/// earliest first. A zero window puts them all at zero.
pub fn spread<T>(items: Vec<T>, window: Duration, seed: u64) -> Vec<(Duration, T)> {
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    let mut rng = SplitMix64(seed);
    let mut out: Vec<(Duration, T)> = items
        .into_iter()
        .map(|item| {
            // The high half of a 64x64 product: uniform in [0, nanos), no modulo bias worth
            // naming at these sizes.
            let at = (u128::from(rng.next()) * u128::from(nanos)) >> 64;
            let at = u64::try_from(at).expect("below nanos, which is a u64");
            (Duration::from_nanos(at), item)
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and well mixed from any seed, which is all
/// a schedule of closes needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn every_instant_is_within_the_window_earliest_first() {
        for seed in 0..50 {
            let plan = spread((0..200).collect(), WINDOW, seed);
            assert_eq!(plan.len(), 200);
            assert!(plan.iter().all(|(at, _)| *at < WINDOW), "seed {seed}");
            assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0), "seed {seed}");
            let mut items: Vec<i32> = plan.iter().map(|(_, i)| *i).collect();
            items.sort_unstable();
            assert_eq!(items, (0..200).collect::<Vec<_>>(), "each item once");
        }
    }

    #[test]
    fn instants_are_spread_over_the_window() {
        let plan = spread((0..1000).collect::<Vec<i32>>(), WINDOW, 7);
        let (first, last) = (plan[0].0, plan[999].0);
        assert!(last - first > WINDOW * 9 / 10, "{first:?}..{last:?}");
        // Each tenth of the window gets about a tenth of the closes.
        let mut tenths = [0; 10];
        for (at, _) in &plan {
            tenths[(at.as_nanos() * 10 / WINDOW.as_nanos()) as usize] += 1;
        }
        assert!(
            tenths.iter().all(|&n| (60..=140).contains(&n)),
            "{tenths:?}"
        );
    }

    #[test]
    fn items_are_not_closed_in_the_order_given() {
        let plan = spread((0..100).collect::<Vec<i32>>(), WINDOW, 1);
        let order: Vec<i32> = plan.iter().map(|(_, i)| *i).collect();
        assert_ne!(order, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn the_seed_decides_the_schedule() {
        let a = spread(vec![(); 20], WINDOW, 42);
        assert_eq!(a, spread(vec![(); 20], WINDOW, 42));
        assert_ne!(a, spread(vec![(); 20], WINDOW, 43));
    }

    #[test]
    fn a_zero_window_closes_everything_at_once() {
        let plan = spread(vec!['a', 'b', 'c'], Duration::ZERO, 3);
        assert!(plan.iter().all(|(at, _)| at.is_zero()));
        assert_eq!(plan.len(), 3);
        assert!(spread(Vec::<u8>::new(), WINDOW, 3).is_empty());
    }

    #[test]
    fn a_window_too_long_for_nanoseconds_still_works() {
        let plan = spread(vec![(); 10], Duration::MAX, 5);
        assert!(plan.iter().all(|(at, _)| *at < Duration::MAX));
        assert!(plan.iter().any(|(at, _)| *at > Duration::from_secs(1)));
    }
}
