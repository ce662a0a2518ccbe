//! Flows from `dcdock-assignments.md` and the decisions in `docs/protocol/dcdock-v1.md`:
//! authenticated greeting, direction filters, assignment events, conflicts to one user only,
//! errors to the sender alone, and the publish and stats endpoints.

mod common;
use common::*;
use serde_json::{json, Value};
use switchboard_hub::{CloseCode, ConnectionHandle, HttpResponse, Hub, Identity, Method, OpenInfo};
use switchboard_protocol::dcdock::v1::{self as dcdock, DcDock, ServerEvent};
use switchboard_protocol::Options;

type Harness = common::Harness<Hub<DcDock>>;

const TS: &str = "2025-01-01T12:30:00";
const KEY: &str = "pub-key";

fn harness() -> Harness {
    Harness::of(DcDock::new(&Options::default().with_api_key(KEY)))
}

fn identity(user: &str) -> Identity {
    Identity {
        user: user.into(),
        claims: vec![("email".into(), format!("{user}@dcdock.com"))],
    }
}

/// Open as `user` and take the `connection_ack`.
fn connect(h: &mut Harness, user: &str) -> ConnectionHandle {
    let c = h.open_as(identity(user));
    assert_eq!(h.take_one(c)["type"], "connection_ack");
    c
}

fn subscribe(h: &mut Harness, c: ConnectionHandle, direction: &str) {
    h.send_value(
        c,
        &json!({"type": "subscribe", "filters": {"direction": direction}}),
    );
    assert_eq!(h.take_one(c)["type"], "subscribed");
}

fn assignment(kind: &str, action: &str, direction: Option<&str>) -> Value {
    let mut data = json!({"id": 7, "ramp_id": 1, "load_id": 9, "version": 1});
    if let Some(d) = direction {
        data["load"] = json!({"id": 9, "reference": "IB-2025-005", "direction": d});
    }
    json!({
        "type": kind,
        "assignment_id": 7,
        "action": action,
        "user_id": 3,
        "user_email": "operator1@dcdock.com",
        "data": data
    })
}

fn conflict(user: Value) -> Value {
    json!({
        "type": "conflict_detected",
        "assignment_id": 7,
        "current_version": 5,
        "attempted_version": 4,
        "current_data": {"id": 7, "version": 5},
        "message": "Another user has modified this assignment",
        "user_id": user
    })
}

fn publish(h: &mut Harness, body: &Value) -> HttpResponse {
    h.http(
        Method::Post,
        "/api/ws/publish",
        &[("x-api-key", KEY)],
        &body.to_string(),
    )
    .expect("dcdock owns /api/ws/publish")
}

#[test]
fn open_with_a_verified_identity_is_acknowledged() {
    let mut h = harness();
    let c = h.open_as(identity("1"));
    let id = format!("user_1_{}", c.serial());
    assert_eq!(
        h.take_one(c),
        json!({
            "type": "connection_ack",
            "timestamp": TS,
            "client_id": id,
            "message": "Connected to DCDock real-time updates"
        })
    );
    assert_eq!(h.hub.connection(c).unwrap().client_id, id);
    assert!(h.closed.is_empty());
}

#[test]
fn open_without_an_identity_is_closed_with_1008() {
    let mut h = harness();
    let c = h.open_with(OpenInfo {
        path: "/api/ws".into(),
        ..OpenInfo::default()
    });
    h.assert_silent(c);
    assert_eq!(
        h.closed[&c],
        (
            CloseCode::POLICY_VIOLATION,
            "missing or invalid token".to_string()
        )
    );
    assert_eq!(h.hub.stats().connections, 0);
}

