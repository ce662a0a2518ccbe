//! Flows from `race-live.md`: clients follow sessions (query `sessionId` and/or `subscribe`),
//! backends publish typed updates per session, and only that session's followers receive them;
//! plus the decisions in `docs/protocol/race-v1.md`.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_hub::{Bytes, CloseCode, Config, Frame, Hub, Limits, Method, Target};
use switchboard_protocol::race::v1::{self as race, Race, RaceUpdate, UpdateType};
use switchboard_protocol::Options;

type Harness = common::Harness<Hub<Race>>;

const KEY: &str = "pit-wall";
const TS0: &str = "2025-01-01T12:30:00.000Z";

fn harness() -> Harness {
    Harness::of(Race::new(&Options::default().with_api_key(KEY)))
}

fn subscribed(id: &str, ts: &str) -> Value {
    json!({"type":"subscribed","data":{"sessionId":id},"timestamp":ts})
}

/// POST an update with the right key; returns (status, body).
fn publish(h: &mut Harness, session: &str, body: &str) -> (u16, Value) {
    let r = h
        .http(
            Method::Post,
            &format!("/sessions/{session}/updates"),
            &[("x-api-key", KEY)],
            body,
        )
        .expect("race owns /sessions/*/updates");
    (r.status, body_json(&r))
}

const LAP: &str = r#"{"type":"lap_update","data":{"driverId":"VER","lapTime":"1:15.234","isFastest":true,"lapNumber":45},"timestamp":"2024-01-01T12:00:00Z"}"#;

#[test]
fn spec_matches_the_seed() {
    assert_eq!(race::SPEC.name, "race");
    assert_eq!(race::SPEC.default_port, 3000);
    assert_eq!(race::SPEC.port_env, None);
    assert_eq!(race::SPEC.ws_path, Some("/ws"));
    assert_eq!(race::SPEC.api_key_env, "RACE_API_KEY");
}

#[test]
fn query_session_id_subscribes_at_connect() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "race-2024")]);
    assert_eq!(h.take_one(a), subscribed("race-2024", TS0));
    assert!(h.hub.rooms_of(a).contains(&"session:race-2024".to_string()));
}

#[test]
fn no_query_means_no_greeting_and_no_session() {
    let mut h = harness();
    let a = h.open();
    let b = h.open_query(&[("sessionId", "")]);
    h.assert_silent(a);
    h.assert_silent(b);
    assert!(h.hub.rooms_of(b).is_empty());
}

#[test]
fn subscribe_message_subscribes() {
    let mut h = harness();
    let a = h.open();
    h.advance(Duration::from_millis(5));
    h.send(
        a,
        r#"{"type":"subscribe","data":{"sessionId":"race-2024"},"timestamp":"2025-01-01T00:00:00Z"}"#,
    );
    assert_eq!(
        h.take_one(a),
        subscribed("race-2024", "2025-01-01T12:30:00.005Z")
    );
    let (_, body) = publish(&mut h, "race-2024", LAP);
    assert_eq!(body["delivered"], 1);
    assert_eq!(h.take_one(a), serde_json::from_str::<Value>(LAP).unwrap());
}

#[test]
fn query_and_subscribe_for_the_same_session_both_reply_and_deliver_once() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "race-2024")]);
    h.send(
        a,
        r#"{"type":"subscribe","data":{"sessionId":"race-2024"}}"#,
    );
    assert_eq!(h.take(a), vec![subscribed("race-2024", TS0); 2]);
    publish(&mut h, "race-2024", LAP);
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn seed_lap_update_reaches_followers_exactly_as_published() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "race-2024")]);
    let b = h.open_query(&[("sessionId", "race-2024")]);
    h.take(a);
    h.take(b);
    let (status, body) = publish(&mut h, "race-2024", LAP);
    assert_eq!(status, 202);
    assert_eq!(body, json!({"sessionId":"race-2024","delivered":2}));
    let expected: Value = serde_json::from_str(LAP).unwrap();
    assert_eq!(h.take_one(a), expected);
    assert_eq!(h.take_one(b), expected);
}

