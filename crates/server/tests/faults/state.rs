//! Cluster-wide state with real processes (issue 13): two `switchboard` nodes (collab and DCDock)
//! and one real `redis-server`. `/stats`, `/health`, `/api/ws/stats` and collab presence count
//! both nodes; a node killed with SIGKILL is gone from the other's presence (a `USER_PRESENCE`
//! comes) and counts within its lease. Every wait is bounded; the time the kill took to show
//! is printed for the notes, never asserted below the bound.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::http::get;
use crate::processes::{free_port, redis, wait_listening, BIN};
use crate::support::{connect, dcdock_client, expect_type, send_json, Ws, JWT_SECRET};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// The lease (10 s; a dead node leaves every read within it) and room for a loaded two-core
/// machine.
const GONE_WITHIN: Duration = Duration::from_secs(20);

/// A node serving collab and DCDock on these ports, joined through the Redis on `redis_port`,
/// its inspector on `admin`.
fn node(collab: u16, dcdock: u16, redis_port: u16, admin: u16) -> Child {
    Command::new(BIN)
        .args(["--systems", "collab,dcdock", "--bind", "127.0.0.1"])
        .args(["--admin-bind", &format!("127.0.0.1:{admin}")])
        .args(["--collab-port", &collab.to_string()])
        .args(["--dcdock-port", &dcdock.to_string()])
        .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
        .env("DCDOCK_JWT_SECRET", JWT_SECRET)
        .env("LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the switchboard binary")
}

/// A collab member of `project` as `user`: its client id.
async fn member(at: SocketAddr, project: &str, user: &str) -> (Ws, String) {
    let mut ws = connect(at, "/ws").await;
    let hello = expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
    let id = hello["clientId"].as_str().unwrap().to_string();
    send_json(
        &mut ws,
        json!({"type": "JOIN_PROJECT", "projectId": project, "userId": user}),
    )
    .await;
    (ws, id)
}

/// The users of presence frames, until one lists exactly `users` (bounded by `within`).
async fn presence_until(ws: &mut Ws, users: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no USER_PRESENCE listing {users:?} within {within:?}"))
            .expect("the stream is open")
            .expect("no socket error");
        let Message::Text(text) = message else {
            continue; // Pings.
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] != "USER_PRESENCE" {
            continue;
        }
        let listed: Vec<&str> = frame["payload"]["activeUsers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userId"].as_str().unwrap())
            .collect();
        if listed == users {
            return frame;
        }
    }
}

