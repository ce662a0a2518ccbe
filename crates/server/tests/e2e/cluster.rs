//! The `switchboard` binary with `--redis-url`: two processes, one Redis, one relay across them;
//! `/health` and `/metrics` report the backplane. Needs `redis-server` on PATH
//! (`scripts/ensure-redis.sh` installs it; `scripts/test.sh` runs that first).

use futures_util::SinkExt;
use switchboard_runtime::backplane::Replication;
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message;

use crate::http::get;
use crate::processes::{free_port, node, redis, wait_listening, wait_until_up};
use crate::support::{connect, next_text, notice};

#[tokio::test]
async fn two_binaries_relay_through_redis_and_report_the_backplane() {
    let redis_port = free_port();
    let _redis = redis(redis_port);
    let (pa, pb) = (free_port(), free_port());
    let (_a, _b) = (
        node("laptimes", pa, redis_port, &[]),
        node("laptimes", pb, redis_port, &[]),
    );
    let (addr_a, addr_b) = (([127, 0, 0, 1], pa).into(), ([127, 0, 0, 1], pb).into());
    wait_listening(addr_a).await;
    wait_listening(addr_b).await;
    let health = wait_until_up(addr_a).await;
    assert_eq!(health["status"], "ok");
    assert!(health["backplane"]["node"].is_string(), "{health}");
    wait_until_up(addr_b).await;

    let mut on_a = connect(addr_a, "/").await;
    let mut on_b = connect(addr_b, "/").await;
    // Registered once answered: a bad frame gets an error reply.
    on_b.send(Message::text("{}")).await.unwrap();
    next_text(&mut on_b).await;
    let n = notice("drivers");
    on_a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(
        next_text(&mut on_b).await,
        n,
        "relayed from node A to a client on node B"
    );

    let metrics = get(addr_a, "/metrics").await.text();
    assert!(
        metrics.contains(r#"switchboard_backplane_up{system="laptimes"} 1"#),
        "{metrics}"
    );
}

/// Client ids are unique across the nodes of a cluster: collab's `client_<ms>_<serial>` (and
/// DCDock's `user_<id>_<serial>`) end with the node's tag, so two nodes handing out the same
/// serial in the same millisecond still give different ids.
#[tokio::test]
async fn client_ids_differ_across_nodes() {
    let redis_port = free_port();
    let _redis = redis(redis_port);
    let ports = [free_port(), free_port()];
    let _nodes: Vec<_> = ports
        .iter()
        .map(|&p| node("collab", p, redis_port, &[]))
        .collect();
    let mut ids = Vec::new();
    for port in ports {
        let addr = ([127, 0, 0, 1], port).into();
        wait_listening(addr).await;
        let mut ws = connect(addr, "/ws").await;
        let hello: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(hello["type"], "CONNECTION_ESTABLISHED");
        ids.push(hello["clientId"].as_str().unwrap().to_string());
    }
    let tag = |id: &str| id.rsplit('_').next().unwrap().to_string();
    for id in &ids {
        let parts: Vec<&str> = id.split('_').collect();
        assert_eq!((parts.len(), parts[0]), (4, "client"), "{id}");
        assert_eq!(tag(id).len(), 8, "{id}");
    }
    assert_ne!(tag(&ids[0]), tag(&ids[1]), "{ids:?}");
}

/// `system` served as one node of a cluster whose backplane is the returned end of a queue of
/// `capacity`, read (or not) by the test.
fn with_backplane_queue(
    system: &str,
    capacity: usize,
) -> (switchboard_hyper::Server, Receiver<Replication>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let process = switchboard_runtime::Process::default();
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let system = switchboard_runtime::System::start(
        crate::support::endpoint(system),
        Default::default(),
        Default::default(),
        process.clock.clone(),
        Some(tx),
    );
    (
        switchboard_hyper::serve(&process, listener, system).unwrap(),
        rx,
    )
}

/// A node whose backplane is behind (its queue from the hub more than seven eighths full)
/// answers HTTP publishers 503 with `Retry-After`, from the headers, instead of accepting
/// publications that would reach its own clients only; once the backplane has read, it accepts
/// again. The backplane here is the channel itself, read by the test.
#[tokio::test]
async fn a_publish_past_a_full_backplane_queue_is_refused_for_a_retry() {
    let (server, mut rx) = with_backplane_queue("afc", 16);
    let addr = server.local_addr();
    let json = [("Content-Type", "application/json")];
    let post = || crate::http::post(addr, "/events/todo-created", &json, r#"{"id":1}"#);

    // Nobody reads the queue: accepted while it has room, then refused.
    let mut accepted = 0;
    let refusal = loop {
        let r = post().await;
        match r.status {
            204 => accepted += 1,
            503 => break r,
            other => panic!("unexpected status {other}"),
        }
        assert!(accepted <= 16, "accepted past a full queue");
    };
    assert!(accepted >= 14, "refused early: {accepted} accepted");
    assert!(String::from_utf8_lossy(&refusal.body).contains("backplane is behind"));
    assert!(refusal
        .headers
        .iter()
        .any(|(n, v)| n == "retry-after" && v == "1"));
    // Every accepted publication is in the queue for the other nodes.
    let mut queued = 0;
    while let Ok(r) = rx.try_recv() {
        queued += usize::from(matches!(r, Replication::Publish(_)));
    }
    assert_eq!(queued, accepted);
    // The backplane read: accepted again.
    assert_eq!(post().await.status, 204);
}

/// While the backplane is behind, a node does not read its WebSocket publishers: what they
/// send waits in their sockets instead of reaching this node's clients only, and once the
/// backplane has read, every publication goes out, once and in order. (The queue's last eighth
/// is the headroom for frames already handed to the hub: up to 8 per connection.)
#[tokio::test]
async fn a_websocket_publisher_waits_while_the_backplane_is_behind_and_loses_nothing() {
    let (server, mut rx) = with_backplane_queue("laptimes", 128);
    let addr = server.local_addr();
    let mut publisher = connect(addr, "/").await;
    let mut listener = connect(addr, "/").await;
    const SENT: usize = 150;
    for i in 0..SENT {
        let text = notice(&format!("t{i}"));
        publisher.send(Message::text(text)).await.unwrap();
    }
    // Nobody reads the backplane's queue: the first publications go out, then reading stops.
    let mut got = Vec::new();
    while got.len() < 112 {
        got.push(next_text(&mut listener).await);
    }
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        loop {
            got.push(next_text(&mut listener).await);
        }
    })
    .await;
    assert!(more.is_err());
    assert!(
        got.len() < 128,
        "read past a full queue: {} delivered",
        got.len()
    );
    // The backplane reads (and, here, forgets): the rest goes out.
    let carried = tokio::spawn(async move {
        let mut carried = 0;
        while let Some(r) = rx.recv().await {
            carried += usize::from(matches!(r, Replication::Publish(_)));
            if carried == SENT {
                break;
            }
        }
        carried
    });
    while got.len() < SENT {
        got.push(next_text(&mut listener).await);
    }
    for (i, text) in got.iter().enumerate() {
        assert!(text.contains(&format!("\"t{i}\"")), "{i}: {text}");
    }
    // Every one of them was handed to the backplane too (none reached this node only).
    let carried = tokio::time::timeout(crate::support::WAIT, carried).await;
    assert_eq!(carried.expect("every publication queued").unwrap(), SENT);
}
