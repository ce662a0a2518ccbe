//! The drain: `/ready` fails first, the node keeps serving for the ready delay, then its
//! WebSocket clients are closed with 1012 spread over the window, and the process exits 0. The
//! binary is run as a real process and sent real signals; timings are asserted as spread and
//! as lower bounds only (the machine is shared and noisy).

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_runtime::drain::RESTART_REASON;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{connect, next_text, notice, Ws, WAIT};
use crate::{http, start};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The `switchboard` binary running one system on a port the kernel chose.
struct Node {
    child: Child,
    addr: SocketAddr,
    /// Its log lines, kept for failure messages (stderr is read throughout, so the process
    /// never blocks on a full pipe).
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Start the binary with `args` (laptimes on port 0, JSON logs) and read its address from
    /// its `listening` log line.
    async fn start(args: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args([
                "--systems",
                "laptimes",
                "--bind",
                "127.0.0.1",
                "--laptimes-port",
                "0",
            ])
            .args(["--log-format", "json"])
            .args(args)
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the switchboard binary");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().expect("a listening line");
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line.clone());
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "listening" {
                    let addr = v["fields"]["addr"].as_str().expect("an address");
                    break addr.parse::<SocketAddr>().expect("a socket address");
                }
            }
        })
        .await
        .expect("the binary listens");
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Node { child, addr, log }
    }

    async fn sigterm(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Its exit status, waiting at most `within`.
    async fn exit(mut self, within: Duration) -> (ExitStatus, String) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within {within:?}"))
            .unwrap();
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        (status, log.join("\n"))
    }
}

/// A laptimes client the hub has registered (a bad frame got its error reply).
async fn registered(addr: SocketAddr) -> Ws {
    let mut ws = connect(addr, "/").await;
    ws.send(Message::text("{}")).await.unwrap();
    next_text(&mut ws).await;
    ws
}

/// How a client's connection ended: when its close frame arrived, its code and reason.
#[derive(Debug)]
struct Closed {
    at: Instant,
    code: u16,
    reason: String,
}

/// Read `ws` until the server's close frame (everything before it is skipped), counting it in
/// `count`.
async fn until_closed(mut ws: Ws, count: Arc<AtomicUsize>) -> Closed {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                count.fetch_add(1, Ordering::SeqCst);
                return Closed {
                    at: Instant::now(),
                    code: u16::from(frame.code),
                    reason: frame.reason.to_string(),
                };
            }
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            None => panic!("the stream ended without a close frame"),
        }
    }
}

