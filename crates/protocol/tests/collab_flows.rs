//! Flows from `collab-rooms.md` and the decisions in `docs/protocol/collab-v1.md`: greeting,
//! project rooms with presence, edits relayed to the other members, errors to the sender alone,
//! and the `/health`, `/stats` and `/broadcast` endpoints.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Frame, HttpResponse, Hub, Limits, Method,
};
use switchboard_protocol::collab::v1::{self as collab, Broadcast, Collab};
use switchboard_protocol::Options;

type Harness = common::Harness<Hub<Collab>>;

const T0_MS: u64 = 1_735_734_600_000;

fn harness() -> Harness {
    Harness::of(Collab::new(&Options::default()))
}

/// Open a connection and take its greeting.
fn connect(h: &mut Harness) -> (ConnectionHandle, String) {
    let c = h.open();
    let hello = h.take_one(c);
    (c, hello["clientId"].as_str().unwrap().to_string())
}

fn join(h: &mut Harness, c: ConnectionHandle, project: &str) {
    h.send_value(c, &json!({"type": "JOIN_PROJECT", "projectId": project}));
}

fn set_user(h: &mut Harness, c: ConnectionHandle, user: &str) {
    h.send_value(c, &json!({"type": "SET_USER", "payload": {"userId": user}}));
}

fn post(h: &mut Harness, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    h.http(Method::Post, "/broadcast", headers, body)
        .expect("collab owns /broadcast")
}

#[test]
fn open_greets_with_connection_established_and_names_the_client() {
    let mut h = harness();
    let a = h.open();
    let hello = h.take_one(a);
    let id = format!("client_{T0_MS}_{}", a.serial());
    assert_eq!(
        hello,
        json!({"type": "CONNECTION_ESTABLISHED", "clientId": id, "timestamp": T0_MS})
    );
    assert!(
        hello["timestamp"].is_u64(),
        "a Date.now() number, not a string"
    );
    assert_eq!(h.hub.connection(a).unwrap().client_id, id);
    let b = h.open();
    assert_ne!(h.take_one(b)["clientId"], hello["clientId"]);
}

#[test]
fn join_project_sends_presence_to_every_member_including_the_joiner() {
    let mut h = harness();
    let (a, id_a) = connect(&mut h);
    set_user(&mut h, a, "user_a");
    h.assert_silent(a); // SET_USER has no direct reply.
    join(&mut h, a, "project-123");
    assert_eq!(
        h.take_one(a),
        json!({
            "type": "USER_PRESENCE",
            "payload": {
                "projectId": "project-123",
                "activeUsers": [{"userId": "user_a", "clientId": id_a, "joinedAt": T0_MS}],
                "userCount": 1
            },
            "operationId": format!("presence-{T0_MS}"),
            "timestamp": T0_MS
        })
    );
    h.advance(Duration::from_secs(5));
    let (b, id_b) = connect(&mut h);
    let (outsider, _) = connect(&mut h);
    h.send_value(
        b,
        &json!({"type": "JOIN_PROJECT", "projectId": "project-123", "userId": "user_b"}),
    );
    let expected_users = json!([
        {"userId": "user_a", "clientId": id_a, "joinedAt": T0_MS},
        {"userId": "user_b", "clientId": id_b, "joinedAt": T0_MS + 5000}
    ]);
    for c in [a, b] {
        let p = h.take_one(c);
        assert_eq!(p["type"], "USER_PRESENCE");
        assert_eq!(p["payload"]["activeUsers"], expected_users);
        assert_eq!(p["payload"]["userCount"], 2);
        assert_eq!(p["timestamp"], T0_MS + 5000);
    }
    h.assert_silent(outsider);
}

#[test]
fn set_user_is_optional_and_anonymous_members_are_not_listed() {
    // The seed's example client: connect, JOIN_PROJECT, TASK_UPDATE, never SET_USER.
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "project-123");
    let p = h.take_one(a);
    assert_eq!(p["payload"]["activeUsers"], json!([]));
    assert_eq!(p["payload"]["userCount"], 0);
    join(&mut h, b, "project-123");
    assert_eq!(h.take_one(a)["payload"]["userCount"], 0);
    h.take_one(b);
    h.send_value(
        a,
        &json!({
            "type": "TASK_UPDATE",
            "projectId": "project-123",
            "payload": {"id": "task-456", "title": "Updated task title"},
            "operationId": "op-789"
        }),
    );
    assert_eq!(
        h.take_one(b),
        json!({
            "type": "TASK_UPDATE",
            "payload": {"id": "task-456", "title": "Updated task title"},
            "operationId": "op-789",
            "timestamp": T0_MS,
            "projectId": "project-123",
            "userId": null
        })
    );
    h.assert_silent(a);
}

