//! The JSON examples in `docs/protocol/<system>-v1.md` are the test vectors: every fenced block
//! tagged `json client-to-server`, `json server-to-client` or `json publish` must decode with the
//! module and re-encode to the same JSON value. The docs therefore cannot drift from the code.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use switchboard_protocol::{afc, collab, dcdock, laptimes, race, Direction, RoundTrip};

struct Module {
    name: &'static str,
    round_trip: RoundTrip,
    client_types: &'static [&'static str],
    server_types: &'static [&'static str],
}

fn modules() -> Vec<Module> {
    macro_rules! m {
        ($name:literal, $m:ident) => {
            Module {
                name: $name,
                round_trip: $m::v1::round_trip,
                client_types: $m::v1::CLIENT_TYPES,
                server_types: $m::v1::SERVER_TYPES,
            }
        };
    }
    vec![
        m!("laptimes", laptimes),
        m!("afc", afc),
        m!("race", race),
        m!("collab", collab),
        m!("dcdock", dcdock),
    ]
}

/// (direction, json text, line number) for every tagged block.
fn vectors(doc: &str) -> Vec<(Direction, String, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(Direction, String, usize)> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                let dir = match trimmed {
                    "```json client-to-server" => Some(Direction::ClientToServer),
                    "```json server-to-client" => Some(Direction::ServerToClient),
                    "```json publish" => Some(Direction::Publish),
                    _ => None,
                };
                if let Some(d) = dir {
                    current = Some((d, String::new(), i + 1));
                }
            }
            Some((_, body, _)) => {
                if trimmed == "```" {
                    out.push(current.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated code block");
    out
}

#[test]
fn every_documented_example_round_trips() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol");
    for m in modules() {
        let path = docs.join(format!("{}-v1.md", m.name));
        let doc =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let vs = vectors(&doc);
        assert!(!vs.is_empty(), "{} has no tagged examples", path.display());
        let mut seen = [BTreeSet::new(), BTreeSet::new()];
        for (dir, text, line) in vs {
            let encoded = (m.round_trip)(dir, text.as_bytes()).unwrap_or_else(|e| {
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
        for t in m.client_types {
            assert!(
                seen[0].contains(*t),
                "{}: no client-to-server example of `{t}`",
                m.name
            );
        }
        for t in m.server_types {
            assert!(
                seen[1].contains(*t),
                "{}: no server-to-client example of `{t}`",
                m.name
            );
        }
    }
}
