//! Bad input and limits: each answered clearly, the connection or others unharmed; a slow
//! consumer closed and counted; the connection limit; graceful shutdown.

use std::time::Duration;

use switchboard_hub::{Config, RateLimit, RatePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, connect, expect_type, flows, refused_status, try_connect};
use crate::{http, start, start_with};

#[tokio::test]
async fn bad_input_gets_error_frames() {
    let server = start("collab").await;
    flows::bad_input_gets_error_frames(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversize_frame_closes_1009() {
    let server = start("laptimes").await;
    flows::oversize_frame_closes_1009(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_frame_closes_1003() {
    let server = start("laptimes").await;
    flows::binary_frame_closes_1003(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn flood_closes_flooder_only() {
    let mut config = Config::default();
    config.limits.inbound_rate = Some(RateLimit {
        per_second: 10,
        burst: 20,
    });
    config.limits.rate_policy = RatePolicy::Close;
    let server = start_with("laptimes", config, support::options()).await;
    flows::flood_closes_flooder_only(server.local_addr()).await;
    let metrics = http::get(server.local_addr(), "/metrics").await.text();
    assert!(
        metrics.contains("switchboard_errors_total{system=\"laptimes\",kind=\"rate_limited\"} 1\n"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttled_import_loses_nothing() {
    let mut config = Config::default();
    config.limits.inbound_rate = Some(flows::THROTTLE_RATE);
    let server = start_with("laptimes", config, support::options()).await;
    flows::throttled_import_loses_nothing(server.local_addr()).await;
    let stats = server.hub().stats().await.unwrap();
    assert!(stats.counters.throttled >= 1, "{stats:?}");
    assert_eq!(stats.counters.errors.get("rate_limited"), None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_consumer_is_closed_and_counted() {
    let mut config = Config::default();
    config.limits.max_queued_bytes = 64 * 1024;
    let server = start_with("laptimes", config, support::options()).await;
    flows::slow_consumer_is_closed(server.local_addr(), server.hub()).await;
    let metrics = http::get(server.local_addr(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    assert!(
        text.contains("switchboard_slow_consumer_closes_total{system=\"laptimes\"} 1\n"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connection_limit_third_upgrade_gets_503() {
    let mut config = Config::default();
    config.limits.max_connections = 2;
    let server = start_with("collab", config, support::options()).await;
    let addr = server.local_addr();
    let mut a = connect(addr, "/ws").await;
    let mut b = connect(addr, "/ws").await;
    expect_type(&mut a, "CONNECTION_ESTABLISHED").await;
    expect_type(&mut b, "CONNECTION_ESTABLISHED").await;
    match try_connect(addr, "/ws", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("connection limit of 2"), "{body}");
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| "an upgrade")),
    }
    // HTTP still works at the limit, and the two clients are unharmed.
    assert_eq!(http::get(addr, "/health").await.json()["clients"], 2);
    support::send_json(
        &mut a,
        serde_json::json!({"type": "JOIN_PROJECT", "projectId": "p"}),
    )
    .await;
    expect_type(&mut a, "USER_PRESENCE").await;
    // A slot frees up when a client leaves.
    drop(b);
    let mut admitted = false;
    for _ in 0..100 {
        match try_connect(addr, "/ws", &[]).await {
            Ok(_) => {
                admitted = true;
                break;
            }
            Err(e) => {
                assert_eq!(refused_status(Err(e)), 503);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(admitted);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_client_within_grace() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    // An idle keep-alive HTTP connection must not hold shutdown up.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(support::WAIT, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    flows::shutdown_closes_with_1001(addr, server.shutdown()).await;
    // The keep-alive connection was closed, not left open.
    let n = tokio::time::timeout(support::WAIT, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}
