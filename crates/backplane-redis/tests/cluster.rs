//! Cross-node delivery for every fan-out rule and every system that publishes: two or three hub
//! nodes joined through a private redis-server, WebSocket clients on each.

mod common;

use common::*;
use serde_json::{json, Value};
use switchboard_hub::Method;
use switchboard_protocol::Options;

fn key(k: &str) -> Options {
    Options::default().with_api_key(k)
}

/// Everyone but the sender (laptimes relay): the sender on node A gets nothing; clients on A, B
/// and C get each notice exactly once, byte for byte, in the sender's order.
#[tokio::test]
async fn laptimes_relay_reaches_every_other_client_once_across_three_nodes() {
    let redis = Redis::start().await;
    let nodes = cluster(&redis, "laptimes", 3, &Options::default(), None).await;
    let mut a1 = nodes[0].connect("/").await;
    let mut a2 = nodes[0].connect("/").await;
    let mut b1 = nodes[1].connect("/").await;
    let mut c1 = nodes[2].connect("/").await;
    nodes[0].wait_connections(2).await;
    nodes[1].wait_connections(1).await;
    nodes[2].wait_connections(1).await;

    let notice = r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z"}"#;
    send(&mut a1, notice).await;
    for ws in [&mut a2, &mut b1, &mut c1] {
        assert_eq!(next_text(ws).await, notice);
    }
    for ws in [&mut a1, &mut a2, &mut b1, &mut c1] {
        assert_quiet(ws).await;
    }

    // A burst from node B: every other client gets all of it once, in order.
    const N: usize = 100;
    for i in 0..N {
        send(
            &mut b1,
            &format!(r#"{{"table":"cars","operation":"CHANGE","n":{i}}}"#),
        )
        .await;
    }
    for ws in [&mut a1, &mut a2, &mut c1] {
        for i in 0..N {
            let v = next_json(ws).await;
            assert_eq!(v["n"], i, "in order, no gaps, no duplicates");
        }
        assert_quiet(ws).await;
    }
    assert_quiet(&mut b1).await;

    let (a, b, c) = (nodes[0].status(), nodes[1].status(), nodes[2].status());
    assert_eq!(a.published, 1);
    assert_eq!(b.published, N as u64);
    assert_eq!(
        a.received, N as u64,
        "one injection per publication, not per client"
    );
    assert_eq!(b.received, 1);
    assert_eq!(c.received, N as u64 + 1);
    for s in [&a, &b, &c] {
        assert_eq!(
            s.dropped_while_down + s.missed + s.dropped_inbound + s.invalid,
            0
        );
    }
    // No system-wide room channels for a system without rooms.
    assert!(redis.channels("sb:laptimes:room:*").await.is_empty());
    assert_eq!(redis.numsub("sb:laptimes:all").await, 3);
}

/// Everyone (AFC): an event POSTed on node B reaches the clients of every node once.
#[tokio::test]
async fn afc_events_posted_on_one_node_reach_clients_on_every_node() {
    let redis = Redis::start().await;
    let nodes = cluster(&redis, "afc", 3, &Options::default(), None).await;
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.connect("/ws").await);
        n.wait_connections(1).await;
    }
    let resp = nodes[1]
        .http(
            Method::Post,
            "/events/todo-created",
            None,
            r#"{"id":1,"title":"New Todo"}"#,
        )
        .await;
    assert_eq!(resp.status, 204);
    for ws in &mut clients {
        assert_eq!(
            next_text(ws).await,
            r#"{"type":"todo:created","payload":{"id":1,"title":"New Todo"}}"#
        );
        assert_quiet(ws).await;
    }
}