#[test]
fn subscribe_replies_with_the_filter_in_force() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    h.send(c, r#"{"type":"subscribe","filters":{"direction":"IB"}}"#);
    assert_eq!(
        h.take_one(c),
        json!({"type": "subscribed", "timestamp": TS, "filters": {"direction": "IB"}})
    );
    for empty in [
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","filters":{}}"#,
        r#"{"type":"subscribe","filters":null}"#,
        r#"{"type":"subscribe","filters":{"status":"PLANNED"}}"#,
    ] {
        h.send(c, empty);
        assert_eq!(
            h.take_one(c),
            json!({"type": "subscribed", "timestamp": TS, "filters": {}}),
            "{empty}"
        );
        assert!(h.hub.connection(c).unwrap().filter.is_empty());
    }
}

#[test]
fn direction_filters_select_assignment_events() {
    let mut h = harness();
    let inbound = connect(&mut h, "1");
    let outbound = connect(&mut h, "2");
    let everything = connect(&mut h, "3");
    subscribe(&mut h, inbound, "IB");
    subscribe(&mut h, outbound, "OB");

    let r = publish(
        &mut h,
        &assignment("assignment_created", "CREATE", Some("IB")),
    );
    assert_eq!((r.status, body_json(&r)), (202, json!({"delivered": 2})));
    let mut expected = assignment("assignment_created", "CREATE", Some("IB"));
    expected["timestamp"] = json!(TS);
    assert_eq!(h.take_one(inbound), expected);
    assert_eq!(h.take_one(everything), expected);
    h.assert_silent(outbound);

    publish(
        &mut h,
        &assignment("assignment_updated", "UPDATE", Some("OB")),
    );
    assert_eq!(h.take_one(outbound)["type"], "assignment_updated");
    assert_eq!(h.take_one(everything)["type"], "assignment_updated");
    h.assert_silent(inbound);

    // No load direction: only unfiltered clients receive it.
    let r = publish(&mut h, &assignment("assignment_deleted", "DELETE", None));
    assert_eq!(body_json(&r), json!({"delivered": 1}));
    assert_eq!(h.take_one(everything)["type"], "assignment_deleted");
    h.assert_silent(inbound);
    h.assert_silent(outbound);
}

#[test]
fn unsubscribe_clears_the_filter() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    subscribe(&mut h, c, "IB");
    h.send(c, r#"{"type":"unsubscribe"}"#);
    assert_eq!(
        h.take_one(c),
        json!({"type": "unsubscribed", "timestamp": TS})
    );
    publish(
        &mut h,
        &assignment("assignment_created", "CREATE", Some("OB")),
    );
    assert_eq!(h.take_one(c)["type"], "assignment_created");
}

#[test]
fn ping_gets_a_pong() {
    let mut h = harness();
    let (a, b) = (connect(&mut h, "1"), connect(&mut h, "2"));
    h.send(a, r#"{"type":"ping"}"#);
    assert_eq!(h.take_one(a), json!({"type": "pong", "timestamp": TS}));
    h.assert_silent(b);
}

#[test]
fn a_bad_direction_is_an_error_and_keeps_the_old_filter() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    subscribe(&mut h, c, "IB");
    h.send(
        c,
        r#"{"type":"subscribe","filters":{"direction":"INBOUND"}}"#,
    );
    let e = h.take_one(c);
    assert_eq!(e["type"], "error");
    assert_eq!(e["message"], "Invalid message format");
    assert!(e["details"].as_str().unwrap().contains("INBOUND"));
    assert_eq!(
        h.hub.connection(c).unwrap().filter.entries(),
        &[("direction".to_string(), "IB".to_string())]
    );
}

