//! Flows from `afc-events.md`: a backend POSTs `/events/<entity>-<action>` and every socket
//! receives `{"type":"<entity>:<action>","payload":<body>}`; plus the decisions in
//! `docs/protocol/afc-v1.md` (ping/pong, error frames, API key, health).

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_hub::{
    Bytes, CloseCode, Frame, HttpRequest, Method, OpenInfo, Output, Publication, Target,
};
use switchboard_protocol::afc::v1::{self as afc, EventError};
use switchboard_protocol::Options;

fn harness() -> Harness {
    Harness::new(&afc::SPEC, Options::default())
}

fn keyed(key: &str) -> Harness {
    Harness::new(&afc::SPEC, Options::default().with_api_key(key))
}

fn post(h: &mut Harness, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let r = h
        .http(Method::Post, path, headers, body)
        .expect("afc owns /events/*");
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        body_json(&r)
    };
    (r.status, v)
}

#[test]
fn spec_matches_the_seed() {
    assert_eq!(afc::SPEC.name, "afc");
    assert_eq!(afc::SPEC.default_port, 4001);
    assert_eq!(afc::SPEC.port_env, Some("PORT"));
    assert_eq!(afc::SPEC.ws_path, Some("/ws"));
    assert_eq!(afc::SPEC.api_key_env, "AFC_API_KEY");
    assert!(afc::SPEC.origins.is_none());
}

#[test]
fn seed_todo_created_reaches_every_socket() {
    let mut h = harness();
    let (a, b, c) = (h.open(), h.open(), h.open());
    let r = h
        .http(
            Method::Post,
            "/events/todo-created",
            &[("content-type", "application/json")],
            r#"{"id": 1, "title": "New Todo"}"#,
        )
        .unwrap();
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.content_type, None);
    let expected = json!({"type":"todo:created","payload":{"id":1,"title":"New Todo"}});
    for conn in [a, b, c] {
        assert_eq!(h.take_one(conn), expected);
    }
}

#[test]
fn seed_custom_user_updated_event() {
    let mut h = harness();
    let a = h.open();
    let (status, _) = post(
        &mut h,
        "/events/user-updated",
        &[],
        r#"{"id":7,"name":"Ann"}"#,
    );
    assert_eq!(status, 204);
    assert_eq!(
        h.take_one(a),
        json!({"type":"user:updated","payload":{"id":7,"name":"Ann"}})
    );
}

#[test]
fn seed_backend_sends_text_plain_and_no_content_type_is_fine() {
    let mut h = harness();
    let a = h.open();
    // `fetch(url, {method: "POST", body: JSON.stringify(inserted)})` sends text/plain.
    let (s1, _) = post(
        &mut h,
        "/events/todo-created",
        &[("content-type", "text/plain;charset=UTF-8")],
        r#"{"id":2}"#,
    );
    let (s2, _) = post(&mut h, "/events/todo-created", &[], r#"{"id":3}"#);
    assert_eq!((s1, s2), (204, 204));
    let got = h.take(a);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["payload"]["id"], 2);
    assert_eq!(got[1]["payload"]["id"], 3);
}

