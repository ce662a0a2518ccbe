//! The protocol v2 examples are test vectors too: every fenced block tagged `json v2-client` or
//! `json v2-server` in `docs/protocol/v2.md` and in each system's document.
//!
//! - A client frame must open with the hub's envelope reader ([`wire::open`]), and the message
//!   inside must be one its system accepts (round-trips as a client-to-server message).
//! - A server frame must be exactly what the hub's encoders ([`wire`]) write from its fields:
//!   re-encoding it from the fields gives the same JSON value, so no example shows a field, a
//!   kind or a shape the server does not produce. The message inside a `pub` or `msg` frame must
//!   be one its system sends (round-trips as server-to-client).
//!
//! In `v2.md` the inner messages come from several systems: each must round-trip in at least one.

mod common;

use std::collections::BTreeSet;

use common::protocol_doc;
use serde_json::Value;
use switchboard_hub::history::{Epoch, Position, SessionId};
use switchboard_hub::wire::{self, Outcome};
use switchboard_hub::Text;
use switchboard_protocol::{Direction, SystemSpec, SYSTEMS};

/// The reasons a `subscribed` frame may give for `recovered: false` (docs/protocol/v2.md).
const REASONS: [&str; 5] = ["trimmed", "epoch", "ahead", "session", "unavailable"];

/// Every frame kind the server sends.
const SERVER_KINDS: [&str; 7] = ["session", "pub", "msg", "subscribed", "ack", "gap", "error"];

struct Vector {
    client: bool,
    text: String,
    line: usize,
}

/// Blocks tagged `json v2-client` / `json v2-server`, also when indented inside a list item.
fn v2_vectors(doc: &str) -> Vec<Vector> {
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                let client = match trimmed {
                    "```json v2-client" => true,
                    "```json v2-server" => false,
                    _ => continue,
                };
                current = Some(Vector {
                    client,
                    text: String::new(),
                    line: i + 1,
                });
            }
            Some(v) if trimmed == "```" => {
                v.text = v.text.trim().to_owned();
                out.push(current.take().unwrap());
            }
            Some(v) => {
                v.text.push_str(line);
                v.text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated code block");
    out
}

fn doc(name: &str) -> (String, String) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/protocol")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path.display().to_string(), text)
}

/// Whether `msg` round-trips unchanged through `spec` in direction `dir`.
fn round_trips(spec: &SystemSpec, dir: Direction, msg: &str) -> Result<(), String> {
    let encoded = (spec.round_trip)(dir, msg.as_bytes()).map_err(|e| e.to_string())?;
    let before: Value = serde_json::from_str(msg).map_err(|e| e.to_string())?;
    let after: Value = serde_json::from_slice(&encoded).map_err(|e| e.to_string())?;
    if before == after {
        Ok(())
    } else {
        Err(format!("re-encoded as {after}"))
    }
}

/// The server frame `v` as the hub's encoders write it from `v`'s own fields.
fn reencode(v: &Value) -> Result<Text, String> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string `{k}`"))
    };
    let n = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no integer `{k}`"))
    };
    let epoch = || Epoch::parse(s("epoch")?).ok_or("`epoch` is not 16 hex digits".to_owned());
    let position = || -> Result<Position, String> {
        Ok(Position {
            epoch: epoch()?,
            offset: n("offset")?,
        })
    };
    let msg = || -> Result<Text, String> {
        let m = v.get("msg").ok_or("no `msg`")?;
        Ok(Text::from(m.to_string()))
    };
    Ok(match s("sb")? {
        "session" => wire::session(
            SessionId::parse(s("session")?).ok_or("`session` is not 32 hex digits")?,
            v.get("resumed")
                .and_then(Value::as_bool)
                .ok_or("no `resumed`")?,
        ),
        "pub" => wire::publication(s("stream")?, position()?, &msg()?),
        "msg" => {
            let re = match v.get("re") {
                Some(_) => Some(s("re")?),
                None => None,
            };
            wire::message(re, &msg()?)
        }
        "ack" => {
            let published = match v.get("stream") {
                Some(_) => Some((s("stream")?, position()?)),
                None => None,
            };
            wire::ack(s("id")?, published, v.get("duplicate").is_some())
        }
        "subscribed" => {
            let outcome = match v.get("recovered").map(Value::as_bool) {
                None => Outcome::Fresh,
                Some(Some(true)) => Outcome::Recovered {
                    replayed: n("replayed")?,
                },
                Some(Some(false)) => {
                    let reason = s("reason")?;
                    let known = REASONS.iter().find(|r| **r == reason);
                    Outcome::NotRecovered(known.ok_or(format!("unknown reason `{reason}`"))?)
                }
                Some(None) => return Err("`recovered` is not a boolean".into()),
            };
            let top = match v.get("epoch") {
                Some(_) => Some(position()?),
                None => None,
            };
            wire::subscribed(s("stream")?, top, outcome)
        }
        "gap" => wire::gap(s("stream")?, epoch()?, n("from")?, n("to")?),
        "error" => wire::error(s("error")?),
        other => return Err(format!("unknown kind `{other}`")),
    })
}

