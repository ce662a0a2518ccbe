//! Laptimes: the relay, and the transport's generic HTTP endpoints on a system that has none.

use serde_json::json;

use crate::support::flows;
use crate::{http, start};

#[tokio::test]
async fn laptimes_relay() {
    let server = start("laptimes").await;
    flows::laptimes_relay(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn laptimes_health_and_unknown_paths() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let health = http::get(addr, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.json(), json!({"status": "ok", "system": "laptimes"}));
    for path in ["/", "/nope", "/events/todo-created"] {
        let r = http::get(addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json(), json!({"error": "not found"}));
    }
    server.shutdown().await.unwrap();
}
