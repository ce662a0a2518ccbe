//! The harness itself: hand-written runs through the paths the fuzzer has to find, so a false
//! alarm (or a check that never fires) shows up here first. `cargo +nightly test` in `fuzz/`.

use switchboard_fuzz::{run_hub_ops, run_session, Body, FuzzConfig, HubOp, HubOps, Session, Step};
use switchboard_protocol::SYSTEMS;

fn config() -> FuzzConfig {
    FuzzConfig {
        max_frame: 4096,
        max_connections: 7,
        rooms_per_conn: 4,
        max_rooms: 8,
        max_queued: 4096,
        close_slow: true,
        rate: None,
        close_fast: false,
        heartbeat_ms: None,
        idle_ms: None,
        replicate: true,
        history: None,
        shared: false,
    }
}

/// Three connections of users u0, u1 and u2, speaking `dialect` (0: v1, 1: v2).
fn three_users(dialect: u8) -> Vec<Step> {
    (0..3)
        .map(|i| Step::Open {
            query: vec![],
            user: Some(format!("u{i}")),
            dialect,
            resume: None,
        })
        .collect()
}

/// A connection quits (`x`) while outputs stay queued: reports about it are accepted until its
/// `Close` is drained, and refused after. The tracker asserts each answer.
#[test]
fn reports_between_a_queued_close_and_its_drain() {
    for lazy in [true, false] {
        run_hub_ops(&HubOps {
            config: config(),
            lazy,
            ops: vec![
                HubOp::Open(Some(1)),
                HubOp::Open(Some(2)),
                HubOp::Join(0, 1),
                HubOp::Join(1, 1),
                HubOp::Echo(0, 3),
                HubOp::Text(0, "x".into(), true),
                HubOp::Activity(0),
                HubOp::Flushed(0, 9, false),
                HubOp::Text(0, "ehello".into(), false),
                HubOp::PeerClose(0),
                HubOp::PeerClose(0),
                HubOp::Drain(1),
                HubOp::Activity(0),
                HubOp::Drain(255),
                HubOp::Activity(0),
                HubOp::Flushed(0, 1, true),
                HubOp::PeerClose(0),
                HubOp::Echo(1, 2),
                HubOp::PeerClose(1),
                HubOp::Flushed(1, 2, false),
                HubOp::Drain(255),
            ],
        });
    }
}

/// A tapped room's publications come out as `Tapped` (checked by the tracker: only for rooms
/// it asked for), also once untapped while they wait in the queue, and never after.
#[test]
fn taps_on_and_off_with_outputs_queued() {
    let publish = |room: u8, remote: bool| HubOp::Publish {
        target: (1, room),
        except: None,
        tags: None,
        len: 3,
        remote,
    };
    for lazy in [true, false] {
        run_hub_ops(&HubOps {
            config: config(),
            lazy,
            ops: vec![
                HubOp::Open(Some(1)),
                HubOp::Join(0, 1),
                HubOp::Tap(1, 10),
                HubOp::Tap(1, 0),
                HubOp::Tap(2, 255),
                publish(1, false),
                publish(1, true),
                publish(2, false),
                HubOp::Untap(1),
                HubOp::Untap(1),
                HubOp::Drain(255),
                publish(1, false),
                HubOp::Untap(2),
                HubOp::Drain(255),
            ],
        });
    }
}

/// Every system through a short session that opens, sends what its client types name, calls
/// HTTP, drains lazily, and closes.
#[test]
fn a_session_against_every_system() {
    for spec in SYSTEMS {
        for lazy in [true, false] {
            let mut steps = three_users(0);
            for (i, _) in spec.client_types.iter().enumerate() {
                let i = u8::try_from(i).unwrap();
                steps.push(Step::Text(i, Body::Typed(i, vec![]), i % 2 == 0));
            }
            steps.push(Step::Text(1, Body::Text("not json".into()), true));
            steps.push(Step::Close(0));
            steps.push(Step::Activity(0));
            steps.push(Step::Drain(2));
            steps.push(Step::Flushed(1, 7, true));
            steps.push(Step::Drain(255));
            run_session(
                spec,
                &Session {
                    config: config(),
                    with_api_key: true,
                    lazy,
                    steps,
                },
            );
        }
    }
}

/// Protocol v2 against every system: v2 connections with envelopes and ids (resends), the
/// engine answering late, in reverse and failing, a connection dropping and resuming its session
/// with positions. The tracker checks that no stream's offsets go back or repeat.
#[test]
fn v2_sessions_against_every_system() {
    let mut positioned = 0;
    for spec in SYSTEMS {
        for lazy in [true, false] {
            let mut steps = three_users(1);
            steps.push(Step::Answer {
                n: 255,
                reversed: true,
                fail: false,
            });
            for (i, _) in spec.client_types.iter().enumerate() {
                let i = u8::try_from(i).unwrap();
                steps.push(Step::Enveloped {
                    conn: i % 3,
                    id: Some(i % 2),
                    since: vec![],
                    body: Body::Typed(i, vec![]),
                });
                steps.push(Step::Publish(Body::Typed(i, vec![])));
            }
            steps.push(Step::Answer {
                n: 1,
                reversed: false,
                fail: true,
            });
            steps.push(Step::Answer {
                n: 255,
                reversed: false,
                fail: false,
            });
            steps.push(Step::Close(1));
            steps.push(Step::Publish(Body::Text("{}".into())));
            steps.push(Step::Open {
                query: vec![],
                user: Some("u1".into()),
                dialect: 1,
                resume: Some((1, vec![0, 1])),
            });
            steps.push(Step::Enveloped {
                conn: 2,
                id: Some(0),
                since: vec![(0, 0), (1, 3)],
                body: Body::Typed(0, vec![]),
            });
            steps.push(Step::Drain(2));
            steps.push(Step::Answer {
                n: 255,
                reversed: true,
                fail: false,
            });
            steps.push(Step::Drain(255));
            let mut config = config();
            config.history = Some((3, 20));
            let t = run_session(
                spec,
                &Session {
                    config,
                    with_api_key: true,
                    lazy,
                    steps,
                },
            );
            if !lazy {
                // Four v2 connections named their session; the last one resumed the session
                // of the connection that dropped (the second, user u1).
                assert_eq!(t.sessions.len(), 4, "{}", spec.name);
                assert_eq!(t.sessions[3], t.sessions[1], "{}", spec.name);
            }
            positioned += usize::from(!t.streams().is_empty());
        }
    }
    // The systems with a stream of their own (laptimes, AFC, DCDock) gave positions, twice each.
    assert!(positioned >= 6, "positions seen in {positioned} sessions");
}

