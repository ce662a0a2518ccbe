//! What the transport itself answers: handshake errors, `/health`, `/metrics`, 404, 413, and
//! several systems in one process sharing `/metrics`.

use std::net::SocketAddr;

use serde_json::json;
use switchboard_hub::Config;
use switchboard_runtime::Process;
use switchboard_server::app;
use switchboard_server::cli::{SystemRun, Transport};

use crate::support::{self, connect, expect_type, send_json};
use crate::{http, start};
use tokio_tungstenite::tungstenite::Message;

fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close, Upgrade\r\n{extra}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn bad_handshakes_are_refused_with_a_reason() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Upgrade: websocket\r\n";

    let no_key = http::raw(
        addr,
        &upgrade_request("/ws", &format!("{upgrade}Sec-WebSocket-Version: 13\r\n")),
    )
    .await;
    assert_eq!(no_key.status, 400);
    assert!(
        no_key.text().contains("Sec-WebSocket-Key"),
        "{}",
        no_key.text()
    );

    let old = http::raw(
        addr,
        &upgrade_request(
            "/ws",
            &format!("{upgrade}{key}Sec-WebSocket-Version: 8\r\n"),
        ),
    )
    .await;
    assert_eq!(old.status, 426);
    assert_eq!(old.header("sec-websocket-version"), Some("13"));

    let wrong_path = http::raw(
        addr,
        &upgrade_request(
            "/nope",
            &format!("{upgrade}{key}Sec-WebSocket-Version: 13\r\n"),
        ),
    )
    .await;
    assert_eq!(wrong_path.status, 404);
    assert_eq!(wrong_path.text(), "no WebSocket endpoint at /nope");

    let post = http::request(
        addr,
        "POST",
        "/ws",
        &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        b"",
    )
    .await;
    assert_eq!(post.status, 400);

    // `Connection: keep-alive, Upgrade` and a lower-case upgrade token are fine.
    let good = format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n");
    let ok = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        http::raw(addr, good.as_bytes()),
    )
    .await;
    // The socket stays open as a WebSocket, so reading to the end times out: that is success.
    assert!(ok.is_err(), "expected an upgraded socket, got {ok:?}");
    server.shutdown().await.unwrap();
}

/// permessage-deflate is not offered (docs/compression.md): a client that asks for it gets a
/// 101 without `Sec-WebSocket-Extensions`, so it sends and receives uncompressed frames, and its
/// messages are relayed as usual.
#[tokio::test]
async fn compression_is_not_negotiated() {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let mut other = support::connect(addr, "/").await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(support::WAIT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed inside the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    // The connection works uncompressed both ways.
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let n = support::notice("uncompressed");
    ws.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(support::next_text(&mut other).await, n);
    other.send(Message::text(n.clone())).await.unwrap();
    let got = tokio::time::timeout(support::WAIT, ws.next())
        .await
        .unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text(n));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn upgrade_answer_is_rfc_6455() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(support::WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // The RFC's own example key and answer.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_404_405_and_413() {
    let server = start("collab").await;
    let addr = server.local_addr();
    let r = http::get(addr, "/nope").await;
    assert_eq!((r.status, r.json()), (404, json!({"error": "not found"})));
    let r = http::post(addr, "/metrics", &[], "").await;
    assert_eq!(r.status, 405);
    let head = http::request(addr, "HEAD", "/metrics", &[], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let big = vec![b'x'; 1024 * 1024 + 1];
    let key = [("X-API-Key", support::API_KEY)];
    let r = http::request(addr, "POST", "/broadcast", &key, &big).await;
    assert_eq!(r.status, 413);
    // The same without a Content-Length: a chunked body is cut off at the limit.
    let mut chunked = format!("POST /broadcast HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n", support::API_KEY).into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&vec![b'x'; 64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(http::raw(addr, &chunked).await.status, 413);
    // Exactly at the limit the body reaches the protocol (which finds it is not JSON).
    let at_limit = vec![b' '; 1024 * 1024];
    let r = http::request(
        addr,
        "POST",
        "/broadcast",
        &[("X-API-Key", support::API_KEY)],
        &at_limit,
    )
    .await;
    assert_eq!(r.status, 400);
    server.shutdown().await.unwrap();
}

fn run(system: &str) -> SystemRun {
    SystemRun {
        spec: switchboard_protocol::system(system).unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        endpoint: support::endpoint(system),
        options: support::options(),
    }
}

#[tokio::test]
async fn metrics_cover_every_system_of_the_process() {
    let servers = app::start(
        &Process::default(),
        Transport::Hyper,
        vec![run("laptimes"), run("race"), run("collab")],
        Config::default(),
        None,
    )
    .await
    .unwrap();
    let (laptimes, race) = (servers[0].local_addr(), servers[1].local_addr());
    let mut ws = connect(race, "/ws").await;
    send_json(&mut ws, json!({"type": "warp"})).await;
    expect_type(&mut ws, "error").await;

    let text = http::get(laptimes, "/metrics").await.text();
    for system in ["laptimes", "race", "collab"] {
        assert!(
            text.contains(&format!(
                "switchboard_connections_opened_total{{system=\"{system}\"}}"
            )),
            "{system}: {text}"
        );
    }
    assert!(
        text.contains("switchboard_connections{system=\"race\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("switchboard_messages_in_total{system=\"race\"} 1\n"));
    assert!(
        text.contains("switchboard_errors_total{system=\"race\",kind=\"unknown_type\"} 1\n"),
        "{text}"
    );
    for family in [
        "switchboard_connections gauge",
        "switchboard_rooms gauge",
        "switchboard_queued_bytes gauge",
        "switchboard_connections_opened_total counter",
        "switchboard_connections_closed_total counter",
        "switchboard_messages_in_total counter",
        "switchboard_bytes_in_total counter",
        "switchboard_publications_total counter",
        "switchboard_deliveries_total counter",
        "switchboard_bytes_out_total counter",
        "switchboard_dropped_deliveries_total counter",
        "switchboard_slow_consumer_closes_total counter",
        "switchboard_idle_timeouts_total counter",
        "switchboard_errors_total counter",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }
    // A stopped system leaves the shared registry.
    let mut servers = servers;
    servers.remove(1).shutdown().await.unwrap();
    let text = http::get(laptimes, "/metrics").await.text();
    assert!(!text.contains("system=\"race\""), "{text}");
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn start_all_names_the_system_whose_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut race = run("race");
    race.addr = taken.local_addr().unwrap();
    let err = app::start(
        &Process::default(),
        Transport::Hyper,
        vec![run("laptimes"), race],
        Config::default(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string()
            .starts_with(&format!("race on {}", taken.local_addr().unwrap())),
        "{err}"
    );
}
