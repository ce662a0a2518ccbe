//! Race live: session updates published over HTTP reach that session's clients only.

use serde_json::json;

use crate::support::{connect, expect_type, flows, send_json, API_KEY};
use crate::{http, start, start_with};

#[tokio::test]
async fn race_sessions_are_isolated() {
    let server = start("race").await;
    let addr = server.local_addr();
    flows::race_sessions_are_isolated(addr, |session, body| async move {
        let r = http::post_with_key(addr, &format!("/sessions/{session}/updates"), &body).await;
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["sessionId"], session);
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn race_publish_needs_a_key() {
    let body = json!({"type": "status_change", "data": {"status": "red_flag"}}).to_string();
    let path = "/sessions/race-2024/updates";

    let open = start_with("race", Default::default(), Default::default()).await;
    let r = http::post(open.local_addr(), path, &[("X-API-Key", API_KEY)], &body).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "publishing disabled: set RACE_API_KEY"})
    );
    open.shutdown().await.unwrap();

    let server = start("race").await;
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws?sessionId=race-2024").await;
    expect_type(&mut ws, "subscribed").await;
    for headers in [
        &[][..],
        &[("X-API-Key", "wrong")],
        &[("Authorization", "Bearer wrong")],
    ] {
        let r = http::post(addr, path, headers, &body).await;
        assert_eq!(r.status, 401, "{headers:?}");
    }
    let bad = http::post(
        addr,
        path,
        &[("X-API-Key", API_KEY)],
        r#"{"type":"subscribe"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    let r = http::post(addr, path, &[("X-API-Key", API_KEY)], &body).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), json!({"sessionId": "race-2024", "delivered": 1}));
    assert_eq!(
        expect_type(&mut ws, "status_change").await["data"]["status"],
        "red_flag"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn race_ping_pong() {
    let server = start("race").await;
    flows::race_ping_pong(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn race_health_counts_sessions() {
    let server = start("race").await;
    let addr = server.local_addr();
    let mut a = connect(addr, "/ws?sessionId=s1").await;
    expect_type(&mut a, "subscribed").await;
    send_json(
        &mut a,
        json!({"type": "subscribe", "data": {"sessionId": "s2"}}),
    )
    .await;
    expect_type(&mut a, "subscribed").await;
    let health = http::get(addr, "/health").await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["clients"], 1);
    assert_eq!(health["sessions"], 2);
    server.shutdown().await.unwrap();
}