/// A shared history: positioned publications with holes, repeats, steps back and a new epoch,
/// from this node and others, with the engine's answers late. The tracker checks every v2
/// frame (offsets only grow within an epoch, the queue bound holds).
#[test]
fn shared_history_sessions_against_every_system() {
    let mut positioned = 0;
    for spec in SYSTEMS {
        for lazy in [true, false] {
            let mut steps = three_users(1);
            steps.push(Step::Answer {
                n: 255,
                reversed: false,
                fail: false,
            });
            for (k, (delta, new_epoch, from_here)) in [
                (1, false, false),
                (1, false, true),
                (3, false, false),
                (-2, false, false),
                (1, false, false),
                (1, true, false),
                (5, false, false),
                (0, false, true),
            ]
            .into_iter()
            .enumerate()
            {
                steps.push(Step::Positioned {
                    body: Body::Text(format!("{{\"k\":{k}}}")),
                    delta,
                    new_epoch,
                    from_here,
                });
                if k % 3 == 2 {
                    steps.push(Step::Answer {
                        n: 255,
                        reversed: true,
                        fail: k == 2,
                    });
                }
            }
            steps.push(Step::Close(1));
            steps.push(Step::Answer {
                n: 255,
                reversed: false,
                fail: false,
            });
            steps.push(Step::Drain(255));
            let mut config = config();
            config.history = Some((3, 20));
            config.shared = true;
            let t = run_session(
                spec,
                &Session {
                    config,
                    with_api_key: true,
                    lazy,
                    steps,
                },
            );
            positioned += usize::from(!t.streams().is_empty());
        }
    }
    // The systems with a stream of their own (laptimes, AFC, DCDock) delivered positions.
    assert!(positioned >= 6, "positions seen in {positioned} sessions");
}

/// Every system with other nodes' members and lease reads: a collab member joins by a typed
/// message, another node announces members (hostile totals, any room), a lease read drops one
/// node, and time runs past the lease. Nothing panics, and presence goes only to this node's
/// connections (the tracker's checks).
#[test]
fn other_nodes_members_and_leases() {
    use switchboard_fuzz::Clock;
    for spec in SYSTEMS {
        let mut steps = three_users(0);
        let join = spec
            .client_types
            .iter()
            .position(|t| *t == "JOIN_PROJECT")
            .map_or(0, |i| u8::try_from(i).unwrap());
        steps.push(Step::Text(0, Body::Typed(join, vec![]), false));
        for (node, hello) in [(1, true), (2, false)] {
            steps.push(Step::RemoteMembers {
                node,
                room: Ok(0),
                members: vec![("c".into(), Some("u".into()), u64::MAX)],
                total: u64::MAX,
                hello,
            });
        }
        steps.push(Step::RemoteMembers {
            node: 3,
            room: Err(String::new()),
            members: vec![],
            total: 0,
            hello: true,
        });
        steps.push(Step::Cluster(vec![(1, 5), (2, u64::MAX), (3, u64::MAX)]));
        steps.push(Step::Time(Clock::ForwardSecs(11)));
        steps.push(Step::Close(0));
        steps.push(Step::Drain(255));
        run_session(
            spec,
            &Session {
                config: config(),
                with_api_key: false,
                lazy: false,
                steps,
            },
        );
    }
}

/// The backplane's wire target on what it must tell apart: a valid `Members`, a summary, a
/// publication, a positioned one, and their truncations.
#[test]
fn backplane_wire_inputs() {
    use switchboard_backplane::{wire, NodeId};
    use switchboard_hub::cluster::{Member, Members, NodeSummary};
    use switchboard_hub::Publication;
    let members = Members {
        listed: vec![Member {
            client_id: "c".into(),
            user: Some("u".into()),
            joined_at: 5,
        }],
        total: 3,
    };
    let inputs = [
        wire::encode_members(NodeId::new(2), "project:p", &members, true).to_vec(),
        wire::encode_members(NodeId::new(1), "project:p", &members, false).to_vec(),
        wire::encode_summary(NodeId::new(2), &NodeSummary::default()).to_vec(),
        wire::encode(NodeId::new(2), 1, &Publication::to_all("{}"), None)
            .unwrap()
            .to_vec(),
        [
            &b"P1:2:"[..],
            &wire::encode(NodeId::new(2), 0, &Publication::to_room("r", "{}"), None).unwrap(),
        ]
        .concat(),
    ];
    for input in &inputs {
        for cut in 0..=input.len() {
            switchboard_fuzz::backplane_wire(&input[..cut]);
        }
    }
}
