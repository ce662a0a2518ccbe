//! Collab rooms: presence and edits, `/health`, `/stats`, `/broadcast`, origins and CORS.

use serde_json::json;

use crate::support::{assert_quiet, connect, expect_type, flows, send_json, ALLOWED_ORIGIN};
use crate::{http, start};

#[tokio::test]
async fn collab_project_flow() {
    let server = start("collab").await;
    flows::collab_project_flow(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_not_member_error() {
    let server = start("collab").await;
    flows::collab_not_member_error(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_origin_policy() {
    let server = start("collab").await;
    flows::collab_origin_policy(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_health_and_stats() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let mut ids = Vec::new();
    let mut sockets = Vec::new();
    for project in ["p1", "p1", "p2"] {
        let mut ws = connect(addr, "/ws").await;
        let hello = expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
        ids.push(hello["clientId"].as_str().unwrap().to_string());
        send_json(
            &mut ws,
            json!({"type": "JOIN_PROJECT", "projectId": project}),
        )
        .await;
        expect_type(&mut ws, "USER_PRESENCE").await;
        sockets.push(ws);
    }
    let health = http::get(addr, "/health").await;
    assert_eq!(health.status, 200);
    let health = health.json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["clients"], 3);
    assert_eq!(health["projects"], 2);
    assert!(health["timestamp"].is_u64() && health["uptime"].is_number());

    let stats = http::get(addr, "/stats").await.json();
    assert_eq!(stats["totalClients"], 3);
    assert_eq!(stats["totalProjects"], 2);
    assert_eq!(
        stats["projectStats"]["p1"],
        json!({"clientCount": 2, "clients": [ids[0], ids[1]]})
    );
    assert_eq!(
        stats["projectStats"]["p2"],
        json!({"clientCount": 1, "clients": [ids[2]]})
    );

    // A client leaving shows at once.
    drop(sockets.pop());
    let mut projects = 2;
    for _ in 0..100 {
        projects = http::get(addr, "/stats").await.json()["totalProjects"]
            .as_u64()
            .unwrap();
        if projects == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(projects, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_broadcast_reaches_every_member() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let (mut member, mut outsider) = (connect(addr, "/ws").await, connect(addr, "/ws").await);
    expect_type(&mut member, "CONNECTION_ESTABLISHED").await;
    expect_type(&mut outsider, "CONNECTION_ESTABLISHED").await;
    send_json(
        &mut member,
        json!({"type": "JOIN_PROJECT", "projectId": "p1"}),
    )
    .await;
    expect_type(&mut member, "USER_PRESENCE").await;
    let body = json!({"type": "TASK_CREATE", "projectId": "p1", "payload": {"id": "t9"}});
    let r = http::post(addr, "/broadcast", &[], &body.to_string()).await;
    assert_eq!(r.status, 401, "COLLAB_API_KEY is set on the test server");
    let r = http::post_with_key(addr, "/broadcast", &body).await;
    assert_eq!(r.status, 200);
    let r = r.json();
    assert_eq!(r["success"], true);
    assert_eq!(r["clientCount"], 1);
    let got = expect_type(&mut member, "TASK_CREATE").await;
    assert_eq!(got["payload"], json!({"id": "t9"}));
    assert_quiet(&mut outsider).await;
    let r = http::post_with_key(addr, "/broadcast", &json!({"projectId": "p1"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "Missing required fields: type, projectId"})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_cors_for_allowed_origins() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let allowed = http::request(addr, "GET", "/health", &[("Origin", ALLOWED_ORIGIN)], b"").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let other = http::request(
        addr,
        "GET",
        "/health",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(other.status, 200, "served, but without CORS headers");
    assert_eq!(other.header("access-control-allow-origin"), None);

    let preflight = [
        ("Origin", ALLOWED_ORIGIN),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type,x-api-key"),
    ];
    let r = http::request(addr, "OPTIONS", "/broadcast", &preflight, b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let allow_headers = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(allow_headers.contains("content-type") && allow_headers.contains("x-api-key"));
    let r = http::request(
        addr,
        "OPTIONS",
        "/broadcast",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    server.shutdown().await.unwrap();
}