#[test]
fn set_user_announces_presence_to_each_project_the_client_is_in() {
    let mut h = harness();
    let (a, id_a) = connect(&mut h);
    let (b, _) = connect(&mut h);
    let (c, _) = connect(&mut h);
    set_user(&mut h, a, "early");
    h.assert_silent(a); // In no project: nobody to tell.
    join(&mut h, a, "p1");
    join(&mut h, a, "p2");
    join(&mut h, b, "p1");
    join(&mut h, c, "p2");
    for x in [a, b, c] {
        h.take(x);
    }
    // The top-level form works too.
    h.send_value(a, &json!({"type": "SET_USER", "userId": "alice"}));
    let mine = h.take(a);
    assert_eq!(mine.len(), 2, "one presence per project: {mine:#?}");
    let projects: Vec<&str> = mine
        .iter()
        .map(|m| m["payload"]["projectId"].as_str().unwrap())
        .collect();
    assert!(projects.contains(&"p1") && projects.contains(&"p2"));
    for (x, project) in [(b, "p1"), (c, "p2")] {
        let p = h.take_one(x);
        assert_eq!(p["payload"]["projectId"], project);
        assert_eq!(
            p["payload"]["activeUsers"],
            json!([{"userId": "alice", "clientId": id_a, "joinedAt": T0_MS}])
        );
    }
}

#[test]
fn edits_reach_the_other_members_only() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    let (other_project, _) = connect(&mut h);
    let (lobby, _) = connect(&mut h);
    set_user(&mut h, a, "alice");
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    join(&mut h, other_project, "p2");
    for x in [a, b, other_project] {
        h.take(x);
    }
    for kind in [
        "TASK_CREATE",
        "TASK_UPDATE",
        "TASK_DELETE",
        "COMMENT_CREATE",
        "COMMENT_UPDATE",
        "COMMENT_DELETE",
        "PROJECT_UPDATE",
    ] {
        h.send_value(
            a,
            &json!({"type": kind, "projectId": "p1", "payload": {"id": 1}, "operationId": "op-1"}),
        );
        assert_eq!(
            h.take_one(b),
            json!({
                "type": kind,
                "payload": {"id": 1},
                "operationId": "op-1",
                "timestamp": T0_MS,
                "projectId": "p1",
                "userId": "alice"
            }),
            "{kind}"
        );
        h.assert_silent(a);
        h.assert_silent(other_project);
        h.assert_silent(lobby);
    }
}

#[test]
fn edit_without_operation_id_is_relayed_without_one() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    h.take(a);
    h.take(b);
    h.send_value(
        a,
        &json!({"type": "COMMENT_CREATE", "projectId": "p1", "payload": null, "extra": 1}),
    );
    let got = h.take_one(b);
    assert_eq!(
        got,
        json!({"type": "COMMENT_CREATE", "payload": null, "timestamp": T0_MS, "projectId": "p1", "userId": null})
    );
    assert!(got.get("operationId").is_none());
}

#[test]
fn edit_for_a_project_not_joined_is_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, b, "p1");
    h.take(b);
    h.send_value(
        a,
        &json!({"type": "TASK_CREATE", "projectId": "p1", "payload": {"id": 1}}),
    );
    let e = h.take_one(a);
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["message"], "Not a member of this project");
    assert_eq!(e["error"], e["message"]);
    assert!(e["details"].as_str().unwrap().contains("JOIN_PROJECT"));
    assert_eq!(e["timestamp"], T0_MS);
    h.assert_silent(b);
}

