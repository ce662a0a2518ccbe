//! The backplane over three Redis instances (issue 14), with real processes: two race nodes
//! given the same three URLs, v2 clients following sessions whose streams land on every
//! instance, and one instance killed with SIGKILL. What must hold: each stream's keys are on
//! its own instance only; the sessions of the instances that stay keep flowing between the
//! nodes, and a client that resumes on the other node gets what it missed with no gap and no
//! duplicate; the clients of the killed instance's sessions are told they did not recover; the
//! nodes report the instance down, the others up.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard_backplane_redis::Instances;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{get, post_with_key};
use crate::processes::{free_port, redis, wait_listening, wait_until_up, BIN};
use crate::support::{try_connect, API_KEY};

/// Every wait here is bounded by this (a loaded two-core machine; nothing is asserted below it).
const WITHIN: Duration = Duration::from_secs(30);

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A race node on `port` joined through every Redis of `redis` (the same list everywhere).
fn node(port: u16, redis: &[u16]) -> Child {
    command(port, redis)
        .env("LOG_LEVEL", "error")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the switchboard binary")
}

/// The command of a race node on `port` joined through every Redis of `redis`, in that order.
fn command(port: u16, redis: &[u16]) -> Command {
    let urls: Vec<String> = redis
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let mut c = Command::new(BIN);
    c.args([
        "--systems",
        "race",
        "--bind",
        "127.0.0.1",
        "--admin-bind",
        "off",
    ])
    .args(["--race-port", &port.to_string()])
    .args(["--redis-url", &urls.join(",")])
    .env("RACE_API_KEY", API_KEY)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .kill_on_drop(true);
    c
}

/// One Redis command over a fresh connection (RESP), its whole first reply line.
async fn redis_command(port: u16, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr(port)).await.ok()?;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut reply = vec![0u8; 256];
        let n = tcp.read(&mut reply).await.ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    session: Option<String>,
    /// The epoch and offset of the last publication (or of the subscription's top).
    position: Option<(String, u64)>,
    /// The `n` of every update received, in order.
    ns: Vec<u64>,
    /// Publications whose offset was not the one after the last (same epoch).
    out_of_order: usize,
    gaps: usize,
    /// Every `subscribed` frame of the stream.
    subscribed: Vec<Value>,
}

/// A v2 client following one race session on one node, with what it saw.
struct Follower {
    race: String,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Follow `race` on `node`; with `from`, resume from that client's session and position.
    async fn start(node: SocketAddr, race: &str, from: Option<&Follower>) -> Follower {
        let mut path = format!("/ws?sessionId={race}");
        let seen = Arc::new(Mutex::new(Seen::default()));
        if let Some(before) = from {
            let before = before.seen.lock().unwrap();
            let session = before.session.clone().expect("a session");
            let (epoch, offset) = before.position.clone().expect("a position");
            path.push_str(&format!(
                "&sb_session={session}&sb_since=session:{race}~{epoch}~{offset}"
            ));
            let mut s = seen.lock().unwrap();
            s.position = Some((epoch, offset));
            s.ns = before.ns.clone();
        }
        let v2 = [("Sec-WebSocket-Protocol", "switchboard.v2")];
        let mut ws = try_connect(node, &path, &v2).await.expect("connect");
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let v: Value = serde_json::from_str(&text).expect("v2 frames are JSON");
                let mut s = s.lock().unwrap();
                match v["sb"].as_str() {
                    Some("session") => s.session = v["session"].as_str().map(str::to_string),
                    Some("subscribed") => {
                        if let (Some(e), Some(o)) = (v["epoch"].as_str(), v["offset"].as_u64()) {
                            if s.position.is_none() {
                                s.position = Some((e.to_string(), o));
                            }
                        }
                        s.subscribed.push(v);
                    }
                    Some("pub") => {
                        let epoch = v["epoch"].as_str().unwrap().to_string();
                        let offset = v["offset"].as_u64().unwrap();
                        if matches!(&s.position, Some((e, o)) if *e == epoch && offset != o + 1) {
                            s.out_of_order += 1;
                        }
                        s.position = Some((epoch, offset));
                        s.ns.push(v["msg"]["data"]["n"].as_u64().unwrap());
                    }
                    Some("gap") => s.gaps += 1,
                    _ => {}
                }
            }
        });
        let follower = Follower {
            race: race.to_string(),
            seen,
            task,
        };
        let started = Instant::now();
        while follower.seen.lock().unwrap().subscribed.is_empty() {
            assert!(started.elapsed() < WITHIN, "{race} never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower
    }

    fn has(&self, upto: u64) -> bool {
        let s = self.seen.lock().unwrap();
        (1..=upto).all(|n| s.ns.contains(&n))
    }
}

