//! The backplane's state machine on a fake clock, with no Redis: connects and reconnects with
//! backoff, batches in order, answers to the hub that are never lost, room subscriptions,
//! sequence checks, keepalives.

use std::sync::Arc;
use std::time::Duration;

use switchboard_backplane::{
    positioned, wire, Backplane, Command, Config, NodeId, Sent, Side, ToHub, LEASE_EVERY,
    MAX_WAITING, RECONCILE_EVERY,
};
use switchboard_hub::cluster::{Member, Members, NodeClient, NodeSummary};
use switchboard_hub::history::{Audience, Entry, Epoch, FetchId, HistoryError, Position};
use switchboard_hub::{Bytes, Instant, Publication, Target, Text};

const T0: Instant = Instant::from_millis(1_000);
const ME: NodeId = NodeId::new(1);
const OTHER: NodeId = NodeId::new(2);

fn machine(every_room: bool, history: bool) -> Backplane {
    let config = Config {
        system: "sys",
        node: ME,
        every_room,
        history,
        seed: 7,
        lease: false,
    };
    Backplane::new(config, T0)
}

fn drain(m: &mut Backplane) -> Vec<Command> {
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

/// Both connections up (the subscriber on the `all` channel, and the room pattern with
/// `every_room`), commands drained.
fn up(every_room: bool, history: bool) -> Backplane {
    let mut m = machine(every_room, history);
    m.handle_timeout(T0);
    let c = drain(&mut m);
    assert!(matches!(
        c[..],
        [
            Command::Connect(Side::Publisher),
            Command::Connect(Side::Subscriber)
        ]
    ));
    m.handle_connected(T0, Side::Publisher);
    m.handle_connected(T0, Side::Subscriber);
    let c = drain(&mut m);
    let Some(Command::Subscribe {
        channels,
        pattern: false,
    }) = c.first()
    else {
        panic!("{c:?}");
    };
    assert_eq!(channels, &["sb:sys:all"]);
    m.handle_subscribed(T0, Ok(()));
    if every_room {
        let c = drain(&mut m);
        let [Command::Subscribe {
            channels,
            pattern: true,
        }] = &c[..]
        else {
            panic!("{c:?}");
        };
        assert_eq!(channels, &["sb:sys:room:*"]);
        m.handle_subscribed(T0, Ok(()));
    }
    drain(&mut m);
    assert!(m.status().connected);
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

/// Drive the clock from `now` until the machine asks to connect; the instant it does.
fn until_connect(m: &mut Backplane, mut now: Instant) -> Instant {
    loop {
        let due = m.poll_timeout().unwrap();
        assert!(due >= now, "a deadline in the past");
        // Nothing before it is due.
        m.handle_timeout(Instant::from_micros(
            due.as_micros().saturating_sub(1000).max(now.as_micros()),
        ));
        let early = drain(m);
        if due > now {
            assert!(
                early.iter().all(|c| !matches!(c, Command::Connect(_))),
                "{early:?}"
            );
        }
        now = due;
        m.handle_timeout(now);
        if drain(m)
            .iter()
            .any(|c| matches!(c, Command::Connect(Side::Publisher)))
        {
            return now;
        }
    }
}

#[test]
fn connections_come_up_and_a_lost_one_retries_with_growing_jittered_delays() {
    let mut m = up(false, false);
    let mut now = T0 + Duration::from_secs(1);
    let mut delays = Vec::new();
    for _ in 0..8 {
        m.handle_failed(now, Side::Publisher, "connection refused");
        assert!(!m.status().connected);
        let at = until_connect(&mut m, now);
        delays.push(at.saturating_since(now));
        now = at;
    }
    // Equal jitter: the k-th delay is within [d/2, d], d = 100 ms doubling to 5 s.
    let mut d = Duration::from_millis(100);
    for delay in &delays {
        assert!(
            *delay >= d / 2 && *delay <= d,
            "{delay:?} outside [{:?}, {d:?}]",
            d / 2
        );
        d = (d * 2).min(Duration::from_secs(5));
    }
    assert_eq!(m.status().errors, 8);
    m.handle_connected(now, Side::Publisher);
    assert!(m.status().connected);
    assert_eq!(m.status().reconnects, 1);
    // Up again: the next loss starts from 100 ms.
    m.handle_failed(now, Side::Publisher, "reset");
    let at = until_connect(&mut m, now);
    assert!(at.saturating_since(now) <= Duration::from_millis(100));
}

#[test]
fn publications_go_in_batches_in_order_one_batch_at_a_time() {
    let mut m = up(false, false);
    m.handle_publish(&Publication::to_all("a"));
    let c = drain(&mut m);
    let [Command::Send(first)] = &c[..] else {
        panic!("{c:?}")
    };
    assert_eq!(first.publishes.len(), 1);
    assert_eq!(first.publishes[0].0, "sb:sys:all");
    // While it is in flight, more wait, in order.
    m.handle_publish(&Publication::to_room("r", "b"));
    m.handle_publish(&Publication::to_all("c"));
    assert!(drain(&mut m).is_empty(), "one batch at a time");
    m.handle_sent(T0, ok());
    let c = drain(&mut m);
    let [Command::Send(second)] = &c[..] else {
        panic!("{c:?}")
    };
    let channels: Vec<&str> = second.publishes.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(channels, ["sb:sys:room:r", "sb:sys:all"]);
    // Sequence numbers on the `all` channel: 1, then 2 (rooms carry none).
    let seqs: Vec<u64> = [&first.publishes[0], &second.publishes[1]]
        .iter()
        .map(|(_, m)| wire::decode(m.clone()).unwrap().seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
    m.handle_sent(T0, ok());
    assert_eq!(m.status().published, 3);
}

#[test]
fn what_comes_before_the_first_connection_waits_for_it() {
    // A node just started accepts publications before its publishing connection is up: they
    // go out once it is (an acknowledged publication is not lost to the first milliseconds).
    let mut m = machine(false, true);
    m.handle_timeout(T0);
    drain(&mut m);
    m.handle_publish(&Publication::to_all("a"));
    m.handle_append("all".into(), entry(1), Target::All, Epoch(9));
    m.handle_fetch(FetchId(4), "all".into(), None, Epoch(9));
    assert!(drain(&mut m).is_empty(), "nothing is answered yet");
    m.handle_connected(T0, Side::Publisher);
    let c = drain(&mut m);
    let Some(Command::Send(batch)) = c.first() else {
        panic!("{c:?}");
    };
    assert_eq!(
        (
            batch.publishes.len(),
            batch.appends.len(),
            batch.fetches.len()
        ),
        (1, 1, 1)
    );
    assert_eq!(m.status().dropped_while_down, 0);
}

#[test]
fn while_down_publications_are_counted_and_history_requests_answered_at_once() {
    let mut m = machine(false, true);
    m.handle_timeout(T0);
    drain(&mut m);
    // Held during the first attempt, answered when it fails...
    m.handle_append("all".into(), entry(1), Target::All, Epoch(9));
    m.handle_failed(T0, Side::Publisher, "refused");
    let c = drain(&mut m);
    assert!(matches!(
        &c[..],
        [Command::Deliver(ToHub::Appended(s, Err(HistoryError::Unavailable)))] if s == "all"
    ));
    // ...and from then on, while down, answered at once.
    m.handle_publish(&Publication::to_all("a"));
    m.handle_append("all".into(), entry(2), Target::All, Epoch(9));
    m.handle_fetch(FetchId(4), "all".into(), None, Epoch(9));
    let c = drain(&mut m);
    assert!(matches!(
        &c[..],
        [
            Command::Deliver(ToHub::Appended(s, Err(HistoryError::Unavailable))),
            Command::Deliver(ToHub::Fetched(FetchId(4), Err(HistoryError::Unavailable))),
        ] if s == "all"
    ));
    assert_eq!(m.status().dropped_while_down, 3);
}

#[test]
fn appends_are_answered_in_order_and_a_lost_batch_is_answered_unavailable() {
    let mut m = up(false, true);
    // A batch in flight, so that both appends go in the next one.
    m.handle_publish(&Publication::to_all("busy"));
    drain(&mut m);
    m.handle_append("all".into(), entry(1), Target::All, Epoch(9));
    m.handle_append("r".into(), entry(2), Target::Room("r".into()), Epoch(9));
    m.handle_sent(T0, ok());
    let c = drain(&mut m);
    let [Command::Send(batch)] = &c[..] else {
        panic!("{c:?}")
    };
    assert_eq!(batch.appends[0].channel, "sb:sys:all");
    assert_eq!(batch.appends[1].channel, "sb:sys:room:r");
    let env = wire::decode(batch.appends[1].message.clone()).unwrap();
    assert!(env.publication.kept);
    let p = |offset| Position {
        epoch: Epoch(9),
        offset,
    };
    m.handle_sent(
        T0,
        Sent {
            appended: vec![Ok(p(1)), Err("oops".into())],
            ..ok()
        },
    );
    let c = drain(&mut m);
    assert!(matches!(
        &c[..],
        [
            Command::Deliver(ToHub::Appended(a, Ok(_))),
            Command::Deliver(ToHub::Appended(b, Err(HistoryError::Unavailable))),
        ] if a == "all" && b == "r"
    ));
    // A batch whose connection is lost: every append it held is answered, none left waiting.
    m.handle_append("all".into(), entry(3), Target::All, Epoch(9));
    m.handle_fetch(FetchId(7), "all".into(), Some(p(1)), Epoch(9));
    drain(&mut m);
    m.handle_sent(
        T0,
        Sent {
            lost: Some("broken pipe".into()),
            ..ok()
        },
    );
    let c = drain(&mut m);
    assert!(matches!(
        &c[..],
        [
            Command::Deliver(ToHub::Appended(_, Err(_))),
            Command::Deliver(ToHub::Fetched(FetchId(7), Err(_))),
        ]
    ));
    assert!(!m.status().publisher_connected);
    // Back: the hub is told to check its streams (fetches failed meanwhile).
    let due = m.poll_timeout().unwrap();
    m.handle_timeout(due);
    drain(&mut m);
    m.handle_connected(due, Side::Publisher);
    assert!(matches!(
        drain(&mut m)[..],
        [Command::Deliver(ToHub::Check)]
    ));
}

#[test]
fn room_subscriptions_follow_the_local_members_in_joined_mode() {
    let mut m = up(false, false);
    m.handle_room("a".into(), true);
    let c = drain(&mut m);
    let [Command::Subscribe {
        channels,
        pattern: false,
    }] = &c[..]
    else {
        panic!("{c:?}")
    };
    assert_eq!(channels, &["sb:sys:room:a"]);
    // One change at a time: the next waits for the answer.
    m.handle_room("b".into(), true);
    assert!(drain(&mut m).is_empty());
    m.handle_subscribed(T0, Ok(()));
    let c = drain(&mut m);
    assert!(
        matches!(&c[..], [Command::Subscribe { channels, .. }] if channels == &["sb:sys:room:b"])
    );
    m.handle_subscribed(T0, Ok(()));
    assert_eq!(m.status().room_subscriptions, 2);
    m.handle_room("a".into(), false);
    let c = drain(&mut m);
    assert!(matches!(&c[..], [Command::Unsubscribe(ch)] if ch == &["sb:sys:room:a"]));
    m.handle_subscribed(T0, Ok(()));
    // Reconciliation: the hub says only `c` has members now.
    m.handle_rooms(vec!["c".into()]);
    let c = drain(&mut m);
    assert!(
        matches!(&c[..], [Command::Subscribe { channels, .. }] if channels == &["sb:sys:room:c"])
    );
    m.handle_subscribed(T0, Ok(()));
    let c = drain(&mut m);
    assert!(matches!(&c[..], [Command::Unsubscribe(ch)] if ch == &["sb:sys:room:b"]));
    m.handle_subscribed(T0, Ok(()));
    // A reconnect subscribes to every wanted room, then asks the hub again.
    m.handle_failed(T0, Side::Subscriber, "reset");
    let due = m.poll_timeout().unwrap();
    m.handle_timeout(due);
    drain(&mut m);
    m.handle_connected(due, Side::Subscriber);
    drain(&mut m);
    m.handle_subscribed(due, Ok(()));
    let c = drain(&mut m);
    assert!(
        matches!(&c[..], [Command::Subscribe { channels, .. }] if channels == &["sb:sys:room:c"])
    );
    m.handle_subscribed(due, Ok(()));
    assert!(matches!(drain(&mut m)[..], [Command::ListRooms]));
    assert!(m.status().connected);
    assert_eq!(m.status().reconnects, 1);
}

#[test]
fn every_room_mode_holds_one_pattern_and_ignores_room_events() {
    let mut m = up(true, false);
    m.handle_room("a".into(), true);
    m.handle_rooms(vec!["x".into()]);
    assert!(drain(&mut m).is_empty());
    // No reconciliation to do either.
    m.handle_timeout(T0 + RECONCILE_EVERY);
    assert!(drain(&mut m)
        .iter()
        .all(|c| !matches!(c, Command::ListRooms)));
}

#[test]
fn messages_are_checked_decoded_and_handed_over() {
    let mut m = up(false, true);
    let from = |node, seq, p: &Publication| wire::encode(node, seq, p, None).unwrap();
    m.handle_message(from(OTHER, 5, &Publication::to_all("x")));
    m.handle_message(from(OTHER, 9, &Publication::to_all("y")));
    m.handle_message(from(ME, 1, &Publication::to_all("mine")));
    m.handle_message(Bytes::from_static(b"garbage"));
    let c = drain(&mut m);
    assert_eq!(c.len(), 2, "its own unpositioned echo is skipped: {c:?}");
    assert!(c
        .iter()
        .all(|c| matches!(c, Command::Deliver(ToHub::Remote(_)))));
    assert_eq!(m.status().missed, 3, "6, 7 and 8 never came");
    assert_eq!(m.status().invalid, 1);
    // Positioned: its own too, marked so.
    let mut message = b"P0000000000000009:12:".to_vec();
    message.extend_from_slice(&from(ME, 0, &Publication::to_all("kept").keep()));
    assert_eq!(positioned(&message).unwrap().0.offset, 12);
    m.handle_message(message.into());
    let c = drain(&mut m);
    let [Command::Deliver(ToHub::Positioned {
        position,
        from_here: true,
        ..
    })] = &c[..]
    else {
        panic!("{c:?}")
    };
    assert_eq!(position.offset, 12);
    // The hub's queue was full: counted, and the hub checks its streams.
    let dropped = ToHub::Positioned {
        publication: Publication::to_all("kept"),
        position: *position,
        publisher: None,
        from_here: true,
    };
    m.handle_hub_full(&dropped);
    assert!(matches!(
        drain(&mut m)[..],
        [Command::Deliver(ToHub::Check)]
    ));
    assert_eq!(m.status().dropped_inbound, 1);
}

#[test]
fn idle_connections_are_pinged_and_a_dead_subscriber_makes_the_publisher_check() {
    let mut m = up(false, false);
    m.handle_timeout(T0 + RECONCILE_EVERY);
    let c = drain(&mut m);
    assert!(c
        .iter()
        .any(|c| matches!(c, Command::Ping(Side::Publisher))));
    assert!(c
        .iter()
        .any(|c| matches!(c, Command::Ping(Side::Subscriber))));
    assert!(c.iter().any(|c| matches!(c, Command::ListRooms)));
    m.handle_failed(T0 + RECONCILE_EVERY, Side::Subscriber, "closed");
    assert!(matches!(
        drain(&mut m)[..],
        [Command::Ping(Side::Publisher)]
    ));
}

#[test]
fn input_stops_while_the_publisher_queue_is_full() {
    let mut m = up(false, false);
    for _ in 0..=MAX_WAITING {
        m.handle_publish(&Publication::to_all("x"));
    }
    assert!(!m.wants_input());
    let c = drain(&mut m);
    assert_eq!(c.len(), 1);
    m.handle_sent(T0, ok());
    assert!(m.wants_input(), "a batch went");
}

#[test]
fn room_events_during_the_first_subscriptions_are_applied_after_them() {
    let mut m = machine(false, false);
    m.handle_timeout(T0);
    drain(&mut m);
    m.handle_connected(T0, Side::Publisher);
    m.handle_connected(T0, Side::Subscriber);
    drain(&mut m); // The `all` channel's subscription, in flight.
    m.handle_room("a".into(), true);
    assert!(drain(&mut m).is_empty(), "one change at a time");
    m.handle_subscribed(T0, Ok(()));
    let c = drain(&mut m);
    assert!(
        c.iter().any(
            |c| matches!(c, Command::Subscribe { channels, .. } if channels == &["sb:sys:room:a"])
        ),
        "{c:?}"
    );
    assert!(m.status().subscriber_connected);
}

/// Both connections up on a machine that keeps a lease.
fn up_with_lease() -> Backplane {
    let config = Config {
        system: "sys",
        node: ME,
        every_room: true,
        history: false,
        seed: 7,
        lease: true,
    };
    let mut m = Backplane::new(config, T0);
    m.handle_timeout(T0);
    drain(&mut m);
    m.handle_connected(T0, Side::Publisher);
    assert!(
        matches!(drain(&mut m)[..], [Command::Summarize]),
        "a lease is taken as soon as the publisher is up"
    );
    m.handle_connected(T0, Side::Subscriber);
    drain(&mut m);
    m.handle_subscribed(T0, Ok(()));
    drain(&mut m);
    m.handle_subscribed(T0, Ok(()));
    drain(&mut m);
    m
}

fn summary(connections: u64) -> NodeSummary {
    NodeSummary {
        connections,
        rooms: 1,
        clients: vec![NodeClient {
            client_id: format!("c{connections}"),
            filter: Vec::new(),
            opened_at: 5,
        }],
    }
}

/// The lease: the hub's summary is written in the next batch every 3 s, the live nodes read
/// with it go to the hub (this node's own left out, an undecodable one counted invalid), and a
/// failed read hands the hub nothing (its leases on the others run out by themselves).
#[test]
fn the_lease_is_renewed_every_period_and_the_live_nodes_go_to_the_hub() {
    let mut m = up_with_lease();
    m.handle_summary(&summary(2));
    let c = drain(&mut m);
    let [Command::Send(batch)] = &c[..] else {
        panic!("{c:?}")
    };
    let written = batch.lease.clone().expect("the summary rides the batch");
    assert_eq!(
        wire::decode_summary(&written).unwrap(),
        (ME, summary(2)),
        "this node's summary, as the hub gave it"
    );
    let mine = wire::encode_summary(ME, &summary(2));
    let theirs = wire::encode_summary(OTHER, &summary(5));
    m.handle_sent(
        T0,
        Sent {
            cluster: Some(Ok(vec![mine, theirs, Bytes::from_static(b"S\x01")])),
            ..ok()
        },
    );
    let c = drain(&mut m);
    let [Command::Deliver(ToHub::Cluster(nodes))] = &c[..] else {
        panic!("{c:?}")
    };
    assert_eq!(nodes, &[(OTHER.get(), summary(5))]);
    assert_eq!((m.status().nodes, m.status().invalid), (1, 1));
    // Every LEASE_EVERY the hub is asked again, whatever else happens.
    let next = m.poll_timeout().unwrap();
    assert!(next <= T0 + LEASE_EVERY, "{next:?}");
    m.handle_timeout(T0 + LEASE_EVERY);
    assert!(drain(&mut m)
        .iter()
        .any(|c| matches!(c, Command::Summarize)));
    m.handle_summary(&summary(3));
    drain(&mut m);
    m.handle_sent(
        T0 + LEASE_EVERY,
        Sent {
            cluster: Some(Err("NOSCRIPT".into())),
            ..ok()
        },
    );
    assert!(
        drain(&mut m).is_empty(),
        "a failed read tells the hub nothing"
    );
    assert_eq!(m.status().errors, 1);
    // While the publisher is down no lease is written (the others see this node go).
    m.handle_failed(T0 + LEASE_EVERY, Side::Publisher, "gone");
    drain(&mut m);
    m.handle_summary(&summary(3));
    assert!(drain(&mut m).is_empty());
}

/// Members: the hub's announcement goes on the room's channel; another node's comes to the hub;
/// this node's own echo is skipped; a malformed one is counted invalid, never a panic.
#[test]
fn members_are_published_on_the_rooms_channel_and_handed_to_the_hub() {
    let mut m = up_with_lease();
    let members = Members {
        listed: vec![Member {
            client_id: "c1".into(),
            user: Some("alice".into()),
            joined_at: 7,
        }],
        total: 1,
    };
    m.handle_members("project:p", &members, true);
    let c = drain(&mut m);
    let [Command::Send(batch)] = &c[..] else {
        panic!("{c:?}")
    };
    let (channel, message) = &batch.publishes[0];
    assert_eq!(channel, "sb:sys:room:project:p");
    let decoded = wire::decode_members(message).unwrap();
    assert_eq!((decoded.origin, decoded.hello), (ME, true));
    m.handle_sent(T0, ok());
    drain(&mut m);

    m.handle_message(message.clone());
    assert!(drain(&mut m).is_empty(), "our own, echoed back");
    let theirs = wire::encode_members(OTHER, "project:p", &members, false);
    m.handle_message(theirs);
    let c = drain(&mut m);
    let [Command::Deliver(ToHub::Members(got))] = &c[..] else {
        panic!("{c:?}")
    };
    assert_eq!(
        (got.origin, &got.room, &got.members),
        (OTHER, &"project:p".to_string(), &members)
    );
    let invalid = m.status().invalid;
    for bad in [&b"M"[..], b"M\0\0\0\0\0\0\0\x02\0\xff\xff\xff\xff\x0f"] {
        m.handle_message(Bytes::copy_from_slice(bad));
    }
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.status().invalid, invalid + 2);
}

/// While the publisher is down, each room's latest members announcement waits (its `hello`
/// kept) and goes out when it is back, so no node keeps members this one no longer has; a
/// subscription re-established makes the hub announce again (`Resync`), since other nodes'
/// announcements may have gone by.
#[test]
fn members_wait_for_the_publisher_and_a_resubscribe_resyncs() {
    let mut m = up_with_lease();
    m.handle_failed(T0, Side::Publisher, "gone");
    drain(&mut m);
    let one = |total| Members {
        listed: Vec::new(),
        total,
    };
    m.handle_members("project:p", &one(2), true);
    m.handle_members("project:p", &one(0), false);
    m.handle_members("project:q", &one(1), false);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.status().dropped_while_down, 0, "waiting, not dropped");
    let due = m.poll_timeout().unwrap();
    m.handle_timeout(due);
    assert!(matches!(
        drain(&mut m)[..],
        [Command::Connect(Side::Publisher)]
    ));
    m.handle_connected(due, Side::Publisher);
    let c = drain(&mut m);
    let Some(Command::Send(batch)) = c.iter().find(|c| matches!(c, Command::Send(_))) else {
        panic!("{c:?}")
    };
    let mut sent: Vec<(String, u64, bool)> = batch
        .publishes
        .iter()
        .map(|(channel, message)| {
            let m = wire::decode_members(message).unwrap();
            (channel.clone(), m.members.total, m.hello)
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("sb:sys:room:project:p".to_string(), 0, true),
            ("sb:sys:room:project:q".to_string(), 1, false),
        ]
    );

    m.handle_failed(due, Side::Subscriber, "gone");
    drain(&mut m);
    let again = m.poll_timeout().unwrap();
    m.handle_timeout(again);
    drain(&mut m);
    m.handle_connected(again, Side::Subscriber);
    drain(&mut m);
    m.handle_subscribed(again, Ok(()));
    drain(&mut m);
    m.handle_subscribed(again, Ok(()));
    assert!(drain(&mut m)
        .iter()
        .any(|c| matches!(c, Command::Deliver(ToHub::Resync))));
}