#[test]
fn leave_project_announces_presence_to_the_remaining_members() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, id_b) = connect(&mut h);
    set_user(&mut h, a, "alice");
    set_user(&mut h, b, "bob");
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    h.take(a);
    h.take(b);
    h.send_value(a, &json!({"type": "LEAVE_PROJECT", "projectId": "p1"}));
    h.assert_silent(a); // No reply to the leaver.
    let p = h.take_one(b);
    assert_eq!(p["type"], "USER_PRESENCE");
    assert_eq!(
        p["payload"]["activeUsers"],
        json!([{"userId": "bob", "clientId": id_b, "joinedAt": T0_MS}])
    );
    // The leaver no longer receives the project's edits.
    h.send_value(
        b,
        &json!({"type": "TASK_UPDATE", "projectId": "p1", "payload": {}}),
    );
    h.assert_silent(a);
    // Leaving the last member removes the room.
    h.send_value(b, &json!({"type": "LEAVE_PROJECT", "projectId": "p1"}));
    h.assert_silent(b);
    assert_eq!(h.hub.rooms().count(), 0);
}

#[test]
fn leaving_a_project_not_joined_is_a_silent_no_op() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, b, "p1");
    h.take(b);
    h.send_value(a, &json!({"type": "LEAVE_PROJECT", "projectId": "p1"}));
    h.assert_silent(a);
    h.assert_silent(b);
}

#[test]
fn joining_again_re_announces_presence() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    join(&mut h, a, "p1");
    h.take(a);
    join(&mut h, a, "p1");
    assert_eq!(h.take_one(a)["type"], "USER_PRESENCE");
    assert_eq!(h.hub.room_members("project:p1").count(), 1);
}

#[test]
fn close_announces_presence_to_each_project_the_client_was_in() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, id_b) = connect(&mut h);
    let (c, _) = connect(&mut h);
    set_user(&mut h, a, "alice");
    set_user(&mut h, b, "bob");
    join(&mut h, a, "p1");
    join(&mut h, a, "p2");
    join(&mut h, b, "p1");
    join(&mut h, c, "p2");
    for x in [a, b, c] {
        h.take(x);
    }
    h.close(a);
    let p1 = h.take_one(b);
    assert_eq!(p1["payload"]["projectId"], "p1");
    assert_eq!(
        p1["payload"]["activeUsers"],
        json!([{"userId": "bob", "clientId": id_b, "joinedAt": T0_MS}])
    );
    let p2 = h.take_one(c);
    assert_eq!(p2["payload"]["projectId"], "p2");
    assert_eq!(p2["payload"]["userCount"], 0);
}

#[test]
fn a_server_side_close_also_announces_presence() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    h.take(a);
    h.take(b);
    // A binary frame makes the hub close the connection with 1003.
    h.hub
        .handle_frame(h.now, a, Frame::Binary(vec![1, 2].into()))
        .unwrap();
    h.drain();
    assert_eq!(h.closed[&a].0, CloseCode::UNSUPPORTED_DATA);
    assert_eq!(h.take_one(b)["type"], "USER_PRESENCE");
}

#[test]
fn bad_input_gets_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    h.take(a);
    h.take(b);
    for (bad, message, details) in [
        ("not json", "Invalid message format", "not valid JSON"),
        ("[1,2]", "Invalid message format", "expected a JSON object"),
        (
            r#"{"projectId":"p1"}"#,
            "Invalid message format",
            "missing field `type`",
        ),
        (
            r#"{"type":7}"#,
            "Invalid message format",
            "`type` must be a string",
        ),
        (
            r#"{"type":"TASK_EXPLODE","projectId":"p1"}"#,
            "Unknown message type",
            "TASK_EXPLODE",
        ),
        (
            r#"{"type":"JOIN_PROJECT"}"#,
            "Invalid message format",
            "missing field `projectId`",
        ),
        (
            r#"{"type":"JOIN_PROJECT","projectId":""}"#,
            "Invalid message format",
            "must not be empty",
        ),
        (
            r#"{"type":"JOIN_PROJECT","projectId":42}"#,
            "Invalid message format",
            "invalid message",
        ),
        (
            r#"{"type":"TASK_UPDATE","projectId":"p1"}"#,
            "Invalid message format",
            "missing field `payload`",
        ),
        (
            r#"{"type":"TASK_UPDATE","projectId":"p1","payload":{},"operationId":5}"#,
            "Invalid message format",
            "invalid message",
        ),
        (
            r#"{"type":"SET_USER"}"#,
            "Invalid message format",
            "missing field `userId`",
        ),
        (
            r#"{"type":"SET_USER","payload":{"userId":9}}"#,
            "Invalid message format",
            "invalid message",
        ),
        (
            r#"{"type":"LEAVE_PROJECT"}"#,
            "Invalid message format",
            "missing field `projectId`",
        ),
    ] {
        h.send(a, bad);
        let e = h.take_one(a);
        assert_eq!(e["type"], "ERROR", "{bad}");
        assert_eq!(e["message"], message, "{bad}");
        assert_eq!(e["error"], message, "{bad}");
        let d = e["details"].as_str().unwrap();
        assert!(d.contains(details), "{bad}: {d}");
        h.assert_silent(b);
    }
    assert!(h.closed.is_empty());
    let errors = &h.hub.stats().counters.errors;
    assert_eq!(errors.get("not_json"), Some(&1));
    assert_eq!(errors.get("unknown_type"), Some(&1));
    // Still a member, still relaying.
    h.send_value(
        a,
        &json!({"type": "TASK_DELETE", "projectId": "p1", "payload": {"id": 2}}),
    );
    assert_eq!(h.take_one(b)["type"], "TASK_DELETE");
}

