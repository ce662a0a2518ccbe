//! Cross-node latency: two laptimes nodes joined through a redis-server on loopback. A client on
//! node A sends numbered change notices at a fixed rate; a client on node A (local path) and a
//! client on node B (through Redis) receive them. Prints median, p99 and max of each path.
//!
//! ```text
//! cargo run --release -p switchboard-backplane-redis --example cross_node_latency
//! BENCH_N=5000 BENCH_RATE=1000 REDIS_URL=redis://127.0.0.1:6379/ cargo run --release ...
//! ```
//!
//! Without `REDIS_URL` it starts its own `redis-server` from PATH (no persistence) on a free
//! port. The inbound rate limit is switched off so one client can send at the chosen rate.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchboard_backplane_redis::{replication_channel, Backplane, NodeId};
use switchboard_hub::Config;
use switchboard_runtime::{Endpoint, Process, System};
use switchboard_tokio::Server;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_redis() -> (String, Option<KillOnDrop>) {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return (url, None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/ensure-redis.sh installs it)");
    let guard = KillOnDrop(child);
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    for _ in 0..250 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                return (url, Some(guard));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start");
}

async fn node(url: &str) -> (Server, Backplane) {
    let spec = switchboard_protocol::system("laptimes").unwrap();
    let mut config = Config::default();
    config.limits.inbound_rate = None;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = replication_channel();
    let process = Process::default();
    let system = System::start(
        Endpoint::from_env(spec),
        Default::default(),
        config,
        process.clock.clone(),
        Some(tx),
    );
    let server = switchboard_tokio::serve(&process, listener, system).unwrap();
    let bp = Backplane::spawn(url, NodeId::random(), spec.name, server.hub().clone(), rx).unwrap();
    (server, bp)
}

async fn connect(server: &Server) -> Ws {
    let url = format!("ws://{}/", server.local_addr());
    // TCP_NODELAY on the client too, so Nagle's algorithm does not hold back small frames.
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap()
        .0
}

/// Receive `n` notices and return each one's latency in microseconds (by its `n`).
async fn receive(mut ws: Ws, n: usize, start: Instant) -> Vec<Option<u64>> {
    let mut lat = vec![None; n];
    let mut got = 0;
    while got < n {
        let msg = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => break,
        };
        let Message::Text(t) = msg else { continue };
        let now = start.elapsed().as_micros() as u64;
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let (i, sent) = (v["n"].as_u64().unwrap() as usize, v["t"].as_u64().unwrap());
        lat[i] = Some(now - sent);
        got += 1;
    }
    lat
}

fn report(name: &str, lat: &[Option<u64>]) {
    let mut v: Vec<u64> = lat.iter().flatten().copied().collect();
    v.sort_unstable();
    if v.is_empty() {
        println!("{name}: nothing received");
        return;
    }
    let pct = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "{name:<28} received {:>5}/{:<5} median {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        v.len(),
        lat.len(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        *v.last().unwrap() as f64 / 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let n = env_usize("BENCH_N", 2000);
    let rate = env_usize("BENCH_RATE", 500).max(1);
    let (url, _redis) = start_redis().await;
    let (a, bp_a) = node(&url).await;
    let (b, bp_b) = node(&url).await;
    for _ in 0..500 {
        if bp_a.status().connected && bp_b.status().connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        bp_a.status().connected && bp_b.status().connected,
        "backplanes up"
    );
    let mut sender = connect(&a).await;
    let local = connect(&a).await;
    let remote = connect(&b).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // Let both hubs register the clients.

    let start = Instant::now();
    let local_rx = tokio::spawn(receive(local, n, start));
    let remote_rx = tokio::spawn(receive(remote, n, start));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..n {
        tick.tick().await;
        let t = start.elapsed().as_micros() as u64;
        let notice = format!(r#"{{"table":"bench","operation":"CHANGE","n":{i},"t":{t}}}"#);
        sender.send(Message::text(notice)).await.unwrap();
    }
    let local = local_rx.await.unwrap();
    let remote = remote_rx.await.unwrap();
    println!(
        "{n} notices at {rate}/s, laptimes relay, loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    report("node A -> node A (local)", &local);
    report("node A -> node B (Redis)", &remote);
    let (sa, sb) = (bp_a.status(), bp_b.status());
    println!(
        "backplane A: published {} dropped {}; backplane B: received {} missed {}",
        sa.published, sa.dropped_while_down, sb.received, sb.missed
    );
}