#[test]
fn clients_of_one_session_get_only_that_sessions_updates() {
    let mut h = harness();
    let monaco = h.open_query(&[("sessionId", "monaco")]);
    let spa = h.open_query(&[("sessionId", "spa")]);
    let idle = h.open();
    h.take(monaco);
    h.take(spa);
    let (_, body) = publish(
        &mut h,
        "monaco",
        r#"{"type":"position_change","data":{"driverId":"LEC","from":3,"to":2}}"#,
    );
    assert_eq!(body["delivered"], 1);
    assert_eq!(h.take_one(monaco)["type"], "position_change");
    h.assert_silent(spa);
    h.assert_silent(idle);
    let (_, body) = publish(&mut h, "nobody", LAP);
    assert_eq!(body["delivered"], 0);
    h.assert_silent(monaco);
    h.assert_silent(spa);
}

#[test]
fn a_client_may_follow_several_sessions() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "monaco"), ("sessionId", "spa")]);
    assert_eq!(
        h.take(a),
        vec![subscribed("monaco", TS0), subscribed("spa", TS0)]
    );
    h.send(a, r#"{"type":"subscribe","data":{"sessionId":"monza"}}"#);
    h.take(a);
    for s in ["monaco", "spa", "monza"] {
        publish(&mut h, s, LAP);
    }
    assert_eq!(h.take(a).len(), 3);
}

#[test]
fn every_update_type_is_delivered_and_missing_timestamps_are_filled() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.advance(Duration::from_millis(42));
    for t in UpdateType::ALL {
        let body = json!({"type": t.as_str(), "data": {"driverId": "HAM"}});
        let (status, _) = publish(&mut h, "s1", &body.to_string());
        assert_eq!(status, 202);
        assert_eq!(
            h.take_one(a),
            json!({"type": t.as_str(), "data": {"driverId": "HAM"}, "timestamp": "2025-01-01T12:30:00.042Z"})
        );
    }
    // A publisher's own timestamp is kept.
    publish(
        &mut h,
        "s1",
        r#"{"type":"drs_update","data":{"enabled":true},"timestamp":"2024-05-26T13:05:00.5+02:00"}"#,
    );
    assert_eq!(h.take_one(a)["timestamp"], "2024-05-26T13:05:00.5+02:00");
}

#[test]
fn data_may_be_any_json_value() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    for data in ["[1,2,3]", "\"SC\"", "null", "7"] {
        let body = format!(r#"{{"type":"status_change","data":{data}}}"#);
        assert_eq!(publish(&mut h, "s1", &body).0, 202);
        let got = h.take_one(a);
        assert_eq!(got["data"], serde_json::from_str::<Value>(data).unwrap());
        assert_eq!(got.as_object().unwrap().len(), 3);
    }
}

#[test]
fn unsubscribe_stops_updates() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.send(a, r#"{"type":"unsubscribe","data":{"sessionId":"s1"}}"#);
    assert_eq!(
        h.take_one(a),
        json!({"type":"unsubscribed","data":{"sessionId":"s1"},"timestamp":TS0})
    );
    assert_eq!(publish(&mut h, "s1", LAP).1["delivered"], 0);
    h.assert_silent(a);
}

#[test]
fn unsubscribe_from_a_session_not_followed_still_replies() {
    let mut h = harness();
    let a = h.open();
    h.send(a, r#"{"type":"unsubscribe","data":{"sessionId":"never"}}"#);
    assert_eq!(h.take_one(a)["type"], "unsubscribed");
}

#[test]
fn ping_gets_a_pong_with_or_without_data() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    h.send(a, r#"{"type":"ping","data":{}}"#);
    h.send(a, r#"{"type":"ping"}"#);
    h.send(
        a,
        r#"{"type":"ping","data":{},"timestamp":"2025-01-01T12:29:59.000Z"}"#,
    );
    let pong = json!({"type":"pong","data":{},"timestamp":TS0});
    assert_eq!(h.take(a), vec![pong.clone(), pong.clone(), pong]);
    h.assert_silent(b);
}

#[test]
fn clients_may_not_publish_updates() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    let b = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.take(b);
    h.send(a, LAP);
    let reply = h.take_one(a);
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["data"]["message"], "Invalid message");
    assert!(reply["data"]["details"]
        .as_str()
        .unwrap()
        .contains("clients may not publish"));
    assert_eq!(reply["timestamp"], TS0);
    h.assert_silent(b);
    assert!(h.closed.is_empty());
}

