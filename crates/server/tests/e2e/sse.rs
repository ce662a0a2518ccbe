//! Server-sent events end to end over real sockets: each system's stream (`<WebSocket
//! path>/sse`) receives what a publisher, a WebSocket client or a backend sends; the query
//! chooses rooms and filters; the upgrade's admission, limits and slow-consumer policy hold;
//! heartbeats are comments and the stream is never idle-closed; v2's `Last-Event-ID` resumes
//! without a gap or a duplicate; bad requests get clear refusals.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_hub::history::HistoryLimits;
use switchboard_hub::{Config, HistoryConfig, Publication};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::sse::{self, Item};
use crate::support::{
    assignment_created, connect, expect_type, notice, send_json, user_token, ALLOWED_ORIGIN, WAIT,
};
use crate::{http, start, start_with};

/// A config with history, so protocol v2 is served.
fn with_history() -> Config {
    Config {
        history: Some(HistoryConfig {
            limits: HistoryLimits::default(),
            ..HistoryConfig::with_seed([9; 32])
        }),
        ..Config::default()
    }
}

/// Wait until the hub counts `n` connections (a stream is registered before its `200`, but
/// its setup messages are applied after).
async fn wait_connections(hub: &switchboard_runtime::HubHandle, n: usize) {
    let start = std::time::Instant::now();
    while hub.stats().await.unwrap().connections != n {
        assert!(start.elapsed() < WAIT, "never {n} connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sse_laptimes_receives_what_a_websocket_client_sends() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/sse").await;
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(events.header("cache-control"), Some("no-cache"));
    let mut ws = connect(addr, "/").await;
    let n = notice("times");
    ws.send(Message::text(n.clone())).await.unwrap();
    let (data, id) = events.next_event().await;
    assert_eq!((data, id), (n, None));
    // A frame with raw line breaks between its JSON tokens arrives whole: one event, its
    // `data:` lines joined with `\n` (a `\r\n` is read as one break), on every stream (the
    // lines are made once per publication and shared).
    let mut second = sse::open(addr, "/sse").await;
    wait_connections(server.hub(), 3).await;
    let multi = "{\"table\":\"laps\",\n\"operation\":\"CHANGE\",\r\n\"timestamp\":\"2025-10-25T12:34:56.789Z\"}";
    ws.send(Message::text(multi)).await.unwrap();
    assert_eq!(events.next_data().await, multi.replace("\r\n", "\n"));
    assert_eq!(second.next_data().await, multi.replace("\r\n", "\n"));
    // Counted as connections, and as streams.
    let metrics = http::get(addr, "/metrics").await.text();
    assert!(
        metrics.contains("switchboard_connections{system=\"laptimes\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_sse_connections{system=\"laptimes\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_sse_connections_opened_total{system=\"laptimes\"} 2\n"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_on_a_kept_alive_connection_after_another_request() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Read the whole first answer (its length is declared), leaving the connection open.
    let mut buf = Vec::new();
    let first = tokio::time::timeout(WAIT, async {
        loop {
            let mut chunk = [0; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection was closed after /health");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a declared length");
            if buf.len() >= end + 4 + len {
                return head;
            }
        }
    })
    .await
    .expect("the first answer in time");
    assert!(first.starts_with("http/1.1 200"), "{first}");
    let mut events = sse::request(Box::new(tcp), "GET", "/sse", &[])
        .await
        .expect("the stream is answered on the same connection");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let mut ws = connect(addr, "/").await;
    ws.send(Message::text(notice("kept"))).await.unwrap();
    assert_eq!(events.next_data().await, notice("kept"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_afc_receives_http_publishes() {
    let server = start_with("afc", Default::default(), Default::default()).await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/ws/sse").await;
    wait_connections(server.hub(), 1).await;
    let json_type = [("Content-Type", "application/json")];
    let r = http::post(addr, "/events/todo-created", &json_type, r#"{"id":1}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        events.next_data().await,
        r#"{"type":"todo:created","payload":{"id":1}}"#
    );
    // The WebSocket path's other neighbours are not the stream.
    let r = http::get(addr, "/ws/sse/more").await;
    assert_eq!(r.status, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_race_follows_the_sessions_of_its_query() {
    let server = start("race").await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/ws/sse?sessionId=race-2024").await;
    let sub = events.expect_type("subscribed").await;
    assert_eq!(sub["data"]["sessionId"], "race-2024");
    for (session, driver) in [("quali-2024", "HAM"), ("race-2024", "VER")] {
        let lap = json!({"type": "lap_update", "data": {"driverId": driver, "lap": 1}});
        let path = format!("/sessions/{session}/updates");
        let r = http::post_with_key(addr, &path, &lap).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // Only its session's update (the other one was published first).
    let got = events.expect_type("lap_update").await;
    assert_eq!(got["data"]["driverId"], "VER");
    events.assert_quiet().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_collab_joins_the_project_of_its_query() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/ws/sse?projectId=project-123&userId=eve").await;
    events.expect_type("CONNECTION_ESTABLISHED").await;
    let presence = events.expect_type("USER_PRESENCE").await;
    assert_eq!(presence["payload"]["projectId"], "project-123");
    assert_eq!(presence["payload"]["activeUsers"][0]["userId"], "eve");
    let mut member = connect(addr, "/ws").await;
    let mut outsider = connect(addr, "/ws").await;
    for (ws, project) in [(&mut member, "project-123"), (&mut outsider, "project-999")] {
        expect_type(ws, "CONNECTION_ESTABLISHED").await;
        send_json(
            ws,
            json!({"type": "JOIN_PROJECT", "projectId": project, "userId": "bob"}),
        )
        .await;
        expect_type(ws, "USER_PRESENCE").await;
    }
    assert_eq!(
        events.expect_type("USER_PRESENCE").await["payload"]["userCount"],
        2
    );
    for (ws, project, task) in [
        (&mut outsider, "project-999", "task-9"),
        (&mut member, "project-123", "task-1"),
    ] {
        let payload = json!({"taskId": task, "status": "done"});
        send_json(
            ws,
            json!({"type": "TASK_UPDATE", "projectId": project, "payload": payload}),
        )
        .await;
    }
    let got = events.expect_type("TASK_UPDATE").await;
    assert_eq!(got["payload"]["taskId"], "task-1");
    events.assert_quiet().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_collab_origin_policy_and_cors() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let refused = sse::open_with(addr, "/ws/sse", &[("Origin", "http://evil.example")])
        .await
        .err()
        .expect("a foreign page is refused");
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("origin"), "{}", refused.body);
    // An allowed page may read the stream cross-origin.
    let events = sse::open_with(addr, "/ws/sse", &[("Origin", ALLOWED_ORIGIN)])
        .await
        .unwrap();
    assert_eq!(
        events.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_dcdock_needs_its_token_and_filters_by_direction() {
    let server = start("dcdock").await;
    let addr = server.local_addr();
    for path in ["/api/ws/sse", "/api/ws/sse?token=not.a.jwt"] {
        let refused = sse::open_with(addr, path, &[])
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, 401, "{path}");
        assert!(!refused.body.is_empty());
    }
    let token = user_token(7);
    let mut ib = sse::open(addr, &format!("/api/ws/sse?token={token}&direction=IB")).await;
    let ack = ib.expect_type("connection_ack").await;
    assert!(ack["client_id"].as_str().unwrap().starts_with("user_7_"));
    let sub = ib.expect_type("subscribed").await;
    assert_eq!(sub["filters"], json!({"direction": "IB"}));
    let mut all = sse::open(addr, &format!("/api/ws/sse?token={token}")).await;
    all.expect_type("connection_ack").await;
    for (id, direction) in [(201, "OB"), (202, "IB")] {
        let r =
            http::post_with_key(addr, "/api/ws/publish", &assignment_created(id, direction)).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert_eq!(
        ib.expect_type("assignment_created").await["assignment_id"],
        202
    );
    for id in [201, 202] {
        assert_eq!(
            all.expect_type("assignment_created").await["assignment_id"],
            id
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_connection_limit_answers_503() {
    let mut config = Config::default();
    config.limits.max_connections = 1;
    let server = start_with("laptimes", config, Default::default()).await;
    let addr = server.local_addr();
    let _first = sse::open(addr, "/sse").await;
    let refused = sse::open_with(addr, "/sse", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("connection limit"),
        "{}",
        refused.body
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_slow_consumer_is_closed_after_what_was_queued() {
    let mut config = Config::default();
    config.limits.max_queued_bytes = 64 * 1024;
    let server = start_with("laptimes", config, Default::default()).await;
    let addr = server.local_addr();
    let hub = server.hub();
    let mut slow = sse::open_small_buffer(addr, "/sse").await;
    wait_connections(hub, 1).await;
    let pad = "x".repeat(4096 - 40);
    let mut sent = 0u32;
    loop {
        assert!(
            sent < 4000,
            "the slow stream was never closed ({sent} frames)"
        );
        let frame = json!({"i": sent, "pad": pad}).to_string();
        let delivered = hub.publish(Publication::to_all(frame)).await.unwrap();
        if delivered == 0 {
            break;
        }
        sent += 1;
    }
    assert!(sent >= 16, "closed after {sent} frames, below 64 KiB");
    // What was queued arrives in order, then the close comment, then the end.
    let seen = tokio::time::timeout(Duration::from_secs(10), slow.until_end())
        .await
        .expect("the stream ends");
    let (last, events) = seen.split_last().expect("something arrived");
    for (i, item) in events.iter().enumerate() {
        let Item::Event { data, .. } = item else {
            panic!("{item:?}");
        };
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["i"], i);
    }
    let Item::Comment(close) = last else {
        panic!("expected the close comment, got {last:?}");
    };
    assert!(close.starts_with("close 4008 "), "{close}");
    let stats = hub.stats().await.unwrap();
    assert_eq!(stats.counters.slow_consumer_closes, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_slow_consumer_under_the_drop_policy_misses_frames_and_stays_open() {
    let mut config = Config::default();
    config.limits.max_queued_bytes = 64 * 1024;
    config.limits.slow_consumer = switchboard_hub::SlowConsumerPolicy::Drop;
    let server = start_with("laptimes", config, Default::default()).await;
    let addr = server.local_addr();
    let hub = server.hub();
    let mut slow = sse::open_small_buffer(addr, "/sse").await;
    wait_connections(hub, 1).await;
    let pad = "x".repeat(4096 - 40);
    let mut sent = 0u64;
    while hub.stats().await.unwrap().counters.dropped_deliveries < 4 {
        assert!(sent < 4000, "nothing was ever dropped ({sent} frames)");
        let frame = json!({"i": sent, "pad": pad}).to_string();
        hub.publish(Publication::to_all(frame)).await.unwrap();
        sent += 1;
    }
    // The stream reads on: what was queued, in order, with frames missing, then what is
    // published once it has room again. One more frame is published before each read, so the
    // reader always has something coming, until one of those arrives.
    let mut got = Vec::new();
    let mut next = sent;
    loop {
        let frame = json!({"i": next, "pad": "after"}).to_string();
        hub.publish(Publication::to_all(frame)).await.unwrap();
        next += 1;
        let v: Value = serde_json::from_str(&slow.next_data().await).unwrap();
        let i = v["i"].as_u64().unwrap();
        got.push(i);
        if i >= sent {
            break;
        }
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    let before = got.iter().filter(|&&i| i < sent).count() as u64;
    assert!(before < sent, "nothing missed: {got:?}");
    assert_eq!(hub.stats().await.unwrap().counters.slow_consumer_closes, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_heartbeat_comments_and_no_idle_timeout() {
    let config = Config {
        heartbeat_interval: Some(Duration::from_millis(20)),
        idle_timeout: Some(Duration::from_millis(50)),
        ..Config::default()
    };
    let server = start_with("afc", config, Default::default()).await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/ws/sse").await;
    // Many heartbeat intervals and idle timeouts pass; the stream stays open.
    for _ in 0..10 {
        assert_eq!(events.next_item().await, Some(Item::Comment(String::new())));
    }
    let stats = server.hub().stats().await.unwrap();
    assert_eq!((stats.connections, stats.counters.idle_timeouts), (1, 0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_shutdown_ends_the_stream_with_a_close_comment() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let mut events = sse::open(addr, "/sse").await;
    wait_connections(server.hub(), 1).await;
    let shutdown = tokio::spawn(server.shutdown());
    let seen = events.until_end().await;
    assert_eq!(
        seen,
        [Item::Comment("close 1001 server shutting down".into())]
    );
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn sse_bad_requests_are_refused_clearly() {
    let server = start_with("laptimes", with_history(), Default::default()).await;
    let addr = server.local_addr();
    for method in ["POST", "HEAD", "PUT"] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let refused = sse::request(Box::new(tcp), method, "/sse", &[("Content-Length", "0")])
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, 405, "{method}");
        assert_eq!(
            refused
                .headers
                .iter()
                .find(|(k, _)| k == "allow")
                .unwrap()
                .1,
            "GET"
        );
    }
    let long = format!("/sse?pad={}", "x".repeat(9000));
    let refused = sse::open_with(addr, &long, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("query"), "{}", refused.body);
    for bad in [
        "nope",
        "3865b85aa318fb113d43cb337c20004a.all~zz~1",
        "3865b85aa318fb113d43cb337c20004a.all~0123456789abcdef",
    ] {
        let refused = sse::open_with(addr, "/sse?sb=2", &[("Last-Event-ID", bad)])
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.body.contains("Last-Event-ID"), "{}", refused.body);
    }
    let huge = format!("3865b85aa318fb113d43cb337c20004a.{}", "a".repeat(40_000));
    let refused = sse::open_with(addr, "/sse?sb=2", &[("Last-Event-ID", &huge)])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    let metrics = http::get(addr, "/metrics").await.text();
    assert!(
        metrics.contains(
            "switchboard_refused_total{system=\"laptimes\",kind=\"sse\",reason=\"method\"} 3\n"
        ),
        "{metrics}"
    );
    // The server is unharmed.
    let mut events = sse::open(addr, "/sse").await;
    let mut ws = connect(addr, "/").await;
    ws.send(Message::text(notice("after"))).await.unwrap();
    assert_eq!(events.next_data().await, notice("after"));
    server.shutdown().await.unwrap();
}

/// Publish laptimes notice `i` from the server side.
async fn publish(hub: &switchboard_runtime::HubHandle, i: u64) {
    let frame = json!({"table": "t", "operation": "CHANGE", "i": i}).to_string();
    hub.publish(Publication::to_all(frame).keep())
        .await
        .unwrap();
}

#[tokio::test]
async fn sse_v2_last_event_id_resumes_without_gap_or_duplicate() {
    let server = start_with("laptimes", with_history(), Default::default()).await;
    let addr = server.local_addr();
    let hub = server.hub();
    let mut events = sse::open(addr, "/sse?sb=2").await;
    let (session, id) = events.next_event().await;
    let session: Value = serde_json::from_str(&session).unwrap();
    assert_eq!(session["sb"], "session");
    let session_id = session["session"].as_str().unwrap().to_string();
    assert_eq!(id.as_deref(), Some(session_id.as_str()));
    let (subscribed, id) = events.next_event().await;
    let subscribed: Value = serde_json::from_str(&subscribed).unwrap();
    assert_eq!(subscribed["sb"], "subscribed");
    let id = id.expect("a subscribed event carries the position");
    assert!(id.starts_with(&format!("{session_id}.all~")), "{id}");
    for i in 0..3 {
        publish(hub, i).await;
    }
    for i in 0..2 {
        let (data, id) = events.next_event().await;
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            (v["sb"].as_str(), v["msg"]["i"].as_u64()),
            (Some("pub"), Some(i))
        );
        let offset = v["offset"].as_u64().unwrap();
        assert!(id.unwrap().ends_with(&format!("~{offset}")));
    }
    // The client goes away having seen 0 and 1 (2 is on its way, unread); 3 and 4 are
    // published while it is away.
    let last_id = events.last_id.clone().expect("an id to resume from");
    drop(events);
    wait_connections(hub, 0).await;
    for i in 3..5 {
        publish(hub, i).await;
    }
    let mut events = sse::open_with(addr, "/sse?sb=2", &[("Last-Event-ID", &last_id)])
        .await
        .unwrap();
    let session: Value = serde_json::from_str(&events.next_data().await).unwrap();
    assert_eq!(session["session"], session_id.as_str());
    assert_eq!(session["resumed"], true);
    let mut got = Vec::new();
    loop {
        let v: Value = serde_json::from_str(&events.next_data().await).unwrap();
        match v["sb"].as_str() {
            Some("pub") => got.push(v["msg"]["i"].as_u64().unwrap()),
            Some("subscribed") => {
                assert_eq!(v["recovered"], true, "{v}");
                assert_eq!(v["replayed"], 3, "{v}");
                break;
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!(got, [2, 3, 4]);
    publish(hub, 5).await;
    let v: Value = serde_json::from_str(&events.next_data().await).unwrap();
    assert_eq!(v["msg"]["i"], 5);
    events.assert_quiet().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sse_v2_collab_resumes_its_project_from_last_event_id() {
    let server = start_with("collab", with_history(), crate::support::options()).await;
    let addr = server.local_addr();
    let path = "/ws/sse?sb=2&projectId=p-1&userId=eve";
    let mut events = sse::open(addr, path).await;
    let mut member = connect(addr, "/ws").await;
    expect_type(&mut member, "CONNECTION_ESTABLISHED").await;
    send_json(
        &mut member,
        json!({"type": "JOIN_PROJECT", "projectId": "p-1", "userId": "bob"}),
    )
    .await;
    expect_type(&mut member, "USER_PRESENCE").await;
    let update = |n: u64| json!({"type": "TASK_UPDATE", "projectId": "p-1", "payload": {"n": n}});
    /// The next `pub` frame's task number (other frames skipped).
    async fn next_pub(events: &mut sse::Events) -> (u64, Option<String>) {
        loop {
            let (data, id) = events.next_event().await;
            let v: Value = serde_json::from_str(&data).unwrap();
            if v["sb"] == "pub" {
                assert_eq!(v["stream"], "project:p-1");
                return (v["msg"]["payload"]["n"].as_u64().unwrap(), id);
            }
        }
    }
    for n in 1..=3 {
        send_json(&mut member, update(n)).await;
    }
    for n in 1..=2 {
        let (got, id) = next_pub(&mut events).await;
        assert_eq!(got, n);
        // The room's stream is named in the id, percent-encoded.
        assert!(id.unwrap().contains(".project%3Ap-1~"));
    }
    let last_id = events.last_id.clone().unwrap();
    drop(events);
    wait_connections(server.hub(), 1).await;
    for n in 4..=5 {
        send_json(&mut member, update(n)).await;
    }
    let mut events = sse::open_with(addr, path, &[("Last-Event-ID", &last_id)])
        .await
        .unwrap();
    // The replay, the `subscribed` frame, then live: the last update may still have been on its
    // way to the hub when the stream came back, so it comes either side of `subscribed`.
    let mut got = Vec::new();
    let mut subscribed = false;
    while !(subscribed && got.last() == Some(&5)) {
        let v: Value = serde_json::from_str(&events.next_data().await).unwrap();
        match v["sb"].as_str() {
            Some("pub") => got.push(v["msg"]["payload"]["n"].as_u64().unwrap()),
            Some("subscribed") => {
                assert_eq!(v["stream"], "project:p-1");
                assert_eq!(v["recovered"], true, "{v}");
                subscribed = true;
            }
            Some("session") => assert_eq!(v["resumed"], true, "{v}"),
            _ => {}
        }
    }
    assert_eq!(got, [3, 4, 5]);
    send_json(&mut member, update(6)).await;
    assert_eq!(next_pub(&mut events).await.0, 6);
    server.shutdown().await.unwrap();
}