/// Post updates `ns` to every session of `races` on `node`; each must be accepted (a session of
/// a lost instance is too: it reaches that node's own clients).
async fn publish(node: SocketAddr, races: &[&str], ns: std::ops::RangeInclusive<u64>) {
    for n in ns {
        for race in races {
            let body = json!({"type": "lap_update", "data": {"n": n}});
            let reply = post_with_key(node, &format!("/sessions/{race}/updates"), &body).await;
            assert_eq!(reply.status, 202, "{race} #{n}: {}", reply.text());
        }
    }
}

/// Wait (bounded) until every follower has updates 1..=upto.
async fn until_all_have(followers: &[&Follower], upto: u64) {
    let started = Instant::now();
    while !followers.iter().all(|f| f.has(upto)) {
        let missing: Vec<&str> = followers
            .iter()
            .filter(|f| !f.has(upto))
            .map(|f| f.race.as_str())
            .collect();
        assert!(
            started.elapsed() < WITHIN,
            "{missing:?} never got 1..={upto}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (bounded) until `node`'s backplane reports `state`, and return its health.
async fn until_state(node: SocketAddr, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let health = get(node, "/health").await.json();
        if health["backplane"]["state"] == state {
            return health;
        }
        assert!(started.elapsed() < WITHIN, "{node} never {state}: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes, three Redis instances, two sessions per instance; the first instance is killed.
#[tokio::test]
async fn losing_one_redis_instance_costs_only_its_streams() {
    let _one = crate::one_at_a_time().await;
    let redis_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut redises: Vec<Child> = redis_ports.iter().map(|&p| redis(p)).collect();
    let ports = [free_port(), free_port()];
    let _nodes: Vec<Child> = ports.iter().map(|&p| node(p, &redis_ports)).collect();
    let (a, b) = (addr(ports[0]), addr(ports[1]));
    for n in [a, b] {
        wait_listening(n).await;
        wait_until_up(n).await;
    }
    // Two sessions per instance, by the routing every node uses.
    let names: Vec<String> = redis_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let instances = Instances::new(&names).unwrap();
    let mut by_instance: Vec<Vec<String>> = vec![Vec::new(); 3];
    for k in 0.. {
        let race = format!("gp-{k}");
        let home = instances.of(&format!("session:{race}"));
        if by_instance[home].len() < 2 {
            by_instance[home].push(race);
        }
        if by_instance.iter().all(|r| r.len() == 2) {
            break;
        }
    }
    let lost: Vec<&str> = by_instance[0].iter().map(String::as_str).collect();
    let kept: Vec<&str> = by_instance[1..]
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let all: Vec<&str> = lost.iter().chain(kept.iter()).copied().collect();

    // Clients on node B; updates posted on node A travel through each session's instance.
    let mut on_b = Vec::new();
    for race in &all {
        on_b.push(Follower::start(b, race, None).await);
    }
    publish(a, &all, 1..=5).await;
    until_all_have(&on_b.iter().collect::<Vec<_>>(), 5).await;
    // Each stream's keys (and so its appends, whose script publishes on its channel) are on its
    // own instance only.
    for (home, races) in by_instance.iter().enumerate() {
        for race in races {
            let key = format!("sb:race:hm:session:{race}");
            for (i, &port) in redis_ports.iter().enumerate() {
                let found = redis_command(port, &["EXISTS", &key]).await;
                let expected = if i == home { ":1" } else { ":0" };
                assert_eq!(found, expected, "{key} on instance {i}");
            }
        }
    }

    // Instance 0 dies.
    redises[0].start_kill().unwrap();
    let _ = redises[0].wait().await;
    for n in [a, b] {
        let health = until_state(n, "degraded").await;
        let each = health["backplane"]["instances"].as_array().unwrap().clone();
        assert_eq!(each.len(), 3, "{health}");
        assert_eq!(each[0]["address"], names[0].as_str());
        assert_eq!(each[0]["state"], "down", "{health}");
        assert_eq!(
            (each[1]["state"].as_str(), each[2]["state"].as_str()),
            (Some("up"), Some("up")),
            "{health}"
        );
    }
    let metrics = get(a, "/metrics").await.text();
    let up = |i: usize, v: u8| {
        format!(
            "switchboard_backplane_instance_up{{system=\"race\",redis=\"{}\"}} {v}",
            names[i]
        )
    };
    assert!(metrics.contains(&up(0, 0)), "{metrics}");
    assert!(metrics.contains(&up(1, 1)) && metrics.contains(&up(2, 1)));

    // The other instances' sessions keep flowing (every session is still accepted on A).
    publish(a, &all, 6..=10).await;
    let kept_on_b: Vec<&Follower> = on_b
        .iter()
        .filter(|f| kept.contains(&f.race.as_str()))
        .collect();
    until_all_have(&kept_on_b, 10).await;

    // Every client drops; what is posted meanwhile, each resumes on node A.
    for f in &on_b {
        f.task.abort();
    }
    publish(a, &kept, 11..=15).await;
    let mut on_a = Vec::new();
    for f in &on_b {
        on_a.push(Follower::start(a, &f.race, Some(f)).await);
    }
    // Back the other way: posted on B, for the clients now on A.
    publish(b, &kept, 16..=20).await;
    let kept_on_a: Vec<&Follower> = on_a
        .iter()
        .filter(|f| kept.contains(&f.race.as_str()))
        .collect();
    until_all_have(&kept_on_a, 20).await;

    for f in &on_a {
        let s = f.seen.lock().unwrap();
        let resumed = &s.subscribed[0];
        if kept.contains(&f.race.as_str()) {
            assert_eq!(resumed["recovered"], true, "{}: {resumed}", f.race);
            assert_eq!(
                s.ns,
                (1..=20).collect::<Vec<u64>>(),
                "{}: no gap, no duplicate",
                f.race
            );
            assert_eq!((s.out_of_order, s.gaps), (0, 0), "{}", f.race);
        } else {
            assert_eq!(resumed["recovered"], false, "{}: {resumed}", f.race);
            assert_eq!(resumed["reason"], "unavailable", "{}: {resumed}", f.race);
        }
    }
    for f in on_a {
        f.task.abort();
    }
    // Node-wide state holds without instance 0: after two more lease renewals (every 2 s) on
    // the instances left, each node still counts the other one live (the union of their views).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in [a, b] {
        let health = get(n, "/health").await.json();
        assert_eq!(health["backplane"]["nodes"], 1, "{n}: {health}");
        assert_eq!(health["backplane"]["state"], "degraded", "{n}: {health}");
    }
    println!(
        "shards: 3 Redis instances, 2 nodes; instance 0 killed: {} sessions resumed with nothing \
         lost, {} told they did not recover",
        kept.len(),
        lost.len()
    );
}

/// Two nodes given different sets of instances sharing one (`[r0, r1]` and `[r1, r2]`, which
/// route streams differently): each logs that another node of the cluster was given a
/// different list (read from its own log, bounded).
#[tokio::test]
async fn nodes_given_different_lists_say_so() {
    use tokio::io::AsyncBufReadExt;
    let _one = crate::one_at_a_time().await;
    let redis_ports = [free_port(), free_port(), free_port()];
    let _redises: Vec<Child> = redis_ports.iter().map(|&p| redis(p)).collect();
    let ports = [free_port(), free_port()];
    let lists = [
        [redis_ports[0], redis_ports[1]],
        [redis_ports[1], redis_ports[2]],
    ];
    let mut nodes = Vec::new();
    for (port, list) in ports.iter().zip(lists) {
        let child = command(*port, &list)
            .env("LOG_LEVEL", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the switchboard binary");
        nodes.push(child);
    }
    for node in &mut nodes {
        let mut lines = tokio::io::BufReader::new(node.stderr.take().unwrap()).lines();
        let warned = tokio::time::timeout(WITHIN, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("was given a different list of Redis URLs") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(warned, Ok(true), "a node never said its list differs");
    }
}
