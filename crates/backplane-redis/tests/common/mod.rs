//! Test harness: a private redis-server, hub nodes joined by backplanes, WebSocket clients.
#![allow(dead_code)] // Each test file uses a different part of it.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_backplane_redis::history::HistoryKeys;
use switchboard_backplane_redis::{
    replication_channel, Backplane, NodeId, Options as BackplaneOptions, Replication, Status,
};
use switchboard_hub::{Config, HttpRequest, HttpResponse, Method};
use switchboard_protocol::Options;
use switchboard_runtime::gate::JwtKeys;
use switchboard_runtime::{Endpoint, HubHandle, Process, System};
use switchboard_tokio::Server;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Every wait in these tests gives up after this long.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing else arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A free TCP port on the loopback interface (bound, then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server child process on a fixed port, no persistence, killed (SIGKILL) on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Start one on a free port.
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    /// Start one on `port` and wait until it answers PING.
    pub async fn start_on(port: u16) -> Redis {
        let mut r = Redis { port, child: None };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Kill it with SIGKILL (as `kill -9`) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/ensure-redis.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(mut c) = self.connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection for the test's own queries. Its timeouts are the tests' [`WAIT`], not the
    /// client's defaults (1 s to connect, 0.5 s per reply), which a loaded CI machine exceeds.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(WAIT))
            .set_response_timeout(Some(WAIT));
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// `PUBSUB NUMSUB channel`: how many connections are subscribed to it.
    pub async fn numsub(&self, channel: &str) -> u64 {
        let mut c = self.connection().await.expect("connect to test redis");
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await
            .expect("PUBSUB NUMSUB");
        n
    }

    /// `PUBSUB CHANNELS pattern`.
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut c = self.connection().await.expect("connect to test redis");
        let mut v: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query_async(&mut c)
            .await
            .expect("PUBSUB CHANNELS");
        v.sort();
        v
    }

    /// Wait until `channel` has exactly `n` subscribers.
    pub async fn wait_numsub(&self, channel: &str, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.numsub(channel).await;
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{channel}: {got} subscribers, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// One node: a WebSocket server for one system and its backplane.
pub struct Node {
    pub server: Server,
    pub backplane: Backplane,
}

impl Node {
    /// Start a node for `system` replicating through Redis at `redis_url`.
    pub async fn start(
        system: &str,
        redis_url: &str,
        options: &Options,
        jwt: Option<&str>,
    ) -> Node {
        Self::start_filtered(system, redis_url, options, jwt, false).await
    }

    /// As [`Node::start`]; with `lose_room_events` the room events the hub emits never reach the
    /// backplane (as when the replication channel is full), so only reconciliation finds rooms.
    pub async fn start_filtered(
        system: &str,
        redis_url: &str,
        options: &Options,
        jwt: Option<&str>,
        lose_room_events: bool,
    ) -> Node {
        Self::start_with(
            system,
            redis_url,
            options,
            jwt,
            lose_room_events,
            Config::default(),
        )
        .await
    }

    /// As [`Node::start_filtered`], with the hub's `config` (history, say).
    pub async fn start_with(
        system: &str,
        redis_url: &str,
        options: &Options,
        jwt: Option<&str>,
        lose_room_events: bool,
        config: Config,
    ) -> Node {
        let spec = switchboard_protocol::system(system).expect("a known system");
        let mut endpoint = Endpoint::from_env(spec);
        endpoint.jwt = jwt.map(JwtKeys::single).unwrap_or_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, mut rx) = replication_channel();
        let process = Process::default();
        let system = System::start(
            endpoint,
            options.clone(),
            config.clone(),
            process.clock.clone(),
            Some(tx),
        );
        let server = switchboard_tokio::serve(&process, listener, system).unwrap();
        if lose_room_events {
            let (filtered_tx, filtered_rx) = replication_channel();
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    if matches!(r, Replication::Publish(_)) && filtered_tx.send(r).await.is_err() {
                        return;
                    }
                }
            });
            rx = filtered_rx;
        }
        let keys = config
            .history
            .as_ref()
            .filter(|h| h.shared)
            .map(|h| HistoryKeys::new(spec.name, h.limits.max_entries, h.limits.max_age));
        let options = BackplaneOptions {
            history: keys,
            every_room: false,
        };
        let backplane = Backplane::spawn_with(
            redis_url,
            NodeId::random(),
            spec.name,
            server.hub().clone(),
            rx,
            options,
        )
        .expect("a valid Redis URL");
        Node { server, backplane }
    }

    pub fn hub(&self) -> &HubHandle {
        self.server.hub()
    }

    pub fn status(&self) -> Status {
        self.backplane.status()
    }

    /// Open a WebSocket to `path_and_query` (e.g. `/ws?sessionId=x`).
    pub async fn connect(&self, path_and_query: &str) -> Ws {
        let url = format!("ws://{}{}", self.server.local_addr(), path_and_query);
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect within the wait")
            .expect("upgrade accepted")
            .0
    }

    /// Open a protocol v2 WebSocket (subprotocol `switchboard.v2`) to `path_and_query`.
    pub async fn connect_v2(&self, path_and_query: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}{}", self.server.local_addr(), path_and_query);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "switchboard.v2".parse().unwrap());
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect within the wait")
            .expect("upgrade accepted")
            .0
    }

    /// Wait until the hub has `n` open connections.
    pub async fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.hub().stats().await.unwrap().connections;
            if got == n {
                return;
            }
            assert!(Instant::now() < deadline, "{got} connections, expected {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An HTTP request to the system's protocol, as the HTTP transport would hand it over.
    pub async fn http(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> HttpResponse {
        let headers = key
            .map(|k| vec![("x-api-key".to_string(), k.to_string())])
            .unwrap_or_default();
        let req = HttpRequest {
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers,
            body: body.to_string().into(),
        };
        self.hub()
            .http(req)
            .await
            .expect("hub running")
            .expect("the protocol answers this path")
    }
}

/// Start `n` nodes for `system` on one Redis and wait until all are connected.
pub async fn cluster(
    redis: &Redis,
    system: &str,
    n: usize,
    options: &Options,
    jwt: Option<&str>,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start(system, &redis.url(), options, jwt).await);
    }
    wait_connected(&nodes).await;
    nodes
}

