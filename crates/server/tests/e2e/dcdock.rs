//! DCDock assignments: token checks, filters, conflicts, `POST /api/ws/publish`, `/api/ws/stats`.

use serde_json::{json, Value};

use crate::support::{assignment_created, dcdock_client, expect_type, flows, send_json, API_KEY};
use crate::{http, start, start_with};

/// `POST /api/ws/publish` with the key; the server must accept it.
async fn publish(addr: std::net::SocketAddr, body: Value) {
    let r = http::post_with_key(addr, "/api/ws/publish", &body).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.json()["delivered"].is_u64());
}

#[tokio::test]
async fn dcdock_refuses_bad_tokens() {
    let server = start("dcdock").await;
    flows::dcdock_refuses_bad_tokens(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_ack_ping_subscribe() {
    let server = start("dcdock").await;
    flows::dcdock_ack_ping_subscribe(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_direction_filter() {
    let server = start("dcdock").await;
    let addr = server.local_addr();
    flows::dcdock_direction_filter(addr, |body| publish(addr, body)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_conflict_to_its_user() {
    let server = start("dcdock").await;
    let addr = server.local_addr();
    flows::dcdock_conflict_to_its_user(addr, |body| publish(addr, body)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_publish_needs_a_key() {
    let event = assignment_created(5, "IB").to_string();
    let open = start_with("dcdock", Default::default(), Default::default()).await;
    let r = http::post(
        open.local_addr(),
        "/api/ws/publish",
        &[("X-API-Key", API_KEY)],
        &event,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "publishing disabled: set DCDOCK_API_KEY"})
    );
    open.shutdown().await.unwrap();

    let server = start("dcdock").await;
    let addr = server.local_addr();
    let r = http::post(addr, "/api/ws/publish", &[("X-API-Key", "wrong")], &event).await;
    assert_eq!(r.status, 401);
    let r = http::post(addr, "/api/ws/publish", &[], &event).await;
    assert_eq!(r.status, 401);
    let bad = json!({"type": "assignment_created", "assignment_id": 1});
    let r = http::post_with_key(addr, "/api/ws/publish", &bad).await;
    assert_eq!(r.status, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_stats_lists_clients_and_filters() {
    let server = start("dcdock").await;
    let addr = server.local_addr();
    let (mut ib, ib_ack) = dcdock_client(addr, 1).await;
    let (_all, all_ack) = dcdock_client(addr, 2).await;
    send_json(
        &mut ib,
        json!({"type": "subscribe", "filters": {"direction": "IB"}}),
    )
    .await;
    expect_type(&mut ib, "subscribed").await;
    let stats = http::get(addr, "/api/ws/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(
        stats.json(),
        json!({
            "active_connections": 2,
            "clients": [
                {"client_id": ib_ack["client_id"], "filters": {"direction": "IB"}},
                {"client_id": all_ack["client_id"], "filters": {}}
            ]
        })
    );
    server.shutdown().await.unwrap();
}