/// Every client's close, waiting at most `within`.
async fn all_closed(clients: &mut JoinSet<Closed>, within: Duration) -> Vec<Closed> {
    let mut closed = Vec::new();
    tokio::time::timeout(within, async {
        while let Some(c) = clients.join_next().await {
            closed.push(c.expect("the client task"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("every client closed within {within:?}"));
    closed
}

#[tokio::test]
async fn sigterm_fails_ready_then_closes_with_1012_spread_over_the_window() {
    const CLIENTS: usize = 40;
    const READY_DELAY: Duration = Duration::from_secs(3);
    const WINDOW: Duration = Duration::from_secs(2);
    let node = Node::start(&["--drain-ready-delay-secs", "3", "--drain-window-secs", "2"]).await;
    let addr = node.addr;
    let ready = http::get(addr, "/ready").await;
    assert_eq!((ready.status, ready.json()), (200, json!({"ready": true})));

    let closes = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let ws = registered(addr).await;
        clients.spawn(until_closed(ws, closes.clone()));
    }

    let term = Instant::now();
    node.sigterm().await;
    // `/ready` fails at once, while every client is still connected and `/health` is fine.
    let ready = loop {
        let r = http::get(addr, "/ready").await;
        if r.status != 200 {
            break r;
        }
        assert!(term.elapsed() < WAIT, "/ready still 200 after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (ready.status, ready.json()),
        (503, json!({"ready": false, "reason": "draining"}))
    );
    assert_eq!(closes.load(Ordering::SeqCst), 0, "closed before the delay");
    assert_eq!(http::get(addr, "/health").await.status, 200);
    // During the ready delay the node still accepts and relays.
    let mut a = registered(addr).await;
    let mut b = registered(addr).await;
    let n = notice("times");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut b).await, n);
    clients.spawn(until_closed(a, closes.clone()));
    clients.spawn(until_closed(b, closes.clone()));

    let closed = all_closed(&mut clients, READY_DELAY + WINDOW + WAIT * 2).await;
    assert_eq!(closed.len(), CLIENTS + 2);
    for c in &closed {
        assert_eq!((c.code, c.reason.as_str()), (1012, RESTART_REASON), "{c:?}");
    }
    let first = closed.iter().map(|c| c.at).min().unwrap();
    let last = closed.iter().map(|c| c.at).max().unwrap();
    // Nothing closes before the ready delay is over (a lower bound: it holds however slow).
    assert!(
        first - term >= READY_DELAY - Duration::from_millis(20),
        "first close {:?} after SIGTERM",
        first - term
    );
    // Spread over the window: 42 uniform instants in 2 s span well over 0.8 s and fall into
    // many 100 ms slots (all in one would be a burst).
    let span = last - first;
    let mut slots: Vec<u128> = closed
        .iter()
        .map(|c| (c.at - first).as_millis() / 100)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    println!(
        "closes: {} over {span:?}, in {} of the window's 100 ms slots, first {:?} after SIGTERM",
        closed.len(),
        slots.len(),
        first - term
    );
    assert!(
        span >= Duration::from_millis(800),
        "closes span only {span:?}"
    );
    assert!(
        slots.len() >= 5,
        "closes in only {} 100 ms slots",
        slots.len()
    );

    let (status, log) = node.exit(WAIT * 2).await;
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("closing connections for a restart"), "{log}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_second_sigterm_closes_the_rest_at_once() {
    const CLIENTS: usize = 20;
    let node = Node::start(&[
        "--drain-ready-delay-secs",
        "0",
        "--drain-window-secs",
        "600",
    ])
    .await;
    let addr = node.addr;
    let closes = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let ws = registered(addr).await;
        clients.spawn(until_closed(ws, closes.clone()));
    }
    node.sigterm().await;
    // The drain has begun once the listener is closed; only then the second signal.
    let term = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(term.elapsed() < WAIT, "still accepting after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.sigterm().await;
    // A 600 s window, cut short: every client is closed and the process exits long before.
    let closed = all_closed(&mut clients, Duration::from_secs(60)).await;
    assert_eq!(closed.len(), CLIENTS);
    for c in &closed {
        assert_eq!((c.code, c.reason.as_str()), (1012, RESTART_REASON), "{c:?}");
    }
    let (status, log) = node.exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("closing every connection left at once"),
        "{log}"
    );
}

#[tokio::test]
async fn ready_answers_503_once_a_drain_began_and_serving_goes_on() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let r = http::get(addr, "/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"ready": true}));
    let head = http::request(addr, "HEAD", "/ready", &[], b"").await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    let post = http::post(addr, "/ready", &[], "").await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );

    let mut before = registered(addr).await;
    server.system().begin_drain(Duration::from_millis(300));
    let r = http::get(addr, "/ready").await;
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"ready": false, "reason": "draining"}))
    );
    assert_eq!(http::get(addr, "/health").await.status, 200);
    // Not ready is not refusing: a new client is still served.
    let mut after = registered(addr).await;
    let n = notice("times");
    after.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut before).await, n);

    let count = Arc::new(AtomicUsize::new(0));
    let stopping = tokio::spawn(server.shutdown());
    for ws in [before, after] {
        let c = until_closed(ws, count.clone()).await;
        assert_eq!((c.code, c.reason.as_str()), (1012, RESTART_REASON));
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_drain_cut_short_closes_the_rest_at_once() {
    let server = start("laptimes").await;
    let addr = server.local_addr();
    let count = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let ws = registered(addr).await;
        clients.spawn(until_closed(ws, count.clone()));
    }
    let system = server.system().clone();
    system.begin_drain(Duration::from_secs(600));
    let stopping = tokio::spawn(server.shutdown());
    // The listener closes when the drain starts closing; then cut it short.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(started.elapsed() < WAIT, "still accepting after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.close_rest_now();
    let closed = all_closed(&mut clients, Duration::from_secs(60)).await;
    assert_eq!(closed.len(), 10);
    assert!(closed.iter().all(|c| c.code == 1012), "{closed:?}");
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .expect("shutdown returns once the drain is cut short")
        .unwrap()
        .unwrap();
}
