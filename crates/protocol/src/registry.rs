//! The systems this server speaks: one [`SystemSpec`] per system, in the order the server lists
//! them.
//!
//! Adding a system is one module (its `v1.rs` with a `SPEC`, its decoder and its protocol), its
//! document `docs/protocol/<name>-v1.md`, and one line in [`SYSTEMS`]; the runtime, the
//! transports and every harness (doc vectors, fuzzing, benches) read everything they need from
//! the spec.

use crate::spec::SystemSpec;

/// Every system, in the order the server lists them.
pub static SYSTEMS: &[SystemSpec] = &[
    crate::laptimes::v1::SPEC,
    crate::afc::v1::SPEC,
    crate::race::v1::SPEC,
    crate::collab::v1::SPEC,
    crate::dcdock::v1::SPEC,
];

/// The system called `name`.
pub fn system(name: &str) -> Option<&'static SystemSpec> {
    SYSTEMS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_lists_routes_with_unique_patterns() {
        for spec in SYSTEMS {
            for (i, a) in spec.routes.iter().enumerate() {
                assert!(!a.methods.is_empty(), "{}", spec.name);
                for b in &spec.routes[i + 1..] {
                    assert_ne!(a.path, b.path, "{}: two routes on one pattern", spec.name);
                }
            }
        }
    }

    #[test]
    fn specs_carry_their_modules_type_lists_and_round_trips() {
        use crate::spec::{Direction, RoundTrip};
        use crate::{afc, collab, dcdock, laptimes, race};
        let modules: [(&str, &[&str], &[&str], RoundTrip); 5] = [
            (
                "laptimes",
                laptimes::v1::CLIENT_TYPES,
                laptimes::v1::SERVER_TYPES,
                laptimes::v1::round_trip,
            ),
            (
                "afc",
                afc::v1::CLIENT_TYPES,
                afc::v1::SERVER_TYPES,
                afc::v1::round_trip,
            ),
            (
                "race",
                race::v1::CLIENT_TYPES,
                race::v1::SERVER_TYPES,
                race::v1::round_trip,
            ),
            (
                "collab",
                collab::v1::CLIENT_TYPES,
                collab::v1::SERVER_TYPES,
                collab::v1::round_trip,
            ),
            (
                "dcdock",
                dcdock::v1::CLIENT_TYPES,
                dcdock::v1::SERVER_TYPES,
                dcdock::v1::round_trip,
            ),
        ];
        assert_eq!(modules.len(), SYSTEMS.len());
        for (name, client, server, round_trip) in modules {
            let spec = system(name).unwrap();
            assert_eq!((spec.client_types, spec.server_types), (client, server));
            let probe = br#"{"type":"ping"}"#;
            assert_eq!(
                (spec.round_trip)(Direction::ClientToServer, probe),
                round_trip(Direction::ClientToServer, probe)
            );
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for (i, spec) in SYSTEMS.iter().enumerate() {
            assert!(SYSTEMS[i + 1..].iter().all(|s| s.name != spec.name));
            assert!(core::ptr::eq(system(spec.name).unwrap(), spec));
        }
        assert!(system("nope").is_none());
    }
}
