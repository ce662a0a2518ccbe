//! Hostile input against the full server, by class: request bodies, identifiers and status pages,
//! control-frame floods, the socket budget, cross-site requests, malformed `Origin`s, JWT `nbf`
//! and `kid`, malformed upgrades, `405`, and JSON the documents do not allow. Each test tries
//! several inputs of its class and asserts the exact status or close code, that the offender
//! alone is affected (a well-formed client next to it keeps working and receives nothing from
//! the refused request), and the refusal counters in `/metrics`.
//!
//! Each test runs its own server in its own [`Process`], so the counters it reads are its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_hub::{Config, RateLimit, RatePolicy};
use switchboard_hyper::Server;
use switchboard_protocol::Options;
use switchboard_runtime::admission::Admission;
use switchboard_runtime::http::HttpLimits;
use switchboard_runtime::{Endpoint, Process, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{self, Reply};
use crate::support::{
    self, assert_quiet, connect, dcdock_client, expect_close, expect_type, jwt, next_json,
    next_text, notice, refused_status, send_json, try_connect, unix_in, Ws, ALLOWED_ORIGIN,
    API_KEY, JWT_SECRET, WAIT,
};

/// A process of its own: fresh metrics, `admission` and `http` limits.
pub fn fresh_process(http: HttpLimits, admission: Arc<Admission>) -> Process {
    Process {
        admission,
        http,
        ..Process::default()
    }
}

/// HTTP limits with the publish rates off (tests that count requests set their own).
pub fn limits() -> HttpLimits {
    HttpLimits {
        publish_rate_per_ip: None,
        publish_rate_per_key: None,
        ..HttpLimits::default()
    }
}

/// `endpoint` on a free port of 127.0.0.1, in `process`.
pub async fn serve(
    process: &Process,
    endpoint: Endpoint,
    config: Config,
    options: &Options,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = System::start(
        endpoint,
        options.clone(),
        config,
        process.clock.clone(),
        None,
    );
    switchboard_hyper::serve(process, listener, system).unwrap()
}

/// `system` with the test endpoint and options, default hub limits, in `process`.
pub async fn serve_system(process: &Process, system: &str) -> Server {
    let options = support::options();
    serve(
        process,
        support::endpoint(system),
        Config::default(),
        &options,
    )
    .await
}

/// `switchboard_refused_total{system, kind, reason}` in a `/metrics` text (0 when absent).
pub fn refusal_count(metrics: &str, system: &str, kind: &str, reason: &str) -> u64 {
    let prefix = format!(
        "switchboard_refused_total{{system=\"{system}\",kind=\"{kind}\",reason=\"{reason}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// Every `switchboard_refused_total` line of `system`, as (kind, reason, count).
pub fn refusals(metrics: &str, system: &str) -> Vec<(String, String, u64)> {
    let prefix = format!("switchboard_refused_total{{system=\"{system}\",kind=\"");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (kind, rest) = rest.split_once("\",reason=\"").expect("a reason label");
            let (reason, n) = rest.split_once("\"} ").expect("a count");
            (kind.to_string(), reason.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// The `/metrics` text of the process `addr` belongs to.
pub async fn metrics(addr: SocketAddr) -> String {
    let r = http::get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    r.text()
}

/// Assert that `system` refused exactly `expected` (kind, reason, count), nothing else.
pub async fn assert_refusals(addr: SocketAddr, system: &str, expected: &[(&str, &str, u64)]) {
    let text = metrics(addr).await;
    let mut got = refusals(&text, system);
    got.sort();
    let mut want: Vec<_> = expected
        .iter()
        .map(|(k, r, n)| (k.to_string(), r.to_string(), *n))
        .collect();
    want.sort();
    assert_eq!(got, want, "refusals of {system}");
}

/// Parse a response head (and whatever of the body came with it).
pub fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}

/// Read one response (its head and `Content-Length` bytes of body) from `tcp`, which may stay
/// open afterwards (keep-alive).
pub async fn read_one(tcp: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(reply) = parse_reply(&buf) {
                let len: usize = reply
                    .header("content-length")
                    .map_or(0, |n| n.parse().unwrap());
                if reply.body.len() >= len {
                    return reply;
                }
            }
            let mut piece = [0u8; 4096];
            let n = tcp.read(&mut piece).await.unwrap_or(0);
            assert!(
                n > 0,
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&piece[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer in time")
}

/// Send `request` on a new connection and read one response.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_one(&mut tcp).await
}

/// Connect from `local` (e.g. 127.0.0.2) to `addr`.
pub async fn connect_from(local: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connected in time")
        .unwrap()
}

/// What a slow sender saw: the answer, and how many body bytes it had sent when the answer's
/// head arrived.
#[derive(Debug)]
pub struct Trickled {
    pub reply: Reply,
    pub body_bytes_sent: usize,
}

/// Send `head` over `tcp`, then the body `chunk` bytes every 100 ms (never more than
/// `body_len`), until the response's head arrives or `within` passes; the answer is read
/// while the body is still being sent.
pub async fn trickle_on(
    tcp: TcpStream,
    head: &str,
    chunk: &[u8],
    body_len: usize,
    within: Duration,
) -> Trickled {
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let mut sent = 0;
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut writable = true;
    let work = async {
        loop {
            let mut piece = [0u8; 4096];
            tokio::select! {
                n = rd.read(&mut piece) => {
                    let n = n.unwrap_or(0);
                    buf.extend_from_slice(&piece[..n]);
                    if let Some(reply) = parse_reply(&buf) {
                        return reply;
                    }
                    assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&buf));
                }
                _ = tick.tick(), if writable => {
                    let n = chunk.len().min(body_len - sent);
                    // The server may stop reading (or close) once it has answered.
                    if n == 0 || wr.write_all(&chunk[..n]).await.is_err() {
                        writable = false;
                    } else {
                        sent += n;
                    }
                }
            }
        }
    };
    let reply = tokio::time::timeout(within, work)
        .await
        .expect("an answer in time");
    Trickled {
        reply,
        body_bytes_sent: sent,
    }
}

/// [`trickle_on`] over a new connection to `addr`, 4 bytes every 100 ms.
pub async fn trickle(addr: SocketAddr, head: &str, body_len: usize, within: Duration) -> Trickled {
    let tcp = TcpStream::connect(addr).await.unwrap();
    trickle_on(tcp, head, b"    ", body_len, within).await
}

/// A `POST` head (HTTP/1.1, `Connection: close`) with `headers`.
pub fn post_head(path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A collab client that has joined `project` (its presence frame read).
async fn member(addr: SocketAddr, project: &str) -> Ws {
    let mut ws = connect(addr, "/ws").await;
    expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
    send_json(
        &mut ws,
        json!({"type": "JOIN_PROJECT", "projectId": project}),
    )
    .await;
    expect_type(&mut ws, "USER_PRESENCE").await;
    ws
}

/// A `/broadcast` body for project `p1`, tagged `tag`, padded with spaces to `len` bytes.
fn broadcast_body(tag: &str, len: usize) -> Vec<u8> {
    let mut body =
        json!({"type": "TASK_CREATE", "projectId": "p1", "payload": {"tag": tag}}).to_string();
    assert!(body.len() <= len);
    body.push_str(&" ".repeat(len - body.len()));
    body.into_bytes()
}

/// The next frame `ws` gets is a `TASK_CREATE` tagged `tag`.
async fn expect_broadcast(ws: &mut Ws, tag: &str) {
    let got = expect_type(ws, "TASK_CREATE").await;
    assert_eq!(got["payload"]["tag"], tag, "{got}");
}

// ---------------------------------------------------------------------------------------------
// 1. Bodies: judged from the head; 401 with the body unread; 413; 408; 503; 429.

const BODY_LIMIT: usize = 4096;

fn small_bodies() -> HttpLimits {
    HttpLimits {
        max_body_bytes: BODY_LIMIT,
        max_buffered_body_bytes: BODY_LIMIT + BODY_LIMIT / 2,
        body_timeout: Duration::from_secs(1),
        ..limits()
    }
}

#[tokio::test]
async fn a_wrong_key_is_401_before_the_body_is_read() {
    let process = fresh_process(small_bodies(), Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let mib = (1 << 20).to_string();
    let heads = [
        // A 1 MiB body declared (above the limit too: the key is judged first), sent slowly.
        post_head(
            "/broadcast",
            &[("X-API-Key", "wrong"), ("Content-Length", &mib)],
        ),
        // No key at all.
        post_head("/broadcast", &[("Content-Length", &mib)]),
        // A chunked body that never ends.
        post_head(
            "/broadcast",
            &[
                ("Authorization", "Bearer wrong"),
                ("Transfer-Encoding", "chunked"),
            ],
        ),
        // A client that waits for `100 Continue` gets the 401 instead.
        post_head(
            "/broadcast",
            &[
                ("X-API-Key", "wrong"),
                ("Content-Length", &mib),
                ("Expect", "100-continue"),
            ],
        ),
    ];
    for head in &heads {
        let t = trickle(addr, head, 1 << 20, WAIT).await;
        assert_eq!(t.reply.status, 401, "{head}");
        assert_eq!(t.reply.header("www-authenticate"), Some("Bearer"));
        assert!(
            t.body_bytes_sent < 1024,
            "{} bytes sent first",
            t.body_bytes_sent
        );
    }
    // The member got nothing; a good broadcast still reaches it.
    assert_quiet(&mut m).await;
    let r = http::request(
        addr,
        "POST",
        "/broadcast",
        &[("X-API-Key", API_KEY)],
        &broadcast_body("ok", 100),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_broadcast(&mut m, "ok").await;
    assert_refusals(addr, "collab", &[("http", "401", 4)]).await;
    drop(m);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bodies_above_the_limit_are_413_and_at_the_limit_are_served() {
    let process = fresh_process(small_bodies(), Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let key = ("X-API-Key", API_KEY);

    // Declared one byte above: refused from the head, nothing of the body sent.
    let over = (BODY_LIMIT + 1).to_string();
    let head = post_head("/broadcast", &[key, ("Content-Length", &over)]);
    let t = trickle(addr, &head, BODY_LIMIT + 1, WAIT).await;
    assert_eq!(t.reply.status, 413);
    assert!(t.body_bytes_sent < 100, "{}", t.body_bytes_sent);
    // Declared far above.
    let head = post_head("/broadcast", &[key, ("Content-Length", "99999999999")]);
    assert_eq!(http::raw(addr, head.as_bytes()).await.status, 413);
    // Streamed (chunked) one byte above the limit, in small chunks.
    let mut chunked =
        post_head("/broadcast", &[key, ("Transfer-Encoding", "chunked")]).into_bytes();
    let body = broadcast_body("over", BODY_LIMIT + 1);
    for piece in body.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(http::raw(addr, &chunked).await.status, 413);
    assert_quiet(&mut m).await;

    // Exactly at the limit, declared and chunked: served.
    let r = http::request(
        addr,
        "POST",
        "/broadcast",
        &[key],
        &broadcast_body("at", BODY_LIMIT),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_broadcast(&mut m, "at").await;
    let mut chunked =
        post_head("/broadcast", &[key, ("Transfer-Encoding", "chunked")]).into_bytes();
    let body = broadcast_body("at-chunked", BODY_LIMIT);
    for piece in body.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = http::raw(addr, &chunked).await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_broadcast(&mut m, "at-chunked").await;
    assert_quiet(&mut m).await;
    assert_refusals(addr, "collab", &[("http", "413", 3)]).await;
    drop(m);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_not_complete_within_the_timeout_is_408() {
    let http = HttpLimits {
        max_buffered_body_bytes: 4 * BODY_LIMIT,
        ..small_bodies()
    };
    let process = fresh_process(http, Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let key = ("X-API-Key", API_KEY);
    let declared = BODY_LIMIT.to_string();
    let heads = [
        // Declared, sent 4 bytes every 100 ms: far too slow.
        post_head("/broadcast", &[key, ("Content-Length", &declared)]),
        // Chunked, never finished.
        post_head("/broadcast", &[key, ("Transfer-Encoding", "chunked")]),
    ];
    let slow = heads.iter().map(|head| async move {
        let chunk: &[u8] = if head.contains("chunked") {
            b"1\r\n \r\n"
        } else {
            b"    "
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        trickle_on(tcp, head, chunk, BODY_LIMIT, WAIT).await
    });
    // Declared and never sent at all.
    let silent = async {
        let head = post_head("/broadcast", &[key, ("Content-Length", &declared)]);
        http::raw(addr, head.as_bytes()).await
    };
    let (slow, silent) = tokio::join!(futures_util::future::join_all(slow), silent);
    for t in &slow {
        assert_eq!(t.reply.status, 408);
        assert!(t.body_bytes_sent < BODY_LIMIT);
    }
    assert_eq!(silent.status, 408);
    // Nothing reached the member, and the server still takes a prompt body.
    assert_quiet(&mut m).await;
    let r = http::request(
        addr,
        "POST",
        "/broadcast",
        &[key],
        &broadcast_body("ok", 200),
    )
    .await;
    assert_eq!(r.status, 200);
    expect_broadcast(&mut m, "ok").await;
    assert_refusals(addr, "collab", &[("http", "408", 3)]).await;
    drop(m);
    server.shutdown().await.unwrap();
}

/// A request refused from its head leaves its body unread; those bytes must never be taken
/// for the next request on the connection (which would let a body smuggle a request past the
/// checks). Each case gets exactly one answer, the member nothing.
/// (path, headers, the status refusing it).
type UnreadCase = (&'static str, &'static [(&'static str, &'static str)], u16);

#[tokio::test]
async fn an_unread_body_is_never_taken_for_the_next_request() {
    let process = fresh_process(small_bodies(), Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let inner = String::from_utf8(broadcast_body("smuggled", 200)).unwrap();
    let inner = format!(
        "POST /broadcast HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let len = inner.len().to_string();
    let cases: [UnreadCase; 5] = [
        ("/broadcast", &[("X-API-Key", "wrong")], 401),
        (
            "/broadcast",
            &[("X-API-Key", API_KEY), ("Origin", "http://evil.example")],
            403,
        ),
        ("/health", &[], 405),
        ("/nope", &[], 404),
        ("/metrics", &[], 405),
    ];
    for (path, headers, status) in cases {
        let mut all = headers.to_vec();
        all.push(("Content-Length", &len));
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\n");
        for (k, v) in all {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("{head}\r\n{inner}").as_bytes())
            .await
            .unwrap();
        let first = read_one(&mut tcp).await;
        assert_eq!(first.status, status, "{path}");
        // Nothing more: the server closes, or waits for a request that never comes.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(support::QUIET, tcp.read_to_end(&mut rest)).await;
        assert!(
            rest.is_empty(),
            "{path}: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert_quiet(&mut m).await;
    drop(m);
    server.shutdown().await.unwrap();
}

/// Send `head` (which asks `Expect: 100-continue`) and wait for the `100 Continue`: the server
/// has then judged the head and holds the declared body against its budget.
async fn continued(addr: SocketAddr, head: &str) -> TcpStream {
    continued_on(TcpStream::connect(addr).await.unwrap(), head).await
}

/// As [`continued`], on a connected socket (e.g. from another loopback address).
async fn continued_on(mut tcp: TcpStream, head: &str) -> TcpStream {
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut piece = [0u8; 256];
            let n = tcp.read(&mut piece).await.unwrap();
            assert!(n > 0, "closed before 100 Continue");
            buf.extend_from_slice(&piece[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("100 Continue in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n"), "{text}");
    tcp
}

/// Read the whole answer (the server closes: `Connection: close`).
async fn answer(mut tcp: TcpStream) -> Reply {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    parse_reply(&buf).expect("an HTTP answer")
}

#[tokio::test]
async fn bodies_past_the_buffered_budget_are_503_and_others_go_on() {
    // 4 KiB bodies, 6 KiB buffered at once, counted as bytes arrive; one address may hold one
    // whole body (a quarter of 6 KiB is less).
    let http = HttpLimits {
        body_timeout: Duration::from_secs(5),
        ..small_bodies()
    };
    let process = fresh_process(http, Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let key = ("X-API-Key", API_KEY);
    let full = BODY_LIMIT.to_string();
    let expect = ("Expect", "100-continue");
    let chunked = |from: [u8; 4], len: usize| async move {
        let head = post_head(
            "/broadcast",
            &[key, ("Transfer-Encoding", "chunked"), expect],
        );
        let mut tcp = continued_on(connect_from(from, addr).await, &head).await;
        let mut chunk = format!("{len:x}\r\n").into_bytes();
        chunk.extend_from_slice(&vec![b' '; len]);
        chunk.extend_from_slice(b"\r\n");
        tcp.write_all(&chunk).await.unwrap();
        tcp
    };

    // A (127.0.0.1) holds a declared 4 KiB body, half sent: 2 KiB held.
    let a_body = broadcast_body("a", BODY_LIMIT);
    let mut a = continued(
        addr,
        &post_head("/broadcast", &[key, ("Content-Length", &full), expect]),
    )
    .await;
    a.write_all(&a_body[..BODY_LIMIT / 2]).await.unwrap();
    // Bodies declared and never sent hold nothing: three silent 4 KiB declarations from
    // 127.0.0.2 do not stop a small body from 127.0.0.3.
    let mut silent = Vec::new();
    for _ in 0..3 {
        let head = post_head("/broadcast", &[key, ("Content-Length", &full), expect]);
        silent.push(continued_on(connect_from([127, 0, 0, 2], addr).await, &head).await);
    }
    let c = post_head("/broadcast", &[key, ("Content-Length", "500")]);
    let mut c_tcp = connect_from([127, 0, 0, 3], addr).await;
    c_tcp.write_all(c.as_bytes()).await.unwrap();
    c_tcp.write_all(&broadcast_body("c", 500)).await.unwrap();
    assert_eq!(answer(c_tcp).await.status, 200);
    expect_broadcast(&mut m, "c").await;
    // One address's share: 3000 more bytes from A's address would hold 5 KiB there: 503.
    let d = chunked([127, 0, 0, 1], 3000).await;
    assert_eq!(answer(d).await.status, 503);
    // The system's budget: 3000 bytes from 127.0.0.4 fit beside A's 2 KiB; 1500 more from
    // 127.0.0.5 would pass 6 KiB: 503.
    let mut e = chunked([127, 0, 0, 4], 3000).await;
    let f = chunked([127, 0, 0, 5], 1500).await;
    assert_eq!(answer(f).await.status, 503);
    // E ends its (blank) body and is read in full: the protocol answers, nothing is refused.
    e.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(answer(e).await.status, 400);
    // A completes and is served; the budget is free again for a whole body.
    a.write_all(&a_body[BODY_LIMIT / 2..]).await.unwrap();
    assert_eq!(answer(a).await.status, 200);
    expect_broadcast(&mut m, "a").await;
    let r = http::request(
        addr,
        "POST",
        "/broadcast",
        &[key],
        &broadcast_body("b", BODY_LIMIT),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_broadcast(&mut m, "b").await;
    assert_quiet(&mut m).await;
    assert_refusals(addr, "collab", &[("http", "503", 2)]).await;
    drop((m, silent));
    server.shutdown().await.unwrap();
}

/// POST one race update for `session` with `key` from `tcp`.
async fn race_update_on(tcp: TcpStream, session: &str, key: &str, tag: u64) -> Reply {
    let body = json!({"type": "lap_update", "data": {"lap": tag}}).to_string();
    let len = body.len().to_string();
    let head = post_head(
        &format!("/sessions/{session}/updates"),
        &[("X-API-Key", key), ("Content-Length", &len)],
    );
    let mut tcp = tcp;
    tcp.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    answer(tcp).await
}

async fn race_update(addr: SocketAddr, key: &str, tag: u64) -> Reply {
    race_update_on(TcpStream::connect(addr).await.unwrap(), "s1", key, tag).await
}

/// Publish until one is refused (at most `most`): the successes, then the refusal.
async fn publish_until_refused<F, Fut>(most: u64, mut publish: F) -> (u64, Reply)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    for i in 0..most {
        let r = publish(i).await;
        if r.status != 202 {
            return (i, r);
        }
    }
    panic!("{most} publishes and none refused");
}

#[tokio::test]
async fn publishing_above_the_rate_is_429_per_address_and_per_key() {
    const BURST: u32 = 3;
    let rate = Some(RateLimit {
        per_second: 1,
        burst: BURST,
    });
    // Per client address.
    let http = HttpLimits {
        publish_rate_per_ip: rate,
        ..limits()
    };
    let process = fresh_process(http, Admission::new(1000, None));
    let server = serve_system(&process, "race").await;
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws?sessionId=s1").await;
    expect_type(&mut ws, "subscribed").await;
    let (ok, refused) = publish_until_refused(20, |i| race_update(addr, API_KEY, i)).await;
    // The burst always passes; a token may come back while they run, no more.
    assert!(ok >= u64::from(BURST), "{ok}");
    assert_eq!(refused.status, 429, "{}", refused.text());
    let wait: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    for i in 0..ok {
        assert_eq!(next_json(&mut ws).await["data"]["lap"], i);
    }
    assert_quiet(&mut ws).await;
    // Another address has its own allowance.
    let other = race_update_on(connect_from([127, 0, 0, 2], addr).await, "s1", API_KEY, 99).await;
    assert_eq!(other.status, 202, "{}", other.text());
    assert_eq!(next_json(&mut ws).await["data"]["lap"], 99);
    // Reads are not publishes.
    assert_eq!(http::get(addr, "/health").await.status, 200);
    assert_refusals(addr, "race", &[("http", "429", 1)]).await;
    drop(ws);
    server.shutdown().await.unwrap();

    // Per API key, with two keys configured.
    let http = HttpLimits {
        publish_rate_per_key: rate,
        ..limits()
    };
    let process = fresh_process(http, Admission::new(1000, None));
    let options = Options::default().with_api_key("k1").with_api_key("k2");
    let server = serve(
        &process,
        support::endpoint("race"),
        Config::default(),
        &options,
    )
    .await;
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws?sessionId=s1").await;
    expect_type(&mut ws, "subscribed").await;
    let (ok, refused) = publish_until_refused(20, |i| race_update(addr, "k1", i)).await;
    assert!(ok >= u64::from(BURST), "{ok}");
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    // The other key, from the same address, still publishes; a wrong key is 401, not 429.
    assert_eq!(race_update(addr, "k2", 100).await.status, 202);
    assert_eq!(race_update(addr, "wrong", 101).await.status, 401);
    for i in (0..ok).chain([100]) {
        assert_eq!(next_json(&mut ws).await["data"]["lap"], i);
    }
    assert_quiet(&mut ws).await;
    assert_refusals(addr, "race", &[("http", "429", 1), ("http", "401", 1)]).await;
    drop(ws);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Client-chosen identifiers capped at 256 bytes; status pages list at most 1000 entries.

/// `switchboard_errors_total{system, kind}` in a `/metrics` text (0 when absent).
fn error_count(metrics: &str, system: &str, kind: &str) -> u64 {
    let prefix = format!("switchboard_errors_total{{system=\"{system}\",kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

const CAP: &str = "longer than 256 bytes";

#[tokio::test]
async fn identifiers_above_256_bytes_get_error_replies() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let (at, over) = ("i".repeat(256), "i".repeat(257));

    // Collab: project and user ids, over WebSocket and in /broadcast.
    let collab = serve_system(&process, "collab").await;
    let addr = collab.local_addr();
    let mut watcher = member(addr, "p1").await;
    let mut collab_ws = connect(addr, "/ws").await;
    expect_type(&mut collab_ws, "CONNECTION_ESTABLISHED").await;
    for bad in [
        json!({"type": "JOIN_PROJECT", "projectId": over}),
        json!({"type": "JOIN_PROJECT", "projectId": "p1", "userId": over}),
        json!({"type": "SET_USER", "userId": over}),
    ] {
        send_json(&mut collab_ws, bad.clone()).await;
        let err = expect_type(&mut collab_ws, "ERROR").await;
        assert!(err.to_string().contains(CAP), "{bad}: {err}");
    }
    assert_quiet(&mut watcher).await;
    send_json(
        &mut collab_ws,
        json!({"type": "JOIN_PROJECT", "projectId": at, "userId": at}),
    )
    .await;
    assert_eq!(
        expect_type(&mut collab_ws, "USER_PRESENCE").await["payload"]["projectId"],
        at
    );
    let r = http::post_with_key(addr, "/broadcast", &json!({"type": "X", "projectId": over})).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains(CAP), "{}", r.text());
    assert_quiet(&mut collab_ws).await;

    // Race: session ids (at most 128 bytes: `race::v1::MAX_SESSION_ID_LEN`) in the query, in
    // `subscribe`, and in the publish path.
    let race = serve_system(&process, "race").await;
    let addr = race.local_addr();
    let (session_at, session_over) = ("s".repeat(128), "s".repeat(129));
    let race_cap = "longer than 128 bytes";
    let mut race_ws = connect(addr, &format!("/ws?sessionId={session_over}")).await;
    assert!(next_text(&mut race_ws).await.contains(race_cap));
    send_json(
        &mut race_ws,
        json!({"type": "subscribe", "data": {"sessionId": session_over}}),
    )
    .await;
    assert!(next_text(&mut race_ws).await.contains(race_cap));
    send_json(
        &mut race_ws,
        json!({"type": "subscribe", "data": {"sessionId": over}}),
    )
    .await;
    assert!(next_text(&mut race_ws).await.contains(race_cap));
    send_json(
        &mut race_ws,
        json!({"type": "subscribe", "data": {"sessionId": session_at}}),
    )
    .await;
    expect_type(&mut race_ws, "subscribed").await;
    let r = race_update_on(
        TcpStream::connect(addr).await.unwrap(),
        &session_over,
        API_KEY,
        1,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains(race_cap), "{}", r.text());
    let r = race_update_on(
        TcpStream::connect(addr).await.unwrap(),
        &session_at,
        API_KEY,
        2,
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        expect_type(&mut race_ws, "lap_update").await["data"]["lap"],
        2
    );

    // AFC: the event name.
    let afc = serve(
        &process,
        support::endpoint("afc"),
        Config::default(),
        &Options::default(),
    )
    .await;
    let addr = afc.local_addr();
    let mut afc_ws = connect(addr, "/ws").await;
    let name = format!("{}-created", "e".repeat(250));
    let r = http::post(addr, &format!("/events/{name}"), &[], "{}").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains(CAP), "{}", r.text());
    assert_eq!(
        http::post(addr, "/events/todo-created", &[], "{}")
            .await
            .status,
        204
    );
    assert_eq!(
        next_text(&mut afc_ws).await,
        r#"{"type":"todo:created","payload":{}}"#
    );

    // DCDock: the user id a valid token carries.
    let dcdock = serve_system(&process, "dcdock").await;
    let addr = dcdock.local_addr();
    let claims = |user: &str| json!({"sub": user, "exp": unix_in(600)});
    let mut refused = connect(
        addr,
        &format!("/api/ws?token={}", jwt(claims(&over), JWT_SECRET)),
    )
    .await;
    assert_eq!(expect_close(&mut refused).await, 1008);
    drop(refused);
    let mut ws = connect(
        addr,
        &format!("/api/ws?token={}", jwt(claims(&at), JWT_SECRET)),
    )
    .await;
    expect_type(&mut ws, "connection_ack").await;

    let text = metrics(addr).await;
    // Three over WebSocket and one over HTTP each; AFC's event name; DCDock's token refused by
    // the gate, before the hub.
    assert_eq!(error_count(&text, "collab", "id_too_long"), 4, "{text}");
    assert_eq!(error_count(&text, "race", "id_too_long"), 4, "{text}");
    assert_eq!(error_count(&text, "afc", "id_too_long"), 1, "{text}");
    assert_eq!(
        refusal_count(&text, "dcdock", "upgrade", "token"),
        1,
        "{text}"
    );
    // Let go of the clients first: shutdown would wait for their close handshakes.
    drop((watcher, collab_ws, race_ws, afc_ws, ws));
    for s in [collab, race, afc, dcdock] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn status_pages_list_at_most_1000_entries() {
    let process = fresh_process(limits(), Admission::new(5000, None));
    // Collab: one client in 1001 projects.
    let mut config = Config::default();
    config.limits.max_rooms_per_connection = 2000;
    config.limits.inbound_rate = None;
    let collab = serve(
        &process,
        support::endpoint("collab"),
        config,
        &support::options(),
    )
    .await;
    let addr = collab.local_addr();
    let mut ws = connect(addr, "/ws").await;
    expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
    for i in 0..1001 {
        ws.feed(Message::text(
            json!({"type": "JOIN_PROJECT", "projectId": format!("p{i:04}")}).to_string(),
        ))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    for _ in 0..1001 {
        expect_type(&mut ws, "USER_PRESENCE").await;
    }
    let stats = http::get(addr, "/stats").await.json();
    assert_eq!(stats["totalProjects"], 1001);
    assert_eq!(stats["truncated"], true);
    assert_eq!(stats["projectStats"].as_object().unwrap().len(), 1000);

    // DCDock: 1001 clients.
    let dcdock = serve_system(&process, "dcdock").await;
    let addr = dcdock.local_addr();
    let mut clients = Vec::new();
    for user in 0..1001 {
        clients.push(dcdock_client(addr, user).await.0);
    }
    let stats = http::get(addr, "/api/ws/stats").await;
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["active_connections"], 1001);
    assert_eq!(stats["truncated"], true);
    assert_eq!(stats["clients"].as_array().unwrap().len(), 1000);
    assert!(
        stats.to_string().len() < 200_000,
        "{}",
        stats.to_string().len()
    );
    drop((ws, clients));
    collab.shutdown().await.unwrap();
    dcdock.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. Control frames count against the inbound rate: `throttle` pauses reading, `close` is 1008.

fn rated(policy: RatePolicy) -> Config {
    let mut config = Config::default();
    config.limits.inbound_rate = Some(RateLimit {
        per_second: 10,
        burst: 20,
    });
    config.limits.rate_policy = policy;
    config
}

/// Send `n` copies of `frame` as fast as possible (the server may close part way).
async fn flood(ws: &mut Ws, frame: Message, n: usize) {
    for _ in 0..n {
        if ws.feed(frame.clone()).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
}

#[tokio::test]
async fn ping_and_pong_floods_are_closed_1008_under_the_close_policy() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve(
        &process,
        support::endpoint("laptimes"),
        rated(RatePolicy::Close),
        &support::options(),
    )
    .await;
    let addr = server.local_addr();
    let (mut watcher, mut other) = (connect(addr, "/").await, connect(addr, "/").await);
    for frame in [
        Message::Ping(vec![1u8; 8].into()),
        Message::Pong(vec![2u8; 8].into()),
    ] {
        let mut flooder = connect(addr, "/").await;
        flood(&mut flooder, frame, 60).await;
        assert_eq!(expect_close(&mut flooder).await, 1008);
    }
    // The flood relayed nothing, and the others are unharmed.
    assert_quiet(&mut watcher).await;
    let n = notice("after-ping-flood");
    other.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut watcher).await, n);
    let text = metrics(addr).await;
    assert!(
        text.contains("switchboard_errors_total{system=\"laptimes\",kind=\"rate_limited\"} 2\n"),
        "{text}"
    );
    drop((watcher, other));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_ping_burst_is_throttled_not_closed() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve(
        &process,
        support::endpoint("laptimes"),
        rated(RatePolicy::Throttle),
        &support::options(),
    )
    .await;
    let addr = server.local_addr();
    let mut watcher = connect(addr, "/").await;
    let mut flooder = connect(addr, "/").await;
    // The burst and ten more: about a second of throttling.
    flood(&mut flooder, Message::Ping(vec![1u8; 8].into()), 30).await;
    // Not closed: once its budget refills, what it sends next is relayed, in order.
    let n = notice("after-throttle");
    flooder.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut watcher).await, n);
    let text = metrics(addr).await;
    let throttled: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_throttled_total{system=\"laptimes\"} "))
        .expect("a throttled count")
        .parse()
        .unwrap();
    assert!(throttled >= 1, "{text}");
    assert_eq!(error_count(&text, "laptimes", "rate_limited"), 0);
    drop((watcher, flooder));
    server.shutdown().await.unwrap();
}

/// Feed `n` pings from `tx` (the server may stop reading: each write is bounded by `until`).
async fn feed_pings<S>(tx: &mut S, n: usize, until: tokio::time::Instant)
where
    S: futures_util::Sink<Message> + Unpin,
{
    for _ in 0..n {
        match tokio::time::timeout_at(until, tx.feed(Message::Ping(vec![7u8; 4].into()))).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout_at(until, tx.flush()).await;
}

/// Under the default limits (100/s, burst 200, `throttle`), a client that keeps pinging is read
/// at about the rate: the pongs it gets (one per ping read) stay within ten times what the
/// bucket allows over the whole flood, counted against the time since the first ping (which
/// only over-allows). Another client relays as usual meanwhile.
#[tokio::test]
async fn a_sustained_ping_flood_is_read_at_about_the_rate() {
    use futures_util::StreamExt;
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve_system(&process, "laptimes").await;
    let addr = server.local_addr();
    let (mut a, mut b) = (connect(addr, "/").await, connect(addr, "/").await);
    let (mut tx, mut rx) = connect(addr, "/").await.split();
    const PINGS: usize = 40_000;
    let start = std::time::Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    let count = async {
        let mut pongs = 0u64;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, rx.next()).await {
            if msg.is_pong() {
                pongs += 1;
            }
        }
        pongs
    };
    let ((), pongs) = tokio::join!(feed_pings(&mut tx, PINGS, until), count);
    let elapsed = start.elapsed().as_secs_f64();
    let limits = Config::default().limits;
    let rate = limits.inbound_rate.unwrap();
    let allowed = f64::from(rate.burst) + f64::from(rate.per_second) * elapsed;
    assert!(pongs >= u64::from(rate.burst), "{pongs} pongs");
    assert!(
        (pongs as f64) < 10.0 * allowed,
        "{pongs} pings read in {elapsed:.2} s; the bucket allows {allowed:.0}"
    );
    let n = notice("beside-a-ping-flood");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut b).await, n);
    let text = metrics(addr).await;
    assert_eq!(
        error_count(&text, "laptimes", "rate_limited"),
        0,
        "throttled, not closed"
    );
    drop((a, b, tx, rx));
    server.shutdown().await.unwrap();
}

/// One connection's flood (no rate limit here, so it is never paused) must not stall the
/// hub's timers: another, silent connection is still closed for idleness (4000).
#[tokio::test]
async fn a_flood_on_one_connection_does_not_stall_the_timers_of_others() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let mut config = Config::default();
    config.limits.inbound_rate = None;
    config.heartbeat_interval = None;
    // Two seconds: long enough that the flooder, starved of CPU on a loaded machine, still
    // sends within every idle period (with one, it was idle-closed too, once in about twelve
    // runs under load), short enough to close the idle one well within WAIT.
    config.idle_timeout = Some(Duration::from_secs(2));
    let server = serve(
        &process,
        support::endpoint("laptimes"),
        config,
        &support::options(),
    )
    .await;
    let addr = server.local_addr();
    let mut idle = connect(addr, "/").await;
    let (mut tx, mut rx) = futures_util::StreamExt::split(connect(addr, "/").await);
    let until = tokio::time::Instant::now() + 2 * WAIT;
    // Pings without a pause, and their pongs read as they come, so that no buffer fills.
    let flood = tokio::spawn(async move {
        let read = async {
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut rx)).await
            {
            }
        };
        tokio::join!(feed_pings(&mut tx, usize::MAX, until), read);
    });
    assert_eq!(expect_close(&mut idle).await, 4000);
    flood.abort();
    let text = metrics(addr).await;
    assert!(
        text.contains("switchboard_idle_timeouts_total{system=\"laptimes\"} 1\n"),
        "{text}"
    );
    drop(idle);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 5. The process's socket budget (503 at accept) and the per-address limit (429 at accept).

/// Retry `attempt` until it is `Ok` (the server lets go of a closed socket a moment later).
async fn eventually<T, E: std::fmt::Debug, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = None;
    for _ in 0..100 {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never succeeded: {last:?}");
}

#[tokio::test]
async fn sockets_past_the_budget_get_503_at_accept() {
    let process = fresh_process(limits(), Admission::new(3, None));
    let server = serve_system(&process, "laptimes").await;
    let addr = server.local_addr();
    let mut held = vec![connect(addr, "/").await, connect(addr, "/").await];
    let mut third = connect(addr, "/").await;
    // Every kind of request past the budget: an upgrade, a plain request, a bare socket.
    assert_eq!(refused_status(try_connect(addr, "/", &[]).await), 503);
    let r = http::get(addr, "/health").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        r.text().contains("limit of 3 open connections"),
        "{}",
        r.text()
    );
    let mut bare = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, bare.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Those admitted keep working.
    let n = notice("at-the-budget");
    third.send(Message::text(n.clone())).await.unwrap();
    for ws in &mut held {
        assert_eq!(next_text(ws).await, n);
    }
    // A socket closed frees its place.
    drop(third);
    let mut again = eventually(|| try_connect(addr, "/", &[])).await;
    again.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut held[0]).await, n);
    drop(again);
    drop(held.pop());
    let text = eventually(|| async {
        let r = http::get(addr, "/metrics").await;
        if r.status == 200 {
            Ok(r.text())
        } else {
            Err(r.status)
        }
    })
    .await;
    assert_eq!(
        refusal_count(&text, "laptimes", "socket", "sockets"),
        3,
        "{text}"
    );
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sockets_past_the_per_address_limit_get_429_at_accept() {
    let process = fresh_process(limits(), Admission::new(1000, Some(2)));
    // Two systems of one process: the limit is per address across both.
    let laptimes = serve_system(&process, "laptimes").await;
    let afc = serve_system(&process, "afc").await;
    let (addr, afc_addr) = (laptimes.local_addr(), afc.local_addr());
    let mut a = connect(addr, "/").await;
    let afc_ws = connect(afc_addr, "/ws").await;
    assert_eq!(refused_status(try_connect(addr, "/", &[]).await), 429);
    let r = http::get(afc_addr, "/health").await;
    assert_eq!(r.status, 429);
    assert!(
        r.text()
            .contains("at most 2 connections per client address"),
        "{}",
        r.text()
    );
    // Another address is admitted.
    let tcp = connect_from([127, 0, 0, 2], addr).await;
    let (mut b, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
    )
    .await
    .unwrap()
    .expect("127.0.0.2 is admitted");
    let n = notice("per-address");
    b.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut a).await, n);
    drop(afc_ws);
    let text = eventually(|| async {
        let r = http::get(addr, "/metrics").await;
        if r.status == 200 {
            Ok(r.text())
        } else {
            Err(r.status)
        }
    })
    .await;
    assert_eq!(
        refusal_count(&text, "laptimes", "socket", "per_address"),
        1,
        "{text}"
    );
    assert_eq!(
        refusal_count(&text, "afc", "socket", "per_address"),
        1,
        "{text}"
    );
    drop((a, b));
    laptimes.shutdown().await.unwrap();
    afc.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 6. Cross-site: a write from a disallowed origin (or any origin where the system has no list)
//    is 403 before it has any effect; reads are served without CORS headers.

/// The CORS headers of an answer: (allow-origin, allow-credentials).
fn cors(r: &Reply) -> (Option<&str>, Option<&str>) {
    (
        r.header("access-control-allow-origin"),
        r.header("access-control-allow-credentials"),
    )
}

async fn broadcast_from(addr: SocketAddr, origin: &str, tag: &str) -> Reply {
    let headers = [("X-API-Key", API_KEY), ("Origin", origin)];
    http::request(
        addr,
        "POST",
        "/broadcast",
        &headers,
        &broadcast_body(tag, 200),
    )
    .await
}

#[tokio::test]
async fn cross_site_writes_to_collab_are_refused_before_any_effect() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let huge = format!("http://{}.example", "a".repeat(60_000));
    let refused = [
        "http://evil.example",
        "null",
        "http://localhost:3000.evil.example",
        "https://localhost:3000",
        "http://localhost:3000, http://evil.example",
        "http://localhost:3000/path",
        huge.as_str(),
    ];
    for origin in refused {
        let r = broadcast_from(addr, origin, "refused").await;
        assert_eq!(r.status, 403, "{:.80}", origin);
        assert_eq!(cors(&r), (None, None));
        // The answer names the origin clipped, not in full.
        assert!(r.body.len() < 512, "{} bytes", r.body.len());
        // The preflight is refused too.
        let r = http::request(addr, "OPTIONS", "/broadcast", &[("Origin", origin)], b"").await;
        assert_eq!(r.status, 403, "{:.80}", origin);
        assert_eq!(cors(&r), (None, None));
        // Reads are served, without CORS headers.
        let r = http::request(addr, "GET", "/stats", &[("Origin", origin)], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(cors(&r), (None, None));
        // So is the WebSocket.
        let upgrade = try_connect(addr, "/ws", &[("origin", origin)]).await;
        assert_eq!(refused_status(upgrade), 403, "{:.80}", origin);
    }
    // The member got none of it.
    assert_quiet(&mut m).await;
    // An allowed origin, with or without a trailing slash, is served with credentials.
    for (origin, tag) in [
        (ALLOWED_ORIGIN, "plain"),
        ("http://localhost:3000/", "slash"),
    ] {
        let r = broadcast_from(addr, origin, tag).await;
        assert_eq!(r.status, 200, "{origin}: {}", r.text());
        assert_eq!(cors(&r), (Some(origin), Some("true")));
        assert_eq!(r.header("vary"), Some("Origin"));
        expect_broadcast(&mut m, tag).await;
    }
    assert_quiet(&mut m).await;
    let n = refused.len() as u64;
    assert_refusals(
        addr,
        "collab",
        &[("http", "origin", 2 * n), ("upgrade", "origin", n)],
    )
    .await;
    drop(m);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn systems_without_an_allow_list_refuse_every_cross_site_write() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let origins = ["http://localhost:3000", "null", "http://evil.example"];

    // AFC: open publishing (no key), no allow-list.
    let afc = serve(
        &process,
        support::endpoint("afc"),
        Config::default(),
        &Options::default(),
    )
    .await;
    let addr = afc.local_addr();
    let mut ws = connect(addr, "/ws").await;
    for origin in origins {
        let r = http::request(
            addr,
            "POST",
            "/events/todo-created",
            &[("Origin", origin)],
            b"{}",
        )
        .await;
        assert_eq!(r.status, 403, "{origin}");
        assert!(r.text().contains("AFC_ALLOWED_ORIGINS"), "{}", r.text());
        let r = http::request(addr, "GET", "/health", &[("Origin", origin)], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(cors(&r), (None, None));
    }
    assert_quiet(&mut ws).await;
    // A backend (no Origin) publishes as before.
    assert_eq!(
        http::post(addr, "/events/todo-created", &[], "{}")
            .await
            .status,
        204
    );
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"todo:created","payload":{}}"#
    );
    assert_quiet(&mut ws).await;
    assert_refusals(addr, "afc", &[("http", "origin", 3)]).await;

    // Race and DCDock: keyed publishing, no allow-list; the right key does not help.
    let race = serve_system(&process, "race").await;
    let race_addr = race.local_addr();
    let mut race_ws = connect(race_addr, "/ws?sessionId=s1").await;
    expect_type(&mut race_ws, "subscribed").await;
    let dcdock = serve_system(&process, "dcdock").await;
    let dcdock_addr = dcdock.local_addr();
    let (mut dcdock_ws, _) = dcdock_client(dcdock_addr, 1).await;
    let lap = json!({"type": "lap_update", "data": {"lap": 1}}).to_string();
    let event = support::assignment_created(1, "IB").to_string();
    for origin in origins {
        let headers = [("X-API-Key", API_KEY), ("Origin", origin)];
        let r = http::post(race_addr, "/sessions/s1/updates", &headers, &lap).await;
        assert_eq!(r.status, 403, "{origin}");
        let r = http::post(dcdock_addr, "/api/ws/publish", &headers, &event).await;
        assert_eq!(r.status, 403, "{origin}");
    }
    assert_quiet(&mut race_ws).await;
    assert_quiet(&mut dcdock_ws).await;
    assert_refusals(race_addr, "race", &[("http", "origin", 3)]).await;
    assert_refusals(dcdock_addr, "dcdock", &[("http", "origin", 3)]).await;
    drop((ws, race_ws, dcdock_ws));
    for s in [afc, race, dcdock] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_allow_list_of_star_never_allows_credentials() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let mut endpoint = support::endpoint("collab");
    endpoint.allowed_origins = Some(vec!["*".to_string()]);
    let server = serve(&process, endpoint, Config::default(), &support::options()).await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    for (origin, tag) in [
        ("http://evil.example", "a"),
        ("null", "b"),
        (ALLOWED_ORIGIN, "c"),
    ] {
        let r = broadcast_from(addr, origin, tag).await;
        assert_eq!(r.status, 200, "{origin}");
        assert_eq!(cors(&r), (Some("*"), None), "{origin}");
        expect_broadcast(&mut m, tag).await;
        let r = http::request(addr, "GET", "/health", &[("Origin", origin)], b"").await;
        assert_eq!(cors(&r), (Some("*"), None), "{origin}");
        let r = http::request(addr, "OPTIONS", "/broadcast", &[("Origin", origin)], b"").await;
        assert_eq!(r.status, 204);
        assert_eq!(cors(&r), (Some("*"), None), "{origin}");
        // Upgrades from any origin too.
        let mut ws = try_connect(addr, "/ws", &[("origin", origin)])
            .await
            .unwrap();
        expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
    }
    assert_refusals(addr, "collab", &[]).await;
    drop(m);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 7. Two `Origin` headers, or one that is not ASCII: 400, on requests and upgrades alike.

/// A request with the raw header lines `extra` (each ending in CRLF).
fn raw_request(method: &str, path: &str, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

const UPGRADE: &[u8] = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[tokio::test]
async fn malformed_origin_headers_are_400() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve_system(&process, "collab").await;
    let addr = server.local_addr();
    let mut m = member(addr, "p1").await;
    let key = format!("X-API-Key: {API_KEY}\r\n");
    let body = broadcast_body("refused", 200);
    let malformed: [&[u8]; 4] = [
        b"Origin: http://localhost:3000\r\nOrigin: http://localhost:3000\r\n",
        b"Origin: http://localhost:3000\r\nOrigin: http://evil.example\r\n",
        "Origin: http://\u{e9}vil.example\r\n".as_bytes(),
        b"Origin: http://localhost:3000\xff\r\n",
    ];
    for origin in malformed {
        let shown = String::from_utf8_lossy(origin);
        let post = [key.as_bytes(), origin].concat();
        let r = http::raw(addr, &raw_request("POST", "/broadcast", &post, &body)).await;
        assert_eq!(r.status, 400, "POST {shown}");
        let r = http::raw(addr, &raw_request("GET", "/health", origin, b"")).await;
        assert_eq!(r.status, 400, "GET {shown}");
        let r = http::raw(
            addr,
            &raw_request("GET", "/ws", &[UPGRADE, origin].concat(), b""),
        )
        .await;
        assert_eq!(r.status, 400, "upgrade {shown}");
    }
    assert_quiet(&mut m).await;
    let r = broadcast_from(addr, ALLOWED_ORIGIN, "ok").await;
    assert_eq!(r.status, 200);
    expect_broadcast(&mut m, "ok").await;
    assert_refusals(
        addr,
        "collab",
        &[("http", "origin", 8), ("upgrade", "origin", 4)],
    )
    .await;
    drop(m);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 8. JWT `nbf` (5 s leeway), several keys chosen by `kid`; several API keys per system.

/// An HS256 token over `claims` signed with `secret`, its header naming `kid` if given.
pub fn jwt_with_kid(claims: &Value, secret: &str, kid: Option<&str>) -> String {
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

/// The DCDock endpoint of the tests with two more keys, `old` and `new`.
pub fn rotating_endpoint() -> Endpoint {
    let mut endpoint = support::endpoint("dcdock");
    endpoint
        .jwt
        .add_list("old:old-secret,new:new-secret")
        .unwrap();
    endpoint
}

/// (what, token, accepted) for [`rotating_endpoint`].
pub fn token_cases() -> Vec<(&'static str, String, bool)> {
    let claims = |extra: Value| {
        let mut c = json!({"sub": "7", "exp": unix_in(600)});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let plain = claims(json!({}));
    vec![
        (
            "nbf an hour ahead",
            jwt(claims(json!({"nbf": unix_in(3600)})), JWT_SECRET),
            false,
        ),
        (
            "nbf 60 s ahead",
            jwt(claims(json!({"nbf": unix_in(60)})), JWT_SECRET),
            false,
        ),
        (
            "nbf within the leeway",
            jwt(claims(json!({"nbf": unix_in(2)})), JWT_SECRET),
            true,
        ),
        (
            "nbf passed",
            jwt(claims(json!({"nbf": unix_in(-60)})), JWT_SECRET),
            true,
        ),
        (
            "kid new, new key",
            jwt_with_kid(&plain, "new-secret", Some("new")),
            true,
        ),
        (
            "kid old, old key",
            jwt_with_kid(&plain, "old-secret", Some("old")),
            true,
        ),
        (
            "kid new, old key",
            jwt_with_kid(&plain, "old-secret", Some("new")),
            false,
        ),
        (
            "kid new, the unnamed key",
            jwt_with_kid(&plain, JWT_SECRET, Some("new")),
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
        (
            "expired past the leeway",
            jwt(json!({"sub": "7", "exp": unix_in(-60)}), JWT_SECRET),
            false,
        ),
    ]
}

#[tokio::test]
async fn jwt_not_before_and_key_ids_are_checked() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve(
        &process,
        rotating_endpoint(),
        Config::default(),
        &support::options(),
    )
    .await;
    let addr = server.local_addr();
    let (mut bystander, _) = dcdock_client(addr, 1).await;
    let mut refused = 0;
    for (what, token, accepted) in token_cases() {
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
    assert_refusals(addr, "dcdock", &[("upgrade", "token", refused)]).await;
    drop(bystander);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_configured_api_key_publishes_and_no_other() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let options = Options::default()
        .with_api_key("k-old")
        .with_api_key("k-new");
    let server = serve(
        &process,
        support::endpoint("dcdock"),
        Config::default(),
        &options,
    )
    .await;
    let addr = server.local_addr();
    let (mut ws, _) = dcdock_client(addr, 1).await;
    let event = |id| support::assignment_created(id, "IB").to_string();
    let cases: [(&[(&str, &str)], u16); 7] = [
        (&[("X-API-Key", "k-old")], 202),
        (&[("Authorization", "Bearer k-new")], 202),
        (&[("X-API-Key", "k-old,k-new")], 401),
        (&[("X-API-Key", "k-ol")], 401),
        (&[("X-API-Key", "")], 401),
        (&[("Authorization", "k-new")], 401),
        (&[], 401),
    ];
    let mut delivered = Vec::new();
    for (i, (headers, status)) in cases.iter().enumerate() {
        let r = http::post(addr, "/api/ws/publish", headers, &event(i as u64)).await;
        assert_eq!(r.status, *status, "{headers:?}");
        if *status == 202 {
            delivered.push(i as u64);
        }
    }
    for i in delivered {
        assert_eq!(
            expect_type(&mut ws, "assignment_created").await["assignment_id"],
            i
        );
    }
    assert_quiet(&mut ws).await;
    assert_refusals(addr, "dcdock", &[("http", "401", 5)]).await;
    drop(ws);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 9. Malformed upgrades: 400, nothing upgraded, and the well-formed client next to it works.

/// Upgrade requests that must be refused with 400, as (what, raw request).
pub fn bad_upgrades(path: &str) -> Vec<(&'static str, String)> {
    let upgrade = |version: &str, host: &str, key: &str| {
        format!("GET {path} {version}\r\n{host}Connection: Upgrade\r\nUpgrade: websocket\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n")
    };
    let good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let host = "Host: x\r\n";
    let mut cases = vec![
        ("HTTP/1.0", upgrade("HTTP/1.0", host, good_key)),
        ("no Host", upgrade("HTTP/1.1", "", good_key)),
        (
            "two Hosts",
            upgrade("HTTP/1.1", "Host: x\r\nHost: y\r\n", good_key),
        ),
        (
            "two keys",
            upgrade("HTTP/1.1", host, &format!("{good_key}{good_key}")),
        ),
    ];
    for (what, key) in [
        ("a short key", "x"),
        ("an unpadded key", "dGhlIHNhbXBsZSBub25jZQ"),
        ("an over-padded key", "dGhlIHNhbXBsZSBub25jZQ==="),
        ("a key with a bad character", "dGhlIHNhbXBsZSBub25j!Q=="),
        ("a key of 21 bytes", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("a key with trailing bits", "dGhlIHNhbXBsZSBub25jZB=="),
        ("an empty key", ""),
    ] {
        cases.push((
            what,
            upgrade("HTTP/1.1", host, &format!("Sec-WebSocket-Key: {key}\r\n")),
        ));
    }
    cases
}

#[tokio::test]
async fn malformed_upgrades_are_400_and_not_upgraded() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let server = serve_system(&process, "laptimes").await;
    let addr = server.local_addr();
    let (mut a, mut b) = (connect(addr, "/").await, connect(addr, "/").await);
    let cases = bad_upgrades("/");
    for (what, request) in &cases {
        let r = exchange(addr, request.as_bytes()).await;
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("upgrade"), None, "{what}");
    }
    // The same Host rule for plain requests (RFC 9112: HTTP/1.0 may leave Host out).
    for (request, status) in [
        (
            &b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            400,
        ),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
            400,
        ),
        (b"GET /health HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET /health HTTP/1.0\r\n\r\n", 200),
    ] {
        let r = http::raw(addr, request).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(request));
    }
    let n = notice("after-bad-upgrades");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut b).await, n);
    assert_refusals(
        addr,
        "laptimes",
        &[
            ("upgrade", "handshake", cases.len() as u64),
            ("http", "host", 3),
        ],
    )
    .await;
    drop((a, b));
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 10. 405 carries `Allow`, on the protocols' routes and the transport's own.

/// (method, path, the `Allow` it must carry).
type Refused405 = (&'static str, &'static str, &'static str);

#[tokio::test]
async fn method_not_allowed_carries_allow_everywhere() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let cases: [(&str, &[Refused405]); 4] = [
        (
            "collab",
            &[
                ("POST", "/health", "GET, HEAD"),
                ("GET", "/broadcast", "POST"),
                ("DELETE", "/stats", "GET, HEAD"),
                ("PUT", "/metrics", "GET, HEAD"),
                ("POST", "/metrics", "GET, HEAD"),
            ],
        ),
        (
            "race",
            &[
                ("GET", "/sessions/s1/updates", "POST"),
                ("PATCH", "/sessions/s1/updates", "POST"),
                ("PUT", "/health", "GET, HEAD"),
            ],
        ),
        (
            "dcdock",
            &[
                ("GET", "/api/ws/publish", "POST"),
                ("POST", "/api/ws/stats", "GET, HEAD"),
                ("DELETE", "/health", "GET, HEAD"),
            ],
        ),
        (
            "afc",
            &[
                ("GET", "/events/todo-created", "POST"),
                ("POST", "/health", "GET, HEAD"),
            ],
        ),
    ];
    for (system, requests) in cases {
        let server = serve_system(&process, system).await;
        let addr = server.local_addr();
        for (method, path, allow) in requests {
            // A large declared body is not read for a 405.
            let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1048576\r\n\r\n");
            let t = trickle(addr, &head, 1 << 20, WAIT).await;
            assert_eq!(t.reply.status, 405, "{system} {method} {path}");
            assert_eq!(
                t.reply.header("allow"),
                Some(*allow),
                "{system} {method} {path}"
            );
        }
        server.shutdown().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 11–12. JSON deeper than 64 levels and duplicate keys, on every system and path; DCDock
//        `filters: []`; race session ids `.` and `..`.

/// `depth` nested arrays around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deep_json_and_duplicate_keys_are_refused_on_every_system() {
    let process = fresh_process(limits(), Admission::new(1000, None));
    let deep = nested(70);

    // Laptimes: the sender gets an error, the others nothing.
    let laptimes = serve_system(&process, "laptimes").await;
    let addr = laptimes.local_addr();
    let (mut sender, mut watcher) = (connect(addr, "/").await, connect(addr, "/").await);
    for frame in [
        format!(r#"{{"table":"times","operation":"CHANGE","x":{deep}}}"#),
        r#"{"table":"times","table":"cars","operation":"CHANGE"}"#.to_string(),
    ] {
        sender.send(Message::text(frame)).await.unwrap();
        expect_type(&mut sender, "error").await;
    }
    assert_quiet(&mut watcher).await;

    // AFC over WebSocket and over HTTP.
    let afc = serve(
        &process,
        support::endpoint("afc"),
        Config::default(),
        &Options::default(),
    )
    .await;
    let addr = afc.local_addr();
    let mut afc_ws = connect(addr, "/ws").await;
    for frame in [
        format!(r#"{{"type":"ping","x":{deep}}}"#),
        r#"{"type":"ping","type":"ping"}"#.to_string(),
    ] {
        afc_ws.send(Message::text(frame)).await.unwrap();
        expect_type(&mut afc_ws, "error").await;
    }
    for body in [
        format!(r#"{{"todo":{deep}}}"#),
        r#"{"id":1,"id":2}"#.to_string(),
    ] {
        assert_eq!(
            http::post(addr, "/events/todo-created", &[], &body)
                .await
                .status,
            400
        );
    }
    assert_quiet(&mut afc_ws).await;

    // Collab over WebSocket and /broadcast.
    let collab = serve_system(&process, "collab").await;
    let addr = collab.local_addr();
    let mut m = member(addr, "p1").await;
    let mut collab_sender = member(addr, "p1").await;
    expect_type(&mut m, "USER_PRESENCE").await;
    for frame in [
        format!(r#"{{"type":"TASK_UPDATE","projectId":"p1","payload":{deep}}}"#),
        r#"{"type":"TASK_UPDATE","projectId":"p1","projectId":"p2","payload":{}}"#.to_string(),
    ] {
        collab_sender.send(Message::text(frame)).await.unwrap();
        expect_type(&mut collab_sender, "ERROR").await;
    }
    for body in [
        format!(r#"{{"type":"X","projectId":"p1","payload":{deep}}}"#),
        r#"{"type":"X","projectId":"p1","projectId":"p2"}"#.to_string(),
    ] {
        let r = http::post(addr, "/broadcast", &[("X-API-Key", API_KEY)], &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_quiet(&mut m).await;

    // Race over WebSocket and the publish path; session ids `.` and `..`.
    let race = serve_system(&process, "race").await;
    let addr = race.local_addr();
    let mut race_ws = connect(addr, "/ws?sessionId=s1").await;
    expect_type(&mut race_ws, "subscribed").await;
    for frame in [
        format!(r#"{{"type":"ping","data":{deep}}}"#),
        r#"{"type":"subscribe","data":{"sessionId":"a","sessionId":"b"}}"#.to_string(),
        r#"{"type":"subscribe","data":{"sessionId":"."}}"#.to_string(),
        r#"{"type":"subscribe","data":{"sessionId":".."}}"#.to_string(),
    ] {
        race_ws.send(Message::text(frame.clone())).await.unwrap();
        expect_type(&mut race_ws, "error").await;
    }
    for query in ["?sessionId=.", "?sessionId=..", "?sessionId=%2e%2e"] {
        let mut ws = connect(addr, &format!("/ws{query}")).await;
        expect_type(&mut ws, "error").await;
    }
    let key = [("X-API-Key", API_KEY)];
    for body in [
        format!(r#"{{"type":"lap_update","data":{deep}}}"#),
        r#"{"type":"lap_update","type":"tire_change","data":{}}"#.to_string(),
    ] {
        assert_eq!(
            http::post(addr, "/sessions/s1/updates", &key, &body)
                .await
                .status,
            400
        );
    }
    let lap = json!({"type": "lap_update", "data": {"lap": 1}}).to_string();
    for path in [
        "/sessions/./updates",
        "/sessions/../updates",
        "/sessions/%2e%2e/updates",
        "/sessions/%2E/updates",
        "/sessions//updates",
        "/sessions/s1/../updates",
    ] {
        let r = http::post(addr, path, &key, &lap).await;
        assert!(
            !(200..300).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    assert_quiet(&mut race_ws).await;

    // DCDock over WebSocket (and `filters: []`) and the publish path.
    let dcdock = serve_system(&process, "dcdock").await;
    let addr = dcdock.local_addr();
    let (mut dc_sender, _) = dcdock_client(addr, 1).await;
    let (mut dc_watcher, _) = dcdock_client(addr, 2).await;
    for frame in [
        format!(r#"{{"type":"subscribe","filters":{{"x":{deep}}}}}"#),
        r#"{"type":"subscribe","filters":{"direction":"IB","direction":"OB"}}"#.to_string(),
        r#"{"type":"subscribe","filters":[]}"#.to_string(),
    ] {
        dc_sender.send(Message::text(frame)).await.unwrap();
        expect_type(&mut dc_sender, "error").await;
    }
    let mut event = support::assignment_created(1, "IB");
    event["data"]["deep"] = serde_json::from_str(&nested(60)).unwrap();
    let deep_event = event
        .to_string()
        .replace("\"deep\":[", "\"deep\":[[[[[[[[[[[")
        .replace("]]]]]}", "]]]]]]]]]]]]]]]]}");
    for body in [
        deep_event,
        r#"{"type":"assignment_created","type":"assignment_deleted"}"#.to_string(),
    ] {
        let r = http::post(addr, "/api/ws/publish", &key, &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_quiet(&mut dc_watcher).await;
    let stats = http::get(addr, "/api/ws/stats").await.json();
    assert_eq!(
        stats["clients"][0]["filters"],
        json!({}),
        "a refused subscribe changes nothing"
    );

    let text = metrics(addr).await;
    for system in ["laptimes", "afc", "collab", "race", "dcdock"] {
        assert!(
            error_count(&text, system, "too_deep") >= 1,
            "{system}: {text}"
        );
        assert!(
            error_count(&text, system, "duplicate_key") >= 1,
            "{system}: {text}"
        );
    }
    drop((
        sender,
        watcher,
        afc_ws,
        m,
        collab_sender,
        race_ws,
        dc_sender,
        dc_watcher,
    ));
    for s in [laptimes, afc, collab, race, dcdock] {
        s.shutdown().await.unwrap();
    }
}
