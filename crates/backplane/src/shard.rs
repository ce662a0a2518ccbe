//! Which Redis instance carries a stream, when a cluster spreads its streams over several.
//!
//! Every stream (a room, or the system's stream of publications to everyone and to users) lives
//! on exactly one instance, chosen by **rendezvous hashing** (highest random weight): each
//! instance has a name (its `host:port`), the weight of a stream on an instance is a fixed
//! 64-bit hash of both names ([`weight`]: FNV-1a 64 over the instance's name then the stream's,
//! finished with the MurmurHash3 64-bit mix), and the stream goes to the instance of highest
//! weight. Everything a stream needs — its history keys, the channel carrying its publications
//! and, for a room, its `Members` messages — is routed by the same name, so it is on one
//! instance and the ordering argument of one Redis holds per instance.
//!
//! Why rendezvous and not `hash mod N`: adding an instance moves only the streams the new one
//! wins (about 1/(N+1) of them) and removing one moves only its own streams, whatever their
//! place in the list; with `mod N` almost every stream would move (and lose its history, since
//! the history does not move with it). The cost, N hashes of a short name per lookup with N at
//! most [`MAX_INSTANCES`], is a few tens of nanoseconds. The hash is fixed here (not the
//! standard library's, whose keys are random per process), so every node and every version
//! agrees; a unit test pins its values.

use thiserror::Error;

/// Most Redis instances one cluster spreads over.
pub const MAX_INSTANCES: usize = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, continuing from `state` (start from [`fnv1a64_start`]).
pub fn fnv1a64(mut state: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        state ^= u64::from(*b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// FNV-1a 64's starting state (its offset basis).
pub const fn fnv1a64_start() -> u64 {
    FNV_OFFSET
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit, which FNV alone
/// does poorly for names that differ only in their last bytes.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The weight of `stream` on the instance named `instance` (a separator byte between the two
/// names, so `("ab", "c")` and `("a", "bc")` differ).
pub fn weight(instance: &str, stream: &str) -> u64 {
    let h = fnv1a64(fnv1a64_start(), instance.as_bytes());
    mix(fnv1a64(fnv1a64(h, &[0]), stream.as_bytes()))
}

/// Why a list of instances is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InstancesError {
    /// No instance at all.
    #[error("no Redis instance given")]
    Empty,
    /// More than [`MAX_INSTANCES`].
    #[error("{0} Redis instances given; at most {MAX_INSTANCES} are supported")]
    TooMany(usize),
    /// The same instance twice (its pub/sub channels would carry its streams twice).
    #[error("Redis instance {0} is listed twice")]
    Duplicate(String),
}

/// The instances a cluster's streams are spread over, in the order given, and which one
/// carries each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    names: Vec<String>,
    /// Each name's FNV-1a state, so a lookup hashes only the stream's bytes.
    prefixes: Vec<u64>,
    fingerprint: u64,
}

impl Instances {
    /// The instances named so (`host:port`, without credentials), in this order: at least one,
    /// at most [`MAX_INSTANCES`], none twice.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<Self, InstancesError> {
        if names.is_empty() {
            return Err(InstancesError::Empty);
        }
        if names.len() > MAX_INSTANCES {
            return Err(InstancesError::TooMany(names.len()));
        }
        let names: Vec<String> = names.iter().map(|n| n.as_ref().to_owned()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(InstancesError::Duplicate(n.clone()));
            }
        }
        let prefixes = names
            .iter()
            .map(|n| fnv1a64(fnv1a64(fnv1a64_start(), n.as_bytes()), &[0]))
            .collect();
        // Over the names sorted (routing does not depend on their order), each followed by a
        // separator: nodes that route alike compute the same.
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        let fingerprint = sorted.iter().fold(fnv1a64_start(), |h, n| {
            fnv1a64(fnv1a64(h, n.as_bytes()), &[0])
        });
        Ok(Instances {
            names,
            prefixes,
            fingerprint,
        })
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never: there is at least one.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Their names, in the order given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of the instance that carries `stream` (a room's name, or the system's own
    /// stream name for its `all` channel). With one instance, always 0, without hashing.
    pub fn of(&self, stream: &str) -> usize {
        if self.prefixes.len() == 1 {
            return 0;
        }
        let mut best = (0, 0u64);
        for (i, prefix) in self.prefixes.iter().enumerate() {
            let w = mix(fnv1a64(*prefix, stream.as_bytes()));
            // Ties (astronomically rare) go to the first in the list: still the same everywhere.
            if i == 0 || w > best.1 {
                best = (i, w);
            }
        }
        best.0
    }

    /// A hash of the set of names: nodes given lists that route streams differently (another
    /// set of instances) compute different ones; the order does not count, as for routing.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // FNV-1a 64's published test vectors, then our weight: these values must never change
        // (every node of a cluster, of every version, must route a stream alike).
        assert_eq!(fnv1a64(fnv1a64_start(), b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(fnv1a64_start(), b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(fnv1a64_start(), b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            weight("127.0.0.1:6379", "session:s-1"),
            0xb3c5_956f_19be_13fd
        );
        let three = Instances::new(&["a:1", "b:2", "c:3"]).unwrap();
        let routed: Vec<usize> = (0..8).map(|i| three.of(&format!("r{i}"))).collect();
        assert_eq!(routed, [2, 1, 0, 2, 0, 0, 1, 0]);
        for i in 0..8 {
            let r = format!("r{i}");
            let w: Vec<u64> = ["a:1", "b:2", "c:3"]
                .iter()
                .map(|n| weight(n, &r))
                .collect();
            assert_eq!(
                w.iter().max(),
                Some(&w[routed[i]]),
                "the heaviest instance wins"
            );
        }
    }

    #[test]
    fn one_instance_is_always_zero_and_lists_are_checked() {
        let one = Instances::new(&["h:6379"]).unwrap();
        assert_eq!(one.of("anything"), 0);
        assert_eq!(one.len(), 1);
        assert!(!one.is_empty());
        assert_eq!(
            Instances::new::<&str>(&[]).unwrap_err(),
            InstancesError::Empty
        );
        let many: Vec<String> = (0..=MAX_INSTANCES).map(|i| format!("h:{i}")).collect();
        assert_eq!(
            Instances::new(&many).unwrap_err(),
            InstancesError::TooMany(MAX_INSTANCES + 1)
        );
        assert!(Instances::new(&many[..MAX_INSTANCES]).is_ok());
        assert_eq!(
            Instances::new(&["a:1", "b:2", "a:1"]).unwrap_err(),
            InstancesError::Duplicate("a:1".into())
        );
    }

    #[test]
    fn the_fingerprint_tells_lists_apart() {
        let f = |l: &[&str]| Instances::new(l).unwrap().fingerprint();
        assert_eq!(f(&["a:1", "b:2"]), f(&["a:1", "b:2"]));
        assert_eq!(
            f(&["a:1", "b:2"]),
            f(&["b:2", "a:1"]),
            "the order routes alike"
        );
        assert_ne!(f(&["a:1", "b:2"]), f(&["a:1"]));
        assert_ne!(f(&["ab:1", "c"]), f(&["a", "b:1c"]));
    }
}