#[test]
fn bad_input_gets_an_error_to_the_sender_only() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    let b = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.take(b);
    for (bad, details) in [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (r#"{"data":{}}"#, "missing field `type`"),
        (
            r#"{"type":"hello","data":{}}"#,
            "unknown message type `hello`",
        ),
        (r#"{"type":"subscribe"}"#, "missing field `data`"),
        (
            r#"{"type":"subscribe","data":{}}"#,
            "missing field `sessionId`",
        ),
        (
            r#"{"type":"subscribe","data":{"sessionId":5}}"#,
            "invalid message",
        ),
        (
            r#"{"type":"subscribe","data":{"sessionId":"a b"}}"#,
            "`sessionId` must be",
        ),
        (r#"{"type":"unsubscribe","data":"s1"}"#, "invalid message"),
        (r#"{"type":"ping","timestamp":5}"#, "invalid message"),
    ] {
        h.send(a, bad);
        let reply = h.take_one(a);
        assert_eq!(reply["type"], "error", "{bad}");
        assert_eq!(reply["data"]["message"], "Invalid message", "{bad}");
        let d = reply["data"]["details"].as_str().unwrap();
        assert!(d.contains(details), "{bad}: {d}");
        assert_eq!(reply["timestamp"], TS0);
        h.assert_silent(b);
    }
    assert!(h.closed.is_empty());
    // Still subscribed, still served.
    publish(&mut h, "s1", LAP);
    assert_eq!(h.take(a).len(), 1);
    assert_eq!(h.take(b).len(), 1);
}

#[test]
fn an_invalid_query_session_id_gets_an_error_and_the_socket_stays_open() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "bad/id")]);
    let reply = h.take_one(a);
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["data"]["message"], "Invalid sessionId");
    assert!(h.hub.rooms_of(a).is_empty());
    assert!(h.closed.is_empty());
    h.send(a, r#"{"type":"ping"}"#);
    assert_eq!(h.take_one(a)["type"], "pong");
}