/// Room and room-but-sender (collab): edits reach the project's members on other nodes, never
/// the sender; a node with no member of a project does not subscribe to its channel.
#[tokio::test]
async fn collab_project_edits_cross_nodes_and_only_member_nodes_subscribe() {
    let redis = Redis::start().await;
    let nodes = cluster(&redis, "collab", 3, &Options::default(), None).await;
    let join = |project: &str, user: &str| {
        json!({"type": "JOIN_PROJECT", "projectId": project, "userId": user}).to_string()
    };
    let mut alice = nodes[0].connect("/ws").await;
    let mut bob = nodes[1].connect("/ws").await;
    let mut carol = nodes[2].connect("/ws").await;
    for (ws, project, user) in [
        (&mut alice, "p1", "alice"),
        (&mut bob, "p1", "bob"),
        (&mut carol, "p2", "carol"),
    ] {
        next_of_type(ws, "CONNECTION_ESTABLISHED").await;
        send(ws, &join(project, user)).await;
        next_of_type(ws, "USER_PRESENCE").await;
    }
    // Nodes A and B have members of p1, C only of p2.
    redis.wait_numsub("sb:collab:room:project:p1", 2).await;
    redis.wait_numsub("sb:collab:room:project:p2", 1).await;
    assert_eq!(
        redis.channels("sb:collab:room:*").await,
        ["sb:collab:room:project:p1", "sb:collab:room:project:p2"]
    );
    assert_eq!(nodes[0].status().room_subscriptions, 1);
    assert_eq!(nodes[2].status().room_subscriptions, 1);

    let edit = |ty: &str, id: &str| {
        json!({"type": ty, "projectId": "p1", "payload": {"id": id}, "operationId": id}).to_string()
    };
    let is = |ty: &'static str| move |v: &Value| v["type"] == ty;
    send(&mut alice, &edit("TASK_UPDATE", "t1")).await;
    let got = next_of_type(&mut bob, "TASK_UPDATE").await;
    assert_eq!(got["payload"]["id"], "t1");
    assert_eq!(got["projectId"], "p1");
    assert_eq!(got["userId"], "alice");
    assert!(
        drain_matching(&mut bob, is("TASK_UPDATE")).await.is_empty(),
        "once"
    );
    assert!(
        drain_matching(&mut alice, is("TASK_UPDATE"))
            .await
            .is_empty(),
        "not the sender"
    );
    assert!(
        drain_matching(&mut carol, |_| true).await.is_empty(),
        "not another project"
    );

    send(&mut bob, &edit("COMMENT_CREATE", "c1")).await;
    assert_eq!(
        next_of_type(&mut alice, "COMMENT_CREATE").await["userId"],
        "bob"
    );
    assert!(drain_matching(&mut bob, is("COMMENT_CREATE"))
        .await
        .is_empty());
    assert!(drain_matching(&mut alice, is("COMMENT_CREATE"))
        .await
        .is_empty());

    // A backend broadcast on node C, which has no member of p1, reaches both members once.
    let resp = nodes[2]
        .http(
            Method::Post,
            "/broadcast",
            None,
            r#"{"type":"PROJECT_UPDATE","projectId":"p1","payload":{"name":"v2"}}"#,
        )
        .await;
    assert_eq!(resp.status, 200);
    for ws in [&mut alice, &mut bob] {
        let got = next_of_type(ws, "PROJECT_UPDATE").await;
        assert_eq!(got["payload"]["name"], "v2");
        assert!(drain_matching(ws, is("PROJECT_UPDATE")).await.is_empty());
    }
    assert!(drain_matching(&mut carol, |_| true).await.is_empty());

    // Bob leaves: node B has no member of p1 left and unsubscribes.
    bob.close(None).await.unwrap();
    redis.wait_numsub("sb:collab:room:project:p1", 1).await;
    wait_for("node B drops its room subscription", || {
        nodes[1].status().room_subscriptions == 0
    })
    .await;
}

/// Room (race): session updates POSTed on one node reach that session's followers on the
/// others, and nobody else.
#[tokio::test]
async fn race_session_updates_cross_nodes() {
    let redis = Redis::start().await;
    let nodes = cluster(&redis, "race", 3, &key("race-key"), None).await;
    let mut a = nodes[0].connect("/ws?sessionId=race-2024").await;
    let mut b = nodes[1].connect("/ws?sessionId=race-2024").await;
    let mut c = nodes[2].connect("/ws?sessionId=race-2025").await;
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_json(ws).await["type"], "subscribed");
    }
    redis.wait_numsub("sb:race:room:session:race-2024", 2).await;
    redis.wait_numsub("sb:race:room:session:race-2025", 1).await;

    let lap = r#"{"type":"lap_update","data":{"driverId":"VER","lapTime":"1:15.234","lapNumber":45},"timestamp":"2024-01-01T12:00:00Z"}"#;
    let resp = nodes[2]
        .http(
            Method::Post,
            "/sessions/race-2024/updates",
            Some("race-key"),
            lap,
        )
        .await;
    assert_eq!(resp.status, 202);
    for ws in [&mut a, &mut b] {
        let got = next_json(ws).await;
        assert_eq!(got["type"], "lap_update");
        assert_eq!(got["data"]["driverId"], "VER");
        assert_quiet(ws).await;
    }
    assert_quiet(&mut c).await;

    let session = r#"{"type":"session_update","data":{"currentLap":46}}"#;
    let resp = nodes[0]
        .http(
            Method::Post,
            "/sessions/race-2025/updates",
            Some("race-key"),
            session,
        )
        .await;
    assert_eq!(resp.status, 202);
    let got = next_json(&mut c).await;
    assert_eq!(got["type"], "session_update");
    assert_eq!(got["data"]["currentLap"], 46);
    assert_quiet(&mut c).await;
    assert_quiet(&mut a).await;
    assert_quiet(&mut b).await;
}

