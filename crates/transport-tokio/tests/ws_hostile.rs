//! Hostile upgrades on the WebSocket-only server: malformed handshakes (bad keys, HTTP/1.0, no
//! or two `Host`s), two or non-ASCII `Origin`s, huge origins, and tokens that are not yet valid
//! or name the wrong key. Each is refused (nothing upgraded: a `400`/`403`, or for what
//! tungstenite refuses itself a close without an answer, or for tokens a close with 1008), is
//! counted, and the well-formed client beside it keeps working.

mod support;

use std::net::SocketAddr;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::{
    connect, expect_close, expect_type, jwt, next_text, notice, refused_status, send_json,
    try_connect, unix_in, Ws, ALLOWED_ORIGIN, JWT_SECRET, WAIT,
};
use switchboard_hub::Config;
use switchboard_runtime::{Endpoint, Process, System};
use switchboard_tokio::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

async fn start(endpoint: Endpoint) -> Server {
    start_in(&Process::default(), endpoint).await
}

async fn start_in(process: &Process, endpoint: Endpoint) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = System::start(
        endpoint,
        support::options(),
        Config::default(),
        process.clock.clone(),
        None,
    );
    switchboard_tokio::serve(process, listener, system).unwrap()
}

/// What the server answered a raw upgrade request: the status of its answer, or `None` when it
/// closed without one. It must never be `101`.
async fn answer(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        // Refused or not, the server closes: read to the end (a reset counts as the end).
        let _ = tcp.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("refused and closed in time: an upgraded socket would stay open");
    let status = String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok());
    assert_ne!(status, Some(101), "upgraded");
    status
}

fn upgrade(version: &str, headers: &str) -> Vec<u8> {
    format!(
        "GET / {version}\r\n{headers}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A laptimes pair that relays: proof the server still serves well-formed clients.
async fn relays(a: &mut Ws, b: &mut Ws, tag: &str) {
    let n = notice(tag);
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(b).await, n);
}

#[tokio::test]
async fn malformed_handshakes_are_not_upgraded() {
    let server = start(support::endpoint("laptimes")).await;
    let addr = server.local_addr();
    let (mut a, mut b) = (connect(addr, "/").await, connect(addr, "/").await);
    let host = "Host: x\r\n";
    // What the gate refuses (400, with a reason).
    let gated = [
        ("no Host", upgrade("HTTP/1.1", KEY)),
        (
            "two Hosts",
            upgrade("HTTP/1.1", &format!("Host: x\r\nHost: y\r\n{KEY}")),
        ),
        (
            "two keys",
            upgrade("HTTP/1.1", &format!("{host}{KEY}{KEY}")),
        ),
    ];
    for (what, request) in &gated {
        assert_eq!(answer(addr, request).await, Some(400), "{what}");
    }
    // What tungstenite refuses itself, closing without an answer (or with one): not upgraded.
    let mut own = vec![("HTTP/1.0", upgrade("HTTP/1.0", &format!("{host}{KEY}")))];
    own.push(("no key", upgrade("HTTP/1.1", host)));
    for key in [
        "x",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25j!Q==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "dGhlIHNhbXBsZSBub25jZB==",
        "",
    ] {
        let headers = format!("{host}Sec-WebSocket-Key: {key}\r\n");
        own.push(("a bad key", upgrade("HTTP/1.1", &headers)));
    }
    for (what, request) in &own {
        let status = answer(addr, request).await;
        assert!(status.is_none_or(|s| s >= 400), "{what}: {status:?}");
        relays(&mut a, &mut b, what).await;
    }
    relays(&mut b, &mut a, "after-malformed-handshakes").await;
    let counted = (gated.len() + own.len()) as u64;
    assert_eq!(
        server.system().refusals().get("upgrade", "handshake"),
        counted
    );
    drop((a, b));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_and_refused_origins_are_not_upgraded() {
    let server = start(support::endpoint("collab")).await;
    let addr = server.local_addr();
    let mut member = connect(addr, "/ws").await;
    expect_type(&mut member, "CONNECTION_ESTABLISHED").await;
    let good = format!("Host: x\r\n{KEY}");
    let malformed: [&[u8]; 4] = [
        b"Origin: http://localhost:3000\r\nOrigin: http://localhost:3000\r\n",
        b"Origin: http://localhost:3000\r\nOrigin: http://evil.example\r\n",
        "Origin: http://\u{e9}vil.example\r\n".as_bytes(),
        b"Origin: http://localhost:3000\xff\r\n",
    ];
    for origin in malformed {
        let mut request = good.clone().into_bytes();
        request.extend_from_slice(origin);
        let request = [
            b"GET /ws HTTP/1.1\r\n".as_slice(),
            &request,
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ]
        .concat();
        let shown = String::from_utf8_lossy(origin);
        assert_eq!(answer(addr, &request).await, Some(400), "{shown}");
    }
    let huge = format!("http://{}.example", "a".repeat(60_000));
    for origin in [
        "http://evil.example",
        "null",
        "http://localhost:3000.evil.example",
        &huge,
    ] {
        let refused = try_connect(addr, "/ws", &[("origin", origin)]).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 403);
                let body = resp.body().as_deref().unwrap_or_default();
                assert!(body.len() < 512, "{} bytes", body.len());
            }
            other => panic!(
                "{:.80}: expected 403, got {:?}",
                origin,
                other.map(|_| "101")
            ),
        }
    }
    // Allowed, with or without a trailing slash.
    for origin in [ALLOWED_ORIGIN, "http://localhost:3000/"] {
        let mut ws = try_connect(addr, "/ws", &[("origin", origin)])
            .await
            .unwrap();
        expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
    }
    // The member is unharmed.
    send_json(
        &mut member,
        json!({"type": "JOIN_PROJECT", "projectId": "p"}),
    )
    .await;
    expect_type(&mut member, "USER_PRESENCE").await;
    assert_eq!(server.system().refusals().get("upgrade", "origin"), 8);
    drop(member);
    server.shutdown().await.unwrap();
}

