//! End-to-end test support shared by both transports: a WebSocket client whose every wait is
//! bounded, JWT helpers, test endpoints, and the seed flows that need no HTTP ([`flows`]).
//!
//! `crates/transport-hyper/tests/e2e` includes this same file with `#[path]`, so each flow here
//! runs against the WebSocket-only server and the full server alike.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_protocol::spec::Auth;
use switchboard_protocol::Options;
use switchboard_runtime::gate::JwtKeys;
use switchboard_runtime::Endpoint;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(200);
/// The HS256 secret the test endpoints verify DCDock tokens with.
pub const JWT_SECRET: &str = "e2e-secret";
/// The publish key of the test servers.
pub const API_KEY: &str = "e2e-key";
/// The one browser origin the test endpoints allow (collab).
pub const ALLOWED_ORIGIN: &str = "http://localhost:3000";

/// `system`'s endpoint as the tests configure it: collab allows [`ALLOWED_ORIGIN`] only, DCDock
/// verifies tokens with [`JWT_SECRET`]. Nothing is read from the environment.
pub fn endpoint(system: &str) -> Endpoint {
    let spec = switchboard_protocol::system(system).expect("a known system");
    let mut endpoint = Endpoint::new(spec);
    endpoint.allowed_origins = spec.origins.map(|_| vec![ALLOWED_ORIGIN.to_string()]);
    if matches!(spec.auth, Auth::JwtQuery { .. }) {
        endpoint.jwt = JwtKeys::single(JWT_SECRET);
    }
    endpoint
}

/// `system` started as the tests configure it ([`endpoint`], `options`, `config`), in `process`.
pub fn system(
    process: &switchboard_runtime::Process,
    system: &str,
    config: switchboard_hub::Config,
    options: Options,
) -> std::sync::Arc<switchboard_runtime::System> {
    switchboard_runtime::System::start(
        endpoint(system),
        options,
        config,
        process.clock.clone(),
        None,
    )
}

/// The wall clock now, as publications built outside a hub stamp themselves.
pub fn wall_now() -> switchboard_hub::UnixTime {
    switchboard_hub::UnixTime::from(std::time::SystemTime::now())
}

/// Protocol options with [`API_KEY`] as the publish key.
pub fn options() -> Options {
    Options::default().with_api_key(API_KEY)
}

/// Open a WebSocket with extra request headers; the error is the server's answer.
pub async fn try_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("a valid header value"));
    }
    let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is answered in time")?;
    Ok(connected.0)
}

/// Open a WebSocket on `path`.
pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
    try_connect(addr, path, &[])
        .await
        .unwrap_or_else(|e| panic!("connect to {path}: {e}"))
}

/// Open a WebSocket over a socket with a tiny receive buffer, for a client that will not read.
pub async fn connect_small_buffer(addr: SocketAddr, path: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}{path}");
    let stream = MaybeTlsStream::Plain(tcp);
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("the upgrade is answered in time")
        .expect("upgrade accepted")
        .0
}

/// The HTTP status of a refused upgrade.
pub fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade was accepted"),
    }
}

/// The next data or close frame (pings and pongs skipped).
pub async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("no socket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next text frame.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_message(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next text frame, as JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next frame, which must be JSON with `"type": ty`.
pub async fn expect_type(ws: &mut Ws, ty: &str) -> Value {
    let v = next_json(ws).await;
    assert_eq!(v["type"], ty, "unexpected frame {v}");
    v
}

/// Nothing but pings arrives for [`QUIET`].
pub async fn assert_quiet(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected no frame, got {other:?}"),
        }
    }
}

/// Read until the server's close frame (data frames before it are skipped) and return its code.
pub async fn expect_close(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            None => panic!("the stream ended without a close frame"),
        }
    }
}

/// Send one JSON text frame.
pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Seconds since the Unix epoch, plus `offset`.
pub fn unix_in(offset: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + offset
}

/// An HS256 JWT over `claims`.
pub fn jwt(claims: Value, secret: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a JWT")
}

