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
    let r = h.hub.handle_http(h.now, &req).unwrap();
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
    h.hub.handle_http(h.now, &req).unwrap();
    let mut ptrs = Vec::new();
    while let Some(out) = h.hub.poll_output() {
        if let Output::Transmit { payload, .. } = out {
            ptrs.push(payload.as_ptr());
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
