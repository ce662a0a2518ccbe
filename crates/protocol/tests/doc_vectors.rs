//! The JSON examples in `docs/protocol/<system>-v1.md` are the test vectors: every fenced block
//! tagged `json client-to-server`, `json server-to-client` or `json publish` must decode with the
//! system's module and re-encode to the same JSON value. The docs therefore cannot drift from the
//! code.
//!
//! Every system in [`SYSTEMS`] is covered through its [`SystemSpec`](switchboard_protocol::SystemSpec)
//! alone (`round_trip`, `client_types`, `server_types`): a new system's document is checked as
//! soon as the system is registered, with nothing added here.

mod common;

use std::collections::BTreeSet;

use common::{protocol_doc, vectors};
use serde_json::Value;
use switchboard_protocol::{Direction, SYSTEMS};

#[test]
fn every_documented_example_round_trips() {
    assert!(!SYSTEMS.is_empty());
    for spec in SYSTEMS {
        let (path, doc) = protocol_doc(spec.name);
        let vs = vectors(&doc);
        assert!(!vs.is_empty(), "{} has no tagged examples", path.display());
        let mut seen = [BTreeSet::new(), BTreeSet::new()];
        for (dir, text, line) in vs {
            let encoded = (spec.round_trip)(dir, text.as_bytes()).unwrap_or_else(|e| {
                panic!(
                    "{}:{line}: example does not decode: {e}\n{text}",
                    path.display()
                )
            });
            let before: Value = serde_json::from_str(&text).unwrap();
            let after: Value = serde_json::from_slice(&encoded).unwrap();
            assert_eq!(
                before,
                after,
                "{}:{line}: re-encoding changed the example",
                path.display()
            );
            if let Some(t) = before.get("type").and_then(Value::as_str) {
                match dir {
                    Direction::ClientToServer => seen[0].insert(t.to_string()),
                    Direction::ServerToClient => seen[1].insert(t.to_string()),
                    Direction::Publish => false,
                };
            }
        }
        for t in spec.client_types {
            assert!(
                seen[0].contains(*t),
                "{}: no client-to-server example of `{t}`",
                spec.name
            );
        }
        for t in spec.server_types {
            assert!(
                seen[1].contains(*t),
                "{}: no server-to-client example of `{t}`",
                spec.name
            );
        }
    }
}
