//! Collab presence and stats across the nodes of a cluster, without sockets or Redis: two hubs
//! on one fake clock, joined by a hand-carried backplane (each hub's `Output::Members` is handed
//! to the other as `handle_remote_members`, and the lease read as `handle_cluster`). Members on
//! either node see each other; each node tells only its own members; a node whose lease runs
//! out leaves every presence it was in.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_hub::cluster::{NodeSummary, LEASE};
use switchboard_hub::{
    Config, ConnectionHandle, Frame, HttpRequest, Hub, Instant, Method, OpenInfo, Output, UnixTime,
};
use switchboard_protocol::collab::v1::Collab;
use switchboard_protocol::Options;

const T0: Instant = Instant::from_millis(1_000);
const WALL0_MS: u64 = 1_735_734_600_000;

struct Node {
    id: u64,
    hub: Hub<Collab>,
    inbox: HashMap<ConnectionHandle, Vec<Value>>,
    /// `Output::Members` not yet carried: (room, members, hello).
    outbox: Vec<(String, switchboard_hub::cluster::Members, bool)>,
    replicated: usize,
}

impl Node {
    fn new(id: u64) -> Self {
        let config = Config {
            replicate: true,
            ..Config::default()
        };
        let mut hub = Hub::new(config, Collab::new(&Options::default()), T0);
        hub.set_wall_clock(T0, UnixTime::from_millis(WALL0_MS));
        Node {
            id,
            hub,
            inbox: HashMap::new(),
            outbox: Vec::new(),
            replicated: 0,
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.hub.poll_output() {
            for out in out.split() {
                match out {
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        let v = serde_json::from_slice(&payload).unwrap();
                        self.inbox.entry(connection).or_default().push(v);
                        self.hub.handle_flushed(now, connection, payload.len()).ok();
                    }
                    Output::Members {
                        room,
                        members,
                        hello,
                    } => self.outbox.push((room, members, hello)),
                    Output::Replicate(_) => self.replicated += 1,
                    _ => {}
                }
            }
        }
    }

    fn open(&mut self, now: Instant) -> (ConnectionHandle, String) {
        let info = OpenInfo {
            path: "/ws".into(),
            ..OpenInfo::default()
        };
        let c = self.hub.handle_open(now, info).unwrap();
        self.drain(now);
        let hello = self.inbox.remove(&c).unwrap().remove(0);
        (c, hello["clientId"].as_str().unwrap().to_string())
    }

    fn send(&mut self, now: Instant, c: ConnectionHandle, v: Value) {
        let text = v.to_string();
        self.hub
            .handle_frame(now, c, Frame::Text(text.into()))
            .unwrap();
        self.drain(now);
    }