#[test]
fn the_room_limit_answers_join_with_an_error() {
    let config = Config {
        limits: Limits {
            max_rooms_per_connection: 1,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut h = Harness::of_with_config(Collab::new(&Options::default()), config);
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p2");
    h.take(a);
    h.take(b);
    join(&mut h, a, "p2");
    let e = h.take_one(a);
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["message"], "a connection may be in at most 1 rooms");
    assert!(e["details"].as_str().unwrap().contains("p2"));
    h.assert_silent(b); // No presence: nothing changed in p2.
    assert!(!h.hub.rooms_of(a).contains(&"project:p2".to_string()));
}

#[test]
fn health_reports_clients_projects_and_uptime() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p2");
    h.advance(Duration::from_millis(2500));
    let r = h.http(Method::Get, "/health", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, Some("application/json"));
    assert_eq!(
        body_json(&r),
        json!({"status": "healthy", "timestamp": T0_MS + 2500, "clients": 3, "projects": 2, "uptime": 2.5})
    );
}

#[test]
fn stats_lists_each_project_with_its_clients() {
    let mut h = harness();
    let (a, id_a) = connect(&mut h);
    let (b, id_b) = connect(&mut h);
    connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    join(&mut h, b, "p2");
    let r = h.http(Method::Get, "/stats", &[], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        body_json(&r),
        json!({
            "totalClients": 3,
            "totalProjects": 2,
            "projectStats": {
                "p1": {"clientCount": 2, "clients": [id_a, id_b]},
                "p2": {"clientCount": 1, "clients": [id_b]}
            }
        })
    );
}

#[test]
fn broadcast_reaches_every_member_including_with_defaults() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    let (c, _) = connect(&mut h);
    join(&mut h, a, "p1");
    join(&mut h, b, "p1");
    join(&mut h, c, "p2");
    for x in [a, b, c] {
        h.take(x);
    }
    let r = post(
        &mut h,
        &[("content-type", "application/json")],
        r#"{"type":"TASK_CREATE","projectId":"p1","payload":{"id":"t1"}}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        body_json(&r),
        json!({"success": true, "message": "Broadcast sent", "projectId": "p1", "clientCount": 2})
    );
    let expected = json!({
        "type": "TASK_CREATE",
        "payload": {"id": "t1"},
        "operationId": format!("broadcast-{T0_MS}"),
        "timestamp": T0_MS,
        "projectId": "p1",
        "userId": null
    });
    assert_eq!(h.take_one(a), expected);
    assert_eq!(h.take_one(b), expected);
    h.assert_silent(c);

    // Given values are kept; any type is allowed; no payload leaves the key out.
    let r = post(
        &mut h,
        &[],
        r#"{"type":"TASKS_REORDERED","projectId":"p2","operationId":"op-9","timestamp":1700000000000,"userId":"u-7"}"#,
    );
    assert_eq!(body_json(&r)["clientCount"], 1);
    assert_eq!(
        h.take_one(c),
        json!({"type": "TASKS_REORDERED", "operationId": "op-9", "timestamp": 1_700_000_000_000u64, "projectId": "p2", "userId": "u-7"})
    );

    // A project nobody joined: accepted, nobody receives it.
    let r = post(&mut h, &[], r#"{"type":"TASK_CREATE","projectId":"empty"}"#);
    assert_eq!(
        (r.status, body_json(&r)["clientCount"].clone()),
        (200, json!(0))
    );
}

