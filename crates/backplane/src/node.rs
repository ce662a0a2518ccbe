//! Node ids and the little randomness the backplane needs (ids and backoff jitter).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// One node of a cluster: a random 64-bit id chosen at process start.
///
/// Every publication carries its origin's id, so a node recognises (and skips) its own
/// publications when Redis echoes them back, and receivers can count gaps per origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// A fresh random id (never 0).
    pub fn random() -> Self {
        loop {
            let v = random_u64();
            if v != 0 {
                return NodeId(v);
            }
        }
    }

    /// The id with this value (for tests and for ids configured by hand).
    pub const fn new(value: u64) -> Self {
        NodeId(value)
    }

    /// The id's value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// 64 random bits from the standard library's randomly keyed SipHash (seeded from the OS),
/// mixed with the time, the process id and a counter. Not for cryptography; enough for ids that
/// must differ between processes and for jitter.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<u64> =
            (0..1000).map(|_| NodeId::random().get()).collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(NodeId::new(255).to_string(), "00000000000000ff");
    }
}