/// A valid DCDock token for `user`, signed with [`JWT_SECRET`].
pub fn user_token(user: u64) -> String {
    jwt(
        json!({"sub": user.to_string(), "email": format!("u{user}@example.com"), "exp": unix_in(600)}),
        JWT_SECRET,
    )
}

/// Connect to DCDock as `user` and read the `connection_ack`.
pub async fn dcdock_client(addr: SocketAddr, user: u64) -> (Ws, Value) {
    let mut ws = connect(addr, &format!("/api/ws?token={}", user_token(user))).await;
    let ack = expect_type(&mut ws, "connection_ack").await;
    (ws, ack)
}

/// A DCDock assignment event for a load going `direction`.
pub fn assignment_created(id: u64, direction: &str) -> Value {
    json!({
        "type": "assignment_created",
        "assignment_id": id,
        "action": "CREATE",
        "user_id": 7,
        "user_email": "u7@example.com",
        "data": {"id": id, "dock": "D4", "load": {"id": id + 1000, "direction": direction}}
    })
}

/// A laptimes change notice with a recognisable `table`.
pub fn notice(table: &str) -> String {
    json!({"table": table, "operation": "CHANGE", "timestamp": "2025-10-25T12:34:56.789Z"})
        .to_string()
}

pub mod sse;

/// The flows every transport must pass. Each takes the address of a running server configured
/// with [`endpoint`] and [`options`] (and, where said, particular limits).
pub mod flows {
    use std::future::Future;
    use std::time::Instant;

    use switchboard_hub::Publication;
    use switchboard_runtime::HubHandle;

    use super::*;

    /// Laptimes: a change notice reaches every other client, not the sender.
    pub async fn laptimes_relay(addr: SocketAddr) {
        let (mut a, mut b, mut c) = (
            connect(addr, "/").await,
            connect(addr, "/any/path").await,
            connect(addr, "/").await,
        );
        let n = notice("times");
        a.send(Message::text(n.clone())).await.unwrap();
        assert_eq!(next_text(&mut b).await, n);
        assert_eq!(next_text(&mut c).await, n);
        assert_quiet(&mut a).await;
    }