/// Poll `path` until `check` holds (bounded by `within`); the last answer.
async fn poll_until(
    at: SocketAddr,
    path: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = get(at, path).await.json();
        if check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on {at} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stats_and_presence_count_every_node_and_a_killed_one_leaves_within_its_lease() {
    let _one = crate::one_at_a_time().await;
    let redis_port = free_port();
    let _redis = redis(redis_port);
    let (collab_a, dcdock_a, collab_b, dcdock_b) =
        (free_port(), free_port(), free_port(), free_port());
    let (admin_a, admin_b) = (free_port(), free_port());
    let _a = node(collab_a, dcdock_a, redis_port, admin_a);
    let mut b = node(collab_b, dcdock_b, redis_port, admin_b);
    for port in [collab_a, dcdock_a, collab_b, dcdock_b] {
        wait_listening(addr(port)).await;
    }
    let (ca, cb) = (addr(collab_a), addr(collab_b));
    // Both nodes have renewed their lease and read the other's.
    for at in [ca, cb] {
        poll_until(at, "/health", GONE_WITHIN, |h| h["backplane"]["nodes"] == 1).await;
    }

    // Collab: alice on A, bob on B, in one project; each sees both.
    let (mut alice, alice_id) = member(ca, "p-1", "alice").await;
    presence_until(&mut alice, &["alice"], GONE_WITHIN).await;
    let (mut bob, bob_id) = member(cb, "p-1", "bob").await;
    let seen_by_bob = presence_until(&mut bob, &["alice", "bob"], GONE_WITHIN).await;
    assert_eq!(seen_by_bob["payload"]["userCount"], 2, "{seen_by_bob}");
    let seen_by_alice = presence_until(&mut alice, &["alice", "bob"], GONE_WITHIN).await;
    let ids: Vec<&str> = seen_by_alice["payload"]["activeUsers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["clientId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alice_id.as_str(), bob_id.as_str()]);
    // An anonymous member on B: counted in /stats, not listed in presence.
    let (mut anon, anon_id) = {
        let mut ws = connect(cb, "/ws").await;
        let hello = expect_type(&mut ws, "CONNECTION_ESTABLISHED").await;
        send_json(&mut ws, json!({"type": "JOIN_PROJECT", "projectId": "p-2"})).await;
        (ws, hello["clientId"].as_str().unwrap().to_string())
    };
    expect_type(&mut anon, "USER_PRESENCE").await;

    // DCDock: one board on A, two on B.
    let (_d1, ack1) = dcdock_client(addr(dcdock_a), 1).await;
    let (_d2, _) = dcdock_client(addr(dcdock_b), 2).await;
    let (_d3, _) = dcdock_client(addr(dcdock_b), 3).await;

    // Every node's figures, from either node (summaries are read every 2 s).
    for at in [ca, cb] {
        let stats = poll_until(at, "/stats", GONE_WITHIN, |s| s["totalClients"] == 3).await;
        assert_eq!(stats["totalProjects"], 2, "{stats}");
        let p1 = &stats["projectStats"]["p-1"];
        assert_eq!(p1["clientCount"], 2, "{stats}");
        assert_eq!(p1["clients"], json!([alice_id, bob_id]), "{stats}");
        assert_eq!(stats["projectStats"]["p-2"]["clients"], json!([anon_id]));
        let health = get(at, "/health").await.json();
        assert_eq!(
            (health["clients"].clone(), health["projects"].clone()),
            (json!(3), json!(2))
        );
    }
    for port in [dcdock_a, dcdock_b] {
        let stats = poll_until(addr(port), "/api/ws/stats", GONE_WITHIN, |s| {
            s["active_connections"] == 3
        })
        .await;
        let clients = stats["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 3, "{stats}");
        assert!(
            clients.iter().any(|c| c["client_id"] == ack1["client_id"]),
            "{stats}"
        );
        assert!(stats.get("truncated").is_none(), "{stats}");
    }

    // The inspector's overview: every node's connections, beside this node's own.
    let card = |snapshot: &Value, system: &str| {
        snapshot["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == system)
            .cloned()
            .unwrap()
    };
    let overview = poll_until(addr(admin_a), "/api/snapshot", GONE_WITHIN, |s| {
        card(s, "collab")["cluster"]["connections"] == 3
    })
    .await;
    let collab = card(&overview, "collab");
    assert_eq!(
        (
            collab["connections"].clone(),
            collab["cluster"]["nodes"].clone()
        ),
        (json!(1), json!(2))
    );
    assert_eq!(
        card(&overview, "dcdock")["cluster"]["connections"],
        3,
        "{overview}"
    );

    // B is killed: no close frames, no goodbye. Alice hears that bob left, and A's counts drop
    // back to A's own, within the lease.
    b.start_kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let after = presence_until(&mut alice, &["alice"], GONE_WITHIN).await;
    let presence_took = killed.elapsed();
    assert_eq!(after["payload"]["userCount"], 1, "{after}");
    let stats = poll_until(ca, "/stats", GONE_WITHIN, |s| s["totalClients"] == 1).await;
    assert_eq!(stats["totalProjects"], 1, "{stats}");
    assert_eq!(stats["projectStats"]["p-1"]["clients"], json!([alice_id]));
    let dcdock = poll_until(addr(dcdock_a), "/api/ws/stats", GONE_WITHIN, |s| {
        s["active_connections"] == 1
    })
    .await;
    assert_eq!(dcdock["clients"].as_array().unwrap().len(), 1, "{dcdock}");
    poll_until(addr(admin_a), "/api/snapshot", GONE_WITHIN, |s| {
        card(s, "collab")["cluster"].is_null()
    })
    .await;
    let counts_took = killed.elapsed();
    eprintln!(
        "killed node gone from presence after {presence_took:?}, from every count after {counts_took:?} (lease 10 s, alive 7 s after each renewal, renewed and read every 2 s)"
    );
    drop((bob, anon));
}
