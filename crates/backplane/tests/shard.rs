//! Streams spread over several Redis instances: the routing (stable, about 1/N each, moving
//! only what it must when an instance is added or removed, a stream and its channel together)
//! and the machine per instance on a fake clock (each stream's traffic on its instance only,
//! losing one instance answers only its streams unavailable, the live nodes are the union of
//! the instances' views).

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use switchboard_backplane::{
    room_channel, wire, Backplane, Command, Config, Instances, NodeId, Sent, Sharded, Side, ToHub,
    LEASE,
};
use switchboard_hub::cluster::{Members, NodeSummary};
use switchboard_hub::history::{Audience, Entry, Epoch, FetchId, HistoryError};
use switchboard_hub::{Instant, Publication, Target, Text};

const T0: Instant = Instant::from_millis(1_000);
const ME: NodeId = NodeId::new(1);
const NAMES: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:6379")).collect()
}

proptest! {
    /// The instance of a stream depends only on the instances' names and the stream's: two
    /// nodes built apart, given the list in any order, route every stream to the same name.
    #[test]
    fn routing_is_stable_and_ignores_the_lists_order(
        n in 1usize..=16,
        rotate in 0usize..16,
        streams in proptest::collection::vec("[a-z:0-9-]{1,40}", 1..50),
    ) {
        let list = names(n);
        let mut turned = list.clone();
        turned.rotate_left(rotate % n);
        let a = Instances::new(&list).unwrap();
        let b = Instances::new(&list).unwrap();
        let c = Instances::new(&turned).unwrap();
        for s in &streams {
            prop_assert_eq!(a.of(s), b.of(s));
            prop_assert_eq!(&a.names()[a.of(s)], &c.names()[c.of(s)]);
        }
    }

    /// Adding an instance moves only the streams the new one takes; removing one moves only
    /// the streams it had.
    #[test]
    fn adding_or_removing_an_instance_moves_only_its_streams(
        n in 1usize..=15,
        gone in 0usize..16,
        streams in proptest::collection::vec("[a-z:0-9-]{1,40}", 1..80),
    ) {
        let before = Instances::new(&names(n)).unwrap();
        let after = Instances::new(&names(n + 1)).unwrap();
        for s in &streams {
            let (was, is) = (before.of(s), after.of(s));
            prop_assert!(is == was || is == n, "{s} moved from {was} to {is}");
        }
        if n > 1 {
            let gone = gone % n;
            let mut fewer = names(n);
            fewer.remove(gone);
            let fewer = Instances::new(&fewer).unwrap();
            for s in &streams {
                let (was, is) = (&before.names()[before.of(s)], &fewer.names()[fewer.of(s)]);
                prop_assert!(was == is || *was == names(n)[gone], "{s} moved from {was} to {is}");
            }
        }
    }

    /// Each of N instances carries about 1/N of many streams (within ±30 % of the fair share
    /// for 6000 streams; the binomial spread is about ±5 %).
    #[test]
    fn streams_spread_about_evenly(n in 2usize..=16, seed in 0u32..1000) {
        let spread = Instances::new(&names(n)).unwrap();
        let mut count = vec![0usize; n];
        let total = 6000;
        for k in 0..total {
            count[spread.of(&format!("session:{seed}-{k}"))] += 1;
        }
        let fair = total as f64 / n as f64;
        for c in count {
            prop_assert!((c as f64) > fair * 0.7 && (c as f64) < fair * 1.3, "{c} of {total} over {n}");
        }
    }
}

fn config() -> Config {
    Config {
        system: "sys",
        node: ME,
        every_room: true,
        history: true,
        seed: 7,
        lease: true,
    }
}

fn drain(m: &mut Sharded) -> Vec<(usize, Command)> {
    std::iter::from_fn(|| m.poll_command()).collect()
}

fn ok() -> Sent {
    Sent {
        published: Ok(()),
        appended: Vec::new(),
        fetched: Vec::new(),
        cluster: None,
        lost: None,
    }
}

/// Three instances, every connection up (the subscriptions confirmed), commands drained.
fn up() -> Sharded {
    let mut m = Sharded::new(config(), Instances::new(&NAMES).unwrap(), T0);
    m.handle_timeout(T0);
    let c = drain(&mut m);
    for i in 0..3 {
        assert!(c
            .iter()
            .any(|(j, c)| *j == i && matches!(c, Command::Connect(Side::Publisher))));
        m.handle_connected(T0, i, Side::Publisher);
        m.handle_connected(T0, i, Side::Subscriber);
        m.handle_subscribed(T0, i, Ok(())); // sb:sys:all
        m.handle_subscribed(T0, i, Ok(())); // sb:sys:room:*
    }
    drain(&mut m);
    let s = m.status();
    assert!(s.connected);
    assert_eq!(s.state(), "up");
    m
}