    /// The users listed by each `USER_PRESENCE` `c` received since last asked.
    fn presence(&mut self, c: ConnectionHandle) -> Vec<Vec<String>> {
        self.inbox
            .remove(&c)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["type"] == "USER_PRESENCE")
            .map(|f| {
                f["payload"]["activeUsers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["userId"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    fn get(&mut self, now: Instant, path: &str) -> Value {
        let req = HttpRequest {
            method: Method::Get,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Default::default(),
        };
        let r = self.hub.handle_http(now, req).unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// Carry every announcement of `from` to `to`, and `to`'s answers back, until both are quiet.
fn carry(now: Instant, a: &mut Node, b: &mut Node) {
    loop {
        let (from_a, from_b) = (std::mem::take(&mut a.outbox), std::mem::take(&mut b.outbox));
        if from_a.is_empty() && from_b.is_empty() {
            return;
        }
        for (room, members, hello) in from_a {
            b.hub
                .handle_remote_members(now, a.id, &room, members, hello);
            b.drain(now);
        }
        for (room, members, hello) in from_b {
            a.hub
                .handle_remote_members(now, b.id, &room, members, hello);
            a.drain(now);
        }
    }
}

fn users(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn members_on_two_nodes_see_each_other_and_a_lapsed_node_leaves() {
    let (mut a, mut b) = (Node::new(0xa), Node::new(0xb));
    let now = T0;
    let (alice, alice_id) = a.open(now);
    a.send(
        now,
        alice,
        json!({"type": "JOIN_PROJECT", "projectId": "p", "userId": "alice"}),
    );
    assert_eq!(a.presence(alice), [users(&["alice"])]);
    assert_eq!(a.outbox.len(), 1, "the first member is announced");
    assert!(a.outbox[0].2, "with hello: the others answer with theirs");
    assert_eq!(a.replicated, 0, "presence is never sent to another node");
    carry(now, &mut a, &mut b);

    let later = now + Duration::from_secs(1);
    let (bob, bob_id) = b.open(later);
    b.send(
        later,
        bob,
        json!({"type": "JOIN_PROJECT", "projectId": "p", "userId": "bob"}),
    );
    assert_eq!(
        b.presence(bob),
        [users(&["alice", "bob"])],
        "B already knew alice"
    );
    carry(later, &mut a, &mut b);
    assert_eq!(
        a.presence(alice),
        [users(&["alice", "bob"])],
        "A hears of bob"
    );
    assert!(b
        .presence(bob)
        .iter()
        .all(|p| p == &users(&["alice", "bob"])));

    // /stats and /health count both nodes' members; the clients in the order they opened.
    b.hub.handle_cluster(
        later,
        vec![(
            a.id,
            NodeSummary {
                connections: 1,
                rooms: 1,
                ..NodeSummary::default()
            },
        )],
    );
    b.drain(later);
    carry(later, &mut a, &mut b);
    let stats = b.get(later, "/stats");
    assert_eq!(stats["totalClients"], 2, "{stats}");
    assert_eq!(stats["projectStats"]["p"]["clientCount"], 2, "{stats}");
    assert_eq!(
        stats["projectStats"]["p"]["clients"],
        json!([alice_id, bob_id])
    );
    let health = b.get(later, "/health");
    assert_eq!(
        (health["clients"].clone(), health["projects"].clone()),
        (json!(2), json!(1))
    );

    // A set_user on A reaches B's presence.
    a.send(
        later,
        alice,
        json!({"type": "SET_USER", "userId": "alice2"}),
    );
    carry(later, &mut a, &mut b);
    assert_eq!(b.presence(bob).last().unwrap(), &users(&["alice2", "bob"]));
    a.presence(alice);

    // A goes silent: B forgets it at the end of its lease (not before), and bob is told.
    let deadline = b.hub.poll_timeout().unwrap();
    assert!(deadline <= later + LEASE, "{deadline:?}");
    b.hub.handle_timeout(later + Duration::from_secs(9));
    b.drain(later + Duration::from_secs(9));
    assert!(b.presence(bob).is_empty(), "still within the lease");
    let end = later + LEASE;
    b.hub.handle_timeout(end);
    b.drain(end);
    assert_eq!(b.presence(bob), [users(&["bob"])]);
    let stats = b.get(end, "/stats");
    assert_eq!(
        (
            stats["totalClients"].clone(),
            stats["projectStats"]["p"]["clients"].clone()
        ),
        (json!(1), json!([bob_id]))
    );
}

/// A lease read that no longer lists a node drops it at once; a node seen for the first time
/// gets this node's members of every room (it may have none of ours yet).
#[test]
fn the_live_set_drops_the_missing_and_greets_the_new() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let (alice, _) = a.open(T0);
    a.send(
        T0,
        alice,
        json!({"type": "JOIN_PROJECT", "projectId": "p", "userId": "alice"}),
    );
    a.send(
        T0,
        alice,
        json!({"type": "JOIN_PROJECT", "projectId": "q", "userId": "alice"}),
    );
    a.outbox.clear(); // B was not there to hear it.
    a.hub
        .handle_cluster(T0, vec![(b.id, NodeSummary::default())]);
    a.drain(T0);
    let mut rooms: Vec<&str> = a.outbox.iter().map(|(r, ..)| r.as_str()).collect();
    rooms.sort();
    assert_eq!(
        rooms,
        ["project:p", "project:q"],
        "the newcomer is told every room"
    );
    carry(T0, &mut a, &mut b);
    assert_eq!(b.get(T0, "/health")["projects"], 2);
    // A resubscribed node asks again for every room it has members of (`hello`).
    a.hub.handle_resync(T0);
    a.drain(T0);
    assert_eq!(a.outbox.len(), 2);
    assert!(a.outbox.iter().all(|(_, _, hello)| *hello));
    carry(T0, &mut a, &mut b);
    b.hub
        .handle_cluster(T0, vec![(a.id, NodeSummary::default())]);
    b.drain(T0);
    b.hub.handle_cluster(T0, Vec::new());
    b.drain(T0);
    assert_eq!(
        b.get(T0, "/health")["projects"],
        0,
        "gone from the live set: gone"
    );
}

/// Without a cluster (no replication) nothing is announced and nothing changes.
#[test]
fn a_single_node_announces_nothing() {
    let mut hub = Hub::new(Config::default(), Collab::new(&Options::default()), T0);
    let c = hub
        .handle_open(
            T0,
            OpenInfo {
                path: "/ws".into(),
                ..OpenInfo::default()
            },
        )
        .unwrap();
    let join = json!({"type": "JOIN_PROJECT", "projectId": "p", "userId": "u"}).to_string();
    hub.handle_frame(T0, c, Frame::Text(join.into())).unwrap();
    while let Some(out) = hub.poll_output() {
        for out in out.split() {
            assert!(!matches!(out, Output::Members { .. }), "{out:?}");
        }
    }
}

/// Counts another node claims are clamped: no overflow whatever a hostile `Members` or summary
/// says (debug builds would panic on one).
#[test]
fn hostile_counts_never_overflow() {
    use switchboard_hub::cluster::{Members, MAX_COUNT};
    let mut a = Node::new(1);
    let summary = NodeSummary {
        connections: u64::MAX,
        rooms: u64::MAX,
        clients: Vec::new(),
    };
    let live = (2..6).map(|node| (node, summary.clone())).collect();
    a.hub.handle_cluster(T0, live);
    for node in 2..6 {
        let members = Members {
            listed: Vec::new(),
            total: u64::MAX,
        };
        a.hub
            .handle_remote_members(T0, node, "project:p", members, false);
    }
    a.drain(T0);
    let stats = a.get(T0, "/stats");
    assert_eq!(
        stats["projectStats"]["p"]["clientCount"],
        4 * MAX_COUNT,
        "{stats}"
    );
    assert_eq!(stats["totalClients"], 4 * MAX_COUNT, "{stats}");
    let health = a.get(T0, "/health");
    assert_eq!(health["projects"], 1);
}