#[test]
fn entity_may_contain_hyphens_split_at_the_last_one() {
    let mut h = harness();
    let a = h.open();
    post(&mut h, "/events/line-item-created", &[], r#"{"sku":"x"}"#);
    assert_eq!(
        h.take_one(a),
        json!({"type":"line-item:created","payload":{"sku":"x"}})
    );
}

#[test]
fn event_frame_has_exactly_type_and_payload_and_the_body_bytes() {
    let mut h = harness();
    let a = h.open();
    let req = HttpRequest {
        method: Method::Post,
        path: "/events/todo-created".into(),
        query: vec![],
        headers: vec![],
        body: Bytes::from_static(b"\n  {\"z\":1,\"a\":1.50,\"n\":[1e2, true ,null]}  \r\n"),
    };
    let r = h.hub.handle_http(h.now, req).unwrap();
    assert_eq!(r.status, 204);
    let Some(Output::Transmit {
        connection,
        payload,
    }) = h.hub.poll_output()
    else {
        panic!("expected a transmit");
    };
    assert_eq!(connection, a);
    // Key order, number spelling and inner spacing kept: the body was not re-serialised.
    assert_eq!(
        &payload[..],
        br#"{"type":"todo:created","payload":{"z":1,"a":1.50,"n":[1e2, true ,null]}}"#
    );
    assert!(h.hub.poll_output().is_none());
}

#[test]
fn any_json_value_is_a_payload() {
    let mut h = harness();
    let a = h.open();
    for body in ["42", "\"text\"", "null", "[1,2]", "true"] {
        let (status, _) = post(&mut h, "/events/counter-changed", &[], body);
        assert_eq!(status, 204, "{body}");
        let frame = h.take_one(a);
        assert_eq!(
            frame["payload"],
            serde_json::from_str::<Value>(body).unwrap()
        );
        assert_eq!(frame.as_object().unwrap().len(), 2);
    }
}

#[test]
fn one_buffer_is_shared_by_every_recipient() {
    let mut h = harness();
    let _conns: Vec<_> = (0..5).map(|_| h.open()).collect();
    let req = HttpRequest {
        method: Method::Post,
        path: "/events/todo-created".into(),
        query: vec![],
        headers: vec![],
        body: Bytes::from_static(br#"{"id":1}"#),
    };
    h.hub.handle_http(h.now, req).unwrap();
    let mut ptrs = Vec::new();
    while let Some(out) = h.hub.poll_output() {
        for out in out.split() {
            if let Output::Transmit { payload, .. } = out {
                ptrs.push(payload.as_ptr());
            }
        }
    }
    assert_eq!(ptrs.len(), 5);
    assert!(ptrs.iter().all(|p| *p == ptrs[0]));
}

#[test]
fn bad_event_names_are_400_and_nothing_is_sent() {
    let mut h = harness();
    let a = h.open();
    for name in [
        "todo",
        "todo-",
        "-created",
        "todo-cre%20ated",
        "todo.created",
        "a/b-c",
        "",
        "tödo-created",
    ] {
        let (status, body) = post(&mut h, &format!("/events/{name}"), &[], r#"{"id":1}"#);
        assert_eq!(status, 400, "{name:?}");
        assert_eq!(body["error"], "invalid event name", "{name:?}");
        assert!(
            body["details"]
                .as_str()
                .unwrap()
                .contains("invalid event name"),
            "{body}"
        );
    }
    h.assert_silent(a);
    assert!(h.closed.is_empty());
}

#[test]
fn empty_or_invalid_bodies_are_400_and_nothing_is_sent() {
    let mut h = harness();
    let a = h.open();
    for body in [
        "",
        "   \n",
        "{",
        "not json",
        "{\"id\":1} {\"id\":2}",
        "{'id':1}",
        "[1,]",
    ] {
        let (status, reply) = post(&mut h, "/events/todo-created", &[], body);
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(reply["error"], "invalid body");
        assert!(reply["details"].as_str().is_some(), "{reply}");
    }
    h.assert_silent(a);
}

#[test]
fn other_methods_on_events_are_405() {
    let mut h = harness();
    let a = h.open();
    for m in [Method::Get, Method::Put, Method::Delete, Method::Options] {
        let r = h.http(m, "/events/todo-created", &[], "{}").unwrap();
        assert_eq!(r.status, 405, "{m:?}");
        assert_eq!(body_json(&r)["error"], "method not allowed");
    }
    h.assert_silent(a);
}

#[test]
fn events_endpoint_is_open_when_no_api_key_is_set() {
    let mut h = harness();
    let a = h.open();
    let (status, _) = post(&mut h, "/events/todo-created", &[], "{}");
    assert_eq!(status, 204);
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn api_key_is_enforced_when_set() {
    let mut h = keyed("s3cret");
    let a = h.open();
    for headers in [
        &[][..],
        &[("x-api-key", "wrong")][..],
        &[("authorization", "Bearer wrong")][..],
        &[("authorization", "s3cret")][..],
    ] {
        let (status, body) = post(&mut h, "/events/todo-created", headers, "{}");
        assert_eq!(status, 401, "{headers:?}");
        assert!(body["error"].is_string());
    }
    h.assert_silent(a);
    let (s1, _) = post(
        &mut h,
        "/events/todo-created",
        &[("X-API-Key", "s3cret")],
        "{}",
    );
    let (s2, _) = post(
        &mut h,
        "/events/todo-created",
        &[("Authorization", "Bearer s3cret")],
        "{}",
    );
    assert_eq!((s1, s2), (204, 204));
    assert_eq!(h.take(a).len(), 2);
}

#[test]
fn health_reports_clients_and_uptime() {
    let mut h = harness();
    let (a, _b) = (h.open(), h.open());
    h.advance(Duration::from_millis(12_500));
    let r = h.http(Method::Get, "/health", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, Some("application/json"));
    assert_eq!(
        body_json(&r),
        json!({"status":"ok","clients":2,"uptime":12.5})
    );
    h.close(a);
    assert_eq!(
        body_json(&h.http(Method::Get, "/health", &[], "").unwrap())["clients"],
        1
    );
    assert_eq!(
        h.http(Method::Post, "/health", &[], "").unwrap().status,
        405
    );
}

#[test]
fn other_paths_are_left_to_the_transport() {
    let mut h = harness();
    for path in ["/metrics", "/events", "/", "/ws", "/eventsx/a-b"] {
        assert!(h.http(Method::Get, path, &[], "").is_none(), "{path}");
        assert!(h.http(Method::Post, path, &[], "{}").is_none(), "{path}");
    }
}

#[test]
fn no_greeting_on_connect() {
    let mut h = harness();
    let a = h.open();
    h.assert_silent(a);
}

#[test]
fn ping_gets_a_pong_to_the_sender_only() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    h.advance(Duration::from_millis(1_234));
    h.send(a, r#"{"type":"ping"}"#);
    assert_eq!(
        h.take_one(a),
        json!({"type":"pong","payload":{"timestamp":"2025-01-01T12:30:01.234Z"}})
    );
    h.assert_silent(b);
    // Extra fields are tolerated.
    h.send(a, r#"{"type":"ping","payload":{"n":1},"id":9}"#);
    assert_eq!(h.take_one(a)["type"], "pong");
}

#[test]
fn bad_client_input_gets_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    for (bad, message, details) in [
        ("not json", "Invalid message", "not valid JSON"),
        ("[1]", "Invalid message", "expected a JSON object"),
        (
            r#"{"payload":{}}"#,
            "Invalid message",
            "missing field `type`",
        ),
        (r#"{"type":5}"#, "Invalid message", "must be a string"),
        (
            r#"{"type":"subscribe"}"#,
            "Unknown message type",
            "unknown message type `subscribe`",
        ),
        // Clients cannot publish events over the socket.
        (
            r#"{"type":"todo:created","payload":{"id":1}}"#,
            "Unknown message type",
            "`todo:created`",
        ),
    ] {
        h.send(a, bad);
        let reply = h.take_one(a);
        assert_eq!(reply["type"], "error", "{bad}");
        assert_eq!(reply["payload"]["message"], message, "{bad}");
        let d = reply["payload"]["details"].as_str().unwrap();
        assert!(d.contains(details), "{bad}: {d}");
        assert_eq!(reply.as_object().unwrap().len(), 2);
        h.assert_silent(b);
    }
    assert!(h.closed.is_empty());
    let errors = h.hub.stats().counters.errors;
    assert_eq!(errors.get("unknown_type"), Some(&2));
    assert_eq!(errors.get("not_json"), Some(&1));
    // Still connected and still served.
    post(&mut h, "/events/todo-created", &[], "{}");
    assert_eq!(h.take(a).len(), 1);
    assert_eq!(h.take(b).len(), 1);
}

#[test]
fn binary_frames_close_with_1003() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    h.hub
        .handle_frame(h.now, a, Frame::Binary(Bytes::from_static(b"\x00")))
        .unwrap();
    h.drain();
    assert_eq!(h.closed[&a].0, CloseCode::UNSUPPORTED_DATA);
    post(&mut h, "/events/todo-created", &[], "{}");
    assert_eq!(h.take(b).len(), 1);
    assert!(h.take(a).is_empty());
}

#[test]
fn a_closed_socket_receives_nothing_and_others_continue() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    h.close(a);
    post(&mut h, "/events/todo-deleted", &[], r#"{"id":1}"#);
    assert!(h.take(a).is_empty());
    assert_eq!(h.take_one(b)["type"], "todo:deleted");
}

#[test]
fn embedding_helper_publishes_like_the_endpoint() {
    let mut h = harness();
    let a = h.open_with(OpenInfo {
        path: "/ws".into(),
        ..OpenInfo::default()
    });
    let p: Publication = afc::event_publication("order-shipped", br#"{"id":"o1"}"#).unwrap();
    assert_eq!(p.target, Target::All);
    assert_eq!(h.publish(p), 1);
    assert_eq!(
        h.take_one(a),
        json!({"type":"order:shipped","payload":{"id":"o1"}})
    );
    assert!(matches!(
        afc::event_publication("nohyphen", b"{}"),
        Err(EventError::BadName { .. })
    ));
    assert!(matches!(
        afc::event_publication("a-b", b""),
        Err(EventError::BadBody { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Hostile input (docs/protocol/afc-v1.md, "Limits and refused input").
// ---------------------------------------------------------------------------------------------

/// `depth` nested arrays around `0`.
fn arrays(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

fn frame_error(details: &str) -> Value {
    json!({"type":"error","payload":{"message":"Invalid message","details":details}})
}

#[test]
fn deep_or_duplicate_key_frames_get_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, b) = (h.open(), h.open());
    // The ping itself is level 1.
    h.send(a, &format!(r#"{{"type":"ping","x":{}}}"#, arrays(63)));
    assert_eq!(h.take_one(a)["type"], "pong");
    for depth in [64, 1000] {
        h.send(a, &format!(r#"{{"type":"ping","x":{}}}"#, arrays(depth)));
        assert_eq!(
            h.take_one(a),
            frame_error("JSON nested deeper than 64 levels")
        );
    }
    for (bad, key) in [
        (r#"{"type":"ping","type":"ping"}"#, "type"),
        (r#"{"type":"ping","\u0074ype":"ping"}"#, "type"),
        (r#"{"type":"ping","x":{"a":1,"a":1}}"#, "a"),
        (r#"{"type":"ping","x":[{"a":1},{"b":1,"b":1}]}"#, "b"),
    ] {
        h.send(a, bad);
        assert_eq!(
            h.take_one(a),
            frame_error(&format!("duplicate key `{key}`")),
            "{bad}"
        );
    }
    h.assert_silent(b);
    assert!(h.closed.is_empty());
    let errors = h.hub.stats().counters.errors;
    assert_eq!(
        (errors.get("too_deep"), errors.get("duplicate_key")),
        (Some(&2), Some(&4))
    );
}

#[test]
fn a_64_deep_body_is_relayed_untouched_and_65_is_400() {
    let mut h = harness();
    let a = h.open();
    let body = format!(" {} ", arrays(64));
    let (status, _) = post(&mut h, "/events/deep-ok", &[], &body);
    assert_eq!(status, 204);
    let got = h.take_one(a);
    assert_eq!(
        got["payload"],
        serde_json::from_str::<Value>(&body).unwrap()
    );
    for depth in [65, 100_000] {
        let (status, reply) = post(&mut h, "/events/deep-no", &[], &arrays(depth));
        assert_eq!(status, 400);
        assert_eq!(
            reply,
            json!({"error":"invalid body","details":"invalid event body: JSON nested deeper than 64 levels"})
        );
    }
    let (status, reply) = post(
        &mut h,
        "/events/deep-no",
        &[],
        &format!(r#"{{"a":{}}}"#, arrays(64)),
    );
    assert_eq!((status, &reply["error"]), (400, &json!("invalid body")));
    h.assert_silent(a);
}

#[test]
fn duplicate_keys_in_a_body_are_400_and_nothing_is_sent() {
    let mut h = harness();
    let a = h.open();
    for (body, key) in [
        (r#"{"id":1,"id":2}"#, "id"),
        (r#"{"id":1,"\u0069d":1}"#, "id"),
        (r#"{"row":{"title":"a","done":false,"title":"b"}}"#, "title"),
        (r#"[{"id":1},{"id":2,"id":3}]"#, "id"),
        (r#"{"a":[1,[{"deep":0,"deep":0}]]}"#, "deep"),
    ] {
        let (status, reply) = post(&mut h, "/events/todo-created", &[], body);
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            reply,
            json!({"error":"invalid body","details":format!("invalid event body: duplicate key `{key}`")}),
            "{body}"
        );
    }
    h.assert_silent(a);
    // Sibling objects may repeat a key.
    assert_eq!(
        post(
            &mut h,
            "/events/todo-created",
            &[],
            r#"[{"id":1},{"id":2}]"#
        )
        .0,
        204
    );
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn event_names_are_capped_at_max_id_bytes() {
    let mut h = harness();
    let a = h.open();
    let at_limit = format!("{}-x", "e".repeat(254)); // 256 bytes
    let (status, _) = post(&mut h, &format!("/events/{at_limit}"), &[], "1");
    assert_eq!(status, 204);
    assert_eq!(h.take_one(a)["type"], format!("{}:x", "e".repeat(254)));
    let over = format!("{}-x", "e".repeat(255)); // 257 bytes
    let (status, reply) = post(&mut h, &format!("/events/{over}"), &[], "1");
    assert_eq!(status, 400);
    assert_eq!(
        reply,
        json!({"error":"invalid event name","details":"event name is longer than 256 bytes"})
    );
    h.assert_silent(a);
    assert_eq!(h.hub.stats().counters.errors.get("id_too_long"), Some(&1));

    // The limit is an option.
    let mut h = Harness::new(&afc::SPEC, Options::default().with_max_id_bytes(16));
    let a = h.open();
    assert_eq!(post(&mut h, "/events/todo-created1234", &[], "1").0, 204); // 16 bytes
    let (status, reply) = post(&mut h, "/events/todo-created12345", &[], "1");
    assert_eq!(status, 400);
    assert_eq!(reply["details"], "event name is longer than 16 bytes");
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn method_not_allowed_says_what_is_allowed() {
    let mut h = harness();
    for (m, path, allow, details) in [
        (Method::Get, "/events/todo-created", "POST", "use POST"),
        (Method::Head, "/events/todo-created", "POST", "use POST"),
        (Method::Put, "/events/todo-created", "POST", "use POST"),
        (Method::Post, "/health", "GET, HEAD", "use GET"),
        (Method::Delete, "/health", "GET, HEAD", "use GET"),
    ] {
        let r = h.http(m, path, &[], "").unwrap();
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some(allow)),
            "{m:?} {path}"
        );
        assert_eq!(
            body_json(&r),
            json!({"error":"method not allowed","details":details})
        );
    }
    let r = h.http(Method::Head, "/health", &[], "").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn any_of_several_api_keys_is_accepted_and_the_key_is_checked_before_the_body() {
    let mut h = Harness::new(
        &afc::SPEC,
        Options::default().with_api_key("old").with_api_key("new"),
    );
    let a = h.open();
    for headers in [
        &[("x-api-key", "old")][..],
        &[("x-api-key", "new")][..],
        &[("authorization", "Bearer new")][..],
    ] {
        assert_eq!(post(&mut h, "/events/todo-created", headers, "{}").0, 204);
    }
    assert_eq!(h.take(a).len(), 3);
    // A wrong key with a bad name and a bad body: the key answers first.
    let r = h
        .http(
            Method::Post,
            "/events/nohyphen",
            &[("x-api-key", "older")],
            "{",
        )
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(body_json(&r), json!({"error":"invalid or missing API key"}));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    h.assert_silent(a);
}