    /// AFC over WebSocket: `ping` gets a `pong`; anything else an error frame, and the socket
    /// stays usable.
    pub async fn afc_ping_and_errors(addr: SocketAddr) {
        let mut ws = connect(addr, "/ws").await;
        send_json(&mut ws, json!({"type": "ping"})).await;
        let pong = expect_type(&mut ws, "pong").await;
        assert!(pong["payload"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        send_json(&mut ws, json!({"type": "todo:created"})).await;
        let err = expect_type(&mut ws, "error").await;
        assert_eq!(err["payload"]["message"], "Unknown message type");
        ws.send(Message::text("not json")).await.unwrap();
        let err = expect_type(&mut ws, "error").await;
        assert!(err["payload"]["details"].as_str().is_some(), "{err}");
        send_json(&mut ws, json!({"type": "ping"})).await;
        expect_type(&mut ws, "pong").await;
    }

    /// Race: `ping` (with or without `data`) gets a `pong`.
    pub async fn race_ping_pong(addr: SocketAddr) {
        let mut ws = connect(addr, "/ws").await;
        send_json(&mut ws, json!({"type": "ping", "data": {}})).await;
        let pong = expect_type(&mut ws, "pong").await;
        assert_eq!(pong["data"], json!({}));
        assert!(pong["timestamp"].as_str().unwrap().ends_with('Z'), "{pong}");
        send_json(&mut ws, json!({"type": "ping"})).await;
        expect_type(&mut ws, "pong").await;
    }

    /// Race: clients of one session get only that session's updates, whichever way they
    /// subscribed. `publish(session, body)` publishes one `POST /sessions/<id>/updates` body.
    pub async fn race_sessions_are_isolated<F, Fut>(addr: SocketAddr, mut publish: F)
    where
        F: FnMut(&'static str, Value) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut a = connect(addr, "/ws?sessionId=race-2024").await;
        let sub = expect_type(&mut a, "subscribed").await;
        assert_eq!(sub["data"]["sessionId"], "race-2024");
        let mut b = connect(addr, "/ws").await;
        send_json(
            &mut b,
            json!({"type": "subscribe", "data": {"sessionId": "quali-2024"}}),
        )
        .await;
        assert_eq!(
            expect_type(&mut b, "subscribed").await["data"]["sessionId"],
            "quali-2024"
        );
        let mut both = connect(addr, "/ws?sessionId=race-2024").await;
        expect_type(&mut both, "subscribed").await;
        send_json(
            &mut both,
            json!({"type": "subscribe", "data": {"sessionId": "quali-2024"}}),
        )
        .await;
        expect_type(&mut both, "subscribed").await;

        let lap =
            json!({"type": "lap_update", "data": {"driverId": "VER", "lap": 12, "time": 91.234}});
        publish("race-2024", lap.clone()).await;
        for ws in [&mut a, &mut both] {
            let got = expect_type(ws, "lap_update").await;
            assert_eq!(got["data"], lap["data"]);
            assert!(got["timestamp"].as_str().unwrap().ends_with('Z'), "{got}");
        }
        assert_quiet(&mut b).await;

        let tire = json!({"type": "tire_change", "data": {"driverId": "HAM", "compound": "SOFT"}, "timestamp": "2024-05-26T13:05:00.000Z"});
        publish("quali-2024", tire.clone()).await;
        for ws in [&mut b, &mut both] {
            let got = expect_type(ws, "tire_change").await;
            assert_eq!(got["data"], tire["data"]);
            assert_eq!(got["timestamp"], tire["timestamp"]);
        }
        assert_quiet(&mut a).await;

        send_json(
            &mut both,
            json!({"type": "unsubscribe", "data": {"sessionId": "race-2024"}}),
        )
        .await;
        expect_type(&mut both, "unsubscribed").await;
        publish("race-2024", lap).await;
        expect_type(&mut a, "lap_update").await;
        assert_quiet(&mut both).await;
    }

    /// Collab: the greeting, presence on join, and edits to the other members of the project only.
    pub async fn collab_project_flow(addr: SocketAddr) {
        let mut a = connect(addr, "/ws").await;
        let hello = expect_type(&mut a, "CONNECTION_ESTABLISHED").await;
        assert!(hello["clientId"].as_str().unwrap().starts_with("client_"));
        assert!(hello["timestamp"].is_u64(), "{hello}");
        let (mut b, mut c) = (connect(addr, "/ws").await, connect(addr, "/ws").await);
        expect_type(&mut b, "CONNECTION_ESTABLISHED").await;
        expect_type(&mut c, "CONNECTION_ESTABLISHED").await;

        send_json(
            &mut a,
            json!({"type": "JOIN_PROJECT", "projectId": "project-123", "userId": "alice"}),
        )
        .await;
        let presence = expect_type(&mut a, "USER_PRESENCE").await;
        assert_eq!(presence["payload"]["userCount"], 1);
        send_json(
            &mut b,
            json!({"type": "JOIN_PROJECT", "projectId": "project-123", "userId": "bob"}),
        )
        .await;
        for ws in [&mut a, &mut b] {
            let p = expect_type(ws, "USER_PRESENCE").await;
            assert_eq!(p["payload"]["projectId"], "project-123");
            assert_eq!(p["payload"]["userCount"], 2);
            let users: Vec<&str> = p["payload"]["activeUsers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["userId"].as_str().unwrap())
                .collect();
            assert_eq!(users, ["alice", "bob"]);
        }
        send_json(
            &mut c,
            json!({"type": "JOIN_PROJECT", "projectId": "project-999", "userId": "carol"}),
        )
        .await;
        expect_type(&mut c, "USER_PRESENCE").await;

        let payload = json!({"taskId": "task-1", "status": "done"});
        send_json(
            &mut a,
            json!({"type": "TASK_UPDATE", "projectId": "project-123", "payload": payload, "operationId": "op-1"}),
        )
        .await;
        let got = expect_type(&mut b, "TASK_UPDATE").await;
        assert_eq!(got["payload"], payload);
        assert_eq!(got["operationId"], "op-1");
        assert_eq!(got["projectId"], "project-123");
        assert_eq!(got["userId"], "alice");
        assert!(got["timestamp"].is_u64());
        assert_quiet(&mut a).await;
        assert_quiet(&mut c).await;

        // Leaving tells the members that remain.
        send_json(
            &mut b,
            json!({"type": "LEAVE_PROJECT", "projectId": "project-123"}),
        )
        .await;
        let p = expect_type(&mut a, "USER_PRESENCE").await;
        assert_eq!(p["payload"]["userCount"], 1);
    }

    /// Collab: an edit for a project the sender has not joined is refused to the sender alone.
    pub async fn collab_not_member_error(addr: SocketAddr) {
        let (mut a, mut b) = (connect(addr, "/ws").await, connect(addr, "/ws").await);
        expect_type(&mut a, "CONNECTION_ESTABLISHED").await;
        expect_type(&mut b, "CONNECTION_ESTABLISHED").await;
        send_json(&mut b, json!({"type": "JOIN_PROJECT", "projectId": "p-9"})).await;
        expect_type(&mut b, "USER_PRESENCE").await;
        send_json(
            &mut a,
            json!({"type": "TASK_CREATE", "projectId": "p-9", "payload": {"title": "sneaky"}}),
        )
        .await;
        let err = expect_type(&mut a, "ERROR").await;
        assert_eq!(err["message"], "Not a member of this project");
        assert_eq!(err["error"], err["message"]);
        assert_quiet(&mut b).await;
    }

    /// Collab: a browser origin that is not allowed is refused with HTTP 403 at the upgrade; an
    /// allowed one (and a non-browser client without `Origin`) is accepted.
    pub async fn collab_origin_policy(addr: SocketAddr) {
        let refused = try_connect(addr, "/ws", &[("origin", "http://evil.example")]).await;
        assert_eq!(refused_status(refused), 403);
        let mut ok = try_connect(addr, "/ws", &[("origin", ALLOWED_ORIGIN)])
            .await
            .expect("allowed origin is upgraded");
        expect_type(&mut ok, "CONNECTION_ESTABLISHED").await;
        let mut no_origin = connect(addr, "/ws").await;
        expect_type(&mut no_origin, "CONNECTION_ESTABLISHED").await;
    }

    /// DCDock: no token, a bad signature, or an expired token: upgraded, then closed with 1008.
    pub async fn dcdock_refuses_bad_tokens(addr: SocketAddr) {
        let forged = jwt(json!({"sub": "7", "exp": unix_in(600)}), "not-the-secret");
        let expired = jwt(json!({"sub": "7", "exp": unix_in(-3600)}), JWT_SECRET);
        for path in [
            "/api/ws".to_string(),
            format!("/api/ws?token={forged}"),
            format!("/api/ws?token={expired}"),
            "/api/ws?token=garbage".to_string(),
        ] {
            let mut ws = connect(addr, &path).await;
            assert_eq!(expect_close(&mut ws).await, 1008, "{path}");
        }
        // A refused token leaves the server serving the rest.
        dcdock_client(addr, 7).await;
    }

    /// DCDock: a valid token gets `connection_ack`; `ping` gets `pong`; `subscribe` echoes filters.
    pub async fn dcdock_ack_ping_subscribe(addr: SocketAddr) {
        let (mut ws, ack) = dcdock_client(addr, 42).await;
        assert!(
            ack["client_id"].as_str().unwrap().starts_with("user_42_"),
            "{ack}"
        );
        assert_eq!(ack["message"], "Connected to DCDock real-time updates");
        send_json(&mut ws, json!({"type": "ping"})).await;
        let pong = expect_type(&mut ws, "pong").await;
        assert!(pong["timestamp"].is_string());
        send_json(
            &mut ws,
            json!({"type": "subscribe", "filters": {"direction": "IB"}}),
        )
        .await;
        let sub = expect_type(&mut ws, "subscribed").await;
        assert_eq!(sub["filters"], json!({"direction": "IB"}));
        send_json(
            &mut ws,
            json!({"type": "subscribe", "filters": {"direction": "XX"}}),
        )
        .await;
        let err = expect_type(&mut ws, "error").await;
        assert_eq!(err["message"], "Invalid message format");
        send_json(&mut ws, json!({"type": "unsubscribe"})).await;
        expect_type(&mut ws, "unsubscribed").await;
    }

    /// DCDock: an IB subscriber gets only IB assignment events, an OB one only OB, an
    /// unfiltered one both. `publish(body)` publishes one `POST /api/ws/publish` body.
    pub async fn dcdock_direction_filter<F, Fut>(addr: SocketAddr, mut publish: F)
    where
        F: FnMut(Value) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (mut ib, _) = dcdock_client(addr, 1).await;
        let (mut ob, _) = dcdock_client(addr, 2).await;
        let (mut all, _) = dcdock_client(addr, 3).await;
        for (ws, dir) in [(&mut ib, "IB"), (&mut ob, "OB")] {
            send_json(
                ws,
                json!({"type": "subscribe", "filters": {"direction": dir}}),
            )
            .await;
            expect_type(ws, "subscribed").await;
        }
        publish(assignment_created(101, "IB")).await;
        for ws in [&mut ib, &mut all] {
            let got = expect_type(ws, "assignment_created").await;
            assert_eq!(got["assignment_id"], 101);
            assert_eq!(got["data"]["load"]["direction"], "IB");
            assert!(got["timestamp"].is_string(), "{got}");
        }
        assert_quiet(&mut ob).await;
        publish(assignment_created(102, "OB")).await;
        for ws in [&mut ob, &mut all] {
            assert_eq!(
                expect_type(ws, "assignment_created").await["assignment_id"],
                102
            );
        }
        assert_quiet(&mut ib).await;
    }

    /// DCDock: `conflict_detected` reaches only the connections of the user it concerns.
    pub async fn dcdock_conflict_to_its_user<F, Fut>(addr: SocketAddr, mut publish: F)
    where
        F: FnMut(Value) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (mut mine, _) = dcdock_client(addr, 8).await;
        let (mut mine_too, _) = dcdock_client(addr, 8).await;
        let (mut other, _) = dcdock_client(addr, 9).await;
        publish(json!({
            "type": "conflict_detected",
            "assignment_id": 101,
            "current_version": 3,
            "attempted_version": 2,
            "current_data": {"id": 101, "dock": "D5"},
            "message": "Assignment was modified by another user",
            "user_id": 8
        }))
        .await;
        for ws in [&mut mine, &mut mine_too] {
            let got = expect_type(ws, "conflict_detected").await;
            assert_eq!(got["current_version"], 3);
            assert_eq!(got["attempted_version"], 2);
        }
        assert_quiet(&mut other).await;
    }

    /// Bad input (collab): not JSON, an unknown type, missing fields: each answered with an
    /// `ERROR` to the sender, whose connection keeps working, as does everyone else's.
    pub async fn bad_input_gets_error_frames(addr: SocketAddr) {
        let (mut a, mut b) = (connect(addr, "/ws").await, connect(addr, "/ws").await);
        for ws in [&mut a, &mut b] {
            expect_type(ws, "CONNECTION_ESTABLISHED").await;
            send_json(ws, json!({"type": "JOIN_PROJECT", "projectId": "p"})).await;
        }
        expect_type(&mut a, "USER_PRESENCE").await;
        expect_type(&mut a, "USER_PRESENCE").await;
        expect_type(&mut b, "USER_PRESENCE").await;

        let bad: [(&str, &str); 4] = [
            ("{not json", "Invalid message format"),
            ("[1,2,3]", "Invalid message format"),
            (r#"{"type":"NOPE"}"#, "Unknown message type"),
            (
                r#"{"type":"TASK_UPDATE","projectId":"p"}"#,
                "Invalid message format",
            ),
        ];
        for (frame, message) in bad {
            a.send(Message::text(frame)).await.unwrap();
            let err = expect_type(&mut a, "ERROR").await;
            assert_eq!(err["message"], message, "{frame}");
            assert!(!err["details"].as_str().unwrap().is_empty(), "{err}");
        }
        assert_quiet(&mut b).await;
        // Both connections are unharmed: edits flow both ways.
        edit_reaches(&mut a, &mut b).await;
        edit_reaches(&mut b, &mut a).await;
    }

    async fn edit_reaches(from: &mut Ws, to: &mut Ws) {
        let payload = json!({"ok": true});
        send_json(
            from,
            json!({"type": "TASK_UPDATE", "projectId": "p", "payload": payload}),
        )
        .await;
        assert_eq!(expect_type(to, "TASK_UPDATE").await["payload"], payload);
    }

    /// Laptimes: a frame above the limit (64 KiB by default) closes that connection with 1009,
    /// both just above it (the hub's check) and far above it (the WebSocket layer's bound).
    pub async fn oversize_frame_closes_1009(addr: SocketAddr) {
        let (mut watcher, mut other) = (connect(addr, "/").await, connect(addr, "/").await);
        for size in [100_000, 300_000] {
            let mut big = connect(addr, "/").await;
            // The server may close before it has read the whole frame.
            let _ = big.send(Message::text("x".repeat(size))).await;
            assert_eq!(expect_close(&mut big).await, 1009, "{size} bytes");
        }
        let n = notice("after-oversize");
        other.send(Message::text(n.clone())).await.unwrap();
        assert_eq!(next_text(&mut watcher).await, n);
    }

    /// Laptimes: a binary frame closes that connection with 1003; others are unharmed.
    pub async fn binary_frame_closes_1003(addr: SocketAddr) {
        let (mut watcher, mut other, mut bin) = (
            connect(addr, "/").await,
            connect(addr, "/").await,
            connect(addr, "/").await,
        );
        bin.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(expect_close(&mut bin).await, 1003);
        let n = notice("after-binary");
        other.send(Message::text(n.clone())).await.unwrap();
        assert_eq!(next_text(&mut watcher).await, n);
    }

    /// Laptimes with a rate limit of 10/s, burst 20: a client sending 60 frames at once is
    /// closed with 1008; the others keep relaying.
    pub async fn flood_closes_flooder_only(addr: SocketAddr) {
        let (mut flooder, mut watcher, mut other) = (
            connect(addr, "/").await,
            connect(addr, "/").await,
            connect(addr, "/").await,
        );
        let n = notice("flood");
        for _ in 0..60 {
            // The server may close mid-flood; later sends may fail.
            if flooder.feed(Message::text(n.clone())).await.is_err() {
                break;
            }
        }
        let _ = flooder.flush().await;
        assert_eq!(expect_close(&mut flooder).await, 1008);
        let after = notice("after-flood");
        other.send(Message::text(after.clone())).await.unwrap();
        // The watcher got part of the flood first; then the other client's notice.
        let mut flood_frames = 0;
        loop {
            let got = next_text(&mut watcher).await;
            if got == after {
                break;
            }
            assert_eq!(got, n);
            flood_frames += 1;
        }
        assert!((1..=25).contains(&flood_frames), "{flood_frames}");
    }

    /// The rate of [`throttled_import_loses_nothing`]'s server.
    pub const THROTTLE_RATE: switchboard_hub::RateLimit = switchboard_hub::RateLimit {
        per_second: 400,
        burst: 50,
    };

    /// Laptimes with the inbound rate [`THROTTLE_RATE`] and the `throttle` policy: a client
    /// imports 1000 rows flat out. Every notice reaches the watcher, once and in order, and the
    /// sender stays connected; at no point has the server relayed more than
    /// burst + rate x elapsed (counted against the time since the first send, which is earlier
    /// than the server's first receipt, so the bound holds however loaded the machine is).
    pub async fn throttled_import_loses_nothing(addr: SocketAddr) {
        let (mut importer, mut watcher) = (connect(addr, "/").await, connect(addr, "/").await);
        const ROWS: usize = 1000;
        let rows: Vec<String> = (0..ROWS).map(|i| notice(&format!("row-{i}"))).collect();
        let start = Instant::now();
        let send = async {
            for row in &rows {
                importer.feed(Message::text(row.clone())).await.unwrap();
            }
            importer.flush().await.unwrap();
            importer
        };
        let receive = async {
            let mut got = 0;
            while got < ROWS {
                let text = tokio::time::timeout(WAIT, next_text(&mut watcher))
                    .await
                    .expect("the import keeps flowing");
                assert_eq!(text, rows[got], "row {got} arrives in order, once");
                got += 1;
                let elapsed = start.elapsed().as_secs_f64();
                let allowed =
                    f64::from(THROTTLE_RATE.burst) + f64::from(THROTTLE_RATE.per_second) * elapsed;
                assert!(
                    got as f64 <= allowed + 1.0,
                    "{got} relayed after {elapsed:.3} s: more than the bucket allows ({allowed:.1})"
                );
            }
            watcher
        };
        let (mut importer, mut watcher) = tokio::join!(send, receive);
        // Nothing more, and the importer is still connected and relaying.
        assert_quiet(&mut watcher).await;
        let after = notice("after-import");
        importer.send(Message::text(after.clone())).await.unwrap();
        assert_eq!(next_text(&mut watcher).await, after);
    }

    /// Laptimes with `max_queued_bytes` = 64 KiB: a client that never reads is closed by the
    /// server (4008, or its socket dropped) while a reading client receives every frame. Frames
    /// of 4 KiB are published through `hub` a few at a time (the reader keeps up) until the hub
    /// delivers to the reader alone, then a few more. The kernel's socket buffers take a few MB
    /// before the hub's queue fills (about 700 frames on Linux loopback), so the count is not fixed.
    pub async fn slow_consumer_is_closed(addr: SocketAddr, hub: &HubHandle) {
        let mut slow = connect_small_buffer(addr, "/").await;
        let mut reader = connect(addr, "/").await;
        let start = Instant::now();
        while hub.stats().await.unwrap().connections < 2 {
            assert!(start.elapsed() < WAIT, "both clients registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pad = "x".repeat(4096 - 40);
        let mut sent = 0u32;
        let mut closed_at = None;
        while closed_at.is_none_or(|at| sent < at + 8) {
            assert!(
                sent < 4000,
                "the slow client was never closed ({sent} frames)"
            );
            for _ in 0..4 {
                let frame = json!({"i": sent, "pad": pad}).to_string();
                let delivered = hub.publish(Publication::to_all(frame)).await.unwrap();
                if delivered < 2 && closed_at.is_none() {
                    closed_at = Some(sent);
                }
                assert!(delivered >= 1, "the reader missed frame {sent}");
                sent += 1;
            }
            for i in sent - 4..sent {
                assert_eq!(next_json(&mut reader).await["i"], i);
            }
        }
        assert!(sent >= 16, "closed after {sent} frames, below 64 KiB");
        // The slow client's stream ends: buffered frames, then a 4008 close or a dropped socket.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match slow.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code));
                        assert_eq!(code, Some(4008));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the slow client was not disconnected");
        let stats = hub.stats().await.unwrap();
        assert_eq!(stats.counters.slow_consumer_closes, 1);
        assert_eq!(stats.connections, 1);
    }

    /// Shutdown: connected clients get close 1001 and `stop` returns within the grace period.
    pub async fn shutdown_closes_with_1001<F>(addr: SocketAddr, stop: F)
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (mut a, mut b) = (connect(addr, "/").await, connect(addr, "/").await);
        // An error reply proves each connection is registered before shutdown starts.
        for ws in [&mut a, &mut b] {
            ws.send(Message::text("{}")).await.unwrap();
            expect_type(ws, "error").await;
        }
        let started = Instant::now();
        let stopping = tokio::spawn(stop);
        assert_eq!(expect_close(&mut a).await, 1001);
        assert_eq!(expect_close(&mut b).await, 1001);
        let grace = switchboard_runtime::system::SHUTDOWN_GRACE;
        tokio::time::timeout(grace + Duration::from_secs(1), stopping)
            .await
            .expect("shutdown returns within the grace period")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < grace, "took {:?}", started.elapsed());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }
}