/// Room events can be lost (the hub drops them when the replication channel is full); the
/// backplane's periodic reconciliation with the hub's rooms still subscribes the node.
#[tokio::test]
async fn lost_room_events_are_repaired_by_reconciliation() {
    let redis = Redis::start().await;
    let a = Node::start("race", &redis.url(), &key("k"), None).await;
    let b = Node::start_filtered("race", &redis.url(), &key("k"), None, true).await;
    let nodes = [a, b];
    wait_connected(&nodes).await;
    let mut follower = nodes[1].connect("/ws?sessionId=s1").await;
    assert_eq!(next_json(&mut follower).await["type"], "subscribed");
    // No RoomOpened reached node B's backplane: only the next reconciliation (at most
    // RECONCILE_EVERY away) subscribes it.
    redis.wait_numsub("sb:race:room:session:s1", 1).await;
    let resp = nodes[0]
        .http(
            Method::Post,
            "/sessions/s1/updates",
            Some("k"),
            r#"{"type":"drs_update","data":{"enabled":true}}"#,
        )
        .await;
    assert_eq!(resp.status, 202);
    assert_eq!(next_json(&mut follower).await["type"], "drs_update");
    // Leaving is repaired the same way.
    follower.close(None).await.unwrap();
    redis.wait_numsub("sb:race:room:session:s1", 0).await;
    // Keepalives (every 5 s) on a subscribed connection are answered and never taken for a
    // failure (a subscribed connection's PING answer is an array, not a string).
    for node in &nodes {
        let status = node.status();
        assert_eq!((status.errors, status.reconnects), (0, 0), "{status:?}");
    }
}

fn token(secret: &str, user: u32) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user.to_string(), "email": format!("u{user}@dcdock.com"), "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Filtered and user-targeted (DCDock): the direction filter holds for clients on every node,
/// and `conflict_detected` reaches the user's connections on other nodes only.
#[tokio::test]
async fn dcdock_filters_and_user_conflicts_cross_nodes() {
    const SECRET: &str = "cluster-test-secret";
    let redis = Redis::start().await;
    let nodes = cluster(&redis, "dcdock", 3, &key("dc-key"), Some(SECRET)).await;
    let open = |node: usize, user: u32| {
        let path = format!("/api/ws?token={}", token(SECRET, user));
        let node = &nodes[node];
        async move {
            let mut ws = node.connect(&path).await;
            assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
            ws
        }
    };
    let mut u3_ib = open(0, 3).await; // Node A, user 3, inbound only.
    let mut u4_ob = open(1, 4).await; // Node B, user 4, outbound only.
    let mut u5_all = open(1, 5).await; // Node B, user 5, no filter.
    let mut u3_all = open(2, 3).await; // Node C, user 3 again, no filter.
    for (ws, dir) in [(&mut u3_ib, "IB"), (&mut u4_ob, "OB")] {
        send(
            ws,
            &json!({"type": "subscribe", "filters": {"direction": dir}}).to_string(),
        )
        .await;
        assert_eq!(next_json(ws).await["type"], "subscribed");
    }

    let publish = |node: usize, body: Value| {
        let node = &nodes[node];
        async move {
            let resp = node
                .http(
                    Method::Post,
                    "/api/ws/publish",
                    Some("dc-key"),
                    &body.to_string(),
                )
                .await;
            assert_eq!(
                resp.status,
                202,
                "{:?}",
                String::from_utf8_lossy(&resp.body)
            );
        }
    };
    let event = |ty: &str, action: &str, id: u32, dir: &str| {
        json!({"type": ty, "assignment_id": id, "action": action, "user_id": 1,
               "user_email": "admin@dcdock.com", "data": {"id": id, "version": 1, "load": {"id": 9, "direction": dir}}})
    };

    publish(0, event("assignment_created", "CREATE", 7, "IB")).await;
    for ws in [&mut u3_ib, &mut u5_all, &mut u3_all] {
        let got = next_json(ws).await;
        assert_eq!(
            (got["type"].as_str(), got["assignment_id"].as_u64()),
            (Some("assignment_created"), Some(7))
        );
    }
    publish(2, event("assignment_updated", "UPDATE", 8, "OB")).await;
    for ws in [&mut u4_ob, &mut u5_all, &mut u3_all] {
        let got = next_json(ws).await;
        assert_eq!(
            (got["type"].as_str(), got["assignment_id"].as_u64()),
            (Some("assignment_updated"), Some(8))
        );
    }
    let conflict = json!({"type": "conflict_detected", "assignment_id": 7, "current_version": 5,
        "attempted_version": 4, "current_data": {"id": 7, "version": 5},
        "message": "Another user has modified this assignment", "user_id": 3});
    publish(1, conflict).await;
    for ws in [&mut u3_ib, &mut u3_all] {
        let got = next_json(ws).await;
        assert_eq!(
            got["type"], "conflict_detected",
            "user 3 on nodes A and C, whatever the filter"
        );
    }
    for ws in [&mut u3_ib, &mut u4_ob, &mut u5_all, &mut u3_all] {
        assert_quiet(ws).await;
    }
}

