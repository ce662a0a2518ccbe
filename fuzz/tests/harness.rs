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
    }
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

/// Every system through a short session that opens, sends what its client types name, calls
/// HTTP, drains lazily, and closes.
#[test]
fn a_session_against_every_system() {
    for spec in SYSTEMS {
        for lazy in [true, false] {
            let mut steps = Vec::new();
            for i in 0..3 {
                steps.push(Step::Open {
                    query: vec![],
                    user: Some(format!("u{i}")),
                    dialect: 0,
                });
            }
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
