//! End to end over real sockets, on the WebSocket-only transport: every seed flow that needs no
//! HTTP, plus the limits. Publishing goes through the embedding API (`Server::hub`), since this
//! transport has no HTTP endpoints. The same flows run on the full server in
//! `crates/transport-hyper/tests/e2e`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::wall_now as now;
use support::{connect, expect_type, flows, refused_status, try_connect};
use switchboard_hub::{Config, RateLimit, RatePolicy};
use switchboard_protocol::{dcdock, race};
use switchboard_runtime::{HubHandle, Process};
use switchboard_tokio::Server;
use tokio::net::TcpListener;

async fn start(system: &str, config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let process = Process::default();
    let system = support::system(&process, system, config, support::options());
    switchboard_tokio::serve(&process, listener, system).unwrap()
}

/// Publish a race update body the way `POST /sessions/<id>/updates` would.
async fn publish_race(hub: HubHandle, session: &str, body: Value) {
    let update = race::v1::decode_publish(body.to_string().as_bytes()).unwrap();
    let publication = race::v1::update_publication(session, &update, now());
    hub.publish(publication).await.unwrap();
}

/// Publish a DCDock event body the way `POST /api/ws/publish` would.
async fn publish_dcdock(hub: HubHandle, body: Value) {
    let event = dcdock::v1::decode_publish(body.to_string().as_bytes()).unwrap();
    hub.publish(dcdock::v1::event_publication(&event, now()))
        .await
        .unwrap();
}

#[tokio::test]
async fn afc_ping_and_errors() {
    let server = start("afc", Config::default()).await;
    flows::afc_ping_and_errors(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn race_ping_pong() {
    let server = start("race", Config::default()).await;
    flows::race_ping_pong(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn race_sessions_are_isolated() {
    let server = start("race", Config::default()).await;
    let hub = server.hub().clone();
    flows::race_sessions_are_isolated(server.local_addr(), |session, body| {
        publish_race(hub.clone(), session, body)
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_project_flow() {
    let server = start("collab", Config::default()).await;
    flows::collab_project_flow(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_not_member_error() {
    let server = start("collab", Config::default()).await;
    flows::collab_not_member_error(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn collab_origin_policy() {
    let server = start("collab", Config::default()).await;
    flows::collab_origin_policy(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_refuses_bad_tokens() {
    let server = start("dcdock", Config::default()).await;
    flows::dcdock_refuses_bad_tokens(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_ack_ping_subscribe() {
    let server = start("dcdock", Config::default()).await;
    flows::dcdock_ack_ping_subscribe(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_direction_filter() {
    let server = start("dcdock", Config::default()).await;
    let hub = server.hub().clone();
    flows::dcdock_direction_filter(server.local_addr(), |body| {
        publish_dcdock(hub.clone(), body)
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dcdock_conflict_to_its_user() {
    let server = start("dcdock", Config::default()).await;
    let hub = server.hub().clone();
    flows::dcdock_conflict_to_its_user(server.local_addr(), |body| {
        publish_dcdock(hub.clone(), body)
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_error_frames() {
    let server = start("collab", Config::default()).await;
    flows::bad_input_gets_error_frames(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversize_frame_closes_1009() {
    let server = start("laptimes", Config::default()).await;
    flows::oversize_frame_closes_1009(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_frame_closes_1003() {
    let server = start("laptimes", Config::default()).await;
    flows::binary_frame_closes_1003(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

/// A config whose rate limit a burst of 60 frames exceeds.
fn low_rate() -> Config {
    let mut config = Config::default();
    config.limits.inbound_rate = Some(RateLimit {
        per_second: 10,
        burst: 20,
    });
    config.limits.rate_policy = RatePolicy::Close;
    config
}

#[tokio::test]
async fn flood_closes_flooder_only() {
    let server = start("laptimes", low_rate()).await;
    flows::flood_closes_flooder_only(server.local_addr()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttled_import_loses_nothing() {
    let mut config = Config::default();
    config.limits.inbound_rate = Some(flows::THROTTLE_RATE);
    let server = start("laptimes", config).await;
    flows::throttled_import_loses_nothing(server.local_addr()).await;
    let stats = server.hub().stats().await.unwrap();
    assert!(stats.counters.throttled >= 1, "{stats:?}");
    assert_eq!(stats.counters.errors.get("rate_limited"), None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_consumer_is_closed() {
    let mut config = Config::default();
    config.limits.max_queued_bytes = 64 * 1024;
    let server = start("laptimes", config).await;
    flows::slow_consumer_is_closed(server.local_addr(), server.hub()).await;
    server.shutdown().await.unwrap();
}

/// A connection over the limit is refused with 503 before the `101`, as on the HTTP transport
/// (both make the same upgrade decision).
#[tokio::test]
async fn connection_limit_refuses_the_third_with_503() {
    let mut config = Config::default();
    config.limits.max_connections = 2;
    let server = start("collab", config).await;
    let addr = server.local_addr();
    let mut a = connect(addr, "/ws").await;
    let mut b = connect(addr, "/ws").await;
    expect_type(&mut a, "CONNECTION_ESTABLISHED").await;
    expect_type(&mut b, "CONNECTION_ESTABLISHED").await;
    assert_eq!(refused_status(try_connect(addr, "/ws", &[]).await), 503);
    // A wrong path is refused at the upgrade.
    assert_eq!(refused_status(try_connect(addr, "/nope", &[]).await), 404);
    // Once one leaves, a new client gets in.
    drop(a);
    let mut d = None;
    for _ in 0..50 {
        match try_connect(addr, "/ws", &[]).await {
            Ok(mut ws) => {
                expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
                d = Some(ws);
                break;
            }
            Err(e) => {
                assert_eq!(refused_status(Err(e)), 503);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(d.is_some(), "a slot frees up when a client leaves");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_client_within_grace() {
    let server = start("laptimes", Config::default()).await;
    let addr = server.local_addr();
    flows::shutdown_closes_with_1001(addr, server.shutdown()).await;
}

/// Dropping the `Server` value (and with it every `ShutdownHandle`) leaves the server running,
/// as `ShutdownHandle` documents; only `trigger` stops it.
#[tokio::test]
async fn dropping_the_server_value_does_not_stop_it() {
    let server = start("laptimes", Config::default()).await;
    let addr = server.local_addr();
    let hub = server.hub().clone();
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut a = connect(addr, "/").await;
    hub.publish(switchboard_hub::Publication::to_all("{}"))
        .await
        .unwrap();
    assert_eq!(support::next_text(&mut a).await, "{}");
}

#[tokio::test]
async fn laptimes_event_stream_on_the_websocket_only_transport() {
    let server = start("laptimes", Config::default()).await;
    let addr = server.local_addr();
    let mut events = support::sse::open(addr, "/sse").await;
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let mut ws = connect(addr, "/").await;
    let n = support::notice("times");
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text(n.clone()),
    )
    .await
    .unwrap();
    assert_eq!(events.next_data().await, n);
    // Another method is refused with the allowed one named; the server is unharmed.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = support::sse::request(Box::new(tcp), "POST", "/sse", &[("Content-Length", "0")])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 405);
    assert!(refused
        .headers
        .contains(&("allow".to_string(), "GET".to_string())));
    server.shutdown().await.unwrap();
    assert_eq!(
        events.until_end().await,
        [support::sse::Item::Comment(
            "close 1001 server shutting down".into()
        )]
    );
}