/// An HS256 token over `claims` signed with `secret`, naming `kid` if given.
fn jwt_with_kid(claims: &Value, secret: &str, kid: Option<&str>) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_not_yet_valid_or_for_another_key_are_closed_1008() {
    let mut endpoint = support::endpoint("dcdock");
    endpoint
        .jwt
        .add_list("old:old-secret,new:new-secret")
        .unwrap();
    let server = start(endpoint).await;
    let addr = server.local_addr();
    let (mut bystander, _) = support::dcdock_client(addr, 1).await;
    let claims = |nbf: Option<i64>| {
        let mut c = json!({"sub": "7", "exp": unix_in(600)});
        if let Some(nbf) = nbf {
            c["nbf"] = json!(unix_in(nbf));
        }
        c
    };
    let plain = claims(None);
    let cases = [
        (
            "nbf an hour ahead",
            jwt(claims(Some(3600)), JWT_SECRET),
            false,
        ),
        ("nbf 60 s ahead", jwt(claims(Some(60)), JWT_SECRET), false),
        (
            "nbf within the leeway",
            jwt(claims(Some(2)), JWT_SECRET),
            true,
        ),
        ("nbf passed", jwt(claims(Some(-60)), JWT_SECRET), true),
        (
            "kid new, new key",
            jwt_with_kid(&plain, "new-secret", Some("new")),
            true,
        ),
        (
            "kid new, old key",
            jwt_with_kid(&plain, "old-secret", Some("new")),
            false,
        ),
        (
            "unknown kid",
            jwt_with_kid(&plain, "new-secret", Some("nope")),
            false,
        ),
        (
            "no kid, a named key",
            jwt_with_kid(&plain, "old-secret", None),
            true,
        ),
        (
            "no kid, an unknown key",
            jwt_with_kid(&plain, "other", None),
            false,
        ),
    ];
    let mut refused = 0;
    for (what, token, accepted) in cases {
        let mut ws = connect(addr, &format!("/api/ws?token={token}")).await;
        if accepted {
            expect_type(&mut ws, "connection_ack").await;
        } else {
            assert_eq!(expect_close(&mut ws).await, 1008, "{what}");
            refused += 1;
        }
    }
    send_json(&mut bystander, json!({"type": "ping"})).await;
    expect_type(&mut bystander, "pong").await;
    assert_eq!(server.system().refusals().get("upgrade", "token"), refused);
    drop(bystander);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_upgrades_leave_the_budget_as_they_found_it() {
    // A budget of 3 sockets: 40 refused upgrades must each give their place back.
    let admission = switchboard_runtime::admission::Admission::new(3, None);
    let process = Process {
        admission: admission.clone(),
        ..Process::default()
    };
    let server = start_in(&process, support::endpoint("collab")).await;
    let addr = server.local_addr();
    for _ in 0..20 {
        let refused = try_connect(addr, "/ws", &[("origin", "http://evil.example")]).await;
        assert_eq!(refused_status(refused), 403);
        answer(addr, &upgrade("HTTP/1.0", &format!("Host: x\r\n{KEY}"))).await;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        // A refused socket's place comes back once its task ends.
        let ws = loop {
            match try_connect(addr, "/ws", &[]).await {
                Ok(ws) => break ws,
                Err(e) => assert_eq!(refused_status(Err(e)), 503),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        held.push(ws);
    }
    assert_eq!(admission.open(), 3);
    assert_eq!(refused_status(try_connect(addr, "/ws", &[]).await), 503);
    drop(held);
    server.shutdown().await.unwrap();
}