#[test]
fn broadcast_rejects_bad_bodies_with_400() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    join(&mut h, a, "p1");
    h.take(a);
    for body in [
        r#"{"projectId":"p1"}"#,
        r#"{"type":"TASK_CREATE"}"#,
        r#"{"type":"","projectId":"p1"}"#,
        r#"{}"#,
    ] {
        let r = post(&mut h, &[], body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(
            body_json(&r),
            json!({"error": "Missing required fields: type, projectId"})
        );
    }
    for (body, detail) in [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (
            r#"{"type":"X","projectId":"p1","timestamp":"today"}"#,
            "invalid message",
        ),
        (r#"{"type":"ERROR","projectId":"p1"}"#, "reserved"),
        (r#"{"type":"USER_PRESENCE","projectId":"p1"}"#, "reserved"),
    ] {
        let r = post(&mut h, &[], body);
        assert_eq!(r.status, 400, "{body}");
        let v = body_json(&r);
        assert_eq!(v["error"], "Invalid broadcast body");
        assert!(
            v["details"].as_str().unwrap().contains(detail),
            "{body}: {v}"
        );
    }
    h.assert_silent(a);
}

#[test]
fn broadcast_requires_the_api_key_when_one_is_set() {
    let options = Options::default().with_api_key("s3cret");
    let mut h = Harness::of(Collab::new(&options));
    let (a, _) = connect(&mut h);
    join(&mut h, a, "p1");
    h.take(a);
    let body = r#"{"type":"PROJECT_UPDATE","projectId":"p1","payload":{}}"#;
    for headers in [
        &[][..],
        &[("x-api-key", "wrong")],
        &[("authorization", "Bearer wrong")],
    ] {
        let r = post(&mut h, headers, body);
        assert_eq!(r.status, 401);
        assert!(body_json(&r)["error"].is_string());
    }
    h.assert_silent(a);
    assert_eq!(post(&mut h, &[("x-api-key", "s3cret")], body).status, 200);
    assert_eq!(h.take_one(a)["type"], "PROJECT_UPDATE");
    assert_eq!(
        post(&mut h, &[("authorization", "Bearer s3cret")], body).status,
        200
    );
    assert_eq!(h.take_one(a)["type"], "PROJECT_UPDATE");
}

#[test]
fn wrong_methods_get_405_and_unknown_paths_are_not_ours() {
    let mut h = harness();
    assert_eq!(
        h.http(Method::Get, "/broadcast", &[], "").unwrap().status,
        405
    );
    assert_eq!(
        h.http(Method::Post, "/health", &[], "").unwrap().status,
        405
    );
    assert_eq!(
        h.http(Method::Delete, "/stats", &[], "").unwrap().status,
        405
    );
    assert_eq!(
        h.http(Method::Head, "/health", &[], "").unwrap().status,
        200
    );
    assert!(h.http(Method::Get, "/metrics", &[], "").is_none());
    assert!(h.http(Method::Get, "/", &[], "").is_none());
}

#[test]
fn project_publication_is_what_an_embedding_service_publishes() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    let (b, _) = connect(&mut h);
    join(&mut h, a, "p1");
    h.take(a);
    let broadcast = Broadcast {
        kind: "TASK_UPDATE".into(),
        payload: Some(json!({"id": "t1", "done": true})),
        operation_id: None,
        timestamp: None,
        user_id: Some("svc".into()),
    };
    let p = collab::project_publication("p1", &broadcast, h.wall());
    assert_eq!(p.target, switchboard_hub::Target::Room("project:p1".into()));
    assert_eq!(h.publish(p), 1);
    let got: Value = h.take_one(a);
    assert_eq!(
        got,
        json!({
            "type": "TASK_UPDATE",
            "payload": {"id": "t1", "done": true},
            "operationId": format!("broadcast-{T0_MS}"),
            "timestamp": T0_MS,
            "projectId": "p1",
            "userId": "svc"
        })
    );
    h.assert_silent(b);
}

#[test]
fn fan_out_shares_one_buffer() {
    let mut h = harness();
    let conns: Vec<_> = (0..3).map(|_| connect(&mut h).0).collect();
    for &c in &conns {
        join(&mut h, c, "p1");
    }
    for &c in &conns {
        h.take(c);
    }
    h.hub
        .handle_frame(
            h.now,
            conns[0],
            Frame::Text(r#"{"type":"TASK_CREATE","projectId":"p1","payload":{}}"#.into()),
        )
        .unwrap();
    let mut ptrs = Vec::new();
    while let Some(out) = h.hub.poll_output() {
        for out in out.split() {
            if let switchboard_hub::Output::Transmit { payload, .. } = out {
                ptrs.push(payload.as_ptr());
            }
        }
    }
    assert_eq!(ptrs.len(), 2);
    assert_eq!(ptrs[0], ptrs[1], "one encoding shared by every recipient");
}

// ---------------------------------------------------------------------------------------------
// Hostile input (docs/protocol/collab-v1.md, "Limits and refused input").
// ---------------------------------------------------------------------------------------------

fn error_frame(message: &str, details: &str) -> Value {
    json!({"type": "ERROR", "message": message, "details": details, "error": message, "timestamp": T0_MS})
}

fn invalid(details: &str) -> Value {
    error_frame("Invalid message format", details)
}

fn arrays(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Two members of `p1`, their greetings and presence taken.
fn two_members(h: &mut Harness) -> (ConnectionHandle, ConnectionHandle) {
    let (a, _) = connect(h);
    let (b, _) = connect(h);
    join(h, a, "p1");
    join(h, b, "p1");
    h.take(a);
    h.take(b);
    (a, b)
}

#[test]
fn deep_or_duplicate_key_frames_get_an_error_to_the_sender_only() {
    let mut h = harness();
    let (a, b) = two_members(&mut h);
    // The edit is level 1, so a payload of 63 levels is the deepest relayed.
    h.send(
        a,
        &format!(
            r#"{{"type":"TASK_UPDATE","projectId":"p1","payload":{}}}"#,
            arrays(63)
        ),
    );
    assert_eq!(
        h.take_one(b)["payload"],
        serde_json::from_str::<Value>(&arrays(63)).unwrap()
    );
    h.send(
        a,
        &format!(
            r#"{{"type":"TASK_UPDATE","projectId":"p1","payload":{}}}"#,
            arrays(64)
        ),
    );
    assert_eq!(h.take_one(a), invalid("JSON nested deeper than 64 levels"));
    for (bad, key) in [
        (
            r#"{"type":"JOIN_PROJECT","projectId":"p1","projectId":"p2"}"#,
            "projectId",
        ),
        (
            r#"{"type":"SET_USER","payload":{"userId":"u1","userId":"u2"}}"#,
            "userId",
        ),
        (
            r#"{"type":"TASK_UPDATE","projectId":"p1","payload":{"id":"t1","id":"t2"}}"#,
            "id",
        ),
        (
            r#"{"type":"TASK_UPDATE","projectId":"p1","payload":[{"a":1},{"a":1,"a":1}]}"#,
            "a",
        ),
        (
            r#"{"type":"LEAVE_PROJECT","projectId":"p1","\u0070rojectId":"p1"}"#,
            "projectId",
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
    assert_eq!(h.hub.rooms_of(a), ["project:p1".to_string()]);
    assert!(h.closed.is_empty());
}

#[test]
fn deep_or_duplicate_key_broadcasts_are_400() {
    let mut h = harness();
    let (a, b) = two_members(&mut h);
    for (body, details) in [
        (
            format!(
                r#"{{"type":"X","projectId":"p1","payload":{}}}"#,
                arrays(64)
            ),
            "JSON nested deeper than 64 levels".to_string(),
        ),
        (
            r#"{"type":"X","projectId":"p1","projectId":"p2"}"#.to_string(),
            "duplicate key `projectId`".to_string(),
        ),
        (
            r#"{"type":"X","projectId":"p1","payload":{"k":[{"v":1,"v":2}]}}"#.to_string(),
            "duplicate key `v`".to_string(),
        ),
    ] {
        let r = post(&mut h, &[], &body);
        assert_eq!(r.status, 400);
        assert_eq!(
            body_json(&r),
            json!({"error": "Invalid broadcast body", "details": details})
        );
    }
    h.assert_silent(a);
    h.assert_silent(b);
    let ok = format!(
        r#"{{"type":"X","projectId":"p1","payload":{}}}"#,
        arrays(63)
    );
    assert_eq!(post(&mut h, &[], &ok).status, 200);
}

#[test]
fn project_and_user_ids_are_capped_at_max_id_bytes() {
    let mut h = harness();
    let (a, b) = two_members(&mut h);
    let at = "i".repeat(256);
    let over = "i".repeat(257);
    let project_over = invalid("`projectId` is longer than 256 bytes");
    let user_over = invalid("`userId` is longer than 256 bytes");
    for (msg, expected) in [
        (
            json!({"type": "JOIN_PROJECT", "projectId": over}),
            &project_over,
        ),
        (
            json!({"type": "JOIN_PROJECT", "projectId": "p2", "userId": over}),
            &user_over,
        ),
        (
            json!({"type": "LEAVE_PROJECT", "projectId": over}),
            &project_over,
        ),
        (
            json!({"type": "TASK_CREATE", "projectId": over, "payload": {}}),
            &project_over,
        ),
        (json!({"type": "SET_USER", "userId": over}), &user_over),
        (
            json!({"type": "SET_USER", "payload": {"userId": over}}),
            &user_over,
        ),
        // Both forms are checked, even the one that would not be used.
        (
            json!({"type": "SET_USER", "userId": over, "payload": {"userId": "u"}}),
            &user_over,
        ),
    ] {
        h.send_value(a, &msg);
        assert_eq!(&h.take_one(a), expected, "{msg}");
    }
    h.assert_silent(b);
    assert_eq!(h.hub.rooms_of(a), ["project:p1".to_string()]);
    assert!(h.hub.connection(a).unwrap().identity.is_none());
    assert_eq!(h.hub.stats().counters.errors.get("id_too_long"), Some(&7));

    // Exactly at the limit is fine.
    h.send_value(
        a,
        &json!({"type": "JOIN_PROJECT", "projectId": at, "userId": at}),
    );
    let p = h.take_one(a);
    assert_eq!(p["payload"]["projectId"], at);
    assert_eq!(p["payload"]["activeUsers"][0]["userId"], at);
    h.send_value(
        a,
        &json!({"type": "TASK_CREATE", "projectId": at, "payload": {}}),
    );
    h.send_value(a, &json!({"type": "LEAVE_PROJECT", "projectId": at}));
    h.assert_silent(a);

    // POST /broadcast: projectId and userId.
    for (body, field) in [
        (json!({"type": "X", "projectId": over}), "projectId"),
        (
            json!({"type": "X", "projectId": "p1", "userId": over}),
            "userId",
        ),
    ] {
        let r = post(&mut h, &[], &body.to_string());
        assert_eq!(r.status, 400);
        assert_eq!(
            body_json(&r),
            json!({"error": "Invalid broadcast body", "details": format!("`{field}` is longer than 256 bytes")})
        );
    }
    let r = post(
        &mut h,
        &[],
        &json!({"type": "X", "projectId": "p1", "userId": at}).to_string(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(h.take_one(b)["userId"], at);
}

#[test]
fn a_smaller_max_id_bytes_caps_project_ids() {
    let mut h = Harness::of(Collab::new(&Options::default().with_max_id_bytes(8)));
    let (a, _) = connect(&mut h);
    join(&mut h, a, "12345678");
    assert_eq!(h.take_one(a)["type"], "USER_PRESENCE");
    join(&mut h, a, "123456789");
    assert_eq!(h.take_one(a), invalid("`projectId` is longer than 8 bytes"));
}

#[test]
fn set_user_payload_must_be_an_object() {
    let mut h = harness();
    let (a, _) = connect(&mut h);
    for bad in [
        r#"{"type":"SET_USER","payload":["user_2abc"]}"#,
        r#"{"type":"SET_USER","userId":"u","payload":[]}"#,
        r#"{"type":"SET_USER","userId":"u","payload":"user_2abc"}"#,
    ] {
        h.send(a, bad);
        let e = h.take_one(a);
        assert_eq!(e["message"], "Invalid message format", "{bad}");
        assert!(
            e["details"]
                .as_str()
                .unwrap()
                .contains("expected an object or null"),
            "{bad}: {e}"
        );
    }
    assert!(h.hub.connection(a).unwrap().identity.is_none());
    // `null` is as good as absent.
    h.send(a, r#"{"type":"SET_USER","userId":"u","payload":null}"#);
    h.assert_silent(a);
    assert_eq!(h.hub.connection(a).unwrap().identity.unwrap().user, "u");
}

#[test]
fn broadcast_user_id_may_not_be_empty() {
    let mut h = harness();
    let r = post(&mut h, &[], r#"{"type":"X","projectId":"p1","userId":""}"#);
    assert_eq!(r.status, 400);
    assert_eq!(
        body_json(&r),
        json!({"error": "Invalid broadcast body", "details": "invalid message: `userId` must not be empty"})
    );
}

#[test]
fn stats_lists_at_most_1000_projects_largest_first_with_exact_totals() {
    let mut h = harness();
    // 1000 one-member projects over 20 connections (50 rooms each, under the 64-room limit).
    let conns: Vec<ConnectionHandle> = (0..20).map(|_| connect(&mut h).0).collect();
    for i in 0..1000 {
        join(&mut h, conns[i % 20], &format!("p{i:04}"));
    }
    // Two larger projects.
    for (project, members) in [("big-a", 3), ("big-b", 2)] {
        for &c in &conns[..members] {
            join(&mut h, c, project);
        }
    }
    for &c in &conns {
        h.take(c);
    }
    let v = body_json(&h.http(Method::Get, "/stats", &[], "").unwrap());
    assert_eq!(v["totalClients"], 20);
    assert_eq!(v["totalProjects"], 1002);
    assert_eq!(v["truncated"], true);
    let listed = v["projectStats"].as_object().unwrap();
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed["big-a"]["clientCount"], 3);
    assert_eq!(listed["big-b"]["clientCount"], 2);
    // Among equals, the lowest ids are kept.
    assert!(listed.contains_key("p0997"));
    assert!(!listed.contains_key("p0998") && !listed.contains_key("p0999"));

    // Back to 1000 projects: the seed's shape, no `truncated`.
    h.send_value(
        conns[0],
        &json!({"type": "LEAVE_PROJECT", "projectId": "big-a"}),
    );
    h.send_value(
        conns[1],
        &json!({"type": "LEAVE_PROJECT", "projectId": "big-a"}),
    );
    h.send_value(
        conns[2],
        &json!({"type": "LEAVE_PROJECT", "projectId": "big-a"}),
    );
    h.send_value(
        conns[0],
        &json!({"type": "LEAVE_PROJECT", "projectId": "big-b"}),
    );
    let v = body_json(&h.http(Method::Get, "/stats", &[], "").unwrap());
    assert_eq!(v["totalProjects"], 1001);
    assert_eq!(v["truncated"], true);
    h.send_value(
        conns[1],
        &json!({"type": "LEAVE_PROJECT", "projectId": "big-b"}),
    );
    let v = body_json(&h.http(Method::Get, "/stats", &[], "").unwrap());
    assert_eq!(v["totalProjects"], 1000);
    assert_eq!(v["projectStats"].as_object().unwrap().len(), 1000);
    assert!(v.get("truncated").is_none());
}

#[test]
fn method_not_allowed_carries_allow() {
    let mut h = harness();
    for (m, path, allow) in [
        (Method::Get, "/broadcast", "POST"),
        (Method::Post, "/health", "GET, HEAD"),
        (Method::Put, "/stats", "GET, HEAD"),
    ] {
        let r = h.http(m, path, &[], "").unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{path}");
    }
}

#[test]
fn broadcast_accepts_any_of_several_keys() {
    let options = Options::default().with_api_key("k1").with_api_key("k2");
    let mut h = Harness::of(Collab::new(&options));
    let body = r#"{"type":"X","projectId":"p1"}"#;
    assert_eq!(post(&mut h, &[("x-api-key", "k1")], body).status, 200);
    assert_eq!(
        post(&mut h, &[("authorization", "Bearer k2")], body).status,
        200
    );
    assert_eq!(post(&mut h, &[("x-api-key", "k3")], body).status, 401);
    // The key answers before the body is looked at.
    assert_eq!(post(&mut h, &[("x-api-key", "k3")], "{").status, 401);
}