/// Two AFC nodes with history (per node, or `shared` through Redis), both connected.
async fn afc_v2_nodes(redis: &Redis, shared: bool) -> Vec<Node> {
    use switchboard_hub::HistoryConfig;
    let config = switchboard_hub::Config {
        history: Some(HistoryConfig {
            shared,
            ..HistoryConfig::with_seed([5; 32])
        }),
        ..switchboard_hub::Config::default()
    };
    let (url, options) = (redis.url(), Options::default());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = Node::start_with("afc", &url, &options, None, false, config.clone());
        nodes.push(node.await);
    }
    wait_connected(&nodes).await;
    nodes
}

/// A v2 client resuming `session` on `node` from offset 1 of `events` in `epoch`, after events 2
/// and 3 were posted: both are replayed, once, in order, and it is told it recovered.
async fn resume_after_one(node: &Node, session: &str, epoch: &str) -> Ws {
    let resume = format!("/ws?sb_session={session}&sb_since=events~{epoch}~1");
    let mut ws = node.connect_v2(&resume).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(
        (&hello["sb"], &hello["resumed"]),
        (&json!("session"), &json!(true))
    );
    for n in [2, 3] {
        let v = next_json(&mut ws).await;
        assert_eq!((&v["sb"], &v["offset"]), (&json!("pub"), &json!(n)));
        assert_eq!(v["msg"]["payload"]["n"], n);
    }
    let subscribed = next_json(&mut ws).await;
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["replayed"], 2);
    ws
}

