//! Bounded views of the hub for an operator: the largest rooms (optionally matching a search)
//! and the connections open longest, each selected with a heap of at most `limit` entries, so a
//! look at a hub of any size copies out at most `limit` items.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::ConnectionInfo;

/// Whether `name` contains `search`, ASCII letters compared without case (an empty search
/// matches every name).
pub(crate) fn matches(name: &str, search: &str) -> bool {
    let (name, search) = (name.as_bytes(), search.as_bytes());
    search.is_empty()
        || name
            .windows(search.len())
            .any(|w| w.eq_ignore_ascii_case(search))
}

/// The `limit` largest of `rooms` whose name [`matches`] `search`, largest first (equal sizes
/// by name), and how many match in all.
pub(crate) fn largest<'a>(
    rooms: impl Iterator<Item = (&'a str, usize)>,
    search: &str,
    limit: usize,
) -> (Vec<(&'a str, usize)>, usize) {
    // A min-heap of the best `limit` so far: its top is the one to give up first (fewest
    // members, then the last name).
    let mut best: BinaryHeap<Reverse<(usize, Reverse<&'a str>)>> = BinaryHeap::new();
    let mut matching = 0;
    for (name, members) in rooms {
        if !matches(name, search) {
            continue;
        }
        matching += 1;
        let key = Reverse((members, Reverse(name)));
        if best.len() < limit {
            best.push(key);
        } else if best.peek().is_some_and(|worst| key < *worst) {
            best.pop();
            best.push(key);
        }
    }
    // `into_sorted_vec` is ascending in `Reverse`, so largest first.
    let rooms = best
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse((members, Reverse(name)))| (name, members))
        .collect();
    (rooms, matching)
}

/// The `limit` connections of `conns` opened first (lowest serial), oldest first.
pub(crate) fn first_opened<'a>(
    conns: impl Iterator<Item = ConnectionInfo<'a>>,
    limit: usize,
) -> Vec<ConnectionInfo<'a>> {
    // A max-heap by serial of the oldest `limit` so far: its top is the newest of them.
    let mut oldest: BinaryHeap<ByAge<'a>> = BinaryHeap::new();
    for c in conns {
        if oldest.len() < limit {
            oldest.push(ByAge(c));
        } else if oldest
            .peek()
            .is_some_and(|newest| c.handle.serial() < newest.0.handle.serial())
        {
            oldest.pop();
            oldest.push(ByAge(c));
        }
    }
    oldest.into_sorted_vec().into_iter().map(|c| c.0).collect()
}

/// A connection ordered by its serial (the order connections were opened in).
struct ByAge<'a>(ConnectionInfo<'a>);

impl PartialEq for ByAge<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.handle.serial() == other.0.handle.serial()
    }
}

impl Eq for ByAge<'_> {}

impl PartialOrd for ByAge<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByAge<'_> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.0.handle.serial().cmp(&other.0.handle.serial())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_is_a_substring_without_ascii_case() {
        assert!(matches("project:P-1", ""));
        assert!(matches("project:P-1", "p-1"));
        assert!(matches("project:P-1", "PROJECT"));
        assert!(!matches("project:P-1", "p-2"));
        assert!(!matches("p", "project"));
        assert!(!matches("café-été", "É-ÉT"), "only ASCII letters fold");
        assert!(matches("café-été", "é-ét"));
    }

    #[test]
    fn the_largest_rooms_first_ties_by_name_and_the_count_of_matches() {
        let rooms = [
            ("b", 2),
            ("a", 2),
            ("big", 9),
            ("tiny", 1),
            ("mid", 5),
            ("other", 7),
        ];
        let (top, matching) = largest(rooms.into_iter(), "", 4);
        assert_eq!(matching, 6);
        assert_eq!(top, [("big", 9), ("other", 7), ("mid", 5), ("a", 2)]);
        let (top, matching) = largest(rooms.into_iter(), "I", 10);
        assert_eq!(matching, 3);
        assert_eq!(top, [("big", 9), ("mid", 5), ("tiny", 1)]);
        let (top, matching) = largest(rooms.into_iter(), "", 0);
        assert_eq!((top.len(), matching), (0, 6));
    }
}