/// Checks every v2 vector of one document; returns the server kinds it shows.
/// `systems` are the systems its inner messages may belong to (one for a system's document).
fn check(path: &str, doc: &str, systems: &[&SystemSpec]) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for Vector { client, text, line } in v2_vectors(doc) {
        let at = format!("{path}:{line}");
        let inner = if client {
            let (_, inner) = wire::open(&Text::from(text.clone()))
                .unwrap_or_else(|e| panic!("{at}: the envelope does not open: {}\n{text}", e.0));
            Some((Direction::ClientToServer, inner.to_string()))
        } else {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{at}: not JSON: {e}\n{text}"));
            let encoded = reencode(&v).unwrap_or_else(|e| panic!("{at}: {e}\n{text}"));
            let again: Value = serde_json::from_slice(&encoded).unwrap();
            assert_eq!(v, again, "{at}: the server does not write this frame so");
            let kind = v["sb"].as_str().unwrap().to_owned();
            let inner = v
                .get("msg")
                .map(|m| (Direction::ServerToClient, m.to_string()));
            kinds.insert(kind);
            inner
        };
        if let Some((dir, msg)) = inner {
            let results: Vec<_> = systems
                .iter()
                .map(|spec| round_trips(spec, dir, &msg))
                .collect();
            assert!(
                results.iter().any(Result::is_ok),
                "{at}: the message inside is no system's {dir:?} message: {results:?}\n{msg}"
            );
        }
    }
    kinds
}

#[test]
fn the_v2_document_shows_every_frame_the_server_sends() {
    let (path, text) = doc("v2.md");
    let systems: Vec<&SystemSpec> = SYSTEMS.iter().collect();
    let kinds = check(&path, &text, &systems);
    for kind in SERVER_KINDS {
        assert!(kinds.contains(kind), "{path}: no example of `{kind}`");
    }
    assert!(
        v2_vectors(&text).iter().any(|v| v.client),
        "{path}: no client example"
    );
}

#[test]
fn every_system_document_has_v2_examples_of_its_own_messages() {
    for spec in SYSTEMS {
        let (path, text) = protocol_doc(spec.name);
        let path = path.display().to_string();
        assert!(
            text.contains("\n## Protocol v2\n"),
            "{path}: no `## Protocol v2` section"
        );
        let kinds = check(&path, &text, &[spec]);
        assert!(
            kinds.contains("pub"),
            "{path}: no example of a publication (`pub`)"
        );
    }
}

#[test]
fn a_wrong_example_is_caught() {
    // The checks above can fail: a field the server never writes, a bad epoch, an inner message
    // of the wrong system.
    let laptimes = SYSTEMS.iter().find(|s| s.name == "laptimes").unwrap();
    let bad = [
        "```json v2-server\n{\"sb\":\"ack\",\"id\":\"x\",\"extra\":1}\n```",
        "```json v2-server\n{\"sb\":\"pub\",\"stream\":\"all\",\"epoch\":\"xyz\",\"offset\":1,\"msg\":{}}\n```",
        "```json v2-client\n{\"sb\":\"msg\",\"msg\":{\"type\":\"ping\"}}\n```",
        "```json v2-client\n{\"sb\":\"msg\",\"msg\":{},\"extra\":1}\n```",
    ];
    for doc in bad {
        let caught = std::panic::catch_unwind(|| check("bad.md", doc, &[laptimes])).is_err();
        assert!(caught, "not caught:\n{doc}");
    }
}
