//! Flows from `laptimes-relay.md`: a change notice reaches every other client, never the sender.

mod common;
use common::*;
use serde_json::{json, Value};
use switchboard_protocol::{laptimes, Options};

const NOTICE: &str =
    r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z"}"#;

#[test]
fn notice_goes_to_every_other_client_not_the_sender() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.assert_silent(a); // No greeting: the seed's relay sends nothing on connect.
    h.send(a, NOTICE);
    let expected: Value = serde_json::from_str(NOTICE).unwrap();
    assert_eq!(h.take_one(b), expected);
    assert_eq!(h.take_one(c), expected);
    h.assert_silent(a);
}

#[test]
fn extra_fields_are_relayed_untouched() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b) = (h.open(), h.open());
    h.send(a, r#"{"table":"cars","operation":"CHANGE","by":"lab-3"}"#);
    assert_eq!(
        h.take_one(b),
        json!({"table":"cars","operation":"CHANGE","by":"lab-3"})
    );
}

#[test]
fn bad_input_gets_an_error_to_the_sender_only() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b) = (h.open(), h.open());
    for (bad, kind) in [
        ("not json", "not valid JSON"),
        ("[1,2]", "expected a JSON object"),
        (r#"{"table":"times"}"#, "missing field `operation`"),
        (r#"{"table":5,"operation":"CHANGE"}"#, "invalid message"),
    ] {
        h.send(a, bad);
        let reply = h.take_one(a);
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["message"], "Invalid change notice");
        let details = reply["details"].as_str().unwrap();
        assert!(details.contains(kind), "{bad}: {details}");
        h.assert_silent(b);
    }
    // The sender is still connected and still relays.
    h.send(a, NOTICE);
    assert_eq!(h.take(b).len(), 1);
    assert!(h.closed.is_empty());
}

#[test]
fn a_closed_client_receives_nothing_and_others_continue() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.close(b);
    h.send(a, NOTICE);
    assert_eq!(h.take(c).len(), 1);
    assert!(h.take(b).is_empty());
    assert_eq!(h.hub.stats().connections, 2);
}