fn entry(n: u64) -> Arc<Entry> {
    Arc::new(Entry {
        payload: Text::from(format!("{{\"n\":{n}}}")),
        audience: Audience::Everyone,
        tags: None,
        publisher: None,
    })
}

fn room(r: &str) -> Target {
    Target::Room(r.to_string())
}

/// Rooms whose streams land on each of the three instances.
fn rooms_by_instance(m: &Sharded) -> [String; 3] {
    let mut found: [Option<String>; 3] = [None, None, None];
    for k in 0.. {
        let r = format!("session:{k}");
        let i = m.instance_of(&r);
        found[i].get_or_insert(r);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.map(Option::unwrap)
}

/// A room's publications, its appends (whose channel is the room's), its fetches and its
/// members announcements all go to the room's instance; publications to everyone to the
/// instance of the system's stream.
#[test]
fn a_stream_and_its_channel_live_on_one_instance() {
    let mut m = up();
    for r in rooms_by_instance(&m) {
        let home = m.instance_of(&r);
        m.handle_publish(&Publication::new(room(&r), Text::from("{}")));
        m.handle_append(r.clone(), entry(1), room(&r), Epoch(9));
        m.handle_fetch(FetchId(3), r.clone(), None, Epoch(9));
        m.handle_members(&r, &Members::default(), true);
        // Batches go one at a time: answer each until nothing is left, gathering them.
        let (mut publishes, mut appends, mut fetches) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let c = drain(&mut m);
            let sends: Vec<_> = c
                .into_iter()
                .filter_map(|(i, c)| match c {
                    Command::Send(b) => Some((i, b)),
                    _ => None,
                })
                .collect();
            if sends.is_empty() {
                break;
            }
            for (i, b) in sends {
                assert_eq!(i, home, "{r}");
                publishes.extend(b.publishes);
                appends.extend(b.appends);
                fetches.extend(b.fetches);
            }
            m.handle_sent(T0, home, ok());
        }
        let channel = room_channel("sys", &r);
        assert_eq!(publishes.len(), 2, "the publication and the members");
        assert!(publishes.iter().all(|(c, _)| *c == channel));
        assert_eq!(appends.len(), 1);
        assert_eq!(
            (appends[0].stream.as_str(), appends[0].channel.as_str()),
            (r.as_str(), channel.as_str())
        );
        assert_eq!(fetches.len(), 1);
        assert_eq!(fetches[0].stream, r);
    }
    m.handle_publish(&Publication::new(Target::All, Text::from("{}")));
    let c = drain(&mut m);
    let [(i, Command::Send(batch))] = &c[..] else {
        panic!("{c:?}")
    };
    assert_eq!(*i, m.instance_of("sys"));
    assert_eq!(batch.publishes[0].0, "sb:sys:all");
}

/// One instance lost: its streams' appends and fetches are answered unavailable at once (its
/// clients are told they did not recover), its publications dropped and counted; the others'
/// streams are still sent; the status says which instance is down.
#[test]
fn losing_one_instance_answers_only_its_streams_unavailable() {
    let mut m = up();
    let rooms = rooms_by_instance(&m);
    m.handle_failed(T0, 1, Side::Publisher, "connection refused");
    drain(&mut m);
    for (i, r) in rooms.iter().enumerate() {
        m.handle_append(r.clone(), entry(1), room(r), Epoch(9));
        m.handle_fetch(FetchId(i as u64), r.clone(), None, Epoch(9));
        let c = drain(&mut m);
        if i == 1 {
            assert!(
                matches!(&c[..], [
                    (1, Command::Deliver(ToHub::Appended(s, Err(HistoryError::Unavailable)))),
                    (1, Command::Deliver(ToHub::Fetched(FetchId(1), Err(HistoryError::Unavailable)))),
                ] if s == r),
                "{c:?}"
            );
        } else {
            assert!(
                matches!(&c[..], [(j, Command::Send(_))] if *j == i),
                "{c:?}"
            );
            m.handle_sent(
                T0,
                i,
                Sent {
                    appended: vec![Err("x".into())],
                    ..ok()
                },
            );
            drain(&mut m);
        }
    }
    let s = m.status();
    assert!(!s.connected);
    assert_eq!(s.state(), "degraded");
    assert_eq!(s.instances.len(), 3);
    assert_eq!(s.instances[1].address.as_deref(), Some(NAMES[1]));
    assert!(!s.instances[1].publisher_connected);
    assert!(s.instances[0].connected && s.instances[2].connected);
    assert_eq!(s.instances[1].dropped_while_down, 1);
    let json = s.to_json();
    assert_eq!(json["state"], "degraded");
    assert_eq!(json["instances"][1]["address"], NAMES[1]);
    assert_eq!(json["instances"][1]["publisher"], false);
    assert_eq!(json["instances"][0]["state"], "up");
    for i in 0..3 {
        m.handle_failed(T0, i, Side::Subscriber, "gone");
    }
    assert_eq!(m.status().state(), "down");
}

