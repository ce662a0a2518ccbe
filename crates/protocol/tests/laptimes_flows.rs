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

// ---------------------------------------------------------------------------------------------
// Hostile input: the one JSON rule and the refused shapes (docs/protocol/laptimes-v1.md,
// "Limits and refused input").
// ---------------------------------------------------------------------------------------------

/// A notice whose extra field `x` nests `depth - 1` arrays (the notice itself is level 1).
fn nested_notice(depth: usize) -> String {
    let inner = format!("{}0{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
    format!(r#"{{"table":"times","operation":"CHANGE","x":{inner}}}"#)
}

/// Send `bad` from `a`: `a` alone gets `{"type":"error","message":"Invalid change notice",
/// "details": details}`, `b` nothing.
fn refused(
    h: &mut Harness,
    a: switchboard_hub::ConnectionHandle,
    b: switchboard_hub::ConnectionHandle,
    bad: &str,
    details: &str,
) {
    h.send(a, bad);
    assert_eq!(
        h.take_one(a),
        json!({"type": "error", "message": "Invalid change notice", "details": details}),
        "{bad}"
    );
    h.assert_silent(b);
}

#[test]
fn depth_64_is_relayed_byte_for_byte_and_65_refused() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b) = (h.open(), h.open());
    let ok = nested_notice(64);
    h.hub
        .handle_frame(h.now, a, switchboard_hub::Frame::Text(ok.clone().into()))
        .unwrap();
    let mut relayed = Vec::new();
    while let Some(out) = h.hub.poll_output() {
        for out in out.split() {
            if let switchboard_hub::Output::Transmit {
                connection,
                payload,
            } = out
            {
                relayed.push((connection, payload));
            }
        }
    }
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].0, b);
    assert_eq!(&relayed[0].1[..], ok.as_bytes());
    // 30 000 levels still fit the 64 KiB frame limit; a larger frame never reaches the protocol.
    for depth in [65, 129, 30_000] {
        refused(
            &mut h,
            a,
            b,
            &nested_notice(depth),
            "JSON nested deeper than 64 levels",
        );
    }
    let errors = h.hub.stats().counters.errors;
    assert_eq!(errors.get("too_deep"), Some(&3));
}

#[test]
fn duplicate_keys_are_refused_wherever_they_are() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b) = (h.open(), h.open());
    for (bad, key) in [
        // Validated on one `table` while some clients would read the other.
        (
            r#"{"table":5,"table":"times","operation":"CHANGE"}"#,
            "table",
        ),
        (
            r#"{"table":"times","table":"cars","operation":"CHANGE"}"#,
            "table",
        ),
        (
            r#"{"table":"times","operation":"CHANGE","operation":"CHANGE"}"#,
            "operation",
        ),
        (
            r#"{"table":"times","\u0074able":"cars","operation":"CHANGE"}"#,
            "table",
        ),
        (
            r#"{"table":"times","operation":"CHANGE","by":{"id":1,"id":2}}"#,
            "id",
        ),
        (
            r#"{"table":"times","operation":"CHANGE","ids":[{"n":1},{"n":1,"n":2}]}"#,
            "n",
        ),
    ] {
        refused(&mut h, a, b, bad, &format!("duplicate key `{key}`"));
    }
    assert_eq!(h.hub.stats().counters.errors.get("duplicate_key"), Some(&6));
    // The same key in sibling objects is no duplicate, and the sender is still served.
    h.send(
        a,
        r#"{"table":"times","operation":"CHANGE","ids":[{"n":1},{"n":2}]}"#,
    );
    assert_eq!(h.take(b).len(), 1);
    assert!(h.closed.is_empty());
}

#[test]
fn empty_table_or_operation_is_refused() {
    let mut h = Harness::new(&laptimes::v1::SPEC, Options::default());
    let (a, b) = (h.open(), h.open());
    refused(
        &mut h,
        a,
        b,
        r#"{"table":"","operation":"CHANGE"}"#,
        "invalid message: `table` must not be empty",
    );
    refused(
        &mut h,
        a,
        b,
        r#"{"table":"times","operation":""}"#,
        "invalid message: `operation` must not be empty",
    );
    // The seed's own notice (and a null timestamp, documented) still goes through.
    h.send(
        a,
        r#"{"table":"times","operation":"CHANGE","timestamp":null}"#,
    );
    assert_eq!(h.take(b).len(), 1);
}
