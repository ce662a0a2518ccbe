//! Faults: Redis down at start, Redis killed (SIGKILL) and restarted mid-stream, a node shut
//! down. Local delivery never stops; cross-node delivery resumes; what was lost is counted.

mod common;

use std::time::Duration;

use common::*;
use switchboard_backplane_redis::render_prometheus;
use switchboard_protocol::Options;
use switchboard_runtime::metrics::Exposition;

fn notice(n: usize) -> String {
    format!(r#"{{"table":"times","operation":"CHANGE","n":{n}}}"#)
}

/// Send notices `range` from `sender`, paced, and check that the local receiver gets each.
async fn send_paced(sender: &mut Ws, local: &mut Ws, range: std::ops::Range<usize>) {
    for n in range {
        send(sender, &notice(n)).await;
        let got = next_json(local).await;
        assert_eq!(got["n"], n, "local delivery, in order");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Collect the `n` of every notice that arrives within the quiet window.
async fn received(ws: &mut Ws) -> Vec<u64> {
    drain_matching(ws, |_| true)
        .await
        .iter()
        .map(|v| v["n"].as_u64().expect("a numbered notice"))
        .collect()
}

#[tokio::test]
async fn redis_down_at_start_nodes_serve_locally_then_join() {
    let port = free_port();
    let url = url(port);
    let a = Node::start("laptimes", &url, &Options::default(), None).await;
    let b = Node::start("laptimes", &url, &Options::default(), None).await;
    let mut a1 = a.connect("/").await;
    let mut a2 = a.connect("/").await;
    let mut b1 = b.connect("/").await;
    a.wait_connections(2).await;
    b.wait_connections(1).await;

    // No Redis: local delivery works, nothing crosses, the loss is counted and reported.
    send_paced(&mut a1, &mut a2, 0..5).await;
    assert!(received(&mut b1).await.is_empty());
    let s = a.status();
    assert!(!s.connected);
    assert_eq!(s.dropped_while_down, 5);
    assert!(s.last_error.is_some(), "the connect error is reported");
    let mut metrics = Exposition::default();
    render_prometheus(std::slice::from_ref(&s), &mut metrics);
    let metrics = metrics.finish();
    assert!(metrics.contains("switchboard_backplane_up{system=\"laptimes\"} 0\n"));
    assert!(
        metrics.contains("switchboard_backplane_dropped_while_down_total{system=\"laptimes\"} 5\n")
    );
    assert_eq!(s.to_json()["state"], "down");

    // Redis comes up: both nodes join by themselves.
    let redis = Redis::start_on(port).await;
    let nodes = [a, b];
    wait_connected(&nodes).await;
    send_paced(&mut a1, &mut a2, 5..10).await;
    for n in 5..10 {
        assert_eq!(next_json(&mut b1).await["n"], n);
    }
    assert!(received(&mut b1).await.is_empty());
    assert_eq!(nodes[0].status().published, 5);
    assert_eq!(nodes[1].status().received, 5);
    drop(redis);
}

#[tokio::test]
async fn redis_killed_mid_stream_local_delivery_continues_and_loss_is_counted() {
    let mut redis = Redis::start().await;
    let nodes = cluster(&redis, "laptimes", 2, &Options::default(), None).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut sender = a.connect("/").await;
    let mut local = a.connect("/").await;
    let mut remote = b.connect("/").await;
    a.wait_connections(2).await;
    b.wait_connections(1).await;

    // Phase 1: all good.
    send_paced(&mut sender, &mut local, 0..30).await;
    for n in 0..30 {
        assert_eq!(next_json(&mut remote).await["n"], n);
    }

    // Phase 2: Redis is killed (SIGKILL); local delivery continues for every notice.
    redis.kill();
    wait_for("both nodes notice Redis is gone", || {
        nodes.iter().all(|n| !n.status().connected)
    })
    .await;
    send_paced(&mut sender, &mut local, 30..60).await;
    assert!(
        received(&mut remote).await.is_empty(),
        "nothing crosses while Redis is down"
    );
    let down = a.status();
    assert!(!down.connected);
    assert_eq!(
        down.dropped_while_down, 30,
        "every notice sent while down is counted"
    );
    assert!(down.last_error.is_some());

    // Phase 3: Redis restarts on the same port; the nodes reconnect with backoff and resume.
    redis.restart().await;
    wait_connected(&nodes).await;
    send_paced(&mut sender, &mut local, 60..90).await;
    for n in 60..90 {
        assert_eq!(
            next_json(&mut remote).await["n"],
            n,
            "cross-node delivery resumed"
        );
    }
    assert!(received(&mut remote).await.is_empty(), "no duplicates");
    assert_quiet(&mut sender).await;

    let (sa, sb) = (a.status(), b.status());
    assert_eq!(sa.published, 60);
    assert_eq!(sa.dropped_while_down, 30);
    assert_eq!(sb.received, 60);
    assert_eq!(
        sb.missed, 30,
        "the receiver counts exactly what the sender dropped"
    );
    assert!(
        sa.reconnects >= 2 && sb.reconnects >= 2,
        "publisher and subscriber reconnected"
    );
    let mut metrics = Exposition::default();
    render_prometheus(&[sa, sb], &mut metrics);
    let metrics = metrics.finish();
    assert!(metrics.contains("switchboard_backplane_missed_total{system=\"laptimes\"} 30\n"));
    assert_eq!(
        metrics
            .matches("switchboard_backplane_up{system=\"laptimes\"} 1\n")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_node_shut_down_leaves_the_others_unaffected() {
    let redis = Redis::start().await;
    let mut nodes = cluster(&redis, "laptimes", 3, &Options::default(), None).await;
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.connect("/").await);
        n.wait_connections(1).await;
    }
    assert_eq!(redis.numsub("sb:laptimes:all").await, 3);

    // Node C goes away (its server and its backplane).
    let c = nodes.pop().unwrap();
    drop(clients.pop());
    c.server.shutdown().await.unwrap();
    c.backplane.shutdown().await;
    redis.wait_numsub("sb:laptimes:all", 2).await;

    send(&mut clients[0], &notice(1)).await;
    assert_eq!(next_json(&mut clients[1]).await["n"], 1);
    send(&mut clients[1], &notice(2)).await;
    assert_eq!(next_json(&mut clients[0]).await["n"], 2);
    for (n, ws) in nodes.iter().zip(clients.iter_mut()) {
        assert_quiet(ws).await;
        let s = n.status();
        assert!(s.connected);
        assert_eq!(s.errors, 0);
        assert_eq!(s.dropped_while_down + s.missed, 0);
    }
}