/// POST event `n` to `node`, acknowledged.
async fn post_event(node: &Node, n: u32) {
    let body = format!(r#"{{"n":{n}}}"#);
    let resp = node
        .http(Method::Post, "/events/lap-created", None, &body)
        .await;
    assert_eq!(resp.status, 204);
}

/// Protocol v2 on a cluster with history per node (`HistoryConfig::shared` off): node B keeps what node A
/// publishes in B's own history. A v2 client on B gets A's events with B's positions, and
/// resuming on B after a drop gets what A published meanwhile, once, in order. Its session and
/// positions mean nothing to node A: resuming there is answered `recovered: false`.
#[tokio::test]
async fn v2_clients_resume_on_their_node_with_what_other_nodes_published() {
    let redis = Redis::start().await;
    let nodes = afc_v2_nodes(&redis, false).await;
    let post = |n: u32| post_event(&nodes[0], n);
    let mut ws = nodes[1].connect_v2("/ws").await;
    let session = next_json(&mut ws).await;
    assert_eq!(session["sb"], "session");
    let session = session["session"].as_str().unwrap().to_string();
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (&subscribed["sb"], &subscribed["offset"]),
        (&json!("subscribed"), &json!(0))
    );
    let epoch = subscribed["epoch"].as_str().unwrap().to_string();

    post(1).await;
    let first = next_json(&mut ws).await;
    assert_eq!(
        (&first["sb"], &first["stream"]),
        (&json!("pub"), &json!("events"))
    );
    assert_eq!(
        (&first["epoch"], &first["offset"]),
        (&json!(epoch), &json!(1))
    );
    assert_eq!(first["msg"]["payload"]["n"], 1);
    drop(ws);

    post(2).await;
    post(3).await;
    // Node B has kept both (its history holds three entries).
    let b = nodes[1].hub().clone();
    let deadline = std::time::Instant::now() + WAIT;
    while b.stats().await.unwrap().history.entries < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "node B never kept A's events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut ws = resume_after_one(&nodes[1], &session, &epoch).await;
    assert_quiet(&mut ws).await;

    // Node A never heard of this session, and its history has its own epoch.
    let resume = format!("/ws?sb_session={session}&sb_since=events~{epoch}~1");
    let mut elsewhere = nodes[0].connect_v2(&resume).await;
    let hello = next_json(&mut elsewhere).await;
    assert_eq!(hello["resumed"], false);
    let subscribed = next_json(&mut elsewhere).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["reason"], "session");
}

/// Protocol v2 on a cluster with the history shared through Redis: every node gives the same
/// positions, and a client whose node went away resumes on another node with what it missed,
/// once, in order.
#[tokio::test]
async fn v2_clients_resume_on_another_node_with_a_shared_history() {
    let redis = Redis::start().await;
    let nodes = afc_v2_nodes(&redis, true).await;
    let post = |n: u32| post_event(&nodes[0], n);
    let mut on_a = nodes[0].connect_v2("/ws").await;
    let mut on_b = nodes[1].connect_v2("/ws").await;
    let session = next_json(&mut on_b).await["session"]
        .as_str()
        .unwrap()
        .to_string();
    let top_b = next_json(&mut on_b).await;
    next_json(&mut on_a).await;
    let top_a = next_json(&mut on_a).await;
    assert_eq!(top_a["epoch"], top_b["epoch"], "one epoch for the cluster");
    let epoch = top_b["epoch"].as_str().unwrap().to_string();
    post(1).await;
    for ws in [&mut on_a, &mut on_b] {
        let v = next_json(ws).await;
        assert_eq!((&v["sb"], &v["offset"]), (&json!("pub"), &json!(1)));
        assert_eq!(v["epoch"], json!(epoch));
    }
    drop(on_b);
    post(2).await;
    post(3).await;
    let v = next_json(&mut on_a).await;
    assert_eq!(v["offset"], 2);
    let v = next_json(&mut on_a).await;
    assert_eq!(v["offset"], 3);
    // Node B is gone for this client: it comes back on node A.
    let mut ws = resume_after_one(&nodes[0], &session, &epoch).await;
    post(4).await;
    let v = next_json(&mut ws).await;
    assert_eq!(
        (&v["offset"], &v["msg"]["payload"]["n"]),
        (&json!(4), &json!(4))
    );
    assert_quiet(&mut ws).await;
}

/// A node that stops right after acknowledging publications still puts them in the shared
/// history: its backplane sends what it holds before it lets go of Redis, so a client on
/// another node gets every acknowledged one.
#[tokio::test]
async fn a_node_that_stops_sends_what_it_acknowledged_first() {
    let redis = Redis::start().await;
    let mut nodes = afc_v2_nodes(&redis, true).await;
    let mut reader = nodes[1].connect_v2("/ws").await;
    next_json(&mut reader).await; // session
    let top = next_json(&mut reader).await;
    assert_eq!(top["sb"], "subscribed");
    // Redis holds every client for a second: what the hub acknowledges meanwhile waits in the
    // backplane, and the backplane is stopped at once.
    let mut admin = redis.connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    futures_util::future::join_all((1..=200).map(|n| post_event(&nodes[0], n))).await;
    let a = nodes.remove(0);
    a.backplane.shutdown().await;
    a.server.shutdown().await.unwrap();
    for n in 1..=200u64 {
        let v = next_json(&mut reader).await;
        assert_eq!((&v["sb"], &v["offset"]), (&json!("pub"), &json!(n)));
    }
}