fn summary(connections: u64) -> NodeSummary {
    NodeSummary {
        connections,
        rooms: 0,
        clients: Vec::new(),
    }
}

/// The lease goes to every instance; the hub gets the union of the views that still count: a
/// node listed by one reachable instance only is alive; an instance whose publisher is lost,
/// or whose view is older than the lease, no longer counts.
#[test]
fn the_live_nodes_are_the_union_of_the_instances_views() {
    let mut m = up();
    m.handle_timeout(T0 + LEASE / 5);
    let c = drain(&mut m);
    let asked: Vec<usize> = c
        .iter()
        .filter(|(_, c)| matches!(c, Command::Summarize))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(asked, [0, 1, 2], "every instance renews the lease");
    let lease = |m: &mut Sharded, i: usize, at: Instant, nodes: &[u64]| {
        m.handle_summary(i, &summary(1));
        let c = drain(m);
        assert!(
            matches!(&c[..], [(j, Command::Send(b))] if *j == i && b.lease.is_some()),
            "{c:?}"
        );
        let read = nodes
            .iter()
            .map(|n| wire::encode_summary(NodeId::new(*n), &summary(*n)))
            .collect();
        m.handle_sent(
            at,
            i,
            Sent {
                cluster: Some(Ok(read)),
                ..ok()
            },
        );
        let c = drain(m);
        let [(_, Command::Deliver(ToHub::Cluster(nodes)))] = &c[..] else {
            panic!("{c:?}")
        };
        let mut ids: Vec<u64> = nodes.iter().map(|(n, _)| *n).collect();
        ids.sort_unstable();
        ids
    };
    let t = T0 + LEASE / 5;
    assert_eq!(lease(&mut m, 0, t, &[1, 2, 3]), [2, 3]);
    assert_eq!(
        lease(&mut m, 1, t, &[1, 2]),
        [2, 3],
        "node 3 is still on instance 0"
    );
    assert_eq!(m.status().nodes, 2);
    m.handle_failed(t, 0, Side::Publisher, "gone");
    drain(&mut m);
    assert_eq!(
        lease(&mut m, 2, t, &[1, 2]),
        [2],
        "instance 0's view went with it"
    );
    // A view older than the lease no longer counts, even from an instance that looks up.
    let late = t + LEASE;
    assert_eq!(lease(&mut m, 2, late, &[1, 4]), [4]);
}

/// With one instance the sharded machine is the plain machine: the same commands for the same
/// inputs.
#[test]
fn one_instance_is_the_plain_machine() {
    let mut plain = Backplane::new(config(), T0);
    let mut one = Sharded::new(config(), Instances::new(&NAMES[..1]).unwrap(), T0);
    let mut log: HashMap<&str, Vec<String>> = HashMap::new();
    let mut step = |plain: &mut Backplane, one: &mut Sharded, what: &'static str| {
        let a: Vec<String> = std::iter::from_fn(|| plain.poll_command())
            .map(|c| format!("{c:?}"))
            .collect();
        let b: Vec<String> = std::iter::from_fn(|| one.poll_command())
            .map(|(i, c)| {
                assert_eq!(i, 0);
                format!("{c:?}")
            })
            .collect();
        assert_eq!(a, b, "after {what}");
        log.insert(what, a);
    };
    plain.handle_timeout(T0);
    one.handle_timeout(T0);
    step(&mut plain, &mut one, "start");
    plain.handle_connected(T0, Side::Publisher);
    one.handle_connected(T0, 0, Side::Publisher);
    step(&mut plain, &mut one, "publisher");
    plain.handle_summary(&summary(1));
    one.handle_summary(0, &summary(1));
    plain.handle_publish(&Publication::new(room("r"), Text::from("{}")));
    one.handle_publish(&Publication::new(room("r"), Text::from("{}")));
    step(&mut plain, &mut one, "publish");
    let read = || vec![wire::encode_summary(NodeId::new(5), &summary(5))];
    plain.handle_sent(
        T0,
        Sent {
            cluster: Some(Ok(read())),
            ..ok()
        },
    );
    one.handle_sent(
        T0,
        0,
        Sent {
            cluster: Some(Ok(read())),
            ..ok()
        },
    );
    step(&mut plain, &mut one, "sent");
    assert_eq!(plain.status(), one.status());
    assert!(one.status().instances.is_empty());
    assert!(log["sent"].iter().any(|c| c.contains("Cluster")));
}