/// Wait until every node's backplane reports both connections up.
pub async fn wait_connected(nodes: &[Node]) {
    wait_for("every backplane connected", || {
        nodes.iter().all(|n| n.status().connected)
    })
    .await;
}

/// Poll `cond` every 10 ms until it holds (panics after [`WAIT`]).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next text frame as JSON (pings skipped), within [`WAIT`].
pub async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next text frame, within [`WAIT`].
pub async fn next_text(ws: &mut Ws) -> String {
    match try_next_text(ws, WAIT).await {
        Some(t) => t,
        None => panic!("no frame within {WAIT:?}"),
    }
}

/// The next text frame within `within`, or `None`.
pub async fn try_next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match msg.expect("stream open").expect("no socket error") {
            Message::Text(t) => return Some(t.to_string()),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next JSON frame whose `type` is `ty`, skipping others (e.g. presence), within [`WAIT`].
pub async fn next_of_type(ws: &mut Ws, ty: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(text) = try_next_text(ws, left).await else {
            panic!("no `{ty}` frame within {WAIT:?}");
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == ty {
            return v;
        }
    }
}

/// Read frames for [`QUIET`] and return those for which `relevant` holds.
pub async fn drain_matching(ws: &mut Ws, relevant: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + QUIET;
    let mut got = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = msg.expect("no socket error") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if relevant(&v) {
                got.push(v);
            }
        }
    }
    got
}

/// Assert that no text frame arrives for [`QUIET`].
pub async fn assert_quiet(ws: &mut Ws) {
    if let Some(t) = try_next_text(ws, QUIET).await {
        panic!("expected no frame, got {t}");
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}
