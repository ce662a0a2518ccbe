//! The admin listener over real sockets: who may read it (loopback without a token; with one,
//! a bearer token or the cookie `/login` sets, compared whole), what it refuses (writes,
//! cross-site requests, heads, streams and connections past their bounds), the event stream's
//! framing and contents, one connection's detail, and the tail (sampled, cut short, on only
//! while watched).
//!
//! Requests are written by hand, so every header is the test's choice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_hub::Publication;
use switchboard_inspector::service::{MAX_CONNECTIONS, MAX_HEADERS, MAX_HEAD_BYTES, MAX_STREAMS};
use switchboard_inspector::{Admin, Token};
use switchboard_runtime::{Endpoint, Process, Serving, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// A collab system served on a free port, and the inspector of it on another.
struct Setup {
    admin: Admin,
    system: Arc<System>,
    collab: Serving,
}

impl Setup {
    async fn new(token: Option<&str>) -> Setup {
        let process = Process::default();
        let spec = switchboard_protocol::system("collab").unwrap();
        let system = System::start(
            Endpoint::new(spec),
            Default::default(),
            Default::default(),
            process.clock.clone(),
            None,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collab = switchboard_hyper::serve(&process, listener, system.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token = token.map(|t| Token::new(t).unwrap());
        let admin =
            switchboard_inspector::serve(listener, &process, vec![system.clone()], token).unwrap();
        Setup {
            admin,
            system,
            collab,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// A collab client that set its user and joined `project`.
    async fn member(&self, user: &str, project: &str) -> Ws {
        let url = format!("ws://{}/ws", self.collab.local_addr());
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        next_json(&mut ws).await; // CONNECTION_ESTABLISHED
        let join =
            serde_json::json!({ "type": "JOIN_PROJECT", "projectId": project, "userId": user });
        ws.send(Message::text(join.to_string())).await.unwrap();
        next_json(&mut ws).await; // USER_PRESENCE
        ws
    }

    /// The snapshot, through the API (with the token when there is one).
    async fn snapshot(&self, query: &str) -> Value {
        let r = get(self.addr(), &format!("/api/snapshot?{query}"), &self.auth()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    fn auth(&self) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {TOKEN}"))]
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// An answer read to its end.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The request head for `method path` with `Host` (the listener's own unless given) and
/// `headers`.
fn head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    close: bool,
) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        h.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        h.push_str("connection: close\r\n");
    }
    h.push_str("\r\n");
    h
}

/// Header names (lower case) and values.
type Headers = Vec<(String, String)>;

/// Split a response into status, headers and where the rest starts.
fn parse_head(raw: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, end))
}

/// A chunked body's data.
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head(addr, method, path, headers, true).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let (status, headers, end) = parse_head(&raw).expect("a response head");
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        unchunk(&raw[end..])
    } else {
        raw[end..].to_vec()
    };
    Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> Answer {
    request(addr, "GET", path, headers).await
}

/// An event stream being read.
struct Events {
    tcp: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    /// Bytes of the body received and not yet taken as chunks.
    raw: Vec<u8>,
    /// Event text de-chunked and not yet taken as events.
    text: String,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> Events {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head(addr, "GET", path, headers, false).as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        let (status, headers, end) = loop {
            if let Some(parsed) = parse_head(&raw) {
                break parsed;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
                .await
                .expect("a response head")
                .unwrap();
            assert!(n > 0, "closed before a response head");
            raw.extend_from_slice(&buf[..n]);
        };
        Events {
            tcp,
            status,
            headers,
            raw: raw[end..].to_vec(),
            text: String::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Move the complete chunks received to `text`.
    fn take_chunks(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.raw[..eol])
                .unwrap()
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16).unwrap();
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            let data = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.text.push_str(std::str::from_utf8(&data).unwrap());
            self.raw.drain(..eol + 4 + size);
        }
    }

    /// The next block (up to a blank line) of the stream, within `within`.
    async fn next_block(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.take_chunks();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(block);
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf))
                .await
                .ok()?
                .unwrap();
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// The next event (name and JSON data), skipping `retry:` and comments.
    async fn next_event(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let block = self.next_block(left).await?;
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if let Some(name) = name {
                return Some((name, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_loopback_without_a_token_the_page_and_api_are_served() {
    let s = Setup::new(None).await;
    let page = get(s.addr(), "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("switchboard inspector"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let script = get(s.addr(), "/inspector.js", &[]).await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(get(s.addr(), "/inspector.css", &[]).await.status, 200);
    assert_eq!(get(s.addr(), "/nothing", &[]).await.status, 404);

    let snap = s.snapshot("").await;
    assert_eq!(snap["systems"][0]["name"], "collab");
    assert_eq!(snap["systems"][0]["connections"], 0);
    assert_eq!(snap["selected"]["system"], "collab");
    assert!(
        snap["systems"][0]["rates"]["messages_in"].is_null(),
        "no rate from one look"
    );
    // Without a token, /login has nothing to do.
    let login = get(s.addr(), "/login?token=anything", &[]).await;
    assert_eq!((login.status, login.header("location")), (303, Some("/")));
    assert_eq!(login.header("set-cookie"), None);
}

#[tokio::test]
async fn without_a_token_only_a_loopback_host_is_answered() {
    let s = Setup::new(None).await;
    let port = s.addr().port();
    for host in [format!("evil.example:{port}"), "10.1.2.3".to_string()] {
        let r = get(s.addr(), "/api/snapshot", &[("host", host.clone())]).await;
        assert_eq!(r.status, 403, "{host}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = get(s.addr(), "/api/snapshot", &[("host", host.clone())]).await;
        assert_eq!(r.status, 200, "{host}");
    }
}

#[tokio::test]
async fn with_a_token_a_bearer_or_the_login_cookie_is_needed() {
    let s = Setup::new(Some(TOKEN)).await;
    let a = s.addr();
    let page = get(a, "/", &[]).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("name=\"token\""), "the sign-in form");
    let api = get(a, "/api/snapshot", &[]).await;
    assert_eq!(api.status, 401);
    assert!(api.body.contains("error"));
    assert_eq!(get(a, "/api/events", &[]).await.status, 401);
    assert_eq!(
        get(a, "/api/tail?system=collab&room=r", &[]).await.status,
        401
    );
    assert_eq!(
        get(a, "/inspector.css", &[]).await.status,
        200,
        "assets are public"
    );
    assert_eq!(get(a, "/login", &[]).await.status, 200);

    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let cookie = |t: &str| vec![("cookie", format!("other=1; sb_admin={t}"))];
    assert_eq!(get(a, "/api/snapshot", &bearer(TOKEN)).await.status, 200);
    assert_eq!(get(a, "/", &bearer(TOKEN)).await.status, 200);
    assert_eq!(get(a, "/api/snapshot", &cookie(TOKEN)).await.status, 200);
    let wrong = format!("{TOKEN}x");
    for token in [
        &wrong,
        &TOKEN[..TOKEN.len() - 1],
        "",
        "test-admin-token-0123456780",
    ] {
        assert_eq!(
            get(a, "/api/snapshot", &bearer(token)).await.status,
            401,
            "{token}"
        );
        assert_eq!(
            get(a, "/api/snapshot", &cookie(token)).await.status,
            401,
            "{token}"
        );
    }
    // A token-guarded listener answers any Host (the cookie is the host's own).
    let other_host = vec![
        ("host", "admin.internal:9090".to_string()),
        ("authorization", format!("Bearer {TOKEN}")),
    ];
    assert_eq!(get(a, "/api/snapshot", &other_host).await.status, 200);

    let refused = get(a, &format!("/login?token={wrong}"), &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("set-cookie"), None);
    assert!(refused.body.contains("not right"));
    let signed_in = get(a, &format!("/login?token={TOKEN}"), &[]).await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.header("location"), Some("/"));
    let set = signed_in.header("set-cookie").unwrap();
    assert_eq!(
        set,
        format!("sb_admin={TOKEN}; HttpOnly; SameSite=Strict; Path=/")
    );
    let value = set.split(';').next().unwrap().to_string();
    assert_eq!(get(a, "/", &[("cookie", value)]).await.status, 200);
}

#[tokio::test]
async fn off_loopback_the_listener_needs_a_token() {
    let process = Process::default();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = switchboard_inspector::serve(listener, &process, vec![], None).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(refused.to_string().contains("SWITCHBOARD_ADMIN_TOKEN"));
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let token = Token::new(TOKEN).unwrap();
    let admin = switchboard_inspector::serve(listener, &process, vec![], Some(token)).unwrap();
    admin.shutdown().await;
}

#[tokio::test]
async fn only_reads_are_served() {
    let s = Setup::new(None).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/", "/api/snapshot", "/login"] {
            let r = request(s.addr(), method, path, &[("content-length", "0".into())]).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }
    let page = request(s.addr(), "HEAD", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.is_empty());
    let events = request(s.addr(), "HEAD", "/api/events", &[]).await;
    assert_eq!(events.status, 200);
    assert!(events
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let tail = request(s.addr(), "HEAD", "/api/tail?system=collab&room=r", &[]).await;
    assert_eq!(tail.status, 200);
    let snap = s.snapshot("").await;
    assert_eq!(snap["process"]["streams_open"], 0, "a HEAD opens no stream");
    assert_eq!(
        snap["systems"][0]["tapped"],
        serde_json::json!([]),
        "nor a tap"
    );
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let s = Setup::new(Some(TOKEN)).await;
    let a = s.addr();
    let with =
        |k: &'static str, v: String| vec![("authorization", format!("Bearer {TOKEN}")), (k, v)];
    for site in ["cross-site", "same-site"] {
        let r = get(a, "/api/snapshot", &with("sec-fetch-site", site.into())).await;
        assert_eq!(r.status, 403, "{site}");
        let login = get(
            a,
            &format!("/login?token={TOKEN}"),
            &[("sec-fetch-site", site.into())],
        )
        .await;
        assert_eq!(login.status, 403, "a login from another site: {site}");
        assert_eq!(login.header("set-cookie"), None);
    }
    for site in ["same-origin", "none"] {
        let r = get(a, "/api/snapshot", &with("sec-fetch-site", site.into())).await;
        assert_eq!(r.status, 200, "{site}");
    }
    for origin in ["http://evil.example", "null", "https://127.0.0.1"] {
        let r = get(a, "/api/snapshot", &with("origin", origin.into())).await;
        assert_eq!(r.status, 403, "{origin}");
    }
    let own = get(a, "/api/snapshot", &with("origin", format!("http://{a}"))).await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn heads_parameters_streams_and_connections_are_bounded() {
    let s = Setup::new(None).await;
    let a = s.addr();
    let big = vec![("x-padding", "a".repeat(MAX_HEAD_BYTES))];
    assert_eq!(get(a, "/", &big).await.status, 431);
    let many: Vec<_> = (0..MAX_HEADERS)
        .map(|_| ("x-many", "1".to_string()))
        .collect();
    assert_eq!(get(a, "/", &many).await.status, 431);
    let long = "r".repeat(2000);
    let r = get(a, &format!("/api/tail?system=collab&room={long}"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(get(a, "/api/tail?system=collab", &[]).await.status, 400);
    assert_eq!(
        get(a, "/api/tail?system=nope&room=r", &[]).await.status,
        404
    );

    // MAX_STREAMS streams at once; one more is refused until one closes.
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS {
        let e = Events::open(a, "/api/events", &[]).await;
        assert_eq!(e.status, 200);
        open.push(e);
    }
    let refused = get(a, "/api/events", &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(
        get(a, "/api/tail?system=collab&room=r", &[]).await.status,
        503,
        "tails count too"
    );
    let snap = s.snapshot("").await;
    assert_eq!(snap["process"]["streams_open"], MAX_STREAMS);
    drop(open.pop());
    eventually("a closed stream frees its place", || async {
        get(a, "/api/snapshot", &[])
            .await
            .body
            .contains(&format!("\"streams_open\":{}", MAX_STREAMS - 1))
    })
    .await;
    let again = Events::open(a, "/api/events", &[]).await;
    assert_eq!(again.status, 200);
    drop(open);
    drop(again);

    // MAX_CONNECTIONS connections at once; one more is answered 503 and closed.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(a).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(a).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, extra.read_to_end(&mut raw))
        .await
        .expect("closed at once")
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 503"));
    drop(idle);
    eventually("connections free their places", || async {
        TcpStream::connect(a).await.is_ok() && get(a, "/api/snapshot", &[]).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn events_are_snapshots_with_rates_rooms_and_connections() {
    let s = Setup::new(None).await;
    let mut events = Events::open(s.addr(), "/api/events?system=collab", &[]).await;
    assert_eq!(events.status, 200);
    assert_eq!(
        events.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(events.header("cache-control"), Some("no-store"));
    let first = events.next_block(WAIT).await.unwrap();
    assert_eq!(first, "retry: 2000\n\n");
    let block = events.next_block(WAIT).await.unwrap();
    assert!(block.starts_with("event: snapshot\ndata: {"), "{block}");
    assert!(block.ends_with("}\n\n"));
    assert_eq!(block.matches('\n').count(), 3, "one data line");

    let mut a = s.member("ada", "p-1").await;
    let _b = s.member("grace", "p-1").await;
    let update = serde_json::json!({"type": "TASK_UPDATE", "projectId": "p-1", "taskId": "t", "changes": {}});
    for _ in 0..5 {
        a.send(Message::text(update.to_string())).await.unwrap();
    }
    let mut seen = None;
    for _ in 0..5 {
        let (name, snap) = events.next_event(WAIT).await.unwrap();
        assert_eq!(name, "snapshot");
        let system = &snap["systems"][0];
        if system["connections"] == 2 && system["totals"]["messages_in"].as_u64() >= Some(7) {
            seen = Some(snap);
            break;
        }
    }
    let snap = seen.expect("the clients in a snapshot");
    let system = &snap["systems"][0];
    assert_eq!(system["rooms"], 1);
    assert!(system["rates"]["messages_in"].as_f64().is_some());
    assert_eq!(snap["selected"]["rooms"][0]["name"], "project:p-1");
    assert_eq!(snap["selected"]["rooms"][0]["members"], 2);
    let conns = snap["selected"]["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0]["user"], "ada", "oldest first");
    assert_eq!(conns[0]["rooms"], 1);

    // A search that matches nothing lists nothing, and says so.
    let none = s.snapshot("system=collab&q=nothing-like-it").await;
    assert_eq!(none["selected"]["rooms"], serde_json::json!([]));
    assert_eq!(none["selected"]["rooms_matching"], 0);
    assert_eq!(none["selected"]["rooms_total"], 1);
    let some = s.snapshot("system=collab&q=P-1").await;
    assert_eq!(some["selected"]["rooms_matching"], 1);

    // One connection in detail.
    let id = conns[0]["id"].as_u64().unwrap();
    let detail = get(
        s.addr(),
        &format!("/api/connection?system=collab&id={id}"),
        &[],
    )
    .await;
    assert_eq!(detail.status, 200);
    let detail: Value = serde_json::from_str(&detail.body).unwrap();
    assert_eq!(detail["user"], "ada");
    assert_eq!(detail["room_names"], serde_json::json!(["project:p-1"]));
    assert_eq!(detail["filter"], serde_json::json!([]));
    assert!(detail["age_secs"].is_u64() && detail["queued_bytes"].is_u64());
    let path = "/api/connection?system=collab&id=999999";
    assert_eq!(get(s.addr(), path, &[]).await.status, 404);
    let path = "/api/connection?system=collab&id=x";
    assert_eq!(get(s.addr(), path, &[]).await.status, 400);

    // The room goes when its members leave.
    drop(a);
    drop(_b);
    eventually("the room is gone", || async {
        s.snapshot("system=collab").await["selected"]["rooms"] == serde_json::json!([])
    })
    .await;
}

#[tokio::test]
async fn the_tail_is_sampled_cut_short_and_on_only_while_watched() {
    let s = Setup::new(None).await;
    let mut tail = Events::open(s.addr(), "/api/tail?system=collab&room=project:p-1", &[]).await;
    assert_eq!(tail.status, 200);
    let (name, started) = tail.next_event(WAIT).await.unwrap();
    assert_eq!(name, "tail");
    assert_eq!(started["room"], "project:p-1");
    assert_eq!(started["per_second"], 10);
    assert_eq!(started["max_bytes"], 256);
    let snap = s.snapshot("").await;
    assert_eq!(
        snap["systems"][0]["tapped"],
        serde_json::json!(["project:p-1"])
    );

    // 100 publications at once, each far longer than what is shown.
    let hub = s.system.hub();
    let text = "x".repeat(1000);
    let began = Instant::now();
    for i in 0..100 {
        let frame = serde_json::json!({"type": "TASK_UPDATE", "n": i, "text": text}).to_string();
        hub.publish(Publication::to_room("project:p-1", frame))
            .await
            .unwrap();
    }
    let (name, first) = tail.next_event(WAIT).await.unwrap();
    assert_eq!(name, "publication");
    assert_eq!(first["room"], "project:p-1");
    assert_eq!(first["truncated"], true);
    assert!(first["bytes"].as_u64().unwrap() > 1000);
    let payload = first["payload"].as_str().unwrap();
    assert!(payload.len() <= 256, "{}", payload.len());
    assert!(
        payload.starts_with(r#"{"n":0,"text":"xxx"#),
        "the first one, its start: {payload}"
    );
    let mut shown = 1;
    while let Some((_, e)) = tail.next_event(Duration::from_millis(300)).await {
        assert_eq!(e["truncated"], true);
        shown += 1;
    }
    let most = (began.elapsed().as_secs_f64() * 10.0).ceil() as usize + 1;
    assert!(
        shown <= most,
        "{shown} shown, at most {most} at ten a second"
    );
    assert!(shown < 100, "sampled, not every publication");

    // A later one shows how many were passed over.
    tokio::time::sleep(Duration::from_millis(150)).await;
    hub.publish(Publication::to_room("project:p-1", r#"{"last":true}"#))
        .await
        .unwrap();
    let (_, last) = tail.next_event(WAIT).await.unwrap();
    assert_eq!(last["payload"], r#"{"last":true}"#);
    assert_eq!(last["truncated"], false);
    assert!(last["skipped"].as_u64().unwrap() > 0);

    // Nobody watching: the room is untapped.
    drop(tail);
    eventually("the room is untapped once nobody watches", || async {
        s.snapshot("").await["systems"][0]["tapped"] == serde_json::json!([])
    })
    .await;
}