#[test]
fn the_room_limit_is_an_error_frame() {
    let config = Config {
        limits: Limits {
            max_rooms_per_connection: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut h = Harness::of_with_config(Race::new(&Options::default()), config);
    let a = h.open_query(&[
        ("sessionId", "s1"),
        ("sessionId", "s2"),
        ("sessionId", "s3"),
    ]);
    let got = h.take(a);
    assert_eq!(got[..2], [subscribed("s1", TS0), subscribed("s2", TS0)]);
    assert_eq!(got[2]["type"], "error");
    assert_eq!(
        got[2]["data"]["message"],
        "a connection may be in at most 2 rooms"
    );
    assert!(got[2]["data"]["details"].as_str().unwrap().contains("s3"));
    h.send(a, r#"{"type":"subscribe","data":{"sessionId":"s4"}}"#);
    assert_eq!(h.take_one(a)["type"], "error");
    assert_eq!(h.hub.rooms_of(a).len(), 2);
    assert!(h.closed.is_empty());
}

#[test]
fn publishing_is_refused_403_without_a_configured_key() {
    let mut h = Harness::of(Race::new(&Options::default()));
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    let r = h
        .http(
            Method::Post,
            "/sessions/s1/updates",
            &[("x-api-key", "x")],
            LAP,
        )
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        body_json(&r),
        json!({"error":"publishing disabled: set RACE_API_KEY"})
    );
    h.assert_silent(a);
}

#[test]
fn publishing_needs_the_right_key() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    for headers in [
        &[][..],
        &[("x-api-key", "nope")][..],
        &[("authorization", "Bearer nope")][..],
        &[("authorization", KEY)][..],
    ] {
        let r = h
            .http(Method::Post, "/sessions/s1/updates", headers, LAP)
            .unwrap();
        assert_eq!(r.status, 401, "{headers:?}");
        assert!(body_json(&r)["error"].is_string());
    }
    h.assert_silent(a);
    let r = h
        .http(
            Method::Post,
            "/sessions/s1/updates",
            &[("authorization", "Bearer pit-wall")],
            LAP,
        )
        .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn bad_publish_bodies_are_400() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    for (body, details) in [
        ("", "not valid JSON"),
        ("nope", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        (r#"{"data":{}}"#, "missing field `type`"),
        (
            r#"{"type":"subscribe","data":{}}"#,
            "unknown message type `subscribe`",
        ),
        (r#"{"type":"lap_update"}"#, "missing field `data`"),
        (
            r#"{"type":"lap_update","data":{},"timestamp":5}"#,
            "invalid message",
        ),
        (
            r#"{"type":"lap_update","data":{},"timestamp":"yesterday"}"#,
            "`timestamp` must be ISO 8601",
        ),
    ] {
        let (status, reply) = publish(&mut h, "s1", body);
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"], "invalid update", "{body}");
        let d = reply["details"].as_str().unwrap();
        assert!(d.contains(details), "{body}: {d}");
    }
    h.assert_silent(a);
}

#[test]
fn bad_session_ids_in_the_path_are_400() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    for path in [
        "/sessions//updates",
        "/sessions/a%20b/updates",
        // Every HTTP client and proxy rewrites `.` and `..` segments: ids made of dots are refused.
        "/sessions/./updates",
        "/sessions/../updates",
        "/sessions/.../updates",
        "/sessions/%2e%2e/updates",
        "/sessions/-_:/updates",
    ] {
        let r = h
            .http(Method::Post, path, &[("x-api-key", KEY)], LAP)
            .unwrap();
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(
            body_json(&r),
            json!({
                "error": "invalid sessionId",
                "details": "invalid message: `sessionId` must be A-Z, a-z, 0-9, `_`, `-`, `.` and `:`, with at least one letter or digit"
            }),
            "{path}"
        );
    }
    h.assert_silent(a);
    // A path with more than one segment in the id's place is not this system's.
    assert!(h
        .http(
            Method::Post,
            "/sessions/a/b/updates",
            &[("x-api-key", KEY)],
            LAP
        )
        .is_none());
}

#[test]
fn wrong_method_on_the_publish_path_is_405() {
    let mut h = harness();
    for m in [Method::Get, Method::Put, Method::Delete] {
        let r = h
            .http(m, "/sessions/s1/updates", &[("x-api-key", KEY)], LAP)
            .unwrap();
        assert_eq!(r.status, 405, "{m:?}");
    }
}

#[test]
fn other_paths_are_left_to_the_transport() {
    let mut h = harness();
    for path in [
        "/metrics",
        "/sessions",
        "/sessions/s1",
        "/sessions/s1/update",
        "/",
    ] {
        assert!(h.http(Method::Post, path, &[], "{}").is_none(), "{path}");
    }
}

#[test]
fn health_counts_clients_and_non_empty_sessions() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1"), ("sessionId", "s2")]);
    let _b = h.open_query(&[("sessionId", "s2")]);
    let _c = h.open();
    h.advance(Duration::from_secs(3));
    let r = h.http(Method::Get, "/health", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        body_json(&r),
        json!({"status":"ok","clients":3,"sessions":2,"uptime":3.0})
    );
    h.close(a);
    let v = body_json(&h.http(Method::Get, "/health", &[], "").unwrap());
    assert_eq!(
        (v["clients"].as_u64(), v["sessions"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn a_closed_client_leaves_its_sessions() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    let b = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.take(b);
    h.close(a);
    assert_eq!(publish(&mut h, "s1", LAP).1["delivered"], 1);
    assert!(h.take(a).is_empty());
    assert_eq!(h.take(b).len(), 1);
}

#[test]
fn binary_frames_close_with_1003() {
    let mut h = harness();
    let a = h.open();
    h.hub
        .handle_frame(h.now, a, Frame::Binary(Bytes::from_static(b"\x01")))
        .unwrap();
    h.drain();
    assert_eq!(h.closed[&a].0, CloseCode::UNSUPPORTED_DATA);
}

#[test]
fn embedding_helper_publishes_to_the_session_room() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "race-2024")]);
    let other = h.open_query(&[("sessionId", "quali")]);
    h.take(a);
    h.take(other);
    let update = RaceUpdate {
        kind: UpdateType::TireChange,
        data: json!({"driverId":"NOR","compound":"HARD"}),
        timestamp: None,
    };
    let p = race::update_publication("race-2024", &update, h.wall());
    assert_eq!(p.target, Target::Room("session:race-2024".into()));
    assert_eq!(h.publish(p), 1);
    assert_eq!(
        h.take_one(a),
        json!({"type":"tire_change","data":{"driverId":"NOR","compound":"HARD"},"timestamp":TS0})
    );
    h.assert_silent(other);
}

// ---------------------------------------------------------------------------------------------
// Hostile input (docs/protocol/race-v1.md, "Limits and refused input").
// ---------------------------------------------------------------------------------------------

fn frame_error(message: &str, details: &str) -> Value {
    json!({"type":"error","data":{"message":message,"details":details},"timestamp":TS0})
}

fn arrays(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_or_duplicate_key_frames_get_an_error_to_the_sender_only() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    let b = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    h.take(b);
    h.send(a, &format!(r#"{{"type":"ping","data":{}}}"#, arrays(63)));
    assert_eq!(h.take_one(a)["type"], "pong");
    h.send(a, &format!(r#"{{"type":"ping","data":{}}}"#, arrays(64)));
    assert_eq!(
        h.take_one(a),
        frame_error("Invalid message", "JSON nested deeper than 64 levels")
    );
    for (bad, key) in [
        (
            r#"{"type":"subscribe","type":"ping","data":{"sessionId":"s2"}}"#,
            "type",
        ),
        (
            r#"{"type":"subscribe","data":{"sessionId":"s2","sessionId":"s3"}}"#,
            "sessionId",
        ),
        (
            r#"{"type":"subscribe","data":{"sessionId":"s2","\u0073essionId":"s3"}}"#,
            "sessionId",
        ),
        (r#"{"type":"ping","data":[{"x":1,"x":1}]}"#, "x"),
    ] {
        h.send(a, bad);
        assert_eq!(
            h.take_one(a),
            frame_error("Invalid message", &format!("duplicate key `{key}`")),
            "{bad}"
        );
    }
    assert_eq!(h.hub.rooms_of(a), ["session:s1".to_string()]);
    h.assert_silent(b);
    assert_eq!(publish(&mut h, "s1", LAP).1["delivered"], 2);
}

#[test]
fn deep_or_duplicate_key_publish_bodies_are_400() {
    let mut h = harness();
    let a = h.open_query(&[("sessionId", "s1")]);
    h.take(a);
    let ok = format!(r#"{{"type":"lap_update","data":{}}}"#, arrays(63));
    assert_eq!(publish(&mut h, "s1", &ok).0, 202);
    assert_eq!(h.take(a).len(), 1);
    for (body, details) in [
        (
            format!(r#"{{"type":"lap_update","data":{}}}"#, arrays(64)),
            "JSON nested deeper than 64 levels".to_string(),
        ),
        (
            r#"{"type":"lap_update","type":"drs_update","data":{}}"#.to_string(),
            "duplicate key `type`".to_string(),
        ),
        (
            r#"{"type":"lap_update","data":{"driverId":"VER","driverId":"HAM"}}"#.to_string(),
            "duplicate key `driverId`".to_string(),
        ),
    ] {
        let (status, reply) = publish(&mut h, "s1", &body);
        assert_eq!(status, 400);
        assert_eq!(reply, json!({"error":"invalid update","details":details}));
    }
    h.assert_silent(a);
}

#[test]
fn session_ids_are_capped_everywhere_they_are_accepted() {
    // The default cap is the smaller of --max-id-bytes (256) and MAX_SESSION_ID_LEN (128).
    assert_eq!(race::session_id_limit(Options::default().max_id_bytes), 128);
    let at = "s".repeat(128);
    let over = "s".repeat(129);
    let too_long = "`sessionId` is longer than 128 bytes";
    let mut h = harness();

    // At connect.
    let a = h.open_query(&[("sessionId", &at)]);
    assert_eq!(h.take_one(a), subscribed(&at, TS0));
    let b = h.open_query(&[("sessionId", &over)]);
    assert_eq!(h.take_one(b), frame_error("Invalid sessionId", too_long));
    assert!(h.hub.rooms_of(b).is_empty());

    // In messages.
    for kind in ["subscribe", "unsubscribe"] {
        h.send(
            b,
            &format!(r#"{{"type":"{kind}","data":{{"sessionId":"{over}"}}}}"#),
        );
        assert_eq!(
            h.take_one(b),
            frame_error("Invalid message", too_long),
            "{kind}"
        );
        h.send(
            b,
            &format!(r#"{{"type":"{kind}","data":{{"sessionId":"{at}"}}}}"#),
        );
        assert_eq!(h.take_one(b)["type"], format!("{kind}d"));
    }

    // In the publish path.
    let (status, reply) = publish(&mut h, &over, LAP);
    assert_eq!(status, 400);
    assert_eq!(
        reply,
        json!({"error":"invalid sessionId","details":too_long})
    );
    assert_eq!(publish(&mut h, &at, LAP).1["delivered"], 1);
    assert_eq!(h.take(a).len(), 1);
    h.assert_silent(b);
    assert_eq!(h.hub.stats().counters.errors.get("id_too_long"), Some(&4));
}

#[test]
fn a_smaller_max_id_bytes_caps_session_ids() {
    let mut h = Harness::of(Race::new(
        &Options::default().with_api_key(KEY).with_max_id_bytes(16),
    ));
    let at = "s".repeat(16);
    let over = "s".repeat(17);
    let a = h.open_query(&[("sessionId", &at)]);
    assert_eq!(h.take_one(a), subscribed(&at, TS0));
    h.send(
        a,
        &format!(r#"{{"type":"subscribe","data":{{"sessionId":"{over}"}}}}"#),
    );
    assert_eq!(
        h.take_one(a),
        frame_error("Invalid message", "`sessionId` is longer than 16 bytes")
    );
    assert_eq!(publish(&mut h, &over, LAP).0, 400);
    assert_eq!(publish(&mut h, &at, LAP).0, 202);
}

#[test]
fn session_ids_made_only_of_dots_are_refused() {
    let mut h = harness();
    let details = "invalid message: `sessionId` must be A-Z, a-z, 0-9, `_`, `-`, `.` and `:`, with at least one letter or digit";
    for id in [".", "..", "...", ":", "-_"] {
        let a = h.open_query(&[("sessionId", id)]);
        assert_eq!(
            h.take_one(a),
            frame_error("Invalid sessionId", details),
            "{id}"
        );
        h.send(
            a,
            &format!(r#"{{"type":"subscribe","data":{{"sessionId":"{id}"}}}}"#),
        );
        assert_eq!(
            h.take_one(a),
            frame_error("Invalid message", details),
            "{id}"
        );
        assert!(h.hub.rooms_of(a).is_empty());
    }
    // Dots beside a letter or digit are fine.
    let a = h.open_query(&[("sessionId", "2024.R1")]);
    assert_eq!(h.take_one(a), subscribed("2024.R1", TS0));
}

#[test]
fn subscribe_data_must_be_an_object() {
    let mut h = harness();
    let a = h.open();
    for bad in [
        r#"{"type":"subscribe","data":["race-2024"]}"#,
        r#"{"type":"subscribe","data":"race-2024"}"#,
        r#"{"type":"unsubscribe","data":["race-2024"]}"#,
        r#"{"type":"subscribe","data":null}"#,
    ] {
        h.send(a, bad);
        let e = h.take_one(a);
        assert_eq!(e["data"]["message"], "Invalid message", "{bad}");
        let d = e["data"]["details"].as_str().unwrap();
        assert!(d.contains("expected an object"), "{bad}: {d}");
    }
    assert!(h.hub.rooms_of(a).is_empty());
}

#[test]
fn publish_405_carries_allow_and_several_keys_work() {
    let mut h = Harness::of(Race::new(
        &Options::default()
            .with_api_key("rotating-out")
            .with_api_key(KEY),
    ));
    let r = h
        .http(Method::Get, "/sessions/s1/updates", &[], "")
        .unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = h.http(Method::Post, "/health", &[], "").unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    for key in ["rotating-out", KEY] {
        let r = h
            .http(
                Method::Post,
                "/sessions/s1/updates",
                &[("x-api-key", key)],
                LAP,
            )
            .unwrap();
        assert_eq!(r.status, 202, "{key}");
    }
}
