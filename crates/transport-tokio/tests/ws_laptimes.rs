//! End to end over real sockets: the laptimes relay on the WebSocket-only transport.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_runtime::{Endpoint, Process, System};
use switchboard_tokio::Server;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = switchboard_protocol::system("laptimes").unwrap();
    let process = Process::default();
    let system = System::start(
        Endpoint::from_env(spec),
        Default::default(),
        Default::default(),
        process.clock.clone(),
        None,
    );
    switchboard_tokio::serve(&process, listener, system).unwrap()
}

async fn connect(server: &Server) -> Ws {
    let url = format!("ws://{}/", server.local_addr());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("stream open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn assert_quiet(ws: &mut Ws) {
    let r = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(r.is_err(), "expected no frame, got {r:?}");
}

#[tokio::test]
async fn relay_reaches_others_not_sender() {
    let server = start().await;
    let (mut a, mut b, mut c) = (
        connect(&server).await,
        connect(&server).await,
        connect(&server).await,
    );
    let notice = r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z"}"#;
    a.send(Message::text(notice)).await.unwrap();
    assert_eq!(next_text(&mut b).await, notice);
    assert_eq!(next_text(&mut c).await, notice);
    assert_quiet(&mut a).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let server = start().await;
    let mut a = connect(&server).await;
    // Make sure the connection is registered before shutting down.
    a.send(Message::text("{}")).await.unwrap();
    let _ = next_text(&mut a).await;
    let stop = tokio::spawn(server.shutdown());
    let msg = tokio::time::timeout(Duration::from_secs(5), a.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match msg {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    stop.await.unwrap().unwrap();
}

/// With two workers and more than 2 x 256 recipients, the hub task hands half of each fan-out's
/// writes to the other worker (`driver::PARALLEL_SHARE`): every client still gets every notice,
/// in order, and the hub's queue accounting ends at zero (nothing counted twice or lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_split_over_workers_delivers_everything_in_order() {
    let server = start().await;
    let mut clients = Vec::new();
    for _ in 0..600 {
        clients.push(connect(&server).await);
    }
    let mut publisher = connect(&server).await;
    for i in 0..20 {
        let notice = format!(r#"{{"table":"t{i}","operation":"CHANGE","timestamp":"x"}}"#);
        publisher.send(Message::text(notice)).await.unwrap();
    }
    let readers = clients.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            for i in 0..20 {
                let text = next_text(&mut ws).await;
                assert!(
                    text.contains(&format!(r#""t{i}""#)),
                    "notice {i} in order: {text}"
                );
            }
            ws
        })
    });
    let clients = futures_util::future::join_all(readers).await;
    assert!(
        clients.iter().all(Result::is_ok),
        "every client got all 20 notices"
    );
    assert_quiet(&mut publisher).await;
    let stats = server.hub().stats().await.unwrap();
    assert_eq!(stats.counters.deliveries, 600 * 20);
    assert_eq!(
        stats.queued_bytes, 0,
        "every written byte was reported once"
    );
}

/// Several publishers at once into a fan-out long enough that the hub task takes new input in
/// the middle of writing it (every `GATHER` writes, on one worker as a pinned server runs): a
/// notice read meanwhile joins the queues of the sockets not written yet and is written to the
/// others after them. Every client still gets every notice once, each publisher's in its order,
/// and the hub's queue accounting ends at zero.
#[tokio::test]
async fn notices_taken_during_a_long_fan_out_reach_everyone_once_in_order() {
    const PUBLISHERS: usize = 4;
    const NOTICES: usize = 30;
    const SUBSCRIBERS: usize = 400;
    let server = start().await;
    let mut clients = Vec::new();
    for _ in 0..SUBSCRIBERS {
        clients.push(connect(&server).await);
    }
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(connect(&server).await);
    }
    // What one reader must see: `expected` notices, each publisher's numbered 0, 1, 2, ...
    async fn read_all(mut ws: Ws, expected: usize, skip: Option<usize>) -> Ws {
        let mut next = [0usize; PUBLISHERS];
        for _ in 0..expected {
            let text = next_text(&mut ws).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let (p, n) = v["table"].as_str().unwrap().split_once('-').unwrap();
            let (p, n): (usize, usize) = (p.parse().unwrap(), n.parse().unwrap());
            assert_ne!(Some(p), skip, "a publisher does not get its own notice");
            assert_eq!(n, next[p], "publisher {p}'s notices in order, once each");
            next[p] += 1;
        }
        ws
    }
    let mut senders = Vec::new();
    for (p, mut ws) in publishers.into_iter().enumerate() {
        senders.push(tokio::spawn(async move {
            for n in 0..NOTICES {
                let notice =
                    format!(r#"{{"table":"{p}-{n}","operation":"CHANGE","timestamp":"x"}}"#);
                ws.send(Message::text(notice)).await.unwrap();
            }
            read_all(ws, (PUBLISHERS - 1) * NOTICES, Some(p)).await
        }));
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|ws| tokio::spawn(read_all(ws, PUBLISHERS * NOTICES, None)))
        .collect();
    let mut open = Vec::new();
    for task in senders.into_iter().chain(readers) {
        open.push(task.await.expect("every client got every notice in order"));
    }
    futures_util::future::join_all(open.iter_mut().map(assert_quiet)).await;
    let stats = server.hub().stats().await.unwrap();
    let deliveries = SUBSCRIBERS * PUBLISHERS * NOTICES + PUBLISHERS * (PUBLISHERS - 1) * NOTICES;
    assert_eq!(stats.counters.deliveries, deliveries as u64);
    assert_eq!(
        stats.queued_bytes, 0,
        "every written byte was reported once"
    );
}

/// Frames the hub stages for a connection go out before the close it then gives that
/// connection. A fan-out to at least 64 sockets lets the readers' and the API's input in before
/// it writes anything: a close of every connection taken then finds each one's notice staged,
/// and each client reads the notice, then the close frame, not the close alone.
#[tokio::test]
async fn a_close_right_after_a_fan_out_goes_after_its_frames() {
    const CLIENTS: usize = 80;
    let server = start().await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&server).await);
    }
    let hub = server.hub();
    while hub.stats().await.unwrap().connections < CLIENTS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let notice = r#"{"table":"last","operation":"CHANGE","timestamp":"x"}"#;
    let reached = hub
        .publish(switchboard_hub::Publication::to_all(notice))
        .await
        .unwrap();
    assert_eq!(reached, CLIENTS);
    // The publication was applied; the hub task is about to stage and write its frames.
    hub.close_all(switchboard_hub::CloseCode(4000), "closing")
        .await
        .unwrap();
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(next_text(ws).await, notice, "client {i}: the notice first");
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 4000, "client {i}")
            }
            other => panic!("client {i}: expected the close frame, got {other:?}"),
        }
    }
}
