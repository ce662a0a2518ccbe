//! AFC events: `POST /events/<entity>-<action>` reaches every socket; bad requests get 400.

use serde_json::json;

use crate::support::{assert_quiet, connect, flows, next_text};
use crate::{http, start, start_with};

#[tokio::test]
async fn afc_post_event_reaches_every_socket() {
    let server = start_with("afc", Default::default(), Default::default()).await;
    let addr = server.local_addr();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(connect(addr, "/ws").await);
    }
    // The seed's endpoint is open when AFC_API_KEY is unset.
    let json_type = [("Content-Type", "application/json")];
    let r = http::post(
        addr,
        "/events/todo-created",
        &json_type,
        r#"{"id":1,"title":"Buy milk"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    for ws in &mut sockets {
        assert_eq!(
            next_text(ws).await,
            r#"{"type":"todo:created","payload":{"id":1,"title":"Buy milk"}}"#
        );
    }
    // An entity with hyphens splits at the last one.
    let r = http::post(addr, "/events/line-item-updated", &json_type, "[1,2]").await;
    assert_eq!(r.status, 204);
    for ws in &mut sockets {
        assert_eq!(
            next_text(ws).await,
            r#"{"type":"line-item:updated","payload":[1,2]}"#
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn afc_text_plain_body_accepted() {
    let server = start_with("afc", Default::default(), Default::default()).await;
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws").await;
    // The seed's backend sends its JSON as text/plain; no Content-Type at all works too.
    let plain = [("Content-Type", "text/plain;charset=UTF-8")];
    let r = http::post(addr, "/events/user-deleted", &plain, r#"{"id":"u1"}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"user:deleted","payload":{"id":"u1"}}"#
    );
    let r = http::post(addr, "/events/user-created", &[], "  42\n").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"user:created","payload":42}"#
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn afc_bad_name_or_body_is_400() {
    let server = start_with("afc", Default::default(), Default::default()).await;
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws").await;
    for (path, body) in [
        ("/events/todo", r#"{"id":1}"#),
        ("/events/-created", r#"{"id":1}"#),
        ("/events/todo-", r#"{"id":1}"#),
        ("/events/to%20do-created", r#"{"id":1}"#),
        ("/events/todo-created", "not json"),
        ("/events/todo-created", ""),
        ("/events/todo-created", r#"{"id":1} {"id":2}"#),
    ] {
        let r = http::post(addr, path, &[], body).await;
        assert_eq!(r.status, 400, "{path} {body:?}");
        let err = r.json();
        assert!(
            err["error"].is_string() && err["details"].is_string(),
            "{err}"
        );
    }
    let r = http::get(addr, "/events/todo-created").await;
    assert_eq!(r.status, 405);
    assert_quiet(&mut ws).await;
    // The socket still gets the next good event.
    let r = http::post(addr, "/events/todo-created", &[], "{}").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"todo:created","payload":{}}"#
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn afc_api_key_enforced_when_set() {
    let server = start("afc").await;
    let addr = server.local_addr();
    let r = http::post(addr, "/events/todo-created", &[], "{}").await;
    assert_eq!(r.status, 401);
    let r = http::post(
        addr,
        "/events/todo-created",
        &[("Authorization", "Bearer e2e-key")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 204);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn afc_ping_and_errors() {
    let server = start("afc").await;
    flows::afc_ping_and_errors(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn afc_health_counts_clients() {
    let server = start("afc").await;
    let addr = server.local_addr();
    let _a = connect(addr, "/ws").await;
    let mut b = connect(addr, "/ws").await;
    // A round trip on the last socket proves both are registered.
    crate::support::send_json(&mut b, json!({"type": "ping"})).await;
    crate::support::expect_type(&mut b, "pong").await;
    let health = http::get(addr, "/health").await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["clients"], 2);
    assert!(health["uptime"].is_number());
    server.shutdown().await.unwrap();
}