#[test]
fn bad_input_gets_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, b) = (connect(&mut h, "1"), connect(&mut h, "2"));
    for (bad, details) in [
        ("hello", "not valid JSON"),
        ("42", "expected a JSON object"),
        (r#"{"filters":{}}"#, "missing field `type`"),
        (r#"{"type":["ping"]}"#, "`type` must be a string"),
        (
            r#"{"type":"assignment_created"}"#,
            "unknown message type `assignment_created`",
        ),
        (r#"{"type":"subscribe","filters":"IB"}"#, "invalid message"),
        (
            r#"{"type":"subscribe","filters":{"direction":5}}"#,
            "invalid message",
        ),
    ] {
        h.send(a, bad);
        let e = h.take_one(a);
        assert_eq!(e["type"], "error", "{bad}");
        assert_eq!(e["timestamp"], TS);
        assert_eq!(e["message"], "Invalid message format");
        let d = e["details"].as_str().unwrap();
        assert!(d.contains(details), "{bad}: {d}");
        h.assert_silent(b);
    }
    assert!(h.closed.is_empty());
    h.send(a, r#"{"type":"ping"}"#);
    assert_eq!(h.take_one(a)["type"], "pong");
}

#[test]
fn conflicts_go_only_to_the_users_connections_whatever_their_filters() {
    let mut h = harness();
    let mine_1 = connect(&mut h, "3");
    let mine_2 = connect(&mut h, "3");
    let other = connect(&mut h, "4");
    subscribe(&mut h, mine_2, "OB");
    let r = publish(&mut h, &conflict(json!(3)));
    assert_eq!(body_json(&r), json!({"delivered": 2}));
    let mut expected = conflict(json!(3));
    expected["timestamp"] = json!(TS);
    assert_eq!(h.take_one(mine_1), expected);
    assert_eq!(h.take_one(mine_2), expected);
    h.assert_silent(other);
    // A string user id names the same user.
    publish(&mut h, &conflict(json!("4")));
    assert_eq!(h.take_one(other)["user_id"], "4");
    h.assert_silent(mine_1);
}

#[test]
fn a_given_timestamp_is_kept() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    let mut body = assignment("assignment_updated", "UPDATE", Some("IB"));
    body["timestamp"] = json!("2025-01-01T12:35:00");
    publish(&mut h, &body);
    assert_eq!(h.take_one(c), body);
}

#[test]
fn publish_is_refused_with_403_when_no_key_is_configured() {
    let mut h = Harness::of(DcDock::new(&Options::default()));
    let c = connect(&mut h, "1");
    let body = assignment("assignment_created", "CREATE", Some("IB")).to_string();
    let r = h
        .http(
            Method::Post,
            "/api/ws/publish",
            &[("x-api-key", "anything")],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        body_json(&r),
        json!({"error": "publishing disabled: set DCDOCK_API_KEY"})
    );
    h.assert_silent(c);
}

#[test]
fn publish_requires_the_key() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    let body = assignment("assignment_created", "CREATE", Some("IB")).to_string();
    for headers in [
        &[][..],
        &[("x-api-key", "nope")],
        &[("authorization", "Bearer nope")],
        &[("authorization", KEY)],
    ] {
        let r = h
            .http(Method::Post, "/api/ws/publish", headers, &body)
            .unwrap();
        assert_eq!(r.status, 401, "{headers:?}");
        assert!(body_json(&r)["error"].is_string());
    }
    h.assert_silent(c);
    let auth = format!("Bearer {KEY}");
    let r = h
        .http(
            Method::Post,
            "/api/ws/publish",
            &[("authorization", &auth)],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(h.take_one(c)["type"], "assignment_created");
}

#[test]
fn publish_rejects_bad_bodies_with_400() {
    let mut h = harness();
    let c = connect(&mut h, "1");
    let mut no_user = conflict(json!(3));
    no_user.as_object_mut().unwrap().remove("user_id");
    let mut mismatched = assignment("assignment_created", "DELETE", None);
    mismatched["timestamp"] = json!(TS);
    let mut data_not_object = assignment("assignment_updated", "UPDATE", None);
    data_not_object["data"] = json!([1]);
    for (body, details) in [
        ("{".to_string(), "not valid JSON"),
        (no_user.to_string(), "missing field `user_id`"),
        (mismatched.to_string(), "does not match"),
        (data_not_object.to_string(), "invalid message"),
        (
            r#"{"type":"pong"}"#.to_string(),
            "unknown message type `pong`",
        ),
        (r#"{"assignment_id":1}"#.to_string(), "missing field `type`"),
        (
            r#"{"type":"assignment_created","assignment_id":1,"action":"CREATE"}"#.to_string(),
            "missing field",
        ),
    ] {
        let r = h
            .http(
                Method::Post,
                "/api/ws/publish",
                &[("x-api-key", KEY)],
                &body,
            )
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        let v = body_json(&r);
        assert_eq!(v["error"], "Invalid event");
        assert!(
            v["details"].as_str().unwrap().contains(details),
            "{body}: {v}"
        );
    }
    h.assert_silent(c);
}

#[test]
fn stats_lists_connections_and_their_filters() {
    let mut h = harness();
    let a = connect(&mut h, "1");
    let b = connect(&mut h, "3");
    let c = connect(&mut h, "4");
    subscribe(&mut h, a, "IB");
    subscribe(&mut h, c, "OB");
    let r = h.http(Method::Get, "/api/ws/stats", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        body_json(&r),
        json!({
            "active_connections": 3,
            "clients": [
                {"client_id": format!("user_1_{}", a.serial()), "filters": {"direction": "IB"}},
                {"client_id": format!("user_3_{}", b.serial()), "filters": {}},
                {"client_id": format!("user_4_{}", c.serial()), "filters": {"direction": "OB"}}
            ]
        })
    );
    h.close(b);
    let r = h.http(Method::Get, "/api/ws/stats", &[], "").unwrap();
    assert_eq!(body_json(&r)["active_connections"], 2);
}

#[test]
fn wrong_methods_get_405_and_unknown_paths_are_not_ours() {
    let mut h = harness();
    assert_eq!(
        h.http(Method::Get, "/api/ws/publish", &[], "")
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        h.http(Method::Post, "/api/ws/stats", &[], "")
            .unwrap()
            .status,
        405
    );
    assert!(h.http(Method::Get, "/api/ws", &[], "").is_none());
    assert!(h.http(Method::Get, "/health", &[], "").is_none());
}

#[test]
fn event_publication_is_what_an_embedding_service_publishes() {
    let mut h = harness();
    let inbound = connect(&mut h, "1");
    let outbound = connect(&mut h, "2");
    subscribe(&mut h, inbound, "IB");
    subscribe(&mut h, outbound, "OB");
    let body = assignment("assignment_created", "CREATE", Some("OB"));
    let event = dcdock::decode_publish(body.to_string().as_bytes()).unwrap();
    assert!(matches!(event, ServerEvent::AssignmentCreated(_)));
    assert_eq!(h.publish(dcdock::event_publication(&event, h.wall())), 1);
    assert_eq!(h.take_one(outbound)["timestamp"], TS);
    h.assert_silent(inbound);

    let event = dcdock::decode_publish(conflict(json!(1)).to_string().as_bytes()).unwrap();
    let p = dcdock::event_publication(&event, h.wall());
    assert_eq!(p.target, switchboard_hub::Target::User("1".into()));
    assert_eq!(p.tags, None);
    assert_eq!(h.publish(p), 1);
    assert_eq!(h.take_one(inbound)["type"], "conflict_detected");
}

// ---------------------------------------------------------------------------------------------
// Hostile input (docs/protocol/dcdock-v1.md, "Limits and refused input").
// ---------------------------------------------------------------------------------------------

fn invalid(details: &str) -> Value {
    json!({"type": "error", "timestamp": TS, "message": "Invalid message format", "details": details})
}

fn arrays(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_or_duplicate_key_frames_get_an_error_to_the_sender_only() {
    let mut h = harness();
    let a = connect(&mut h, "1");
    let b = connect(&mut h, "2");
    subscribe(&mut h, a, "IB");
    // subscribe (1) > filters (2) > ignored key: 62 more levels is 64 in all.
    h.send(
        a,
        &format!(
            r#"{{"type":"subscribe","filters":{{"direction":"OB","x":{}}}}}"#,
            arrays(62)
        ),
    );
    assert_eq!(h.take_one(a)["filters"], json!({"direction": "OB"}));
    h.send(
        a,
        &format!(
            r#"{{"type":"subscribe","filters":{{"direction":"IB","x":{}}}}}"#,
            arrays(63)
        ),
    );
    assert_eq!(h.take_one(a), invalid("JSON nested deeper than 64 levels"));
    for (bad, key) in [
        (r#"{"type":"ping","type":"subscribe"}"#, "type"),
        (
            r#"{"type":"subscribe","filters":{"direction":"IB","direction":"OB"}}"#,
            "direction",
        ),
        (
            r#"{"type":"subscribe","filters":{"direction":"IB","\u0064irection":"OB"}}"#,
            "direction",
        ),
    ] {
        h.send(a, bad);
        assert_eq!(
            h.take_one(a),
            invalid(&format!("duplicate key `{key}`")),
            "{bad}"
        );
    }
    h.assert_silent(b);
    // The refused frames left the OB filter in force: an IB event reaches only b.
    let r = publish(
        &mut h,
        &assignment("assignment_created", "CREATE", Some("IB")),
    );
    assert_eq!(body_json(&r)["delivered"], 1);
    h.assert_silent(a);
    assert_eq!(h.take_one(b)["type"], "assignment_created");
}

#[test]
fn deep_or_duplicate_key_publish_bodies_are_400() {
    let mut h = harness();
    let a = connect(&mut h, "1");
    let mut deep = assignment("assignment_created", "CREATE", Some("IB"));
    deep["data"]["history"] = serde_json::from_str(&arrays(62)).unwrap();
    assert_eq!(publish(&mut h, &deep).status, 202);
    assert_eq!(h.take(a).len(), 1);
    deep["data"]["history"] = serde_json::from_str(&arrays(63)).unwrap();
    let base = assignment("assignment_created", "CREATE", Some("IB")).to_string();
    let bodies = [
        (
            deep.to_string(),
            "JSON nested deeper than 64 levels".to_string(),
        ),
        (
            base.replacen('{', r#"{"user_id":4,"#, 1),
            "duplicate key `user_id`".to_string(),
        ),
        (
            base.replacen(
                r#""direction":"IB""#,
                r#""direction":"IB","direction":"OB""#,
                1,
            ),
            "duplicate key `direction`".to_string(),
        ),
    ];
    for (body, details) in bodies {
        let r = h
            .http(
                Method::Post,
                "/api/ws/publish",
                &[("x-api-key", KEY)],
                &body,
            )
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(
            body_json(&r),
            json!({"error": "Invalid event", "details": details})
        );
    }
    h.assert_silent(a);
}

#[test]
fn filters_must_be_an_object_or_null() {
    let mut h = harness();
    let a = connect(&mut h, "1");
    subscribe(&mut h, a, "IB");
    for bad in [
        r#"{"type":"subscribe","filters":[]}"#,
        r#"{"type":"subscribe","filters":["OB"]}"#,
        r#"{"type":"subscribe","filters":"OB"}"#,
        r#"{"type":"subscribe","filters":5}"#,
        r#"{"type":"subscribe","filters":true}"#,
    ] {
        h.send(a, bad);
        let e = h.take_one(a);
        assert_eq!(e["type"], "error", "{bad}");
        let d = e["details"].as_str().unwrap();
        assert!(d.contains("expected an object or null"), "{bad}: {d}");
    }
    // The IB filter is still in force.
    let stats = body_json(&h.http(Method::Get, "/api/ws/stats", &[], "").unwrap());
    assert_eq!(stats["clients"][0]["filters"], json!({"direction": "IB"}));
    // The documented forms still work.
    for ok in [
        r#"{"type":"subscribe","filters":{}}"#,
        r#"{"type":"subscribe","filters":null}"#,
        r#"{"type":"subscribe"}"#,
    ] {
        h.send(a, ok);
        assert_eq!(
            h.take_one(a),
            json!({"type": "subscribed", "timestamp": TS, "filters": {}}),
            "{ok}"
        );
    }
}

#[test]
fn empty_string_ids_are_refused_in_publish_bodies() {
    let mut h = harness();
    let a = connect(&mut h, "1");
    for field in ["assignment_id", "user_id"] {
        let mut body = assignment("assignment_updated", "UPDATE", None);
        body[field] = json!("");
        let r = publish(&mut h, &body);
        assert_eq!(r.status, 400, "{field}");
        let d = body_json(&r)["details"].as_str().unwrap().to_string();
        assert!(
            d.contains("expected an integer or a non-empty string"),
            "{d}"
        );
    }
    let mut c = conflict(json!(""));
    c["user_id"] = json!("");
    assert_eq!(publish(&mut h, &c).status, 400);
    h.assert_silent(a);
    // Non-empty strings and integers are ids.
    assert_eq!(publish(&mut h, &conflict(json!("1"))).status, 202);
    assert_eq!(h.take_one(a)["type"], "conflict_detected");
}

#[test]
fn a_user_id_over_max_id_bytes_is_closed_with_1008() {
    let mut h = harness();
    let ok = connect(&mut h, &"u".repeat(256));
    let c = h.open_as(identity(&"u".repeat(257)));
    h.assert_silent(c);
    assert_eq!(
        h.closed[&c],
        (
            CloseCode::POLICY_VIOLATION,
            dcdock::USER_ID_TOO_LONG_REASON.to_string()
        )
    );
    assert_eq!(h.hub.stats().connections, 1);
    assert!(!h.closed.contains_key(&ok));
    assert_eq!(h.hub.stats().counters.errors.get("id_too_long"), Some(&1));
}

#[test]
fn stats_lists_at_most_1000_clients_oldest_first_with_an_exact_total() {
    let mut h = harness();
    let conns: Vec<ConnectionHandle> = (0..1001).map(|i| connect(&mut h, &i.to_string())).collect();
    let v = body_json(&h.http(Method::Get, "/api/ws/stats", &[], "").unwrap());
    assert_eq!(v["active_connections"], 1001);
    assert_eq!(v["truncated"], true);
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1000);
    assert_eq!(
        clients[0]["client_id"],
        format!("user_0_{}", conns[0].serial())
    );
    assert_eq!(
        clients[999]["client_id"],
        format!("user_999_{}", conns[999].serial())
    );
    h.close(conns[0]);
    let v = body_json(&h.http(Method::Get, "/api/ws/stats", &[], "").unwrap());
    assert_eq!(v["active_connections"], 1000);
    assert_eq!(v["clients"].as_array().unwrap().len(), 1000);
    assert!(v.get("truncated").is_none());
}

#[test]
fn method_not_allowed_carries_allow_and_several_keys_publish() {
    let mut h = Harness::of(DcDock::new(
        &Options::default().with_api_key("k-old").with_api_key(KEY),
    ));
    for (m, path, allow) in [
        (Method::Get, "/api/ws/publish", "POST"),
        (Method::Post, "/api/ws/stats", "GET, HEAD"),
    ] {
        let r = h.http(m, path, &[], "").unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{path}");
    }
    let body = assignment("assignment_created", "CREATE", Some("IB")).to_string();
    for key in ["k-old", KEY] {
        let r = h
            .http(
                Method::Post,
                "/api/ws/publish",
                &[("x-api-key", key)],
                &body,
            )
            .unwrap();
        assert_eq!(r.status, 202, "{key}");
    }
    let r = h
        .http(
            Method::Post,
            "/api/ws/publish",
            &[("x-api-key", "k-older")],
            "{",
        )
        .unwrap();
    assert_eq!(r.status, 401);
}
